//! File transfers through the real frontend (as nobody) and executor (as root), with `curl`
//! as the client: a 1 GiB round trip in constant memory, single use under 20 parallel PUTs,
//! size limits, cut uploads, expired/forged/reused tickets, HEAD, protected paths after a
//! symlink swap, `overwrite: false` against a file that appears mid-upload, checksums, kept
//! ownership, revoked tokens, and guessed grants from a hostile frontend.

use mymcp_tests::{post_mcp, tools_call, user_ids, ExecutorProcess, FrontendProcess};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An executor protecting `<dir>/secret` with a frontend and an rw and an ro token.
struct Setup {
    // Field order: the frontend stops before the executor.
    front: FrontendProcess,
    exec: ExecutorProcess,
    rw: String,
    ro: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        Self::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("mymcp-xfer-")
            .tempdir()
            .unwrap();
        let secret = dir.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("key"), "SECRET").unwrap();
        let secret = secret.to_str().unwrap().to_owned();
        let mut all = vec![("MYMCP_PROTECTED_PATHS", secret.as_str())];
        all.extend_from_slice(env);
        let exec = ExecutorProcess::start_with_env("nobody", &all);
        let rw = exec.add_token("mover", "rw");
        let ro = exec.add_token("reader", "ro");
        let front = FrontendProcess::start(&exec.executor_socket());
        Setup {
            front,
            exec,
            rw,
            ro,
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn p(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_owned()
    }

    /// Calls a tool with the rw token; returns its tool JSON.
    fn call(&self, tool: &str, args: Value) -> Value {
        self.call_as(&self.rw, tool, args)
    }

    fn call_as(&self, token: &str, tool: &str, args: Value) -> Value {
        let r = post_mcp(self.front.addr, token, &tools_call(1, tool, args));
        assert_eq!(r.status, 200, "{}", r.body);
        r.tool_json()
    }

    /// `prepare_*` that must succeed; returns the absolute URL.
    fn prepare(&self, tool: &str, args: Value) -> String {
        let v = self.call(tool, args);
        assert_eq!(v["success"], true, "{v}");
        let url = v["url"].as_str().unwrap();
        // Without MYMCP_PUBLIC_BASE_URL the URL is relative, as in the reference.
        assert!(url.starts_with("/files/raw/"), "{url}");
        format!("http://{}{url}", self.front.addr)
    }

    fn upload_url(&self, rel: &str) -> String {
        self.prepare("prepare_upload", json!({"dest_path": self.p(rel)}))
    }

    fn download_url(&self, rel: &str) -> String {
        self.prepare("prepare_download", json!({"src_path": self.p(rel)}))
    }

    /// Upload temporaries in a test directory: names that look like one, and unnamed
    /// (`O_TMPFILE`) files the executor holds open there (`/dir/#inode (deleted)`).
    fn temporaries(&self, rel_dir: &str) -> Vec<String> {
        let dir = self.path(rel_dir);
        let mut found: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".mymcp-"))
            .collect();
        let unnamed = format!("{}/#", dir.to_str().unwrap().trim_end_matches('/'));
        found.extend(
            mymcp_tests::proc_fd_targets(self.exec.pid())
                .into_iter()
                .filter(|t| t.starts_with(&unnamed)),
        );
        found
    }
}

/// `curl ARGS… URL` → (HTTP status, body).
fn curl(args: &[&str], url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn put_file(url: &str, file: &Path) -> (u16, Value) {
    let (status, body) = curl(&["-T", file.to_str().unwrap()], url);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `len` pseudo-random bytes (xorshift; fast and incompressible enough) and returns
/// their SHA-256.
fn write_random(path: &Path, len: u64) -> String {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ len;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        hasher.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    hex(&hasher.finalize())
}

/// A raw HTTP/1.1 request on its own connection; `body` writes the body (so a test can pause
/// in the middle). Returns (status, body).
fn raw_http(
    addr: SocketAddr,
    head: &str,
    body: impl FnOnce(&mut TcpStream) -> std::io::Result<()>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = body(&mut s);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
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
    (status, body)
}

fn path_of(url: &str) -> &str {
    &url[url.find("/files/raw/").unwrap()..]
}

/// The largest `VmHWM` (peak resident memory) of the pids seen while sampling.
struct PeakMemory {
    stop: Arc<AtomicBool>,
    peak: Arc<[AtomicU64; 2]>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakMemory {
    fn sample(pids: [u32; 2]) -> PeakMemory {
        let stop = Arc::new(AtomicBool::new(false));
        let peak: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let thread = std::thread::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            move || loop {
                for (i, pid) in pids.iter().enumerate() {
                    peak[i].fetch_max(hwm_kib(*pid), Ordering::Relaxed);
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakMemory {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> [u64; 2] {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        [
            self.peak[0].load(Ordering::Relaxed),
            self.peak[1].load(Ordering::Relaxed),
        ]
    }
}

fn hwm_kib(pid: u32) -> u64 {
    mymcp_tests::proc_status(pid, "VmHWM")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn one_gib_up_and_down_through_curl_in_constant_memory() {
    mymcp_tests::needs_root!();
    const GIB: u64 = 1 << 30;
    const LIMIT_KIB: u64 = 32 * 1024;
    let s = Setup::start();
    let src = s.path("src.bin");
    let want = write_random(&src, GIB);
    let memory = PeakMemory::sample([s.front.pid(), s.exec.pid()]);

    let url = s.upload_url("up.bin");
    let t = Instant::now();
    let (status, v) = put_file(&url, &src);
    eprintln!("upload of 1 GiB: {:?}", t.elapsed());
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["bytes_written"], GIB);
    assert_eq!(
        v["sha256"],
        want.as_str(),
        "the server hashed what it wrote"
    );
    std::fs::remove_file(&src).unwrap();
    assert_eq!(std::fs::metadata(s.path("up.bin")).unwrap().len(), GIB);

    let url = s.download_url("up.bin");
    let t = Instant::now();
    let mut child = Command::new("curl")
        .args(["-sS", "-f", &url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (mut hasher, mut got, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        got += n as u64;
    }
    assert!(child.wait().unwrap().success());
    eprintln!("download of 1 GiB: {:?}", t.elapsed());
    assert_eq!(got, GIB);
    assert_eq!(
        hex(&hasher.finalize()),
        want,
        "downloaded bytes are the uploaded ones"
    );

    let [front, exec] = memory.finish();
    eprintln!("peak RSS: frontend {front} KiB, executor {exec} KiB");
    assert!(front > 0 && exec > 0, "sampling worked");
    assert!(front < LIMIT_KIB, "frontend peaked at {front} KiB");
    assert!(exec < LIMIT_KIB, "executor peaked at {exec} KiB");
}

#[test]
fn of_twenty_parallel_puts_with_one_ticket_exactly_one_succeeds() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let src = s.path("src.bin");
    let want = write_random(&src, 8 << 20);
    let url = s.upload_url("dest.bin");
    let results: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| put_file(&url, &src)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<_> = results.iter().filter(|(st, _)| *st == 200).collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    for (status, v) in results.iter().filter(|(st, _)| *st != 200) {
        assert_eq!(*status, 409, "{v}");
        assert!(
            v["error"] == "ticket_in_use" || v["error"] == "ticket_used",
            "{v}"
        );
    }
    let data = std::fs::read(s.path("dest.bin")).unwrap();
    assert_eq!(sha256_hex(&data), want, "the file is intact");
    assert!(s.temporaries("").is_empty());
    // And it stays spent.
    let (status, v) = put_file(&url, &src);
    assert_eq!((status, v["error"].as_str()), (409, Some("ticket_used")));
}

#[test]
fn an_oversize_upload_is_413_and_leaves_the_destination_and_no_temporary() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("dest.bin"), "original").unwrap();
    let src = s.path("src.bin");
    write_random(&src, 5000);
    let url = s.prepare(
        "prepare_upload",
        json!({"dest_path": s.p("dest.bin"), "max_bytes": 1000}),
    );
    // Announced by Content-Length: refused before anything is written.
    let (status, v) = put_file(&url, &src);
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"], "size_exceeded");
    assert_eq!(v["hint"], "Body exceeds max_bytes=1000.");
    // Chunked (curl reads stdin, so it cannot announce a length): cut as soon as the 1001st
    // byte arrives.
    let mut child = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-T", "-", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let big = std::fs::read(&src).unwrap();
    let _ = stdin.write_all(&big);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("413"), "{text}");
    assert!(text.contains("size_exceeded"), "{text}");

    assert_eq!(
        std::fs::read_to_string(s.path("dest.bin")).unwrap(),
        "original"
    );
    assert!(s.temporaries("").is_empty(), "{:?}", s.temporaries(""));
    // A failed transfer does not spend the ticket: a body that fits still goes through.
    std::fs::write(s.path("small"), vec![b'x'; 1000]).unwrap();
    let (status, v) = put_file(&url, &s.path("small"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(std::fs::read(s.path("dest.bin")).unwrap(), vec![b'x'; 1000]);
}

#[test]
fn a_client_killed_mid_upload_leaves_the_destination_and_no_temporary() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("dest.bin"), "original").unwrap();
    let src = s.path("src.bin");
    write_random(&src, 64 << 20);
    let url = s.upload_url("dest.bin");
    let mut curl = Command::new("curl")
        .args([
            "-sS",
            "--limit-rate",
            "4M",
            "-T",
            src.to_str().unwrap(),
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        mymcp_tests::wait_until(Duration::from_secs(10), || !s.temporaries("").is_empty()),
        "the upload started"
    );
    std::thread::sleep(Duration::from_millis(300));
    curl.kill().unwrap(); // SIGKILL
    curl.wait().unwrap();
    assert!(
        mymcp_tests::wait_until(Duration::from_secs(10), || s.temporaries("").is_empty()),
        "temporary removed: {:?}",
        s.temporaries("")
    );
    assert_eq!(
        std::fs::read_to_string(s.path("dest.bin")).unwrap(),
        "original"
    );

    // A raw client that stops in the middle of a Content-Length body and closes.
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
        path_of(&url)
    );
    let (status, _) = raw_http(s.front.addr, &head, |sock| {
        sock.write_all(&[b'y'; 300_000])?;
        std::thread::sleep(Duration::from_millis(300));
        sock.shutdown(std::net::Shutdown::Both)
    });
    assert!(status == 0 || status == 400, "{status}");
    assert!(mymcp_tests::wait_until(Duration::from_secs(10), || s
        .temporaries("")
        .is_empty()));
    assert_eq!(
        std::fs::read_to_string(s.path("dest.bin")).unwrap(),
        "original"
    );

    // The ticket was not spent by the failed attempts.
    std::fs::write(s.path("small"), "new").unwrap();
    let (status, v) = put_file(&url, &s.path("small"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(std::fs::read_to_string(s.path("dest.bin")).unwrap(), "new");
}

#[test]
fn expired_forged_reused_and_wrong_method_tickets_are_refused() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("f"), "data").unwrap();

    let url = s.prepare(
        "prepare_download",
        json!({"src_path": s.p("f"), "expires_in": 1}),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (status, body) = curl(&[], &url);
    assert_eq!(status, 410, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"ok": false, "error": "ticket_expired", "hint": "Mint a new ticket."})
    );

    let url = s.download_url("f");
    // One character changed, anywhere: the signature no longer matches.
    for at in [0, 20, 59] {
        let mut forged = url.clone().into_bytes();
        let i = url.len() - 60 + at;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let (status, body) = curl(&[], &String::from_utf8(forged).unwrap());
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("ticket_not_found"), "{body}");
    }
    let (status, body) = curl(&[], &format!("{}x", url));
    assert_eq!(status, 404, "{body}");

    // Wrong method: 405 with Allow, and the ticket is not spent.
    let (status, body) = curl(
        &["-X", "PUT", "--data-binary", "x", "-D", "/dev/stderr"],
        &url,
    );
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("This ticket requires GET."), "{body}");
    let (status, body) = curl(&["-X", "DELETE"], &url);
    assert_eq!(status, 405, "{body}");

    let (status, body) = curl(&[], &url);
    assert_eq!((status, body.as_str()), (200, "data"));
    let (status, body) = curl(&[], &url);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("ticket_used"), "{body}");

    let up = s.upload_url("g");
    let (status, body) = curl(&[], &up);
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("This ticket requires PUT."), "{body}");
}

#[test]
fn head_never_spends_a_download_ticket() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("report.csv"), "a,b\n1,2\n").unwrap();
    let url = s.download_url("report.csv");
    for _ in 0..3 {
        let out = Command::new("curl")
            .args(["-sS", "-I", &url])
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-length: 8\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/octet-stream"),
            "{head}"
        );
        assert!(
            head.contains("content-disposition: attachment; filename=\"report.csv\""),
            "{head}"
        );
    }
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\na,b\n1,2\n"), "{text}");
    let (status, _) = curl(&["-I"], &url);
    assert_eq!(status, 409, "a used ticket is used for HEAD too");
}

#[test]
fn protected_paths_are_refused_at_prepare_and_again_at_redeem_after_a_symlink_swap() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let v = s.call("prepare_upload", json!({"dest_path": s.p("secret/new")}));
    assert_eq!(v["error"], "ProtectedPath", "{v}");
    let v = s.call(
        "prepare_upload",
        json!({"dest_path": s.p("secret/deep/er/new")}),
    );
    assert_eq!(v["error"], "ProtectedPath", "{v}");
    let v = s.call("prepare_download", json!({"src_path": s.p("secret/key")}));
    assert_eq!(v["error"], "ProtectedPath", "{v}");
    let v = s.call(
        "prepare_download",
        json!({"src_path": s.p("secret/missing")}),
    );
    assert_eq!(
        v["error"], "ProtectedPath",
        "protection is checked before existence: {v}"
    );

    // Upload: the directory is real at prepare time, a symlink into the secret at redeem.
    std::fs::create_dir(s.path("inbox")).unwrap();
    let url = s.upload_url("inbox/new");
    std::fs::remove_dir(s.path("inbox")).unwrap();
    std::os::unix::fs::symlink(s.path("secret"), s.path("inbox")).unwrap();
    std::fs::write(s.path("payload"), "EVIL").unwrap();
    let (status, v) = put_file(&url, &s.path("payload"));
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "path_protected");
    let names: Vec<_> = std::fs::read_dir(s.path("secret"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        names,
        ["key"],
        "nothing was created in the protected directory"
    );

    // Download: the file is harmless at prepare time, a symlink to the secret at redeem.
    std::fs::write(s.path("notes"), "harmless").unwrap();
    let url = s.download_url("notes");
    std::fs::remove_file(s.path("notes")).unwrap();
    std::os::unix::fs::symlink(s.path("secret/key"), s.path("notes")).unwrap();
    let (status, body) = curl(&[], &url);
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("SECRET"), "{body}");
    let (status, _) = curl(&["-I"], &url);
    assert_eq!(status, 403);
}

#[test]
fn overwrite_false_never_replaces_a_file_that_appears_after_prepare() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("exists"), "old").unwrap();
    let v = s.call(
        "prepare_upload",
        json!({"dest_path": s.p("exists"), "overwrite": false}),
    );
    assert_eq!(v["error"], "FileExists", "{v}");
    assert_eq!(
        v["message"],
        format!("{} already exists and overwrite=False.", s.p("exists"))
    );

    // Appears between prepare and redeem.
    let url = s.prepare(
        "prepare_upload",
        json!({"dest_path": s.p("a"), "overwrite": false}),
    );
    std::fs::write(s.path("a"), "someone else's").unwrap();
    std::fs::write(s.path("payload"), "mine").unwrap();
    let (status, v) = put_file(&url, &s.path("payload"));
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"], "file_exists");
    assert_eq!(
        std::fs::read_to_string(s.path("a")).unwrap(),
        "someone else's"
    );

    // Appears while the body is on its way: refused at commit (rename without replace).
    let url = s.prepare(
        "prepare_upload",
        json!({"dest_path": s.p("b"), "overwrite": false}),
    );
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\nConnection: close\r\n\r\n",
        path_of(&url)
    );
    let (status, body) = raw_http(s.front.addr, &head, |sock| {
        sock.write_all(&[b'm'; 100_000])?;
        assert!(mymcp_tests::wait_until(Duration::from_secs(10), || !s
            .temporaries("")
            .is_empty()));
        std::fs::write(s.path("b"), "appeared").unwrap();
        sock.write_all(&[b'm'; 100_000])
    });
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("file_exists"), "{body}");
    assert_eq!(std::fs::read_to_string(s.path("b")).unwrap(), "appeared");
    assert!(s.temporaries("").is_empty());

    // Without the race, overwrite:false creates the file.
    let url = s.prepare(
        "prepare_upload",
        json!({"dest_path": s.p("c"), "overwrite": false}),
    );
    let (status, v) = put_file(&url, &s.path("payload"));
    assert_eq!(status, 200, "{v}");
}

#[test]
fn sha256_mismatch_is_422_and_writes_nothing_while_a_match_goes_through() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("payload"), "hello").unwrap();
    let good = sha256_hex(b"hello");
    let url = s.prepare(
        "prepare_upload",
        json!({"dest_path": s.p("d"), "sha256": sha256_hex(b"other")}),
    );
    let (status, v) = put_file(&url, &s.path("payload"));
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"], "sha256_mismatch");
    assert!(!s.path("d").exists());
    assert!(s.temporaries("").is_empty());

    let url = s.prepare(
        "prepare_upload",
        json!({"dest_path": s.p("d"), "sha256": good.to_uppercase()}),
    );
    let (status, v) = put_file(&url, &s.path("payload"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sha256"], good);
    assert_eq!(v["path"], s.p("d"));
    assert_eq!(v["bytes_written"], 5);
}

#[test]
fn a_replaced_file_keeps_mode_and_owner_and_missing_directories_are_created() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let (uid, gid) = user_ids("nobody");
    std::fs::write(s.path("conf"), "old").unwrap();
    std::fs::set_permissions(s.path("conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(s.path("conf"), Some(uid), Some(gid)).unwrap();
    std::fs::write(s.path("payload"), "new").unwrap();
    let url = s.upload_url("conf");
    let (status, v) = put_file(&url, &s.path("payload"));
    assert_eq!(status, 200, "{v}");
    let meta = std::fs::metadata(s.path("conf")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert_eq!(std::fs::read_to_string(s.path("conf")).unwrap(), "new");

    let url = s.upload_url("a/b/c.txt");
    assert!(!s.path("a").exists(), "prepare creates nothing");
    let (status, v) = put_file(&url, &s.path("payload"));
    assert_eq!(status, 200, "{v}");
    let meta = std::fs::metadata(s.path("a/b/c.txt")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o644);
}

#[test]
fn prepare_tools_follow_the_reference_checks_and_roles() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("f"), "12345").unwrap();
    let v = s.call_as(&s.ro, "prepare_upload", json!({"dest_path": s.p("x")}));
    assert_eq!(v["error"], "PermissionDenied", "{v}");
    let v = s.call_as(&s.ro, "prepare_download", json!({"src_path": s.p("f")}));
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["size"], 5);
    assert_eq!(v["expires_in"], 300);
    assert_eq!(v["src_path"], s.p("f"));
    let ticket = v["ticket"].as_str().unwrap();
    assert_eq!(ticket.len(), 60);
    assert!(v["curl_example"]
        .as_str()
        .unwrap()
        .starts_with(&format!("curl -fsS '/files/raw/{ticket}' -o")));

    let v = s.call(
        "prepare_upload",
        json!({"dest_path": s.p("x"), "max_bytes": 1i64 << 40, "expires_in": 99999}),
    );
    assert_eq!(
        v["max_bytes"], 2_147_483_648u64,
        "clamped to MYMCP_TRANSFER_MAX_BYTES"
    );
    assert_eq!(
        v["expires_in"], 900,
        "clamped to MYMCP_TRANSFER_MAX_TTL_SEC"
    );
    assert_eq!(v["overwrite"], true);

    for (args, code, message) in [
        (
            json!({"dest_path": "rel/x"}),
            "InvalidPath",
            "dest_path must be an absolute path.",
        ),
        (
            json!({"dest_path": s.p("x"), "max_bytes": 0}),
            "InvalidMaxBytes",
            "max_bytes must be positive.",
        ),
        (
            json!({"dest_path": s.p("x"), "expires_in": 0}),
            "InvalidExpiresIn",
            "expires_in must be positive.",
        ),
    ] {
        let v = s.call("prepare_upload", args);
        assert_eq!(
            (v["error"].as_str(), v["message"].as_str()),
            (Some(code), Some(message)),
            "{v}"
        );
    }
    for (args, code, message) in [
        (
            json!({"src_path": s.p("nope")}),
            "FileNotFound",
            format!("{} does not exist.", s.p("nope")),
        ),
        (
            json!({"src_path": s.p("")}),
            "NotARegularFile",
            format!("{} is not a regular file.", s.p("")),
        ),
        (
            json!({"src_path": "/dev/null"}),
            "NotARegularFile",
            "/dev/null is not a regular file.".into(),
        ),
    ] {
        let v = s.call("prepare_download", args);
        assert_eq!(
            (v["error"].as_str(), v["message"].as_str()),
            (Some(code), Some(message.as_str())),
            "{v}"
        );
    }
}

#[test]
fn transfers_can_be_disabled_and_a_revoked_token_takes_its_tickets_along() {
    mymcp_tests::needs_root!();
    let s = Setup::start_with(&[("MYMCP_TRANSFER_ENABLED", "false")]);
    let v = s.call("prepare_upload", json!({"dest_path": s.p("x")}));
    assert_eq!(v["error"], "TransferDisabled", "{v}");
    assert_eq!(
        v["message"],
        "File transfer feature is disabled on this server."
    );
    drop(s);

    let s = Setup::start();
    std::fs::write(s.path("f"), "x").unwrap();
    let url = s.download_url("f");
    let out = mymcp_tests::ctl(&s.exec.runtime_dir, &["token", "revoke", &s.rw]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = curl(&[], &url);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no longer valid"), "{body}");
}

#[test]
fn a_hostile_frontend_cannot_redeem_guessed_grants() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let (uid, gid) = user_ids("nobody");
    let lines = mymcp_tests::peer(uid, gid, &s.exec.executor_socket(), "redeem-guess", "");
    assert_eq!(
        lines,
        [
            "Welcome",
            "Transfer Err ticket_not_found id=1",
            "Transfer Err ticket_not_found id=2",
            "Probe Err ticket_not_found id=3",
            "Acknowledged false id=4"
        ]
    );
}
