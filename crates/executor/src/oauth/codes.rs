//! Authorization codes (RFC 6749 §4.1, OAuth 2.1 §4.1): what an approval hands the client's
//! redirect, and what `POST /token` exchanges for the first tokens of a grant.
//!
//! A code is a random 32-byte value; only its SHA-256 digest is kept (the frontend sends the
//! digest of what the client presents, as for bearer tokens). A code lives [`CODE_TTL`], is
//! bound to the client, the exact redirect URI, the PKCE S256 challenge and the resource of
//! its request, and is **spent by the first exchange attempt, right or wrong**: a second
//! attempt with the same code is a replay (RFC 6749 §10.5), answered `invalid_grant` and
//! reported with the grant it issued, so that the caller revokes that grant's tokens (§4.1.2:
//! "SHOULD revoke … all tokens previously issued based on that authorization code").
//! At most [`MAX_CODES`] wait at once; beyond, new ones are refused, nothing is evicted.

use super::text::{constant_time_eq, pkce_matches};
use mymcp_protocol::oauth::OAuthErrorCode;
use mymcp_protocol::{Role, TokenDigest};
use mymcp_tokens::digest as token_digest;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a code can be exchanged (RFC 6749 recommends at most 10 minutes; clients exchange
/// within seconds).
pub(crate) const CODE_TTL: Duration = Duration::from_secs(60);
/// Codes waiting for their exchange, at most.
pub(crate) const MAX_CODES: usize = 1024;
/// How long a spent code is remembered to detect its replay.
const SPENT_TTL: Duration = Duration::from_secs(600);

/// What an approval granted: what the code stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Approved {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    /// The S256 challenge of the authorization request (43 base64url characters).
    pub(crate) challenge: String,
    /// The resource (RFC 8707) the tokens are for: this server's canonical URL.
    pub(crate) resource: String,
    /// The account the grant acts as, and its role (the scope).
    pub(crate) user: String,
    pub(crate) role: Role,
}

/// What a client presents at `POST /token` with a code.
#[derive(Clone, Debug)]
pub(crate) struct Exchange<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: &'a str,
    pub(crate) verifier: &'a str,
    /// `None` when the client sent no `resource`: the code's own applies.
    pub(crate) resource: Option<&'a str>,
}

/// Why an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `invalid_grant` (unknown, expired, bound to another client, redirect URI, verifier
    /// or resource) or `invalid_target`; the code is spent either way.
    Error(OAuthErrorCode, &'static str),
    /// The code had been exchanged (or tried) already: `invalid_grant`, and the grant it
    /// issued, if any, must be revoked.
    Replayed { grant: Option<u64> },
}

#[derive(Debug)]
struct Waiting {
    approved: Approved,
    expires: Instant,
}

#[derive(Debug)]
struct Spent {
    /// The grant the first exchange made (`None` if that attempt failed).
    grant: Option<u64>,
    forget_at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: HashMap<TokenDigest, Waiting>,
    spent: HashMap<TokenDigest, Spent>,
}

/// The executor's table of authorization codes.
#[derive(Debug, Default)]
pub(crate) struct Codes {
    inner: Mutex<Inner>,
}

impl Codes {
    /// A new code for `approved`, valid from `now` for [`CODE_TTL`]: the value for the
    /// client's redirect. `None` when [`MAX_CODES`] wait already (the caller answers
    /// `temporarily_unavailable`).
    pub(crate) fn issue(
        &self,
        approved: Approved,
        random: [u8; 32],
        now: Instant,
    ) -> Option<String> {
        let value = super::text::hex(&random);
        let digest = token_digest(&value);
        let mut inner = self.lock();
        inner.expire(now);
        if inner.waiting.len() >= MAX_CODES || inner.spent.contains_key(&digest) {
            return None;
        }
        inner.waiting.insert(
            digest,
            Waiting {
                approved,
                expires: now + CODE_TTL,
            },
        );
        Some(value)
    }

    /// Spends the code of `digest` and checks `exchange` against what it was issued for. On
    /// success the caller makes the grant and reports it with [`Codes::issued`].
    pub(crate) fn redeem(
        &self,
        digest: &TokenDigest,
        exchange: &Exchange<'_>,
        now: Instant,
    ) -> Result<Approved, Refused> {
        let mut inner = self.lock();
        inner.expire(now);
        if let Some(spent) = inner.spent.get(digest) {
            return Err(Refused::Replayed { grant: spent.grant });
        }
        let Some(waiting) = inner.waiting.remove(digest) else {
            return Err(Refused::Error(
                OAuthErrorCode::InvalidGrant,
                "unknown or expired authorization code",
            ));
        };
        inner.spent.insert(
            *digest,
            Spent {
                grant: None,
                forget_at: now + SPENT_TTL,
            },
        );
        drop(inner);
        let a = waiting.approved;
        if now >= waiting.expires {
            return Err(Refused::Error(
                OAuthErrorCode::InvalidGrant,
                "unknown or expired authorization code",
            ));
        }
        if !constant_time_eq(a.client_id.as_bytes(), exchange.client_id.as_bytes()) {
            return Err(Refused::Error(
                OAuthErrorCode::InvalidGrant,
                "the code was issued to another client",
            ));
        }
        // Exact match (OAuth 2.1 §4.1.3): no prefix, no normalisation.
        if a.redirect_uri != exchange.redirect_uri {
            return Err(Refused::Error(
                OAuthErrorCode::InvalidGrant,
                "redirect_uri differs from the authorization request's",
            ));
        }
        if !pkce_matches(exchange.verifier, &a.challenge) {
            return Err(Refused::Error(
                OAuthErrorCode::InvalidGrant,
                "code_verifier does not match the code_challenge",
            ));
        }
        if exchange.resource.is_some_and(|r| r != a.resource) {
            return Err(Refused::Error(
                OAuthErrorCode::InvalidTarget,
                "resource differs from the authorization request's",
            ));
        }
        Ok(a)
    }

    /// Records that the exchange of `digest` made `grant`, so that a replay of the code
    /// names it.
    pub(crate) fn issued(&self, digest: &TokenDigest, grant: u64) {
        if let Some(spent) = self.lock().spent.get_mut(digest) {
            spent.grant = Some(grant);
        }
    }

    /// Codes waiting now (for `status` and the tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        self.waiting.retain(|_, w| now < w.expires);
        self.spent.retain(|_, s| now < s.forget_at);
    }
}

#[cfg(test)]
mod tests {
    use super::super::text::base64url;
    use super::*;
    use sha2::{Digest, Sha256};

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn approved() -> Approved {
        Approved {
            client_id: "https://client.example/metadata.json".into(),
            redirect_uri: "https://client.example/callback".into(),
            challenge: base64url(&Sha256::digest(VERIFIER.as_bytes())),
            resource: "https://host.example/mcp".into(),
            user: "alice".into(),
            role: Role::Ro,
        }
    }

    fn exchange() -> Exchange<'static> {
        Exchange {
            client_id: "https://client.example/metadata.json",
            redirect_uri: "https://client.example/callback",
            verifier: VERIFIER,
            resource: Some("https://host.example/mcp"),
        }
    }

    fn issue(codes: &Codes, n: u8, now: Instant) -> TokenDigest {
        let value = codes.issue(approved(), [n; 32], now).unwrap();
        token_digest(&value)
    }

    #[test]
    fn the_rfc_7636_example_verifier_matches_its_challenge() {
        assert_eq!(
            approved().challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_code_is_exchanged_once_and_its_replay_names_the_grant_to_revoke() {
        let codes = Codes::default();
        let now = Instant::now();
        let code = issue(&codes, 1, now);
        assert_eq!(codes.redeem(&code, &exchange(), now), Ok(approved()));
        codes.issued(&code, 7);
        assert_eq!(
            codes.redeem(&code, &exchange(), now),
            Err(Refused::Replayed { grant: Some(7) })
        );
        assert_eq!(codes.waiting(), 0);
    }

    #[test]
    fn a_wrong_attempt_spends_the_code() {
        // Guessing the verifier, the redirect or the client costs the code: the right
        // values afterwards are a replay, not a success.
        for wrong in [
            Exchange {
                verifier: "x".repeat(43).leak(),
                ..exchange()
            },
            Exchange {
                redirect_uri: "https://client.example/callback/",
                ..exchange()
            },
            Exchange {
                client_id: "https://evil.example/metadata.json",
                ..exchange()
            },
        ] {
            let codes = Codes::default();
            let now = Instant::now();
            let code = issue(&codes, 2, now);
            assert!(matches!(
                codes.redeem(&code, &wrong, now),
                Err(Refused::Error(OAuthErrorCode::InvalidGrant, _))
            ));
            assert_eq!(
                codes.redeem(&code, &exchange(), now),
                Err(Refused::Replayed { grant: None })
            );
        }
    }

    #[test]
    fn a_code_for_another_resource_or_past_its_life_is_refused() {
        let codes = Codes::default();
        let now = Instant::now();
        let code = issue(&codes, 3, now);
        let other = Exchange {
            resource: Some("https://other.example/mcp"),
            ..exchange()
        };
        assert!(matches!(
            codes.redeem(&code, &other, now),
            Err(Refused::Error(OAuthErrorCode::InvalidTarget, _))
        ));
        let late = issue(&codes, 4, now);
        assert!(matches!(
            codes.redeem(&late, &exchange(), now + CODE_TTL),
            Err(Refused::Error(OAuthErrorCode::InvalidGrant, _))
        ));
        // Without a resource the code's own applies.
        let plain = issue(&codes, 5, now);
        let without = Exchange {
            resource: None,
            ..exchange()
        };
        assert_eq!(codes.redeem(&plain, &without, now), Ok(approved()));
    }

    #[test]
    fn codes_that_wait_are_bounded_and_expire() {
        let codes = Codes::default();
        let now = Instant::now();
        for i in 0..MAX_CODES {
            let mut r = [0u8; 32];
            r[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert!(codes.issue(approved(), r, now).is_some(), "{i}");
        }
        assert_eq!(codes.issue(approved(), [0xff; 32], now), None);
        // Once they expire there is room again.
        assert!(codes
            .issue(approved(), [0xfe; 32], now + CODE_TTL)
            .is_some());
        assert_eq!(codes.waiting(), 1);
    }
}
