//! Starving the frontend without a token (issue 18, F3), against the real executor (root) and
//! frontend (`nobody`):
//!
//! - 2,400 connections from 24 addresses, each sending the headers of a `POST /mcp` with
//!   `Content-Length: 1000` and one byte (or nothing at all), with the frontend's descriptor
//!   limit at 1,024: its descriptors stay under the connection cap, `/health` answers and an
//!   authenticated `tools/call` succeeds during the attack;
//! - past the caps (per address and in all), connections whose slots are all busy get a 503
//!   with `Retry-After`, `/health` still answers, and idle connections make room for new ones;
//! - a 20 MiB body behind a token the executor does not know (or an `rw` token on
//!   `/admin/tokens`, or a forged transfer ticket) is refused before the client has sent it,
//!   and a client that does send it anyway still reads the refusal intact;
//! - curl (HTTP/2 and HTTP/1.1 over HTTPS) gets such early refusals intact;
//! - bodies that stall or trickle are answered 408 after the body timeouts.

use mymcp_tests::{
    bin, post_mcp, proc_fd_count, tools_call, user_ids, wait_until, ExecutorProcess,
    FrontendProcess,
};
use serde_json::{json, Value};
use socket2::{Domain, Socket, Type};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A well-formed token the executor has never issued.
const UNKNOWN: &str = "tok_00000000000000000000000000000000000000000000000000000000deadbeef";

const MIB: usize = 1024 * 1024;

/// Raises this process's soft descriptor limit to the hard one and checks it is enough.
fn raise_fd_limit(needed: u64) {
    let limit = mymcp_sys::net::raise_open_file_limit().expect("raise the descriptor limit");
    assert!(
        limit >= needed,
        "the open-file limit ({limit}) is below the {needed} this test needs"
    );
}

/// A plain-HTTP frontend as `nobody` whose descriptor limit is `fd_limit` (as `systemd`'s
/// `LimitNOFILE=` would set it), started through `prlimit`.
struct LimitedFrontend {
    child: Child,
    addr: SocketAddr,
}

impl LimitedFrontend {
    fn start(executor_socket: &Path, fd_limit: u64, env: &[(&str, &str)]) -> LimitedFrontend {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (uid, gid) = user_ids("nobody");
        let child = Command::new("prlimit")
            .arg(format!("--nofile={fd_limit}:{fd_limit}"))
            .arg("--")
            .arg(bin("mymcp-frontend"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env_clear()
            .env("MYMCP_EXECUTOR_SOCKET", executor_socket)
            .envs(env.iter().copied())
            .uid(uid)
            .gid(gid)
            .stderr(Stdio::null())
            .spawn()
            .expect("prlimit … mymcp-frontend");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let front = LimitedFrontend { child, addr };
        assert!(
            wait_until(Duration::from_secs(20), || {
                mymcp_tests::http_get(addr, "/health").contains("\"executor\":\"connected\"")
            }),
            "the frontend did not come up"
        );
        front
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LimitedFrontend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `to` from the loopback address `from` (all of 127/8 is local).
fn connect_from(from: Ipv4Addr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from.into(), 0).into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An HTTP/1.1 response read off a stream: status, lowercase headers, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (`Content-Length` bodies only, as the frontend sends for these).
fn read_answer(stream: &TcpStream) -> io::Result<Answer> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(bad("closed before the status line".into()));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (k, v) = header
            .split_once(':')
            .ok_or_else(|| bad(format!("header {header:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The head of a request whose body is announced but not sent.
fn head(method: &str, path: &str, token: Option<&str>, length: usize) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// `/health` from `from`: the status, or why there was none (within 5 s).
fn health_from(from: Ipv4Addr, addr: SocketAddr) -> Result<u16, String> {
    let s =
        connect_from(from, addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (&s).write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    read_answer(&s)
        .map(|a| a.status)
        .map_err(|e| format!("receive: {e}"))
}

/// A `tools/call` from `from` over a new connection, within `timeout`.
fn call_from(
    from: Ipv4Addr,
    addr: SocketAddr,
    token: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Answer, String> {
    let s = connect_from(from, addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    let body = body.to_string();
    let request = format!(
        "{}{body}",
        head("POST", "/mcp", Some(token), body.len())
            .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
    );
    (&s).write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    read_answer(&s).map_err(|e| format!("receive: {e}"))
}

/// The tool JSON of a successful tools/call answer.
fn tool_json(answer: &Answer) -> Value {
    assert_eq!(answer.status, 200, "{answer:?}");
    let v: Value = serde_json::from_str(&answer.body).expect("JSON");
    let text = v["result"]["content"][0]["text"].as_str().expect("text");
    serde_json::from_str(text).expect("tool JSON")
}

fn echo(i: u64) -> Value {
    tools_call(i, "bash_execute", json!({"command": format!("echo {i}")}))
}

/// Samples the descriptor count of `pid` until stopped; returns the highest seen.
struct FdSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl FdSampler {
    fn start(pid: u32) -> FdSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut most = 0;
            while !flag.load(Ordering::Relaxed) {
                most = most.max(proc_fd_count(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            most
        });
        FdSampler { stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn thousands_of_tokenless_connections_stay_under_the_cap_while_health_and_calls_go_on() {
    mymcp_tests::needs_root!();
    const ADDRESSES: u8 = 24;
    const PER_ADDRESS: usize = 100;
    const CAP: usize = 300;
    const FD_LIMIT: u64 = 1024;
    raise_fd_limit(ADDRESSES as u64 * PER_ADDRESS as u64 + 200);
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("caller", "rw");
    // The packaged unit gives 65,536; a smaller limit shows the exhaustion with fewer sockets.
    let front = LimitedFrontend::start(
        &exec.executor_socket(),
        FD_LIMIT,
        &[
            ("MYMCP_MAX_CONNECTIONS", "300"),
            ("MYMCP_MAX_CONNECTIONS_PER_IP", "30"),
        ],
    );
    let addr = front.addr;
    let me = Ipv4Addr::LOCALHOST;
    let quiet = call_from(me, addr, &rw, &echo(1), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("before the attack: {e}"));
    assert_eq!(tool_json(&quiet)["stdout"], "1\n");
    let baseline = proc_fd_count(front.pid());
    let sampler = FdSampler::start(front.pid());

    // The attack of the finding: headers announcing 1,000 bytes, one byte of body, a token
    // nobody issued; every third connection sends nothing at all.
    let f3_request = format!("{}{{", head("POST", "/mcp", Some(UNKNOWN), 1000));
    let failed_connects = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let openers: Vec<_> = (0..ADDRESSES)
        .map(|a| {
            let request = f3_request.clone();
            let failed = failed_connects.clone();
            std::thread::spawn(move || {
                let from = Ipv4Addr::new(127, 0, 0, 2 + a);
                let mut held = Vec::new();
                let mut misses = 0;
                for i in 0..PER_ADDRESS {
                    // Long enough for one SYN retry (after 1 s) when the listen queue was full.
                    match connect_from(from, addr, Duration::from_millis(1500)) {
                        Ok(s) => {
                            if i % 3 != 0 {
                                let _ = (&s).write_all(request.as_bytes());
                            }
                            held.push(s);
                            misses = 0;
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            misses += 1;
                            // The listen queue is full: the rest would only wait the same.
                            if misses == 3 {
                                failed.fetch_add(PER_ADDRESS - i - 1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<Vec<TcpStream>> = openers.into_iter().map(|t| t.join().unwrap()).collect();
    let opened = started.elapsed();
    let during = proc_fd_count(front.pid());

    // During the attack, from another address.
    let health = health_from(me, addr);
    let t = Instant::now();
    let call = call_from(me, addr, &rw, &echo(2), Duration::from_secs(10));
    let call_took = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let most = sampler.stop();
    let after_calls = proc_fd_count(front.pid());
    drop(held);
    eprintln!(
        "F3 attack: {} connections from {ADDRESSES} addresses opened in {opened:?} ({} could not \
         connect); frontend fds {baseline} before, {during} after opening, {after_calls} after the \
         calls, at most {most} (cap {CAP}, fd limit {FD_LIMIT}); /health: {health:?}; \
         authenticated call: {} in {call_took:?}",
        ADDRESSES as usize * PER_ADDRESS,
        failed_connects.load(Ordering::Relaxed),
        match &call {
            Ok(a) => format!("HTTP {}", a.status),
            Err(e) => e.clone(),
        },
    );
    assert_eq!(health, Ok(200), "/health during the attack");
    let call = call.unwrap_or_else(|e| panic!("authenticated call during the attack: {e}"));
    assert_eq!(tool_json(&call)["stdout"], "2\n");
    assert!(
        most <= CAP + 100,
        "the frontend held {most} descriptors (cap {CAP})"
    );
    // Everything is let go once the attackers leave.
    assert!(
        wait_until(Duration::from_secs(10), || proc_fd_count(front.pid())
            <= baseline + 5),
        "frontend descriptors: {baseline} before, {} after",
        proc_fd_count(front.pid())
    );
}

#[test]
fn past_the_caps_busy_connections_mean_503_with_retry_after_and_health_still_answers() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("caller", "rw");
    let front = FrontendProcess::start_with_env(
        &exec.executor_socket(),
        &[
            ("MYMCP_MAX_CONNECTIONS", "6"),
            ("MYMCP_MAX_CONNECTIONS_PER_IP", "3"),
        ],
    );
    let addr = front.addr;
    let sleep = |i: u64| tools_call(i, "bash_execute", json!({"command": "sleep 3; echo done"}));
    let ip = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    // Three busy connections from one address fill its share.
    let busy =
        |from: Ipv4Addr, first: u64| -> Vec<std::thread::JoinHandle<Result<Answer, String>>> {
            (first..first + 3)
                .map(|i| {
                    let (rw, body) = (rw.clone(), sleep(i));
                    std::thread::spawn(move || {
                        call_from(from, addr, &rw, &body, Duration::from_secs(20))
                    })
                })
                .collect()
        };
    let first = busy(ip(2), 10);
    std::thread::sleep(Duration::from_millis(800));
    let refused = call_from(ip(2), addr, &rw, &echo(1), Duration::from_secs(10));
    // Three more from another address fill the server.
    let second = busy(ip(3), 20);
    std::thread::sleep(Duration::from_millis(800));
    let full = call_from(ip(4), addr, &rw, &echo(2), Duration::from_secs(10));
    let health = health_from(ip(4), addr);
    let sleeps: Vec<Result<Answer, String>> = first
        .into_iter()
        .chain(second)
        .map(|t| t.join().unwrap())
        .collect();
    let later = call_from(ip(4), addr, &rw, &echo(3), Duration::from_secs(10));
    eprintln!(
        "caps: 4th connection of one address: {refused:?}; 7th in all: {full:?}; /health then: \
         {health:?}; after the sleeps: {later:?}"
    );
    for answer in [&refused, &full] {
        let answer = answer.as_ref().expect("an answer");
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(answer.header("retry-after").is_some(), "{answer:?}");
        assert!(answer.body.contains("connections"), "{answer:?}");
    }
    assert_eq!(health, Ok(200));
    for s in &sleeps {
        let s = s.as_ref().expect("the sleeps were served");
        assert_eq!(tool_json(s)["stdout"], "done\n");
    }
    assert_eq!(tool_json(&later.expect("served"))["stdout"], "3\n");
}

#[test]
fn idle_connections_make_room_for_new_ones_at_the_cap() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("caller", "rw");
    let front = FrontendProcess::start_with_env(
        &exec.executor_socket(),
        &[
            ("MYMCP_MAX_CONNECTIONS", "8"),
            ("MYMCP_MAX_CONNECTIONS_PER_IP", "4"),
        ],
    );
    let addr = front.addr;
    // Eight silent connections from two addresses fill the server.
    let silent: Vec<TcpStream> = (0..8)
        .map(|i| {
            connect_from(
                Ipv4Addr::new(127, 0, 0, 2 + i % 2),
                addr,
                Duration::from_secs(5),
            )
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A fifth from one of them takes the place of its oldest; a client elsewhere gets one of
    // the others'.
    let fifth = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr, Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let call = call_from(
        Ipv4Addr::LOCALHOST,
        addr,
        &rw,
        &echo(1),
        Duration::from_secs(10),
    );
    let health = health_from(Ipv4Addr::LOCALHOST, addr);
    // EOF or a reset: closed; nothing within 300 ms: still open.
    let closed = |s: &TcpStream| {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match (&*s).read(&mut [0u8; 64]) {
            // Nothing is ever sent to them: any read that returns means the end.
            Ok(_n) => true,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    };
    let closed_silent: Vec<bool> = silent.iter().map(closed).collect();
    eprintln!(
        "eviction: call {:?}; /health {health:?}; silent connections closed: {closed_silent:?}",
        call.as_ref().map(|a| a.status)
    );
    assert_eq!(tool_json(&call.expect("served"))["stdout"], "1\n");
    assert_eq!(health, Ok(200));
    // The oldest of 127.0.0.2's went first.
    assert!(closed_silent[0], "{closed_silent:?}");
    assert!(!closed(&fifth), "the newest connection was closed");
}

#[test]
fn bodies_behind_unknown_tokens_are_refused_before_they_are_sent() {
    mymcp_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("caller", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    let addr = front.addr;
    let dest = dir.path().join("up.bin");
    let v = tool_json(
        &call_from(
            Ipv4Addr::LOCALHOST,
            addr,
            &rw,
            &tools_call(1, "prepare_upload", json!({"dest_path": dest})),
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    let url = v["url"].as_str().expect("url").to_owned();
    // One character off: the HMAC fails.
    let mut forged = url.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();

    let cases: [(&str, &str, Option<&str>, u16); 5] = [
        ("POST", "/mcp", Some(UNKNOWN), 401),
        ("POST", "/mcp", None, 401),
        ("POST", "/mcp", Some("tok_not-even-the-right-shape"), 401),
        ("POST", "/admin/tokens", Some(&rw), 403),
        ("PUT", &forged, None, 404),
    ];
    let length = 20 * MIB;
    let mut failures = Vec::new();
    for (method, path, token, expected) in cases {
        // The head alone: the answer must come without a byte of the body.
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (&s).write_all(head(method, path, token, length).as_bytes())
            .unwrap();
        let t = Instant::now();
        let answer = read_answer(&s);
        eprintln!(
            "{method} {path} ({}) with 20 MiB announced, none sent: {:?} after {:?}",
            token.map_or("no token", |_| "token"),
            answer
                .as_ref()
                .map(|a| (a.status, a.header("connection").map(str::to_owned))),
            t.elapsed()
        );
        match answer {
            Ok(a) if a.status == expected && a.header("connection") == Some("close") => {}
            other => failures.push(format!("{method} {path}: {other:?}")),
        }

        // The whole body sent anyway, as a client that does not wait would: the answer still
        // arrives intact, and the connection ends cleanly once the client is done.
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let writer = s.try_clone().unwrap();
        let request = head(method, path, token, length);
        let sender = std::thread::spawn(move || {
            let mut w = writer;
            let chunk = vec![b' '; MIB];
            let mut sent = 0;
            let mut result = w.write_all(request.as_bytes());
            while result.is_ok() && sent < length {
                result = w.write_all(&chunk);
                sent += chunk.len();
            }
            let _ = w.shutdown(Shutdown::Write);
            (sent, result.err().map(|e| e.to_string()))
        });
        let answer = read_answer(&s);
        let rest = {
            let mut rest = Vec::new();
            (&s).read_to_end(&mut rest).map(|_| rest.len())
        };
        let (sent, send_error) = sender.join().unwrap();
        eprintln!(
            "{method} {path} with the 20 MiB sent: {:?}; {sent} bytes went out (send error: \
             {send_error:?}); after the answer: {rest:?}",
            answer.as_ref().map(|a| a.status),
        );
        match answer {
            Ok(a) if a.status == expected && a.body.starts_with('{') => {}
            other => failures.push(format!("{method} {path} with the body sent: {other:?}")),
        }
        if let Err(e) = rest {
            failures.push(format!("{method} {path}: the connection ended with {e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(!dest.exists());
    // The frontend still serves.
    let ok = post_mcp(addr, &rw, &echo(2));
    assert_eq!(ok.tool_json()["stdout"], "2\n");
}

/// A frontend serving HTTPS with a fresh self-signed certificate for 127.0.0.1.
struct HttpsFrontend {
    child: Child,
    port: u16,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl HttpsFrontend {
    fn start(executor_socket: &Path) -> HttpsFrontend {
        mymcp_tests::assert_root_test();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl: {out:?}");
        for f in [&cert, &key] {
            std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (uid, gid) = user_ids("nobody");
        let child = Command::new(bin("mymcp-frontend"))
            .env_clear()
            .env("MYMCP_EXECUTOR_SOCKET", executor_socket)
            .env("MYMCP_TLS_CERT", &cert)
            .env("MYMCP_TLS_KEY", &key)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .uid(uid)
            .gid(gid)
            .stderr(Stdio::null())
            .spawn()
            .expect("frontend");
        let front = HttpsFrontend {
            child,
            port,
            cert,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(20), || {
            front
                .curl(&["--http1.1"], "/health", None, None)
                .1
                .contains("\"executor\":\"connected\"")
        });
        assert!(up, "the HTTPS frontend did not come up");
        front
    }

    /// curl's exit code, and its output: the body, then a line with the status.
    fn curl(
        &self,
        flags: &[&str],
        path: &str,
        token: Option<&str>,
        body: Option<&Path>,
    ) -> (i32, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&self.cert)
            .args(flags)
            .args(["-w", "\n%{http_code} %{http_version}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(format!("@{}", b.display()));
        }
        let out = cmd
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("curl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }
}

impl Drop for HttpsFrontend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn curl_gets_early_refusals_intact_over_https_http2_and_http11() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("caller", "rw");
    let front = HttpsFrontend::start(&exec.executor_socket());
    let dir = tempfile::tempdir().unwrap();
    let ping = dir.path().join("ping.json");
    std::fs::write(&ping, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 20 * MIB]).unwrap();

    let mut failures = Vec::new();
    for version in ["--http2", "--http1.1"] {
        let shown = &version[2..];
        let mut check =
            |what: &str, token: Option<&str>, body: &Path, expect: &str, times: usize| {
                for _ in 0..times {
                    let (code, out) = front.curl(&[version], "/mcp", token, Some(body));
                    let wanted_version = if version == "--http2" { " 2" } else { " 1.1" };
                    if code != 0 || !out.contains(expect) || !out.ends_with(wanted_version) {
                        failures.push(format!("{shown} {what}: curl exit {code}: {out}"));
                        return;
                    }
                }
                eprintln!("{shown} {what}: {times} × intact");
            };
        check(
            "no token, small body",
            None,
            &ping,
            "{\"detail\":\"Missing Bearer token\"}\n401",
            10,
        );
        check(
            "unknown token, small body",
            Some(UNKNOWN),
            &ping,
            "{\"detail\":\"Invalid or disabled token\"}\n401",
            10,
        );
        check(
            "unknown token, 20 MiB body",
            Some(UNKNOWN),
            &big,
            "{\"detail\":\"Invalid or disabled token\"}\n401",
            3,
        );
        check("rw token, ping", Some(&rw), &ping, "\"result\":{}}\n200", 3);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn stalled_and_trickling_bodies_get_408_after_the_body_timeouts() {
    mymcp_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("caller", "rw");
    let front = FrontendProcess::start_with_env(
        &exec.executor_socket(),
        &[
            ("MYMCP_BODY_TIMEOUT_SEC", "4"),
            ("MYMCP_BODY_IDLE_TIMEOUT_SEC", "2"),
        ],
    );
    let addr = front.addr;
    let v = tool_json(
        &call_from(
            Ipv4Addr::LOCALHOST,
            addr,
            &rw,
            &tools_call(
                1,
                "prepare_upload",
                json!({"dest_path": dir.path().join("up.bin")}),
            ),
            Duration::from_secs(10),
        )
        .unwrap(),
    );
    let upload = v["url"].as_str().expect("url").to_owned();

    let mut failures = Vec::new();
    // Ten bytes of a thousand, then silence: the idle timeout.
    for (method, path, token) in [
        ("POST", "/mcp", Some(rw.as_str())),
        ("PUT", upload.as_str(), None),
    ] {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        (&s).write_all(format!("{}{{\"jsonrpc\"", head(method, path, token, 1000)).as_bytes())
            .unwrap();
        let t = Instant::now();
        let answer = read_answer(&s);
        eprintln!(
            "{method} stalled after 10 bytes: {:?} after {:?}",
            answer.as_ref().map(|a| (a.status, a.body.clone())),
            t.elapsed()
        );
        match answer {
            Ok(a) if a.status == 408 => {}
            other => failures.push(format!("{method} stalled: {other:?}")),
        }
    }
    // One byte every 500 ms never trips the idle timeout, but the whole body has 4 s.
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    (&s).write_all(head("POST", "/mcp", Some(&rw), 1000).as_bytes())
        .unwrap();
    let t = Instant::now();
    let mut sent = 0;
    let answer = loop {
        if (&s).write_all(b" ").is_ok() {
            sent += 1;
        }
        let mut peek = [0u8; 1];
        match s.peek(&mut peek) {
            Ok(_) => break read_answer(&s),
            Err(_) if t.elapsed() < Duration::from_secs(15) => continue,
            Err(e) => break Err(e),
        }
    };
    eprintln!(
        "POST trickling one byte per 500 ms: {:?} after {:?} and {sent} bytes",
        answer.as_ref().map(|a| (a.status, a.body.clone())),
        t.elapsed()
    );
    match answer {
        Ok(a) if a.status == 408 => {}
        other => failures.push(format!("trickle: {other:?}")),
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(!dir.path().join("up.bin").exists());
}
