//! The recorder's command line. Its log flags take their variable, default and help from the
//! declarations in [`mymcp_settings`]; `cargo xtask man` renders the manual page from this
//! definition.

use clap::Parser;
use mymcp_settings::{LOG_FORMAT, LOG_LEVEL};
use std::path::PathBuf;

/// The optional recorder of mymcp: keeps <MYMCP_RECORDER_DATA_DIR>/overview/overview.md
/// current from the audit log with an LLM. Settings come from MYMCP_RECORDER_* variables
/// (and an env file given with --env-file or MYMCP_ENV_FILE); flags override both.
#[derive(Parser, Debug)]
#[command(name = "mymcp-recorder", version)]
pub struct Args {
    /// Env file to read (default: MYMCP_ENV_FILE if set, else the systemd credential
    /// recorder.env).
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Run one tick (bootstrap or merge cycle), write the metrics and exit: 0 unless it failed.
    #[arg(long)]
    pub once: bool,
    /// Run as root although the bootstrap's probe commands would then run as root.
    #[arg(long)]
    pub allow_root: bool,
    /// Check the settings and exit.
    #[arg(long)]
    pub check_config: bool,
    #[arg(long, env = LOG_LEVEL.name, help = LOG_LEVEL.help, default_value = LOG_LEVEL.default())]
    pub log_level: String,
    #[arg(long, env = LOG_FORMAT.name, help = LOG_FORMAT.help, default_value = LOG_FORMAT.default())]
    pub log_format: String,
}
