//! Reading request bodies: only once the caller is known, never longer than the body
//! timeouts allow, never more than a limit.
//!
//! A body is read in one of two ways:
//!
//! - [`take_arrived`]: the part of a small body that is already here (it came in with the
//!   headers), taken without waiting for anything. A small JSON-RPC call nearly always arrives
//!   in one piece with its headers; reading it this way lets the executor's `Call` decide the
//!   token in the same round trip that runs the tool. A peer cannot make the frontend wait or
//!   hold more than [`ARRIVED_MAX`] bytes this way.
//! - [`read_rest`]: everything else, and only after the executor has said who is calling:
//!   within the deadline of the whole body ([`BodyTimeouts::total`], `MYMCP_BODY_TIMEOUT_SEC`)
//!   and with at most [`BodyTimeouts::idle`] (`MYMCP_BODY_IDLE_TIMEOUT_SEC`) between two
//!   pieces.

use axum::body::{Body, Bytes};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;

/// Largest body taken before the caller is known, if it has arrived with the headers.
pub const ARRIVED_MAX: u64 = 64 * 1024;

/// Default `MYMCP_BODY_TIMEOUT_SEC`.
pub const DEFAULT_BODY_TIMEOUT: Duration =
    Duration::from_secs(mymcp_settings::BODY_TIMEOUT_SEC.default());
/// Default `MYMCP_BODY_IDLE_TIMEOUT_SEC`.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration =
    Duration::from_secs(mymcp_settings::BODY_IDLE_TIMEOUT_SEC.default());

/// How long a request body may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyTimeouts {
    /// The whole body, from the request's headers on.
    pub total: Duration,
    /// The longest silence between two pieces of a body (also of uploads, which have no total).
    pub idle: Duration,
}

impl Default for BodyTimeouts {
    fn default() -> Self {
        BodyTimeouts {
            total: DEFAULT_BODY_TIMEOUT,
            idle: DEFAULT_BODY_IDLE_TIMEOUT,
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit (413).
    TooLarge,
    /// The body took too long or went silent (408).
    TimedOut,
    /// The body failed: the client went away or sent garbage (400).
    Failed(String),
}

/// The pieces of a body read so far.
#[derive(Debug, Default)]
pub struct Chunks {
    parts: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, data: Bytes, limit: usize) -> Result<(), BodyError> {
        if self.len + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        self.len += data.len();
        if !data.is_empty() {
            self.parts.push(data);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body as one buffer (without a copy when it came in one piece).
    pub fn into_bytes(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().unwrap_or_default(),
            _ => {
                let mut all = Vec::with_capacity(self.len);
                for part in &self.parts {
                    all.extend_from_slice(part);
                }
                Bytes::from(all)
            }
        }
    }
}

/// Whether a body may be taken before the caller is known: it is announced (or known) to be at
/// most [`ARRIVED_MAX`] bytes, and the client does not wait for `100 Continue` (which reading
/// would send).
pub fn small_enough_to_take(body: &Body, expects_continue: bool) -> bool {
    !expects_continue && body.size_hint().upper().is_some_and(|n| n <= ARRIVED_MAX)
}

/// Takes what of `body` has already arrived, without waiting. `Ok(true)`: that was all of it.
pub fn take_arrived(body: &mut Body, chunks: &mut Chunks, limit: usize) -> Result<bool, BodyError> {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if body.is_end_stream() {
            return Ok(true);
        }
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Pending => return Ok(false),
            Poll::Ready(None) => return Ok(true),
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    chunks.push(data, limit)?;
                }
            }
            Poll::Ready(Some(Err(e))) => return Err(BodyError::Failed(e.to_string())),
        }
    }
}

/// The next piece of `body` (`None` at its end), waiting at most `idle`, and not past
/// `deadline` when there is one.
pub async fn next_data(
    body: &mut Body,
    idle: Duration,
    deadline: Option<Instant>,
) -> Result<Option<Bytes>, BodyError> {
    loop {
        if body.is_end_stream() {
            return Ok(None);
        }
        let until = match deadline {
            Some(deadline) => deadline.min(Instant::now() + idle),
            None => Instant::now() + idle,
        };
        match tokio::time::timeout_at(until, body.frame()).await {
            Err(_) => return Err(BodyError::TimedOut),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(BodyError::Failed(e.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Reads the rest of `body` into `chunks`, at most `limit` bytes in all, within `timeouts`
/// counted from `started`.
pub async fn read_rest(
    body: &mut Body,
    chunks: &mut Chunks,
    limit: usize,
    started: Instant,
    timeouts: BodyTimeouts,
) -> Result<(), BodyError> {
    let deadline = started + timeouts.total;
    while let Some(data) = next_data(body, timeouts.idle, Some(deadline)).await? {
        chunks.push(data, limit)?;
    }
    Ok(())
}

/// Reads a whole body (at most `limit` bytes, within `timeouts` from `started`).
pub async fn read_all(
    mut body: Body,
    limit: usize,
    started: Instant,
    timeouts: BodyTimeouts,
) -> Result<Bytes, BodyError> {
    let mut chunks = Chunks::default();
    read_rest(&mut body, &mut chunks, limit, started, timeouts).await?;
    Ok(chunks.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tokio::sync::mpsc;

    /// A body fed by the test, piece by piece.
    struct Fed(mpsc::Receiver<Bytes>, Option<u64>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            self.0
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
        }

        fn size_hint(&self) -> http_body::SizeHint {
            match self.1 {
                Some(n) => http_body::SizeHint::with_exact(n),
                None => http_body::SizeHint::default(),
            }
        }
    }

    fn fed(len: Option<u64>) -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel(8);
        (tx, Body::new(Fed(rx, len)))
    }

    #[tokio::test]
    async fn what_has_arrived_is_taken_without_waiting_and_the_rest_after() {
        let (tx, mut body) = fed(Some(10));
        assert!(small_enough_to_take(&body, false));
        assert!(!small_enough_to_take(&body, true));
        tx.send(Bytes::from_static(b"hello")).await.unwrap();
        let mut chunks = Chunks::default();
        assert_eq!(take_arrived(&mut body, &mut chunks, 100), Ok(false));
        assert_eq!(chunks.len(), 5);
        tx.send(Bytes::from_static(b"world")).await.unwrap();
        drop(tx);
        read_rest(
            &mut body,
            &mut chunks,
            100,
            Instant::now(),
            BodyTimeouts::default(),
        )
        .await
        .unwrap();
        assert_eq!(chunks.into_bytes(), Bytes::from_static(b"helloworld"));
    }

    #[tokio::test]
    async fn a_whole_body_at_hand_is_taken_at_once() {
        let mut body = Body::from("{\"a\":1}");
        let mut chunks = Chunks::default();
        assert_eq!(take_arrived(&mut body, &mut chunks, 100), Ok(true));
        assert_eq!(chunks.into_bytes(), Bytes::from_static(b"{\"a\":1}"));
        let mut chunks = Chunks::default();
        assert_eq!(
            take_arrived(&mut Body::from("x".repeat(101)), &mut chunks, 100),
            Err(BodyError::TooLarge)
        );
        assert!(!small_enough_to_take(&fed(None).1, false));
        assert!(!small_enough_to_take(&fed(Some(ARRIVED_MAX + 1)).1, false));
    }

    #[tokio::test]
    async fn silence_and_slowness_time_out() {
        let timeouts = BodyTimeouts {
            total: Duration::from_millis(900),
            idle: Duration::from_millis(300),
        };
        // Silent after one piece.
        let (tx, body) = fed(None);
        tx.send(Bytes::from_static(b"x")).await.unwrap();
        let started = Instant::now();
        let read = read_all(body, 100, started, timeouts).await;
        assert_eq!(read, Err(BodyError::TimedOut));
        assert!(started.elapsed() >= timeouts.idle);
        drop(tx);

        // A byte every 100 ms never trips the idle timeout; the deadline ends it.
        let (tx, body) = fed(None);
        let feeder = tokio::spawn(async move {
            while tx.send(Bytes::from_static(b"x")).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let started = Instant::now();
        assert_eq!(
            read_all(body, 100, started, timeouts).await,
            Err(BodyError::TimedOut)
        );
        assert!(started.elapsed() >= timeouts.total);
        feeder.abort();
    }
}
