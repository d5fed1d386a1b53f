//! The bearer token of a request, and the digest the executor knows tokens by: the frontend
//! sends only the digest ([`token_digest`]), never the token.

use axum::http::header::HeaderValue;
use mymcp_protocol::TokenDigest;
use sha2::{Digest, Sha256};

/// Why a request carries no usable bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BearerError {
    /// No `Authorization` header, or another scheme.
    Missing,
    /// `Bearer ` followed by nothing.
    Empty,
}

/// Extracts the token from an `Authorization` header value. The scheme is matched without
/// regard to case; the token is everything after the single space, exactly as sent.
pub fn bearer_token(value: Option<&HeaderValue>) -> Result<&[u8], BearerError> {
    let bytes = value.ok_or(BearerError::Missing)?.as_bytes();
    match bytes.split_at_checked(7) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            if token.is_empty() {
                Err(BearerError::Empty)
            } else {
                Ok(token)
            }
        }
        _ => Err(BearerError::Missing),
    }
}

/// The digest the executor knows tokens by.
pub fn token_digest(token: &[u8]) -> TokenDigest {
    TokenDigest(Sha256::digest(token).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_exact() {
        assert_eq!(bearer_token(Some(&hv("Bearer abc"))), Ok(&b"abc"[..]));
        assert_eq!(bearer_token(Some(&hv("bearer abc"))), Ok(&b"abc"[..]));
        assert_eq!(bearer_token(Some(&hv("BEARER  abc"))), Ok(&b" abc"[..]));
        assert_eq!(bearer_token(Some(&hv("Bearer "))), Err(BearerError::Empty));
        assert_eq!(bearer_token(Some(&hv("Bearer"))), Err(BearerError::Missing));
        assert_eq!(
            bearer_token(Some(&hv("Basic dXNlcjpwdw=="))),
            Err(BearerError::Missing)
        );
        assert_eq!(
            bearer_token(Some(&hv("Bearerabc"))),
            Err(BearerError::Missing)
        );
        assert_eq!(bearer_token(None), Err(BearerError::Missing));
    }

    #[test]
    fn token_digest_is_sha256_of_the_token() {
        // sha256("abc")
        let d = token_digest(b"abc");
        assert_eq!(d.0[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
