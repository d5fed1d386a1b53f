//! mymcpctl's command line. Flags that stand for a setting take its variable, default and
//! help from the declaration in [`mymcp_settings`]; `cargo xtask man` and `cargo xtask
//! completions` render the manual page and the shell completions from this definition.

use clap::{Args, Parser, Subcommand};
use mymcp_settings::{FRONTEND_USER, HOST, PORT, RUNTIME_DIR, STATE_DIR};
use std::path::PathBuf;

/// Administer mymcp: tokens, audit log, status, diagnostics, and a quick-try server.
#[derive(Parser, Debug)]
#[command(name = "mymcpctl", version, about, long_about = None)]
pub struct Cli {
    /// Runtime directory of the executor (where control.sock lives).
    #[arg(long, global = true, env = RUNTIME_DIR.name, help = RUNTIME_DIR.help, default_value = RUNTIME_DIR.default())]
    pub runtime_dir: PathBuf,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Quick try: start executor and frontend in the foreground with temporary tokens.
    ///
    /// State lives in a private temporary directory that is deleted on Ctrl-C or SIGTERM.
    /// Run as root, the frontend runs as MYMCP_FRONTEND_USER (default mymcp, else nobody).
    Serve {
        #[arg(long, env = HOST.name, help = HOST.help, default_value = HOST.default())]
        host: String,
        #[arg(long, env = PORT.name, help = PORT.help, default_value_t = PORT.default_as(), value_parser = PORT.parser::<u16>())]
        port: u16,
        #[arg(long, env = FRONTEND_USER.name, help = FRONTEND_USER.help)]
        frontend_user: Option<String>,
        /// Log level of both daemons.
        #[arg(long, default_value = "warn")]
        log_level: String,
        /// Env file for the executor (default: none; the quick try ignores /etc/mymcp/.env).
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
        /// Serve HTTPS with a throwaway self-signed certificate (printed with its SHA-256
        /// fingerprint; it vanishes on exit).
        #[arg(long)]
        tls: bool,
        /// The Unix account the temporary tokens act as: their commands and file tools run
        /// with its rights (default: root, as the executor). Needs root.
        #[arg(long, value_name = "ACCOUNT")]
        user: Option<String>,
    },
    /// Manage client tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Show whether the executor is up, its version, uptime, tokens, audit state, last seal.
    /// Exits 1 when the executor is unreachable or the audit log failed.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// OAuth clients waiting for approval (with MYMCP_OAUTH_ENABLED).
    #[command(subcommand)]
    Oauth(OauthCmd),
    /// Terminal recordings (asciicast v2 files of terminal_open sessions).
    Terminal {
        #[command(subcommand)]
        cmd: TerminalCmd,
        #[arg(long, env = STATE_DIR.name, help = STATE_DIR.help, default_value = STATE_DIR.default())]
        state_dir: PathBuf,
    },
    /// Check the installation: users, directories and modes, env file and settings, sockets,
    /// executor, audit, units, certificate. Exits 1 on problems.
    Doctor {
        #[arg(long)]
        json: bool,
        /// Env file to check (default: MYMCP_ENV_FILE, else /etc/mymcp/.env).
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Install mymcp on a host without the Debian package: the binaries beside this mymcpctl,
    /// the systemd units, the mymcp user and the directories; enables the socket units.
    Install {
        #[command(flatten)]
        layout: LayoutArgs,
        /// The Unix account tokens act as when they name none (MYMCP_DEFAULT_USER in
        /// /etc/mymcp/.env): their commands and file tools run with its rights. Default: root.
        #[arg(long, value_name = "ACCOUNT")]
        tools_user: Option<String>,
    },
    /// Remove what `install` put in place. Tokens, env file, state and the audit log stay
    /// unless --purge is given.
    Uninstall {
        #[command(flatten)]
        layout: LayoutArgs,
        /// Also delete /etc/mymcp, /var/lib/mymcp, /var/log/mymcp and /run/mymcp.
        #[arg(long)]
        purge: bool,
    },
    /// Move a Python 2.x / Go 3.x install (/etc/mymcp: .env, plaintext tokens.json, audit
    /// directory) or a 1.x install (/opt/mymcp, MCP_* settings) to this layout: settings split
    /// into .env and frontend.env, tokens stored as digests (they keep working), old audit
    /// files kept aside. Prints every step.
    Migrate {
        /// The old install's configuration directory.
        #[arg(long, value_name = "DIR", default_value = "/etc/mymcp")]
        from: PathBuf,
        /// Print the steps without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Migrate inside this root instead of / (an image; the running executor is not used).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct LayoutArgs {
    /// Where the binaries go.
    #[arg(long, value_name = "DIR", default_value = "/usr/local/bin")]
    pub bin_dir: PathBuf,
    /// Install into this root instead of / (an image; users and systemd are left alone).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Print every step without doing it.
    #[arg(long)]
    pub dry_run: bool,
}

impl LayoutArgs {
    pub fn layout(self) -> crate::install::Layout {
        crate::install::Layout {
            root: self.root,
            bin_dir: self.bin_dir,
            dry_run: self.dry_run,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print a commented env file with every setting at its default.
    Example,
}

#[derive(Subcommand, Debug)]
pub enum OauthCmd {
    /// The authorization requests waiting for a person: client, redirect, scope.
    Pending,
    /// Approve the request whose consent page shows CODE: the client's tokens act as ACCOUNT
    /// with at most ROLE (never more than the client asked for).
    Approve {
        /// The code the consent page shows (ABCD-EFGH; case and spacing do not matter).
        code: String,
        /// The Unix account the grant acts as.
        #[arg(long, value_name = "ACCOUNT")]
        user: String,
        #[arg(long, default_value = "ro", value_parser = ["ro", "rw"])]
        role: String,
    },
    /// Refuse the request whose consent page shows CODE: the client gets access_denied.
    Deny {
        /// The code the consent page shows.
        code: String,
    },
    /// The registered clients (RFC 7591) and how many live grants each holds.
    Clients {
        #[arg(long)]
        json: bool,
    },
    /// The live grants: client, account, role, when approved, refreshed, and until when.
    Grants {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant (its number, from `oauth grants`) or a client with all its grants (its
    /// client id): their tokens stop working at once.
    Revoke {
        /// A grant number or a client id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TerminalCmd {
    /// List the recordings: id, start time, size, command.
    List,
    /// Replay a recording: print its final screen, rendered as the terminal showed it.
    Replay {
        /// The terminal id (as terminal_open returned it).
        id: String,
        /// Print the output events with their times instead of the final screen.
        #[arg(long)]
        events: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Check the hash chain, the seals and the key chain. Prints OK, or the first broken,
    /// missing, reordered or altered record (exit 1).
    Verify {
        /// The install key printed when the log was created (hex). Without it, the key stored
        /// in audit.seals is trusted.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Audit directory (default: the running executor's, else MYMCP_AUDIT_LOG_DIR, else
        /// /var/log/mymcp).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token and print it (shown once; only its digest is stored).
    Add(AddArgs),
    /// List tokens (never their values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by value or by id (as shown by `token list`).
    Revoke { selector: String },
    /// Mint a new admin token (printed once) and revoke the previous ones.
    RotateAdmin {
        #[arg(long)]
        json: bool,
    },
    /// Mint a new metrics token (printed once) and revoke the previous ones.
    RotateMetrics {
        #[arg(long)]
        json: bool,
    },
    /// Revoke every metrics token: /metrics answers 503.
    DisableMetrics,
    /// Import a Python/Go install: its tokens.json (plaintext tokens) and the admin and
    /// metrics tokens of its env file become digests; the old tokens keep working.
    Import {
        /// The reference's tokens.json.
        #[arg(value_name = "TOKENS_JSON")]
        file: Option<PathBuf>,
        /// The reference's env file (MYMCP_ADMIN_TOKEN, MYMCP_METRICS_TOKEN).
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Name of the token (who or what uses it).
    #[arg(long = "name", value_name = "NAME")]
    pub name_flag: Option<String>,
    /// Name, given positionally.
    #[arg(value_name = "NAME", conflicts_with = "name_flag")]
    pub name: Option<String>,
    /// Role: ro (read tools), rw (all tools), admin (token API), metrics (/metrics).
    #[arg(long, default_value = "ro", value_parser = ["ro", "rw", "admin", "metrics"])]
    pub role: String,
    /// The Unix account the token acts as (ro and rw tokens): its commands and file tools run
    /// with that account's rights. Default: the executor's MYMCP_DEFAULT_USER (root unless set).
    #[arg(long, value_name = "ACCOUNT")]
    pub user: Option<String>,
    /// Memory per command (ro and rw tokens), swap included: MiB or 256M, 2G; 0 or none:
    /// no limit. Default: the executor's MYMCP_DEFAULT_MEMORY_MAX.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory_max: Option<u64>,
    /// Processes and threads per command; 0: no limit. Default: MYMCP_DEFAULT_TASKS_MAX.
    #[arg(long, value_name = "N")]
    pub tasks_max: Option<u64>,
    /// Percent of one CPU per command (200: two CPUs); 0: no limit. Default:
    /// MYMCP_DEFAULT_CPU_MAX.
    #[arg(long, value_name = "PERCENT")]
    pub cpu_max: Option<u64>,
    /// Longest timeout of the token's commands and jobs, in seconds: a longer one asked for is
    /// cut to this.
    #[arg(long, value_name = "SEC")]
    pub timeout_max: Option<u64>,
    /// A tree the token's commands may change files in (repeatable): with any, the rest of
    /// the file system is read-only to them.
    #[arg(long = "write-root", value_name = "PATH")]
    pub write_roots: Vec<String>,
    /// A path the token's commands and tools cannot see (repeatable).
    #[arg(long = "hide", value_name = "PATH")]
    pub hide: Vec<String>,
    /// The token's commands get a network of their own with only a loopback interface.
    #[arg(long)]
    pub no_network: bool,
    #[arg(long)]
    pub json: bool,
}

fn parse_memory(text: &str) -> Result<u64, String> {
    mymcp_protocol::TokenLimits::parse_memory(text)
}
