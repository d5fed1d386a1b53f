//! Built-in ACME against pebble, the ACME test server (Debian package `pebble`), with real
//! TLS-ALPN-01 validation: the real frontend binary (as `nobody`) orders a certificate for
//! `mymcp-acme.test` from a pebble started here, pebble's validation authority connects to the
//! frontend's own HTTPS port for it (pebble's `tlsPort` is that port) and resolves the name
//! through `pebble-challtestsrv`'s DNS server (same package; every name → 127.0.0.1), so
//! neither /etc/hosts nor `PEBBLE_VA_ALWAYS_VALID` is involved. Then:
//! - the certificate served chains to pebble's root and names the domain, /health answers;
//! - SIGHUP orders a second certificate, which new connections get while a connection opened
//!   before goes on with the first;
//! - the state directory holds the account and the certificate (0600), and a restarted
//!   frontend serves the stored certificate at once, without ordering;
//! - a validation that fails (pebble validating on a port where nothing listens) is logged
//!   with pebble's reason and retried later, not at once.

use mymcp_tests::{bin, user_ids, wait_until};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DOMAIN: &str = "mymcp-acme.test";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies a child's stderr into the test's output with `tag`, and keeps the lines.
fn capture(child: &mut Child, tag: &'static str) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
            kept.lock().unwrap().push(line);
        }
    });
    lines
}

/// Echoes a helper's output to the test's, each line tagged.
fn echo(out: impl std::io::Read + Send + 'static, tag: &'static str) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
        }
    });
}

fn count(lines: &Mutex<Vec<String>>, needle: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// pebble and its DNS server, on free loopback ports; pebble validates TLS-ALPN-01 on
/// `tls_port`.
struct Pebble {
    _dns: Running,
    _pebble: Running,
    directory: String,
    management: SocketAddr,
    /// The CA of pebble's own HTTPS certificate (for MYMCP_OUTBOUND_CA_FILE and this test).
    ca_file: PathBuf,
    ca: CertificateDer<'static>,
}

impl Pebble {
    fn start(dir: &Path, tls_port: u16) -> Pebble {
        let (pebble, challtestsrv) = match (which("pebble"), which("pebble-challtestsrv")) {
            (Some(p), Some(c)) => (p, c),
            _ => panic!("pebble is not installed: apt-get install pebble (tests/run does)"),
        };
        // pebble's HTTPS certificate: a throwaway CA and a leaf for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mymcp test: pebble's HTTPS CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap()
                .signed_by(&leaf_key, &issuer)
                .unwrap();
        let ca_file = dir.join("pebble-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        std::fs::set_permissions(&ca_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("pebble-key.pem"), leaf_key.serialize_pem()).unwrap();

        let dns = loopback(free_port());
        let mut child = Command::new(challtestsrv)
            .args([
                "-dns01",
                &dns.to_string(),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &loopback(free_port()).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        echo(child.stdout.take().unwrap(), "challtestsrv");
        let dns_server = Running(child);

        let (listen, management) = (loopback(free_port()), loopback(free_port()));
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.join("pebble-cert.pem"),
                "privateKey": dir.join("pebble-key.pem"),
                "httpPort": free_port(),
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_file = dir.join("pebble-config.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let mut child = Command::new(pebble)
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every nonce good and every order validated anew: no luck in the test.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        echo(child.stdout.take().unwrap(), "pebble");
        let pebble = Running(child);
        assert!(
            wait_until(Duration::from_secs(20), || TcpStream::connect(listen)
                .is_ok()
                && TcpStream::connect(management).is_ok()),
            "pebble did not start"
        );
        Pebble {
            _dns: dns_server,
            _pebble: pebble,
            directory: format!("https://{listen}/dir"),
            management,
            ca_file,
            ca: ca_cert.der().clone(),
        }
    }

    /// pebble's issuing root (it makes a new one every start), from its management port.
    fn root(&self) -> CertificateDer<'static> {
        let pem = https_get(self.management, "127.0.0.1", &self.ca, "/roots/0");
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pebble's root")
    }
}

fn client_config(trusted: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A verified TLS connection to `addr` for `name`.
fn connect(
    addr: SocketAddr,
    name: &str,
    trusted: &CertificateDer<'static>,
) -> std::io::Result<Tls> {
    let server = ServerName::try_from(name.to_owned()).unwrap();
    let connection = rustls::ClientConnection::new(client_config(trusted), server)
        .map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

fn leaf(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// GET over `Connection: close`; the body.
fn https_get(
    addr: SocketAddr,
    name: &str,
    trusted: &CertificateDer<'static>,
    path: &str,
) -> String {
    let mut tls = connect(addr, name, trusted).unwrap();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    // pebble may end without close_notify.
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// One keep-alive GET /health on an open connection; the answer's head and body.
fn health(tls: &mut Tls) -> String {
    write!(tls, "GET /health HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("\"executor\":") {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(response).unwrap()
}

fn start_frontend(port: u16, pebble: &Pebble, state: &Path) -> (Running, Arc<Mutex<Vec<String>>>) {
    let (uid, gid) = user_ids("nobody");
    let mut child = Command::new(bin("mymcp-frontend"))
        .env_clear()
        .env("MYMCP_EXECUTOR_SOCKET", "/nonexistent/executor.sock")
        .env("MYMCP_ACME_DOMAIN", DOMAIN)
        .env("MYMCP_ACME_EMAIL", "ops@mymcp-acme.test")
        .env("MYMCP_ACME_DIRECTORY", &pebble.directory)
        .env("MYMCP_ACME_DIR", state)
        .env("MYMCP_OUTBOUND_CA_FILE", &pebble.ca_file)
        .env("MYMCP_ALLOWED_HOSTS", DOMAIN)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-level",
            "info",
        ])
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = capture(&mut child, "frontend");
    (Running(child), lines)
}

/// A scratch directory (kept while the value lives) that nobody, the frontend, can enter to read
/// the CA file, and the path of the frontend's own ACME state directory in it (not made yet;
/// its parent belongs to nobody).
fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state_parent = dir.path().join("frontend");
    std::fs::create_dir(&state_parent).unwrap();
    let (uid, gid) = user_ids("nobody");
    std::os::unix::fs::chown(&state_parent, Some(uid), Some(gid)).unwrap();
    (dir, state_parent.join("acme"))
}

#[test]
fn a_certificate_from_pebble_by_tls_alpn_01_then_renewed_without_dropping_connections() {
    mymcp_tests::needs_root!();
    let (dir, state) = scratch();

    let port = free_port();
    let addr = loopback(port);
    let pebble = Pebble::start(dir.path(), port);
    let (mut frontend, log) = start_frontend(port, &pebble, &state);

    // The first certificate: ordered in the background, validated by pebble on our port.
    assert!(
        wait_until(Duration::from_secs(60), || count(
            &log,
            "certificate obtained for"
        ) == 1),
        "no certificate from pebble within 60 s"
    );
    assert_eq!(count(&log, "until it arrives, HTTPS handshakes fail"), 1);
    let root = pebble.root();
    let mut open = connect(addr, DOMAIN, &root).expect("the certificate chains to pebble's root");
    let first = leaf(&open);
    assert!(health(&mut open).starts_with("HTTP/1.1 200 OK\r\n"));
    // Only for the domain: the same certificate does not pass for another name.
    assert!(connect(addr, "other.mymcp-acme.test", &root).is_err());

    let (uid, _) = user_ids("nobody");
    for (file, mode) in [("account.json", 0o600), ("certificate.pem", 0o600)] {
        let meta = std::fs::metadata(state.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid, "{file}");
    }
    let meta = std::fs::metadata(&state).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);

    // Renewal (SIGHUP orders at once): a second order, a new certificate for new connections,
    // the open connection untouched.
    mymcp_sys::signals::kill(frontend.0.id(), libc::SIGHUP).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || count(
            &log,
            "certificate obtained for"
        ) == 2),
        "no second certificate within 60 s"
    );
    let mut fresh = connect(addr, DOMAIN, &root).unwrap();
    let second = leaf(&fresh);
    assert_ne!(second, first, "the renewal did not swap the certificate");
    assert!(health(&mut fresh).starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(health(&mut open).starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(leaf(&open), first);
    assert_eq!(
        count(&log, "ACME account created"),
        1,
        "the account is reused"
    );
    drop(open);
    drop(fresh);

    // A restart serves the stored certificate at once, and orders nothing.
    drop(frontend);
    let (frontend2, log2) = start_frontend(port, &pebble, &state);
    frontend = frontend2;
    let mut again = None;
    assert!(wait_until(Duration::from_secs(10), || {
        again = connect(addr, DOMAIN, &root).ok();
        again.is_some()
    }));
    assert_eq!(leaf(again.as_ref().unwrap()), second);
    assert_eq!(count(&log2, "certificate loaded from"), 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&log2, "certificate obtained for"), 0);
    assert_eq!(count(&log2, "handshakes fail"), 0);
    drop(frontend);
}

#[test]
fn a_failed_validation_is_logged_with_the_reason_and_retried_later() {
    mymcp_tests::needs_root!();
    let (dir, state) = scratch();

    // pebble validates on a port where nothing listens.
    let port = free_port();
    let pebble = Pebble::start(dir.path(), free_port());
    let (frontend, log) = start_frontend(port, &pebble, &state);
    let failure = "ACME: cannot obtain a certificate for mymcp-acme.test: ";
    assert!(
        wait_until(Duration::from_secs(60), || count(&log, failure) == 1),
        "no failure logged within 60 s"
    );
    let line = log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains(failure))
        .cloned()
        .unwrap();
    // What pebble said about the validation, and what happens next.
    assert!(line.contains("Failed to connect to 127.0.0.1:"), "{line}");
    assert!(line.contains("tls-alpn-01"), "{line}");
    assert!(
        line.contains("no certificate yet: HTTPS handshakes fail"),
        "{line}"
    );
    assert!(line.contains("next try in 300 s (or on SIGHUP)"), "{line}");
    assert!(!state.join("certificate.pem").exists());
    // Still serving (handshakes fail, the process lives) and not retrying at once.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&log, failure), 1);
    assert!(connect(loopback(port), DOMAIN, &pebble.root()).is_err());
    drop(frontend);
}
