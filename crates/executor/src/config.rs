//! Executor settings: the `MYMCP_*` environment variables the executor reads, each through its
//! declaration in [`mymcp_settings`] (names and defaults of the reference server, plus the
//! executor's own: `MYMCP_RUNTIME_DIR`, `MYMCP_FRONTEND_USER`, …).
//!
//! An invalid value stops start-up with one line naming the variable, the value and what is
//! allowed.

use crate::edit::WriteConfig;
use crate::files::ReadConfig;
use crate::jobs::JobConfig;
use crate::oauth::OAuthConfig;
use crate::overview::OverviewConfig;
use crate::paths::{DefaultProtected, ProtectedPaths};
use crate::search::SearchConfig;
use crate::spawn::BashConfig;
use crate::terminals::TerminalConfig;
use crate::transfer::TransferConfig;
use mymcp_protocol::frame::MAX_FRAME_LEN;
use mymcp_settings as settings;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use mymcp_settings::values::{ConfigError, Env, Source};

/// Settings that only matter for the tools, read from `src`.
pub(crate) fn tool_settings(
    src: &dyn Source,
) -> Result<(BashConfig, ReadConfig, usize), ConfigError> {
    let mut bash = BashConfig::default();
    bash.hard_max_output = settings::BASH_MAX_OUTPUT_BYTES_HARD.read(src)?;
    bash.default_max_output =
        settings::BASH_MAX_OUTPUT_BYTES.read_within(src, 1, bash.hard_max_output)?;
    bash.shell = settings::BASH_SHELL.read(src)?;
    bash.handoff_secs = settings::BASH_HANDOFF_SEC.read(src)? as u32;
    bash.env = BashConfig::default_env(&settings::BASH_ENV_PASSTHROUGH.read(src));
    // The child's SHELL names the shell that really runs it.
    for (k, v) in bash.env.iter_mut() {
        if k == "SHELL" {
            *v = bash.shell.clone().into_os_string();
        }
    }
    // Two streams of captured output must fit in one response frame.
    if bash.hard_max_output * 2 + 4096 > MAX_FRAME_LEN as u64 {
        return Err(settings::BASH_MAX_OUTPUT_BYTES_HARD.error("too large for one response"));
    }

    let mut read = ReadConfig::default();
    read.max_limit = settings::READ_FILE_MAX_LIMIT.read(src)?;
    read.default_limit = settings::READ_FILE_DEFAULT_LIMIT.read_within(src, 1, read.max_limit)?;
    read.max_line_bytes = settings::READ_FILE_MAX_LINE_BYTES.read(src)? as usize;
    read.timeout = Duration::from_secs(settings::READ_FILE_TIMEOUT_SEC.read(src)?);

    let concurrent = settings::BASH_MAX_CONCURRENT.read(src)? as usize;
    Ok((bash, read, concurrent))
}

/// Settings of the file tools (`write_file`, `edit_file`, `glob`, `grep`) and the protected
/// paths that every file tool enforces.
#[derive(Clone, Debug)]
pub(crate) struct FileTools {
    pub(crate) write: WriteConfig,
    pub(crate) search: SearchConfig,
    pub(crate) protected: ProtectedPaths,
    /// `MYMCP_FILE_MAX_CONCURRENT`: file-tool calls and transfers on the blocking pool at once.
    pub(crate) max_concurrent: usize,
    /// `MYMCP_FILE_MAX_CONCURRENT_PER_TOKEN`: file-tool calls (and, apart, transfers) one token
    /// may have there at once.
    pub(crate) max_concurrent_per_token: usize,
}

/// Reads the file-tool settings. `token_file` and `runtime_dir` are the executor's own (from
/// its flags): they are always protected, with the configuration directory (the token file's
/// directory), `MYMCP_STATE_DIR`, `MYMCP_AUDIT_LOG_DIR`, `MYMCP_ENV_FILE`, the installed mymcp
/// binaries beside this executable, and each entry of `MYMCP_PROTECTED_PATHS`.
pub(crate) fn file_tools(
    src: &dyn Source,
    token_file: &std::path::Path,
    runtime_dir: &std::path::Path,
) -> Result<FileTools, ConfigError> {
    // The write_file request (content plus JSON escaping) must fit in one frame: the
    // declared ranges leave that room (checked by a test below).
    let write = WriteConfig {
        max_write_bytes: settings::WRITE_FILE_MAX_BYTES.read(src)?,
        max_edit_string_bytes: settings::EDIT_STRING_MAX_BYTES.read(src)?,
        max_edit_file_bytes: settings::EDIT_FILE_MAX_BYTES.read(src)?,
    };

    let mut search = SearchConfig::default();
    search.glob_max_results = settings::GLOB_MAX_RESULTS.read(src)?;
    search.grep_max_results = settings::GREP_MAX_RESULTS.read(src)?;
    search.grep_default_max_results =
        settings::GREP_DEFAULT_MAX_RESULTS.read_within(src, 1, search.grep_max_results)?;
    search.timeout = Duration::from_secs(settings::SEARCH_TIMEOUT_SEC.read(src)?);

    let extra = settings::PROTECTED_PATHS.read(src);
    for e in &extra {
        if !e.starts_with('/') {
            return Err(settings::PROTECTED_PATHS.error(format!("{e} is not an absolute path")));
        }
    }
    let defaults = DefaultProtected {
        token_file: absolute_or_cwd(token_file),
        runtime_dir: absolute_or_cwd(runtime_dir),
        state_dir: settings::STATE_DIR.read(src)?,
        audit_log_dir: settings::AUDIT_LOG_DIR.read(src)?,
        env_file: settings::ENV_FILE
            .value(src)
            .map(|v| absolute_or_cwd(std::path::Path::new(&v))),
        binary_dir: std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|p| p.to_owned())),
        extra: extra.into_iter().map(PathBuf::from).collect(),
        recorder_data_dir: Some(settings::RECORDER_DATA_DIR.read(src)?),
        // The frontend reads it; the executor only protects it, when its settings name it.
        tls_key: settings::TLS_KEY
            .value(src)
            .filter(|v| v.starts_with('/'))
            .map(PathBuf::from),
    };
    let max_concurrent = settings::FILE_MAX_CONCURRENT.read(src)? as usize;
    let max_concurrent_per_token = settings::FILE_MAX_CONCURRENT_PER_TOKEN.read(src)? as usize;
    Ok(FileTools {
        write,
        search,
        protected: ProtectedPaths::with_defaults(&defaults),
        max_concurrent,
        max_concurrent_per_token,
    })
}

/// The executor's own paths may be given relative on the command line; protect what they name.
fn absolute_or_cwd(p: &std::path::Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_owned())
    }
}

/// `MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN`: foreground commands one token may run at once.
pub(crate) fn bash_per_token(src: &dyn Source) -> Result<usize, ConfigError> {
    Ok(settings::BASH_MAX_CONCURRENT_PER_TOKEN.read(src)? as usize)
}

/// `MYMCP_DEFAULT_MEMORY_MAX`, `MYMCP_DEFAULT_TASKS_MAX`, `MYMCP_DEFAULT_CPU_MAX`: the kernel
/// limits of every command.
pub(crate) fn default_limits(src: &dyn Source) -> Result<crate::cgroup::Limits, ConfigError> {
    Ok(crate::cgroup::Limits::from_settings(
        settings::DEFAULT_MEMORY_MAX.read(src)?,
        settings::DEFAULT_TASKS_MAX.read(src)?,
        settings::DEFAULT_CPU_MAX.read(src)?,
    ))
}

/// `MYMCP_SHUTDOWN_GRACE_SEC`: what commands get between SIGTERM and SIGKILL at shutdown.
pub(crate) fn shutdown_grace(src: &dyn Source) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(settings::SHUTDOWN_GRACE_SEC.read(src)?))
}

/// Audit log settings (`MYMCP_AUDIT_*`). The signing key lives in `MYMCP_STATE_DIR/audit`.
pub(crate) fn audit_settings(src: &dyn Source) -> Result<crate::audit::AuditSettings, ConfigError> {
    let state = settings::STATE_DIR.read(src)?;
    Ok(crate::audit::AuditSettings {
        enabled: settings::AUDIT_ENABLED.read(src)?,
        log: mymcp_audit::log::LogConfig {
            dir: settings::AUDIT_LOG_DIR.read(src)?,
            key_file: state.join("audit").join("signing.key"),
            max_bytes: settings::AUDIT_MAX_BYTES.read(src)?,
            backup_count: settings::AUDIT_BACKUP_COUNT.read(src)? as u32,
            seal_records: settings::AUDIT_SEAL_RECORDS.read(src)?,
            seal_interval: Duration::from_secs(settings::AUDIT_SEAL_INTERVAL_SEC.read(src)?),
        },
        bash_head_bytes: settings::AUDIT_OUTPUT_BASH_HEAD_BYTES.read(src)? as usize,
        bash_tail_bytes: settings::AUDIT_OUTPUT_BASH_TAIL_BYTES.read(src)? as usize,
    })
}

/// Settings the executor does not use itself but validates so that a typo stops start-up:
/// the frontend's port and the log format (taken as text by the flag).
/// `MYMCP_DEFAULT_USER`: the account of tokens that name none (an account name; whether it
/// exists is checked at start-up and for every call, as accounts come and go).
pub(crate) fn default_user(src: &dyn Source) -> Result<String, ConfigError> {
    let user = settings::DEFAULT_USER.read(src);
    if !mymcp_tokens::valid_user(&user) {
        return Err(settings::DEFAULT_USER.error(format!("{user:?} is not an account name")));
    }
    Ok(user)
}

pub(crate) fn other_settings(src: &dyn Source) -> Result<(), ConfigError> {
    settings::PORT.read(src)?;
    settings::LOG_FORMAT.read(src)?;
    Ok(())
}

/// What the executor hands the frontend for its OTLP export: audit records
/// (`MYMCP_OTLP_AUDIT_LOGS`) and its counters without a metrics token
/// (`MYMCP_OTLP_EXECUTOR_METRICS`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TelemetrySettings {
    pub(crate) audit_logs: bool,
    pub(crate) executor_metrics: bool,
}

pub(crate) fn telemetry_settings(src: &dyn Source) -> Result<TelemetrySettings, ConfigError> {
    Ok(TelemetrySettings {
        audit_logs: settings::OTLP_AUDIT_LOGS.read(src)?,
        executor_metrics: settings::OTLP_EXECUTOR_METRICS.read(src)?,
    })
}

/// `server_overview`: the recorder's data directory (`MYMCP_RECORDER_DATA_DIR`), its merge
/// interval (`MYMCP_RECORDER_MERGE_INTERVAL_SEC`, 300; like the reference, a value that is not
/// positive means 300) and the audit directory whose events it has yet to merge.
pub(crate) fn overview_settings(src: &dyn Source) -> Result<OverviewConfig, ConfigError> {
    let interval = settings::RECORDER_MERGE_INTERVAL_SEC.read(src)?;
    Ok(OverviewConfig {
        data_dir: settings::RECORDER_DATA_DIR.read(src)?,
        merge_interval: Duration::from_secs(interval),
        audit_dir: settings::AUDIT_LOG_DIR.read(src)?,
        // Not a setting: `main` says whether systemd started the executor.
        under_systemd: false,
    })
}

/// Background job settings: `MYMCP_STATE_DIR` (jobs live in its `jobs` subdirectory),
/// `MYMCP_JOB_MAX_OUTPUT_BYTES`, `MYMCP_JOB_RETENTION_SEC`, `MYMCP_JOB_MAX_RUNNING_PER_TOKEN`.
pub(crate) fn job_settings(src: &dyn Source) -> Result<JobConfig, ConfigError> {
    let state = settings::STATE_DIR.read(src)?;
    let mut jobs = JobConfig::new(&state);
    jobs.max_output_bytes = settings::JOB_MAX_OUTPUT_BYTES.read(src)?;
    jobs.retention = Duration::from_secs(settings::JOB_RETENTION_SEC.read(src)?);
    jobs.max_running_per_token = settings::JOB_MAX_RUNNING_PER_TOKEN.read(src)? as usize;
    Ok(jobs)
}

/// Terminal settings: `MYMCP_STATE_DIR` (recordings in its `terminals` subdirectory),
/// `MYMCP_TERMINAL_IDLE_SEC`, `MYMCP_TERMINAL_RECORDING_RETENTION_SEC`,
/// `MYMCP_TERMINAL_MAX_PER_TOKEN`, `MYMCP_TERMINAL_MAX`.
pub(crate) fn terminal_settings(src: &dyn Source) -> Result<TerminalConfig, ConfigError> {
    let state = settings::STATE_DIR.read(src)?;
    let mut cfg = TerminalConfig::new(&state);
    cfg.idle = Duration::from_secs(settings::TERMINAL_IDLE_SEC.read(src)?);
    cfg.retention = Duration::from_secs(settings::TERMINAL_RECORDING_RETENTION_SEC.read(src)?);
    cfg.max_per_token = settings::TERMINAL_MAX_PER_TOKEN.read(src)? as usize;
    cfg.max_total = settings::TERMINAL_MAX.read(src)? as usize;
    Ok(cfg)
}

/// OAuth (`MYMCP_OAUTH_*`, `MYMCP_PUBLIC_BASE_URL`): `None` when it is off; an error when it
/// is on without a base URL.
pub(crate) fn oauth_settings(src: &dyn Source) -> Result<Option<OAuthConfig>, ConfigError> {
    if !settings::OAUTH_ENABLED.read(src)? {
        return Ok(None);
    }
    let base = settings::PUBLIC_BASE_URL.read(src);
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return Err(ConfigError::new(
            settings::OAUTH_ENABLED.name,
            "OAuth needs MYMCP_PUBLIC_BASE_URL (the issuer and its /mcp the resource)",
        ));
    }
    // Tokens and codes travel through this URL: https, or plain http on this machine only.
    let loopback = ["http://127.", "http://localhost", "http://[::1]"];
    if !base.starts_with("https://") && !loopback.iter().any(|p| base.starts_with(p)) {
        return Err(ConfigError::new(
            settings::PUBLIC_BASE_URL.name,
            "OAuth needs an https MYMCP_PUBLIC_BASE_URL (http only on loopback)",
        ));
    }
    Ok(Some(OAuthConfig {
        issuer: base.to_owned(),
        resource: format!("{base}/mcp"),
        lifetimes: crate::oauth::grants::Lifetimes {
            access: Duration::from_secs(settings::OAUTH_ACCESS_TTL_SEC.read(src)?),
            refresh: Duration::from_secs(settings::OAUTH_REFRESH_TTL_SEC.read(src)?),
        },
        state_file: Some(settings::STATE_DIR.read(src)?.join("oauth.json")),
    }))
}

/// File transfer settings (`MYMCP_TRANSFER_*`). As in the reference, a default lifetime above
/// the longest is simply clamped to it.
pub(crate) fn transfer_settings(src: &dyn Source) -> Result<TransferConfig, ConfigError> {
    let max_ttl = settings::TRANSFER_MAX_TTL_SEC.read(src)?;
    let default_ttl = settings::TRANSFER_DEFAULT_TTL_SEC.read(src)?;
    Ok(TransferConfig {
        enabled: settings::TRANSFER_ENABLED.read(src)?,
        max_bytes: settings::TRANSFER_MAX_BYTES.read(src)?,
        default_ttl_secs: default_ttl.min(max_ttl),
        max_ttl_secs: max_ttl,
        max_grants_per_token: settings::TRANSFER_MAX_GRANTS_PER_TOKEN.read(src)? as usize,
    })
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
    fn the_default_account_is_declared_once_and_checked() {
        assert_eq!(
            settings::DEFAULT_USER.default(),
            mymcp_tokens::BUILTIN_DEFAULT_USER,
            "the token store's own default must be the setting's"
        );
        assert_eq!(default_user(&src(&[])).unwrap(), "root");
        let set = src(&[("MYMCP_DEFAULT_USER", "tools")]);
        assert_eq!(default_user(&set).unwrap(), "tools");
        let bad = src(&[("MYMCP_DEFAULT_USER", "a:b")]);
        assert!(default_user(&bad).is_err());
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
    fn file_work_limits_and_read_deadline_have_sane_defaults_and_bounds() {
        let (_, read, _) = tool_settings(&src(&[])).unwrap();
        assert_eq!(read.timeout, Duration::from_secs(10));
        let (_, read, _) = tool_settings(&src(&[("MYMCP_READ_FILE_TIMEOUT_SEC", "2")])).unwrap();
        assert_eq!(read.timeout, Duration::from_secs(2));
        let e = tool_settings(&src(&[("MYMCP_READ_FILE_TIMEOUT_SEC", "0")])).unwrap_err();
        assert_eq!(e.name, "MYMCP_READ_FILE_TIMEOUT_SEC");

        let dir = tempfile::tempdir().unwrap();
        let files = |pairs: &[(&str, &str)]| {
            file_tools(&src(pairs), &dir.path().join("t.json"), dir.path())
        };
        let f = files(&[]).unwrap();
        assert_eq!((f.max_concurrent, f.max_concurrent_per_token), (128, 16));
        let f = files(&[
            ("MYMCP_FILE_MAX_CONCURRENT", "8"),
            ("MYMCP_FILE_MAX_CONCURRENT_PER_TOKEN", "2"),
        ])
        .unwrap();
        assert_eq!((f.max_concurrent, f.max_concurrent_per_token), (8, 2));
        // Below tokio's 512 blocking threads, with room for the rest.
        let e = files(&[("MYMCP_FILE_MAX_CONCURRENT", "512")]).unwrap_err();
        assert_eq!(e.name, "MYMCP_FILE_MAX_CONCURRENT");
        let e = files(&[("MYMCP_FILE_MAX_CONCURRENT_PER_TOKEN", "0")]).unwrap_err();
        assert_eq!(e.name, "MYMCP_FILE_MAX_CONCURRENT_PER_TOKEN");

        assert_eq!(
            transfer_settings(&src(&[])).unwrap().max_grants_per_token,
            256
        );
        let t = transfer_settings(&src(&[("MYMCP_TRANSFER_MAX_GRANTS_PER_TOKEN", "4096")]));
        assert_eq!(t.unwrap().max_grants_per_token, 4096);
        let e = transfer_settings(&src(&[("MYMCP_TRANSFER_MAX_GRANTS_PER_TOKEN", "4097")]))
            .unwrap_err();
        assert_eq!(e.name, "MYMCP_TRANSFER_MAX_GRANTS_PER_TOKEN");
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
    fn file_tool_defaults_match_the_reference_and_protect_the_executors_own_paths() {
        let f = file_tools(
            &src(&[]),
            std::path::Path::new("/etc/mymcp/tokens.json"),
            std::path::Path::new("/run/mymcp"),
        )
        .unwrap();
        assert_eq!(f.write.max_write_bytes, 10_485_760);
        assert_eq!(f.write.max_edit_string_bytes, 1_048_576);
        assert_eq!(f.search.glob_max_results, 1000);
        assert_eq!(f.search.grep_default_max_results, 500);
        assert_eq!(f.search.grep_max_results, 5000);
        let e: Vec<String> = f
            .protected
            .entries()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        for want in [
            "/etc/mymcp",
            "/etc/mymcp/tokens.json",
            "/var/lib/mymcp",
            "/var/log/mymcp",
            "/run/mymcp",
        ] {
            assert!(e.iter().any(|x| x == want), "{want} not in {e:?}");
        }
        // The binaries beside the running one, those that are installed there.
        let dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_owned();
        for b in crate::paths::BINARIES {
            let p = dir.join(b).display().to_string();
            assert_eq!(e.contains(&p), dir.join(b).exists(), "{p} in {e:?}");
        }
    }

    #[test]
    fn protected_paths_setting_adds_entries_and_audit_dir_moves() {
        let f = file_tools(
            &src(&[
                ("MYMCP_PROTECTED_PATHS", "/srv/a, /srv/b ,"),
                ("MYMCP_AUDIT_LOG_DIR", "/srv/audit"),
            ]),
            std::path::Path::new("/etc/mymcp/tokens.json"),
            std::path::Path::new("/run/mymcp"),
        )
        .unwrap();
        let e = f.protected.entries();
        for want in ["/srv/a", "/srv/b", "/srv/audit"] {
            assert!(e.iter().any(|x| x == std::path::Path::new(want)), "{want}");
        }
        assert!(!e
            .iter()
            .any(|x| x == std::path::Path::new("/var/log/mymcp")));
        let err = file_tools(
            &src(&[("MYMCP_PROTECTED_PATHS", "relative/dir")]),
            std::path::Path::new("/etc/mymcp/tokens.json"),
            std::path::Path::new("/run/mymcp"),
        )
        .unwrap_err();
        assert_eq!(err.name, "MYMCP_PROTECTED_PATHS");
        let err = file_tools(
            &src(&[("MYMCP_GREP_DEFAULT_MAX_RESULTS", "6000")]),
            std::path::Path::new("/etc/mymcp/tokens.json"),
            std::path::Path::new("/run/mymcp"),
        )
        .unwrap_err();
        assert_eq!(err.name, "MYMCP_GREP_DEFAULT_MAX_RESULTS");
    }

    #[test]
    fn oauth_needs_the_public_base_url_which_names_issuer_and_resource() {
        assert_eq!(oauth_settings(&src(&[])).unwrap(), None);
        let e = oauth_settings(&src(&[("MYMCP_OAUTH_ENABLED", "true")])).unwrap_err();
        assert!(e.to_string().contains("MYMCP_PUBLIC_BASE_URL"), "{e}");
        assert_eq!(
            oauth_settings(&src(&[
                ("MYMCP_OAUTH_ENABLED", "true"),
                ("MYMCP_PUBLIC_BASE_URL", "https://mcp.example.com/"),
                ("MYMCP_OAUTH_ACCESS_TTL_SEC", "600"),
            ]))
            .unwrap(),
            Some(OAuthConfig {
                issuer: "https://mcp.example.com".to_owned(),
                resource: "https://mcp.example.com/mcp".to_owned(),
                lifetimes: crate::oauth::grants::Lifetimes {
                    access: Duration::from_secs(600),
                    refresh: Duration::from_secs(30 * 24 * 3600),
                },
                state_file: Some(PathBuf::from("/var/lib/mymcp/oauth.json")),
            })
        );
        let e = oauth_settings(&src(&[
            ("MYMCP_OAUTH_ENABLED", "true"),
            ("MYMCP_PUBLIC_BASE_URL", "https://mcp.example.com/"),
            ("MYMCP_OAUTH_REFRESH_TTL_SEC", "60"),
        ]))
        .unwrap_err();
        assert_eq!(e.name, "MYMCP_OAUTH_REFRESH_TTL_SEC");
        let e = oauth_settings(&src(&[
            ("MYMCP_OAUTH_ENABLED", "true"),
            ("MYMCP_PUBLIC_BASE_URL", "http://mcp.example.com"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        assert!(oauth_settings(&src(&[
            ("MYMCP_OAUTH_ENABLED", "true"),
            ("MYMCP_PUBLIC_BASE_URL", "http://127.0.0.1:8765"),
        ]))
        .is_ok());
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
    fn audit_settings_default_to_the_reference_and_refuse_bad_values() {
        let a = audit_settings(&src(&[])).unwrap();
        assert!(!a.enabled);
        assert_eq!(a.log.dir, PathBuf::from("/var/log/mymcp"));
        assert_eq!((a.log.max_bytes, a.log.backup_count), (10_485_760, 5));
        assert_eq!(
            a.log.key_file,
            PathBuf::from("/var/lib/mymcp/audit/signing.key")
        );
        assert!(
            audit_settings(&src(&[("MYMCP_AUDIT_ENABLED", "Yes")]))
                .unwrap()
                .enabled
        );
        let e = audit_settings(&src(&[("MYMCP_AUDIT_ENABLED", "maybe")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MYMCP_AUDIT_ENABLED: invalid boolean \"maybe\" (allowed: true, false, 1, 0, yes, no, on, off)"
        );
        let e = transfer_settings(&src(&[("MYMCP_TRANSFER_ENABLED", "2")])).unwrap_err();
        assert_eq!(e.name, "MYMCP_TRANSFER_ENABLED");
        let e = other_settings(&src(&[("MYMCP_LOG_FORMAT", "xml")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MYMCP_LOG_FORMAT: invalid value \"xml\" (allowed: text, json)"
        );
    }

    #[test]
    fn transfer_settings_default_to_the_reference_and_clamp() {
        let t = transfer_settings(&src(&[])).unwrap();
        assert_eq!(t, TransferConfig::default());
        assert!(t.enabled);
        assert_eq!(t.max_bytes, 2_147_483_648);
        assert_eq!((t.default_ttl_secs, t.max_ttl_secs), (300, 900));
        let t = transfer_settings(&src(&[
            ("MYMCP_TRANSFER_ENABLED", "Off"),
            ("MYMCP_TRANSFER_DEFAULT_TTL_SEC", "1000"),
            ("MYMCP_TRANSFER_MAX_TTL_SEC", "60"),
        ]))
        .unwrap();
        assert!(!t.enabled);
        assert_eq!((t.default_ttl_secs, t.max_ttl_secs), (60, 60));
        let e = transfer_settings(&src(&[("MYMCP_TRANSFER_ENABLED", "maybe")])).unwrap_err();
        assert_eq!(e.name, "MYMCP_TRANSFER_ENABLED");
        let e = transfer_settings(&src(&[("MYMCP_TRANSFER_MAX_BYTES", "0")])).unwrap_err();
        assert_eq!(e.name, "MYMCP_TRANSFER_MAX_BYTES");
    }

    #[test]
    fn overview_settings_default_to_the_reference() {
        let o = overview_settings(&src(&[])).unwrap();
        assert_eq!(o.data_dir, PathBuf::from("/var/lib/mymcp/recorder"));
        assert_eq!(o.merge_interval, Duration::from_secs(300));
        assert_eq!(o.audit_dir, PathBuf::from("/var/log/mymcp"));
        for not_positive in ["0", "-5"] {
            let o = overview_settings(&src(&[("MYMCP_RECORDER_MERGE_INTERVAL_SEC", not_positive)]))
                .unwrap();
            assert_eq!(o.merge_interval, Duration::from_secs(300));
        }
        let o = overview_settings(&src(&[
            ("MYMCP_RECORDER_MERGE_INTERVAL_SEC", "60"),
            ("MYMCP_RECORDER_DATA_DIR", "/srv/rec"),
        ]))
        .unwrap();
        assert_eq!(o.merge_interval, Duration::from_secs(60));
        assert_eq!(o.data_dir, PathBuf::from("/srv/rec"));
        let e = overview_settings(&src(&[("MYMCP_RECORDER_MERGE_INTERVAL_SEC", "x")])).unwrap_err();
        assert_eq!(e.name, "MYMCP_RECORDER_MERGE_INTERVAL_SEC");
        let e = overview_settings(&src(&[("MYMCP_RECORDER_DATA_DIR", "rec")])).unwrap_err();
        assert_eq!(e.name, "MYMCP_RECORDER_DATA_DIR");
        // The data directory is write-protected, not read-protected.
        let f = file_tools(
            &src(&[("MYMCP_RECORDER_DATA_DIR", "/srv/rec")]),
            std::path::Path::new("/etc/mymcp/tokens.json"),
            std::path::Path::new("/run/mymcp"),
        )
        .unwrap();
        assert_eq!(f.protected.write_only(), [PathBuf::from("/srv/rec")]);
        assert!(!f.protected.entries().contains(&PathBuf::from("/srv/rec")));
    }

    #[test]
    fn lists_drop_empty_entries() {
        let extra =
            settings::PROTECTED_PATHS.read(&src(&[("MYMCP_PROTECTED_PATHS", " /a, ,/b ,")]));
        assert_eq!(extra, vec!["/a", "/b"]);
    }

    #[test]
    fn declared_bounds_fit_the_executor_s_own_limits() {
        // A write_file request (content plus JSON escaping) fits in one frame.
        assert_eq!(settings::FRAME_ROOM, (MAX_FRAME_LEN as u64) - (1 << 20));
        assert_eq!(
            settings::TRANSFER_MAX_GRANTS_PER_TOKEN.kind.max,
            crate::transfer::MAX_GRANTS as u64
        );
        // Two streams of the largest output fit in one response.
        assert!(settings::BASH_MAX_OUTPUT_BYTES_HARD.kind.max * 2 + 4096 <= MAX_FRAME_LEN as u64);
        // Every default struct is what the settings give when nothing is set.
        let (bash, read, _) = tool_settings(&src(&[])).unwrap();
        let d = BashConfig::default();
        assert_eq!(
            (bash.default_max_output, bash.hard_max_output, bash.shell),
            (d.default_max_output, d.hard_max_output, d.shell)
        );
        let r = ReadConfig::default();
        assert_eq!(
            (
                read.default_limit,
                read.max_limit,
                read.max_line_bytes,
                read.timeout
            ),
            (r.default_limit, r.max_limit, r.max_line_bytes, r.timeout)
        );
        let dir = tempfile::tempdir().unwrap();
        let f = file_tools(&src(&[]), &dir.path().join("t.json"), dir.path()).unwrap();
        let (w, s) = (WriteConfig::default(), SearchConfig::default());
        assert_eq!(
            (
                f.write.max_write_bytes,
                f.write.max_edit_string_bytes,
                f.write.max_edit_file_bytes
            ),
            (
                w.max_write_bytes,
                w.max_edit_string_bytes,
                w.max_edit_file_bytes
            )
        );
        assert_eq!(
            (
                f.search.glob_max_results,
                f.search.grep_default_max_results,
                f.search.grep_max_results,
                f.search.timeout
            ),
            (
                s.glob_max_results,
                s.grep_default_max_results,
                s.grep_max_results,
                s.timeout
            )
        );
        let (o, d) = (
            overview_settings(&src(&[])).unwrap(),
            OverviewConfig::default(),
        );
        assert_eq!(
            (o.data_dir, o.merge_interval, o.audit_dir),
            (d.data_dir, d.merge_interval, d.audit_dir)
        );
    }
}
