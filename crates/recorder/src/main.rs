//! mymcp-recorder: wires settings, logging and signals to [`mymcp_recorder::merge::Recorder`].

#![forbid(unsafe_code)]

use anyhow::{bail, Context};
use clap::Parser;
use mymcp_recorder::cli::Args;
use mymcp_recorder::config::Config;
use mymcp_recorder::merge::{Outcome, Recorder};
use mymcp_recorder::metrics::Metrics;
use mymcp_sys::signals::Signals;
use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Variables the recorder reads besides MYMCP_* (the providers' key variables are secrets,
/// taken out of the environment first thing in `main`).
const OTHER_VARIABLES: [&str; 1] = ["CREDENTIALS_DIRECTORY"];

fn settings(
    args: &Args,
    env_secrets: Vec<(String, String)>,
) -> anyhow::Result<HashMap<String, String>> {
    // Under systemd the env file comes as the credential recorder.env (see the unit).
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join("recorder.env"))
        .filter(|p| p.exists());
    let file = args
        .env_file
        .clone()
        .or_else(|| std::env::var_os(mymcp_settings::ENV_FILE.name).map(PathBuf::from))
        .or(credential)
        .filter(|p| p.as_os_str() != "none");
    let pairs = match &file {
        Some(p) => mymcp_settings::envfile::read(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Vec::new(),
    };
    let mut map = mymcp_settings::envfile::merged(&pairs);
    for k in OTHER_VARIABLES {
        if let Ok(v) = std::env::var(k) {
            map.insert(k.to_owned(), v);
        }
    }
    // The process environment wins over the file, secrets included.
    map.extend(env_secrets);
    Ok(map)
}

fn main() {
    // First, while this is the only thread: a key that came in the environment (systemd's
    // EnvironmentFile=, a shell) is overwritten where /proc/<pid>/environ shows it. The key
    // belongs in the systemd credential llm-api-key instead.
    let env_secrets = mymcp_service::environment::take_secrets(&mymcp_settings::SECRET_VARIABLES);
    if let Err(e) = run(env_secrets) {
        eprintln!("mymcp-recorder: {e:#}");
        std::process::exit(1);
    }
}

fn run(env_secrets: Vec<(String, String)>) -> anyhow::Result<()> {
    let args = Args::parse();
    let map = settings(&args, env_secrets)?;
    let cfg = Config::from_source(&map).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.check_config {
        println!("configuration OK");
        return Ok(());
    }
    if !cfg.enabled {
        eprintln!("mymcp-recorder: MYMCP_RECORDER_ENABLED is not true: the recorder is optional and off (set it to true to run it)");
        std::process::exit(2);
    }
    if mymcp_sys::euid() == 0 && !args.allow_root {
        bail!("refusing to run as root: the bootstrap's probe commands run as this user (run as the mymcp-recorder user, or pass --allow-root)");
    }
    mymcp_sys::privileges::forbid_same_user_inspection().context("prctl(PR_SET_DUMPABLE)")?;
    let signals = Signals::block(&[libc::SIGINT, libc::SIGTERM]).context("blocking signals")?;
    let format = mymcp_settings::logging::LogFormat::parse(&args.log_format)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    mymcp_settings::logging::init(&args.log_level, format, "mymcp-recorder")
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let metrics = Arc::new(Metrics::default());
    let title = format!("Host overview: {}", hostname());
    let metrics_file = cfg.metrics_file.clone();
    let provider = cfg.llm.provider.as_str();
    let model = cfg.llm.model.clone();
    let mut recorder =
        Recorder::new(cfg, metrics.clone(), title).context("opening MYMCP_RECORDER_DATA_DIR")?;
    tracing::info!(data_dir = %recorder.store().dir().display(), provider, model = %model, "recorder running");

    let stopping = Cell::new(false);
    let stop = || {
        if signals.wait(Duration::ZERO).is_some() {
            stopping.set(true);
        }
        stopping.get()
    };
    loop {
        let outcome = recorder.tick(Instant::now(), &stop);
        if let Err(e) = metrics.write_textfile(&metrics_file) {
            tracing::warn!(error = %e, path = %metrics_file.display(), "metrics file could not be written");
        }
        if args.once {
            let failed = matches!(outcome, Outcome::Failed(_) | Outcome::BootstrapFailed(_));
            std::process::exit(i32::from(failed));
        }
        if stopping.get() {
            break;
        }
        if let Some(sig) = signals.wait(recorder.next_wake(Instant::now())) {
            tracing::info!(signal = sig, "stopping");
            break;
        }
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".to_owned())
}
