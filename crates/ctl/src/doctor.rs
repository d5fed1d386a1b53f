//! `mymcpctl doctor`: checks an installation and says what is wrong: users, directories and
//! their modes, the env file, the configuration (as the executor itself validates it), the
//! sockets, the executor, the audit log, systemd units, the TLS certificate.

use crate::client::ControlClient;
use mymcp_protocol::{ControlRequest, ControlResponse};
use mymcp_settings as settings;
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Worth knowing; not a failure.
    Warn,
    /// A problem: `doctor` exits non-zero.
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub message: String,
}

/// What `doctor` looks at.
#[derive(Clone, Debug)]
pub struct DoctorOptions {
    pub runtime_dir: PathBuf,
    pub env_file: Option<PathBuf>,
}

struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, level: Level, check: &'static str, message: impl Into<String>) {
        self.0.push(Finding {
            level,
            check,
            message: message.into(),
        });
    }
}

/// Runs every check.
pub fn run(opts: &DoctorOptions) -> Vec<Finding> {
    let mut r = Report(Vec::new());
    let env_var = std::env::var(settings::ENV_FILE.name).ok();
    let env_path = mymcp_settings::envfile::discover(opts.env_file.as_deref(), env_var.as_deref());
    let mut values: HashMap<String, String> = HashMap::new();
    match &env_path {
        None => r.add(
            Level::Warn,
            "env file",
            format!(
                "none found ({} does not exist); defaults and the environment apply",
                mymcp_settings::DEFAULT_ENV_FILE
            ),
        ),
        Some(p) => {
            match mymcp_settings::envfile::read(p) {
                Ok(pairs) => {
                    values = pairs.into_iter().collect();
                    r.add(Level::Ok, "env file", format!("{} parses", p.display()));
                }
                Err(e) => r.add(Level::Fail, "env file", e.to_string()),
            }
            check_private_file(&mut r, "env file", p);
        }
    }
    for (k, v) in std::env::vars() {
        if k.starts_with("MYMCP_") {
            values.insert(k, v);
        }
    }

    check_config(&mut r, env_path.as_deref());

    let user = settings::FRONTEND_USER.read(&values);
    match user_exists(&user) {
        true => r.add(Level::Ok, "users", format!("frontend user {user:?} exists")),
        false => r.add(
            Level::Fail,
            "users",
            format!(
                "frontend user {user:?} does not exist (useradd --system --no-create-home {user})"
            ),
        ),
    }

    let tools = settings::DEFAULT_USER.read(&values);
    match user_exists(&tools) {
        true => r.add(
            Level::Ok,
            "users",
            format!("tokens without an account of their own act as {tools:?}"),
        ),
        false => r.add(
            Level::Fail,
            "users",
            format!("MYMCP_DEFAULT_USER {tools:?} names no account: tokens without --user run nothing (AccountUnavailable) until it exists"),
        ),
    }

    let token_file = settings::TOKEN_FILE
        .read(&values)
        .expect("a path that need not be absolute is always read");
    if let Some(dir) = token_file.parent() {
        check_dir(&mut r, "config directory", dir, 0o022);
    }
    if token_file.exists() {
        check_private_file(&mut r, "token file", &token_file);
    } else {
        r.add(
            Level::Warn,
            "token file",
            format!(
                "{} does not exist yet (the executor creates it)",
                token_file.display()
            ),
        );
    }
    // Others may pass through (0711) to the recorder's directory inside, never list or write.
    match settings::STATE_DIR.read(&values) {
        Ok(state) => check_dir(&mut r, "state directory", &state, 0o066),
        Err(e) => r.add(Level::Fail, "state directory", e.to_string()),
    }

    let control = opts.runtime_dir.join("control.sock");
    let exec = opts.runtime_dir.join("executor.sock");
    check_socket(&mut r, &control, 0o600);
    check_socket(&mut r, &exec, 0o660);
    let status = ControlClient::connect(&control).and_then(|mut c| c.call(ControlRequest::Status));
    // The running executor's own view of the audit log wins over the settings read here.
    let running_audit = match &status {
        Ok(ControlResponse::Status(s)) => Some(s.audit.clone()),
        _ => None,
    };
    match running_audit.as_ref().filter(|a| a.enabled) {
        Some(a) => check_dir(&mut r, "audit directory", Path::new(&a.dir), 0o027),
        None => {
            let audit_enabled = settings::AUDIT_ENABLED
                .read(&values)
                .unwrap_or(settings::AUDIT_ENABLED.default());
            if audit_enabled {
                match settings::AUDIT_LOG_DIR.read(&values) {
                    Ok(dir) => check_dir(&mut r, "audit directory", &dir, 0o027),
                    Err(e) => r.add(Level::Fail, "audit directory", e.to_string()),
                }
            } else {
                r.add(
                    Level::Warn,
                    "audit",
                    "MYMCP_AUDIT_ENABLED is off: tool calls are not audited",
                );
            }
        }
    }
    match status {
        Ok(ControlResponse::Status(s)) => {
            r.add(
                Level::Ok,
                "executor",
                format!(
                    "running, version {}, up {} s, {} tokens",
                    s.version, s.uptime_secs, s.tokens
                ),
            );
            if s.confined {
                r.add(Level::Ok, "confinement", s.confinement.clone());
            } else {
                r.add(
                    Level::Warn,
                    "confinement",
                    format!(
                        "{}: a process that leaves its command's process group (setsid, nohup … &) outlives the call; see docs/confinement.md",
                        s.confinement
                    ),
                );
            }
            match &s.views_unavailable {
                None => r.add(
                    Level::Ok,
                    "views",
                    "commands get a mount namespace of their own (mymcp's files read-only; write roots, hidden paths, no network)".to_owned(),
                ),
                Some(why) => r.add(
                    Level::Warn,
                    "views",
                    format!("commands cannot get a mount namespace of their own ({why}): mymcp's files are not read-only to them, and tokens with a view run no command; see docs/confinement.md"),
                ),
            }
            if s.version != env!("CARGO_PKG_VERSION") {
                r.add(
                    Level::Warn,
                    "executor",
                    format!(
                        "runs version {}, mymcpctl is {}",
                        s.version,
                        env!("CARGO_PKG_VERSION")
                    ),
                );
            }
            if s.audit.write_failures > 0 {
                r.add(
                    Level::Fail,
                    "audit",
                    format!(
                        "{} audit records could not be written (calls were refused)",
                        s.audit.write_failures
                    ),
                );
            } else if s.audit.enabled {
                r.add(
                    Level::Ok,
                    "audit",
                    format!("writing {}, {} lines", s.audit.dir, s.audit.head_seq),
                );
            }
        }
        Ok(other) => r.add(
            Level::Fail,
            "executor",
            format!("unexpected answer {other:?}"),
        ),
        Err(e) => r.add(Level::Fail, "executor", format!("{e:#}")),
    }

    check_units(&mut r);
    check_certificate(&mut r, &frontend_settings());
    r.0
}

/// Where the packaged frontend unit's settings live (non-secret, read by the frontend).
pub const FRONTEND_ENV_FILE: &str = "/etc/mymcp/frontend.env";
/// The certificate the unit's commented `LoadCredential=tls.crt:…` line names.
pub const CREDENTIAL_CERT_SOURCE: &str = "/etc/mymcp/tls/cert.pem";

/// The frontend's settings: its env file, overridden by this process's environment.
fn frontend_settings() -> HashMap<String, String> {
    let mut values: HashMap<String, String> =
        mymcp_settings::envfile::read(Path::new(FRONTEND_ENV_FILE))
            .map(|pairs| pairs.into_iter().collect())
            .unwrap_or_default();
    for (k, v) in std::env::vars() {
        if [
            settings::TLS_CERT.name,
            settings::TLS_KEY.name,
            settings::ACME_DOMAIN.name,
            settings::ACME_DIR.name,
        ]
        .contains(&k.as_str())
        {
            values.insert(k, v);
        }
    }
    values
}

/// The certificate the frontend will serve: `MYMCP_TLS_CERT` (frontend.env or the
/// environment), else the credential source in /etc/mymcp/tls. It must parse as PEM; its
/// fingerprint is reported so that it can be compared with what clients see.
fn check_certificate(r: &mut Report, values: &HashMap<String, String>) {
    if let Some(domains) = settings::ACME_DOMAIN.value(values) {
        check_acme_certificate(r, values, &domains);
        return;
    }
    let configured = settings::TLS_CERT.value(values).map(PathBuf::from);
    let path = match configured {
        Some(p) => p,
        None if Path::new(CREDENTIAL_CERT_SOURCE).exists() => PathBuf::from(CREDENTIAL_CERT_SOURCE),
        None => {
            r.add(
                Level::Warn,
                "certificate",
                format!("no TLS certificate (MYMCP_TLS_CERT in {FRONTEND_ENV_FILE}, or {CREDENTIAL_CERT_SOURCE} for LoadCredential=): serve on loopback or behind a TLS proxy"),
            );
            return;
        }
    };
    match certificate_fingerprint(&path) {
        Ok(fp) => r.add(
            Level::Ok,
            "certificate",
            format!("{} (SHA-256 {fp})", path.display()),
        ),
        Err(e) => r.add(
            Level::Fail,
            "certificate",
            format!("{}: {e}", path.display()),
        ),
    }
}

/// With `MYMCP_ACME_DOMAIN` the frontend keeps the certificate it obtained in
/// `MYMCP_ACME_DIR/certificate.pem`: its fingerprint, or a warning while there is none yet.
fn check_acme_certificate(r: &mut Report, values: &HashMap<String, String>, domains: &str) {
    let dir = settings::ACME_DIR
        .read(values)
        .unwrap_or_else(|_| PathBuf::from(settings::ACME_DIR.default()));
    let path = dir.join("certificate.pem");
    match certificate_fingerprint(&path) {
        Ok(fp) => r.add(
            Level::Ok,
            "certificate",
            format!("ACME for {domains}: {} (SHA-256 {fp})", path.display()),
        ),
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
        {
            r.add(
                Level::Warn,
                "certificate",
                format!("ACME for {domains}: no certificate obtained yet ({} is missing; the frontend's log says why: journalctl -u mymcp-frontend)", path.display()),
            )
        }
        Err(e) => r.add(
            Level::Fail,
            "certificate",
            format!("ACME for {domains}: {}: {e}", path.display()),
        ),
    }
}

/// The SHA-256 fingerprint of the first certificate in a PEM file.
pub fn certificate_fingerprint(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read(path)?;
    let blocks = pem::parse_many(&text)?;
    let cert = blocks
        .iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or_else(|| anyhow::anyhow!("no PEM CERTIFICATE block"))?;
    Ok(crate::certificate::fingerprint(cert.contents()))
}

fn check_config(r: &mut Report, env_file: Option<&Path>) {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.join("mymcp-executor")))
        .filter(|p| p.is_file())
        .or_else(|| {
            let p = PathBuf::from("/usr/sbin/mymcp-executor");
            p.is_file().then_some(p)
        });
    let Some(exe) = exe else {
        r.add(
            Level::Warn,
            "config",
            "mymcp-executor not found beside mymcpctl; settings not validated",
        );
        return;
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--check-config");
    if let Some(p) = env_file {
        cmd.arg("--env-file").arg(p);
    }
    match cmd.output() {
        Ok(out) if out.status.success() => r.add(Level::Ok, "config", "every setting is valid"),
        Ok(out) => r.add(
            Level::Fail,
            "config",
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ),
        Err(e) => r.add(
            Level::Warn,
            "config",
            format!("cannot run mymcp-executor: {e}"),
        ),
    }
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A directory owned by root without the `forbidden` mode bits.
fn check_dir(r: &mut Report, check: &'static str, dir: &Path, forbidden: u32) {
    match std::fs::symlink_metadata(dir) {
        Err(e) => r.add(
            Level::Warn,
            check,
            format!("{}: {e} (created on first start)", dir.display()),
        ),
        Ok(m) if !m.is_dir() => r.add(
            Level::Fail,
            check,
            format!("{} is not a directory", dir.display()),
        ),
        Ok(m) => {
            let mode = m.mode() & 0o7777;
            if m.uid() != 0 {
                r.add(
                    Level::Fail,
                    check,
                    format!("{} is owned by uid {}, not root", dir.display(), m.uid()),
                );
            } else if mode & forbidden != 0 {
                r.add(
                    Level::Fail,
                    check,
                    format!(
                        "{} has mode {mode:04o}; remove {:04o}",
                        dir.display(),
                        mode & forbidden
                    ),
                );
            } else {
                r.add(
                    Level::Ok,
                    check,
                    format!("{} root {mode:04o}", dir.display()),
                );
            }
        }
    }
}

/// A root-owned file that only root can read.
fn check_private_file(r: &mut Report, check: &'static str, path: &Path) {
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.mode() & 0o777;
        if m.uid() != 0 || mode & 0o077 != 0 {
            r.add(
                Level::Fail,
                check,
                format!(
                    "{} is uid {} mode {mode:04o}; it holds secrets: chown root and chmod 0600",
                    path.display(),
                    m.uid()
                ),
            );
        } else {
            r.add(
                Level::Ok,
                check,
                format!("{} root {mode:04o}", path.display()),
            );
        }
    }
}

fn check_socket(r: &mut Report, path: &Path, want: u32) {
    match std::fs::symlink_metadata(path) {
        Err(_) => r.add(
            Level::Fail,
            "sockets",
            format!("{} missing (is the executor running?)", path.display()),
        ),
        Ok(m) if !m.file_type().is_socket() => r.add(
            Level::Fail,
            "sockets",
            format!("{} is not a socket", path.display()),
        ),
        Ok(m) => {
            let mode = m.mode() & 0o777;
            if mode != want || m.uid() != 0 {
                r.add(
                    Level::Fail,
                    "sockets",
                    format!(
                        "{} uid {} mode {mode:04o}, expected root {want:04o}",
                        path.display(),
                        m.uid()
                    ),
                );
            } else {
                r.add(
                    Level::Ok,
                    "sockets",
                    format!("{} root {mode:04o}", path.display()),
                );
            }
        }
    }
}

fn check_units(r: &mut Report) {
    let Ok(out) = Command::new("systemctl")
        .args([
            "is-enabled",
            "mymcp-executor.socket",
            "mymcp-executor-control.socket",
            "mymcp-frontend.socket",
        ])
        .output()
    else {
        r.add(
            Level::Warn,
            "units",
            "systemctl not available; units not checked",
        );
        return;
    };
    let states = String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace('\n', ", ");
    if out.status.success() {
        r.add(
            Level::Ok,
            "units",
            format!("sockets of mymcp-executor (executor, control) and mymcp-frontend: {states}"),
        );
    } else {
        r.add(
            Level::Warn,
            "units",
            format!("systemd units not enabled or not installed ({states})"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_check_reports_the_fingerprint_or_fails() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::certificate::generate(dir.path(), vec!["localhost".into()], None).unwrap();
        assert_eq!(certificate_fingerprint(&c.cert).unwrap(), c.fingerprint);
        assert!(certificate_fingerprint(&c.key).is_err());

        let mut r = Report(Vec::new());
        let settings = HashMap::from([("MYMCP_TLS_CERT".to_owned(), c.cert.display().to_string())]);
        check_certificate(&mut r, &settings);
        assert_eq!(r.0[0].level, Level::Ok);
        assert!(r.0[0].message.contains(&c.fingerprint));

        let mut r = Report(Vec::new());
        let settings = HashMap::from([("MYMCP_TLS_CERT".to_owned(), c.key.display().to_string())]);
        check_certificate(&mut r, &settings);
        assert_eq!(r.0[0].level, Level::Fail);
    }

    #[test]
    fn with_acme_the_obtained_certificate_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let settings = HashMap::from([
            ("MYMCP_ACME_DOMAIN".to_owned(), "mcp.example.com".to_owned()),
            (
                "MYMCP_ACME_DIR".to_owned(),
                dir.path().display().to_string(),
            ),
        ]);
        let mut r = Report(Vec::new());
        check_certificate(&mut r, &settings);
        assert_eq!(r.0[0].level, Level::Warn);
        assert!(
            r.0[0].message.contains("no certificate obtained yet"),
            "{}",
            r.0[0].message
        );

        let c =
            crate::certificate::generate(dir.path(), vec!["mcp.example.com".into()], None).unwrap();
        std::fs::copy(&c.cert, dir.path().join("certificate.pem")).unwrap();
        let mut r = Report(Vec::new());
        check_certificate(&mut r, &settings);
        assert_eq!(r.0[0].level, Level::Ok);
        assert!(r.0[0].message.contains(&c.fingerprint));
        assert!(r.0[0].message.starts_with("ACME for mcp.example.com: "));
    }
}
