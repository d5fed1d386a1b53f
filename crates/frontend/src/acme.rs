//! Certificates from an ACME CA (RFC 8555; Let's Encrypt by default), obtained and renewed by
//! the frontend itself when `MYMCP_ACME_DOMAIN` is set.
//!
//! Validation is TLS-ALPN-01 (RFC 8737) on the frontend's own HTTPS listener, so nothing but
//! that port is needed (443 for a public CA, given by socket activation: no capability). While
//! an order is pending, [`crate::tls::ReloadingCert`] shows the CA's validation connections
//! (ALPN `acme-tls/1`) a challenge certificate carrying the `acmeIdentifier` extension, and
//! the server closes them after the handshake.
//!
//! State lives in the frontend's own directory (`MYMCP_ACME_DIR`, created 0700):
//! - `account.json`: the ACME account (its key and URL, and the directory it belongs to), 0600;
//! - `certificate.pem`: the certificate chain, leaf first, followed by its private key, 0600,
//!   replaced atomically in one rename (chain and key can never disagree).
//!
//! Lifecycle ([`run`]): at start the stored certificate is served if its key fits and it has
//! not expired; a new one is ordered in the background when there is none, when it does not
//! cover every configured name, when the account belongs to another directory, or once
//! [`renewal_due`]. The task looks again every [`CHECK_INTERVAL`], retries a failure with a
//! growing delay ([`retry_delay`]), and a wake-up ([`AcmeHandle::renew_now`], SIGHUP) orders
//! a new certificate at once. Each new certificate is installed under the resolver: new
//! handshakes get it, open connections keep theirs.

use crate::tls::Tls;
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use std::future::Future;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// The account file in [`AcmeConfig::dir`].
pub const ACCOUNT_FILE: &str = "account.json";
/// The certificate chain and its key, in [`AcmeConfig::dir`].
pub const CERTIFICATE_FILE: &str = "certificate.pem";

/// How often the certificate's remaining validity is looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);
/// Renew when fewer than this many days remain (or a third of the lifetime, if less).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// The first retry after a failed order; doubled after each further failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(5 * 60);
/// The longest wait between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);
/// How long one HTTP exchange with the ACME server may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the CA may take to validate, and then to issue.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(180);

/// The ACME settings, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The DNS names of the certificate, lower case, first one first.
    pub domains: Vec<String>,
    /// The contact address, without `mailto:`.
    pub email: Option<String>,
    /// The directory URL of the ACME server.
    pub directory: String,
    /// Where the account and the certificate are kept.
    pub dir: PathBuf,
    /// Extra trust anchors (PEM) for the connection to the ACME server.
    pub ca_file: Option<PathBuf>,
}

impl AcmeConfig {
    /// The ACME settings; `None` when `MYMCP_ACME_DOMAIN` is empty (no ACME). Every error
    /// names its setting.
    pub fn from_settings(
        domains: &[String],
        email: &str,
        directory: &str,
        dir: &Path,
        ca_file: Option<&Path>,
    ) -> Result<Option<AcmeConfig>, String> {
        let mut names: Vec<String> = Vec::new();
        for raw in domains.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
            let name = check_domain(raw).map_err(|e| format!("MYMCP_ACME_DOMAIN: {e}"))?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Ok(None);
        }
        let email = email.trim().trim_start_matches("mailto:");
        let email = if email.is_empty() {
            None
        } else {
            let (local, domain) = email.split_once('@').unwrap_or(("", ""));
            if local.is_empty()
                || domain.is_empty()
                || email.chars().any(|c| c.is_whitespace() || c.is_control())
                || email.contains([',', '<', '>'])
            {
                return Err(format!(
                    "MYMCP_ACME_EMAIL: {email:?} is not an e-mail address"
                ));
            }
            Some(email.to_owned())
        };
        let directory = directory.trim();
        if !directory.starts_with("https://") || directory.len() <= "https://".len() {
            return Err(format!(
                "MYMCP_ACME_DIRECTORY: {directory:?} is not an https:// URL"
            ));
        }
        if !dir.is_absolute() {
            return Err(format!(
                "MYMCP_ACME_DIR: {} is not an absolute path",
                dir.display()
            ));
        }
        Ok(Some(AcmeConfig {
            domains: names,
            email,
            directory: directory.to_owned(),
            dir: dir.to_owned(),
            ca_file: ca_file
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_owned),
        }))
    }

    /// The names, comma-separated, for logs.
    pub fn names(&self) -> String {
        self.domains.join(", ")
    }
}

/// A DNS name a public CA can validate by TLS-ALPN-01: no IP address, no wildcard (those need
/// DNS-01), at least two labels of letters, digits and inner hyphens. Returned in lower case,
/// without a final dot.
fn check_domain(raw: &str) -> Result<String, String> {
    let name = raw.trim_end_matches('.').to_ascii_lowercase();
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{raw:?} is an IP address, not a DNS name"));
    }
    if name.contains('*') {
        return Err(format!(
            "{raw:?}: wildcard names need DNS-01 validation, which the frontend does not do"
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if name.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(format!("{raw:?} is not a fully qualified DNS name"));
    }
    Ok(name)
}

// When to renew -------------------------------------------------------------------------------

/// The validity of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// When renewal is due: [`RENEW_BEFORE`] before the end, or a third of the lifetime before
    /// it when that is shorter (Let's Encrypt's advice for its shorter-lived certificates).
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let margin = RENEW_BEFORE.min(lifetime / 3);
        self.not_after
            .checked_sub(margin)
            .unwrap_or(self.not_before)
    }
}

/// Whether a certificate valid over `validity` should be renewed at `now`.
pub fn renewal_due(validity: &Validity, now: SystemTime) -> bool {
    now >= validity.renew_at()
}

/// The wait before retry number `failures` (1 for the first).
pub fn retry_delay(failures: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_RETRY)
}

/// The `notBefore` and `notAfter` of a DER certificate.
pub fn validity(der: &[u8]) -> Result<Validity, String> {
    use yasna::tags::{TAG_GENERALIZEDTIME, TAG_UTCTIME};
    fn time(r: yasna::BERReader<'_, '_>) -> yasna::ASN1Result<i64> {
        let tag = r.lookahead_tag()?;
        if tag == TAG_UTCTIME {
            Ok(r.read_utctime()?.datetime().unix_timestamp())
        } else if tag == TAG_GENERALIZEDTIME {
            Ok(r.read_generalized_time()?.datetime().unix_timestamp())
        } else {
            Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid))
        }
    }
    let (not_before, not_after) = yasna::parse_der(der, |r| {
        r.read_sequence(|cert| {
            let validity = cert.next().read_sequence(|tbs| {
                // version [0] EXPLICIT INTEGER OPTIONAL
                tbs.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_i64()))?;
                tbs.next().read_der()?; // serialNumber
                tbs.next().read_der()?; // signature
                tbs.next().read_der()?; // issuer
                let validity = tbs.next().read_sequence(|v| {
                    let not_before = time(v.next())?;
                    let not_after = time(v.next())?;
                    Ok((not_before, not_after))
                })?;
                // subject, subjectPublicKeyInfo, then the optional parts.
                while tbs.read_optional(|r| r.read_der())?.is_some() {}
                Ok(validity)
            })?;
            cert.next().read_der()?; // signatureAlgorithm
            cert.next().read_der()?; // signatureValue
            Ok(validity)
        })
    })
    .map_err(|e| format!("not a readable X.509 certificate: {e}"))?;
    let at = |secs: i64| -> Result<SystemTime, String> {
        let secs = u64::try_from(secs).map_err(|_| "a validity date before 1970".to_owned())?;
        Ok(UNIX_EPOCH + Duration::from_secs(secs))
    };
    Ok(Validity {
        not_before: at(not_before)?,
        not_after: at(not_after)?,
    })
}

/// A date for the log: `Tue, 07 Dec 2027 19:46:41 GMT`.
pub fn date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

// The TLS-ALPN-01 challenge certificate ---------------------------------------------------------

/// The self-signed certificate that answers a TLS-ALPN-01 validation of `name` (RFC 8737 §3):
/// `name` as its only subjectAltName, and the critical `acmeIdentifier` extension holding
/// `digest`, the SHA-256 of the key authorization.
pub fn challenge_certificate(
    name: &str,
    digest: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    if digest.len() != 32 {
        return Err(format!(
            "a key authorization digest of {} bytes, not 32",
            digest.len()
        ));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
    // refuses the (critical, and unknown to it) acmeIdentifier extension.
    let signer = provider
        .key_provider
        .load_private_key(der_key)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

/// Removes the challenge certificates it names when dropped: a validation never outlives its
/// order attempt, whatever way the attempt ends.
struct Challenges<'a> {
    tls: &'a Tls,
    names: Vec<String>,
}

impl Challenges<'_> {
    fn add(&mut self, name: &str, key: CertifiedKey) {
        self.tls.resolver().set_challenge(name, key);
        self.names.push(name.to_owned());
    }
}

impl Drop for Challenges<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            self.tls.resolver().remove_challenge(name);
        }
    }
}

// State on disk ---------------------------------------------------------------------------------

/// A certificate with its key and what the renewal needs to know of it.
#[derive(Debug)]
pub struct Stored {
    pub key: CertifiedKey,
    pub validity: Validity,
    /// Whether it names every configured domain.
    pub covers_all: bool,
}

impl Stored {
    /// Parses `certificate.pem` (chain, leaf first, then the key): the key must fit.
    pub fn parse(
        pem: &[u8],
        domains: &[String],
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Stored, String> {
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        let Some(leaf) = chain.first() else {
            return Err("no certificate in it".to_owned());
        };
        let validity = validity(leaf.as_ref())?;
        let leaf_cert = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        let covers_all = domains.iter().all(|d| {
            ServerName::try_from(d.as_str())
                .is_ok_and(|name| leaf_cert.verify_is_valid_for_subject_name(&name).is_ok())
        });
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("unreadable key: {e}"))?;
        let key = CertifiedKey::from_der(chain, key, provider)
            .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
        Ok(Stored {
            key,
            validity,
            covers_all,
        })
    }
}

/// Creates `dir` (0700) if missing, and makes sure the frontend can write there.
fn prepare_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", dir.display()),
            ))
        }
    }
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        // Ours (StateDirectory= or created above): nobody else needs to look in.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Writes `body` to `path` atomically (a temporary file in the same directory, fsync, rename,
/// fsync of the directory) with mode 0600.
pub fn write_private(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}

/// The directory URL an `account.json` belongs to.
fn account_directory(json: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value.get("directory")?.as_str().map(str::to_owned)
}

// The HTTP client -------------------------------------------------------------------------------

/// instant-acme's requests on the frontend's own stack: hyper with rustls (ring), Mozilla's
/// roots and those of `MYMCP_OUTBOUND_CA_FILE`; HTTPS only, each exchange bounded in time.
struct AcmeHttp {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        BodyWrapper<Bytes>,
    >,
}

impl AcmeHttp {
    fn new(ca_file: Option<&Path>) -> Result<AcmeHttp, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in crate::tls::extra_roots(ca_file)? {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(AcmeHttp { client })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let response = self.client.request(req);
        Box::pin(async move {
            let exchange = async {
                let response = response.await.map_err(|e| {
                    instant_acme::Error::Other(format!("ACME server: {}", error_chain(&e)).into())
                })?;
                // Read whole here, so that the time bound covers the body too (ACME answers
                // are small).
                let (parts, body) = response.into_parts();
                let body = http_body_util::Limited::new(body, 1 << 20)
                    .collect()
                    .await
                    .map_err(|e| instant_acme::Error::Other(e.to_string().into()))?
                    .to_bytes();
                Ok(BytesResponse::from(http::Response::from_parts(
                    parts,
                    http_body_util::Full::new(body),
                )))
            };
            tokio::time::timeout(HTTP_TIMEOUT, exchange)
                .await
                .map_err(|_| instant_acme::Error::Str("the ACME server did not answer in time"))?
        })
    }
}

/// An error and its sources, `: `-separated (hyper's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

// The task --------------------------------------------------------------------------------------

/// Wakes the ACME task.
#[derive(Clone, Debug, Default)]
pub struct AcmeHandle {
    wake: Arc<Notify>,
}

impl AcmeHandle {
    /// Orders a new certificate now (SIGHUP), whatever the current one's validity, and ends a
    /// retry's wait.
    pub fn renew_now(&self) {
        self.wake.notify_one();
    }
}

/// Checks what can be checked before serving: the settings, the trust anchors, the state
/// directory. Then [`run`] does the rest in the background.
pub struct Acme {
    config: AcmeConfig,
    tls: Tls,
    http: Arc<AcmeHttp>,
    account: Option<Account>,
    handle: AcmeHandle,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("config", &self.config)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Acme {
    pub fn new(config: AcmeConfig, tls: Tls) -> Result<Acme, String> {
        let http = AcmeHttp::new(config.ca_file.as_deref())?;
        prepare_dir(&config.dir).map_err(|e| format!("MYMCP_ACME_DIR: {e}"))?;
        Ok(Acme {
            config,
            tls,
            http: Arc::new(http),
            account: None,
            handle: AcmeHandle::default(),
        })
    }

    /// The handle that wakes the task.
    pub fn handle(&self) -> AcmeHandle {
        self.handle.clone()
    }

    /// Loads the stored certificate and installs it if it can serve; `None` when there is
    /// none that can. Its renewal is due at once if it is not for this directory and these
    /// names.
    pub fn load(&self) -> Option<(Validity, bool)> {
        let path = self.config.dir.join(CERTIFICATE_FILE);
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(
                    "cannot read {}: {e}; ordering a new certificate",
                    path.display()
                );
                return None;
            }
        };
        let stored = match Stored::parse(&pem, &self.config.domains, self.tls.provider()) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!("{}: {e}; ordering a new certificate", path.display());
                return None;
            }
        };
        if SystemTime::now() >= stored.validity.not_after {
            tracing::warn!(
                "{}: expired {}; ordering a new certificate",
                path.display(),
                date(stored.validity.not_after)
            );
            return None;
        }
        let account = std::fs::read(self.config.dir.join(ACCOUNT_FILE)).ok();
        let same_ca = account
            .as_deref()
            .and_then(account_directory)
            .is_some_and(|d| d == self.config.directory);
        self.tls.install(stored.key);
        tracing::info!(
            fingerprint = %self.tls.fingerprint(),
            "certificate loaded from {} for {}, valid until {}",
            path.display(),
            self.config.names(),
            date(stored.validity.not_after)
        );
        let current = stored.covers_all && same_ca;
        if !stored.covers_all {
            tracing::info!(
                "the stored certificate does not name all of {}: ordering a new one",
                self.config.names()
            );
        } else if !same_ca {
            tracing::info!(
                "the stored certificate is not from {}: ordering a new one",
                self.config.directory
            );
        }
        Some((stored.validity, current))
    }

    /// The account: loaded from `account.json` if it belongs to this directory, else created
    /// (and stored).
    async fn account(&mut self) -> Result<Account, String> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let path = self.config.dir.join(ACCOUNT_FILE);
        let stored = std::fs::read(&path).ok();
        let account = match stored
            .as_deref()
            .filter(|json| account_directory(json).as_deref() == Some(&self.config.directory))
        {
            Some(json) => {
                let credentials: AccountCredentials =
                    serde_json::from_slice(json).map_err(|e| format!("{}: {e}", path.display()))?;
                Account::builder_with_http(Box::new(SharedHttp(self.http.clone())))
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("ACME account from {}: {e}", path.display()))?
            }
            None => {
                let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) =
                    Account::builder_with_http(Box::new(SharedHttp(self.http.clone())))
                        .create(
                            &NewAccount {
                                contact: &contact,
                                terms_of_service_agreed: true,
                                only_return_existing: false,
                            },
                            self.config.directory.clone(),
                            None,
                        )
                        .await
                        .map_err(|e| {
                            format!(
                                "cannot create an ACME account at {}: {e}",
                                self.config.directory
                            )
                        })?;
                let json = serde_json::to_vec_pretty(&credentials).map_err(|e| e.to_string())?;
                write_private(&path, &json).map_err(|e| e.to_string())?;
                tracing::info!(
                    account = %account.id(),
                    "ACME account created at {} (key in {})",
                    self.config.directory,
                    path.display()
                );
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// One order: the account, TLS-ALPN-01 for every name, the CSR with a fresh P-256 key, the
    /// certificate. It is stored, then installed.
    pub async fn obtain(&mut self) -> Result<Validity, String> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut challenges = Challenges {
            tls: &self.tls,
            names: Vec::new(),
        };
        {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
                match authorization.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(format!(
                            "authorization for {} is {other:?}",
                            authorization.identifier()
                        ))
                    }
                }
                let name = authorization.identifier().to_string();
                let mut challenge = authorization
                    .challenge(ChallengeType::TlsAlpn01)
                    .ok_or_else(|| format!("the CA offers no tls-alpn-01 challenge for {name}"))?;
                let digest = challenge.key_authorization().digest();
                let cert = challenge_certificate(&name, digest.as_ref(), self.tls.provider())?;
                challenges.add(&name, cert);
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| format!("challenge for {name}: {e}"))?;
            }
        }
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(500))
            .backoff(1.5)
            .timeout(VALIDATION_TIMEOUT);
        let status = order
            .poll_ready(&policy)
            .await
            .map_err(|e| format!("validation: {e}"))?;
        drop(challenges);
        if status != OrderStatus::Ready {
            let mut reasons = Vec::new();
            if let Some(problem) = &order.state().error {
                reasons.push(problem.to_string());
            }
            let mut authorizations = order.authorizations();
            while let Some(Ok(mut authorization)) = authorizations.next().await {
                let name = authorization.identifier().to_string();
                if let Ok(state) = authorization.refresh().await {
                    for challenge in &state.challenges {
                        if let Some(problem) = &challenge.error {
                            reasons.push(format!("{name}: {problem}"));
                        }
                    }
                }
            }
            return Err(format!(
                "the order is {status:?}: {}",
                if reasons.is_empty() {
                    "no reason given".to_owned()
                } else {
                    reasons.join("; ")
                }
            ));
        }

        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(self.config.domains.clone())
            .map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("CSR: {e}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&policy)
            .await
            .map_err(|e| format!("certificate: {e}"))?;

        let mut pem = chain.into_bytes();
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        pem.extend_from_slice(key.serialize_pem().as_bytes());
        let stored = Stored::parse(&pem, &self.config.domains, self.tls.provider())
            .map_err(|e| format!("the CA's certificate: {e}"))?;
        if !stored.covers_all {
            return Err(format!(
                "the CA's certificate does not name all of {}",
                self.config.names()
            ));
        }
        write_private(&self.config.dir.join(CERTIFICATE_FILE), &pem).map_err(|e| e.to_string())?;
        self.tls.install(stored.key);
        Ok(stored.validity)
    }
}

/// One HTTP client for every account built (instant-acme takes a `Box`).
struct SharedHttp(Arc<AcmeHttp>);

impl HttpClient for SharedHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        self.0.request(req)
    }
}

/// The ACME task: serves the stored certificate, orders a new one when there is none or
/// renewal is due, and retries failures. Runs until the runtime stops.
pub async fn run(mut acme: Acme) {
    let names = acme.config.names();
    let wake = acme.handle.wake.clone();
    // The certificate served, and whether a new one is wanted whatever its validity.
    let (mut current, mut due_now) = match acme.load() {
        Some((validity, fits)) => (Some(validity), !fits),
        None => {
            tracing::warn!(
                "no certificate yet for {names}: ordering one from {}; until it arrives, HTTPS handshakes fail",
                acme.config.directory
            );
            (None, true)
        }
    };
    let mut failures = 0u32;
    loop {
        let wait = if failures > 0 {
            Some(retry_delay(failures))
        } else if due_now {
            None
        } else {
            match &current {
                Some(validity) if !renewal_due(validity, SystemTime::now()) => Some(
                    validity
                        .renew_at()
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .min(CHECK_INTERVAL),
                ),
                _ => None,
            }
        };
        if let Some(wait) = wait {
            let forced = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                () = wake.notified() => true,
            };
            if forced {
                tracing::info!("ordering a new certificate for {names} now (SIGHUP)");
            } else if failures == 0
                && !due_now
                && current
                    .as_ref()
                    .is_some_and(|v| !renewal_due(v, SystemTime::now()))
            {
                continue;
            }
        }
        if let Some(validity) = &current {
            tracing::info!(
                "renewing the certificate for {names} (valid until {})",
                date(validity.not_after)
            );
        }
        match acme.obtain().await {
            Ok(validity) => {
                failures = 0;
                due_now = false;
                tracing::info!(
                    fingerprint = %acme.tls.fingerprint(),
                    "certificate obtained for {names}, valid until {}; renewal from {}",
                    date(validity.not_after),
                    date(validity.renew_at())
                );
                current = Some(validity);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                // The account is read again (or made) on the next try.
                acme.account = None;
                let still = match &current {
                    Some(v) => format!(
                        "still serving the certificate valid until {}",
                        date(v.not_after)
                    ),
                    None => "no certificate yet: HTTPS handshakes fail".to_owned(),
                };
                tracing::error!(
                    "ACME: cannot obtain a certificate for {names}: {e}; {still}; next try in {} s (or on SIGHUP)",
                    retry_delay(failures).as_secs()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn config(domains: &str) -> Result<Option<AcmeConfig>, String> {
        let domains: Vec<String> = domains.split(',').map(str::to_owned).collect();
        AcmeConfig::from_settings(
            &domains,
            "",
            mymcp_settings::ACME_DIRECTORY.default(),
            Path::new("/var/lib/mymcp-frontend/acme"),
            None,
        )
    }

    #[test]
    fn no_domain_no_acme() {
        assert_eq!(config("").unwrap(), None);
        assert_eq!(config(" , ").unwrap(), None);
    }

    #[test]
    fn domains_are_checked_lowered_and_deduplicated() {
        let c = config("MCP.Example.com., mcp.example.com,b.example.org")
            .unwrap()
            .unwrap();
        assert_eq!(c.domains, ["mcp.example.com", "b.example.org"]);
        assert_eq!(c.names(), "mcp.example.com, b.example.org");
        assert_eq!(c.email, None);
        for bad in [
            "*.example.com",
            "192.0.2.1",
            "::1",
            "localhost",
            "a..example.com",
            "-a.example.com",
            "a_b.example.com",
            "exa mple.com",
        ] {
            let err = config(bad).unwrap_err();
            assert!(err.starts_with("MYMCP_ACME_DOMAIN: "), "{bad}: {err}");
        }
        assert!(config(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn email_directory_and_dir_are_checked() {
        let domains = vec!["mcp.example.com".to_owned()];
        let dir = Path::new("/var/lib/x");
        let ok = |email: &str, directory: &str, dir: &Path| {
            AcmeConfig::from_settings(&domains, email, directory, dir, None)
        };
        let le = mymcp_settings::ACME_DIRECTORY.default();
        let c = ok("mailto:ops@example.com", le, dir).unwrap().unwrap();
        assert_eq!(c.email.as_deref(), Some("ops@example.com"));
        for bad in ["ops", "@example.com", "ops@", "a b@example.com", "a@b,c@d"] {
            let err = ok(bad, le, dir).unwrap_err();
            assert!(err.starts_with("MYMCP_ACME_EMAIL: "), "{bad}: {err}");
        }
        let err = ok("", "http://acme.example/directory", dir).unwrap_err();
        assert!(err.starts_with("MYMCP_ACME_DIRECTORY: "), "{err}");
        let err = ok("", le, Path::new("acme")).unwrap_err();
        assert!(err.starts_with("MYMCP_ACME_DIR: "), "{err}");
        let c = AcmeConfig::from_settings(&domains, "", le, dir, Some(Path::new("")))
            .unwrap()
            .unwrap();
        assert_eq!(c.ca_file, None);
    }

    #[test]
    fn renewal_is_due_thirty_days_or_a_third_of_the_lifetime_before_the_end() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let v = |days: u32| Validity {
            not_before: start,
            not_after: start + DAY * days,
        };
        // Let's Encrypt's 90 days: from day 60.
        assert_eq!(v(90).renew_at(), start + DAY * 60);
        assert!(!renewal_due(&v(90), start + DAY * 59));
        assert!(renewal_due(&v(90), start + DAY * 60));
        // Long-lived (pebble's): 30 days before the end.
        assert_eq!(v(1826).renew_at(), start + DAY * 1796);
        // Short-lived: a third of the lifetime before the end.
        assert_eq!(v(6).renew_at(), start + DAY * 4);
        assert_eq!(v(45).renew_at(), start + DAY * 30);
        // Expired, or a nonsense validity: due.
        assert!(renewal_due(&v(90), start + DAY * 91));
        let backwards = Validity {
            not_before: start + DAY,
            not_after: start,
        };
        assert!(renewal_due(&backwards, start));
    }

    #[test]
    fn retries_back_off_to_six_hours() {
        assert_eq!(retry_delay(1), Duration::from_secs(300));
        assert_eq!(retry_delay(2), Duration::from_secs(600));
        assert_eq!(retry_delay(3), Duration::from_secs(1200));
        assert_eq!(retry_delay(8), MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }

    fn certificate(names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn validity_is_read_from_utc_and_generalized_times() {
        // 2049 and earlier: UTCTime; 2050 on: GeneralizedTime.
        let (pem, _) = certificate(&["a.example.com"], (2026, 1, 2), (2051, 3, 4));
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let v = validity(der.as_ref()).unwrap();
        assert_eq!(date(v.not_before), "Fri, 02 Jan 2026 00:00:00 GMT");
        assert_eq!(date(v.not_after), "Sat, 04 Mar 2051 00:00:00 GMT");
        assert!(validity(b"\x30\x03\x02\x01\x01").is_err());
        assert!(validity(&der.as_ref()[..der.as_ref().len() - 1]).is_err());
    }

    #[test]
    fn a_stored_certificate_needs_its_key_and_is_checked_for_every_name() {
        let provider = rustls::crypto::ring::default_provider();
        let (cert, key) = certificate(
            &["a.example.com", "b.example.com"],
            (2026, 1, 1),
            (2026, 4, 1),
        );
        let pem = format!("{cert}{key}");
        let both = ["a.example.com".to_owned(), "b.example.com".to_owned()];
        let stored = Stored::parse(pem.as_bytes(), &both, &provider).unwrap();
        assert!(stored.covers_all);
        let more = ["a.example.com".to_owned(), "c.example.com".to_owned()];
        assert!(
            !Stored::parse(pem.as_bytes(), &more, &provider)
                .unwrap()
                .covers_all
        );
        let (_, other_key) = certificate(&["a.example.com"], (2026, 1, 1), (2026, 4, 1));
        let err =
            Stored::parse(format!("{cert}{other_key}").as_bytes(), &both, &provider).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        assert!(Stored::parse(cert.as_bytes(), &both, &provider).is_err());
        assert!(Stored::parse(key.as_bytes(), &both, &provider).is_err());
    }

    #[test]
    fn the_challenge_certificate_names_the_domain_and_carries_the_digest() {
        let provider = rustls::crypto::ring::default_provider();
        let digest: Vec<u8> = (0u8..32).collect();
        let key = challenge_certificate("mcp.example.com", &digest, &provider).unwrap();
        assert_eq!(key.cert.len(), 1);
        let der = key.cert[0].as_ref();
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical, OCTET STRING { OCTET STRING digest }.
        let mut ext = vec![0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        ext.extend([0x01, 0x01, 0xff, 0x04, 0x22, 0x04, 0x20]);
        ext.extend(&digest);
        assert!(
            der.windows(ext.len()).any(|w| w == ext),
            "no acmeIdentifier extension"
        );
        // subjectAltName: the one dNSName.
        let mut san = vec![0x30, 17, 0x82, 15];
        san.extend(b"mcp.example.com");
        assert!(
            der.windows(san.len()).any(|w| w == san),
            "no subjectAltName"
        );
        // Its key signs (what the handshake needs).
        let signer = key
            .key
            .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256]);
        assert!(signer.unwrap().sign(b"x").is_ok());
        assert!(challenge_certificate("mcp.example.com", &digest[..31], &provider).is_err());
    }

    #[test]
    fn state_files_are_written_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("acme");
        prepare_dir(&state).unwrap();
        let meta = std::fs::metadata(&state).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let path = state.join(CERTIFICATE_FILE);
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(&state).unwrap().count(),
            1,
            "no temporary file left"
        );
        // A looser existing directory is tightened.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dir(&state).unwrap();
        let meta = std::fs::metadata(&state).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn the_account_file_names_its_directory() {
        let json = br#"{"id":"https://ca/acct/1","key_pkcs8":"AA","directory":"https://ca/dir"}"#;
        assert_eq!(account_directory(json).as_deref(), Some("https://ca/dir"));
        assert_eq!(account_directory(b"{}"), None);
        assert_eq!(account_directory(b"not json"), None);
    }
}
