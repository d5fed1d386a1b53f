//! Starving the root executor from the frontend's uid, without any token (issue 18, F2), and
//! forging lines of its text log (F7). A hostile peer (`mymcp-test-peer`, run as the
//! frontend's uid) floods requests and never reads the answers, and leaves frames unfinished
//! on every connection it can open; the executor must stop reading rather than grow, close a
//! connection whose frame does not complete in time, and keep serving the real frontend
//! throughout. Text log lines must stay one line each whatever a client puts in a field.

use mymcp_tests::{
    peer, post_mcp, proc_fd_count, rss_kib, spawn_peer, tools_call, user_ids, wait_until,
    ExecutorProcess, FrontendProcess,
};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::{Duration, Instant};

const MIB: u64 = 1024;

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

    /// The well-behaved frontend still gets a command run.
    fn assert_served(&self, during: &str) {
        let r = post_mcp(
            self.front.addr,
            &self.rw,
            &tools_call(1, "bash_execute", json!({"command": "echo served"})),
        );
        assert_eq!(r.status, 200, "{during}: {}", r.body);
        assert_eq!(r.tool_json()["stdout"], "served\n", "{during}");
    }

    fn spawn_peer(&self, scenario: &str, arg: &str) -> Child {
        let (uid, gid) = nobody();
        spawn_peer(uid, gid, &self.exec.executor_socket(), scenario, arg)
    }
}

/// The peer's stdout, line by line as it comes.
struct Lines {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Lines {
    fn of(mut child: Child) -> Lines {
        let out = child.stdout.take().expect("stdout");
        Lines {
            child,
            lines: BufReader::new(out).lines(),
        }
    }

    fn next(&mut self) -> String {
        self.lines
            .next()
            .expect("the peer ended early")
            .expect("peer output")
    }

    fn finish(mut self) -> String {
        let mut rest = String::new();
        for l in self.lines.by_ref() {
            rest.push_str(&l.expect("peer output"));
            rest.push('\n');
        }
        assert!(self.child.wait().expect("wait peer").success());
        rest
    }
}

/// `key=value` out of a line of the peer's.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .expect("a number")
}

/// The largest RSS (KiB) of `pid` seen while sampling for `span`.
fn peak_rss(pid: u32, span: Duration) -> u64 {
    let end = Instant::now() + span;
    let mut peak = rss_kib(pid);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_kib(pid));
    }
    peak
}

/// F2: a peer that sends requests and never reads their answers used to grow the executor by
/// one task per request (400,000 tokenless `Metrics` took it from 252 MB to 1,855 MB RSS).
/// Now a request counts as in flight until its answer is written, and a connection with
/// `MAX_IN_FLIGHT` unwritten answers is not read from until they are: the peer's writes stall,
/// nothing is dropped, the memory stays flat, and the real frontend is served meanwhile.
#[test]
fn a_peer_that_never_reads_its_answers_is_held_back_not_grown_into() {
    mymcp_tests::needs_root!();
    let s = Server::start();
    let pid = s.exec.pid();
    s.assert_served("before the flood");
    let (fds0, rss0) = (proc_fd_count(pid), rss_kib(pid));

    // 8 connections × up to 50,000 requests, none of them ever read.
    const CONNS: u64 = 8;
    const EACH: u64 = 50_000;
    let mut flood = Lines::of(s.spawn_peer("flood", &format!("{CONNS}:{EACH}:8")));
    let sent_line = flood.next();
    let peak = peak_rss(pid, Duration::from_secs(2));
    eprintln!(
        "flood: {sent_line}; executor RSS {rss0} KiB before, peak {peak} KiB while held \
         (+{} MiB)",
        peak.saturating_sub(rss0) / MIB
    );
    // The executor is still served while the flood's connections are held unread.
    s.assert_served("while the flood is held");
    let rest = flood.finish();
    assert_eq!(rest, "held\n");

    assert!(
        peak < rss0 + 32 * MIB,
        "the executor grew from {rss0} KiB to {peak} KiB under a flood of unread answers \
         ({sent_line})"
    );
    // Backpressure, not a violation: every connection was stopped by the executor no longer
    // reading, and none was dropped.
    assert_eq!(field(&sent_line, "stalled"), CONNS, "{sent_line}");
    assert_eq!(field(&sent_line, "closed"), 0, "{sent_line}");
    assert!(field(&sent_line, "sent") < CONNS * EACH, "{sent_line}");

    // Once the peer is gone, so is everything it made the executor hold.
    assert!(
        wait_until(Duration::from_secs(10), || proc_fd_count(pid) <= fds0),
        "descriptors: {fds0} before, {} after",
        proc_fd_count(pid)
    );
    s.assert_served("after the flood");
}

/// F2: 63 connections each holding a partial 32 MiB frame used to pin about 2 GiB, and an
/// unfinished frame was never timed out after `Hello`. Now bytes of request frames are
/// bounded per connection and in total (a connection waits for room, unread), each connection
/// keeps a small allowance of its own so that small frames pass while large ones wait, and a
/// frame whose body has not arrived within the deadline closes its connection.
#[test]
fn unfinished_frames_pin_bounded_memory_and_are_closed_after_the_deadline() {
    mymcp_tests::needs_root!();
    let s = Server::start();
    let pid = s.exec.pid();
    s.assert_served("before");
    let (fds0, rss0) = (proc_fd_count(pid), rss_kib(pid));

    // 63 connections (with the frontend's, all 64 the executor serves), 32 MiB - 1 of a
    // 32 MiB frame each.
    let mut big = Lines::of(s.spawn_peer("partial", &format!("63:{}:10", 32 << 20)));
    let opened = big.next();
    assert_eq!(opened, "opened=63 welcomed=63");
    let peak = peak_rss(pid, Duration::from_secs(6));
    s.assert_served("while 63 connections hold 32 MiB frames");
    let rest = big.finish();
    eprintln!(
        "32 MiB partial frames: executor RSS {rss0} KiB before, peak {peak} KiB (+{} MiB); {}",
        peak.saturating_sub(rss0) / MIB,
        rest.trim()
    );
    assert!(
        peak < rss0 + 160 * MIB,
        "63 partial frames of 32 MiB took the executor from {rss0} KiB to {peak} KiB"
    );
    assert!(
        wait_until(Duration::from_secs(10), || proc_fd_count(pid) <= fds0),
        "descriptors: {fds0} before, {} after",
        proc_fd_count(pid)
    );

    // 63 frames of 1 MiB, one byte short: all fit, none completes; each connection is
    // closed once the deadline (15 s) has passed, and not before 10 s.
    let mut small = Lines::of(s.spawn_peer("partial", &format!("63:{}:25", 1 << 20)));
    assert_eq!(small.next(), "opened=63 welcomed=63");
    std::thread::sleep(Duration::from_secs(2));
    s.assert_served("while 63 connections hold 1 MiB frames");
    let closed = small.finish();
    eprintln!("1 MiB partial frames: {}", closed.trim());
    assert_eq!(field(&closed, "closed"), 63, "{closed}");
    assert!(field(&closed, "first_ms") >= 10_000, "{closed}");
    s.assert_served("after");
}

/// F7: request ids come from the frontend's uid and are logged; the executor takes at most
/// 128 visible ASCII characters (what the frontend itself accepts from `X-Request-ID`), and
/// anything else is a malformed frame: the connection is dropped before the id is used.
#[test]
fn request_ids_longer_than_128_or_not_visible_ascii_are_protocol_violations() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let (uid, gid) = nobody();
    let sock = exec.executor_socket();
    for (kind, expected) in [
        ("max", "Unauthenticated id=1"),
        ("empty", "Unauthenticated id=1"),
        ("long", "Closed"),
        ("newline", "Closed"),
    ] {
        assert_eq!(
            peer(uid, gid, &sock, "request-id", kind),
            ["Welcome", expected],
            "request id {kind}"
        );
    }
    assert!(
        !exec
            .log_lines()
            .iter()
            .any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line reached the log"
    );
}

/// F7: a tool name is whatever a client sends (the executor logs up to 64 bytes of it); a line
/// break in it must come out escaped, inside the one line of its event.
#[test]
fn a_line_break_in_a_logged_field_stays_inside_one_escaped_line() {
    mymcp_tests::needs_root!();
    let s = Server::start();
    let forged = "2026-01-01T00:00:00.000000Z  INFO forged: token revoked";
    let r = post_mcp(
        s.front.addr,
        &s.rw,
        &tools_call(1, &format!("x\n{forged}\r\u{1b}[2K"), json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(wait_until(Duration::from_secs(5), || s
        .exec
        .log_lines()
        .iter()
        .any(|l| l.contains("tool call refused by the frontend"))));
    let log = s.exec.log_lines();
    let refused: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("tool call refused by the frontend"))
        .collect();
    assert_eq!(refused.len(), 1, "{log:#?}");
    assert!(
        refused[0].contains(&format!("x\\n{forged}\\r\\u{{1b}}[2K")),
        "the name is not escaped in its line: {:?}",
        refused[0]
    );
    assert!(
        !log.iter().any(|l| l.starts_with(forged)),
        "a forged line reached the log: {log:#?}"
    );
}
