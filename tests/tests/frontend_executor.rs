//! The frontend and executor together: forwarding, outages, cancellation, privileges.

use mymcp_tests::{
    mcp_request, pids_with_cmdline, post_mcp, proc_status, tools_call, wait_until, ExecutorProcess,
    FrontendProcess,
};
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn frontend_answers_503_while_the_executor_is_down_and_recovers_by_itself() {
    mymcp_tests::needs_root!();
    let mut exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    let echo = tools_call(1, "bash_execute", json!({"command": "echo up"}));
    assert_eq!(
        post_mcp(front.addr, &rw, &echo).tool_json()["stdout"],
        "up\n"
    );

    exec.terminate();
    let r = post_mcp(front.addr, &rw, &echo);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["detail"], "Executor unavailable");

    // A new executor on the same state: the frontend reconnects without a restart, and the
    // token store on disk still holds the token.
    let dir = exec.dir.path().to_owned();
    let exec2 = ExecutorProcess::start_with_env(
        "nobody",
        &[
            ("MYMCP_RUNTIME_DIR", dir.join("run").to_str().unwrap()),
            (
                "MYMCP_TOKEN_FILE",
                dir.join("tokens.json").to_str().unwrap(),
            ),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || post_mcp(front.addr, &rw, &echo)
            .status
            == 200),
        "frontend did not reconnect"
    );
    assert_eq!(
        post_mcp(front.addr, &rw, &echo).tool_json()["stdout"],
        "up\n"
    );
    drop(exec2);
}

#[test]
fn a_client_that_goes_away_has_its_command_killed() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    let marker = "31.4159";
    let call = tools_call(
        7,
        "bash_execute",
        json!({"command": format!("sleep {marker}"), "timeout": 60}),
    );
    let mut s = std::net::TcpStream::connect(front.addr).unwrap();
    s.write_all(mcp_request(front.addr, &rw, &call).as_bytes())
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !pids_with_cmdline(
        &format!("sleep {marker}")
    )
    .is_empty()));
    let t = Instant::now();
    drop(s);
    assert!(
        wait_until(Duration::from_secs(1), || pids_with_cmdline(&format!(
            "sleep {marker}"
        ))
        .is_empty()),
        "the command survived its client"
    );
    eprintln!(
        "killed {} ms after the client left",
        t.elapsed().as_millis()
    );
}

#[test]
fn many_calls_in_flight_share_one_executor_connection() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let rw = exec.add_token("writer", "rw");
    let front = FrontendProcess::start(&exec.executor_socket());
    let t = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let rw = rw.clone();
            let addr = front.addr;
            std::thread::spawn(move || {
                post_mcp(
                    addr,
                    &rw,
                    &tools_call(
                        i,
                        "bash_execute",
                        json!({"command": format!("sleep 1; echo {i}")}),
                    ),
                )
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap().tool_json()["stdout"], format!("{i}\n"));
    }
    // Eight one-second commands ran concurrently, not one after another.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn the_frontend_process_holds_no_privilege() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start("nobody");
    let front = FrontendProcess::start(&exec.executor_socket());
    let uid = proc_status(front.pid(), "Uid");
    assert!(uid.split_whitespace().all(|u| u == "65534"), "{uid}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            u64::from_str_radix(&proc_status(front.pid(), cap), 16).unwrap(),
            0,
            "{cap}"
        );
    }
}

#[test]
fn the_frontend_refuses_to_run_as_root() {
    mymcp_tests::needs_root!();
    let out = std::process::Command::new(mymcp_tests::bin("mymcp-frontend"))
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not run as root"));
}
