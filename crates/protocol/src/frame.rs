//! The frame codec: a `u32` big-endian body length followed by a postcard body.
//!
//! The length is checked against a hard maximum *before* any byte of the body is read or
//! decoded, so a peer cannot make the other side allocate more than [`MAX_FRAME_LEN`].
//! Decoding is strict: a body must decode to exactly one message with no trailing bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 4;

/// Hard upper bound of a frame body, in both directions and on both sockets.
///
/// Sized for the largest legitimate message: a `write_file` of up to 10 MiB (the default
/// `MYMCP_WRITE_FILE_MAX_BYTES`) or a page of `read_file`, whose executor-side byte budget
/// stays below this. The executor refuses at start-up a configuration that could not fit.
pub const MAX_FRAME_LEN: usize = 32 * 1024 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header announced a body larger than the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The header announced an empty body; no message encodes to zero bytes.
    #[error("empty frame")]
    Empty,
    /// The body is not a valid encoding of the expected message type.
    #[error("frame body does not decode: {0}")]
    Decode(postcard::Error),
    /// The body decoded, but bytes were left over.
    #[error("frame body has {0} trailing bytes")]
    Trailing(usize),
    /// The message could not be serialized (should not happen for protocol types).
    #[error("message does not encode: {0}")]
    Encode(postcard::Error),
    /// The underlying stream failed or ended mid-frame.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses a frame header and returns the body length, refusing lengths above `max`.
pub fn body_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes one message from a frame body; the whole body must be consumed.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// Encodes a message as a complete frame (header and body).
///
/// The size is computed first, so an oversized message is refused before anything is copied
/// and a large one is written into a buffer allocated once.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let len =
        postcard::serialize_with_flavor::<T, _, usize>(msg, postcard::ser_flavors::Size::default())
            .map_err(FrameError::Encode)?;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    let buf = postcard::to_extend(msg, buf).map_err(FrameError::Encode)?;
    debug_assert_eq!(buf.len(), HEADER_LEN + len);
    Ok(buf)
}

/// Reads one frame from a blocking stream (used by `mymcpctl` and tests).
pub fn read_from<T: DeserializeOwned, R: Read>(r: &mut R) -> Result<T, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header)?;
    let len = body_len(header, MAX_FRAME_LEN)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    decode(&body)
}

/// Writes one frame to a blocking stream.
pub fn write_to<T: Serialize, W: Write>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientFrame, FrontendRequest, Hello, ReadFile, TokenDigest, ToolCall};

    fn sample() -> ClientFrame<FrontendRequest> {
        ClientFrame::Request {
            id: 7,
            body: FrontendRequest::Call {
                token: TokenDigest([3; 32]),
                origin: crate::CallOrigin {
                    peer: "127.0.0.1".into(),
                    request_id: "r1".into(),
                },
                call: ToolCall::ReadFile(ReadFile {
                    file_path: "/etc/hostname".into(),
                    offset: Some(2),
                    limit: None,
                }),
            },
        }
    }

    #[test]
    fn round_trip_keeps_the_message() {
        let frame = encode(&sample()).unwrap();
        let len = body_len(frame[..4].try_into().unwrap(), MAX_FRAME_LEN).unwrap();
        assert_eq!(len, frame.len() - 4);
        let back: ClientFrame<FrontendRequest> = decode(&frame[4..]).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn blocking_helpers_round_trip() {
        let mut wire = Vec::new();
        let hello = ClientFrame::<FrontendRequest>::Hello(Hello::current());
        write_to(&mut wire, &hello).unwrap();
        write_to(&mut wire, &sample()).unwrap();
        let mut r = &wire[..];
        assert_eq!(
            read_from::<ClientFrame<FrontendRequest>, _>(&mut r).unwrap(),
            hello
        );
        assert_eq!(
            read_from::<ClientFrame<FrontendRequest>, _>(&mut r).unwrap(),
            sample()
        );
        assert!(matches!(
            read_from::<ClientFrame<FrontendRequest>, _>(&mut r),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn oversized_length_is_refused_before_reading_the_body() {
        let header = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            body_len(header, MAX_FRAME_LEN),
            Err(FrameError::TooLarge { .. })
        ));
        // The blocking reader must fail without waiting for 32 MiB of body.
        let mut r = &header[..];
        assert!(matches!(
            read_from::<ClientFrame<FrontendRequest>, _>(&mut r),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn empty_frame_is_refused() {
        assert!(matches!(
            body_len([0; 4], MAX_FRAME_LEN),
            Err(FrameError::Empty)
        ));
    }

    #[test]
    fn truncated_body_is_an_error() {
        let frame = encode(&sample()).unwrap();
        let body = &frame[4..frame.len() - 3];
        assert!(matches!(
            decode::<ClientFrame<FrontendRequest>>(body),
            Err(FrameError::Decode(_))
        ));
        let mut r = &frame[..frame.len() - 3];
        assert!(matches!(
            read_from::<ClientFrame<FrontendRequest>, _>(&mut r),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut frame = encode(&sample()).unwrap();
        frame.push(0);
        assert!(matches!(
            decode::<ClientFrame<FrontendRequest>>(&frame[4..]),
            Err(FrameError::Trailing(1))
        ));
    }

    #[test]
    fn garbage_does_not_decode_or_panic() {
        // A deterministic pseudo-random sweep: every input must give Ok or Err, never panic,
        // and unknown variant tags must be refused.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut refused = 0;
        for n in 0..5000 {
            let len = 1 + n % 64;
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if decode::<ClientFrame<FrontendRequest>>(&body).is_err() {
                refused += 1;
            }
        }
        assert!(
            refused > 4000,
            "random bytes should almost never decode ({refused})"
        );
        assert!(decode::<ClientFrame<FrontendRequest>>(&[0xff]).is_err());
    }

    #[test]
    fn huge_inner_length_does_not_allocate() {
        // A string field claiming 2^32 bytes inside a small frame must fail cleanly.
        let body = [1u8, 7, 1, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(decode::<ClientFrame<FrontendRequest>>(&body).is_err());
    }
}
