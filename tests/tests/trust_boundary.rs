//! The trust invariant, attacked: code running as the frontend's uid (or any other uid) talks
//! to the executor's sockets directly and must get nothing a token it holds would not give.

use mymcp_tests::{digest_hex, peer, user_ids, ExecutorProcess};
use std::path::Path;

fn nobody() -> (u32, u32) {
    user_ids("nobody")
}

fn marker(exec: &ExecutorProcess, name: &str) -> std::path::PathBuf {
    exec.scratch().join(name)
}

#[test]
fn forged_calls_from_the_frontend_uid_are_refused_and_nothing_runs() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let ro = exec.add_token("reader", "ro");
    let (uid, gid) = nobody();
    let sock = exec.executor_socket();

    let m1 = marker(&exec, "no-token");
    let out = peer(uid, gid, &sock, "bash-without-token", m1.to_str().unwrap());
    assert_eq!(out, ["Welcome", "Unauthenticated id=9"]);

    let m2 = marker(&exec, "wrong-token");
    let out = peer(uid, gid, &sock, "bash-wrong-token", m2.to_str().unwrap());
    assert_eq!(out, ["Welcome", "Unauthenticated id=9"]);

    // A real ro token's digest, as a frontend that saw it in flight would have it.
    let m3 = marker(&exec, "ro-token");
    let out = peer(
        uid,
        gid,
        &sock,
        "bash-with-digest",
        &format!("{}:{}", digest_hex(&ro), m3.display()),
    );
    assert_eq!(out, ["Welcome", "Tool Err PermissionDenied id=9"]);

    for m in [&m1, &m2, &m3] {
        assert!(
            !m.exists(),
            "{} was created: a refused command ran",
            m.display()
        );
    }
}

#[test]
fn an_rw_digest_does_run_so_the_refusals_above_are_real() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let (uid, gid) = nobody();
    let m = marker(&exec, "rw-ran");
    let out = peer(
        uid,
        gid,
        &exec.executor_socket(),
        "bash-with-digest",
        &format!("{}:{}", digest_hex(&rw), m.display()),
    );
    assert_eq!(out, ["Welcome", "Tool Ok id=9"]);
    assert!(m.exists());
}

#[test]
fn admin_and_metrics_tokens_cannot_call_tools() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let (uid, gid) = nobody();
    for role in ["admin", "metrics"] {
        let t = exec.add_token(&format!("{role}-token"), role);
        assert_eq!(
            peer(uid, gid, &exec.executor_socket(), "identify", &t),
            ["Welcome", "Unauthenticated id=1"]
        );
    }
}

#[test]
fn only_client_tokens_learn_what_the_host_offers() {
    mymcp_tests::needs_root!();
    let recorder = tempfile::tempdir().unwrap();
    let data = recorder.path().to_str().unwrap();
    let exec = ExecutorProcess::start_with_env("nobody", &[("MYMCP_RECORDER_DATA_DIR", data)]);
    let (uid, gid) = nobody();
    for role in ["admin", "metrics"] {
        let t = exec.add_token(&format!("{role}-offer"), role);
        assert_eq!(
            peer(uid, gid, &exec.executor_socket(), "offer", &t),
            ["Welcome", "Unauthenticated id=1"]
        );
    }
    assert_eq!(
        peer(uid, gid, &exec.executor_socket(), "offer", "tok_unknown"),
        ["Welcome", "Unauthenticated id=1"]
    );
    // No recorder has written an overview for this executor yet.
    let ro = exec.add_token("offer-reader", "ro");
    assert_eq!(
        peer(uid, gid, &exec.executor_socket(), "offer", &ro),
        ["Welcome", "Offer server_overview=false id=1"]
    );
    // Once one is there, server_overview can be listed.
    std::fs::create_dir_all(recorder.path().join("overview")).unwrap();
    std::fs::write(recorder.path().join("overview/overview.md"), "# Host\n").unwrap();
    assert_eq!(
        peer(uid, gid, &exec.executor_socket(), "offer", &ro),
        ["Welcome", "Offer server_overview=true id=1"]
    );
}

#[test]
fn another_uid_is_refused_at_accept_even_with_the_right_group() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let (_, gid) = nobody();
    // uid 1 (daemon) with the frontend's group: the socket file's mode lets it connect, so
    // only the SO_PEERCRED check stands between it and the executor.
    let out = peer(1, gid, &exec.executor_socket(), "identify", &rw);
    assert_eq!(
        out,
        ["Closed"],
        "a connection from uid 1 must be closed without a Welcome"
    );
    // The right uid with the same token is served.
    let (uid, gid) = nobody();
    assert_eq!(
        peer(uid, gid, &exec.executor_socket(), "identify", &rw),
        ["Welcome", "Identity rw id=1"]
    );
}

#[test]
fn the_control_socket_refuses_the_frontend_uid() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let (uid, gid) = nobody();
    // control.sock is 0600 root: the frontend cannot even connect.
    let out = peer(uid, gid, &exec.control_socket(), "hello", "");
    assert!(
        out[0].starts_with("ConnectFailed") || out == ["Closed"],
        "{out:?}"
    );
}

#[test]
fn garbage_drops_only_that_connection() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let (uid, gid) = nobody();
    let sock = exec.executor_socket();
    for scenario in [
        "garbage",
        "garbage-after-hello",
        "oversized",
        "second-hello",
    ] {
        let out = peer(uid, gid, &sock, scenario, "");
        assert_eq!(
            out.last().map(String::as_str),
            Some("Closed"),
            "{scenario}: {out:?}"
        );
        // The executor still serves a well-behaved peer.
        assert_eq!(
            peer(uid, gid, &sock, "identify", &rw),
            ["Welcome", "Identity rw id=1"],
            "after {scenario}"
        );
    }
    let out = peer(uid, gid, &sock, "request-before-hello", &rw);
    assert_eq!(out, ["Closed"], "a request before Hello is out of state");
}

#[test]
fn a_peer_from_another_build_is_refused() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let (uid, gid) = nobody();
    let out = peer(uid, gid, &exec.executor_socket(), "wrong-build", "");
    assert!(out[0].starts_with("Refused incompatible peer"), "{out:?}");
    assert_eq!(out[1], "Closed");
}

#[test]
fn token_store_holds_digests_only_and_is_private() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let t = exec.add_token("laptop", "rw");
    let text = std::fs::read_to_string(&exec.token_file).unwrap();
    assert!(!text.contains(&t[4..]), "token value found in the store");
    assert!(text.contains(&digest_hex(&t)));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&exec.token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(Path::new(&exec.executor_socket()).exists());
}
