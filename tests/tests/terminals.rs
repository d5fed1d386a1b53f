//! Terminals end to end (issue 24): the real executor as root, the real frontend as nobody,
//! raw HTTP. REPLs, pagers, Ctrl-C, resizes, the idle timeout, ownership, the recording, and
//! the size of what the model reads.

use mymcp_tests::{
    bin, call_tool as tool, pids_with_cmdline, post_mcp, rw_server as server, wait_until,
    ExecutorProcess, FrontendProcess,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn open(addr: SocketAddr, token: &str, args: Value) -> String {
    let t = tool(addr, token, "terminal_open", args);
    assert_eq!(t["running"], true, "{t}");
    t["terminal_id"].as_str().expect("terminal_id").to_owned()
}

fn send(addr: SocketAddr, token: &str, id: &str, text: &str, keys: &[&str]) {
    let r = tool(
        addr,
        token,
        "terminal_send",
        json!({"terminal_id": id, "text": text, "keys": keys}),
    );
    assert_eq!(r["success"], true, "{r}");
}

/// `terminal_read` waiting for `pattern`; asserts that it matched.
fn wait_for(addr: SocketAddr, token: &str, id: &str, pattern: &str) -> Value {
    let r = tool(
        addr,
        token,
        "terminal_read",
        json!({"terminal_id": id, "wait_for": pattern, "timeout": 20}),
    );
    assert_eq!(r["matched"], true, "waiting for {pattern:?}: {r}");
    r
}

fn screen(r: &Value) -> &str {
    r["screen"].as_str().expect("screen")
}

#[test]
fn a_python_repl_answers_and_its_recording_replays_the_same_screen() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[]);
    let id = open(front.addr, &rw, json!({"command": "python3 -q"}));
    wait_for(front.addr, &rw, &id, ">>> $");
    send(front.addr, &rw, &id, "print(6*7)", &["Enter"]);
    let r = wait_for(front.addr, &rw, &id, r"(?m)^42\s*$");
    assert!(r["output"].as_str().unwrap().contains("42"), "{r}");
    // Wait for the next prompt, so that the screen is settled.
    let last = wait_for(front.addr, &rw, &id, r"(?m)^42\n>>> \z");
    assert!(screen(&last).ends_with("42\n>>>"), "{last}");
    // Nothing new since the last read.
    let again = tool(front.addr, &rw, "terminal_read", json!({"terminal_id": id}));
    assert_eq!(again["output"], "", "{again}");
    assert_eq!(again["screen"], last["screen"]);

    let closed = tool(
        front.addr,
        &rw,
        "terminal_close",
        json!({"terminal_id": id}),
    );
    assert_eq!(closed["running"], false, "{closed}");
    // Gone for good after a close.
    let gone = tool(front.addr, &rw, "terminal_read", json!({"terminal_id": id}));
    assert_eq!(gone["error"], "NotFound", "{gone}");

    // The recording: 0600 in a 0700 directory, valid for asciinema, and replaying it through
    // mymcpctl shows the same screen.
    let dir = exec.state_dir().join("terminals");
    let cast = dir.join(format!("{id}.cast"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&cast), 0o600);
    let text = std::fs::read_to_string(&cast).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    let replay = std::process::Command::new(bin("mymcpctl"))
        .args(["terminal", "replay", &id])
        .env("MYMCP_STATE_DIR", exec.state_dir())
        .output()
        .unwrap();
    assert!(replay.status.success(), "{replay:?}");
    let replayed = String::from_utf8(replay.stdout).unwrap();
    assert_eq!(replayed.trim_end_matches('\n'), screen(&last));
    let listed = std::process::Command::new(bin("mymcpctl"))
        .args(["terminal", "list"])
        .env("MYMCP_STATE_DIR", exec.state_dir())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&id),
        "{listed:?}"
    );
    // Debian's asciinema player (tests/run installs it) reads it; `cat` wants a terminal of
    // its own, which script(1) gives it.
    let player = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("asciinema cat {}", cast.display()),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    if std::path::Path::new("/usr/bin/asciinema").exists() {
        let out = player.expect("script(1)");
        assert!(out.status.success(), "asciinema cat: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("42"));
    } else {
        eprintln!("asciinema is not installed: the player check is skipped");
    }
}

#[test]
fn less_shows_its_first_screen_with_the_prompt_on_the_bottom_line() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[]);
    let file = exec.scratch().join("numbers.txt");
    let body: String = (1..=100).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&file, body).unwrap();
    let id = open(
        front.addr,
        &rw,
        json!({"command": format!("less {}", file.display()), "rows": 10, "cols": 60}),
    );
    let r = wait_for(front.addr, &rw, &id, r"(?m)^line 9\n");
    let r = if screen(&r).lines().count() == 10 {
        r
    } else {
        wait_for(front.addr, &rw, &id, r"numbers\.txt")
    };
    let lines: Vec<&str> = screen(&r).lines().collect();
    assert_eq!(lines.len(), 10, "{r}");
    assert_eq!(lines[0], "line 1");
    assert_eq!(lines[8], "line 9");
    assert!(
        lines[9].contains("numbers.txt"),
        "the prompt: {:?}",
        lines[9]
    );
    assert_eq!(r["cursor"][0], 9, "the cursor is on the prompt line: {r}");
    // A key reaches it: the next page.
    send(front.addr, &rw, &id, " ", &[]);
    let r = wait_for(front.addr, &rw, &id, r"(?m)^line 18$");
    assert!(!screen(&r).contains("line 1\n"), "{r}");
    send(front.addr, &rw, &id, "q", &[]);
    let r = tool(
        front.addr,
        &rw,
        "terminal_read",
        json!({"terminal_id": id, "wait_for": "never-shown", "timeout": 10}),
    );
    assert_eq!(r["running"], false, "q ends less: {r}");
    assert_eq!(r["exit_code"], 0, "{r}");
}

#[test]
fn ctrl_c_interrupts_a_sleep_and_the_shell_goes_on() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[]);
    let id = open(front.addr, &rw, json!({}));
    send(front.addr, &rw, &id, "sleep 100.4712", &["Enter"]);
    assert!(
        wait_until(Duration::from_secs(5), || !pids_with_cmdline(
            "sleep 100.4712"
        )
        .is_empty()),
        "the sleep did not start"
    );
    let t = Instant::now();
    send(front.addr, &rw, &id, "", &["Ctrl-C"]);
    assert!(
        wait_until(Duration::from_secs(5), || pids_with_cmdline(
            "sleep 100.4712"
        )
        .is_empty()),
        "Ctrl-C did not end the sleep"
    );
    send(front.addr, &rw, &id, "echo alive-$((40+2))", &["Enter"]);
    wait_for(front.addr, &rw, &id, "alive-42");
    assert!(t.elapsed() < Duration::from_secs(20));
    let closed = tool(
        front.addr,
        &rw,
        "terminal_close",
        json!({"terminal_id": id}),
    );
    assert_eq!(closed["running"], false, "{closed}");
}

#[test]
fn a_resize_reaches_the_program() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[]);
    let id = open(front.addr, &rw, json!({"rows": 24, "cols": 80}));
    send(front.addr, &rw, &id, "stty size", &["Enter"]);
    wait_for(front.addr, &rw, &id, r"(?m)^24 80$");
    let t = tool(
        front.addr,
        &rw,
        "terminal_resize",
        json!({"terminal_id": id, "rows": 30, "cols": 100}),
    );
    assert_eq!(
        (t["rows"].as_u64(), t["cols"].as_u64()),
        (Some(30), Some(100)),
        "{t}"
    );
    send(front.addr, &rw, &id, "stty size", &["Enter"]);
    wait_for(front.addr, &rw, &id, r"(?m)^30 100$");
    let listed = tool(front.addr, &rw, "terminal_list", json!({}));
    assert_eq!(
        listed["terminals"][0]["terminal_id"],
        id.as_str(),
        "{listed}"
    );
    assert_eq!(listed["terminals"][0]["rows"], 30);
}

#[test]
fn an_idle_terminal_is_closed_and_its_processes_killed() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[("MYMCP_TERMINAL_IDLE_SEC", "2")]);
    let opened = Instant::now();
    let id = open(front.addr, &rw, json!({"command": "sleep 1000.4713"}));
    // Followed by pid: while the shell execs the program, its command line
    // reads empty for an instant, which a search by command line would take
    // for an end.
    let mut pids = Vec::new();
    assert!(wait_until(Duration::from_secs(5), || {
        pids = pids_with_cmdline("sleep 1000.4713");
        !pids.is_empty()
    }));
    assert!(
        wait_until(Duration::from_secs(10), || pids
            .iter()
            .all(|&p| !mymcp_tests::alive(p))),
        "the idle terminal's program still runs"
    );
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_millis(1900),
        "ended after {lived:?}, before its idle timeout"
    );
    // The end is recorded once the last output is read.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let listed = tool(front.addr, &rw, "terminal_list", json!({}));
            listed["terminals"][0]["running"] == false
        }),
        "the idle terminal is still listed as running"
    );
    let r = tool(front.addr, &rw, "terminal_read", json!({"terminal_id": id}));
    assert_eq!(r["running"], false, "{r}");
}

#[test]
fn another_token_cannot_see_read_write_or_close_a_terminal() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[]);
    let other = exec.add_token("other", "rw");
    let id = open(front.addr, &rw, json!({"command": "cat"}));
    for (name, args) in [
        ("terminal_read", json!({"terminal_id": id})),
        ("terminal_send", json!({"terminal_id": id, "text": "x"})),
        (
            "terminal_resize",
            json!({"terminal_id": id, "rows": 5, "cols": 20}),
        ),
        ("terminal_close", json!({"terminal_id": id})),
    ] {
        let r = tool(front.addr, &other, name, args);
        assert_eq!(r["error"], "NotFound", "{name}: {r}");
    }
    let listed = tool(front.addr, &other, "terminal_list", json!({}));
    assert_eq!(listed["terminals"], json!([]), "{listed}");
    // A read-only token does not even get the tools.
    let ro = exec.add_token("reader", "ro");
    let r = tool(front.addr, &ro, "terminal_read", json!({"terminal_id": id}));
    assert_eq!(r["success"], false, "{r}");
    // The owner still has it, untouched.
    send(front.addr, &rw, &id, "still mine", &["Enter"]);
    wait_for(front.addr, &rw, &id, "still mine");
}

#[test]
fn limits_say_busy_and_a_wait_ends_at_its_timeout() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[
        ("MYMCP_TERMINAL_MAX_PER_TOKEN", "1"),
        ("MYMCP_TERMINAL_MAX", "2"),
    ]);
    let id = open(front.addr, &rw, json!({"command": "cat"}));
    let r = tool(front.addr, &rw, "terminal_open", json!({"command": "cat"}));
    assert_eq!(r["error"], "Busy", "per token: {r}");
    assert!(
        r["message"].as_str().unwrap().contains("for this token"),
        "{r}"
    );
    // The server's limit: a second token gets one, a third none until one is closed.
    let (second, third) = (
        exec.add_token("second", "rw"),
        exec.add_token("third", "rw"),
    );
    let other = open(front.addr, &second, json!({"command": "cat"}));
    let r = tool(
        front.addr,
        &third,
        "terminal_open",
        json!({"command": "cat"}),
    );
    assert_eq!(r["error"], "Busy", "in all: {r}");
    assert!(
        r["message"].as_str().unwrap().contains("on this server"),
        "{r}"
    );
    tool(
        front.addr,
        &second,
        "terminal_close",
        json!({"terminal_id": other}),
    );
    let third_id = open(front.addr, &third, json!({"command": "cat"}));
    tool(
        front.addr,
        &third,
        "terminal_close",
        json!({"terminal_id": third_id}),
    );
    // A wait that times out answers with matched false.
    let t = Instant::now();
    let r = tool(
        front.addr,
        &rw,
        "terminal_read",
        json!({"terminal_id": id, "wait_for": "never", "timeout": 1}),
    );
    assert_eq!(r["matched"], false, "{r}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let r = tool(
        front.addr,
        &rw,
        "terminal_send",
        json!({"terminal_id": id, "keys": ["Hyper-Q"]}),
    );
    assert_eq!(r["error"], "InvalidArguments", "{r}");
}

/// Everything the model reads — the instructions, and every tool's name, title,
/// description and input schema in `tools/list` — fits in 16 KiB (issue 24).
#[test]
fn what_the_model_reads_fits_in_16_kib() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[]);
    let init = post_mcp(
        front.addr,
        &rw,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "budget", "version": "1"}}}),
    );
    assert_eq!(init.status, 200, "{}", init.body);
    let instructions = init.json()["result"]["instructions"]
        .as_str()
        .expect("instructions")
        .len();
    let list = post_mcp(
        front.addr,
        &rw,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    let tools = list.json()["result"]["tools"].as_array().unwrap().clone();
    assert!(tools.iter().any(|t| t["name"] == "terminal_read"));
    let tools_bytes: usize = tools
        .iter()
        .map(|t| {
            t["name"].as_str().unwrap().len()
                + t["title"].as_str().unwrap_or("").len()
                + t["description"].as_str().unwrap().len()
                + serde_json::to_string(&t["inputSchema"]).unwrap().len()
        })
        .sum();
    let total = instructions + tools_bytes;
    eprintln!("what the model reads: {total} bytes ({instructions} instructions)");
    assert!(total <= 16_384, "{total} bytes");
}

/// The audit trail of a terminal: `terminal_open` and `terminal_close` name the recording, the
/// close and `terminal_finished` carry its size and SHA-256, and what was typed is not logged.
#[test]
fn the_audit_records_name_the_recording_and_never_what_was_typed() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[("MYMCP_AUDIT_ENABLED", "true")]);
    let id = open(front.addr, &rw, json!({"command": "cat"}));
    send(front.addr, &rw, &id, "hunter2", &["Enter"]);
    // The echo, then cat's copy (the pattern itself is logged: it must not spell the text).
    wait_for(front.addr, &rw, &id, "hunt.r2\nhunt.r2");
    let closed = tool(
        front.addr,
        &rw,
        "terminal_close",
        json!({"terminal_id": id}),
    );
    assert_eq!(closed["running"], false);
    let cast = exec
        .state_dir()
        .join("terminals")
        .join(format!("{id}.cast"));
    let bytes = std::fs::read(&cast).unwrap();
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let log = std::fs::read_to_string(exec.audit_dir().join("audit.log")).unwrap();
    assert!(!log.contains("hunter2"), "typed text reached the audit log");
    let records: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let outcome = |tool: &str| {
        records
            .iter()
            .find(|r| r["tool"] == tool && r["result"] == "ok")
            .unwrap_or_else(|| panic!("no {tool} outcome in {log}"))
            .clone()
    };
    let opened = outcome("terminal_open");
    assert_eq!(opened["output"]["terminal_id"], id.as_str());
    assert_eq!(opened["output"]["recording"], cast.to_str().unwrap());
    let sent = outcome("terminal_send");
    assert_eq!(sent["params"]["text"], "<7 chars>", "{sent}");
    assert_eq!(sent["params"]["keys"], json!(["Enter"]));
    for tool in ["terminal_close", "terminal_finished"] {
        let r = outcome(tool);
        assert_eq!(r["output"]["recording"], cast.to_str().unwrap(), "{r}");
        assert_eq!(r["output"]["recording_sha256"], sha.as_str(), "{r}");
        assert_eq!(r["output"]["recording_bytes"], bytes.len(), "{r}");
    }
    assert_eq!(
        outcome("terminal_finished")["output"]["ended_by"],
        "terminal_close"
    );
}

/// Terminals live in the executor: a new frontend finds them as they were; the executor's
/// shutdown ends them.
#[test]
fn a_terminal_survives_a_frontend_restart_and_dies_with_the_executor() {
    mymcp_tests::needs_root!();
    let (mut exec, front, rw) = server(&[]);
    let id = open(front.addr, &rw, json!({"command": "sleep 1000.4715"}));
    drop(front);
    let front = FrontendProcess::start(&exec.executor_socket());
    let listed = tool(front.addr, &rw, "terminal_list", json!({}));
    assert_eq!(
        listed["terminals"][0]["terminal_id"],
        id.as_str(),
        "{listed}"
    );
    assert_eq!(listed["terminals"][0]["running"], true, "{listed}");
    assert!(!pids_with_cmdline("sleep 1000.4715").is_empty());
    let took = exec.terminate();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        wait_until(Duration::from_secs(2), || pids_with_cmdline(
            "sleep 1000.4715"
        )
        .is_empty()),
        "the terminal's program outlived the executor"
    );
}

/// A terminal of a token that acts as an account is that account's: its shell, ids, home and
/// terminal (the pty slave is given to it).
#[test]
fn a_terminal_runs_as_the_tokens_account_with_its_shell_and_its_tty() {
    mymcp_tests::needs_root!();
    let a = mymcp_tests::TestAccount::create("term");
    let exec = ExecutorProcess::start("nobody");
    let front = FrontendProcess::start(&exec.executor_socket());
    let rw = exec.add_token_as("acct", "rw", &a.name);
    let id = open(front.addr, &rw, json!({}));
    let t = tool(front.addr, &rw, "terminal_list", json!({}));
    assert_eq!(t["terminals"][0]["command"], "/bin/bash", "{t}");
    send(
        front.addr,
        &rw,
        &id,
        "echo \"who=$(id -un):$(id -u):$HOME:$(pwd):$(stat -c %U $(tty)):$TERM\" | tr a-z A-Z",
        &["Enter"],
    );
    let expected = format!(
        "WHO={}:{}:{}:{}:{}:XTERM-256COLOR",
        a.name.to_uppercase(),
        a.uid,
        a.home.display().to_string().to_uppercase(),
        a.home.display().to_string().to_uppercase(),
        a.name.to_uppercase()
    );
    wait_for(front.addr, &rw, &id, &regex_escape(&expected));
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':' || c == '=' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// A program that prints without end neither blocks the terminal's tools nor keeps more than
/// the bounded text between reads.
#[test]
fn a_flood_of_output_stays_bounded_and_closes() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[]);
    let id = open(front.addr, &rw, json!({"command": "yes flood-line"}));
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let r = wait_for(front.addr, &rw, &id, "flood-line");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        r["output"].as_str().unwrap().len() <= 64 * 1024,
        "unbounded text"
    );
    assert!(
        r["output_dropped"].as_u64().unwrap_or(0) > 0,
        "nothing dropped? {}",
        r["output_dropped"]
    );
    let t = Instant::now();
    let closed = tool(
        front.addr,
        &rw,
        "terminal_close",
        json!({"terminal_id": id}),
    );
    assert_eq!(closed["running"], false, "{closed}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
