//! A token's view of the host, end to end (the real executor as root, the real frontend as
//! nobody): write roots (`--write-root`: everything else read-only to the token's commands and
//! file tools), hidden paths (`--hide`), `--no-network`, and mymcp's own audit trail kept out
//! of reach of every token's commands, root-mapped ones included.

use mymcp_tests::{call_tool as tool, ctl, post_mcp, tools_call, ExecutorProcess, FrontendProcess};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

fn bash(addr: SocketAddr, token: &str, command: &str) -> Value {
    tool(addr, token, "bash_execute", json!({ "command": command }))
}

/// A directory below /usr/local (outside any write root the tests give), removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = Path::new("/usr/local").join(format!("mmconf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn outside_its_write_roots_a_token_changes_nothing() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start_with_env("nobody", &[]);
    let front = FrontendProcess::start(&exec.executor_socket());
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().canonicalize().unwrap();
    let root_s = root_path.to_str().unwrap();
    let boxed = exec.add_token_with("boxed", "rw", &["--write-root", root_s]);
    let free = exec.add_token("free", "rw");
    let outside = Scratch::new("outside");
    let target = outside.0.join("x");
    let t = target.to_str().unwrap();

    // A command: refused by the kernel outside the root, fine inside.
    let out = bash(front.addr, &boxed, &format!("touch {t}"));
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(
        out["stderr"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{out}"
    );
    assert!(!target.exists());
    let out = bash(
        front.addr,
        &boxed,
        &format!("echo in > {root_s}/inside; cat {root_s}/inside"),
    );
    assert_eq!(out["stdout"], "in\n", "{out}");
    // The same account without a write root may.
    let out = bash(front.addr, &free, &format!("touch {t}"));
    assert_eq!(out["exit_code"], 0, "{out}");
    std::fs::remove_file(&target).unwrap();

    // write_file: the same rule on the opened object.
    let r = post_mcp(
        front.addr,
        &boxed,
        &tools_call(1, "write_file", json!({"file_path": t, "content": "no"})),
    );
    assert!(
        r.body.contains("isError") && r.body.contains("true"),
        "{}",
        r.body
    );
    assert!(!target.exists(), "write_file wrote outside the write root");
    let inside = format!("{root_s}/by-tool");
    let out = tool(
        front.addr,
        &boxed,
        "write_file",
        json!({"file_path": inside, "content": "yes"}),
    );
    assert!(
        out.to_string().contains("by-tool") || out.is_object(),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&inside).unwrap(), "yes");
}

#[test]
fn a_hidden_path_is_invisible_to_commands_and_tools() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start_with_env("nobody", &[]);
    let front = FrontendProcess::start(&exec.executor_socket());
    let secret = Scratch::new("hidden");
    std::fs::write(secret.0.join("key.txt"), "s3cret\n").unwrap();
    let s = secret.0.to_str().unwrap();
    let token = exec.add_token_with("blind", "rw", &["--hide", s]);

    let out = bash(front.addr, &token, &format!("ls -A {s}; cat {s}/key.txt"));
    assert!(
        !out["stdout"].as_str().unwrap().contains("key.txt"),
        "{out}"
    );
    assert!(!out.to_string().contains("s3cret"), "{out}");
    let r = post_mcp(
        front.addr,
        &token,
        &tools_call(1, "read_file", json!({"file_path": format!("{s}/key.txt")})),
    );
    assert!(!r.body.contains("s3cret"), "{}", r.body);
    let r = post_mcp(
        front.addr,
        &token,
        &tools_call(1, "glob", json!({"pattern": "**/*.txt", "path": s})),
    );
    assert!(!r.body.contains("key.txt"), "{}", r.body);
}

#[test]
fn no_network_commands_cannot_reach_the_frontend() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start_with_env("nobody", &[]);
    let front = FrontendProcess::start(&exec.executor_socket());
    let offline = exec.add_token_with("offline", "rw", &["--no-network"]);
    let online = exec.add_token("online", "rw");
    let port = front.addr.port();
    let probe = format!(
        "ip -o link 2>/dev/null | awk '{{print $2}}' | tr -d : | tr '\\n' ' '; \
         (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo reached || echo unreachable"
    );
    let out = bash(front.addr, &online, &probe);
    assert!(
        out["stdout"].as_str().unwrap().ends_with("reached\n"),
        "{out}"
    );
    assert!(
        !out["stdout"].as_str().unwrap().contains("unreachable"),
        "{out}"
    );
    let out = bash(front.addr, &offline, &probe);
    assert!(
        out["stdout"].as_str().unwrap().contains("unreachable"),
        "{out}"
    );
    // Its own loopback works.
    let out = bash(
        front.addr,
        &offline,
        "ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo lo-up || cat /sys/class/net/lo/operstate",
    );
    assert!(
        out.to_string().contains("lo-up") || out.to_string().contains("unknown"),
        "{out}"
    );
}

#[test]
fn rm_rf_of_the_audit_directory_fails_even_for_root_and_the_chain_verifies() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start_with_env("nobody", &[("MYMCP_AUDIT_ENABLED", "true")]);
    let front = FrontendProcess::start(&exec.executor_socket());
    let rw = exec.add_token("root-mapped", "rw");
    let dir = exec.audit_dir();
    let d = dir.to_str().unwrap();
    let before = std::fs::read_dir(&dir).unwrap().count();
    assert!(before > 0);
    let out = bash(front.addr, &rw, &format!("id -u; rm -rf {d}; echo rm=$?"));
    assert_eq!(out["stdout"], "0\nrm=1\n", "{out}");
    assert!(
        out["stderr"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{out}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), before);
    // More calls are recorded and the chain still verifies.
    bash(front.addr, &rw, "true");
    let out = ctl(&exec.runtime_dir, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn for_an_ordinary_account_the_kernel_keeps_the_view() {
    mymcp_tests::needs_root!();
    let a = mymcp_tests::TestAccount::create_with_prefix("mmconf", "view", &[]);
    let exec = ExecutorProcess::start_with_env("nobody", &[]);
    let front = FrontendProcess::start(&exec.executor_socket());
    let work = a.home.join("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(a.uid), Some(a.gid)).unwrap();
    let w = work.to_str().unwrap();
    let token = exec.add_token_with("acct", "rw", &["--user", &a.name, "--write-root", w]);
    let home = a.home.display();
    let out = bash(
        front.addr,
        &token,
        &format!(
            "touch {home}/outside 2>&1; touch {w}/inside && echo inside; \
             umount {w} 2>&1; mount -o remount,rw / 2>&1; \
             unshare -rm sh -c 'mount -o remount,rw / && touch {home}/escaped' 2>&1; \
             touch {home}/outside2 2>&1; echo end"
        ),
    );
    let text = out["stdout"].as_str().unwrap();
    assert!(
        text.contains("inside\n") && text.ends_with("end\n"),
        "{out}"
    );
    assert!(text.contains("Read-only file system"), "{out}");
    for f in ["outside", "escaped", "outside2"] {
        assert!(!a.home.join(f).exists(), "{f} was written: {out}");
    }
    assert!(work.join("inside").exists());
}

#[test]
fn the_admin_api_sets_a_tokens_view() {
    mymcp_tests::needs_root!();
    let exec = ExecutorProcess::start_with_env("nobody", &[]);
    let front = FrontendProcess::start(&exec.executor_socket());
    let admin = exec.add_token("admin", "admin");
    let auth = format!("Bearer {admin}");
    let post = |body: &str| {
        mymcp_tests::http_request(
            front.addr,
            "POST",
            "/admin/tokens",
            &[("Authorization", &auth)],
            body,
        )
    };
    let outside = Scratch::new("api");
    let t = outside.0.join("x");
    let r = post(
        r#"{"name":"api","role":"rw","write_roots":["/var/tmp"],"hide":["/srv/nothing"],"no_network":true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    assert_eq!(created["write_roots"], json!(["/var/tmp"]), "{created}");
    assert_eq!(created["no_network"], true, "{created}");
    let token = created["token"].as_str().unwrap();
    let out = bash(
        front.addr,
        token,
        &format!("touch {}; echo rc=$?", t.display()),
    );
    assert!(out["stdout"].as_str().unwrap().contains("rc=1"), "{out}");
    assert!(!t.exists());
    for (body, why) in [
        (
            r#"{"name":"b","write_roots":["relative"]}"#,
            "must be an absolute path",
        ),
        (
            r#"{"name":"b","hide":["/a/../b"]}"#,
            "must be an absolute path",
        ),
        (
            r#"{"name":"b","write_roots":["/srv"],"hide":["/srv/x"]}"#,
            "inside the write root",
        ),
        (
            r#"{"name":"b","no_network":"yes"}"#,
            "no_network must be true or false",
        ),
    ] {
        let r = post(body);
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains(why), "{}", r.body);
    }
}
