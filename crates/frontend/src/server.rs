//! Serving HTTP connections: the accept loop, connection slots and timeouts, early refusals
//! that reach the client intact, and a bounded graceful shutdown.
//!
//! This replaces `axum::serve` because that one gives hyper no timer, so hyper's header-read
//! timeout never applies and a peer that opens connections and sends nothing holds them (and
//! our file descriptors) forever — before any authentication. Here every connection must
//! deliver its request headers within [`ServerConfig::header_read_timeout`]; HTTP/1.1 and
//! HTTP/2 (cleartext, prior knowledge) are both served on the same port. With
//! [`ServerConfig::tls`] every connection is HTTPS (HTTP/2 or HTTP/1.1 as ALPN chose); the
//! handshake runs in the connection's own task.
//!
//! The timeout is enforced twice. hyper's own HTTP/1.1 timer covers each request's headers and
//! the idle time between requests of a kept-alive connection. It cannot cover what comes
//! before: the bytes read to tell HTTP/2's preface from HTTP/1.1 (a peer that sends nothing,
//! or trickles `PRI * HTTP/2.0…`, would wait there forever), the TLS handshake, and an HTTP/2
//! connection that never opens a stream. So every connection must also have the headers of
//! its first request in within the timeout of being accepted, or it is closed.
//!
//! **Slots.** Every accepted connection needs a slot ([`crate::admission`]): at most
//! [`ConnectionLimits::max_connections`] in all (lowered to fit the descriptor limit) and
//! [`ConnectionLimits::max_per_address`] per client address. At a cap the longest idle
//! connection is closed to make room; when every connection has a request in flight, the
//! newcomer gets `503` with `Retry-After` (and `/health` its usual answer) from a small
//! reserve, for at most [`REFUSAL_TIME`], or is closed at once when the reserve is used up too.
//!
//! **Early answers.** A handler may answer without reading the request body (a refused token,
//! a forged ticket, a body timeout). The client must still get that answer whole:
//! - HTTP/1.1: the answer says `Connection: close`; after it the connection is shut down for
//!   writing and what the client still sends is read and dropped for up to [`LINGER_TIME`]
//!   before the socket is closed ("lingering close"), so the kernel does not answer the
//!   client's unread bytes with a reset that destroys the answer in flight;
//! - HTTP/2: the stream's remaining body is read and dropped (at most [`DRAIN_BYTES`], at most
//!   [`DRAIN_TIME`], silent for at most [`DRAIN_IDLE`], [`MAX_DRAINS`] streams at once) rather
//!   than reset while the client is still sending: curl 7.88, for one, reports a reset stream
//!   as a framing error even after a complete answer. Past those bounds the stream is reset
//!   (`RST_STREAM(NO_ERROR)`, as RFC 9113 §8.1 allows).

use crate::admission::{
    self, Admission, Admitted, Busy, ConnectionLimits, Refusal, Slot, EVICTION_SLACK, RESERVE,
};
use crate::tls::Tls;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::header::{self, HeaderValue};
use axum::http::{Method, Request, Response, StatusCode, Version};
use axum::Router;
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Descriptors kept free for everything but client connections (the executor connections,
/// transfer pipes, the listener, logs) when the connection cap is fitted to the descriptor
/// limit.
pub const FD_HEADROOM: usize = 128;

/// How long a connection that gets a refusal (no slot) may stay, TLS handshake included.
pub const REFUSAL_TIME: Duration = Duration::from_secs(5);

/// How long an HTTP/1.1 connection closed after an answer that left the request body unread
/// keeps reading (and dropping) what the client still sends before the socket is closed.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// Most bytes of an HTTP/2 request body left unread by an early answer that are read and
/// dropped so that the stream can end cleanly.
pub const DRAIN_BYTES: u64 = 32 * 1024 * 1024;
/// Longest time such a body is drained.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);
/// Longest silence of such a body.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Most such bodies drained at once; beyond, the stream is reset at once.
pub const MAX_DRAINS: usize = 256;

/// How often a summary of connections turned away or closed to make room is logged.
const LIMITS_REPORT: Duration = Duration::from_secs(10);

/// Connection-level settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long a client may take to send a request's headers: from being accepted to its
    /// first request (TLS handshake included), and on HTTP/1.1 for each later request,
    /// counted from the end of the previous response (so also the longest idle keep-alive).
    pub header_read_timeout: Duration,
    /// How long open connections may take to finish once shutdown starts.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with these settings; `None`: plain HTTP.
    pub tls: Option<Tls>,
    /// How many connections, in all and per client address.
    pub limits: ConnectionLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: Duration::from_secs(mymcp_settings::HEADER_TIMEOUT_SEC.default()),
            shutdown_grace: Duration::from_secs(5),
            tls: None,
            limits: ConnectionLimits::default(),
        }
    }
}

/// `limits` with the global cap lowered, if need be, so that connections, the refusal
/// reserve, connections being closed and [`FD_HEADROOM`] fit under `fd_limit`.
pub fn fit_to_descriptors(limits: &ConnectionLimits, fd_limit: Option<u64>) -> ConnectionLimits {
    let mut fitted = limits.clone();
    if let Some(fds) = fd_limit {
        let fds = usize::try_from(fds).unwrap_or(usize::MAX);
        let room = fds
            .saturating_sub(FD_HEADROOM + RESERVE + EVICTION_SLACK)
            .max(1);
        if room < fitted.max_connections {
            tracing::warn!(
                configured = limits.max_connections,
                fd_limit = fds,
                "MYMCP_MAX_CONNECTIONS lowered to {room} to fit the descriptor limit (raise LimitNOFILE)"
            );
            fitted.max_connections = room;
        }
    }
    fitted.max_per_address = fitted.max_per_address.min(fitted.max_connections);
    fitted
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets open
/// connections finish their requests for up to the grace period, closes whatever is left, and
/// returns.
///
/// Handlers can extract `ConnectInfo<SocketAddr>` with the peer's address.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limits = fit_to_descriptors(&config.limits, mymcp_sys::net::open_file_limit());
    tracing::info!(
        max_connections = limits.max_connections,
        max_per_address = limits.max_per_address,
        "connection limits"
    );
    let admission = Admission::new(limits);
    let reporter = tokio::spawn(report_limits(admission.clone()));
    let drains = Arc::new(Semaphore::new(MAX_DRAINS));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Finds peers that vanished without closing (a cut network) on long calls.
        .keep_alive_interval(Some(Duration::from_secs(60)));
    // A refused connection gets one answer.
    let mut refusing = builder.clone();
    refusing.http1().keep_alive(false);

    let graceful = GracefulShutdown::new();
    // Owning the connection tasks lets shutdown end them after the grace period; dropping a
    // connection drops its handlers, which cancels their executor requests.
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Under a flood, accept no faster than idle connections told to close go away.
        admission.room_to_evict().await;
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let hold = match admission.admit(peer.ip()) {
            Admitted::Slot(slot) => Hold::Slot(Arc::new(slot)),
            Admitted::Refusal(refusal) => Hold::Refusal { _reserved: refusal },
            // Closed at once: no slot, and the reserve is used up.
            Admitted::Closed => continue,
        };
        let _ = stream.set_nodelay(true);
        let refused = matches!(hold, Hold::Refusal { .. });
        let shared = Arc::new(Shared {
            peer,
            hold,
            first_request: Notify::new(),
            linger: AtomicBool::new(false),
            drains: drains.clone(),
        });
        let io = ClientIo {
            stream: Some(stream),
            eof: false,
            shared: shared.clone(),
        };
        let service = {
            let (app, shared) = (app.clone(), shared.clone());
            hyper::service::service_fn(move |request| respond(app.clone(), shared.clone(), request))
        };
        let tls = config.tls.as_ref().map(|t| t.acceptor().clone());
        if refused {
            let builder = refusing.clone();
            connections.spawn(async move {
                let serve = async move {
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(io), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(io).await {
                                let Some(stream) = acme_validation(stream).await else {
                                    return;
                                };
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(REFUSAL_TIME, serve).await;
            });
            continue;
        }
        let deadline = tokio::time::Instant::now() + config.header_read_timeout;
        match tls {
            None => {
                let connection = builder
                    .serve_connection(TokioIo::new(io), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                connections.spawn(run(deadline, shared, connection));
            }
            Some(acceptor) => {
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                connections.spawn(async move {
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(io));
                    let stream = tokio::select! {
                        () = shared.evicted() => return,
                        handshake = handshake => match handshake {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                    };
                    let Some(stream) = acme_validation(stream).await else {
                        return;
                    };
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = watcher.watch(connection);
                    run(deadline, shared, connection).await;
                });
            }
        }
    }

    drop(listener);
    reporter.abort();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!(
                connections = connections.len(),
                "connections still open after {:?}; closing them",
                config.shutdown_grace
            );
        }
    }
    connections.shutdown().await;
}

/// A TLS-ALPN-01 validation (ALPN `acme-tls/1`) has seen the challenge certificate in the
/// handshake and gets nothing more: it is closed here, never served HTTP (`None`). Any other
/// connection is handed back.
async fn acme_validation<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: tokio_rustls::server::TlsStream<S>,
) -> Option<tokio_rustls::server::TlsStream<S>> {
    if !crate::tls::is_acme_connection(stream.get_ref().1.alpn_protocol()) {
        return Some(stream);
    }
    tracing::debug!("TLS-ALPN-01 validation: challenge certificate shown, connection closed");
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    None
}

/// Logs, at most every [`LIMITS_REPORT`], how many connections the caps turned away.
async fn report_limits(admission: Arc<Admission>) {
    let mut tick = tokio::time::interval(LIMITS_REPORT);
    tick.tick().await;
    loop {
        tick.tick().await;
        let counts = admission.take_counts();
        if counts != admission::Counts::default() {
            let limits = admission.limits();
            tracing::warn!(
                refused = counts.refused,
                closed_unanswered = counts.closed,
                idle_closed_for_newcomers = counts.evicted,
                open = admission.open(),
                max_connections = limits.max_connections,
                max_per_address = limits.max_per_address,
                "connection limits reached in the last {} s",
                LIMITS_REPORT.as_secs()
            );
        }
    }
}

/// Serves `connection` until it ends, its first request is late, or its slot is needed.
async fn run<E: Display>(
    deadline: tokio::time::Instant,
    shared: Arc<Shared>,
    connection: impl Future<Output = Result<(), E>>,
) {
    let peer = shared.peer;
    tokio::select! {
        () = shared.evicted() => {
            tracing::debug!(%peer, "idle connection closed to make room for a new one");
        }
        () = first_request_by(deadline, &shared.first_request, peer, connection) => {}
    }
}

/// Serves `connection`, closing it if its first request has not arrived (been notified on
/// `first_request`) by `deadline`.
async fn first_request_by<E: Display>(
    deadline: tokio::time::Instant,
    first_request: &Notify,
    peer: SocketAddr,
    connection: impl Future<Output = Result<(), E>>,
) {
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = &mut connection => result,
        () = first_request.notified() => connection.await,
        () = tokio::time::sleep_until(deadline) => {
            tracing::debug!(%peer, "no request within the header timeout; closing the connection");
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended with an error: {e}");
    }
}

/// What holds a connection's place.
#[derive(Debug)]
enum Hold {
    Slot(Arc<Slot>),
    /// No slot: the connection gets one refusal (its place in the reserve, until it closes).
    Refusal {
        _reserved: Refusal,
    },
}

/// What a connection, its requests and its socket share.
#[derive(Debug)]
struct Shared {
    peer: SocketAddr,
    hold: Hold,
    first_request: Notify,
    /// Linger before closing the socket (see the module documentation).
    linger: AtomicBool,
    drains: Arc<Semaphore>,
}

impl Shared {
    /// Completes once the connection's slot is needed for another (never for a refusal).
    async fn evicted(&self) {
        match &self.hold {
            Hold::Slot(slot) => slot.eviction().await,
            Hold::Refusal { .. } => std::future::pending().await,
        }
    }

    fn was_evicted(&self) -> bool {
        matches!(&self.hold, Hold::Slot(slot) if slot.evicted())
    }

    fn busy(&self) -> Option<Busy> {
        match &self.hold {
            Hold::Slot(slot) => Some(slot.busy()),
            Hold::Refusal { .. } => None,
        }
    }

    /// Reads and drops the rest of an HTTP/2 request body in the background (see the module
    /// documentation); past [`MAX_DRAINS`] the body is dropped, which resets the stream.
    fn drain(&self, mut body: Incoming) {
        let Ok(permit) = self.drains.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let deadline = tokio::time::Instant::now() + DRAIN_TIME;
            let mut drained = 0u64;
            loop {
                let until = deadline.min(tokio::time::Instant::now() + DRAIN_IDLE);
                match tokio::time::timeout_at(until, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if drained > DRAIN_BYTES {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
    }
}

/// One request: counted as in flight until its response body is done, served by `app` (or,
/// on a refused connection, answered 503 unless it is `/health`), and with an unread request
/// body handled as the module documentation says.
async fn respond(
    app: Router,
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    shared.first_request.notify_one();
    let busy = shared.busy();
    let version = request.version();
    let unread = Arc::new(Unread::default());
    let (mut parts, incoming) = request.into_parts();
    parts.extensions.insert(ConnectInfo(shared.peer));
    let body = Body::new(WatchedBody {
        inner: Some(incoming),
        ended: false,
        unread: unread.clone(),
    });
    let request = Request::from_parts(parts, body);
    let refused = matches!(shared.hold, Hold::Refusal { .. });
    let health = matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().path() == "/health";
    let mut response = if refused && !health {
        drop(request);
        too_many_connections()
    } else {
        match app.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    };
    let left = unread.take();
    if let Some(body) = left {
        if version == Version::HTTP_2 {
            shared.drain(body);
        } else {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            shared.linger.store(true, Ordering::Relaxed);
        }
    } else if refused && version != Version::HTTP_2 {
        // The refusal closes the connection after its one answer.
        shared.linger.store(true, Ordering::Relaxed);
    }
    Ok(match busy {
        Some(busy) => response.map(|body| {
            Body::new(BusyBody {
                inner: body,
                _busy: busy,
            })
        }),
        None => response,
    })
}

/// The answer of a connection that got no slot.
fn too_many_connections() -> Response<Body> {
    let mut response = Response::new(Body::from(
        r#"{"detail":"Too many connections; try again later"}"#,
    ));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Where a request body that the handler dropped unfinished is left for [`respond`].
#[derive(Debug, Default)]
struct Unread(Mutex<Option<Incoming>>);

impl Unread {
    fn take(&self) -> Option<Incoming> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A request body that, dropped before its end, hands itself to [`Unread`].
struct WatchedBody {
    inner: Option<Incoming>,
    /// It ended or failed: nothing is left to read.
    ended: bool,
    unread: Arc<Unread>,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if !self.ended && !inner.is_end_stream() {
                *self.unread.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(inner);
            }
        }
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct BusyBody {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client's socket. It notes whether the client has closed its side; when the connection
/// ends after an answer that left a request body unread, dropping it lingers (see the module
/// documentation) before the socket is closed. It keeps the connection's slot until then.
struct ClientIo {
    stream: Option<TcpStream>,
    eof: bool,
    shared: Arc<Shared>,
}

impl ClientIo {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let wanted = buf.remaining() > 0;
        let before = buf.filled().len();
        let polled = Pin::new(this.stream()?).poll_read(cx, buf);
        if wanted && matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before {
            this.eof = true;
        }
        polled
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().stream()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().stream()?).poll_shutdown(cx)
    }
}

impl Drop for ClientIo {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.eof || !self.shared.linger.load(Ordering::Relaxed) || self.shared.was_evicted() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream, self.shared.clone()));
        }
    }
}

/// Shuts the socket down for writing, then reads and drops what the client still sends until
/// it closes, [`LINGER_TIME`] passes or the slot is needed; then the socket is closed.
async fn linger(mut stream: TcpStream, shared: Arc<Shared>) {
    let discard = async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 8192];
        while let Ok(1..) = stream.read(&mut sink).await {}
    };
    tokio::select! {
        () = discard => {}
        () = tokio::time::sleep(LINGER_TIME) => {}
        () = shared.evicted() => {}
    }
}

/// Accept errors are about one connection (reset before accept) or about resources (out of
/// file descriptors); neither should end the server. Pause on the latter so the loop does not
/// spin while descriptors are exhausted.
async fn accept_failed(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused => {}
        _ => {
            tracing::error!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_descriptor_limit() {
        let limits = ConnectionLimits::default();
        let fitted = fit_to_descriptors(&limits, Some(65536));
        assert_eq!(fitted.max_connections, limits.max_connections);
        let fitted = fit_to_descriptors(&limits, Some(1024));
        assert_eq!(
            fitted.max_connections,
            1024 - FD_HEADROOM - RESERVE - EVICTION_SLACK
        );
        assert_eq!(fitted.max_per_address, limits.max_per_address);
        let fitted = fit_to_descriptors(&limits, Some(100));
        assert_eq!((fitted.max_connections, fitted.max_per_address), (1, 1));
        assert_eq!(
            fit_to_descriptors(&limits, None).max_connections,
            limits.max_connections
        );
    }
}
