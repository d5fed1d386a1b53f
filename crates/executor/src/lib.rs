//! mymcp-executor: the privileged half of mymcp.
//!
//! The executor runs as root and has no network listener. It accepts connections on two Unix
//! sockets — `executor.sock` for the frontend's uid, `control.sock` for root — checks the peer
//! with `SO_PEERCRED` on every accept, and speaks only the closed request sets of
//! [`mymcp_protocol`]. Every tool call carries the caller's token digest; the executor looks it
//! up in its own token store, derives name and role itself, re-validates every argument and
//! only then runs the tool. The frontend's checks are an optimisation, never the decision.
//!
//! The library exposes what the binary needs and nothing else: the command line ([`cli`],
//! which `cargo xtask man` also renders), [`run`], and [`run_pam_helper_if_asked`] (the
//! executor started as its own PAM helper, for a password login of the consent page). Everything below is private to the
//! crate, so the compiler keeps the walls: a tool entry point takes the `Authorized<Ro>` or
//! `Authorized<Rw>` proof that only the `auth` module can make, and the values that prove a
//! path check (`CheckedFile`, `CheckedDir`, `CheckedTarget`) are made only by `paths`.
//!
//! Modules, lowest first (none imports a higher one; `cargo xtask check-modules` checks):
//! `accounts` (the Unix account a token acts as, resolved through NSS), `auth` (authorization
//! as types, carrying the account), `cgroup` (each command's cgroup, its kill and kernel
//! limits), `metrics` (counters for `/metrics`), `mounts` (which
//! reads may run on a runtime worker), `limits` (file and command concurrency), `server`
//! (sockets, peer checks, connection state), `paths` (protected paths, checked on the opened
//! object; the one rule walks ask), `trace` (the executor's OpenTelemetry spans of a traced
//! request, returned to the frontend, which exports them), `audit_feed` (written audit records
//! for the frontend's OTLP export), `audit` (the tamper-evident audit log, fail-closed), the
//! tools — `files` (`read_file`), `edit` (`write_file`, `edit_file`), `search` (`grep`,
//! `glob`), `spawn` (`bash_execute`), `jobs` (background jobs), `terminals` (pty sessions), `transfer`
//! (`prepare_upload`/`prepare_download` grants and their redemption through pipes), `overview`
//! (`server_overview`, the recorder's document) — then `config` (settings), `dispatch`
//! (requests to tools: authenticate, authorize, run), `control` (`control.sock` requests) and
//! `daemon` (what [`run`] does). The token store is the `mymcp-tokens` crate; every raw system
//! call is in the `mymcp-sys` crate.

#![forbid(unsafe_code)]
#![deny(unreachable_pub)]

mod accounts;
mod audit;
mod audit_feed;
mod auth;
mod cgroup;
pub mod cli;
mod config;
mod control;
mod daemon;
mod dispatch;
mod edit;
mod files;
mod jobs;
mod limits;
mod metrics;
mod mounts;
mod oauth;
mod overview;
mod paths;
mod search;
mod server;
mod spawn;
mod terminals;
#[cfg(test)]
mod testing;
mod trace;
mod transfer;

pub use daemon::{run, Error, Secrets};

/// When the executor was started as its own PAM helper (`mymcp-executor
/// --oauth-pam-helper`, by itself, for one password login of the consent page): runs that
/// check and exits. Otherwise returns at once. Call it first thing in `main`.
pub fn run_pam_helper_if_asked() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(3).collect();
    if args.len() == 2 && args[1] == oauth::login::HELPER_ARG {
        oauth::login::helper_main();
    }
}
