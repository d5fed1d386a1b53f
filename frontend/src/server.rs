//! Serving HTTP connections: the accept loop, per-connection protocol settings, and a bounded
//! graceful shutdown.
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

use crate::tls::Tls;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            tls: None,
        }
    }
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

    let graceful = GracefulShutdown::new();
    // Owning the connection tasks lets shutdown end them after the grace period; dropping a
    // connection drops its handlers, which cancels their executor requests.
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
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
        let _ = stream.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + config.header_read_timeout;
        let first_request = Arc::new(Notify::new());
        let requested = first_request.clone();
        let service = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                requested.notify_one();
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            });
        while connections.try_join_next().is_some() {}
        match &config.tls {
            None => {
                let connection = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .into_owned();
                let connection = graceful.watch(connection);
                connections.spawn(first_request_by(deadline, first_request, peer, connection));
            }
            Some(tls) => {
                let (acceptor, builder) = (tls.acceptor().clone(), builder.clone());
                let watcher = graceful.watcher();
                connections.spawn(async move {
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                        .into_owned();
                    let connection = watcher.watch(connection);
                    first_request_by(deadline, first_request, peer, connection).await;
                });
            }
        }
    }

    drop(listener);
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

/// Serves `connection`, closing it if its first request has not arrived (been notified on
/// `first_request`) by `deadline`.
async fn first_request_by<E: Display>(
    deadline: tokio::time::Instant,
    first_request: Arc<Notify>,
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
