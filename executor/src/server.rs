//! Sockets, peer checks and the per-connection state machine.
//!
//! Each socket is served by one [`Service`] with its own closed request set. On every accept
//! the peer's uid (`SO_PEERCRED`) must be the one allowed for that socket, else the connection
//! is closed at once. A connection then moves forward only:
//! `AwaitHello → Ready → Closed`. In `Ready`, each request runs in its own task (many in flight
//! per connection, answered as they finish, optionally preceded by [`Events`] such as progress
//! frames); `Cancel{id}` fires that request's [`CancelSignal`].
//!
//! Shutdown ([`Shutdown::run`]) moves through [`Phase`]s: stop accepting and refuse new
//! commands, SIGTERM to running commands, the grace period, then kill what is left. Requests
//! and background jobs ([`ShutdownWatch`]) are counted, so shutdown knows when all is done. A frame that is oversized, malformed, of an unknown variant, or out of
//! state (a second `Hello`, a duplicate id) is a protocol violation: logged at error level
//! with the peer's pid and uid, and the connection is dropped with all its work cancelled.

use mymcp_protocol::frame::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use mymcp_protocol::{ClientFrame, Hello, Progress, RequestId, ServerFrame, TransferStart};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

/// Most requests one connection may have in flight; more is a violation.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most connections one socket serves at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// Bytes read from a connection at once.
const READ_BUFFER: usize = 16 * 1024;
/// How long a new connection may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer of a connection as the kernel reports it.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: u32,
}

/// Where shutdown has got to. Only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// No new commands; running ones were sent SIGTERM and have the grace period to end.
    Terminating,
    /// The grace period is over: whatever still runs is killed.
    Killing,
}

/// What a running request is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Shutdown began: send running commands SIGTERM, then carry on until they end.
    Terminate,
    /// The client cancelled the request or went away: stop now.
    Cancel,
    /// Shutdown's grace period is over: stop now.
    Kill,
}

/// Follows the shutdown phase for work that runs on its own (background jobs). While it
/// exists, shutdown counts the work as running, so it waits for it and then kills it.
#[derive(Debug)]
pub struct ShutdownWatch {
    phase: watch::Receiver<Phase>,
    terminate_reported: bool,
    /// The sender is gone: the phase can no longer change.
    frozen: bool,
    _running: Option<Running>,
}

impl ShutdownWatch {
    fn new(phase: watch::Receiver<Phase>, running: Option<Running>) -> Self {
        ShutdownWatch {
            phase,
            terminate_reported: false,
            frozen: false,
            _running: running,
        }
    }

    /// A watch whose phase never changes (for tests and internal callers).
    pub fn never() -> ShutdownWatch {
        let (_tx, rx) = watch::channel(Phase::Running);
        ShutdownWatch::new(rx, None)
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        *self.phase.borrow() != Phase::Running
    }

    /// Resolves with [`Stop::Terminate`] once when shutdown begins, then with [`Stop::Kill`]
    /// (every time it is called) once the grace period is over. Cancel-safe.
    pub async fn next(&mut self) -> Stop {
        loop {
            // Copied out at once: no `watch::Ref` (not `Send`) may live across an await.
            let phase = *self.phase.borrow_and_update();
            match phase {
                Phase::Killing => return Stop::Kill,
                Phase::Terminating if !self.terminate_reported => {
                    self.terminate_reported = true;
                    return Stop::Terminate;
                }
                _ => {}
            }
            if self.frozen || self.phase.changed().await.is_err() {
                self.frozen = true;
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Stops the work of one request: fires when its client cancels it or its connection goes
/// away, and follows shutdown (see [`Stop`]). Never fires for a request that is simply
/// answered.
#[derive(Debug)]
pub struct CancelSignal {
    /// `None` once it resolved (cancelled, or its sender went away without cancelling).
    request: Option<oneshot::Receiver<()>>,
    shutdown: ShutdownWatch,
    detach: Option<Arc<Shutdown>>,
}

impl CancelSignal {
    /// A signal that never fires (for tests and internal callers).
    pub fn never() -> CancelSignal {
        CancelSignal {
            request: None,
            shutdown: ShutdownWatch::never(),
            detach: None,
        }
    }

    /// Whether shutdown has begun: new commands must be refused.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.shutting_down()
    }

    /// The next thing the work should do. Cancel-safe.
    pub async fn next(&mut self) -> Stop {
        loop {
            let Some(request) = self.request.as_mut() else {
                return self.shutdown.next().await;
            };
            tokio::select! {
                biased;
                r = request => {
                    self.request = None;
                    if r.is_ok() {
                        return Stop::Cancel;
                    }
                    // The sender went away without cancelling: only shutdown can stop us now.
                }
                stop = self.shutdown.next() => return stop,
            }
        }
    }

    /// A watch for work that outlives this request (a background job): it follows shutdown
    /// only, and shutdown waits for it.
    pub fn detach(&self) -> ShutdownWatch {
        match &self.detach {
            Some(shutdown) => shutdown.watch(),
            None => ShutdownWatch::never(),
        }
    }
}

/// Sends a request's frames other than its response: [`ServerFrame::Progress`] and
/// [`ServerFrame::Pipe`].
#[derive(Clone, Debug)]
pub struct Events {
    id: RequestId,
    out: Option<Arc<Outbox>>,
    encode: fn(RequestId, Progress) -> Result<Vec<u8>, FrameError>,
    encode_pipe: fn(RequestId, TransferStart) -> Result<Vec<u8>, FrameError>,
}

impl Events {
    /// Events that go nowhere (for tests and internal callers).
    pub fn none() -> Events {
        Events {
            id: 0,
            out: None,
            encode: encode_progress::<()>,
            encode_pipe: encode_pipe::<()>,
        }
    }

    fn new<R: Serialize>(id: RequestId, out: Arc<Outbox>) -> Events {
        Events {
            id,
            out: Some(out),
            encode: encode_progress::<R>,
            encode_pipe: encode_pipe::<R>,
        }
    }

    /// Queues a progress frame, or drops it when the connection's queue is full: progress is
    /// a courtesy and must never hold up an answer.
    pub fn progress(&self, progress: Progress) {
        let Some(out) = &self.out else { return };
        match (self.encode)(self.id, progress) {
            Ok(buf) => out.try_queue(Outgoing::frame(buf, None)),
            Err(e) => tracing::error!(error = %e, "progress frame does not encode"),
        }
    }

    /// Sends a [`ServerFrame::Pipe`] with `pipe` attached (`SCM_RIGHTS`). Our copy of the
    /// descriptor is closed once it has been sent. Waits for room in the connection's queue;
    /// returns whether the frame was queued (false when the connection is gone).
    pub async fn pipe(&self, start: TransferStart, pipe: OwnedFd) -> bool {
        let Some(out) = &self.out else { return false };
        match (self.encode_pipe)(self.id, start) {
            Ok(buf) => {
                out.queue(Outgoing {
                    buf,
                    _finishes: None,
                    fd: Some(pipe),
                })
                .await
            }
            Err(e) => {
                tracing::error!(error = %e, "pipe frame does not encode");
                false
            }
        }
    }
}

fn encode_progress<R: Serialize>(id: RequestId, progress: Progress) -> Result<Vec<u8>, FrameError> {
    frame::encode(&ServerFrame::<R>::Progress { id, progress })
}

fn encode_pipe<R: Serialize>(id: RequestId, start: TransferStart) -> Result<Vec<u8>, FrameError> {
    frame::encode(&ServerFrame::<R>::Pipe { id, start })
}

/// Resolves once the flag turns true (never, if its sender is gone). Returns `()` so that no
/// `watch::Ref` (not `Send`) lives inside the caller's future.
async fn until_set(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|f| *f).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serves one socket's request set.
pub trait Service: Send + Sync + 'static {
    type Request: DeserializeOwned + Send + 'static;
    type Response: Serialize + Send + 'static;

    /// Runs one request. Ordinary failures are part of `Response`; there is no error path.
    fn handle(
        self: Arc<Self>,
        request: Self::Request,
        peer: Peer,
        cancel: CancelSignal,
        events: Events,
    ) -> impl Future<Output = Self::Response> + Send;

    /// Answers `request` at once if it needs neither waiting nor blocking work (a token
    /// lookup, say), else hands it back to run in a task of its own through
    /// [`Service::handle`]. An answer given here is written by the connection's reader
    /// itself: no task, no queue, so a cheap request costs one wake-up of the executor.
    fn answer_now(
        &self,
        request: Self::Request,
        peer: Peer,
    ) -> Result<Self::Response, Self::Request> {
        let _ = peer;
        Err(request)
    }

    /// Whether `request` is blocking work from start to end (file system calls, say): it then
    /// runs whole on the blocking pool, its answer written from there, instead of in a task
    /// that hands the blocking part to the pool and must be woken again for the result — one
    /// thread hand-off per request instead of two. [`on_blocking_pool`] tells such work that
    /// it may block where it is.
    fn runs_blocking(&self, request: &Self::Request) -> bool {
        let _ = request;
        false
    }
}

/// Requests running whole on the blocking pool now, and how many may.
static WHOLE_ON_POOL: AtomicUsize = AtomicUsize::new(0);
const WHOLE_ON_POOL_MAX: usize = 2;

thread_local! {
    static ON_BLOCKING_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// One of the [`WHOLE_ON_POOL_MAX`] places for a request running whole on the blocking pool;
/// given back when dropped (also if the request panics).
struct WholeOnPool;

impl WholeOnPool {
    fn take() -> Option<WholeOnPool> {
        WHOLE_ON_POOL
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < WHOLE_ON_POOL_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| WholeOnPool)
    }

    /// Marks this thread as running the request (see [`on_blocking_pool`]) until the returned
    /// value is dropped.
    fn enter(self) -> OnThisThread {
        ON_BLOCKING_POOL.with(|f| f.set(true));
        OnThisThread { _place: self }
    }
}

impl Drop for WholeOnPool {
    fn drop(&mut self) {
        WHOLE_ON_POOL.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds the place until the request is done.
struct OnThisThread {
    _place: WholeOnPool,
}

impl Drop for OnThisThread {
    fn drop(&mut self) {
        ON_BLOCKING_POOL.with(|f| f.set(false));
    }
}

/// Whether this thread is running a request that [`Service::runs_blocking`] sent to the
/// blocking pool (so blocking calls need no hand-off of their own).
pub fn on_blocking_pool() -> bool {
    ON_BLOCKING_POOL.with(|f| f.get())
}

/// Shared shutdown state: stop taking work, SIGTERM to running commands, then (after the
/// grace) kill whatever still runs.
#[derive(Debug)]
pub struct Shutdown {
    stop_accepting: watch::Sender<bool>,
    phase: watch::Sender<Phase>,
    in_flight: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            stop_accepting: watch::channel(false).0,
            phase: watch::channel(Phase::Running).0,
            in_flight: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
        }
    }
}

impl Shutdown {
    /// Requests and background jobs running anywhere right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops accepting connections and new commands, sends running commands SIGTERM (through
    /// their [`CancelSignal`]s and [`ShutdownWatch`]es), waits up to `grace` for all work to
    /// end, then kills what is left and waits (briefly) for it to answer.
    pub async fn run(&self, grace: Duration) {
        self.stop_accepting.send_replace(true);
        self.phase.send_replace(Phase::Terminating);
        if tokio::time::timeout(grace, self.wait_idle()).await.is_err() {
            tracing::warn!(
                running = self.in_flight(),
                "grace period over; killing what still runs"
            );
            self.phase.send_replace(Phase::Killing);
            if tokio::time::timeout(Duration::from_secs(3), self.wait_idle())
                .await
                .is_err()
            {
                tracing::error!(
                    running = self.in_flight(),
                    "work still running 3 s after it was killed"
                );
            }
        }
    }

    async fn wait_idle(&self) {
        while self.in_flight() > 0 {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                break;
            }
            notified.await;
        }
    }

    /// A watch on the phase that counts as running work while it lives.
    pub fn watch(self: &Arc<Self>) -> ShutdownWatch {
        ShutdownWatch::new(self.phase.subscribe(), Some(self.running()))
    }

    fn running(self: &Arc<Self>) -> Running {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    fn signal(self: &Arc<Self>, request: oneshot::Receiver<()>) -> CancelSignal {
        CancelSignal {
            request: Some(request),
            shutdown: ShutdownWatch::new(self.phase.subscribe(), None),
            detach: Some(self.clone()),
        }
    }
}

/// One unit of running work; shutdown waits until every one is dropped.
#[derive(Debug)]
struct Running(Arc<Shutdown>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Creates (if needed) the runtime directory: mode 0750, owned by root and the frontend's
/// group so that the frontend can reach `executor.sock` but not list anything else.
pub fn prepare_runtime_dir(dir: &Path, group: Option<u32>) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if meta.permissions().mode() & 0o002 != 0 {
                return Err(io::Error::other(format!(
                    "{} is world-writable; refusing to use it",
                    dir.display()
                )));
            }
            Ok(())
        }
        Ok(_) => Err(io::Error::other(format!(
            "{} exists and is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
            if let Some(gid) = group {
                std::os::unix::fs::chown(dir, None, Some(gid))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Binds a Unix socket at `path` with the given mode and group, replacing a stale socket (but
/// never any other kind of file).
pub fn bind(path: &Path, mode: u32, group: Option<u32>) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Until chmod the socket has the umask's mode; it starts without group/other write bits
    // (umask 022 or stricter is enforced by main), so nobody else can connect in between.
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Where a listening socket came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Passed by the service manager (socket activation): it created the file with the
    /// unit's owner and mode, and removes it.
    Activated,
    /// Bound here: removed again at shutdown.
    Bound,
}

/// The executor's two listeners.
#[derive(Debug)]
pub struct Listeners {
    pub executor: (UnixListener, Origin),
    pub control: (UnixListener, Origin),
}

/// The sockets `executor` and `control`: taken from `activated` (socket activation,
/// `FileDescriptorName=executor` / `control`; unnamed sockets count in that order), else bound
/// in `runtime_dir` (created if needed) with modes 0660 (group `group`) and 0600.
pub fn listeners(
    runtime_dir: &Path,
    group: Option<u32>,
    mut activated: Vec<mymcp_service::activation::Activated>,
) -> io::Result<Listeners> {
    use mymcp_service::activation::{named, unix_listener};
    if activated.iter().all(|s| s.name == "unknown") {
        for (socket, name) in activated.iter_mut().zip(["executor", "control"]) {
            socket.name = name.to_owned();
        }
    }
    let (exec_path, control_path) = socket_paths(runtime_dir);
    let mut take = |name: &str, path: &Path, mode: u32, group: Option<u32>| {
        if let Some(fd) = named(&mut activated, name) {
            let listener = unix_listener(fd)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    UnixListener::from_std(l)
                })
                .map_err(|e| io::Error::new(e.kind(), format!("passed socket {name}: {e}")))?;
            return Ok((listener, Origin::Activated));
        }
        prepare_runtime_dir(runtime_dir, group).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("runtime directory {}: {e}", runtime_dir.display()),
            )
        })?;
        let listener = bind(path, mode, group)
            .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))?;
        Ok::<_, io::Error>((listener, Origin::Bound))
    };
    let executor = take("executor", &exec_path, 0o660, group)?;
    let control = take("control", &control_path, 0o600, None)?;
    for unused in activated {
        tracing::warn!(name = %unused.name, "ignoring a passed socket with an unknown name (expected executor or control)");
    }
    Ok(Listeners { executor, control })
}

/// Accepts connections on `listener` from `allowed_uid` only, until shutdown.
pub async fn serve<S: Service>(
    name: &'static str,
    listener: UnixListener,
    allowed_uid: u32,
    service: Arc<S>,
    shutdown: Arc<Shutdown>,
) {
    let connections = Arc::new(AtomicUsize::new(0));
    let mut stop = shutdown.stop_accepting.subscribe();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::error!(socket = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = until_set(&mut stop) => return,
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                pid: c.pid(),
                uid: c.uid(),
            },
            Err(e) => {
                tracing::error!(socket = name, error = %e, "SO_PEERCRED failed; closing connection");
                continue;
            }
        };
        if peer.uid != allowed_uid {
            tracing::warn!(socket = name, peer_uid = peer.uid, peer_pid = ?peer.pid, allowed_uid, "refused connection from a uid that may not use this socket");
            continue;
        }
        if connections.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            tracing::warn!(socket = name, peer_pid = ?peer.pid, "too many connections; closing the new one");
            continue;
        }
        connections.fetch_add(1, Ordering::SeqCst);
        let (service, shutdown, connections) =
            (service.clone(), shutdown.clone(), connections.clone());
        tokio::spawn(async move {
            if let Err(v) = connection(stream, peer, service, &shutdown).await {
                tracing::error!(socket = name, peer_uid = peer.uid, peer_pid = ?peer.pid, violation = %v, "protocol violation; connection dropped");
            }
            connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Why a connection was dropped.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("no Hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("expected Hello first")]
    NotHello,
    #[error("Hello after the handshake")]
    SecondHello,
    #[error("request id {0} is already in flight")]
    DuplicateId(RequestId),
    #[error("more than {MAX_IN_FLIGHT} requests in flight")]
    TooManyInFlight,
}

enum Read<T> {
    Frame(T),
    Eof,
}

/// Reads one frame. The body buffer grows only as bytes arrive, so a header promising a large
/// body costs nothing until the body is really sent.
async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Read<T>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(Read::Eof)
            } else {
                Err(io::Error::from(io::ErrorKind::UnexpectedEof).into())
            };
        }
        got += n;
    }
    let len = frame::body_len(header, MAX_FRAME_LEN)?;
    mymcp_service::memory::large_payload(len);
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    r.take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Read::Frame(frame::decode(&body)?))
}

/// A frame for the connection's writer, with the request it finishes (if any): shutdown
/// counts that request as running until its answer is written, so the executor does not exit
/// with answers unsent. `fd` travels with the frame's first byte as `SCM_RIGHTS`.
#[derive(Debug)]
struct Outgoing {
    buf: Vec<u8>,
    /// Held until the frame is written (see above); only its drop matters.
    _finishes: Option<Running>,
    fd: Option<OwnedFd>,
}

impl Outgoing {
    fn frame(buf: Vec<u8>, finishes: Option<Running>) -> Outgoing {
        Outgoing {
            buf,
            _finishes: finishes,
            fd: None,
        }
    }
}

/// The way out of one connection: the writer task's queue, and the write half itself for a
/// frame that may overtake the queue.
///
/// Frames of one request must leave in the order they were made (progress and pipe frames
/// before the answer); frames of different requests need no order. So an answer is written
/// by the task that made it — no queue, no wake-up of the writer task — when the write half
/// is free and no queued frame is waiting or being written, since such a frame could be an
/// earlier one of the same request. Else it queues like any other frame.
#[derive(Debug)]
struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    wr: Arc<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>,
    /// Frames queued and not yet written whole: raised before a frame is queued, lowered by
    /// the writer task once it is written (or when queueing fails).
    queued: Arc<AtomicUsize>,
    /// Set when the connection broke the protocol: nothing more is written to it.
    dropped: std::sync::atomic::AtomicBool,
}

impl Outbox {
    /// Queues a frame for the writer task; waits for room. False: the connection is gone.
    async fn queue(&self, out: Outgoing) -> bool {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let sent = self.tx.send(out).await.is_ok();
        if !sent {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    /// Queues a frame if there is room, else drops it.
    fn try_queue(&self, out: Outgoing) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(out).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sends a request's last frame: written at once when nothing is queued before it (see
    /// above), else queued. False: the connection is gone.
    async fn finish(&self, out: Outgoing) -> bool {
        debug_assert!(out.fd.is_none());
        if self.dropped.load(Ordering::Acquire) {
            return false;
        }
        if let Ok(mut wr) = self.wr.try_lock() {
            // Checked while holding the write half: the writer task lowers the count only
            // after writing, which it does holding the write half.
            if self.queued.load(Ordering::Acquire) == 0 {
                return wr.write_all(&out.buf).await.is_ok();
            }
        }
        self.queue(out).await
    }

    /// Encodes and sends a request's last frame (see [`Outbox::finish`]). False: the
    /// connection is gone (a frame that does not encode is logged and skipped).
    async fn answer<R: Serialize>(&self, msg: ServerFrame<R>, finishes: Option<Running>) -> bool {
        match frame::encode(&msg) {
            Ok(buf) => {
                mymcp_service::memory::large_payload(buf.len());
                self.finish(Outgoing::frame(buf, finishes)).await
            }
            Err(e) => {
                tracing::error!(error = %e, "response does not encode");
                true
            }
        }
    }
}

/// Writes one frame; a descriptor goes with its first byte (`sendmsg` + `SCM_RIGHTS`), the
/// rest follows as plain bytes.
async fn write_frame(wr: &mut tokio::net::unix::OwnedWriteHalf, out: Outgoing) -> io::Result<()> {
    let mut at = 0;
    if let Some(fd) = &out.fd {
        let sock = wr.as_ref();
        let raw = sock.as_raw_fd();
        at = sock
            .async_io(Interest::WRITABLE, || {
                crate::sys::pipe::send_with_fd(raw, &out.buf, fd.as_fd())
            })
            .await?;
    }
    wr.write_all(&out.buf[at..]).await
}

type InFlight = Arc<Mutex<HashMap<RequestId, oneshot::Sender<()>>>>;

async fn connection<S: Service>(
    stream: UnixStream,
    peer: Peer,
    service: Arc<S>,
    shutdown: &Arc<Shutdown>,
) -> Result<(), Violation> {
    let (rd, wr) = stream.into_split();
    // Buffered: a whole small frame (header and body) comes in with one system call.
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
    // The write half is taken by whoever writes one whole frame: the writer task for queued
    // frames, or the reader for an answer it gave at once (see [`Service::answer_now`]).
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let (tx, mut rx) = mpsc::channel::<Outgoing>(256);
    let queued = Arc::new(AtomicUsize::new(0));
    let outbox = Arc::new(Outbox {
        tx,
        wr: wr.clone(),
        queued: queued.clone(),
        dropped: Default::default(),
    });
    // The writer task holds no sender: the queue closes once every `Outbox` is gone.
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let mut w = wr.lock().await;
            let written = write_frame(&mut w, out).await;
            // Lowered while the write half is held (see `Outbox::finish`).
            queued.fetch_sub(1, Ordering::AcqRel);
            drop(w);
            if written.is_err() {
                break;
            }
        }
    });

    // AwaitHello
    let first = tokio::time::timeout(
        HELLO_TIMEOUT,
        read_frame::<ClientFrame<S::Request>, _>(&mut rd),
    )
    .await
    .map_err(|_| Violation::HelloTimeout(HELLO_TIMEOUT))??;
    match first {
        Read::Eof => return Ok(()),
        Read::Frame(ClientFrame::Hello(h)) if h.is_compatible() => {
            outbox
                .answer::<S::Response>(ServerFrame::Welcome(Hello::current()), None)
                .await;
        }
        Read::Frame(ClientFrame::Hello(h)) => {
            tracing::error!(peer_uid = peer.uid, peer_pid = ?peer.pid, theirs = ?h, ours = ?Hello::current(), "peer runs a different build; refusing");
            let reason = format!(
                "incompatible peer: wire {} build {} (executor has wire {} build {})",
                h.wire_version,
                h.build_id,
                mymcp_protocol::WIRE_VERSION,
                mymcp_protocol::BUILD_ID
            );
            outbox
                .answer::<S::Response>(ServerFrame::Refused { reason }, None)
                .await;
            drop(outbox);
            let _ = writer.await;
            return Ok(());
        }
        Read::Frame(_) => return Err(Violation::NotHello),
    }

    // Ready
    let in_flight: InFlight = Arc::default();
    let result = loop {
        let frame = match read_frame::<ClientFrame<S::Request>, _>(&mut rd).await {
            Ok(Read::Frame(f)) => f,
            Ok(Read::Eof) => break Ok(()),
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => break Ok(()),
            Err(e) => break Err(Violation::Frame(e)),
        };
        match frame {
            ClientFrame::Hello(_) => break Err(Violation::SecondHello),
            ClientFrame::Cancel { id } => {
                if let Some(c) = in_flight.lock().expect("in-flight lock").remove(&id) {
                    let _ = c.send(());
                }
            }
            ClientFrame::Request { id, body } => {
                let (ctx, crx) = oneshot::channel();
                let body = {
                    let mut map = in_flight.lock().expect("in-flight lock");
                    if map.len() >= MAX_IN_FLIGHT {
                        break Err(Violation::TooManyInFlight);
                    }
                    if map.contains_key(&id) {
                        break Err(Violation::DuplicateId(id));
                    }
                    match service.answer_now(body, peer) {
                        Ok(answer) => Err(answer),
                        Err(body) => {
                            map.insert(id, ctx);
                            Ok(body)
                        }
                    }
                };
                let body = match body {
                    Ok(body) => body,
                    Err(answer) => {
                        let frame = ServerFrame::Response { id, body: answer };
                        if !outbox.answer(frame, None).await {
                            break Ok(());
                        }
                        continue;
                    }
                };
                let cancel = shutdown.signal(crx);
                let events = Events::new::<S::Response>(id, outbox.clone());
                let running = shutdown.running();
                let blocking = service.runs_blocking(&body);
                let (service, outbox, in_flight) =
                    (service.clone(), outbox.clone(), in_flight.clone());
                let run = async move {
                    let body = service.handle(body, peer, cancel, events).await;
                    in_flight.lock().expect("in-flight lock").remove(&id);
                    outbox
                        .answer(ServerFrame::Response { id, body }, Some(running))
                        .await;
                };
                // Only while few do: under load the runtime's workers are awake anyway (the
                // result needs no wake-up), and more requests on the pool means more threads.
                match blocking.then(WholeOnPool::take).flatten() {
                    Some(slot) => {
                        let runtime = tokio::runtime::Handle::current();
                        tokio::task::spawn_blocking(move || {
                            let _slot = slot.enter();
                            runtime.block_on(run);
                        });
                    }
                    None => {
                        tokio::spawn(run);
                    }
                }
            }
        }
    };
    // The connection is gone or broken: nobody is left to receive answers, so stop the work;
    // a connection that broke the protocol gets nothing more, not even their answers.
    if result.is_err() {
        outbox.dropped.store(true, Ordering::Release);
    }
    for (_, c) in in_flight.lock().expect("in-flight lock").drain() {
        let _ = c.send(());
    }
    drop(outbox);
    if result.is_err() {
        writer.abort();
    } else {
        let _ = writer.await;
    }
    result
}

/// Paths of the two sockets inside a runtime directory.
pub fn socket_paths(runtime_dir: &Path) -> (PathBuf, PathBuf) {
    (
        runtime_dir.join("executor.sock"),
        runtime_dir.join("control.sock"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const SHORT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn shutdown_sends_terminate_then_after_the_grace_kill() {
        let shutdown = Arc::new(Shutdown::default());
        let (_answered_later, rx) = oneshot::channel();
        let mut request = shutdown.signal(rx);
        let mut job = request.detach();
        assert_eq!(shutdown.in_flight(), 1, "detached work counts as running");
        assert!(!request.shutting_down());

        let grace = Duration::from_millis(300);
        let run = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.run(grace).await }
        });
        let t = Instant::now();
        assert_eq!(request.next().await, Stop::Terminate);
        assert!(request.shutting_down());
        assert_eq!(job.next().await, Stop::Terminate);
        assert_eq!(request.next().await, Stop::Kill);
        assert!(
            t.elapsed() >= grace - Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(job.next().await, Stop::Kill);
        assert_eq!(job.next().await, Stop::Kill, "kill stays");
        drop(job);
        tokio::time::timeout(Duration::from_secs(1), run)
            .await
            .expect("shutdown returns once the work is gone")
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_ends_early_when_the_work_does() {
        let shutdown = Arc::new(Shutdown::default());
        let job = shutdown.watch();
        let run = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.run(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(SHORT).await;
        assert!(!run.is_finished(), "shutdown waits for running work");
        drop(job);
        tokio::time::timeout(Duration::from_secs(1), run)
            .await
            .expect("no need to wait out the grace")
            .unwrap();
        assert_eq!(*shutdown.phase.borrow(), Phase::Terminating);
    }

    #[tokio::test]
    async fn a_request_fires_only_when_cancelled() {
        let shutdown = Arc::new(Shutdown::default());
        let (tx, rx) = oneshot::channel();
        let mut cancelled = shutdown.signal(rx);
        tx.send(()).unwrap();
        assert_eq!(cancelled.next().await, Stop::Cancel);

        let (tx, rx) = oneshot::channel::<()>();
        let mut answered = shutdown.signal(rx);
        drop(tx);
        assert!(tokio::time::timeout(SHORT, answered.next()).await.is_err());
        assert!(tokio::time::timeout(SHORT, CancelSignal::never().next())
            .await
            .is_err());
    }
}
