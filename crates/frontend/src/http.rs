//! The HTTP surface: `POST /mcp` (MCP Streamable HTTP, stateless), `GET /health`,
//! `GET /version`, `/admin/tokens` and `/metrics` (see [`crate::admin`]), `PUT`/`GET`/`HEAD
//! /files/raw/{ticket}` (transfers, see [`crate::transfer`]), and JSON 404/405 answers for
//! everything else.
//!
//! `POST /mcp` checks, in this order, and stops at the first failure:
//! 1. `Host` and, when present, `Origin` must be allowed (403; see [`crate::origin`]) — a
//!    browser page elsewhere must not be able to drive the server through a user's token
//!    (DNS rebinding, CSRF);
//! 2. `Authorization: Bearer <token>` must be present (401);
//! 3. `Content-Type` must be `application/json` (415);
//! 4. `Accept` must allow JSON or SSE (406);
//! 5. the body must fit the configured limit (413), checked from `Content-Length` before
//!    reading and again while reading;
//! 6. the body is read only once the caller is known: a small body that arrived with the
//!    headers is taken as it is (its `tools/call` authenticates in the executor's `Call`);
//!    for any other the executor is asked first (`Identify`, 401 before a byte of the body is
//!    read), then the body is read within the body timeouts (408; see [`crate::body`]);
//! 7. then [`mcp::handle`] authenticates through the executor (unless step 6 did), picks the
//!    protocol revision from the `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers
//!    and the body (an unsupported version or a header that disagrees with the body is a 400
//!    with the request's JSON-RPC id, after the token was checked) and answers.
//!
//! The token itself never leaves the request: it is hashed into a
//! [`TokenDigest`](mymcp_protocol::TokenDigest) at once ([`crate::bearer`]).
//! Every response carries `x-request-id` (the client's, if sane, else a fresh random one),
//! which also goes to the executor for the audit log.
//!
//! The answer to `initialize` carries a fresh `Mcp-Session-Id`. The server stays stateless:
//! the id is neither stored nor checked; clients send it back, and it keeps the
//! `notifications/cancelled` of one client session from reaching another's calls.
//!
//! A `tools/call` that [`mcp::handle`] decides to stream ([`Outcome::Stream`]) is answered
//! with `200 text/event-stream` at once; the events follow as the call runs: progress
//! notifications, a `: keep-alive` comment every [`HttpConfig::keep_alive`] so that proxies
//! do not cut an idle stream, then the result. If the client goes away, the stream's body is
//! dropped, which cancels the call in the executor.

use crate::bearer::{bearer_token, token_digest, BearerError};
use crate::body::{self, BodyError, BodyTimeouts, Chunks};
use crate::calls::CallRegistry;
use crate::forward::Forwarder;
use crate::mcp::{self, Caller, ErrorStatus, Outcome, Post, StreamPolicy, StreamedCall};
use crate::request_id::{choose_request_id, fresh_request_id, RequestId};
use crate::revisions::{HeaderField, McpHeaders};
use crate::tickets::Tickets;
use crate::transfer::{self, TransferState};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRef, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use mymcp_protocol::CallOrigin;
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Default largest accepted `POST /mcp` body: room for a 10 MiB file written through a tool,
/// JSON-escaped (up to 2× for typical text), plus the envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = mymcp_settings::MAX_BODY_BYTES.default() as usize;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// Longest `Mcp-Session-Id` taken from a client.
const MAX_SESSION_ID_LEN: usize = 128;

/// Default interval of SSE keep-alive comments on a streamed call.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest accepted `POST /mcp` body in bytes.
    pub max_body_bytes: usize,
    /// Which browser origins may call `/mcp`.
    pub origins: OriginPolicy,
    /// Which `Host` names may reach `/mcp`.
    pub hosts: HostPolicy,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Interval of `: keep-alive` comments on a streamed `tools/call`.
    pub keep_alive: Duration,
    /// `MYMCP_PUBLIC_BASE_URL`: the prefix of transfer URLs (relative when empty).
    pub public_base_url: String,
    /// `MYMCP_BODY_TIMEOUT_SEC` and `MYMCP_BODY_IDLE_TIMEOUT_SEC`.
    pub body_timeouts: BodyTimeouts,
    /// `MYMCP_OAUTH_ENABLED` (with `public_base_url` set): the metadata documents are served
    /// and a 401 says where they are.
    pub oauth: bool,
    /// How clients' metadata documents are fetched (with OAuth on).
    pub cimd: crate::cimd::CimdConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            origins: OriginPolicy::default(),
            hosts: HostPolicy::default(),
            trusted_proxies: TrustedProxies::default(),
            keep_alive: DEFAULT_KEEP_ALIVE,
            public_base_url: String::new(),
            body_timeouts: BodyTimeouts::default(),
            oauth: false,
            cimd: crate::cimd::CimdConfig::default(),
        }
    }
}

pub use crate::origin::{HostPolicy, OriginPolicy, TrustedProxies};

/// How to frame a JSON-RPC reply, from the request's `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyFormat {
    Json,
    /// One server-sent event: `event: message`, `data: <json>`.
    EventStream,
}

/// Picks the reply format: JSON when `Accept` is absent or allows JSON (`application/json`,
/// `application/*`, `*/*`), else SSE when it allows `text/event-stream`, else `None` (406).
/// Media ranges with `q=0` are treated as refused.
pub fn reply_format(headers: &HeaderMap) -> Option<ReplyFormat> {
    let (json, sse) = accepted(headers)?;
    if json {
        Some(ReplyFormat::Json)
    } else if sse {
        Some(ReplyFormat::EventStream)
    } else {
        None
    }
}

/// Whether a `tools/call` may be streamed, from the `Accept` header.
pub fn stream_policy(headers: &HeaderMap) -> StreamPolicy {
    match accepted(headers) {
        Some((json, sse)) => StreamPolicy {
            sse,
            sse_only: sse && !json,
        },
        None => StreamPolicy::default(),
    }
}

/// (JSON acceptable, SSE acceptable) from `Accept`; `None` when the header is absent.
fn accepted(headers: &HeaderMap) -> Option<(bool, bool)> {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return Some((true, false));
    }
    let (mut json, mut sse) = (false, false);
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("q")
                        && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            });
            if refused {
                continue;
            }
            match media.as_str() {
                "*/*" => (json, sse) = (true, true),
                "application/json" | "application/*" => json = true,
                "text/event-stream" | "text/*" => sse = true,
                _ => {}
            }
        }
    }
    Some((json, sse))
}

/// Whether a `Content-Type` value is `application/json`, with any parameters.
pub fn is_json_content_type(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// The MCP request headers, for [`crate::revisions`].
fn mcp_headers(headers: &HeaderMap) -> McpHeaders {
    let field = |name: &HeaderName| {
        HeaderField::from_values(headers.get_all(name).iter().map(HeaderValue::as_bytes))
    };
    McpHeaders {
        protocol_version: field(&MCP_PROTOCOL_VERSION),
        method: field(&MCP_METHOD),
        name: field(&MCP_NAME),
    }
}

/// The host the request was sent to: `Host`, or HTTP/2's `:authority`.
fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    match headers.get(header::HOST) {
        // A Host that is not even text is never allowed.
        Some(host) => Some(host.to_str().unwrap_or("\u{fffd}")),
        None => uri.authority().map(|a| a.as_str()),
    }
}

/// A 403 for a browser context that may not use the server: a JSON-RPC error without an id,
/// as the MCP transports allow.
fn forbidden(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        mcp::error_response_without_id(mcp::codes::INVALID_REQUEST, message),
    )
        .into_response()
}

/// The client's `Mcp-Session-Id` if it is 1–128 visible ASCII characters.
fn session_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get(MCP_SESSION_ID)?.as_bytes();
    (!id.is_empty() && id.len() <= MAX_SESSION_ID_LEN && id.iter().all(u8::is_ascii_graphic))
        .then(|| String::from_utf8_lossy(id).into_owned())
}

#[derive(Clone, Debug)]
struct AppState {
    forwarder: Arc<Forwarder>,
    calls: Arc<CallRegistry>,
    config: Arc<HttpConfig>,
    tickets: Arc<Tickets>,
}

impl FromRef<AppState> for TransferState {
    fn from_ref(state: &AppState) -> TransferState {
        TransferState {
            forwarder: state.forwarder.clone(),
            tickets: state.tickets.clone(),
            body_idle_timeout: state.config.body_timeouts.idle,
        }
    }
}

/// The application router. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: `POST /mcp` needs the peer address.
///
/// The ticket key is drawn here, once per process.
pub fn router(forwarder: Arc<Forwarder>, config: HttpConfig) -> Router {
    let metrics = Arc::new(crate::metrics::FrontendMetrics::default());
    let ops = crate::admin::routes(forwarder.clone(), metrics.clone(), config.body_timeouts);
    let tickets = Tickets::new(&config.public_base_url)
        .expect("the kernel's random generator (getrandom) is available");
    let state = AppState {
        forwarder,
        calls: Arc::default(),
        config: Arc::new(config),
        tickets: Arc::new(tickets),
    };
    let token_routes = crate::authz_token::routes(
        state.config.oauth && !state.config.public_base_url.is_empty(),
        state.forwarder.clone(),
        &state.config.cimd,
        state.config.trusted_proxies.clone(),
    );
    let app = Router::new()
        .route("/mcp", post(mcp_post).fallback(mcp_wrong_method))
        .route("/health", get(health).fallback(get_wrong_method))
        .route("/version", get(version).fallback(get_wrong_method))
        .route("/files/raw/{ticket}", any(transfer::raw))
        .merge(crate::authz::routes(
            state.config.oauth,
            &state.config.public_base_url,
        ))
        .fallback(not_found)
        .with_state(state)
        .merge(ops)
        .merge(token_routes);
    // The HTTP span of each request, only while OpenTelemetry is on: off, no layer at all.
    let app = match crate::otel::get() {
        Some(_) => app.layer(middleware::from_fn(crate::otel::trace_request)),
        None => app,
    };
    app.layer(middleware::from_fn_with_state(
        metrics,
        crate::metrics::track,
    ))
    .layer(middleware::from_fn(request_id))
}

/// Assigns the request id, exposes it to handlers, stamps it on the response, logs the
/// request.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = choose_request_id(request.headers().get(X_REQUEST_ID));
    let mut log = AccessLog {
        method: request.method().to_string(),
        path: loggable_path(request.uri().path()),
        request_id: id.clone(),
        started: Instant::now(),
        status: None,
    };
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    log.status = Some(response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// The path as the access log shows it: a transfer ticket is a bearer capability, so only its
/// first 8 characters are kept (enough to correlate, useless to redeem).
fn loggable_path(path: &str) -> String {
    match path.strip_prefix("/files/raw/") {
        Some(ticket) => {
            let shown: String = ticket.chars().take(8).collect();
            format!("/files/raw/{shown}…")
        }
        None => path.to_owned(),
    }
}

/// One access-log line per request, written when the request ends — including when the
/// client goes away first and the request's future is dropped unfinished.
struct AccessLog {
    method: String,
    path: String,
    request_id: String,
    started: Instant,
    status: Option<u16>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let ms = self.started.elapsed().as_millis() as u64;
        let (method, path, request_id) = (&self.method, &self.path, &self.request_id);
        match self.status {
            Some(status) => tracing::info!(%method, %path, status, ms, %request_id, "http"),
            None => tracing::info!(
                %method,
                %path,
                ms,
                %request_id,
                "http request abandoned by the client"
            ),
        }
    }
}

#[derive(Serialize)]
struct Detail<'a> {
    detail: &'a str,
}

fn detail(status: StatusCode, text: &str) -> Response {
    (status, Json(Detail { detail: text })).into_response()
}

fn unauthorized(config: &HttpConfig, text: &str) -> Response {
    let mut response = detail(StatusCode::UNAUTHORIZED, text);
    // With OAuth, where the client learns how to get a token (RFC 9728 §5.1).
    let challenge = match config.oauth {
        true => HeaderValue::from_str(&crate::authz::challenge(&config.public_base_url)).ok(),
        false => None,
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        challenge.unwrap_or(HeaderValue::from_static("Bearer")),
    );
    response
}

fn json_body(status: StatusCode, json: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

fn reply(format: ReplyFormat, json: String) -> Response {
    match format {
        ReplyFormat::Json => json_body(StatusCode::OK, json),
        ReplyFormat::EventStream => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (X_ACCEL_BUFFERING, HeaderValue::from_static("no")),
            ],
            format!("event: message\ndata: {json}\n\n"),
        )
            .into_response(),
    }
}

/// An SSE response body fed by a task; dropping the body (the client went away) aborts the
/// task, which drops the call's future and so cancels it in the executor.
struct EventStream {
    events: mpsc::Receiver<Bytes>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.events
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

/// Answers a streamed `tools/call` (see the module documentation).
fn stream_call(state: &AppState, caller: Caller, streamed: StreamedCall) -> Response {
    let (tx, events) = mpsc::channel::<Bytes>(16);
    let (forwarder, calls) = (state.forwarder.clone(), state.calls.clone());
    let keep_alive = state.config.keep_alive;
    // The call's spans continue the request's trace in the task.
    let task = crate::otel::spawn_in_trace(async move {
        let (messages_tx, mut messages) = mpsc::channel::<String>(16);
        let mut call = pin!(mcp::run_streamed(
            forwarder.as_ref(),
            &calls,
            &caller,
            streamed,
            messages_tx
        ));
        let mut call_done = false;
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
        loop {
            let event = tokio::select! {
                () = &mut call, if !call_done => {
                    call_done = true;
                    continue;
                }
                message = messages.recv() => match message {
                    Some(json) => Bytes::from(format!("event: message\ndata: {json}\n\n")),
                    // The call ended and everything it said was sent.
                    None => return,
                },
                _ = ticks.tick() => Bytes::from_static(b": keep-alive\n\n"),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Tells nginx not to buffer the stream (progress must arrive as it happens).
            (X_ACCEL_BUFFERING, HeaderValue::from_static("no")),
        ],
        Body::new(EventStream { events, task }),
    )
        .into_response()
}

fn body_too_large() -> Response {
    detail(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
}

/// The answer for a body that could not be read.
fn body_failed(e: BodyError, peer: SocketAddr) -> Response {
    match e {
        BodyError::TooLarge => body_too_large(),
        BodyError::TimedOut => detail(StatusCode::REQUEST_TIMEOUT, "Request body timed out"),
        BodyError::Failed(e) => {
            tracing::debug!(%peer, "failed to read request body: {e}");
            detail(StatusCode::BAD_REQUEST, "Failed to read request body")
        }
    }
}

/// The answer when processing stopped before MCP could answer: the token was refused, or
/// the executor could not be asked.
fn stopped(config: &HttpConfig, outcome: Outcome) -> Response {
    match outcome {
        Outcome::Unauthenticated => unauthorized(config, "Invalid or disabled token"),
        Outcome::InsufficientScope => {
            let mut response = detail(
                StatusCode::FORBIDDEN,
                "Insufficient scope: this client was approved for read-only",
            );
            if let Ok(v) = HeaderValue::from_str(&crate::authz::step_up(&config.public_base_url)) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            response
        }
        Outcome::Unavailable => {
            let mut response = detail(StatusCode::SERVICE_UNAVAILABLE, "Executor unavailable");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        _ => detail(StatusCode::BAD_GATEWAY, "Unexpected executor response"),
    }
}

async fn mcp_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    uri: Uri,
    headers: HeaderMap,
    mut body: Body,
) -> Response {
    let started = tokio::time::Instant::now();
    // 1. Host and Origin.
    let host = request_host(&headers, &uri);
    if !state.config.hosts.allows(host) {
        tracing::warn!(host = ?host, %peer, "refused request for a foreign Host (DNS rebinding?)");
        return forbidden(&format!(
            "Forbidden: Host {:?} is not allowed (MYMCP_ALLOWED_HOSTS)",
            host.unwrap_or_default()
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| state.config.origins.allows(o));
        if !allowed {
            tracing::warn!(origin = ?origin, %peer, "refused request from a foreign origin");
            return forbidden(&format!(
                "Forbidden: Origin {:?} is not allowed (MYMCP_ALLOWED_ORIGINS)",
                String::from_utf8_lossy(origin.as_bytes())
            ));
        }
    }

    // 2. Bearer token, hashed at once.
    let token = match bearer_token(headers.get(header::AUTHORIZATION)) {
        Ok(token) => token_digest(token),
        Err(BearerError::Missing) => return unauthorized(&state.config, "Missing Bearer token"),
        Err(BearerError::Empty) => return unauthorized(&state.config, "Invalid or disabled token"),
    };

    // 3. Content type.
    if !headers
        .get(header::CONTENT_TYPE)
        .is_some_and(is_json_content_type)
    {
        return detail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }

    // 4. Accept.
    let Some(format) = reply_format(&headers) else {
        return json_body(
            StatusCode::NOT_ACCEPTABLE,
            mcp::error_response(
                mcp::codes::INVALID_REQUEST,
                "Not Acceptable: Client must accept application/json or text/event-stream",
            ),
        );
    };

    // 5. Body size: refuse by announced length without reading, then bound the read.
    let limit = state.config.max_body_bytes;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        return body_too_large();
    }

    // 6. The caller before the body: a small body already here is taken as it is; for any
    // other, the executor names the caller before a byte of it is read.
    let mut chunks = Chunks::default();
    let expects_continue = headers.contains_key(header::EXPECT);
    let arrived = if body::small_enough_to_take(&body, expects_continue) {
        match body::take_arrived(&mut body, &mut chunks, limit) {
            Ok(all) => all,
            Err(e) => return body_failed(e, peer),
        }
    } else {
        false
    };
    let identified = if arrived {
        None
    } else {
        match mcp::authenticate(state.forwarder.as_ref(), token).await {
            Ok(role) => Some(role),
            Err(outcome) => return stopped(&state.config, outcome),
        }
    };
    if !arrived {
        let timeouts = state.config.body_timeouts;
        if let Err(e) = body::read_rest(&mut body, &mut chunks, limit, started, timeouts).await {
            return body_failed(e, peer);
        }
    }
    drop(body);
    let bytes: Bytes = chunks.into_bytes();
    mymcp_service::memory::large_payload(bytes.len());

    // 7. MCP.
    let forwarded_for = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let client = state
        .config
        .trusted_proxies
        .client(peer.ip(), forwarded_for);
    let caller = Caller {
        token,
        origin: CallOrigin {
            peer: client.to_string(),
            request_id,
        },
        session: session_id(&headers),
        tickets: state.tickets.clone(),
    };
    let mcp_headers = mcp_headers(&headers);
    let post = Post {
        body: &bytes,
        headers: &mcp_headers,
        policy: stream_policy(&headers),
        identified,
    };
    match mcp::handle(state.forwarder.as_ref(), &state.calls, &caller, post).await {
        Outcome::Reply(json) => reply(format, json),
        Outcome::Initialized(json) => {
            let mut response = reply(format, json);
            if let Ok(id) = HeaderValue::from_str(&fresh_request_id()) {
                response.headers_mut().insert(MCP_SESSION_ID, id);
            }
            response
        }
        Outcome::Stream(streamed) => stream_call(&state, caller, streamed),
        Outcome::Error(ErrorStatus::BadRequest, json) => json_body(StatusCode::BAD_REQUEST, json),
        Outcome::Error(ErrorStatus::NotFound, json) => json_body(StatusCode::NOT_FOUND, json),
        Outcome::Accepted => StatusCode::ACCEPTED.into_response(),
        stop @ (Outcome::Unauthenticated
        | Outcome::Unavailable
        | Outcome::BadGateway
        | Outcome::InsufficientScope) => stopped(&state.config, stop),
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

async fn mcp_wrong_method() -> Response {
    // Stateless: no server-initiated SSE stream (GET) and no sessions to delete (DELETE).
    method_not_allowed("POST")
}

async fn get_wrong_method() -> Response {
    method_not_allowed("GET, HEAD")
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    executor: &'static str,
}

async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        executor: if state.forwarder.is_connected() {
            "connected"
        } else {
            "unavailable"
        },
    })
}

#[derive(Serialize)]
struct Version {
    version: &'static str,
}

async fn version() -> Json<Version> {
    Json(Version {
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn accept(values: &[&str]) -> Option<ReplyFormat> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, hv(v));
        }
        reply_format(&headers)
    }

    #[test]
    fn accept_prefers_json_and_falls_back_to_sse() {
        assert_eq!(accept(&[]), Some(ReplyFormat::Json));
        assert_eq!(
            accept(&["application/json, text/event-stream"]),
            Some(ReplyFormat::Json)
        );
        assert_eq!(accept(&["*/*"]), Some(ReplyFormat::Json));
        assert_eq!(accept(&["application/*;q=0.5"]), Some(ReplyFormat::Json));
        assert_eq!(
            accept(&["text/event-stream"]),
            Some(ReplyFormat::EventStream)
        );
        assert_eq!(
            accept(&["text/html", "Text/Event-Stream; charset=utf-8"]),
            Some(ReplyFormat::EventStream)
        );
        assert_eq!(accept(&["text/html"]), None);
        assert_eq!(accept(&["application/xml"]), None);
        assert_eq!(
            accept(&["application/json;q=0, text/event-stream"]),
            Some(ReplyFormat::EventStream)
        );
    }

    fn policy(values: &[&str]) -> StreamPolicy {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, hv(v));
        }
        stream_policy(&headers)
    }

    #[test]
    fn streaming_needs_sse_in_accept() {
        let both = StreamPolicy {
            sse: true,
            sse_only: false,
        };
        assert_eq!(policy(&["application/json, text/event-stream"]), both);
        assert_eq!(policy(&["*/*"]), both);
        assert_eq!(
            policy(&["text/event-stream"]),
            StreamPolicy {
                sse: true,
                sse_only: true
            }
        );
        assert_eq!(policy(&["application/json"]), StreamPolicy::default());
        assert_eq!(policy(&[]), StreamPolicy::default());
    }

    #[test]
    fn session_ids_are_taken_only_when_sane() {
        let mut headers = HeaderMap::new();
        assert_eq!(session_id(&headers), None);
        headers.insert(MCP_SESSION_ID, hv("abc-1"));
        assert_eq!(session_id(&headers).as_deref(), Some("abc-1"));
        headers.insert(MCP_SESSION_ID, hv("has space"));
        assert_eq!(session_id(&headers), None);
        headers.insert(MCP_SESSION_ID, hv(&"a".repeat(129)));
        assert_eq!(session_id(&headers), None);
    }

    #[test]
    fn content_type_allows_parameters_only() {
        assert!(is_json_content_type(&hv("application/json")));
        assert!(is_json_content_type(&hv("Application/JSON; charset=utf-8")));
        assert!(!is_json_content_type(&hv("application/jsonx")));
        assert!(!is_json_content_type(&hv("text/plain")));
    }

    #[test]
    fn tickets_are_cut_from_logged_paths() {
        let t = "AQajxphJb-n6JOAbWfneZL0AAAAAawHvOTn3WdjSFgcEr3T1CfpuQPHUExlF";
        assert_eq!(
            loggable_path(&format!("/files/raw/{t}")),
            "/files/raw/AQajxphJ…"
        );
        assert_eq!(loggable_path("/mcp"), "/mcp");
    }
}
