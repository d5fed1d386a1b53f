//! The small text work of OAuth, without a URL or base64 crate in the root daemon: hex,
//! base64url, query encoding, redirect URI rules, approval codes, PKCE.

use sha2::{Digest, Sha256};

/// Lowercase hex (the audit log's, one definition for the executor).
pub(crate) use mymcp_audit::hex;

/// The 32 bytes of 64 hex digits.
pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    mymcp_audit::unhex(s)?.try_into().ok()
}

/// Base64url without padding (RFC 4648 §5), as PKCE's S256 uses it.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Whether `verifier` is a PKCE code verifier (RFC 7636 §4.1) whose S256 challenge is
/// `challenge`. Compared in constant time.
pub(crate) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let shaped = (mymcp_protocol::oauth::MIN_VERIFIER_LEN
        ..=mymcp_protocol::oauth::MAX_VERIFIER_LEN)
        .contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = base64url(&Sha256::digest(verifier.as_bytes()));
    shaped & constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

/// Whether `challenge` is shaped like an S256 challenge: 43 base64url characters.
pub(crate) fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == mymcp_protocol::oauth::CHALLENGE_LEN
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `s` encoded for a query component (RFC 3986 unreserved characters kept).
pub(crate) fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `uri` with `params` added to its query.
pub(crate) fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&query_encode(v));
        sep = '&';
    }
    out
}

/// The scheme and the host of an absolute URI (`https://h:1/p` → (`https`, `h`)), lowercase.
pub(crate) fn scheme_and_host(uri: &str) -> Option<(String, String)> {
    let (scheme, rest) = uri.split_once(':')?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let host = match rest.strip_prefix("//") {
        Some(after) => {
            let authority = after.split(['/', '?', '#']).next().unwrap_or("");
            let hostport = authority.rsplit('@').next().unwrap_or("");
            let host = if let Some(v6) = hostport.strip_prefix('[') {
                v6.split(']').next().unwrap_or("")
            } else {
                hostport.split(':').next().unwrap_or("")
            };
            host.to_ascii_lowercase()
        }
        None => String::new(),
    };
    Some((scheme, host))
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

/// Why `uri` cannot be a redirect URI, if it cannot: it must be absolute, without a fragment
/// or userinfo, and `https`, `http` on a loopback host (RFC 8252 §7.3), or a private-use
/// scheme of a native app (RFC 8252 §7.1) — never one a browser would run or show
/// (`javascript:`, `data:`, `file:`, …).
pub(crate) fn redirect_uri_problem(uri: &str) -> Option<&'static str> {
    if uri.contains('#') {
        return Some("a redirect URI has no fragment");
    }
    let Some((scheme, host)) = scheme_and_host(uri) else {
        return Some("a redirect URI is an absolute URI");
    };
    if uri
        .split_once("//")
        .is_some_and(|(_, rest)| rest.split(['/', '?']).next().unwrap_or("").contains('@'))
    {
        return Some("a redirect URI has no user information");
    }
    match scheme.as_str() {
        "https" if !host.is_empty() => None,
        "https" => Some("an https redirect URI names a host"),
        "http" if is_loopback_host(&host) => None,
        "http" => Some("an http redirect URI must be on a loopback host (use https)"),
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" | "ftp" | "ws" | "wss"
        | "filesystem" | "view-source" => Some("this scheme cannot be a redirect URI"),
        _ => None,
    }
}

/// Whether `client_id` is the URL of a Client ID Metadata Document.
pub(crate) fn is_document_client_id(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// The alphabet of approval codes: no 0/O, 1/I, so that a code read from a phone is typed
/// right. 32 symbols: 5 random bits each, without bias.
const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// An approval code from 5 random bytes: 8 characters of 32 (40 bits), shown `ABCD-EFGH`.
pub(crate) fn approval_code(random: [u8; 5]) -> String {
    let n = random.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
    let chars: String = (0..8)
        .map(|i| CODE_ALPHABET[(n >> (35 - 5 * i) & 31) as usize] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// An approval code as typed, in the form it is stored (`abcd efgh` → `ABCD-EFGH`), or
/// `None` if it cannot be one.
pub(crate) fn normalize_approval_code(typed: &str) -> Option<String> {
    let chars: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (chars.len() == 8 && chars.bytes().all(|b| CODE_ALPHABET.contains(&b)))
        .then(|| format!("{}-{}", &chars[..4], &chars[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_and_pkce_match_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(base64url(&Sha256::digest(verifier.as_bytes())), challenge);
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        assert!(!pkce_matches(
            "short",
            &base64url(&Sha256::digest(b"short"))
        ));
        assert!(is_s256_challenge(challenge));
        assert!(!is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c="
        ));
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn redirect_uris_that_are_allowed_and_refused() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "http://localhost:3334/oauth/callback",
            "http://127.0.0.1:33418/",
            "http://[::1]:8080/cb",
            "vscode://vscode.github-authentication/did-authenticate",
            "com.example.app:/callback",
        ] {
            assert_eq!(redirect_uri_problem(ok), None, "{ok}");
        }
        for bad in [
            "http://example.com/cb",
            "https:///cb",
            "https://example.com/cb#frag",
            "javascript:alert(1)",
            "data:text/html,hi",
            "JavaScript:alert(1)",
            "file:///etc/passwd",
            "/relative",
            "https://user@example.com/cb",
            "http://localhost.evil.com/cb",
        ] {
            assert!(redirect_uri_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn queries_are_encoded_and_appended() {
        assert_eq!(
            with_query("https://c/cb", &[("code", "a b&c"), ("state", "x=y")]),
            "https://c/cb?code=a%20b%26c&state=x%3Dy"
        );
        assert_eq!(
            with_query("https://c/cb?x=1", &[("a", "b")]),
            "https://c/cb?x=1&a=b"
        );
    }

    #[test]
    fn approval_codes_are_typed_back_in_any_case_and_spacing() {
        let code = approval_code([0x12, 0x34, 0x56, 0x78, 0x9a]);
        assert_eq!(code.len(), 9);
        assert_eq!(
            normalize_approval_code(&code).as_deref(),
            Some(code.as_str())
        );
        let typed = code.to_lowercase().replace('-', " ");
        assert_eq!(
            normalize_approval_code(&typed).as_deref(),
            Some(code.as_str())
        );
        assert_eq!(normalize_approval_code("ABCD-EFG"), None);
        assert_eq!(normalize_approval_code("ABCD-EFG0"), None);
        for seed in 0u8..=255 {
            let c = approval_code([seed, seed.wrapping_mul(7), 3, seed, 9]);
            assert!(normalize_approval_code(&c).is_some(), "{c}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let b = [0xa5u8; 32];
        assert_eq!(unhex32(&hex(&b)), Some(b));
        assert_eq!(unhex32("zz"), None);
    }
}
