//! Accounts end to end: every token acts as the Unix account the operator gave it. Real
//! accounts that the tests make and remove, real binaries (executor as root, frontend as
//! nobody): commands, file tools, searches and transfers run with the account's rights and the
//! kernel decides; a token's holder can do what its account can and nothing more, races and a
//! hostile frontend included. The account comes only from the executor's store.

use mymcp_tests::{
    bin, ctl, http_request, post_mcp, swap_symlink, tools_call, ExecutorProcess, FrontendProcess,
    QuickTry, SudoRule, TestAccount, TestGroup,
};
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROOT_ONLY: &str = "ROOT-ONLY-BYTES";

/// An executor (audited) with a frontend, and a scratch directory every account may enter.
struct Server {
    // Field order: the frontend stops before the executor.
    front: FrontendProcess,
    exec: ExecutorProcess,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Self::start_with(&[])
    }

    /// `<dir>/prot` is a protected path (it exists once a test makes it).
    fn start_with(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("mymcp-accounts-")
            .tempdir()
            .unwrap();
        chmod(dir.path(), 0o755);
        let prot = dir.path().join("prot");
        let prot = prot.to_str().unwrap();
        let mut all = vec![
            ("MYMCP_AUDIT_ENABLED", "true"),
            ("MYMCP_PROTECTED_PATHS", prot),
        ];
        all.extend_from_slice(env);
        let exec = ExecutorProcess::start_with_env("nobody", &all);
        let front = FrontendProcess::start(&exec.executor_socket());
        Server { front, exec, dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn p(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_owned()
    }

    /// Calls a tool; returns its tool JSON.
    fn call(&self, token: &str, tool: &str, args: Value) -> Value {
        let r = post_mcp(self.front.addr, token, &tools_call(1, tool, args));
        assert_eq!(r.status, 200, "{}", r.body);
        r.tool_json()
    }

    fn bash(&self, token: &str, command: &str) -> Value {
        self.call(token, "bash_execute", json!({ "command": command }))
    }

    /// The error code of a call that must fail.
    fn error(&self, token: &str, tool: &str, args: Value) -> String {
        let v = self.call(token, tool, args);
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{tool} should have failed: {v}"))
            .to_owned()
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

/// Writes `text` to `path` with `mode`, owned by `uid:gid`.
fn file(path: &Path, text: &str, mode: u32, uid: u32, gid: u32) {
    std::fs::write(path, text).unwrap();
    chown(path, uid, gid);
    chmod(path, mode);
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid())
}

fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_default()
        .trim()
}

#[test]
fn a_token_runs_commands_and_file_tools_as_its_account_and_nothing_more() {
    mymcp_tests::needs_root!();
    let group = TestGroup::create("g");
    let a = TestAccount::create_in("id", &[&group]);
    let s = Server::start();
    let rw = s.exec.add_token_as("acct", "rw", &a.name);
    let ro = s.exec.add_token_as("acct-ro", "ro", &a.name);

    // The command is the account: ids, groups, no capability, its environment, its home.
    let out = s.bash(
        &rw,
        "id -un; id -u; id -g; id -G; echo \"$HOME:$USER:$LOGNAME:$SHELL\"; pwd; \
         grep -E '^(Uid|Gid|CapEff|CapPrm):' /proc/self/status",
    );
    assert_eq!(out["exit_code"], 0, "{out}");
    let text = out["stdout"].as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], a.name, "{text}");
    assert_eq!(lines[1], a.uid.to_string(), "{text}");
    assert_eq!(lines[2], a.gid.to_string(), "{text}");
    let groups: Vec<u32> = lines[3]
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    assert!(groups.contains(&group.gid), "{text}");
    assert!(!groups.contains(&0), "root's group: {text}");
    let home = a.home.to_str().unwrap();
    assert_eq!(lines[4], format!("{home}:{0}:{0}:/bin/bash", a.name));
    assert_eq!(lines[5], home, "{text}");
    let u = a.uid;
    assert_eq!(field(text, "Uid:"), format!("{u}\t{u}\t{u}\t{u}"), "{text}");
    assert_eq!(field(text, "CapEff:"), "0000000000000000");
    assert_eq!(field(text, "CapPrm:"), "0000000000000000");

    // /etc/shadow: refused through every tool, ro and rw.
    for token in [&rw, &ro] {
        let e = s.error(token, "read_file", json!({"file_path": "/etc/shadow"}));
        assert_eq!(e, "PermissionError");
        let e = s.error(
            token,
            "prepare_download",
            json!({"src_path": "/etc/shadow"}),
        );
        assert_eq!(e, "PermissionError");
        let g = s.call(
            token,
            "grep",
            json!({"pattern": "root", "path": "/etc/shadow"}),
        );
        assert!(!g.to_string().contains("root:"), "{g}");
        assert!(
            g["error"].is_string() || g["match_count"] == 0,
            "grep read /etc/shadow: {g}"
        );
        let g = s.call(token, "grep", json!({"pattern": "^root:", "path": "/etc"}));
        assert!(!g.to_string().contains("shadow"), "{g}");
    }
    let out = s.bash(&rw, "cat /etc/shadow");
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(
        out["stderr"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{out}"
    );
    assert!(!out["stdout"].as_str().unwrap().contains("root:"), "{out}");

    // Under /etc: nothing written, by any tool.
    let probe = format!("/etc/{}-probe", a.name);
    let e = s.error(
        &rw,
        "write_file",
        json!({"file_path": probe, "content": "x"}),
    );
    assert_eq!(e, "PermissionError");
    let e = s.error(
        &rw,
        "edit_file",
        json!({"file_path": "/etc/hostname", "old_string": "\n", "new_string": "x\n"}),
    );
    assert_eq!(e, "PermissionError");
    let e = s.error(&rw, "prepare_upload", json!({"dest_path": probe}));
    assert_eq!(e, "PermissionError");
    let out = s.bash(&rw, &format!("touch {probe}"));
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(!Path::new(&probe).exists());

    // What it makes is its own: files and directories, through the tools and commands.
    let made = a.home.join("notes/new.txt");
    let v = s.call(
        &rw,
        "write_file",
        json!({"file_path": made.to_str().unwrap(), "content": "mine\n"}),
    );
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(owner(&made), (a.uid, a.gid));
    assert_eq!(owner(made.parent().unwrap()), (a.uid, a.gid));
    let v = s.call(
        &rw,
        "edit_file",
        json!({"file_path": made.to_str().unwrap(), "old_string": "mine", "new_string": "still mine"}),
    );
    assert_eq!(v["replacements"], 1, "{v}");
    assert_eq!(owner(&made), (a.uid, a.gid));
    // Transfers: redeemed as the account, the upload lands as its file.
    let v = s.call(
        &ro,
        "prepare_download",
        json!({"src_path": made.to_str().unwrap()}),
    );
    let r = http_request(s.front.addr, "GET", v["url"].as_str().unwrap(), &[], "");
    assert_eq!((r.status, r.body.as_str()), (200, "still mine\n"));
    let up = a.home.join("uploaded.txt");
    let v = s.call(
        &rw,
        "prepare_upload",
        json!({"dest_path": up.to_str().unwrap()}),
    );
    let r = http_request(
        s.front.addr,
        "PUT",
        v["url"].as_str().unwrap(),
        &[],
        "sent\n",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(std::fs::read_to_string(&up).unwrap(), "sent\n");
    assert_eq!(owner(&up), (a.uid, a.gid));
    let out = s.bash(&rw, "echo made > made-by-command.txt && mkdir sub");
    assert_eq!(out["exit_code"], 0, "{out}");
    assert_eq!(owner(&a.home.join("made-by-command.txt")), (a.uid, a.gid));
    assert_eq!(owner(&a.home.join("sub")), (a.uid, a.gid));

    // A file readable only through a supplementary group is readable; root's is not.
    file(&s.path("group.txt"), "GROUP-SHARED\n", 0o640, 0, group.gid);
    file(&s.path("root.txt"), &format!("{ROOT_ONLY}\n"), 0o600, 0, 0);
    let v = s.call(&ro, "read_file", json!({"file_path": s.p("group.txt")}));
    assert_eq!(v["content"], "   1\tGROUP-SHARED", "{v}");
    let out = s.bash(&rw, &format!("cat {}", s.p("group.txt")));
    assert_eq!(out["stdout"], "GROUP-SHARED\n", "{out}");
    let e = s.error(&ro, "read_file", json!({"file_path": s.p("root.txt")}));
    assert_eq!(e, "PermissionError");
    let g = s.call(
        &ro,
        "grep",
        json!({"pattern": "SHARED|ROOT-ONLY", "path": s.p("")}),
    );
    let results = g["results"].as_str().unwrap_or_default();
    assert!(results.contains("GROUP-SHARED"), "{g}");
    assert!(!g.to_string().contains(ROOT_ONLY), "{g}");

    // Protected paths apply on top of the account's rights: a file it may read is refused.
    std::fs::create_dir(s.path("prot")).unwrap();
    file(&s.path("prot/open.txt"), "GROUP-SHARED\n", 0o644, 0, 0);
    let e = s.error(&ro, "read_file", json!({"file_path": s.p("prot/open.txt")}));
    assert_eq!(e, "ProtectedPath");
    let e = s.error(&ro, "grep", json!({"pattern": "x", "path": s.p("prot")}));
    assert_eq!(e, "ProtectedPath");

    // A directory it may not read is skipped by glob and grep, as ripgrep does.
    std::fs::create_dir(s.path("closed")).unwrap();
    file(&s.path("closed/inside.txt"), "GROUP-SHARED\n", 0o644, 0, 0);
    chmod(&s.path("closed"), 0o700);
    let g = s.call(&ro, "glob", json!({"pattern": "**/*.txt", "path": s.p("")}));
    let files = g["files"].to_string();
    assert!(files.contains("group.txt"), "{g}");
    assert!(
        !files.contains("inside.txt") && !files.contains("open.txt"),
        "{g}"
    );
    let g = s.call(&ro, "grep", json!({"pattern": "SHARED", "path": s.p("")}));
    assert!(!g.to_string().contains("inside.txt"), "{g}");
    assert!(!g.to_string().contains("open.txt"), "{g}");

    // The operator sees the account: mymcpctl and the audit log (name and uid).
    let list = ctl(&s.exec.runtime_dir, &["token", "list", "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let acct = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acct")
        .unwrap();
    assert_eq!(acct["user"], a.name.as_str(), "{list}");
    let text = ctl(&s.exec.runtime_dir, &["token", "list"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("USER") && text.contains(&a.name), "{text}");
    let records = audit_records(&s.exec.audit_dir());
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| r["token_name"] == "acct" && r["tool"] == "bash_execute")
        .collect();
    assert!(!calls.is_empty(), "no audit record of the account's calls");
    for r in calls {
        assert_eq!(r["user"], a.name.as_str(), "{r}");
        assert_eq!(r["uid"], a.uid, "{r}");
    }
    for tool in ["transfer_download", "transfer_upload"] {
        let r = records
            .iter()
            .rfind(|r| r["tool"] == tool)
            .unwrap_or_else(|| panic!("no {tool} record"));
        assert_eq!(r["user"], a.name.as_str(), "{r}");
        assert_eq!(r["uid"], a.uid, "{r}");
    }
    let added = records
        .iter()
        .find(|r| r["tool"] == "token_add" && r["output"]["name"] == "acct")
        .expect("the token's creation is audited");
    assert_eq!(added["params"]["user"], a.name.as_str(), "{added}");
    assert_eq!(added["output"]["user"], a.name.as_str(), "{added}");
    assert!(
        added.get("uid").is_none(),
        "mymcpctl acts as no account: {added}"
    );
}

#[test]
fn sudo_works_as_the_sudoers_file_allows_and_fails_at_once_otherwise() {
    mymcp_tests::needs_root!();
    if Command::new("sudo").arg("--version").output().is_err() {
        eprintln!("skipped: sudo is not installed (tests/run installs it)");
        return;
    }
    let a = TestAccount::create("sudo");
    let s = Server::start();
    let rw = s.exec.add_token_as("acct", "rw", &a.name);

    let started = Instant::now();
    let out = s.bash(&rw, "sudo -n true");
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(
        out["stderr"]
            .as_str()
            .unwrap()
            .contains("password is required"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "sudo -n waited: {:?}",
        started.elapsed()
    );

    let _rule = SudoRule::add(&a.name, &format!("{} ALL=(ALL) NOPASSWD: ALL", a.name));
    let out = s.bash(&rw, "sudo -n true && sudo -n id -u");
    assert_eq!(out["exit_code"], 0, "{out}");
    assert_eq!(out["stdout"], "0\n", "{out}");
}

#[test]
fn two_accounts_cannot_read_each_others_files_jobs_or_processes() {
    mymcp_tests::needs_root!();
    let a = TestAccount::create("a");
    let b = TestAccount::create("b");
    let s = Server::start();
    let ta = s.exec.add_token_as("alice", "rw", &a.name);
    let tb = s.exec.add_token_as("bob", "rw", &b.name);
    chmod(s.dir.path(), 0o1777);

    // A's private file, made by a command and by write_file then narrowed.
    let out = s.bash(
        &ta,
        &format!("umask 077; echo A-SECRET > {}", s.p("a-cmd.txt")),
    );
    assert_eq!(out["exit_code"], 0, "{out}");
    let v = s.call(
        &ta,
        "write_file",
        json!({"file_path": s.p("a-tool.txt"), "content": "A-SECRET\n"}),
    );
    assert_eq!(v["success"], true, "{v}");
    let out = s.bash(&ta, &format!("chmod 600 {}", s.p("a-tool.txt")));
    assert_eq!(out["exit_code"], 0, "{out}");
    for f in ["a-cmd.txt", "a-tool.txt"] {
        assert_eq!(owner(&s.path(f)), (a.uid, a.gid));
        assert_eq!(
            s.error(&tb, "read_file", json!({"file_path": s.p(f)})),
            "PermissionError"
        );
        assert_eq!(
            s.error(&tb, "prepare_download", json!({"src_path": s.p(f)})),
            "PermissionError"
        );
        assert_eq!(
            s.error(
                &tb,
                "edit_file",
                json!({"file_path": s.p(f), "old_string": "A", "new_string": "B"})
            ),
            "PermissionError"
        );
        let v = s.call(&ta, "read_file", json!({"file_path": s.p(f)}));
        assert_eq!(v["content"], "   1\tA-SECRET", "{v}");
    }
    let g = s.call(&tb, "grep", json!({"pattern": "A-SECRET", "path": s.p("")}));
    assert!(!g.to_string().contains("A-SECRET"), "{g}");
    let out = s.bash(&tb, &format!("cat {}/a-*.txt", s.p("")));
    assert!(!out.to_string().contains("A-SECRET"), "{out}");
    // The sticky directory: B cannot replace A's file either.
    let e = s.error(
        &tb,
        "write_file",
        json!({"file_path": s.p("a-tool.txt"), "content": "B was here"}),
    );
    assert_eq!(e, "PermissionError");
    assert_eq!(owner(&s.path("a-tool.txt")), (a.uid, a.gid));

    // A's job: its output is not B's, through the tools or the spool files.
    let job = s.call(
        &ta,
        "bash_execute",
        json!({"command": "echo JOB-SECRET-A; echo $$ > /dev/stderr; sleep 60", "background": true}),
    );
    let id = job["job_id"].as_str().unwrap().to_owned();
    let pid = wait_for_job_pid(&s, &ta, &id);
    for tool in ["job_status", "job_output", "job_kill"] {
        assert_eq!(
            s.error(&tb, tool, json!({"job_id": id})),
            "NotFound",
            "{tool}"
        );
    }
    let spools = s.exec.state_dir().join("jobs");
    let out = s.bash(
        &tb,
        &format!(
            "cat {0}/* 2>&1; ls {0} 2>&1; grep -r JOB-SECRET-A /proc/{pid}/ 2>/dev/null | head -1",
            spools.display()
        ),
    );
    assert!(!out.to_string().contains("JOB-SECRET-A"), "{out}");
    // B cannot signal A's job, nor any thread of the executor (which acts as A meanwhile).
    let out = s.bash(&tb, &format!("kill -9 {pid}"));
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let exec_pid = s.exec.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (stop, addr, ta, p) = (stop.clone(), s.front.addr, ta.clone(), s.p(""));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = post_mcp(
                    addr,
                    &ta,
                    &tools_call(n, "grep", json!({"pattern": "A-SECRET", "path": p})),
                );
                assert_eq!(r.status, 200);
                n += 1;
            }
            n
        })
    };
    let out = s.bash(
        &tb,
        &format!(
            "end=$((SECONDS+2)); hits=0; while [ $SECONDS -lt $end ]; do \
             for t in /proc/{exec_pid}/task/*; do kill -0 ${{t##*/}} 2>/dev/null && hits=$((hits+1)); done; \
             done; echo hits=$hits"
        ),
    );
    stop.store(true, Ordering::Relaxed);
    let calls = busy.join().unwrap();
    assert_eq!(
        out["stdout"], "hits=0\n",
        "{out} ({calls} calls of A meanwhile)"
    );
    let out = s.bash(&ta, "id -un");
    assert_eq!(out["stdout"], format!("{}\n", a.name));

    let v = s.call(&ta, "job_output", json!({"job_id": id, "max_bytes": 1000}));
    assert!(
        v["stdout"].as_str().unwrap().contains("JOB-SECRET-A"),
        "{v}"
    );
    let v = s.call(&ta, "job_kill", json!({"job_id": id}));
    assert!(v["error"].is_null(), "{v}");
    // The job's end is recorded in A's name and account.
    let ended = mymcp_tests::wait_until(Duration::from_secs(10), || {
        audit_records(&s.exec.audit_dir())
            .iter()
            .any(|r| r["tool"] == "job_finished" && r["params"]["job_id"] == id.as_str())
    });
    assert!(ended, "no job_finished record");
    let records = audit_records(&s.exec.audit_dir());
    let end = records
        .iter()
        .find(|r| r["tool"] == "job_finished" && r["params"]["job_id"] == id.as_str())
        .unwrap();
    assert_eq!(end["user"], a.name.as_str(), "{end}");
    assert_eq!(end["uid"], a.uid, "{end}");
}

/// The pid of a job that prints it on stderr first.
fn wait_for_job_pid(s: &Server, token: &str, id: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = s.call(
            token,
            "job_output",
            json!({"job_id": id, "wait_seconds": 2}),
        );
        if let Some(pid) = v["stderr"]
            .as_str()
            .and_then(|e| e.lines().next())
            .and_then(|l| l.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the job printed no pid: {v}");
    }
}

/// A symlink swapped between a file the account may read and a root-only one (not a
/// protected path: only the account's rights stand in the way) while 2,000 calls read it.
#[test]
fn reads_through_a_swapped_symlink_never_reach_a_root_only_file() {
    mymcp_tests::needs_root!();
    let a = TestAccount::create("race");
    let s = Server::start();
    let ro = s.exec.add_token_as("acct", "ro", &a.name);
    file(&s.path("harmless.txt"), "harmless\n", 0o644, 0, 0);
    file(&s.path("root.txt"), &format!("{ROOT_ONLY}\n"), 0o600, 0, 0);
    let link = s.path("link");
    std::os::unix::fs::symlink(s.path("harmless.txt"), &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = swap_symlink(
        &link,
        &s.path("harmless.txt"),
        &s.path("root.txt"),
        stop.clone(),
    );
    let (mut ok, mut refused) = (0, 0);
    for i in 0..2000u64 {
        // Download tickets count until they expire (256 per token): one call in ten.
        let (tool, args) = match i % 10 {
            0 => ("prepare_download", json!({"src_path": s.p("link")})),
            1..=4 => (
                "grep",
                json!({"pattern": "ROOT|harmless", "path": s.p("link")}),
            ),
            _ => ("read_file", json!({"file_path": s.p("link")})),
        };
        let r = post_mcp(s.front.addr, &ro, &tools_call(i, tool, args));
        assert!(
            !r.body.contains(ROOT_ONLY),
            "leaked on call {i}: {}",
            r.body
        );
        let v = r.tool_json();
        match v["error"].as_str() {
            None => ok += 1,
            Some("PermissionError") => refused += 1,
            Some(other) => panic!("call {i}: unexpected {other}: {v}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    eprintln!("{ok} harmless calls, {refused} refusals, {flips} swaps");
    assert!(ok > 0 && refused > 0, "the race was not exercised");
}

/// A parent directory swapped between the account's own and root's while 2,000 writes go
/// through it: nothing is ever created in root's directory.
#[test]
fn writes_through_a_swapped_parent_never_land_in_roots_directory() {
    mymcp_tests::needs_root!();
    let a = TestAccount::create("wrace");
    let s = Server::start();
    let rw = s.exec.add_token_as("acct", "rw", &a.name);
    std::fs::create_dir(s.path("mine")).unwrap();
    chown(&s.path("mine"), a.uid, a.gid);
    std::fs::create_dir(s.path("roots")).unwrap();
    chmod(&s.path("roots"), 0o755);
    let link = s.path("d");
    std::os::unix::fs::symlink(s.path("mine"), &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = swap_symlink(&link, &s.path("mine"), &s.path("roots"), stop.clone());
    let (mut ok, mut refused) = (0, 0);
    for i in 0..2000u64 {
        // Upload tickets count until they expire (256 per token): one call in ten.
        let (tool, args) = if i % 10 == 0 {
            ("prepare_upload", json!({"dest_path": s.p("d/up.txt")}))
        } else {
            (
                "write_file",
                json!({"file_path": s.p("d/new/x.txt"), "content": "PWNED"}),
            )
        };
        let v = s.call(&rw, tool, args);
        match v["error"].as_str() {
            None => ok += 1,
            Some("PermissionError") => refused += 1,
            Some(other) => panic!("call {i}: unexpected {other}: {v}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    eprintln!("{ok} harmless writes, {refused} refusals");
    assert!(ok > 0 && refused > 0, "the race was not exercised");
    let names: Vec<_> = std::fs::read_dir(s.path("roots")).unwrap().collect();
    assert!(names.is_empty(), "created in root's directory: {names:?}");
    assert_eq!(owner(&s.path("mine/new/x.txt")), (a.uid, a.gid));
}

#[test]
fn an_unknown_deleted_or_expired_account_runs_nothing() {
    mymcp_tests::needs_root!();
    let a = TestAccount::create("gone");
    let s = Server::start();

    // No token for an account that does not exist, by mymcpctl or the admin API.
    let out = ctl(
        &s.exec.runtime_dir,
        &[
            "token",
            "add",
            "--name",
            "x",
            "--role",
            "rw",
            "--user",
            "mmacct-no-such",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no account named 'mmacct-no-such'"), "{err}");
    let out = ctl(
        &s.exec.runtime_dir,
        &[
            "token", "add", "--name", "x", "--role", "rw", "--user", "a:b",
        ],
    );
    assert!(!out.status.success());
    let admin = s.exec.add_token("admin", "admin");
    let r = http_request(
        s.front.addr,
        "POST",
        "/admin/tokens",
        &[("Authorization", &format!("Bearer {admin}"))],
        r#"{"name":"x","role":"rw","user":"mmacct-no-such"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("mmacct-no-such"), "{}", r.body);

    let rw = s.exec.add_token_as("acct", "rw", &a.name);
    let marker = s.path("ran");
    let touch = format!("touch {}", marker.display());
    assert_eq!(s.bash(&rw, "id -un")["stdout"], format!("{}\n", a.name));

    // Expired (chage -E 0: since 1970): typed refusal, nothing runs; and back.
    let chage = |expiry: &str| {
        let out = Command::new("chage")
            .args(["-E", expiry, &a.name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    chage("0");
    let v = s.bash(&rw, &touch);
    assert_eq!(v["error"], "AccountUnavailable", "{v}");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    let v = s.call(&rw, "read_file", json!({"file_path": "/etc/hostname"}));
    assert_eq!(v["error"], "AccountUnavailable", "{v}");
    assert!(!marker.exists());
    chage("-1");
    assert_eq!(s.bash(&rw, "id -un")["stdout"], format!("{}\n", a.name));

    // Deleted: the next call says so.
    let (name, uid) = (a.name.clone(), a.uid);
    drop(a);
    let v = s.bash(&rw, &touch);
    assert_eq!(v["error"], "AccountUnavailable", "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains(&name) && message.contains("does not exist"),
        "{v}"
    );
    assert!(!marker.exists());
    // The audit log names the account of the refused call (no uid: it did not resolve).
    let records = audit_records(&s.exec.audit_dir());
    let last = records.iter().rfind(|r| r["token_name"] == "acct").unwrap();
    assert_eq!(last["user"], name.as_str(), "{last}");
    assert!(last["uid"].is_null(), "{last} (was {uid})");
}

#[test]
fn tokens_without_an_account_get_the_default_and_the_admin_api_sets_one() {
    mymcp_tests::needs_root!();
    let a = TestAccount::create("dflt");
    let b = TestAccount::create("api");
    let s = Server::start_with(&[("MYMCP_DEFAULT_USER", &a.name)]);
    let plain = s.exec.add_token("plain", "rw");
    assert_eq!(s.bash(&plain, "id -un")["stdout"], format!("{}\n", a.name));

    let admin = s.exec.add_token("admin", "admin");
    let auth = format!("Bearer {admin}");
    let body = format!(r#"{{"name":"api","role":"rw","user":"{}"}}"#, b.name);
    let r = http_request(
        s.front.addr,
        "POST",
        "/admin/tokens",
        &[("Authorization", &auth)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    assert_eq!(created["user"], b.name.as_str(), "{created}");
    let token = created["token"].as_str().unwrap();
    assert_eq!(s.bash(token, "id -un")["stdout"], format!("{}\n", b.name));
    let r = http_request(
        s.front.addr,
        "GET",
        "/admin/tokens",
        &[("Authorization", &auth)],
        "",
    );
    let listed = r.json();
    let users: Vec<(&str, &str)> = listed
        .as_object()
        .unwrap()
        .values()
        .map(|t| (t["name"].as_str().unwrap(), t["user"].as_str().unwrap()))
        .collect();
    assert!(users.contains(&("api", b.name.as_str())), "{listed}");
    assert!(users.contains(&("plain", a.name.as_str())), "{listed}");
}

#[test]
fn the_quick_try_acts_as_the_account_it_was_given() {
    mymcp_tests::needs_root!();
    let a = TestAccount::create("serve");
    let (quick, banner) = QuickTry::start_with(&bin("mymcpctl"), &["--user", &a.name], &[]);
    let said = format!("[mymcp] tools act as account {} (uid {})", a.name, a.uid);
    // Printed before the line that ends what start_with waits for.
    assert!(banner.iter().any(|l| l.starts_with(&said)), "{banner:?}");
    let addr = quick
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse()
        .unwrap();
    let r = post_mcp(
        addr,
        &quick.rw_token,
        &tools_call(1, "bash_execute", json!({"command": "id -un; pwd"})),
    );
    let v = r.tool_json();
    assert_eq!(
        v["stdout"],
        format!("{}\n{}\n", a.name, a.home.display()),
        "{v}"
    );
    // Tokens added to the quick try act as the account too.
    let more = ctl(
        &quick.runtime_dir,
        &["token", "add", "--name", "more", "--role", "ro", "--json"],
    );
    let more: Value = serde_json::from_slice(&more.stdout).unwrap();
    assert_eq!(more["user"], a.name.as_str(), "{more}");
    drop(quick);

    let out = Command::new(bin("mymcpctl"))
        .args(["serve", "--port", "0", "--user", "mmacct-no-such"])
        .env("MYMCP_FRONTEND_USER", "nobody")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no account named \"mmacct-no-such\""), "{err}");
}

fn audit_records(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

#[test]
fn install_sets_the_default_account_and_doctor_checks_it() {
    mymcp_tests::needs_root!();
    let a = TestAccount::create("inst");
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let ctl_out = |args: &[&str]| {
        let out = Command::new(bin("mymcpctl")).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let (code, text) = ctl_out(&["install", "--root", r, "--tools-user", &a.name]);
    assert_eq!(code, Some(0), "{text}");
    let env = root.path().join("etc/mymcp/.env");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        format!("MYMCP_DEFAULT_USER={}\n", a.name)
    );
    assert_eq!(std::fs::metadata(&env).unwrap().mode() & 0o777, 0o600);
    let (code, text) = ctl_out(&["install", "--root", r, "--tools-user", "a:b"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("not an account name"), "{text}");

    let doctor = |env: &Path| {
        ctl_out(&[
            "--runtime-dir",
            "/nonexistent",
            "doctor",
            "--env-file",
            env.to_str().unwrap(),
        ])
    };
    let (_, text) = doctor(&env);
    assert!(
        text.contains(&format!(
            "tokens without an account of their own act as \"{}\"",
            a.name
        )),
        "{text}"
    );
    std::fs::write(&env, "MYMCP_DEFAULT_USER=mmacct-no-such\n").unwrap();
    let (code, text) = doctor(&env);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("MYMCP_DEFAULT_USER \"mmacct-no-such\" names no account"),
        "{text}"
    );
}
