//! mymcp-executor: wires configuration, sockets, signals and logging. See the library docs.

use anyhow::{bail, Context};
use clap::Parser;
use mymcp_executor::config::{self, Env};
use mymcp_executor::control::Control;
use mymcp_executor::dispatch::Executor;
use mymcp_executor::jobs::Jobs;
use mymcp_executor::server::{self, Shutdown};
use mymcp_executor::sys;
use mymcp_executor::tokens::TokenStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The privileged half of mymcp: authenticates every request and runs the tools.
///
/// Listens on two Unix sockets in the runtime directory and nowhere else:
/// executor.sock (mode 0660, for the frontend's uid only) and control.sock (mode 0600, for
/// root only — used by mymcpctl). Tool settings come from the MYMCP_* environment variables.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Directory for executor.sock and control.sock.
    #[arg(long, env = "MYMCP_RUNTIME_DIR", default_value = "/run/mymcp")]
    runtime_dir: PathBuf,

    /// Token store (SHA-256 digests only; created if missing).
    #[arg(
        long,
        env = "MYMCP_TOKEN_FILE",
        default_value = "/etc/mymcp/tokens.json"
    )]
    token_file: PathBuf,

    /// The user the frontend runs as (name or numeric uid): the only one allowed on executor.sock.
    #[arg(long, env = "MYMCP_FRONTEND_USER", default_value = "mymcp")]
    frontend_user: String,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "MYMCP_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn main() {
    let args = Args::parse();
    init_logging(&args.log_level);
    if let Err(e) = run(args) {
        eprintln!("mymcp-executor: {e:#}");
        std::process::exit(2);
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(args: Args) -> anyhow::Result<()> {
    // SAFETY-free hygiene: sockets and files are created with explicit modes; a restrictive
    // umask makes the window before chmod harmless.
    set_umask();
    let euid = sys::euid();
    let frontend = resolve_frontend_user(&args.frontend_user)?;
    if euid != 0 && frontend.0 != euid {
        bail!(
            "running as uid {euid} (not root), so only the same uid can be the frontend; got frontend user {:?} (uid {})",
            args.frontend_user,
            frontend.0
        );
    }
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
    let per_token = config::bash_per_token(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let job_config = config::job_settings(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let transfer_config = config::transfer_settings(&Env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let grace = Duration::from_secs(
        config::integer(&Env, "MYMCP_SHUTDOWN_GRACE_SEC", 5, 0, 3600)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );

    let tokens = Arc::new(TokenStore::open(&args.token_file)?);
    let jobs = Arc::new(Jobs::open(job_config));
    let executor = Arc::new(
        Executor::new(tokens.clone(), bash, read, files, bash_max_concurrent)
            .with_command_limits(bash_max_concurrent, per_token)
            .with_jobs(jobs.clone())
            .with_transfers(transfer_config),
    );
    let control = Arc::new(Control::new(executor.clone()));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let group = (euid == 0).then_some(frontend.1);
        server::prepare_runtime_dir(&args.runtime_dir, group)
            .with_context(|| format!("runtime directory {}", args.runtime_dir.display()))?;
        let (exec_path, control_path) = server::socket_paths(&args.runtime_dir);
        let exec_listener = server::bind(&exec_path, 0o660, group)
            .with_context(|| format!("bind {}", exec_path.display()))?;
        let control_listener = server::bind(&control_path, 0o600, None)
            .with_context(|| format!("bind {}", control_path.display()))?;

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
        tracing::info!(
            runtime_dir = %args.runtime_dir.display(),
            token_file = %args.token_file.display(),
            frontend_uid = frontend.0,
            tokens = tokens.count(),
            protected = %protected.join(","),
            version = env!("CARGO_PKG_VERSION"),
            "executor ready"
        );

        wait_for_signal().await?;
        tracing::info!(
            running = shutdown.in_flight(),
            grace_secs = grace.as_secs(),
            "stopping"
        );
        // Commands and background jobs alike: SIGTERM, the grace period, then SIGKILL.
        shutdown.run(grace).await;
        jobs.remove_all();
        flusher.abort();
        if let Err(e) = tokens.flush() {
            tracing::warn!(error = %e, "could not record token last_used times");
        }
        let _ = std::fs::remove_file(&exec_path);
        let _ = std::fs::remove_file(&control_path);
        tracing::info!("stopped");
        anyhow::Ok(())
    })
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
