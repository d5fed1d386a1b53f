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
//! state (a second `Hello`, a duplicate id), or one that stops arriving half way
//! ([`FRAME_TIMEOUT`]), is a protocol violation: logged at error level with the peer's pid and
//! uid, and the connection is dropped with all its work cancelled.
//!
//! What a connection can make the executor hold is bounded, and reaching a bound stops the
//! reading of that connection (backpressure: the peer's writes block) rather than growing
//! anything: [`MAX_IN_FLIGHT`] requests from the moment their frame is read until their answer
//! has been written; [`MAX_UNWRITTEN_BYTES`] of answers waiting to be written; and bytes of
//! request frames, from their header until their request has run (partial frames included),
//! per connection and per socket (see [`Room`]). No task ever waits for a peer to read: an
//! answer the socket does not take at once is queued for the connection's writer.

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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};

/// Most requests one connection may have read and not yet answered: a request counts from the
/// moment its frame is read until its answer has been written to the socket. At this many,
/// the connection is not read from until an answer has been written.
const MAX_IN_FLIGHT: usize = 1024;
/// Most connections one socket serves at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// Bytes read from a connection at once.
const READ_BUFFER: usize = 16 * 1024;
/// How long a new connection may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `Hello` frame (one is about 40 bytes): before its handshake a connection can make
/// the executor hold no more than this.
const MAX_HELLO_LEN: usize = 1024;
/// Once a frame has begun, the time for the rest of its header, and for its body from the
/// moment the executor has room for it (waiting for room is not the peer's doing). Frames are
/// encoded whole before they are sent, so a body comes as fast as the socket moves it: 32 MiB
/// takes well under a second even on a loaded host, and 15 s leaves a wide margin for a
/// starved peer, while a connection that stops half way holds its room for at most that long.
const FRAME_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes of request frames one connection may hold (from a frame's header until its request
/// has run): two frames of the largest size.
const CONNECTION_REQUEST_BYTES: usize = 2 * MAX_FRAME_LEN;
/// Bytes of request frames the connections of one socket may hold together, beyond each
/// connection's own allowance: three frames of the largest size (96 MiB).
const SHARED_REQUEST_BYTES: usize = 3 * MAX_FRAME_LEN;
/// Request bytes each connection has to itself, apart from the shared pool: small requests
/// keep flowing while others have filled the pool (64 connections hold 16 MiB of it at most).
const OWN_REQUEST_BYTES: usize = 256 * 1024;
/// Bytes of answers one connection may have waiting to be written; beyond, it is not read
/// from until they are written.
const MAX_UNWRITTEN_BYTES: usize = 16 * 1024 * 1024;
/// Progress frames are dropped rather than queued behind this many frames.
const PROGRESS_QUEUE_MAX: usize = 256;

/// The peer of a connection as the kernel reports it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub(crate) pid: Option<i32>,
    pub(crate) uid: u32,
}

/// Where shutdown has got to. Only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// No new commands; running ones were sent SIGTERM and have the grace period to end.
    Terminating,
    /// The grace period is over: whatever still runs is killed.
    Killing,
}

/// What a running request is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
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
pub(crate) struct ShutdownWatch {
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
    pub(crate) fn never() -> ShutdownWatch {
        let (_tx, rx) = watch::channel(Phase::Running);
        ShutdownWatch::new(rx, None)
    }

    /// Whether shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        *self.phase.borrow() != Phase::Running
    }

    /// Resolves with [`Stop::Terminate`] once when shutdown begins, then with [`Stop::Kill`]
    /// (every time it is called) once the grace period is over. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Stop {
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
pub(crate) struct CancelSignal {
    /// `None` once it resolved (cancelled, or its sender went away without cancelling).
    request: Option<oneshot::Receiver<()>>,
    shutdown: ShutdownWatch,
    detach: Option<Arc<Shutdown>>,
}

impl CancelSignal {
    /// A signal that never fires (for tests and internal callers).
    #[cfg(test)]
    pub(crate) fn never() -> CancelSignal {
        CancelSignal {
            request: None,
            shutdown: ShutdownWatch::never(),
            detach: None,
        }
    }

    /// Whether shutdown has begun: new commands must be refused.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.shutting_down()
    }

    /// The next thing the work should do. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Stop {
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
    pub(crate) fn detach(&self) -> ShutdownWatch {
        match &self.detach {
            Some(shutdown) => shutdown.watch(),
            None => ShutdownWatch::never(),
        }
    }
}

/// Sends a request's frames other than its response: [`ServerFrame::Progress`] and
/// [`ServerFrame::Pipe`].
#[derive(Clone, Debug)]
pub(crate) struct Events {
    id: RequestId,
    out: Option<Arc<Outbox>>,
    encode: fn(RequestId, Progress) -> Result<Vec<u8>, FrameError>,
    encode_pipe: fn(RequestId, TransferStart) -> Result<Vec<u8>, FrameError>,
}

impl Events {
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
    pub(crate) fn progress(&self, progress: Progress) {
        let Some(out) = &self.out else { return };
        match (self.encode)(self.id, progress) {
            Ok(buf) => out.queue_progress(Outgoing::frame(buf, None)),
            Err(e) => tracing::error!(error = %e, "progress frame does not encode"),
        }
    }

    /// Sends a [`ServerFrame::Pipe`] with `pipe` attached (`SCM_RIGHTS`). Our copy of the
    /// descriptor is closed once it has been sent. Returns whether the frame was queued (false
    /// when the connection is gone).
    pub(crate) async fn pipe(&self, start: TransferStart, pipe: OwnedFd) -> bool {
        let Some(out) = &self.out else { return false };
        match (self.encode_pipe)(self.id, start) {
            Ok(buf) => out.queue(Outgoing {
                buf,
                at: 0,
                _finishes: None,
                fd: Some(pipe),
            }),
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
pub(crate) trait Service: Send + Sync + 'static {
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
pub(crate) fn on_blocking_pool() -> bool {
    ON_BLOCKING_POOL.with(|f| f.get())
}

/// Shared shutdown state: stop taking work, SIGTERM to running commands, then (after the
/// grace) kill whatever still runs.
#[derive(Debug)]
pub(crate) struct Shutdown {
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
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops accepting connections and new commands, sends running commands SIGTERM (through
    /// their [`CancelSignal`]s and [`ShutdownWatch`]es), waits up to `grace` for all work to
    /// end, then kills what is left and waits (briefly) for it to answer.
    pub(crate) async fn run(&self, grace: Duration) {
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
    pub(crate) fn watch(self: &Arc<Self>) -> ShutdownWatch {
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
fn prepare_runtime_dir(dir: &Path, group: Option<u32>) -> io::Result<()> {
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
pub(crate) fn bind(path: &Path, mode: u32, group: Option<u32>) -> io::Result<UnixListener> {
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
pub(crate) enum Origin {
    /// Passed by the service manager (socket activation): it created the file with the
    /// unit's owner and mode, and removes it.
    Activated,
    /// Bound here: removed again at shutdown.
    Bound,
}

/// The executor's two listeners.
#[derive(Debug)]
pub(crate) struct Listeners {
    pub(crate) executor: (UnixListener, Origin),
    pub(crate) control: (UnixListener, Origin),
}

/// The sockets `executor` and `control`: taken from `activated` (socket activation,
/// `FileDescriptorName=executor` / `control`; unnamed sockets count in that order), else bound
/// in `runtime_dir` (created if needed) with modes 0660 (group `group`) and 0600.
pub(crate) fn listeners(
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
pub(crate) async fn serve<S: Service>(
    name: &'static str,
    listener: UnixListener,
    allowed_uid: u32,
    service: Arc<S>,
    shutdown: Arc<Shutdown>,
) {
    let connections = Arc::new(AtomicUsize::new(0));
    // The pool of request bytes this socket's connections share (see `Room`).
    let shared_room = Arc::new(Semaphore::new(SHARED_REQUEST_BYTES));
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
        let (service, shutdown, connections, shared_room) = (
            service.clone(),
            shutdown.clone(),
            connections.clone(),
            shared_room.clone(),
        );
        tokio::spawn(async move {
            if let Err(v) = connection(stream, peer, service, &shutdown, shared_room).await {
                tracing::error!(socket = name, peer_uid = peer.uid, peer_pid = ?peer.pid, violation = %v, "protocol violation; connection dropped");
            }
            connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Why a connection was dropped.
#[derive(Debug, thiserror::Error)]
enum Violation {
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
    #[error("a frame did not arrive whole within {0:?} of its start")]
    FrameTimeout(Duration),
}

enum Read<T> {
    Frame(T, RequestBytes),
    Eof,
}

/// Room for the bytes of request frames: a connection's own, and a pool its socket's
/// connections share. A frame takes its length from the connection's budget
/// ([`CONNECTION_REQUEST_BYTES`]) and from either its own allowance ([`OWN_REQUEST_BYTES`]),
/// if it fits there, or the shared pool ([`SHARED_REQUEST_BYTES`]); it waits, unread, until
/// both have room. The bytes are held until the frame's request has run (or the frame is
/// dropped), so partial frames and decoded requests are bounded alike.
#[derive(Debug)]
struct Room {
    connection: Arc<Semaphore>,
    own: Arc<Semaphore>,
    shared: Arc<Semaphore>,
}

/// Request bytes held by one frame and then by its request; given back on drop.
#[derive(Debug)]
struct RequestBytes {
    _connection: OwnedSemaphorePermit,
    _pool: OwnedSemaphorePermit,
}

impl Room {
    fn new(shared: Arc<Semaphore>) -> Room {
        Room {
            connection: Arc::new(Semaphore::new(CONNECTION_REQUEST_BYTES)),
            own: Arc::new(Semaphore::new(OWN_REQUEST_BYTES)),
            shared,
        }
    }

    /// Waits until there is room for `len` bytes (at most [`MAX_FRAME_LEN`]) and takes it.
    async fn take(&self, len: usize) -> RequestBytes {
        debug_assert!(len <= MAX_FRAME_LEN);
        let n = u32::try_from(len).expect("a frame length fits in u32");
        // Neither semaphore is ever closed.
        let connection = self
            .connection
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("open semaphore");
        let pool = match self.own.clone().try_acquire_many_owned(n) {
            Ok(own) => own,
            Err(_) => self
                .shared
                .clone()
                .acquire_many_owned(n)
                .await
                .expect("open semaphore"),
        };
        RequestBytes {
            _connection: connection,
            _pool: pool,
        }
    }
}

/// Runs one step of reading a frame within `limit`.
async fn within<T>(
    limit: Duration,
    step: impl Future<Output = io::Result<T>>,
) -> Result<T, Violation> {
    match tokio::time::timeout(limit, step).await {
        Ok(r) => r.map_err(|e| Violation::Frame(e.into())),
        Err(_) => Err(Violation::FrameTimeout(limit)),
    }
}

/// Reads one frame of at most `max` bytes. Its first byte may take as long as the peer likes
/// (an idle connection is allowed); then the rest of the header must come within
/// [`FRAME_TIMEOUT`], the reader waits for [`Room`] for the body, and the body must come
/// within [`FRAME_TIMEOUT`] of that.
async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    room: &Room,
    max: usize,
) -> Result<Read<T>, Violation> {
    let mut header = [0u8; HEADER_LEN];
    let got = r.read(&mut header).await.map_err(FrameError::from)?;
    if got == 0 {
        return Ok(Read::Eof);
    }
    within(FRAME_TIMEOUT, r.read_exact(&mut header[got..])).await?;
    let len = frame::body_len(header, max)?;
    let bytes = room.take(len).await;
    mymcp_service::memory::large_payload(len);
    // Allocated once; pages are touched only as bytes arrive.
    let mut body = Vec::with_capacity(len);
    within(FRAME_TIMEOUT, async {
        while body.len() < len {
            let rest = (len - body.len()) as u64;
            if (&mut *r).take(rest).read_buf(&mut body).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
        }
        Ok(())
    })
    .await?;
    Ok(Read::Frame(frame::decode(&body)?, bytes))
}

/// A frame for the connection's writer, and what its being written finishes (if anything).
/// `fd` travels with the frame's first byte as `SCM_RIGHTS`.
#[derive(Debug)]
struct Outgoing {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    at: usize,
    /// Held until the frame is written; only its drop matters.
    _finishes: Option<Finishes>,
    fd: Option<OwnedFd>,
}

impl Outgoing {
    fn frame(buf: Vec<u8>, finishes: Option<Finishes>) -> Outgoing {
        Outgoing {
            buf,
            at: 0,
            _finishes: finishes,
            fd: None,
        }
    }
}

/// What writing a request's answer ends: the request's place among its connection's
/// [`MAX_IN_FLIGHT`], and (for a request that ran in a task) its count as running work, so
/// that shutdown does not exit with answers unsent.
#[derive(Debug)]
struct Finishes {
    _slot: OwnedSemaphorePermit,
    _running: Option<Running>,
}

/// Frames queued for a connection's writer and not yet written whole, shared by the
/// [`Outbox`] and the writer task.
#[derive(Debug, Default)]
struct Backlog {
    /// Raised before a frame is queued, lowered by the writer task once it is written.
    frames: AtomicUsize,
    /// Bytes of those frames still to be written.
    bytes: AtomicUsize,
    /// Writing failed: the connection is of no more use.
    broken: AtomicBool,
    /// Wakes the connection's reader (its only waiter) when `bytes` went down or the
    /// connection broke.
    changed: Notify,
}

impl Backlog {
    fn add(&self, bytes: usize) {
        self.frames.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    fn remove(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.frames.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    fn set_broken(&self) {
        self.broken.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// Waits until fewer than `max` bytes wait to be written; false if the connection broke.
    async fn wait_below(&self, max: usize) -> bool {
        loop {
            if self.broken.load(Ordering::Acquire) {
                return false;
            }
            if self.bytes.load(Ordering::Acquire) < max {
                return true;
            }
            // `notify_one` keeps a wake-up for a reader not yet waiting: none is lost.
            self.changed.notified().await;
        }
    }

    /// Resolves once the connection broke.
    async fn until_broken(&self) {
        while !self.broken.load(Ordering::Acquire) {
            self.changed.notified().await;
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
/// earlier one of the same request. Else, or for what the socket did not take at once, it
/// queues like any other frame. Nothing waits for the peer but the writer task: the queue has
/// no bound of its own, since what can enter it is bounded (an answer per request in flight,
/// a pipe frame per transfer, progress frames up to [`PROGRESS_QUEUE_MAX`]).
#[derive(Debug)]
struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    wr: Arc<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>,
    backlog: Arc<Backlog>,
    /// Set when the connection broke the protocol: nothing more is written to it.
    dropped: AtomicBool,
}

impl Outbox {
    /// Queues a frame for the writer task. False: the connection is gone.
    fn queue(&self, out: Outgoing) -> bool {
        let bytes = out.buf.len() - out.at;
        self.backlog.add(bytes);
        if self.tx.send(out).is_err() {
            self.backlog.remove(bytes);
            return false;
        }
        true
    }

    /// Queues a progress frame unless many frames are waiting already (then drops it).
    fn queue_progress(&self, out: Outgoing) {
        if self.backlog.frames.load(Ordering::Acquire) < PROGRESS_QUEUE_MAX {
            self.queue(out);
        }
    }

    /// Sends a request's last frame: written at once as far as the socket takes it when
    /// nothing is queued before it (see above), the rest queued. False: the connection is
    /// gone.
    fn finish(&self, mut out: Outgoing) -> bool {
        debug_assert!(out.fd.is_none());
        if self.dropped.load(Ordering::Acquire) {
            return false;
        }
        if let Ok(wr) = self.wr.try_lock() {
            // Checked while holding the write half: the writer task lowers the count only
            // after writing, which it does holding the write half.
            if self.backlog.frames.load(Ordering::Acquire) == 0 {
                match wr.try_write(&out.buf) {
                    Ok(n) if n == out.buf.len() => return true,
                    Ok(n) => out.at = n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        self.backlog.set_broken();
                        return false;
                    }
                }
            }
            // Queued while the write half is still held: nothing overtakes the part written.
            return self.queue(out);
        }
        self.queue(out)
    }

    /// Encodes and sends a request's last frame (see [`Outbox::finish`]). False: the
    /// connection is gone (a frame that does not encode is logged and skipped).
    fn answer<R: Serialize>(&self, msg: ServerFrame<R>, finishes: Option<Finishes>) -> bool {
        match frame::encode(&msg) {
            Ok(buf) => {
                mymcp_service::memory::large_payload(buf.len());
                self.finish(Outgoing::frame(buf, finishes))
            }
            Err(e) => {
                tracing::error!(error = %e, "response does not encode");
                true
            }
        }
    }
}

/// Writes the rest of one frame; a descriptor goes with its first byte (`sendmsg` +
/// `SCM_RIGHTS`), the rest follows as plain bytes.
async fn write_frame(wr: &mut tokio::net::unix::OwnedWriteHalf, out: &Outgoing) -> io::Result<()> {
    let mut at = out.at;
    if let Some(fd) = &out.fd {
        let sock = wr.as_ref();
        let raw = sock.as_raw_fd();
        at += sock
            .async_io(Interest::WRITABLE, || {
                mymcp_sys::pipe::send_with_fd(raw, &out.buf[at..], fd.as_fd())
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
    shared_room: Arc<Semaphore>,
) -> Result<(), Violation> {
    let (rd, wr) = stream.into_split();
    // Buffered: a whole small frame (header and body) comes in with one system call.
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
    let room = Room::new(shared_room);
    // The write half is taken by whoever writes one whole frame: the writer task for queued
    // frames, or the task (or the reader) that made an answer (see [`Outbox`]).
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let backlog = Arc::new(Backlog::default());
    let outbox = Arc::new(Outbox {
        tx,
        wr: wr.clone(),
        backlog: backlog.clone(),
        dropped: Default::default(),
    });
    // The writer task holds no sender: the queue closes once every `Outbox` is gone. Frames
    // still queued when it stops are dropped with the queue, which finishes their requests.
    let writer = tokio::spawn({
        let backlog = backlog.clone();
        async move {
            while let Some(out) = rx.recv().await {
                let mut w = wr.lock().await;
                let written = write_frame(&mut w, &out).await;
                // Lowered while the write half is held (see `Outbox::finish`).
                backlog.remove(out.buf.len() - out.at);
                drop(w);
                drop(out);
                if written.is_err() {
                    backlog.set_broken();
                    break;
                }
            }
        }
    });

    // AwaitHello
    let first = tokio::time::timeout(
        HELLO_TIMEOUT,
        read_frame::<ClientFrame<S::Request>, _>(&mut rd, &room, MAX_HELLO_LEN),
    )
    .await
    .map_err(|_| Violation::HelloTimeout(HELLO_TIMEOUT))??;
    match first {
        Read::Eof => return Ok(()),
        Read::Frame(ClientFrame::Hello(h), _) if h.is_compatible() => {
            outbox.answer::<S::Response>(ServerFrame::Welcome(Hello::current()), None);
        }
        Read::Frame(ClientFrame::Hello(h), _) => {
            tracing::error!(peer_uid = peer.uid, peer_pid = ?peer.pid, theirs = ?h, ours = ?Hello::current(), "peer runs a different build; refusing");
            let reason = format!(
                "incompatible peer: wire {} build {} (executor has wire {} build {})",
                h.wire_version,
                h.build_id,
                mymcp_protocol::WIRE_VERSION,
                mymcp_protocol::BUILD_ID
            );
            outbox.answer::<S::Response>(ServerFrame::Refused { reason }, None);
            drop(outbox);
            let _ = writer.await;
            return Ok(());
        }
        Read::Frame(..) => return Err(Violation::NotHello),
    }

    // Ready
    let in_flight: InFlight = Arc::default();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let result = loop {
        // Backpressure: nothing more is read while MAX_IN_FLIGHT requests are unanswered or
        // MAX_UNWRITTEN_BYTES of answers wait for the peer to read them.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("open semaphore"),
            () = backlog.until_broken() => break Ok(()),
        };
        if !backlog.wait_below(MAX_UNWRITTEN_BYTES).await {
            break Ok(());
        }
        let (frame, bytes) =
            match read_frame::<ClientFrame<S::Request>, _>(&mut rd, &room, MAX_FRAME_LEN).await {
                Ok(Read::Frame(f, bytes)) => (f, bytes),
                Ok(Read::Eof) => break Ok(()),
                Err(Violation::Frame(FrameError::Io(e)))
                    if e.kind() == io::ErrorKind::ConnectionReset =>
                {
                    break Ok(())
                }
                Err(v) => break Err(v),
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
                        drop(bytes);
                        let frame = ServerFrame::Response { id, body: answer };
                        let finishes = Finishes {
                            _slot: slot,
                            _running: None,
                        };
                        if !outbox.answer(frame, Some(finishes)) {
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
                    // The request has run: its bytes are free; its answer is what remains.
                    drop(bytes);
                    in_flight.lock().expect("in-flight lock").remove(&id);
                    let finishes = Finishes {
                        _slot: slot,
                        _running: Some(running),
                    };
                    outbox.answer(ServerFrame::Response { id, body }, Some(finishes));
                };
                // Only while few do: under load the runtime's workers are awake anyway (the
                // result needs no wake-up), and more requests on the pool means more threads.
                match blocking.then(WholeOnPool::take).flatten() {
                    Some(place) => {
                        let runtime = tokio::runtime::Handle::current();
                        tokio::task::spawn_blocking(move || {
                            let _place = place.enter();
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
pub(crate) fn socket_paths(runtime_dir: &Path) -> (PathBuf, PathBuf) {
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
    async fn request_bytes_are_bounded_per_connection_and_shared_but_small_frames_pass() {
        let shared = Arc::new(Semaphore::new(SHARED_REQUEST_BYTES));
        let (a, b, c) = (
            Room::new(shared.clone()),
            Room::new(shared.clone()),
            Room::new(shared.clone()),
        );
        let mut held = vec![a.take(MAX_FRAME_LEN).await, a.take(MAX_FRAME_LEN).await];
        // A connection holds at most two frames of the largest size, though the pool has room.
        assert!(tokio::time::timeout(SHORT, a.take(MAX_FRAME_LEN))
            .await
            .is_err());
        held.push(b.take(MAX_FRAME_LEN).await);
        assert_eq!(shared.available_permits(), 0);
        // The pool is full: a small frame passes on its connection's own allowance, a larger
        // one waits until a frame has run.
        let small = tokio::time::timeout(SHORT, c.take(OWN_REQUEST_BYTES))
            .await
            .expect("a small frame is not held up by the pool");
        let large = c.take(1 << 20);
        tokio::pin!(large);
        assert!(tokio::time::timeout(SHORT, &mut large).await.is_err());
        held.pop();
        let large = tokio::time::timeout(SHORT, large)
            .await
            .expect("room once a frame is done");
        drop((small, held));
        assert_eq!(shared.available_permits(), SHARED_REQUEST_BYTES - (1 << 20));
        drop(large);
        assert_eq!(shared.available_permits(), SHARED_REQUEST_BYTES);
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
