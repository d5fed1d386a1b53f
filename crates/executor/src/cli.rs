//! The executor's command line. Flags that stand for a setting take its variable, default and
//! help from the declaration in [`mymcp_settings`]; `cargo xtask man` renders the manual page
//! from this definition.

use clap::Parser;
use mymcp_settings::{FRONTEND_USER, LOG_FORMAT, LOG_LEVEL, RUNTIME_DIR, TOKEN_FILE};
use std::path::PathBuf;

/// The privileged half of mymcp: authenticates every request and runs the tools.
///
/// Listens on two Unix sockets in the runtime directory and nowhere else:
/// executor.sock (mode 0660, for the frontend's uid only) and control.sock (mode 0600, for
/// root only — used by mymcpctl), or on the sockets systemd passes (socket activation:
/// LISTEN_FDS with LISTEN_FDNAMES executor and control). Tells systemd when it is ready
/// (NOTIFY_SOCKET) and pings its watchdog (WATCHDOG_USEC). Settings come from the MYMCP_*
/// environment variables and the env file (--env-file, else MYMCP_ENV_FILE, else
/// /etc/mymcp/.env); flags override both.
#[derive(Parser, Debug)]
#[command(name = "mymcp-executor", version, about, long_about)]
pub struct Args {
    #[arg(long, env = RUNTIME_DIR.name, help = RUNTIME_DIR.help, default_value = RUNTIME_DIR.default())]
    pub runtime_dir: PathBuf,

    #[arg(long, env = TOKEN_FILE.name, help = TOKEN_FILE.help, default_value = TOKEN_FILE.default())]
    pub token_file: PathBuf,

    #[arg(long, env = FRONTEND_USER.name, help = FRONTEND_USER.help, default_value = FRONTEND_USER.default())]
    pub frontend_user: String,

    #[arg(long, env = LOG_LEVEL.name, help = LOG_LEVEL.help, default_value = LOG_LEVEL.default())]
    pub log_level: String,

    #[arg(long, env = LOG_FORMAT.name, help = LOG_FORMAT.help, default_value = LOG_FORMAT.default())]
    pub log_format: String,

    /// Env file to read (default: MYMCP_ENV_FILE, else /etc/mymcp/.env if it exists).
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    /// Check the configuration and exit (0 if it is valid).
    #[arg(long)]
    pub check_config: bool,
}
