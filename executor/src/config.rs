//! Executor settings: `MYMCP_*` environment variables (names and defaults of the reference
//! server) plus the executor's own (`MYMCP_RUNTIME_DIR`, `MYMCP_FRONTEND_USER`, …).
//!
//! An invalid value stops start-up with one line naming the variable, the value and what is
//! allowed.

use crate::files::ReadConfig;
use crate::jobs::JobConfig;
use crate::spawn::BashConfig;
use mymcp_protocol::frame::MAX_FRAME_LEN;
use std::path::PathBuf;
use std::time::Duration;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct ConfigError {
    pub name: String,
    pub problem: String,
}

impl ConfigError {
    fn new(name: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            name: name.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Where the settings come from: the process environment by default, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug)]
pub struct Env;

impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Reads a non-negative integer setting within `[min, max]`.
pub fn integer(
    src: &dyn Source,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = src.get(name) else {
        return Ok(default);
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(default);
    }
    let v: u64 = raw.parse().map_err(|_| {
        ConfigError::new(
            name,
            format!("invalid integer {raw:?} (expected a whole number from {min} to {max})"),
        )
    })?;
    if v < min || v > max {
        return Err(ConfigError::new(
            name,
            format!("{v} is out of range (allowed: {min} to {max})"),
        ));
    }
    Ok(v)
}

/// Reads a comma-separated list setting (empty entries dropped).
pub fn list(src: &dyn Source, name: &str) -> Vec<String> {
    src.get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Everything the executor needs to run.
#[derive(Debug)]
pub struct Config {
    pub runtime_dir: PathBuf,
    pub token_file: PathBuf,
    /// The only uid accepted on `executor.sock`.
    pub frontend_uid: u32,
    /// Group that owns `executor.sock` (the frontend user's primary group).
    pub frontend_gid: u32,
    /// The only uid accepted on `control.sock`: 0, or the executor's own uid when it does not
    /// run as root (quick try by an ordinary user).
    pub control_uid: u32,
    pub bash: BashConfig,
    pub read: ReadConfig,
    /// Commands running at once, across all tokens.
    pub bash_max_concurrent: usize,
    pub shutdown_grace: Duration,
}

/// Settings that only matter for the tools, read from `src`.
pub fn tool_settings(src: &dyn Source) -> Result<(BashConfig, ReadConfig, usize), ConfigError> {
    let mut bash = BashConfig::default();
    bash.hard_max_output = integer(
        src,
        "MYMCP_BASH_MAX_OUTPUT_BYTES_HARD",
        bash.hard_max_output,
        1,
        8 << 20,
    )?;
    bash.default_max_output = integer(
        src,
        "MYMCP_BASH_MAX_OUTPUT_BYTES",
        bash.default_max_output,
        1,
        bash.hard_max_output,
    )?;
    if let Some(shell) = src.get("MYMCP_BASH_SHELL").filter(|s| !s.trim().is_empty()) {
        let shell = PathBuf::from(shell.trim());
        if !shell.is_absolute() {
            return Err(ConfigError::new(
                "MYMCP_BASH_SHELL",
                format!("{} is not an absolute path", shell.display()),
            ));
        }
        bash.shell = shell;
    }
    bash.env = BashConfig::default_env(&list(src, "MYMCP_BASH_ENV_PASSTHROUGH"));
    // The child's SHELL names the shell that really runs it.
    for (k, v) in bash.env.iter_mut() {
        if k == "SHELL" {
            *v = bash.shell.clone().into_os_string();
        }
    }
    // Two streams of captured output must fit in one response frame.
    if bash.hard_max_output * 2 + 4096 > MAX_FRAME_LEN as u64 {
        return Err(ConfigError::new(
            "MYMCP_BASH_MAX_OUTPUT_BYTES_HARD",
            "too large for one response",
        ));
    }

    let mut read = ReadConfig::default();
    read.max_limit = integer(
        src,
        "MYMCP_READ_FILE_MAX_LIMIT",
        read.max_limit,
        1,
        10_000_000,
    )?;
    read.default_limit = integer(
        src,
        "MYMCP_READ_FILE_DEFAULT_LIMIT",
        read.default_limit,
        1,
        read.max_limit,
    )?;
    read.max_line_bytes = integer(
        src,
        "MYMCP_READ_FILE_MAX_LINE_BYTES",
        read.max_line_bytes as u64,
        1,
        1 << 20,
    )? as usize;

    let concurrent = integer(src, "MYMCP_BASH_MAX_CONCURRENT", 64, 1, 4096)? as usize;
    Ok((bash, read, concurrent))
}

/// `MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN`: foreground commands one token may run at once.
pub fn bash_per_token(src: &dyn Source) -> Result<usize, ConfigError> {
    Ok(integer(
        src,
        "MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN",
        crate::dispatch::DEFAULT_BASH_MAX_PER_TOKEN as u64,
        1,
        4096,
    )? as usize)
}

/// Background job settings: `MYMCP_STATE_DIR` (default `/var/lib/mymcp`; jobs live in its
/// `jobs` subdirectory), `MYMCP_JOB_MAX_OUTPUT_BYTES`, `MYMCP_JOB_RETENTION_SEC`,
/// `MYMCP_JOB_MAX_RUNNING_PER_TOKEN`.
pub fn job_settings(src: &dyn Source) -> Result<JobConfig, ConfigError> {
    let state = src
        .get("MYMCP_STATE_DIR")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/var/lib/mymcp".to_owned());
    let state = PathBuf::from(state);
    if !state.is_absolute() {
        return Err(ConfigError::new(
            "MYMCP_STATE_DIR",
            format!("{} is not an absolute path", state.display()),
        ));
    }
    let mut jobs = JobConfig::new(&state);
    jobs.max_output_bytes = integer(
        src,
        "MYMCP_JOB_MAX_OUTPUT_BYTES",
        jobs.max_output_bytes,
        1,
        1 << 40,
    )?;
    jobs.retention = Duration::from_secs(integer(
        src,
        "MYMCP_JOB_RETENTION_SEC",
        jobs.retention.as_secs(),
        1,
        30 * 86_400,
    )?);
    jobs.max_running_per_token = integer(
        src,
        "MYMCP_JOB_MAX_RUNNING_PER_TOKEN",
        jobs.max_running_per_token as u64,
        1,
        1024,
    )? as usize;
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn src(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_reference() {
        let (bash, read, n) = tool_settings(&src(&[])).unwrap();
        assert_eq!(bash.default_max_output, 102_400);
        assert_eq!(bash.hard_max_output, 1_048_576);
        assert_eq!(read.default_limit, 2000);
        assert_eq!(read.max_limit, 50_000);
        assert_eq!(read.max_line_bytes, 32_768);
        assert_eq!(n, 64);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_allowed_range() {
        let e = tool_settings(&src(&[("MYMCP_READ_FILE_MAX_LIMIT", "abc")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MYMCP_READ_FILE_MAX_LIMIT: invalid integer \"abc\" (expected a whole number from 1 to 10000000)"
        );
        let e = tool_settings(&src(&[("MYMCP_BASH_MAX_OUTPUT_BYTES", "2000000")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("MYMCP_BASH_MAX_OUTPUT_BYTES: 2000000 is out of range"),
            "{e}"
        );
        let e = tool_settings(&src(&[("MYMCP_BASH_SHELL", "bash")])).unwrap_err();
        assert_eq!(e.name, "MYMCP_BASH_SHELL");
    }

    #[test]
    fn the_child_shell_variable_follows_the_configured_shell() {
        let (bash, _, _) = tool_settings(&src(&[("MYMCP_BASH_SHELL", "/bin/sh")])).unwrap();
        let shell = bash
            .env
            .iter()
            .find(|(k, _)| k == "SHELL")
            .map(|(_, v)| v.clone());
        assert_eq!(shell.as_deref(), Some(std::ffi::OsStr::new("/bin/sh")));
    }

    #[test]
    fn job_settings_default_and_validate() {
        let jobs = job_settings(&src(&[])).unwrap();
        assert_eq!(jobs.dir, PathBuf::from("/var/lib/mymcp/jobs"));
        assert_eq!(jobs.retention, Duration::from_secs(3600));
        assert_eq!(jobs.max_output_bytes, 16 << 20);
        assert_eq!(jobs.max_running_per_token, 4);
        let jobs = job_settings(&src(&[
            ("MYMCP_STATE_DIR", "/srv/m"),
            ("MYMCP_JOB_RETENTION_SEC", "5"),
        ]))
        .unwrap();
        assert_eq!(jobs.dir, PathBuf::from("/srv/m/jobs"));
        assert_eq!(jobs.retention, Duration::from_secs(5));
        let e = job_settings(&src(&[("MYMCP_STATE_DIR", "var/lib")])).unwrap_err();
        assert_eq!(e.name, "MYMCP_STATE_DIR");
        let e = job_settings(&src(&[("MYMCP_JOB_RETENTION_SEC", "0")])).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("MYMCP_JOB_RETENTION_SEC: 0 is out of range"));
        assert_eq!(bash_per_token(&src(&[])).unwrap(), 16);
        let e = bash_per_token(&src(&[("MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN", "x")])).unwrap_err();
        assert_eq!(e.name, "MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN");
    }

    #[test]
    fn lists_drop_empty_entries() {
        assert_eq!(list(&src(&[("X", " a, ,b ,")]), "X"), vec!["a", "b"]);
    }
}
