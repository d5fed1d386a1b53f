//! Secrets against a read-only token: what finding F1 of the security review did (an `ro`
//! token read the admin token from `/proc/self/environ`, minted an `rw` token with it and was
//! root), tried against every mymcp process and every file tool, and the classes it belongs
//! to: no secret stays in any mymcp process's environment, the `/proc/<pid>` tree of every
//! mymcp process is protected, and so are systemd's credential copies and the TLS key. Also
//! the rename race on a protected file entry (its old content was readable under `(deleted)`).

use mymcp_tests::{
    bin, children_of, http_request, post_mcp, proc_comm, tools_call, ExecutorProcess,
    FrontendProcess, QuickTry,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ADMIN: &str = "tok_a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a11a1";
const METRICS: &str = "tok_3e753e753e753e753e753e753e753e753e753e753e753e753e753e753e753e75";

/// Calls a tool; returns (isError, tool JSON).
fn call(addr: SocketAddr, token: &str, tool: &str, args: Value) -> (bool, Value) {
    let r = post_mcp(addr, token, &tools_call(1, tool, args));
    assert_eq!(r.status, 200, "{}", r.body);
    let is_error = r.json()["result"]["isError"].as_bool().unwrap_or(false);
    (is_error, r.tool_json())
}

/// The tool's answer must be a `ProtectedPath` refusal.
fn assert_protected(addr: SocketAddr, token: &str, tool: &str, args: Value) {
    let (is_error, v) = call(addr, token, tool, args.clone());
    assert!(is_error, "{tool} {args} was answered: {v}");
    assert_eq!(v["error"], "ProtectedPath", "{tool} {args}: {v}");
}

/// An admin API request with `token`.
fn admin(addr: SocketAddr, method: &str, token: &str, body: &str) -> mymcp_tests::HttpResponse {
    let bearer = format!("Bearer {token}");
    http_request(
        addr,
        method,
        "/admin/tokens",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        body,
    )
}

/// A glob of everything below `dir` lists nothing.
fn assert_glob_empty(addr: SocketAddr, token: &str, dir: &str) {
    let (is_error, v) = call(addr, token, "glob", json!({"pattern": "**/*", "path": dir}));
    assert!(!is_error, "{v}");
    assert_eq!(v["count"], 0, "glob {dir}: {v}");
}

fn environ(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
        .into_owned()
}

fn a_thread_of(pid: u32) -> String {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|t| *t != pid.to_string())
        .unwrap_or_else(|| pid.to_string())
}

/// Every way an `ro` token could read the `/proc` tree of a mymcp process `pid`.
fn attack_proc_tree(addr: SocketAddr, ro: &str, pid: u32) {
    let tid = a_thread_of(pid);
    for file in [
        format!("/proc/{pid}/environ"),
        format!("/proc/{pid}/cmdline"),
        format!("/proc/{pid}/maps"),
        format!("/proc/{pid}/mem"),
        format!("/proc/{pid}/status"),
        format!("/proc/{pid}/task/{tid}/environ"),
        format!("/proc/{tid}/environ"),
    ] {
        assert_protected(addr, ro, "read_file", json!({"file_path": file}));
        assert_protected(addr, ro, "prepare_download", json!({"src_path": file}));
        assert_protected(addr, ro, "grep", json!({"pattern": "MYMCP", "path": file}));
    }
    for dir in [format!("/proc/{pid}"), format!("/proc/{pid}/task")] {
        assert_protected(addr, ro, "grep", json!({"pattern": "tok_", "path": dir}));
        // glob filters protected places out silently, as the reference does.
        assert_glob_empty(addr, ro, &dir);
    }
    // A walk from /proc meets the process's directory and leaves it out.
    let (is_error, v) = call(
        addr,
        ro,
        "glob",
        json!({"pattern": "*/environ", "path": "/proc"}),
    );
    assert!(!is_error, "{v}");
    let files = v["files"].as_array().expect("files").clone();
    assert!(
        !files.is_empty(),
        "other processes' environ are listed: {v}"
    );
    assert!(
        !files
            .iter()
            .any(|f| f == &json!(format!("/proc/{pid}/environ"))),
        "{pid} listed: {v}"
    );
}

/// A process that is not mymcp's: its `/proc` tree stays readable (the rule is about mymcp's
/// processes, not a blanket ban on `/proc`).
fn sleeper() -> Child {
    Command::new("sleep").arg("60").spawn().unwrap()
}

#[test]
fn an_ro_token_cannot_read_the_admin_token_from_any_mymcp_process() {
    mymcp_tests::needs_root!();
    // The attack as found: the admin and metrics tokens in the executor's environment (the
    // shipped unit loaded them with EnvironmentFile=; the quick try's executor inherited them).
    let exec = ExecutorProcess::start_with_env(
        "nobody",
        &[
            ("MYMCP_ADMIN_TOKEN", ADMIN),
            ("MYMCP_METRICS_TOKEN", METRICS),
        ],
    );
    let front = FrontendProcess::start(&exec.executor_socket());
    let ro = exec.add_token("reader", "ro");

    // Gone from where /proc shows the environment, not only from libc's copy of it.
    let env = environ(exec.pid());
    assert!(
        !env.contains(ADMIN),
        "admin token in /proc/<executor>/environ"
    );
    assert!(
        !env.contains(METRICS),
        "metrics token in /proc/<executor>/environ"
    );
    // …and still imported: the admin token works.
    let r = admin(front.addr, "GET", ADMIN, "");
    assert_eq!(r.status, 200, "{}", r.body);

    // The chain of the finding: /proc/self is the executor's own tree.
    assert_protected(
        front.addr,
        &ro,
        "read_file",
        json!({"file_path": "/proc/self/environ"}),
    );
    assert_protected(
        front.addr,
        &ro,
        "read_file",
        json!({"file_path": "/proc/thread-self/environ"}),
    );
    attack_proc_tree(front.addr, &ro, exec.pid());
    attack_proc_tree(front.addr, &ro, front.pid());

    // Kernel memory holds every process's secrets.
    if Path::new("/proc/kcore").exists() {
        assert_protected(
            front.addr,
            &ro,
            "grep",
            json!({"pattern": "tok_", "path": "/proc/kcore"}),
        );
    }

    // Another process's tree is not mymcp's to protect.
    let mut other = sleeper();
    let (is_error, v) = call(
        front.addr,
        &ro,
        "read_file",
        json!({"file_path": format!("/proc/{}/cmdline", other.id())}),
    );
    let _ = other.kill();
    let _ = other.wait();
    assert!(!is_error, "{v}");
    assert!(v["content"].as_str().unwrap().contains("sleep"), "{v}");
}

#[test]
fn the_quick_try_takes_secrets_out_of_every_environment_it_starts_with() {
    mymcp_tests::needs_root!();
    let serve = QuickTry::start_with_env(&[("MYMCP_ADMIN_TOKEN", ADMIN)]);
    let executor = children_of(serve.pid())
        .into_iter()
        .find(|p| proc_comm(*p) == "mymcp-executor")
        .expect("executor child");
    for pid in [serve.pid(), executor] {
        assert!(
            !environ(pid).contains(ADMIN),
            "admin token in /proc/{pid}/environ"
        );
    }
    let addr: SocketAddr = serve
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse()
        .unwrap();
    // Imported as a digest: it works as the admin token, and mints an ro token…
    let r = admin(addr, "POST", ADMIN, r#"{"name":"probe","role":"ro"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let ro = r.json()["token"].as_str().unwrap().to_owned();
    // …which finds nothing to read in mymcpctl's tree either.
    attack_proc_tree(addr, &ro, serve.pid());
    attack_proc_tree(addr, &ro, executor);
}

#[test]
fn the_recorders_api_key_leaves_its_environment_and_its_tree_is_protected() {
    mymcp_tests::needs_root!();
    const KEY: &str = "sk-recorder-secret-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let exec = ExecutorProcess::start("nobody");
    let front = FrontendProcess::start(&exec.executor_socket());
    let ro = exec.add_token("reader", "ro");
    let mut recorder = Command::new(bin("mymcp-recorder"))
        .arg("--allow-root")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("MYMCP_RECORDER_ENABLED", "true")
        .env("MYMCP_RECORDER_DATA_DIR", dir.path().join("recorder"))
        .env("MYMCP_AUDIT_LOG_DIR", dir.path().join("audit"))
        // Nothing answers there: the recorder keeps retrying, which is all this needs.
        .env("MYMCP_RECORDER_LLM_BASE_URL", "http://127.0.0.1:9")
        .env("MYMCP_RECORDER_LLM_API_KEY", KEY)
        .env("ANTHROPIC_API_KEY", KEY)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = recorder.id();
    // Wait until it runs its own code (its environment is scrubbed first thing).
    mymcp_tests::wait_until(Duration::from_secs(10), || {
        proc_comm(pid) == "mymcp-recorder"
    });
    std::thread::sleep(Duration::from_millis(300));
    let alive = recorder.try_wait().unwrap().is_none();
    let env = environ(pid);
    if alive {
        attack_proc_tree(front.addr, &ro, pid);
    }
    let _ = recorder.kill();
    let _ = recorder.wait();
    assert!(alive, "the recorder exited");
    assert!(!env.contains(KEY), "API key in /proc/<recorder>/environ");
}

/// `/run/credentials/<unit>` as systemd lays it out for `LoadCredential=`; removed on drop.
struct Credentials {
    made: Vec<std::path::PathBuf>,
}

impl Credentials {
    fn create(units: &[(&str, &str, &str)]) -> Credentials {
        let top = Path::new("/run/credentials");
        let mut made = Vec::new();
        if !top.exists() {
            std::fs::create_dir_all(top).unwrap();
            made.push(top.to_owned());
        }
        for (unit, name, content) in units {
            let d = top.join(unit);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join(name), content).unwrap();
            made.insert(0, d);
        }
        Credentials { made }
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        for d in &self.made {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
fn systemd_credentials_and_the_tls_key_are_protected() {
    mymcp_tests::needs_root!();
    let suffix = std::process::id();
    let front_unit = format!("mymcp-frontend-{suffix}.service");
    let exec_unit = format!("mymcp-executor-{suffix}.service");
    let other_unit = format!("other-{suffix}.service");
    let creds = Credentials::create(&[
        (
            &front_unit,
            "tls.key",
            "-----BEGIN PRIVATE KEY----- FRONTKEY",
        ),
        (&exec_unit, "admin-token", ADMIN),
        (&other_unit, "note", "NOT-MYMCPS"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY----- DISKKEY").unwrap();
    let exec_creds = format!("/run/credentials/{exec_unit}");
    let exec = ExecutorProcess::start_with_env(
        "nobody",
        &[
            ("MYMCP_TLS_KEY", key.to_str().unwrap()),
            ("CREDENTIALS_DIRECTORY", &exec_creds),
        ],
    );
    let front = FrontendProcess::start(&exec.executor_socket());
    let ro = exec.add_token("reader", "ro");
    // The executor reads its admin token from its credential.
    let r = admin(front.addr, "GET", ADMIN, "");
    assert_eq!(r.status, 200, "{}", r.body);

    for file in [
        format!("/run/credentials/{front_unit}/tls.key"),
        format!("/run/credentials/{exec_unit}/admin-token"),
        key.to_str().unwrap().to_owned(),
    ] {
        assert_protected(front.addr, &ro, "read_file", json!({"file_path": file}));
        assert_protected(
            front.addr,
            &ro,
            "prepare_download",
            json!({"src_path": file}),
        );
    }
    assert_glob_empty(front.addr, &ro, &format!("/run/credentials/{front_unit}"));
    // Walks over all credentials see the other unit's and nothing of mymcp's.
    let (is_error, v) = call(
        front.addr,
        &ro,
        "grep",
        json!({"pattern": "KEY|NOT|tok_", "path": "/run/credentials", "output_mode": "content"}),
    );
    assert!(!is_error, "{v}");
    let text = v.to_string();
    assert!(text.contains("NOT-MYMCPS"), "{v}");
    assert!(!text.contains("FRONTKEY") && !text.contains(ADMIN), "{v}");
    let (_, v) = call(
        front.addr,
        &ro,
        "glob",
        json!({"pattern": "**/*", "path": "/run/credentials"}),
    );
    let text = v.to_string();
    assert!(text.contains(&other_unit), "{v}");
    assert!(!text.contains("mymcp-"), "{v}");
    drop(creds);
}

#[test]
fn a_protected_file_replaced_by_rename_is_never_read_in_the_window() {
    mymcp_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server.key");
    std::fs::write(&key, "SECRET-0\n").unwrap();
    let exec = ExecutorProcess::start_with_env(
        "nobody",
        &[("MYMCP_PROTECTED_PATHS", key.to_str().unwrap())],
    );
    let front = FrontendProcess::start(&exec.executor_socket());
    let ro = exec.add_token("reader", "ro");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The owner rotates the key the usual way: a new file renamed over the old one.
    let rotator = {
        let (stop, key, dir) = (stop.clone(), key.clone(), dir.path().to_owned());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let tmp = dir.join(format!(".new-{n}"));
                std::fs::write(&tmp, format!("SECRET-{n}\n")).unwrap();
                std::fs::rename(&tmp, &key).unwrap();
                // Leave the reads some of the machine.
                std::thread::sleep(Duration::from_micros(200));
            }
            n
        })
    };
    let mut leaked = Vec::new();
    for _ in 0..600 {
        let (is_error, v) = call(front.addr, &ro, "read_file", json!({"file_path": key}));
        if !is_error || v.to_string().contains("SECRET-") {
            leaked.push(v);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rotations = rotator.join().unwrap();
    assert!(rotations > 100, "only {rotations} renames raced the reads");
    assert!(
        leaked.is_empty(),
        "{} reads leaked: {:?}",
        leaked.len(),
        &leaked[..1]
    );
}
