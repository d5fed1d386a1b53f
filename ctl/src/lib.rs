//! mymcpctl: the administration CLI of mymcp.
//!
//! It talks to the executor's `control.sock` (root only) for token management and status,
//! checks the audit log ([`mymcp_audit::verify`]) and installations ([`doctor`]), imports
//! Python/Go token stores ([`import`]), and
//! runs the quick try (`serve`), which starts the executor and an unprivileged frontend with
//! throwaway state. Library-first: `main.rs` only parses arguments and prints.

pub mod client;
pub mod doctor;
pub mod import;
pub mod serve;
pub mod sys;
