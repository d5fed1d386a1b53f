//! The mymcp audit log: hash-chained JSON Lines, sealed by a forward-secure ed25519 key.
//!
//! Files in the audit directory (`MYMCP_AUDIT_LOG_DIR`):
//!
//! ```text
//! audit.log, audit.log.1 … audit.log.N   the records, newest file first (size-rotated)
//! audit.seals                            the install key, then a copy of every seal line
//! ```
//!
//! Every line is one JSON object that ends with `"seq"` (1, 2, 3, … across rotations) and
//! `"prev"` (the SHA-256 of the previous line's bytes, hex; 64 zeros for the first line ever),
//! so removing, inserting, reordering or editing a line breaks the chain at that point.
//!
//! A *seal* is a line of `"type":"seal"` written every N records or T seconds, signed with the
//! ed25519 key of the current *epoch*. It names the public key of the next epoch, and the
//! secret key of the current epoch is erased once the next is stored. Whoever takes the host
//! later holds only the newest secret: they cannot re-sign any sealed history. The public key
//! of epoch 0 (the *install key*) is printed once when the log is created; `mymcpctl audit
//! verify --key` checks the whole chain of keys from it. Copies of the seals live in
//! `audit.seals`, which is never rotated, so the key chain survives the rotation of old logs.
//!
//! [`log::AuditLog`] writes; [`verify::verify`] checks; [`follow`] reads it as it grows (the
//! recorder's cursor and the events it folds into the host overview).

#![forbid(unsafe_code)]

pub mod follow;
pub mod keys;
pub mod log;
pub mod verify;

use sha2::{Digest, Sha256};

/// `prev` of the first line ever written.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// File name of the current log.
pub const LOG_FILE: &str = "audit.log";
/// File name of the seal copies.
pub const SEALS_FILE: &str = "audit.seals";

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Bytes of lowercase or uppercase hex; `None` if malformed.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The chain hash of one line (without its newline).
pub fn line_hash(line: &[u8]) -> String {
    hex(&Sha256::digest(line))
}

/// Appends `"seq"` and `"prev"` to a serialized JSON object.
pub fn chain_line(body: &str, seq: u64, prev: &str) -> String {
    let body = body.trim_end();
    let inner = body.strip_suffix('}').unwrap_or(body);
    let sep = if inner.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    format!("{inner}{sep}\"seq\":{seq},\"prev\":\"{prev}\"}}")
}

/// The signed part of a seal line: the line without its final `,"sig":"…"`.
pub fn signed_part(line: &str) -> Option<String> {
    let at = line.rfind(",\"sig\":\"")?;
    line.ends_with("\"}").then(|| format!("{}}}", &line[..at]))
}

/// Current time as RFC 3339 UTC with microseconds (`2026-11-21T17:15:33.164390Z`).
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_fields_come_last() {
        assert_eq!(
            chain_line(r#"{"a":1}"#, 7, "ab"),
            r#"{"a":1,"seq":7,"prev":"ab"}"#
        );
        assert_eq!(chain_line("{}", 1, "x"), r#"{"seq":1,"prev":"x"}"#);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abFF"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn signed_part_drops_only_the_signature() {
        assert_eq!(
            signed_part(r#"{"type":"seal","seq":3,"sig":"00ff"}"#).unwrap(),
            r#"{"type":"seal","seq":3}"#
        );
        assert_eq!(signed_part(r#"{"type":"seal"}"#), None);
    }

    #[test]
    fn timestamps_look_right() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 27, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}
