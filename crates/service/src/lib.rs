//! mymcp-service: the two daemons' side of the systemd service-manager protocols, in a few
//! hundred lines and no dependency beyond `libc` (the executor's tree stays small).
//!
//! - [`notify`]: `sd_notify(3)` — `READY=1`, `STATUS=…`, `STOPPING=1`, `WATCHDOG=1` — as
//!   datagrams to `$NOTIFY_SOCKET`, and the watchdog interval from `$WATCHDOG_USEC`;
//! - [`activation`]: `sd_listen_fds_with_names(3)` — the sockets passed in `$LISTEN_FDS`
//!   (from fd 3 on) with their `$LISTEN_FDNAMES`.
//!
//! - [`memory`]: gives the heap back to the kernel after large answers, and turns off the
//!   allocator's per-thread caches;
//! - [`environment`]: takes secrets out of the process environment, in place, should one
//!   arrive there.
//!
//! Both read the environment once, at start-up, and remove what they read, so that nothing
//! started later (a command the executor runs) inherits it. Call them before any other thread
//! exists.
//!
//! ```no_run
//! let notifier = mymcp_service::notify::Notifier::from_env();
//! let sockets = mymcp_service::activation::take().expect("LISTEN_FDS");
//! // … bind or adopt listeners, then:
//! notifier.ready("serving");
//! ```

#![forbid(unsafe_code)]

pub mod activation;
pub mod environment;
pub mod memory;
pub mod notify;
