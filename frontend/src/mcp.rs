//! The MCP layer: JSON-RPC 2.0 messages in, JSON-RPC responses out, independent of HTTP.
//!
//! The server is stateless: every POST body stands alone, `initialize` is optional, and
//! `tools/list`/`tools/call` work without it. A body is one JSON-RPC message or a batch
//! (a JSON array, allowed by protocol version 2025-03-26).
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
use crate::results::CallToolResult;
use crate::tickets::Tickets;
use mymcp_protocol::{
    CallOrigin, ErrorCode, FrontendRequest, FrontendResponse, Progress, Role, TokenDigest,
    ToolCall, ToolFailure, ToolName,
};
use serde::Serialize;
use serde_json::{json, Value};
use std::pin::pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// MCP protocol versions this server speaks, oldest first.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 4] =
    ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The version answered to clients asking for one we do not know.
pub const LATEST_PROTOCOL_VERSION: &str = "2025-11-25";

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

/// Whether `version` is an MCP protocol version this server speaks.
pub fn is_supported_version(version: &str) -> bool {
    SUPPORTED_PROTOCOL_VERSIONS.contains(&version)
}

/// The version to answer an `initialize` with: the client's if we speak it, else the latest.
pub fn negotiate_version(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| SUPPORTED_PROTOCOL_VERSIONS.into_iter().find(|v| *v == r))
        .unwrap_or(LATEST_PROTOCOL_VERSION)
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
    /// The body is not valid JSON-RPC; the string is the JSON-RPC error to send (HTTP 400).
    BadRequest(String),
    /// Only notifications or responses: nothing to answer (HTTP 202).
    Accepted,
    /// The executor does not know the token, or it may not use MCP (HTTP 401).
    Unauthenticated,
    /// No executor connection (HTTP 503).
    Unavailable,
    /// The executor answered with a response of the wrong kind (HTTP 502).
    BadGateway,
}

/// Why processing stopped before a JSON-RPC answer could be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Unauthenticated,
    Unavailable,
    BadAnswer,
}

impl From<Stop> for Outcome {
    fn from(stop: Stop) -> Outcome {
        match stop {
            Stop::Unauthenticated => Outcome::Unauthenticated,
            Stop::Unavailable => Outcome::Unavailable,
            Stop::BadAnswer => Outcome::BadGateway,
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
    Error { code: i64, message: String },
}

/// A `result`, kept typed so that its keys serialize in declaration order (a `Value` would
/// sort them).
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum RpcResult {
    Tool(CallToolResult),
    Tools { tools: Vec<catalogue::ToolEntry> },
    Other(Value),
}

impl RpcResponse {
    fn new(id: Value, body: RpcBody) -> Self {
        RpcResponse {
            jsonrpc: "2.0",
            id,
            body,
        }
    }

    fn error(id: Value, code: i64, message: impl Into<String>) -> Self {
        RpcResponse::new(
            id,
            RpcBody::Error {
                code,
                message: message.into(),
            },
        )
    }
}

impl RpcBody {
    fn tool(result: CallToolResult) -> Self {
        RpcBody::Result(RpcResult::Tool(result))
    }

    fn error(code: i64, message: impl Into<String>) -> Self {
        RpcBody::Error {
            code,
            message: message.into(),
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

/// Processes one POST body for `caller`, asking `executor` whatever it needs. `calls` holds
/// the running `tools/call`s (for `notifications/cancelled`); `policy` says whether a
/// `tools/call` may be answered as a stream.
pub async fn handle(
    executor: &impl ExecutorClient,
    calls: &Arc<CallRegistry>,
    caller: &Caller,
    body: &[u8],
    policy: StreamPolicy,
) -> Outcome {
    let parsed = parse(body);

    // The common case: one well-formed tools/call. The executor authenticates it, so it needs
    // no separate Identify — unless it is streamed, where the 401 must be decided before the
    // stream starts.
    if let Ok(Body::Single(Message::Request { id, method, params })) = &parsed {
        if method == "tools/call" {
            if let Some(call) = well_formed_call(params.as_ref()) {
                let progress_token = progress_token(params.as_ref());
                if policy.sse && (progress_token.is_some() || policy.sse_only) {
                    return match identify(executor, caller.token).await {
                        Ok(_) => Outcome::Stream(StreamedCall {
                            id: id.clone(),
                            call,
                            progress_token,
                        }),
                        Err(stop) => stop.into(),
                    };
                }
                return match call_tool(executor, calls, caller, id, call, None).await {
                    Ok(body) => Outcome::Reply(serialize(&RpcResponse::new(id.clone(), body))),
                    Err(stop) => stop.into(),
                };
            }
        }
    }

    let role = match identify(executor, caller.token).await {
        Ok(role) => role,
        Err(stop) => return stop.into(),
    };
    let session = Session {
        executor,
        calls,
        caller,
        role,
    };
    match parsed {
        Err(malformed) => Outcome::BadRequest(malformed.response()),
        Ok(Body::Single(message)) => {
            let initialize =
                matches!(&message, Message::Request { method, .. } if method == "initialize");
            match session.answer(message).await {
                Ok(Some(response)) if initialize => Outcome::Initialized(serialize(&response)),
                Ok(Some(response)) => Outcome::Reply(serialize(&response)),
                Ok(None) => Outcome::Accepted,
                Err(stop) => stop.into(),
            }
        }
        Ok(Body::Batch(messages)) => {
            let mut responses = Vec::new();
            for message in messages {
                match session.answer(message).await {
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
        progress_tx
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
    let _ = out.send(serialize(&response)).await;
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

/// The typed call, if `params` name a known tool with schema-conforming arguments.
fn well_formed_call(params: Option<&Value>) -> Option<ToolCall> {
    let params = params?.as_object()?;
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

/// Runs one tool call in the executor, registered under its id for `notifications/cancelled`.
async fn call_tool(
    executor: &impl ExecutorClient,
    calls: &Arc<CallRegistry>,
    caller: &Caller,
    id: &Value,
    call: ToolCall,
    progress: Option<mpsc::Sender<Progress>>,
) -> Result<RpcBody, Stop> {
    let request = FrontendRequest::Call {
        token: caller.token,
        origin: caller.origin.clone(),
        call,
    };
    let key = CallKey::new(caller.token, caller.session.as_deref(), id);
    let (_registration, cancel) = calls.register(key);
    let watch = Watch {
        progress,
        cancel: Some(cancel),
    };
    match executor.request_watched(request, watch).await {
        Ok(FrontendResponse::Tool(outcome)) => Ok(RpcBody::tool(CallToolResult::from_outcome(
            outcome,
            &caller.tickets,
        ))),
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
        }
    }
}

/// Answers the messages of one body for an authenticated caller.
struct Session<'a, E> {
    executor: &'a E,
    calls: &'a Arc<CallRegistry>,
    caller: &'a Caller,
    role: Role,
}

impl<E: ExecutorClient> Session<'_, E> {
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

    async fn answer(&self, message: Message) -> Result<Option<RpcResponse>, Stop> {
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
        tracing::debug!(%method, role = %self.role, "MCP request");
        let body = match method.as_str() {
            "initialize" => RpcBody::Result(RpcResult::Other(initialize_result(params.as_ref()))),
            "ping" => RpcBody::Result(RpcResult::Other(json!({}))),
            "tools/list" => RpcBody::Result(RpcResult::Tools {
                tools: catalogue::visible_to(self.role),
            }),
            "tools/call" => self.tools_call(&id, params).await?,
            _ => RpcBody::error(codes::METHOD_NOT_FOUND, "Method not found"),
        };
        Ok(Some(RpcResponse::new(id, body)))
    }

    async fn tools_call(&self, id: &Value, params: Option<Value>) -> Result<RpcBody, Stop> {
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
            let failure = ToolFailure::new(ErrorCode::UnknownTool, format!("Unknown tool: {name}"));
            self.report_refusal(name, &failure).await?;
            return Ok(RpcBody::tool(CallToolResult::failure(&failure)));
        };
        match arguments::decode(tool, params.get("arguments")) {
            Ok(call) => call_tool(self.executor, self.calls, self.caller, id, call, None).await,
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
                Ok(RpcBody::tool(CallToolResult::failure(&failure)))
            }
            Err(e) => {
                let failure = ToolFailure::new(ErrorCode::InvalidArguments, e.message());
                self.report_refusal(name, &failure).await?;
                Ok(RpcBody::tool(CallToolResult::validation_error(e.message())))
            }
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
        };
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

fn initialize_result(params: Option<&Value>) -> Value {
    let requested = params
        .and_then(Value::as_object)
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str);
    json!({
        "protocolVersion": negotiate_version(requested),
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": { "name": "mymcp", "version": env!("CARGO_PKG_VERSION") },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mymcp_protocol::{Identity, ReadFileOutput, ToolOutput};
    use std::sync::Mutex;

    const RW: TokenDigest = TokenDigest([1; 32]);
    const RO: TokenDigest = TokenDigest([2; 32]);
    const ADMIN: TokenDigest = TokenDigest([3; 32]);
    const BAD: TokenDigest = TokenDigest([9; 32]);

    /// An in-memory executor that records what it was asked.
    #[derive(Default)]
    struct FakeExecutor {
        seen: Mutex<Vec<FrontendRequest>>,
        down: bool,
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
        let calls = Arc::new(CallRegistry::default());
        handle(exec, &calls, &caller(token), body.as_bytes(), policy).await
    }

    fn reply(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Reply(s) | Outcome::Initialized(s) => serde_json::from_str(&s).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn bad_request(outcome: Outcome) -> Value {
        match outcome {
            Outcome::BadRequest(s) => serde_json::from_str(&s).unwrap(),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    fn tool_text(v: &Value) -> &str {
        v["result"]["content"][0]["text"].as_str().unwrap()
    }

    #[test]
    fn version_negotiation_echoes_known_versions_only() {
        for v in SUPPORTED_PROTOCOL_VERSIONS {
            assert_eq!(negotiate_version(Some(v)), v);
            assert!(is_supported_version(v));
        }
        assert_eq!(negotiate_version(Some("2099-01-01")), "2025-11-25");
        assert_eq!(negotiate_version(None), "2025-11-25");
        assert!(!is_supported_version("2025-11-25 "));
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
            "Input validation error: 'command' is a required property"
        );
        assert_eq!(v["result"]["isError"], true);
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
            ["read_file", "glob", "grep", "prepare_download"]
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
                "prepare_download"
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
                handle(
                    exec,
                    &calls,
                    &caller(token),
                    body.as_bytes(),
                    StreamPolicy::default(),
                )
                .await
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
}
