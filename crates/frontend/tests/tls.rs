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

/// Accepts any server certificate: a TLS-ALPN-01 validator checks the challenge certificate
/// itself (its critical acmeIdentifier extension is unknown to webpki).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // rustls's own check parses the certificate with webpki, which refuses the challenge
        // certificate's critical acmeIdentifier extension.
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // rustls's own check parses the certificate with webpki, which refuses the challenge
        // certificate's critical acmeIdentifier extension.
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A handshake as a TLS-ALPN-01 validator makes it: SNI `name`, ALPN `alpn`, any certificate.
async fn validate(
    addr: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

#[tokio::test]
async fn tls_alpn_01_shows_the_challenge_certificate_and_never_reaches_http() {
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::for_acme().unwrap();
    let listener = ListenSource::Bind {
        host: "127.0.0.1".into(),
        port: 0,
    }
    .open(true)
    .await
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(
        Forwarder::new(dir.path().join("no-executor.sock")),
        HttpConfig::default(),
    );
    let config = ServerConfig {
        tls: Some(tls.clone()),
        ..ServerConfig::default()
    };
    tokio::spawn(server::serve(listener, app, config, std::future::pending()));
    let acme: &[&[u8]] = &[b"acme-tls/1"];

    // No certificate yet: every handshake fails, validations included.
    assert!(validate(addr, "mcp.example.com", &[b"http/1.1"])
        .await
        .is_err());
    assert!(validate(addr, "mcp.example.com", acme).await.is_err());

    let digest = [7u8; 32];
    let challenge =
        mymcp_frontend::acme::challenge_certificate("mcp.example.com", &digest, tls.provider())
            .unwrap();
    let challenge_der = challenge.cert[0].clone();
    tls.resolver().set_challenge("mcp.example.com", challenge);

    // The validator gets the challenge certificate, acme-tls/1, and then the end.
    let mut validation = validate(addr, "MCP.example.com", acme).await.unwrap();
    assert_eq!(
        validation.get_ref().1.alpn_protocol(),
        Some(&b"acme-tls/1"[..])
    );
    assert_eq!(peer_cert(&validation), challenge_der);
    let _ = validation
        .write_all(b"GET /health HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let _ = validation.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // Another name has no pending validation: no handshake.
    assert!(validate(addr, "other.example.com", acme).await.is_err());

    // The real certificate arrives; HTTP clients get it, even when they offer acme-tls/1 too.
    let real = rcgen::generate_simple_self_signed(vec!["mcp.example.com".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(real.signing_key.serialize_der().into());
    let key =
        rustls::sign::CertifiedKey::from_der(vec![real.cert.der().clone()], key, tls.provider())
            .unwrap();
    tls.install(key);
    let mut client = validate(addr, "mcp.example.com", &[b"acme-tls/1", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(client.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(peer_cert(&client), *real.cert.der());
    assert!(get_health(&mut client)
        .await
        .starts_with("HTTP/1.1 200 OK\r\n"));

    // The validation over, the challenge certificate is gone.
    tls.resolver().remove_challenge("mcp.example.com");
    assert!(validate(addr, "mcp.example.com", acme).await.is_err());
}
