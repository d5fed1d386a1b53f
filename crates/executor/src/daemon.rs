//! The executor daemon: reads its settings, opens the token store and the audit log, builds
//! the [`Executor`] and serves `executor.sock` and `control.sock` until told to stop, then
//! shuts down within the grace period. `main` only wires the environment, the sockets passed
//! by the service manager, signals and logging into [`run`].

use crate::audit::{Actor, Audit, Outcome};
use crate::cgroup::{Confinement, KillMode};
use crate::cli::Args;
use crate::config::{self, Env};
use crate::control::Control;
use crate::dispatch::Executor;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::server::{self, Origin, Shutdown};
use crate::spawn;
use crate::terminals::Terminals;
use mymcp_service::activation::Activated;
use mymcp_service::notify::Notifier;
use mymcp_sys as sys;
use mymcp_tokens::TokenStore;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Secrets found in the environment, the env file or the service manager's credentials; never
/// left in the process environment. Imported into the token store as digests.
#[derive(Default)]
pub struct Secrets {
    /// `MYMCP_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// `MYMCP_METRICS_TOKEN`.
    pub metrics_token: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "…"))
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Why the executor could not start or stopped with an error: one line, each cause after a
/// `: `.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    /// An invalid setting: its message names the variable, the value and what is allowed.
    fn config(e: config::ConfigError) -> Error {
        Error(e.to_string())
    }

    /// `e` followed by each of its causes.
    fn chain(e: &dyn std::error::Error) -> Error {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        Error(text)
    }

    /// What was being done, then [`Error::chain`] of `e`.
    fn context(what: String, e: &dyn std::error::Error) -> Error {
        Error(format!("{what}: {}", Error::chain(e).0))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Imports the admin and metrics tokens named by the environment or env file (digests only),
/// unless the store already has them or they were revoked or rotated away. An import that adds
/// a token is audited (`token_import` by `mymcp-executor`), after the fact: whether it adds
/// anything is known only then, and a start record at every start-up would be noise.
fn import_secrets(tokens: &TokenStore, secrets: &Secrets, audit: &Audit) -> Result<(), Error> {
    use mymcp_protocol::{ImportedToken, Role};
    let mut list = Vec::new();
    for (value, role) in [
        (&secrets.admin_token, Role::Admin),
        (&secrets.metrics_token, Role::Metrics),
    ] {
        let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
            continue;
        };
        list.push(ImportedToken {
            digest: mymcp_tokens::digest(value),
            name: role.as_str().to_owned(),
            role,
            created_at: mymcp_tokens::clock::now_rfc3339(),
            last_used: None,
            enabled: true,
        });
    }
    if !list.is_empty() {
        let params = serde_json::json!({
            "source": "environment",
            "count": list.len(),
            "tokens": list.iter().map(|t| serde_json::json!({"name": t.name, "role": t.role.as_str()})).collect::<Vec<_>>(),
        });
        let started = std::time::Instant::now();
        let (added, skipped) = tokens.import(list).map_err(|e| Error::chain(&e))?;
        if added > 0 {
            let op = audit.operation("token_import", Actor::executor(), params);
            let output = serde_json::json!({"added": added, "skipped": skipped});
            audit.op_outcome(&op, Outcome::ok(Some(started.elapsed()), Some(output)));
            tracing::warn!(added, "imported MYMCP_ADMIN_TOKEN/MYMCP_METRICS_TOKEN into the token store (digests only); manage them with mymcpctl token rotate-admin|rotate-metrics|disable-metrics and remove them from the env file");
        }
    }
    Ok(())
}

/// Runs the executor with the settings of `args` and the environment until `stop` ends (a
/// signal, in `main`), then shuts down: running commands and jobs get the grace period, the
/// audit log is sealed, token use times are recorded. `activated` are the sockets passed by
/// the service manager (else they are bound in the runtime directory); `notifier` tells it
/// when the executor is ready and stopping, and pings its watchdog.
pub fn run(
    args: Args,
    secrets: Secrets,
    notifier: Notifier,
    activated: Vec<Activated>,
    stop: impl Future<Output = io::Result<()>> + Send,
) -> Result<(), Error> {
    // SAFETY-free hygiene: sockets and files are created with explicit modes; a restrictive
    // umask makes the window before chmod harmless.
    set_umask();
    let (mut bash, read, bash_max_concurrent) =
        config::tool_settings(&Env).map_err(Error::config)?;
    let limits = config::default_limits(&Env).map_err(Error::config)?;
    let files =
        config::file_tools(&Env, &args.token_file, &args.runtime_dir).map_err(Error::config)?;
    let protected: Vec<String> = files
        .protected
        .entries()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let write_protected: Vec<String> = files
        .protected
        .write_only()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    bash.protect = files
        .protected
        .entries()
        .iter()
        .chain(files.protected.write_only())
        .cloned()
        .collect();
    if let Err(e) = spawn::probe_views() {
        tracing::warn!(error = %e, "commands cannot get a mount namespace of their own here: mymcp's own files are not made read-only to them, and tokens with write roots, hidden paths or no network run no command");
        bash.protect = Arc::new([]);
        bash.views_unavailable = Some(e.to_string());
    }
    let per_token = config::bash_per_token(&Env).map_err(Error::config)?;
    let oauth = config::oauth_settings(&Env).map_err(Error::config)?;
    let job_config = config::job_settings(&Env).map_err(Error::config)?;
    let terminal_config = config::terminal_settings(&Env).map_err(Error::config)?;
    let transfer_config = config::transfer_settings(&Env).map_err(Error::config)?;
    let grace = config::shutdown_grace(&Env).map_err(Error::config)?;
    let audit_settings = config::audit_settings(&Env).map_err(Error::config)?;
    let telemetry = config::telemetry_settings(&Env).map_err(Error::config)?;
    let mut overview_config = config::overview_settings(&Env).map_err(Error::config)?;
    // Under systemd (a notify service) the recorder is the unit mymcp-recorder; messages about
    // a missing overview say so only there.
    overview_config.under_systemd = notifier.enabled();
    config::other_settings(&Env).map_err(Error::config)?;
    let default_user = config::default_user(&Env).map_err(Error::config)?;
    let euid = sys::euid();
    let frontend = resolve_frontend_user(&args.frontend_user)?;
    if euid != 0 && frontend.0 != euid {
        return Err(Error(format!(
            "running as uid {euid} (not root), so only the same uid can be the frontend; got frontend user {:?} (uid {})",
            args.frontend_user,
            frontend.0
        )));
    }
    if args.check_config {
        println!("configuration OK");
        return Ok(());
    }

    let metrics = Arc::new(Metrics::default());
    let (audit, install_key) = Audit::open(&audit_settings, metrics.clone()).map_err(|e| {
        Error::context(
            format!(
                "audit log in {} (MYMCP_AUDIT_LOG_DIR)",
                audit_settings.log.dir.display()
            ),
            &e,
        )
    })?;
    let audit = if telemetry.audit_logs {
        audit.with_feed(Arc::default())
    } else {
        audit
    };
    let audit = Arc::new(audit);
    if let Some(key) = install_key {
        let stored = audit_settings.log.key_file.with_file_name("install.pub");
        if let Err(e) = std::fs::write(&stored, format!("{key}\n")) {
            tracing::warn!(error = %e, path = %stored.display(), "could not store the audit install key");
        }
        // One write: the frontend shares this stderr under `mymcpctl serve`, and a line
        // written in pieces (as eprintln! does) could be split by one of its log lines.
        let notice = format!(
            "[mymcp] audit install key: {key}\n[mymcp] keep a copy off this host; check the log with: mymcpctl audit verify --key {key}\n"
        );
        {
            use std::io::Write as _;
            let _ = std::io::stderr().lock().write_all(notice.as_bytes());
        }
        tracing::warn!(key = %key, stored = %stored.display(), "new audit key chain; this install key is printed only now");
    }

    let tokens = TokenStore::open(&args.token_file)
        .and_then(|t| t.with_default_user(&default_user))
        .map_err(|e| Error::chain(&e))?;
    let tokens = Arc::new(tokens);
    match sys::user_by_name(&default_user) {
        Ok(Some(_)) => {}
        // Not fatal: tokens of other accounts work, and this one's calls say what is wrong.
        Ok(None) => {
            tracing::error!(account = %default_user, "MYMCP_DEFAULT_USER names no account on this host: calls of tokens without an account of their own fail (AccountUnavailable) until it exists")
        }
        Err(e) => {
            tracing::warn!(account = %default_user, error = %e, "cannot look up MYMCP_DEFAULT_USER's account now")
        }
    }
    import_secrets(&tokens, &secrets, &audit)?;
    let jobs = Arc::new(Jobs::open(job_config, audit.clone()));
    let terminals = Arc::new(Terminals::open(terminal_config, audit.clone()));
    // Once nothing before serving can fail (a refused start leaves no cgroup behind, and says
    // one thing), and before the runtime's threads: the executor may move itself into a leaf
    // cgroup. Dropping the last reference removes this executor's cgroups.
    let confine = Arc::new(Confinement::setup(limits));
    if confine.kill_mode() == KillMode::ProcessGroup {
        tracing::warn!(confinement = %confine.describe(), "commands are not confined by cgroups: a process that leaves its process group (setsid, nohup … &) outlives its call");
    } else {
        tracing::info!(confinement = %confine.describe(), "commands run in cgroups of their own");
    }
    bash.confine = confine.clone();
    let executor = Arc::new(
        Executor::new(tokens.clone(), bash, read, files, bash_max_concurrent)
            .with_command_limits(bash_max_concurrent, per_token)
            .with_jobs(jobs.clone())
            .with_terminals(terminals)
            .with_observability(metrics.clone(), audit.clone())
            .with_transfers(transfer_config)
            .with_overview(overview_config)
            .with_telemetry_metrics(telemetry.executor_metrics)
            .with_oauth_from(oauth),
    );
    let control = Arc::new(Control::new(executor.clone()));

    if let Err(e) = mymcp_service::memory::start_trimmer(Duration::from_millis(500)) {
        tracing::warn!(error = %e, "no heap-trim thread; memory after large answers is kept");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A thread inherits the credentials of the one that starts it. The runtime's threads
        // are started while no thread acts as an account (see `accounts`): one that is not
        // the executor's own would run later calls with another account's rights.
        .on_thread_start(move || {
            let now = sys::euid();
            if now != euid {
                eprintln!(
                    "mymcp-executor: a runtime thread started as uid {now}, not {euid}; aborting"
                );
                std::process::abort();
            }
        })
        .build()
        .map_err(|e| Error::context("tokio runtime".into(), &e))?;
    let served = rt.block_on(async move {
        let group = (euid == 0).then_some(frontend.1);
        let listeners =
            server::listeners(&args.runtime_dir, group, activated).map_err(|e| Error::chain(&e))?;
        let (exec_path, control_path) = server::socket_paths(&args.runtime_dir);
        let ((exec_listener, exec_origin), (control_listener, control_origin)) =
            (listeners.executor, listeners.control);

        let shutdown = Arc::new(Shutdown::default());
        let control_uid = euid;
        tokio::spawn(server::serve(
            "executor.sock",
            exec_listener,
            frontend.0,
            executor.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(server::serve(
            "control.sock",
            control_listener,
            control_uid,
            control,
            shutdown.clone(),
        ));
        let flusher = tokio::spawn({
            let tokens = tokens.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    if let Err(e) = tokens.flush() {
                        tracing::warn!(error = %e, "could not record token last_used times");
                    }
                }
            }
        });
        let sealer = tokio::spawn({
            let audit = audit.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let audit = audit.clone();
                    let _ = tokio::task::spawn_blocking(move || audit.tick()).await;
                }
            }
        });
        let notifier = Arc::new(notifier);
        // From a task of the runtime that serves the sockets.
        let watchdog = notifier.spawn_watchdog();
        tracing::info!(
            activated = exec_origin == Origin::Activated || control_origin == Origin::Activated,
            audit = audit.enabled(),
            runtime_dir = %args.runtime_dir.display(),
            token_file = %args.token_file.display(),
            frontend_uid = frontend.0,
            tokens = tokens.count(),
            default_user = %tokens.default_user(),
            protected = %protected.join(","),
            write_protected = %write_protected.join(","),
            version = env!("CARGO_PKG_VERSION"),
            "executor ready"
        );
        notifier.ready(&format!(
            "ready: {} token(s), audit {}",
            tokens.count(),
            if audit.enabled() { "on" } else { "off" }
        ));

        stop.await.map_err(|e| Error::chain(&e))?;
        notifier.stopping(&format!(
            "stopping: {} call(s) running, grace {} s",
            shutdown.in_flight(),
            grace.as_secs()
        ));
        tracing::info!(
            running = shutdown.in_flight(),
            grace_secs = grace.as_secs(),
            "stopping"
        );
        // Commands and background jobs alike: SIGTERM, the grace period, then SIGKILL;
        // terminals: SIGHUP, a second, SIGKILL.
        shutdown.run(grace).await;
        jobs.remove_all();
        confine.close();
        flusher.abort();
        sealer.abort();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        audit.close();
        if let Err(e) = tokens.flush() {
            tracing::warn!(error = %e, "could not record token last_used times");
        }
        // Sockets passed by the service manager are its to remove.
        if exec_origin == Origin::Bound {
            let _ = std::fs::remove_file(&exec_path);
        }
        if control_origin == Origin::Bound {
            let _ = std::fs::remove_file(&control_path);
        }
        tracing::info!("stopped");
        Ok::<(), Error>(())
    });
    // Dropping the runtime would wait for every blocking-pool thread, and a thread stuck in
    // the kernel (a hung NFS server, a FUSE daemon that never answers) may never return:
    // shutdown's grace is over, so exit anyway.
    rt.shutdown_timeout(Duration::from_millis(500));
    served
}

fn set_umask() {
    // Files the executor creates get explicit modes; the umask only guards the moments
    // between creation and chmod.
    sys::set_umask(0o077);
}

/// Resolves the frontend user to (uid, primary gid).
fn resolve_frontend_user(spec: &str) -> Result<(u32, u32), Error> {
    if let Ok(uid) = spec.parse::<u32>() {
        let gid = sys::user_by_uid(uid)
            .map_err(|e| Error::chain(&e))?
            .map(|a| a.gid)
            .unwrap_or(uid);
        return Ok((uid, gid));
    }
    match sys::user_by_name(spec).map_err(|e| Error::chain(&e))? {
        Some(a) => Ok((a.uid, a.gid)),
        None => Err(Error(format!(
            "frontend user {spec:?} does not exist: create it (useradd --system --no-create-home {spec}) or set MYMCP_FRONTEND_USER"
        ))),
    }
}
