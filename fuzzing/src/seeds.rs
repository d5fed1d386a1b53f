//! The seed corpus, made by the real encoders: protocol frames from the frame codec, MCP
//! requests as clients send them, a token store written by the executor's own store, the
//! example env file of `mymcpctl`, tickets minted (and tampered with) by the frontend's signer.

use crate::targets::{mcp_mode, TICKET_KEY, TICKET_NOW};
use mymcp_frontend::revisions::{META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION};
use mymcp_frontend::tickets::Tickets;
use mymcp_protocol::frame;
use mymcp_protocol::*;
use serde::Serialize;
use serde_json::{json, Value};

/// One seed: its target, a file name, and its bytes.
#[derive(Debug, Clone)]
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

fn body<T: Serialize>(msg: &T) -> Vec<u8> {
    frame::encode(msg).expect("a seed encodes")[frame::HEADER_LEN..].to_vec()
}

fn origin() -> CallOrigin {
    CallOrigin {
        peer: "192.0.2.7".into(),
        request_id: "4bf92f3577b34da6".into(),
    }
}

/// A real argument object for each tool, as an MCP client sends it.
pub fn tool_arguments() -> Vec<(ToolName, Value)> {
    vec![
        (
            ToolName::BashExecute,
            json!({"command": "ls -la /tmp", "timeout": 30, "working_dir": "/tmp", "max_output_bytes": 65536, "background": false}),
        ),
        (
            ToolName::ReadFile,
            json!({"file_path": "/etc/hostname", "offset": 1, "limit": 200}),
        ),
        (
            ToolName::WriteFile,
            json!({"file_path": "/tmp/notes.txt", "content": "line 1\nline 2\n"}),
        ),
        (
            ToolName::EditFile,
            json!({"file_path": "/tmp/notes.txt", "old_string": "line 1", "new_string": "line one", "replace_all": false}),
        ),
        (
            ToolName::Glob,
            json!({"pattern": "**/*.rs", "path": "/srv"}),
        ),
        (
            ToolName::Grep,
            json!({"pattern": "fn main", "path": "/srv", "glob": "*.rs", "output_mode": "content", "context_lines": 2, "max_results": 100, "case_insensitive": true}),
        ),
        (ToolName::JobStatus, json!({"job_id": "job_1a2b3c"})),
        (
            ToolName::JobOutput,
            json!({"job_id": "job_1a2b3c", "stdout_offset": 0, "stderr_offset": 0, "max_bytes": 4096, "wait_seconds": 5}),
        ),
        (
            ToolName::JobKill,
            json!({"job_id": "job_1a2b3c", "signal": "TERM"}),
        ),
        (
            ToolName::PrepareUpload,
            json!({"dest_path": "/tmp/upload.bin", "max_bytes": 1048576, "expires_in": 300, "overwrite": true, "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}),
        ),
        (
            ToolName::PrepareDownload,
            json!({"src_path": "/var/log/syslog", "expires_in": 60}),
        ),
        (ToolName::ServerOverview, json!({})),
        (
            ToolName::TerminalOpen,
            json!({"command": "python3 -q", "working_dir": "/tmp", "rows": 24, "cols": 80}),
        ),
        (
            ToolName::TerminalSend,
            json!({"terminal_id": "0123456789abcdef", "text": "print(6*7)", "keys": ["Enter", "Ctrl-C"]}),
        ),
        (
            ToolName::TerminalRead,
            json!({"terminal_id": "0123456789abcdef", "wait_for": ">>> $", "timeout": 10}),
        ),
        (
            ToolName::TerminalResize,
            json!({"terminal_id": "0123456789abcdef", "rows": 40, "cols": 120}),
        ),
        (ToolName::TerminalList, json!({})),
        (
            ToolName::TerminalClose,
            json!({"terminal_id": "0123456789abcdef"}),
        ),
    ]
}

fn tool_calls() -> Vec<ToolCall> {
    tool_arguments()
        .into_iter()
        .map(|(tool, args)| {
            mymcp_frontend::arguments::decode(tool, Some(&args)).expect("seed arguments decode")
        })
        .collect()
}

fn frontend_requests() -> Vec<(String, FrontendRequest)> {
    let token = TokenDigest([0x42; 32]);
    let mut out: Vec<(String, FrontendRequest)> = tool_calls()
        .into_iter()
        .map(|call| {
            (
                format!("call-{}", call.name()),
                FrontendRequest::Call {
                    token,
                    origin: origin(),
                    call,
                },
            )
        })
        .collect();
    let grant = GrantId([0x17; 16]);
    out.extend([
        ("identify".into(), FrontendRequest::Identify { token }),
        (
            "admin-check".into(),
            FrontendRequest::Admin {
                token,
                origin: origin(),
                op: AdminOp::Check,
            },
        ),
        (
            "admin-list".into(),
            FrontendRequest::Admin {
                token,
                origin: origin(),
                op: AdminOp::List,
            },
        ),
        (
            "admin-create".into(),
            FrontendRequest::Admin {
                token,
                origin: origin(),
                op: AdminOp::Create {
                    name: "ci".into(),
                    role: Role::Rw,
                    user: Some("ci-runner".into()),
                    limits: TokenLimits {
                        memory_max_mib: Some(256),
                        tasks_max: Some(64),
                        cpu_max_percent: None,
                        timeout_max_secs: Some(120),
                    },
                    view: TokenView {
                        write_roots: vec!["/srv/ci".into()],
                        hide: vec!["/etc/secret".into()],
                        no_network: true,
                    },
                },
            },
        ),
        (
            "admin-revoke".into(),
            FrontendRequest::Admin {
                token,
                origin: origin(),
                op: AdminOp::Revoke {
                    selector: "0123456789ab".into(),
                },
            },
        ),
        (
            "metrics".into(),
            FrontendRequest::Metrics { token: Some(token) },
        ),
        (
            "metrics-anonymous".into(),
            FrontendRequest::Metrics { token: None },
        ),
        (
            "refused".into(),
            FrontendRequest::Refused {
                token,
                origin: origin(),
                tool: "no_such_tool".into(),
                failure: ToolFailure::new(ErrorCode::UnknownTool, "Unknown tool: no_such_tool"),
            },
        ),
        (
            "redeem-upload".into(),
            FrontendRequest::Redeem {
                grant,
                direction: Direction::Upload,
                announced_len: Some(1024),
                origin: origin(),
            },
        ),
        (
            "probe-download".into(),
            FrontendRequest::Probe {
                grant,
                direction: Direction::Download,
                origin: origin(),
            },
        ),
        (
            "commit-upload".into(),
            FrontendRequest::CommitUpload { grant, claim: 3 },
        ),
        ("offer".into(), FrontendRequest::Offer { token }),
        ("jobs".into(), FrontendRequest::Jobs { token }),
        (
            "audit-records".into(),
            FrontendRequest::AuditRecords { from: 12 },
        ),
        (
            "telemetry-metrics".into(),
            FrontendRequest::TelemetryMetrics,
        ),
        (
            "traced-call".into(),
            FrontendRequest::Call {
                token,
                origin: origin(),
                call: tool_calls().remove(0),
            }
            .with_trace(Some(mymcp_protocol::TraceContext {
                trace_id: mymcp_protocol::TraceId([0x4b; 16]),
                parent: mymcp_protocol::SpanId([0xf0; 8]),
                sampled: true,
            })),
        ),
    ]);
    out
}

fn control_requests() -> Vec<(String, ControlRequest)> {
    vec![
        (
            "token-add".into(),
            ControlRequest::TokenAdd {
                name: "laptop".into(),
                role: Role::Ro,
                user: None,
                limits: TokenLimits::default(),
                view: TokenView::default(),
            },
        ),
        ("token-list".into(), ControlRequest::TokenList),
        (
            "token-revoke".into(),
            ControlRequest::TokenRevoke {
                selector: "tok_00".into(),
            },
        ),
        ("status".into(), ControlRequest::Status),
        (
            "token-rotate".into(),
            ControlRequest::TokenRotate { role: Role::Admin },
        ),
        (
            "token-remove-role".into(),
            ControlRequest::TokenRemoveRole {
                role: Role::Metrics,
            },
        ),
        (
            "token-import".into(),
            ControlRequest::TokenImport {
                tokens: vec![ImportedToken {
                    digest: TokenDigest([0x33; 32]),
                    name: "imported".into(),
                    role: Role::Rw,
                    created_at: "2024-01-01T00:00:00Z".into(),
                    last_used: None,
                    enabled: true,
                }],
            },
        ),
        ("audit-state".into(), ControlRequest::AuditState),
    ]
}

fn info() -> TokenInfo {
    TokenInfo {
        id: "0123456789ab".into(),
        name: "laptop".into(),
        role: Role::Ro,
        user: "alice".into(),
        created_at: "2024-01-01T00:00:00Z".into(),
        last_used: Some("2024-02-01T00:00:00Z".into()),
        enabled: true,
        limits: TokenLimits::default(),
        view: TokenView::default(),
    }
}

fn frontend_responses() -> Vec<(String, ServerFrame<FrontendResponse>)> {
    let response = |id, body| ServerFrame::Response { id, body };
    vec![
        ("welcome".into(), ServerFrame::Welcome(Hello::current())),
        (
            "refused".into(),
            ServerFrame::Refused {
                reason: "build mismatch".into(),
            },
        ),
        (
            "identity".into(),
            response(
                1,
                FrontendResponse::Identity(Identity {
                    name: "laptop".into(),
                    role: Role::Rw,
                }),
            ),
        ),
        (
            "unauthenticated".into(),
            response(2, FrontendResponse::Unauthenticated),
        ),
        (
            "tool-ok".into(),
            response(
                3,
                FrontendResponse::Tool(Ok(ToolOutput::ReadFile(ReadFileOutput {
                    content: "   1\tmyhost".into(),
                    total_lines: 1,
                    total_lines_exact: true,
                    truncated: false,
                }))),
            ),
        ),
        (
            "tool-err".into(),
            response(
                4,
                FrontendResponse::Tool(Err(ToolFailure::new(
                    ErrorCode::ProtectedPath,
                    "protected",
                )
                .with_suggestion("use another path"))),
            ),
        ),
        (
            "admin-tokens".into(),
            response(
                5,
                FrontendResponse::Admin(AdminOutcome::Tokens(vec![info()])),
            ),
        ),
        (
            "metrics".into(),
            response(
                6,
                FrontendResponse::Metrics(MetricsOutcome::Snapshot(ExecutorMetrics::default())),
            ),
        ),
        (
            "progress".into(),
            ServerFrame::Progress {
                id: 7,
                progress: Progress {
                    elapsed_ms: 5000,
                    stdout_bytes: 10,
                    stderr_bytes: 2,
                },
            },
        ),
        (
            "pipe".into(),
            ServerFrame::Pipe {
                id: 8,
                start: TransferStart {
                    claim: 1,
                    size: Some(99),
                    file_name: "a.txt".into(),
                },
            },
        ),
        (
            "acknowledged".into(),
            response(9, FrontendResponse::Acknowledged(true)),
        ),
        (
            "offer".into(),
            response(
                10,
                FrontendResponse::Offer(HostOffer {
                    server_overview: true,
                }),
            ),
        ),
    ]
}

fn control_responses() -> Vec<(String, ServerFrame<ControlResponse>)> {
    let response = |id, body| ServerFrame::Response { id, body };
    vec![
        ("welcome".into(), ServerFrame::Welcome(Hello::current())),
        (
            "token-added".into(),
            response(
                1,
                ControlResponse::TokenAdded {
                    token: format!("tok_{}", "ab".repeat(32)),
                    info: info(),
                },
            ),
        ),
        (
            "tokens".into(),
            response(2, ControlResponse::Tokens(vec![info(), info()])),
        ),
        (
            "error".into(),
            response(
                3,
                ControlResponse::Error {
                    code: ErrorCode::NotFound,
                    message: "no token matches".into(),
                },
            ),
        ),
        (
            "status".into(),
            response(
                4,
                ControlResponse::Status(StatusInfo {
                    version: "0.1.0".into(),
                    build_id: BUILD_ID.into(),
                    uptime_secs: 12,
                    tokens: 3,
                    running_commands: 1,
                    token_file: "/var/lib/mymcp/tokens.json".into(),
                    running_jobs: 0,
                    audit: AuditState::default(),
                    confinement: "cgroup v2 cgroup.kill; v2 /sys/fs/cgroup/mymcp/1-2 +memory"
                        .into(),
                    confined: true,
                    views_unavailable: None,
                }),
            ),
        ),
        (
            "imported".into(),
            response(
                5,
                ControlResponse::Imported {
                    added: 2,
                    skipped: 1,
                },
            ),
        ),
    ]
}

/// MCP POST bodies as clients send them, with the headers they send (as a mode byte).
fn mcp_bodies() -> Vec<(String, u8, Value)> {
    const RW: usize = 0;
    const RO: usize = 1;
    const LEGACY: usize = 4; // 2025-11-25
    const MODERN: usize = 5; // 2026-07-28
    let modern_meta = json!({
        META_PROTOCOL_VERSION: "2026-07-28",
        META_CLIENT_CAPABILITIES: {},
        "io.modelcontextprotocol/clientInfo": {"name": "seed", "version": "1"},
    });
    let mut out = vec![
        (
            "initialize".into(),
            mcp_mode(RW, 0, false, false, false),
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "seed", "version": "1.0"}}}),
        ),
        (
            "initialized".into(),
            mcp_mode(RW, LEGACY, false, false, false),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        ),
        (
            "ping".into(),
            mcp_mode(RO, LEGACY, false, false, false),
            json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}),
        ),
        (
            "tools-list".into(),
            mcp_mode(RO, LEGACY, false, false, false),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        ),
        (
            "batch".into(),
            mcp_mode(RW, 2, false, false, false),
            json!([
                {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "read_file", "arguments": {"file_path": "/etc/hostname"}}},
            ]),
        ),
        (
            "cancelled".into(),
            mcp_mode(RW, LEGACY, false, false, false),
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "user"}}),
        ),
        (
            "unknown-tool".into(),
            mcp_mode(RW, LEGACY, false, false, false),
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "rm_rf", "arguments": {}}}),
        ),
        (
            "bad-arguments".into(),
            mcp_mode(RO, LEGACY, false, false, false),
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "bash_execute", "arguments": {"command": 1}}}),
        ),
        (
            "streamed-call".into(),
            mcp_mode(RW, LEGACY, false, true, false),
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "bash_execute", "arguments": {"command": "sleep 3"}, "_meta": {"progressToken": "t1"}}}),
        ),
        (
            "discover".into(),
            mcp_mode(RW, MODERN, true, false, false),
            json!({"jsonrpc": "2.0", "id": 6, "method": "server/discover", "params": {"_meta": modern_meta}}),
        ),
        (
            "modern-tools-list".into(),
            mcp_mode(RO, MODERN, true, false, false),
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"_meta": modern_meta}}),
        ),
        (
            "modern-tools-call".into(),
            mcp_mode(RW, MODERN, true, true, true),
            json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "glob", "arguments": {"pattern": "*"}, "_meta": modern_meta}}),
        ),
    ];
    for (i, (tool, args)) in tool_arguments().into_iter().enumerate() {
        out.push((
            format!("call-{tool}"),
            mcp_mode(i % 2, LEGACY, false, false, false),
            json!({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call", "params": {"name": tool.as_str(), "arguments": args}}),
        ));
    }
    out
}

/// Bodies at and beyond the nesting and value limits.
fn limit_bodies() -> Vec<(String, Vec<u8>)> {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    let many = |n: usize| {
        let mut s = String::from("[");
        s.push_str(&vec!["0"; n].join(","));
        s.push(']');
        s.into_bytes()
    };
    vec![
        ("nest-64".into(), nest(64)),
        ("nest-65".into(), nest(65)),
        (
            "nest-in-string".into(),
            format!("{{\"a\":\"{}\"}}", "[{".repeat(100)).into_bytes(),
        ),
        ("values-1000".into(), many(1000)),
        (
            "escaped-quote".into(),
            br#"{"a":"\"[[[[","b":[{"c":[1,2,3]}]}"#.to_vec(),
        ),
        ("not-json".into(), b"{\"jsonrpc\": \"2.0\", ".to_vec()),
    ]
}

/// Writes a token store with the executor's own store code and returns its text.
fn token_store_files() -> Vec<(String, Vec<u8>)> {
    use mymcp_tokens::TokenStore;
    let dir = std::env::temp_dir().join(format!("mymcp-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("tokens.json");
    let store = TokenStore::open(&path).expect("a fresh store");
    let empty = std::fs::read(&path).expect("store written");
    store.add("laptop", Role::Rw).expect("add");
    store.add("ci runner", Role::Ro).expect("add");
    let (_, metrics) = store.add("prometheus", Role::Metrics).expect("add");
    store.rotate(Role::Admin).expect("rotate");
    store.revoke(&metrics.id).expect("revoke");
    let full = std::fs::read(&path).expect("store written");
    let _ = std::fs::remove_dir_all(&dir);
    vec![
        ("empty".into(), empty),
        ("with-retired".into(), full),
        (
            "legacy-python-go".into(),
            serde_json::to_vec_pretty(&json!({"tokens": {
                "tok_legacy_plaintext_1": {"name": "old laptop", "created_at": "2024-01-01T00:00:00", "last_used": null, "enabled": true, "role": "rw"},
                "tok_legacy_plaintext_2": {"name": "", "created_at": "ephemeral", "enabled": false},
                "tok_legacy_plaintext_3": {"name": "reader", "role": "ro"},
            }}))
            .expect("JSON"),
        ),
    ]
}

fn env_files() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "example".into(),
            mymcp_settings::example_env_file().into_bytes(),
        ),
        (
            "quoting".into(),
            b"# comment\n\nMYMCP_PORT=8080\nexport MYMCP_HOST = \"0.0.0.0\"\nMYMCP_A='x y'\n\
              MYMCP_B=\"unbalanced'\nMYMCP_C=a#b\nMYMCP_D=\nMYMCP_E=a=b\r\nMYMCP_LIST= a, ,b \n"
                .to_vec(),
        ),
        ("bad-line".into(), b"MYMCP_PORT=1\nnot a pair\n".to_vec()),
    ]
}

fn ticket_seeds() -> Vec<(String, Vec<u8>)> {
    let tickets = Tickets::with_key(TICKET_KEY, "");
    let grant = |direction, expires_at_unix| TransferGrant {
        grant: GrantId(*b"0123456789abcdef"),
        direction,
        expires_at_unix,
        expires_in: 300,
        expires_at: String::new(),
        path: "/tmp/x".into(),
        bytes: 1,
        overwrite: true,
        sha256: None,
    };
    let valid = tickets.mint(&grant(Direction::Upload, TICKET_NOW + 300));
    let download = tickets.mint(&grant(Direction::Download, TICKET_NOW + 1));
    let expired = tickets.mint(&grant(Direction::Download, TICKET_NOW));
    let other_key =
        Tickets::with_key([1; 32], "").mint(&grant(Direction::Upload, TICKET_NOW + 300));
    let mut tampered = valid.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let mut params = vec![1u8];
    params.extend_from_slice(b"0123456789abcdef");
    params.extend_from_slice(&(TICKET_NOW + 60).to_be_bytes());
    params.extend_from_slice(&[17, 42]);
    vec![
        ("valid-upload".into(), valid.clone().into_bytes()),
        ("valid-download".into(), download.into_bytes()),
        ("expired".into(), expired.into_bytes()),
        ("other-key".into(), other_key.into_bytes()),
        ("tampered".into(), tampered),
        ("truncated".into(), valid.as_bytes()[..59].to_vec()),
        ("mint-parameters".into(), params),
    ]
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: String, bytes: Vec<u8>| {
        out.push(Seed {
            target,
            name,
            bytes,
        })
    };

    // A connection as the frontend opens it: hello, then requests and a cancel.
    let mut stream =
        frame::encode(&ClientFrame::<FrontendRequest>::Hello(Hello::current())).expect("hello");
    for (i, (_, request)) in frontend_requests().into_iter().enumerate().take(4) {
        stream.extend(
            frame::encode(&ClientFrame::Request {
                id: i as u64 + 1,
                body: request,
            })
            .expect("request"),
        );
    }
    stream
        .extend(frame::encode(&ClientFrame::<FrontendRequest>::Cancel { id: 2 }).expect("cancel"));
    add("frame", "connection".into(), stream);
    let mut control =
        frame::encode(&ClientFrame::<ControlRequest>::Hello(Hello::current())).expect("hello");
    control.extend(
        frame::encode(&ClientFrame::Request {
            id: 1,
            body: ControlRequest::TokenList,
        })
        .expect("request"),
    );
    add("frame", "control-connection".into(), control);
    add("frame", "too-large".into(), vec![0x02, 0x00, 0x00, 0x01, 0]);
    add("frame", "empty".into(), vec![0, 0, 0, 0]);

    add("hello", "current".into(), body(&Hello::current()));
    add(
        "hello",
        "client-frame".into(),
        body(&ClientFrame::<FrontendRequest>::Hello(Hello::current())),
    );
    add(
        "hello",
        "other-version".into(),
        body(&Hello {
            wire_version: WIRE_VERSION + 1,
            build_id: BUILD_ID.into(),
        }),
    );
    add(
        "hello",
        "other-build".into(),
        body(&Hello {
            wire_version: WIRE_VERSION,
            build_id: "0.0.0+0000".into(),
        }),
    );

    for (i, (name, request)) in frontend_requests().into_iter().enumerate() {
        add(
            "frontend_request",
            name,
            body(&ClientFrame::Request {
                id: i as u64,
                body: request,
            }),
        );
    }
    add(
        "frontend_request",
        "cancel".into(),
        body(&ClientFrame::<FrontendRequest>::Cancel { id: 9 }),
    );
    for (i, (name, request)) in control_requests().into_iter().enumerate() {
        add(
            "control_request",
            name,
            body(&ClientFrame::Request {
                id: i as u64,
                body: request,
            }),
        );
    }
    for (name, response) in frontend_responses() {
        add("frontend_response", name, body(&response));
    }
    for (name, response) in control_responses() {
        add("control_response", name, body(&response));
    }

    for (name, mode, value) in mcp_bodies() {
        let text = serde_json::to_vec(&value).expect("JSON");
        add("json_limits", name.clone(), text.clone());
        let mut bytes = vec![mode];
        bytes.extend(text);
        add("mcp_post", name, bytes);
    }
    for (name, text) in limit_bodies() {
        let mut bytes = vec![mcp_mode(0, 4, false, false, false)];
        bytes.extend(&text);
        add("mcp_post", name.clone(), bytes);
        add("json_limits", name, text);
    }
    for (tool, args) in tool_arguments() {
        let pick = ToolName::ALL
            .iter()
            .position(|t| *t == tool)
            .expect("a known tool") as u8;
        let mut bytes = vec![pick];
        bytes.extend(serde_json::to_vec(&args).expect("JSON"));
        add("tool_arguments", tool.as_str().into(), bytes);
    }
    for (name, bytes) in ticket_seeds() {
        add("tickets", name, bytes);
    }
    for (name, bytes) in token_store_files() {
        add("token_store", name, bytes);
    }
    for (name, bytes) in env_files() {
        add("env_file", name, bytes);
    }
    out
}
