//! Every `MYMCP_*` setting, declared once: name, kind (type, default, allowed values), the
//! processes that read it, its group and its help. The processes read their values through
//! these declarations; `--help`, `mymcpctl config example`, `deploy/*.env.example` and the
//! table in `docs/configuration.md` are generated from them (`cargo xtask settings`), and the
//! drift tests of `xtask` fail when any of them disagrees.
//!
//! A bound that depends on another setting (`MYMCP_BASH_MAX_OUTPUT_BYTES` at most
//! `MYMCP_BASH_MAX_OUTPUT_BYTES_HARD`) is declared as the widest range and narrowed by the
//! reader ([`Setting::read_within`]); its help says so.

use crate::setting::Process::{Ctl, Executor, Frontend, Recorder};
use crate::setting::{
    Bool, Choice, Declared, Group, Integer, Interval, List, Path, Secret, Setting, Text,
};

const MIB: u64 = 1 << 20;
const DAY: u64 = 86_400;

// Network ---------------------------------------------------------------------------------

pub const HOST: Setting<Text> = Setting {
    name: "MYMCP_HOST",
    kind: Text {
        default: "127.0.0.1",
    },
    read_by: &[Frontend, Ctl],
    group: Group::Network,
    help: "Address the frontend listens on (ignored under systemd socket activation).",
};

pub const PORT: Setting<Integer> = Setting {
    name: "MYMCP_PORT",
    kind: Integer {
        default: 8765,
        min: 0,
        max: 65_535,
    },
    read_by: &[Frontend, Ctl],
    group: Group::Network,
    help: "Port the frontend listens on (ignored under systemd socket activation; 0 picks a free one).",
};

pub const PUBLIC_BASE_URL: Setting<Text> = Setting {
    name: "MYMCP_PUBLIC_BASE_URL",
    kind: Text { default: "" },
    read_by: &[Executor, Frontend, Ctl],
    group: Group::Network,
    help: "The URL clients use to reach this server (e.g. https://mcp.example.com behind a reverse proxy): its host and origin are allowed, transfer links point there (unset: relative links; a trailing / is dropped), and with OAuth it is the issuer, its /mcp the resource. mymcpctl serve passes it on.",
};

pub const ALLOWED_ORIGINS: Setting<List> = Setting {
    name: "MYMCP_ALLOWED_ORIGINS",
    kind: List,
    read_by: &[Frontend],
    group: Group::Network,
    help: "Browser origins allowed besides loopback ones and the public URL's, comma-separated (* = any).",
};

pub const ALLOWED_HOSTS: Setting<List> = Setting {
    name: "MYMCP_ALLOWED_HOSTS",
    kind: List,
    read_by: &[Frontend],
    group: Group::Network,
    help: "Host names allowed in the Host header besides loopback names, IP addresses and the public URL's host, comma-separated: name or name:port (* = any).",
};

pub const TRUSTED_PROXIES: Setting<List> = Setting {
    name: "MYMCP_TRUSTED_PROXIES",
    kind: List,
    read_by: &[Frontend],
    group: Group::Network,
    help: "Reverse proxies whose X-Forwarded-For names the client, comma-separated addresses or CIDR blocks (e.g. 127.0.0.1). Empty: the TCP peer is the client.",
};

// HTTPS -----------------------------------------------------------------------------------

pub const TLS_CERT: Setting<Path> = Setting {
    name: "MYMCP_TLS_CERT",
    kind: Path {
        default: "",
        absolute: false,
    },
    read_by: &[Frontend],
    group: Group::Https,
    help: "PEM certificate chain for HTTPS (with MYMCP_TLS_KEY). Without both, the systemd credentials tls.crt and tls.key are used if present, else plain HTTP is served. SIGHUP reads both files again.",
};

pub const TLS_KEY: Setting<Path> = Setting {
    name: "MYMCP_TLS_KEY",
    kind: Path {
        default: "",
        absolute: false,
    },
    read_by: &[Frontend],
    group: Group::Https,
    help: "PEM private key for HTTPS (with MYMCP_TLS_CERT); the executor protects it.",
};

pub const ALLOW_PLAINTEXT: Setting<Bool> = Setting {
    name: "MYMCP_ALLOW_PLAINTEXT",
    kind: Bool { default: false },
    read_by: &[Frontend, Ctl],
    group: Group::Https,
    help: "Serve plain HTTP on a non-loopback address (behind a TLS-terminating reverse proxy).",
};

pub const OUTBOUND_CA_FILE: Setting<Path> = Setting {
    name: "MYMCP_OUTBOUND_CA_FILE",
    kind: Path {
        default: "",
        absolute: false,
    },
    read_by: &[Frontend],
    group: Group::Https,
    help: "Extra trust anchors (PEM) for the HTTPS the frontend opens itself (OAuth Client ID Metadata Documents, the ACME server), e.g. a private CA or pebble's in tests; trusted beside the Mozilla roots built into mymcp. Empty: the Mozilla roots only.",
};

pub const ACME_DOMAIN: Setting<List> = Setting {
    name: "MYMCP_ACME_DOMAIN",
    kind: List,
    read_by: &[Frontend],
    group: Group::Https,
    help: "Get the HTTPS certificate from an ACME CA (Let's Encrypt by default) for this DNS name, or these names comma-separated; validated by TLS-ALPN-01 on the frontend's own port, which must be reachable as NAME:443. Renewed in-process. Not together with MYMCP_TLS_CERT.",
};

pub const ACME_EMAIL: Setting<Text> = Setting {
    name: "MYMCP_ACME_EMAIL",
    kind: Text { default: "" },
    read_by: &[Frontend],
    group: Group::Https,
    help: "Contact e-mail address for the ACME account (the CA's expiry and policy notices); optional.",
};

pub const ACME_DIRECTORY: Setting<Text> = Setting {
    name: "MYMCP_ACME_DIRECTORY",
    kind: Text {
        default: "https://acme-v02.api.letsencrypt.org/directory",
    },
    read_by: &[Frontend],
    group: Group::Https,
    help: "The ACME server's directory URL (https). Let's Encrypt's staging server, for trials: https://acme-staging-v02.api.letsencrypt.org/directory.",
};

pub const ACME_DIR: Setting<Path> = Setting {
    name: "MYMCP_ACME_DIR",
    kind: Path {
        default: "/var/lib/mymcp-frontend/acme",
        absolute: true,
    },
    read_by: &[Frontend],
    group: Group::Https,
    help: "The frontend's own directory for the ACME account key and the certificates (created 0700; must be writable by the frontend's user: the unit's StateDirectory=).",
};

// Connections and request limits ------------------------------------------------------------

pub const MAX_BODY_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_MAX_BODY_BYTES",
    kind: Integer {
        default: 24 * MIB,
        min: 0,
        max: u64::MAX,
    },
    read_by: &[Frontend],
    group: Group::Limits,
    help: "Largest accepted POST /mcp body, in bytes.",
};

pub const HEADER_TIMEOUT_SEC: Setting<Integer> = Setting {
    name: "MYMCP_HEADER_TIMEOUT_SEC",
    kind: Integer {
        default: 30,
        min: 1,
        max: 3600,
    },
    read_by: &[Frontend],
    group: Group::Limits,
    help: "Seconds a client has to send a request's headers: from connecting (TLS handshake included) to its first request, and between requests on a kept-alive connection; slower or silent connections are closed.",
};

pub const BODY_TIMEOUT_SEC: Setting<Integer> = Setting {
    name: "MYMCP_BODY_TIMEOUT_SEC",
    kind: Integer {
        default: 120,
        min: 1,
        max: DAY,
    },
    read_by: &[Frontend],
    group: Group::Limits,
    help: "Seconds a request body (POST /mcp, /admin/tokens) may take as a whole, from its request's headers; a slower one gets 408 and its connection is closed.",
};

pub const BODY_IDLE_TIMEOUT_SEC: Setting<Integer> = Setting {
    name: "MYMCP_BODY_IDLE_TIMEOUT_SEC",
    kind: Integer {
        default: 30,
        min: 1,
        max: 3600,
    },
    read_by: &[Frontend],
    group: Group::Limits,
    help: "Seconds a request body (uploads included) may stay silent before it gets 408 and its connection is closed.",
};

pub const MAX_CONNECTIONS: Setting<Integer> = Setting {
    name: "MYMCP_MAX_CONNECTIONS",
    kind: Integer {
        default: 1024,
        min: 1,
        max: 1_000_000,
    },
    read_by: &[Frontend],
    group: Group::Limits,
    help: "Most client connections at once (lowered to fit the descriptor limit). At the cap the longest idle connection is closed for a new one; when none is idle, newcomers get 503 with Retry-After (/health still answers).",
};

pub const MAX_CONNECTIONS_PER_IP: Setting<Integer> = Setting {
    name: "MYMCP_MAX_CONNECTIONS_PER_IP",
    kind: Integer {
        default: 128,
        min: 1,
        max: 1_000_000,
    },
    read_by: &[Frontend],
    group: Group::Limits,
    help: "Most connections at once from one client address (IPv6: one /64); MYMCP_TRUSTED_PROXIES have only the global cap.",
};

// Sockets, users, tokens and state ------------------------------------------------------------

pub const EXECUTOR_SOCKET: Setting<Path> = Setting {
    name: "MYMCP_EXECUTOR_SOCKET",
    kind: Path {
        default: "/run/mymcp/executor.sock",
        absolute: false,
    },
    read_by: &[Frontend],
    group: Group::Daemons,
    help: "The executor's socket, as the frontend finds it.",
};

pub const RUNTIME_DIR: Setting<Path> = Setting {
    name: "MYMCP_RUNTIME_DIR",
    kind: Path {
        default: "/run/mymcp",
        absolute: false,
    },
    read_by: &[Executor, Ctl],
    group: Group::Daemons,
    help: "Directory of executor.sock and control.sock (protected).",
};

pub const FRONTEND_USER: Setting<Text> = Setting {
    name: "MYMCP_FRONTEND_USER",
    kind: Text { default: "mymcp" },
    read_by: &[Executor, Ctl],
    group: Group::Daemons,
    help: "The user the frontend runs as (name or numeric uid): the only one allowed on executor.sock.",
};

pub const TOKEN_FILE: Setting<Path> = Setting {
    name: "MYMCP_TOKEN_FILE",
    kind: Path {
        default: "/etc/mymcp/tokens.json",
        absolute: false,
    },
    read_by: &[Executor],
    group: Group::Daemons,
    help: "Token store (SHA-256 digests only; created if missing; protected with its directory). A Python/Go tokens.json found here is converted at start-up.",
};

pub const DEFAULT_USER: Setting<Text> = Setting {
    name: "MYMCP_DEFAULT_USER",
    kind: Text { default: "root" },
    read_by: &[Executor, Ctl],
    group: Group::Daemons,
    help: "The Unix account of tokens made without --user (written into the token when it is made) and of tokens from before accounts existed (looked up at each call): their commands, file tools, searches and transfers run with that account's rights (see docs/accounts.md). mymcpctl install --tools-user sets it.",
};

pub const ADMIN_TOKEN: Setting<Secret> = Setting {
    name: "MYMCP_ADMIN_TOKEN",
    kind: Secret,
    read_by: &[Executor],
    group: Group::Daemons,
    help: "Imported once into the token store as the admin token (its digest) unless it is there or was revoked; manage it later with mymcpctl token rotate-admin and remove it from the env file.",
};

pub const METRICS_TOKEN: Setting<Secret> = Setting {
    name: "MYMCP_METRICS_TOKEN",
    kind: Secret,
    read_by: &[Executor],
    group: Group::Daemons,
    help: "Imported once as the metrics token, like MYMCP_ADMIN_TOKEN; no metrics token: /metrics answers 503.",
};

pub const STATE_DIR: Setting<Path> = Setting {
    name: "MYMCP_STATE_DIR",
    kind: Path {
        default: "/var/lib/mymcp",
        absolute: true,
    },
    read_by: &[Executor, Ctl],
    group: Group::Daemons,
    help: "Background jobs (in jobs/), terminal recordings (in terminals/) and the audit signing key (in audit/); protected.",
};

pub const ENV_FILE: Setting<Path> = Setting {
    name: "MYMCP_ENV_FILE",
    kind: Path {
        default: "",
        absolute: false,
    },
    read_by: &[Executor, Ctl, Recorder],
    group: Group::Daemons,
    help: "The env file (unset: --env-file, else /etc/mymcp/.env if it exists; none: no env file). Only from the environment; protected.",
};

// Commands ------------------------------------------------------------------------------------

pub const BASH_SHELL: Setting<Path> = Setting {
    name: "MYMCP_BASH_SHELL",
    kind: Path {
        default: "/bin/bash",
        absolute: true,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help: "Shell of bash_execute (and the commands' SHELL).",
};

pub const BASH_ENV_PASSTHROUGH: Setting<List> = Setting {
    name: "MYMCP_BASH_ENV_PASSTHROUGH",
    kind: List,
    read_by: &[Executor],
    group: Group::Commands,
    help: "Variables passed from the executor's environment to commands, comma-separated.",
};

pub const BASH_MAX_OUTPUT_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_BASH_MAX_OUTPUT_BYTES",
    kind: Integer {
        default: 100 * 1024,
        min: 1,
        max: 8 * MIB,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help:
        "Default per-stream output cap of bash_execute (at most MYMCP_BASH_MAX_OUTPUT_BYTES_HARD).",
};

pub const BASH_MAX_OUTPUT_BYTES_HARD: Setting<Integer> = Setting {
    name: "MYMCP_BASH_MAX_OUTPUT_BYTES_HARD",
    kind: Integer {
        default: MIB,
        min: 1,
        max: 8 * MIB,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help: "Largest max_output_bytes a client may ask for.",
};

pub const BASH_MAX_CONCURRENT: Setting<Integer> = Setting {
    name: "MYMCP_BASH_MAX_CONCURRENT",
    kind: Integer {
        default: 64,
        min: 1,
        max: 4096,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help: "Commands and running background jobs at once, all tokens together.",
};

pub const BASH_MAX_CONCURRENT_PER_TOKEN: Setting<Integer> = Setting {
    name: "MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN",
    kind: Integer {
        default: 16,
        min: 1,
        max: 4096,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help: "Foreground commands one token may run at once.",
};

pub const BASH_HANDOFF_SEC: Setting<Integer> = Setting {
    name: "MYMCP_BASH_HANDOFF_SEC",
    kind: Integer {
        default: 0,
        min: 0,
        max: 600,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help: "A bash_execute call without handoff_after that still runs after this many seconds \
           returns its output so far and a job_id and goes on as a background job (0: off).",
};

pub const DEFAULT_MEMORY_MAX: Setting<Integer> = Setting {
    name: "MYMCP_DEFAULT_MEMORY_MAX",
    kind: Integer {
        default: 0,
        min: 0,
        max: 1 << 30,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help: "Memory (MiB, swap included) each command or job may use, enforced by its cgroup; 0: no limit. \
A command that hits it is killed and its result says so.",
};

pub const DEFAULT_TASKS_MAX: Setting<Integer> = Setting {
    name: "MYMCP_DEFAULT_TASKS_MAX",
    kind: Integer {
        default: 0,
        min: 0,
        max: 4_194_304,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help: "Processes and threads each command or job may have at once (its cgroup's pids.max); \
0: no limit. Contains fork bombs.",
};

pub const DEFAULT_CPU_MAX: Setting<Integer> = Setting {
    name: "MYMCP_DEFAULT_CPU_MAX",
    kind: Integer {
        default: 0,
        min: 0,
        max: 100_000,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help: "CPU each command or job may use, in percent of one CPU (200: two CPUs), enforced by \
its cgroup; 0: no limit.",
};

pub const SHUTDOWN_GRACE_SEC: Setting<Integer> = Setting {
    name: "MYMCP_SHUTDOWN_GRACE_SEC",
    kind: Integer {
        default: 5,
        min: 0,
        max: 3600,
    },
    read_by: &[Executor],
    group: Group::Commands,
    help: "Seconds commands get between SIGTERM and SIGKILL when the executor stops.",
};

// Background jobs -----------------------------------------------------------------------------

pub const JOB_MAX_OUTPUT_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_JOB_MAX_OUTPUT_BYTES",
    kind: Integer {
        default: 16 * MIB,
        min: 1,
        max: 1 << 40,
    },
    read_by: &[Executor],
    group: Group::Jobs,
    help: "Spooled output kept per background job stream.",
};

pub const JOB_RETENTION_SEC: Setting<Integer> = Setting {
    name: "MYMCP_JOB_RETENTION_SEC",
    kind: Integer {
        default: 3600,
        min: 1,
        max: 30 * DAY,
    },
    read_by: &[Executor],
    group: Group::Jobs,
    help: "How long a finished job stays queryable, in seconds.",
};

pub const JOB_MAX_RUNNING_PER_TOKEN: Setting<Integer> = Setting {
    name: "MYMCP_JOB_MAX_RUNNING_PER_TOKEN",
    kind: Integer {
        default: 4,
        min: 1,
        max: 1024,
    },
    read_by: &[Executor],
    group: Group::Jobs,
    help: "Background jobs one token may run at once.",
};

// Terminals -----------------------------------------------------------------------------------

pub const TERMINAL_IDLE_SEC: Setting<Integer> = Setting {
    name: "MYMCP_TERMINAL_IDLE_SEC",
    kind: Integer {
        default: 1800,
        min: 1,
        max: 7 * DAY,
    },
    read_by: &[Executor],
    group: Group::Terminals,
    help: "Seconds without terminal_send or terminal_read after which a terminal is closed.",
};

pub const TERMINAL_RECORDING_RETENTION_SEC: Setting<Integer> = Setting {
    name: "MYMCP_TERMINAL_RECORDING_RETENTION_SEC",
    kind: Integer {
        default: 30 * DAY,
        min: 1,
        max: 3650 * DAY,
    },
    read_by: &[Executor],
    group: Group::Terminals,
    help: "How long a terminal's recording (asciicast) is kept after its last change, in seconds.",
};

pub const TERMINAL_MAX_PER_TOKEN: Setting<Integer> = Setting {
    name: "MYMCP_TERMINAL_MAX_PER_TOKEN",
    kind: Integer {
        default: 4,
        min: 1,
        max: 1024,
    },
    read_by: &[Executor],
    group: Group::Terminals,
    help: "Terminals one token may have open at once.",
};

pub const TERMINAL_MAX: Setting<Integer> = Setting {
    name: "MYMCP_TERMINAL_MAX",
    kind: Integer {
        default: 32,
        min: 1,
        max: 65536,
    },
    read_by: &[Executor],
    group: Group::Terminals,
    help: "Terminals open at once on the whole server.",
};

// File tools ----------------------------------------------------------------------------------

pub const READ_FILE_DEFAULT_LIMIT: Setting<Integer> = Setting {
    name: "MYMCP_READ_FILE_DEFAULT_LIMIT",
    kind: Integer {
        default: 2000,
        min: 1,
        max: 10_000_000,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Lines read_file returns by default (at most MYMCP_READ_FILE_MAX_LIMIT).",
};

pub const READ_FILE_MAX_LIMIT: Setting<Integer> = Setting {
    name: "MYMCP_READ_FILE_MAX_LIMIT",
    kind: Integer {
        default: 50_000,
        min: 1,
        max: 10_000_000,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Most lines one read_file may return.",
};

pub const READ_FILE_MAX_LINE_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_READ_FILE_MAX_LINE_BYTES",
    kind: Integer {
        default: 32 * 1024,
        min: 1,
        max: MIB,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Longer lines are cut by read_file.",
};

pub const READ_FILE_TIMEOUT_SEC: Setting<Integer> = Setting {
    name: "MYMCP_READ_FILE_TIMEOUT_SEC",
    kind: Integer {
        default: 10,
        min: 1,
        max: 3600,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Seconds a read_file may read a file that need not end (procfs, sysfs, debugfs, FUSE, …: not on a disk, memory or network file system); then TimeoutError.",
};

/// Room for a `write_file` request's content in one frame (`MAX_FRAME_LEN` of
/// `mymcp-protocol` less 1 MiB for JSON escaping; the executor's tests check it).
pub const FRAME_ROOM: u64 = 32 * MIB - MIB;

pub const WRITE_FILE_MAX_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_WRITE_FILE_MAX_BYTES",
    kind: Integer {
        default: 10 * MIB,
        min: 0,
        max: FRAME_ROOM,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Largest write_file content, in bytes.",
};

pub const EDIT_STRING_MAX_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_EDIT_STRING_MAX_BYTES",
    kind: Integer {
        default: MIB,
        min: 1,
        max: FRAME_ROOM / 2,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Largest old_string or new_string of edit_file, in bytes.",
};

pub const EDIT_FILE_MAX_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_EDIT_FILE_MAX_BYTES",
    kind: Integer {
        default: 64 * MIB,
        min: 1,
        max: 1 << 30,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Largest file edit_file loads, in bytes.",
};

pub const GLOB_MAX_RESULTS: Setting<Integer> = Setting {
    name: "MYMCP_GLOB_MAX_RESULTS",
    kind: Integer {
        default: 1000,
        min: 1,
        max: 100_000,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Most paths glob returns.",
};

pub const GREP_DEFAULT_MAX_RESULTS: Setting<Integer> = Setting {
    name: "MYMCP_GREP_DEFAULT_MAX_RESULTS",
    kind: Integer {
        default: 500,
        min: 1,
        max: 100_000,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Output lines grep returns by default (at most MYMCP_GREP_MAX_RESULTS).",
};

pub const GREP_MAX_RESULTS: Setting<Integer> = Setting {
    name: "MYMCP_GREP_MAX_RESULTS",
    kind: Integer {
        default: 5000,
        min: 1,
        max: 100_000,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Most output lines a grep may ask for.",
};

pub const SEARCH_TIMEOUT_SEC: Setting<Integer> = Setting {
    name: "MYMCP_SEARCH_TIMEOUT_SEC",
    kind: Integer {
        default: 60,
        min: 1,
        max: 3600,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "Time budget of one glob or grep, in seconds.",
};

/// The most file work on tokio's 512 blocking threads, keeping room for the rest (whole-request
/// runs, the audit log's seals).
const MAX_FILE_CONCURRENT: u64 = 448;

pub const FILE_MAX_CONCURRENT: Setting<Integer> = Setting {
    name: "MYMCP_FILE_MAX_CONCURRENT",
    kind: Integer {
        default: 128,
        min: 1,
        max: MAX_FILE_CONCURRENT,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "File-tool calls and transfers on the executor's blocking threads at once, all tokens together.",
};

pub const FILE_MAX_CONCURRENT_PER_TOKEN: Setting<Integer> = Setting {
    name: "MYMCP_FILE_MAX_CONCURRENT_PER_TOKEN",
    kind: Integer {
        default: 16,
        min: 1,
        max: MAX_FILE_CONCURRENT,
    },
    read_by: &[Executor],
    group: Group::Files,
    help: "File-tool calls one token may have on the blocking threads at once (and as many transfers).",
};

pub const PROTECTED_PATHS: Setting<List> = Setting {
    name: "MYMCP_PROTECTED_PATHS",
    kind: List,
    read_by: &[Executor],
    group: Group::Files,
    help: "Extra protected files or directories, comma-separated absolute paths. The configuration directory, MYMCP_STATE_DIR, MYMCP_AUDIT_LOG_DIR, MYMCP_RUNTIME_DIR, the env file and the mymcp binaries are always protected.",
};

// Transfers -----------------------------------------------------------------------------------

pub const TRANSFER_ENABLED: Setting<Bool> = Setting {
    name: "MYMCP_TRANSFER_ENABLED",
    kind: Bool { default: true },
    read_by: &[Executor],
    group: Group::Transfers,
    help: "Whether prepare_upload and prepare_download are offered.",
};

pub const TRANSFER_MAX_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_TRANSFER_MAX_BYTES",
    kind: Integer {
        default: 2 << 30,
        min: 1,
        max: 1 << 50,
    },
    read_by: &[Executor],
    group: Group::Transfers,
    help: "Largest transfer, in bytes.",
};

pub const TRANSFER_DEFAULT_TTL_SEC: Setting<Integer> = Setting {
    name: "MYMCP_TRANSFER_DEFAULT_TTL_SEC",
    kind: Integer {
        default: 300,
        min: 1,
        max: DAY,
    },
    read_by: &[Executor],
    group: Group::Transfers,
    help:
        "Default lifetime of a transfer link, in seconds (above MYMCP_TRANSFER_MAX_TTL_SEC: that).",
};

pub const TRANSFER_MAX_TTL_SEC: Setting<Integer> = Setting {
    name: "MYMCP_TRANSFER_MAX_TTL_SEC",
    kind: Integer {
        default: 900,
        min: 1,
        max: DAY,
    },
    read_by: &[Executor],
    group: Group::Transfers,
    help: "Longest lifetime of a transfer link, in seconds.",
};

pub const TRANSFER_MAX_GRANTS_PER_TOKEN: Setting<Integer> = Setting {
    name: "MYMCP_TRANSFER_MAX_GRANTS_PER_TOKEN",
    kind: Integer {
        default: 256,
        min: 1,
        max: 4096,
    },
    read_by: &[Executor],
    group: Group::Transfers,
    help: "Transfer links one token may hold at once, of the executor's 4096 (used ones count until they expire).",
};

// OAuth ------------------------------------------------------------------------------------------

pub const OAUTH_ENABLED: Setting<Bool> = Setting {
    name: "MYMCP_OAUTH_ENABLED",
    kind: Bool { default: false },
    read_by: &[Executor, Frontend, Ctl],
    group: Group::OAuth,
    help: "Serve OAuth 2.1 (authorization server and protected resource metadata) so that connectors such as claude.ai and ChatGPT can be approved on the host (mymcpctl oauth approve); needs MYMCP_PUBLIC_BASE_URL, https (or http on loopback). Static tokens keep working. mymcpctl serve turns it on under its own URL unless this says false.",
};

pub const OAUTH_ACCESS_TTL_SEC: Setting<Integer> = Setting {
    name: "MYMCP_OAUTH_ACCESS_TTL_SEC",
    kind: Integer {
        default: 3600,
        min: 60,
        max: DAY,
    },
    read_by: &[Executor],
    group: Group::OAuth,
    help: "Lifetime of an OAuth access token, in seconds.",
};

pub const OAUTH_REFRESH_TTL_SEC: Setting<Integer> = Setting {
    name: "MYMCP_OAUTH_REFRESH_TTL_SEC",
    kind: Integer {
        default: 30 * DAY,
        min: 3600,
        max: 365 * DAY,
    },
    read_by: &[Executor],
    group: Group::OAuth,
    help: "Lifetime of an OAuth refresh token, in seconds; each refresh gives a new one, and a grant unused this long lapses.",
};

pub const OAUTH_PAM: Setting<Bool> = Setting {
    name: "MYMCP_OAUTH_PAM",
    kind: Bool { default: false },
    read_by: &[Executor],
    group: Group::OAuth,
    help: "Offer a login with the account's Unix password (PAM, run by the executor) on the consent page, to members of MYMCP_OAUTH_PAM_GROUP; the grant acts as that account.",
};

pub const OAUTH_PAM_GROUP: Setting<Text> = Setting {
    name: "MYMCP_OAUTH_PAM_GROUP",
    kind: Text {
        default: "mymcp-login",
    },
    read_by: &[Executor],
    group: Group::OAuth,
    help: "The group whose members may approve with their password (MYMCP_OAUTH_PAM).",
};

pub const OAUTH_PAM_SERVICE: Setting<Text> = Setting {
    name: "MYMCP_OAUTH_PAM_SERVICE",
    kind: Text { default: "mymcp" },
    read_by: &[Executor],
    group: Group::OAuth,
    help: "The PAM service of the login (/etc/pam.d/<service>).",
};

pub const OAUTH_CIMD_ALLOWED_NETWORKS: Setting<List> = Setting {
    name: "MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS",
    kind: List,
    read_by: &[Frontend],
    group: Group::OAuth,
    help: "Addresses or CIDR blocks a Client ID Metadata Document may be fetched from although loopback, private or link-local, comma-separated (e.g. 10.0.0.0/8). Empty: public addresses only.",
};

// Audit log -----------------------------------------------------------------------------------

pub const AUDIT_ENABLED: Setting<Bool> = Setting {
    name: "MYMCP_AUDIT_ENABLED",
    kind: Bool { default: false },
    read_by: &[Executor],
    group: Group::Audit,
    help: "Write the audit log (tool calls fail closed when it cannot be written).",
};

pub const AUDIT_LOG_DIR: Setting<Path> = Setting {
    name: "MYMCP_AUDIT_LOG_DIR",
    kind: Path {
        default: "/var/log/mymcp",
        absolute: true,
    },
    read_by: &[Executor, Ctl, Recorder],
    group: Group::Audit,
    help: "Directory of audit.log, its backups and audit.seals (protected); the recorder follows the log there.",
};

pub const AUDIT_MAX_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_AUDIT_MAX_BYTES",
    kind: Integer {
        default: 10 * MIB,
        min: 4096,
        max: 1 << 40,
    },
    read_by: &[Executor],
    group: Group::Audit,
    help: "Size at which audit.log rolls over to audit.log.1.",
};

pub const AUDIT_BACKUP_COUNT: Setting<Integer> = Setting {
    name: "MYMCP_AUDIT_BACKUP_COUNT",
    kind: Integer {
        default: 5,
        min: 0,
        max: 1000,
    },
    read_by: &[Executor],
    group: Group::Audit,
    help: "Rolled-over files kept (audit.log.1 … .N).",
};

pub const AUDIT_OUTPUT_BASH_HEAD_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_AUDIT_OUTPUT_BASH_HEAD_BYTES",
    kind: Integer {
        default: 4096,
        min: 0,
        max: 65_536,
    },
    read_by: &[Executor],
    group: Group::Audit,
    help: "stdout head kept in a bash_execute audit record, in bytes.",
};

pub const AUDIT_OUTPUT_BASH_TAIL_BYTES: Setting<Integer> = Setting {
    name: "MYMCP_AUDIT_OUTPUT_BASH_TAIL_BYTES",
    kind: Integer {
        default: 4096,
        min: 0,
        max: 65_536,
    },
    read_by: &[Executor],
    group: Group::Audit,
    help: "stdout tail kept in a bash_execute audit record, in bytes.",
};

pub const AUDIT_SEAL_RECORDS: Setting<Integer> = Setting {
    name: "MYMCP_AUDIT_SEAL_RECORDS",
    kind: Integer {
        default: 1000,
        min: 1,
        max: 1_000_000,
    },
    read_by: &[Executor],
    group: Group::Audit,
    help: "Seal (sign) the log after this many records.",
};

pub const AUDIT_SEAL_INTERVAL_SEC: Setting<Integer> = Setting {
    name: "MYMCP_AUDIT_SEAL_INTERVAL_SEC",
    kind: Integer {
        default: 300,
        min: 1,
        max: DAY,
    },
    read_by: &[Executor],
    group: Group::Audit,
    help: "Seal the log at least this often (seconds) while records arrive.",
};

// OpenTelemetry -------------------------------------------------------------------------------
// The frontend exports (OTLP) when its OTEL_EXPORTER_OTLP_ENDPOINT is set: the standard OTEL_*
// variables are not MYMCP_* settings and are documented in docs/operations.md. What the
// executor hands the frontend for that export beyond its spans is the executor's decision:

pub const OTLP_AUDIT_LOGS: Setting<Bool> = Setting {
    name: "MYMCP_OTLP_AUDIT_LOGS",
    kind: Bool { default: false },
    read_by: &[Executor],
    group: Group::Telemetry,
    help: "Hand each audit record, once written, to the frontend for export as an OTLP log record (best effort; the local audit log still decides every call).",
};

pub const OTLP_EXECUTOR_METRICS: Setting<Bool> = Setting {
    name: "MYMCP_OTLP_EXECUTOR_METRICS",
    kind: Bool { default: false },
    read_by: &[Executor],
    group: Group::Telemetry,
    help: "Let the frontend read the executor's counters without a metrics token, to push them as OTLP metrics.",
};

// Host overview and the recorder's files --------------------------------------------------------

pub const RECORDER_DATA_DIR: Setting<Path> = Setting {
    name: "MYMCP_RECORDER_DATA_DIR",
    kind: Path {
        default: "/var/lib/mymcp/recorder",
        absolute: true,
    },
    read_by: &[Executor, Recorder],
    group: Group::Overview,
    help: "The recorder's files: overview/overview.md, overview/changelog.md, cursor.json (readable by the file tools, never writable).",
};

pub const RECORDER_MERGE_INTERVAL_SEC: Setting<Interval> = Setting {
    name: "MYMCP_RECORDER_MERGE_INTERVAL_SEC",
    kind: Interval {
        default: 300,
        max: DAY,
    },
    read_by: &[Executor, Recorder],
    group: Group::Overview,
    help: "Seconds between the recorder's merge cycles; server_overview calls the overview stale after two of them with events waiting. Set it for both.",
};

pub const RECORDER_METRICS_FILE: Setting<Path> = Setting {
    name: "MYMCP_RECORDER_METRICS_FILE",
    kind: Path {
        default: "",
        absolute: true,
    },
    read_by: &[Recorder],
    group: Group::Overview,
    help: "Where the recorder writes its metrics (Prometheus text; unset: metrics.prom in MYMCP_RECORDER_DATA_DIR).",
};

// Recorder: the LLM -------------------------------------------------------------------------------

pub const RECORDER_ENABLED: Setting<Bool> = Setting {
    name: "MYMCP_RECORDER_ENABLED",
    kind: Bool { default: false },
    read_by: &[Recorder],
    group: Group::RecorderLlm,
    help: "The recorder runs only when this is true.",
};

pub const RECORDER_LLM_PROVIDER: Setting<Choice> = Setting {
    name: "MYMCP_RECORDER_LLM_PROVIDER",
    kind: Choice {
        default: "anthropic",
        allowed: &["anthropic", "openai"],
    },
    read_by: &[Recorder],
    group: Group::RecorderLlm,
    help: "anthropic (the Messages API) or openai (any OpenAI-compatible chat-completions API).",
};

pub const RECORDER_LLM_MODEL: Setting<Text> = Setting {
    name: "MYMCP_RECORDER_LLM_MODEL",
    kind: Text { default: "" },
    read_by: &[Recorder],
    group: Group::RecorderLlm,
    help: "The model (unset: the provider's default, see docs/recorder.md).",
};

pub const RECORDER_LLM_BASE_URL: Setting<Text> = Setting {
    name: "MYMCP_RECORDER_LLM_BASE_URL",
    kind: Text { default: "" },
    read_by: &[Recorder],
    group: Group::RecorderLlm,
    help: "The API's http(s) base URL (unset: the provider's). A server named here may go without a key.",
};

pub const RECORDER_LLM_API_KEY: Setting<Secret> = Setting {
    name: "MYMCP_RECORDER_LLM_API_KEY",
    kind: Secret,
    read_by: &[Recorder],
    group: Group::RecorderLlm,
    help: "The API key (unset: ANTHROPIC_API_KEY or OPENAI_API_KEY, else the systemd credential llm-api-key).",
};

pub const RECORDER_LLM_MAX_TOKENS: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_LLM_MAX_TOKENS",
    kind: Integer {
        default: 32_768,
        min: 256,
        max: 1_000_000,
    },
    read_by: &[Recorder],
    group: Group::RecorderLlm,
    help: "Longest answer, in tokens.",
};

pub const RECORDER_LLM_TIMEOUT_SEC: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_LLM_TIMEOUT_SEC",
    kind: Integer {
        default: 600,
        min: 1,
        max: 3600,
    },
    read_by: &[Recorder],
    group: Group::RecorderLlm,
    help: "Seconds one LLM request may take, answer included.",
};

// Recorder: merge cycles --------------------------------------------------------------------------

pub const RECORDER_MAX_EVENTS_PER_CYCLE: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_MAX_EVENTS_PER_CYCLE",
    kind: Integer {
        default: 50,
        min: 1,
        max: 10_000,
    },
    read_by: &[Recorder],
    group: Group::RecorderCycles,
    help: "Audit events folded in by one merge call at most.",
};

pub const RECORDER_CIRCUIT_BREAKER_THRESHOLD: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_CIRCUIT_BREAKER_THRESHOLD",
    kind: Integer {
        default: 5,
        min: 1,
        max: 1000,
    },
    read_by: &[Recorder],
    group: Group::RecorderCycles,
    help: "Consecutive failures that open the circuit breaker.",
};

pub const RECORDER_BACKOFF_MIN_SEC: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_BACKOFF_MIN_SEC",
    kind: Integer {
        default: 30,
        min: 1,
        max: DAY,
    },
    read_by: &[Recorder],
    group: Group::RecorderCycles,
    help: "First wait after a failed merge, in seconds; it doubles up to MYMCP_RECORDER_BACKOFF_MAX_SEC.",
};

pub const RECORDER_BACKOFF_MAX_SEC: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_BACKOFF_MAX_SEC",
    kind: Integer {
        default: 600,
        min: 1,
        max: DAY,
    },
    read_by: &[Recorder],
    group: Group::RecorderCycles,
    help: "Longest wait after failed merges, in seconds (at least MYMCP_RECORDER_BACKOFF_MIN_SEC).",
};

// Recorder: bootstrap -----------------------------------------------------------------------------

pub const RECORDER_BOOTSTRAP_MAX_ITERATIONS: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_BOOTSTRAP_MAX_ITERATIONS",
    kind: Integer {
        default: 200,
        min: 1,
        max: 100_000,
    },
    read_by: &[Recorder],
    group: Group::RecorderBootstrap,
    help: "Most LLM turns of the first overview.",
};

pub const RECORDER_BOOTSTRAP_TOKEN_BUDGET: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_BOOTSTRAP_TOKEN_BUDGET",
    kind: Integer {
        default: 10_000_000,
        min: 1,
        max: 1 << 40,
    },
    read_by: &[Recorder],
    group: Group::RecorderBootstrap,
    help: "Tokens (input and output) one bootstrap may spend.",
};

pub const RECORDER_BOOTSTRAP_PROBE_TIMEOUT_SEC: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_BOOTSTRAP_PROBE_TIMEOUT_SEC",
    kind: Integer {
        default: 30,
        min: 1,
        max: 3600,
    },
    read_by: &[Recorder],
    group: Group::RecorderBootstrap,
    help: "Seconds one probe command of the bootstrap may run.",
};

pub const RECORDER_BOOTSTRAP_RETRY_INTERVAL_SEC: Setting<Integer> = Setting {
    name: "MYMCP_RECORDER_BOOTSTRAP_RETRY_INTERVAL_SEC",
    kind: Integer {
        default: 3600,
        min: 1,
        max: 30 * DAY,
    },
    read_by: &[Recorder],
    group: Group::RecorderBootstrap,
    help: "Wait after a failed bootstrap, in seconds.",
};

// Logging -----------------------------------------------------------------------------------------

pub const LOG_LEVEL: Setting<Text> = Setting {
    name: "MYMCP_LOG_LEVEL",
    kind: Text { default: "info" },
    read_by: &[Executor, Frontend, Recorder],
    group: Group::Logging,
    help: "Log filter: error, warn, info, debug, trace, or tracing directives.",
};

pub const LOG_FORMAT: Setting<Choice> = Setting {
    name: "MYMCP_LOG_FORMAT",
    kind: Choice {
        default: "text",
        allowed: &["text", "json"],
    },
    read_by: &[Executor, Frontend, Recorder],
    group: Group::Logging,
    help: "Log format on stderr (journald, used when JOURNAL_STREAM is set, gets structured fields either way).",
};

/// Every setting, in the order of the example env files and the documentation.
pub const ALL: &[&dyn Declared] = &[
    &HOST,
    &PORT,
    &PUBLIC_BASE_URL,
    &ALLOWED_ORIGINS,
    &ALLOWED_HOSTS,
    &TRUSTED_PROXIES,
    &TLS_CERT,
    &TLS_KEY,
    &ALLOW_PLAINTEXT,
    &OUTBOUND_CA_FILE,
    &ACME_DOMAIN,
    &ACME_EMAIL,
    &ACME_DIRECTORY,
    &ACME_DIR,
    &MAX_BODY_BYTES,
    &HEADER_TIMEOUT_SEC,
    &BODY_TIMEOUT_SEC,
    &BODY_IDLE_TIMEOUT_SEC,
    &MAX_CONNECTIONS,
    &MAX_CONNECTIONS_PER_IP,
    &EXECUTOR_SOCKET,
    &RUNTIME_DIR,
    &FRONTEND_USER,
    &TOKEN_FILE,
    &DEFAULT_USER,
    &ADMIN_TOKEN,
    &METRICS_TOKEN,
    &STATE_DIR,
    &ENV_FILE,
    &BASH_SHELL,
    &BASH_ENV_PASSTHROUGH,
    &BASH_MAX_OUTPUT_BYTES,
    &BASH_MAX_OUTPUT_BYTES_HARD,
    &BASH_MAX_CONCURRENT,
    &BASH_MAX_CONCURRENT_PER_TOKEN,
    &BASH_HANDOFF_SEC,
    &DEFAULT_MEMORY_MAX,
    &DEFAULT_TASKS_MAX,
    &DEFAULT_CPU_MAX,
    &SHUTDOWN_GRACE_SEC,
    &JOB_MAX_OUTPUT_BYTES,
    &JOB_RETENTION_SEC,
    &JOB_MAX_RUNNING_PER_TOKEN,
    &TERMINAL_IDLE_SEC,
    &TERMINAL_RECORDING_RETENTION_SEC,
    &TERMINAL_MAX_PER_TOKEN,
    &TERMINAL_MAX,
    &READ_FILE_DEFAULT_LIMIT,
    &READ_FILE_MAX_LIMIT,
    &READ_FILE_MAX_LINE_BYTES,
    &READ_FILE_TIMEOUT_SEC,
    &WRITE_FILE_MAX_BYTES,
    &EDIT_STRING_MAX_BYTES,
    &EDIT_FILE_MAX_BYTES,
    &GLOB_MAX_RESULTS,
    &GREP_DEFAULT_MAX_RESULTS,
    &GREP_MAX_RESULTS,
    &SEARCH_TIMEOUT_SEC,
    &FILE_MAX_CONCURRENT,
    &FILE_MAX_CONCURRENT_PER_TOKEN,
    &PROTECTED_PATHS,
    &TRANSFER_ENABLED,
    &TRANSFER_MAX_BYTES,
    &TRANSFER_DEFAULT_TTL_SEC,
    &TRANSFER_MAX_TTL_SEC,
    &TRANSFER_MAX_GRANTS_PER_TOKEN,
    &OAUTH_ENABLED,
    &OAUTH_ACCESS_TTL_SEC,
    &OAUTH_REFRESH_TTL_SEC,
    &OAUTH_PAM,
    &OAUTH_PAM_GROUP,
    &OAUTH_PAM_SERVICE,
    &OAUTH_CIMD_ALLOWED_NETWORKS,
    &AUDIT_ENABLED,
    &AUDIT_LOG_DIR,
    &AUDIT_MAX_BYTES,
    &AUDIT_BACKUP_COUNT,
    &AUDIT_OUTPUT_BASH_HEAD_BYTES,
    &AUDIT_OUTPUT_BASH_TAIL_BYTES,
    &AUDIT_SEAL_RECORDS,
    &AUDIT_SEAL_INTERVAL_SEC,
    &OTLP_AUDIT_LOGS,
    &OTLP_EXECUTOR_METRICS,
    &RECORDER_DATA_DIR,
    &RECORDER_MERGE_INTERVAL_SEC,
    &RECORDER_METRICS_FILE,
    &RECORDER_ENABLED,
    &RECORDER_LLM_PROVIDER,
    &RECORDER_LLM_MODEL,
    &RECORDER_LLM_BASE_URL,
    &RECORDER_LLM_API_KEY,
    &RECORDER_LLM_MAX_TOKENS,
    &RECORDER_LLM_TIMEOUT_SEC,
    &RECORDER_MAX_EVENTS_PER_CYCLE,
    &RECORDER_CIRCUIT_BREAKER_THRESHOLD,
    &RECORDER_BACKOFF_MIN_SEC,
    &RECORDER_BACKOFF_MAX_SEC,
    &RECORDER_BOOTSTRAP_MAX_ITERATIONS,
    &RECORDER_BOOTSTRAP_TOKEN_BUDGET,
    &RECORDER_BOOTSTRAP_PROBE_TIMEOUT_SEC,
    &RECORDER_BOOTSTRAP_RETRY_INTERVAL_SEC,
    &LOG_LEVEL,
    &LOG_FORMAT,
];

/// The declaration named `name`.
pub fn find(name: &str) -> Option<&'static dyn Declared> {
    ALL.iter().copied().find(|s| s.name() == name)
}

/// Settings that hold secrets and that the executor reads: never passed on to the frontend
/// or to commands.
pub const SECRET_SETTINGS: [&str; 2] = [ADMIN_TOKEN.name, METRICS_TOKEN.name];

/// Every environment variable any mymcp process treats as a secret: the executor's tokens and
/// the recorder's LLM API keys. A secret belongs in a file (the env file, which the executor
/// reads itself) or a systemd credential, never in a process environment, which
/// `/proc/<pid>/environ` shows for the life of the process. Each mymcp process overwrites
/// these in place at start-up (`mymcp_service::environment::take_secrets`) should one arrive
/// there anyway.
pub const SECRET_VARIABLES: [&str; 5] = [
    ADMIN_TOKEN.name,
    METRICS_TOKEN.name,
    RECORDER_LLM_API_KEY.name,
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setting::Process;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn names_are_unique_and_of_mymcp() {
        let mut seen = HashSet::new();
        for s in ALL {
            assert!(seen.insert(s.name()), "{} declared twice", s.name());
            assert!(s.name().starts_with("MYMCP_"), "{}", s.name());
            let rest = &s.name()["MYMCP_".len()..];
            assert!(
                rest.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                s.name()
            );
            assert!(
                !s.help().is_empty() && s.help().ends_with('.'),
                "{}",
                s.name()
            );
            assert!(!s.read_by().is_empty(), "{}", s.name());
        }
    }

    #[test]
    fn each_group_stands_together() {
        let mut done = Vec::new();
        let mut current = None;
        for s in ALL {
            if current != Some(s.group()) {
                assert!(
                    !done.contains(&s.group()),
                    "{} is apart from the rest of {:?}",
                    s.name(),
                    s.group()
                );
                done.extend(current);
                current = Some(s.group());
            }
        }
    }

    #[test]
    fn every_default_is_an_allowed_value() {
        for s in ALL {
            let default = s.kind().default_text();
            if let Err(e) = s.kind().check(s.name(), &default) {
                panic!("the default of {} is refused: {e}", s.name());
            }
        }
        let empty: HashMap<String, String> = HashMap::new();
        for s in [
            &PORT,
            &MAX_BODY_BYTES,
            &WRITE_FILE_MAX_BYTES,
            &AUDIT_MAX_BYTES,
        ] {
            let set: HashMap<String, String> =
                [(s.name.to_owned(), s.default().to_string())].into();
            assert_eq!(s.read(&set).unwrap(), s.read(&empty).unwrap());
        }
    }

    #[test]
    fn secrets_are_the_secret_kind_and_all_taken_out_of_environments() {
        for s in ALL.iter().filter(|s| s.kind().is_secret()) {
            assert!(SECRET_VARIABLES.contains(&s.name()), "{}", s.name());
            assert_eq!(
                SECRET_SETTINGS.contains(&s.name()),
                s.read_by().contains(&Process::Executor),
                "{}",
                s.name()
            );
        }
    }

    #[test]
    fn reference_defaults() {
        assert_eq!(PORT.default(), 8765);
        assert!(!AUDIT_ENABLED.default());
        assert_eq!(AUDIT_MAX_BYTES.default(), 10_485_760);
        assert_eq!(AUDIT_BACKUP_COUNT.default(), 5);
        assert_eq!(TOKEN_FILE.default(), "/etc/mymcp/tokens.json");
        assert_eq!(MAX_BODY_BYTES.default(), 25_165_824);
        assert_eq!(TRANSFER_MAX_BYTES.default(), 2_147_483_648);
        assert_eq!(BASH_MAX_OUTPUT_BYTES.default(), 102_400);
        assert_eq!(FRAME_ROOM, 32_505_856);
    }
}
