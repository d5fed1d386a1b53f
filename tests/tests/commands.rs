//! `bash_execute` and background jobs end to end: the real executor as root, the real frontend
//! as nobody, raw HTTP. Each test proves one promise of the tool.

use mymcp_tests::{
    call_tool as tool, pids_with_cmdline, pids_with_environ, post_mcp, post_mcp_with, proc_status,
    rw_server as server, sse_messages, tools_call, wait_until, ExecutorProcess, FrontendProcess,
    HttpResponse,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn bash(addr: SocketAddr, token: &str, args: Value) -> Value {
    let r = post_mcp(addr, token, &tools_call(1, "bash_execute", args));
    assert_eq!(r.status, 200, "{}", r.body);
    r.tool_json()
}

/// Runs `f` on another thread; the handle yields its result.
fn in_background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(f)
}

fn kib(value: &str) -> u64 {
    value
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a kB value: {value:?}"))
}

#[test]
fn a_background_grandchild_cannot_hold_a_call_past_its_timeout() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[]);
    let marker = "sleep 1000.4711";
    let t = Instant::now();
    let out = bash(
        front.addr,
        &rw,
        json!({"command": format!("{marker} & echo started"), "timeout": 1}),
    );
    let took = t.elapsed();
    // timeout 1 s + 2 s grace + 1 s for the pipes, at most.
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(out["timed_out"], true);
    assert_eq!(out["stdout"], "started\n");
    assert!(out["stderr"]
        .as_str()
        .unwrap()
        .contains("Command timed out after 1s"));
    assert!(
        wait_until(Duration::from_secs(1), || pids_with_cmdline(marker)
            .is_empty()),
        "the background sleep survived the call"
    );
}

#[test]
fn printing_200_mb_keeps_the_executor_memory_flat_and_returns_the_head() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[]);
    let pid = exec.pid();
    let rss_before = kib(&proc_status(pid, "VmRSS"));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = done.clone();
    let sampler = in_background(move || {
        let mut peak = 0;
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                break;
            };
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(kib)
                .unwrap_or(0);
            peak = peak.max(rss);
            if sampling.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    let t = Instant::now();
    let out = bash(
        front.addr,
        &rw,
        json!({"command": "yes | head -c 200000000", "timeout": 120}),
    );
    let took = t.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let rss_after = kib(&proc_status(pid, "VmRSS"));
    let hwm = kib(&proc_status(pid, "VmHWM"));
    eprintln!(
        "200 MB in {took:?}; executor VmRSS before {rss_before} kB, peak seen {peak} kB, after {rss_after} kB, VmHWM {hwm} kB"
    );
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("y\ny\ny\n"));
    assert_eq!(
        stdout.len(),
        102_400 + "\n[TRUNCATED: total 200000000 bytes, showing first 102400 bytes]".len()
    );
    assert!(stdout.ends_with("\n[TRUNCATED: total 200000000 bytes, showing first 102400 bytes]"));
    assert_eq!(out["exit_code"], 0);
    // Flat: a few pipe buffers and one capped head, whatever the command prints.
    assert!(
        hwm < rss_before + 32 * 1024,
        "executor peak RSS {hwm} kB vs {rss_before} kB before"
    );
}

#[test]
fn sigterm_to_the_executor_stops_every_command_and_leaves_no_process_behind() {
    mymcp_tests::needs_root!();
    let marker = format!("MYMCP_E2E_MARKER={}", std::process::id());
    let (name, value) = marker.split_once('=').unwrap();
    let mut exec = ExecutorProcess::start_with_env(
        "nobody",
        &[
            (name, value),
            ("MYMCP_BASH_ENV_PASSTHROUGH", name),
            ("MYMCP_SHUTDOWN_GRACE_SEC", "2"),
        ],
    );
    let rw = exec.add_token("writer", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    let addr = front.addr;

    // Three foreground commands (one ignores SIGTERM, one has children of its own) and a job.
    let commands = [
        "echo polite; sleep 300",
        "trap '' TERM; echo stubborn; sleep 300",
        "sleep 300 & sleep 300 & echo parent; wait",
    ];
    let calls: Vec<_> = commands
        .iter()
        .map(|c| {
            let (rw, c) = (rw.clone(), c.to_string());
            in_background(move || {
                post_mcp(
                    addr,
                    &rw,
                    &tools_call(1, "bash_execute", json!({"command": c, "timeout": 600})),
                )
            })
        })
        .collect();
    let job = bash(
        addr,
        &rw,
        json!({"command": "trap '' TERM; sleep 300", "background": true}),
    );
    assert_eq!(job["running"], true, "{job}");
    // Every line has reached its sleeps (five: one per line, two for the parent, one for the
    // job), so what each printed before them is in its pipe. (Counting any marked process
    // is not enough: a shell is marked before it has run its first command.)
    let sleeps = || {
        pids_with_environ(&marker)
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || sleeps() >= 5),
        "commands did not start: {:?}",
        pids_with_environ(&marker)
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
            .collect::<Vec<_>>()
    );

    let t = Instant::now();
    exec.signal_term();
    // While the grace runs, the executor answers but starts nothing new.
    std::thread::sleep(Duration::from_millis(300));
    let refused = bash(addr, &rw, json!({"command": "echo too late"}));
    assert_eq!(refused["error"], "ShuttingDown", "{refused}");
    let status = exec.wait();
    let took = t.elapsed();
    assert!(status.success(), "{status}");
    // 2 s of grace, then SIGKILL and a clean exit.
    assert!(took < Duration::from_secs(6), "{took:?}");

    let left = pids_with_environ(&marker);
    assert!(left.is_empty(), "processes survived the executor: {left:?}");

    let answers: Vec<HttpResponse> = calls.into_iter().map(|h| h.join().unwrap()).collect();
    let polite = answers[0].tool_json();
    assert_eq!(polite["exit_code"], -15, "{polite}");
    assert_eq!(polite["stdout"], "polite\n");
    let stubborn = answers[1].tool_json();
    assert_eq!(stubborn["error"], "ShuttingDown", "{stubborn}");
    let parent = answers[2].tool_json();
    assert_eq!(parent["exit_code"], -15, "{parent}");
    // The job's spools went with it.
    let jobs = exec.state_dir().join("jobs");
    assert_eq!(std::fs::read_dir(&jobs).unwrap().count(), 0);
}

#[test]
fn the_executors_secrets_do_not_reach_commands() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[
        ("MYMCP_ADMIN_TOKEN", "tok_admin_secret_e2e"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-e2e"),
        ("MYMCP_BASH_ENV_PASSTHROUGH", "E2E_ALLOWED"),
        ("E2E_ALLOWED", "visible"),
    ]);
    let out = bash(front.addr, &rw, json!({"command": "env"}));
    let env = out["stdout"].as_str().unwrap();
    assert!(!env.contains("secret-e2e"), "{env}");
    assert!(!env.contains("tok_admin_secret_e2e"), "{env}");
    assert!(!env.contains("MYMCP_"), "{env}");
    assert!(env.lines().any(|l| l == "E2E_ALLOWED=visible"), "{env}");
    assert!(env.lines().any(|l| l == "TERM=dumb"), "{env}");
    assert!(env.lines().any(|l| l == "HOME=/root"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}

#[test]
fn a_background_job_is_followed_to_its_end_and_belongs_to_its_token() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let other = exec.add_token("other", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());

    // Lines with 2-, 3- and 4-byte characters, in bursts: 50-byte chunks cut through them.
    let command = "for i in $(seq 1 40); do echo \"line $i: ünï€🦀\"; echo \"err $i\" >&2; [ $((i % 10)) = 0 ] && sleep 0.1; done; exit 7";
    let started = bash(
        front.addr,
        &rw,
        json!({"command": command, "background": true}),
    );
    let id = started["job_id"].as_str().unwrap().to_owned();
    assert_eq!(started["running"], true);
    assert_eq!(started["timeout"], 3600);

    // Another token sees nothing, and cannot stop it.
    for name in ["job_status", "job_output", "job_kill"] {
        let r = tool(front.addr, &other, name, json!({"job_id": id}));
        assert_eq!(r["error"], "NotFound", "{name}: {r}");
    }

    // The frontend restarts; the job does not notice.
    drop(front);
    let front = FrontendProcess::start(&exec.executor_socket());

    let (mut out, mut err) = (String::new(), String::new());
    let (mut so, mut eo) = (0u64, 0u64);
    let mut polls = 0;
    let last = loop {
        let chunk = tool(
            front.addr,
            &rw,
            "job_output",
            json!({"job_id": id, "stdout_offset": so, "stderr_offset": eo,
                   "max_bytes": 50, "wait_seconds": 5}),
        );
        out.push_str(chunk["stdout"].as_str().unwrap());
        err.push_str(chunk["stderr"].as_str().unwrap());
        so = chunk["stdout_offset"].as_u64().unwrap();
        eo = chunk["stderr_offset"].as_u64().unwrap();
        polls += 1;
        assert!(polls < 500, "job never completed");
        if chunk["complete"] == true {
            break chunk;
        }
    };
    let expected: String = (1..=40).map(|i| format!("line {i}: ünï€🦀\n")).collect();
    let expected_err: String = (1..=40).map(|i| format!("err {i}\n")).collect();
    assert_eq!(out, expected);
    assert_eq!(err, expected_err);
    assert_eq!(so, expected.len() as u64);
    assert_eq!(last["running"], false);
    assert_eq!(last["exit_code"], 7);

    let status = tool(front.addr, &rw, "job_status", json!({"job_id": id}));
    assert_eq!(status["running"], false);
    assert_eq!(status["exit_code"], 7);
    assert_eq!(status["stdout_bytes"], expected.len());
    assert_eq!(status["killed"], false);
}

#[test]
fn job_kill_stops_a_job_and_ended_jobs_are_deleted_after_the_retention() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[("MYMCP_JOB_RETENTION_SEC", "1")]);
    let marker = "sleep 300.0815";
    let job = bash(
        front.addr,
        &rw,
        json!({"command": format!("{marker} & {marker}; echo never"), "background": true}),
    );
    let id = job["job_id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(5), || pids_with_cmdline(
        marker
    )
    .len()
        >= 2));
    let spool = exec.state_dir().join("jobs").join(format!("{id}.out"));
    assert!(spool.exists());

    let killed = tool(front.addr, &rw, "job_kill", json!({"job_id": id}));
    assert_eq!(killed["running"], false, "{killed}");
    assert_eq!(killed["killed"], true);
    assert_eq!(killed["exit_code"], -15);
    assert!(
        wait_until(Duration::from_secs(1), || pids_with_cmdline(marker)
            .is_empty()),
        "the job's processes survived job_kill"
    );

    // Retention 1 s: the record and the spools go.
    assert!(
        wait_until(Duration::from_secs(5), || !spool.exists()),
        "spool not deleted"
    );
    let gone = tool(front.addr, &rw, "job_status", json!({"job_id": id}));
    assert_eq!(gone["error"], "NotFound");
}

#[test]
fn commands_beyond_the_limits_are_busy_at_once() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[
        ("MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN", "2"),
        ("MYMCP_BASH_MAX_CONCURRENT", "3"),
    ]);
    let other = exec.add_token("other", "rw");
    let addr = front.addr;
    let marker = "sleep 3.0303";
    let hold = |token: &str| {
        let token = token.to_owned();
        in_background(move || bash(addr, &token, json!({"command": marker})))
    };
    let held = [hold(&rw), hold(&rw)];
    assert!(wait_until(Duration::from_secs(5), || pids_with_cmdline(
        marker
    )
    .len()
        == 2));
    let t = Instant::now();
    let busy = bash(addr, &rw, json!({"command": "echo third"}));
    assert!(t.elapsed() < Duration::from_secs(1), "it queued");
    assert_eq!(busy["error"], "Busy", "{busy}");
    assert!(busy["message"]
        .as_str()
        .unwrap()
        .contains("for this token (limit 2)"));
    // Another token may still run one, up to the total of 3.
    let third = hold(&other);
    assert!(wait_until(Duration::from_secs(5), || pids_with_cmdline(
        marker
    )
    .len()
        == 3));
    let busy = bash(addr, &other, json!({"command": "echo fourth"}));
    assert_eq!(busy["error"], "Busy", "{busy}");
    assert!(busy["message"]
        .as_str()
        .unwrap()
        .contains("on this server (limit 3)"));
    for h in held.into_iter().chain([third]) {
        assert_eq!(h.join().unwrap()["exit_code"], 0);
    }
    // Slots come back.
    assert_eq!(
        bash(addr, &rw, json!({"command": "echo again"}))["stdout"],
        "again\n"
    );
}

#[test]
fn notifications_cancelled_kills_the_command_of_that_request() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[]);
    let addr = front.addr;
    let marker = "sleep 30.2718";
    let session = [("Mcp-Session-Id", "e2e-session-1")];
    let call = {
        let rw = rw.clone();
        in_background(move || {
            post_mcp_with(
                addr,
                &rw,
                &json!({"jsonrpc":"2.0","id":42,"method":"tools/call",
                    "params":{"name":"bash_execute","arguments":{"command": marker, "timeout": 60}}}),
                &[("Mcp-Session-Id", "e2e-session-1")],
            )
        })
    };
    assert!(wait_until(Duration::from_secs(5), || !pids_with_cmdline(
        marker
    )
    .is_empty()));
    let cancel = |id: Value, session: &[(&str, &str)]| {
        post_mcp_with(
            addr,
            &rw,
            &json!({"jsonrpc":"2.0","method":"notifications/cancelled",
                "params":{"requestId": id, "reason": "user pressed stop"}}),
            session,
        )
    };
    // Another session's cancel, or another id, does nothing.
    assert_eq!(
        cancel(json!(42), &[("Mcp-Session-Id", "someone-else")]).status,
        202
    );
    assert_eq!(cancel(json!(43), &session).status, 202);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !pids_with_cmdline(marker).is_empty(),
        "cancelled the wrong call"
    );

    let t = Instant::now();
    assert_eq!(cancel(json!(42), &session).status, 202);
    assert!(
        wait_until(Duration::from_secs(1), || pids_with_cmdline(marker)
            .is_empty()),
        "the command survived notifications/cancelled"
    );
    eprintln!(
        "killed {} ms after the cancellation",
        t.elapsed().as_millis()
    );
    let answer = call.join().unwrap();
    assert_eq!(answer.json()["id"], 42);
    assert_eq!(answer.tool_json()["error"], "Cancelled");
}

#[test]
fn a_long_command_streams_progress_notifications_before_its_result() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[]);
    let t = Instant::now();
    let r = post_mcp(
        front.addr,
        &rw,
        &json!({"jsonrpc":"2.0","id":"p","method":"tools/call","params":{
            "name":"bash_execute","arguments":{"command":"echo tick; sleep 5; echo tock"},
            "_meta":{"progressToken":"pt-9"}}}),
    );
    assert!(t.elapsed() >= Duration::from_secs(5));
    assert_eq!(r.status, 200);
    let content_type = r
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(content_type, Some("text/event-stream"));
    let messages = sse_messages(&r.body);
    let (progress, rest): (Vec<&Value>, Vec<&Value>) = messages
        .iter()
        .partition(|m| m["method"] == "notifications/progress");
    // Every 2 s: at 2 s and 4 s (a third would need the 6 s tick).
    assert!((2..=3).contains(&progress.len()), "{}", r.body);
    assert!(progress
        .iter()
        .all(|p| p["params"]["progressToken"] == "pt-9"));
    let seconds: Vec<f64> = progress
        .iter()
        .map(|p| p["params"]["progress"].as_f64().unwrap())
        .collect();
    assert!(seconds[0] >= 1.9 && seconds[1] > seconds[0], "{seconds:?}");
    assert!(progress[0]["params"]["message"]
        .as_str()
        .unwrap()
        .contains("5 bytes on stdout"));
    assert_eq!(rest.len(), 1);
    let text = rest[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap()["stdout"],
        "tick\ntock\n"
    );
}

/// Follows a job with `job_output` from the given offsets until it is complete; returns both
/// streams and the last chunk.
fn follow(
    addr: SocketAddr,
    token: &str,
    id: &str,
    mut so: u64,
    mut eo: u64,
) -> (String, String, Value) {
    let (mut out, mut err) = (String::new(), String::new());
    for _ in 0..500 {
        let chunk = tool(
            addr,
            token,
            "job_output",
            json!({"job_id": id, "stdout_offset": so, "stderr_offset": eo,
                   "max_bytes": 50, "wait_seconds": 5}),
        );
        out.push_str(chunk["stdout"].as_str().unwrap());
        err.push_str(chunk["stderr"].as_str().unwrap());
        so = chunk["stdout_offset"].as_u64().unwrap();
        eo = chunk["stderr_offset"].as_u64().unwrap();
        if chunk["complete"] == true {
            return (out, err, chunk);
        }
    }
    panic!("job {id} never completed");
}

#[test]
fn a_long_call_is_handed_off_to_a_job_and_no_byte_is_lost_or_doubled() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[]);
    let other = _exec.add_token("other", "rw");
    // Output before, around and long after the hand-off, with 2-, 3- and 4-byte characters.
    let command = "for i in $(seq 1 30); do echo \"line $i: ünï€🦀\"; echo \"err $i\" >&2; sleep 0.1; done; exit 7";
    let t = Instant::now();
    let first = bash(
        front.addr,
        &rw,
        json!({"command": command, "handoff_after": 1, "timeout": 60}),
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // job_output's JSON: the output so far and where to go on.
    let id = first["job_id"].as_str().expect("a job_id").to_owned();
    assert_eq!(first["running"], true, "{first}");
    assert_eq!(first["complete"], false);
    let so_far = first["stdout"].as_str().unwrap().to_owned();
    assert!(so_far.starts_with("line 1: ünï€🦀\n"), "{so_far:?}");
    assert!(!so_far.contains("line 30:"), "{so_far:?}");
    assert_eq!(first["stdout_offset"], so_far.len());

    // It belongs to the token of the call.
    let r = tool(front.addr, &other, "job_status", json!({"job_id": id}));
    assert_eq!(r["error"], "NotFound");

    let (rest, rest_err, last) = follow(
        front.addr,
        &rw,
        &id,
        first["stdout_offset"].as_u64().unwrap(),
        first["stderr_offset"].as_u64().unwrap(),
    );
    let expected: String = (1..=30).map(|i| format!("line {i}: ünï€🦀\n")).collect();
    let expected_err: String = (1..=30).map(|i| format!("err {i}\n")).collect();
    assert_eq!(format!("{so_far}{rest}"), expected);
    assert_eq!(
        format!("{}{rest_err}", first["stderr"].as_str().unwrap()),
        expected_err
    );
    assert_eq!(last["exit_code"], 7);
    let status = tool(front.addr, &rw, "job_status", json!({"job_id": id}));
    assert_eq!(status["timeout"], 60, "{status}");
    assert_eq!(status["killed"], false);
}

#[test]
fn with_the_handoff_setting_only_long_calls_become_jobs() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[("MYMCP_BASH_HANDOFF_SEC", "1")]);

    // A short command answers as always: the foreground result, no job.
    let out = bash(
        front.addr,
        &rw,
        json!({"command": "echo hi; echo oops >&2; exit 3"}),
    );
    assert_eq!(out["stdout"], "hi\n", "{out}");
    assert_eq!(out["stderr"], "oops\n");
    assert_eq!(out["exit_code"], 3);
    assert_eq!(out["timed_out"], false);
    assert!(out.get("job_id").is_none(), "{out}");

    // Its output is cut at max_output_bytes like a foreground call's.
    let out = bash(
        front.addr,
        &rw,
        json!({"command": "head -c 5000 /dev/zero | tr '\\0' x", "max_output_bytes": 100}),
    );
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.starts_with(&"x".repeat(100)), "{out}");
    assert!(stdout.contains("TRUNCATED: total 5000 bytes"), "{out}");

    // A timeout shorter than the hand-off: a plain foreground call that times out.
    let out = bash(front.addr, &rw, json!({"command": "sleep 5", "timeout": 1}));
    assert_eq!(out["timed_out"], true, "{out}");

    // A long one is handed off after the setting's second...
    let out = bash(
        front.addr,
        &rw,
        json!({"command": "echo start; sleep 2; echo end", "timeout": 30}),
    );
    let id = out["job_id"].as_str().expect("handed off").to_owned();
    assert_eq!(out["stdout"], "start\n", "{out}");
    let (rest, _, last) = follow(
        front.addr,
        &rw,
        &id,
        out["stdout_offset"].as_u64().unwrap(),
        0,
    );
    assert_eq!(rest, "end\n");
    assert_eq!(last["exit_code"], 0);

    // ...unless the call says handoff_after 0.
    let out = bash(
        front.addr,
        &rw,
        json!({"command": "echo start; sleep 2; echo end", "handoff_after": 0}),
    );
    assert_eq!(out["stdout"], "start\nend\n", "{out}");
    assert!(out.get("job_id").is_none(), "{out}");
}

#[test]
fn a_cancelled_call_stops_its_command_before_the_hand_off() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[("MYMCP_BASH_HANDOFF_SEC", "20")]);
    let marker = "sleep 1000.4712";
    let body = tools_call(1, "bash_execute", json!({"command": marker, "timeout": 60}));
    let mut s = std::net::TcpStream::connect(front.addr).unwrap();
    std::io::Write::write_all(
        &mut s,
        mymcp_tests::mcp_request_with(front.addr, &rw, &body, &[]).as_bytes(),
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !pids_with_cmdline(
        marker
    )
    .is_empty()));
    // The client goes away.
    drop(s);
    assert!(
        wait_until(Duration::from_secs(5), || pids_with_cmdline(marker)
            .is_empty()),
        "the command outlived its cancelled call"
    );
}

/// One JSON-RPC request under revision 2025-11-25; returns the response's JSON.
fn rpc_2025_11_25(addr: SocketAddr, token: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let r = mymcp_tests::post_mcp_with(
        addr,
        token,
        &body,
        &[("MCP-Protocol-Version", "2025-11-25")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn a_task_is_a_job_of_its_token_and_other_revisions_have_no_tasks() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[]);
    let other = exec.add_token("other", "rw");
    let marker = "sleep 1000.4713";
    let created = rpc_2025_11_25(
        front.addr,
        &rw,
        "tools/call",
        json!({"name": "bash_execute", "arguments": {"command": format!("echo hi; {marker}")},
               "task": {"ttl": 60000}}),
    );
    let task = &created["result"]["task"];
    assert_eq!(task["status"], "working", "{created}");
    let id = task["taskId"].as_str().unwrap().to_owned();
    // The frontend restarts; the task does not notice (the frontend holds no task state).
    drop(front);
    let front = FrontendProcess::start(&exec.executor_socket());
    // The foreground timeout applies to the task.
    let status = tool(front.addr, &rw, "job_status", json!({"job_id": id}));
    assert_eq!(status["timeout"], 30, "{status}");

    // Another token: no such task, nothing listed, no cancel.
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let r = rpc_2025_11_25(front.addr, &other, method, json!({"taskId": id}));
        assert_eq!(r["error"]["code"], -32602, "{method}: {r}");
    }
    let r = rpc_2025_11_25(front.addr, &other, "tasks/list", json!({}));
    assert_eq!(r["result"]["tasks"], json!([]), "{r}");
    assert!(!pids_with_cmdline(marker).is_empty(), "still running");

    // The owner lists it and cancels it: the command is gone, the task stays cancelled.
    let r = rpc_2025_11_25(front.addr, &rw, "tasks/list", json!({}));
    assert_eq!(r["result"]["tasks"][0]["taskId"], id.as_str(), "{r}");
    let r = rpc_2025_11_25(front.addr, &rw, "tasks/cancel", json!({"taskId": id}));
    assert_eq!(r["result"]["status"], "cancelled", "{r}");
    assert!(wait_until(Duration::from_secs(5), || pids_with_cmdline(
        marker
    )
    .is_empty()));
    let r = rpc_2025_11_25(front.addr, &rw, "tasks/get", json!({"taskId": id}));
    assert_eq!(r["result"]["status"], "cancelled", "{r}");
    let r = rpc_2025_11_25(front.addr, &rw, "tasks/result", json!({"taskId": id}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_eq!(r["result"]["structuredContent"]["error"], "Cancelled");
    assert_eq!(
        r["result"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        id.as_str()
    );

    // Under 2025-06-18 there are no tasks: a task field is ignored, tasks/* do not exist.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "bash_execute", "arguments": {"command": "echo plain"},
                                 "task": {}}});
    let r = mymcp_tests::post_mcp_with(
        front.addr,
        &rw,
        &body,
        &[("MCP-Protocol-Version", "2025-06-18")],
    );
    assert_eq!(r.tool_json()["stdout"], "plain\n", "{}", r.body);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"taskId": id}});
    let r = mymcp_tests::post_mcp_with(
        front.addr,
        &rw,
        &body,
        &[("MCP-Protocol-Version", "2025-06-18")],
    );
    assert_eq!(r.json()["error"]["code"], -32601, "{}", r.body);
}

#[test]
fn a_call_waiting_for_its_hand_off_streams_progress() {
    mymcp_tests::needs_root!();
    let (_exec, front, rw) = server(&[]);
    let r = post_mcp(
        front.addr,
        &rw,
        &json!({"jsonrpc":"2.0","id":"h","method":"tools/call","params":{
            "name":"bash_execute",
            "arguments":{"command":"echo tick; sleep 6", "handoff_after": 5},
            "_meta":{"progressToken":"pt-h"}}}),
    );
    assert_eq!(r.status, 200);
    let messages = sse_messages(&r.body);
    let progress: Vec<&Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    // At 2 s and 4 s, then the hand-off at 5 s.
    assert_eq!(progress.len(), 2, "{}", r.body);
    assert!(progress[0]["params"]["message"]
        .as_str()
        .unwrap()
        .contains("5 bytes on stdout"));
    let result = messages.last().unwrap();
    let json: Value =
        serde_json::from_str(result["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(json["stdout"], "tick\n", "{json}");
    assert_eq!(json["running"], true);
}
