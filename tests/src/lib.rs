//! Harness for the end-to-end tests: starts the real binaries as real users.
//!
//! The tests need root (the executor runs as root and the frontend as `nobody`, as in
//! production): each begins with [`needs_root!`], which skips it for an ordinary user.
//! Binaries are taken from the cargo target directory that built this crate, or from
//! `MYMCP_BIN_DIR`.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Directory holding `mymcp-executor`, `mymcp-frontend`, `mymcpctl`, `mymcp-test-peer`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MYMCP_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-binary> → target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("deps dir");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_owned()
    } else {
        dir.to_owned()
    }
}

/// The path of one of the binaries; only in a test that began with [`needs_root!`] (they all
/// need root: as an ordinary user the frontend would not even refuse to start as root).
#[track_caller]
pub fn bin(name: &str) -> PathBuf {
    assert_root_test();
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// Whether this process runs as root, as the end-to-end tests need (the executor is a root
/// daemon and the frontend runs as `nobody`).
pub fn is_root() -> bool {
    mymcp_sys::euid() == 0
}

/// Skips the calling test unless it runs as root: at the top of every test that starts the
/// real binaries (all of `tests/tests/`).
///
/// ```ignore
/// #[test]
/// fn an_end_to_end_test() {
///     mymcp_tests::needs_root!();
///     let exec = ExecutorProcess::start("nobody");
///     // …
/// }
/// ```
///
/// As an ordinary user (`cargo test --workspace`) the test prints `skipped: needs root` and
/// passes without doing anything; as root (`sudo tests/run`, CI) it runs. [`bin`] and the
/// helpers that start processes as root or as another user ([`ExecutorProcess`],
/// [`FrontendProcess`], [`QuickTry`], [`peer`], [`spawn_peer`]) refuse to run in a test that
/// did not say `needs_root!()` first, as root too, so a new test cannot forget it.
#[macro_export]
macro_rules! needs_root {
    () => {
        if !$crate::root_test_starts() {
            return;
        }
    };
}

thread_local! {
    /// Set by `needs_root!()` in the test's thread (libtest runs each test in a thread of its
    /// own, nextest each in a process of its own).
    static ROOT_TEST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `needs_root!()`'s work: marks the calling test as one that needs root, and returns whether
/// it runs (as root). Otherwise says so on stderr — past the test harness's capture, so that
/// `cargo test` shows it — and returns false.
#[doc(hidden)]
pub fn root_test_starts() -> bool {
    ROOT_TEST.with(|t| t.set(true));
    if is_root() {
        return true;
    }
    use std::io::Write as _;
    let thread = std::thread::current();
    let name = thread.name().filter(|n| *n != "main").unwrap_or("test");
    let _ = writeln!(std::io::stderr(), "{name}: skipped: needs root");
    false
}

/// Panics unless the calling test started with `needs_root!()`: for helpers (here and in the
/// test files) that start processes as root or as another user.
#[track_caller]
pub fn assert_root_test() {
    assert!(
        ROOT_TEST.with(|t| t.get()),
        "this test starts the real binaries as root or as another user: begin it with \
         `mymcp_tests::needs_root!();` so that it is skipped, not failed, without root \
         (or start the processes from the test's own thread)"
    );
}

/// uid and gid of a user, via getent.
pub fn user_ids(name: &str) -> (u32, u32) {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .expect("getent");
    let line = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = line.trim().split(':').collect();
    (f[2].parse().expect("uid"), f[3].parse().expect("gid"))
}

/// A running executor with private state.
#[derive(Debug)]
pub struct ExecutorProcess {
    child: Child,
    pub dir: tempfile::TempDir,
    /// A directory outside the executor's protected set, which commands may write (markers):
    /// the executor's own `dir` is read-only to them.
    scratch: tempfile::TempDir,
    pub runtime_dir: PathBuf,
    pub token_file: PathBuf,
    /// Every line the executor wrote to stderr so far (its log).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ExecutorProcess {
    /// Starts `mymcp-executor` as root with `frontend_user` allowed on executor.sock.
    pub fn start(frontend_user: &str) -> ExecutorProcess {
        Self::start_with_env(frontend_user, &[])
    }

    pub fn start_with_env(frontend_user: &str, env: &[(&str, &str)]) -> ExecutorProcess {
        assert_root_test();
        let dir = tempfile::Builder::new()
            .prefix("mymcp-e2e-")
            .tempdir()
            .expect("tempdir");
        let (_, gid) = user_ids(frontend_user);
        // The frontend's group must be able to traverse to the socket.
        std::os::unix::fs::chown(dir.path(), Some(0), Some(gid)).expect("chown");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o710),
        )
        .expect("chmod");
        let runtime_dir = dir.path().join("run");
        let token_file = dir.path().join("tokens.json");
        let mut cmd = Command::new(bin("mymcp-executor"));
        cmd.env("MYMCP_RUNTIME_DIR", &runtime_dir)
            .env("MYMCP_TOKEN_FILE", &token_file)
            .env("MYMCP_STATE_DIR", dir.path().join("state"))
            .env("MYMCP_FRONTEND_USER", frontend_user)
            .env("MYMCP_LOG_LEVEL", "info")
            // Never the host's /etc/mymcp/.env.
            .env("MYMCP_ENV_FILE", "none")
            // Off unless a test sets MYMCP_AUDIT_ENABLED; then here (see audit_dir()).
            .env("MYMCP_AUDIT_LOG_DIR", dir.path().join("audit"))
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn executor");
        let stderr = child.stderr.take().expect("stderr");
        // Forward the executor's log to the test output and wait for readiness.
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::<std::sync::Mutex<Vec<String>>>::default();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[executor] {line}");
                if line.contains("executor ready") {
                    let _ = tx.send(());
                }
                lines.lock().expect("log lock").push(line);
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("executor did not become ready");
        ExecutorProcess {
            child,
            dir,
            scratch: tempfile::tempdir().expect("scratch dir"),
            runtime_dir,
            token_file,
            log,
        }
    }

    /// A directory commands may write in (outside the executor's protected set).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// The lines of the executor's log (stderr) so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn executor_socket(&self) -> PathBuf {
        self.runtime_dir.join("executor.sock")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join("control.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Creates a token through `mymcpctl token add` and returns its value.
    pub fn add_token(&self, name: &str, role: &str) -> String {
        self.add_token_with(name, role, &[])
    }

    /// Creates a token acting as the Unix account `user` (`token add --user`).
    pub fn add_token_as(&self, name: &str, role: &str, user: &str) -> String {
        self.add_token_with(name, role, &["--user", user])
    }

    /// Creates a token with more `token add` options (`--tasks-max 64`, …).
    pub fn add_token_with(&self, name: &str, role: &str, more: &[&str]) -> String {
        let mut args = vec!["token", "add", "--name", name, "--role", role];
        args.extend_from_slice(more);
        let out = ctl(&self.runtime_dir, &args);
        assert!(
            out.status.success(),
            "token add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }

    /// SIGTERM and wait; returns how long the executor took to exit.
    pub fn terminate(&mut self) -> Duration {
        let t = Instant::now();
        self.signal_term();
        let _ = self.child.wait();
        t.elapsed()
    }

    /// SIGTERM without waiting.
    pub fn signal_term(&self) {
        let _ = mymcp_sys::signals::kill(self.child.id(), libc::SIGTERM);
    }

    /// Waits for the executor to exit; returns its exit status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait executor")
    }

    /// The audit directory the tests use (`MYMCP_AUDIT_LOG_DIR` when given as `dir/audit`).
    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    /// The audit install key stored at first start.
    pub fn audit_install_key(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("audit/install.pub"))
            .expect("install.pub")
            .trim()
            .to_owned()
    }

    /// The state directory (`MYMCP_STATE_DIR`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for ExecutorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Runs `mymcpctl --runtime-dir DIR ARGS…`.
pub fn ctl(runtime_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("mymcpctl"))
        .arg("--runtime-dir")
        .arg(runtime_dir)
        .args(args)
        .output()
        .expect("mymcpctl")
}

/// SHA-256 of a token, hex: what the executor stores and the frontend sends.
pub fn digest_hex(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs the hostile peer as `uid:gid` against `socket`; returns its output lines.
pub fn peer(uid: u32, gid: u32, socket: &Path, scenario: &str, arg: &str) -> Vec<String> {
    assert_root_test();
    let out = Command::new(bin("mymcp-test-peer"))
        .arg(socket)
        .arg(scenario)
        .arg(arg)
        .uid(uid)
        .gid(gid)
        .output()
        .expect("run peer");
    assert!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A running `mymcpctl serve` (quick try) with its URL and tokens.
#[derive(Debug)]
pub struct QuickTry {
    child: Child,
    pub url: String,
    pub rw_token: String,
    pub admin_token: String,
    pub runtime_dir: PathBuf,
}

impl QuickTry {
    pub fn start() -> QuickTry {
        Self::start_with_env(&[])
    }

    /// As [`QuickTry::start`], with extra environment for `mymcpctl serve`.
    pub fn start_with_env(env: &[(&str, &str)]) -> QuickTry {
        Self::start_from(&bin("mymcpctl"), env)
    }

    /// As [`QuickTry::start_with_env`], with the `mymcpctl` at `ctl` (its daemons beside it).
    pub fn start_from(ctl: &Path, env: &[(&str, &str)]) -> QuickTry {
        Self::start_with(ctl, &[], env).0
    }

    /// As [`QuickTry::start_from`] with more arguments for `mymcpctl serve`; also returns the
    /// banner's lines.
    pub fn start_with(ctl: &Path, args: &[&str], env: &[(&str, &str)]) -> (QuickTry, Vec<String>) {
        assert_root_test();
        let mut child = Command::new(ctl)
            .args(["serve", "--port", "0", "--log-level", "info"])
            .args(args)
            .env("MYMCP_FRONTEND_USER", "nobody")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mymcpctl serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                let _ = tx.send(line);
            }
        });
        let (mut url, mut rw, mut admin, mut run) = (None, None, None, None);
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while url.is_none() || rw.is_none() || admin.is_none() || run.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("serve banner");
            banner.push(line.clone());
            if let Some(v) = line.strip_prefix("[mymcp] serving on ") {
                url = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("[mymcp] temp rw token:") {
                rw = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("[mymcp] temp admin token:") {
                admin = Some(v.trim().to_owned());
            } else if let Some(v) =
                line.strip_prefix("[mymcp] more tokens: mymcpctl --runtime-dir ")
            {
                run = Some(PathBuf::from(v.split_whitespace().next().expect("dir")));
            }
        }
        let quick = QuickTry {
            child,
            url: url.unwrap(),
            rw_token: rw.unwrap(),
            admin_token: admin.unwrap(),
            runtime_dir: run.unwrap(),
        };
        (quick, banner)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM to mymcpctl; waits for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = mymcp_sys::signals::kill(self.child.id(), libc::SIGTERM);
        self.child.wait().expect("wait serve")
    }
}

impl Drop for QuickTry {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Children of `pid` (from /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid …
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.get(1).and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// The value of a `Key:` line of `/proc/<pid>/status`.
pub fn proc_status(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// The executable name of a process.
pub fn proc_comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A `mymcp-frontend` started as `nobody` in front of an executor.
#[derive(Debug)]
pub struct FrontendProcess {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl FrontendProcess {
    pub fn start(executor_socket: &Path) -> FrontendProcess {
        Self::start_with_env(executor_socket, &[])
    }

    /// As [`FrontendProcess::start`], with extra environment (e.g. `MYMCP_ALLOWED_HOSTS`).
    pub fn start_with_env(executor_socket: &Path, env: &[(&str, &str)]) -> FrontendProcess {
        assert_root_test();
        let (uid, gid) = user_ids("nobody");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let mut child = Command::new(bin("mymcp-frontend"))
            .env_clear()
            .env("MYMCP_EXECUTOR_SOCKET", executor_socket)
            .envs(env.iter().copied())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--log-level",
                "info",
            ])
            .uid(uid)
            .gid(gid)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn frontend");
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[frontend] {line}");
            }
        });
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        // Listening, and connected to the executor (which it does in the background).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !health(addr).is_some_and(|h| h.contains(r#""executor":"connected""#)) {
            assert!(
                Instant::now() < deadline,
                "frontend on {addr} did not come up connected to the executor"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The executor connection comes up in the background; until it does, calls get 503.
        // Wait for it (briefly: some tests start a frontend without an executor on purpose).
        wait_until(Duration::from_secs(5), || {
            http_get(addr, "/health").contains("\"executor\":\"connected\"")
        });
        FrontendProcess { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The body of `GET /health`, or `None` while nothing answers.
fn health(addr: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    Some(String::from_utf8_lossy(&raw).into_owned())
}

impl Drop for FrontendProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` over a fresh connection; the raw response text ("" on failure).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

/// An HTTP response as the tests need it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The tool JSON inside a tools/call result.
    pub fn tool_json(&self) -> serde_json::Value {
        let v = self.json();
        let text = v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no tool result: {v}"));
        serde_json::from_str(text).expect("tool JSON")
    }
}

/// The request line, headers and body of a JSON-RPC POST to /mcp.
pub fn mcp_request(addr: std::net::SocketAddr, token: &str, body: &serde_json::Value) -> String {
    mcp_request_with(addr, token, body, &[])
}

/// As [`mcp_request`], with extra headers.
pub fn mcp_request_with(
    addr: std::net::SocketAddr,
    token: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> String {
    let body = body.to_string();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Sends a JSON-RPC POST to /mcp over a fresh connection and reads the whole response.
pub fn post_mcp(addr: std::net::SocketAddr, token: &str, body: &serde_json::Value) -> HttpResponse {
    post_mcp_with(addr, token, body, &[])
}

/// As [`post_mcp`], with extra headers.
pub fn post_mcp_with(
    addr: std::net::SocketAddr,
    token: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(mcp_request_with(addr, token, body, headers).as_bytes())
        .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    parse_response(&raw)
}

/// Sends one HTTP/1.1 request over a fresh connection and reads the whole response.
pub fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    parse_response(&raw)
}

/// Sends `raw` (a whole HTTP request) over a fresh connection and reads the whole response.
pub fn http_raw(addr: std::net::SocketAddr, raw: &[u8]) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(raw).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    parse_response(&out)
}

/// A POST to /mcp with a body taken as it is, the standard headers (Host, bearer token,
/// JSON content type, Accept of both types) and `headers`.
pub fn post_mcp_text(
    addr: std::net::SocketAddr,
    token: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http_raw(addr, request.as_bytes())
}

impl HttpResponse {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The JSON messages (`data:` lines) of an SSE body.
pub fn sse_messages(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("SSE data is JSON"))
        .collect()
}

/// Pids whose environment contains `needle` (e.g. `NAME=value`).
pub fn pids_with_environ(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{p}/environ")) {
            if env.split(|b| *b == 0).any(|var| var == needle.as_bytes()) {
                out.push(p);
            }
        }
    }
    out
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A tools/call JSON-RPC request.
pub fn tools_call(id: u64, name: &str, arguments: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":arguments}})
}

/// Pids whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{p}/cmdline")) {
            if String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(needle)
            {
                out.push(p);
            }
        }
    }
    out
}

/// Whether a process exists and is not a zombie waiting to be reaped.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().as_bytes().first() != Some(&b'Z'))
    })
}

/// Polls `pred` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pred()
}

/// Open descriptors of a process (entries of `/proc/<pid>/fd`).
pub fn proc_fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Where the descriptors of a process point (`/proc/<pid>/fd/*` link targets).
pub fn proc_fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    let _ = mymcp_sys::signals::kill(pid, signal);
}

/// Starts the hostile peer as `uid:gid` without waiting; its stdout is piped.
pub fn spawn_peer(uid: u32, gid: u32, socket: &Path, scenario: &str, arg: &str) -> Child {
    assert_root_test();
    Command::new(bin("mymcp-test-peer"))
        .arg(socket)
        .arg(scenario)
        .arg(arg)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run peer")
}

impl ExecutorProcess {
    /// A new executor on the directory (runtime directory, token store, state, audit log) of
    /// `old`, which must have stopped: what a restart by the service manager does. `env` is
    /// added. The new value owns the directory from then on.
    pub fn restart_of(old: &mut ExecutorProcess, env: &[(&str, &str)]) -> ExecutorProcess {
        let dir = old.dir.path().to_owned();
        let (run, tokens, state) = (dir.join("run"), dir.join("tokens.json"), dir.join("state"));
        let audit = dir.join("audit");
        let mut all = vec![
            ("MYMCP_RUNTIME_DIR", run.to_str().expect("utf8")),
            ("MYMCP_TOKEN_FILE", tokens.to_str().expect("utf8")),
            ("MYMCP_STATE_DIR", state.to_str().expect("utf8")),
            ("MYMCP_AUDIT_LOG_DIR", audit.to_str().expect("utf8")),
        ];
        all.extend_from_slice(env);
        let mut new = Self::start_with_env("nobody", &all);
        std::mem::swap(&mut new.dir, &mut old.dir);
        new.runtime_dir = run;
        new.token_file = tokens;
        new
    }

    /// SIGKILL and reap: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FrontendProcess {
    /// SIGKILL and reap: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Unix account made for one test (`useradd`, with a home directory) and removed with its
/// home (`userdel --remove`) when dropped, also when the test fails. Names are unique per
/// process and call: `mmacct<tag><pid><n>`.
#[derive(Debug)]
pub struct TestAccount {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// A group made for one test (`groupadd`), removed when dropped.
#[derive(Debug)]
pub struct TestGroup {
    pub name: String,
    pub gid: u32,
}

static ACCOUNT_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn unique_name(prefix: &str, tag: &str) -> String {
    let n = ACCOUNT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = format!("{prefix}{tag}{:x}{n}", std::process::id());
    name.truncate(31);
    name
}

/// Runs a shadow-utils command, retrying while another one holds the databases' locks
/// (tests run in parallel).
fn shadow_tool(program: &str, args: &[&str]) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("lock") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl TestAccount {
    /// A new account with its own group and a home directory; `tag` (a few lowercase
    /// letters) shows which test made it.
    pub fn create(tag: &str) -> TestAccount {
        Self::create_in(tag, &[])
    }

    /// As [`TestAccount::create`], also a member of `groups`.
    pub fn create_in(tag: &str, groups: &[&TestGroup]) -> TestAccount {
        Self::create_with_prefix("mmacct", tag, groups)
    }

    /// As [`TestAccount::create_in`], the name starting with `prefix` (the confinement tests
    /// use `mmconf`).
    pub fn create_with_prefix(prefix: &str, tag: &str, groups: &[&TestGroup]) -> TestAccount {
        assert_root_test();
        let name = unique_name(prefix, tag);
        let list: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        let list = list.join(",");
        let mut args = vec!["--create-home", "--user-group", "--shell", "/bin/bash"];
        if !list.is_empty() {
            args.extend(["--groups", &list]);
        }
        args.push(&name);
        let out = shadow_tool("useradd", &args);
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (uid, gid) = user_ids(&name);
        let home = PathBuf::from("/home").join(&name);
        TestAccount {
            name,
            uid,
            gid,
            home,
        }
    }
}

impl Drop for TestAccount {
    fn drop(&mut self) {
        let out = shadow_tool("userdel", &["--force", "--remove", &self.name]);
        // 6: the test deleted it already.
        if !out.status.success() && out.status.code() != Some(6) {
            eprintln!(
                "userdel {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl TestGroup {
    pub fn create(tag: &str) -> TestGroup {
        assert_root_test();
        let name = unique_name("mmgrp", tag);
        let out = shadow_tool("groupadd", &[&name]);
        assert!(
            out.status.success(),
            "groupadd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("getent")
            .args(["group", &name])
            .output()
            .expect("getent");
        let gid = String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .expect("gid of the new group");
        TestGroup { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let out = shadow_tool("groupdel", &[&self.name]);
        if !out.status.success() {
            eprintln!(
                "groupdel {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A sudoers drop-in (`/etc/sudoers.d/<name>`) for one test, removed when dropped.
#[derive(Debug)]
pub struct SudoRule {
    path: PathBuf,
}

impl SudoRule {
    /// Writes `rule` (one sudoers line) and checks it with `visudo -c` when that exists.
    pub fn add(name: &str, rule: &str) -> SudoRule {
        assert_root_test();
        let path = PathBuf::from("/etc/sudoers.d").join(name);
        std::fs::write(&path, format!("{rule}\n")).expect("sudoers drop-in");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o440))
            .expect("chmod 0440");
        let rule = SudoRule { path };
        if let Ok(out) = Command::new("visudo").arg("-cf").arg(&rule.path).output() {
            assert!(
                out.status.success(),
                "visudo: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        rule
    }
}

impl Drop for SudoRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A small tmpfs, unmounted when dropped: a disk a test can fill (the audit log's fail-closed
/// tests).
#[derive(Debug)]
pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("mymcp-full-")
            .tempdir()
            .expect("tempdir");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(st.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills the file system up to the last byte.
    pub fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", self.path().join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
        // The last partial page too.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1", "oflag=append", "conv=notrunc"])
            .arg(format!("of={}", self.path().join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    pub fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Swaps `link` between pointing at `a` and at `b` (by renaming a fresh symlink over it, so the
/// link always exists and points at one of the two) until `stop`; returns the number of swaps.
/// For races of tool calls against symlink swaps.
pub fn swap_symlink(
    link: &Path,
    a: &Path,
    b: &Path,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let (link, a, b) = (link.to_owned(), a.to_owned(), b.to_owned());
    std::thread::spawn(move || {
        let tmp = link.with_extension("next");
        let mut flips = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let target = if flips.is_multiple_of(2) { &a } else { &b };
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp).unwrap();
            std::fs::rename(&tmp, &link).unwrap();
            flips += 1;
        }
        flips
    })
}

/// An executor with `env`, a frontend (as nobody) in front of it, and an rw token.
pub fn rw_server(env: &[(&str, &str)]) -> (ExecutorProcess, FrontendProcess, String) {
    let exec = ExecutorProcess::start_with_env("nobody", env);
    let rw = exec.add_token("writer", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    (exec, front, rw)
}

/// The tool JSON of one `tools/call` of `name` with `args` (HTTP 200 asserted).
pub fn call_tool(
    addr: std::net::SocketAddr,
    token: &str,
    name: &str,
    args: serde_json::Value,
) -> serde_json::Value {
    let r = post_mcp(addr, token, &tools_call(1, name, args));
    assert_eq!(r.status, 200, "{}", r.body);
    r.tool_json()
}
