//! The fuzz targets of mymcp, as plain functions over bytes.
//!
//! Each target feeds its input to one parser that faces untrusted bytes and asserts what must
//! hold for *every* input — no panic, decode → encode → decode gives the same message, limits
//! hold, a ticket that verifies was issued with the key — by panicking when it does not.
//! `fuzz/` wraps each in a libFuzzer target; `tests/replay.rs` runs every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through the same functions in a
//! plain `cargo test`, so an input that once crashed stays a regression test.
//!
//! [`seeds`] builds the seed corpus from the real encoders (`mymcp-fuzz-seeds DIR` writes it).

#![forbid(unsafe_code)]

pub mod seeds;
pub mod targets;

/// A fuzz target: its name (the directory of its corpus) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `fuzz/run` runs them.
pub const TARGETS: [Target; 12] = [
    ("frame", targets::frame),
    ("hello", targets::hello),
    ("frontend_request", targets::frontend_request),
    ("control_request", targets::control_request),
    ("frontend_response", targets::frontend_response),
    ("control_response", targets::control_response),
    ("mcp_post", targets::mcp_post),
    ("json_limits", targets::json_limits),
    ("tool_arguments", targets::tool_arguments),
    ("tickets", targets::tickets),
    ("token_store", targets::token_store),
    ("env_file", targets::env_file),
];

/// The body of the target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
