//! The MCP transport rules of every revision, over real HTTP against the real frontend and
//! executor: status codes and JSON-RPC errors for header/body mismatches, unsupported and
//! missing protocol versions, batches, notification-only posts, other HTTP methods, oversized
//! and deeply nested bodies, foreign `Host`/`Origin` headers; and the 2026-07-28 wire.

use mymcp_tests::{http_raw, post_mcp_text, ExecutorProcess, FrontendProcess, HttpResponse};
use serde_json::{json, Value};

const MODERN: &str = "2026-07-28";

struct Server {
    _exec: ExecutorProcess,
    front: FrontendProcess,
    rw: String,
}

fn start(env: &[(&str, &str)]) -> Server {
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let front = FrontendProcess::start_with_env(&exec.executor_socket(), env);
    Server {
        _exec: exec,
        front,
        rw,
    }
}

impl Server {
    fn post(&self, body: &str, headers: &[(&str, &str)]) -> HttpResponse {
        post_mcp_text(self.front.addr, &self.rw, body, headers)
    }

    /// A 2026-07-28 request with matching headers, plus `extra` headers (which replace them).
    fn modern(
        &self,
        id: Value,
        method: &str,
        params: Value,
        extra: &[(&str, &str)],
    ) -> HttpResponse {
        let name = params["name"].as_str().map(str::to_owned);
        let body = modern_body(id, method, params);
        let mut headers: Vec<(&str, &str)> =
            vec![("MCP-Protocol-Version", MODERN), ("Mcp-Method", method)];
        if let Some(name) = &name {
            headers.push(("Mcp-Name", name));
        }
        headers.retain(|(k, _)| !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)));
        headers.extend(extra.iter().filter(|(_, v)| !v.is_empty()));
        self.post(&body, &headers)
    }
}

fn modern_body(id: Value, method: &str, mut params: Value) -> String {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// Asserts an HTTP status and a JSON-RPC error code; returns the body.
fn rpc_error(r: &HttpResponse, status: u16, code: i64) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    v
}

#[test]
fn header_and_body_disagreements_are_400s_with_the_request_id() {
    mymcp_tests::needs_root!();
    let s = start(&[]);
    // Mcp-Method differs from the body's method (values are case-sensitive).
    for method in ["prompts/list", "TOOLS/LIST"] {
        let r = s.modern(
            json!(41),
            "tools/list",
            json!({}),
            &[("Mcp-Method", method)],
        );
        assert_eq!(rpc_error(&r, 400, -32020)["id"], 41);
    }
    // Mcp-Method missing.
    let r = s.modern(json!(42), "tools/list", json!({}), &[("Mcp-Method", "")]);
    rpc_error(&r, 400, -32020);
    // The header's version is not the body's.
    let body = modern_body(json!(43), "tools/list", json!({})).replace(MODERN, "2025-11-25");
    let r = s.post(
        &body,
        &[
            ("MCP-Protocol-Version", MODERN),
            ("Mcp-Method", "tools/list"),
        ],
    );
    assert_eq!(rpc_error(&r, 400, -32020)["id"], 43);
    // Mcp-Name differs from the tool, is missing, or is a broken Base64 sentinel; the
    // command never runs.
    let call = json!({"name": "bash_execute", "arguments": {"command": "touch /tmp/never"}});
    for name in ["read_file", "", "=?base64?YmFzaF9leGVjdXRl?"] {
        let r = s.modern(
            json!("n"),
            "tools/call",
            call.clone(),
            &[("Mcp-Name", name)],
        );
        assert_eq!(rpc_error(&r, 400, -32020)["id"], "n", "{name:?}");
    }
    // Base64-encoded and space-padded names are the same name.
    let echo = json!({"name": "bash_execute", "arguments": {"command": "echo ok"}});
    for name in ["=?base64?YmFzaF9leGVjdXRl?=", "  bash_execute  "] {
        let r = s.modern(json!(1), "tools/call", echo.clone(), &[("Mcp-Name", name)]);
        assert_eq!(r.status, 200, "{name:?}: {}", r.body);
        assert_eq!(r.json()["result"]["structuredContent"]["stdout"], "ok\n");
    }
    // A repeated routing header is malformed.
    let body = modern_body(json!(44), "tools/list", json!({}));
    let raw = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         MCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/list\r\nMcp-Method: tools/list\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        addr = s.front.addr,
        tok = s.rw,
        len = body.len()
    );
    rpc_error(&http_raw(s.front.addr, raw.as_bytes()), 400, -32020);
    // The envelope itself: _meta without the required keys is invalid params.
    let body = json!({"jsonrpc":"2.0","id":45,"method":"server/discover","params":{}}).to_string();
    let r = s.post(
        &body,
        &[
            ("MCP-Protocol-Version", MODERN),
            ("Mcp-Method", "server/discover"),
        ],
    );
    assert_eq!(rpc_error(&r, 400, -32602)["id"], 45);
}

#[test]
fn unsupported_protocol_versions_are_400s_naming_the_supported_ones() {
    mymcp_tests::needs_root!();
    let s = start(&[]);
    let supported = json!([
        "2024-11-05",
        "2025-03-26",
        "2025-06-18",
        "2025-11-25",
        MODERN
    ]);
    // A modern request for a version nobody speaks.
    let body = modern_body(json!(7), "server/discover", json!({})).replace(MODERN, "v999.0.0");
    let r = s.post(
        &body,
        &[
            ("MCP-Protocol-Version", "v999.0.0"),
            ("Mcp-Method", "server/discover"),
        ],
    );
    let v = rpc_error(&r, 400, -32022);
    assert_eq!(v["id"], 7);
    assert_eq!(
        v["error"]["data"],
        json!({"supported": supported, "requested": "v999.0.0"})
    );
    // A legacy-looking request with an unknown header version: the same answer.
    let r = s.post(
        r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#,
        &[("MCP-Protocol-Version", "2099-01-01")],
    );
    let v = rpc_error(&r, 400, -32022);
    assert_eq!(v["id"], 8);
    assert!(v["error"]["message"].as_str().unwrap().contains(
        "Supported versions: 2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25, 2026-07-28"
    ));
    // initialize negotiates instead: an unknown version gets the newest handshake version.
    let r = s.post(
        r#"{"jsonrpc":"2.0","id":9,"method":"initialize","params":{"protocolVersion":"2099-01-01","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"]["protocolVersion"], "2025-11-25");
}

#[test]
fn a_missing_version_header_means_2025_03_26_for_legacy_requests_and_is_refused_for_2026_07_28() {
    mymcp_tests::needs_root!();
    let s = start(&[]);
    // Legacy revisions: a request without the header is served (as 2025-03-26).
    let r = s.post(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["result"]["tools"].is_array());
    assert!(r.json()["result"].get("resultType").is_none());
    // With a legacy header, the same.
    for version in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let r = s.post(
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            &[("MCP-Protocol-Version", version)],
        );
        assert_eq!(r.status, 200, "{version}: {}", r.body);
        assert_eq!(r.json()["result"], json!({}), "{version}");
    }
    // 2026-07-28: a request carrying the modern _meta, or asking server/discover, must send
    // the header.
    let body = modern_body(json!(2), "tools/list", json!({}));
    let r = s.post(&body, &[("Mcp-Method", "tools/list")]);
    assert_eq!(rpc_error(&r, 400, -32020)["id"], 2);
    let r = s.post(
        r#"{"jsonrpc":"2.0","id":3,"method":"server/discover","params":{}}"#,
        &[],
    );
    assert_eq!(rpc_error(&r, 400, -32020)["id"], 3);
}

#[test]
fn batches_are_answered_only_where_the_revision_defines_them() {
    mymcp_tests::needs_root!();
    let s = start(&[]);
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},
                    {"jsonrpc":"2.0","method":"notifications/initialized"},
                    {"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
    // 2025-03-26 (and no header, which means it) defined batching.
    for headers in [vec![], vec![("MCP-Protocol-Version", "2025-03-26")]] {
        let r = s.post(batch, &headers);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v[0]["id"], 1);
        assert_eq!(v[1]["id"], 2);
    }
    // The others: one message per POST.
    for version in ["2024-11-05", "2025-06-18", "2025-11-25", MODERN] {
        let r = s.post(batch, &[("MCP-Protocol-Version", version)]);
        let v = rpc_error(&r, 400, -32600);
        assert_eq!(v["id"], Value::Null, "{version}");
    }
    // An empty batch is an invalid request in every revision.
    rpc_error(&s.post("[]", &[]), 400, -32600);
}

#[test]
fn notification_only_posts_are_accepted_with_202_and_no_body() {
    mymcp_tests::needs_root!();
    let s = start(&[]);
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    for headers in [
        vec![],
        vec![("MCP-Protocol-Version", "2025-06-18")],
        vec![
            ("MCP-Protocol-Version", MODERN),
            ("Mcp-Method", "notifications/initialized"),
        ],
    ] {
        let r = s.post(note, &headers);
        assert_eq!(r.status, 202, "{headers:?}: {}", r.body);
        assert_eq!(r.body, "");
    }
    let r = s.post(&format!("[{note},{note}]"), &[]);
    assert_eq!(r.status, 202);
    // A client's response (legacy: ignored, 202; 2026-07-28: clients send none, 400).
    let response = r#"{"jsonrpc":"2.0","id":5,"result":{}}"#;
    assert_eq!(s.post(response, &[]).status, 202);
    let r = s.post(response, &[("MCP-Protocol-Version", MODERN)]);
    rpc_error(&r, 400, -32600);
    // A notification for an unsupported version is refused too.
    let r = s.post(note, &[("MCP-Protocol-Version", "1999-01-01")]);
    rpc_error(&r, 400, -32022);
}

#[test]
fn get_and_delete_are_405_with_allow_post() {
    mymcp_tests::needs_root!();
    let s = start(&[]);
    for method in ["GET", "DELETE", "PUT"] {
        let raw = format!(
            "{method} /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Accept: text/event-stream\r\nMcp-Session-Id: abc\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            s.front.addr, s.rw
        );
        let r = http_raw(s.front.addr, raw.as_bytes());
        assert_eq!(r.status, 405, "{method}: {}", r.body);
        assert_eq!(r.header("allow"), Some("POST"), "{method}");
    }
}

#[test]
fn oversized_and_deeply_nested_bodies_are_refused() {
    mymcp_tests::needs_root!();
    let s = start(&[("MYMCP_MAX_BODY_BYTES", "4096")]);
    // Announced too large: refused before the body is read.
    let raw = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n",
        s.front.addr, s.rw
    );
    assert_eq!(http_raw(s.front.addr, raw.as_bytes()).status, 413);
    // Too large once read (chunked, no length announced).
    let chunk = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let raw = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n0\r\n\r\n",
        s.front.addr,
        s.rw,
        chunk.len()
    );
    assert_eq!(http_raw(s.front.addr, raw.as_bytes()).status, 413);
    // Deeper than 64 levels: a parse error, under every revision.
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"x":{}{}}}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    for headers in [
        vec![],
        vec![("MCP-Protocol-Version", MODERN), ("Mcp-Method", "ping")],
    ] {
        let v = rpc_error(&s.post(&deep, &headers), 400, -32700);
        assert_eq!(v["id"], Value::Null);
    }
    // Not JSON at all.
    rpc_error(&s.post("{nope", &[]), 400, -32700);
}

#[test]
fn foreign_hosts_and_origins_are_403_and_configured_ones_pass() {
    mymcp_tests::needs_root!();
    let s = start(&[
        ("MYMCP_ALLOWED_HOSTS", "box.example.test"),
        ("MYMCP_PUBLIC_BASE_URL", "https://mcp.example.test/mcp"),
        ("MYMCP_ALLOWED_ORIGINS", "https://app.example.test"),
    ]);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let request = |host: &str, origin: Option<&str>| {
        let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
        let raw = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\n{origin}Authorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            s.rw,
            body.len()
        );
        http_raw(s.front.addr, raw.as_bytes())
    };
    let port = s.front.addr.port();
    for (host, origin) in [
        (format!("127.0.0.1:{port}"), None),
        (
            format!("localhost:{port}"),
            Some(format!("http://localhost:{port}")),
        ),
        ("box.example.test:8765".into(), None),
        (
            "mcp.example.test".into(),
            Some("https://mcp.example.test".into()),
        ),
        (
            "10.9.8.7:8765".into(),
            Some("https://app.example.test".into()),
        ),
    ] {
        let r = request(&host, origin.as_deref());
        assert_eq!(r.status, 200, "{host} {origin:?}: {}", r.body);
    }
    for (host, origin) in [
        ("evil.example.com", None),
        (
            "evil.example.com:8765",
            Some("http://evil.example.com:8765"),
        ),
        ("mcp.example.test:8443", None),
        ("127.0.0.1", Some("http://evil.example.com")),
        ("127.0.0.1", Some("null")),
    ] {
        let r = request(host, origin);
        let v = rpc_error(&r, 403, -32600);
        assert!(v.get("id").is_none(), "no id: {v}");
    }
    // The check comes before authentication: no token needed to be refused.
    let raw = "POST /mcp HTTP/1.1\r\nHost: evil.example.com\r\nContent-Length: 2\r\n\
               Connection: close\r\n\r\n{}";
    assert_eq!(http_raw(s.front.addr, raw.as_bytes()).status, 403);
}

#[test]
fn the_2026_07_28_wire_works_end_to_end() {
    mymcp_tests::needs_root!();
    let s = start(&[]);
    let r = s.modern(json!(1), "server/discover", json!({}), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["result"]["resultType"], "complete");
    assert_eq!(
        v["result"]["supportedVersions"].as_array().unwrap().len(),
        5
    );
    assert_eq!(
        v["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mymcp"
    );
    assert!(
        r.header("mcp-session-id").is_none(),
        "no sessions in 2026-07-28"
    );

    let r = s.modern(json!(2), "tools/list", json!({}), &[]);
    let v = r.json();
    assert_eq!(v["result"]["cacheScope"], "private");
    assert!(v["result"]["ttlMs"].as_u64().unwrap() > 0);
    assert_eq!(v["result"]["tools"][0]["name"], "bash_execute");

    let call = json!({"name": "bash_execute", "arguments": {"command": "echo modern"}});
    let r = s.modern(json!(3), "tools/call", call, &[]);
    let v = r.json();
    assert_eq!(v["result"]["resultType"], "complete");
    assert_eq!(v["result"]["structuredContent"]["stdout"], "modern\n");
    assert_eq!(v["result"]["isError"], false);

    // Removed and unknown methods: 404 with -32601 and the id.
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/list",
        "nope/nothing",
    ] {
        let r = s.modern(json!("m"), method, json!({}), &[]);
        assert_eq!(rpc_error(&r, 404, -32601)["id"], "m", "{method}");
    }
    // An unknown tool is a protocol error.
    let r = s.modern(json!(5), "tools/call", json!({"name": "nope"}), &[]);
    assert_eq!(rpc_error(&r, 400, -32602)["id"], 5);

    // Streamed (a progress token): SSE, unbuffered by proxies, ending with the result.
    let call = json!({"name": "bash_execute", "arguments": {"command": "echo streamed"}});
    let body = modern_body(json!(6), "tools/call", call)
        .replace(r#""_meta":{"#, r#""_meta":{"progressToken":"p","#);
    let r = s.post(
        &body,
        &[
            ("MCP-Protocol-Version", MODERN),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "bash_execute"),
        ],
    );
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    let last = mymcp_tests::sse_messages(&r.body).pop().unwrap();
    assert_eq!(last["id"], 6);
    assert_eq!(last["result"]["resultType"], "complete");
}

#[test]
fn closing_a_2026_07_28_response_stream_cancels_the_call() {
    mymcp_tests::needs_root!();
    use mymcp_tests::{pids_with_cmdline, wait_until};
    use std::io::{Read, Write};
    use std::time::Duration;
    let s = start(&[]);
    let marker = "27.1828";
    let call = json!({"name": "bash_execute",
                      "arguments": {"command": format!("sleep {marker}"), "timeout": 60}});
    let body = modern_body(json!(1), "tools/call", call)
        .replace(r#""_meta":{"#, r#""_meta":{"progressToken":1,"#);
    let raw = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         MCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\nMcp-Name: bash_execute\r\n\
         Content-Length: {len}\r\n\r\n{body}",
        addr = s.front.addr,
        tok = s.rw,
        len = body.len()
    );
    let mut conn = std::net::TcpStream::connect(s.front.addr).unwrap();
    conn.write_all(raw.as_bytes()).unwrap();
    // The stream has started (its headers arrived) and the command runs.
    let mut head = [0u8; 64];
    let n = conn.read(&mut head).unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    let running = || !pids_with_cmdline(&format!("sleep {marker}")).is_empty();
    assert!(wait_until(Duration::from_secs(5), running));
    drop(conn);
    assert!(
        wait_until(Duration::from_secs(2), || !running()),
        "the command survived its closed response stream"
    );
}

/// A 2026-07-28 request from a client that declares the tasks extension (`Mcp-Name` mirrors
/// `name` or `taskId`).
fn modern_with_tasks(s: &Server, method: &str, mut params: Value) -> Value {
    let name = params["name"]
        .as_str()
        .or(params["taskId"].as_str())
        .map(str::to_owned);
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {
            "extensions": {"io.modelcontextprotocol/tasks": {}}
        },
    });
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut headers: Vec<(&str, &str)> =
        vec![("MCP-Protocol-Version", MODERN), ("Mcp-Method", method)];
    if let Some(name) = &name {
        headers.push(("Mcp-Name", name));
    }
    let r = s.post(&body, &headers);
    // Errors keep the SDKs' statuses (-32602: 400); the rest is 200.
    let status = if r.json().get("error").is_some() {
        400
    } else {
        200
    };
    assert_eq!(r.status, status, "{}", r.body);
    r.json()
}

#[test]
fn the_2026_tasks_extension_turns_a_long_bash_execute_into_a_task() {
    mymcp_tests::needs_root!();
    let s = start(&[]);
    // Advertised.
    let r = s.modern(json!(1), "server/discover", json!({}), &[]);
    assert_eq!(
        r.json()["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"],
        json!({}),
        "{}",
        r.body
    );

    // A short command answers as always.
    let v = modern_with_tasks(
        &s,
        "tools/call",
        json!({"name": "bash_execute", "arguments": {"command": "echo quick"}}),
    );
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert_eq!(v["result"]["structuredContent"]["stdout"], "quick\n");

    // A long one becomes a task after handoff_after.
    let v = modern_with_tasks(
        &s,
        "tools/call",
        json!({"name": "bash_execute",
               "arguments": {"command": "echo a; sleep 2; echo b", "handoff_after": 1}}),
    );
    let task = &v["result"];
    assert_eq!(task["resultType"], "task", "{v}");
    assert_eq!(task["status"], "working");
    assert_eq!(task["pollIntervalMs"], 2000);
    assert!(task.get("ttlMs").is_some());
    let id = task["taskId"].as_str().unwrap().to_owned();

    // Polled to completion: the result inline, what the call would have answered.
    let mut last = Value::Null;
    for _ in 0..50 {
        last = modern_with_tasks(&s, "tasks/get", json!({"taskId": id}));
        if last["result"]["status"] != "working" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let done = &last["result"];
    assert_eq!(done["status"], "completed", "{last}");
    assert_eq!(done["resultType"], "complete");
    assert_eq!(
        done["result"]["structuredContent"]["stdout"], "a\nb\n",
        "{last}"
    );
    assert_eq!(done["result"]["structuredContent"]["exit_code"], 0);

    // tasks/update: nothing is ever outstanding, so an empty ack; tasks/cancel: an ack.
    let v = modern_with_tasks(
        &s,
        "tasks/update",
        json!({"taskId": id, "inputResponses": {}}),
    );
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    let v = modern_with_tasks(&s, "tasks/cancel", json!({"taskId": id}));
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    // An unknown task is an error.
    let v = modern_with_tasks(&s, "tasks/get", json!({"taskId": "0000000000000000"}));
    assert_eq!(v["error"]["code"], -32602, "{v}");

    // Without the extension the same call is never a task: it is handed off only when asked,
    // as job_output's JSON.
    let r = s.modern(
        json!(2),
        "tools/call",
        json!({"name": "bash_execute", "arguments": {"command": "sleep 2; echo late"}}),
        &[],
    );
    assert_eq!(
        r.json()["result"]["structuredContent"]["stdout"],
        "late\n",
        "{}",
        r.body
    );
}
