//! OAuth 2.1 (issue 23, being built): the authorization server's state lives in the executor,
//! which alone mints, stores (as digests), checks and revokes codes and tokens. So far, each
//! with unit tests that attack it: the text helpers ([`text`]), the requests waiting for a
//! person ([`pending`]), the authorization codes ([`codes`]), the grants with their
//! rotating tokens ([`grants`]), and the decisions on each request ([`server`]: authorize,
//! consent, approve by code, deny, exchange, refresh, revoke; flows tested end to end in
//! process), the password login of the consent page ([`login`]: PAM in a helper process,
//! rate-limited). Not yet: ACME.

#![allow(dead_code)] // Wired into dispatch when the authorization server is.

pub(crate) mod codes;
pub(crate) mod grants;
pub(crate) mod login;
pub(crate) mod pending;
pub(crate) mod server;
pub(crate) mod text;

/// OAuth as configured: the issuer (the public base URL), the resource tokens are for (its
/// `/mcp`), how long tokens live, where clients and grants outlive a restart, and the password
/// login (`None`: off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OAuthConfig {
    pub(crate) issuer: String,
    pub(crate) resource: String,
    pub(crate) lifetimes: grants::Lifetimes,
    /// Where registered clients and grants outlive a restart (`MYMCP_STATE_DIR/oauth.json`;
    /// `None`: in memory only).
    pub(crate) state_file: Option<std::path::PathBuf>,
    pub(crate) pam: Option<login::PamConfig>,
}
