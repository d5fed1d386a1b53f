//! mymcpctl: the administration CLI of mymcp.
//!
//! It talks to the executor's `control.sock` (root only) for token management and status,
//! checks the audit log ([`mymcp_audit::verify`]) and installations ([`doctor`]), imports
//! Python/Go token stores ([`import`]), and
//! migrates Python/Go/1.x installs ([`migrate`]), installs the package's layout on hosts without the package ([`install`]), and
//! runs the quick try (`serve`), which starts the executor and an unprivileged frontend with
//! throwaway state. Library-first: `main.rs` only parses arguments and prints.

#![forbid(unsafe_code)]

pub mod certificate;
pub mod cli;
pub mod client;
pub mod doctor;
pub mod import;
pub mod install;
pub mod migrate;
pub mod serve;
pub mod terminal;
