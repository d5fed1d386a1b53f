//! The frontend's command line. Flags that stand for a setting take its variable, default,
//! help and parser (with its range) from the declaration in [`mymcp_settings`]; `cargo xtask
//! man` renders the manual page from this definition.

use clap::Parser;
use mymcp_settings::{
    ACME_DIR, ACME_DIRECTORY, ACME_DOMAIN, ACME_EMAIL, ALLOWED_HOSTS, ALLOWED_ORIGINS,
    ALLOW_PLAINTEXT, BODY_IDLE_TIMEOUT_SEC, BODY_TIMEOUT_SEC, EXECUTOR_SOCKET, HEADER_TIMEOUT_SEC,
    HOST, LOG_FORMAT, LOG_LEVEL, MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP,
    OAUTH_CIMD_ALLOWED_NETWORKS, OAUTH_ENABLED, OUTBOUND_CA_FILE, PORT, PUBLIC_BASE_URL, TLS_CERT,
    TLS_KEY, TRUSTED_PROXIES,
};
use std::path::PathBuf;

/// The network-facing half of mymcp: serves MCP over HTTP and forwards every request to
/// mymcp-executor over its Unix socket. Runs unprivileged.
#[derive(Debug, Parser)]
#[command(name = "mymcp-frontend", version)]
pub struct Cli {
    #[arg(long, env = HOST.name, help = HOST.help, default_value = HOST.default())]
    pub host: String,

    #[arg(long, env = PORT.name, help = PORT.help, default_value_t = PORT.default_as(), value_parser = PORT.parser::<u16>())]
    pub port: u16,

    /// Serve on this inherited, already listening socket instead of binding (as passed by
    /// `mymcpctl serve`). Systemd socket activation (LISTEN_FDS) is detected without it.
    #[arg(long, value_name = "FD")]
    pub listen_fd: Option<i32>,

    #[arg(long, env = EXECUTOR_SOCKET.name, help = EXECUTOR_SOCKET.help, default_value = EXECUTOR_SOCKET.default())]
    pub executor_socket: PathBuf,

    #[arg(long, env = MAX_BODY_BYTES.name, help = MAX_BODY_BYTES.help, default_value_t = MAX_BODY_BYTES.default_as(), value_parser = MAX_BODY_BYTES.parser::<usize>())]
    pub max_body_bytes: usize,

    #[arg(long, env = ALLOWED_ORIGINS.name, help = ALLOWED_ORIGINS.help, default_value = ALLOWED_ORIGINS.default())]
    pub allowed_origins: String,

    #[arg(long, env = ALLOWED_HOSTS.name, help = ALLOWED_HOSTS.help, default_value = ALLOWED_HOSTS.default())]
    pub allowed_hosts: String,

    #[arg(long, env = PUBLIC_BASE_URL.name, help = PUBLIC_BASE_URL.help, default_value = PUBLIC_BASE_URL.default())]
    pub public_base_url: String,

    #[arg(long, env = TRUSTED_PROXIES.name, help = TRUSTED_PROXIES.help, default_value = TRUSTED_PROXIES.default())]
    pub trusted_proxies: String,

    #[arg(long, env = TLS_CERT.name, help = TLS_CERT.help, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    #[arg(long, env = TLS_KEY.name, help = TLS_KEY.help, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    #[arg(long, env = ACME_DOMAIN.name, help = ACME_DOMAIN.help, default_value = ACME_DOMAIN.default(), value_name = "NAME[,NAME…]")]
    pub acme_domain: String,

    #[arg(long, env = ACME_EMAIL.name, help = ACME_EMAIL.help, default_value = ACME_EMAIL.default())]
    pub acme_email: String,

    #[arg(long, env = ACME_DIRECTORY.name, help = ACME_DIRECTORY.help, default_value = ACME_DIRECTORY.default(), value_name = "URL")]
    pub acme_directory: String,

    #[arg(long, env = ACME_DIR.name, help = ACME_DIR.help, default_value = ACME_DIR.default(), value_name = "DIR")]
    pub acme_dir: PathBuf,

    #[arg(long, env = ALLOW_PLAINTEXT.name, help = ALLOW_PLAINTEXT.help, default_value_t = ALLOW_PLAINTEXT.default(), value_parser = ALLOW_PLAINTEXT.parser())]
    pub allow_plaintext: bool,

    #[arg(long, env = OAUTH_ENABLED.name, help = OAUTH_ENABLED.help, default_value_t = OAUTH_ENABLED.default(), value_parser = OAUTH_ENABLED.parser())]
    pub oauth_enabled: bool,

    #[arg(long, env = OAUTH_CIMD_ALLOWED_NETWORKS.name, help = OAUTH_CIMD_ALLOWED_NETWORKS.help, default_value = OAUTH_CIMD_ALLOWED_NETWORKS.default())]
    pub oauth_cimd_allowed_networks: String,

    #[arg(long, env = OUTBOUND_CA_FILE.name, help = OUTBOUND_CA_FILE.help, value_name = "PATH")]
    pub outbound_ca_file: Option<PathBuf>,

    #[arg(long, env = HEADER_TIMEOUT_SEC.name, help = HEADER_TIMEOUT_SEC.help, default_value_t = HEADER_TIMEOUT_SEC.default(), value_parser = HEADER_TIMEOUT_SEC.parser::<u64>())]
    pub header_timeout_sec: u64,

    #[arg(long, env = BODY_TIMEOUT_SEC.name, help = BODY_TIMEOUT_SEC.help, default_value_t = BODY_TIMEOUT_SEC.default(), value_parser = BODY_TIMEOUT_SEC.parser::<u64>())]
    pub body_timeout_sec: u64,

    #[arg(long, env = BODY_IDLE_TIMEOUT_SEC.name, help = BODY_IDLE_TIMEOUT_SEC.help, default_value_t = BODY_IDLE_TIMEOUT_SEC.default(), value_parser = BODY_IDLE_TIMEOUT_SEC.parser::<u64>())]
    pub body_idle_timeout_sec: u64,

    #[arg(long, env = MAX_CONNECTIONS.name, help = MAX_CONNECTIONS.help, default_value_t = MAX_CONNECTIONS.default_as(), value_parser = MAX_CONNECTIONS.parser::<usize>())]
    pub max_connections: usize,

    #[arg(long, env = MAX_CONNECTIONS_PER_IP.name, help = MAX_CONNECTIONS_PER_IP.help, default_value_t = MAX_CONNECTIONS_PER_IP.default_as(), value_parser = MAX_CONNECTIONS_PER_IP.parser::<usize>())]
    pub max_connections_per_ip: usize,

    #[arg(long, env = LOG_LEVEL.name, help = LOG_LEVEL.help, default_value = LOG_LEVEL.default())]
    pub log_level: String,

    #[arg(long, env = LOG_FORMAT.name, help = LOG_FORMAT.help, default_value = LOG_FORMAT.default())]
    pub log_format: String,
}
