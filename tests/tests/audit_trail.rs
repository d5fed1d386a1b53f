//! The audit trail end to end: every code path that reads or changes the host leaves exactly its
//! records in `audit.log` — transfer redemptions (`transfer_upload` / `transfer_download`, the
//! reference's v3 shape) and `HEAD`s (`transfer_head`), background jobs (`bash_execute`, `job_kill`, `job_finished` for an
//! exit, a timeout, a kill and the executor's shutdown), token changes through `/admin/tokens`
//! and `mymcpctl` (`token_*`), protected-path refusals — in one unbroken hash chain that
//! `mymcpctl audit verify` accepts. An upload whose record cannot be written is taken back and
//! answered 500 `audit_failed`; a redeem whose start record cannot be written does nothing.
//!
//! Each test takes a mark of the log before an action and compares what was appended after it
//! (`tool` and `start` or the result, seals left out) with the list it expects, so a missing,
//! doubled or stray record fails.

use mymcp_tests::{
    ctl, http_request, post_mcp, tools_call, wait_until, ExecutorProcess, FrontendProcess,
    HttpResponse, Tmpfs,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// An executor with the audit log on, protecting `<dir>/secret`, a frontend, and one token of
/// each role.
struct Setup {
    // Field order: the frontend stops before the executor.
    front: FrontendProcess,
    exec: ExecutorProcess,
    rw: String,
    admin: String,
    metrics: String,
    dir: tempfile::TempDir,
    /// `MYMCP_AUDIT_LOG_DIR`.
    audit: PathBuf,
}

impl Setup {
    fn start() -> Setup {
        Self::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("mymcp-trail-")
            .tempdir()
            .unwrap();
        let secret = dir.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("key"), "SECRET").unwrap();
        let secret = secret.to_str().unwrap().to_owned();
        let mut all = vec![
            ("MYMCP_AUDIT_ENABLED", "true"),
            ("MYMCP_PROTECTED_PATHS", secret.as_str()),
        ];
        all.extend_from_slice(env);
        let exec = ExecutorProcess::start_with_env("nobody", &all);
        let audit = env
            .iter()
            .find(|(k, _)| *k == "MYMCP_AUDIT_LOG_DIR")
            .map_or_else(|| exec.audit_dir(), |(_, v)| PathBuf::from(v));
        let rw = exec.add_token("mover", "rw");
        let admin = exec.add_token("ops", "admin");
        let metrics = exec.add_token("scraper", "metrics");
        let front = FrontendProcess::start(&exec.executor_socket());
        Setup {
            front,
            exec,
            rw,
            admin,
            metrics,
            dir,
            audit,
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
        let r = post_mcp(self.front.addr, &self.rw, &tools_call(1, tool, args));
        assert_eq!(r.status, 200, "{}", r.body);
        r.tool_json()
    }

    /// `prepare_*` that must succeed; returns the absolute URL.
    fn prepare(&self, tool: &str, args: Value) -> String {
        let v = self.call(tool, args);
        assert_eq!(v["success"], true, "{v}");
        format!("http://{}{}", self.front.addr, v["url"].as_str().unwrap())
    }

    /// Every line of the log, oldest first (seals included).
    fn lines(&self) -> Vec<String> {
        log_lines(&self.audit)
    }

    /// A mark to compare what is appended after it.
    fn mark(&self) -> usize {
        self.lines().len()
    }

    /// The records appended after `mark`, seals left out.
    fn since(&self, mark: usize) -> Vec<Value> {
        self.lines()[mark..]
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("audit line is JSON"))
            .filter(|r| r["type"] != "seal")
            .collect()
    }

    /// Waits (up to 30 s) until a record appended after `mark` matches `want`; returns it.
    fn wait_for(&self, mark: usize, want: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_until(Duration::from_secs(30), || {
            found = self.since(mark).into_iter().find(&want);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no such record after {mark}: {:#?}", self.since(mark)))
    }

    /// `mymcp_transfer_bytes_total{direction}` on /metrics.
    fn transfer_bytes(&self, direction: &str) -> u64 {
        let auth = format!("Bearer {}", self.metrics);
        let m = http_request(
            self.front.addr,
            "GET",
            "/metrics",
            &[("Authorization", &auth)],
            "",
        );
        assert_eq!(m.status, 200, "{}", m.body);
        let series = format!("mymcp_transfer_bytes_total{{direction=\"{direction}\"}} ");
        m.body
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series}in {}", m.body))
    }

    fn admin_request(&self, method: &str, path: &str, body: &str) -> HttpResponse {
        let auth = format!("Bearer {}", self.admin);
        http_request(
            self.front.addr,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    /// `mymcpctl audit verify --key <install key>` passes; the chain links every line.
    fn assert_chain_verifies(&self) {
        assert_chain(&self.lines());
        let (ok, text) = verify(&self.exec.runtime_dir, &self.exec, None);
        assert!(ok && text.starts_with("OK:"), "{text}");
    }
}

/// The log files of `dir` in order (`audit.log.N` … `audit.log`), as lines.
fn log_lines(dir: &Path) -> Vec<String> {
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = match name.strip_prefix("audit.log") {
                Some("") => 0,
                Some(rest) => rest.strip_prefix('.')?.parse().ok()?,
                None => return None,
            };
            Some((n, e.path()))
        })
        .collect();
    files.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    files
        .iter()
        .flat_map(|(_, p)| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every line carries the next `seq` and the SHA-256 of the line before it as `prev`.
fn assert_chain(lines: &[String]) {
    assert!(!lines.is_empty());
    let mut prev: Option<String> = None;
    for (i, line) in lines.iter().enumerate() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["seq"].as_u64(), Some(i as u64 + 1), "{line}");
        if let Some(p) = &prev {
            assert_eq!(r["prev"].as_str(), Some(p.as_str()), "{line}");
        }
        prev = Some(hex(&Sha256::digest(line.as_bytes())));
    }
}

/// `mymcpctl audit verify --key <install key> [ARGS]` → (passed, output).
fn verify(runtime: &Path, exec: &ExecutorProcess, dir: Option<&Path>) -> (bool, String) {
    let key = exec.audit_install_key();
    let mut args = vec!["audit", "verify", "--key", &key];
    let dir_s;
    if let Some(d) = dir {
        dir_s = d.to_str().unwrap().to_owned();
        args.extend(["--dir", &dir_s]);
    }
    let out = ctl(runtime, &args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `tool start` or `tool <result>` for each record: what a test compares.
fn shape(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let tool = r["tool"].as_str().unwrap_or("?");
            match r["type"].as_str() {
                Some(kind) => format!("{tool} {kind}"),
                None => format!("{tool} {}", r["result"].as_str().unwrap_or("?")),
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

fn path_of(url: &str) -> &str {
    &url[url.find("/files/raw/").unwrap()..]
}

#[test]
fn a_redeemed_upload_and_download_leave_a_start_and_an_outcome_record_and_count_their_bytes() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let content = "twenty-one bytes up!\n";
    std::fs::write(s.path("src.txt"), content).unwrap();
    let (up0, down0) = (s.transfer_bytes("upload"), s.transfer_bytes("download"));

    let m = s.mark();
    let url = s.prepare("prepare_upload", json!({"dest_path": s.p("up.txt")}));
    let prepared = s.since(m);
    assert_eq!(shape(&prepared), ["prepare_upload ok"]);
    // The grant's prefix, which its redemption records repeat.
    let ticket = prepared[0]["output"]["ticket"].as_str().unwrap().to_owned();
    assert_eq!(ticket.len(), 8, "{prepared:?}");

    let m = s.mark();
    let (status, v) = put_file(&url, &s.path("src.txt"));
    assert_eq!(status, 200, "{v}");
    let r = s.since(m);
    assert_eq!(shape(&r), ["transfer_upload start", "transfer_upload ok"]);
    // The reference's v3 record: the issuer's name and role, the redeemer's address.
    let (start, done) = (&r[0], &r[1]);
    for rec in [start, done] {
        assert_eq!(rec["token_name"], "mover");
        assert_eq!(rec["role"], "rw");
        assert_eq!(rec["ip"], "127.0.0.1");
        assert_eq!(rec["params"]["path"], s.p("up.txt"));
        assert_eq!(rec["params"]["ticket"], ticket.as_str());
        assert_eq!(rec["params"]["issuer_token_name"], "mover");
        assert_eq!(rec["params"]["issuer_role"], "rw");
        assert_eq!(rec["params"]["redeemer_ip"], "127.0.0.1");
    }
    assert!(start.get("result").is_none(), "{start}");
    assert_eq!(done["params"]["bytes"], content.len());
    assert!(done["duration_ms"].is_u64(), "{done}");
    assert!(done.get("error_code").is_none(), "{done}");
    assert_eq!(done["output"]["size_bytes"], content.len());
    assert_eq!(
        done["output"]["sha256"],
        hex(&Sha256::digest(content.as_bytes()))
    );
    assert_eq!(std::fs::read_to_string(s.path("up.txt")).unwrap(), content);
    assert_eq!(s.transfer_bytes("upload"), up0 + content.len() as u64);

    let m = s.mark();
    let url = s.prepare("prepare_download", json!({"src_path": s.p("up.txt")}));
    let prepared = s.since(m);
    assert_eq!(shape(&prepared), ["prepare_download ok"]);
    // HEAD reads the file's size without spending the ticket: one record.
    let m = s.mark();
    let (status, _) = curl(&["-I"], &url);
    assert_eq!(status, 200);
    let r = s.since(m);
    assert_eq!(shape(&r), ["transfer_head ok"]);
    assert_eq!(r[0]["params"]["ticket"], prepared[0]["output"]["ticket"]);
    assert_eq!(r[0]["params"]["bytes"], content.len());
    assert_eq!(r[0]["params"]["redeemer_ip"], "127.0.0.1");
    let m = s.mark();
    // Redeemed from another address than the one that asked for the ticket: the record names
    // the issuer's token and the redeemer's address.
    let (status, body) = curl(&["--interface", "127.0.0.2"], &url);
    assert_eq!((status, body.as_str()), (200, content));
    // Written when the executor has seen the last byte go, which may be just after the client
    // has it.
    s.wait_for(m, |r| {
        r["tool"] == "transfer_download" && r["result"] == "ok"
    });
    let r = s.since(m);
    assert_eq!(
        shape(&r),
        ["transfer_download start", "transfer_download ok"]
    );
    let done = &r[1];
    assert_eq!(prepared[0]["ip"], "127.0.0.1");
    assert_eq!(
        (done["token_name"].as_str(), done["ip"].as_str()),
        (Some("mover"), Some("127.0.0.2"))
    );
    assert_eq!(done["params"]["redeemer_ip"], "127.0.0.2");
    assert_eq!(done["params"]["issuer_token_name"], "mover");
    assert_eq!(done["params"]["ticket"], prepared[0]["output"]["ticket"]);
    assert_eq!(done["params"]["bytes"], content.len());
    assert_eq!(done["params"]["issuer_role"], "rw");
    assert!(done["duration_ms"].is_u64(), "{done}");
    let want = down0 + content.len() as u64;
    assert!(
        wait_until(Duration::from_secs(10), || s.transfer_bytes("download")
            == want),
        "mymcp_transfer_bytes_total{{direction=\"download\"}} {} != {want}",
        s.transfer_bytes("download")
    );

    // A spent ticket is refused before it is claimed: not audited (like the reference).
    let m = s.mark();
    let (status, _) = curl(&[], &url);
    assert_eq!(status, 409);
    assert_eq!(shape(&s.since(m)), Vec::<String>::new());
    assert_eq!(s.transfer_bytes("download"), down0 + content.len() as u64);
    s.assert_chain_verifies();
}

#[test]
fn failed_redeems_leave_one_error_record_each_and_count_no_bytes() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("dest.bin"), "original").unwrap();
    std::fs::write(s.path("big"), vec![b'x'; 5000]).unwrap();
    let up0 = s.transfer_bytes("upload");

    // Too large by Content-Length: refused before it is claimed, one outcome record.
    let url = s.prepare(
        "prepare_upload",
        json!({"dest_path": s.p("dest.bin"), "max_bytes": 1000}),
    );
    let m = s.mark();
    let (status, v) = put_file(&url, &s.path("big"));
    assert_eq!((status, v["error"].as_str()), (413, Some("size_exceeded")));
    let r = s.since(m);
    assert_eq!(shape(&r), ["transfer_upload error"]);
    assert_eq!(r[0]["error_code"], "size_exceeded");
    assert_eq!(r[0]["params"]["bytes"], 0);

    // Too large while streaming (chunked, no length): claimed, so started, then refused.
    let m = s.mark();
    let mut child = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-T", "-", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&[b'y'; 5000]);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("413"));
    let r = s.since(m);
    assert_eq!(
        shape(&r),
        ["transfer_upload start", "transfer_upload error"]
    );
    assert_eq!(r[1]["error_code"], "size_exceeded");
    assert!(r[1]["error_message"].as_str().unwrap().contains("1000"));

    // The directory became a symlink into the protected one after prepare: started, refused.
    std::fs::create_dir(s.path("inbox")).unwrap();
    let url = s.prepare("prepare_upload", json!({"dest_path": s.p("inbox/new")}));
    std::fs::remove_dir(s.path("inbox")).unwrap();
    std::os::unix::fs::symlink(s.path("secret"), s.path("inbox")).unwrap();
    let m = s.mark();
    let (status, v) = put_file(&url, &s.path("big"));
    assert_eq!((status, v["error"].as_str()), (403, Some("path_protected")));
    let r = s.since(m);
    assert_eq!(
        shape(&r),
        ["transfer_upload start", "transfer_upload error"]
    );
    assert_eq!(r[1]["error_code"], "path_protected");
    assert_eq!(r[1]["params"]["path"], s.p("inbox/new"));
    assert!(!s.path("secret/new").exists());

    // A download of a file that went away after prepare.
    std::fs::write(s.path("gone"), "soon gone").unwrap();
    let url = s.prepare("prepare_download", json!({"src_path": s.p("gone")}));
    std::fs::remove_file(s.path("gone")).unwrap();
    let m = s.mark();
    let (status, _) = curl(&[], &url);
    assert_eq!(status, 404);
    let r = s.since(m);
    assert_eq!(
        shape(&r),
        ["transfer_download start", "transfer_download error"]
    );
    assert_eq!(r[1]["error_code"], "path_not_found");

    assert_eq!(
        std::fs::read_to_string(s.path("dest.bin")).unwrap(),
        "original"
    );
    assert_eq!(
        s.transfer_bytes("upload"),
        up0,
        "failed uploads moved no bytes"
    );
    s.assert_chain_verifies();
}

/// A PUT whose body is sent in two parts, so that a test can act between them.
struct PendingPut(TcpStream);

impl PendingPut {
    fn begin(addr: SocketAddr, url: &str, total: usize, first: &[u8]) -> PendingPut {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
            path_of(url)
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(first).unwrap();
        PendingPut(s)
    }

    /// Sends the rest; returns (status, JSON body).
    fn finish(mut self, rest: &[u8]) -> (u16, Value) {
        self.0.write_all(rest).unwrap();
        let mut raw = Vec::new();
        let _ = self.0.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

#[test]
fn an_upload_whose_record_cannot_be_written_is_taken_back_and_answered_audit_failed() {
    mymcp_tests::needs_root!();
    let disk = Tmpfs::mount("256k");
    let audit = disk.path().join("audit");
    let s = Setup::start_with(&[("MYMCP_AUDIT_LOG_DIR", audit.to_str().unwrap())]);
    // Long names: their outcome records are longer than the small records that spend the
    // last bytes of the full disk below.
    let long = "n".repeat(120);
    let fresh = format!("{long}-fresh.txt");
    let kept = format!("{long}-kept.txt");
    std::fs::write(s.path(&kept), "old").unwrap();
    let gone = format!("{long}-unsent.txt");
    std::fs::write(s.path(&gone), "never sent").unwrap();
    let new_body = b"new content that must not stay";
    let n = new_body.len();
    let fresh_url = s.prepare("prepare_upload", json!({"dest_path": s.p(&fresh)}));
    let kept_url = s.prepare("prepare_upload", json!({"dest_path": s.p(&kept)}));
    // Redeemed only once the log is full: no start record, so nothing may happen.
    let unstarted_url = s.prepare(
        "prepare_upload",
        json!({"dest_path": s.p(&format!("{long}-not-yet/created.txt"))}),
    );
    let download_url = s.prepare("prepare_download", json!({"src_path": s.p(&gone)}));

    // Two uploads get their start records while there is room, then wait mid-body.
    let m = s.mark();
    let a = PendingPut::begin(s.front.addr, &fresh_url, n, &new_body[..5]);
    let b = PendingPut::begin(s.front.addr, &kept_url, n, &new_body[..5]);
    for name in [&fresh, &kept] {
        s.wait_for(m, |r| {
            r["type"] == "start" && r["params"]["path"] == s.p(name)
        });
    }

    // The disk is full; small records spend what the log's last page still holds: read_file
    // outcomes, then the smaller start records of a mymcpctl revoke of no token. Every record
    // expected to fail below is longer than the last of these.
    disk.fill();
    let refused = (0..200).any(|_| {
        s.call("read_file", json!({"file_path": "/nonexistent/x"}))["error"] == "InternalError"
    });
    assert!(refused, "a full disk never refused a call");
    let refused = (0..200).any(|_| {
        let out = ctl(&s.exec.runtime_dir, &["token", "revoke", "000000"]);
        String::from_utf8_lossy(&out.stderr).contains("audit log")
    });
    assert!(refused, "a full disk never refused a token change");
    let m = s.mark();

    for (put, name, was) in [(a, &fresh, None), (b, &kept, Some("old"))] {
        let (status, v) = put.finish(&new_body[5..]);
        assert_eq!(
            (status, v["error"].as_str()),
            (500, Some("audit_failed")),
            "{v}"
        );
        assert!(v["hint"].as_str().unwrap().contains("taken back"), "{v}");
        assert_eq!(
            std::fs::read_to_string(s.path(name)).ok().as_deref(),
            was,
            "an upload without its record stayed in place"
        );
    }
    // Nothing else is left in the directory: no temporary, no second name of the old file.
    let mut names: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [kept.as_str(), gone.as_str(), "secret"],
        "left behind after the take-back"
    );

    // A redeem whose start record cannot be written does nothing: no directory, no byte out.
    let (status, v) = PendingPut::begin(s.front.addr, &unstarted_url, n, &[]).finish(new_body);
    assert_eq!(
        (status, v["error"].as_str()),
        (500, Some("audit_failed")),
        "{v}"
    );
    assert!(
        v["hint"].as_str().unwrap().contains("nothing was written"),
        "{v}"
    );
    assert!(
        !s.path(&format!("{long}-not-yet")).exists(),
        "a directory was made unaudited"
    );
    let (status, body) = curl(&[], &download_url);
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("audit_failed") && !body.contains("never sent"),
        "{body}"
    );
    // A HEAD's answer (the size) is withheld without its record.
    let (status, head) = curl(&["-I"], &download_url);
    assert_eq!(status, 500, "{head}");
    // Nor does a token change, through mymcpctl or the admin API.
    let name = format!("blocked-by-ctl-{}", "c".repeat(40));
    let out = ctl(&s.exec.runtime_dir, &["token", "add", "--name", &name]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit log"),
        "{out:?}"
    );
    let r = s.admin_request("POST", "/admin/tokens", r#"{"name":"blocked-by-api"}"#);
    assert_eq!(r.status, 500, "{}", r.body);
    let list = ctl(&s.exec.runtime_dir, &["token", "list"]);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("blocked-by"));
    assert_eq!(s.lines().len(), m, "nothing fit in the full log");

    // Room again: the same URLs work (a refused redeem does not spend its ticket), each with
    // its records, and the chain has no gap.
    disk.free();
    let m = s.mark();
    for (url, name) in [(&fresh_url, &fresh), (&kept_url, &kept)] {
        let (status, v) = PendingPut::begin(s.front.addr, url, n, &[]).finish(new_body);
        assert_eq!(status, 200, "{v}");
        assert_eq!(std::fs::read(s.path(name)).unwrap(), new_body);
    }
    assert_eq!(
        shape(&s.since(m)),
        [
            "transfer_upload start",
            "transfer_upload ok",
            "transfer_upload start",
            "transfer_upload ok"
        ]
    );
    s.assert_chain_verifies();
    // The taken-back uploads moved no bytes; the two that stayed did.
    assert_eq!(s.transfer_bytes("upload"), 2 * n as u64);
}

#[test]
fn every_job_end_is_one_job_finished_record_in_the_name_of_its_call() {
    mymcp_tests::needs_root!();
    let mut s = Setup::start();
    let job = |command: &str, timeout: u64| -> (String, Value) {
        let m = s.mark();
        let v = s.call(
            "bash_execute",
            json!({"command": command, "background": true, "timeout": timeout}),
        );
        let id = v["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned();
        // (An earlier job may end meanwhile.)
        let r: Vec<Value> = s
            .since(m)
            .into_iter()
            .filter(|r| r["tool"] != "job_finished")
            .collect();
        assert_eq!(shape(&r), ["bash_execute start", "bash_execute ok"]);
        assert_eq!(r[1]["output"]["job_id"], id.as_str());
        (id, r[1].clone())
    };
    let finished = |m: usize, id: &str| {
        s.wait_for(m, |r| {
            r["tool"] == "job_finished" && r["params"]["job_id"] == id
        })
    };

    // Exit codes: 0 is ok, any other is ExitCode:<n>.
    let m = s.mark();
    let (ok_id, started) = job("echo fine", 30);
    let (bad_id, _) = job("echo out; echo err >&2; exit 3", 30);
    let ok = finished(m, &ok_id);
    let bad = finished(m, &bad_id);
    assert_eq!(ok["result"], "ok");
    assert!(ok.get("error_code").is_none(), "{ok}");
    assert_eq!(ok["output"]["exit_code"], 0);
    assert_eq!(ok["output"]["ended_by"], "exit");
    assert_eq!(ok["output"]["stdout_bytes"], 5);
    // In the name of the token and the call that started it.
    for key in ["token_name", "role", "ip", "request_id"] {
        assert_eq!(ok[key], started[key], "{key}: {ok}");
    }
    assert_eq!(ok["params"]["command"], "echo fine");
    assert!(ok["duration_ms"].is_u64(), "{ok}");
    assert_eq!(
        (bad["result"].as_str(), bad["error_code"].as_str()),
        (Some("error"), Some("ExitCode:3"))
    );
    assert_eq!(bad["output"]["exit_code"], 3);
    assert_eq!(bad["output"]["stderr_bytes"], 4);
    assert_eq!(
        shape(&s.since(m))
            .iter()
            .filter(|t| t.starts_with("job_finished"))
            .count(),
        2
    );

    // job_kill: its own start and outcome records, then the job's end.
    let (kill_id, _) = job("sleep 60", 120);
    let m = s.mark();
    let v = s.call("job_kill", json!({"job_id": kill_id}));
    assert_eq!(v["killed"], true, "{v}");
    let end = finished(m, &kill_id);
    let mut r = shape(&s.since(m));
    r.sort();
    assert_eq!(
        r,
        ["job_finished error", "job_kill ok", "job_kill start"],
        "{:#?}",
        s.since(m)
    );
    assert_eq!(
        s.since(m)[0]["type"],
        "start",
        "job_kill's start comes first"
    );
    assert_eq!(end["error_code"], "Killed");
    assert_eq!(end["output"]["ended_by"], "job_kill");
    assert_eq!(end["output"]["killed"], true);

    // A timeout.
    let m = s.mark();
    let (slow_id, _) = job("sleep 60", 1);
    let end = finished(m, &slow_id);
    assert_eq!(end["error_code"], "TimeoutError");
    assert_eq!(end["output"]["ended_by"], "timeout");
    assert_eq!(end["output"]["timed_out"], true);
    assert_eq!(
        shape(&s.since(m)),
        [
            "bash_execute start",
            "bash_execute ok",
            "job_finished error"
        ]
    );

    // Shutdown ends a running job and records it before the log closes (and is sealed).
    let (last_id, _) = job("sleep 60", 120);
    let m = s.mark();
    s.exec.terminate();
    let after: Vec<Value> = s.lines()[m..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(after.len(), 2, "{after:#?}");
    assert_eq!(after[0]["tool"], "job_finished");
    assert_eq!(after[0]["params"]["job_id"], last_id.as_str());
    assert_eq!(after[0]["error_code"], "ShuttingDown");
    assert_eq!(after[0]["output"]["ended_by"], "shutdown");
    assert_eq!(after[1]["type"], "seal", "the shutdown seal covers it");
    assert_chain(&s.lines());
    let (ok, text) = verify(&s.exec.runtime_dir, &s.exec, Some(&s.audit));
    assert!(ok, "{text}");
}

#[test]
fn token_changes_through_the_admin_api_and_mymcpctl_are_recorded_without_token_values() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let runtime = &s.exec.runtime_dir;
    // The setup's own `mymcpctl token add`s are there already, as root's.
    let all = s.since(0);
    assert_eq!(
        shape(&all),
        [
            "token_add start",
            "token_add ok",
            "token_add start",
            "token_add ok",
            "token_add start",
            "token_add ok"
        ]
    );
    assert_eq!(all[1]["token_name"], "mymcpctl");
    assert_eq!(all[1]["role"], "control");
    assert_eq!(all[1]["ip"], "local");
    assert_eq!(
        all[1]["params"],
        json!({"name": "mover", "role": "rw", "peer_pid": all[1]["params"]["peer_pid"]})
    );
    assert!(all[1]["params"]["peer_pid"].is_u64(), "{}", all[1]);
    assert_eq!(all[1]["output"]["name"], "mover");
    assert!(
        all[1].get("request_id").is_none(),
        "no HTTP request: {}",
        all[1]
    );

    // The admin API: a creation, a listing, a revocation, each in the admin's name.
    let m = s.mark();
    let r = s.admin_request("POST", "/admin/tokens", r#"{"name":"ci","role":"ro"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    let ci_value = created["token"].as_str().unwrap().to_owned();
    let ci_id = created["id"].as_str().unwrap().to_owned();
    let rec = s.since(m);
    assert_eq!(shape(&rec), ["token_add start", "token_add ok"]);
    assert_eq!(rec[1]["token_name"], "ops");
    assert_eq!(rec[1]["role"], "admin");
    assert_eq!(rec[1]["ip"], "127.0.0.1");
    assert_eq!(rec[1]["request_id"], r.header("x-request-id").unwrap());
    assert_eq!(rec[1]["params"], json!({"name": "ci", "role": "ro"}));
    assert_eq!(rec[1]["output"]["id"], ci_id.as_str());

    let m = s.mark();
    let r = s.admin_request("GET", "/admin/tokens", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = s.since(m);
    assert_eq!(shape(&rec), ["token_list ok"]);
    assert_eq!(
        rec[0]["output"]["count"], 2,
        "the ro and rw tokens: {}",
        rec[0]
    );

    let m = s.mark();
    let r = s.admin_request("DELETE", &format!("/admin/tokens/{ci_id}"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.admin_request("DELETE", "/admin/tokens/abcdef123456", "");
    assert_eq!(r.status, 404, "{}", r.body);
    let rec = s.since(m);
    assert_eq!(
        shape(&rec),
        [
            "token_revoke start",
            "token_revoke ok",
            "token_revoke start",
            "token_revoke error"
        ]
    );
    assert_eq!(rec[1]["params"]["selector"], ci_id.as_str());
    assert_eq!(rec[3]["error_code"], "NotFound");

    // Refused requests change nothing and are not audited (the reference audits no admin
    // call and no authentication failure): a client token, a bad body.
    let m = s.mark();
    let auth = format!("Bearer {}", s.rw);
    let r = http_request(
        s.front.addr,
        "GET",
        "/admin/tokens",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = s.admin_request("POST", "/admin/tokens", "{not json");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.admin_request("POST", "/admin/tokens", r#"{"name":"x","role":"admin"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(shape(&s.since(m)), Vec::<String>::new());
    // A well-formed request the store refuses (a control character in the name) is an
    // admin's attempt: recorded.
    let r = s.admin_request(
        "POST",
        "/admin/tokens",
        r#"{"name":"bad\u0007name","role":"ro"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let rec = s.since(m);
    assert_eq!(shape(&rec), ["token_add start", "token_add error"]);
    assert_eq!(rec[1]["error_code"], "InvalidArguments");

    // mymcpctl: add, revoke by value (the value never reaches the log), rotate, disable, import.
    let m = s.mark();
    let ctl_ok = |args: &[&str]| -> String {
        let out = ctl(runtime, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let temp = ctl_ok(&["token", "add", "--name", "temp", "--role", "rw"]);
    let temp = temp.trim().to_owned();
    ctl_ok(&["token", "revoke", &temp]);
    let rotated = ctl_ok(&["token", "rotate-metrics", "--json"]);
    ctl_ok(&["token", "disable-metrics"]);
    let old = s.path("tokens.json");
    let imported_value = "tok_imported0123456789abcdefghijklmnopqrstuvwx";
    std::fs::write(
        &old,
        json!({"tokens": {imported_value: {"name": "legacy", "role": "ro",
            "created_at": "2026-01-01T00:00:00Z", "enabled": true}}})
        .to_string(),
    )
    .unwrap();
    ctl_ok(&["token", "import", old.to_str().unwrap()]);
    let rec = s.since(m);
    assert_eq!(
        shape(&rec),
        [
            "token_add start",
            "token_add ok",
            "token_revoke start",
            "token_revoke ok",
            "token_rotate start",
            "token_rotate ok",
            "token_remove_role start",
            "token_remove_role ok",
            "token_import start",
            "token_import ok"
        ]
    );
    assert!(rec
        .iter()
        .all(|r| r["token_name"] == "mymcpctl" && r["role"] == "control"));
    let selector = rec[3]["params"]["selector"].as_str().unwrap();
    assert!(selector.starts_with("<token value, id "), "{selector}");
    assert_eq!(rec[3]["output"]["name"], "temp");
    assert_eq!(rec[5]["params"]["role"], "metrics");
    assert_eq!(rec[5]["output"]["removed"], 1);
    assert_eq!(rec[7]["output"]["removed"], 1);
    assert_eq!(
        rec[9]["params"],
        json!({"count": 1, "tokens": [{"name": "legacy", "role": "ro"}], "peer_pid": rec[9]["params"]["peer_pid"]})
    );
    assert_eq!(rec[9]["output"], json!({"added": 1, "skipped": 0}));

    // No token value anywhere in the log.
    let text = s.lines().join("\n");
    let rotated: Value = serde_json::from_str(&rotated).unwrap();
    for value in [
        s.rw.as_str(),
        s.admin.as_str(),
        s.metrics.as_str(),
        ci_value.as_str(),
        temp.as_str(),
        rotated["token"].as_str().unwrap(),
        imported_value,
    ] {
        assert!(!text.contains(value), "a token value is in the audit log");
    }
    s.assert_chain_verifies();
}

#[test]
fn a_token_the_executor_imports_from_its_environment_is_recorded_once() {
    mymcp_tests::needs_root!();
    let value = "tok_fromtheenvironment0123456789abcdefghijklm";
    let s = Setup::start_with(&[("MYMCP_METRICS_TOKEN", value)]);
    let all = s.since(0);
    assert_eq!(shape(&all)[0], "token_import ok", "{all:#?}");
    assert_eq!(all[0]["token_name"], "mymcp-executor");
    assert_eq!(all[0]["role"], "control");
    assert_eq!(
        all[0]["params"]["tokens"],
        json!([{"name": "metrics", "role": "metrics"}])
    );
    assert_eq!(all[0]["output"], json!({"added": 1, "skipped": 0}));
    assert_eq!(
        all.iter().filter(|r| r["tool"] == "token_import").count(),
        1
    );
    assert!(!s.lines().join("\n").contains(value));
    s.assert_chain_verifies();
}

#[test]
fn protected_path_refusals_are_recorded_with_error_code_protected_path() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let key = s.p("secret/key");
    let calls = [
        ("read_file", json!({"file_path": key})),
        ("write_file", json!({"file_path": key, "content": "x"})),
        (
            "edit_file",
            json!({"file_path": key, "old_string": "SECRET", "new_string": "x"}),
        ),
        ("prepare_download", json!({"src_path": key})),
        // A name that does not exist yet.
        ("prepare_upload", json!({"dest_path": s.p("secret/new")})),
    ];
    for (tool, args) in calls {
        let m = s.mark();
        let v = s.call(tool, args);
        assert_eq!(v["error"], "ProtectedPath", "{tool}: {v}");
        let r = s.since(m);
        let last = r.last().unwrap_or_else(|| panic!("{tool}: no record"));
        assert_eq!(
            (last["tool"].as_str(), last["result"].as_str()),
            (Some(tool), Some("error")),
            "{r:#?}"
        );
        assert_eq!(last["error_code"], "ProtectedPath", "{tool}: {last}");
        // One outcome; a start record only for a tool that may change the host.
        assert_eq!(
            r.iter().filter(|x| x.get("type").is_none()).count(),
            1,
            "{r:#?}"
        );
        assert!(r.len() <= 2, "{r:#?}");
    }
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "SECRET");
    s.assert_chain_verifies();
}

#[test]
fn a_handed_off_call_names_its_job_and_the_job_ends_with_its_own_record() {
    mymcp_tests::needs_root!();
    let s = Setup::start_with(&[("MYMCP_BASH_HANDOFF_SEC", "1")]);

    // Handed off: the call's record names the job that goes on; its end is a job_finished.
    let m = s.mark();
    let v = s.call(
        "bash_execute",
        json!({"command": "echo a; sleep 2; echo b", "timeout": 30}),
    );
    let id = v["job_id"].as_str().expect("handed off").to_owned();
    let end = s.wait_for(m, |r| {
        r["tool"] == "job_finished" && r["params"]["job_id"] == id.as_str()
    });
    assert_eq!(
        shape(&s.since(m)),
        ["bash_execute start", "bash_execute ok", "job_finished ok"]
    );
    let call = &s.since(m)[1];
    assert_eq!(call["output"]["job_id"], id.as_str(), "{call}");
    assert_eq!(call["output"]["handed_off"], true);
    assert_eq!(end["output"]["stdout_bytes"], 4);
    assert_eq!(end["request_id"], call["request_id"]);

    // Ended in time: a foreground call's records (it ran as a job underneath, whose end is
    // recorded too).
    let m = s.mark();
    let v = s.call("bash_execute", json!({"command": "echo quick"}));
    assert_eq!(v["stdout"], "quick\n", "{v}");
    s.wait_for(m, |r| r["tool"] == "job_finished");
    let r = s.since(m);
    let mut kinds = shape(&r);
    kinds.sort();
    assert_eq!(
        kinds,
        ["bash_execute ok", "bash_execute start", "job_finished ok"],
        "{r:#?}"
    );
    let call = r
        .iter()
        .find(|r| r["result"] == "ok" && r["tool"] == "bash_execute");
    assert_eq!(call.unwrap()["output"]["stdout_head"], "quick\n");
    s.assert_chain_verifies();
}
