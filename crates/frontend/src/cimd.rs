//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP
//! authorization 2025-11-25): a client whose `client_id` is an `https` URL is described by the
//! JSON document at that URL. The executor has no network, so the frontend fetches the
//! document for `GET /authorize` and forwards what it says; the executor still decides (the
//! redirect URI against the document's, every redirect URI as for a registration).
//!
//! Whoever can reach `/authorize` chooses the URL, so the fetch is guarded against being aimed
//! at what only this host can reach (SSRF):
//! - only `https://host[:port]/path` URLs: a path other than `/`, no `.`/`..` segments, no
//!   user information, no fragment, printable ASCII, at most [`MAX_CLIENT_ID_LEN`];
//! - the host is resolved once, and refused if **any** of its addresses is not public
//!   (loopback, private, link-local, CGNAT, unspecified, multicast, broadcast, documentation,
//!   reserved, and IPv4-mapped or NAT64 forms of those) unless `MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS`
//!   holds it; the connection goes to a vetted address itself (a second resolution could
//!   answer otherwise: DNS rebinding), TLS verified against the Mozilla roots (plus
//!   `MYMCP_OUTBOUND_CA_FILE`) for the host's name;
//! - one `GET`, no redirect followed, `application/json` only, at most
//!   [`MAX_DOCUMENT_BYTES`] read, all within [`FETCH_TIMEOUT`]; at most [`MAX_IN_FLIGHT`]
//!   fetches at a time (beyond: [`Refused::Busy`]);
//! - outcomes are cached by URL: a document for its `Cache-Control: max-age` within
//!   [[`MIN_TTL`], [`MAX_TTL`]] ([`DEFAULT_TTL`] without one), a failure for [`FAILURE_TTL`],
//!   at most [`CACHE_ENTRIES`] (the oldest goes first).

use crate::origin::{ListError, Networks};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap};
use mymcp_protocol::oauth::{
    ClientAuthMethod, ClientMetadata, MAX_CLIENT_ID_LEN, MAX_CLIENT_NAME_LEN, MAX_REDIRECT_URIS,
    MAX_URI_LEN,
};
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest document read; a longer one is refused without reading the rest.
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// The whole fetch: resolution, connection, TLS, request and body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Fetches at the same time; beyond, `/authorize` answers `temporarily_unavailable`.
pub const MAX_IN_FLIGHT: usize = 8;
/// Cached outcomes (documents and failures).
pub const CACHE_ENTRIES: usize = 256;
/// A document is kept at least this long, whatever its `Cache-Control` says.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// And at most this long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Without `Cache-Control: max-age`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// A failure is kept this long, so that a slow or hostile URL is not fetched in a loop.
pub const FAILURE_TTL: Duration = Duration::from_secs(30);

/// Why a client's metadata document is not used. Shown to the person on the error page,
/// never sent to the (unverified) redirect URI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the client_id is not a usable metadata document URL: {0}")]
    Url(&'static str),
    #[error("the client's metadata document is on a {0} address, from which mymcp fetches nothing (MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS can allow it)")]
    Address(&'static str),
    #[error("the host of the client's metadata document cannot be resolved")]
    Unresolved,
    #[error("the client's metadata document cannot be fetched: {0}")]
    Unreachable(String),
    #[error("the client's metadata document took longer than 5 s to fetch")]
    Timeout,
    #[error("the client's metadata document URL redirects (HTTP {0}); redirects are not followed")]
    Redirect(u16),
    #[error("the client's metadata document URL answers HTTP {0}, not 200")]
    Status(u16),
    #[error("the client's metadata document is not JSON (Content-Type application/json)")]
    NotJson,
    #[error("the client's metadata document is larger than 5 KiB")]
    TooLarge,
    #[error("the client's metadata document names another client_id than its URL")]
    OtherClientId,
    #[error("the client's metadata document is for a confidential client (token_endpoint_auth_method other than none); only public clients are accepted")]
    NotPublic,
    #[error("the client's metadata document {0}")]
    Invalid(&'static str),
    #[error("too many client metadata documents are being fetched; try again in a moment")]
    Busy,
}

/// A `client_id` that is a metadata document's URL, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentUrl {
    /// A name (lowercase), an IPv4 address, or an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written: the `Host` header.
    pub authority: String,
    /// The path and the query: the request target.
    pub target: String,
}

/// The URL rules of the draft (§3): `https`, a host, a path other than `/` without `.` or
/// `..` segments, no user information, no fragment; printable ASCII, at most
/// [`MAX_CLIENT_ID_LEN`] characters.
pub fn document_url(client_id: &str) -> Result<DocumentUrl, &'static str> {
    if client_id.len() > MAX_CLIENT_ID_LEN {
        return Err("it is longer than 512 characters");
    }
    if !client_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("it has a character other than printable ASCII");
    }
    let Some(rest) = client_id.strip_prefix("https://") else {
        return Err("it must begin with https://");
    };
    if rest.contains('#') {
        return Err("it has a fragment");
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    if authority.contains('@') {
        return Err("it has user information");
    }
    let path = target.split('?').next().unwrap_or("");
    if !path.starts_with('/') || path == "/" {
        return Err("it needs a path (https://client.example/oauth/metadata.json)");
    }
    let dot = |segment: &str| {
        let s = segment.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    };
    if path.split('/').any(dot) {
        return Err("it has a . or .. path segment");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("its host is malformed")?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| "its host is not an IPv6 address")?;
        (addr.to_owned(), after)
    } else {
        let (host, port) = match authority.find(':') {
            Some(i) => authority.split_at(i),
            None => (authority, ""),
        };
        let name_chars = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if host.is_empty() || !host.chars().all(name_chars) {
            return Err("its host is not a name or an address");
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        "" => 443,
        p => p
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or("its port is malformed")?,
    };
    Ok(DocumentUrl {
        host,
        port,
        authority: authority.to_owned(),
        target: target.to_owned(),
    })
}

/// What kind of address `ip` is when it is not a public one (`None`: public).
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => Some("unspecified"),
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => Some("private"),
        (100, 64..=127, _) => Some("shared (CGNAT)"),
        (127, _, _) => Some("loopback"),
        (169, 254, _) => Some("link-local"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Some("documentation"),
        // IETF protocol assignments; the deprecated 6to4 relay anycast.
        (192, 0, 0) | (192, 88, 99) => Some("reserved"),
        (198, 18..=19, _) => Some("benchmarking"),
        (224..=239, _, _) => Some("multicast"),
        _ if ip == Ipv4Addr::BROADCAST => Some("broadcast"),
        (240..=255, _, _) => Some("reserved"),
        _ => None,
    }
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let s = ip.segments();
    match s[0] {
        // The NAT64 well-known prefix 64:ff9b::/96 reaches the IPv4 address in its last 32 bits.
        0x64 if s[1..6] == [0xff9b, 0, 0, 0, 0] => {
            let [a, b] = s[6].to_be_bytes();
            let [c, d] = s[7].to_be_bytes();
            v4_kind(Ipv4Addr::new(a, b, c, d))
        }
        // Local-use NAT64 (64:ff9b:1::/48).
        0x64 if s[1..3] == [0xff9b, 1] => Some("private"),
        // Documentation: 2001:db8::/32 and 3fff::/20.
        0x2001 if s[1] == 0x0db8 => Some("documentation"),
        0x3fff if s[1] < 0x1000 => Some("documentation"),
        // IETF protocol assignments (2001::/23: Teredo, benchmarking, ORCHID) and 6to4
        // (2002::/16): tunnels to addresses not checked here.
        0x2001 if s[1] < 0x0200 => Some("reserved"),
        0x2002 => Some("reserved"),
        // Global unicast.
        0x2000..=0x3fff => None,
        0xfc00..=0xfdff => Some("private"),
        0xfe80..=0xfebf => Some("link-local"),
        // Site-local (deprecated).
        0xfec0..=0xfeff => Some("private"),
        0xff00..=0xffff => Some("multicast"),
        // IPv4-compatible (::/96), discard-only (100::/64), and all that is not assigned.
        _ => Some("reserved"),
    }
}

/// What a document must say, checked as `POST /register` checks a registration (the executor
/// checks each redirect URI's form, and the `redirect_uri` against them).
pub fn parse_document(client_id: &str, body: &[u8]) -> Result<ClientMetadata, Refused> {
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err(Refused::Invalid("is not a JSON object"));
    };
    match v.get("client_id").and_then(|c| c.as_str()) {
        Some(id) if id == client_id => {}
        Some(_) => return Err(Refused::OtherClientId),
        None => return Err(Refused::Invalid("has no client_id")),
    }
    match v.get("token_endpoint_auth_method") {
        None => {}
        Some(m) if m.as_str() == Some("none") => {}
        Some(_) => return Err(Refused::NotPublic),
    }
    let uris: Option<Vec<String>> = v
        .get("redirect_uris")
        .and_then(|u| u.as_array())
        .and_then(|a| {
            a.iter()
                .map(|u| u.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .filter(|u| {
            !u.is_empty()
                && u.len() <= MAX_REDIRECT_URIS
                && u.iter()
                    .all(|x| x.len() <= MAX_URI_LEN && !x.chars().any(char::is_control))
        });
    let Some(redirect_uris) = uris else {
        return Err(Refused::Invalid(
            "needs redirect_uris: 1 to 10 URIs, each at most 2048 characters",
        ));
    };
    let client_name = v
        .get("client_name")
        .and_then(|n| n.as_str())
        .filter(|n| n.len() <= MAX_CLIENT_NAME_LEN && !n.chars().any(char::is_control))
        .map(str::to_owned);
    Ok(ClientMetadata {
        client_name,
        redirect_uris,
        token_endpoint_auth_method: ClientAuthMethod::None,
    })
}

/// How long a document may be kept: its `Cache-Control: max-age` (`no-store` and `no-cache`
/// count as 0) within [[`MIN_TTL`], [`MAX_TTL`]], [`DEFAULT_TTL`] without one.
pub fn ttl_of(headers: &HeaderMap) -> Duration {
    let directives = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    let mut seconds = None;
    for d in directives {
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            seconds = Some(0);
            break;
        }
        if let Some((k, v)) = d.split_once('=') {
            if k.trim().eq_ignore_ascii_case("max-age") {
                seconds = v.trim().trim_matches('"').parse::<u64>().ok().or(seconds);
            }
        }
    }
    match seconds {
        Some(s) => Duration::from_secs(s).clamp(MIN_TTL, MAX_TTL),
        None => DEFAULT_TTL,
    }
}

/// The outcomes of recent fetches, by URL.
#[derive(Default)]
struct Cache {
    entries: HashMap<String, Entry>,
    /// Insertion counter: the smallest is the oldest entry.
    next: u64,
}

struct Entry {
    outcome: Result<ClientMetadata, Refused>,
    expires: Instant,
    inserted: u64,
}

impl Cache {
    fn get(&mut self, url: &str, now: Instant) -> Option<Result<ClientMetadata, Refused>> {
        let entry = self.entries.get(url)?;
        if entry.expires <= now {
            self.entries.remove(url);
            return None;
        }
        Some(entry.outcome.clone())
    }

    fn put(
        &mut self,
        url: String,
        outcome: Result<ClientMetadata, Refused>,
        ttl: Duration,
        now: Instant,
    ) {
        if self.entries.len() >= CACHE_ENTRIES && !self.entries.contains_key(&url) {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= CACHE_ENTRIES {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.inserted)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.next += 1;
        let entry = Entry {
            outcome,
            expires: now + ttl,
            inserted: self.next,
        };
        self.entries.insert(url, entry);
    }
}

/// The settings of the fetch.
#[derive(Clone, Debug, Default)]
pub struct CimdConfig {
    /// `MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS`: non-public addresses that may be fetched from.
    pub allowed_networks: Networks,
    /// `MYMCP_OUTBOUND_CA_FILE`: trust anchors beside the Mozilla roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl CimdConfig {
    /// The settings as given: a comma-separated list of networks and an optional PEM file.
    pub fn from_settings(allowed: &str, ca_file: Option<&Path>) -> Result<CimdConfig, String> {
        let allowed_networks = Networks::from_list(allowed)
            .map_err(|e: ListError| format!("MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS: {e}"))?;
        let extra_roots = crate::tls::extra_roots(ca_file)?;
        Ok(CimdConfig {
            allowed_networks,
            extra_roots,
        })
    }
}

/// The fetcher: policy, TLS client, cache and in-flight limit. One per process.
pub struct Cimd {
    allowed: Networks,
    tls: Arc<rustls::ClientConfig>,
    cache: Mutex<Cache>,
    slots: tokio::sync::Semaphore,
    timeout: Duration,
}

impl std::fmt::Debug for Cimd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cimd")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl Cimd {
    /// A fetcher; fails only if an extra root is not a usable trust anchor.
    pub fn new(config: &CimdConfig) -> Result<Cimd, rustls::Error> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &config.extra_roots {
            roots.add(cert.clone())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Cimd {
            allowed: config.allowed_networks.clone(),
            tls: Arc::new(tls),
            cache: Mutex::new(Cache::default()),
            slots: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            timeout: FETCH_TIMEOUT,
        })
    }

    /// Why `ip` may not be fetched from, if it may not: its kind, unless allowed.
    pub fn refused_address(&self, ip: IpAddr) -> Option<&'static str> {
        non_public(ip).filter(|_| !self.allowed.contains(ip))
    }

    /// The document of `client_id` (an `https` URL), from the cache or fetched.
    pub async fn document(&self, client_id: &str) -> Result<ClientMetadata, Refused> {
        let url = document_url(client_id).map_err(Refused::Url)?;
        if let Some(hit) = self.cache().get(client_id, Instant::now()) {
            return hit;
        }
        let Ok(_slot) = self.slots.try_acquire() else {
            return Err(Refused::Busy);
        };
        let (outcome, ttl) =
            match tokio::time::timeout(self.timeout, self.fetch(&url, client_id)).await {
                Ok(Ok((document, ttl))) => (Ok(document), ttl),
                Ok(Err(e)) => (Err(e), FAILURE_TTL),
                Err(_) => (Err(Refused::Timeout), FAILURE_TTL),
            };
        if let Err(e) = &outcome {
            tracing::info!(client_id, "client metadata document refused: {e}");
        }
        self.cache()
            .put(client_id.to_owned(), outcome.clone(), ttl, Instant::now());
        outcome
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolve, vet every address, connect to a vetted one, `GET`, read at most
    /// [`MAX_DOCUMENT_BYTES`], check.
    async fn fetch(
        &self,
        url: &DocumentUrl,
        client_id: &str,
    ) -> Result<(ClientMetadata, Duration), Refused> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|_| Refused::Unresolved)?
            .collect();
        if addrs.is_empty() {
            return Err(Refused::Unresolved);
        }
        if let Some(kind) = addrs.iter().find_map(|a| self.refused_address(a.ip())) {
            return Err(Refused::Address(kind));
        }
        let name = ServerName::try_from(url.host.clone())
            .map_err(|_| Refused::Url("its host is not a name or an address"))?;
        let mut tcp = Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        for addr in &addrs {
            tcp = tokio::net::TcpStream::connect(addr).await;
            if tcp.is_ok() {
                break;
            }
        }
        let tcp = tcp.map_err(|e| Refused::Unreachable(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| Refused::Unreachable(format!("TLS: {e}")))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| Refused::Unreachable(e.to_string()))?;
        let request = hyper::Request::get(url.target.as_str())
            .header(header::HOST, url.authority.as_str())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("mymcp/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|_| Refused::Url("it is not a valid request target"))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Refused::Unreachable(e.to_string()))?;
            let status = response.status();
            if status.is_redirection() {
                return Err(Refused::Redirect(status.as_u16()));
            }
            if status != hyper::StatusCode::OK {
                return Err(Refused::Status(status.as_u16()));
            }
            let json = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return Err(Refused::NotJson);
            }
            let declared = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
                return Err(Refused::TooLarge);
            }
            let ttl = ttl_of(response.headers());
            let mut body = response.into_body();
            let mut read = Vec::with_capacity(MAX_DOCUMENT_BYTES);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| Refused::Unreachable(e.to_string()))?;
                if let Ok(data) = frame.into_data() {
                    if read.len() + data.len() > MAX_DOCUMENT_BYTES {
                        return Err(Refused::TooLarge);
                    }
                    read.extend_from_slice(&data);
                }
            }
            Ok((parse_document(client_id, &read)?, ttl))
        };
        // The connection is driven here, not in a task of its own: when the time is up, or
        // the answer is read, it is dropped with this future.
        let mut connection = std::pin::pin!(connection);
        let mut exchange = std::pin::pin!(exchange);
        tokio::select! {
            outcome = &mut exchange => outcome,
            _ = &mut connection => exchange.await,
        }
    }

    #[cfg(test)]
    fn with_timeout(mut self, timeout: Duration) -> Cimd {
        self.timeout = timeout;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_classified_and_only_public_ones_pass() {
        let table: &[(&str, Option<&str>)] = &[
            ("93.184.215.14", None),
            ("1.1.1.1", None),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:80b::200e", None),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("shared (CGNAT)")),
            ("100.127.255.254", Some("shared (CGNAT)")),
            ("100.128.0.1", None),
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("192.0.0.8", Some("reserved")),
            ("192.0.2.1", Some("documentation")),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("198.18.0.1", Some("benchmarking")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some("reserved")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::1", Some("private")),
            ("100::1", Some("reserved")),
            ("2001:db8::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            ("2001::1", Some("reserved")),
            ("2002:a00:1::1", Some("reserved")),
            ("fc00::1", Some("private")),
            ("fd12:3456::1", Some("private")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("private")),
            ("ff02::1", Some("multicast")),
            ("4000::1", Some("reserved")),
        ];
        for (ip, want) in table {
            assert_eq!(non_public(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    fn cimd(allowed: &str) -> Cimd {
        Cimd::new(&CimdConfig::from_settings(allowed, None).unwrap()).unwrap()
    }

    #[test]
    fn allowed_networks_let_their_addresses_through_and_no_others() {
        let c = cimd("127.0.0.1/32, 10.0.0.0/8, fd00::/8");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.refused_address(ip("127.0.0.1")), None);
        assert_eq!(c.refused_address(ip("::ffff:127.0.0.1")), None, "mapped");
        assert_eq!(c.refused_address(ip("127.0.0.2")), Some("loopback"));
        assert_eq!(c.refused_address(ip("10.200.0.1")), None);
        assert_eq!(c.refused_address(ip("fd00::5")), None);
        assert_eq!(c.refused_address(ip("fc00::5")), Some("private"));
        assert_eq!(c.refused_address(ip("192.168.0.1")), Some("private"));
        assert_eq!(c.refused_address(ip("1.1.1.1")), None);
        let none = cimd("");
        assert_eq!(none.refused_address(ip("127.0.0.1")), Some("loopback"));
        assert!(CimdConfig::from_settings("10.0.0.0/33", None).is_err());
        assert!(CimdConfig::from_settings("example.com", None).is_err());
    }

    #[test]
    fn only_https_urls_with_a_path_are_document_urls() {
        let u = document_url("https://Client.example/oauth/client.json?v=1").unwrap();
        assert_eq!(
            u,
            DocumentUrl {
                host: "client.example".into(),
                port: 443,
                authority: "Client.example".into(),
                target: "/oauth/client.json?v=1".into(),
            }
        );
        let u = document_url("https://127.0.0.1:8443/c").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8443));
        let u = document_url("https://[::1]:9/c").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("::1", 9, "[::1]:9")
        );
        for bad in [
            "http://client.example/c.json",
            "HTTPS://client.example/c.json",
            "https://client.example",
            "https://client.example/",
            "https://client.example?x=1",
            "https://client.example/c.json#frag",
            "https://user:pw@client.example/c.json",
            "https://user@client.example/c.json",
            "https://client.example/a/../c.json",
            "https://client.example/./c.json",
            "https://client.example/a/%2E%2e/c.json",
            "https://client.example/c json",
            "https://client.example/c\u{e9}",
            "https://client.example:0/c",
            "https://client.example:99999/c",
            "https://client.example:/c",
            "https://client.example:1:2/c",
            "https:///c",
            "https://[::1/c",
            "https://[nope]/c",
            "https://exa_mple.com/c",
            "mcpc_0123",
        ] {
            assert!(document_url(bad).is_err(), "{bad}");
        }
        let long = format!("https://client.example/{}", "a".repeat(500));
        assert!(document_url(&long).is_err());
    }

    const URL: &str = "https://client.example/c.json";

    #[test]
    fn documents_must_name_their_url_and_a_public_client_with_redirect_uris() {
        let ok = br#"{"client_id":"https://client.example/c.json","client_name":"C",
            "redirect_uris":["http://127.0.0.1:9/cb"],"token_endpoint_auth_method":"none",
            "grant_types":["authorization_code"]}"#;
        assert_eq!(
            parse_document(URL, ok),
            Ok(ClientMetadata {
                client_name: Some("C".into()),
                redirect_uris: vec!["http://127.0.0.1:9/cb".into()],
                token_endpoint_auth_method: ClientAuthMethod::None,
            })
        );
        let doc = |json: serde_json::Value| parse_document(URL, json.to_string().as_bytes());
        let uris = serde_json::json!(["https://c.example/cb"]);
        assert_eq!(
            doc(
                serde_json::json!({"client_id": "https://client.example/c.json/", "redirect_uris": uris})
            ),
            Err(Refused::OtherClientId)
        );
        assert_eq!(
            doc(
                serde_json::json!({"client_id": "https://evil.example/c.json", "redirect_uris": uris})
            ),
            Err(Refused::OtherClientId)
        );
        assert!(matches!(
            doc(serde_json::json!({"redirect_uris": uris})),
            Err(Refused::Invalid(_))
        ));
        assert_eq!(
            doc(serde_json::json!({"client_id": URL, "redirect_uris": uris,
                "token_endpoint_auth_method": "client_secret_basic"})),
            Err(Refused::NotPublic)
        );
        for bad in [
            serde_json::json!(null),
            serde_json::json!([]),
            serde_json::json!("x"),
            serde_json::json!(["a", 1]),
            serde_json::json!(vec!["https://c.example/cb"; 11]),
            serde_json::json!(["https://c.example/\ncb"]),
            serde_json::json!([format!("https://c.example/{}", "a".repeat(2048))]),
        ] {
            assert!(
                matches!(
                    doc(serde_json::json!({"client_id": URL, "redirect_uris": bad})),
                    Err(Refused::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            doc(serde_json::json!({"client_id": URL})),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(
            parse_document(URL, b"not json"),
            Err(Refused::Invalid(_))
        ));
        // A name out of bounds is dropped, as at registration.
        let named = doc(serde_json::json!({"client_id": URL, "redirect_uris": uris,
            "client_name": "x".repeat(201)}));
        assert_eq!(named.unwrap().client_name, None);
    }

    #[test]
    fn cache_control_is_honoured_within_bounds() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CACHE_CONTROL, v.parse().unwrap());
            ttl_of(&m)
        };
        assert_eq!(ttl_of(&HeaderMap::new()), DEFAULT_TTL);
        assert_eq!(h("public, max-age=3600"), Duration::from_secs(3600));
        assert_eq!(h("max-age=5"), MIN_TTL);
        assert_eq!(h("max-age=99999999"), MAX_TTL);
        assert_eq!(h("no-store"), MIN_TTL);
        assert_eq!(h("max-age=x"), DEFAULT_TTL);
    }

    fn metadata(name: &str) -> ClientMetadata {
        ClientMetadata {
            client_name: Some(name.into()),
            redirect_uris: vec!["https://c.example/cb".into()],
            token_endpoint_auth_method: ClientAuthMethod::None,
        }
    }

    #[test]
    fn the_cache_forgets_at_expiry_and_drops_the_oldest_when_full() {
        let mut c = Cache::default();
        let t0 = Instant::now();
        c.put("a".into(), Ok(metadata("a")), MIN_TTL, t0);
        c.put("f".into(), Err(Refused::TooLarge), FAILURE_TTL, t0);
        assert_eq!(
            c.get("a", t0 + Duration::from_secs(59)),
            Some(Ok(metadata("a")))
        );
        assert_eq!(
            c.get("f", t0 + Duration::from_secs(29)),
            Some(Err(Refused::TooLarge))
        );
        assert_eq!(c.get("f", t0 + FAILURE_TTL), None);
        assert_eq!(c.get("a", t0 + MIN_TTL), None);
        assert!(c.entries.is_empty(), "expired entries are removed");

        for i in 0..CACHE_ENTRIES {
            c.put(format!("u{i}"), Ok(metadata("x")), MAX_TTL, t0);
        }
        c.put("late".into(), Ok(metadata("late")), MAX_TTL, t0);
        assert_eq!(c.entries.len(), CACHE_ENTRIES);
        assert_eq!(c.get("u0", t0), None, "the oldest went");
        assert!(c.get("u1", t0).is_some() && c.get("late", t0).is_some());
        // Expired entries go before the oldest live one.
        c.put("short".into(), Ok(metadata("s")), MIN_TTL, t0);
        assert!(c.get("u1", t0).is_none());
        let later = t0 + MIN_TTL;
        c.put("next".into(), Ok(metadata("n")), MAX_TTL, later);
        assert!(c.get("u2", later).is_some(), "the expired one made room");
        assert!(c.get("short", later).is_none());
    }

    /// A TLS server on 127.0.0.1 with a throwaway CA, answering each connection with
    /// `answer` (the raw HTTP response; `None`: nothing, the connection held open) and counting
    /// connections.
    struct Served {
        url: String,
        ca: CertificateDer<'static>,
        connections: Arc<std::sync::atomic::AtomicUsize>,
    }

    async fn serve(answer: impl Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static) -> Served {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}/c.json",
            listener.local_addr().unwrap().port()
        );
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (count, answer, me) = (connections.clone(), Arc::new(answer), url.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, answer, me) = (acceptor.clone(), answer.clone(), me.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    match answer(&me) {
                        Some(bytes) => {
                            let _ = tls.write_all(&bytes).await;
                            let _ = tls.shutdown().await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        Served {
            url,
            ca: ca.der().clone(),
            connections,
        }
    }

    fn response(headers: &str, body: &str) -> Option<Vec<u8>> {
        Some(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{headers}Connection: close\r\n\r\n{body}"
            )
            .into_bytes(),
        )
    }

    fn document_of(url: &str) -> String {
        serde_json::json!({"client_id": url, "client_name": "T",
            "redirect_uris": ["http://127.0.0.1:9/cb"]})
        .to_string()
    }

    fn fetcher(served: &Served, allowed: &str) -> Cimd {
        let mut config = CimdConfig::from_settings(allowed, None).unwrap();
        config.extra_roots = vec![served.ca.clone()];
        Cimd::new(&config).unwrap()
    }

    #[tokio::test]
    async fn a_document_is_fetched_from_an_allowed_address_and_cached() {
        use std::sync::atomic::Ordering;
        let served = serve(|me| {
            let body = document_of(me);
            response(&format!("Content-Length: {}\r\n", body.len()), &body)
        })
        .await;
        let c = fetcher(&served, "127.0.0.1/32");
        let doc = c.document(&served.url).await.unwrap();
        assert_eq!(doc.client_name.as_deref(), Some("T"));
        assert_eq!(c.document(&served.url).await.unwrap(), doc);
        assert_eq!(served.connections.load(Ordering::SeqCst), 1, "cached");

        // Without the allowed networks: refused before any connection.
        let refused = fetcher(&served, "").document(&served.url).await;
        assert_eq!(refused, Err(Refused::Address("loopback")));
        assert_eq!(served.connections.load(Ordering::SeqCst), 1);
        // Without the extra root: the certificate is not trusted.
        let untrusted = cimd("127.0.0.1/32").document(&served.url).await;
        assert!(
            matches!(&untrusted, Err(Refused::Unreachable(e)) if e.contains("TLS")),
            "{untrusted:?}"
        );
    }

    #[tokio::test]
    async fn large_redirecting_and_non_json_answers_are_refused() {
        let chunked = serve(|_| {
            let big = "x".repeat(3000);
            // No length: chunked, 6,000 bytes in two chunks.
            Some(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n{:x}\r\n{big}\r\n0\r\n\r\n", big.len(), big.len()).into_bytes())
        })
        .await;
        let got = fetcher(&chunked, "127.0.0.1").document(&chunked.url).await;
        assert_eq!(got, Err(Refused::TooLarge));
        let declared = serve(|_| response("Content-Length: 6000\r\n", "{}")).await;
        let got = fetcher(&declared, "127.0.0.1")
            .document(&declared.url)
            .await;
        assert_eq!(got, Err(Refused::TooLarge));
        let redirect = serve(|_| {
            Some(
                b"HTTP/1.1 302 Found\r\nLocation: https://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        })
        .await;
        let got = fetcher(&redirect, "127.0.0.1")
            .document(&redirect.url)
            .await;
        assert_eq!(got, Err(Refused::Redirect(302)));
        let html = serve(|me| {
            let body = document_of(me);
            Some(format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
        })
        .await;
        let got = fetcher(&html, "127.0.0.1").document(&html.url).await;
        assert_eq!(got, Err(Refused::NotJson));
    }

    #[tokio::test]
    async fn a_slow_server_times_out_and_the_failure_is_cached() {
        use std::sync::atomic::Ordering;
        let slow = serve(|_| None).await;
        let c = fetcher(&slow, "127.0.0.1").with_timeout(Duration::from_millis(200));
        assert_eq!(c.document(&slow.url).await, Err(Refused::Timeout));
        assert_eq!(c.document(&slow.url).await, Err(Refused::Timeout));
        assert_eq!(
            slow.connections.load(Ordering::SeqCst),
            1,
            "not fetched again"
        );
    }

    #[tokio::test]
    async fn beyond_the_fetches_in_flight_the_answer_is_busy() {
        let c = cimd("");
        let _held: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| c.slots.try_acquire().unwrap())
            .collect();
        assert_eq!(
            c.document("https://client.example/c.json").await,
            Err(Refused::Busy)
        );
    }
}
