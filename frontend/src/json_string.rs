//! JSON string literals for large texts, written eight bytes at a time.
//!
//! A tool result is JSON inside a JSON string (the MCP text item), so a megabyte of command
//! output is escaped twice per call. `serde_json` escapes byte by byte; this module skips the
//! long runs that need no escaping a machine word at a time and copies them whole. The output
//! is the same as `serde_json`'s (same escapes, raw UTF-8), wrapped as a [`RawValue`] that
//! `serde_json` writes verbatim.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is a control character (< 0x20), `"` or `\`. May say yes for a
/// word that holds none of them (then the slow path looks byte by byte), never no for one
/// that does.
fn needs_escape(w: u64) -> bool {
    let control = w.wrapping_sub(LOW * 0x20) & !w;
    let quote = (w ^ (LOW * b'"' as u64)).wrapping_sub(LOW) & !(w ^ (LOW * b'"' as u64));
    let backslash = (w ^ (LOW * b'\\' as u64)).wrapping_sub(LOW) & !(w ^ (LOW * b'\\' as u64));
    (control | quote | backslash) & HIGH != 0
}

/// Appends `s` as a JSON string literal, quotes included, escaped as `serde_json` does.
pub fn push_literal(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0; // first byte not yet copied
    let mut i = 0;
    while i < bytes.len() {
        if i + 8 <= bytes.len() {
            let w = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0x00..=0x1f => None,
            _ => {
                i += 1;
                continue;
            }
        };
        // Escapes are ASCII, so `start..i` ends on a character boundary.
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xf) as usize] as char);
            }
        }
        i += 1;
        start = i;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `s` as a JSON string literal that `serde_json` embeds without looking at it again.
pub fn literal(s: &str) -> Box<RawValue> {
    let mut out = String::new();
    push_literal(&mut out, s);
    RawValue::from_string(out).expect("an escaped string literal is valid JSON")
}

/// For `#[serde(serialize_with)]` on large text fields. Only for `serde_json` serializers.
pub fn serialize<T: AsRef<str> + ?Sized, S: Serializer>(
    s: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    literal(s.as_ref()).serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_serde_json(s: &str) {
        let mut ours = String::new();
        push_literal(&mut ours, s);
        assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
    }

    #[test]
    fn escapes_exactly_like_serde_json() {
        for s in [
            "",
            "plain ascii text, longer than one word",
            "quote \" backslash \\ newline \n tab \t cr \r",
            "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f} end",
            "ünïcødé € 🦀 and \"quotes\" after",
            "\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"",
            "12345678\n12345678\\",
            "x\u{fffd}y",
        ] {
            same_as_serde_json(s);
        }
        // Every byte value in every position of a word.
        for b in 0u8..0x80 {
            for pos in 0..9 {
                let mut s = "abcdefghijklmnop".to_string().into_bytes();
                s[pos] = b;
                same_as_serde_json(std::str::from_utf8(&s).unwrap());
            }
        }
    }

    #[test]
    fn raw_literals_are_embedded_verbatim() {
        #[derive(Serialize)]
        struct Item {
            #[serde(serialize_with = "serialize")]
            text: String,
        }
        let item = Item {
            text: "{\"a\":\"b\\n\"}".into(),
        };
        let json = serde_json::to_string(&item).unwrap();
        assert_eq!(
            json,
            serde_json::to_string(&serde_json::json!({"text": item.text})).unwrap()
        );
    }
}
