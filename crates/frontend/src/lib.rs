//! mymcp-frontend: the unprivileged, network-facing half of mymcp.
//!
//! It speaks MCP Streamable HTTP to AI clients (Claude, Cursor, Gemini CLI, any MCP client)
//! and turns each request into a small typed request to `mymcp-executor`, the privileged
//! process that actually runs tools:
//!
//! ```text
//! MCP client ──HTTPS─▶ mymcp-frontend ──executor.sock (postcard frames)──▶ mymcp-executor
//!                      unprivileged user                                    root
//! ```
//!
//! The frontend holds no privilege and decides nothing about who may do what. It hashes the
//! bearer token it receives and sends only the digest; the executor looks the digest up,
//! answers who the caller is, and authorizes and re-validates every call itself. The checks
//! made here — origin, header shape, body size and depth, JSON-RPC well-formedness, argument
//! types — only reject bad requests early and give clients precise errors. If this process is
//! compromised, the attacker can do no more than the holders of the tokens it sees in flight.
//!
//! Modules, by responsibility:
//! - [`http`]: the axum router, HTTP-level checks and status codes, SSE streams;
//! - [`bearer`]: the bearer token of a request and the digest the executor knows it by;
//! - [`request_id`]: the `X-Request-ID` of a request;
//! - [`body`]: reading request bodies only once the caller is known, within the body
//!   timeouts;
//! - [`mcp`]: JSON-RPC 2.0 / MCP processing, independent of the transport;
//! - [`revisions`]: the MCP protocol revisions, and which one a request speaks (headers,
//!   per-request `_meta`);
//! - [`calls`]: the running `tools/call`s, for `notifications/cancelled`;
//! - [`cli`]: the command line, its flags taken from the settings' declarations;
//! - [`origin`]: `Origin` and `Host` allow-lists, the client address behind trusted proxies;
//! - [`catalogue`]: the tools `tools/list` shows, with schemas and descriptions;
//! - [`arguments`]: `tools/call` arguments → typed [`mymcp_protocol::ToolCall`]s;
//! - [`results`]: typed tool outcomes → MCP results (large texts escaped by `json_string`);
//! - [`admin`]: `/admin/tokens` and `/metrics`, decided by the executor;
//! - [`metrics`]: the frontend's counters merged with the executor's, OpenMetrics text;
//! - [`forward`]: the multiplexed, reconnecting, cancellation-aware executor client (which also
//!   receives transfer pipes);
//! - [`tickets`]: HMAC-signed transfer tickets, checked at the edge;
//! - [`transfer`]: `/files/raw/{ticket}`, streaming between HTTP bodies and executor pipes;
//! - [`listen`]: the TCP listener, from systemd socket activation or `--host`/`--port`;
//! - [`server`]: the accept loop, connection timeouts, early answers that reach the client
//!   intact, and graceful shutdown;
//! - [`admission`]: the connection caps (in all and per client address), and which idle
//!   connection makes room for a new one;
//! - [`otel`]: OpenTelemetry (OTLP) traces, metrics and the audit log as logs, when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the executor's spans are exported from here;
//!   [`otel_executor`]: the executor's counters and audit records for that export;
//! - [`cimd`]: Client ID Metadata Documents fetched for `/authorize`, with SSRF guards, limits
//!   and a cache;
//! - [`tls`]: HTTPS with rustls: certificate files or systemd credentials, reload on SIGHUP,
//!   the refusal of plain HTTP on non-loopback addresses;
//! - [`acme`]: certificates from an ACME CA (Let's Encrypt) by TLS-ALPN-01 on the HTTPS
//!   port, stored in the frontend's own directory and renewed in-process;
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use mymcp_frontend::{forward::Forwarder, http, listen::ListenSource, server};
//!
//! let forwarder = Forwarder::new("/run/mymcp/executor.sock");
//! let app = http::router(forwarder, http::HttpConfig::default());
//! let listener = ListenSource::Bind { host: "127.0.0.1".into(), port: 8765 }.open(false).await?;
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! server::serve(listener, app, server::ServerConfig::default(), stop).await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod admission;
pub mod arguments;
pub mod authz;
pub mod authz_token;
pub mod bearer;
pub mod body;
pub mod calls;
pub mod catalogue;
pub mod cimd;
pub mod cli;
pub mod consent;
pub mod forward;
pub mod http;
mod json_string;
pub mod listen;
pub mod mcp;
pub mod metrics;
pub mod origin;
pub mod otel;
pub mod otel_executor;
pub mod request_id;
pub mod results;
pub mod revisions;
pub mod server;
pub mod tasks;
pub mod tickets;
pub mod tls;
pub mod transfer;

pub use mymcp_sys::euid as effective_uid;
