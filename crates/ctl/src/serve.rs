//! `mymcpctl serve`: the quick try. Starts the executor and the frontend as two processes with
//! all state in a private temporary directory, prints the URL and two temporary tokens, and on
//! Ctrl-C or SIGTERM stops both and deletes the directory, so the tokens really vanish.
//!
//! Layout of the temporary directory (mode 0710, group = the frontend's group when root):
//!
//! ```text
//! /tmp/mymcp-XXXXXXXX/          0710 root:<frontend group>
//!   tokens.json                 0600 root   (digests only)
//!   tls/cert.pem                0644 root   (--tls: the throwaway certificate)
//!   tls/key.pem                 0640 root:<frontend group>
//!   run/                        0750 root:<frontend group>
//!     executor.sock             0660 root:<frontend group>
//!     control.sock              0600 root
//!   mymcp-frontend ->           /proc/self/fd/N: the frontend's binary, opened by mymcpctl
//! ```
//!
//! The frontend is executed through a descriptor that mymcpctl opened before the frontend's
//! process dropped its privileges, so it starts wherever the binaries live: a checkout in a
//! home directory (mode 0700 or 0750) is out of the frontend user's reach, and an exec by path
//! would fail there with "Permission denied". The kernel opens an ELF binary through the
//! descriptor without walking its directories; the symlink gives the process its usual name
//! (`comm`, which would otherwise be the descriptor's number).

use anyhow::{bail, Context};
use mymcp_protocol::Role;
use mymcp_settings::values::Env;
use mymcp_settings::{self as settings, Declared, Process};
use mymcp_sys::signals::{self, Signals};
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// What `serve` was asked for.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// User the frontend runs as when mymcpctl runs as root.
    pub frontend_user: Option<String>,
    pub log_level: String,
    /// Env file for the executor; `None`: no env file at all.
    pub env_file: Option<PathBuf>,
    /// Serve HTTPS with a throwaway self-signed certificate.
    pub tls: bool,
    /// `MYMCP_ADMIN_TOKEN`/`MYMCP_METRICS_TOKEN` as found in mymcpctl's environment (already
    /// overwritten there): imported into the temporary store as digests, so the executor never
    /// gets them in its environment.
    pub env_secrets: Vec<(String, String)>,
    /// The Unix account the temporary client tokens act as (`None`: root, as the executor).
    pub user: Option<String>,
}

/// The frontend's account: uid, gid, and a name for messages.
type FrontendAccount = mymcp_sys::Account;

fn lookup(name: &str) -> anyhow::Result<Option<FrontendAccount>> {
    // In-process (NSS through libc), not by running getent: one process less at start-up.
    mymcp_sys::user_by_name(name).with_context(|| format!("looking up user {name:?}"))
}

fn frontend_account(requested: Option<&str>) -> anyhow::Result<FrontendAccount> {
    match requested {
        Some(name) => {
            lookup(name)?.with_context(|| format!("frontend user {name:?} does not exist"))
        }
        None => match lookup("mymcp")? {
            Some(a) => Ok(a),
            None => {
                eprintln!("[mymcp] warning: user 'mymcp' does not exist; the frontend runs as 'nobody' (create it with: useradd --system --no-create-home mymcp)");
                lookup("nobody")?.context("neither user 'mymcp' nor 'nobody' exists")
            }
        },
    }
}

/// Creates `/tmp/mymcp-<random>` with mode 0700 (the caller widens it as needed).
fn private_temp_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    let mut rnd = [0u8; 6];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut rnd)?;
    let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let dir = base.join(format!("mymcp-{name}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Finds a sibling binary of this executable.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating mymcpctl")?;
    let path = me.parent().unwrap_or(Path::new(".")).join(name);
    if !path.is_file() {
        bail!("{} not found (expected beside mymcpctl)", path.display());
    }
    Ok(path)
}

/// Opens `binary` for a child to execute through `dir/<name>`, a symlink to
/// `/proc/self/fd/N`, without reaching it by path: the child may run as a user who cannot
/// traverse the directories that hold it. Keep the returned file open until the child has
/// been spawned (the descriptor is close-on-exec: the child's copy goes away once it runs).
///
/// A script (`#!`, e.g. a wrapper that runs the frontend under valgrind) is executed by its
/// path: the kernel hands its interpreter the path it was executed by, and the interpreter,
/// already past the exec, could no longer open the closed descriptor.
fn exec_through_descriptor(binary: &Path, dir: &Path) -> anyhow::Result<(File, PathBuf)> {
    let mut file = File::open(binary).with_context(|| format!("opening {}", binary.display()))?;
    let mut magic = [0u8; 2];
    if file.read_exact(&mut magic).is_ok() && &magic == b"#!" {
        return Ok((file, binary.to_owned()));
    }
    // Descriptor 3 becomes the frontend's listener in the child (dup2 onto it).
    if file.as_raw_fd() == 3 {
        file = file.try_clone()?;
    }
    let name = binary
        .file_name()
        .unwrap_or(std::ffi::OsStr::new("mymcp-frontend"));
    let link = dir.join(name);
    std::os::unix::fs::symlink(format!("/proc/self/fd/{}", file.as_raw_fd()), &link)
        .with_context(|| format!("creating {}", link.display()))?;
    Ok((file, link))
}

struct Running {
    executor: Child,
    frontend: Option<Child>,
    dir: PathBuf,
}

impl Running {
    /// Frontend first (no new requests), then the executor (finishes or kills commands).
    fn stop(&mut self) {
        if let Some(f) = self.frontend.as_mut() {
            stop_child(f, Duration::from_secs(5));
        }
        stop_child(&mut self.executor, Duration::from_secs(10));
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "[mymcp] warning: could not remove {}: {e}",
                self.dir.display()
            );
        }
    }
}

fn stop_child(child: &mut Child, patience: Duration) -> Option<ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        return Some(s);
    }
    let _ = signals::kill(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Waits until the executor listens: both sockets are bound (and listening) once
/// `control.sock` exists, as the executor binds it last.
fn wait_until_listening(path: &Path, executor: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = executor.try_wait()? {
            bail!("mymcp-executor exited during start-up ({status})");
        }
        if path.exists() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("mymcp-executor did not open {} within 15 s", path.display());
        }
        // A stat per millisecond: cheap, and start-up is a matter of milliseconds.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Imports the admin and metrics tokens that came in mymcpctl's environment into the
/// temporary store (digests only), as the executor imports those of its env file.
fn import_env_secrets(
    store: &mymcp_tokens::TokenStore,
    secrets: &[(String, String)],
) -> anyhow::Result<()> {
    let list: Vec<mymcp_protocol::ImportedToken> = secrets
        .iter()
        .filter_map(|(name, value)| {
            let role = crate::import::secret_role(name)?;
            let value = value.trim();
            (!value.is_empty()).then(|| mymcp_protocol::ImportedToken {
                digest: mymcp_tokens::digest(value),
                name: role.as_str().to_owned(),
                role,
                created_at: mymcp_tokens::clock::now_rfc3339(),
                last_used: None,
                enabled: true,
            })
        })
        .collect();
    if !list.is_empty() {
        store.import(list)?;
    }
    Ok(())
}

/// Runs the quick try until a signal arrives or a process dies. Returns the exit code.
pub fn serve(opts: &ServeOptions) -> anyhow::Result<i32> {
    let executor_bin = sibling("mymcp-executor")?;
    let frontend_bin = sibling("mymcp-frontend")?;
    let root = mymcp_sys::euid() == 0;
    let account = if root {
        frontend_account(opts.frontend_user.as_deref())?
    } else {
        if opts.frontend_user.is_some() {
            bail!("--frontend-user needs root; as an ordinary user both processes run as you");
        }
        let uid = mymcp_sys::euid();
        FrontendAccount {
            uid,
            gid: 0,
            name: format!("uid {uid}"),
            home: String::new(),
            shell: String::new(),
        }
    };
    // Checked before anything starts: a typo should not leave a server whose token can run
    // nothing.
    let tools_user = match opts.user.as_deref() {
        None => None,
        Some(_) if !root => {
            bail!("--user needs root: as an ordinary user the executor can act only as you")
        }
        Some(name) => {
            if !mymcp_tokens::valid_user(name) {
                bail!("--user {name:?} is not an account name");
            }
            let a = lookup(name)?
                .with_context(|| format!("--user: no account named {name:?} on this host"))?;
            Some(a)
        }
    };

    // Bind first, so that a busy port fails before anything else starts.
    let listener = TcpListener::bind((opts.host.as_str(), opts.port))
        .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
    let addr = listener.local_addr()?;
    let allow_plaintext = settings::ALLOW_PLAINTEXT
        .read(&Env)
        .unwrap_or(settings::ALLOW_PLAINTEXT.default());
    if !opts.tls && !allow_plaintext && !addr.ip().to_canonical().is_loopback() {
        bail!("refusing plain HTTP on {addr}: bearer tokens would cross the network unencrypted; add --tls (a throwaway self-signed certificate), listen on loopback, or set MYMCP_ALLOW_PLAINTEXT=true behind a TLS-terminating reverse proxy");
    }

    let shutdown = Signals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD])?;
    let dir = private_temp_dir()?;
    let run_dir = dir.join("run");
    let token_file = dir.join("tokens.json");
    if root {
        std::os::unix::fs::chown(&dir, Some(0), Some(account.gid))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710))?;
    }

    // The two temporary tokens go into the store before the executor starts (one write),
    // rather than through the control socket after it has.
    let (admin, rw) = {
        // Not synced to disk: the tokens end with this process and the directory with them.
        let (store, added) = mymcp_tokens::TokenStore::create_temporary(
            &token_file,
            &[("temp-admin", Role::Admin), ("temp-rw", Role::Rw)],
            tools_user.as_ref().map(|a| a.name.as_str()),
        )
        .with_context(|| format!("creating the temporary tokens in {}", token_file.display()))?;
        import_env_secrets(&store, &opts.env_secrets)?;
        let mut added = added.into_iter().map(|(token, _)| token);
        (
            added.next().expect("two tokens"),
            added.next().expect("two tokens"),
        )
    };

    // Transfer links are absolute, so the curl commands prepare_upload/download hand out run
    // from the client's shell as they are; OAuth's issuer and resource are this URL too. The
    // quick try's own URL unless told otherwise (not for 0.0.0.0 or ::, which no client can
    // reach by that name).
    let own_url = (std::env::var_os(settings::PUBLIC_BASE_URL.name).is_none()
        && !addr.ip().is_unspecified())
    .then(|| {
        let scheme = if opts.tls { "https" } else { "http" };
        format!("{scheme}://{addr}")
    });

    // OAuth is on under the quick try's own URL unless MYMCP_OAUTH_ENABLED says otherwise:
    // a client that signs in (the Inspector, mcp-remote) waits until a person approves it on
    // this host with `mymcpctl oauth approve`, and the 401 tells clients where to sign in.
    let oauth_by_default =
        std::env::var_os(settings::OAUTH_ENABLED.name).is_none() && own_url.is_some();
    let oauth = oauth_by_default || settings::OAUTH_ENABLED.read(&Env).unwrap_or(false);

    let mut executor_cmd = Command::new(&executor_bin);
    if let Some(url) = &own_url {
        executor_cmd.env(settings::PUBLIC_BASE_URL.name, url);
    }
    if oauth_by_default {
        executor_cmd.env(settings::OAUTH_ENABLED.name, "true");
    }
    executor_cmd
        .env(settings::RUNTIME_DIR.name, &run_dir)
        .env(settings::TOKEN_FILE.name, &token_file)
        // Background jobs and their spools vanish with the quick try, like its tokens.
        .env(settings::STATE_DIR.name, dir.join("state"))
        .env(settings::FRONTEND_USER.name, account.uid.to_string())
        .env(settings::LOG_LEVEL.name, &opts.log_level)
        .env(
            settings::ENV_FILE.name,
            opts.env_file
                .as_deref()
                .map(Path::as_os_str)
                .unwrap_or("none".as_ref()),
        )
        .process_group(0);
    // Tokens added during the quick try act as the same account as the temporary ones.
    if let Some(a) = &tools_user {
        executor_cmd.env(settings::DEFAULT_USER.name, &a.name);
    }
    // The quick try audits into its temporary directory, unless told otherwise.
    if std::env::var_os(settings::AUDIT_ENABLED.name).is_none() && opts.env_file.is_none() {
        executor_cmd
            .env(settings::AUDIT_ENABLED.name, "true")
            .env(settings::AUDIT_LOG_DIR.name, dir.join("audit"));
    }
    mymcp_sys::privileges::prepare_child_at_exec(&mut executor_cmd);
    let executor = executor_cmd
        .spawn()
        .with_context(|| format!("starting {}", executor_bin.display()))?;
    let mut running = Running {
        executor,
        frontend: None,
        dir: dir.clone(),
    };

    let result = (|| -> anyhow::Result<i32> {
        let certificate = if opts.tls {
            let tls_dir = dir.join("tls");
            std::fs::DirBuilder::new().mode(0o755).create(&tls_dir)?;
            let names = crate::certificate::names_for(&opts.host);
            Some(crate::certificate::generate(
                &tls_dir,
                names,
                root.then_some(account.gid),
            )?)
        } else {
            None
        };

        let (frontend_exe, frontend_link) = exec_through_descriptor(&frontend_bin, &dir)?;
        let mut frontend_cmd = Command::new(&frontend_link);
        frontend_cmd
            .arg0(&frontend_bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env(
                settings::EXECUTOR_SOCKET.name,
                run_dir.join("executor.sock"),
            )
            .env(settings::LOG_LEVEL.name, &opts.log_level)
            .envs(frontend_settings())
            .envs(otel_variables())
            .arg("--listen-fd")
            .arg("3")
            .current_dir("/")
            .process_group(0);
        if let Some(c) = &certificate {
            frontend_cmd
                .env(settings::TLS_CERT.name, &c.cert)
                .env(settings::TLS_KEY.name, &c.key);
        }
        if let Some(url) = &own_url {
            frontend_cmd.env(settings::PUBLIC_BASE_URL.name, url);
        }
        if oauth_by_default {
            frontend_cmd.env(settings::OAUTH_ENABLED.name, "true");
        }
        let (uid, gid, fd) = (account.uid, account.gid, listener.as_raw_fd());
        mymcp_sys::privileges::drop_privileges_at_exec(&mut frontend_cmd, uid, gid, root, Some(fd));
        running.frontend = Some(
            frontend_cmd
                .spawn()
                .with_context(|| format!("starting {}", frontend_bin.display()))?,
        );
        drop(listener);
        drop(frontend_exe);
        // The frontend started alongside the executor (it retries connecting every few
        // milliseconds while the executor starts); the banner waits for the executor.
        wait_until_listening(&run_dir.join("control.sock"), &mut running.executor)?;

        let scheme = if certificate.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{addr}/mcp");
        // The whole banner goes out in one write: the daemons share this stderr, and a line
        // written in pieces could be split by one of their log lines.
        let mut banner = String::new();
        macro_rules! banner_line {
            ($buf:ident, $($arg:tt)*) => {{
                use std::fmt::Write as _;
                let _ = writeln!($buf, $($arg)*);
            }};
        }
        banner_line!(banner, "[mymcp] serving on {url}");
        if let Some(c) = &certificate {
            banner_line!(
                banner,
                "[mymcp] TLS certificate (self-signed, throwaway): {}",
                c.cert.display()
            );
            banner_line!(banner, "[mymcp] SHA-256 fingerprint: {}", c.fingerprint);
            banner_line!(
                banner,
                "[mymcp] trust it: curl --cacert {0} …; NODE_EXTRA_CA_CERTS={0}; SSL_CERT_FILE={0}",
                c.cert.display()
            );
        }
        banner_line!(banner, "[mymcp] temp admin token: {admin}");
        banner_line!(banner, "[mymcp] temp rw token:    {rw}");
        match &tools_user {
            Some(a) => banner_line!(
                banner,
                "[mymcp] tools act as account {} (uid {}): commands and files with its rights",
                a.name,
                a.uid
            ),
            None if root => banner_line!(
                banner,
                "[mymcp] tools act as root (give --user ACCOUNT to act as another account)"
            ),
            None => {}
        }
        banner_line!(
            banner,
            "[mymcp] tokens live in {} and vanish on exit.",
            dir.display()
        );
        banner_line!(
            banner,
            "[mymcp] frontend runs as {} without privileges; executor as {}",
            account.name,
            if root { "root" } else { "you" }
        );
        banner_line!(
            banner,
            "[mymcp] more tokens: mymcpctl --runtime-dir {} token add --name NAME --role ro",
            run_dir.display()
        );
        if oauth {
            banner_line!(
                banner,
                "[mymcp] OAuth clients sign in here; approve one: mymcpctl --runtime-dir {} oauth approve CODE --user ACCOUNT --role rw",
                run_dir.display()
            );
        }
        banner_line!(banner, "[mymcp] Claude Code: claude mcp add --transport http mymcp {url} --header \"Authorization: Bearer {rw}\"");
        banner_line!(banner, "[mymcp] press Ctrl-C to stop");
        {
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(banner.as_bytes());
        }

        loop {
            if let Some(sig) = shutdown.wait(Duration::from_millis(250)) {
                if sig != libc::SIGCHLD {
                    eprintln!("[mymcp] stopping");
                    return Ok(0);
                }
            }
            if let Some(s) = running.executor.try_wait()? {
                eprintln!("[mymcp] mymcp-executor exited unexpectedly ({s}); stopping");
                return Ok(1);
            }
            if let Some(s) = running
                .frontend
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
                eprintln!("[mymcp] mymcp-frontend exited unexpectedly ({s}); stopping");
                return Ok(1);
            }
        }
    })();
    running.stop();
    result
}

/// The frontend's own settings (those it reads and the executor does not), but the three the
/// quick try sets itself (address, port, executor socket): passed on from this process's
/// environment, as the frontend otherwise starts with an empty one. The executor inherits the
/// rest (`MYMCP_TRANSFER_*` included).
pub fn passed_to_the_frontend(s: &dyn Declared) -> bool {
    // Both daemons read the public URL and whether OAuth is on (the issuer is the same).
    let shared = [settings::PUBLIC_BASE_URL.name, settings::OAUTH_ENABLED.name];
    s.read_by().contains(&Process::Frontend)
        && (!s.read_by().contains(&Process::Executor) || shared.contains(&s.name()))
        && ![
            settings::HOST.name,
            settings::PORT.name,
            settings::EXECUTOR_SOCKET.name,
        ]
        .contains(&s.name())
}

/// The standard OpenTelemetry variables (`OTEL_*`), passed on to the frontend, which exports
/// for both processes (see docs/observability.md).
fn otel_variables() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(name, _)| name.as_encoded_bytes().starts_with(b"OTEL_"))
        .collect()
}

fn frontend_settings() -> Vec<(&'static str, std::ffi::OsString)> {
    settings::ALL
        .iter()
        .filter(|s| passed_to_the_frontend(**s))
        .filter_map(|s| std::env::var_os(s.name()).map(|value| (s.name(), value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapper script in place of the frontend (as `bench/run --callgrind` makes) runs; a
    /// binary goes through the descriptor.
    #[test]
    fn a_script_frontend_is_executed_by_path_and_a_binary_through_its_descriptor() {
        let tmp = std::env::temp_dir().join(format!("mymcp-serve-exec-{}", std::process::id()));
        let (bins, run) = (tmp.join("bin"), tmp.join("run"));
        std::fs::create_dir_all(&bins).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let script = bins.join("mymcp-frontend");
        std::fs::write(&script, "#!/bin/sh\necho wrapped \"$@\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (file, exe) = exec_through_descriptor(&script, &run).unwrap();
        assert_eq!(exe, script);
        let out = Command::new(&exe).arg("x").output().unwrap();
        drop(file);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "wrapped x\n");

        let binary = bins.join("echo");
        std::fs::copy("/bin/echo", &binary).unwrap();
        let (file, exe) = exec_through_descriptor(&binary, &run).unwrap();
        assert_eq!(exe, run.join("echo"));
        let out = Command::new(&exe).arg("direct").output().unwrap();
        drop(file);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "direct\n");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_frontend_gets_its_own_settings_but_address_port_and_socket() {
        let mut passed: Vec<&str> = settings::ALL
            .iter()
            .filter(|s| passed_to_the_frontend(**s))
            .map(|s| s.name())
            .collect();
        let mut want = vec![
            "MYMCP_MAX_BODY_BYTES",
            "MYMCP_TLS_CERT",
            "MYMCP_TLS_KEY",
            "MYMCP_ALLOW_PLAINTEXT",
            "MYMCP_ALLOWED_ORIGINS",
            "MYMCP_ALLOWED_HOSTS",
            "MYMCP_PUBLIC_BASE_URL",
            "MYMCP_TRUSTED_PROXIES",
            "MYMCP_HEADER_TIMEOUT_SEC",
            "MYMCP_BODY_TIMEOUT_SEC",
            "MYMCP_BODY_IDLE_TIMEOUT_SEC",
            "MYMCP_MAX_CONNECTIONS",
            "MYMCP_MAX_CONNECTIONS_PER_IP",
            "MYMCP_OAUTH_ENABLED",
            "MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS",
            "MYMCP_OUTBOUND_CA_FILE",
            "MYMCP_ACME_DOMAIN",
            "MYMCP_ACME_EMAIL",
            "MYMCP_ACME_DIRECTORY",
            "MYMCP_ACME_DIR",
        ];
        passed.sort_unstable();
        want.sort_unstable();
        assert_eq!(passed, want);
    }
}
