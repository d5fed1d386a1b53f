//! HTTPS on a real TCP port: ALPN picks HTTP/2 or HTTP/1.1, TLS 1.2 still works, and a
//! certificate reload (what SIGHUP does) reaches new connections while an open one goes on.

use mymcp_frontend::forward::Forwarder;
use mymcp_frontend::http::{router, HttpConfig};
use mymcp_frontend::listen::ListenSource;
use mymcp_frontend::server::{self, ServerConfig};
use mymcp_frontend::tls::{Tls, TlsFiles};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Writes a fresh self-signed certificate for `localhost` to `dir`/tls.{crt,key}; returns its
/// DER form, to be trusted by clients.
fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("tls.crt"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), c.signing_key.serialize_pem()).unwrap();
    c.cert.der().clone()
}

/// Serves the router over HTTPS; the executor is absent (`/health` says so, with 200).
async fn serve(dir: &Path) -> (SocketAddr, Tls) {
    let tls = Tls::load(TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    })
    .unwrap();
    let listener = ListenSource::Bind {
        host: "127.0.0.1".into(),
        port: 0,
    }
    .open(true)
    .await
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(
        Forwarder::new(dir.join("no-executor.sock")),
        HttpConfig::default(),
    );
    let config = ServerConfig {
        tls: Some(tls.clone()),
        ..ServerConfig::default()
    };
    tokio::spawn(server::serve(listener, app, config, std::future::pending()));
    (addr, tls)
}

async fn connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// One keep-alive HTTP/1.1 GET /health on `tls`; the response head and body.
async fn get_health(tls: &mut TlsStream<TcpStream>) -> String {
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("\"executor\":") {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(response).unwrap()
}

fn peer_cert(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn alpn_h2_is_served_as_http2() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let (addr, _tls) = serve(dir.path()).await;
    let tls = connect(addr, &cert, &[b"h2", b"http/1.1"], BOTH)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let request = axum::http::Request::get("https://localhost/health")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), axum::http::Version::HTTP_2);
}

#[tokio::test]
async fn alpn_http11_and_tls12_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let (addr, _tls) = serve(dir.path()).await;
    let mut tls = connect(addr, &cert, &[b"http/1.1"], BOTH).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(get_health(&mut tls)
        .await
        .starts_with("HTTP/1.1 200 OK\r\n"));

    let mut tls12 = connect(addr, &cert, &[], &[&rustls::version::TLS12])
        .await
        .unwrap();
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert!(get_health(&mut tls12)
        .await
        .starts_with("HTTP/1.1 200 OK\r\n"));
}

#[tokio::test]
async fn plain_http_to_the_https_port_gets_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path());
    let (addr, _tls) = serve(dir.path()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    assert!(!String::from_utf8_lossy(&response).contains("\"status\":\"ok\""));
}

#[tokio::test]
async fn a_reload_reaches_new_connections_and_keeps_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let old = write_cert(dir.path());
    let (addr, tls) = serve(dir.path()).await;
    let mut open = connect(addr, &old, &[b"http/1.1"], BOTH).await.unwrap();
    assert!(get_health(&mut open)
        .await
        .starts_with("HTTP/1.1 200 OK\r\n"));

    let new = write_cert(dir.path());
    let fingerprint = tls.reload().unwrap();
    assert_eq!(fingerprint, mymcp_frontend::tls::fingerprint(new.as_ref()));

    // The open connection goes on with its session and the old certificate.
    assert!(get_health(&mut open)
        .await
        .starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(peer_cert(&open), old);
    // New connections get the new certificate: clients trusting only the old one refuse it.
    let fresh = connect(addr, &new, &[b"http/1.1"], BOTH).await.unwrap();
    assert_eq!(peer_cert(&fresh), new);
    let err = connect(addr, &old, &[b"http/1.1"], BOTH).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}
