//! Confinement the kernel enforces, end to end: the real executor as root, the real frontend
//! as nobody, raw HTTP. Nothing a command starts outlives its call (not even what left its
//! process group), background jobs take their escaped children with them, kernel limits are
//! enforced and named in the result, a fork bomb is contained while other calls are answered,
//! and no cgroup directory is left behind, also after a crash.
//!
//! These need cgroups that can kill a call (v2 `cgroup.kill`, or a v1 freezer/pids
//! hierarchy); the limit tests need the controller that carries the limit (v2 delegated, or
//! v1). Where the executor reports that it cannot, a test prints `skipped: …` and passes.

use mymcp_tests::{
    call_tool as tool, ctl, http_request, pids_with_cmdline, post_mcp, post_mcp_with,
    rw_server as server, tools_call, wait_until, ExecutorProcess,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `mymcpctl status --json` of `exec`.
fn status(exec: &ExecutorProcess) -> Value {
    let out = ctl(&exec.runtime_dir, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// Whether the executor confines commands by cgroups (else the test is skipped), and which
/// controllers carry limits (`"memory"`, `"pids"` in the description).
fn confinement(exec: &ExecutorProcess, needs: &[&str]) -> Option<String> {
    let s = status(exec);
    let text = s["confinement"].as_str().unwrap_or_default().to_owned();
    if s["confined"] != true {
        eprintln!("skipped: commands are not confined by cgroups here: {text}");
        return None;
    }
    for n in needs {
        if !text.contains(&format!("v1 {n} ")) && !text.contains(&format!("+{n}")) {
            eprintln!("skipped: no {n} controller for the executor here: {text}");
            return None;
        }
    }
    Some(text)
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next()),
            Some('Z' | 'X') | None
        )
    })
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The executor's instance directories (`…/mymcp/<pid>-<start>-<pidns>`) in every hierarchy.
fn instance_dirs(executor_pid: u32) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = std::fs::read_to_string(format!("/proc/{executor_pid}/cgroup")).unwrap_or_default();
    let mut dirs = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let options = right.split(' ').nth(2).unwrap_or("");
        // The executor's path in this hierarchy.
        let path = own.lines().find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (id, ctrl, path) = (p.next()?, p.next()?, p.next()?);
            let matches = if fstype == "cgroup2" {
                id == "0" && ctrl.is_empty()
            } else {
                !ctrl.is_empty() && ctrl.split(',').all(|c| options.split(',').any(|o| o == c))
            };
            matches.then(|| path.trim_end_matches("/mymcp-executor").to_owned())
        });
        let Some(path) = path else { continue };
        let subtree = Path::new(point)
            .join(path.trim_start_matches('/'))
            .join("mymcp");
        for entry in std::fs::read_dir(&subtree).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("{executor_pid}-")))
            {
                dirs.push(entry.path());
            }
        }
    }
    dirs
}

/// What is left of ended calls' cgroups once their removal, which runs after the answer, is
/// done (waited for up to 2 s): directories that still hold a process, or more than the
/// executor keeps empty for the next calls (at most 8). Empty is right.
fn calls_left(executor_pid: u32) -> Vec<PathBuf> {
    let left = || {
        let dirs = call_dirs(executor_pid);
        let mut names: Vec<_> = dirs.iter().filter_map(|d| d.file_name()).collect();
        names.sort();
        names.dedup();
        let busy: Vec<PathBuf> = dirs
            .iter()
            .filter(|d| {
                std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
            })
            .cloned()
            .collect();
        if names.len() > 8 {
            dirs
        } else {
            busy
        }
    };
    wait_until(Duration::from_secs(2), || left().is_empty());
    left()
}

/// The call cgroups (directories inside the instance directories) of the executor.
fn call_dirs(executor_pid: u32) -> Vec<PathBuf> {
    instance_dirs(executor_pid)
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Three ways out of the process group, each writing its pid to a marker file in `dir`.
fn escapes(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "setsid sh -c 'echo $$ > {d}/setsid; exec sleep 1000' >/dev/null 2>&1 < /dev/null & \
         sh -c '(setsid sh -c \"echo \\$\\$ > {d}/double; exec sleep 1000\" &) ' >/dev/null 2>&1; \
         nohup sh -c 'echo $$ > {d}/nohup; exec sleep 1000' >/dev/null 2>&1 & disown; \
         for f in setsid double nohup; do while [ ! -s {d}/$f ]; do sleep 0.05; done; done; echo ready"
    )
}

#[test]
fn processes_that_left_the_group_do_not_outlive_the_call() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[]);
    if confinement(&exec, &[]).is_none() {
        return;
    }
    let marks = tempfile::tempdir().unwrap();
    let out = tool(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": escapes(marks.path()), "timeout": 20}),
    );
    assert_eq!(out["stdout"], "ready\n", "{out}");
    assert_eq!(out["exit_code"], 0, "{out}");
    for name in ["setsid", "double", "nohup"] {
        let pid = read_pid(&marks.path().join(name)).expect(name);
        // Killed and gone before the call answered: no waiting here.
        assert!(
            !alive(pid),
            "the {name} escapee (pid {pid}) outlived its call"
        );
    }
    let left = calls_left(exec.pid());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn job_kill_kills_the_jobs_escaped_children() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[]);
    if confinement(&exec, &[]).is_none() {
        return;
    }
    let marks = tempfile::tempdir().unwrap();
    let command = format!("{}; sleep 1000", escapes(marks.path()));
    let job = tool(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": command, "background": true}),
    );
    let id = job["job_id"].as_str().expect("job_id").to_owned();
    assert!(
        wait_until(Duration::from_secs(10), || ["setsid", "double", "nohup"]
            .iter()
            .all(|n| read_pid(&marks.path().join(n)).is_some())),
        "the job did not start its escapees"
    );
    let pids: Vec<u32> = ["setsid", "double", "nohup"]
        .iter()
        .map(|n| read_pid(&marks.path().join(n)).unwrap())
        .collect();
    assert!(
        pids.iter().all(|&p| alive(p)),
        "they run while the job runs"
    );
    let killed = tool(front.addr, &rw, "job_kill", json!({"job_id": id}));
    assert_eq!(killed["running"], false, "{killed}");
    for pid in pids {
        assert!(
            wait_until(Duration::from_secs(1), || !alive(pid)),
            "escaped pid {pid} outlived job_kill"
        );
    }
    let left = calls_left(exec.pid());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_command_over_its_memory_limit_is_killed_and_the_result_says_so() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[("MYMCP_DEFAULT_MEMORY_MAX", "64")]);
    let Some(text) = confinement(&exec, &["memory"]) else {
        return;
    };
    assert!(text.contains("memory 64 MiB"), "{text}");
    let out = tool(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": "perl -e '$x = \"a\" x (300*1024*1024); print length $x'", "timeout": 30}),
    );
    assert_eq!(out["exit_code"], -9, "{out}");
    assert_eq!(
        out["limit_hit"], "killed: memory limit 64 MiB reached",
        "{out}"
    );
    assert!(
        out["stderr"]
            .as_str()
            .unwrap()
            .ends_with("Command killed: memory limit 64 MiB reached"),
        "{out}"
    );
    // Under the limit: no mention of it.
    let fine = tool(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": "perl -e '$x = \"a\" x (8*1024*1024); print length $x'"}),
    );
    assert_eq!(fine["stdout"], "8388608", "{fine}");
    assert!(fine.get("limit_hit").is_none(), "{fine}");
    // A background job too: job_status names the limit once it has ended.
    let job = tool(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": "perl -e '$x = \"a\" x (300*1024*1024)'", "background": true}),
    );
    let id = job["job_id"].as_str().expect("job_id").to_owned();
    let mut status = Value::Null;
    assert!(wait_until(Duration::from_secs(20), || {
        status = tool(front.addr, &rw, "job_status", json!({"job_id": id}));
        status["running"] == false
    }));
    assert_eq!(status["exit_code"], -9, "{status}");
    assert_eq!(
        status["limit_hit"], "killed: memory limit 64 MiB reached",
        "{status}"
    );
}

#[test]
fn a_fork_bomb_is_contained_and_other_calls_are_answered_meanwhile() {
    mymcp_tests::needs_root!();
    let (exec, front, rw) = server(&[("MYMCP_DEFAULT_TASKS_MAX", "64")]);
    if confinement(&exec, &["pids"]).is_none() {
        return;
    }
    let other = exec.add_token("other", "rw");
    let marker = "fork-bomb-4711";
    let bomb = {
        let (addr, rw) = (front.addr, rw.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let out = tool(
                addr,
                &rw,
                "bash_execute",
                json!({"command": format!(": {marker}; :(){{ :|:& }};:"), "timeout": 5}),
            );
            (out, t.elapsed())
        })
    };
    // While it rages, another token's calls are answered promptly.
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..3 {
        let t = Instant::now();
        let out = tool(
            front.addr,
            &other,
            "bash_execute",
            json!({"command": format!("echo alive {i}")}),
        );
        assert_eq!(out["stdout"], format!("alive {i}\n"), "{out}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
    let (out, took) = bomb.join().unwrap();
    // Timeout 5 s + grace 2 s + 1 s for the pipes, and some slack for the cleanup.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        out["limit_hit"], "tasks limit 64 reached: a fork failed",
        "{out}"
    );
    assert!(
        pids_with_cmdline(marker).is_empty(),
        "the bomb survived: {:?}",
        pids_with_cmdline(marker)
    );
    let left = calls_left(exec.pid());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn no_cgroup_is_left_behind_by_a_stop_or_a_crash() {
    mymcp_tests::needs_root!();
    let (mut exec, mut front, rw) = server(&[]);
    if confinement(&exec, &[]).is_none() {
        return;
    }
    let text = ctl(&exec.runtime_dir, &["status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("confinement:      cgroup"), "{text}");
    assert!(text.contains("views:            available"), "{text}");
    // doctor says it too (an Ok line; a warning in the process-group fallback).
    let env_file = exec.dir.path().join("doctor.env");
    std::fs::write(&env_file, "").unwrap();
    let doctor = ctl(
        &exec.runtime_dir,
        &["doctor", "--env-file", env_file.to_str().unwrap()],
    );
    let doctor = String::from_utf8_lossy(&doctor.stdout).into_owned();
    let line = doctor
        .lines()
        .find(|l| l.contains("confinement"))
        .unwrap_or_else(|| panic!("{doctor}"));
    assert!(line.contains("cgroup"), "{line}");
    let views = doctor
        .lines()
        .find(|l| l.contains("views"))
        .unwrap_or_else(|| panic!("{doctor}"));
    assert!(views.starts_with("ok"), "{views}");
    // A crash with a job and its escapee running: the next executor removes both.
    let marks = tempfile::tempdir().unwrap();
    let command = format!("{}; sleep 1000", escapes(marks.path()));
    tool(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": command, "background": true}),
    );
    assert!(wait_until(Duration::from_secs(10), || read_pid(
        &marks.path().join("nohup")
    )
    .is_some()));
    let escapee = read_pid(&marks.path().join("setsid")).unwrap();
    let crashed = exec.pid();
    let left = instance_dirs(crashed);
    assert!(!left.is_empty());
    assert!(!call_dirs(crashed).is_empty(), "the job's cgroup");
    front.kill();
    exec.kill();
    assert!(alive(escapee), "a crash kills nothing by itself");
    let mut exec = ExecutorProcess::restart_of(&mut exec, &[]);
    assert!(
        left.iter().all(|d| !d.exists()),
        "left by the crashed executor: {left:?}"
    );
    assert!(
        wait_until(Duration::from_secs(1), || !alive(escapee)),
        "the crashed executor's escapee survived the restart"
    );
    // An orderly stop removes this executor's own directories.
    let pid = exec.pid();
    assert!(!instance_dirs(pid).is_empty());
    exec.terminate();
    assert!(instance_dirs(pid).is_empty(), "{:?}", instance_dirs(pid));
}

#[test]
fn escapees_die_at_the_deadline_on_cancellation_and_at_shutdown() {
    mymcp_tests::needs_root!();
    let (mut exec, front, rw) = server(&[]);
    if confinement(&exec, &[]).is_none() {
        return;
    }
    // At the deadline: the escapee even holds the output pipe open.
    let marks = tempfile::tempdir().unwrap();
    let d = marks.path().display();
    let t = Instant::now();
    let out = tool(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": format!("setsid sh -c 'echo $$ > {d}/held; exec sleep 1000' & sleep 1000"), "timeout": 1}),
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(out["timed_out"], true, "{out}");
    let held = read_pid(&marks.path().join("held")).expect("held");
    assert!(
        !alive(held),
        "the escapee holding stdout outlived the deadline"
    );

    // On cancellation (notifications/cancelled from the client).
    let addr = front.addr;
    let session = [("Mcp-Session-Id", "confine-1")];
    let call = {
        let rw = rw.clone();
        let command = format!(
            "setsid sh -c 'echo $$ > {d}/cancelled; exec sleep 1000' >/dev/null 2>&1 & sleep 1000"
        );
        std::thread::spawn(move || {
            post_mcp_with(
                addr,
                &rw,
                &json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
                    "params":{"name":"bash_execute","arguments":{"command": command, "timeout": 60}}}),
                &[("Mcp-Session-Id", "confine-1")],
            )
        })
    };
    assert!(wait_until(Duration::from_secs(10), || read_pid(
        &marks.path().join("cancelled")
    )
    .is_some()));
    let cancelled = read_pid(&marks.path().join("cancelled")).unwrap();
    assert!(alive(cancelled));
    let r = post_mcp_with(
        addr,
        &rw,
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId": 7}}),
        &session,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let _ = call.join();
    assert!(
        wait_until(Duration::from_secs(1), || !alive(cancelled)),
        "the escapee outlived the cancellation"
    );

    // At shutdown: a running call's escapee dies with the executor's cgroups.
    let command = format!("{}; sleep 1000", escapes(marks.path()));
    let call = {
        let (addr, rw) = (front.addr, rw.clone());
        std::thread::spawn(move || {
            post_mcp(
                addr,
                &rw,
                &tools_call(
                    1,
                    "bash_execute",
                    json!({"command": command, "timeout": 60}),
                ),
            )
        })
    };
    assert!(wait_until(Duration::from_secs(10), || read_pid(
        &marks.path().join("nohup")
    )
    .is_some()));
    let pids: Vec<u32> = ["setsid", "double", "nohup"]
        .iter()
        .map(|n| read_pid(&marks.path().join(n)).unwrap())
        .collect();
    let pid = exec.pid();
    exec.terminate();
    let _ = call.join();
    for p in pids {
        assert!(!alive(p), "pid {p} outlived the executor's shutdown");
    }
    assert!(instance_dirs(pid).is_empty(), "{:?}", instance_dirs(pid));
}

/// `perl` allocating `mib` MiB and printing how many bytes it got.
fn allocate(mib: u32) -> String {
    format!("perl -e '$x = \"a\" x ({mib}*1024*1024); print length $x'")
}

#[test]
fn each_token_runs_under_its_own_limits_over_the_defaults() {
    mymcp_tests::needs_root!();
    // Defaults: tasks 500; the tight token has its own memory and timeout caps, the loose
    // one lifts the tasks default with 0.
    let (exec, front, plain) = server(&[("MYMCP_DEFAULT_TASKS_MAX", "500")]);
    let Some(text) = confinement(&exec, &["memory", "pids"]) else {
        return;
    };
    assert!(text.contains("tasks 500"), "{text}");
    let tight = exec.add_token_with(
        "tight",
        "rw",
        &[
            "--memory-max",
            "64M",
            "--tasks-max",
            "32",
            "--timeout-max",
            "2",
        ],
    );
    let loose = exec.add_token_with("loose", "rw", &["--tasks-max", "0", "--cpu-max", "150"]);

    // The listing shows them, the plain token has the defaults.
    let out = ctl(&exec.runtime_dir, &["token", "list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let limits_of = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["limits"].clone())
            .unwrap()
    };
    assert_eq!(
        limits_of("tight"),
        json!({"memory_max_mib": 64, "tasks_max": 32, "timeout_max_secs": 2})
    );
    assert_eq!(
        limits_of("loose"),
        json!({"tasks_max": 0, "cpu_max_percent": 150})
    );
    assert_eq!(limits_of("writer"), json!({}));
    let table = String::from_utf8(ctl(&exec.runtime_dir, &["token", "list"]).stdout).unwrap();
    assert!(
        table.contains("memory 64 MiB, tasks 32, timeout 2 s"),
        "{table}"
    );

    // Memory: the tight token is killed at 64 MiB, the others are not.
    let out = tool(
        front.addr,
        &tight,
        "bash_execute",
        json!({"command": allocate(300)}),
    );
    assert_eq!(out["exit_code"], -9, "{out}");
    assert_eq!(
        out["limit_hit"], "killed: memory limit 64 MiB reached",
        "{out}"
    );
    for token in [&plain, &loose] {
        let out = tool(
            front.addr,
            token,
            "bash_execute",
            json!({"command": allocate(100)}),
        );
        assert_eq!(out["stdout"], "104857600", "{out}");
    }

    // Tasks: 40 sleepers fail under the tight token's 32, run under the loose token's none
    // and the plain token's default 500.
    let spawn40 = "for i in $(seq 40); do sleep 2 & done 2>/dev/null; wait; echo done";
    let out = tool(
        front.addr,
        &tight,
        "bash_execute",
        json!({"command": spawn40}),
    );
    assert_eq!(
        out["limit_hit"], "tasks limit 32 reached: a fork failed",
        "{out}"
    );
    for token in [&plain, &loose] {
        let out = tool(
            front.addr,
            token,
            "bash_execute",
            json!({"command": spawn40}),
        );
        assert!(out.get("limit_hit").is_none(), "{out}");
    }

    // Timeout: the tight token's 30 s asked for is cut to 2 s, for a job too.
    let t = Instant::now();
    let out = tool(
        front.addr,
        &tight,
        "bash_execute",
        json!({"command": "sleep 20", "timeout": 30}),
    );
    assert_eq!(out["timed_out"], true, "{out}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let job = tool(
        front.addr,
        &tight,
        "bash_execute",
        json!({"command": "sleep 20", "background": true, "timeout": 600}),
    );
    let id = job["job_id"].as_str().expect("job_id").to_owned();
    let mut status = Value::Null;
    assert!(wait_until(Duration::from_secs(10), || {
        status = tool(front.addr, &tight, "job_status", json!({"job_id": id}));
        status["running"] == false
    }));
    assert!(
        status.to_string().contains("timed out") || status.to_string().contains("timeout"),
        "{status}"
    );

    // Bad values are refused with a reason, nothing is made.
    for (args, why) in [
        (
            &["--timeout-max", "0"][..],
            "timeout_max must be at least 1 second",
        ),
        (&["--memory-max", "lots"][..], "invalid memory size"),
    ] {
        let mut all = vec!["token", "add", "--name", "bad", "--role", "rw"];
        all.extend_from_slice(args);
        let out = ctl(&exec.runtime_dir, &all);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{err}");
    }
    let out = ctl(
        &exec.runtime_dir,
        &[
            "token",
            "add",
            "--name",
            "a",
            "--role",
            "admin",
            "--tasks-max",
            "5",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("are for ro and rw tokens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_fork_bomb_under_a_tokens_own_tasks_limit_is_contained() {
    mymcp_tests::needs_root!();
    // No default: only the bomber's token has a tasks limit.
    let (exec, front, other) = server(&[]);
    if confinement(&exec, &["pids"]).is_none() {
        return;
    }
    let rw = exec.add_token_with("bomber", "rw", &["--tasks-max", "64", "--timeout-max", "4"]);
    let marker = "fork-bomb-own-4712";
    let bomb = {
        let (addr, rw) = (front.addr, rw.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let out = tool(
                addr,
                &rw,
                "bash_execute",
                json!({"command": format!(": {marker}; :(){{ :|:& }};:"), "timeout": 60}),
            );
            (out, t.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..3 {
        let t = Instant::now();
        let out = tool(
            front.addr,
            &other,
            "bash_execute",
            json!({"command": format!("echo alive {i}")}),
        );
        assert_eq!(out["stdout"], format!("alive {i}\n"), "{out}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
    let (out, took) = bomb.join().unwrap();
    // Its own timeout cap (4 s, not the 60 asked for) + grace 2 s + 1 s, and slack.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        out["limit_hit"], "tasks limit 64 reached: a fork failed",
        "{out}"
    );
    assert!(
        pids_with_cmdline(marker).is_empty(),
        "the bomb survived: {:?}",
        pids_with_cmdline(marker)
    );
    let left = calls_left(exec.pid());
    assert!(left.is_empty(), "{left:?}");
    // The next call of that token (in a cgroup an ended call of it left) is not blamed for
    // the bomb's limit.
    let out = tool(
        front.addr,
        &rw,
        "bash_execute",
        json!({"command": "echo calm"}),
    );
    assert_eq!(out["stdout"], "calm\n", "{out}");
    assert_eq!(out.get("limit_hit"), None, "{out}");
}

#[test]
fn the_admin_api_makes_and_lists_tokens_with_their_own_limits() {
    mymcp_tests::needs_root!();
    let (exec, front, _) = server(&[]);
    let Some(_) = confinement(&exec, &["memory"]) else {
        return;
    };
    let admin = exec.add_token("admin", "admin");
    let auth = format!("Bearer {admin}");
    let post = |body: &str| {
        http_request(
            front.addr,
            "POST",
            "/admin/tokens",
            &[("Authorization", &auth)],
            body,
        )
    };
    let r =
        post(r#"{"name":"api","role":"rw","memory_max":"48M","tasks_max":100,"timeout_max":20}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    assert_eq!(
        created["limits"],
        json!({"memory_max_mib": 48, "tasks_max": 100, "timeout_max_secs": 20}),
        "{created}"
    );
    let token = created["token"].as_str().unwrap().to_owned();
    let out = tool(
        front.addr,
        &token,
        "bash_execute",
        json!({"command": allocate(200)}),
    );
    assert_eq!(
        out["limit_hit"], "killed: memory limit 48 MiB reached",
        "{out}"
    );

    let r = http_request(
        front.addr,
        "GET",
        "/admin/tokens",
        &[("Authorization", &auth)],
        "",
    );
    let listed = r.json();
    let api = listed
        .as_object()
        .unwrap()
        .values()
        .find(|t| t["name"] == "api")
        .unwrap();
    assert_eq!(api["limits"]["memory_max_mib"], 48, "{listed}");

    for (body, why) in [
        (
            r#"{"name":"b","tasks_max":-3}"#,
            "tasks_max must be a whole number",
        ),
        (
            r#"{"name":"b","timeout_max":0}"#,
            "timeout_max must be at least 1 second",
        ),
        (
            r#"{"name":"b","cpu_max":999999999}"#,
            "cpu_max 999999999 is too large",
        ),
    ] {
        let r = post(body);
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains(why), "{}", r.body);
    }
}
