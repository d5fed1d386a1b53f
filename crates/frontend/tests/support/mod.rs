//! A fake `mymcp-executor` for tests: a Unix socket in a temporary directory that speaks the
//! real wire protocol (hello, multiplexed requests, cancel) with canned, predictable answers,
//! and reports every frame it receives.
//!
//! Tokens: [`RW_TOKEN`] and [`RO_TOKEN`] are MCP clients, [`ADMIN_TOKEN`] is an admin token,
//! [`METRICS_TOKEN`] the metrics token (its snapshot counts 3 ok `read_file` calls by ro);
//! anything else is unknown. Calls: `bash_execute` echoes its command on stdout, except
//! `"hang"` (never answered until cancelled), `"slow"` (answered after 300 ms),
//! `"progress"` (two progress frames 100 ms apart, then the answer) and
//! `"sleep-out"` (reported as timed out);
//! `read_file` returns one numbered line holding the path; job tools answer `NotFound`;
//! `prepare_download` grants [`FAKE_GRANT`], whose redeem answers `ticket_not_found`.

#![allow(dead_code)]

use mymcp_frontend::bearer::token_digest;
use mymcp_protocol::frame::{self, HEADER_LEN, MAX_FRAME_LEN};
use mymcp_protocol::{
    BashOutput, CapturedStream, ClientFrame, Direction, ErrorCode, FrontendRequest,
    FrontendResponse, GrantId, Hello, Identity, Progress, ReadFileOutput, Role, ServerFrame,
    TokenDigest, ToolCall, ToolFailure, ToolOutput, TransferError, TransferErrorKind,
    TransferGrant,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

pub const RW_TOKEN: &str = "tok_rw_0123456789";
pub const RO_TOKEN: &str = "tok_ro_0123456789";
pub const ADMIN_TOKEN: &str = "tok_admin_0123456789";
pub const METRICS_TOKEN: &str = "tok_metrics_0123456789";
/// The grant every `prepare_download` of the fake gets (redeeming it answers "not found").
pub const FAKE_GRANT: GrantId = GrantId([0x5a; 16]);

/// How the fake answers a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Greeting {
    Welcome,
    Refuse,
}

/// A running fake executor. Dropping it stops it and removes its directory.
pub struct FakeExecutor {
    pub socket: PathBuf,
    dir: TempDir,
    frames: mpsc::UnboundedReceiver<ClientFrame<FrontendRequest>>,
    task: AbortOnDrop,
}

impl FakeExecutor {
    pub fn start() -> FakeExecutor {
        FakeExecutor::start_in(TempDir::new(), Greeting::Welcome)
    }

    pub fn start_in(dir: TempDir, greeting: Greeting) -> FakeExecutor {
        let socket = dir.path().join("executor.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).expect("bind fake executor socket");
        let (tx, frames) = mpsc::unbounded_channel();
        let task = AbortOnDrop(tokio::spawn(accept_loop(listener, tx, greeting)));
        FakeExecutor {
            socket,
            dir,
            frames,
            task,
        }
    }

    /// Stops answering, closes every connection and the socket; keeps the directory.
    pub fn stop(self) -> TempDir {
        drop(self.task);
        let _ = std::fs::remove_file(&self.socket);
        self.dir
    }

    /// The next frame received after a hello (a request or a cancel), waiting up to 5 s.
    pub async fn next_frame(&mut self) -> ClientFrame<FrontendRequest> {
        tokio::time::timeout(Duration::from_secs(5), self.frames.recv())
            .await
            .expect("fake executor waited 5 s for a frame")
            .expect("fake executor stopped")
    }

    /// Every frame received so far, without waiting.
    pub fn drain(&mut self) -> Vec<ClientFrame<FrontendRequest>> {
        let mut out = Vec::new();
        while let Ok(f) = self.frames.try_recv() {
            out.push(f);
        }
        out
    }
}

pub fn identity_of(token: &TokenDigest) -> Option<Identity> {
    [
        (RW_TOKEN, Role::Rw),
        (RO_TOKEN, Role::Ro),
        (ADMIN_TOKEN, Role::Admin),
    ]
    .into_iter()
    .find(|(t, _)| token_digest(t.as_bytes()) == *token)
    .map(|(_, role)| Identity {
        name: format!("{role}-client"),
        role,
    })
}

async fn accept_loop(
    listener: UnixListener,
    frames: mpsc::UnboundedSender<ClientFrame<FrontendRequest>>,
    greeting: Greeting,
) {
    // Aborting this task drops the set, which aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        connections.spawn(serve(stream, frames.clone(), greeting));
    }
}

async fn read_frame(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> Option<ClientFrame<FrontendRequest>> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await.ok()?;
    let len = frame::body_len(header, MAX_FRAME_LEN).ok()?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    Some(frame::decode(&body).expect("frontend sent an undecodable frame"))
}

async fn serve(
    stream: UnixStream,
    frames: mpsc::UnboundedSender<ClientFrame<FrontendRequest>>,
    greeting: Greeting,
) {
    let (mut rd, wr) = stream.into_split();
    let (out, mut outgoing) = mpsc::unbounded_channel::<ServerFrame<FrontendResponse>>();
    let writer = tokio::spawn(async move {
        let mut wr = wr;
        while let Some(f) = outgoing.recv().await {
            if wr.write_all(&frame::encode(&f).unwrap()).await.is_err() {
                return;
            }
        }
    });
    let _writer = AbortOnDrop(writer);

    match read_frame(&mut rd).await {
        Some(ClientFrame::Hello(h)) if h.is_compatible() => {}
        other => panic!("expected a compatible hello first, got {other:?}"),
    }
    if greeting == Greeting::Refuse {
        let _ = out.send(ServerFrame::Refused {
            reason: "build mismatch (test)".into(),
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        return;
    }
    let _ = out.send(ServerFrame::Welcome(Hello::current()));

    while let Some(f) = read_frame(&mut rd).await {
        let _ = frames.send(f.clone());
        match f {
            ClientFrame::Hello(_) => panic!("second hello"),
            ClientFrame::Cancel { id } => {
                let _ = out.send(ServerFrame::Response {
                    id,
                    body: FrontendResponse::Tool(Err(ToolFailure::new(
                        ErrorCode::Cancelled,
                        "cancelled",
                    ))),
                });
            }
            ClientFrame::Request { id, body } => {
                let command = match &body {
                    FrontendRequest::Call {
                        call: ToolCall::BashExecute(b),
                        ..
                    } => b.command.clone(),
                    _ => String::new(),
                };
                if let Some(body) = answer(body) {
                    let out = out.clone();
                    tokio::spawn(async move {
                        match command.as_str() {
                            "slow" => tokio::time::sleep(Duration::from_millis(300)).await,
                            "progress" => {
                                for n in 1..=2u64 {
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    let progress = Progress {
                                        elapsed_ms: n * 1000,
                                        stdout_bytes: n * 100,
                                        stderr_bytes: n,
                                    };
                                    let _ = out.send(ServerFrame::Progress { id, progress });
                                }
                            }
                            _ => {}
                        }
                        let _ = out.send(ServerFrame::Response { id, body });
                    });
                }
            }
        }
    }
}

/// The canned answer, or `None` to leave the request pending.
fn answer(request: FrontendRequest) -> Option<FrontendResponse> {
    let (request, _trace) = request.split_trace();
    Some(match request {
        FrontendRequest::Identify { token } => match identity_of(&token) {
            Some(identity) => FrontendResponse::Identity(identity),
            None => FrontendResponse::Unauthenticated,
        },
        FrontendRequest::Admin { token, op, .. } => {
            use mymcp_protocol::{AdminOp, AdminOutcome};
            if identity_of(&token).map(|i| i.role) != Some(Role::Admin) {
                return Some(FrontendResponse::Admin(AdminOutcome::Forbidden));
            }
            FrontendResponse::Admin(match op {
                AdminOp::Check => AdminOutcome::Allowed,
                AdminOp::List => AdminOutcome::Tokens(Vec::new()),
                AdminOp::Create { .. } => {
                    AdminOutcome::Failed("the fake executor creates no tokens".into())
                }
                AdminOp::Revoke { .. } | AdminOp::OAuth(_) => AdminOutcome::NotFound,
            })
        }
        FrontendRequest::Refused { token, failure, .. } => match identity_of(&token) {
            Some(i) if i.role.is_client() => FrontendResponse::Tool(Err(failure)),
            _ => FrontendResponse::Unauthenticated,
        },
        // The fake executor runs no jobs.
        FrontendRequest::OAuth(request) => {
            use mymcp_protocol::oauth::{OAuthError, OAuthErrorCode, OAuthOutcome, OAuthRequest};
            FrontendResponse::OAuth(match request {
                // The code `good-code` for the verifier `v` x 43 and client `c`.
                OAuthRequest::Exchange {
                    code,
                    client,
                    verifier,
                    ..
                } if code == token_digest(b"good-code")
                    && client.client_id == "c"
                    && verifier == "v".repeat(43) =>
                {
                    OAuthOutcome::Tokens(mymcp_protocol::oauth::TokenSet {
                        access_token: "at".into(),
                        refresh_token: "rt".into(),
                        expires_in: 3600,
                        scope: mymcp_protocol::Role::Ro,
                    })
                }
                OAuthRequest::Revoke { .. } => OAuthOutcome::Revoked,
                OAuthRequest::Register { client, .. } => {
                    OAuthOutcome::Registered(mymcp_protocol::oauth::Registered {
                        client_id: "mcpc_1".into(),
                        client_secret: None,
                        issued_at: 1,
                        client,
                    })
                }
                OAuthRequest::Authorize { .. } => {
                    OAuthOutcome::Opened(mymcp_protocol::oauth::PendingRef {
                        id: mymcp_protocol::oauth::PendingId([1; 16]),
                        secret: mymcp_protocol::oauth::Secret([2; 32]),
                    })
                }
                OAuthRequest::Consent { request }
                    if request.secret == mymcp_protocol::oauth::Secret([2; 32]) =>
                {
                    OAuthOutcome::Waiting(mymcp_protocol::oauth::Waiting {
                        approval_code: "ABCD-EFGH".into(),
                        client_id: "c".into(),
                        client_name: Some("Client <b>".into()),
                        redirect_uri: "https://c.example/cb".into(),
                        scope: mymcp_protocol::Role::Ro,
                        csrf: mymcp_protocol::oauth::Secret([3; 32]),
                        pam: false,
                        expires_in: 600,
                        notice: None,
                    })
                }
                _ => OAuthOutcome::Error(OAuthError {
                    code: OAuthErrorCode::InvalidGrant,
                    description: "no".into(),
                    redirect: None,
                }),
            })
        }
        FrontendRequest::Jobs { token } => match identity_of(&token) {
            Some(i) if i.role.is_client() => FrontendResponse::Jobs(Vec::new()),
            _ => FrontendResponse::Unauthenticated,
        },
        // The fake host has an overview: every tool is listed.
        FrontendRequest::Offer { token } => match identity_of(&token) {
            Some(i) if i.role.is_client() => FrontendResponse::Offer(mymcp_protocol::HostOffer {
                server_overview: true,
            }),
            _ => FrontendResponse::Unauthenticated,
        },
        FrontendRequest::Metrics { token } => {
            use mymcp_protocol::{CallResult, ExecutorMetrics, MetricsOutcome, ToolCallCount};
            FrontendResponse::Metrics(match token {
                Some(t) if t == token_digest(METRICS_TOKEN.as_bytes()) => {
                    MetricsOutcome::Snapshot(ExecutorMetrics {
                        tool_calls: vec![ToolCallCount {
                            tool: mymcp_protocol::ToolName::ReadFile,
                            role: Role::Ro,
                            result: CallResult::Ok,
                            count: 3,
                        }],
                        ..ExecutorMetrics::default()
                    })
                }
                _ => MetricsOutcome::Unauthorized,
            })
        }
        FrontendRequest::Call { token, call, .. } => {
            let Some(identity) = identity_of(&token).filter(|i| i.role.is_client()) else {
                return Some(FrontendResponse::Unauthenticated);
            };
            let needed = call.name().required_role();
            if !identity.role.allows(needed) {
                return Some(FrontendResponse::Tool(Err(ToolFailure::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "Permission denied: tool '{}' requires {needed} role",
                        call.name()
                    ),
                ))));
            }
            FrontendResponse::Tool(match call {
                ToolCall::BashExecute(b) if b.command == "hang" => return None,
                ToolCall::BashExecute(b) => Ok(ToolOutput::Bash(BashOutput {
                    stdout: CapturedStream {
                        head: b.command.clone().into_bytes(),
                        total_bytes: b.command.len() as u64,
                    },
                    stderr: CapturedStream::default(),
                    exit_code: if b.command == "sleep-out" { -1 } else { 0 },
                    timed_out: b.command == "sleep-out",
                    timeout_secs: b.timeout.unwrap_or(30).clamp(1, 600) as u32,
                    limit_hit: None,
                })),
                ToolCall::ReadFile(r) if r.file_path == "/missing" => Err(ToolFailure::new(
                    ErrorCode::FileNotFoundError,
                    "File not found: /missing",
                )
                .with_suggestion("Check the file path")),
                ToolCall::ReadFile(r) => Ok(ToolOutput::ReadFile(ReadFileOutput {
                    content: format!("   1\t{}", r.file_path),
                    total_lines: 1,
                    total_lines_exact: true,
                    truncated: false,
                })),
                ToolCall::PrepareDownload(p) => Ok(ToolOutput::TransferGrant(TransferGrant {
                    grant: FAKE_GRANT,
                    direction: Direction::Download,
                    expires_at_unix: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs()
                        + 300,
                    expires_in: 300,
                    expires_at: "2030-01-01T00:00:00Z".into(),
                    path: p.src_path,
                    bytes: 3,
                    overwrite: false,
                    sha256: None,
                })),
                ToolCall::JobStatus(_) | ToolCall::JobOutput(_) | ToolCall::JobKill(_) => Err(
                    ToolFailure::new(ErrorCode::NotFound, "Job not found (fake executor)"),
                ),
                other => Err(ToolFailure::new(
                    ErrorCode::InternalError,
                    format!("the fake executor does not run {}", other.name()),
                )),
            })
        }
        // The fake knows no grants.
        FrontendRequest::Redeem { .. } => FrontendResponse::Transfer(Err(TransferError::new(
            TransferErrorKind::NotFound,
            "Mint a new ticket.",
        ))),
        FrontendRequest::Probe { .. } => FrontendResponse::TransferProbe(Err(TransferError::new(
            TransferErrorKind::NotFound,
            "Mint a new ticket.",
        ))),
        FrontendRequest::CommitUpload { .. } => FrontendResponse::Acknowledged(false),
        FrontendRequest::AuditRecords { .. } => {
            FrontendResponse::AuditRecords(mymcp_protocol::AuditRecords::Off)
        }
        FrontendRequest::TelemetryMetrics => {
            FrontendResponse::Metrics(mymcp_protocol::MetricsOutcome::Disabled)
        }
        FrontendRequest::Traced { .. } => return None,
    })
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A temporary directory removed on drop (short path: Unix socket paths are limited).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "mymcp-fe-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
