//! Where a request comes from: which browser origins and `Host` names may reach `/mcp`, and
//! who the client is behind a trusted reverse proxy.
//!
//! **DNS rebinding.** A web page on `evil.example` can make its name resolve to 127.0.0.1 and
//! then talk to a server on the user's machine from the user's browser. The browser sends
//! `Host: evil.example` and `Origin: http://evil.example`, so both are checked against
//! allow-lists before anything else: a present, disallowed `Origin` is a 403 (every MCP
//! revision requires it), and so is a disallowed `Host`. By default the lists hold the
//! loopback names (`localhost`, `127.0.0.1`, `[::1]`, any port) and the public name of
//! `MYMCP_PUBLIC_BASE_URL`; `Host` may also be any IP literal, which no rebinding attack can
//! produce (the attack needs a DNS name). `MYMCP_ALLOWED_HOSTS` and `MYMCP_ALLOWED_ORIGINS`
//! add entries; `*` switches a check off. Requests without `Origin` (every non-browser
//! client) are not affected by the origin list.
//!
//! **Reverse proxies.** A proxy on the same host that forwards to 127.0.0.1 passes the host
//! check either way: it sends its upstream's name (nginx's default, `127.0.0.1:8765`), or the
//! public name with `proxy_set_header Host $host`, which `MYMCP_PUBLIC_BASE_URL` allows. The
//! address recorded for a request (logs, audit) is the TCP peer, unless the peer is listed in
//! `MYMCP_TRUSTED_PROXIES` (addresses or CIDR blocks): then `X-Forwarded-For` is read from the
//! right, skipping trusted proxies, and the first other address is the client. Nobody else
//! can forge it.

use std::net::IpAddr;

/// The loopback host names, allowed with any port.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// An invalid entry in one of the lists.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid entry {entry:?}: {reason}")]
pub struct ListError {
    pub entry: String,
    pub reason: &'static str,
}

fn list_error(entry: &str, reason: &'static str) -> ListError {
    ListError {
        entry: entry.to_owned(),
        reason,
    }
}

/// The items of a comma-separated list, trimmed, blanks dropped.
fn items(csv: &str) -> impl Iterator<Item = &str> {
    csv.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A host with an optional port, as in a `Host` header or a URL authority. Names are
/// lowercase without a trailing dot; IPv6 addresses keep their brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn parse(text: &str) -> Option<Authority> {
        let text = text.trim().to_ascii_lowercase();
        let (host, port) = if text.starts_with('[') {
            let end = text.find(']')?;
            let (host, rest) = text.split_at(end + 1);
            match rest {
                "" => (host.to_owned(), None),
                _ => (host.to_owned(), Some(rest.strip_prefix(':')?)),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (text.clone(), None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse().ok()?)
            }
            Some(_) => return None,
            None => None,
        };
        let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
        let valid = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            inner.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        valid.then_some(Authority { host, port })
    }

    fn is_ip_literal(&self) -> bool {
        self.host.parse::<std::net::Ipv4Addr>().is_ok() || self.host.starts_with('[')
    }
}

/// A URL's scheme and authority, e.g. for `https://mcp.example.com/mcp`:
/// (`https`, `mcp.example.com`, port `None`).
fn split_url(url: &str) -> Option<(String, Authority)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return None;
    }
    Some((scheme, Authority::parse(authority)?))
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// Which `Host` header values may reach `/mcp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    any: bool,
    /// (host, port); a `None` port allows any.
    allowed: Vec<Authority>,
}

impl Default for HostPolicy {
    /// Loopback names with any port.
    fn default() -> Self {
        HostPolicy {
            any: false,
            allowed: LOOPBACK_NAMES
                .iter()
                .map(|h| Authority {
                    host: (*h).to_owned(),
                    port: None,
                })
                .collect(),
        }
    }
}

impl HostPolicy {
    /// The default policy plus a comma-separated list of `name` or `name:port` entries
    /// (`*` allows any host).
    pub fn from_list(csv: &str) -> Result<HostPolicy, ListError> {
        let mut policy = HostPolicy::default();
        for item in items(csv) {
            if item == "*" {
                policy.any = true;
            } else {
                let authority =
                    Authority::parse(item).ok_or_else(|| list_error(item, "not a host[:port]"))?;
                policy.allowed.push(authority);
            }
        }
        Ok(policy)
    }

    /// Also allows the host of the server's public URL (with its port, or the scheme's
    /// default port when it names none).
    pub fn with_public_url(mut self, url: &str) -> Result<HostPolicy, ListError> {
        let (scheme, authority) =
            split_url(url).ok_or_else(|| list_error(url, "not an http(s) URL"))?;
        let port = authority.port.unwrap_or(default_port(&scheme));
        self.allowed.push(Authority {
            host: authority.host,
            port: Some(port),
        });
        Ok(self)
    }

    /// Whether a request with this `Host` (or HTTP/2 `:authority`) may proceed. A request
    /// without one is not a browser's and passes.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return true;
        };
        if self.any {
            return true;
        }
        let Some(authority) = Authority::parse(host) else {
            return false;
        };
        authority.is_ip_literal()
            || self.allowed.iter().any(|a| {
                a.host == authority.host
                    && match a.port {
                        None => true,
                        // A Host without a port means the scheme's default; allow it for an
                        // entry on 80 or 443.
                        Some(p) => authority.port.map_or(p == 80 || p == 443, |q| q == p),
                    }
            })
    }
}

/// Which `Origin` header values may reach `/mcp`: loopback origins always, plus configured
/// ones. Requests without `Origin` are not affected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    exact: Vec<String>,
}

impl OriginPolicy {
    /// Parses a comma-separated list of exact origins (`https://app.example.com`); `*` allows
    /// any origin. Blank entries are ignored; a trailing `/` is not significant.
    pub fn from_list(csv: &str) -> OriginPolicy {
        let mut policy = OriginPolicy::default();
        for item in items(csv) {
            if item == "*" {
                policy.any = true;
            } else {
                policy
                    .exact
                    .push(item.trim_end_matches('/').to_ascii_lowercase());
            }
        }
        policy
    }

    /// Also allows the origin of the server's public URL (`https://mcp.example.com/mcp` →
    /// `https://mcp.example.com`), with and without its default port spelled out.
    pub fn with_public_url(mut self, url: &str) -> Result<OriginPolicy, ListError> {
        let (scheme, authority) =
            split_url(url).ok_or_else(|| list_error(url, "not an http(s) URL"))?;
        let port = authority.port.unwrap_or(default_port(&scheme));
        self.exact
            .push(format!("{scheme}://{}:{port}", authority.host));
        if port == default_port(&scheme) {
            self.exact.push(format!("{scheme}://{}", authority.host));
        }
        Ok(self)
    }

    /// Whether a request carrying `Origin: origin` may proceed.
    pub fn allows(&self, origin: &str) -> bool {
        if self.any || is_loopback_origin(origin) {
            return true;
        }
        let origin = origin.trim_end_matches('/');
        self.exact.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_loopback_origin(origin: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    LOOPBACK_NAMES.iter().any(|host| {
        rest.strip_prefix(host).is_some_and(|after| {
            after.is_empty()
                || after.strip_prefix(':').is_some_and(|port| {
                    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
                })
        })
    })
}

/// An address or a CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    net: IpAddr,
    prefix: u8,
}

impl Block {
    fn parse(text: &str) -> Option<Block> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let net: IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Block {
            net: net.to_canonical(),
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u32::from(v4) as u128, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        }
        let ip = ip.to_canonical();
        let ((net, width), (addr, addr_width)) = (bits(self.net), bits(ip));
        if width != addr_width {
            return false;
        }
        let shift = width - self.prefix;
        shift >= width || (net >> shift) == (addr >> shift)
    }
}

/// A list of addresses and CIDR blocks (`MYMCP_OAUTH_CIMD_ALLOWED_NETWORKS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks {
    blocks: Vec<Block>,
}

impl Networks {
    /// Parses a comma-separated list of addresses and CIDR blocks (`127.0.0.1`, `10.0.0.0/8`,
    /// `fd00::/8`). Empty: no address.
    pub fn from_list(csv: &str) -> Result<Networks, ListError> {
        let blocks = items(csv)
            .map(|item| {
                Block::parse(item).ok_or_else(|| list_error(item, "not an IP address or CIDR"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Networks { blocks })
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address as its IPv4 address) is in one of the blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed (`MYMCP_TRUSTED_PROXIES`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
}

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR blocks (`127.0.0.1`, `10.0.0.0/8`,
    /// `::1`). Empty: no proxy is trusted.
    pub fn from_list(csv: &str) -> Result<TrustedProxies, ListError> {
        let blocks = items(csv)
            .map(|item| {
                Block::parse(item).ok_or_else(|| list_error(item, "not an IP address or CIDR"))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { blocks })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// The client's address: `peer`, unless `peer` is a trusted proxy; then the rightmost
    /// address of `X-Forwarded-For` (all its values, in order) that is not a trusted proxy.
    /// A malformed entry stops the walk at the last address known good.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = forwarded_for
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(ip) = parse_forwarded_ip(hop) else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` element: an address, an IPv6 address in brackets, either with a port.
fn parse_forwarded_ip(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (addr, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_are_allowed_with_any_port() {
        let p = OriginPolicy::default();
        for ok in [
            "http://localhost",
            "http://localhost:6274",
            "https://127.0.0.1:8443",
            "http://[::1]:1",
            "HTTP://LOCALHOST",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com",
            "http://127.0.0.1.nip.io",
            "http://localhost:",
            "http://localhost:80a",
            "file://localhost",
            "null",
            "https://example.com",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
    }

    #[test]
    fn configured_origins_are_exact_and_star_allows_all() {
        let p = OriginPolicy::from_list(" https://app.example.com/ , ,http://x:81");
        assert!(p.allows("https://app.example.com"));
        assert!(p.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(p.allows("http://x:81"));
        assert!(!p.allows("https://app.example.com:444"));
        assert!(!p.allows("https://evil.app.example.com"));
        assert!(OriginPolicy::from_list("*").allows("https://anything.test"));
    }

    #[test]
    fn the_public_url_gives_an_origin() {
        let p = OriginPolicy::default()
            .with_public_url("https://mcp.example.com/mcp")
            .unwrap();
        assert!(p.allows("https://mcp.example.com"));
        assert!(p.allows("https://mcp.example.com:443"));
        assert!(!p.allows("http://mcp.example.com"));
        let p = OriginPolicy::default()
            .with_public_url("http://box.lan:8765")
            .unwrap();
        assert!(p.allows("http://box.lan:8765"));
        assert!(!p.allows("http://box.lan"));
        assert!(OriginPolicy::default().with_public_url("ftp://x").is_err());
    }

    #[test]
    fn hosts_default_to_loopback_and_ip_literals() {
        let p = HostPolicy::default();
        for ok in [
            "localhost",
            "localhost:8765",
            "LOCALHOST.",
            "127.0.0.1:1",
            "[::1]:8765",
            "[::1]",
            "10.1.2.3:8765",
            "[2001:db8::1]:443",
        ] {
            assert!(p.allows(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8765",
            "localhost.evil.com",
            "127.0.0.1.nip.io",
            "localhost:",
            "localhost:99999",
            "[::1",
            "a b",
            "",
        ] {
            assert!(!p.allows(Some(bad)), "{bad}");
        }
        assert!(p.allows(None), "no Host: not a browser");
    }

    #[test]
    fn configured_and_public_hosts() {
        let p = HostPolicy::from_list("box.lan, api.example.com:8443")
            .unwrap()
            .with_public_url("https://mcp.example.com/mcp")
            .unwrap();
        assert!(p.allows(Some("box.lan:1234")));
        assert!(p.allows(Some("api.example.com:8443")));
        assert!(!p.allows(Some("api.example.com:8444")));
        assert!(p.allows(Some("mcp.example.com")));
        assert!(p.allows(Some("mcp.example.com:443")));
        assert!(!p.allows(Some("mcp.example.com:8765")));
        assert!(HostPolicy::from_list("*").unwrap().allows(Some("any.test")));
        assert!(HostPolicy::from_list("bad host").is_err());
        assert!(HostPolicy::default()
            .with_public_url("mcp.example.com")
            .is_err());
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("127.0.0.1"), ["203.0.113.9"].into_iter()),
            ip("127.0.0.1")
        );
        let local = TrustedProxies::from_list("127.0.0.1, 10.0.0.0/8").unwrap();
        assert_eq!(
            local.client(ip("127.0.0.1"), ["203.0.113.9"].into_iter()),
            ip("203.0.113.9")
        );
        // Spoofed entries left of the real client are ignored; trusted hops are skipped.
        assert_eq!(
            local.client(
                ip("127.0.0.1"),
                ["1.1.1.1, 203.0.113.9", "10.2.3.4"].into_iter()
            ),
            ip("203.0.113.9")
        );
        // An untrusted peer's header is ignored.
        assert_eq!(
            local.client(ip("192.0.2.1"), ["203.0.113.9"].into_iter()),
            ip("192.0.2.1")
        );
        // Garbage stops the walk at the last good address.
        assert_eq!(
            local.client(ip("127.0.0.1"), ["203.0.113.9, nonsense"].into_iter()),
            ip("127.0.0.1")
        );
        // Ports and brackets, IPv4-mapped peers.
        assert_eq!(
            local.client(ip("::ffff:127.0.0.1"), ["[2001:db8::7]:4711"].into_iter()),
            ip("2001:db8::7")
        );
        assert_eq!(
            local.client(ip("127.0.0.1"), ["198.51.100.4:80"].into_iter()),
            ip("198.51.100.4")
        );
        assert_eq!(
            local.client(ip("127.0.0.1"), std::iter::empty()),
            ip("127.0.0.1")
        );
        assert!(TrustedProxies::from_list("10.0.0.0/33").is_err());
        assert!(TrustedProxies::from_list("proxy.lan").is_err());
        let all6 = TrustedProxies::from_list("::/0").unwrap();
        assert!(all6.trusts(ip("2001:db8::1")));
        assert!(!all6.trusts(ip("127.0.0.1")));
    }
}
