//! `POST /mcp` and the other routes, end to end through the router and a real executor
//! connection (to a fake executor speaking the real protocol).

mod support;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use mymcp_frontend::forward::Forwarder;
use mymcp_frontend::http::{router, HttpConfig, OriginPolicy};
use mymcp_protocol::{ClientFrame, FrontendRequest, ToolCall};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{FakeExecutor, ADMIN_TOKEN, FAKE_GRANT, METRICS_TOKEN, RO_TOKEN, RW_TOKEN};
use tower::ServiceExt;

const PEER: &str = "192.0.2.7:40000";

struct Harness {
    app: Router,
    forwarder: Arc<Forwarder>,
    executor: FakeExecutor,
}

async fn harness_with(config: HttpConfig) -> Harness {
    let executor = FakeExecutor::start();
    let forwarder = Forwarder::new(&executor.socket);
    assert!(forwarder.wait_connected(Duration::from_secs(5)).await);
    let app = router(Arc::clone(&forwarder), config)
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    Harness {
        app,
        forwarder,
        executor,
    }
}

async fn harness() -> Harness {
    harness_with(HttpConfig::default()).await
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn mcp(token: &str, body: &str) -> Request<Body> {
    Request::post("/mcp")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn tools_call(tool: &str, arguments: Value) -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
           "params":{"name": tool, "arguments": arguments}})
    .to_string()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

fn assert_401(reply: &Reply, detail: &str) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(reply.body, format!(r#"{{"detail":"{detail}"}}"#));
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn missing_or_non_bearer_authorization_is_missing_bearer_token() {
    let h = harness().await;
    let no_auth = Request::post("/mcp")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(LIST))
        .unwrap();
    assert_401(&send(&h.app, no_auth).await, "Missing Bearer token");
    let basic = Request::post("/mcp")
        .header(header::AUTHORIZATION, "Basic dTpw")
        .body(Body::from(LIST))
        .unwrap();
    assert_401(&send(&h.app, basic).await, "Missing Bearer token");
}

#[tokio::test]
async fn empty_unknown_and_admin_tokens_are_invalid() {
    let mut h = harness().await;
    assert_401(
        &send(&h.app, mcp("", LIST)).await,
        "Invalid or disabled token",
    );
    // An empty token never reaches the executor.
    assert!(h.executor.drain().is_empty());
    assert_401(
        &send(&h.app, mcp("tok_nobody", LIST)).await,
        "Invalid or disabled token",
    );
    assert_401(
        &send(&h.app, mcp(ADMIN_TOKEN, LIST)).await,
        "Invalid or disabled token",
    );
    // Even a well-formed tools/call with an unknown token.
    let call = tools_call("read_file", json!({"file_path": "/etc/hostname"}));
    assert_401(
        &send(&h.app, mcp("tok_nobody", &call)).await,
        "Invalid or disabled token",
    );
}

#[tokio::test]
async fn lowercase_bearer_scheme_is_accepted() {
    let h = harness().await;
    let mut req = mcp(RO_TOKEN, LIST);
    req.headers_mut().insert(
        header::AUTHORIZATION,
        format!("bearer {RO_TOKEN}").parse().unwrap(),
    );
    assert_eq!(send(&h.app, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn foreign_origin_is_forbidden_before_anything_else() {
    let h = harness_with(HttpConfig {
        origins: OriginPolicy::from_list("https://app.example.com"),
        ..HttpConfig::default()
    })
    .await;
    let mut req = mcp("", LIST);
    req.headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    let reply = send(&h.app, req).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json(),
        json!({"jsonrpc": "2.0", "error": {"code": -32600,
            "message": "Forbidden: Origin \"https://evil.example\" is not allowed (MYMCP_ALLOWED_ORIGINS)"}})
    );

    for ok in ["http://localhost:6274", "https://app.example.com"] {
        let mut req = mcp(RO_TOKEN, LIST);
        req.headers_mut()
            .insert(header::ORIGIN, ok.parse().unwrap());
        assert_eq!(send(&h.app, req).await.status, StatusCode::OK, "{ok}");
    }
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let h = harness().await;
    for ct in [Some("text/plain"), None] {
        let mut req = mcp(RO_TOKEN, LIST);
        match ct {
            Some(ct) => req
                .headers_mut()
                .insert(header::CONTENT_TYPE, ct.parse().unwrap()),
            None => req.headers_mut().remove(header::CONTENT_TYPE),
        };
        let reply = send(&h.app, req).await;
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            reply.body,
            r#"{"detail":"Content-Type must be application/json"}"#
        );
    }
    let mut req = mcp(RO_TOKEN, LIST);
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json; charset=utf-8".parse().unwrap(),
    );
    assert_eq!(send(&h.app, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn unacceptable_accept_is_406_with_a_json_rpc_error() {
    let h = harness().await;
    let mut req = mcp(RO_TOKEN, LIST);
    req.headers_mut()
        .insert(header::ACCEPT, "text/html".parse().unwrap());
    let reply = send(&h.app, req).await;
    assert_eq!(reply.status, StatusCode::NOT_ACCEPTABLE);
    let v = reply.json();
    assert_eq!(v["error"]["code"], -32600);
    assert_eq!(
        v["error"]["message"],
        "Not Acceptable: Client must accept application/json or text/event-stream"
    );
}

#[tokio::test]
async fn absent_accept_gets_json_and_sse_only_gets_one_event() {
    let h = harness().await;
    let mut req = mcp(RO_TOKEN, LIST);
    req.headers_mut().remove(header::ACCEPT);
    let reply = send(&h.app, req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["id"], 1);

    let mut req = mcp(RO_TOKEN, LIST);
    req.headers_mut()
        .insert(header::ACCEPT, "text/event-stream".parse().unwrap());
    let reply = send(&h.app, req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let data = reply
        .body
        .strip_prefix("event: message\ndata: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not one SSE event: {:?}", reply.body));
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["result"]["tools"][0]["name"], "read_file");
}

#[tokio::test]
async fn unsupported_protocol_version_header_is_400() {
    let h = harness().await;
    let mut req = mcp(RO_TOKEN, LIST);
    req.headers_mut()
        .insert("mcp-protocol-version", "2023-01-01".parse().unwrap());
    let reply = send(&h.app, req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["code"], -32022);
    assert_eq!(
        reply.json()["error"]["message"],
        "Bad Request: Unsupported protocol version: 2023-01-01. Supported versions: \
         2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25, 2026-07-28"
    );
    assert_eq!(reply.json()["error"]["data"]["requested"], "2023-01-01");
    let mut req = mcp(RO_TOKEN, LIST);
    req.headers_mut()
        .insert("mcp-protocol-version", "2025-06-18".parse().unwrap());
    assert_eq!(send(&h.app, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_bodies_are_413_by_length_and_while_reading() {
    let h = harness_with(HttpConfig {
        max_body_bytes: 1024,
        ..HttpConfig::default()
    })
    .await;
    // Announced too large: refused without reading the (here absent) body.
    let mut req = mcp(RO_TOKEN, "");
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, "1025".parse().unwrap());
    let reply = send(&h.app, req).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.body, r#"{"detail":"Request body too large"}"#);

    // No length announced (as with chunked encoding): cut off while reading.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","pad":"{}"}}"#,
        "x".repeat(2000)
    );
    let reply = send(&h.app, mcp(RO_TOKEN, &big)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let small = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    assert_eq!(
        send(&h.app, mcp(RO_TOKEN, small)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bodies_above_axums_default_limit_but_within_ours_are_accepted() {
    // axum's extractors default to 2 MiB; a 10 MiB write must still fit under our 24 MiB.
    let h = harness().await;
    let pad = "x".repeat(3 * 1024 * 1024);
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{pad}"}}}}"#);
    let reply = send(&h.app, mcp(RO_TOKEN, &body)).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn tools_list_is_filtered_by_role() {
    let h = harness().await;
    let names = |v: Value| -> Vec<String> {
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(send(&h.app, mcp(RO_TOKEN, LIST)).await.json()),
        [
            "read_file",
            "glob",
            "grep",
            "prepare_download",
            "server_overview"
        ]
    );
    let rw = send(&h.app, mcp(RW_TOKEN, LIST)).await.json();
    assert_eq!(
        names(rw.clone()),
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
    assert_eq!(
        rw["result"]["tools"][0]["annotations"]["destructiveHint"],
        true
    );
    assert!(rw["result"]["tools"][0]["inputSchema"]["properties"]["command"].is_object());
}

#[tokio::test]
async fn tools_call_returns_the_formatted_tool_json() {
    let mut h = harness().await;
    let call = tools_call("bash_execute", json!({"command": "echo hi", "timeout": 5}));
    let v = send(&h.app, mcp(RW_TOKEN, &call)).await.json();
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["isError"], false);
    assert_eq!(
        v["result"]["content"],
        json!([{"type":"text",
                "text":"{\"stdout\":\"echo hi\",\"stderr\":\"\",\"exit_code\":0,\"timed_out\":false}"}])
    );
    // Exactly one executor round trip, carrying the typed call.
    let frames = h.executor.drain();
    assert_eq!(frames.len(), 1, "{frames:?}");
    let ClientFrame::Request {
        body: FrontendRequest::Call { call, origin, .. },
        ..
    } = &frames[0]
    else {
        panic!("expected a Call, got {:?}", frames[0]);
    };
    assert_eq!(origin.peer, "192.0.2.7");
    assert_eq!(origin.request_id.len(), 32);
    let ToolCall::BashExecute(b) = call else {
        panic!("wrong call {call:?}")
    };
    assert_eq!((b.command.as_str(), b.timeout), ("echo hi", Some(5)));
}

#[tokio::test]
async fn timed_out_commands_say_so_in_stderr() {
    let h = harness().await;
    let call = tools_call(
        "bash_execute",
        json!({"command": "sleep-out", "timeout": 2}),
    );
    let v = send(&h.app, mcp(RW_TOKEN, &call)).await.json();
    let tool: Value =
        serde_json::from_str(v["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(tool["stderr"], "Command timed out after 2s");
    assert_eq!(tool["timed_out"], true);
}

#[tokio::test]
async fn tool_failures_are_results_flagged_as_errors() {
    let h = harness().await;
    let call = tools_call("read_file", json!({"file_path": "/missing"}));
    let v = send(&h.app, mcp(RO_TOKEN, &call)).await.json();
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(
        v["result"]["content"][0]["text"],
        r#"{"success":false,"error":"FileNotFoundError","message":"File not found: /missing","suggestion":"Check the file path"}"#
    );
    // The same JSON as structured content, which the output schema describes.
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        v["result"]["structuredContent"],
        serde_json::from_str::<serde_json::Value>(text).unwrap()
    );

    let call = tools_call("bash_execute", json!({"command": "id"}));
    let v = send(&h.app, mcp(RO_TOKEN, &call)).await.json();
    assert_eq!(
        v["result"]["content"][0]["text"],
        r#"{"success":false,"error":"PermissionDenied","message":"Permission denied: tool 'bash_execute' requires rw role"}"#
    );
}

#[tokio::test]
async fn invalid_arguments_are_failures_of_the_one_shape() {
    let h = harness().await;
    let call = tools_call("read_file", json!({"offset": "2"}));
    let v = send(&h.app, mcp(RO_TOKEN, &call)).await.json();
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(
        v["result"]["content"][0]["text"],
        r#"{"success":false,"error":"InvalidArguments","message":"Input validation error: 'file_path' is a required property"}"#
    );
    assert_eq!(
        v["result"]["structuredContent"]["message"],
        "Input validation error: 'file_path' is a required property"
    );
}

#[tokio::test]
async fn notifications_are_accepted_with_an_empty_body() {
    let h = harness().await;
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let reply = send(&h.app, mcp(RO_TOKEN, note)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn malformed_json_is_400_parse_error_after_auth() {
    let h = harness().await;
    assert_401(
        &send(&h.app, mcp("tok_nobody", "{oops")).await,
        "Invalid or disabled token",
    );
    let reply = send(&h.app, mcp(RO_TOKEN, "{oops")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let v = reply.json();
    assert_eq!(v["error"]["code"], -32700);
    assert_eq!(v["id"], Value::Null);

    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let reply = send(&h.app, mcp(RO_TOKEN, &deep)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nested deeper than 64"));
}

#[tokio::test]
async fn batches_get_an_array_of_responses() {
    let h = harness().await;
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},
                   {"jsonrpc":"2.0","method":"notifications/initialized"},
                   {"jsonrpc":"2.0","id":"two","method":"tools/list"}]"#;
    let v = send(&h.app, mcp(RO_TOKEN, body)).await.json();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0], json!({"jsonrpc":"2.0","id":1,"result":{}}));
    assert_eq!(items[1]["id"], "two");
}

#[tokio::test]
async fn executor_socket_absent_is_503() {
    let dir = support::TempDir::new();
    let forwarder = Forwarder::new(dir.path().join("nothing-here.sock"));
    let app = router(Arc::clone(&forwarder), HttpConfig::default())
        .layer(MockConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    let reply = send(&app, mcp(RO_TOKEN, LIST)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, r#"{"detail":"Executor unavailable"}"#);
    let call = tools_call("read_file", json!({"file_path": "/x"}));
    assert_eq!(
        send(&app, mcp(RO_TOKEN, &call)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let health = send(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["executor"], "unavailable");
}

#[tokio::test]
async fn health_version_and_unknown_routes() {
    let h = harness().await;
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let health = send(&h.app, get("/health")).await;
    assert_eq!(
        health.body,
        format!(
            r#"{{"status":"ok","version":"{}","executor":"connected"}}"#,
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(h.forwarder.is_connected());
    let version = send(&h.app, get("/version")).await;
    assert_eq!(
        version.json(),
        json!({"version": env!("CARGO_PKG_VERSION")})
    );
    let head = Request::head("/health").body(Body::empty()).unwrap();
    let head = send(&h.app, head).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());

    for path in ["/nope", "/mcp/", "/docs", "/openapi.json"] {
        let reply = send(&h.app, get(path)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.body, r#"{"detail":"Not Found"}"#);
    }
}

#[tokio::test]
async fn other_methods_on_mcp_are_405_allow_post() {
    let h = harness().await;
    for method in [Method::GET, Method::DELETE, Method::PUT, Method::HEAD] {
        let req = Request::builder()
            .method(method.clone())
            .uri("/mcp")
            .header(header::AUTHORIZATION, format!("Bearer {RW_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let reply = send(&h.app, req).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(reply.header("allow"), Some("POST"), "{method}");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_on_every_response() {
    let mut h = harness().await;
    let mut req = mcp(
        RO_TOKEN,
        &tools_call("read_file", json!({"file_path": "/x"})),
    );
    req.headers_mut()
        .insert("x-request-id", "trace-abc-123".parse().unwrap());
    let reply = send(&h.app, req).await;
    assert_eq!(reply.header("x-request-id"), Some("trace-abc-123"));
    let ClientFrame::Request {
        body: FrontendRequest::Call { origin, .. },
        ..
    } = h.executor.next_frame().await
    else {
        panic!("expected a call")
    };
    assert_eq!(origin.request_id, "trace-abc-123");

    // On error responses and other routes too, and a bad inbound id is replaced.
    let mut req = Request::get("/nope").body(Body::empty()).unwrap();
    req.headers_mut()
        .insert("x-request-id", "a b".parse().unwrap());
    let reply = send(&h.app, req).await;
    let id = reply.header("x-request-id").unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let reply = send(&h.app, mcp("", LIST)).await;
    assert!(reply.header("x-request-id").is_some());
}

#[tokio::test]
async fn dropping_an_in_flight_call_cancels_it_in_the_executor() {
    let mut h = harness().await;
    let call = tools_call("bash_execute", json!({"command": "hang"}));
    let app = h.app.clone();
    let in_flight = tokio::spawn(async move { app.oneshot(mcp(RW_TOKEN, &call)).await });
    let ClientFrame::Request { id, body } = h.executor.next_frame().await else {
        panic!("expected the call first")
    };
    assert!(matches!(body, FrontendRequest::Call { .. }));
    // The HTTP client goes away: hyper drops the handler future.
    in_flight.abort();
    match h.executor.next_frame().await {
        ClientFrame::Cancel { id: cancelled } => assert_eq!(cancelled, id),
        other => panic!("expected Cancel, got {other:?}"),
    }
    // The connection is still usable afterwards.
    assert_eq!(
        send(&h.app, mcp(RO_TOKEN, LIST)).await.status,
        StatusCode::OK
    );
}

fn with_header(mut request: Request<Body>, name: &'static str, value: &str) -> Request<Body> {
    request.headers_mut().insert(name, value.parse().unwrap());
    request
}

/// The `data:` payloads of an SSE body, and its comment lines.
fn sse_events(body: &str) -> (Vec<Value>, Vec<String>) {
    let mut events = Vec::new();
    let mut comments = Vec::new();
    for line in body.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            events.push(serde_json::from_str(data).unwrap());
        } else if line.starts_with(':') {
            comments.push(line.to_owned());
        }
    }
    (events, comments)
}

#[tokio::test]
async fn initialize_hands_out_a_session_id() {
    let h = harness().await;
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#;
    let reply = send(&h.app, mcp(RO_TOKEN, init)).await;
    let id = reply.header("mcp-session-id").expect("session id");
    assert_eq!(id.len(), 32);
    let again = send(&h.app, mcp(RO_TOKEN, init)).await;
    assert_ne!(again.header("mcp-session-id"), Some(id));
    assert!(send(&h.app, mcp(RO_TOKEN, LIST))
        .await
        .header("mcp-session-id")
        .is_none());
}

#[tokio::test]
async fn a_call_with_a_progress_token_streams_progress_then_the_result() {
    let h = harness().await;
    let body = json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{
        "name":"bash_execute","arguments":{"command":"progress"},"_meta":{"progressToken":"tok-1"}}})
    .to_string();
    let reply = send(&h.app, mcp(RW_TOKEN, &body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let (events, _) = sse_events(&reply.body);
    assert_eq!(events.len(), 3, "{}", reply.body);
    for (n, e) in events[..2].iter().enumerate() {
        assert_eq!(e["method"], "notifications/progress");
        assert_eq!(e["params"]["progressToken"], "tok-1");
        assert_eq!(e["params"]["progress"], (n + 1) as f64);
    }
    assert!(events[1]["params"]["message"]
        .as_str()
        .unwrap()
        .contains("200 bytes on stdout, 2 on stderr"));
    assert_eq!(events[2]["id"], 4);
    assert_eq!(events[2]["result"]["isError"], false);

    // A bad token is still a plain 401, decided before any stream starts.
    let reply = send(&h.app, mcp("tok_unknown", &body)).await;
    assert_401(&reply, "Invalid or disabled token");
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let h = harness_with(HttpConfig {
        keep_alive: Duration::from_millis(50),
        ..HttpConfig::default()
    })
    .await;
    // SSE only: streamed even without a progress token.
    let mut request = mcp(
        RW_TOKEN,
        &tools_call("bash_execute", json!({"command": "slow"})),
    );
    request
        .headers_mut()
        .insert(header::ACCEPT, "text/event-stream".parse().unwrap());
    let reply = send(&h.app, request).await;
    let (events, comments) = sse_events(&reply.body);
    assert!(comments.len() >= 2, "{}", reply.body);
    assert!(comments.iter().all(|c| c == ": keep-alive"));
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["result"]["content"][0]["text"].as_str().unwrap(),
        r#"{"stdout":"slow","stderr":"","exit_code":0,"timed_out":false}"#
    );
}

#[tokio::test]
async fn notifications_cancelled_cancels_the_call_with_that_id_in_the_executor() {
    let mut h = harness().await;
    let call = json!({"jsonrpc":"2.0","id":"call-7","method":"tools/call",
        "params":{"name":"bash_execute","arguments":{"command":"hang"}}})
    .to_string();
    let app = h.app.clone();
    let request = with_header(mcp(RW_TOKEN, &call), "mcp-session-id", "session-a");
    let in_flight = tokio::spawn(async move { send(&app, request).await });
    let ClientFrame::Request { id, .. } = h.executor.next_frame().await else {
        panic!("expected the call first")
    };
    let cancel = |session: &str, token: &str| {
        let note = json!({"jsonrpc":"2.0","method":"notifications/cancelled",
            "params":{"requestId":"call-7","reason":"user"}})
        .to_string();
        with_header(mcp(token, &note), "mcp-session-id", session)
    };
    // Another session, or another token, cannot cancel it.
    assert_eq!(
        send(&h.app, cancel("session-b", RW_TOKEN)).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        send(&h.app, cancel("session-a", RO_TOKEN)).await.status,
        StatusCode::ACCEPTED
    );
    // (Each notification costs an Identify; no Cancel went out.)
    for _ in 0..2 {
        assert!(matches!(
            h.executor.next_frame().await,
            ClientFrame::Request {
                body: FrontendRequest::Identify { .. },
                ..
            }
        ));
    }
    assert_eq!(
        send(&h.app, cancel("session-a", RW_TOKEN)).await.status,
        StatusCode::ACCEPTED
    );
    assert!(matches!(
        h.executor.next_frame().await,
        ClientFrame::Request {
            body: FrontendRequest::Identify { .. },
            ..
        }
    ));
    match h.executor.next_frame().await {
        ClientFrame::Cancel { id: cancelled } => assert_eq!(cancelled, id),
        other => panic!("expected Cancel, got {other:?}"),
    }
    // The call is answered with the executor's verdict.
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.json()["id"], "call-7");
    assert!(reply.json()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains(r#""error":"Cancelled""#));
}

#[tokio::test]
async fn a_streamed_call_whose_client_goes_away_is_cancelled() {
    let mut h = harness().await;
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"bash_execute","arguments":{"command":"hang"},"_meta":{"progressToken":1}}})
    .to_string();
    let response = h.app.clone().oneshot(mcp(RW_TOKEN, &body)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(matches!(
        h.executor.next_frame().await,
        ClientFrame::Request {
            body: FrontendRequest::Identify { .. },
            ..
        }
    ));
    let ClientFrame::Request { id, .. } = h.executor.next_frame().await else {
        panic!("expected the call")
    };
    // The client reads nothing and goes away: hyper drops the body.
    drop(response);
    match h.executor.next_frame().await {
        ClientFrame::Cancel { id: cancelled } => assert_eq!(cancelled, id),
        other => panic!("expected Cancel, got {other:?}"),
    }
}

#[tokio::test]
async fn forged_tickets_are_refused_without_asking_the_executor() {
    let mut h = harness().await;
    for ticket in [
        "x".repeat(60),
        "A".repeat(60),
        "short".to_owned(),
        "AQajxphJb-n6JOAbWfneZL0AAAAAawHvOTn3WdjSFgcEr3T1CfpuQPHUExlF".to_owned(),
    ] {
        for method in [Method::GET, Method::PUT, Method::HEAD, Method::DELETE] {
            let request = Request::builder()
                .method(method.clone())
                .uri(format!("/files/raw/{ticket}"))
                .body(Body::from("data"))
                .unwrap();
            let reply = send(&h.app, request).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {ticket}");
            if method != Method::HEAD {
                assert_eq!(
                    reply.json(),
                    json!({"ok": false, "error": "ticket_not_found", "hint": "Mint a new ticket."})
                );
            }
        }
    }
    assert!(
        h.executor.drain().is_empty(),
        "no round trip for a forged ticket"
    );
}

#[tokio::test]
async fn a_minted_ticket_names_the_executors_grant_and_checks_the_method_at_the_edge() {
    let mut h = harness().await;
    let reply = send(
        &h.app,
        mcp(
            RO_TOKEN,
            &tools_call("prepare_download", json!({"src_path": "/srv/f.bin"})),
        ),
    )
    .await;
    let v: Value = serde_json::from_str(
        reply.json()["result"]["content"][0]["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["method"], "GET", "{v}");
    let url = v["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/files/raw/"), "{url}");
    h.executor.drain();

    // PUT on a download ticket: 405 at the edge, with Allow.
    let put = Request::put(&url).body(Body::from("x")).unwrap();
    let reply = send(&h.app, put).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    assert_eq!(reply.json()["hint"], "This ticket requires GET.");
    assert!(h.executor.drain().is_empty());

    // GET reaches the executor with the grant it made; its refusal becomes the JSON body.
    let reply = send(&h.app, Request::get(&url).body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["error"], "ticket_not_found");
    match h.executor.next_frame().await {
        ClientFrame::Request {
            body: FrontendRequest::Redeem {
                grant, direction, ..
            },
            ..
        } => {
            assert_eq!(grant, FAKE_GRANT);
            assert_eq!(direction, mymcp_protocol::Direction::Download);
        }
        other => panic!("expected a redeem, got {other:?}"),
    }
}

/// `/metrics` answers the classic Prometheus text format unless `Accept` prefers OpenMetrics,
/// as the Prometheus client libraries do.
#[tokio::test]
async fn metrics_negotiate_the_exposition_format() {
    let h = harness().await;
    let scrape = |accept: Option<&str>| {
        let mut r = Request::get("/metrics")
            .header(header::AUTHORIZATION, format!("Bearer {METRICS_TOKEN}"));
        if let Some(a) = accept {
            r = r.header(header::ACCEPT, a);
        }
        send(&h.app, r.body(Body::empty()).unwrap())
    };
    let text = "text/plain; version=0.0.4; charset=utf-8";
    let openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    for (accept, want) in [
        (None, text),
        (Some("*/*"), text),
        (Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), text),
        (Some("application/openmetrics-text;q=0"), text),
        (
            Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ),
            openmetrics,
        ),
    ] {
        let reply = scrape(accept).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.header("content-type"), Some(want), "{accept:?}");
        assert_eq!(reply.header("vary"), Some("Accept"));
        let calls = "mymcp_tool_calls_total{tool=\"read_file\",role=\"ro\",result=\"ok\"} 3\n";
        assert!(reply.body.contains(calls), "{}", reply.body);
        if want == text {
            assert!(reply
                .body
                .contains("# TYPE mymcp_tool_calls_total counter\n"));
            assert!(!reply.body.contains("# EOF"), "{}", reply.body);
        } else {
            assert!(reply.body.contains("# TYPE mymcp_tool_calls counter\n"));
            assert!(reply.body.ends_with("# EOF\n"), "{}", reply.body);
        }
    }
    // Refusals are unchanged by the format.
    let reply = send(
        &h.app,
        Request::get("/metrics")
            .header(header::ACCEPT, "application/openmetrics-text")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn with_oauth_a_401_points_at_the_metadata_which_is_served() {
    let h = harness_with(HttpConfig {
        public_base_url: "https://mcp.example.com".into(),
        oauth: true,
        ..HttpConfig::default()
    })
    .await;
    let reply = send(&h.app, mcp("tok_nobody_has_this", LIST)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mymcp:ro mymcp:rw\"")
    );
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let reply = send(&h.app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.json()["resource"], "https://mcp.example.com/mcp");
    }
    let reply = send(
        &h.app,
        Request::get("/.well-known/oauth-authorization-server")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.json()["issuer"], "https://mcp.example.com");
    // Without OAuth none of it is served.
    let plain = harness().await;
    let reply = send(
        &plain.app,
        Request::get("/.well-known/oauth-authorization-server")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

fn form(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn the_token_endpoint_sends_digests_and_answers_as_rfc_6749_says() {
    let mut h = harness_with(HttpConfig {
        public_base_url: "https://mcp.example.com".into(),
        oauth: true,
        ..HttpConfig::default()
    })
    .await;
    let verifier = "v".repeat(43);
    let good = format!(
        "grant_type=authorization_code&code=good-code&client_id=c&redirect_uri=https%3A%2F%2Fc.example%2Fcb&code_verifier={verifier}"
    );
    let reply = send(&h.app, form("/token", &good)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.json()["access_token"], "at");
    assert_eq!(reply.json()["token_type"], "Bearer");
    assert_eq!(reply.json()["scope"], "mymcp:ro");
    // What the executor saw: the code's digest, never the code.
    let seen = format!("{:?}", h.executor.drain());
    assert!(seen.contains("Exchange"), "{seen}");
    assert!(!seen.contains("good-code"), "{seen}");
    for (body, status, error) in [
        (good.replace("good-code", "bad-code"), 400, "invalid_grant"),
        (format!("{good}&client_secret=s"), 401, "invalid_client"),
        (good.replace("client_id=c&", ""), 400, "invalid_request"),
        (format!("{good}&code=again"), 400, "invalid_request"),
        (
            "grant_type=password&client_id=c".into(),
            400,
            "invalid_request",
        ),
    ] {
        let reply = send(&h.app, form("/token", &body)).await;
        assert_eq!(reply.status.as_u16(), status, "{body}: {}", reply.body);
        assert_eq!(reply.json()["error"], error, "{body}");
    }
    let reply = send(&h.app, form("/revoke", "token=at&client_id=c")).await;
    assert_eq!(reply.status, StatusCode::OK);
    // A body far beyond any form is not read, on any of the endpoints.
    let huge = "a=".to_owned() + &"b".repeat(100 * 1024);
    for path in ["/token", "/revoke", "/register", "/consent/00"] {
        let reply = send(&h.app, form(path, &huge)).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
    }
    // Without OAuth there is no token endpoint.
    let plain = harness().await;
    let reply = send(&plain.app, form("/token", &good)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn browser_clients_may_fetch_metadata_and_tokens_but_not_the_pages() {
    let h = harness_with(HttpConfig {
        public_base_url: "https://mcp.example.com".into(),
        oauth: true,
        ..HttpConfig::default()
    })
    .await;
    let origin = "http://localhost:6274";
    for path in [
        "/token",
        "/register",
        "/revoke",
        "/.well-known/oauth-authorization-server",
    ] {
        let preflight = Request::builder()
            .method("OPTIONS")
            .uri(path)
            .header(header::ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .unwrap();
        let reply = send(&h.app, preflight).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{path}");
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        assert!(reply
            .header("access-control-allow-headers")
            .is_some_and(|v| v.contains("content-type")));
    }
    let get = |path: &str| {
        Request::get(path)
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    };
    let reply = send(&h.app, get("/.well-known/oauth-protected-resource/mcp")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let reply = send(&h.app, form("/token", "grant_type=authorization_code")).await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    // The pages are navigations held by a cookie: no other origin may read them.
    let reply = send(&h.app, get("/authorize?client_id=c")).await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
    let reply = send(&h.app, get("/consent/00")).await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn authorize_opens_a_request_whose_page_only_its_browser_sees() {
    let h = harness_with(HttpConfig {
        public_base_url: "https://mcp.example.com".into(),
        oauth: true,
        ..HttpConfig::default()
    })
    .await;
    let q = "response_type=code&client_id=c&redirect_uri=https%3A%2F%2Fc.example%2Fcb\
             &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256\
             &scope=mymcp%3Aro&state=s";
    let get = |uri: String, cookie: Option<&str>| {
        let mut r = Request::get(uri);
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        r.body(Body::empty()).unwrap()
    };
    let reply = send(&h.app, get(format!("/authorize?{q}"), None)).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let id = "01".repeat(16);
    assert_eq!(
        reply.header("location"),
        Some(format!("/consent/{id}").as_str())
    );
    let cookie = reply.header("set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Secure"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(pair, format!("mymcp_consent={}", "02".repeat(32)));
    // Its browser sees the page; another (no cookie, or another secret) does not.
    let reply = send(&h.app, get(format!("/consent/{id}"), Some(pair))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("ABCD-EFGH"));
    assert!(reply.body.contains("Client &lt;b&gt;"));
    assert!(reply
        .header("content-security-policy")
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let reply = send(&h.app, get(format!("/consent/{id}"), None)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let other = format!("mymcp_consent={}", "09".repeat(32));
    let reply = send(&h.app, get(format!("/consent/{id}"), Some(&other))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // PKCE S256 is required.
    let plain = q.replace("S256", "plain");
    let reply = send(&h.app, get(format!("/authorize?{plain}"), None)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn registration_makes_a_public_client_and_refuses_what_is_not_one() {
    let h = harness_with(HttpConfig {
        public_base_url: "https://mcp.example.com".into(),
        oauth: true,
        ..HttpConfig::default()
    })
    .await;
    let post = |body: &str| {
        Request::post("/register")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let reply = send(
        &h.app,
        post(r#"{"client_name":"Inspector","redirect_uris":["http://127.0.0.1:6274/oauth/callback"]}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.json()["client_id"], "mcpc_1");
    assert_eq!(reply.json()["token_endpoint_auth_method"], "none");
    for (body, error) in [
        (r#"{"redirect_uris":[]}"#, "invalid_redirect_uri"),
        ("not json", "invalid_client_metadata"),
        (
            r#"{"redirect_uris":["https://c.example/cb"],"token_endpoint_auth_method":"client_secret_basic"}"#,
            "invalid_client_metadata",
        ),
    ] {
        let reply = send(&h.app, post(body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.json()["error"], error, "{body}");
    }
}
