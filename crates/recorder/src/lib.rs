//! mymcp-recorder: the optional third process of mymcp. It keeps an LLM-written overview of
//! the host current by folding the executor's audit log into it, so that `server_overview`
//! can tell a model what is installed, deployed and recently changed before it starts work.
//!
//! It holds no privilege and talks to no mymcp process: it runs as its own user, reads the
//! audit log through group read permission, and writes only its data directory
//! (`MYMCP_RECORDER_DATA_DIR`), which the executor reads for `server_overview` and protects
//! against the file tools' writes. It is the only mymcp process that opens network
//! connections (to the LLM API), and it listens on none.
//!
//! ```text
//! audit.log ──read (group)──▶ mymcp-recorder ──HTTPS──▶ LLM API
//!                                 │ writes
//!                                 ▼
//!               <data_dir>/overview/overview.md ◀──read── mymcp-executor (server_overview)
//! ```
//!
//! Modules: [`cli`] (the command line), [`config`] (settings), [`store`] (the data directory), [`document`] (the
//! overview's Markdown and the checks on the model's answers), [`llm`] (the Anthropic and
//! OpenAI-compatible dialects), [`merge`] (the tick: merge cycles, rollback, batch halving,
//! backoff, circuit breaker), [`bootstrap`] (the first overview), [`probe`] (the bootstrap's
//! tools), [`metrics`] (`mymcp_recorder_*` as a text file). The audit
//! log is read with [`mymcp_audit::follow`], which `server_overview` shares.
//!
//! ```
//! use mymcp_recorder::document::{Overview, SectionUpdate};
//! let mut o = Overview::new("Host overview: web1", &[SectionUpdate {
//!     section: "TL;DR".into(),
//!     content: "A web server.".into(),
//! }]);
//! o.set_recent_changes("2026-11-21 18:00 | write_file | wrote /etc/nginx/nginx.conf\n");
//! let text = o.render("2026-11-21T18:15:33Z");
//! assert!(text.contains("_Last updated: 2026-11-21T18:15:33Z_"));
//! assert!(text.contains("- 2026-11-21 18:00 | write_file | wrote /etc/nginx/nginx.conf"));
//! ```

#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod document;
pub mod llm;
pub mod merge;
pub mod metrics;
pub mod probe;
pub mod store;
