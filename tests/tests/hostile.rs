//! A hostile frontend: code running as the frontend's uid drives `executor.sock` directly
//! (`mymcp-test-peer`) with frames out of state, cut short or of unknown variants, replayed
//! and guessed digests, grants it was never given or that are spent, cancels of other
//! requests' ids and thousands of connections. Nothing may run without a valid token of the
//! right role, the executor must stay up and keep serving the real frontend next to it, and its
//! memory and descriptors must stay bounded.

use mymcp_tests::{
    ctl, digest_hex, http_request, peer, post_mcp, proc_fd_count, rss_kib, spawn_peer, tools_call,
    user_ids, wait_until, ExecutorProcess, FrontendProcess,
};
use serde_json::json;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn nobody() -> (u32, u32) {
    user_ids("nobody")
}

/// An executor with a real frontend in front of it and an rw token.
struct Server {
    // Field order: the frontend stops before the executor.
    front: FrontendProcess,
    exec: ExecutorProcess,
    rw: String,
}

impl Server {
    fn start() -> Server {
        let exec = ExecutorProcess::start("nobody");
        let rw = exec.add_token("writer", "rw");
        let front = FrontendProcess::start(&exec.executor_socket());
        Server { front, exec, rw }
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.exec.scratch().join(name)
    }

    /// The well-behaved frontend still gets a command run.
    fn assert_served(&self, after: &str) {
        let r = post_mcp(
            self.front.addr,
            &self.rw,
            &tools_call(1, "bash_execute", json!({"command": "echo served"})),
        );
        assert_eq!(r.status, 200, "after {after}: {}", r.body);
        assert_eq!(r.tool_json()["stdout"], "served\n", "after {after}");
    }

    fn peer(&self, scenario: &str, arg: &str) -> Vec<String> {
        let (uid, gid) = nobody();
        peer(uid, gid, &self.exec.executor_socket(), scenario, arg)
    }
}

#[test]
fn malformed_and_out_of_state_frames_drop_only_that_connection_and_run_nothing() {
    mymcp_tests::needs_root!();
    let s = Server::start();
    let rw = digest_hex(&s.rw);
    for scenario in [
        "truncated-header",
        "truncated-body",
        "unknown-frame",
        "unknown-request",
        "empty-request",
        "empty-frame",
    ] {
        let out = s.peer(scenario, "");
        assert_eq!(
            out.last().map(String::as_str),
            Some("Closed"),
            "{scenario}: {out:?}"
        );
        assert!(
            !out.iter().any(|l| l.contains("id=")),
            "{scenario} got an answer: {out:?}"
        );
        s.assert_served(scenario);
    }

    // A Call with a real rw digest before the handshake: closed, nothing ran.
    let m = s.marker("before-hello");
    let out = s.peer("call-before-hello", &format!("{rw}:{}", m.display()));
    assert_eq!(out.last().map(String::as_str), Some("Closed"), "{out:?}");
    assert!(!out.iter().any(|l| l.contains("id=")), "{out:?}");
    // Two requests with one id: the violation drops the connection and stops the first one.
    let dup = s.marker("duplicate");
    let out = s.peer("duplicate-id", &format!("{rw}:{}", dup.display()));
    assert_eq!(out, ["Welcome", "Closed"]);
    std::thread::sleep(Duration::from_millis(1500));
    for m in [&m, &dup] {
        assert!(!m.exists(), "{} was created", m.display());
    }
    s.assert_served("duplicate-id");
}

#[test]
fn trace_context_is_checked_and_the_otlp_feeds_stay_closed_unless_enabled() {
    mymcp_tests::needs_root!();
    let s = Server::start();
    let rw = digest_hex(&s.rw);
    // An all-zero trace id does not decode: a violation, the call never runs.
    let m = s.marker("zero-trace");
    let out = s.peer("traced", &format!("{rw}:{}:zero", m.display()));
    assert_eq!(out, ["Welcome", "Closed"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!m.exists(), "a call with an invalid trace context ran");
    s.assert_served("zero-trace");
    // A trace context authorizes nothing: a wrong digest gets no spans, only the refusal.
    let m = s.marker("traced-wrong-token");
    let out = s.peer(
        "traced",
        &format!("{}:{}:sampled", "ab".repeat(32), m.display()),
    );
    assert_eq!(out[1], "Unauthenticated id=1", "{out:?}");
    assert!(!m.exists());
    // A sampled call runs once and comes back with the executor's spans; an unsampled one
    // with none. Without MYMCP_OTLP_AUDIT_LOGS / MYMCP_OTLP_EXECUTOR_METRICS, the frontend's
    // uid reads neither the audit records nor the counters.
    for (kind, first) in [
        ("sampled", "Traced spans=2 id=1"),
        ("unsampled", "Tool Ok id=1"),
    ] {
        let m = s.marker(kind);
        let out = s.peer("traced", &format!("{rw}:{}:{kind}", m.display()));
        assert_eq!(
            out,
            [
                "Welcome",
                first,
                "AuditRecords Off id=2",
                "Metrics Disabled id=3"
            ],
            "{kind}"
        );
        assert!(m.exists(), "{kind}: the call did not run");
    }
}

#[test]
fn revoked_and_guessed_digests_run_nothing() {
    mymcp_tests::needs_root!();
    let s = Server::start();
    let victim = s.exec.add_token("victim", "rw");
    // It works while valid, so the refusals below are the revocation's doing.
    let ran = s.marker("valid");
    let out = s.peer(
        "bash-with-digest",
        &format!("{}:{}", digest_hex(&victim), ran.display()),
    );
    assert_eq!(out, ["Welcome", "Tool Ok id=9"]);
    assert!(ran.exists());

    let out = ctl(&s.exec.runtime_dir, &["token", "revoke", &victim]);
    assert!(out.status.success(), "{out:?}");
    let m = s.marker("revoked");
    let out = s.peer(
        "bash-with-digest",
        &format!("{}:{}", digest_hex(&victim), m.display()),
    );
    assert_eq!(out, ["Welcome", "Unauthenticated id=9"]);

    // 2,000 random digests pipelined on one connection.
    let g = s.marker("guessed");
    let out = s.peer("guess-digests", &format!("2000:{}", g.display()));
    assert_eq!(out, ["Welcome", "Unauthenticated=2000 other=0"]);
    for m in [&m, &g] {
        assert!(!m.exists(), "{} was created", m.display());
    }
    s.assert_served("guessed digests");
}

/// The grant id inside a ticket URL (`…/files/raw/<ticket>`): byte 1..17 of the base64url
/// payload (see `crates/frontend/src/tickets.rs`).
fn grant_of(url: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let ticket = url.rsplit('/').next().unwrap();
    let mut bits = Vec::new();
    for c in ticket.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64url") as u8;
        bits.extend((0..6).rev().map(|i| (v >> i) & 1));
    }
    let bytes: Vec<u8> = bits
        .chunks(8)
        .map(|c| c.iter().fold(0, |a, b| a << 1 | b))
        .collect();
    bytes[1..17].iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn grants_never_given_or_already_spent_are_refused() {
    mymcp_tests::needs_root!();
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("shared.txt");
    std::fs::write(&file, "shared bytes\n").unwrap();
    let v = post_mcp(
        s.front.addr,
        &s.rw,
        &tools_call(
            1,
            "prepare_download",
            json!({"src_path": file.to_str().unwrap()}),
        ),
    )
    .tool_json();
    let url = v["url"].as_str().unwrap().to_owned();
    let grant = grant_of(&url);
    // Before use, the peer sees the grant as the frontend would (a compromised frontend sees
    // tickets in flight; that is allowed), but an upload with it is refused.
    assert_eq!(
        s.peer("grant", &format!("probe:download:{grant}")),
        ["Welcome", "Probe Ok id=1"]
    );
    assert_eq!(
        s.peer("grant", &format!("redeem:upload:{grant}")),
        ["Welcome", "Transfer Err wrong_method id=1"]
    );
    // The real client downloads it once; then it is spent for everybody.
    let r = http_request(s.front.addr, "GET", &url, &[], "");
    assert_eq!((r.status, r.body.as_str()), (200, "shared bytes\n"));
    assert_eq!(
        s.peer("grant", &format!("redeem:download:{grant}")),
        ["Welcome", "Transfer Err ticket_used id=1"]
    );
    assert_eq!(
        s.peer("grant", &format!("probe:download:{grant}")),
        ["Welcome", "Probe Err ticket_used id=1"]
    );
    // Committing an upload that was never claimed does nothing.
    assert_eq!(
        s.peer("grant", &format!("commit:upload:{grant}")),
        ["Welcome", "Acknowledged false id=1"]
    );
    // A grant never given, one bit away from the real one.
    let mut other = grant.clone();
    other.replace_range(0..2, if &grant[0..2] == "00" { "01" } else { "00" });
    assert_eq!(
        s.peer("grant", &format!("redeem:download:{other}")),
        ["Welcome", "Transfer Err ticket_not_found id=1"]
    );
}

#[test]
fn cancels_of_other_ids_never_stop_another_connections_request() {
    mymcp_tests::needs_root!();
    let s = Server::start();
    let rw = digest_hex(&s.rw);
    // Connection B cancels A's id (and a thousand more): A's command completes.
    let m = s.marker("completed");
    let out = s.peer("cancel-foreign", &format!("{rw}:{}", m.display()));
    assert_eq!(
        out,
        ["Welcome", "Welcome", "Identity rw id=77", "Tool Ok id=1"]
    );
    assert!(m.exists(), "the command was stopped by a foreign cancel");

    // The real frontend's request ids are small numbers on its own connection: a peer
    // cancelling all of them on its connection does not touch the frontend's call.
    let (addr, token) = (s.front.addr, s.rw.clone());
    let call = std::thread::spawn(move || {
        post_mcp(
            addr,
            &token,
            &tools_call(
                1,
                "bash_execute",
                json!({"command": "sleep 1.5; echo finished"}),
            ),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.peer("cancel-spam", "5000"),
        ["Welcome", "Unauthenticated id=5001"]
    );
    let r = call.join().unwrap();
    assert_eq!(r.tool_json()["stdout"], "finished\n", "{}", r.body);
}

fn executor_usage(pid: u32) -> (usize, u64) {
    (proc_fd_count(pid), rss_kib(pid))
}

#[test]
fn thousands_of_connections_leave_the_executor_serving_with_bounded_memory_and_fds() {
    mymcp_tests::needs_root!();
    let s = Server::start();
    let pid = s.exec.pid();
    let (uid, gid) = nobody();
    let sock = s.exec.executor_socket();
    s.assert_served("start");
    let (fds0, rss0) = executor_usage(pid);

    // 3,000 connections one after the other, each ending in its own way.
    let out = s.peer("churn", "3000");
    assert_eq!(out, ["churned=3000"]);
    s.assert_served("churn");

    // 200 connections that never finish a Hello: beyond the limit of 64 they are closed at
    // once, the rest after the Hello timeout (5 s). A frontend (re)starting meanwhile gets in
    // as soon as that frees a slot, while the attacker still holds its sockets open.
    let mut holder = spawn_peer(uid, gid, &sock, "hold", "200:partial:15");
    std::thread::sleep(Duration::from_millis(500));
    s.assert_served("silent connections held");
    let t = Instant::now();
    let second = FrontendProcess::start(&sock);
    eprintln!(
        "a new frontend connected {} ms into the hold",
        t.elapsed().as_millis()
    );
    assert!(
        holder.try_wait().unwrap().is_none(),
        "the new frontend only got in after the attacker let go"
    );
    let r = post_mcp(
        second.addr,
        &s.rw,
        &tools_call(1, "bash_execute", json!({"command": "echo second"})),
    );
    assert_eq!(r.tool_json()["stdout"], "second\n");
    let mut text = String::new();
    holder.wait().unwrap();
    holder
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let opened = text
        .lines()
        .find_map(|l| l.strip_prefix("opened="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_eq!(
        text.lines().last(),
        Some(format!("closed={opened}").as_str()),
        "every connection without a Hello was closed: {text}"
    );
    drop(second);

    // Connections that complete the handshake and then idle keep their slots (a peer with
    // the frontend's uid could as well kill the frontend; see docs/threat-model.md): no more
    // than the limit get in, and the frontend already connected is served throughout.
    let mut holder = spawn_peer(uid, gid, &sock, "hold", "100:hello:3");
    std::thread::sleep(Duration::from_millis(1000));
    s.assert_served("handshaken connections held");
    holder.wait().unwrap();
    let mut text = String::new();
    holder
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let welcomed: usize = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("welcomed="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..64).contains(&welcomed),
        "the frontend holds one of the 64 slots: {text}"
    );
    // Once they are gone, new connections are served again.
    let (uid, gid) = nobody();
    assert_eq!(
        peer(uid, gid, &sock, "identify", &s.rw),
        ["Welcome", "Identity rw id=1"]
    );

    // Descriptors back to where they were; memory within a generous bound.
    assert!(
        wait_until(Duration::from_secs(10), || proc_fd_count(pid) <= fds0),
        "descriptors leaked: {fds0} before, {} after",
        proc_fd_count(pid)
    );
    let (fds1, rss1) = executor_usage(pid);
    eprintln!("executor: {fds0} fds / {rss0} KiB before, {fds1} fds / {rss1} KiB after");
    assert!(
        rss1 < rss0 + 32 * 1024,
        "executor RSS grew from {rss0} KiB to {rss1} KiB"
    );
    s.assert_served("the end");
}

/// The account a call acts as comes from the executor's store only: a peer holding (the digest
/// of) a token mapped to an account gets its command run as that account, and nothing on the
/// wire can name another one; asking for a root token without an admin token is refused.
#[test]
fn a_hostile_peer_cannot_choose_the_account_a_call_acts_as() {
    mymcp_tests::needs_root!();
    let account = mymcp_tests::TestAccount::create("peer");
    let s = Server::start();
    let mapped = s.exec.add_token_as("mapped", "rw", &account.name);
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let marker = shared.path().join("ran");
    let out = s.peer(
        "bash-with-digest",
        &format!("{}:{}", digest_hex(&mapped), marker.display()),
    );
    assert_eq!(out, ["Welcome", "Tool Ok id=9"]);
    let m = std::fs::metadata(&marker).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((m.uid(), m.gid()), (account.uid, account.gid));

    // Root's directory is closed to the account whatever the peer sends.
    let closed = s.marker("as-root");
    let out = s.peer(
        "bash-with-digest",
        &format!("{}:{}", digest_hex(&mapped), closed.display()),
    );
    assert_eq!(out, ["Welcome", "Tool Ok id=9"]);
    assert!(!closed.exists(), "the command ran as root");

    // A token of root's (user "root" in the request) without an admin token: refused.
    let out = s.peer("admin-create", &mapped);
    assert!(
        out.iter().any(|l| l.starts_with("Admin Forbidden")),
        "{out:?}"
    );
    let list = ctl(&s.exec.runtime_dir, &["token", "list"]);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("forged"));
    s.assert_served("a mapped token's digest");
}

const OAUTH: [(&str, &str); 2] = [
    ("MYMCP_OAUTH_ENABLED", "true"),
    ("MYMCP_PUBLIC_BASE_URL", "https://mcp.example.com"),
];

/// The live OAuth grants, as `mymcpctl oauth grants --json` lists them.
fn oauth_grants(exec: &ExecutorProcess) -> serde_json::Value {
    let run = exec.executor_socket().parent().unwrap().to_owned();
    let out = ctl(&run, &["oauth", "grants", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_hostile_frontend_can_neither_mint_nor_widen_an_oauth_token() {
    mymcp_tests::needs_root!();
    use std::io::BufRead;
    let exec = ExecutorProcess::start_with_env("nobody", &OAUTH);
    let run = exec.executor_socket().parent().unwrap().to_owned();
    let grants = || oauth_grants(&exec);
    let marker = exec.scratch().join("forged-oauth-ran");
    let (uid, gid) = nobody();
    let mut child = spawn_peer(
        uid,
        gid,
        &exec.executor_socket(),
        "oauth-forge",
        marker.to_str().unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut line = || lines.next().expect("a line").expect("utf8");
    assert_eq!(line(), "Welcome");
    let code = line()
        .strip_prefix("code ")
        .expect("the approval code")
        .to_owned();

    // 200 guessed codes, refresh tokens, pending requests and cookie secrets each: all refused,
    // and nothing is granted.
    assert_eq!(
        line(),
        r#"guesses {"Error invalid_grant": 400, "Error invalid_request": 400}"#
    );
    assert_eq!(grants(), json!([]));

    // The host approves ro: the frontend gets ro, and asking for rw on refresh gives ro.
    let ok = ctl(
        &run,
        &["oauth", "approve", &code, "--user", "root", "--role", "ro"],
    );
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(line(), "exchanged scope=ro");
    assert_eq!(line(), "refreshed scope=ro");
    // The first access token ended with the refresh; the second is ro (and may ask for more).
    assert!(line().starts_with("Unauthenticated"));
    assert!(line().starts_with("Tool Err InsufficientScope"));
    assert!(child.wait().unwrap().success());
    assert!(
        !marker.exists(),
        "a command ran with a forged or widened token"
    );
    assert_eq!(grants()[0]["role"], "Ro");

    // The grant outlives a restart of the executor (the state file), still ro.
    let mut exec = exec;
    exec.terminate();
    let restarted = ExecutorProcess::restart_of(&mut exec, &OAUTH);
    let kept = oauth_grants(&restarted);
    assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
    assert_eq!(kept[0]["role"], "Ro");
}
