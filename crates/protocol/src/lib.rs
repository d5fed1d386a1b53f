//! Wire types and frame codec spoken between the mymcp processes.
//!
//! ```text
//! MCP client ──HTTPS──▶ mymcp-frontend ──executor.sock──▶ mymcp-executor (root)
//! mymcpctl (root) ─────────────────────control.sock────▶
//! ```
//!
//! Each socket has its own closed request set: [`FrontendRequest`] on `executor.sock`,
//! [`ControlRequest`] on `control.sock`. A connection starts with a [`Hello`] in both
//! directions (the wire version and build id must match exactly, since postcard is not
//! self-describing), then carries [`ClientFrame::Request`]s, each with a caller-chosen id that
//! its single [`ServerFrame::Response`] (and any [`ServerFrame::Progress`] before it) echoes,
//! so many requests can be in flight on one connection. Anything else — an unknown variant, a
//! malformed, oversized or out-of-state frame — is a *protocol violation*: the executor logs it
//! and drops the connection. Ordinary failures (not found, protected path, timeout) are typed
//! [`ToolFailure`]s inside a response.
//!
//! This crate does no I/O beyond the codec and has no async runtime dependency.
//!
//! ```
//! use mymcp_protocol::{frame, ClientFrame, FrontendRequest, Hello};
//!
//! let bytes = frame::encode(&ClientFrame::<FrontendRequest>::Hello(Hello::current())).unwrap();
//! let len = frame::body_len(bytes[..4].try_into().unwrap(), frame::MAX_FRAME_LEN).unwrap();
//! let back: ClientFrame<FrontendRequest> = frame::decode(&bytes[4..4 + len]).unwrap();
//! assert!(matches!(back, ClientFrame::Hello(h) if h.is_compatible()));
//! ```

#![forbid(unsafe_code)]

mod byte_string;
pub mod frame;
pub mod oauth;
mod tools;
mod trace;
mod transfer;

pub use tools::*;
pub use trace::*;
pub use transfer::*;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of the wire format. Bumped on any incompatible change.
pub const WIRE_VERSION: u32 = 1;

/// Identifies the exact build of the protocol types: the crate version plus a hash of this
/// crate's sources. Both ends must carry the same value.
pub const BUILD_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("MYMCP_PROTOCOL_HASH"));

/// Correlates a request with its response on one connection. Chosen by the client.
pub type RequestId = u64;

/// The first frame in each direction of every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub wire_version: u32,
    pub build_id: String,
}

impl Hello {
    /// The hello this build sends.
    pub fn current() -> Self {
        Hello {
            wire_version: WIRE_VERSION,
            build_id: BUILD_ID.to_owned(),
        }
    }

    /// Whether a peer's hello matches this build exactly.
    pub fn is_compatible(&self) -> bool {
        self.wire_version == WIRE_VERSION && self.build_id == BUILD_ID
    }
}

/// Frames a client (frontend or mymcpctl) sends. `R` is the socket's request set.
///
/// Valid order: exactly one `Hello`, then any number of `Request` and `Cancel` frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame<R> {
    Hello(Hello),
    Request {
        id: RequestId,
        body: R,
    },
    /// Abandon the request with this id (the HTTP client went away). The executor stops its
    /// work (killing a command's process group) and answers that request with
    /// [`ErrorCode::Cancelled`]; an unknown or finished id is ignored. Has no response itself.
    Cancel {
        id: RequestId,
    },
}

/// Frames the executor sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame<R> {
    /// Answer to a compatible `Hello`.
    Welcome(Hello),
    /// Answer to an incompatible `Hello`; the executor closes the connection after it.
    Refused {
        reason: String,
    },
    Response {
        id: RequestId,
        body: R,
    },
    /// How a running request is getting on; sent any number of times before its `Response`
    /// (today: every few seconds while a `bash_execute` command runs). Best effort: the
    /// executor drops one rather than wait when the connection is congested.
    Progress {
        id: RequestId,
        progress: Progress,
    },
    /// A transfer of request `id` has started: one end of a pipe travels with this frame as
    /// `SCM_RIGHTS` ancillary data (attached to the frame's first byte). The write end for an
    /// upload, the read end for a download; never a descriptor of a host file. Sent at most
    /// once per request, before its `Response`.
    Pipe {
        id: RequestId,
        start: TransferStart,
    },
}

/// A running command's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub elapsed_ms: u64,
    /// Bytes written so far to each stream (kept or not).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

/// SHA-256 digest of a bearer token. The token itself never crosses the socket: the frontend
/// hashes what the client sent, and the executor looks the digest up in its store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenDigest(pub [u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to correlate in logs, not enough to matter.
        write!(
            f,
            "TokenDigest({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// What a token may do. `Ro` and `Rw` are for MCP clients; `Admin` manages tokens over HTTP;
/// `Metrics` reads `/metrics`. Roles are not ordered beyond `Rw` ⊃ `Ro` (see [`Role::allows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Ro,
    Rw,
    Admin,
    Metrics,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ro => "ro",
            Role::Rw => "rw",
            Role::Admin => "admin",
            Role::Metrics => "metrics",
        }
    }

    /// Parses the role names used in token files, the CLI and the admin API.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "ro" => Some(Role::Ro),
            "rw" => Some(Role::Rw),
            "admin" => Some(Role::Admin),
            "metrics" => Some(Role::Metrics),
            _ => None,
        }
    }

    /// Whether a holder of `self` may use something that requires `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == needed || (self == Role::Rw && needed == Role::Ro)
    }

    /// Whether this role may call MCP tools at all.
    pub fn is_client(self) -> bool {
        matches!(self, Role::Ro | Role::Rw)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller as the executor knows it after looking the digest up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// Longest [`CallOrigin::request_id`]: the frontend keeps a client's `X-Request-ID` only if it
/// is 1 to 128 visible ASCII characters, and makes its own (32 hex digits) otherwise.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Longest [`CallOrigin::peer`]: an IP address as text (at most 45 characters).
pub const MAX_PEER_LEN: usize = 64;

/// Where a call came from, for the audit log and the executor's log. Informational only:
/// never used to authorize. Both fields are visible ASCII (`!` to `~`) of bounded length: a
/// frame with anything else does not decode (a protocol violation), so no line break or
/// terminal escape from the frontend's uid reaches a log line through them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOrigin {
    /// The client's address as the frontend saw it.
    #[serde(deserialize_with = "visible::peer")]
    pub peer: String,
    /// The HTTP request id (`x-request-id`).
    #[serde(deserialize_with = "visible::request_id")]
    pub request_id: String,
}

/// Decoding of short visible-ASCII strings, refused before anything is allocated.
mod visible {
    use serde::de::{Deserializer, Error, Visitor};
    use std::fmt;

    pub fn peer<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_str(Visible(super::MAX_PEER_LEN))
    }

    pub fn request_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_str(Visible(super::MAX_REQUEST_ID_LEN))
    }

    struct Visible(usize);

    impl Visitor<'_> for Visible {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "at most {} visible ASCII characters", self.0)
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
            if v.len() > self.0 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                // The value itself is not echoed: it is what must not reach a log.
                return Err(E::custom(format_args!(
                    "not {} visible ASCII characters or fewer",
                    self.0
                )));
            }
            Ok(v.to_owned())
        }
    }
}

/// Requests accepted on `executor.sock`, from the frontend's uid only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrontendRequest {
    /// Who holds this token? Answered with [`FrontendResponse::Identity`] or
    /// [`FrontendResponse::Unauthenticated`]. Used for HTTP-level 401s and `tools/list`.
    Identify { token: TokenDigest },
    /// Run a tool for the holder of `token`. The executor authenticates and authorizes it.
    Call {
        token: TokenDigest,
        origin: CallOrigin,
        call: ToolCall,
    },
    /// `/admin/tokens`: manage `ro`/`rw` tokens for the holder of `token`, which the executor
    /// checks for the admin role. `origin` is for the audit log.
    Admin {
        token: TokenDigest,
        origin: CallOrigin,
        op: AdminOp,
    },
    /// `/metrics`: the executor's counters for the holder of `token` (the metrics role), or
    /// `None` when the HTTP request carried no bearer token.
    Metrics { token: Option<TokenDigest> },
    /// A `tools/call` the frontend refused itself (unknown tool name, arguments that do not
    /// decode), reported so that the executor audits it like the reference does. `tool` is the
    /// name as called (the executor caps it). Answered with `Tool(Err(failure))` for a valid
    /// `ro`/`rw` token, else `Unauthenticated`. It runs nothing.
    Refused {
        token: TokenDigest,
        origin: CallOrigin,
        tool: String,
        failure: ToolFailure,
    },
    /// Redeem a transfer grant (`PUT`/`GET /files/raw/{ticket}`). The executor checks the grant
    /// and the path, claims the grant, sends a [`ServerFrame::Pipe`] and moves the bytes; the
    /// response ([`FrontendResponse::Transfer`]) comes when the transfer has ended. A refusal
    /// before the claim is answered at once, without a pipe.
    Redeem {
        grant: GrantId,
        direction: Direction,
        /// The upload's `Content-Length`, if the client sent one (checked before the claim).
        announced_len: Option<u64>,
        origin: CallOrigin,
    },
    /// Check a grant as `Redeem` would, without claiming it (`HEAD`). Answered with
    /// [`FrontendResponse::TransferProbe`]. `origin` is for the audit log.
    Probe {
        grant: GrantId,
        direction: Direction,
        origin: CallOrigin,
    },
    /// The upload body of claim `claim` of `grant` ended normally: once the pipe is drained the
    /// executor may commit the file. Without it, an upload whose pipe closes is discarded (the
    /// client went away). Answered with [`FrontendResponse::Acknowledged`].
    CommitUpload { grant: GrantId, claim: u64 },
    /// What this host can serve right now beyond the fixed tool set, for the holder of
    /// `token` (an `ro`/`rw` token): answered with [`FrontendResponse::Offer`], else
    /// `Unauthenticated`. The frontend asks it for the answers that depend on it
    /// (`tools/list`, and the instructions of `initialize` and `server/discover`).
    Offer { token: TokenDigest },
    /// The frontend's OTLP export of the audit log: the records the executor holds from
    /// position `from` of its feed on (0 at first; then the `next` of the previous answer),
    /// answered with [`FrontendResponse::AuditRecords`] at once when there are some, else when
    /// one is written or after a few seconds. Served only when the executor's operator enabled
    /// it (`MYMCP_OTLP_AUDIT_LOGS`); the local log stays what decides.
    AuditRecords { from: u64 },
    /// The executor's counters for the frontend's OTLP metrics export, without a metrics token:
    /// answered with [`FrontendResponse::Metrics`], a snapshot only when the executor's operator
    /// enabled it (`MYMCP_OTLP_EXECUTOR_METRICS`), else [`MetricsOutcome::Disabled`].
    TelemetryMetrics,
    /// A `Call`, `Refused` or `Redeem` that continues the frontend's trace (OpenTelemetry is
    /// on): answered as the request would be, or, when `trace` is sampled, with
    /// [`FrontendResponse::Traced`] carrying the executor's spans. A wrapper rather than a
    /// field of [`CallOrigin`], so that a request without a trace is encoded exactly as it
    /// always was; and a closed set ([`TracedRequest`]), so that it cannot nest.
    Traced {
        trace: TraceContext,
        request: TracedRequest,
    },
    /// The background jobs of the holder of `token` (an `rw` token), running and kept ones,
    /// oldest first (MCP `tasks/list`): answered with [`FrontendResponse::Jobs`] (empty for an
    /// `ro` token, which has no jobs), or `Unauthenticated`.
    Jobs { token: TokenDigest },
    /// The OAuth authorization server's endpoints (see [`oauth`]): answered with
    /// [`FrontendResponse::OAuth`].
    OAuth(oauth::OAuthRequest),
}

/// The requests that may continue a trace ([`FrontendRequest::Traced`]): the same fields as
/// the [`FrontendRequest`] variants of the same names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TracedRequest {
    Call {
        token: TokenDigest,
        origin: CallOrigin,
        call: ToolCall,
    },
    Refused {
        token: TokenDigest,
        origin: CallOrigin,
        tool: String,
        failure: ToolFailure,
    },
    Redeem {
        grant: GrantId,
        direction: Direction,
        announced_len: Option<u64>,
        origin: CallOrigin,
    },
}

impl From<TracedRequest> for FrontendRequest {
    fn from(r: TracedRequest) -> FrontendRequest {
        match r {
            TracedRequest::Call {
                token,
                origin,
                call,
            } => FrontendRequest::Call {
                token,
                origin,
                call,
            },
            TracedRequest::Refused {
                token,
                origin,
                tool,
                failure,
            } => FrontendRequest::Refused {
                token,
                origin,
                tool,
                failure,
            },
            TracedRequest::Redeem {
                grant,
                direction,
                announced_len,
                origin,
            } => FrontendRequest::Redeem {
                grant,
                direction,
                announced_len,
                origin,
            },
        }
    }
}

impl FrontendRequest {
    /// `self` continuing `trace`, when there is one and `self` is a request that can carry it
    /// (`Call`, `Refused`, `Redeem`); else `self` unchanged.
    pub fn with_trace(self, trace: Option<TraceContext>) -> FrontendRequest {
        let Some(trace) = trace else { return self };
        let request = match self {
            FrontendRequest::Call {
                token,
                origin,
                call,
            } => TracedRequest::Call {
                token,
                origin,
                call,
            },
            FrontendRequest::Refused {
                token,
                origin,
                tool,
                failure,
            } => TracedRequest::Refused {
                token,
                origin,
                tool,
                failure,
            },
            FrontendRequest::Redeem {
                grant,
                direction,
                announced_len,
                origin,
            } => TracedRequest::Redeem {
                grant,
                direction,
                announced_len,
                origin,
            },
            other => return other,
        };
        FrontendRequest::Traced { trace, request }
    }

    /// The request without its trace wrapper, and the trace it continues.
    pub fn split_trace(self) -> (FrontendRequest, Option<TraceContext>) {
        match self {
            FrontendRequest::Traced { trace, request } => (request.into(), Some(trace)),
            other => (other, None),
        }
    }
}

/// What the host can serve at the moment of asking ([`FrontendRequest::Offer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostOffer {
    /// An overview document is there for `server_overview` to return (the recorder has
    /// written one): only then is the tool listed.
    pub server_overview: bool,
}

/// What an `/admin/tokens` request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOp {
    /// Is `token` an admin token? Asked before a create body is read, so that only an admin
    /// learns what is wrong with it. Answered with [`AdminOutcome::Allowed`]; not audited.
    Check,
    List,
    /// Create a token (`ro` or `rw`); its value is returned once. `user` is the Unix account
    /// its calls act as (`None`: the executor's `MYMCP_DEFAULT_USER`).
    Create {
        name: String,
        role: Role,
        user: Option<String>,
        /// Kernel limits of its commands (unset fields: the executor's defaults).
        limits: TokenLimits,
        /// Its commands' view of the file system and network.
        view: TokenView,
    },
    /// Revoke by token value or id (as [`ControlRequest::TokenRevoke`]).
    Revoke {
        selector: String,
    },
    /// OAuth clients and grants: list them or revoke (`Clients`, `Grants`, `Revoke` of
    /// [`oauth::OAuthControl`]; approvals stay on the host).
    OAuth(oauth::OAuthControl),
}

/// The executor's answer to [`FrontendRequest::Admin`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOutcome {
    /// The token is not an admin token (HTTP 403).
    Forbidden,
    /// The answer to [`AdminOp::Check`]: an admin token.
    Allowed,
    Tokens(Vec<TokenInfo>),
    Created {
        token: String,
        info: TokenInfo,
    },
    Revoked(TokenInfo),
    /// No `ro`/`rw` token matches (HTTP 404).
    NotFound,
    /// The request is not acceptable; the text says why (HTTP 400).
    Invalid(String),
    /// The store cannot be changed right now (HTTP 500); the text says why.
    Failed(String),
    /// The answer to [`AdminOp::OAuth`].
    OAuth(oauth::OAuthControlOutcome),
}

/// The executor's answer to [`FrontendRequest::Metrics`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricsOutcome {
    /// No metrics token exists (HTTP 503).
    Disabled,
    /// Missing or wrong token (HTTP 401).
    Unauthorized,
    Snapshot(ExecutorMetrics),
}

/// How a tool call ended, as metrics and the audit log count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallResult {
    Ok,
    Error,
    Denied,
}

impl CallResult {
    pub const ALL: [CallResult; 3] = [CallResult::Ok, CallResult::Error, CallResult::Denied];

    pub fn as_str(self) -> &'static str {
        match self {
            CallResult::Ok => "ok",
            CallResult::Error => "error",
            CallResult::Denied => "denied",
        }
    }
}

/// Upper bounds (seconds) of the tool duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0,
];

/// Calls of one tool by one role with one result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallCount {
    pub tool: ToolName,
    pub role: Role,
    pub result: CallResult,
    pub count: u64,
}

/// Durations of one tool's calls (denied calls excluded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurationHistogram {
    pub tool: ToolName,
    /// Calls per bucket of [`DURATION_BUCKETS`] (not cumulative), plus one for `+Inf`.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_micros: u64,
}

/// The executor's counters, merged into `/metrics` by the frontend. Every label value comes
/// from a closed set (tool names, roles, results).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorMetrics {
    pub tool_calls: Vec<ToolCallCount>,
    pub durations: Vec<DurationHistogram>,
    pub running_commands: u64,
    pub running_jobs: u64,
    /// Requests refused for an unknown, disabled or wrong-role token: MCP, admin, metrics.
    pub auth_failures_mcp: u64,
    pub auth_failures_admin: u64,
    pub auth_failures_metrics: u64,
    pub audit_write_failures: u64,
    /// Enabled tokens per role.
    pub tokens: Vec<(Role, u64)>,
    /// Bytes moved by transfers (`/files/raw`).
    pub transfer_bytes_upload: u64,
    pub transfer_bytes_download: u64,
}

/// Responses on `executor.sock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrontendResponse {
    Identity(Identity),
    /// The digest is unknown, disabled, or belongs to a role that may not use this socket's
    /// operation (admin and metrics tokens cannot call tools). The frontend answers HTTP 401.
    Unauthenticated,
    /// The outcome of a `Call`: a tool result or a typed failure.
    Tool(Result<ToolOutput, ToolFailure>),
    Admin(AdminOutcome),
    Metrics(MetricsOutcome),
    /// The outcome of a `Redeem`.
    Transfer(Result<TransferDone, TransferError>),
    /// The answer to a `Probe`: what a `GET` would send.
    TransferProbe(Result<TransferStart, TransferError>),
    /// The answer to `CommitUpload`: whether a running upload took the commit.
    Acknowledged(bool),
    /// The answer to `Offer`.
    Offer(HostOffer),
    /// The answer to a `Call` or `Redeem` that carried a sampled [`TraceContext`]: the answer
    /// and the spans the executor recorded for it. The frontend unwraps it ([`Traced::split`])
    /// before anything else looks at the answer.
    Traced(Traced),
    /// The answer to `AuditRecords`.
    AuditRecords(AuditRecords),
    /// The answer to `Jobs`: at most the running and kept jobs of one token (4 + 50 by
    /// default).
    Jobs(Vec<JobInfo>),
    /// The answer to `OAuth`.
    OAuth(oauth::OAuthOutcome),
}

/// An answer with the executor's spans for it. The answer is one of the kinds that can carry
/// spans (not a nested `Traced`: the type cannot nest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traced {
    /// The request's trace context, as the frontend sent it.
    pub context: TraceContext,
    pub spans: ExecutorSpans,
    pub response: TracedResponse,
}

/// The answers that may come [`Traced`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TracedResponse {
    Tool(Result<ToolOutput, ToolFailure>),
    Transfer(Result<TransferDone, TransferError>),
}

impl Traced {
    /// The plain answer and the spans.
    pub fn split(self) -> (FrontendResponse, ExecutorSpans) {
        let response = match self.response {
            TracedResponse::Tool(r) => FrontendResponse::Tool(r),
            TracedResponse::Transfer(r) => FrontendResponse::Transfer(r),
        };
        (response, self.spans)
    }
}

impl FrontendResponse {
    /// `self` with the spans of its request (see [`Traced`]), when it is an answer that can
    /// carry them and there are some.
    pub fn traced(self, trace: Option<(TraceContext, ExecutorSpans)>) -> FrontendResponse {
        let Some((context, spans)) = trace.filter(|(_, spans)| !spans.is_empty()) else {
            return self;
        };
        let response = match self {
            FrontendResponse::Tool(r) => TracedResponse::Tool(r),
            FrontendResponse::Transfer(r) => TracedResponse::Transfer(r),
            other => return other,
        };
        FrontendResponse::Traced(Traced {
            context,
            spans,
            response,
        })
    }
}

/// Requests accepted on `control.sock`, from root only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Create a token; its value is returned once and only its digest is stored. `user` is
    /// the Unix account its calls act as (`None`: the executor's `MYMCP_DEFAULT_USER`).
    TokenAdd {
        name: String,
        role: Role,
        user: Option<String>,
        /// Kernel limits of its commands (unset fields: the executor's defaults).
        limits: TokenLimits,
        /// Its commands' view of the file system and network.
        view: TokenView,
    },
    TokenList,
    /// Revoke by token value or by id (the first hex digits of its digest, unique prefix).
    TokenRevoke {
        selector: String,
    },
    Status,
    /// Create a new token of `role` (admin or metrics) named after the role, replacing every
    /// existing token of that role in one store write.
    TokenRotate {
        role: Role,
    },
    /// Remove every token of `role` (`disable-metrics`).
    TokenRemoveRole {
        role: Role,
    },
    /// Add tokens known by digest (imported from a Python/Go install). Digests already in the
    /// store are skipped.
    TokenImport {
        tokens: Vec<ImportedToken>,
    },
    /// The audit log's state, including the live head for `mymcpctl audit verify`.
    AuditState,
    /// `mymcpctl oauth …`: approvals, clients, grants (see [`oauth`]).
    OAuth(oauth::OAuthControl),
}

/// A token converted from a plaintext store: only its digest travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedToken {
    pub digest: TokenDigest,
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub last_used: Option<String>,
    pub enabled: bool,
}

/// The audit log as the executor sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditState {
    pub enabled: bool,
    pub dir: String,
    /// Sequence number and hash of the last line written.
    pub head_seq: u64,
    pub head_hash: String,
    /// Sequence number, epoch and time of the newest seal.
    pub last_seal: Option<(u64, u64, String)>,
    pub write_failures: u64,
}

/// Responses on `control.sock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    TokenAdded {
        token: String,
        info: TokenInfo,
    },
    Tokens(Vec<TokenInfo>),
    Revoked(TokenInfo),
    Status(StatusInfo),
    Error {
        code: ErrorCode,
        message: String,
    },
    Rotated {
        token: String,
        info: TokenInfo,
        removed: u64,
    },
    RemovedRole(u64),
    Imported {
        added: u64,
        skipped: u64,
    },
    AuditState(AuditState),
    OAuth(oauth::OAuthControlOutcome),
}

/// A token as listed: never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// First 12 hex digits of the digest: stable, safe to show, accepted by revoke.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The Unix account the token's calls act as.
    pub user: String,
    pub created_at: String,
    pub last_used: Option<String>,
    pub enabled: bool,
    /// The token's own kernel limits (unset fields: the executor's defaults).
    pub limits: TokenLimits,
    /// Its commands' view of the file system and network.
    pub view: TokenView,
}

/// What a token's commands see of the host: `write_roots` (absolute paths): they may change
/// files only inside these trees, everything else is read-only to them (none: no such
/// restriction); `hide`: absolute paths covered by an empty, inaccessible mount;
/// `no_network`: a network namespace of their own with only a loopback interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub write_roots: Vec<String>,
    pub hide: Vec<String>,
    pub no_network: bool,
}

/// Most write roots or hidden paths a token may name.
pub const MAX_TOKEN_VIEW_PATHS: usize = 64;
/// Longest path a token's view may name.
pub const MAX_TOKEN_VIEW_PATH_LEN: usize = 4096;

impl TokenView {
    /// Whether the token's commands see the host as it is.
    pub fn is_default(&self) -> bool {
        self.write_roots.is_empty() && self.hide.is_empty() && !self.no_network
    }

    /// Checks the paths: absolute, normal (no `.`, `..`, `//`, trailing `/` except `/`
    /// itself), no NUL or newline, at most [`MAX_TOKEN_VIEW_PATHS`] of each; `/` cannot be
    /// hidden, and a hidden path may not lie inside a write root (a write root's account
    /// could replace it between check and mount).
    ///
    /// ```
    /// let v = mymcp_protocol::TokenView {
    ///     write_roots: vec!["/srv/app".into()],
    ///     hide: vec!["/srv/app/secrets".into()],
    ///     no_network: false,
    /// };
    /// assert!(v.check().unwrap_err().contains("inside the write root"));
    /// ```
    pub fn check(&self) -> Result<(), String> {
        for (what, list) in [
            ("write root", &self.write_roots),
            ("hidden path", &self.hide),
        ] {
            if list.len() > MAX_TOKEN_VIEW_PATHS {
                return Err(format!("at most {MAX_TOKEN_VIEW_PATHS} of each {what}"));
            }
            for p in list {
                let normal = p.starts_with('/')
                    && p.len() <= MAX_TOKEN_VIEW_PATH_LEN
                    && !p.contains(['\0', '\n'])
                    && (p == "/"
                        || (!p.ends_with('/')
                            && p[1..]
                                .split('/')
                                .all(|c| !c.is_empty() && c != "." && c != "..")));
                if !normal {
                    return Err(format!(
                        "{what} {p:?} must be an absolute path without '.', '..' or '//'"
                    ));
                }
            }
        }
        for h in &self.hide {
            if h == "/" {
                return Err("/ cannot be hidden".to_owned());
            }
            if let Some(w) = self.write_roots.iter().find(|w| within(h, w)) {
                return Err(format!(
                    "hidden path {h:?} is inside the write root {w:?}: hide paths outside write roots"
                ));
            }
        }
        Ok(())
    }

    /// One line for listings: `write /srv/app, hide /etc/secret, no network`, or `host`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.write_roots.is_empty() {
            parts.push(format!("write {}", self.write_roots.join(" ")));
        }
        if !self.hide.is_empty() {
            parts.push(format!("hide {}", self.hide.join(" ")));
        }
        if self.no_network {
            parts.push("no network".to_owned());
        }
        if parts.is_empty() {
            "host".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Whether the normal absolute path `path` is `root` or inside it.
pub fn within(path: &str, root: &str) -> bool {
    root == "/"
        || path == root
        || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/'))
}

/// A token's own limits on its commands. `None`: the executor's default (`MYMCP_DEFAULT_*`);
/// `Some(0)` for memory, tasks or CPU: no limit for this token even where a default is set.
/// (No `skip_serializing_if` here: postcard is not self-describing; the token store has its
/// own on-disk form.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLimits {
    /// MiB of memory per call, swap included.
    pub memory_max_mib: Option<u64>,
    /// Processes and threads per call.
    pub tasks_max: Option<u64>,
    /// Percent of one CPU per call (200 = two CPUs).
    pub cpu_max_percent: Option<u64>,
    /// Longest timeout of a `bash_execute` call or a job, in seconds (1 to 86,400): a longer
    /// one asked for is cut to this.
    pub timeout_max_secs: Option<u64>,
}

/// Largest memory limit a token may carry: 16 TiB.
pub const MAX_TOKEN_MEMORY_MIB: u64 = 16 << 20;
/// Largest tasks limit a token may carry (the kernel's `pid_max` ceiling).
pub const MAX_TOKEN_TASKS: u64 = 4 << 20;
/// Largest CPU limit a token may carry: 1,024 CPUs.
pub const MAX_TOKEN_CPU_PERCENT: u64 = 102_400;
/// Largest timeout cap a token may carry: a day.
pub const MAX_TOKEN_TIMEOUT_SECS: u64 = 86_400;

impl TokenLimits {
    /// Whether every field is unset (the token uses the defaults throughout).
    pub fn is_default(&self) -> bool {
        *self == TokenLimits::default()
    }

    /// Checks the ranges; the error says which field is wrong and why.
    ///
    /// ```
    /// let mut l = mymcp_protocol::TokenLimits::default();
    /// l.tasks_max = Some(64);
    /// assert!(l.check().is_ok());
    /// l.timeout_max_secs = Some(0);
    /// assert!(l.check().unwrap_err().contains("timeout"));
    /// ```
    pub fn check(&self) -> Result<(), String> {
        let range = |name: &str, v: Option<u64>, max: u64, unit: &str| match v {
            Some(v) if v > max => Err(format!("{name} {v} is too large: at most {max}{unit}")),
            _ => Ok(()),
        };
        range(
            "memory_max",
            self.memory_max_mib,
            MAX_TOKEN_MEMORY_MIB,
            " MiB",
        )?;
        range("tasks_max", self.tasks_max, MAX_TOKEN_TASKS, "")?;
        range("cpu_max", self.cpu_max_percent, MAX_TOKEN_CPU_PERCENT, " %")?;
        match self.timeout_max_secs {
            Some(0) => Err("timeout_max must be at least 1 second".to_owned()),
            v => range("timeout_max", v, MAX_TOKEN_TIMEOUT_SECS, " s"),
        }
    }

    /// Parses a memory size: a number of MiB, or with a suffix `K`, `M`, `G`, `T` (binary
    /// units, optional `iB`/`B`); `0` or `none` for no limit. Sizes under 1 MiB are refused.
    ///
    /// ```
    /// use mymcp_protocol::TokenLimits;
    /// assert_eq!(TokenLimits::parse_memory("256M"), Ok(256));
    /// assert_eq!(TokenLimits::parse_memory("2GiB"), Ok(2048));
    /// assert_eq!(TokenLimits::parse_memory("512"), Ok(512));
    /// assert_eq!(TokenLimits::parse_memory("none"), Ok(0));
    /// assert!(TokenLimits::parse_memory("12Q").is_err());
    /// ```
    pub fn parse_memory(text: &str) -> Result<u64, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("none") {
            return Ok(0);
        }
        let bad = || {
            format!(
                "invalid memory size {text:?}: use MiB or a number with K, M, G or T (256M, 2G)"
            )
        };
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let unit = unit.trim().to_ascii_uppercase();
        let unit = unit
            .strip_suffix("IB")
            .or_else(|| unit.strip_suffix('B'))
            .unwrap_or(&unit);
        let kib: u64 = match unit {
            "" | "M" => n.checked_mul(1024),
            "K" => Some(n),
            "G" => n.checked_mul(1 << 20),
            "T" => n.checked_mul(1 << 30),
            _ => None,
        }
        .ok_or_else(bad)?;
        if kib > 0 && kib < 1024 {
            return Err(format!("memory size {text:?} is below 1 MiB"));
        }
        Ok(kib / 1024)
    }

    /// One line for listings: `memory 256 MiB, tasks 64, cpu 50 %, timeout 60 s`, or
    /// `defaults`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let none_or = |v: u64, s: String| if v == 0 { "none".to_owned() } else { s };
        if let Some(m) = self.memory_max_mib {
            parts.push(format!("memory {}", none_or(m, format!("{m} MiB"))));
        }
        if let Some(t) = self.tasks_max {
            parts.push(format!("tasks {}", none_or(t, t.to_string())));
        }
        if let Some(c) = self.cpu_max_percent {
            parts.push(format!("cpu {}", none_or(c, format!("{c} %"))));
        }
        if let Some(t) = self.timeout_max_secs {
            parts.push(format!("timeout {t} s"));
        }
        if parts.is_empty() {
            "defaults".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// What `mymcpctl status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub version: String,
    pub build_id: String,
    pub uptime_secs: u64,
    pub tokens: u64,
    pub running_commands: u64,
    pub token_file: String,
    pub running_jobs: u64,
    pub audit: AuditState,
    /// How commands are confined: the kill mode, the cgroups used, the default limits.
    pub confinement: String,
    /// Whether a process that leaves its command's process group is still killed with it.
    pub confined: bool,
    /// Why commands cannot get a mount namespace of their own here (mymcp's files are then
    /// not read-only to them, and tokens with a view run no command); `None`: they can.
    pub views_unavailable: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rw_allows_ro_but_not_the_reverse() {
        assert!(Role::Rw.allows(Role::Ro));
        assert!(Role::Rw.allows(Role::Rw));
        assert!(!Role::Ro.allows(Role::Rw));
        assert!(!Role::Admin.allows(Role::Ro));
        assert!(!Role::Metrics.allows(Role::Ro));
    }

    #[test]
    fn role_names_round_trip() {
        for r in [Role::Ro, Role::Rw, Role::Admin, Role::Metrics] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("RW"), None);
    }

    #[test]
    fn hello_mismatch_is_detected() {
        assert!(Hello::current().is_compatible());
        let mut h = Hello::current();
        h.build_id.push('x');
        assert!(!h.is_compatible());
        let h = Hello {
            wire_version: WIRE_VERSION + 1,
            ..Hello::current()
        };
        assert!(!h.is_compatible());
    }

    #[test]
    fn origins_are_short_visible_ascii_or_do_not_decode() {
        let call = |peer: &str, request_id: String| ClientFrame::Request {
            id: 1,
            body: FrontendRequest::Call {
                token: TokenDigest([1; 32]),
                origin: CallOrigin {
                    peer: peer.into(),
                    request_id,
                },
                call: ToolCall::ReadFile(ReadFile {
                    file_path: "/etc/hostname".into(),
                    offset: None,
                    limit: None,
                }),
            },
        };
        for (peer, request_id, ok) in [
            ("192.0.2.1", "r".repeat(MAX_REQUEST_ID_LEN), true),
            ("", String::new(), true),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
                "a-b_c".into(),
                true,
            ),
            ("192.0.2.1", "r".repeat(MAX_REQUEST_ID_LEN + 1), false),
            (
                "192.0.2.1",
                "r1\n2026-01-01T00:00:00Z  INFO forged".into(),
                false,
            ),
            ("192.0.2.1", "r 1".into(), false),
            ("192.0.2.1", "r\u{1b}[2K".into(), false),
            ("192.0.2.1", "é".into(), false),
            (&"1".repeat(MAX_PEER_LEN + 1), "r".into(), false),
            ("192.0.2.1\r", "r".into(), false),
        ] {
            let bytes = frame::encode(&call(peer, request_id.clone())).unwrap();
            let back = frame::decode::<ClientFrame<FrontendRequest>>(&bytes[frame::HEADER_LEN..]);
            assert_eq!(back.is_ok(), ok, "{peer:?} {request_id:?}");
        }
    }

    fn read_call() -> FrontendRequest {
        FrontendRequest::Call {
            token: TokenDigest([1; 32]),
            origin: CallOrigin {
                peer: "p".into(),
                request_id: "r".into(),
            },
            call: ToolCall::ReadFile(ReadFile {
                file_path: "/f".into(),
                offset: None,
                limit: None,
            }),
        }
    }

    #[test]
    fn a_request_without_a_trace_is_encoded_as_before_tracing_existed() {
        // The bytes of this Call as the protocol encoded it before `Traced` was added: a peer
        // that sends no trace context sends exactly these.
        let mut golden = vec![0, 0, 0, 45, 1, 7, 1];
        golden.extend([1; 32]);
        golden.extend([1, b'p', 1, b'r', 1, 2, b'/', b'f', 0, 0]);
        let plain = ClientFrame::Request {
            id: 7,
            body: read_call().with_trace(None),
        };
        assert_eq!(frame::encode(&plain).unwrap(), golden);
    }

    #[test]
    fn a_trace_wraps_a_call_and_comes_off_again_but_cannot_nest() {
        let trace = TraceContext {
            trace_id: TraceId([3; 16]),
            parent: SpanId([4; 8]),
            sampled: true,
        };
        let traced = read_call().with_trace(Some(trace));
        assert!(matches!(traced, FrontendRequest::Traced { .. }));
        let bytes = frame::encode(&traced).unwrap();
        let back: FrontendRequest = frame::decode(&bytes[frame::HEADER_LEN..]).unwrap();
        assert_eq!(back.split_trace(), (read_call(), Some(trace)));
        // Only Call, Refused and Redeem carry a trace: others go out as they are.
        let identify = FrontendRequest::Identify {
            token: TokenDigest([1; 32]),
        };
        assert_eq!(identify.clone().with_trace(Some(trace)), identify);
        // A Traced inside a Traced is not a TracedRequest: the frame does not decode.
        let mut nested = bytes[frame::HEADER_LEN..].to_vec();
        let inner = 1 + 16 + 8 + 1; // Traced's index, the trace context
        nested.truncate(inner);
        nested.push(3); // no TracedRequest has index 3
        nested.extend_from_slice(&bytes[frame::HEADER_LEN..]);
        assert!(frame::decode::<FrontendRequest>(&nested).is_err());
    }

    #[test]
    fn digest_debug_does_not_print_the_whole_digest() {
        let d = TokenDigest([0xab; 32]);
        let s = format!("{d:?}");
        assert!(s.len() < 30, "{s}");
    }
}
