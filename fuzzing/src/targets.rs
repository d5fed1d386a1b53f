//! The bodies of the fuzz targets. Each panics (an assertion) when an invariant breaks.

use mymcp_frontend::arguments::{self, ArgumentError};
use mymcp_frontend::calls::CallRegistry;
use mymcp_frontend::catalogue;
use mymcp_frontend::forward::{ExecutorClient, ForwardError};
use mymcp_frontend::mcp::{self, Caller, Outcome, Post, StreamPolicy};
use mymcp_frontend::revisions::{HeaderField, McpHeaders, Revision};
use mymcp_frontend::tickets::{TicketError, Tickets};
use mymcp_protocol::frame::{self, FrameError, HEADER_LEN, MAX_FRAME_LEN};
use mymcp_protocol::{
    CallOrigin, ClientFrame, ControlRequest, ControlResponse, Direction, ErrorCode,
    FrontendRequest, FrontendResponse, GrantId, GrepMode, Hello, Identity, ReadFileOutput, Role,
    ServerFrame, TokenDigest, ToolCall, ToolFailure, ToolName, ToolOutput, TransferGrant,
};
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------------------------
// Protocol: frames and the message types of both sockets.

/// Decodes `body` as a `T`; when it decodes, encodes it again and checks that the encoding is
/// a valid frame no longer than `body` which decodes to the same message.
fn round_trip<T>(body: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let msg: T = match frame::decode(body) {
        Ok(msg) => msg,
        Err(FrameError::Decode(_)) => return None,
        Err(FrameError::Trailing(n)) => {
            assert!(
                n > 0 && n < body.len(),
                "{n} trailing bytes of {}",
                body.len()
            );
            return None;
        }
        Err(e) => panic!("decoding a body failed with {e}"),
    };
    let encoded = frame::encode(&msg).expect("a decoded message encodes");
    let header: [u8; HEADER_LEN] = encoded[..HEADER_LEN].try_into().expect("header");
    let len = frame::body_len(header, MAX_FRAME_LEN).expect("an encoded frame has a valid header");
    assert_eq!(
        len,
        encoded.len() - HEADER_LEN,
        "header and body length agree"
    );
    assert!(
        len <= body.len(),
        "the encoding ({len} bytes) is longer than the body it came from ({})",
        body.len()
    );
    let back: T = frame::decode(&encoded[HEADER_LEN..]).expect("an encoded message decodes");
    assert_eq!(back, msg, "decode → encode → decode changed the message");
    Some(msg)
}

/// A byte stream as a socket reader sees it: header, body, header, body… Every frame must give
/// the same verdict through the slice decoder (the executor's and frontend's readers) and the
/// blocking reader (`mymcpctl`'s), and lengths outside 1..=`MAX_FRAME_LEN` are refused before
/// any body byte is looked at.
pub fn frame(data: &[u8]) {
    let mut rest = data;
    let mut reader = data;
    while rest.len() >= HEADER_LEN {
        let header: [u8; HEADER_LEN] = rest[..HEADER_LEN].try_into().expect("header");
        let announced = u32::from_be_bytes(header) as usize;
        let len = match frame::body_len(header, MAX_FRAME_LEN) {
            Ok(len) => {
                assert!(len == announced && (1..=MAX_FRAME_LEN).contains(&len));
                len
            }
            Err(FrameError::Empty) => {
                assert_eq!(announced, 0);
                return;
            }
            Err(FrameError::TooLarge { len, max }) => {
                assert!(len == announced && len > max && max == MAX_FRAME_LEN);
                return;
            }
            Err(e) => panic!("a header was refused with {e}"),
        };
        // A truncated body: a socket reader waits for the rest (or fails at EOF).
        let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            return;
        };
        let on_executor_sock = round_trip::<ClientFrame<FrontendRequest>>(body);
        round_trip::<ClientFrame<ControlRequest>>(body);
        round_trip::<ServerFrame<FrontendResponse>>(body);

        let blocking = frame::read_from::<ClientFrame<FrontendRequest>, _>(&mut reader);
        match (&on_executor_sock, blocking) {
            (Some(a), Ok(b)) => assert_eq!(a, &b, "the blocking reader decoded differently"),
            (None, Err(FrameError::Decode(_) | FrameError::Trailing(_))) => {}
            (a, b) => panic!("slice decoder gave {a:?}, blocking reader {b:?}"),
        }
        if on_executor_sock.is_none() {
            // The executor drops the connection here: nothing after a bad frame is read.
            return;
        }
        rest = &rest[HEADER_LEN + len..];
    }
}

/// The first frame of every connection: only this build's exact hello is compatible.
pub fn hello(data: &[u8]) {
    if let Some(h) = round_trip::<Hello>(data) {
        assert_eq!(h.is_compatible(), h == Hello::current());
    }
    if let Some(ClientFrame::Hello(h)) = round_trip::<ClientFrame<FrontendRequest>>(data) {
        assert_eq!(h.is_compatible(), h == Hello::current());
    }
    if let Some(ServerFrame::Welcome(h)) = round_trip::<ServerFrame<ControlResponse>>(data) {
        assert_eq!(h.is_compatible(), h == Hello::current());
    }
}

/// Everything the frontend's uid may send on `executor.sock`.
pub fn frontend_request(data: &[u8]) {
    if let Some(ClientFrame::Request {
        body: FrontendRequest::Call { call, .. },
        ..
    }) = round_trip::<ClientFrame<FrontendRequest>>(data)
    {
        // Every decodable call names a tool of the closed set.
        assert!(ToolName::ALL.contains(&call.name()));
    }
    round_trip::<FrontendRequest>(data);
}

/// Everything root may send on `control.sock`.
pub fn control_request(data: &[u8]) {
    round_trip::<ClientFrame<ControlRequest>>(data);
    round_trip::<ControlRequest>(data);
}

/// What the frontend reads from `executor.sock`.
pub fn frontend_response(data: &[u8]) {
    round_trip::<ServerFrame<FrontendResponse>>(data);
}

/// What `mymcpctl` reads from `control.sock`.
pub fn control_response(data: &[u8]) {
    round_trip::<ServerFrame<ControlResponse>>(data);
}

// ---------------------------------------------------------------------------------------------
// The MCP layer: a POST body (with its headers) through `mcp::handle`.

const RW: TokenDigest = TokenDigest([1; 32]);
const RO: TokenDigest = TokenDigest([2; 32]);
const ADMIN: TokenDigest = TokenDigest([3; 32]);
const UNKNOWN: TokenDigest = TokenDigest([9; 32]);
/// The key the ticket targets sign with.
pub const TICKET_KEY: [u8; 32] = [0x5a; 32];
/// "Now" for the ticket target (2023-11-14); seeds expire after it or before it.
pub const TICKET_NOW: u64 = 1_700_000_000;

/// An executor in memory that answers as the real one would and records what it was asked.
#[derive(Default)]
struct FakeExecutor {
    seen: Mutex<Vec<FrontendRequest>>,
}

fn identity(token: &TokenDigest) -> Option<Identity> {
    let role = match *token {
        RW => Role::Rw,
        RO => Role::Ro,
        ADMIN => Role::Admin,
        _ => return None,
    };
    Some(Identity {
        name: role.to_string(),
        role,
    })
}

fn output_for(call: &ToolCall) -> Result<ToolOutput, ToolFailure> {
    let grant = |direction, path: &str| TransferGrant {
        grant: GrantId([7; 16]),
        direction,
        expires_at_unix: TICKET_NOW + 300,
        expires_in: 300,
        expires_at: "2023-11-14T22:18:20Z".into(),
        path: path.to_owned(),
        bytes: 10,
        overwrite: true,
        sha256: None,
    };
    match call {
        ToolCall::PrepareUpload(p) => Ok(ToolOutput::TransferGrant(grant(
            Direction::Upload,
            &p.dest_path,
        ))),
        ToolCall::PrepareDownload(p) => Ok(ToolOutput::TransferGrant(grant(
            Direction::Download,
            &p.src_path,
        ))),
        ToolCall::Glob(_) => Err(ToolFailure::new(ErrorCode::InvalidPath, "not absolute")),
        _ => Ok(ToolOutput::ReadFile(ReadFileOutput {
            content: "   1\thello".into(),
            total_lines: 1,
            total_lines_exact: true,
            truncated: false,
        })),
    }
}

impl ExecutorClient for FakeExecutor {
    async fn request(&self, request: FrontendRequest) -> Result<FrontendResponse, ForwardError> {
        self.seen.lock().expect("seen").push(request.clone());
        Ok(match request {
            FrontendRequest::Identify { token } => match identity(&token) {
                Some(i) => FrontendResponse::Identity(i),
                None => FrontendResponse::Unauthenticated,
            },
            FrontendRequest::Call { token, call, .. } => match identity(&token) {
                Some(i) if i.role.is_client() => {
                    if i.role.allows(call.name().required_role()) {
                        FrontendResponse::Tool(output_for(&call))
                    } else {
                        FrontendResponse::Tool(Err(ToolFailure::new(
                            ErrorCode::PermissionDenied,
                            "denied by executor",
                        )))
                    }
                }
                _ => FrontendResponse::Unauthenticated,
            },
            FrontendRequest::Refused { token, failure, .. } => match identity(&token) {
                Some(i) if i.role.is_client() => FrontendResponse::Tool(Err(failure)),
                _ => FrontendResponse::Unauthenticated,
            },
            FrontendRequest::Offer { token } => match identity(&token) {
                Some(i) if i.role.is_client() => {
                    FrontendResponse::Offer(mymcp_protocol::HostOffer {
                        server_overview: true,
                    })
                }
                _ => FrontendResponse::Unauthenticated,
            },
            other => panic!("the MCP layer sent {other:?}"),
        })
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
}

/// The headers a mode byte stands for: bits 0-1 the token, 2-4 `MCP-Protocol-Version`, bit 5
/// mirror `Mcp-Method`/`Mcp-Name` from the body (as 2026-07-28 clients do), 6 accepts SSE,
/// 7 accepts only SSE.
pub fn mcp_mode(token: usize, version: usize, mirror: bool, sse: bool, sse_only: bool) -> u8 {
    (token as u8 & 3)
        | (version as u8 & 7) << 2
        | u8::from(mirror) << 5
        | u8::from(sse) << 6
        | u8::from(sse_only) << 7
}

/// JSON-RPC requests named `method` in a body (one message or a batch), by independent parse.
fn requests_named(body: &Value, method: &str) -> usize {
    let is = |m: &Value| {
        m.get("method").and_then(Value::as_str) == Some(method)
            && m.get("id")
                .is_some_and(|id| id.is_string() || id.is_number())
    };
    match body {
        Value::Array(items) => items.iter().filter(|m| is(m)).count(),
        m => usize::from(is(m)),
    }
}

fn messages_in(body: &Value) -> usize {
    match body {
        Value::Array(items) => items.len(),
        _ => 1,
    }
}

/// A JSON-RPC response object: `jsonrpc: "2.0"`, an `id`, and exactly one of `result` and
/// `error` (with an integer code).
fn assert_response(v: &Value) {
    assert_eq!(v.get("jsonrpc"), Some(&Value::from("2.0")), "{v}");
    assert!(v.get("id").is_some(), "a response without id: {v}");
    match (v.get("result"), v.get("error")) {
        (Some(_), None) => {}
        (None, Some(e)) => assert!(e.get("code").is_some_and(Value::is_i64), "{v}"),
        _ => panic!("not exactly one of result and error: {v}"),
    }
}

/// One POST: the first byte picks the caller's token and the headers ([`mcp_mode`]), the rest
/// is the body. Authentication comes first (an unknown or admin token gets 401 whatever the
/// body), bodies over the nesting and value limits are refused as parse errors without
/// reaching a tool, no more calls reach the executor than the body holds `tools/call`s, and
/// every answer is well-formed JSON-RPC.
pub fn mcp_post(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let token = [RW, RO, ADMIN, UNKNOWN][usize::from(mode & 3)];
    let parsed: Option<Value> = mcp::check_structure(body)
        .ok()
        .and_then(|()| serde_json::from_slice(body).ok());
    let header = |v: Option<&str>| v.map_or(HeaderField::Absent, |v| HeaderField::Value(v.into()));
    let protocol_version = match (mode >> 2) & 7 {
        0 => HeaderField::Absent,
        n @ 1..=5 => header(Some(Revision::ALL[usize::from(n) - 1].as_str())),
        6 => HeaderField::Invalid,
        _ => header(Some("1999-01-01")),
    };
    let mirror = mode & 0x20 != 0;
    let (method, name) = match (&parsed, mirror) {
        (Some(v), true) => (
            header(v.get("method").and_then(Value::as_str)),
            header(
                v.get("params")
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str),
            ),
        ),
        _ => (HeaderField::Absent, HeaderField::Absent),
    };
    let headers = McpHeaders {
        protocol_version,
        method,
        name,
    };
    let policy = StreamPolicy {
        sse: mode & 0x40 != 0,
        sse_only: mode & 0x80 != 0,
    };
    let executor = FakeExecutor::default();
    let calls = Arc::new(CallRegistry::default());
    let caller = Caller {
        token,
        origin: CallOrigin {
            peer: "127.0.0.1".into(),
            request_id: "fuzz".into(),
        },
        session: Some("s".into()),
        tickets: Arc::new(Tickets::with_key(TICKET_KEY, "")),
    };
    let post = Post {
        body,
        headers: &headers,
        policy,
        identified: None,
    };
    let (outcome, streamed) = RUNTIME.with(|rt| {
        rt.block_on(async {
            let outcome = mcp::handle(&executor, &calls, &caller, post).await;
            let mut streamed = Vec::new();
            if let Outcome::Stream(call) = outcome.clone() {
                let (tx, mut rx) = tokio::sync::mpsc::channel(64);
                mcp::run_streamed(&executor, &calls, &caller, call, tx).await;
                while let Some(m) = rx.recv().await {
                    streamed.push(m);
                }
            }
            (outcome, streamed)
        })
    });
    let seen = executor.seen.lock().expect("seen").clone();

    if token == UNKNOWN || token == ADMIN {
        assert_eq!(
            outcome,
            Outcome::Unauthenticated,
            "no MCP answer without a client token"
        );
        assert_eq!(seen.len(), 1, "one round trip decides a 401: {seen:?}");
        return;
    }
    assert!(
        !matches!(
            outcome,
            Outcome::Unauthenticated | Outcome::Unavailable | Outcome::BadGateway
        ),
        "{outcome:?} with a valid token and a working executor"
    );
    for request in &seen {
        match request {
            FrontendRequest::Identify { token: t } | FrontendRequest::Offer { token: t } => {
                assert_eq!(*t, token)
            }
            FrontendRequest::Call {
                token: t, origin, ..
            }
            | FrontendRequest::Refused {
                token: t, origin, ..
            } => {
                assert_eq!(*t, token);
                assert_eq!(origin, &caller.origin);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let tool_calls = seen
        .iter()
        .filter(|r| {
            matches!(
                r,
                FrontendRequest::Call { .. } | FrontendRequest::Refused { .. }
            )
        })
        .count();
    let allowed_calls = parsed
        .as_ref()
        .map_or(0, |v| requests_named(v, "tools/call"));
    assert!(
        tool_calls <= allowed_calls,
        "{tool_calls} calls reached the executor from a body with {allowed_calls} tools/call"
    );

    if let Err(malformed) = mcp::check_structure(body) {
        let Outcome::Error(_, text) = &outcome else {
            panic!("a body over the limits ({malformed:?}) was answered {outcome:?}");
        };
        let v: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(v["error"]["code"], mcp::codes::PARSE_ERROR);
    }
    match &outcome {
        Outcome::Reply(text) | Outcome::Initialized(text) => {
            let v: Value = serde_json::from_str(text).expect("a reply is JSON");
            match &v {
                Value::Array(responses) => {
                    assert!(!responses.is_empty());
                    let asked = parsed.as_ref().map_or(0, messages_in);
                    assert!(responses.len() <= asked, "more answers than messages");
                    responses.iter().for_each(assert_response);
                }
                one => assert_response(one),
            }
            if matches!(outcome, Outcome::Initialized(_)) {
                assert_eq!(
                    parsed.as_ref().and_then(|p| p.get("method")),
                    Some(&Value::from("initialize"))
                );
            }
        }
        Outcome::Error(_, text) => {
            let v: Value = serde_json::from_str(text).expect("an error is JSON");
            assert_response(&v);
            assert!(v.get("error").is_some());
        }
        Outcome::Stream(_) => {
            assert!(policy.sse, "a stream for a client that does not accept SSE");
            let last = streamed.last().expect("a stream ends with the response");
            let last: Value = serde_json::from_str(last).expect("JSON");
            assert_response(&last);
            for m in &streamed[..streamed.len() - 1] {
                let v: Value = serde_json::from_str(m).expect("JSON");
                assert_eq!(v["method"], "notifications/progress");
            }
        }
        Outcome::Accepted => {}
        other => panic!("unexpected {other:?}"),
    }
}

/// The deepest nesting and the number of containers and elements (what
/// [`mcp::check_structure`] counts) of a JSON text, measured by serde_json's own tokenizer
/// without building a value (so duplicate keys count).
#[derive(Debug, Default, Clone, Copy)]
struct Measure {
    depth: usize,
    values: usize,
}

impl<'de> Deserialize<'de> for Measure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Measure, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Measure;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Measure, E> {
                Ok(Measure::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Measure, E> {
                Ok(Measure::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Measure, E> {
                Ok(Measure::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Measure, E> {
                Ok(Measure::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Measure, E> {
                Ok(Measure::default())
            }
            fn visit_unit<E>(self) -> Result<Measure, E> {
                Ok(Measure::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Measure, A::Error> {
                let (mut depth, mut values, mut n) = (0, 1, 0usize);
                while let Some(m) = seq.next_element::<Measure>()? {
                    depth = depth.max(m.depth);
                    values += m.values;
                    n += 1;
                }
                Ok(Measure {
                    depth: depth + 1,
                    values: values + n.saturating_sub(1),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Measure, A::Error> {
                let (mut depth, mut values, mut n) = (0, 1, 0usize);
                while let Some((IgnoredAny, m)) = map.next_entry::<IgnoredAny, Measure>()? {
                    depth = depth.max(m.depth);
                    values += m.values;
                    n += 1;
                }
                Ok(Measure {
                    depth: depth + 1,
                    values: values + n.saturating_sub(1),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The nesting and value-count screen: for every body that is JSON, it refuses exactly the
/// ones deeper than [`mcp::MAX_NESTING_DEPTH`] or with more than [`mcp::MAX_JSON_VALUES`]
/// containers and elements.
pub fn json_limits(data: &[u8]) {
    let verdict = mcp::check_structure(data);
    let Ok(m) = serde_json::from_slice::<Measure>(data) else {
        return;
    };
    let over = m.depth > mcp::MAX_NESTING_DEPTH || m.values > mcp::MAX_JSON_VALUES;
    match verdict {
        Ok(()) => assert!(!over, "{m:?} passed the screen"),
        Err(mcp::Malformed::TooDeep) => assert!(m.depth > mcp::MAX_NESTING_DEPTH, "{m:?}"),
        Err(mcp::Malformed::TooManyValues) => {
            assert!(m.values > mcp::MAX_JSON_VALUES, "{m:?}")
        }
        Err(other) => panic!("the screen answered {other:?}"),
    }
    if !over {
        // What passes the screen also parses into a value (no recursion limit hit).
        serde_json::from_slice::<Value>(data).expect("a screened JSON text parses");
    }
}

// ---------------------------------------------------------------------------------------------
// Tool arguments.

/// The integer a JSON number stands for as an argument (integral floats count, values above
/// `i64::MAX` saturate), or `None` when it is not one.
fn integer_of(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.as_u64().is_some() {
        return Some(i64::MAX);
    }
    n.as_f64()
        .filter(|f| f.is_finite() && f.fract() == 0.0)
        .map(|f| f as i64)
}

/// `tools/call` arguments: the first byte picks the tool, the rest is the JSON `arguments`.
/// A decoded call is of that tool, names only properties of its schema, has every required
/// property, and carries exactly the values given; unknown properties change nothing; every
/// refusal names a field that really is missing or of the wrong type; and the call crosses the
/// socket unchanged.
pub fn tool_arguments(data: &[u8]) {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let tool = ToolName::ALL[usize::from(pick) % ToolName::ALL.len()];
    let given: Option<Value> = if json.is_empty() {
        None
    } else {
        match serde_json::from_slice(json) {
            Ok(v) => Some(v),
            Err(_) => return,
        }
    };
    let result = arguments::decode(tool, given.as_ref());
    let schema = catalogue::entry(tool).input_schema;
    let properties = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let empty = Map::new();
    let args = match &given {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            assert_eq!(result, Err(ArgumentError::NotAnObject));
            return;
        }
    };

    // Unknown properties are ignored.
    let mut extended = args.clone();
    extended.insert("x-fuzz-unknown".into(), Value::from(json.len()));
    assert_eq!(
        arguments::decode(tool, Some(&Value::Object(extended))),
        result,
        "an unknown property changed the outcome"
    );

    let call = match result {
        Ok(call) => call,
        Err(ArgumentError::Missing(field)) => {
            assert!(required.contains(&field), "{field} is not required");
            assert!(!args.contains_key(field), "{field} is present");
            return;
        }
        Err(ArgumentError::WrongType { field, .. }) => {
            assert!(properties.contains_key(field), "{field} not in the schema");
            assert!(args.get(field).is_some(), "{field} is absent");
            return;
        }
        Err(ArgumentError::NotOneOf { value, .. }) => {
            assert_eq!(tool, ToolName::Grep);
            assert_eq!(args.get("output_mode"), Some(&Value::from(value.clone())));
            assert!(GrepMode::parse(&value).is_none());
            return;
        }
        Err(ArgumentError::NotAnObject) => panic!("an object was refused as not an object"),
    };
    assert_eq!(call.name(), tool);
    for field in &required {
        assert!(
            args.get(*field).is_some_and(Value::is_string),
            "decoded without the required string {field}"
        );
    }
    // The call's fields, by name: the wire types use the schema's property names.
    let encoded = serde_json::to_value(&call).expect("a call serializes");
    let fields = match &encoded {
        Value::Object(outer) => outer
            .values()
            .next()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        _ => Map::new(), // a tool without arguments
    };
    for (field, value) in &fields {
        assert!(
            properties.contains_key(field),
            "{tool}: field {field} is not in the schema"
        );
        let from = args.get(field).filter(|v| !v.is_null());
        match value {
            Value::Null => assert!(from.is_none(), "{field} given but dropped"),
            Value::Bool(false) if field == "background" && from.is_none() => {}
            Value::Bool(b) => assert_eq!(from, Some(&Value::Bool(*b)), "{field}"),
            Value::String(s) if field == "output_mode" => {
                let mode = from.and_then(Value::as_str).and_then(GrepMode::parse);
                let mode = mode.map(|m| serde_json::to_value(m).expect("mode"));
                assert_eq!(mode.as_ref(), Some(&Value::from(s.as_str())));
            }
            Value::String(s) => assert_eq!(from, Some(&Value::from(s.as_str())), "{field}"),
            Value::Number(n) => {
                let given = from.and_then(Value::as_number).and_then(integer_of);
                assert_eq!(given, n.as_i64(), "{field}");
            }
            // `keys`: a list of strings; one string alone is a list of one.
            Value::Array(items) => {
                let expected = match from {
                    None => Vec::new(),
                    Some(Value::String(s)) => vec![Value::from(s.as_str())],
                    Some(Value::Array(given)) => given.clone(),
                    Some(other) => panic!("{field}: decoded from {other}"),
                };
                assert_eq!(items, &expected, "{field}");
            }
            other => panic!("{field}: unexpected {other}"),
        }
    }
    // The call crosses executor.sock unchanged.
    let request = ClientFrame::Request {
        id: 1,
        body: FrontendRequest::Call {
            token: RW,
            origin: CallOrigin {
                peer: String::new(),
                request_id: String::new(),
            },
            call: call.clone(),
        },
    };
    let bytes = frame::encode(&request).expect("a call encodes");
    let back: ClientFrame<FrontendRequest> =
        frame::decode(&bytes[HEADER_LEN..]).expect("a call decodes");
    assert_eq!(back, request);
}

// ---------------------------------------------------------------------------------------------
// Tickets.

const TICKET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Transfer tickets. The input as text: a ticket that verifies was issued with the key (minting
/// what it decodes to gives it back, character for character). The input as parameters
/// (direction, grant id, expiry, a position and a character): a minted ticket verifies to
/// exactly its grant before its expiry, is `Expired` from then on, and any one changed
/// character makes it unknown.
pub fn tickets(data: &[u8]) {
    let tickets = Tickets::with_key(TICKET_KEY, "");
    if let Ok(text) = std::str::from_utf8(data) {
        match tickets.verify(text, TICKET_NOW) {
            Ok(t) => {
                let grant = TransferGrant {
                    grant: t.grant,
                    direction: t.direction,
                    expires_at_unix: t.expires_at,
                    expires_in: 0,
                    expires_at: String::new(),
                    path: String::new(),
                    bytes: 0,
                    overwrite: false,
                    sha256: None,
                };
                assert_eq!(
                    tickets.mint(&grant),
                    text,
                    "a ticket verified that was never minted"
                );
                assert!(t.expires_at > TICKET_NOW);
            }
            Err(TicketError::Expired) => {
                // Signed by the key: verifiable at an earlier time.
                assert!(tickets.verify(text, 0).is_ok());
            }
            Err(TicketError::Unknown) => {
                // Not ours at any time: expiry plays no part in that.
                assert_eq!(tickets.verify(text, 0), Err(TicketError::Unknown));
            }
        }
    }
    if data.len() < 27 {
        return;
    }
    let direction = if data[0] & 1 == 0 {
        Direction::Upload
    } else {
        Direction::Download
    };
    let grant = GrantId(data[1..17].try_into().expect("16 bytes"));
    let expires_at = u64::from_be_bytes(data[17..25].try_into().expect("8 bytes"));
    let minted = tickets.mint(&TransferGrant {
        grant,
        direction,
        expires_at_unix: expires_at,
        expires_in: 0,
        expires_at: String::new(),
        path: String::new(),
        bytes: 0,
        overwrite: false,
        sha256: None,
    });
    assert_eq!(minted.len(), mymcp_frontend::tickets::TICKET_LEN);
    assert!(minted.bytes().all(|b| TICKET_ALPHABET.contains(&b)));
    match tickets.verify(&minted, TICKET_NOW) {
        Ok(t) => {
            assert!(TICKET_NOW < expires_at);
            assert_eq!(
                (t.direction, t.grant, t.expires_at),
                (direction, grant, expires_at)
            );
        }
        Err(e) => {
            assert!(TICKET_NOW >= expires_at);
            assert_eq!(e, TicketError::Expired);
        }
    }
    let other = Tickets::with_key([0xa5; 32], "");
    assert_eq!(other.verify(&minted, 0), Err(TicketError::Unknown));
    let at = usize::from(data[25]) % minted.len();
    let c = TICKET_ALPHABET[usize::from(data[26]) % 64];
    if minted.as_bytes()[at] != c {
        let mut forged = minted.into_bytes();
        forged[at] = c;
        let forged = String::from_utf8(forged).expect("ASCII");
        assert_eq!(
            tickets.verify(&forged, 0),
            Err(TicketError::Unknown),
            "a ticket with character {at} changed verified"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Files: the token store and the env file.

/// The token store file. A store that parses is written back by the executor in a form that
/// parses to the same tokens and writes back identically; ids are 12 hex digits. A Python/Go
/// store converts to names of 1-64 printable characters, one token per entry.
pub fn token_store(data: &[u8]) {
    use mymcp_tokens::{self as tokens, fuzzing};
    if let Ok((list, retired, rendered)) = fuzzing::parse_and_render(data) {
        for t in &list {
            assert_eq!(t.id.len(), tokens::ID_LEN);
            assert!(t.id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let (list2, retired2, rendered2) = fuzzing::parse_and_render(&rendered)
            .unwrap_or_else(|e| panic!("a store the executor wrote does not parse: {e}"));
        assert_eq!(list2, list, "tokens changed through a write");
        assert_eq!(retired2, retired);
        assert_eq!(rendered2, rendered, "writing is not stable");
    }
    if let Some(imported) = tokens::parse_legacy(data) {
        // One token per distinct key of `tokens` (counted without the legacy parser's types:
        // unknown fields are skipped unchecked, so the text need not be valid JSON text).
        #[derive(Deserialize)]
        struct Keys {
            tokens: std::collections::HashMap<String, IgnoredAny>,
        }
        let keys: Keys = serde_json::from_slice(data).expect("a legacy store has tokens");
        assert_eq!(
            imported.len(),
            keys.tokens.len(),
            "one imported token per entry"
        );
        for t in &imported {
            let n = t.name.chars().count();
            assert!((1..=64).contains(&n), "imported name {:?}", t.name);
            assert!(!t.name.chars().any(char::is_control), "{:?}", t.name);
        }
    }
}

/// The env file. Every pair has a valid name, no value has surrounding whitespace, writing the
/// pairs back (`KEY="VALUE"`) parses to the same pairs, refusals name a real line, and the
/// value readers of `mymcp_settings::values` keep their ranges on every value.
pub fn env_file(data: &[u8]) {
    use mymcp_settings::{envfile, values};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pairs = match envfile::parse(text) {
        Ok(pairs) => pairs,
        Err((line, reason)) => {
            assert!(line >= 1 && line <= text.lines().count(), "line {line}");
            assert!(!reason.is_empty());
            return;
        }
    };
    let mut written = String::new();
    for (k, v) in &pairs {
        assert!(!k.is_empty() && !k.starts_with(|c: char| c.is_ascii_digit()));
        assert!(
            k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{k:?}"
        );
        assert!(!v.contains('\n'));
        written.push_str(&format!("{k}=\"{v}\"\n"));
    }
    assert_eq!(envfile::parse(&written).as_ref(), Ok(&pairs), "{written:?}");

    let map: std::collections::HashMap<String, String> = pairs.iter().cloned().collect();
    for key in map.keys() {
        if let Ok(n) = values::integer(&map, key, 7, 1, 100) {
            assert!(n == 7 || (1..=100).contains(&n));
        }
        if let Ok(n) = values::interval(&map, key, 30, 600) {
            assert!((1..=600).contains(&n));
        }
        let _ = values::boolean(&map, key, false);
        if let Ok(p) = values::directory(&map, key, "/default") {
            assert!(p.is_absolute());
        }
        for item in values::list(&map, key) {
            assert!(!item.is_empty() && item.trim() == item);
        }
    }
}
