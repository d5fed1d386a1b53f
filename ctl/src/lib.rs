//! mymcpctl: the administration CLI of mymcp.
//!
//! It talks to the executor's `control.sock` (root only) for token management and status, and
//! runs the quick try (`serve`), which starts the executor and an unprivileged frontend with
//! throwaway state. Library-first: `main.rs` only parses arguments and prints.

pub mod client;
pub mod serve;
pub mod sys;
