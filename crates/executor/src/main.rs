//! mymcp-executor: wires configuration, sockets, signals and logging. See the library docs.

#![forbid(unsafe_code)]

use anyhow::{bail, Context};
use clap::Parser;
use mymcp_executor::audit::Audit;
use mymcp_executor::cli::Args;
use mymcp_executor::config::{self, Env};
use mymcp_executor::control::Control;
use mymcp_executor::dispatch::Executor;
use mymcp_executor::jobs::Jobs;
use mymcp_executor::metrics::Metrics;
use mymcp_executor::server::{self, Origin, Shutdown};
use mymcp_service::notify::Notifier;
use mymcp_sys as sys;
use mymcp_tokens::TokenStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Secrets found in the environment or the env file; never left in the process environment.
#[derive(Default)]
struct Secrets {
    admin_token: Option<String>,
    metrics_token: Option<String>,
}

/// Loads the env file: its values become defaults under the process environment, except the
/// secrets, which are kept aside. `from_env` are the secrets found in the process environment
/// (already overwritten there); they win over the file, like every environment value. The
/// systemd credentials `admin-token` and `metrics-token` (`$CREDENTIALS_DIRECTORY`) win over
/// both.
fn load_env_file(from_env: Vec<(String, String)>) -> Result<Secrets, String> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flag = mymcp_settings::envfile::flag_in_args(&args);
    let from_env_var = std::env::var(mymcp_settings::ENV_FILE.name).ok();
    if from_env_var.as_deref().map(str::trim) == Some("none") {
        // Explicitly no env file: nothing to protect or read.
        std::env::remove_var(mymcp_settings::ENV_FILE.name);
    }
    let mut file = Vec::new();
    if let Some(path) = mymcp_settings::envfile::discover(flag.as_deref(), from_env_var.as_deref())
    {
        file = mymcp_settings::envfile::read(&path).map_err(|e| e.to_string())?;
        // Start-up is single-threaded here, so changing the environment cannot race a reader.
        std::env::set_var(mymcp_settings::ENV_FILE.name, &path);
    }
    let mut secrets = Secrets::default();
    let slot = |secrets: &mut Secrets, name: &str, value: String| {
        if name == mymcp_settings::ADMIN_TOKEN.name {
            secrets.admin_token = Some(value);
        } else if name == mymcp_settings::METRICS_TOKEN.name {
            secrets.metrics_token = Some(value);
        }
    };
    for (k, v) in file {
        if mymcp_settings::SECRET_VARIABLES.contains(&k.as_str()) {
            slot(&mut secrets, &k, v);
        } else if k.starts_with("MYMCP_") && std::env::var_os(&k).is_none() {
            std::env::set_var(&k, v);
        }
    }
    for (name, value) in from_env {
        eprintln!(
            "mymcp-executor: warning: {name} came in the process environment, which /proc shows for the life of a process; it was overwritten there. Put it in the env file or the systemd credential {} instead",
            credential_name(&name)
        );
        slot(&mut secrets, &name, value);
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        for name in mymcp_settings::SECRET_SETTINGS {
            let path = PathBuf::from(&dir).join(credential_name(name));
            match std::fs::read_to_string(&path) {
                Ok(value) => slot(&mut secrets, name, value.trim().to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("credential {}: {e}", path.display())),
            }
        }
    }
    Ok(secrets)
}

/// The systemd credential that holds a secret setting: `MYMCP_ADMIN_TOKEN` → `admin-token`.
fn credential_name(setting: &str) -> String {
    setting
        .trim_start_matches("MYMCP_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

fn main() {
    // Executes the program again unless the per-thread caches are already off (see there);
    // the new image gets the same environment, secrets included, so this comes first.
    if let Err(e) = mymcp_service::memory::without_thread_caches() {
        eprintln!("mymcp-executor: the allocator keeps its per-thread caches, so memory grows with the threads: executing its file again with GLIBC_TUNABLES failed: {e}");
    }
    // Then, while this is the only thread and nothing has touched the environment: a secret
    // that came in it is overwritten where /proc/<pid>/environ shows it.
    let from_env = mymcp_service::environment::take_secrets(&mymcp_settings::SECRET_VARIABLES);
    mymcp_service::memory::tune_allocator();
    let secrets = match load_env_file(from_env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mymcp-executor: {e}");
            std::process::exit(2);
        }
    };
    // The service manager's variables are read (and removed) while this is the only thread,
    // so no command inherits them.
    let notifier = Notifier::from_env();
    let activated = match mymcp_service::activation::take() {
        Ok(sockets) => sockets,
        Err(e) => {
            eprintln!("mymcp-executor: socket activation: {e}");
            std::process::exit(2);
        }
    };
    let args = Args::parse();
    let started = mymcp_settings::logging::LogFormat::parse(&args.log_format).and_then(|format| {
        mymcp_settings::logging::init(&args.log_level, format, "mymcp-executor")
    });
    if let Err(e) = started {
        eprintln!("mymcp-executor: {e}");
        std::process::exit(2);
    }
    if let Err(e) = run(args, secrets, notifier, activated) {
        eprintln!("mymcp-executor: {e:#}");
        std::process::exit(2);
    }
}

/// Imports the admin and metrics tokens named by the environment or env file (digests only),
/// unless the store already has them or they were revoked or rotated away.
fn import_secrets(tokens: &TokenStore, secrets: &Secrets) -> anyhow::Result<()> {
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
        let (added, _) = tokens.import(list)?;
        if added > 0 {
            tracing::warn!(added, "imported MYMCP_ADMIN_TOKEN/MYMCP_METRICS_TOKEN into the token store (digests only); manage them with mymcpctl token rotate-admin|rotate-metrics|disable-metrics and remove them from the env file");
        }
    }
    Ok(())
}

fn run(
    args: Args,
    secrets: Secrets,
    notifier: Notifier,
    activated: Vec<mymcp_service::activation::Activated>,
) -> anyhow::Result<()> {
    // SAFETY-free hygiene: sockets and files are created with explicit modes; a restrictive
    // umask makes the window before chmod harmless.
    set_umask();
    let (bash, read, bash_max_concurrent) =
        config::tool_settings(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let files = config::file_tools(&Env, &args.token_file, &args.runtime_dir)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let per_token = config::bash_per_token(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let job_config = config::job_settings(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let transfer_config = config::transfer_settings(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let grace = config::shutdown_grace(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let audit_settings = config::audit_settings(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut overview_config =
        config::overview_settings(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Under systemd (a notify service) the recorder is the unit mymcp-recorder; messages about
    // a missing overview say so only there.
    overview_config.under_systemd = notifier.enabled();
    config::other_settings(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let euid = sys::euid();
    let frontend = resolve_frontend_user(&args.frontend_user)?;
    if euid != 0 && frontend.0 != euid {
        bail!(
            "running as uid {euid} (not root), so only the same uid can be the frontend; got frontend user {:?} (uid {})",
            args.frontend_user,
            frontend.0
        );
    }
    if args.check_config {
        println!("configuration OK");
        return Ok(());
    }

    let metrics = Arc::new(Metrics::default());
    let (audit, install_key) =
        Audit::open(&audit_settings, metrics.clone()).with_context(|| {
            format!(
                "audit log in {} (MYMCP_AUDIT_LOG_DIR)",
                audit_settings.log.dir.display()
            )
        })?;
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

    let tokens = Arc::new(TokenStore::open(&args.token_file)?);
    import_secrets(&tokens, &secrets)?;
    let jobs = Arc::new(Jobs::open(job_config));
    let executor = Arc::new(
        Executor::new(tokens.clone(), bash, read, files, bash_max_concurrent)
            .with_command_limits(bash_max_concurrent, per_token)
            .with_jobs(jobs.clone())
            .with_observability(metrics.clone(), audit.clone())
            .with_transfers(transfer_config)
            .with_overview(overview_config),
    );
    let control = Arc::new(Control::new(executor.clone()));

    if let Err(e) = mymcp_service::memory::start_trimmer(Duration::from_millis(500)) {
        tracing::warn!(error = %e, "no heap-trim thread; memory after large answers is kept");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let served = rt.block_on(async move {
        let group = (euid == 0).then_some(frontend.1);
        let listeners = server::listeners(&args.runtime_dir, group, activated)?;
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
        let watchdog = notifier.watchdog_interval().map(|every| {
            let notifier = notifier.clone();
            // Sent from a task of the runtime that serves the sockets: if its threads are
            // stuck, the pings stop and systemd restarts the executor.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    notifier.watchdog();
                }
            })
        });
        tracing::info!(
            activated = exec_origin == Origin::Activated || control_origin == Origin::Activated,
            audit = audit.enabled(),
            runtime_dir = %args.runtime_dir.display(),
            token_file = %args.token_file.display(),
            frontend_uid = frontend.0,
            tokens = tokens.count(),
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

        wait_for_signal().await?;
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
        // Commands and background jobs alike: SIGTERM, the grace period, then SIGKILL.
        shutdown.run(grace).await;
        jobs.remove_all();
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
        anyhow::Ok(())
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
fn resolve_frontend_user(spec: &str) -> anyhow::Result<(u32, u32)> {
    if let Ok(uid) = spec.parse::<u32>() {
        let gid = sys::user_by_uid(uid)?.map(|a| a.gid).unwrap_or(uid);
        return Ok((uid, gid));
    }
    match sys::user_by_name(spec)? {
        Some(a) => Ok((a.uid, a.gid)),
        None => bail!(
            "frontend user {spec:?} does not exist: create it (useradd --system --no-create-home {spec}) or set MYMCP_FRONTEND_USER"
        ),
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
