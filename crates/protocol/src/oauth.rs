//! OAuth 2.1 on the wire: what the frontend forwards from the authorization server's endpoints
//! ([`OAuthRequest`], inside [`crate::FrontendRequest::OAuth`]) and what `mymcpctl oauth` asks
//! on `control.sock` ([`OAuthControl`], inside [`crate::ControlRequest::OAuth`]).
//!
//! The executor decides everything here: it registers clients, opens authorization requests,
//! approves them (only from `control.sock`, or after a PAM login it runs itself), mints,
//! stores (as digests), checks, rotates and revokes codes and tokens. The frontend serves the
//! HTTP, the metadata and the consent page, fetches Client ID Metadata Documents (the executor
//! has no network), and forwards. What it presents back — a code, a refresh token, a token to
//! revoke, a client secret — crosses as a SHA-256 digest, like a bearer token.
//!
//! Every text field is bounded when it is decoded: a longer one, or one with control
//! characters, does not decode (a protocol violation), so nothing unbounded or able to forge a
//! log line reaches the executor. The frontend checks the same bounds first and answers 400.

use crate::{CallOrigin, Role, TokenDigest};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest `client_id`: a registered id, or the `https` URL of a metadata document.
pub const MAX_CLIENT_ID_LEN: usize = 512;
/// Longest redirect URI, resource or other URI.
pub const MAX_URI_LEN: usize = 2048;
/// Most redirect URIs of one client.
pub const MAX_REDIRECT_URIS: usize = 10;
/// Longest `client_name` (in bytes).
pub const MAX_CLIENT_NAME_LEN: usize = 200;
/// Longest `state`.
pub const MAX_STATE_LEN: usize = 1024;
/// PKCE: a verifier is 43 to 128 characters (RFC 7636 §4.1); an S256 challenge is 43.
pub const MIN_VERIFIER_LEN: usize = 43;
pub const MAX_VERIFIER_LEN: usize = 128;
pub const CHALLENGE_LEN: usize = 43;
/// Longest account name (as `useradd` allows).
pub const MAX_USER_LEN: usize = 32;
/// Longest password taken from the consent page.
pub const MAX_PASSWORD_LEN: usize = 512;
/// Longest approval code as typed (`ABCD-EFGH`, spaces and dashes allowed).
pub const MAX_APPROVAL_CODE_LEN: usize = 32;
/// Longest selector of `mymcpctl oauth revoke` (a client id or a grant id).
pub const MAX_SELECTOR_LEN: usize = MAX_CLIENT_ID_LEN;

/// The scopes this server knows. `mymcp:rw` includes `mymcp:ro`.
pub const SCOPE_RO: &str = "mymcp:ro";
pub const SCOPE_RW: &str = "mymcp:rw";

/// The scope string of a token of `role` (`ro` or `rw`).
pub fn scope_of(role: Role) -> &'static str {
    match role {
        Role::Rw => "mymcp:ro mymcp:rw",
        _ => SCOPE_RO,
    }
}

/// A random value the executor made: a pending request's cookie secret or CSRF token. Its
/// `Debug` shows nothing of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Secret(pub [u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The public id of a pending authorization request: in the consent page's URL.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PendingId(pub [u8; 16]);

impl fmt::Debug for PendingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PendingId({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// A pending request as the browser holds it: the id from the URL and the secret from the
/// cookie the frontend set when the request was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRef {
    pub id: PendingId,
    pub secret: Secret,
}

/// How a client authenticates at the token endpoint (RFC 7591 `token_endpoint_auth_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientAuthMethod {
    /// A public client: PKCE only.
    None,
    ClientSecretPost,
    ClientSecretBasic,
}

impl ClientAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::None => "none",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
        }
    }

    pub fn parse(s: &str) -> Option<ClientAuthMethod> {
        match s {
            "none" => Some(ClientAuthMethod::None),
            "client_secret_post" => Some(ClientAuthMethod::ClientSecretPost),
            "client_secret_basic" => Some(ClientAuthMethod::ClientSecretBasic),
            _ => None,
        }
    }
}

/// What a client says of itself: a registration (RFC 7591) or a Client ID Metadata Document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    #[serde(deserialize_with = "bounded::opt_text_name")]
    pub client_name: Option<String>,
    #[serde(deserialize_with = "bounded::uris")]
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: ClientAuthMethod,
}

/// The client at the token and revocation endpoints: its id and, for a confidential client,
/// the digest of the secret it sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAuth {
    #[serde(deserialize_with = "bounded::client_id")]
    pub client_id: String,
    pub secret: Option<TokenDigest>,
}

/// An authorization request (`GET /authorize`) as the frontend checked its shape:
/// `response_type=code`, `code_challenge_method=S256`, the scope parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeParams {
    #[serde(deserialize_with = "bounded::client_id")]
    pub client_id: String,
    #[serde(deserialize_with = "bounded::uri")]
    pub redirect_uri: String,
    #[serde(deserialize_with = "bounded::opt_state")]
    pub state: Option<String>,
    /// The S256 challenge (43 base64url characters; the executor checks).
    #[serde(deserialize_with = "bounded::challenge")]
    pub code_challenge: String,
    /// `ro` or `rw` (what `mymcp:ro` / `mymcp:rw` ask for).
    pub scope: Role,
    /// RFC 8707 `resource`, if given.
    #[serde(deserialize_with = "bounded::opt_uri")]
    pub resource: Option<String>,
}

/// A password typed on the consent page: `Debug` never shows it (a request logged with `{:?}`
/// keeps it out of the log).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(#[serde(deserialize_with = "bounded::password")] pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(…)")
    }
}

/// Requests of the authorization server, inside [`crate::FrontendRequest::OAuth`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OAuthRequest {
    /// `POST /register` (RFC 7591).
    Register {
        client: ClientMetadata,
        origin: CallOrigin,
    },
    /// `GET /authorize`: opens a pending request for a person to approve. `document` is the
    /// Client ID Metadata Document the frontend fetched when `client_id` is an `https` URL.
    Authorize {
        params: AuthorizeParams,
        document: Option<ClientMetadata>,
        origin: CallOrigin,
    },
    /// The consent page: where the pending request stands.
    Consent { request: PendingRef },
    /// The consent page's login form (PAM): approves as `user` if the password is right.
    Login {
        request: PendingRef,
        csrf: Secret,
        #[serde(deserialize_with = "bounded::user")]
        user: String,
        password: Password,
        origin: CallOrigin,
    },
    /// The consent page's "Deny".
    Deny { request: PendingRef, csrf: Secret },
    /// `POST /token`, `grant_type=authorization_code`.
    Exchange {
        code: TokenDigest,
        client: ClientAuth,
        #[serde(deserialize_with = "bounded::uri")]
        redirect_uri: String,
        #[serde(deserialize_with = "bounded::verifier")]
        verifier: String,
        #[serde(deserialize_with = "bounded::opt_uri")]
        resource: Option<String>,
        origin: CallOrigin,
    },
    /// `POST /token`, `grant_type=refresh_token`. `scope` may narrow, never widen.
    Refresh {
        token: TokenDigest,
        client: ClientAuth,
        scope: Option<Role>,
        #[serde(deserialize_with = "bounded::opt_uri")]
        resource: Option<String>,
        origin: CallOrigin,
    },
    /// `POST /revoke` (RFC 7009): an access or refresh token of this client.
    Revoke {
        token: TokenDigest,
        client: ClientAuth,
        origin: CallOrigin,
    },
}

/// A registration as answered to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub client_id: String,
    /// Shown once, for a confidential client.
    pub client_secret: Option<String>,
    pub issued_at: u64,
    pub client: ClientMetadata,
}

/// A pending request waiting for a person (the consent page's content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// What to approve with `mymcpctl oauth approve` (`ABCD-EFGH`).
    pub approval_code: String,
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uri: String,
    pub scope: Role,
    pub csrf: Secret,
    /// The login form is offered (`MYMCP_OAUTH_PAM`).
    pub pam: bool,
    pub expires_in: u64,
    /// Why the last login did not approve (wrong password, not allowed, too many tries).
    pub notice: Option<String>,
}

/// Tokens for the client (`POST /token`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub scope: Role,
}

/// An OAuth error code (RFC 6749 §4.1.2.1, §5.2; RFC 7591 §3.2.2; RFC 8707).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    InvalidScope,
    InvalidTarget,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
    InvalidRedirectUri,
    InvalidClientMetadata,
}

impl OAuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::InvalidTarget => "invalid_target",
            OAuthErrorCode::AccessDenied => "access_denied",
            OAuthErrorCode::ServerError => "server_error",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            OAuthErrorCode::InvalidClientMetadata => "invalid_client_metadata",
        }
    }
}

/// A refusal. `redirect` is set when the browser is to be sent back to the client with the
/// error (the redirect URI was checked); else the error is shown on a page or as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
    pub redirect: Option<String>,
}

/// The executor's answer to an [`OAuthRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OAuthOutcome {
    Registered(Registered),
    /// `Authorize` opened a request: send the browser to its consent page, with the secret
    /// in a cookie.
    Opened(PendingRef),
    /// The request waits for a person.
    Waiting(Waiting),
    /// The request was approved or denied: send the browser here (the client's redirect URI
    /// with `code` or `error`, `state` and `iss`).
    Redirect(String),
    Tokens(TokenSet),
    /// `Revoke` done (or nothing to revoke: RFC 7009 answers 200 either way).
    Revoked,
    Error(OAuthError),
}

/// `mymcpctl oauth …` requests, inside [`crate::ControlRequest::OAuth`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OAuthControl {
    /// Requests waiting for approval.
    Pending,
    /// Approve the request showing `code`, acting as `user`, at most `role`.
    Approve {
        #[serde(deserialize_with = "bounded::approval_code")]
        code: String,
        #[serde(deserialize_with = "bounded::user")]
        user: String,
        role: Role,
    },
    /// Refuse the request showing `code`.
    Deny {
        #[serde(deserialize_with = "bounded::approval_code")]
        code: String,
    },
    Clients,
    Grants,
    /// Revoke a grant (by id), or a client with every grant it holds (by client id).
    Revoke {
        #[serde(deserialize_with = "bounded::selector")]
        selector: String,
    },
}

/// A pending request as `mymcpctl oauth pending` shows it. Never the approval code: only the
/// person at the consent page has it, so an approval always joins that page to the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInfo {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uri: String,
    pub scope: Role,
    pub expires_in: u64,
}

/// A client as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClientInfo {
    pub client_id: String,
    pub client_name: Option<String>,
    /// `registered` (RFC 7591) or `metadata document`.
    pub kind: String,
    pub redirect_uris: Vec<String>,
    pub auth_method: ClientAuthMethod,
    pub created_at: String,
    pub grants: u64,
}

/// A grant as listed: one approval and the tokens it issued since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    pub id: String,
    pub client_id: String,
    pub client_name: Option<String>,
    pub user: String,
    pub role: Role,
    pub resource: String,
    pub created_at: String,
    pub last_refreshed: Option<String>,
    pub expires_at: String,
}

/// The executor's answer to an [`OAuthControl`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OAuthControlOutcome {
    Pending(Vec<PendingInfo>),
    /// Approved: the browser continues by itself.
    Approved {
        client_id: String,
        client_name: Option<String>,
        redirect_uri: String,
        user: String,
        role: Role,
    },
    Denied,
    Clients(Vec<OAuthClientInfo>),
    Grants(Vec<GrantInfo>),
    Revoked {
        clients: u64,
        grants: u64,
    },
}

/// Decoding of bounded text: a longer string, or one with control characters, is refused
/// before anything is allocated for it.
mod bounded {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use std::fmt;

    struct Text {
        max: usize,
        /// Any character but controls (else: visible ASCII only).
        unicode: bool,
    }

    impl Visitor<'_> for Text {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "at most {} bytes of text without control characters",
                self.max
            )
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
            let ok = v.len() <= self.max
                && if self.unicode {
                    !v.chars().any(char::is_control)
                } else {
                    v.bytes().all(|b| b.is_ascii_graphic())
                };
            if !ok {
                return Err(E::custom(format_args!(
                    "not {} bytes of allowed characters or fewer",
                    self.max
                )));
            }
            Ok(v.to_owned())
        }
    }

    fn text<'de, D: Deserializer<'de>>(
        d: D,
        max: usize,
        unicode: bool,
    ) -> Result<String, D::Error> {
        d.deserialize_str(Text { max, unicode })
    }

    struct Optional {
        max: usize,
        unicode: bool,
    }

    impl<'de> Visitor<'de> for Optional {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an optional string of at most {} bytes", self.max)
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            text(d, self.max, self.unicode).map(Some)
        }
    }

    fn optional<'de, D: Deserializer<'de>>(
        d: D,
        max: usize,
        unicode: bool,
    ) -> Result<Option<String>, D::Error> {
        d.deserialize_option(Optional { max, unicode })
    }

    pub(super) fn client_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(d, super::MAX_CLIENT_ID_LEN, false)
    }
    pub(super) fn uri<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(d, super::MAX_URI_LEN, false)
    }
    pub(super) fn opt_uri<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        optional(d, super::MAX_URI_LEN, false)
    }
    pub(super) fn opt_state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        optional(d, super::MAX_STATE_LEN, false)
    }
    pub(super) fn opt_text_name<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<String>, D::Error> {
        optional(d, super::MAX_CLIENT_NAME_LEN, true)
    }
    pub(super) fn challenge<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(d, super::CHALLENGE_LEN, false)
    }
    pub(super) fn verifier<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(d, super::MAX_VERIFIER_LEN, false)
    }
    pub(super) fn user<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(d, super::MAX_USER_LEN, false)
    }
    pub(super) fn password<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        // A password may hold any character but a control (PAM takes a C string).
        text(d, super::MAX_PASSWORD_LEN, true)
    }
    pub(super) fn approval_code<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        // Spaces are allowed as typed; no other control.
        struct Code;
        impl Visitor<'_> for Code {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an approval code")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
                if v.len() > super::MAX_APPROVAL_CODE_LEN
                    || !v.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                {
                    return Err(E::custom("not an approval code"));
                }
                Ok(v.to_owned())
            }
        }
        d.deserialize_str(Code)
    }
    pub(super) fn selector<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(d, super::MAX_SELECTOR_LEN, false)
    }

    pub(super) fn uris<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        struct Uris;
        impl<'de> Visitor<'de> for Uris {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "at most {} URIs", super::MAX_REDIRECT_URIS)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(Uri(u)) = seq.next_element()? {
                    if out.len() == super::MAX_REDIRECT_URIS {
                        return Err(A::Error::custom("too many redirect URIs"));
                    }
                    out.push(u);
                }
                Ok(out)
            }
        }
        struct Uri(String);
        impl<'de> serde::Deserialize<'de> for Uri {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                uri(d).map(Uri)
            }
        }
        d.deserialize_seq(Uris)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{frame, ClientFrame, FrontendRequest};

    fn decodes(request: OAuthRequest) -> bool {
        let bytes = frame::encode(&ClientFrame::Request {
            id: 1,
            body: FrontendRequest::OAuth(request),
        })
        .unwrap();
        frame::decode::<ClientFrame<FrontendRequest>>(&bytes[frame::HEADER_LEN..]).is_ok()
    }

    fn origin() -> CallOrigin {
        CallOrigin {
            peer: "192.0.2.1".into(),
            request_id: "r".into(),
        }
    }

    fn register(name: Option<&str>, uris: Vec<String>) -> OAuthRequest {
        OAuthRequest::Register {
            client: ClientMetadata {
                client_name: name.map(str::to_owned),
                redirect_uris: uris,
                token_endpoint_auth_method: ClientAuthMethod::None,
            },
            origin: origin(),
        }
    }

    #[test]
    fn fields_past_their_bounds_or_with_controls_do_not_decode() {
        let uri = |n: usize| format!("https://a/{}", "x".repeat(n));
        assert!(decodes(register(Some("Claude é"), vec![uri(10)])));
        assert!(!decodes(register(Some("a\nb"), vec![uri(10)])));
        assert!(!decodes(register(
            Some(&"n".repeat(MAX_CLIENT_NAME_LEN + 1)),
            vec![]
        )));
        assert!(!decodes(register(None, vec![uri(MAX_URI_LEN)])));
        assert!(!decodes(register(
            None,
            vec![uri(1); MAX_REDIRECT_URIS + 1]
        )));
        assert!(decodes(register(None, vec![uri(1); MAX_REDIRECT_URIS])));
        assert!(!decodes(register(None, vec!["https://a/ b".into()])));
        let login = |user: &str, password: &str| OAuthRequest::Login {
            request: PendingRef {
                id: PendingId([1; 16]),
                secret: Secret([2; 32]),
            },
            csrf: Secret([3; 32]),
            user: user.into(),
            password: Password(password.into()),
            origin: origin(),
        };
        assert!(!format!("{:?}", login("alice", "hunter2")).contains("hunter2"));
        assert!(decodes(login("alice", "pass word é")));
        assert!(!decodes(login("alice\n", "p")));
        assert!(!decodes(login(&"a".repeat(MAX_USER_LEN + 1), "p")));
        assert!(!decodes(login("alice", "p\u{0}")));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = format!("{:?}", Secret([0xab; 32]));
        assert!(!s.contains("ab"), "{s}");
    }

    #[test]
    fn scopes_name_the_roles() {
        assert_eq!(scope_of(Role::Ro), "mymcp:ro");
        assert_eq!(scope_of(Role::Rw), "mymcp:ro mymcp:rw");
    }
}
