//! MCP protocol revisions and the per-request rules that tell them apart.
//!
//! mymcp is a *dual-era* server (see the 2026-07-28 "Versioning" page):
//! - **legacy** revisions 2024-11-05, 2025-03-26, 2025-06-18 and 2025-11-25 open with an
//!   `initialize` handshake. The server is stateless, so `initialize` is optional and every
//!   POST stands alone; the `MCP-Protocol-Version` header (sent from 2025-06-18 on) names the
//!   revision, and a request without it is taken as 2025-03-26, as those revisions say;
//! - the **modern** revision 2026-07-28 has no handshake: every request carries
//!   `params._meta["io.modelcontextprotocol/protocolVersion"]` and
//!   `["io.modelcontextprotocol/clientCapabilities"]`, and over HTTP the `MCP-Protocol-Version`,
//!   `Mcp-Method` and (for `tools/call`, `resources/read`, `prompts/get`) `Mcp-Name` headers
//!   mirror the body and must match it.
//!
//! A request is modern when its `MCP-Protocol-Version` header names 2026-07-28, when its
//! body carries the modern `_meta` version, or when it calls `server/discover`; anything else
//! is legacy. [`classify`] decides the era of a parsed body and checks the modern request
//! envelope in the order the 2026-07-28 text and the official SDKs use: an unsupported header
//! version (`-32022`, listing the supported ones), a missing header or `_meta` (`-32020` /
//! `-32602`), header values that disagree with the body (`-32020`). Each rejection is an
//! HTTP 400 with a JSON-RPC error that keeps the request's id.

use serde::Serialize;
use serde_json::Value;

/// An MCP protocol revision this server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revision {
    V2024_11_05,
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl Revision {
    /// Every revision, oldest first.
    pub const ALL: [Revision; 5] = [
        Revision::V2024_11_05,
        Revision::V2025_03_26,
        Revision::V2025_06_18,
        Revision::V2025_11_25,
        Revision::V2026_07_28,
    ];

    /// The newest revision that an `initialize` handshake can agree on; answered to a client
    /// that asks `initialize` for a revision we do not know.
    pub const LATEST_HANDSHAKE: Revision = Revision::V2025_11_25;

    /// The revision of a legacy request that names none (no `MCP-Protocol-Version` header).
    pub const ASSUMED_WITHOUT_HEADER: Revision = Revision::V2025_03_26;

    pub fn as_str(self) -> &'static str {
        match self {
            Revision::V2024_11_05 => "2024-11-05",
            Revision::V2025_03_26 => "2025-03-26",
            Revision::V2025_06_18 => "2025-06-18",
            Revision::V2025_11_25 => "2025-11-25",
            Revision::V2026_07_28 => "2026-07-28",
        }
    }

    pub fn parse(s: &str) -> Option<Revision> {
        Revision::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Per-request `_meta` and no `initialize` (2026-07-28 and later).
    pub fn is_modern(self) -> bool {
        self >= Revision::V2026_07_28
    }

    /// Whether a POST body may be a JSON-RPC batch: only 2025-03-26 defined batching
    /// (2025-06-18 removed it again; 2024-11-05 never had it).
    pub fn allows_batches(self) -> bool {
        self == Revision::V2025_03_26
    }
}

/// The supported revisions' names, oldest first.
pub fn supported_names() -> Vec<&'static str> {
    Revision::ALL.iter().map(|r| r.as_str()).collect()
}

/// JSON-RPC error codes that MCP defines beyond JSON-RPC's own.
pub mod codes {
    /// HTTP headers disagree with the body, or a required one is missing or malformed.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// The requested protocol version is not served (`data: {supported, requested}`).
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// `params._meta` keys of the modern request envelope.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `result._meta` key naming the server.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// One MCP request header as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HeaderField {
    #[default]
    Absent,
    /// Sent once; surrounding spaces and tabs removed (RFC 9110 §5.5).
    Value(String),
    /// Sent more than once, or holding bytes other than visible ASCII, space and tab.
    Invalid,
}

impl HeaderField {
    /// Builds the field from every value sent under one header name.
    pub fn from_values<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> HeaderField {
        let Some(first) = values.next() else {
            return HeaderField::Absent;
        };
        if values.next().is_some() {
            return HeaderField::Invalid;
        }
        match std::str::from_utf8(first) {
            Ok(s) if s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) => {
                HeaderField::Value(s.trim_matches([' ', '\t']).to_owned())
            }
            _ => HeaderField::Invalid,
        }
    }

    fn value(&self) -> Option<&str> {
        match self {
            HeaderField::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// The MCP request headers of one POST.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McpHeaders {
    /// `MCP-Protocol-Version`.
    pub protocol_version: HeaderField,
    /// `Mcp-Method`.
    pub method: HeaderField,
    /// `Mcp-Name`.
    pub name: HeaderField,
}

/// Which rules a POST is answered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// `initialize`-era rules of this revision (assumed 2025-03-26 when no header named one).
    Legacy(Revision),
    /// Per-request `_meta`: the envelope has been checked.
    Modern(Revision),
}

impl Era {
    pub fn revision(self) -> Revision {
        match self {
            Era::Legacy(r) | Era::Modern(r) => r,
        }
    }

    pub fn is_modern(self) -> bool {
        matches!(self, Era::Modern(_))
    }
}

/// A request refused before dispatch: an HTTP 400 with this JSON-RPC error.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl Rejection {
    fn mismatch(message: impl Into<String>) -> Rejection {
        Rejection {
            code: codes::HEADER_MISMATCH,
            message: message.into(),
            data: None,
        }
    }

    fn invalid_params(message: impl Into<String>) -> Rejection {
        Rejection {
            code: -32602,
            message: message.into(),
            data: None,
        }
    }

    /// `UnsupportedProtocolVersionError`: names every revision we speak. The message has the
    /// reference servers' wording, the data the 2026-07-28 fields.
    pub fn unsupported_version(requested: &str) -> Rejection {
        #[derive(Serialize)]
        struct Data<'a> {
            supported: Vec<&'static str>,
            requested: &'a str,
        }
        Rejection {
            code: codes::UNSUPPORTED_PROTOCOL_VERSION,
            message: format!(
                "Bad Request: Unsupported protocol version: {requested}. Supported versions: {}",
                supported_names().join(", ")
            ),
            data: Some(
                serde_json::to_value(Data {
                    supported: supported_names(),
                    requested,
                })
                .expect("strings serialize"),
            ),
        }
    }
}

/// What [`classify`] needs to know about a body.
#[derive(Clone, Copy, Debug)]
pub enum Shape<'a> {
    /// One request.
    Request {
        method: &'a str,
        params: Option<&'a Value>,
    },
    /// One notification.
    Notification { params: Option<&'a Value> },
    /// Anything else: a batch, a client's response, an invalid message.
    Other { batch: bool },
}

/// The modern `_meta` protocol version a request body carries, if any.
fn meta_version(params: Option<&Value>) -> Option<&Value> {
    params?.get("_meta")?.get(META_PROTOCOL_VERSION)
}

/// Decides the era of a POST and checks a modern request's envelope and headers.
pub fn classify(shape: Shape<'_>, headers: &McpHeaders) -> Result<Era, Rejection> {
    let header = match &headers.protocol_version {
        HeaderField::Absent => None,
        HeaderField::Value(v) => match Revision::parse(v) {
            Some(revision) => Some(revision),
            None => return Err(Rejection::unsupported_version(v)),
        },
        HeaderField::Invalid => {
            return Err(Rejection::mismatch(
                "Header mismatch: MCP-Protocol-Version is repeated or not visible ASCII",
            ))
        }
    };
    let (method, params) = match shape {
        Shape::Request { method, params } => (Some(method), params),
        Shape::Notification { params } => (None, params),
        Shape::Other { .. } => (None, None),
    };
    // Notifications define no envelope: only the header makes one modern.
    let modern = header.is_some_and(Revision::is_modern)
        || method.is_some_and(|m| m == "server/discover" || meta_version(params).is_some());
    let Some(revision) = header else {
        if modern {
            return Err(Rejection::mismatch(
                "Header mismatch: MCP-Protocol-Version header is required (it must equal \
                 params._meta[\"io.modelcontextprotocol/protocolVersion\"])",
            ));
        }
        return Ok(Era::Legacy(Revision::ASSUMED_WITHOUT_HEADER));
    };
    if !modern || !revision.is_modern() {
        // A legacy revision named in the header: `_meta` means nothing there.
        return Ok(Era::Legacy(revision));
    }
    let Some(method) = method else {
        // Notifications need no envelope in 2026-07-28 (none is defined over HTTP); batches
        // and responses are refused by the caller.
        return Ok(Era::Modern(revision));
    };
    check_envelope(params)?;
    if meta_version(params).and_then(Value::as_str) != Some(revision.as_str()) {
        return Err(Rejection::mismatch(format!(
            "Header mismatch: MCP-Protocol-Version header value '{}' does not match \
             params._meta[\"{META_PROTOCOL_VERSION}\"]",
            revision.as_str()
        )));
    }
    check_method_and_name(method, params, headers)?;
    Ok(Era::Modern(revision))
}

/// The required `_meta` pair of a modern request.
fn check_envelope(params: Option<&Value>) -> Result<(), Rejection> {
    let Some(meta) = params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
    else {
        return Err(Rejection::invalid_params(format!(
            "Invalid params: params._meta must be an object with '{META_PROTOCOL_VERSION}' and \
             '{META_CLIENT_CAPABILITIES}'"
        )));
    };
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|key| !meta.contains_key(*key))
        .collect();
    if !missing.is_empty() {
        return Err(Rejection::invalid_params(format!(
            "Invalid params: params._meta is missing {}",
            missing.join(" and ")
        )));
    }
    if !meta[META_PROTOCOL_VERSION].is_string() {
        return Err(Rejection::invalid_params(format!(
            "Invalid params: params._meta[\"{META_PROTOCOL_VERSION}\"] must be a string"
        )));
    }
    if !meta[META_CLIENT_CAPABILITIES].is_object() {
        return Err(Rejection::invalid_params(format!(
            "Invalid params: params._meta[\"{META_CLIENT_CAPABILITIES}\"] must be an object"
        )));
    }
    Ok(())
}

/// The body field that `Mcp-Name` mirrors, for the methods that have one.
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        // The tasks extension: routing by task.
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

/// `Mcp-Method` must equal the body's method (values are case-sensitive); `Mcp-Name` the
/// mirrored parameter, after undoing the Base64 sentinel.
fn check_method_and_name(
    method: &str,
    params: Option<&Value>,
    headers: &McpHeaders,
) -> Result<(), Rejection> {
    match &headers.method {
        HeaderField::Value(v) if v == method => {}
        HeaderField::Value(v) => {
            return Err(Rejection::mismatch(format!(
                "Header mismatch: Mcp-Method header value '{v}' does not match body method \
                 '{method}'"
            )))
        }
        HeaderField::Absent => {
            return Err(Rejection::mismatch(
                "Header mismatch: Mcp-Method header is required",
            ))
        }
        HeaderField::Invalid => {
            return Err(Rejection::mismatch(
                "Header mismatch: Mcp-Method is repeated or not visible ASCII",
            ))
        }
    }
    let Some(field) = name_field(method) else {
        return Ok(());
    };
    let body = params.and_then(|p| p.get(field)).and_then(Value::as_str);
    if headers.name == HeaderField::Invalid {
        return Err(Rejection::mismatch(
            "Header mismatch: Mcp-Name is repeated or not visible ASCII",
        ));
    }
    let header = headers.name.value();
    match (header, body) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Rejection::mismatch(format!(
            "Header mismatch: Mcp-Name header is required for {method}"
        ))),
        (Some(h), body) => match decode_header_value(h) {
            Some(decoded) if Some(decoded.as_str()) == body => Ok(()),
            Some(_) => Err(Rejection::mismatch(format!(
                "Header mismatch: Mcp-Name header value '{h}' does not match body value \
                 '{}'",
                body.unwrap_or("")
            ))),
            None => Err(Rejection::mismatch(
                "Header mismatch: Mcp-Name carries a malformed =?base64?…?= value",
            )),
        },
    }
}

/// A header value with the `=?base64?…?=` sentinel undone; `None` when the sentinel holds
/// anything but canonical Base64 of UTF-8 text. Other values are returned as they are.
pub fn decode_header_value(value: &str) -> Option<String> {
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    else {
        return Some(value.to_owned());
    };
    String::from_utf8(base64_decode(payload)?).ok()
}

/// Standard Base64 with padding, canonical only (no stray bits, no missing padding).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(b: u8) -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &b in &chunk[..4 - pad] {
            n = n << 6 | sextet(b)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Bits below the last whole byte must be zero in canonical Base64.
        let kept = 3 - pad;
        if pad > 0 && n & ((1 << (8 * pad as u32)) - 1) != 0 {
            return None;
        }
        out.extend_from_slice(&decoded[..kept]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(version: Option<&str>, method: Option<&str>, name: Option<&str>) -> McpHeaders {
        let field = |v: Option<&str>| match v {
            Some(v) => HeaderField::Value(v.to_owned()),
            None => HeaderField::Absent,
        };
        McpHeaders {
            protocol_version: field(version),
            method: field(method),
            name: field(name),
        }
    }

    fn modern_params(version: &str) -> Value {
        json!({"_meta": {
            META_PROTOCOL_VERSION: version,
            META_CLIENT_CAPABILITIES: {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        }})
    }

    fn request<'a>(method: &'a str, params: &'a Value) -> Shape<'a> {
        Shape::Request {
            method,
            params: Some(params),
        }
    }

    #[test]
    fn revisions_parse_and_order() {
        for r in Revision::ALL {
            assert_eq!(Revision::parse(r.as_str()), Some(r));
        }
        assert_eq!(Revision::parse("2025-11-25 "), None);
        assert!(Revision::V2026_07_28.is_modern());
        assert!(!Revision::V2025_11_25.is_modern());
        let batching: Vec<_> = Revision::ALL
            .into_iter()
            .filter(|r| r.allows_batches())
            .collect();
        assert_eq!(batching, [Revision::V2025_03_26]);
    }

    #[test]
    fn requests_without_header_or_meta_are_legacy_2025_03_26() {
        let params = json!({});
        assert_eq!(
            classify(request("tools/list", &params), &McpHeaders::default()),
            Ok(Era::Legacy(Revision::V2025_03_26))
        );
        assert_eq!(
            classify(
                request("tools/list", &params),
                &headers(Some("2025-06-18"), None, None)
            ),
            Ok(Era::Legacy(Revision::V2025_06_18))
        );
        // A legacy header makes _meta meaningless.
        let params = modern_params("2026-07-28");
        assert_eq!(
            classify(
                request("tools/list", &params),
                &headers(Some("2025-11-25"), None, None)
            ),
            Ok(Era::Legacy(Revision::V2025_11_25))
        );
    }

    #[test]
    fn an_unknown_header_version_is_unsupported_and_names_the_supported_ones() {
        let params = modern_params("v999.0.0");
        let err = classify(
            request("server/discover", &params),
            &headers(Some("v999.0.0"), Some("server/discover"), None),
        )
        .unwrap_err();
        assert_eq!(err.code, codes::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(
            err.data,
            Some(
                json!({"supported": ["2024-11-05", "2025-03-26", "2025-06-18",
                                      "2025-11-25", "2026-07-28"],
                        "requested": "v999.0.0"})
            )
        );
        assert!(err.message.contains("Supported versions: 2024-11-05"));
        // The same for a legacy-looking request and for a notification.
        let empty = json!({});
        assert_eq!(
            classify(
                request("ping", &empty),
                &headers(Some("1999-01-01"), None, None)
            )
            .unwrap_err()
            .code,
            codes::UNSUPPORTED_PROTOCOL_VERSION
        );
        assert_eq!(
            classify(
                Shape::Notification { params: None },
                &headers(Some("x"), None, None)
            )
            .unwrap_err()
            .code,
            codes::UNSUPPORTED_PROTOCOL_VERSION
        );
    }

    #[test]
    fn modern_requests_need_the_header() {
        let params = modern_params("2026-07-28");
        let err = classify(request("tools/list", &params), &McpHeaders::default()).unwrap_err();
        assert_eq!(err.code, codes::HEADER_MISMATCH);
        let empty = json!({});
        let err = classify(request("server/discover", &empty), &McpHeaders::default()).unwrap_err();
        assert_eq!(err.code, codes::HEADER_MISMATCH);
    }

    #[test]
    fn modern_envelope_is_checked_before_header_agreement() {
        let h = headers(Some("2026-07-28"), Some("server/discover"), None);
        for params in [
            json!({}),
            json!({"_meta": {META_CLIENT_CAPABILITIES: {}}}),
            json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}),
            json!({"_meta": {META_PROTOCOL_VERSION: 5, META_CLIENT_CAPABILITIES: {}}}),
            json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: []}}),
        ] {
            let err = classify(request("server/discover", &params), &h).unwrap_err();
            assert_eq!(err.code, -32602, "{params}");
        }
        // clientInfo is optional.
        let params = json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28",
                                      META_CLIENT_CAPABILITIES: {}}});
        assert_eq!(
            classify(request("server/discover", &params), &h),
            Ok(Era::Modern(Revision::V2026_07_28))
        );
    }

    #[test]
    fn header_and_body_must_agree() {
        let params = modern_params("v999.0.0");
        let h = headers(Some("2026-07-28"), Some("server/discover"), None);
        assert_eq!(
            classify(request("server/discover", &params), &h)
                .unwrap_err()
                .code,
            codes::HEADER_MISMATCH
        );
        let params = modern_params("2026-07-28");
        for h in [
            headers(Some("2026-07-28"), Some("prompts/list"), None),
            headers(Some("2026-07-28"), Some("TOOLS/LIST"), None),
            headers(Some("2026-07-28"), None, None),
        ] {
            assert_eq!(
                classify(request("tools/list", &params), &h)
                    .unwrap_err()
                    .code,
                codes::HEADER_MISMATCH
            );
        }
        let mut h = headers(Some("2026-07-28"), Some("tools/list"), None);
        assert!(classify(request("tools/list", &params), &h).is_ok());
        h.method = HeaderField::Invalid;
        assert!(classify(request("tools/list", &params), &h).is_err());
    }

    #[test]
    fn mcp_name_mirrors_the_tool_name() {
        let mut params = modern_params("2026-07-28");
        params["name"] = json!("read_file");
        let call = |name: Option<&str>| {
            classify(
                request("tools/call", &params),
                &headers(Some("2026-07-28"), Some("tools/call"), name),
            )
        };
        assert!(call(Some("read_file")).is_ok());
        assert!(call(Some("=?base64?cmVhZF9maWxl?=")).is_ok());
        assert_eq!(call(None).unwrap_err().code, codes::HEADER_MISMATCH);
        assert_eq!(
            call(Some("wrong_tool_name")).unwrap_err().code,
            codes::HEADER_MISMATCH
        );
        assert_eq!(
            call(Some("=?base64?cmVhZF9maWxl?")).unwrap_err().code,
            codes::HEADER_MISMATCH
        );
        assert_eq!(
            call(Some("=?base64?!!!!?=")).unwrap_err().code,
            codes::HEADER_MISMATCH
        );
    }

    #[test]
    fn header_fields_trim_and_refuse_repeats_and_controls() {
        let one = |v: &[u8]| HeaderField::from_values(std::iter::once(v));
        assert_eq!(one(b"  a b  "), HeaderField::Value("a b".into()));
        assert_eq!(
            one(b"\ttools/list\t"),
            HeaderField::Value("tools/list".into())
        );
        assert_eq!(one(b"caf\xc3\xa9"), HeaderField::Invalid);
        assert_eq!(
            HeaderField::from_values([&b"a"[..], b"a"].into_iter()),
            HeaderField::Invalid
        );
        assert_eq!(
            HeaderField::from_values(std::iter::empty()),
            HeaderField::Absent
        );
    }

    #[test]
    fn base64_sentinels_decode_only_when_canonical() {
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(
            decode_header_value("=?base64?IHBhZGRlZCA=?=").as_deref(),
            Some(" padded ")
        );
        assert_eq!(decode_header_value("plain").as_deref(), Some("plain"));
        assert_eq!(decode_header_value("=?base64??=").as_deref(), Some(""));
        for bad in [
            "=?base64?SGVsbG8?=",    // padding missing
            "=?base64?SGVsbG9=?=",   // stray bits
            "=?base64?SGV*bG8=?=",   // not the alphabet
            "=?base64?SG==bG8=?=",   // padding inside
            "=?base64?/w==?=",       // not UTF-8
            "=?base64?SGVsbG8===?=", // too much padding
        ] {
            assert_eq!(decode_header_value(bad), None, "{bad}");
        }
    }
}
