//! JSON string literals for large texts, written eight bytes at a time.
//!
//! A tool result is JSON inside a JSON string (the MCP text item), so a megabyte of command
//! output is escaped twice per call. `serde_json` escapes byte by byte; this module skips the
//! long runs that need no escaping a machine word at a time and copies them whole. The output
//! is the same as `serde_json`'s (same escapes, raw UTF-8), handed to `serde_json` as
//! [`Verbatim`] text that it writes as it is, without parsing it again.

use serde::{Serialize, Serializer};

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes of `w` that are a control character (< 0x20), `"` or `\`: the high bit of each
/// such byte is set. Bytes above the lowest flagged one may be flagged wrongly, never the
/// lowest itself (the borrow that causes a false flag comes from a true one below it).
fn escape_mask(w: u64) -> u64 {
    let control = w.wrapping_sub(LOW * 0x20) & !w;
    let q = w ^ (LOW * b'"' as u64);
    let quote = q.wrapping_sub(LOW) & !q;
    let b = w ^ (LOW * b'\\' as u64);
    let backslash = b.wrapping_sub(LOW) & !b;
    (control | quote | backslash) & HIGH
}

/// How `serde_json` writes each byte inside a string: `(length, bytes)`, length 0 for a byte
/// copied as it is.
const ESCAPES: [(u8, [u8; 8]); 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [(0u8, [0u8; 8]); 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = match b as u8 {
            0x08 => (2, *b"\\b\0\0\0\0\0\0"),
            b'\t' => (2, *b"\\t\0\0\0\0\0\0"),
            b'\n' => (2, *b"\\n\0\0\0\0\0\0"),
            0x0c => (2, *b"\\f\0\0\0\0\0\0"),
            b'\r' => (2, *b"\\r\0\0\0\0\0\0"),
            _ => (
                6,
                [b'\\', b'u', b'0', b'0', HEX[b >> 4], HEX[b & 0xf], 0, 0],
            ),
        };
        b += 1;
    }
    t[b'"' as usize] = (2, *b"\\\"\0\0\0\0\0\0");
    t[b'\\' as usize] = (2, *b"\\\\\0\0\0\0\0\0");
    t
};

/// The high bit of each byte of `w` that equals `c`, exactly (no false flags).
fn bytes_equal(w: u64, c: u8) -> u64 {
    let x = w ^ (LOW * c as u64);
    !(((x & !HIGH) + !HIGH) | x) & HIGH
}

/// The length of `bytes` escaped (without the quotes). Eight bytes at a time: each kind of
/// escape is counted exactly in a word (no carries between bytes) and weighed by its width.
fn escaped_len(bytes: &[u8]) -> usize {
    let mut extra = 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if escape_mask(w) == 0 {
            continue;
        }
        // Below 0x20: adding 0x60 to the low seven bits leaves the high bit clear.
        let control = !(((w & !HIGH) + LOW * 0x60) | w) & HIGH;
        let short = [0x08, b'\t', b'\n', 0x0c, b'\r']
            .into_iter()
            .fold(0, |m, c| m | bytes_equal(w, c));
        let quoted = bytes_equal(w, b'"') | bytes_equal(w, b'\\');
        // `\u00XX` adds five bytes, `\n` and the like one, `\"` and `\\` one.
        extra += 5 * control.count_ones() as usize - 4 * short.count_ones() as usize
            + quoted.count_ones() as usize;
    }
    for &b in words.remainder() {
        extra += (ESCAPES[b as usize].0 as usize).saturating_sub(1);
    }
    bytes.len() + extra
}

/// The length of `s` as a JSON string literal, quotes included.
pub fn literal_len(s: &str) -> usize {
    escaped_len(s.as_bytes()) + 2
}

/// Below this many bytes a literal's room is estimated, not counted: counting is a pass over
/// the text, and a short text that escapes more than the estimate costs one small regrowth.
const COUNT_FROM: usize = 64 * 1024;

/// Room to reserve for `s` as a JSON string literal: [`literal_len`] for long texts, a
/// quarter more than `s` for short ones.
pub fn literal_room(s: &str) -> usize {
    if s.len() < COUNT_FROM {
        s.len() + s.len() / 4 + 16
    } else {
        literal_len(s)
    }
}

/// Appends `s` as a JSON string literal, quotes included, escaped as `serde_json` does.
///
/// Words that need no escape are skipped eight bytes at a time and copied whole in runs; a
/// word that does is escaped byte by byte through a small buffer (one fixed-size copy per
/// byte, one copy per word). Copying up to each escape instead was tried: for text with an
/// escape every few dozen bytes, such as numbered lines, the many short copies cost more.
/// Unless `out` already has room for at least `s` unescaped (a caller that reserved
/// [`literal_room`]), room is reserved first: for a long text its exact length is counted, so
/// it is allocated once. (Command output full of escapes, such as a megabyte of NUL bytes, is
/// escaped twice per call: as a JSON value, then as the text item holding that JSON.)
pub fn push_literal(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut buf = std::mem::take(out).into_bytes();
    if buf.capacity() - buf.len() < bytes.len() + 2 {
        buf.reserve(literal_room(s));
    }
    buf.push(b'"');
    let mut start = 0; // first byte not yet copied
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut words {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if escape_mask(w) != 0 {
            buf.extend_from_slice(&bytes[start..at]);
            escape_into(&mut buf, chunk);
            start = at + 8;
        }
        at += 8;
    }
    buf.extend_from_slice(&bytes[start..at]);
    escape_into(&mut buf, words.remainder());
    buf.push(b'"');
    // `buf` was a `String`, and what was appended is valid UTF-8: the bytes of `s` in their
    // order, each either copied or (an ASCII byte) replaced by an ASCII escape. Checked rather
    // than assumed (mymcp-sys is the only crate allowed to assume): one validation pass, which std does a word
    // at a time over ASCII.
    *out = String::from_utf8(buf).expect("escaping keeps text UTF-8");
}

/// Appends up to eight bytes, escaped, through a small buffer: one fixed-size copy per byte.
#[inline(always)]
fn escape_into(buf: &mut Vec<u8>, bytes: &[u8]) {
    let mut tmp = [0u8; 64];
    let mut t = 0;
    for &b in bytes {
        let (width, escape) = ESCAPES[b as usize];
        if width == 0 {
            tmp[t] = b;
            t += 1;
        } else {
            tmp[t..t + 8].copy_from_slice(&escape);
            t += width as usize;
        }
    }
    buf.extend_from_slice(&tmp[..t]);
}

/// Text that is already JSON, written out as it is by `serde_json`'s serializer (the way it
/// writes a `serde_json::value::RawValue`, through the same marker), without the full parse that building a
/// `RawValue` costs: the callers build it from escaped literals and typed structs, so it is
/// valid by construction. Only for `serde_json` serializers (the tests check that it embeds).
pub struct Verbatim<'a>(pub &'a str);

/// `serde_json`'s marker for raw JSON (`serde_json::raw::TOKEN`, the name `RawValue`'s own
/// `Serialize` uses).
const RAW_TOKEN: &str = "$serde_json::private::RawValue";

impl Serialize for Verbatim<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct(RAW_TOKEN, 1)?;
        s.serialize_field(RAW_TOKEN, self.0)?;
        s.end()
    }
}

/// For `#[serde(serialize_with)]` on large text fields. Only for `serde_json` serializers.
pub fn serialize<T: AsRef<str> + ?Sized, S: Serializer>(
    s: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut out = String::new();
    push_literal(&mut out, s.as_ref());
    Verbatim(&out).serialize(serializer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_serde_json(s: &str) {
        let mut ours = String::new();
        push_literal(&mut ours, s);
        assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
        assert_eq!(literal_len(s), ours.len(), "{s:?}");
        let mut appended = "ü ".to_owned();
        push_literal(&mut appended, s);
        assert_eq!(appended, format!("ü {ours}"), "appends to what is there");
        // Room for the text but not for its escapes: not counted, grown on the way.
        let mut roomy = String::with_capacity(s.len() + 2);
        push_literal(&mut roomy, s);
        assert_eq!(roomy, ours, "{s:?}");
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
        // Escapes packed densely and sparsely at every offset (a small generator, fixed seed).
        let alphabet = [
            "a", "\"", "\\", "\n", "\t", "\u{1}", "ü", "€", "\u{1f}", " ",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200 {
            let mut s = String::new();
            for _ in 0..len {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                s.push_str(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            same_as_serde_json(&s);
        }
        // Short texts get estimated room (escapes past it regrow the buffer), long ones their
        // counted length.
        same_as_serde_json(&"\u{0}\"\n".repeat(1000));
        same_as_serde_json(&"\u{0}a\"".repeat(30_000));
        same_as_serde_json(&"plain".repeat(20_000));
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

    #[test]
    fn verbatim_text_is_embedded_as_it_is_also_when_flattened_or_made_a_value() {
        #[derive(Serialize)]
        struct Inner<'a> {
            raw: Verbatim<'a>,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            first: u8,
            #[serde(flatten)]
            inner: Inner<'a>,
        }
        let raw = r#"{"b":[1, 2],"a":"x\n"}"#;
        let outer = Outer {
            first: 1,
            inner: Inner { raw: Verbatim(raw) },
        };
        assert_eq!(
            serde_json::to_string(&outer).unwrap(),
            format!(r#"{{"first":1,"raw":{raw}}}"#)
        );
        assert_eq!(
            serde_json::to_value(&outer).unwrap(),
            serde_json::json!({"first": 1, "raw": {"b": [1, 2], "a": "x\n"}})
        );
    }
}
