//! Operations end to end: the admin API and mymcpctl on one token store, the audit log (fields,
//! redaction, fail-closed on a full disk, verification, rotation), configuration errors,
//! importing a Python/Go install.

use mymcp_tests::{
    bin, ctl, http_request, peer, post_mcp, post_mcp_with, tools_call, user_ids, ExecutorProcess,
    FrontendProcess, HttpResponse, Tmpfs,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn admin(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> HttpResponse {
    let auth = format!("Bearer {token}");
    http_request(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

fn tools_list_status(addr: std::net::SocketAddr, token: &str) -> u16 {
    post_mcp(
        addr,
        token,
        &json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
    )
    .status
}

fn ctl_json(runtime: &Path, args: &[&str]) -> Value {
    let out = ctl(runtime, args);
    assert!(
        out.status.success(),
        "mymcpctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn admin_api_and_cli_share_one_store_without_lost_updates() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let front = FrontendProcess::start(&exec.executor_socket());
    let admin_token = exec.add_token("ops", "admin");
    let rw = exec.add_token("writer", "rw");
    let addr = front.addr;

    // Who may manage: no bearer 401, an rw token 403, an unknown token 403.
    let r = http_request(addr, "GET", "/admin/tokens", &[], "");
    assert_eq!(
        (r.status, r.json()["detail"].as_str()),
        (401, Some("Missing Bearer token"))
    );
    let r = admin(addr, &rw, "GET", "/admin/tokens", "");
    assert_eq!(
        (r.status, r.json()["detail"].as_str()),
        (403, Some("Admin token required"))
    );
    let r = admin(addr, "tok_nobody", "POST", "/admin/tokens", "{bad json");
    assert_eq!(r.status, 403, "auth comes before body checks: {}", r.body);

    // Bad input is a 400 with a detail.
    for (body, want) in [
        (r#"{"role":"rw"}"#, "name is required"),
        (
            r#"{"name":"x","role":"admin"}"#,
            "Invalid role: 'admin'. Must be 'ro' or 'rw'.",
        ),
        ("{bad json", "invalid JSON body"),
        (r#"{"name":7}"#, "name must be a string"),
    ] {
        let r = admin(addr, &admin_token, "POST", "/admin/tokens", body);
        assert_eq!(
            (r.status, r.json()["detail"].as_str()),
            (400, Some(want)),
            "{body}"
        );
    }

    // Create through the API: the value comes back once and works at once.
    let r = admin(
        addr,
        &admin_token,
        "POST",
        "/admin/tokens",
        r#"{"name":"api-reader"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    assert_eq!(created["role"], "ro");
    let api_token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(tools_list_status(addr, &api_token), 200);

    // A token added by mymcpctl afterwards works at once and is listed by the API...
    let cli = exec.add_token("cli-writer", "rw");
    assert_eq!(tools_list_status(addr, &cli), 200);
    let list = admin(addr, &admin_token, "GET", "/admin/tokens", "");
    assert_eq!(list.status, 200);
    let listed = list.json();
    let names: Vec<&str> = listed
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for want in ["writer", "api-reader", "cli-writer"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    assert!(
        !names.contains(&"ops"),
        "admin tokens are not listed by the API"
    );
    assert!(
        !list.body.contains("tok_"),
        "listing leaks token values: {}",
        list.body
    );

    // ...and survives later API changes (no stale copy overwrites it).
    let r = admin(
        addr,
        &admin_token,
        "POST",
        "/admin/tokens",
        r#"{"name":"api-2","role":"rw"}"#,
    );
    assert_eq!(r.status, 200);
    let id = created["id"].as_str().unwrap();
    let r = admin(
        addr,
        &admin_token,
        "DELETE",
        &format!("/admin/tokens/{id}"),
        "",
    );
    assert_eq!(
        (r.status, r.json()["revoked"].as_str()),
        (200, Some(id)),
        "{}",
        r.body
    );
    assert_eq!(
        tools_list_status(addr, &api_token),
        401,
        "revoked through the API: 401 at once"
    );
    assert_eq!(
        tools_list_status(addr, &cli),
        200,
        "the CLI's token survived"
    );
    let cli_list = ctl_json(&exec.runtime_dir, &["token", "list", "--json"]);
    let cli_names: Vec<&str> = cli_list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        cli_names.contains(&"cli-writer") && cli_names.contains(&"api-2"),
        "{cli_names:?}"
    );
    assert!(!cli_names.contains(&"api-reader"));

    // Revoked with mymcpctl: 401 at once; revoking by value through the API too.
    let out = ctl(&exec.runtime_dir, &["token", "revoke", &cli]);
    assert!(out.status.success());
    assert_eq!(tools_list_status(addr, &cli), 401);
    let r = admin(
        addr,
        &admin_token,
        "DELETE",
        &format!("/admin/tokens/{rw}"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(tools_list_status(addr, &rw), 401);
    let r = admin(
        addr,
        &admin_token,
        "DELETE",
        "/admin/tokens/tok_unknown",
        "",
    );
    assert_eq!(
        (r.status, r.json()["detail"].as_str()),
        (404, Some("Token not found"))
    );
    // The admin token itself is not managed over HTTP.
    let r = admin(
        addr,
        &admin_token,
        "DELETE",
        &format!("/admin/tokens/{admin_token}"),
        "",
    );
    assert_eq!(r.status, 404);

    // Rotation replaces the admin token: the old one is refused at once.
    let rotated = ctl_json(&exec.runtime_dir, &["token", "rotate-admin", "--json"]);
    let new_admin = rotated["token"].as_str().unwrap();
    assert_eq!(rotated["revoked"], 1);
    assert_eq!(
        admin(addr, &admin_token, "GET", "/admin/tokens", "").status,
        403
    );
    assert_eq!(
        admin(addr, new_admin, "GET", "/admin/tokens", "").status,
        200
    );
}

#[test]
fn metrics_token_rotation_and_disabling() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let front = FrontendProcess::start(&exec.executor_socket());
    let rw = exec.add_token("writer", "rw");
    let r = http_request(front.addr, "GET", "/metrics", &[], "");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["detail"],
        "Metrics disabled: MYMCP_METRICS_TOKEN not configured"
    );
    let out = ctl(&exec.runtime_dir, &["token", "rotate-metrics"]);
    let metrics = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let auth = format!("Bearer {metrics}");
    let wrong = format!("Bearer {rw}");
    assert_eq!(
        http_request(
            front.addr,
            "GET",
            "/metrics",
            &[("Authorization", &wrong)],
            ""
        )
        .status,
        401
    );
    assert_eq!(
        http_request(front.addr, "GET", "/metrics", &[], "").status,
        401
    );
    let r = http_request(
        front.addr,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("mymcp_executor_connected 1"), "{}", r.body);
    assert!(
        r.body
            .contains("mymcp_auth_failures_total{endpoint=\"metrics\"} 2"),
        "{}",
        r.body
    );
    // Tokens are counted by role; the metrics token is not an MCP token.
    assert!(r.body.contains("mymcp_tokens_count{role=\"metrics\"} 1"));
    assert_eq!(tools_list_status(front.addr, &metrics), 401);
    let out = ctl(&exec.runtime_dir, &["token", "disable-metrics"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("metrics endpoint disabled"));
    assert_eq!(
        http_request(
            front.addr,
            "GET",
            "/metrics",
            &[("Authorization", &auth)],
            ""
        )
        .status,
        503
    );
}

#[test]
fn a_compromised_frontend_cannot_manage_tokens_or_read_metrics_with_client_tokens() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let (uid, gid) = user_ids("nobody");
    let sock = exec.executor_socket();
    assert!(peer(uid, gid, &sock, "admin-create", &rw)
        .iter()
        .any(|l| l.starts_with("Admin Forbidden")));
    assert!(peer(uid, gid, &sock, "admin-create", "tok_guess")
        .iter()
        .any(|l| l.starts_with("Admin Forbidden")));
    exec.add_token("scraper", "metrics");
    assert!(peer(uid, gid, &sock, "metrics", &rw)
        .iter()
        .any(|l| l.starts_with("Metrics Unauthorized")));
    let names = ctl(&exec.runtime_dir, &["token", "list"]);
    assert!(!String::from_utf8_lossy(&names.stdout).contains("forged"));
}

fn audit_lines(dir: &Path) -> Vec<Value> {
    mymcp_audit_lines(dir)
        .into_iter()
        .map(|l| serde_json::from_str(&l).expect("audit line is JSON"))
        .collect()
}

fn mymcp_audit_lines(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("audit.log")
        })
        .collect();
    // audit.log.N … audit.log.1, audit.log
    files.sort_by_key(|p| {
        let n = p
            .extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.parse::<u32>().ok());
        std::cmp::Reverse(n.unwrap_or(0))
    });
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn verify(exec: &ExecutorProcess, key: Option<&str>) -> (bool, String) {
    let mut args = vec!["audit", "verify"];
    if let Some(k) = key {
        args.extend(["--key", k]);
    }
    let out = ctl(&exec.runtime_dir, &args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn call(addr: std::net::SocketAddr, token: &str, tool: &str, args: Value) -> Value {
    post_mcp(addr, token, &tools_call(1, tool, args)).tool_json()
}

/// Records of tool calls: not those of the token changes that set a test up (`token_*`, see
/// `audit.rs`), nor seals.
fn tool_records(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["type"] != "seal")
        .filter(|l| !l["tool"].as_str().is_some_and(|t| t.starts_with("token_")))
        .collect()
}

/// Outcome records of tool calls (not start records or seals).
fn outcomes(lines: &[Value]) -> Vec<&Value> {
    tool_records(lines)
        .into_iter()
        .filter(|l| l.get("type").is_none())
        .collect()
}

#[test]
fn every_tool_call_gets_one_outcome_record_with_the_reference_fields_and_redaction() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start_with_env("nobody", &[("MYMCP_AUDIT_ENABLED", "true")]);
    let front = FrontendProcess::start(&exec.executor_socket());
    let rw = exec.add_token("writer", "rw");
    let ro = exec.add_token("reader", "ro");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("secret.txt");
    let file_s = file.to_str().unwrap();
    let content = "TOPSECRET-CONTENT first line\nsecond\n";

    let r = post_mcp_with(
        front.addr,
        &rw,
        &tools_call(
            1,
            "write_file",
            json!({"file_path": file_s, "content": content}),
        ),
        &[("X-Request-ID", "req-audit-1")],
    );
    assert_eq!(r.tool_json()["success"], true);
    let r = call(
        front.addr,
        &rw,
        "edit_file",
        json!({"file_path": file_s, "old_string": "TOPSECRET-CONTENT", "new_string": "HIDDEN-NEW\nX"}),
    );
    assert_eq!(r["replacements"], 1);
    call(front.addr, &ro, "read_file", json!({"file_path": file_s}));
    let denied = call(
        front.addr,
        &ro,
        "bash_execute",
        json!({"command": "echo no"}),
    );
    assert_eq!(denied["error"], "PermissionDenied");
    call(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": "echo out; exit 3"}),
    );
    call(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": "echo fine"}),
    );
    call(
        front.addr,
        &ro,
        "read_file",
        json!({"file_path": "/nonexistent/x"}),
    );
    // Refused by the frontend, audited by the executor all the same.
    let r = post_mcp(front.addr, &ro, &tools_call(1, "no_such_tool", json!({})));
    assert_eq!(r.tool_json()["error"], "UnknownTool");
    post_mcp(
        front.addr,
        &rw,
        &tools_call(1, "read_file", json!({"file_path": 5})),
    );

    let text = mymcp_audit_lines(&exec.audit_dir()).join("\n");
    for secret in ["TOPSECRET", "HIDDEN-NEW"] {
        assert!(!text.contains(secret), "{secret} leaked into the audit log");
    }
    let lines = audit_lines(&exec.audit_dir());
    let out = outcomes(&lines);
    assert_eq!(out.len(), 9, "one outcome record per call: {text}");
    // Start records come only for tools with side effects that were allowed to run.
    let starts: Vec<&str> = tool_records(&lines)
        .into_iter()
        .filter(|l| l["type"] == "start")
        .map(|l| l["tool"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        ["write_file", "edit_file", "bash_execute", "bash_execute"]
    );

    let w = out[0];
    for key in [
        "ts",
        "token_name",
        "role",
        "ip",
        "tool",
        "params",
        "result",
        "request_id",
        "duration_ms",
        "seq",
        "prev",
    ] {
        assert!(w.get(key).is_some(), "{key} missing in {w}");
    }
    assert_eq!(w["token_name"], "writer");
    assert_eq!(w["role"], "rw");
    assert_eq!(w["ip"], "127.0.0.1");
    assert_eq!(w["tool"], "write_file");
    assert_eq!(w["result"], "ok");
    assert_eq!(w["request_id"], "req-audit-1");
    assert_eq!(
        w["params"]["content"],
        format!("<{} chars>", content.chars().count())
    );
    assert_eq!(w["params"]["file_path"], file_s);
    assert_eq!(w["output"]["size_bytes"], content.len());
    // The summary's first line is content too: it would leak, so it must not be there verbatim
    // (checked above); its size and hash are.
    assert_eq!(w["output"]["sha256"].as_str().map(str::len), Some(64));
    let e = out[1];
    assert_eq!(e["params"]["old_string"], "<17 chars>");
    assert_eq!(e["params"]["new_string"], "<12 chars>");
    assert_eq!(
        (
            e["output"]["lines_added"].as_u64(),
            e["output"]["hunk_count"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(out[2]["result"], "ok");
    assert_eq!(out[2]["role"], "ro");
    let d = out[3];
    assert_eq!(d["result"], "denied");
    assert_eq!(
        d["reason"],
        "Permission denied: tool 'bash_execute' requires rw role"
    );
    assert!(d.get("duration_ms").is_none());
    let b = out[4];
    assert_eq!(
        (b["result"].as_str(), b["error_code"].as_str()),
        (Some("error"), Some("ExitCode:3"))
    );
    let ok = out[5];
    assert_eq!(ok["output"]["stdout_head"], "fine\n");
    assert_eq!(ok["output"]["exit_code"], 0);
    assert_eq!(out[6]["error_code"], "FileNotFoundError");
    assert_eq!(
        (out[7]["tool"].as_str(), out[7]["result"].as_str()),
        (Some("no_such_tool"), Some("denied"))
    );
    assert_eq!(out[7]["reason"], "Unknown tool: no_such_tool");
    assert_eq!(
        (out[8]["result"].as_str(), out[8]["error_code"].as_str()),
        (Some("error"), Some("InvalidArguments"))
    );
    // The chain: seq increments, prev links (every record, the token changes' too).
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"].as_u64(), Some(i as u64 + 1));
    }
    let (ok, text) = verify(&exec, Some(&exec.audit_install_key()));
    assert!(ok, "{text}");
    assert!(text.starts_with("OK:"), "{text}");
}

#[test]
fn a_full_audit_disk_refuses_calls_before_their_side_effects() {
    mymcp_tests::needs_root!();
    let disk = Tmpfs::mount("256k");
    let audit_dir = disk.path().join("audit");
    let exec = ExecutorProcess::start_with_env(
        "nobody",
        &[
            ("MYMCP_AUDIT_ENABLED", "true"),
            ("MYMCP_AUDIT_LOG_DIR", audit_dir.to_str().unwrap()),
        ],
    );
    let front = FrontendProcess::start(&exec.executor_socket());
    let rw = exec.add_token("writer", "rw");
    let metrics = exec.add_token("scraper", "metrics");
    // Works while there is room.
    assert_eq!(
        call(front.addr, &rw, "bash_execute", json!({"command": "true"}))["exit_code"],
        0
    );

    disk.fill();
    // The log's last page may still have room for a small record: spend it with small calls
    // until one is refused. The calls below have longer records, so they cannot fit either.
    let refused = (0..200).any(|_| {
        call(front.addr, &rw, "bash_execute", json!({"command": "true"}))["error"]
            == "InternalError"
    });
    assert!(refused, "a full disk never refused a call");
    let failures = |addr| -> u64 {
        let auth = format!("Bearer {metrics}");
        let m = http_request(addr, "GET", "/metrics", &[("Authorization", &auth)], "");
        m.body
            .lines()
            .find_map(|l| l.strip_prefix("mymcp_audit_write_failures_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("failure counter")
    };
    let before = failures(front.addr);
    assert!(before >= 1);
    // Long paths make these records longer than the small ones above.
    let work = tempfile::Builder::new()
        .prefix(&"d".repeat(200))
        .tempdir()
        .unwrap();
    let target = work
        .path()
        .join(format!("{}-must-not-exist.txt", "t".repeat(100)));
    let marker = work.path().join(format!("{}-marker", "m".repeat(100)));
    let readable = work
        .path()
        .join(format!("{}-readable.txt", "r".repeat(100)));
    std::fs::write(&readable, "visible only when audited\n").unwrap();
    let r = call(
        front.addr,
        &rw,
        "write_file",
        json!({"file_path": target.to_str().unwrap(), "content": "data"}),
    );
    assert_eq!(r["error"], "InternalError", "{r}");
    assert!(r["message"].as_str().unwrap().contains("audit log"), "{r}");
    assert!(
        !target.exists(),
        "write_file ran although its audit record could not be written"
    );
    let r = call(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": format!("touch {}", marker.display())}),
    );
    assert_eq!(r["error"], "InternalError");
    assert!(
        !marker.exists(),
        "the command ran although its audit record could not be written"
    );
    let r = call(
        front.addr,
        &rw,
        "read_file",
        json!({"file_path": readable.to_str().unwrap()}),
    );
    assert_eq!(
        r["error"], "InternalError",
        "a read's answer is withheld without its record: {r}"
    );
    assert!(!r.to_string().contains("visible only"));

    assert_eq!(
        failures(front.addr),
        before + 3,
        "each refused call is counted"
    );
    let status = ctl(&exec.runtime_dir, &["status"]);
    assert_eq!(
        status.status.code(),
        Some(1),
        "status reports audit failures"
    );

    // Room again: calls run and the chain is intact.
    disk.free();
    let r = call(
        front.addr,
        &rw,
        "write_file",
        json!({"file_path": target.to_str().unwrap(), "content": "data"}),
    );
    assert_eq!(r["success"], true, "{r}");
    assert!(target.exists());
    let (ok, text) = verify(&exec, None);
    assert!(ok, "{text}");
    drop(front);
    drop(exec);
}

#[test]
fn audit_verify_finds_an_edited_line_a_deleted_line_and_a_cut_tail() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start_with_env(
        "nobody",
        &[
            ("MYMCP_AUDIT_ENABLED", "true"),
            ("MYMCP_AUDIT_SEAL_RECORDS", "4"),
        ],
    );
    let front = FrontendProcess::start(&exec.executor_socket());
    let rw = exec.add_token("writer", "rw");
    for i in 0..6 {
        call(
            front.addr,
            &rw,
            "bash_execute",
            json!({"command": format!("echo {i}")}),
        );
    }
    let key = exec.audit_install_key();
    let (ok, text) = verify(&exec, Some(&key));
    assert!(ok, "{text}");
    assert!(text.contains("seal(s)"), "{text}");
    let status = String::from_utf8(ctl(&exec.runtime_dir, &["status"]).stdout).unwrap();
    assert!(status.contains("last seal:        seq"), "{status}");

    let log = exec.audit_dir().join("audit.log");
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let check = |text: String, want: &str| {
        std::fs::write(&log, text).unwrap();
        let (ok, out) = verify(&exec, Some(&key));
        assert!(!ok, "verify passed a tampered log ({want})");
        assert!(
            out.contains("BROKEN") && out.contains(want),
            "{want}: {out}"
        );
        std::fs::write(&log, &original).unwrap();
    };
    check(original.replacen("echo 2", "echo 9", 1), "altered");
    let mut deleted = lines.clone();
    deleted.remove(2);
    check(deleted.join("\n") + "\n", "missing");
    check(lines[..lines.len() - 2].join("\n") + "\n", "truncated");
    check(original[..original.len() - 5].to_owned(), "truncated");
    // A wrong install key is a replaced key chain.
    let (ok, out) = verify(&exec, Some(&"ab".repeat(32)));
    assert!(!ok && out.contains("install key"), "{out}");
    let (ok, text) = verify(&exec, Some(&key));
    assert!(ok, "restored log: {text}");
}

#[test]
fn rotation_keeps_the_chain_verifiable_across_files() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start_with_env(
        "nobody",
        &[
            ("MYMCP_AUDIT_ENABLED", "true"),
            ("MYMCP_AUDIT_MAX_BYTES", "4096"),
            ("MYMCP_AUDIT_BACKUP_COUNT", "2"),
            ("MYMCP_AUDIT_SEAL_RECORDS", "5"),
        ],
    );
    let front = FrontendProcess::start(&exec.executor_socket());
    let rw = exec.add_token("writer", "rw");
    for i in 0..25 {
        call(
            front.addr,
            &rw,
            "bash_execute",
            json!({"command": format!("echo rotation {i}")}),
        );
    }
    let dir = exec.audit_dir();
    assert!(dir.join("audit.log.1").exists() && dir.join("audit.log.2").exists());
    assert!(
        !dir.join("audit.log.3").exists(),
        "only BACKUP_COUNT files are kept"
    );
    for f in ["audit.log", "audit.log.1", "audit.log.2"] {
        assert!(
            std::fs::metadata(dir.join(f)).unwrap().len() < 4096,
            "{f} over MYMCP_AUDIT_MAX_BYTES"
        );
    }
    let (ok, text) = verify(&exec, Some(&exec.audit_install_key()));
    assert!(ok, "{text}");
    assert!(text.contains("rotated away"), "{text}");
    // A file missing in the middle is a gap.
    std::fs::rename(dir.join("audit.log.1"), dir.join("moved")).unwrap();
    let (ok, text) = verify(&exec, None);
    assert!(!ok && text.contains("missing"), "{text}");
    std::fs::rename(dir.join("moved"), dir.join("audit.log.1")).unwrap();
}

/// Runs the executor with `args` and an environment of `env` (plus a private runtime dir).
fn executor_start_error(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("mymcp-executor"));
    cmd.env_clear()
        .env("MYMCP_RUNTIME_DIR", dir.path().join("run"))
        .env("MYMCP_TOKEN_FILE", dir.path().join("tokens.json"))
        .env("MYMCP_STATE_DIR", dir.path().join("state"))
        .env("MYMCP_FRONTEND_USER", "nobody")
        .env("MYMCP_ENV_FILE", "none")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_setting_refuses_start_up_with_one_line() {
    mymcp_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    std::fs::write(
        &env_file,
        "# settings\nexport MYMCP_READ_FILE_MAX_LIMIT='abc'\n",
    )
    .unwrap();
    let (code, err) = executor_start_error(&["--env-file", env_file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "mymcp-executor: MYMCP_READ_FILE_MAX_LIMIT: invalid integer \"abc\" (expected a whole number from 1 to 10000000)\n"
    );
    // The environment wins over the env file.
    let (code, err) = executor_start_error(
        &["--env-file", env_file.to_str().unwrap(), "--check-config"],
        &[("MYMCP_READ_FILE_MAX_LIMIT", "100")],
    );
    assert_eq!((code, err.as_str()), (Some(0), ""));
    // Found through MYMCP_ENV_FILE too; a boolean and a syntax error.
    std::fs::write(&env_file, "MYMCP_AUDIT_ENABLED=maybe\n").unwrap();
    let (code, err) = executor_start_error(&[], &[("MYMCP_ENV_FILE", env_file.to_str().unwrap())]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("MYMCP_AUDIT_ENABLED: invalid boolean \"maybe\""),
        "{err}"
    );
    std::fs::write(&env_file, "MYMCP_PORT 80\n").unwrap();
    let (code, err) = executor_start_error(&["--env-file", env_file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("line 1") && err.lines().count() == 1, "{err}");
    // mymcpctl doctor reports the same and exits non-zero.
    std::fs::write(&env_file, "MYMCP_GREP_MAX_RESULTS=-1\n").unwrap();
    let out = Command::new(bin("mymcpctl"))
        .args([
            "--runtime-dir",
            "/nonexistent",
            "doctor",
            "--env-file",
            env_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("MYMCP_GREP_MAX_RESULTS"), "{text}");
}

#[test]
fn a_python_or_go_install_is_imported_and_its_tokens_keep_working() {
    mymcp_tests::needs_root!();
    let old = tempfile::tempdir().unwrap();
    let legacy_rw = "tok_0123456789abcdef0123456789abcdef";
    let legacy_admin = "tok_fedcba9876543210fedcba9876543210";
    let tokens = old.path().join("tokens.json");
    std::fs::write(
        &tokens,
        json!({"tokens": {legacy_rw: {"name": "laptop", "created_at": "2026-01-01T00:00:00+00:00", "last_used": null, "enabled": true, "role": "rw"}}, "admin_token": legacy_admin}).to_string(),
    )
    .unwrap();
    let env = old.path().join(".env");
    std::fs::write(
        &env,
        format!("MYMCP_ADMIN_TOKEN={legacy_admin}\nMYMCP_PORT=8765\n"),
    )
    .unwrap();

    // Explicit import into a running executor.
    let exec = ExecutorProcess::start("nobody");
    let front = FrontendProcess::start(&exec.executor_socket());
    let out = ctl_json(
        &exec.runtime_dir,
        &[
            "token",
            "import",
            tokens.to_str().unwrap(),
            "--env-file",
            env.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(
        (out["added"].as_u64(), out["skipped"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(tools_list_status(front.addr, legacy_rw), 200);
    assert_eq!(
        admin(front.addr, legacy_admin, "GET", "/admin/tokens", "").status,
        200
    );
    let store = std::fs::read_to_string(&exec.token_file).unwrap();
    assert!(
        !store.contains(legacy_rw) && !store.contains(legacy_admin),
        "token values stored"
    );
    drop(front);
    drop(exec);

    // Start-up: the reference's file at MYMCP_TOKEN_FILE is converted in place and the env
    // file's admin token is imported.
    let state = tempfile::tempdir().unwrap();
    let converted = state.path().join("tokens.json");
    std::fs::copy(&tokens, &converted).unwrap();
    let exec = ExecutorProcess::start_with_env(
        "nobody",
        &[
            ("MYMCP_TOKEN_FILE", converted.to_str().unwrap()),
            ("MYMCP_ENV_FILE", env.to_str().unwrap()),
        ],
    );
    let front = FrontendProcess::start(&exec.executor_socket());
    assert_eq!(tools_list_status(front.addr, legacy_rw), 200);
    assert_eq!(
        admin(front.addr, legacy_admin, "GET", "/admin/tokens", "").status,
        200
    );
    let store = std::fs::read_to_string(&converted).unwrap();
    assert!(
        store.contains("mymcp-tokens-v1") && !store.contains(legacy_rw),
        "{store}"
    );
    // Rotating the admin token retires the env file's value for good.
    ctl_json(&exec.runtime_dir, &["token", "rotate-admin", "--json"]);
    assert_eq!(
        admin(front.addr, legacy_admin, "GET", "/admin/tokens", "").status,
        403
    );
}

#[test]
fn a_log_cut_while_the_executor_was_stopped_is_reported_after_the_restart() {
    mymcp_tests::needs_root!();
    let mut exec = ExecutorProcess::start_with_env("nobody", &[("MYMCP_AUDIT_ENABLED", "true")]);
    let rw = exec.add_token("writer", "rw");
    {
        let front = FrontendProcess::start(&exec.executor_socket());
        for i in 0..3 {
            call(
                front.addr,
                &rw,
                "bash_execute",
                json!({"command": format!("echo {i}")}),
            );
        }
    }
    let key = exec.audit_install_key();
    // A clean stop seals and records the head.
    exec.terminate();
    let dir = exec.dir.path().to_owned();
    let log = dir.join("audit/audit.log");
    let seals = dir.join("audit/audit.seals");
    let cut = |path: &Path, n: usize| {
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(path, lines[..lines.len() - n].join("\n") + "\n").unwrap();
    };
    // Remove the final seal and the last record, in the log and in audit.seals alike.
    cut(&log, 2);
    cut(&seals, 1);
    let path = |p: &str| dir.join(p).to_str().unwrap().to_owned();
    let exec2 = ExecutorProcess::start_with_env(
        "nobody",
        &[
            ("MYMCP_AUDIT_ENABLED", "true"),
            ("MYMCP_RUNTIME_DIR", &path("run")),
            ("MYMCP_TOKEN_FILE", &path("tokens.json")),
            ("MYMCP_STATE_DIR", &path("state")),
            ("MYMCP_AUDIT_LOG_DIR", &path("audit")),
        ],
    );
    // (exec2 serves on the old directory, not on its own.)
    let out = ctl(&dir.join("run"), &["audit", "verify", "--key", &key]);
    drop(exec2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("cut while it was stopped"), "{text}");
}
