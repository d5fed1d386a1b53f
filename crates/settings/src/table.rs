//! Every `MYMCP_*` setting, with its default and meaning: the source of `mymcpctl config
//! example` and of the README table. Each process still validates its own values.

/// One setting.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub name: &'static str,
    /// The default, as written in an env file ("" = unset/empty).
    pub default: &'static str,
    /// Which process reads it.
    pub used_by: &'static str,
    pub help: &'static str,
}

const fn s(
    name: &'static str,
    default: &'static str,
    used_by: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        name,
        default,
        used_by,
        help,
    }
}

/// All settings, grouped as in the example env file.
pub const SETTINGS: &[Setting] = &[
    s("MYMCP_HOST", "127.0.0.1", "frontend", "Address the frontend listens on (ignored under socket activation)."),
    s("MYMCP_PORT", "8765", "frontend", "Port the frontend listens on."),
    s("MYMCP_PUBLIC_BASE_URL", "", "frontend", "Base URL clients reach the server at (transfer links); a trailing / is dropped."),
    s("MYMCP_MAX_BODY_BYTES", "25165824", "frontend", "Largest accepted POST /mcp body."),
    s("MYMCP_ALLOWED_ORIGINS", "", "frontend", "Browser origins allowed besides loopback, comma-separated (* = any)."),
    s("MYMCP_ALLOWED_HOSTS", "", "frontend", "Host names allowed in the Host header besides loopback names, IP addresses and the public URL's host, comma-separated (* = any)."),
    s("MYMCP_TRUSTED_PROXIES", "", "frontend", "Reverse proxies whose X-Forwarded-For names the client: addresses or CIDR blocks, comma-separated."),
    s("MYMCP_TLS_CERT", "", "frontend", "PEM certificate chain for HTTPS (with MYMCP_TLS_KEY; else the systemd credentials tls.crt/tls.key; SIGHUP reloads)."),
    s("MYMCP_TLS_KEY", "", "frontend", "PEM private key for HTTPS (with MYMCP_TLS_CERT)."),
    s("MYMCP_ALLOW_PLAINTEXT", "false", "frontend", "Allow plain HTTP on a non-loopback address (behind a TLS-terminating reverse proxy)."),
    s("MYMCP_EXECUTOR_SOCKET", "/run/mymcp/executor.sock", "frontend", "The executor's socket."),
    s("MYMCP_ADMIN_TOKEN", "", "executor (secret)", "Imported once as the admin token (its digest) when the store has none of that value; manage later with mymcpctl token rotate-admin."),
    s("MYMCP_METRICS_TOKEN", "", "executor (secret)", "Imported once as the metrics token; no metrics token = /metrics answers 503."),
    s("MYMCP_TOKEN_FILE", "/etc/mymcp/tokens.json", "executor", "Token store (SHA-256 digests only). A Python/Go tokens.json found here is converted at start-up."),
    s("MYMCP_RUNTIME_DIR", "/run/mymcp", "executor, mymcpctl", "Directory of executor.sock and control.sock."),
    s("MYMCP_STATE_DIR", "/var/lib/mymcp", "executor", "Jobs and the audit signing key (protected)."),
    s("MYMCP_FRONTEND_USER", "mymcp", "executor, mymcpctl serve", "The only user allowed on executor.sock."),
    s("MYMCP_BASH_SHELL", "/bin/bash", "executor", "Shell of bash_execute."),
    s("MYMCP_BASH_ENV_PASSTHROUGH", "", "executor", "Variables passed from the executor's environment to commands, comma-separated."),
    s("MYMCP_BASH_MAX_OUTPUT_BYTES", "102400", "executor", "Default per-stream output cap of bash_execute."),
    s("MYMCP_BASH_MAX_OUTPUT_BYTES_HARD", "1048576", "executor", "Largest max_output_bytes a client may ask for."),
    s("MYMCP_BASH_MAX_CONCURRENT", "64", "executor", "Commands running at once, all tokens together."),
    s("MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN", "16", "executor", "Foreground commands one token may run at once."),
    s("MYMCP_JOB_MAX_OUTPUT_BYTES", "16777216", "executor", "Spooled output kept per background job stream."),
    s("MYMCP_JOB_RETENTION_SEC", "3600", "executor", "How long a finished job stays queryable."),
    s("MYMCP_JOB_MAX_RUNNING_PER_TOKEN", "4", "executor", "Background jobs one token may run at once."),
    s("MYMCP_READ_FILE_DEFAULT_LIMIT", "2000", "executor", "Lines read_file returns by default."),
    s("MYMCP_READ_FILE_MAX_LIMIT", "50000", "executor", "Most lines one read_file may return."),
    s("MYMCP_READ_FILE_MAX_LINE_BYTES", "32768", "executor", "Longer lines are cut."),
    s("MYMCP_WRITE_FILE_MAX_BYTES", "10485760", "executor", "Largest write_file content."),
    s("MYMCP_EDIT_STRING_MAX_BYTES", "1048576", "executor", "Largest old_string/new_string of edit_file."),
    s("MYMCP_EDIT_FILE_MAX_BYTES", "67108864", "executor", "Largest file edit_file loads."),
    s("MYMCP_GLOB_MAX_RESULTS", "1000", "executor", "Most paths glob returns."),
    s("MYMCP_GREP_DEFAULT_MAX_RESULTS", "500", "executor", "Output lines grep returns by default."),
    s("MYMCP_GREP_MAX_RESULTS", "5000", "executor", "Most output lines a grep may ask for."),
    s("MYMCP_SEARCH_TIMEOUT_SEC", "60", "executor", "Time budget of one glob or grep."),
    s("MYMCP_READ_FILE_TIMEOUT_SEC", "10", "executor", "Longest a read_file may read a file that need not end (procfs, sysfs, debugfs, FUSE, …: not on a disk, memory or network file system); then TimeoutError."),
    s("MYMCP_FILE_MAX_CONCURRENT", "128", "executor", "File-tool calls and transfers on the executor's blocking threads at once, all tokens together (at most 448)."),
    s("MYMCP_FILE_MAX_CONCURRENT_PER_TOKEN", "16", "executor", "File-tool calls one token may have on the blocking threads at once (and as many transfers)."),
    s("MYMCP_PROTECTED_PATHS", "", "executor", "Extra protected files or directories, comma-separated absolute paths."),
    s("MYMCP_SHUTDOWN_GRACE_SEC", "5", "executor", "Time commands get between SIGTERM and SIGKILL at shutdown."),
    s("MYMCP_TRANSFER_ENABLED", "true", "executor", "Whether prepare_upload/prepare_download are offered."),
    s("MYMCP_TRANSFER_MAX_BYTES", "2147483648", "executor", "Largest transfer."),
    s("MYMCP_TRANSFER_DEFAULT_TTL_SEC", "300", "executor", "Default lifetime of a transfer link."),
    s("MYMCP_TRANSFER_MAX_TTL_SEC", "900", "executor", "Longest lifetime of a transfer link."),
    s("MYMCP_TRANSFER_MAX_GRANTS_PER_TOKEN", "256", "executor", "Transfer links one token may hold at once (of 4096; used ones count until they expire)."),
    s("MYMCP_AUDIT_ENABLED", "false", "executor", "Write the audit log (tool calls fail closed when it cannot be written)."),
    s("MYMCP_AUDIT_LOG_DIR", "/var/log/mymcp", "executor", "Directory of audit.log, its backups and audit.seals (protected)."),
    s("MYMCP_AUDIT_MAX_BYTES", "10485760", "executor", "Size at which audit.log rolls over to audit.log.1."),
    s("MYMCP_AUDIT_BACKUP_COUNT", "5", "executor", "Rolled-over files kept (audit.log.1 … .N)."),
    s("MYMCP_AUDIT_OUTPUT_BASH_HEAD_BYTES", "4096", "executor", "stdout head kept in a bash_execute audit record."),
    s("MYMCP_AUDIT_OUTPUT_BASH_TAIL_BYTES", "4096", "executor", "stdout tail kept in a bash_execute audit record."),
    s("MYMCP_AUDIT_SEAL_RECORDS", "1000", "executor", "Seal (sign) the log after this many records."),
    s("MYMCP_AUDIT_SEAL_INTERVAL_SEC", "300", "executor", "Seal the log at least this often while records arrive."),
    s("MYMCP_RECORDER_DATA_DIR", "/var/lib/mymcp/recorder", "executor, mymcp-recorder", "The recorder's files: overview/overview.md, overview/changelog.md, cursor.json (readable by the file tools, never writable)."),
    s("MYMCP_RECORDER_MERGE_INTERVAL_SEC", "300", "executor, mymcp-recorder", "Seconds between the recorder's merge cycles; server_overview calls the overview stale after two of them with events waiting."),
    s("MYMCP_LOG_LEVEL", "info", "all daemons", "error, warn, info, debug, trace, or tracing directives."),
    s("MYMCP_LOG_FORMAT", "text", "all daemons", "text or json (journald gets structured fields either way)."),
    s("MYMCP_HEADER_TIMEOUT_SEC", "30", "frontend", "Seconds a client has to send a request's headers, from connecting to its first request and between kept-alive requests; slower connections are closed."),
    s("MYMCP_BODY_TIMEOUT_SEC", "120", "frontend", "Seconds a request body (POST /mcp, /admin/tokens) may take as a whole; slower ones get 408 and their connection is closed."),
    s("MYMCP_BODY_IDLE_TIMEOUT_SEC", "30", "frontend", "Seconds a request body (uploads included) may stay silent before it gets 408 and its connection is closed."),
    s("MYMCP_MAX_CONNECTIONS", "1024", "frontend", "Most client connections at once (lowered to fit the descriptor limit); at the cap the longest idle one is closed for a newcomer, and with none idle newcomers get 503 with Retry-After (/health still answers)."),
    s("MYMCP_MAX_CONNECTIONS_PER_IP", "128", "frontend", "Most connections at once from one client address (IPv6: one /64); MYMCP_TRUSTED_PROXIES have only the global cap."),
];

/// A commented env file with every setting at its default (`mymcpctl config example`).
pub fn example_env_file() -> String {
    let mut out = String::from(
        "# mymcp configuration (env file). Found as: --env-file, then MYMCP_ENV_FILE, then\n\
         # /etc/mymcp/.env. Syntax: KEY=VALUE, # comments, optional `export `, one pair of\n\
         # quotes stripped. The process environment overrides this file; flags override both.\n\
         # Keep it 0600 root: only the executor reads it (the frontend never gets secrets).\n\
         # Every value below is the default; uncomment to change.\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "\n# {} [{}]\n#{}={}\n",
            s.help, s.used_by, s.name, s.default
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_and_names_every_setting_once() {
        let text = example_env_file();
        for s in SETTINGS {
            assert_eq!(
                text.matches(&format!("\n#{}=", s.name)).count(),
                1,
                "{}",
                s.name
            );
        }
        // Uncommented, the example is a valid env file.
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix('#')
                    .filter(|r| r.starts_with("MYMCP_"))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let pairs = crate::envfile::parse(&uncommented).unwrap();
        assert_eq!(pairs.len(), SETTINGS.len());
    }

    #[test]
    fn reference_defaults() {
        let get = |n: &str| SETTINGS.iter().find(|s| s.name == n).unwrap().default;
        assert_eq!(get("MYMCP_PORT"), "8765");
        assert_eq!(get("MYMCP_AUDIT_ENABLED"), "false");
        assert_eq!(get("MYMCP_AUDIT_MAX_BYTES"), "10485760");
        assert_eq!(get("MYMCP_AUDIT_BACKUP_COUNT"), "5");
        assert_eq!(get("MYMCP_TOKEN_FILE"), "/etc/mymcp/tokens.json");
    }
}
