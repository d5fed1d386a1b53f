//! Serving HTTP connections: the accept loop, per-connection protocol settings, and a bounded
//! graceful shutdown.
//!
//! This replaces `axum::serve` because that one gives hyper no timer, so hyper's header-read
//! timeout never applies and a peer that opens connections and sends nothing holds them (and
//! our file descriptors) forever — before any authentication. Here every connection must
//! deliver its request headers within [`ServerConfig::header_read_timeout`]; HTTP/1.1 and
//! HTTP/2 (cleartext, prior knowledge) are both served on the same port. With
//! [`ServerConfig::tls`] every connection is HTTPS (HTTP/2 or HTTP/1.1 as ALPN chose); the
//! handshake runs in the connection's own task and must also finish within the header-read
//! timeout.

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
use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Connection-level settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long a client may take to send a request's headers.
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
        let service = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
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
                connections.spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, "connection ended with an error: {e}");
                    }
                });
            }
            Some(tls) => {
                let (acceptor, builder) = (tls.acceptor().clone(), builder.clone());
                let (watcher, timeout) = (graceful.watcher(), config.header_read_timeout);
                connections.spawn(async move {
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await
                    {
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
                    if let Err(e) = watcher.watch(connection).await {
                        tracing::debug!(%peer, "connection ended with an error: {e}");
                    }
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
