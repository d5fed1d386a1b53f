//! mymcp-executor: the privileged half of mymcp.
//!
//! The executor runs as root and has no network listener. It accepts connections on two Unix
//! sockets — `executor.sock` for the frontend's uid, `control.sock` for root — checks the peer
//! with `SO_PEERCRED` on every accept, and speaks only the closed request sets of
//! [`mymcp_protocol`]. Every tool call carries the caller's token digest; the executor looks it
//! up in its own token store, derives name and role itself, re-validates every argument and
//! only then runs the tool. The frontend's checks are an optimisation, never the decision.
//!
//! Modules: [`cli`] (the command line), [`config`] (settings), [`server`] (sockets, peer checks, connection state), the token store is the `mymcp-tokens` crate,
//! [`auth`] (authorization as types),
//! [`dispatch`] (requests to tools), [`spawn`] (`bash_execute`), [`jobs`] (background jobs),
//! [`limits`] (command concurrency), [`paths`] (protected paths, checked on the opened
//! object), [`mounts`] (which reads may run on a runtime worker), [`files`] (`read_file`), [`edit`] (`write_file`, `edit_file`), [`search`]
//! (`grep`, `glob`), [`transfer`] (`prepare_upload`/`prepare_download` grants and their
//! redemption through pipes), [`overview`] (`server_overview`, the recorder's document), [`control`] (`control.sock` requests), [`audit`] (the
//! tamper-evident audit log, fail-closed), [`metrics`] (counters for `/metrics`); every raw
//! system call is in the `mymcp-sys` crate.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod edit;
pub mod files;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod mounts;
pub mod overview;
pub mod paths;
pub mod search;
pub mod server;
pub mod spawn;
#[cfg(test)]
mod testing;
pub mod transfer;
