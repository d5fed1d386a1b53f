//! mymcp-executor: wires the environment and env file (settings and secrets), the sockets the
//! service manager passes, signals and logging into [`mymcp_executor::run`]. See the library
//! docs.

#![forbid(unsafe_code)]

use clap::Parser;
use mymcp_executor::cli::Args;
use mymcp_executor::Secrets;
use mymcp_service::notify::Notifier;
use std::path::PathBuf;

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
    // The PAM helper the executor starts per password login: it reads one request on stdin,
    // answers and exits, before anything below (nothing of it is needed there).
    mymcp_executor::run_pam_helper_if_asked();
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
    if let Err(e) = mymcp_executor::run(args, secrets, notifier, activated, wait_for_signal()) {
        eprintln!("mymcp-executor: {e:#}");
        std::process::exit(2);
    }
}

/// Ends at the first SIGTERM or SIGINT.
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
