//! HTTPS: the frontend's certificate, its reloading, and the TLS settings.
//!
//! TLS is rustls with the *ring* provider (the lighter build of the two; the executor has no
//! TLS at all). Versions 1.3 and 1.2 only, ALPN `h2` then `http/1.1`: hyper serves whichever
//! the client picked on the same port.
//!
//! The certificate chain and key are PEM files named by `MYMCP_TLS_CERT` / `MYMCP_TLS_KEY`, or
//! systemd credentials `tls.crt` / `tls.key` (`LoadCredential=`, found in
//! `$CREDENTIALS_DIRECTORY`), so the key file on disk can stay readable by root only.
//!
//! [`Tls::reload`] (on SIGHUP) reads the files again and swaps the certificate under the
//! [`ReloadingCert`] resolver: handshakes from then on use the new one, while connections
//! already established keep their session untouched. A reload that fails (unreadable file,
//! key not matching the certificate) keeps the current certificate.
//!
//! With ACME ([`crate::acme`], `MYMCP_ACME_DOMAIN`) there are no files: [`Tls::for_acme`]
//! starts without a certificate (handshakes fail until the first one is obtained), the ACME
//! task installs each certificate it obtains, and ALPN `acme-tls/1` is offered as well for
//! the TLS-ALPN-01 challenge (RFC 8737): a ClientHello that offers `acme-tls/1` and neither
//! `h2` nor `http/1.1` gets the challenge certificate of the name it asks for (or no
//! handshake), and such a connection is closed after the handshake, never served HTTP.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Whether a ClientHello offering `offered` (ALPN) is a TLS-ALPN-01 validation: it offers
/// `acme-tls/1` and neither of the HTTP protocols. The server prefers `h2` and `http/1.1` to
/// `acme-tls/1`, so exactly these handshakes negotiate `acme-tls/1`.
pub fn is_acme_hello<'a>(offered: Option<impl Iterator<Item = &'a [u8]>>) -> bool {
    let Some(offered) = offered else {
        return false;
    };
    let (mut acme, mut http) = (false, false);
    for protocol in offered {
        acme |= protocol == ACME_TLS_ALPN;
        http |= protocol == b"h2" || protocol == b"http/1.1";
    }
    acme && !http
}

/// Whether an established connection negotiated `acme-tls/1`: a validation that must be
/// closed, not served.
pub fn is_acme_connection(negotiated: Option<&[u8]>) -> bool {
    negotiated == Some(ACME_TLS_ALPN)
}

/// Names of the systemd credentials holding the certificate chain and the key.
pub const CREDENTIAL_CERT: &str = "tls.crt";
pub const CREDENTIAL_KEY: &str = "tls.key";

/// Why TLS could not be set up; each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("MYMCP_TLS_CERT and MYMCP_TLS_KEY must be set together (only {0} is set)")]
    HalfConfigured(&'static str),
    #[error("cannot read the certificate chain {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the key {key} does not fit the certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS settings: {0}")]
    Config(String),
}

/// Where the certificate chain and key are read from (again on every reload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files from `MYMCP_TLS_CERT`/`MYMCP_TLS_KEY` (both or neither), else the systemd
    /// credentials `tls.crt`/`tls.key` when both exist in `credentials_dir`; `None`: plain
    /// HTTP.
    pub fn from_settings(
        cert: Option<&Path>,
        key: Option<&Path>,
        credentials_dir: Option<&Path>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        fn nonempty(p: Option<&Path>) -> Option<&Path> {
            p.filter(|p| !p.as_os_str().is_empty())
        }
        match (nonempty(cert), nonempty(key)) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })),
            (Some(_), None) => Err(TlsError::HalfConfigured("MYMCP_TLS_CERT")),
            (None, Some(_)) => Err(TlsError::HalfConfigured("MYMCP_TLS_KEY")),
            (None, None) => Ok(credentials_dir.and_then(|dir| {
                let files = TlsFiles {
                    cert: dir.join(CREDENTIAL_CERT),
                    key: dir.join(CREDENTIAL_KEY),
                };
                (files.cert.is_file() && files.key.is_file()).then_some(files)
            })),
        }
    }

    /// Reads and checks the chain and the key.
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Certificate {
                path: self.cert.clone(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::Key {
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        let certified =
            CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
                reason: e.to_string(),
            })?;
        Ok(certified)
    }
}

/// The SHA-256 fingerprint of a DER certificate, as `openssl x509 -fingerprint -sha256`
/// prints it (`AB:CD:…`).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// A certificate resolver whose certificate can be swapped while the server runs, with the
/// TLS-ALPN-01 challenge certificates of pending ACME validations beside it.
pub struct ReloadingCert {
    /// `None` only with ACME, until the first certificate is obtained.
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// Challenge certificates by (lower-case) DNS name.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl ReloadingCert {
    fn new(key: Option<CertifiedKey>) -> ReloadingCert {
        ReloadingCert {
            current: RwLock::new(key.map(Arc::new)),
            challenges: RwLock::new(HashMap::new()),
        }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace(&self, key: CertifiedKey) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(key));
    }

    /// Serves `key` to TLS-ALPN-01 validations of `name` (until [`Self::remove_challenge`]).
    pub fn set_challenge(&self, name: &str, key: CertifiedKey) {
        self.challenges
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_ascii_lowercase(), Arc::new(key));
    }

    /// Ends the validation of `name`.
    pub fn remove_challenge(&self, name: &str) {
        self.challenges
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&name.to_ascii_lowercase());
    }

    fn challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// The fingerprint of the leaf certificate served now (`none yet` before the first ACME
    /// certificate).
    pub fn fingerprint(&self) -> String {
        match self.current() {
            Some(key) => fingerprint(key.cert[0].as_ref()),
            None => "none yet".to_owned(),
        }
    }

    /// The leaf certificate served now, DER.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current().map(|key| key.cert[0].clone())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if is_acme_hello(hello.alpn()) {
            // A validation gets its challenge certificate or nothing, never the real one.
            return hello.server_name().and_then(|name| self.challenge(name));
        }
        self.current()
    }
}

/// The frontend's TLS: the acceptor for new connections and the reloadable certificate.
#[derive(Clone)]
pub struct Tls {
    /// `None`: certificates come from ACME.
    files: Option<TlsFiles>,
    provider: Arc<CryptoProvider>,
    cert: Arc<ReloadingCert>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("cert", &self.cert)
            .finish()
    }
}

impl Tls {
    /// Loads the certificate and key and builds the server settings: TLS 1.3 and 1.2, ALPN
    /// `h2` and `http/1.1`, no client certificates.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = files.load(&provider)?;
        Tls::build(Some(files), Some(key), provider)
    }

    /// TLS for ACME: no certificate until [`Tls::install`] gets the first one (handshakes
    /// fail meanwhile), and ALPN `acme-tls/1` after `h2` and `http/1.1` for TLS-ALPN-01.
    pub fn for_acme() -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Tls::build(None, None, provider)
    }

    fn build(
        files: Option<TlsFiles>,
        key: Option<CertifiedKey>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Tls, TlsError> {
        let acme = files.is_none();
        let cert = Arc::new(ReloadingCert::new(key));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if acme {
            // Last: the server picks its first protocol the client offers.
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        Ok(Tls {
            files,
            provider,
            cert,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again and serves the new certificate to new connections; open
    /// connections are not touched. On error the current certificate stays. Returns the new
    /// fingerprint.
    pub fn reload(&self) -> Result<String, TlsError> {
        let Some(files) = &self.files else {
            return Err(TlsError::Config(
                "certificates come from ACME, there are no files to reload".to_owned(),
            ));
        };
        let key = files.load(&self.provider)?;
        self.cert.replace(key);
        Ok(self.fingerprint())
    }

    /// Serves `key` to new connections from now on (a certificate obtained by ACME); open
    /// connections are not touched.
    pub fn install(&self, key: CertifiedKey) {
        self.cert.replace(key);
    }

    /// The resolver, for the ACME task's challenge certificates.
    pub fn resolver(&self) -> &ReloadingCert {
        &self.cert
    }

    /// The crypto provider (ring) the certificates are loaded with.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The fingerprint of the certificate served to new connections.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint()
    }

    /// The files the certificate comes from; `None` with ACME.
    pub fn files(&self) -> Option<&TlsFiles> {
        self.files.as_ref()
    }

    /// The acceptor that performs handshakes with the current certificate.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}

/// Refuses to serve plain HTTP on an address other hosts can reach: bearer tokens (and the
/// whole conversation) would cross the network in clear text. `allow_plaintext`
/// (`MYMCP_ALLOW_PLAINTEXT=true`) is for a TLS-terminating reverse proxy in front.
pub fn check_plaintext(addr: SocketAddr, tls: bool, allow_plaintext: bool) -> Result<(), String> {
    if tls || allow_plaintext || addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing plain HTTP on {addr}: bearer tokens would cross the network unencrypted; set MYMCP_TLS_CERT and MYMCP_TLS_KEY (or the systemd credentials {CREDENTIAL_CERT}/{CREDENTIAL_KEY}, or MYMCP_ACME_DOMAIN), listen on loopback, or set MYMCP_ALLOW_PLAINTEXT=true behind a TLS-terminating reverse proxy"
    ))
}

/// The trust anchors of `MYMCP_OUTBOUND_CA_FILE` (PEM), for the HTTPS the frontend opens
/// itself (metadata documents, the ACME server) beside the Mozilla roots; none for no file.
/// A file that cannot be read, holds no certificate or one rustls refuses is an error naming
/// the setting.
pub fn extra_roots(path: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(Vec::new());
    };
    let named = |e: &dyn fmt::Display| format!("MYMCP_OUTBOUND_CA_FILE {}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| named(&e))?;
    if certs.is_empty() {
        return Err(named(&"no PEM certificate in it"));
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| named(&e))?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str) -> TlsFiles {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, c.cert.pem()).unwrap();
        std::fs::write(&files.key, c.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn env_settings_win_and_must_come_in_pairs() {
        let (c, k) = (Path::new("/c.pem"), Path::new("/k.pem"));
        let files = TlsFiles::from_settings(Some(c), Some(k), Some(Path::new("/creds"))).unwrap();
        assert_eq!(files.unwrap().cert, c);
        let err = TlsFiles::from_settings(Some(c), None, None).unwrap_err();
        assert!(err.to_string().contains("only MYMCP_TLS_CERT"), "{err}");
        let err = TlsFiles::from_settings(Some(Path::new("")), Some(k), None).unwrap_err();
        assert!(err.to_string().contains("only MYMCP_TLS_KEY"), "{err}");
        assert_eq!(TlsFiles::from_settings(None, None, None).unwrap(), None);
    }

    #[test]
    fn systemd_credentials_are_used_when_both_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            TlsFiles::from_settings(None, None, Some(dir.path())).unwrap(),
            None
        );
        write_cert(dir.path(), "tls");
        let files = TlsFiles::from_settings(None, None, Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!(files.cert, dir.path().join("tls.crt"));
        assert_eq!(files.key, dir.path().join("tls.key"));
        Tls::load(files).unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a");
        let b = write_cert(dir.path(), "b");
        let err = Tls::load(TlsFiles {
            cert: a.cert,
            key: b.key,
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn reload_swaps_the_certificate_and_a_bad_reload_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_cert(dir.path(), "live");
        let tls = Tls::load(files.clone()).unwrap();
        let first = tls.fingerprint();
        assert_eq!(first.len(), 32 * 3 - 1);

        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.fingerprint(), first);

        write_cert(dir.path(), "live");
        let second = tls.reload().unwrap();
        assert_ne!(second, first);
        assert_eq!(tls.fingerprint(), second);
    }

    #[test]
    fn missing_files_are_named() {
        let err = Tls::load(TlsFiles {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn acme_hellos_offer_acme_tls_and_no_http_protocol() {
        let hello = |protocols: &[&'static [u8]]| is_acme_hello(Some(protocols.iter().copied()));
        assert!(hello(&[b"acme-tls/1"]));
        assert!(hello(&[b"foo", b"acme-tls/1"]));
        assert!(!hello(&[b"acme-tls/1", b"h2"]));
        assert!(!hello(&[b"http/1.1", b"acme-tls/1"]));
        assert!(!hello(&[b"h2", b"http/1.1"]));
        assert!(!hello(&[]));
        assert!(!is_acme_hello(None::<std::iter::Empty<&[u8]>>));
        assert!(is_acme_connection(Some(b"acme-tls/1")));
        assert!(!is_acme_connection(Some(b"h2")));
        assert!(!is_acme_connection(None));
    }

    #[test]
    fn acme_tls_starts_without_a_certificate_and_files_cannot_be_reloaded() {
        let tls = Tls::for_acme().unwrap();
        assert_eq!(tls.fingerprint(), "none yet");
        assert!(tls.files().is_none());
        assert!(tls.reload().is_err());
        let c = rcgen::generate_simple_self_signed(vec!["mcp.example.com".to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let key = CertifiedKey::from_der(vec![c.cert.der().clone()], key, tls.provider()).unwrap();
        tls.install(key);
        assert_eq!(tls.fingerprint(), fingerprint(c.cert.der()));
    }

    #[test]
    fn plain_http_only_on_loopback_unless_allowed() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(check_plaintext(a("127.0.0.1:8765"), false, false).is_ok());
        assert!(check_plaintext(a("[::1]:8765"), false, false).is_ok());
        assert!(check_plaintext(a("[::ffff:127.0.0.1]:8765"), false, false).is_ok());
        let err = check_plaintext(a("0.0.0.0:8765"), false, false).unwrap_err();
        assert!(err.contains("MYMCP_ALLOW_PLAINTEXT=true"), "{err}");
        assert!(!err.contains('\n'));
        assert!(check_plaintext(a("[::]:8765"), false, false).is_err());
        assert!(check_plaintext(a("192.0.2.1:443"), true, false).is_ok());
        assert!(check_plaintext(a("192.0.2.1:80"), false, true).is_ok());
    }
}
