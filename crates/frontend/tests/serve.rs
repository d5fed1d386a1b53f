//! The frontend served on a real TCP port, as clients reach it: HTTP/1.1 with the real peer
//! address, client disconnects cancelling the executor's work, and HTTP/2 with prior knowledge.

mod support;

use axum::body::Bytes;
use axum::http::{Request, StatusCode};
use mymcp_frontend::forward::Forwarder;
use mymcp_frontend::http::{router, HttpConfig};
use mymcp_frontend::listen::ListenSource;
use mymcp_frontend::server::{self, ServerConfig};
use mymcp_protocol::{ClientFrame, FrontendRequest};
use std::net::SocketAddr;
use std::time::Duration;
use support::{FakeExecutor, RO_TOKEN, RW_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn serve(executor: &FakeExecutor) -> SocketAddr {
    serve_with(executor, ServerConfig::default(), std::future::pending()).await
}

async fn serve_with(
    executor: &FakeExecutor,
    config: ServerConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> SocketAddr {
    let forwarder = Forwarder::new(&executor.socket);
    assert!(forwarder.wait_connected(Duration::from_secs(5)).await);
    let listener = ListenSource::Bind {
        host: "127.0.0.1".into(),
        port: 0,
    }
    .open(false)
    .await
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(forwarder, HttpConfig::default());
    tokio::spawn(server::serve(listener, app, config, stop));
    addr
}

fn http1_post(token: &str, body: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn http1_call_reaches_the_executor_with_the_real_peer_address() {
    let mut executor = FakeExecutor::start();
    let addr = serve(&executor).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read_file","arguments":{"file_path":"/etc/hostname"}}}"#;
    tcp.write_all(http1_post(RO_TOKEN, body).as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.to_ascii_lowercase().contains("\r\nx-request-id: "));
    assert!(response.ends_with(r#"{"jsonrpc":"2.0","id":9,"result":{"content":[{"type":"text","text":"{\"content\":\"   1\\t/etc/hostname\",\"total_lines\":1,\"truncated\":false}"}],"isError":false,"structuredContent":{"content":"   1\t/etc/hostname","total_lines":1,"truncated":false}}}"#), "{response}");

    let ClientFrame::Request {
        body: FrontendRequest::Call { origin, .. },
        ..
    } = executor.next_frame().await
    else {
        panic!("expected a call")
    };
    assert_eq!(origin.peer, "127.0.0.1");
}

#[tokio::test]
async fn client_disconnect_cancels_the_running_command() {
    let mut executor = FakeExecutor::start();
    let addr = serve(&executor).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bash_execute","arguments":{"command":"hang"}}}"#;
    tcp.write_all(http1_post(RW_TOKEN, body).as_bytes())
        .await
        .unwrap();
    let ClientFrame::Request { id, .. } = executor.next_frame().await else {
        panic!("expected the call")
    };
    drop(tcp);
    assert_eq!(executor.next_frame().await, ClientFrame::Cancel { id });
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let executor = FakeExecutor::start();
    let addr = serve(&executor).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = Request::post(format!("http://{addr}/mcp"))
        .header("authorization", format!("Bearer {RO_TOKEN}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream
        .send_data(
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            true,
        )
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["result"]["tools"][0]["name"], "read_file");
}

#[tokio::test]
async fn a_client_that_never_sends_headers_is_disconnected() {
    let executor = FakeExecutor::start();
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let addr = serve_with(&executor, config, std::future::pending()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server kept a silent connection open");
}

#[tokio::test]
async fn silent_http2_preface_only_and_idle_connections_are_disconnected() {
    let executor = FakeExecutor::start();
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let addr = serve_with(&executor, config, std::future::pending()).await;
    // Nothing at all (the protocol is never even detected); half of the HTTP/2 preface; the
    // whole preface and a SETTINGS frame but never a stream.
    let openings: [&[u8]; 3] = [
        b"",
        b"PRI * HTTP/2.0\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    ];
    for opening in openings {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(opening).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the server kept {opening:?} open");
    }
    // A kept-alive HTTP/1.1 connection is closed once idle for as long.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let request = http1_post(RO_TOKEN, body).replace("Connection: close\r\n", "");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response)).await;
    assert!(closed.is_ok(), "the server kept an idle connection open");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
}

#[tokio::test]
async fn shutdown_lets_a_running_request_finish_within_the_grace() {
    let executor = FakeExecutor::start();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = ServerConfig {
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    };
    let addr = serve_with(&executor, config, async {
        let _ = stop_rx.await;
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bash_execute","arguments":{"command":"slow"}}}"#;
    tcp.write_all(http1_post(RW_TOKEN, body).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_tx.send(()).unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains(r#"\"stdout\":\"slow\""#), "{response}");
}

#[tokio::test]
async fn shutdown_closes_what_is_left_after_the_grace_and_cancels_its_calls() {
    let mut executor = FakeExecutor::start();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let addr = serve_with(&executor, config, async {
        let _ = stop_rx.await;
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bash_execute","arguments":{"command":"hang"}}}"#;
    tcp.write_all(http1_post(RW_TOKEN, body).as_bytes())
        .await
        .unwrap();
    let ClientFrame::Request { id, .. } = executor.next_frame().await else {
        panic!("expected the call")
    };
    stop_tx.send(()).unwrap();
    // New connections are refused once the listener is closed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).await.is_err());
    // The hanging call outlives the grace: its connection is dropped, which cancels it.
    assert_eq!(executor.next_frame().await, ClientFrame::Cancel { id });
}

#[tokio::test]
async fn an_unknown_token_is_refused_before_its_body_is_sent_and_the_connection_closed() {
    let mut executor = FakeExecutor::start();
    let addr = serve(&executor).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // 20 MiB announced, none sent.
    let head = http1_post("tok_unknown", "")
        .replace("Content-Length: 0", "Content-Length: 20971520")
        .replace("Connection: close\r\n", "");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "no answer without the body");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 401 "), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{response}"
    );
    assert!(matches!(
        executor.next_frame().await,
        ClientFrame::Request {
            body: FrontendRequest::Identify { .. },
            ..
        }
    ));
}

#[tokio::test]
async fn an_early_answer_over_http2_lets_the_client_finish_sending_without_a_reset() {
    let executor = FakeExecutor::start();
    let addr = serve(&executor).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = Request::post(format!("http://{addr}/mcp"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // 4 MiB more than any window: only a server that reads (and drops) it lets it through.
    let mut left = 4 * 1024 * 1024;
    while left > 0 {
        stream.reserve_capacity(left.min(256 * 1024));
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .expect("the stream is still open")
            .expect("no reset");
        let n = granted.min(left);
        stream
            .send_data(Bytes::from(vec![b' '; n]), n == left)
            .unwrap();
        left -= n;
    }
    let reset = tokio::time::timeout(
        Duration::from_millis(300),
        std::future::poll_fn(|cx| stream.poll_reset(cx)),
    )
    .await;
    assert!(reset.is_err(), "the stream was reset: {reset:?}");
}
