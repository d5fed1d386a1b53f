//! Injected faults: the executor or the frontend killed in the middle of work, an audit
//! directory that turns read-only, a token store that is broken or edited by hand, SIGTERM
//! with work in flight. The client gets a clear answer, nothing is left half-done, and the
//! server recovers by itself once the fault is gone.

use mymcp_tests::{
    bin, ctl, digest_hex, peer, pids_with_cmdline, post_mcp, proc_fd_count, proc_fd_targets,
    proc_status, send_signal, tools_call, user_ids, wait_until, ExecutorProcess, FrontendProcess,
    HttpResponse,
};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn in_background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(f)
}

/// A failed call as the client sees it: HTTP 503 or a JSON-RPC error, never a tool result.
fn assert_clear_error(r: &HttpResponse, what: &str) {
    if r.status == 503 {
        return;
    }
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let v = r.json();
    assert!(
        v.get("error").is_some()
            || v["result"]["isError"] == true
            || v["result"]["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("\"error\"")),
        "{what}: not an error: {v}"
    );
}

/// Executor descriptors that point into `dir` (files being read or written there,
/// including unnamed temporary files).
fn open_in(pid: u32, dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    proc_fd_targets(pid)
        .into_iter()
        .filter(|t| t.starts_with(dir))
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn write_random(path: &Path, len: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, data).unwrap();
}

/// A slow `curl` transfer in the background: `-T FILE` (upload) or `-o FILE` (download).
fn slow_curl(args: &[&str], url: &str) -> std::process::Child {
    Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--limit-rate",
            "2M",
        ])
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (at most 20 s: not a hang) for a background curl; returns its HTTP status.
fn curl_status(mut c: std::process::Child) -> u16 {
    let t = Instant::now();
    loop {
        if let Some(_st) = c.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut c.stdout.take().unwrap(), &mut out).unwrap();
            return out.trim().parse().unwrap_or(0);
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the client hung after the fault"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tool(addr: std::net::SocketAddr, token: &str, name: &str, args: Value) -> Value {
    post_mcp(addr, token, &tools_call(1, name, args)).tool_json()
}

#[test]
fn an_executor_killed_mid_command_mid_read_and_mid_upload_gives_clear_errors_and_is_recovered_from()
{
    mymcp_tests::needs_root!();
    let mut exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    let addr = front.addr;
    let work = tempfile::tempdir().unwrap();
    let echo = tools_call(1, "bash_execute", json!({"command": "echo up"}));
    let recovered = |exec: &ExecutorProcess| {
        assert!(
            wait_until(Duration::from_secs(10), || post_mcp(addr, &rw, &echo)
                .status
                == 200),
            "the frontend did not reconnect to the restarted executor"
        );
        assert_eq!(post_mcp(addr, &rw, &echo).tool_json()["stdout"], "up\n");
        let _ = exec;
    };

    // 1. A command.
    let needle = format!("sleep 71.{}", std::process::id());
    let call = {
        let (rw, needle) = (rw.clone(), needle.clone());
        in_background(move || {
            post_mcp(
                addr,
                &rw,
                &tools_call(
                    1,
                    "bash_execute",
                    json!({"command": needle, "timeout": 120}),
                ),
            )
        })
    };
    assert!(wait_until(Duration::from_secs(10), || !pids_with_cmdline(
        &needle
    )
    .is_empty()));
    let t = Instant::now();
    exec.kill();
    let r = call.join().unwrap();
    eprintln!(
        "command: answered {} ms after the kill: {} {}",
        t.elapsed().as_millis(),
        r.status,
        &r.body[..r.body.len().min(300)]
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_clear_error(&r, "a command whose executor died");
    // While it is down: 503, at once.
    let r = post_mcp(addr, &rw, &echo);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["detail"], "Executor unavailable");
    // The command lived in a session of its own; under systemd the unit's cgroup is killed
    // with it (KillMode=mixed), here the test cleans up.
    for p in pids_with_cmdline(&needle) {
        send_signal(p, libc::SIGKILL);
    }
    let mut exec = ExecutorProcess::restart_of(&mut exec, &[]);
    recovered(&exec);

    // 2. A read: the executor is stopped with the read_file in flight, then killed.
    let file = work.path().join("readable.txt");
    std::fs::write(&file, "line\n".repeat(1000)).unwrap();
    send_signal(exec.pid(), libc::SIGSTOP);
    assert!(wait_until(Duration::from_secs(5), || proc_status(
        exec.pid(),
        "State"
    )
    .starts_with('T')));
    let call = {
        let (rw, file) = (rw.clone(), file.clone());
        in_background(move || {
            post_mcp(
                addr,
                &rw,
                &tools_call(1, "read_file", json!({"file_path": file.to_str().unwrap()})),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    exec.kill();
    let r = call.join().unwrap();
    eprintln!(
        "read: answered {} ms after the kill: {} {}",
        t.elapsed().as_millis(),
        r.status,
        &r.body[..r.body.len().min(300)]
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_clear_error(&r, "a read whose executor died");
    assert_eq!(post_mcp(addr, &rw, &echo).status, 503);
    let mut exec = ExecutorProcess::restart_of(&mut exec, &[]);
    recovered(&exec);

    // 3. An upload over an existing file.
    let dest = work.path().join("dest.bin");
    std::fs::write(&dest, "original").unwrap();
    let src = work.path().join("src.bin");
    write_random(&src, 32 << 20);
    let v = tool(
        addr,
        &rw,
        "prepare_upload",
        json!({"dest_path": dest.to_str().unwrap()}),
    );
    let url = format!("http://{addr}{}", v["url"].as_str().unwrap());
    let curl = slow_curl(&["-T", src.to_str().unwrap()], &url);
    let pid = exec.pid();
    assert!(
        wait_until(Duration::from_secs(10), || !open_in(pid, work.path())
            .is_empty()),
        "the upload did not start"
    );
    std::thread::sleep(Duration::from_millis(500));
    exec.kill();
    let status = curl_status(curl);
    assert_ne!(status, 200, "an upload cut by a crash was reported as done");
    assert_eq!(
        names_in(work.path()),
        ["dest.bin", "readable.txt", "src.bin"],
        "a partial file was left beside the destination"
    );
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "original");
    assert_eq!(post_mcp(addr, &rw, &echo).status, 503);
    let exec = ExecutorProcess::restart_of(&mut exec, &[]);
    recovered(&exec);
    // After the restart the destination is still untouched and a new upload goes through.
    let v = tool(
        addr,
        &rw,
        "prepare_upload",
        json!({"dest_path": dest.to_str().unwrap()}),
    );
    let url = format!("http://{addr}{}", v["url"].as_str().unwrap());
    std::fs::write(&src, "replacement").unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(&src)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "replacement");
    drop(front);
    drop(exec);
}

/// The grant id inside a ticket URL (bytes 1..17 of its base64url payload).
fn grant_of(url: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = Vec::new();
    for c in url.rsplit('/').next().unwrap().bytes() {
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
fn a_frontend_killed_mid_download_and_mid_upload_releases_grant_temporary_file_and_pipe() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("mover", "rw");
    let (uid, gid) = user_ids("nobody");
    let sock = exec.executor_socket();
    let pid = exec.pid();
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big.bin");
    write_random(&big, 32 << 20);
    let dest = work.path().join("dest.bin");
    std::fs::write(&dest, "original").unwrap();

    for direction in ["download", "upload"] {
        let mut front = FrontendProcess::start(&sock);
        let addr = front.addr;
        assert_eq!(
            tool(addr, &rw, "bash_execute", json!({"command": "true"}))["exit_code"],
            0
        );
        let baseline = proc_fd_count(pid);
        let (tool_name, args) = if direction == "download" {
            (
                "prepare_download",
                json!({"src_path": big.to_str().unwrap()}),
            )
        } else {
            (
                "prepare_upload",
                json!({"dest_path": dest.to_str().unwrap()}),
            )
        };
        let v = tool(addr, &rw, tool_name, args);
        let url = format!("http://{addr}{}", v["url"].as_str().unwrap());
        let grant = grant_of(&url);
        let curl = if direction == "download" {
            slow_curl(&[], &url)
        } else {
            slow_curl(&["-T", big.to_str().unwrap()], &url)
        };
        // Moving: the executor holds the file (or the temporary file) and a pipe end.
        assert!(
            wait_until(Duration::from_secs(10), || proc_fd_count(pid) > baseline
                && !open_in(pid, work.path()).is_empty()),
            "{direction} did not start"
        );
        assert_eq!(
            peer(
                uid,
                gid,
                &sock,
                "grant",
                &format!("probe:{direction}:{grant}")
            ),
            ["Welcome", "Probe Err ticket_in_use id=1"]
        );
        std::thread::sleep(Duration::from_millis(300));
        front.kill();
        let _ = curl_status(curl);
        // The frontend's connection is gone too, so the count drops below the baseline.
        assert!(
            wait_until(Duration::from_secs(10), || proc_fd_count(pid) < baseline
                && open_in(pid, work.path()).is_empty()),
            "{direction}: the executor still holds {:?} ({} fds, {baseline} before)",
            open_in(pid, work.path()),
            proc_fd_count(pid)
        );
        assert_eq!(
            names_in(work.path()),
            ["big.bin", "dest.bin"],
            "{direction}"
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "original");
        // Released, not spent: ready again until it expires (the dead frontend's tickets
        // cannot be verified by a new one, whose key differs, so in practice it lapses).
        assert_eq!(
            peer(
                uid,
                gid,
                &sock,
                "grant",
                &format!("probe:{direction}:{grant}")
            ),
            ["Welcome", "Probe Ok id=1"],
            "{direction}: the grant was not released"
        );
    }
}

/// An ext4 image mounted with `errors=remount-ro` on `dir`: a filesystem error turns it
/// read-only under open files, as a failing disk does.
struct Ext4 {
    dir: tempfile::TempDir,
    image: tempfile::NamedTempFile,
}

impl Ext4 {
    /// `None` when this host cannot loop-mount an image (no loop devices in a container).
    fn mount() -> Option<Ext4> {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(8 << 20).unwrap();
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image.path())
            .status()
            .is_ok_and(|s| s.success());
        let dir = tempfile::tempdir().unwrap();
        let mounted = ok
            && Command::new("mount")
                .args(["-o", "loop,errors=remount-ro"])
                .arg(image.path())
                .arg(dir.path())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        mounted.then_some(Ext4 { dir, image })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Triggers a filesystem error: the kernel remounts it read-only at once.
    fn fail(&self) {
        let src = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(self.path())
            .output()
            .unwrap();
        let dev = String::from_utf8_lossy(&src.stdout).trim().to_owned();
        let dev = dev.rsplit('/').next().unwrap();
        std::fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "1").unwrap();
    }

    /// What an operator does: unmount, check, mount again (read-write). The check and the
    /// mount are on a copy of the image: a command started earlier (by a test running beside
    /// this one) keeps the failed filesystem alive in its own mount namespace after the
    /// unmount, and mounting the same image again would attach to that read-only superblock.
    fn repair(&mut self) {
        assert!(Command::new("umount")
            .arg(self.path())
            .status()
            .unwrap()
            .success());
        let copy = tempfile::NamedTempFile::new().unwrap();
        std::fs::copy(self.image.path(), copy.path()).unwrap();
        self.image = copy;
        let _ = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(self.image.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(self.image.path())
            .arg(self.path())
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

#[test]
fn a_read_only_audit_directory_refuses_calls_before_acting_and_recovers_after_repair() {
    mymcp_tests::needs_root!();
    let Some(mut disk) = Ext4::mount() else {
        eprintln!("SKIPPED: this host cannot loop-mount an ext4 image");
        return;
    };
    let audit = disk.path().join("audit");
    let env = [
        ("MYMCP_AUDIT_ENABLED", "true"),
        ("MYMCP_AUDIT_LOG_DIR", audit.to_str().unwrap()),
    ];
    let mut exec = ExecutorProcess::start_with_env("nobody", &env);
    let rw = exec.add_token("writer", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    let addr = front.addr;
    assert_eq!(
        tool(addr, &rw, "bash_execute", json!({"command": "true"}))["exit_code"],
        0
    );

    disk.fail();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("must-not-exist.txt");
    let marker = work.path().join("marker");
    let r = tool(
        addr,
        &rw,
        "write_file",
        json!({"file_path": target.to_str().unwrap(), "content": "data"}),
    );
    assert_eq!(r["error"], "InternalError", "{r}");
    assert!(r["message"].as_str().unwrap().contains("audit log"), "{r}");
    let r = tool(
        addr,
        &rw,
        "bash_execute",
        json!({"command": format!("touch {}", marker.display())}),
    );
    assert_eq!(r["error"], "InternalError", "{r}");
    assert!(
        !target.exists() && !marker.exists(),
        "a tool acted unaudited"
    );

    // The operator repairs the filesystem and restarts the executor (its log file was on
    // the old mount): calls run again.
    exec.terminate();
    disk.repair();
    let exec = ExecutorProcess::restart_of(&mut exec, &env);
    assert!(
        wait_until(Duration::from_secs(10), || {
            post_mcp(
                addr,
                &rw,
                &tools_call(1, "bash_execute", json!({"command": "true"})),
            )
            .status
                == 200
        }),
        "not served after the repair"
    );
    let r = tool(
        addr,
        &rw,
        "write_file",
        json!({"file_path": target.to_str().unwrap(), "content": "data"}),
    );
    assert_eq!(r["success"], true, "{r}");
    drop(front);
    drop(exec);
}

/// Starts the executor on `token_file`; returns its exit code and stderr if it exits within
/// 10 s (`None` if it came up).
fn start_on_store(token_file: &Path) -> Option<(Option<i32>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("mymcp-executor"))
        .env_clear()
        .env("MYMCP_RUNTIME_DIR", dir.path().join("run"))
        .env("MYMCP_TOKEN_FILE", token_file)
        .env("MYMCP_STATE_DIR", dir.path().join("state"))
        .env("MYMCP_FRONTEND_USER", "nobody")
        .env("MYMCP_ENV_FILE", "none")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return Some((st.code(), err));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn store_entry(token: &str, name: &str) -> Value {
    json!({
        "sha256": digest_hex(token),
        "name": name,
        "role": "rw",
        "created_at": "2026-01-01T00:00:00Z",
    })
}

#[test]
fn a_broken_token_store_refuses_start_with_one_line_and_is_never_overwritten() {
    mymcp_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let valid =
        json!({"format": "mymcp-tokens-v1", "tokens": [store_entry("tok_a", "a")]}).to_string();
    let cases: [(&str, &[u8]); 5] = [
        ("invalid JSON", b"{not json at all"),
        ("truncated", &valid.as_bytes()[..valid.len() / 2]),
        ("empty", b""),
        ("unknown format", br#"{"format":"other-v9","tokens":[]}"#),
        (
            "bad digest",
            br#"{"format":"mymcp-tokens-v1","tokens":[{"sha256":"xyz","name":"a","role":"rw","created_at":"x"}]}"#,
        ),
    ];
    for (what, bytes) in cases {
        let file = dir.path().join("tokens.json");
        std::fs::write(&file, bytes).unwrap();
        let (code, err) = start_on_store(&file).unwrap_or_else(|| panic!("{what}: it started"));
        assert_eq!(code, Some(2), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(
            err.starts_with("mymcp-executor: ") && err.contains(file.to_str().unwrap()),
            "{what}: {err}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), bytes, "{what}: overwritten");
    }
    // A directory where the file should be (root reads any file, whatever its mode).
    let file = dir.path().join("tokens-dir");
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("keep"), "x").unwrap();
    let (code, err) = start_on_store(&file).expect("it started on a directory");
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("tokens-dir"), "{err}");
    assert!(file.is_dir() && file.join("keep").exists());
}

#[test]
fn a_token_store_edited_by_hand_while_running_is_picked_up() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let keeper = exec.add_token("keeper", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    let addr = front.addr;
    let echo = tools_call(1, "bash_execute", json!({"command": "echo hi"}));
    let hand = "tok_added_by_hand_0123456789abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(post_mcp(addr, hand, &echo).status, 401);

    let edit = |f: &dyn Fn(&mut Vec<Value>)| {
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(&exec.token_file).unwrap()).unwrap();
        f(v["tokens"].as_array_mut().unwrap());
        std::fs::write(&exec.token_file, v.to_string()).unwrap();
    };
    // Added with an editor: works on the next request.
    edit(&|t| t.push(store_entry(hand, "by-hand")));
    assert_eq!(
        post_mcp(addr, hand, &echo).tool_json()["stdout"],
        "hi\n",
        "a token added by hand is not accepted"
    );
    // Removed with an editor: refused on the next request; the other token still works.
    edit(&|t| t.retain(|e| e["name"] != "by-hand"));
    assert_eq!(post_mcp(addr, hand, &echo).status, 401);
    assert_eq!(post_mcp(addr, &keeper, &echo).tool_json()["stdout"], "hi\n");

    // A botched edit: the last good set stays in force, changes are refused, and the file
    // is left as the operator wrote it until it is fixed.
    std::fs::write(&exec.token_file, "{\"format\": \"mymcp-tokens-v1\", \"tok").unwrap();
    assert_eq!(post_mcp(addr, &keeper, &echo).tool_json()["stdout"], "hi\n");
    let out = ctl(
        &exec.runtime_dir,
        &["token", "add", "--name", "more", "--role", "ro"],
    );
    assert!(!out.status.success(), "a change was made on a broken store");
    assert_eq!(
        std::fs::read_to_string(&exec.token_file).unwrap(),
        "{\"format\": \"mymcp-tokens-v1\", \"tok"
    );
    std::fs::write(
        &exec.token_file,
        json!({"format": "mymcp-tokens-v1", "tokens": [store_entry(hand, "fixed")]}).to_string(),
    )
    .unwrap();
    assert_eq!(post_mcp(addr, hand, &echo).tool_json()["stdout"], "hi\n");
    assert_eq!(post_mcp(addr, &keeper, &echo).status, 401);
}

#[test]
fn sigterm_with_work_in_flight_finishes_it_within_the_grace_and_leaves_nothing_half_done() {
    mymcp_tests::needs_root!();
    let tag = format!("mymcp-sigterm-{}", std::process::id());
    let mut exec = ExecutorProcess::start_with_env("nobody", &[("MYMCP_SHUTDOWN_GRACE_SEC", "4")]);
    let rw = exec.add_token("writer", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    let addr = front.addr;
    let work = tempfile::tempdir().unwrap();

    // Commands that take a second to wind down when asked to stop; large writes; reads.
    let mut calls = Vec::new();
    for i in 0..6 {
        let done = work.path().join(format!("cleaned-up-{i}"));
        let cmd = format!(
            "trap 'sleep 1; echo bye > {}; exit 0' TERM; sleep 30 & wait # {tag}",
            done.display()
        );
        let rw = rw.clone();
        calls.push((
            Some(done),
            in_background(move || {
                post_mcp(
                    addr,
                    &rw,
                    &tools_call(1, "bash_execute", json!({"command": cmd, "timeout": 60})),
                )
            }),
        ));
    }
    let content = "0123456789abcdef".repeat(4 << 16); // 4 MiB
    for i in 0..4 {
        let (rw, content) = (rw.clone(), content.clone());
        let path = work.path().join(format!("big-{i}.txt"));
        calls.push((
            None,
            in_background(move || {
                post_mcp(
                    addr,
                    &rw,
                    &tools_call(
                        1,
                        "write_file",
                        json!({"file_path": path.to_str().unwrap(), "content": content}),
                    ),
                )
            }),
        ));
    }
    assert!(
        wait_until(Duration::from_secs(10), || pids_with_cmdline(&tag).len()
            >= 6),
        "commands did not start"
    );
    let t = Instant::now();
    exec.signal_term();
    let status = exec.wait();
    let took = t.elapsed();
    eprintln!("executor stopped {} ms after SIGTERM", took.as_millis());
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(8), "{took:?}");

    for (done, h) in calls {
        let r = h.join().unwrap();
        match done {
            // The commands were asked to stop, ran their handler and were answered.
            Some(done) => {
                let v = r.tool_json();
                assert_eq!(v["exit_code"], 0, "{v}");
                assert_eq!(std::fs::read_to_string(&done).unwrap(), "bye\n");
            }
            // A write either completed or was refused; never half-written.
            None => assert!(r.status == 200 || r.status == 503, "{}", r.body),
        }
    }
    for i in 0..4 {
        let path = work.path().join(format!("big-{i}.txt"));
        if let Ok(data) = std::fs::read_to_string(&path) {
            assert_eq!(
                data.len(),
                content.len(),
                "{} is half-written",
                path.display()
            );
        }
    }
    let names = names_in(work.path());
    assert!(
        names.iter().all(|n| !n.contains(".mymcp-")),
        "temporary files left: {names:?}"
    );
    assert!(
        pids_with_cmdline(&tag).is_empty(),
        "processes outlived the executor"
    );
    drop(front);
}
