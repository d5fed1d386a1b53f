//! OAuth 2.1: the authorization server's state lives in the executor, which alone mints,
//! stores (as digests), checks and revokes codes and tokens; the frontend serves the HTTP and
//! the pages. The text helpers ([`text`]), the requests waiting for a person ([`pending`]),
//! the authorization codes ([`codes`]), the grants with their rotating tokens ([`grants`]),
//! and the decisions on each request and on `mymcpctl oauth` ([`server`]: register,
//! authorize, consent, approve, deny, exchange, refresh, revoke, list; kept across restarts).

pub(crate) mod codes;
pub(crate) mod grants;
pub(crate) mod pending;
pub(crate) mod server;
pub(crate) mod text;

/// OAuth as configured (`MYMCP_OAUTH_*`, `MYMCP_PUBLIC_BASE_URL`, `MYMCP_STATE_DIR`): the
/// issuer (the public base URL), the resource tokens are for (its `/mcp`), how long tokens
/// live, and where registered clients and grants outlive a restart (`None`: in memory only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OAuthConfig {
    pub(crate) issuer: String,
    pub(crate) resource: String,
    pub(crate) lifetimes: grants::Lifetimes,
    pub(crate) state_file: Option<std::path::PathBuf>,
}
