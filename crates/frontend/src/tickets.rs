//! Transfer tickets: the executor's grant id wrapped in an HMAC so that forged, altered and
//! expired tickets are refused here, without an executor round trip.
//!
//! A ticket is 45 bytes, URL-safe base64 without padding (60 characters, no spare bits, so
//! every character matters):
//!
//! ```text
//! +-----------+------------------+----------------------+---------------------------------+
//! | kind (1)  | grant id (16)    | expires_at (8, BE)   | HMAC-SHA256(key, first 25) [20] |
//! +-----------+------------------+----------------------+---------------------------------+
//! ```
//!
//! `kind` is the direction (1 upload, 2 download), so a `GET` on an upload ticket is answered
//! 405 at the edge too. The grant id carries the 128 random bits; the key (256 bits) is drawn
//! from the kernel when the frontend starts and never leaves its memory, so a restart
//! invalidates outstanding tickets. The HMAC is a first filter: the executor still looks the
//! grant up, checks its expiry and spends it at most once.

use hmac::{Hmac, Mac};
use mymcp_protocol::{Direction, GrantId, TransferGrant};
use sha2::Sha256;
use std::fmt;

/// Length of a ticket in characters.
pub const TICKET_LEN: usize = 60;
const RAW_LEN: usize = 45;
const SIGNED_LEN: usize = 25;
const TAG_LEN: usize = RAW_LEN - SIGNED_LEN;

/// Signs and checks tickets, and builds their URLs.
pub struct Tickets {
    key: [u8; 32],
    /// `MYMCP_PUBLIC_BASE_URL` without trailing slashes; empty for relative URLs.
    base_url: String,
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tickets")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// A ticket whose signature checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub direction: Direction,
    pub grant: GrantId,
    pub expires_at: u64,
}

/// Why a ticket is refused at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketError {
    /// Not a ticket we signed (malformed, altered, forged, or from before a restart): 404.
    Unknown,
    /// Signed by us, but past its expiry: 410.
    Expired,
}

impl Tickets {
    /// A fresh random key. `base_url` is `MYMCP_PUBLIC_BASE_URL` (trailing `/` dropped).
    pub fn new(base_url: &str) -> std::io::Result<Tickets> {
        let mut key = [0u8; 32];
        mymcp_sys::fill_random(&mut key)?;
        Ok(Tickets::with_key(key, base_url))
    }

    /// With a given key (tests).
    pub fn with_key(key: [u8; 32], base_url: &str) -> Tickets {
        Tickets {
            key,
            base_url: base_url.trim().trim_end_matches('/').to_owned(),
        }
    }

    fn mac(&self, signed: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(signed);
        mac
    }

    /// The ticket for a grant.
    pub fn mint(&self, grant: &TransferGrant) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[0] = match grant.direction {
            Direction::Upload => 1,
            Direction::Download => 2,
        };
        raw[1..17].copy_from_slice(&grant.grant.0);
        raw[17..25].copy_from_slice(&grant.expires_at_unix.to_be_bytes());
        let tag = self.mac(&raw[..SIGNED_LEN]).finalize().into_bytes();
        raw[SIGNED_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        encode(&raw)
    }

    /// Checks a ticket's form, signature (in constant time) and expiry against `now_unix`.
    pub fn verify(&self, ticket: &str, now_unix: u64) -> Result<Ticket, TicketError> {
        let raw = decode(ticket).ok_or(TicketError::Unknown)?;
        self.mac(&raw[..SIGNED_LEN])
            .verify_truncated_left(&raw[SIGNED_LEN..])
            .map_err(|_| TicketError::Unknown)?;
        let direction = match raw[0] {
            1 => Direction::Upload,
            2 => Direction::Download,
            _ => return Err(TicketError::Unknown),
        };
        let mut grant = [0u8; 16];
        grant.copy_from_slice(&raw[1..17]);
        let expires_at = u64::from_be_bytes(raw[17..25].try_into().expect("8 bytes"));
        if now_unix >= expires_at {
            return Err(TicketError::Expired);
        }
        Ok(Ticket {
            direction,
            grant: GrantId(grant),
            expires_at,
        })
    }

    /// `<base>/files/raw/<ticket>`, or the relative `/files/raw/<ticket>` without a base URL
    /// (as the reference does).
    pub fn url(&self, ticket: &str) -> String {
        format!("{}/files/raw/{ticket}", self.base_url)
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// URL-safe base64 of exactly [`RAW_LEN`] bytes (a multiple of 3: no padding, no spare bits).
fn encode(raw: &[u8; RAW_LEN]) -> String {
    let mut out = String::with_capacity(TICKET_LEN);
    for chunk in raw.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[(n >> shift) as usize & 63] as char);
        }
    }
    out
}

/// The inverse of [`encode`]; `None` for any other length or character.
fn decode(s: &str) -> Option<[u8; RAW_LEN]> {
    let s = s.as_bytes();
    if s.len() != TICKET_LEN {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut raw = [0u8; RAW_LEN];
    for (i, quad) in s.chunks(4).enumerate() {
        let mut n = 0u32;
        for &c in quad {
            n = (n << 6) | value(c)?;
        }
        raw[i * 3] = (n >> 16) as u8;
        raw[i * 3 + 1] = (n >> 8) as u8;
        raw[i * 3 + 2] = n as u8;
    }
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(direction: Direction, expires_at_unix: u64) -> TransferGrant {
        TransferGrant {
            grant: GrantId([7; 16]),
            direction,
            expires_at_unix,
            expires_in: 300,
            expires_at: String::new(),
            path: "/tmp/x".into(),
            bytes: 1,
            overwrite: true,
            sha256: None,
        }
    }

    #[test]
    fn tickets_round_trip_and_are_url_safe() {
        let t = Tickets::with_key([1; 32], "https://h.example/base/");
        let s = t.mint(&grant(Direction::Download, 1000));
        assert_eq!(s.len(), TICKET_LEN);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let v = t.verify(&s, 999).unwrap();
        assert_eq!(v.direction, Direction::Download);
        assert_eq!(v.grant, GrantId([7; 16]));
        assert_eq!(t.url(&s), format!("https://h.example/base/files/raw/{s}"));
        assert_eq!(
            Tickets::with_key([1; 32], "").url("T"),
            "/files/raw/T",
            "relative without a base URL"
        );
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let t = Tickets::with_key([1; 32], "");
        let s = t.mint(&grant(Direction::Upload, 1000));
        for i in 0..s.len() {
            for c in ALPHABET.iter().map(|&c| c as char) {
                if s.as_bytes()[i] as char == c {
                    continue;
                }
                let mut forged = s.clone().into_bytes();
                forged[i] = c as u8;
                let forged = String::from_utf8(forged).unwrap();
                assert_eq!(t.verify(&forged, 0), Err(TicketError::Unknown), "{i} → {c}");
            }
        }
        assert_eq!(t.verify(&s[..59], 0), Err(TicketError::Unknown));
        assert_eq!(t.verify(&format!("{s}A"), 0), Err(TicketError::Unknown));
        assert_eq!(t.verify(&s.replace('A', "+"), 0).is_ok(), !s.contains('A'));
    }

    #[test]
    fn another_key_or_a_later_time_refuses() {
        let s = Tickets::with_key([1; 32], "").mint(&grant(Direction::Upload, 1000));
        let other = Tickets::with_key([2; 32], "");
        assert_eq!(other.verify(&s, 0), Err(TicketError::Unknown));
        let t = Tickets::with_key([1; 32], "");
        assert_eq!(t.verify(&s, 1000), Err(TicketError::Expired));
        assert!(t.verify(&s, 999).is_ok());
    }

    #[test]
    fn fresh_keys_differ() {
        let g = grant(Direction::Upload, 1000);
        let a = Tickets::new("").unwrap().mint(&g);
        let b = Tickets::new("").unwrap().mint(&g);
        assert_ne!(a, b);
    }
}
