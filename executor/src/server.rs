//! Sockets, peer checks and the per-connection state machine.
//!
//! Each socket is served by one [`Service`] with its own closed request set. On every accept
//! the peer's uid (`SO_PEERCRED`) must be the one allowed for that socket, else the connection
//! is closed at once. A connection then moves forward only:
//! `AwaitHello → Ready → Closed`. In `Ready`, each request runs in its own task (many in flight
//! per connection, answered as they finish); `Cancel{id}` fires that request's
//! [`CancelSignal`]. A frame that is oversized, malformed, of an unknown variant, or out of
//! state (a second `Hello`, a duplicate id) is a protocol violation: logged at error level
//! with the peer's pid and uid, and the connection is dropped with all its work cancelled.

use mymcp_protocol::frame::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use mymcp_protocol::{ClientFrame, Hello, RequestId, ServerFrame};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

/// Most requests one connection may have in flight; more is a violation.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most connections one socket serves at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a new connection may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The peer of a connection as the kernel reports it.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: u32,
}

/// Fires when the request's client cancels it, its connection goes away, or shutdown forces
/// running work to stop. Never fires for a request that is simply answered.
#[derive(Debug)]
pub struct CancelSignal {
    request: oneshot::Receiver<()>,
    force: watch::Receiver<bool>,
}

impl CancelSignal {
    /// Resolves when the work should stop.
    pub async fn cancelled(mut self) {
        let force_fired = until_set(&mut self.force);
        tokio::select! {
            r = &mut self.request => {
                if r.is_ok() {
                    return;
                }
            }
            _ = force_fired => return,
        }
        // The request's sender went away without cancelling: only shutdown can stop us now.
        until_set(&mut self.force).await;
    }

    /// A signal that never fires (for tests and internal callers).
    pub fn never() -> CancelSignal {
        let (tx, request) = oneshot::channel();
        std::mem::forget(tx);
        let (ftx, force) = watch::channel(false);
        std::mem::forget(ftx);
        CancelSignal { request, force }
    }
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
    ) -> impl Future<Output = Self::Response> + Send;
}

/// Shared shutdown state: stop accepting, then (after the grace) force running work to stop.
#[derive(Debug)]
pub struct Shutdown {
    stop_accepting: watch::Sender<bool>,
    force: watch::Sender<bool>,
    in_flight: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            stop_accepting: watch::channel(false).0,
            force: watch::channel(false).0,
            in_flight: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
        }
    }
}

impl Shutdown {
    /// Requests running anywhere right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops accepting, waits up to `grace` for running requests, then forces them to stop and
    /// waits (briefly) for them to answer.
    pub async fn run(&self, grace: Duration) {
        self.stop_accepting.send_replace(true);
        let wait_idle = async {
            while self.in_flight() > 0 {
                let notified = self.idle.notified();
                if self.in_flight() == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, wait_idle).await.is_err() {
            tracing::warn!(
                running = self.in_flight(),
                "grace period over; stopping running requests"
            );
            self.force.send_replace(true);
            let _ = tokio::time::timeout(Duration::from_secs(3), async {
                while self.in_flight() > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
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
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    r.take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Read::Frame(frame::decode(&body)?))
}

async fn send<R: Serialize>(tx: &mpsc::Sender<Vec<u8>>, msg: ServerFrame<R>) {
    match frame::encode(&msg) {
        Ok(buf) => {
            let _ = tx.send(buf).await;
        }
        Err(e) => tracing::error!(error = %e, "response does not encode"),
    }
}

type InFlight = Arc<Mutex<HashMap<RequestId, oneshot::Sender<()>>>>;

async fn connection<S: Service>(
    stream: UnixStream,
    peer: Peer,
    service: Arc<S>,
    shutdown: &Arc<Shutdown>,
) -> Result<(), Violation> {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
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
            send::<S::Response>(&tx, ServerFrame::Welcome(Hello::current())).await;
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
            send::<S::Response>(&tx, ServerFrame::Refused { reason }).await;
            drop(tx);
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
                {
                    let mut map = in_flight.lock().expect("in-flight lock");
                    if map.len() >= MAX_IN_FLIGHT {
                        break Err(Violation::TooManyInFlight);
                    }
                    if map.contains_key(&id) {
                        break Err(Violation::DuplicateId(id));
                    }
                    map.insert(id, ctx);
                }
                let cancel = CancelSignal {
                    request: crx,
                    force: shutdown.force.subscribe(),
                };
                let (service, tx, in_flight, shutdown) = (
                    service.clone(),
                    tx.clone(),
                    in_flight.clone(),
                    shutdown.clone(),
                );
                shutdown.begin();
                tokio::spawn(async move {
                    let body = service.handle(body, peer, cancel).await;
                    in_flight.lock().expect("in-flight lock").remove(&id);
                    send(&tx, ServerFrame::Response { id, body }).await;
                    shutdown.end();
                });
            }
        }
    };
    // The connection is gone or broken: nobody is left to receive answers, so stop the work.
    for (_, c) in in_flight.lock().expect("in-flight lock").drain() {
        let _ = c.send(());
    }
    drop(tx);
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
