//! The MCP layer: JSON-RPC 2.0 messages in, JSON-RPC responses out, independent of HTTP.
//!
//! The server is stateless: every POST body stands alone. It speaks every MCP revision from
//! 2024-11-05 to 2026-07-28 ([`crate::revisions`] decides which one a POST uses):
//! - **legacy** revisions (up to 2025-11-25): `initialize` is optional, and
//!   `tools/list`/`tools/call` work without it; a body may be a batch (a JSON array) only under
//!   2025-03-26, the one revision that defined batching (or when no header names a revision,
//!   which those revisions say to read as 2025-03-26); unknown methods are JSON-RPC errors in
//!   a 200, as the reference servers answered;
//! - **2026-07-28**: no `initialize` or `ping`; `server/discover` describes the server; every
//!   request carries its version and capabilities in `_meta` and mirrors them in headers; a
//!   body is one request or notification; results carry `resultType` and the server's
//!   identity in `_meta`, `tools/list` carries caching hints; an unknown method is a 404 with
//!   `-32601`, other envelope and parameter errors are 400s; an unknown tool is a JSON-RPC
//!   error (`-32602`), as that revision's text asks.
//!
//! Authentication always comes before MCP processing, with at most one executor round trip in
//! the common case:
//! - a single, well-formed `tools/call` (known tool, arguments matching its schema) goes
//!   straight to the executor as a `Call`, which authenticates and authorizes it;
//! - everything else (other methods, notifications, batches, bad arguments, unknown tools, even
//!   bodies that do not parse) first sends `Identify`, so a bad token gets 401 before anything
//!   else is said about the body;
//! - a `tools/call` answered as a stream ([`Outcome::Stream`]: the client accepts SSE and sent a
//!   `progressToken`, or accepts nothing but SSE) also sends `Identify` first, because the 200
//!   and the stream's headers go out before the call ends.
//!
//! Streamed calls get `notifications/progress` (elapsed seconds, output bytes so far) for the
//! executor's progress reports before the result. Every `tools/call` is registered in the
//! [`CallRegistry`] while it runs, so a `notifications/cancelled` naming its id (a separate
//! POST in this stateless server) cancels its work in the executor; see [`crate::calls`].
//!
//! Bodies are screened before `serde_json` builds a value from them: nesting deeper than
//! [`MAX_NESTING_DEPTH`] or more than [`MAX_JSON_VALUES`] arrays, objects and elements are
//! refused, which bounds both recursion and the memory a small body can make the parser
//! allocate.

use crate::arguments;
use crate::calls::{CallKey, CallRegistry, Cancelled};
use crate::catalogue;
use crate::forward::{ExecutorClient, ForwardError, Watch};
use crate::json_string;
use crate::results::{self, CallToolResult};
use crate::revisions::{self, Era, McpHeaders, Rejection, Revision, Shape};
use crate::tasks;
use crate::tickets::Tickets;
use mymcp_protocol::{
    BashExecute, BashOutput, CallOrigin, CapturedStream, ErrorCode, FrontendRequest,
    FrontendResponse, HostOffer, JobInfo, JobKillArgs, JobOutputArgs, JobRef, Progress, Role,
    TokenDigest, ToolCall, ToolFailure, ToolName, ToolOutput,
};
use serde::Serialize;
use serde_json::{json, Value};
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// How long a client may cache a `tools/list` (2026-07-28 `ttlMs`): the catalogue changes only
/// with a new server binary.
pub const TOOLS_LIST_TTL_MS: u64 = 3_600_000;

/// How long a client may cache `server/discover`.
pub const DISCOVER_TTL_MS: u64 = 3_600_000;

/// Deepest nesting of arrays and objects accepted in a body.
pub const MAX_NESTING_DEPTH: usize = 64;

/// Most arrays, objects and array/object elements accepted in a body. Far above what any tool
/// call needs, far below what would let a 24 MiB body of `[{},{},…]` cost gigabytes.
pub const MAX_JSON_VALUES: usize = 100_000;

/// JSON-RPC error codes used here.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
}

/// The version to answer an `initialize` with: the client's if an `initialize` can agree on
/// it, else the latest that can.
pub fn negotiate_version(requested: Option<&str>) -> &'static str {
    requested
        .and_then(Revision::parse)
        .filter(|r| !r.is_modern())
        .unwrap_or(Revision::LATEST_HANDSHAKE)
        .as_str()
}

/// Who is calling: the digest of the bearer token they sent, where the request came from, and
/// the `Mcp-Session-Id` they sent (unchecked; it only scopes cancellations). `tickets` signs
/// the transfer tickets their `prepare_*` calls get and builds the URLs.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token: TokenDigest,
    pub origin: CallOrigin,
    pub session: Option<String>,
    pub tickets: Arc<Tickets>,
}

/// How the client lets a `tools/call` be answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamPolicy {
    /// The client accepts `text/event-stream`.
    pub sse: bool,
    /// It accepts nothing else.
    pub sse_only: bool,
}

/// What to tell the client; the transport maps each case to its status and framing.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// JSON-RPC response(s), serialized: one object, or an array for a batch.
    Reply(String),
    /// The answer to a single `initialize`: a reply that starts a session (the transport
    /// hands out an `Mcp-Session-Id`).
    Initialized(String),
    /// An authenticated `tools/call` to run while streaming: see [`run_streamed`].
    Stream(StreamedCall),
    /// A JSON-RPC error answered with an HTTP error status: a body that is not valid
    /// JSON-RPC, a refused protocol version or header, and under 2026-07-28 every error the
    /// revision maps to a status.
    Error(ErrorStatus, String),
    /// Only notifications or responses: nothing to answer (HTTP 202).
    Accepted,
    /// The executor does not know the token, or it may not use MCP (HTTP 401).
    Unauthenticated,
    /// No executor connection (HTTP 503).
    Unavailable,
    /// The executor answered with a response of the wrong kind (HTTP 502).
    BadGateway,
    /// An OAuth client approved for read-only called a tool that needs rw (HTTP 403 with
    /// `insufficient_scope`, so that it can ask the person for more).
    InsufficientScope,
}

/// The HTTP status of an [`Outcome::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStatus {
    /// 400.
    BadRequest,
    /// 404: a method this server does not implement (2026-07-28).
    NotFound,
}

impl ErrorStatus {
    /// The status 2026-07-28 gives a JSON-RPC error code, if any (as the official SDKs do:
    /// `-32601` is a 404, envelope and parameter errors are 400s, the rest keep 200).
    fn of_modern_code(code: i64) -> Option<ErrorStatus> {
        match code {
            codes::METHOD_NOT_FOUND => Some(ErrorStatus::NotFound),
            codes::PARSE_ERROR
            | codes::INVALID_REQUEST
            | codes::INVALID_PARAMS
            | revisions::codes::HEADER_MISMATCH
            | revisions::codes::UNSUPPORTED_PROTOCOL_VERSION => Some(ErrorStatus::BadRequest),
            _ => None,
        }
    }
}

/// Why processing stopped before a JSON-RPC answer could be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Unauthenticated,
    Unavailable,
    BadAnswer,
    /// An OAuth client approved for less called a tool that needs more (MCP's step-up).
    InsufficientScope,
}

impl From<Stop> for Outcome {
    fn from(stop: Stop) -> Outcome {
        match stop {
            Stop::Unauthenticated => Outcome::Unauthenticated,
            Stop::Unavailable => Outcome::Unavailable,
            Stop::BadAnswer => Outcome::BadGateway,
            Stop::InsufficientScope => Outcome::InsufficientScope,
        }
    }
}

/// A body that cannot be processed as JSON-RPC at all.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Malformed {
    #[error("Parse error: {0}")]
    Syntax(String),
    #[error("Parse error: JSON nested deeper than {MAX_NESTING_DEPTH} levels")]
    TooDeep,
    #[error("Parse error: more than {MAX_JSON_VALUES} JSON values")]
    TooManyValues,
    /// Valid JSON, but not a JSON-RPC message (or an empty batch). Carries the request's id
    /// when it had a usable one.
    #[error("Invalid Request")]
    InvalidRequest(Value),
}

impl Malformed {
    /// The JSON-RPC error code for this problem.
    pub fn code(&self) -> i64 {
        match self {
            Malformed::InvalidRequest(_) => codes::INVALID_REQUEST,
            _ => codes::PARSE_ERROR,
        }
    }

    /// The JSON-RPC error response to send.
    pub fn response(&self) -> String {
        let id = match self {
            Malformed::InvalidRequest(id) => id.clone(),
            _ => Value::Null,
        };
        serialize(&RpcResponse::error(id, self.code(), self.to_string()))
    }
}

impl Rejection {
    /// The JSON-RPC error response to send, for the request `id`.
    fn response(&self, id: Value) -> String {
        serialize(&RpcResponse::new(
            id,
            RpcBody::Error {
                code: self.code,
                message: self.message.clone(),
                data: self.data.clone(),
            },
        ))
    }
}

/// Rejects bodies nested deeper than [`MAX_NESTING_DEPTH`] or holding more than
/// [`MAX_JSON_VALUES`] containers and elements, looking only at bytes outside strings.
///
/// It does not validate JSON (the parser does that next); it only guarantees the parser will
/// neither recurse deeply nor build a huge tree.
pub fn check_structure(body: &[u8]) -> Result<(), Malformed> {
    let mut depth = 0usize;
    let mut values = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING_DEPTH {
                    return Err(Malformed::TooDeep);
                }
                values += 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => values += 1,
            _ => continue,
        }
        if values > MAX_JSON_VALUES {
            return Err(Malformed::TooManyValues);
        }
    }
    Ok(())
}

/// A `tools/call` to be answered as an SSE stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamedCall {
    id: Value,
    call: ToolCall,
    progress_token: Option<Value>,
    era: Era,
}

/// One message of a body, classified.
#[derive(Clone, Debug, PartialEq)]
enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    /// No id: never answered, whatever the method.
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A client's answer to a server request; we never send any, so it is ignored.
    Response,
    /// Not a JSON-RPC message.
    Invalid { id: Value },
}

#[derive(Clone, Debug, PartialEq)]
enum Body {
    Single(Message),
    Batch(Vec<Message>),
}

impl Body {
    /// What the revision rules look at.
    fn shape(&self) -> Shape<'_> {
        match self {
            Body::Single(Message::Request { method, params, .. }) => Shape::Request {
                method,
                params: params.as_ref(),
            },
            Body::Single(Message::Notification { params, .. }) => Shape::Notification {
                params: params.as_ref(),
            },
            Body::Single(_) => Shape::Other { batch: false },
            Body::Batch(_) => Shape::Other { batch: true },
        }
    }

    /// The id to answer a rejection with: the request's, when the body is one request.
    fn id(&self) -> Value {
        match self {
            Body::Single(Message::Request { id, .. } | Message::Invalid { id }) => id.clone(),
            _ => Value::Null,
        }
    }
}

fn parse(body: &[u8]) -> Result<Body, Malformed> {
    check_structure(body)?;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Malformed::Syntax(e.to_string()))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(Malformed::InvalidRequest(Value::Null)),
        Value::Array(items) => Ok(Body::Batch(items.into_iter().map(classify).collect())),
        other => match classify(other) {
            Message::Invalid { id } => Err(Malformed::InvalidRequest(id)),
            message => Ok(Body::Single(message)),
        },
    }
}

fn is_valid_id(id: &Value) -> bool {
    // MCP forbids null ids; JSON-RPC allows only strings and numbers besides.
    matches!(id, Value::String(_) | Value::Number(_))
}

fn classify(value: Value) -> Message {
    let Value::Object(mut obj) = value else {
        return Message::Invalid { id: Value::Null };
    };
    let id = obj.remove("id");
    let usable_id = id.clone().filter(is_valid_id).unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Message::Invalid { id: usable_id };
    }
    match obj.remove("method") {
        Some(Value::String(method)) => {
            let params = obj.remove("params").filter(|p| !p.is_null());
            match id {
                None => Message::Notification { method, params },
                Some(id) if is_valid_id(&id) => Message::Request { id, method, params },
                Some(_) => Message::Invalid { id: Value::Null },
            }
        }
        Some(_) => Message::Invalid { id: usable_id },
        None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => {
            Message::Response
        }
        None => Message::Invalid { id: usable_id },
    }
}

/// A JSON-RPC response.
#[derive(Debug, Serialize)]
struct RpcResponse {
    jsonrpc: &'static str,
    id: Value,
    #[serde(flatten)]
    body: RpcBody,
}

#[derive(Debug, Serialize)]
enum RpcBody {
    #[serde(rename = "result")]
    Result(RpcResult),
    #[serde(rename = "error")]
    Error {
        code: i64,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    },
}

/// A `result`, kept typed so that its keys serialize in declaration order (a `Value` would
/// sort them).
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum RpcResult {
    Tool(Stamped<CallToolResult>),
    Tools(Stamped<ToolList>),
    Other(Stamped<Value>),
}

/// A result, with the fields 2026-07-28 adds to every result when the request is modern.
#[derive(Debug, Serialize)]
struct Stamped<T> {
    #[serde(rename = "resultType", skip_serializing_if = "Option::is_none")]
    result_type: Option<&'static str>,
    #[serde(flatten)]
    result: T,
    #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
    meta: Option<ResultMeta>,
}

impl<T> Stamped<T> {
    fn new(result: T, era: Era) -> Self {
        let modern = era.is_modern();
        Stamped {
            result_type: modern.then_some("complete"),
            result,
            meta: modern.then_some(ResultMeta {
                server_info: SERVER_INFO,
            }),
        }
    }
}

#[derive(Debug, Serialize)]
struct ResultMeta {
    #[serde(rename = "io.modelcontextprotocol/serverInfo")]
    server_info: ServerInfo,
}

/// The server's `Implementation` (name and version).
#[derive(Clone, Copy, Debug, Serialize)]
struct ServerInfo {
    name: &'static str,
    version: &'static str,
}

const SERVER_INFO: ServerInfo = ServerInfo {
    name: "mymcp",
    version: env!("CARGO_PKG_VERSION"),
};

/// A `tools/list` result, with 2026-07-28's caching hints when the request is modern.
#[derive(Debug, Serialize)]
struct ToolList {
    tools: Vec<catalogue::ToolEntry>,
    #[serde(rename = "ttlMs", skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    /// `private`: the list depends on the caller's role.
    #[serde(rename = "cacheScope", skip_serializing_if = "Option::is_none")]
    cache_scope: Option<&'static str>,
}

impl RpcResponse {
    /// Serialized. A tool result can be megabytes: its tool JSON is written straight into
    /// the response, escaped once for the text item and as it is for `structuredContent`,
    /// into one buffer (no intermediate copies; sized exactly for a long result, estimated for
    /// a short one).
    fn into_json(mut self) -> String {
        let taken = match &mut self.body {
            RpcBody::Result(RpcResult::Tool(stamped)) => stamped.result.take_tool_json(),
            _ => None,
        };
        let envelope = serialize(&self);
        let Some(json) = taken else {
            return envelope;
        };
        let (head, rest) = envelope
            .split_once(results::TEXT_MARK)
            .expect("the text mark is in the envelope");
        let (middle, tail) = rest
            .split_once(results::JSON_MARK)
            .expect("the JSON mark is in the envelope");
        let mut out = String::with_capacity(
            head.len() + json_string::literal_room(&json) + middle.len() + json.len() + tail.len(),
        );
        out.push_str(head);
        json_string::push_literal(&mut out, &json);
        out.push_str(middle);
        out.push_str(&json);
        out.push_str(tail);
        out
    }

    fn new(id: Value, body: RpcBody) -> Self {
        RpcResponse {
            jsonrpc: "2.0",
            id,
            body,
        }
    }

    fn error(id: Value, code: i64, message: impl Into<String>) -> Self {
        RpcResponse::new(id, RpcBody::error(code, message))
    }

    /// The error code, if this is an error response.
    fn error_code(&self) -> Option<i64> {
        match self.body {
            RpcBody::Error { code, .. } => Some(code),
            RpcBody::Result(_) => None,
        }
    }
}

impl RpcBody {
    fn tool(result: CallToolResult, era: Era) -> Self {
        RpcBody::Result(RpcResult::Tool(Stamped::new(result, era)))
    }

    fn other(result: Value, era: Era) -> Self {
        RpcBody::Result(RpcResult::Other(Stamped::new(result, era)))
    }

    /// A `CreateTaskResult` (2026-07-28): `resultType` says `task`.
    fn task(result: Value, era: Era) -> Self {
        let mut stamped = Stamped::new(result, era);
        stamped.result_type = Some("task");
        RpcBody::Result(RpcResult::Other(stamped))
    }

    /// The job a `bash_execute` answer handed off to, if it is one (`job_output`'s JSON).
    fn handed_off_job(&self) -> Option<String> {
        let RpcBody::Result(RpcResult::Tool(stamped)) = self else {
            return None;
        };
        stamped.result.handed_off_job()
    }

    fn error(code: i64, message: impl Into<String>) -> Self {
        RpcBody::Error {
            code,
            message: message.into(),
            data: None,
        }
    }
}

fn serialize<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON-RPC responses serialize")
}

/// A JSON-RPC error response, serialized, for errors found by the transport (e.g. an
/// unacceptable `Accept` header) before the body is looked at.
pub fn error_response(code: i64, message: &str) -> String {
    serialize(&RpcResponse::error(Value::Null, code, message))
}

/// A JSON-RPC error response without an `id` member, as the MCP transports describe the body
/// of a refusal that is not about any request (e.g. a 403 for a foreign `Origin`).
pub fn error_response_without_id(code: i64, message: &str) -> String {
    #[derive(Serialize)]
    struct NoId {
        jsonrpc: &'static str,
        #[serde(flatten)]
        body: RpcBody,
    }
    serialize(&NoId {
        jsonrpc: "2.0",
        body: RpcBody::error(code, message),
    })
}

/// One POST to answer: its body, its MCP headers, how a `tools/call` may be answered, and
/// the caller's role if the executor already named it ([`authenticate`], before the body was
/// read) — then no second `Identify` is sent.
#[derive(Clone, Copy, Debug)]
pub struct Post<'a> {
    pub body: &'a [u8],
    pub headers: &'a McpHeaders,
    pub policy: StreamPolicy,
    pub identified: Option<Role>,
}

/// Asks the executor who holds `token` before anything else is done for the request; only
/// MCP client roles pass. The error is the outcome to answer with (401, 503 or 502).
pub async fn authenticate(
    executor: &impl ExecutorClient,
    token: TokenDigest,
) -> Result<Role, Outcome> {
    identify(executor, token).await.map_err(Outcome::from)
}

/// Processes one POST for `caller`, asking `executor` whatever it needs. `calls` holds the
/// running `tools/call`s (for `notifications/cancelled`).
pub async fn handle(
    executor: &impl ExecutorClient,
    calls: &Arc<CallRegistry>,
    caller: &Caller,
    post: Post<'_>,
) -> Outcome {
    let parsed = parse(post.body);
    let era = parsed
        .as_ref()
        .map(|body| revisions::classify(body.shape(), post.headers))
        .map_err(|_| ());

    // The common case: one well-formed tools/call. The executor authenticates it, so it needs
    // no separate Identify — unless it is streamed, where the 401 must be decided before the
    // stream starts.
    if let (Ok(Body::Single(Message::Request { id, method, params })), Ok(Ok(era))) =
        (&parsed, &era)
    {
        if method == "tools/call" {
            if let Some(call) = well_formed_call(params.as_ref()) {
                let progress_token = progress_token(params.as_ref());
                let policy = post.policy;
                if policy.sse && (progress_token.is_some() || policy.sse_only) {
                    let identified = match post.identified {
                        Some(role) => Ok(role),
                        None => identify(executor, caller.token).await,
                    };
                    return match identified {
                        Ok(_) => Outcome::Stream(StreamedCall {
                            id: id.clone(),
                            call,
                            progress_token,
                            era: *era,
                        }),
                        Err(stop) => stop.into(),
                    };
                }
                return match call_tool(executor, calls, caller, id, call, None, *era).await {
                    Ok(body) => Outcome::Reply(RpcResponse::new(id.clone(), body).into_json()),
                    Err(stop) => stop.into(),
                };
            }
        }
    }

    let identified = match post.identified {
        Some(role) => Ok(role),
        None => identify(executor, caller.token).await,
    };
    let role = match identified {
        Ok(role) => role,
        Err(stop) => return stop.into(),
    };
    let session = Session {
        executor,
        calls,
        caller,
        role,
        offer: OnceLock::new(),
    };
    let body = match parsed {
        Ok(body) => body,
        Err(malformed) => return Outcome::Error(ErrorStatus::BadRequest, malformed.response()),
    };
    let era = match era {
        Ok(Ok(era)) => era,
        Ok(Err(rejection)) => {
            return Outcome::Error(ErrorStatus::BadRequest, rejection.response(body.id()))
        }
        Err(_) => unreachable!("a parsed body has an era verdict"),
    };
    match body {
        Body::Single(message) if era.is_modern() => session.modern(message, era).await,
        Body::Single(message) => {
            let initialize =
                matches!(&message, Message::Request { method, .. } if method == "initialize");
            match session.answer(message, era).await {
                Ok(Some(response)) if initialize => Outcome::Initialized(serialize(&response)),
                Ok(Some(response)) => Outcome::Reply(response.into_json()),
                Ok(None) => Outcome::Accepted,
                Err(stop) => stop.into(),
            }
        }
        Body::Batch(_) if !era.revision().allows_batches() || era.is_modern() => Outcome::Error(
            ErrorStatus::BadRequest,
            serialize(&RpcResponse::error(
                Value::Null,
                codes::INVALID_REQUEST,
                format!(
                    "Invalid Request: protocol version {} does not allow JSON-RPC batches; \
                     send one message per POST",
                    era.revision().as_str()
                ),
            )),
        ),
        Body::Batch(messages) => {
            let mut responses = Vec::new();
            for message in messages {
                match session.answer(message, era).await {
                    Ok(Some(response)) => responses.push(response),
                    Ok(None) => {}
                    Err(stop) => return stop.into(),
                }
            }
            if responses.is_empty() {
                Outcome::Accepted
            } else {
                Outcome::Reply(serialize(&responses))
            }
        }
    }
}

/// `params._meta.progressToken`, if it is a string or an integer.
fn progress_token(params: Option<&Value>) -> Option<Value> {
    let token = params?.get("_meta")?.get("progressToken")?;
    match token {
        Value::String(_) => Some(token.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(token.clone()),
        _ => None,
    }
}

/// Runs a streamed `tools/call` (see [`Outcome::Stream`]): sends a `notifications/progress`
/// for each progress report of the executor (when the client gave a progress token), then the
/// JSON-RPC response, each as one serialized message on `out`. Stops early if `out` closes.
pub async fn run_streamed(
    executor: &impl ExecutorClient,
    calls: &Arc<CallRegistry>,
    caller: &Caller,
    streamed: StreamedCall,
    out: mpsc::Sender<String>,
) {
    let StreamedCall {
        id,
        call,
        progress_token,
        era,
    } = streamed;
    let (progress_tx, mut progress) = mpsc::channel(16);
    let mut reports = progress_token.is_some();
    let progress_tx = reports.then_some(progress_tx);
    let call_id = id.clone();
    let mut call = pin!(call_tool(
        executor,
        calls,
        caller,
        &call_id,
        call,
        progress_tx,
        era
    ));
    let response = loop {
        tokio::select! {
            biased;
            report = progress.recv(), if reports => match (report, &progress_token) {
                (Some(report), Some(token)) => {
                    if out.send(progress_notification(token, report)).await.is_err() {
                        return;
                    }
                }
                _ => reports = false,
            },
            body = &mut call => break match body {
                Ok(body) => RpcResponse::new(id, body),
                Err(stop) => RpcResponse::error(id, codes::INTERNAL_ERROR, stop.message()),
            },
        }
    };
    // Reports that arrived just before the answer still go first.
    if let Some(token) = &progress_token {
        while let Ok(report) = progress.try_recv() {
            if out
                .send(progress_notification(token, report))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let _ = out.send(response.into_json()).await;
}

#[derive(Serialize)]
struct Notification<T> {
    jsonrpc: &'static str,
    method: &'static str,
    params: T,
}

#[derive(Serialize)]
struct ProgressParams<'a> {
    #[serde(rename = "progressToken")]
    token: &'a Value,
    progress: f64,
    message: String,
}

/// A `notifications/progress` for a running command: progress counts elapsed seconds (it only
/// grows, as MCP requires); the message says how much output there was so far.
fn progress_notification(token: &Value, report: Progress) -> String {
    let secs = report.elapsed_ms as f64 / 1000.0;
    serialize(&Notification {
        jsonrpc: "2.0",
        method: "notifications/progress",
        params: ProgressParams {
            token,
            progress: secs,
            message: format!(
                "running for {:.0} s; output so far: {} bytes on stdout, {} on stderr",
                secs, report.stdout_bytes, report.stderr_bytes
            ),
        },
    })
}

/// The typed call, if `params` name a known tool with schema-conforming arguments and neither
/// ask for a task nor come from a client that takes tasks (those go through the session, which
/// creates the task).
fn well_formed_call(params: Option<&Value>) -> Option<ToolCall> {
    let params = params?.as_object()?;
    if params.contains_key("task") || tasks::client_has_extension(params) {
        return None;
    }
    let tool = ToolName::parse(params.get("name")?.as_str()?)?;
    arguments::decode(tool, params.get("arguments")).ok()
}

/// Asks the executor who holds the token. Only MCP client roles may go on.
async fn identify(executor: &impl ExecutorClient, token: TokenDigest) -> Result<Role, Stop> {
    match executor.request(FrontendRequest::Identify { token }).await {
        Ok(FrontendResponse::Identity(identity)) if identity.role.is_client() => Ok(identity.role),
        // Admin and metrics tokens are for other endpoints: to MCP they are invalid.
        Ok(FrontendResponse::Identity(_) | FrontendResponse::Unauthenticated) => {
            Err(Stop::Unauthenticated)
        }
        Ok(_) => {
            tracing::error!("executor answered Identify with something else");
            Err(Stop::BadAnswer)
        }
        Err(_) => Err(Stop::Unavailable),
    }
}

/// Asks the executor what the host can serve now (`tools/list` and the instructions depend on
/// it).
async fn host_offer(executor: &impl ExecutorClient, token: TokenDigest) -> Result<HostOffer, Stop> {
    match executor.request(FrontendRequest::Offer { token }).await {
        Ok(FrontendResponse::Offer(offer)) => Ok(offer),
        Ok(FrontendResponse::Unauthenticated) => Err(Stop::Unauthenticated),
        Ok(_) => {
            tracing::error!("executor answered Offer with something else");
            Err(Stop::BadAnswer)
        }
        Err(_) => Err(Stop::Unavailable),
    }
}

/// Runs one tool call in the executor, registered under its id for `notifications/cancelled`.
async fn call_tool(
    executor: &impl ExecutorClient,
    calls: &Arc<CallRegistry>,
    caller: &Caller,
    id: &Value,
    call: ToolCall,
    progress: Option<mpsc::Sender<Progress>>,
    era: Era,
) -> Result<RpcBody, Stop> {
    let span = crate::otel::ToolSpan::start(call.name().as_str(), id);
    let request = FrontendRequest::Call {
        token: caller.token,
        origin: caller.origin.clone(),
        call,
    }
    .with_trace(span.wire());
    let key = CallKey::new(caller.token, caller.session.as_deref(), id);
    let (_registration, cancel) = calls.register(key);
    let watch = Watch {
        progress,
        cancel: Some(cancel),
    };
    let answer = executor.request_watched(request, watch).await;
    match &answer {
        Ok(FrontendResponse::Tool(Err(failure))) => span.end(
            Some(failure.code.as_str()),
            matches!(
                failure.code,
                ErrorCode::PermissionDenied | ErrorCode::InsufficientScope | ErrorCode::UnknownTool
            ),
        ),
        Ok(FrontendResponse::Tool(Ok(_))) => span.end(None, false),
        Ok(_) => span.end(Some("Unauthenticated"), true),
        Err(_) => span.end(Some("Unavailable"), false),
    }
    match answer {
        Ok(FrontendResponse::Tool(Err(f))) if f.code == ErrorCode::InsufficientScope => {
            Err(Stop::InsufficientScope)
        }
        Ok(FrontendResponse::Tool(outcome)) => Ok(RpcBody::tool(
            CallToolResult::from_outcome(outcome, &caller.tickets),
            era,
        )),
        Ok(FrontendResponse::Unauthenticated) => Err(Stop::Unauthenticated),
        Ok(_) => {
            tracing::error!("executor answered Call with something else");
            Err(Stop::BadAnswer)
        }
        Err(ForwardError::Unavailable) => Err(Stop::Unavailable),
        Err(e @ ForwardError::Encode(_)) => {
            tracing::error!("{e}");
            Ok(RpcBody::error(
                codes::INTERNAL_ERROR,
                "Internal error: request too large",
            ))
        }
    }
}

impl Stop {
    /// For a JSON-RPC error once a stream has started (no HTTP status can say it any more).
    fn message(self) -> &'static str {
        match self {
            Stop::Unauthenticated => "Invalid or disabled token",
            Stop::Unavailable => "Executor unavailable",
            Stop::BadAnswer => "Unexpected executor response",
            Stop::InsufficientScope => {
                "Insufficient scope: this client was approved for read-only; it may ask for mymcp:rw"
            }
        }
    }
}

/// Answers the messages of one body for an authenticated caller.
struct Session<'a, E> {
    executor: &'a E,
    calls: &'a Arc<CallRegistry>,
    caller: &'a Caller,
    role: Role,
    /// What the host offers, once asked (at most once per body).
    offer: OnceLock<HostOffer>,
}

impl<E: ExecutorClient> Session<'_, E> {
    /// What the host can serve now, asked of the executor the first time it is needed.
    async fn offer(&self) -> Result<HostOffer, Stop> {
        if let Some(offer) = self.offer.get() {
            return Ok(*offer);
        }
        let offer = host_offer(self.executor, self.caller.token).await?;
        Ok(*self.offer.get_or_init(|| offer))
    }

    /// Acts on a notification: only `notifications/cancelled` does anything.
    fn notification(&self, method: &str, params: Option<&Value>) {
        if method != "notifications/cancelled" {
            return;
        }
        let Some(id) = params
            .and_then(|p| p.get("requestId"))
            .filter(|id| is_valid_id(id))
        else {
            tracing::debug!("notifications/cancelled without a usable requestId");
            return;
        };
        let key = CallKey::new(self.caller.token, self.caller.session.as_deref(), id);
        match self.calls.cancel(&key) {
            Cancelled::One => {
                tracing::info!(request_id = %self.caller.origin.request_id, rpc_id = %id, "tools/call cancelled by the client")
            }
            Cancelled::NoMatch => tracing::debug!(rpc_id = %id, "cancellation for no running call"),
            Cancelled::Ambiguous(n) => {
                tracing::warn!(rpc_id = %id, calls = n, "cancellation matches several running calls of this token; none cancelled (the client sent no Mcp-Session-Id)")
            }
        }
    }

    /// Answers one message of a legacy-era body.
    async fn answer(&self, message: Message, era: Era) -> Result<Option<RpcResponse>, Stop> {
        let (id, method, params) = match message {
            Message::Request { id, method, params } => (id, method, params),
            Message::Notification { method, params } => {
                self.notification(&method, params.as_ref());
                return Ok(None);
            }
            Message::Response => return Ok(None),
            Message::Invalid { id } => {
                return Ok(Some(RpcResponse::error(
                    id,
                    codes::INVALID_REQUEST,
                    "Invalid Request",
                )))
            }
        };
        tracing::debug!(%method, role = %self.role, revision = era.revision().as_str(), "MCP request");
        let body = match method.as_str() {
            "initialize" => {
                RpcBody::other(initialize_result(params.as_ref(), self.offer().await?), era)
            }
            "ping" => RpcBody::other(json!({}), era),
            "tools/list" => self.tools_list(era).await?,
            "tools/call" => self.tools_call(&id, params, era).await?,
            "tasks/list" if era.revision() == Revision::V2025_11_25 => self.task_list(era).await?,
            "tasks/get" | "tasks/result" | "tasks/cancel"
                if era.revision() == Revision::V2025_11_25 =>
            {
                self.task_op(&method, params.as_ref(), era).await?
            }
            _ => RpcBody::error(codes::METHOD_NOT_FOUND, "Method not found"),
        };
        Ok(Some(RpcResponse::new(id, body)))
    }

    /// Answers the one message of a 2026-07-28 body (its envelope is already checked).
    async fn modern(&self, message: Message, era: Era) -> Outcome {
        let (id, method, params) = match message {
            Message::Request { id, method, params } => (id, method, params),
            Message::Notification { method, params } => {
                // None is defined over HTTP in this revision; a cancellation is still honoured.
                self.notification(&method, params.as_ref());
                return Outcome::Accepted;
            }
            Message::Response => {
                return Outcome::Error(
                    ErrorStatus::BadRequest,
                    serialize(&RpcResponse::error(
                        Value::Null,
                        codes::INVALID_REQUEST,
                        "Invalid Request: clients do not send JSON-RPC responses in protocol \
                         version 2026-07-28",
                    )),
                )
            }
            Message::Invalid { id } => {
                return Outcome::Error(
                    ErrorStatus::BadRequest,
                    serialize(&RpcResponse::error(
                        id,
                        codes::INVALID_REQUEST,
                        "Invalid Request",
                    )),
                )
            }
        };
        tracing::debug!(%method, role = %self.role, revision = era.revision().as_str(), "MCP request");
        let body = match method.as_str() {
            "server/discover" => match self.offer().await {
                Ok(offer) => RpcBody::other(discover_result(offer), era),
                Err(stop) => return stop.into(),
            },
            "tools/list" => match self.tools_list(era).await {
                Ok(body) => body,
                Err(stop) => return stop.into(),
            },
            "tools/call" => match self.tools_call(&id, params, era).await {
                Ok(body) => body,
                Err(stop) => return stop.into(),
            },
            "tasks/get" | "tasks/update" | "tasks/cancel" => {
                match self.modern_task_op(&method, params.as_ref(), era).await {
                    Ok(body) => body,
                    Err(stop) => return stop.into(),
                }
            }
            _ => RpcBody::error(
                codes::METHOD_NOT_FOUND,
                format!(
                    "Method not found: {method} (protocol version {} serves server/discover, \
                     tools/list and tools/call)",
                    era.revision().as_str()
                ),
            ),
        };
        let response = RpcResponse::new(id, body);
        match response.error_code().and_then(ErrorStatus::of_modern_code) {
            Some(status) => Outcome::Error(status, serialize(&response)),
            None => Outcome::Reply(response.into_json()),
        }
    }

    async fn tools_list(&self, era: Era) -> Result<RpcBody, Stop> {
        let modern = era.is_modern();
        let mut tools = catalogue::visible_to(self.role, self.offer().await?);
        if era.revision() == Revision::V2025_11_25 {
            for tool in &mut tools {
                if tool.name == ToolName::BashExecute.as_str() {
                    tool.execution = Some(json!({ "taskSupport": "optional" }));
                }
            }
        }
        Ok(RpcBody::Result(RpcResult::Tools(Stamped::new(
            ToolList {
                tools,
                ttl_ms: modern.then_some(TOOLS_LIST_TTL_MS),
                cache_scope: modern.then_some("private"),
            },
            era,
        ))))
    }

    async fn tools_call(
        &self,
        id: &Value,
        params: Option<Value>,
        era: Era,
    ) -> Result<RpcBody, Stop> {
        let Some(Value::Object(params)) = params else {
            return Ok(RpcBody::error(
                codes::INVALID_PARAMS,
                "Invalid params: expected an object with 'name' and 'arguments'",
            ));
        };
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Ok(RpcBody::error(
                codes::INVALID_PARAMS,
                "Invalid params: 'name' must be a string",
            ));
        };
        let Some(tool) = ToolName::parse(name) else {
            crate::metrics::unknown_tool_call(self.role);
            let message = format!("Unknown tool: {name}");
            let failure = ToolFailure::new(ErrorCode::UnknownTool, message.clone());
            self.report_refusal(name, &failure).await?;
            if era.is_modern() {
                // 2026-07-28: an unknown tool is a protocol error.
                return Ok(RpcBody::error(codes::INVALID_PARAMS, message));
            }
            // The reference servers answer a tool result; their clients expect one.
            return Ok(RpcBody::tool(CallToolResult::failure(&failure), era));
        };
        let task = params
            .get("task")
            .filter(|_| era.revision() == Revision::V2025_11_25);
        let modern_tasks = era.is_modern() && tasks::client_has_extension(&params);
        match arguments::decode(tool, params.get("arguments")) {
            Ok(ToolCall::BashExecute(args)) if modern_tasks && !args.background => {
                self.modern_task_call(id, args, era).await
            }
            Ok(ToolCall::BashExecute(args)) if task.is_some() => self.create_task(args, era).await,
            Ok(_) if task.is_some() => Ok(RpcBody::error(
                codes::METHOD_NOT_FOUND,
                format!("Tool {name} does not run as a task (only bash_execute does)"),
            )),
            Ok(call) => {
                call_tool(self.executor, self.calls, self.caller, id, call, None, era).await
            }
            // As in the reference, a caller who may not use the tool learns that first.
            Err(_) if !self.role.allows(tool.required_role()) => {
                let failure = ToolFailure::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "Permission denied: tool '{name}' requires {} role",
                        tool.required_role()
                    ),
                );
                self.report_refusal(name, &failure).await?;
                Ok(RpcBody::tool(CallToolResult::failure(&failure), era))
            }
            // The same shape as every other failure, with the reference's message.
            Err(e) => {
                let failure = ToolFailure::new(ErrorCode::InvalidArguments, e.message());
                self.report_refusal(name, &failure).await?;
                Ok(RpcBody::tool(CallToolResult::failure(&failure), era))
            }
        }
    }

    /// Runs one tool operation in the executor for the caller (a step of a task operation).
    async fn exec(&self, call: ToolCall) -> Result<Result<ToolOutput, ToolFailure>, Stop> {
        let request = FrontendRequest::Call {
            token: self.caller.token,
            origin: self.caller.origin.clone(),
            call,
        }
        .with_trace(crate::otel::current_wire());
        match self.executor.request(request).await {
            Ok(FrontendResponse::Tool(outcome)) => Ok(outcome),
            Ok(FrontendResponse::Unauthenticated) => Err(Stop::Unauthenticated),
            Ok(_) => Err(Stop::BadAnswer),
            Err(_) => Err(Stop::Unavailable),
        }
    }

    /// A task-augmented `bash_execute`: starts its job and answers `CreateTaskResult`.
    async fn create_task(&self, args: BashExecute, era: Era) -> Result<RpcBody, Stop> {
        match self
            .exec(ToolCall::BashExecute(tasks::as_job(args)))
            .await?
        {
            Ok(ToolOutput::Job(job)) => {
                let id = job.job_id.clone();
                let task = tasks::task(&id, &job, &tasks::now_rfc3339());
                Ok(RpcBody::other(json!({ "task": task }), era))
            }
            Ok(_) => Err(Stop::BadAnswer),
            // Refused before it started (Busy, a bad working_dir, ...): the tool's failure.
            Err(failure) => Ok(RpcBody::tool(CallToolResult::failure(&failure), era)),
        }
    }

    /// `tasks/get`, `tasks/result`, `tasks/cancel` (2025-11-25).
    async fn task_op(
        &self,
        method: &str,
        params: Option<&Value>,
        era: Era,
    ) -> Result<RpcBody, Stop> {
        let Some(task_id) = tasks::task_id_param(params) else {
            return Ok(RpcBody::error(
                codes::INVALID_PARAMS,
                "Invalid params: unknown taskId",
            ));
        };
        let status = |job_id: String| ToolCall::JobStatus(JobRef { job_id });
        let job_id = task_id.clone();
        let job = match self.exec(status(job_id.clone())).await? {
            Ok(ToolOutput::Job(job)) => job,
            Ok(_) => return Err(Stop::BadAnswer),
            Err(_) => {
                return Ok(RpcBody::error(
                    codes::INVALID_PARAMS,
                    format!("Invalid params: no task {task_id} (unknown, someone else's, or deleted after its retention)"),
                ))
            }
        };
        match method {
            "tasks/get" => Ok(RpcBody::other(
                tasks::task(&task_id, &job, &tasks::now_rfc3339()),
                era,
            )),
            "tasks/cancel" => {
                if !job.running {
                    return Ok(RpcBody::error(
                        codes::INVALID_PARAMS,
                        format!(
                            "Invalid params: task {task_id} has already ended ({})",
                            tasks::status(&job)
                        ),
                    ));
                }
                let kill = ToolCall::JobKill(JobKillArgs {
                    job_id,
                    signal: None,
                });
                match self.exec(kill).await? {
                    Ok(ToolOutput::Job(mut job)) => {
                        // Cancelled from now on, even if the command was ending by itself.
                        job.killed = true;
                        job.running = false;
                        Ok(RpcBody::other(
                            tasks::task(&task_id, &job, &tasks::now_rfc3339()),
                            era,
                        ))
                    }
                    Ok(_) => Err(Stop::BadAnswer),
                    Err(f) => Ok(RpcBody::error(codes::INTERNAL_ERROR, f.message)),
                }
            }
            _ => self.task_result(&task_id, job, era).await,
        }
    }

    /// `tasks/list`: the caller's jobs, oldest first, in one page (a token holds at most its
    /// running jobs plus 50 ended ones).
    async fn task_list(&self, era: Era) -> Result<RpcBody, Stop> {
        let request = FrontendRequest::Jobs {
            token: self.caller.token,
        };
        let jobs = match self.executor.request(request).await {
            Ok(FrontendResponse::Jobs(jobs)) => jobs,
            Ok(FrontendResponse::Unauthenticated) => return Err(Stop::Unauthenticated),
            Ok(_) => return Err(Stop::BadAnswer),
            Err(_) => return Err(Stop::Unavailable),
        };
        let now = tasks::now_rfc3339();
        let list: Vec<Value> = jobs
            .iter()
            .map(|j| tasks::task(&j.job_id, j, &now))
            .collect();
        Ok(RpcBody::other(json!({ "tasks": list }), era))
    }

    /// `tasks/result`: waits for the job to end, then answers what the `bash_execute` call would
    /// have: its exit and the head of both streams, as a tool result tied to the task.
    async fn task_result(
        &self,
        task_id: &str,
        mut job: JobInfo,
        era: Era,
    ) -> Result<RpcBody, Stop> {
        while job.running {
            // Offsets past any output: the wait ends only with the job (or after 60 s).
            let wait = ToolCall::JobOutput(JobOutputArgs {
                job_id: job.job_id.clone(),
                stdout_offset: Some(i64::MAX),
                stderr_offset: Some(i64::MAX),
                max_bytes: Some(1),
                wait_seconds: Some(60),
            });
            if let Err(f) = self.exec(wait).await? {
                return Ok(RpcBody::error(codes::INTERNAL_ERROR, f.message));
            }
            job = match self
                .exec(ToolCall::JobStatus(JobRef {
                    job_id: job.job_id.clone(),
                }))
                .await?
            {
                Ok(ToolOutput::Job(job)) => job,
                Ok(_) => return Err(Stop::BadAnswer),
                Err(f) => return Ok(RpcBody::error(codes::INVALID_PARAMS, f.message)),
            };
        }
        Ok(match self.final_value(task_id, job).await? {
            Ok(value) => RpcBody::other(value, era),
            Err(message) => RpcBody::error(codes::INTERNAL_ERROR, message),
        })
    }

    /// The `CallToolResult` of an ended task's job, as JSON tied to the task: what the call
    /// would have returned (a `Cancelled` failure for a cancelled task). `Err`: why not.
    async fn final_value(
        &self,
        task_id: &str,
        job: JobInfo,
    ) -> Result<Result<Value, String>, Stop> {
        let head = ToolCall::JobOutput(JobOutputArgs {
            job_id: job.job_id.clone(),
            stdout_offset: Some(0),
            stderr_offset: Some(0),
            max_bytes: Some(i64::try_from(job.output_cap).unwrap_or(i64::MAX)),
            wait_seconds: None,
        });
        let chunk = match self.exec(head).await? {
            Ok(ToolOutput::JobOutput(chunk)) => chunk,
            Ok(_) => return Err(Stop::BadAnswer),
            Err(f) => return Ok(Err(f.message)),
        };
        let outcome = if job.killed {
            Err(ToolFailure::new(
                ErrorCode::Cancelled,
                "The task was cancelled",
            ))
        } else {
            Ok(ToolOutput::Bash(BashOutput {
                stdout: CapturedStream {
                    head: chunk.stdout,
                    total_bytes: job.stdout_bytes,
                },
                stderr: CapturedStream {
                    head: chunk.stderr,
                    total_bytes: job.stderr_bytes,
                },
                exit_code: job.exit_code.unwrap_or(-1),
                timed_out: job.timed_out,
                timeout_secs: job.timeout_secs,
                limit_hit: job.limit_hit,
            }))
        };
        let result = CallToolResult::from_outcome(outcome, &self.caller.tickets);
        let mut value = serde_json::to_value(&result).map_err(|_| Stop::BadAnswer)?;
        value["_meta"] = json!({ (tasks::RELATED_TASK): { "taskId": task_id } });
        Ok(Ok(value))
    }

    /// 2026-07-28 `tasks/get`, `tasks/update`, `tasks/cancel` (extension
    /// `io.modelcontextprotocol/tasks`).
    async fn modern_task_op(
        &self,
        method: &str,
        params: Option<&Value>,
        era: Era,
    ) -> Result<RpcBody, Stop> {
        let Some(task_id) = tasks::task_id_param(params) else {
            return Ok(RpcBody::error(
                codes::INVALID_PARAMS,
                "Invalid params: 'taskId' must be a string",
            ));
        };
        let job = match self
            .exec(ToolCall::JobStatus(JobRef {
                job_id: task_id.clone(),
            }))
            .await?
        {
            Ok(ToolOutput::Job(job)) => job,
            Ok(_) => return Err(Stop::BadAnswer),
            Err(_) => {
                return Ok(RpcBody::error(
                    codes::INVALID_PARAMS,
                    format!("Invalid params: no task {task_id}"),
                ))
            }
        };
        match method {
            "tasks/get" => {
                let mut task = tasks::modern_task(&task_id, &job, &tasks::now_rfc3339());
                if tasks::status(&job) == "completed" {
                    match self.final_value(&task_id, job).await? {
                        Ok(result) => task["result"] = result,
                        Err(message) => return Ok(RpcBody::error(codes::INTERNAL_ERROR, message)),
                    }
                }
                Ok(RpcBody::other(task, era))
            }
            "tasks/cancel" => {
                if job.running {
                    let kill = ToolCall::JobKill(JobKillArgs {
                        job_id: task_id,
                        signal: None,
                    });
                    if let Err(f) = self.exec(kill).await? {
                        return Ok(RpcBody::error(codes::INTERNAL_ERROR, f.message));
                    }
                }
                Ok(RpcBody::other(json!({}), era))
            }
            // No task of ours ever asks for input: every response is for no outstanding key,
            // and is ignored.
            _ => Ok(RpcBody::other(json!({}), era)),
        }
    }

    /// A 2026-07-28 `bash_execute` from a client with the tasks extension: the call is handed
    /// off after `handoff_after` (default [`tasks::MODERN_HANDOFF_SECS`]); if it was, the answer
    /// is a `CreateTaskResult` for its job instead of the job's output so far.
    async fn modern_task_call(
        &self,
        id: &Value,
        mut args: BashExecute,
        era: Era,
    ) -> Result<RpcBody, Stop> {
        if args.handoff_after.is_none() {
            args.handoff_after = Some(tasks::MODERN_HANDOFF_SECS);
        }
        let call = ToolCall::BashExecute(args);
        let body = call_tool(self.executor, self.calls, self.caller, id, call, None, era).await?;
        let Some(job_id) = body.handed_off_job() else {
            return Ok(body);
        };
        match self.exec(ToolCall::JobStatus(JobRef { job_id })).await? {
            Ok(ToolOutput::Job(job)) => Ok(RpcBody::task(
                tasks::modern_task(&job.job_id, &job, &tasks::now_rfc3339()),
                era,
            )),
            Ok(_) => Err(Stop::BadAnswer),
            Err(f) => Ok(RpcBody::tool(CallToolResult::failure(&f), era)),
        }
    }

    /// Tells the executor about a call refused here, for its audit log. Only a token the
    /// executor no longer accepts stops the answer; an executor that went away does not.
    async fn report_refusal(&self, name: &str, failure: &ToolFailure) -> Result<(), Stop> {
        let tool: String = name.chars().take(256).collect();
        let request = FrontendRequest::Refused {
            token: self.caller.token,
            origin: self.caller.origin.clone(),
            tool,
            failure: failure.clone(),
        }
        .with_trace(crate::otel::current_wire());
        match self.executor.request(request).await {
            Ok(FrontendResponse::Unauthenticated) => Err(Stop::Unauthenticated),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!("could not report a refused call to the executor: {e}");
                Ok(())
            }
        }
    }
}

/// The server's capabilities: tools only, and the list never changes while it runs (a
/// stateless server could not tell anyone anyway).
fn capabilities() -> Value {
    json!({ "tools": { "listChanged": false } })
}

fn initialize_result(params: Option<&Value>, offer: HostOffer) -> Value {
    let requested = params
        .and_then(Value::as_object)
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str);
    let version = negotiate_version(requested);
    let mut capabilities = capabilities();
    if version == Revision::V2025_11_25.as_str() {
        capabilities["tasks"] = tasks::capability();
    }
    json!({
        "protocolVersion": version,
        "capabilities": capabilities,
        "serverInfo": SERVER_INFO,
        "instructions": catalogue::instructions(offer),
    })
}

/// The `server/discover` result (2026-07-28), without the fields every result gets. Nothing
/// in it depends on the caller (the instructions depend on the host), so shared caches may
/// keep it.
fn discover_result(offer: HostOffer) -> Value {
    json!({
        "supportedVersions": revisions::supported_names(),
        "capabilities": {
            "tools": { "listChanged": false },
            "extensions": { (tasks::EXTENSION): {} },
        },
        "instructions": catalogue::instructions(offer),
        "ttlMs": DISCOVER_TTL_MS,
        "cacheScope": "public",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revisions::HeaderField;
    use mymcp_protocol::{Identity, ReadFileOutput, ToolOutput};
    use std::sync::Mutex;

    #[test]
    fn a_tool_result_written_straight_into_the_response_is_what_serde_json_writes() {
        let tickets = crate::tickets::Tickets::with_key([5; 32], "http://h:1/");
        let content = "   1\tquote \" backslash \\ nul \u{0} ü 🦀\n   2\t\u{1f}end".repeat(50);
        for era in [
            Era::Legacy(Revision::V2025_03_26),
            Era::Modern(Revision::V2026_07_28),
        ] {
            for id in [json!(7), json!("id \u{1} with a control character")] {
                let response = || {
                    let output = ToolOutput::ReadFile(ReadFileOutput {
                        content: content.clone(),
                        total_lines: 100,
                        truncated: false,
                        total_lines_exact: true,
                    });
                    RpcResponse::new(
                        id.clone(),
                        RpcBody::tool(CallToolResult::from_outcome(Ok(output), &tickets), era),
                    )
                };
                let expected = serialize(&response());
                assert_eq!(response().into_json(), expected);
                let parsed: Value = serde_json::from_str(&expected).unwrap();
                let text = parsed["result"]["content"][0]["text"].as_str().unwrap();
                let tool: Value = serde_json::from_str(text).unwrap();
                assert_eq!(tool["content"], content.as_str());
                assert_eq!(parsed["result"]["structuredContent"], tool);
            }
        }
    }

    const RW: TokenDigest = TokenDigest([1; 32]);
    const RO: TokenDigest = TokenDigest([2; 32]);
    const ADMIN: TokenDigest = TokenDigest([3; 32]);
    const BAD: TokenDigest = TokenDigest([9; 32]);

    /// An in-memory executor that records what it was asked.
    #[derive(Default)]
    struct FakeExecutor {
        seen: Mutex<Vec<FrontendRequest>>,
        down: bool,
        /// The host has no overview (by default it has one).
        no_overview: bool,
    }

    impl FakeExecutor {
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

        fn seen(&self) -> Vec<FrontendRequest> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl ExecutorClient for FakeExecutor {
        /// Reports progress twice (when asked for it) before answering.
        async fn request_watched(
            &self,
            request: FrontendRequest,
            watch: Watch,
        ) -> Result<FrontendResponse, ForwardError> {
            if let Some(progress) = watch.progress {
                for n in 1..=2u64 {
                    let _ = progress
                        .send(Progress {
                            elapsed_ms: n * 2000,
                            stdout_bytes: n * 10,
                            stderr_bytes: 0,
                        })
                        .await;
                }
            }
            self.request(request).await
        }

        async fn request(
            &self,
            request: FrontendRequest,
        ) -> Result<FrontendResponse, ForwardError> {
            self.seen.lock().unwrap().push(request.clone());
            if self.down {
                return Err(ForwardError::Unavailable);
            }
            Ok(match request {
                FrontendRequest::Identify { token } => match Self::identity(&token) {
                    Some(i) => FrontendResponse::Identity(i),
                    None => FrontendResponse::Unauthenticated,
                },
                FrontendRequest::Call { token, call, .. } => match Self::identity(&token) {
                    Some(i) if i.role.is_client() => {
                        if !i.role.allows(call.name().required_role()) {
                            FrontendResponse::Tool(Err(ToolFailure::new(
                                ErrorCode::PermissionDenied,
                                "denied by executor",
                            )))
                        } else {
                            FrontendResponse::Tool(Ok(ToolOutput::ReadFile(ReadFileOutput {
                                content: "   1\thello".into(),
                                total_lines: 1,
                                total_lines_exact: true,
                                truncated: false,
                            })))
                        }
                    }
                    _ => FrontendResponse::Unauthenticated,
                },
                FrontendRequest::Admin { .. } | FrontendRequest::Metrics { .. } => {
                    FrontendResponse::Unauthenticated
                }
                FrontendRequest::Refused { token, failure, .. } => match Self::identity(&token) {
                    Some(i) if i.role.is_client() => FrontendResponse::Tool(Err(failure)),
                    _ => FrontendResponse::Unauthenticated,
                },
                FrontendRequest::Offer { token } => match Self::identity(&token) {
                    Some(i) if i.role.is_client() => FrontendResponse::Offer(HostOffer {
                        server_overview: !self.no_overview,
                    }),
                    _ => FrontendResponse::Unauthenticated,
                },
                other => panic!("the MCP layer never sends {other:?}"),
            })
        }
    }

    fn caller(token: TokenDigest) -> Caller {
        Caller {
            session: None,
            tickets: Arc::new(Tickets::with_key([3; 32], "")),
            token,
            origin: CallOrigin {
                peer: "127.0.0.1".into(),
                request_id: "req-1".into(),
            },
        }
    }

    async fn run(exec: &FakeExecutor, token: TokenDigest, body: &str) -> Outcome {
        run_with(exec, token, body, StreamPolicy::default()).await
    }

    async fn run_with(
        exec: &FakeExecutor,
        token: TokenDigest,
        body: &str,
        policy: StreamPolicy,
    ) -> Outcome {
        run_full(exec, token, body, policy, &McpHeaders::default()).await
    }

    async fn run_full(
        exec: &FakeExecutor,
        token: TokenDigest,
        body: &str,
        policy: StreamPolicy,
        headers: &McpHeaders,
    ) -> Outcome {
        let calls = Arc::new(CallRegistry::default());
        let post = Post {
            body: body.as_bytes(),
            headers,
            policy,
            identified: None,
        };
        handle(exec, &calls, &caller(token), post).await
    }

    fn reply(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Reply(s) | Outcome::Initialized(s) => serde_json::from_str(&s).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn bad_request(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Error(ErrorStatus::BadRequest, s) => serde_json::from_str(&s).unwrap(),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    fn tool_text(v: &Value) -> &str {
        v["result"]["content"][0]["text"].as_str().unwrap()
    }

    #[test]
    fn version_negotiation_echoes_handshake_versions_only() {
        for v in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
            assert_eq!(negotiate_version(Some(v)), v);
        }
        // 2026-07-28 has no initialize: a client asking for it there gets the newest that has.
        assert_eq!(negotiate_version(Some("2026-07-28")), "2025-11-25");
        assert_eq!(negotiate_version(Some("2099-01-01")), "2025-11-25");
        assert_eq!(negotiate_version(None), "2025-11-25");
    }

    #[test]
    fn nesting_limit_is_exactly_64_levels() {
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(check_structure(ok.as_bytes()), Ok(()));
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(check_structure(deep.as_bytes()), Err(Malformed::TooDeep));
        // Unclosed garbage is cut off early too, without reading the rest.
        assert_eq!(
            check_structure("{\"a\":".repeat(100_000).as_bytes()),
            Err(Malformed::TooDeep)
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let s = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(200), "{".repeat(200));
        assert_eq!(check_structure(s.as_bytes()), Ok(()));
        assert!(serde_json::from_str::<Value>(&s).is_ok());
    }

    #[test]
    fn wide_bodies_are_refused_before_parsing() {
        let wide = format!("[{}]", vec!["{}"; MAX_JSON_VALUES + 1].join(","));
        assert_eq!(
            check_structure(wide.as_bytes()),
            Err(Malformed::TooManyValues)
        );
        let fine = format!("[{}]", vec!["1"; 1000].join(","));
        assert_eq!(check_structure(fine.as_bytes()), Ok(()));
    }

    #[tokio::test]
    async fn a_deep_body_from_a_good_token_is_a_400_parse_error() {
        let exec = FakeExecutor::default();
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        let v = bad_request(run(&exec, RW, &deep).await);
        assert_eq!(v["error"]["code"], codes::PARSE_ERROR);
        assert_eq!(v["id"], Value::Null);
    }

    #[tokio::test]
    async fn well_formed_tools_call_is_one_round_trip() {
        let exec = FakeExecutor::default();
        let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"read_file","arguments":{"file_path":"/etc/hostname"}}}"#;
        let v = reply(run(&exec, RO, body).await);
        assert_eq!(v["id"], 7);
        assert_eq!(v["result"]["isError"], false);
        assert!(tool_text(&v).starts_with(r#"{"content":"   1\thello""#));
        let seen = exec.seen();
        assert_eq!(seen.len(), 1);
        assert!(matches!(
            &seen[0],
            FrontendRequest::Call { origin, .. } if origin.request_id == "req-1"
        ));
    }

    #[tokio::test]
    async fn a_caller_identified_before_the_body_is_not_identified_again() {
        let exec = FakeExecutor::default();
        let headers = McpHeaders::default();
        let calls = Arc::new(CallRegistry::default());
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(
            authenticate(&exec, BAD).await,
            Err(Outcome::Unauthenticated)
        );
        assert_eq!(
            authenticate(&exec, ADMIN).await,
            Err(Outcome::Unauthenticated)
        );
        let role = authenticate(&exec, RO).await.unwrap();
        let post = Post {
            body: list.as_bytes(),
            headers: &headers,
            policy: StreamPolicy::default(),
            identified: Some(role),
        };
        let v = reply(handle(&exec, &calls, &caller(RO), post).await);
        assert!(v["result"]["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty()));
        // The three authenticate calls, and for the list only what the host offers.
        assert_eq!(exec.seen().len(), 4);
        assert!(matches!(exec.seen()[3], FrontendRequest::Offer { token } if token == RO));
    }

    #[tokio::test]
    async fn bad_token_on_tools_call_is_unauthenticated() {
        let exec = FakeExecutor::default();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"read_file","arguments":{"file_path":"/x"}}}"#;
        assert_eq!(run(&exec, BAD, body).await, Outcome::Unauthenticated);
    }

    #[tokio::test]
    async fn auth_precedes_parse_errors() {
        let exec = FakeExecutor::default();
        assert_eq!(run(&exec, BAD, "{nope").await, Outcome::Unauthenticated);
        assert!(matches!(exec.seen()[0], FrontendRequest::Identify { .. }));
        let v = bad_request(run(&exec, RW, "{nope").await);
        assert_eq!(v["error"]["code"], -32700);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Parse error: "));
        assert_eq!(v["id"], Value::Null);
    }

    #[tokio::test]
    async fn admin_tokens_are_not_mcp_tokens() {
        let exec = FakeExecutor::default();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(run(&exec, ADMIN, body).await, Outcome::Unauthenticated);
    }

    #[tokio::test]
    async fn unknown_tool_identifies_first_then_fails_as_a_result() {
        let exec = FakeExecutor::default();
        let body = r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"nope"}}"#;
        assert_eq!(run(&exec, BAD, body).await, Outcome::Unauthenticated);
        let v = reply(run(&exec, RO, body).await);
        assert_eq!(v["id"], "x");
        assert_eq!(v["result"]["isError"], true);
        assert_eq!(
            tool_text(&v),
            r#"{"success":false,"error":"UnknownTool","message":"Unknown tool: nope"}"#
        );
    }

    #[tokio::test]
    async fn bad_arguments_from_a_role_without_access_are_permission_denied() {
        let exec = FakeExecutor::default();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"bash_execute","arguments":{"timeout":"x"}}}"#;
        let v = reply(run(&exec, RO, body).await);
        assert_eq!(
            tool_text(&v),
            r#"{"success":false,"error":"PermissionDenied","message":"Permission denied: tool 'bash_execute' requires rw role"}"#
        );
        let v = reply(run(&exec, RW, body).await);
        assert_eq!(
            tool_text(&v),
            r#"{"success":false,"error":"InvalidArguments","message":"Input validation error: 'command' is a required property"}"#
        );
        assert_eq!(v["result"]["isError"], true);
        assert_eq!(
            v["result"]["structuredContent"],
            serde_json::from_str::<Value>(tool_text(&v)).unwrap()
        );
        // Neither reached the executor as a Call; both were reported for its audit log.
        assert!(exec.seen().iter().all(|r| matches!(
            r,
            FrontendRequest::Identify { .. } | FrontendRequest::Refused { .. }
        )));
        let refused: Vec<ErrorCode> = exec
            .seen()
            .iter()
            .filter_map(|r| match r {
                FrontendRequest::Refused { failure, .. } => Some(failure.code),
                _ => None,
            })
            .collect();
        assert_eq!(
            refused,
            [ErrorCode::PermissionDenied, ErrorCode::InvalidArguments]
        );
    }

    #[tokio::test]
    async fn ro_calling_bash_with_valid_arguments_is_decided_by_the_executor() {
        let exec = FakeExecutor::default();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"bash_execute","arguments":{"command":"id"}}}"#;
        let v = reply(run(&exec, RO, body).await);
        assert!(tool_text(&v).contains("denied by executor"));
        assert!(matches!(exec.seen()[..], [FrontendRequest::Call { .. }]));
    }

    #[tokio::test]
    async fn tools_list_is_filtered_by_role() {
        let exec = FakeExecutor::default();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
        let names = |v: Value| -> Vec<String> {
            v["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(reply(run(&exec, RO, body).await)),
            [
                "read_file",
                "glob",
                "grep",
                "prepare_download",
                "server_overview"
            ]
        );
        assert_eq!(
            names(reply(run(&exec, RW, body).await)),
            [
                "bash_execute",
                "read_file",
                "write_file",
                "edit_file",
                "glob",
                "grep",
                "job_status",
                "job_output",
                "job_kill",
                "prepare_upload",
                "prepare_download",
                "server_overview",
                "terminal_open",
                "terminal_send",
                "terminal_read",
                "terminal_resize",
                "terminal_list",
                "terminal_close"
            ]
        );
    }

    #[tokio::test]
    async fn initialize_negotiates_and_describes_the_server() {
        let exec = FakeExecutor::default();
        let body = r#"{"jsonrpc":"2.0","id":0,"method":"initialize",
            "params":{"protocolVersion":"2025-03-26","capabilities":{},
                      "clientInfo":{"name":"t","version":"1"}}}"#;
        let v = reply(run(&exec, RO, body).await);
        assert_eq!(v["id"], 0);
        assert_eq!(v["result"]["protocolVersion"], "2025-03-26");
        assert_eq!(
            v["result"]["capabilities"],
            json!({"tools":{"listChanged":false}})
        );
        assert_eq!(v["result"]["serverInfo"]["name"], "mymcp");
        let body = r#"{"jsonrpc":"2.0","id":0,"method":"initialize",
            "params":{"protocolVersion":"1999-01-01"}}"#;
        let v = reply(run(&exec, RO, body).await);
        assert_eq!(v["result"]["protocolVersion"], "2025-11-25");
    }

    #[tokio::test]
    async fn ping_unknown_methods_and_notifications() {
        let exec = FakeExecutor::default();
        let v = reply(run(&exec, RO, r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#).await);
        assert_eq!(v, json!({"jsonrpc":"2.0","id":1.5,"result":{}}));
        let v = reply(
            run(
                &exec,
                RO,
                r#"{"jsonrpc":"2.0","id":2,"method":"resources/list"}"#,
            )
            .await,
        );
        assert_eq!(
            v["error"],
            json!({"code":-32601,"message":"Method not found"})
        );
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert_eq!(run(&exec, RO, note).await, Outcome::Accepted);
        // Notifications are authenticated too.
        assert_eq!(run(&exec, BAD, note).await, Outcome::Unauthenticated);
    }

    #[tokio::test]
    async fn batches_answer_each_request_in_order() {
        let exec = FakeExecutor::default();
        let body = r#"[
            {"jsonrpc":"2.0","id":"a","method":"ping"},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":3,"method":"tools/call",
             "params":{"name":"read_file","arguments":{"file_path":"/x"}}},
            {"foo":1},
            {"jsonrpc":"2.0","id":4,"result":{}}
        ]"#;
        let v = reply(run(&exec, RW, body).await);
        let items = v.as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["id"], "a");
        assert_eq!(items[1]["id"], 3);
        assert_eq!(items[1]["result"]["isError"], false);
        assert_eq!(items[2]["error"]["code"], -32600);
        assert_eq!(items[2]["id"], Value::Null);

        let notes = r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
        assert_eq!(run(&exec, RW, notes).await, Outcome::Accepted);
    }

    #[tokio::test]
    async fn non_json_rpc_values_are_invalid_requests() {
        let exec = FakeExecutor::default();
        for body in [
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            "[]",
            "42",
        ] {
            let v = bad_request(run(&exec, RO, body).await);
            assert_eq!(v["error"]["code"], -32600, "{body}");
            assert_eq!(v["error"]["message"], "Invalid Request", "{body}");
        }
        // The id is echoed when it is usable.
        let v = bad_request(run(&exec, RO, r#"{"id":"q","method":"ping"}"#).await);
        assert_eq!(v["id"], "q");
    }

    #[tokio::test]
    async fn tools_call_without_a_name_is_invalid_params() {
        let exec = FakeExecutor::default();
        let v = reply(
            run(
                &exec,
                RO,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            )
            .await,
        );
        assert_eq!(v["error"]["code"], -32602);
        let v = reply(
            run(
                &exec,
                RO,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            )
            .await,
        );
        assert_eq!(v["error"]["code"], -32602);
    }

    #[tokio::test]
    async fn executor_down_is_unavailable() {
        let exec = FakeExecutor {
            down: true,
            ..FakeExecutor::default()
        };
        assert_eq!(
            run(&exec, RO, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await,
            Outcome::Unavailable
        );
    }

    #[tokio::test]
    async fn string_ids_and_big_integer_ids_are_echoed_unchanged() {
        let exec = FakeExecutor::default();
        for id in [r#""abc-1""#, "18446744073709551615", "-3", "0.25"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let Outcome::Reply(s) = run(&exec, RO, &body).await else {
                panic!("no reply")
            };
            assert!(s.contains(&format!(r#""id":{id}"#)), "{s}");
        }
    }

    const SSE: StreamPolicy = StreamPolicy {
        sse: true,
        sse_only: false,
    };
    const SSE_ONLY: StreamPolicy = StreamPolicy {
        sse: true,
        sse_only: true,
    };

    #[tokio::test]
    async fn initialize_alone_starts_a_session_but_not_in_a_batch() {
        let exec = FakeExecutor::default();
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#;
        assert!(matches!(
            run(&exec, RO, init).await,
            Outcome::Initialized(_)
        ));
        let batch = format!("[{init}]");
        assert!(matches!(run(&exec, RO, &batch).await, Outcome::Reply(_)));
    }

    #[tokio::test]
    async fn calls_with_a_progress_token_stream_when_sse_is_accepted() {
        let exec = FakeExecutor::default();
        let body = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"read_file",
            "arguments":{"file_path":"/x"},"_meta":{"progressToken":"p-1"}}}"#;
        // JSON only: answered at once, progress token or not.
        assert!(matches!(run(&exec, RO, body).await, Outcome::Reply(_)));
        let Outcome::Stream(streamed) = run_with(&exec, RO, body, SSE).await else {
            panic!("expected a stream")
        };
        assert_eq!(streamed.progress_token, Some(json!("p-1")));
        // The token was checked before the stream was promised.
        assert!(matches!(
            exec.seen().last(),
            Some(FrontendRequest::Identify { .. })
        ));
        assert_eq!(
            run_with(&exec, BAD, body, SSE).await,
            Outcome::Unauthenticated
        );

        // Without a token: a stream only for clients that take nothing but SSE.
        let plain = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"read_file",
            "arguments":{"file_path":"/x"}}}"#;
        assert!(matches!(
            run_with(&exec, RO, plain, SSE).await,
            Outcome::Reply(_)
        ));
        assert!(matches!(
            run_with(&exec, RO, plain, SSE_ONLY).await,
            Outcome::Stream(StreamedCall {
                progress_token: None,
                ..
            })
        ));
        // A boolean is no progress token.
        let boolean = body.replace(r#""p-1""#, "true");
        assert!(matches!(
            run_with(&exec, RO, &boolean, SSE).await,
            Outcome::Reply(_)
        ));
    }

    #[tokio::test]
    async fn a_streamed_call_sends_progress_then_the_result() {
        let exec = FakeExecutor::default();
        let calls = Arc::new(CallRegistry::default());
        let streamed = StreamedCall {
            id: json!(9),
            call: ToolCall::ReadFile(mymcp_protocol::ReadFile {
                file_path: "/x".into(),
                offset: None,
                limit: None,
            }),
            progress_token: Some(json!(42)),
            era: Era::Legacy(Revision::V2025_03_26),
        };
        let (tx, mut rx) = mpsc::channel(8);
        run_streamed(&exec, &calls, &caller(RO), streamed, tx).await;
        let mut messages = Vec::new();
        while let Some(m) = rx.recv().await {
            messages.push(serde_json::from_str::<Value>(&m).unwrap());
        }
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0]["method"], "notifications/progress");
        assert_eq!(messages[0]["params"]["progressToken"], 42);
        assert_eq!(messages[0]["params"]["progress"], 2.0);
        assert_eq!(messages[1]["params"]["progress"], 4.0);
        assert!(messages[1]["params"]["message"]
            .as_str()
            .unwrap()
            .contains("20 bytes on stdout"));
        assert_eq!(messages[2]["id"], 9);
        assert_eq!(messages[2]["result"]["isError"], false);
        assert!(calls.is_empty(), "the call is unregistered once it ended");
    }

    #[tokio::test]
    async fn cancelled_notifications_reach_the_running_call_of_the_same_token() {
        let exec = FakeExecutor::default();
        let calls = Arc::new(CallRegistry::default());
        let (_r, mut cancel) = calls.register(CallKey::new(RW, None, &json!(3)));
        let note = |id: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"x"}}}}"#
            )
        };
        let send = |token, body: String| {
            let (calls, exec) = (calls.clone(), &exec);
            async move {
                let headers = McpHeaders::default();
                let post = Post {
                    body: body.as_bytes(),
                    headers: &headers,
                    policy: StreamPolicy::default(),
                    identified: None,
                };
                handle(exec, &calls, &caller(token), post).await
            }
        };
        // Another token, another id, a string id: nothing happens.
        assert_eq!(send(RO, note("3")).await, Outcome::Accepted);
        assert_eq!(send(RW, note("4")).await, Outcome::Accepted);
        assert_eq!(send(RW, note(r#""3""#)).await, Outcome::Accepted);
        assert!(cancel.try_recv().is_err());
        // A bad token is refused before anything is cancelled.
        assert_eq!(send(BAD, note("3")).await, Outcome::Unauthenticated);
        assert!(cancel.try_recv().is_err());
        assert_eq!(send(RW, note("3")).await, Outcome::Accepted);
        assert!(cancel.try_recv().is_ok());
    }

    const MODERN: &str = "2026-07-28";

    fn modern_headers(method: &str, name: Option<&str>) -> McpHeaders {
        McpHeaders {
            protocol_version: HeaderField::Value(MODERN.into()),
            method: HeaderField::Value(method.into()),
            name: name.map_or(HeaderField::Absent, |n| HeaderField::Value(n.into())),
        }
    }

    /// A 2026-07-28 request body.
    fn modern_body(id: Value, method: &str, mut params: Value) -> String {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        });
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
    }

    async fn modern(
        exec: &FakeExecutor,
        token: TokenDigest,
        method: &str,
        params: Value,
    ) -> Outcome {
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let headers = modern_headers(method, name.as_deref());
        let body = modern_body(json!(11), method, params);
        run_full(exec, token, &body, StreamPolicy::default(), &headers).await
    }

    fn error(outcome: Outcome, status: ErrorStatus) -> Value {
        match outcome {
            Outcome::Error(s, json) if s == status => serde_json::from_str(&json).unwrap(),
            other => panic!("expected {status:?}, got {other:?}"),
        }
    }

    fn assert_stamped(v: &Value) {
        assert_eq!(v["result"]["resultType"], "complete", "{v}");
        assert_eq!(
            v["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "mymcp"
        );
    }

    #[tokio::test]
    async fn discover_describes_every_revision_and_the_server() {
        let exec = FakeExecutor::default();
        let v = reply(modern(&exec, RO, "server/discover", json!({})).await);
        assert_eq!(v["id"], 11);
        assert_stamped(&v);
        let r = &v["result"];
        assert_eq!(
            r["supportedVersions"],
            json!([
                "2024-11-05",
                "2025-03-26",
                "2025-06-18",
                "2025-11-25",
                "2026-07-28"
            ])
        );
        assert_eq!(
            r["capabilities"],
            json!({
                "tools": {"listChanged": false},
                "extensions": {"io.modelcontextprotocol/tasks": {}}
            })
        );
        assert!(r["instructions"].as_str().unwrap().contains("absolute"));
        assert_eq!(r["cacheScope"], "public");
        assert!(r["ttlMs"].as_u64().is_some());
    }

    #[tokio::test]
    async fn modern_tools_list_has_caching_hints_and_a_fixed_order() {
        let exec = FakeExecutor::default();
        let first = reply(modern(&exec, RW, "tools/list", json!({})).await);
        assert_stamped(&first);
        assert_eq!(first["result"]["cacheScope"], "private");
        assert_eq!(first["result"]["ttlMs"], TOOLS_LIST_TTL_MS);
        let again = reply(modern(&exec, RW, "tools/list", json!({})).await);
        assert_eq!(first, again);
        // Every tool has a title, an output schema and annotations.
        for tool in first["result"]["tools"].as_array().unwrap() {
            assert!(tool["title"].is_string(), "{tool}");
            assert_eq!(tool["outputSchema"]["type"], "object", "{tool}");
            assert!(tool["annotations"]["readOnlyHint"].is_boolean(), "{tool}");
        }
        // The legacy answer has none of the 2026-07-28 fields.
        let legacy = reply(
            run(
                &exec,
                RW,
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            )
            .await,
        );
        let keys: Vec<&String> = legacy["result"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["tools"]);
        assert_eq!(legacy["result"]["tools"], first["result"]["tools"]);
    }

    #[tokio::test]
    async fn modern_tools_call_is_stamped_and_structured() {
        let exec = FakeExecutor::default();
        let v = reply(
            modern(
                &exec,
                RO,
                "tools/call",
                json!({"name": "read_file", "arguments": {"file_path": "/x"}}),
            )
            .await,
        );
        assert_stamped(&v);
        assert_eq!(v["result"]["isError"], false);
        assert_eq!(v["result"]["structuredContent"]["total_lines"], 1);
        assert!(matches!(exec.seen()[..], [FrontendRequest::Call { .. }]));
    }

    #[tokio::test]
    async fn modern_unknown_tools_are_protocol_errors_but_bad_arguments_are_results() {
        let exec = FakeExecutor::default();
        let v = error(
            modern(&exec, RO, "tools/call", json!({"name": "nope"})).await,
            ErrorStatus::BadRequest,
        );
        assert_eq!(v["id"], 11);
        assert_eq!(v["error"]["code"], codes::INVALID_PARAMS);
        assert_eq!(v["error"]["message"], "Unknown tool: nope");
        let v = reply(
            modern(
                &exec,
                RO,
                "tools/call",
                json!({"name": "read_file", "arguments": {"file_path": 3}}),
            )
            .await,
        );
        assert_stamped(&v);
        assert_eq!(v["result"]["isError"], true);
        assert!(tool_text(&v).contains("'file_path' must be a string"));
        assert_eq!(
            v["result"]["structuredContent"]["error"],
            "InvalidArguments"
        );
    }

    #[tokio::test]
    async fn modern_removed_and_unknown_methods_are_404s() {
        let exec = FakeExecutor::default();
        for method in [
            "initialize",
            "ping",
            "logging/setLevel",
            "resources/list",
            "resources/subscribe",
            "prompts/list",
            "subscriptions/listen",
            "unknown/method",
        ] {
            let v = error(
                modern(&exec, RO, method, json!({})).await,
                ErrorStatus::NotFound,
            );
            assert_eq!(v["id"], 11, "{method}");
            assert_eq!(v["error"]["code"], codes::METHOD_NOT_FOUND, "{method}");
        }
        // Legacy: an unknown method is an error in a 200, a server/discover too.
        let v = reply(
            run(
                &exec,
                RO,
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#,
            )
            .await,
        );
        assert_eq!(v["error"]["code"], codes::METHOD_NOT_FOUND);
        let headers = McpHeaders {
            protocol_version: HeaderField::Value("2025-11-25".into()),
            ..McpHeaders::default()
        };
        let v = reply(
            run_full(
                &exec,
                RO,
                r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#,
                StreamPolicy::default(),
                &headers,
            )
            .await,
        );
        assert_eq!(v["error"]["code"], codes::METHOD_NOT_FOUND);
    }

    #[tokio::test]
    async fn modern_bodies_are_one_request_or_notification() {
        let exec = FakeExecutor::default();
        let headers = modern_headers("tools/list", None);
        let request = modern_body(json!(1), "tools/list", json!({}));
        let send = |body: String| {
            let headers = headers.clone();
            let exec = &exec;
            async move { run_full(exec, RO, &body, StreamPolicy::default(), &headers).await }
        };
        let v = error(send(format!("[{request}]")).await, ErrorStatus::BadRequest);
        assert_eq!(v["error"]["code"], codes::INVALID_REQUEST);
        let v = error(
            send(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into()).await,
            ErrorStatus::BadRequest,
        );
        assert_eq!(v["error"]["code"], codes::INVALID_REQUEST);
        assert_eq!(
            send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into()).await,
            Outcome::Accepted
        );
        let v = error(send("{oops".into()).await, ErrorStatus::BadRequest);
        assert_eq!(v["error"]["code"], codes::PARSE_ERROR);
    }

    #[tokio::test]
    async fn header_rejections_keep_the_id_and_come_after_the_token_check() {
        let exec = FakeExecutor::default();
        let body = modern_body(json!("r-7"), "tools/list", json!({}));
        let wrong = modern_headers("prompts/list", None);
        assert_eq!(
            run_full(&exec, BAD, &body, StreamPolicy::default(), &wrong).await,
            Outcome::Unauthenticated
        );
        let v = error(
            run_full(&exec, RO, &body, StreamPolicy::default(), &wrong).await,
            ErrorStatus::BadRequest,
        );
        assert_eq!(v["id"], "r-7");
        assert_eq!(v["error"]["code"], revisions::codes::HEADER_MISMATCH);

        // A well-formed tools/call with a wrong Mcp-Name never reaches the executor as a call.
        let call = modern_body(
            json!(3),
            "tools/call",
            json!({"name": "read_file", "arguments": {"file_path": "/x"}}),
        );
        let v = error(
            run_full(
                &exec,
                RO,
                &call,
                StreamPolicy::default(),
                &modern_headers("tools/call", Some("glob")),
            )
            .await,
            ErrorStatus::BadRequest,
        );
        assert_eq!(v["error"]["code"], revisions::codes::HEADER_MISMATCH);
        assert!(exec
            .seen()
            .iter()
            .all(|r| matches!(r, FrontendRequest::Identify { .. })));
    }

    #[tokio::test]
    async fn unsupported_versions_are_400s_listing_the_supported_ones() {
        let exec = FakeExecutor::default();
        let headers = McpHeaders {
            protocol_version: HeaderField::Value("2099-01-01".into()),
            ..McpHeaders::default()
        };
        let v = error(
            run_full(
                &exec,
                RO,
                r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#,
                StreamPolicy::default(),
                &headers,
            )
            .await,
            ErrorStatus::BadRequest,
        );
        assert_eq!(v["id"], 5);
        assert_eq!(
            v["error"]["code"],
            revisions::codes::UNSUPPORTED_PROTOCOL_VERSION
        );
        assert_eq!(v["error"]["data"]["requested"], "2099-01-01");
        assert_eq!(v["error"]["data"]["supported"].as_array().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn batches_are_refused_by_revisions_that_dropped_them() {
        let exec = FakeExecutor::default();
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        for (version, allowed) in [
            ("2024-11-05", false),
            ("2025-03-26", true),
            ("2025-06-18", false),
            ("2025-11-25", false),
        ] {
            let headers = McpHeaders {
                protocol_version: HeaderField::Value(version.into()),
                ..McpHeaders::default()
            };
            let outcome = run_full(&exec, RO, batch, StreamPolicy::default(), &headers).await;
            if allowed {
                assert!(matches!(outcome, Outcome::Reply(_)), "{version}");
            } else {
                let v = error(outcome, ErrorStatus::BadRequest);
                assert_eq!(v["error"]["code"], codes::INVALID_REQUEST, "{version}");
            }
        }
    }

    #[tokio::test]
    async fn initialize_carries_instructions() {
        let exec = FakeExecutor::default();
        let v = reply(
            run(
                &exec,
                RO,
                r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#,
            )
            .await,
        );
        assert_eq!(
            v["result"]["instructions"],
            catalogue::INSTRUCTIONS_WITH_OVERVIEW
        );
        assert!(v["result"].get("resultType").is_none());
        // A host without an overview: not in the instructions, not in the list.
        let exec = FakeExecutor {
            no_overview: true,
            ..FakeExecutor::default()
        };
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#;
        let v = reply(run(&exec, RO, init).await);
        assert_eq!(v["result"]["instructions"], catalogue::INSTRUCTIONS);
        assert!(!catalogue::INSTRUCTIONS.contains("server_overview"));
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let v = reply(run(&exec, RW, list).await);
        let tools = v["result"]["tools"].as_array().unwrap();
        assert_eq!(tools.len(), ToolName::ALL.len() - 1);
        assert!(tools.iter().all(|t| t["name"] != "server_overview"));
        let v = reply(modern(&exec, RO, "server/discover", json!({})).await);
        assert_eq!(v["result"]["instructions"], catalogue::INSTRUCTIONS);
    }

    #[tokio::test]
    async fn a_modern_streamed_call_ends_with_a_stamped_result() {
        let exec = FakeExecutor::default();
        let body = modern_body(
            json!(4),
            "tools/call",
            json!({"name": "read_file", "arguments": {"file_path": "/x"}}),
        )
        .replace(r#""_meta":{"#, r#""_meta":{"progressToken":"p","#);
        let headers = modern_headers("tools/call", Some("read_file"));
        let Outcome::Stream(streamed) = run_full(&exec, RO, &body, SSE, &headers).await else {
            panic!("expected a stream")
        };
        assert_eq!(streamed.era, Era::Modern(Revision::V2026_07_28));
        let (tx, mut rx) = mpsc::channel(8);
        let calls = Arc::new(CallRegistry::default());
        run_streamed(&exec, &calls, &caller(RO), streamed, tx).await;
        let mut last = Value::Null;
        while let Some(m) = rx.recv().await {
            last = serde_json::from_str(&m).unwrap();
        }
        assert_eq!(last["id"], 4);
        assert_stamped(&last);
    }

    #[test]
    fn refusals_without_an_id_have_no_id_member() {
        let v: Value =
            serde_json::from_str(&error_response_without_id(codes::INVALID_REQUEST, "no")).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "no"}})
        );
    }
}
