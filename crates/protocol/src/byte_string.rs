//! Serde for `Vec<u8>` fields as one byte string rather than a sequence of `u8`s.
//!
//! The postcard encoding is the same either way (a length, then the raw bytes), but serde
//! handles a sequence one element at a time: a megabyte of command output took milliseconds to
//! encode and decode. As a byte string it is a single copy.

use serde::de::{SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(ByteBuf)
}

struct ByteBuf;

impl<'de> Visitor<'de> for ByteBuf {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    // Formats without a byte-string type hand over a sequence.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use crate::CapturedStream;

    #[test]
    fn byte_strings_keep_the_wire_format_of_a_u8_sequence() {
        let head = vec![0u8, 1, 255, b'a'];
        let as_bytes = postcard::to_stdvec(&CapturedStream {
            head: head.clone(),
            total_bytes: 7,
        })
        .unwrap();
        let as_seq = postcard::to_stdvec(&(head.clone(), 7u64)).unwrap();
        assert_eq!(as_bytes, as_seq);
        let back: CapturedStream = postcard::from_bytes(&as_bytes).unwrap();
        assert_eq!(back.head, head);
    }
}
