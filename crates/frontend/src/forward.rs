//! The executor client: one persistent, multiplexed connection to `executor.sock`.
//!
//! Every HTTP request that needs the executor becomes one [`ClientFrame::Request`] with a fresh
//! id on a single shared Unix-socket connection; a reader task routes each
//! [`ServerFrame::Response`] back to the waiting caller by id. While the connection is down,
//! requests fail at once with [`ForwardError::Unavailable`] (the HTTP layer answers 503) and a
//! background task reconnects with exponential backoff (50 ms doubling to 2 s, forever). The
//! executor may be starting alongside the frontend (`mymcpctl serve` starts both at once): in
//! the frontend's first second, before any connection, it retries every 2 ms and logs the
//! failures at debug level only.
//!
//! Cancellation follows the future: if the future returned by [`Forwarder::request`] is dropped
//! before its answer arrives (the HTTP client went away and hyper dropped the handler), a guard
//! sends [`ClientFrame::Cancel`] so the executor stops the work, e.g. kills the command's
//! process group. [`Forwarder::request_watched`] can also cancel on a trigger (an MCP
//! `notifications/cancelled`) while still waiting for the answer, and receives the
//! [`ServerFrame::Progress`] reports the executor sends while the request runs.
//!
//! Transfers ([`Forwarder::redeem`]) receive one end of a pipe from the executor: the
//! [`ServerFrame::Pipe`] frame carries it as `SCM_RIGHTS` ancillary data on its first byte.
//! The reader therefore reads with `recvmsg` into its own buffer and queues every descriptor
//! that arrives; the kernel delivers a descriptor no later than the first byte of the frame it
//! was sent with, and in stream order, so each `Pipe` frame takes the oldest queued one.

use mymcp_protocol::frame::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use mymcp_protocol::{
    ClientFrame, FrontendRequest, FrontendResponse, Hello, Progress, RequestId, ServerFrame,
    TransferStart,
};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// First delay before reconnecting; doubled after each failed attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// How long after start a missing executor is taken for one still starting.
const START_GRACE: Duration = Duration::from_secs(1);
/// Delay between connection attempts during [`START_GRACE`]: finer than the runtime's timer
/// (1 ms ticks), so it is slept on the blocking pool.
const START_RETRY: Duration = Duration::from_micros(250);
/// Longest delay between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long the executor may take to answer our `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// There is no connection to the executor, or it dropped before the answer arrived.
    #[error("executor unavailable")]
    Unavailable,
    /// The request does not fit in a frame (cannot happen below the HTTP body limit).
    #[error("request cannot be sent to the executor: {0}")]
    Encode(#[source] FrameError),
}

/// What a caller wants to hear or say while its request runs, besides the answer.
#[derive(Debug, Default)]
pub struct Watch {
    /// Receives the executor's progress reports for the request; a report that finds the
    /// channel full is dropped.
    pub progress: Option<mpsc::Sender<Progress>>,
    /// When a value arrives here the request is cancelled in the executor, and the answer
    /// (normally a `Cancelled` failure) is still awaited. A dropped sender means nothing.
    pub cancel: Option<oneshot::Receiver<()>>,
}

/// Anything that answers [`FrontendRequest`]s: the real [`Forwarder`], or a fake in tests of
/// the MCP layer.
pub trait ExecutorClient: Sync {
    /// Sends one request and waits for its answer. Dropping the future abandons the request.
    fn request(
        &self,
        request: FrontendRequest,
    ) -> impl Future<Output = Result<FrontendResponse, ForwardError>> + Send;

    /// As [`ExecutorClient::request`], with progress reports and a cancel trigger. The default
    /// ignores both.
    fn request_watched(
        &self,
        request: FrontendRequest,
        watch: Watch,
    ) -> impl Future<Output = Result<FrontendResponse, ForwardError>> + Send {
        drop(watch);
        self.request(request)
    }
}

/// The connection to the executor, shared by all HTTP requests.
///
/// Created with [`Forwarder::new`], which must run inside a tokio runtime (it spawns the task
/// that keeps the connection up). Dropping the forwarder stops that task and closes the
/// connection.
pub struct Forwarder {
    shared: Arc<Shared>,
    maintainer: JoinHandle<()>,
}

struct Shared {
    socket_path: PathBuf,
    next_id: AtomicU64,
    link: Mutex<Option<Link>>,
    connected: watch::Sender<bool>,
}

/// An established connection, present only while the handshake has succeeded and neither
/// direction has failed.
struct Link {
    generation: u64,
    /// Frames for the writer task, each with how much of it was already written.
    frames: mpsc::UnboundedSender<(Vec<u8>, usize)>,
    /// Frames are waiting for (or being written by) the writer task: a new frame must queue
    /// behind them. Changed only under the link's lock.
    queued: bool,
    writer: Arc<OwnedWriteHalf>,
    pending: HashMap<RequestId, Pending>,
}

impl Link {
    /// Sends one frame: written at once by the caller when nothing is queued before it and
    /// the socket takes it, which spares the writer task a wake-up; else (or for the part
    /// the socket did not take) queued for the writer task. An error means the link is gone.
    fn send(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        let mut at = 0;
        if !self.queued {
            match self.writer.try_write(&bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => at = n,
                // Would block, or broken: the writer task waits, or finds the error.
                Err(_) => {}
            }
        }
        self.queued = true;
        self.frames.send((bytes, at)).map_err(|_| ())
    }
}

/// A request waiting for its answer.
struct Pending {
    answer: oneshot::Sender<FrontendResponse>,
    progress: Option<mpsc::Sender<Progress>>,
    /// Takes the pipe of a transfer ([`Forwarder::redeem`]).
    pipe: Option<oneshot::Sender<(TransferStart, OwnedFd)>>,
}

/// What a [`Forwarder::redeem`] got first.
#[derive(Debug)]
pub enum Redeemed {
    /// The executor answered without starting a transfer (a refusal, normally).
    Answer(FrontendResponse),
    /// The transfer started: the pipe end to use, and the request's final answer to come.
    Started {
        start: TransferStart,
        pipe: OwnedFd,
        finish: Finish,
    },
}

/// The rest of a started transfer's request. [`Finish::answer`] waits for the executor's final
/// word; dropping it unanswered cancels the transfer in the executor.
pub struct Finish {
    shared: Arc<Shared>,
    id: RequestId,
    generation: u64,
    answer: Option<oneshot::Receiver<FrontendResponse>>,
}

impl fmt::Debug for Finish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finish").field("id", &self.id).finish()
    }
}

impl Finish {
    /// The request's answer (when the transfer has ended).
    pub async fn answer(&mut self) -> Result<FrontendResponse, ForwardError> {
        let rx = self.answer.as_mut().ok_or(ForwardError::Unavailable)?;
        let answer = rx.await.map_err(|_| ForwardError::Unavailable);
        self.answer = None;
        answer.map(crate::otel::untraced)
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(mut rx) = self.answer.take() {
            match rx.try_recv() {
                // Arrived but never read (a download's body is dropped once its last byte is
                // out): nothing to stop, but its spans are the request's.
                Ok(answer) => {
                    crate::otel::untraced(answer);
                }
                Err(_) => self.shared.cancel(self.id, self.generation, true),
            }
        }
    }
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("socket_path", &self.shared.socket_path)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.maintainer.abort();
    }
}

impl Forwarder {
    /// Starts connecting to the executor socket at `socket_path` in the background and returns
    /// at once; use [`Forwarder::wait_connected`] to wait for the first connection.
    pub fn new(socket_path: impl Into<PathBuf>) -> Arc<Forwarder> {
        let shared = Arc::new(Shared {
            socket_path: socket_path.into(),
            next_id: AtomicU64::new(1),
            link: Mutex::new(None),
            connected: watch::Sender::new(false),
        });
        let maintainer = tokio::spawn(maintain(Arc::clone(&shared)));
        Arc::new(Forwarder { shared, maintainer })
    }

    /// The executor socket this forwarder connects to.
    pub fn socket_path(&self) -> &Path {
        &self.shared.socket_path
    }

    /// Whether a handshaken connection to the executor is up right now.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Waits until the connection is up, at most `timeout`. Returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.connected.subscribe();
        let up = tokio::time::timeout(timeout, rx.wait_for(|up| *up)).await;
        matches!(up, Ok(Ok(_)))
    }

    /// Sends `request` and waits for the executor's answer.
    ///
    /// Fails fast with [`ForwardError::Unavailable`] when the connection is down, and with the
    /// same error if it drops while waiting. Dropping the returned future before it completes
    /// sends `Cancel` for the request.
    pub async fn request(
        &self,
        request: FrontendRequest,
    ) -> Result<FrontendResponse, ForwardError> {
        self.request_watched(request, Watch::default()).await
    }

    /// As [`Forwarder::request`], with progress reports and a cancel trigger (see [`Watch`]).
    pub async fn request_watched(
        &self,
        request: FrontendRequest,
        watch: Watch,
    ) -> Result<FrontendResponse, ForwardError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = frame::encode(&ClientFrame::Request { id, body: request })
            .map_err(ForwardError::Encode)?;
        let (tx, mut rx) = oneshot::channel();
        let generation = {
            let mut link = self.shared.lock_link();
            let link = link.as_mut().ok_or(ForwardError::Unavailable)?;
            link.pending.insert(
                id,
                Pending {
                    answer: tx,
                    progress: watch.progress,
                    pipe: None,
                },
            );
            if link.send(bytes).is_err() {
                link.pending.remove(&id);
                return Err(ForwardError::Unavailable);
            }
            link.generation
        };
        let mut guard = InFlight {
            shared: &self.shared,
            id,
            generation,
            answered: false,
        };
        let answer = match watch.cancel {
            None => rx.await,
            Some(mut cancel) => tokio::select! {
                answer = &mut rx => answer,
                sent = &mut cancel => {
                    if sent.is_ok() {
                        self.shared.cancel(id, generation, false);
                    }
                    rx.await
                }
            },
        };
        // A closed channel means the link went down and took the pending entry with it.
        let answer = answer.map_err(|_| ForwardError::Unavailable);
        guard.answered = true;
        // The executor's spans, if it sent any, are exported here, in the caller's task.
        answer.map(crate::otel::untraced)
    }
}

impl Forwarder {
    /// Sends a transfer request (`Redeem`) and waits until the executor either starts the
    /// transfer — handing over a pipe end — or answers without one.
    pub async fn redeem(&self, request: FrontendRequest) -> Result<Redeemed, ForwardError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = frame::encode(&ClientFrame::Request { id, body: request })
            .map_err(ForwardError::Encode)?;
        let (tx, rx) = oneshot::channel();
        let (pipe_tx, pipe_rx) = oneshot::channel();
        let generation = {
            let mut link = self.shared.lock_link();
            let link = link.as_mut().ok_or(ForwardError::Unavailable)?;
            link.pending.insert(
                id,
                Pending {
                    answer: tx,
                    progress: None,
                    pipe: Some(pipe_tx),
                },
            );
            if link.send(bytes).is_err() {
                link.pending.remove(&id);
                return Err(ForwardError::Unavailable);
            }
            link.generation
        };
        let mut finish = Finish {
            shared: Arc::clone(&self.shared),
            id,
            generation,
            answer: Some(rx),
        };
        // The pipe frame always precedes the answer; a dropped sender means there is none.
        match pipe_rx.await {
            Ok((start, pipe)) => Ok(Redeemed::Started {
                start,
                pipe,
                finish,
            }),
            Err(_) => finish.answer().await.map(Redeemed::Answer),
        }
    }
}

impl ExecutorClient for Forwarder {
    fn request(
        &self,
        request: FrontendRequest,
    ) -> impl Future<Output = Result<FrontendResponse, ForwardError>> + Send {
        Forwarder::request(self, request)
    }

    fn request_watched(
        &self,
        request: FrontendRequest,
        watch: Watch,
    ) -> impl Future<Output = Result<FrontendResponse, ForwardError>> + Send {
        Forwarder::request_watched(self, request, watch)
    }
}

impl Shared {
    fn lock_link(&self) -> MutexGuard<'_, Option<Link>> {
        // The map stays consistent even if a holder panicked: every critical section is a
        // single insert, remove or replace.
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `Cancel` for request `id` if it is still waiting on connection `generation`.
    /// `abandon` also forgets it (nobody waits for the answer any more).
    fn cancel(&self, id: RequestId, generation: u64, abandon: bool) {
        let mut link = self.lock_link();
        let Some(link) = link.as_mut().filter(|l| l.generation == generation) else {
            // The connection the request went out on is gone; the executor dropped its work
            // with it.
            return;
        };
        // If the entry is gone, the answer already arrived: nothing left to stop.
        let waiting = if abandon {
            link.pending.remove(&id).is_some()
        } else {
            link.pending.contains_key(&id)
        };
        if waiting {
            match frame::encode(&ClientFrame::<FrontendRequest>::Cancel { id }) {
                Ok(bytes) => {
                    let _ = link.send(bytes);
                    tracing::debug!(id, abandon, "cancelling a request in the executor");
                }
                Err(e) => tracing::error!(id, "cannot encode cancel frame: {e}"),
            }
        }
    }
}

/// Sends `Cancel` for a request whose future is dropped before its answer arrived.
struct InFlight<'a> {
    shared: &'a Shared,
    id: RequestId,
    generation: u64,
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.cancel(self.id, self.generation, true);
        }
    }
}

/// Why a connection attempt or an established connection failed.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("executor refused our hello: {0}")]
    Refused(String),
    #[error(
        "executor speaks another protocol build (wire {}, build {}); ours is wire {}, build {}",
        .0.wire_version, .0.build_id, mymcp_protocol::WIRE_VERSION, mymcp_protocol::BUILD_ID
    )]
    Incompatible(Hello),
    #[error("executor did not answer our hello within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("protocol violation by the executor: {0}")]
    Violation(&'static str),
}

/// Keeps a connection up for as long as the forwarder lives.
async fn maintain(shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut generation = 0u64;
    // Log the first failure of a streak loudly, the rest quietly: a stopped executor should
    // not flood the journal every two seconds.
    let mut failing = false;
    let started = tokio::time::Instant::now();
    loop {
        match connect(&shared.socket_path).await {
            Ok(stream) => {
                generation += 1;
                backoff = BACKOFF_MIN;
                failing = false;
                tracing::info!(socket = %shared.socket_path.display(), "connected to the executor");
                let reason = run_link(&shared, stream, generation).await;
                tracing::warn!("connection to the executor lost ({reason}); reconnecting");
            }
            Err(e) => {
                let socket = shared.socket_path.display();
                match (&e, failing) {
                    (LinkError::Refused(_) | LinkError::Incompatible(_), false) => {
                        tracing::error!(%socket, "cannot use the executor: {e}")
                    }
                    (_, false) if generation == 0 && started.elapsed() < START_GRACE => {
                        tracing::debug!(%socket, "cannot connect to the executor yet: {e}");
                        // Not a streak yet (the first failure after the grace is logged), and
                        // no backoff: the executor is normally up within milliseconds.
                        let slept = tokio::task::spawn_blocking(|| std::thread::sleep(START_RETRY));
                        if slept.await.is_err() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        continue;
                    }
                    (_, false) => tracing::warn!(%socket, "cannot connect to the executor: {e}"),
                    (_, true) => tracing::debug!(%socket, "cannot connect to the executor: {e}"),
                }
                failing = true;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connects and exchanges hellos.
async fn connect(path: &Path) -> Result<UnixStream, LinkError> {
    let mut stream = UnixStream::connect(path).await?;
    let hello = frame::encode(&ClientFrame::<FrontendRequest>::Hello(Hello::current()))?;
    stream.write_all(&hello).await?;
    let answer = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        read_frame::<ServerFrame<FrontendResponse>>(&mut stream),
    )
    .await
    .map_err(|_| LinkError::HandshakeTimeout(HANDSHAKE_TIMEOUT))??;
    match answer {
        ServerFrame::Welcome(h) if h.is_compatible() => Ok(stream),
        ServerFrame::Welcome(h) => Err(LinkError::Incompatible(h)),
        ServerFrame::Refused { reason } => Err(LinkError::Refused(reason)),
        ServerFrame::Response { .. } | ServerFrame::Progress { .. } | ServerFrame::Pipe { .. } => {
            Err(LinkError::Violation("response before welcome"))
        }
    }
}

/// Serves one established connection until either direction fails; then fails every pending
/// request. Returns why the connection ended.
async fn run_link(shared: &Shared, stream: UnixStream, generation: u64) -> LinkError {
    let (reader, writer) = stream.into_split();
    let writer = Arc::new(writer);
    let (frames, mut outgoing) = mpsc::unbounded_channel();
    *shared.lock_link() = Some(Link {
        generation,
        frames,
        queued: false,
        writer: Arc::clone(&writer),
        pending: HashMap::new(),
    });
    shared.connected.send_replace(true);

    let mut reader = FrameReader::new(reader);
    let reason = tokio::select! {
        e = read_responses(shared, &mut reader) => e,
        e = write_frames(shared, &writer, &mut outgoing) => e,
    };

    // Dropping the link drops every pending sender: their callers see Unavailable.
    let link = shared.lock_link().take();
    shared.connected.send_replace(false);
    if let Some(link) = link {
        if !link.pending.is_empty() {
            tracing::warn!(
                requests = link.pending.len(),
                "failing requests that were in flight"
            );
        }
    }
    reason
}

async fn read_responses(shared: &Shared, reader: &mut FrameReader) -> LinkError {
    loop {
        let frame = match reader.next::<ServerFrame<FrontendResponse>>().await {
            Ok(f) => f,
            Err(e) => return e,
        };
        let (id, body) = match frame {
            ServerFrame::Response { id, body } => (id, body),
            ServerFrame::Pipe { id, start } => {
                let Some(fd) = reader.fds.pop_front() else {
                    tracing::error!(id, "executor sent a pipe frame without a descriptor");
                    return LinkError::Violation("pipe frame without a descriptor");
                };
                let taker = shared
                    .lock_link()
                    .as_mut()
                    .and_then(|l| l.pending.get_mut(&id))
                    .and_then(|p| p.pipe.take());
                match taker {
                    Some(tx) => {
                        let _ = tx.send((start, fd));
                    }
                    // Nobody waits: closing our end tells the executor to stop.
                    None => tracing::debug!(id, "pipe for a request nobody waits for"),
                }
                continue;
            }
            ServerFrame::Progress { id, progress } => {
                let link = shared.lock_link();
                let watcher = link
                    .as_ref()
                    .and_then(|l| l.pending.get(&id))
                    .and_then(|p| p.progress.as_ref());
                if let Some(tx) = watcher {
                    // Never wait here: one slow HTTP client must not hold up every answer.
                    let _ = tx.try_send(progress);
                }
                continue;
            }
            ServerFrame::Welcome(_) | ServerFrame::Refused { .. } => {
                tracing::error!("executor sent a handshake frame mid-connection; dropping it");
                return LinkError::Violation("handshake frame after welcome");
            }
        };
        let waiter = shared
            .lock_link()
            .as_mut()
            .and_then(|l| l.pending.remove(&id));
        match waiter {
            // The caller may have gone in the meantime; that is fine. Its spans, if any, are
            // still exported (a download's body is dropped once its last byte is out).
            Some(pending) => {
                if let Err(body) = pending.answer.send(body) {
                    crate::otel::untraced(body);
                }
            }
            // Normal after a Cancel: the executor still answers the cancelled id.
            None => {
                crate::otel::untraced(body);
                tracing::debug!(id, "answer for a request nobody waits for");
            }
        }
    }
}

async fn write_frames(
    shared: &Shared,
    writer: &OwnedWriteHalf,
    outgoing: &mut mpsc::UnboundedReceiver<(Vec<u8>, usize)>,
) -> LinkError {
    while let Some((bytes, mut at)) = outgoing.recv().await {
        while at < bytes.len() {
            if let Err(e) = writer.writable().await {
                return e.into();
            }
            match writer.try_write(&bytes[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return e.into(),
            }
        }
        // All written: senders may write directly again (decided under the lock they send
        // under, so no frame can slip into the queue unseen).
        if let Some(link) = shared.lock_link().as_mut() {
            if outgoing.is_empty() {
                link.queued = false;
            }
        }
    }
    // The sender lives in the link, which outlives this loop.
    LinkError::Violation("outgoing queue closed")
}

/// Smallest read into the frame buffer: several small frames arrive in one system call.
const READ_AT_LEAST: usize = 64 * 1024;
/// A buffer grown past this for one large frame is given back once it is empty.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Reads frames with `recvmsg`, keeping the descriptors that arrive with them (see the module
/// documentation).
struct FrameReader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
    /// Descriptors received and not yet claimed by a `Pipe` frame, oldest first.
    fds: VecDeque<OwnedFd>,
}

impl FrameReader {
    fn new(half: OwnedReadHalf) -> FrameReader {
        FrameReader {
            half,
            buf: Vec::with_capacity(READ_AT_LEAST),
            start: 0,
            fds: VecDeque::new(),
        }
    }

    /// Reads until at least `want` unconsumed bytes are buffered.
    async fn fill(&mut self, want: usize) -> Result<(), LinkError> {
        while self.buf.len() - self.start < want {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let missing = want - self.buf.len();
            self.buf.reserve(missing.max(READ_AT_LEAST));
            let FrameReader { half, buf, fds, .. } = self;
            let stream = half.as_ref();
            let raw = stream.as_raw_fd();
            let n = stream
                .async_io(Interest::READABLE, || {
                    mymcp_sys::net::recv_with_fds(raw, buf, fds)
                })
                .await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
        Ok(())
    }

    async fn next<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, LinkError> {
        self.fill(HEADER_LEN).await?;
        let header: [u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN]
            .try_into()
            .expect("header length");
        let len = frame::body_len(header, MAX_FRAME_LEN)?;
        mymcp_service::memory::large_payload(len);
        self.fill(HEADER_LEN + len).await?;
        let body = self.start + HEADER_LEN;
        let msg = frame::decode(&self.buf[body..body + len])?;
        self.start = body + len;
        if self.start == self.buf.len() {
            self.start = 0;
            if self.buf.capacity() > KEEP_BUFFER {
                self.buf = Vec::with_capacity(READ_AT_LEAST);
            } else {
                self.buf.clear();
            }
        }
        Ok(msg)
    }
}

async fn read_frame<T: serde::de::DeserializeOwned>(
    r: &mut (impl AsyncReadExt + Unpin),
) -> Result<T, LinkError> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).await?;
    let len = frame::body_len(header, MAX_FRAME_LEN)?;
    mymcp_service::memory::large_payload(len);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(frame::decode(&body)?)
}
