//! The request id of an HTTP request: the client's `X-Request-ID` when it is sane, else a
//! fresh one; logged with the request and passed to the executor with each call.

use axum::http::header::HeaderValue;

/// Longest inbound `X-Request-ID` that is echoed rather than replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id of an HTTP request (see [`choose_request_id`]), available to handlers as an
/// extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The client's `X-Request-ID` if it is 1–128 visible ASCII characters, else a fresh one.
pub fn choose_request_id(inbound: Option<&HeaderValue>) -> String {
    match inbound.map(HeaderValue::as_bytes) {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id.iter().all(|b| b.is_ascii_graphic()) =>
        {
            String::from_utf8_lossy(id).into_owned()
        }
        _ => fresh_request_id(),
    }
}

/// 32 random hex digits.
pub fn fresh_request_id() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = mymcp_sys::fill_random(&mut bytes) {
        // Request ids correlate logs; they protect nothing. Degrade rather than fail.
        tracing::warn!("getrandom failed ({e}); using a time-based request id");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn request_ids_are_echoed_only_when_sane() {
        assert_eq!(choose_request_id(Some(&hv("abc-123"))), "abc-123");
        let long = "a".repeat(129);
        for bad in [long.as_str(), "has space", ""] {
            let id = choose_request_id(Some(&hv(bad)));
            assert_eq!(id.len(), 32, "{bad:?}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(choose_request_id(Some(&hv(&"a".repeat(128)))).len(), 128);
        assert_ne!(fresh_request_id(), fresh_request_id());
    }
}
