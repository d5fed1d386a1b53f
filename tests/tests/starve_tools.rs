//! Starving the file tools and transfers of everyone with one token (issue 18, F4 and F5).
//!
//! - F4: hundreds of parallel reads of a file that never ends (`/proc/kmsg`, a "regular" file
//!   whose read waits for kernel messages) by one ro token, forwarded as a frontend would: the
//!   other tokens' `read_file`, `write_file`, `grep` and transfers still complete, the blocking
//!   reads end with a typed error within their deadline (or `Busy` beyond the token's share),
//!   and SIGTERM in the middle of it exits within the shutdown grace.
//! - F5: one token asking for more transfer tickets than the executor keeps leaves room for
//!   the other tokens, and a token revoked by `mymcpctl`, the admin API or a hand edit of the
//!   token store gives its tickets back at once.
//!
//! The attacker is the hostile peer (`mymcp-test-peer flood`) speaking to `executor.sock` as
//! the frontend's uid: exactly what the frontend sends when clients make these calls, without
//! depending on the frontend's own connection limits. The victims go through the real
//! frontend over HTTP.

use mymcp_tests::{
    ctl, digest_hex, http_request, post_mcp, spawn_peer, tools_call, user_ids, ExecutorProcess,
    FrontendProcess,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The file whose reads block: `/proc/kmsg` waits for the next kernel message.
const BLOCKING: &str = "/proc/kmsg";
/// Parallel reads of the attack: more than tokio's blocking pool has threads (512).
const FLOOD: u64 = 520;
/// `MYMCP_READ_FILE_TIMEOUT_SEC` of these tests.
const READ_TIMEOUT_SECS: u64 = 3;
/// `MYMCP_SHUTDOWN_GRACE_SEC` of these tests.
const GRACE_SECS: u64 = 2;
/// How long a victim's call may take before it counts as hung.
const VICTIM_DEADLINE: Duration = Duration::from_secs(20);

/// Whether the blocking file can be used here (it needs root and a kernel that has it).
fn blocking_file_available() -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(BLOCKING)
        .is_ok();
    if !ok {
        eprintln!("skipped: {BLOCKING} cannot be opened here");
    }
    ok
}

struct Setup {
    // Field order: the frontend stops before the executor.
    front: FrontendProcess,
    exec: ExecutorProcess,
    dir: tempfile::TempDir,
    /// The executor was stopped and reaped by the test.
    stopped: bool,
}

impl Setup {
    fn start(env: &[(&str, &str)]) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("mymcp-starve-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "one\nneedle two\nthree\n").unwrap();
        let exec = ExecutorProcess::start_with_env("nobody", env);
        let front = FrontendProcess::start(&exec.executor_socket());
        Setup {
            front,
            exec,
            dir,
            stopped: false,
        }
    }

    fn p(&self, rel: &str) -> String {
        self.dir.path().join(rel).to_str().unwrap().to_owned()
    }

    /// Starts the hostile peer's flood: `n` calls of `tool` on `path` with `token`, at most
    /// `window` in flight.
    fn flood(&self, token: &str, (n, window): (u64, u64), tool: &str, path: &str) -> Child {
        let (uid, gid) = user_ids("nobody");
        let wait_secs = 60;
        let arg = format!(
            "{}:{n}:{window}:{wait_secs}:{tool}:{path}",
            digest_hex(token)
        );
        spawn_peer(uid, gid, &self.exec.executor_socket(), "tool_flood", &arg)
    }
}

impl Drop for Setup {
    /// An executor that does not stop within its grace is killed, so that a failing test
    /// fails instead of hanging in `ExecutorProcess`'s own drop.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let pid = self.exec.pid();
        self.exec.signal_term();
        if exited_within(pid, Duration::from_secs(GRACE_SECS + 10)).is_none() {
            eprintln!("the executor ignored SIGTERM: killing it");
            mymcp_tests::send_signal(pid, libc::SIGKILL);
        }
    }
}

/// What the flood's calls got: kind of answer → (count, slowest in ms); and how many were
/// answered at all.
#[derive(Debug)]
struct Flood {
    answered: u64,
    outcomes: BTreeMap<String, (u64, u64)>,
}

impl Flood {
    fn of(child: Child) -> Flood {
        let out = child.wait_with_output().expect("peer");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut flood = Flood {
            answered: 0,
            outcomes: BTreeMap::new(),
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                [sent, answered] if sent.starts_with("sent=") => {
                    flood.answered = answered.trim_start_matches("answered=").parse().unwrap();
                }
                ["outcome", kind, count, ms] => {
                    let ms = ms.trim_start_matches("max_ms=").parse().unwrap();
                    flood
                        .outcomes
                        .insert(kind.to_string(), (count.parse().unwrap(), ms));
                }
                _ => {}
            }
        }
        flood
    }

    fn count(&self, kind: &str) -> u64 {
        self.outcomes.get(kind).map_or(0, |o| o.0)
    }

    fn slowest_ms(&self, kind: &str) -> u64 {
        self.outcomes.get(kind).map_or(0, |o| o.1)
    }
}

/// Threads of a process, and how many of them wait in the kernel's log reader.
fn threads(pid: u32) -> (usize, usize) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let mut all = 0;
    let mut in_kmsg = 0;
    for t in tasks.flatten() {
        all += 1;
        let wchan = std::fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
        if wchan.contains("syslog") {
            in_kmsg += 1;
        }
    }
    (all, in_kmsg)
}

/// One HTTP request with a deadline: `Err` when it did not complete in time.
fn http(addr: SocketAddr, head: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(VICTIM_DEADLINE))
        .map_err(|e| e.to_string())?;
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("no answer: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A tool call over HTTP with a deadline: the tool JSON, or why there is none.
fn call(addr: SocketAddr, token: &str, tool: &str, args: Value) -> Result<Value, String> {
    let body = tools_call(1, tool, args).to_string();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, text) = http(addr, &head, body.as_bytes())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    let inner = v["result"]["content"][0]["text"]
        .as_str()
        .ok_or_else(|| format!("no tool result: {v}"))?;
    serde_json::from_str(inner).map_err(|e| e.to_string())
}

/// A tool call that must succeed.
fn ok(addr: SocketAddr, token: &str, tool: &str, args: Value) -> Result<Value, String> {
    let v = call(addr, token, tool, args)?;
    if v["success"] == false || v.get("error").is_some() {
        return Err(format!("{tool} failed: {v}"));
    }
    Ok(v)
}

/// A download and an upload through tickets, start to end.
fn transfer_round_trip(addr: SocketAddr, token: &str, src: &str, dest: &str) -> Result<(), String> {
    let v = ok(addr, token, "prepare_download", json!({"src_path": src}))?;
    let url = v["url"].as_str().ok_or("no url")?.to_owned();
    let head = format!("GET {url} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, body) = http(addr, &head, b"")?;
    if status != 200 || !body.contains("needle two") {
        return Err(format!("download: HTTP {status}: {body}"));
    }
    let v = ok(addr, token, "prepare_upload", json!({"dest_path": dest}))?;
    let url = v["url"].as_str().ok_or("no url")?.to_owned();
    let data = b"uploaded while under attack\n";
    let head = format!(
        "PUT {url} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    );
    let (status, body) = http(addr, &head, data)?;
    if status != 200 {
        return Err(format!("upload: HTTP {status}: {body}"));
    }
    Ok(())
}

/// Runs the victim's calls in parallel; returns each one's name, outcome and duration.
fn victims(s: &Setup, token: &str) -> Vec<(&'static str, Result<(), String>, Duration)> {
    let addr = s.front.addr;
    let (notes, written, uploaded, dir) = (
        s.p("notes.txt"),
        s.p("written.txt"),
        s.p("uploaded.txt"),
        s.p(""),
    );
    type Job = Box<dyn FnOnce() -> Result<(), String> + Send>;
    let token = token.to_owned();
    let jobs: Vec<(&'static str, Job)> = vec![
        ("read_file", {
            let (t, p) = (token.clone(), notes.clone());
            Box::new(move || {
                let v = ok(addr, &t, "read_file", json!({"file_path": p}))?;
                match v["content"].as_str() {
                    Some(c) if c.contains("needle two") => Ok(()),
                    _ => Err(format!("read_file: {v}")),
                }
            })
        }),
        ("write_file", {
            let (t, p) = (token.clone(), written.clone());
            Box::new(move || {
                ok(
                    addr,
                    &t,
                    "write_file",
                    json!({"file_path": p, "content": "written under attack\n"}),
                )
                .map(drop)
            })
        }),
        ("grep", {
            let (t, p) = (token.clone(), dir.clone());
            Box::new(move || {
                let v = ok(addr, &t, "grep", json!({"pattern": "needle", "path": p}))?;
                if v.to_string().contains("needle two") {
                    Ok(())
                } else {
                    Err(format!("grep: {v}"))
                }
            })
        }),
        ("transfer", {
            let t = token.clone();
            Box::new(move || transfer_round_trip(addr, &t, &notes, &uploaded))
        }),
    ];
    let (tx, rx) = mpsc::channel();
    let names: Vec<&'static str> = jobs.iter().map(|(n, _)| *n).collect();
    for (name, job) in jobs {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = job();
            let _ = tx.send((name, r, t.elapsed()));
        });
    }
    let end = Instant::now() + VICTIM_DEADLINE + Duration::from_secs(2);
    let mut done = Vec::new();
    while done.len() < names.len() {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(r) => done.push(r),
            Err(_) => break,
        }
    }
    for name in names {
        if !done.iter().any(|(n, _, _)| *n == name) {
            done.push((name, Err("hung: no answer".into()), VICTIM_DEADLINE));
        }
    }
    done
}

/// Waits up to `limit` for a child of this process to exit (it is left a zombie, so its
/// pid stays ours); `None` when it is still running.
fn exited_within(pid: u32, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if matches!(state, None | Some("Z") | Some("X")) {
            return Some(t.elapsed());
        }
        if t.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("MYMCP_READ_FILE_TIMEOUT_SEC", READ_TIMEOUT_SECS.to_string()),
        ("MYMCP_SHUTDOWN_GRACE_SEC", GRACE_SECS.to_string()),
    ]
}

fn env_of<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn blocking_reads_of_one_ro_token_leave_every_other_token_served() {
    mymcp_tests::needs_root!();
    if !blocking_file_available() {
        return;
    }
    let env = settings();
    let s = Setup::start(&env_of(&env));
    let attacker = s.exec.add_token("attacker", "ro");
    let second = s.exec.add_token("attacker-2", "ro");
    let victim = s.exec.add_token("victim", "rw");
    let pid = s.exec.pid();
    let (threads_idle, _) = threads(pid);

    let reads = s.flood(&attacker, (FLOOD, FLOOD), "read_file", BLOCKING);
    let greps = s.flood(&second, (40, 40), "grep", BLOCKING);
    // Let the calls reach the executor and take what they can.
    std::thread::sleep(Duration::from_millis(1500));
    let (threads_attacked, in_kmsg) = threads(pid);
    let started = Instant::now();
    let results = victims(&s, &victim);
    let victims_took = started.elapsed();
    let reads = Flood::of(reads);
    let greps = Flood::of(greps);
    eprintln!(
        "attack: executor threads {threads_idle} idle, {threads_attacked} under attack \
         ({in_kmsg} waiting in {BLOCKING}); victims done in {victims_took:?}: {results:?}; \
         reads {reads:?}; greps {greps:?}"
    );

    for (name, r, took) in &results {
        assert!(
            r.is_ok(),
            "another token's {name} did not complete during the attack ({took:?}): {r:?}"
        );
    }
    // Every blocking read was answered: the ones that ran with a timeout within their
    // deadline, the rest refused at once as over the token's share.
    assert_eq!(reads.answered, FLOOD, "unanswered reads: {reads:?}");
    let timed_out = reads.count("TimeoutError");
    assert_eq!(
        timed_out + reads.count("Busy"),
        FLOOD,
        "reads answered with something else: {reads:?}"
    );
    assert!(timed_out >= 1, "no read ran: {reads:?}");
    assert!(
        timed_out <= 16,
        "{timed_out} reads of one token ran at once, more than its share (16): {reads:?}"
    );
    let limit_ms = (READ_TIMEOUT_SECS + 3) * 1000;
    assert!(
        reads.slowest_ms("TimeoutError") <= limit_ms,
        "a blocking read outlived its deadline: {reads:?}"
    );
    // grep of the same file finds nothing there (no data now) instead of waiting for it.
    assert_eq!(greps.answered, 40, "unanswered greps: {greps:?}");
    assert_eq!(
        greps.count("Ok") + greps.count("Busy"),
        40,
        "greps answered with something else: {greps:?}"
    );
    assert!(
        greps.slowest_ms("Ok") <= limit_ms,
        "a grep waited on a blocking file: {greps:?}"
    );
    // Nothing is left waiting in the kernel once the attack is answered.
    let (_, left) = threads(pid);
    assert_eq!(left, 0, "threads still wait in {BLOCKING}");
}

#[test]
fn sigterm_during_a_blocking_read_flood_exits_within_the_grace() {
    mymcp_tests::needs_root!();
    if !blocking_file_available() {
        return;
    }
    let env = settings();
    let mut s = Setup::start(&env_of(&env));
    let attacker = s.exec.add_token("attacker", "ro");
    let pid = s.exec.pid();
    let reads = s.flood(&attacker, (FLOOD, FLOOD), "read_file", BLOCKING);
    std::thread::sleep(Duration::from_millis(1000));
    let (_, in_kmsg) = threads(pid);
    s.exec.signal_term();
    let limit = Duration::from_secs(GRACE_SECS + 10);
    let took = exited_within(pid, limit);
    if took.is_none() {
        mymcp_tests::send_signal(pid, libc::SIGKILL);
    }
    s.exec.wait();
    s.stopped = true;
    let reads = Flood::of(reads);
    eprintln!(
        "shutdown under attack: {in_kmsg} threads waiting in {BLOCKING} at SIGTERM; exit after \
         {took:?} (grace {GRACE_SECS} s); reads {reads:?}"
    );
    let took = took.unwrap_or_else(|| {
        panic!("the executor did not exit within {limit:?} of SIGTERM; killed with SIGKILL")
    });
    assert!(
        took <= Duration::from_secs(GRACE_SECS) + Duration::from_millis(1500),
        "exit took {took:?}, grace is {GRACE_SECS} s"
    );
}

/// 4,100 `prepare_download` calls, 8 in flight at a time (under a token's share of file calls).
const TICKETS: (u64, u64) = (4100, 8);

/// `prepare_download` by `token` over HTTP: `Ok(url)` or the tool's error code.
fn prepare(s: &Setup, token: &str) -> Result<String, String> {
    let v = call(
        s.front.addr,
        token,
        "prepare_download",
        json!({"src_path": s.p("notes.txt"), "expires_in": 900}),
    )?;
    match v["url"].as_str() {
        Some(u) => Ok(u.to_owned()),
        None => Err(v["error"].as_str().unwrap_or("?").to_owned()),
    }
}

#[test]
fn one_tokens_tickets_leave_room_for_the_other_tokens() {
    mymcp_tests::needs_root!();
    let s = Setup::start(&[]);
    let attacker = s.exec.add_token("hoarder", "ro");
    let other = s.exec.add_token("other", "ro");
    let flood = Flood::of(s.flood(&attacker, TICKETS, "prepare_download", &s.p("notes.txt")));
    let mine = prepare(&s, &other);
    eprintln!("4,100 tickets asked by one token: {flood:?}; another token then got {mine:?}");
    assert_eq!(flood.answered, 4100, "{flood:?}");
    assert_eq!(flood.count("Ok") + flood.count("Busy"), 4100, "{flood:?}");
    assert!(flood.count("Busy") > 0, "no limit was reached: {flood:?}");
    let url = mine.expect("another token's prepare_download");
    // And the ticket works.
    let addr = s.front.addr;
    let head = format!("GET {url} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, body) = http(addr, &head, b"").unwrap();
    assert_eq!(status, 200, "{body}");
}

/// Disables a token by editing the store file by hand (atomically, as an editor's save would).
fn disable_by_hand(token_file: &Path, token: &str) {
    let mut store: Value = serde_json::from_slice(&std::fs::read(token_file).unwrap()).unwrap();
    let digest = digest_hex(token);
    let entry = store["tokens"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["sha256"] == digest.as_str())
        .expect("token in the store");
    entry["enabled"] = json!(false);
    let tmp: PathBuf = token_file.with_extension("edit");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&store).unwrap()).unwrap();
    std::fs::rename(&tmp, token_file).unwrap();
}

#[test]
fn a_revoked_tokens_tickets_are_given_back() {
    mymcp_tests::needs_root!();
    // One token may hold every ticket here, so that only revocation can make room.
    let s = Setup::start(&[("MYMCP_TRANSFER_MAX_GRANTS_PER_TOKEN", "4096")]);
    let admin = s.exec.add_token("admin", "admin");
    let other = s.exec.add_token("other", "ro");
    let addr = s.front.addr;
    type Revoke<'a> = &'a dyn Fn(&str);
    let ways: [(&str, Revoke); 3] = [
        ("mymcpctl token revoke", &|t: &str| {
            let out = ctl(&s.exec.runtime_dir, &["token", "revoke", t]);
            assert!(out.status.success(), "{out:?}");
        }),
        ("DELETE /admin/tokens", &|t: &str| {
            let auth = format!("Bearer {admin}");
            let r = http_request(
                addr,
                "DELETE",
                &format!("/admin/tokens/{t}"),
                &[("Authorization", &auth)],
                "",
            );
            assert_eq!(r.status, 200, "{}", r.body);
        }),
        ("a hand edit of the store", &|t: &str| {
            disable_by_hand(&s.exec.token_file, t)
        }),
    ];
    for (i, (how, revoke)) in ways.iter().enumerate() {
        let hoarder = s.exec.add_token(&format!("hoarder-{i}"), "ro");
        let flood = Flood::of(s.flood(&hoarder, TICKETS, "prepare_download", &s.p("notes.txt")));
        let before = prepare(&s, &other);
        revoke(&hoarder);
        let after = prepare(&s, &other);
        eprintln!(
            "{how}: the hoarder got {flood:?}; another token before revocation: {before:?}, \
             after: {after:?}"
        );
        assert_eq!(
            before.as_ref().err().map(String::as_str),
            Some("Busy"),
            "the table was not full"
        );
        assert!(
            after.is_ok(),
            "{how} did not give the tickets back: {after:?}"
        );
        // The revoked token is refused (nothing it holds can be used).
        assert_ne!(
            post_mcp(
                addr,
                &hoarder,
                &tools_call(1, "read_file", json!({"file_path": s.p("notes.txt")}))
            )
            .status,
            200,
            "{how}: the token still works"
        );
    }
}
