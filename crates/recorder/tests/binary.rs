//! The real `mymcp-recorder` binary: its refusals, and (as root) a run as an unprivileged user
//! that follows a group-readable audit log, bootstraps with probes that run as that user, merges
//! on its interval, writes its metrics file and stops on SIGTERM.

mod support;

use mymcp_audit::log::{AuditLog, LogConfig};
use mymcp_recorder::llm::Provider;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{echo_merge, tool_call, FakeLlm, Scripted};

const NOBODY: u32 = 65534;

/// The recorder cargo built, or its copy in `MYMCP_BIN_DIR`: tests/run copies the binaries
/// where nobody can reach them when the checkout is out of nobody's reach (a home directory).
fn recorder_bin() -> std::path::PathBuf {
    match std::env::var_os("MYMCP_BIN_DIR") {
        Some(dir) => Path::new(&dir).join("mymcp-recorder"),
        None => env!("CARGO_BIN_EXE_mymcp-recorder").into(),
    }
}

fn base(dir: &Path, llm: &FakeLlm) -> Command {
    let mut c = Command::new(recorder_bin());
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("MYMCP_RECORDER_DATA_DIR", dir.join("recorder"))
        .env("MYMCP_AUDIT_LOG_DIR", dir.join("audit"))
        .env("MYMCP_RECORDER_LLM_BASE_URL", &llm.url)
        .env("MYMCP_RECORDER_LLM_API_KEY", "test-key")
        .env("MYMCP_RECORDER_LLM_TIMEOUT_SEC", "5")
        .stdin(Stdio::null());
    c
}

#[test]
fn it_refuses_to_run_unless_enabled_and_names_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let out = base(dir.path(), &llm).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MYMCP_RECORDER_ENABLED is not true"));
    let out = base(dir.path(), &llm)
        .env("MYMCP_RECORDER_MAX_EVENTS_PER_CYCLE", "lots")
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("MYMCP_RECORDER_MAX_EVENTS_PER_CYCLE: invalid integer \"lots\""));
    assert_eq!(llm.count(), 0);
}

#[test]
fn as_root_it_refuses_without_allow_root() {
    if !runs_as_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start();
    let out = base(dir.path(), &llm)
        .env("MYMCP_RECORDER_ENABLED", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run as root"));
}

/// Whether the test runs as root; if not, says "skipped: needs root" (past the harness's output
/// capture, so that `cargo test` shows it) and the test returns.
fn runs_as_root() -> bool {
    let euid = mymcp_sys::euid();
    if euid != 0 {
        use std::io::Write as _;
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("test");
        let _ = writeln!(std::io::stderr(), "{name}: skipped: needs root");
    }
    euid == 0
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn random(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

#[test]
fn as_an_unprivileged_user_it_bootstraps_merges_on_its_interval_and_stops_on_sigterm() {
    if !runs_as_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The audit directory as installed: root's, set-group-id to the recorder's group, 2750.
    let audit = dir.path().join("audit");
    std::fs::create_dir(&audit).unwrap();
    chown(&audit, 0, NOBODY);
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o2750)).unwrap();
    let mut log = AuditLog::open(
        LogConfig {
            dir: audit.clone(),
            key_file: dir.path().join("state/signing.key"),
            max_bytes: 1 << 20,
            backup_count: 5,
            seal_records: 1_000_000,
            seal_interval: Duration::from_secs(3600),
        },
        random,
    )
    .unwrap()
    .log;
    let data = dir.path().join("recorder");
    std::fs::create_dir(&data).unwrap();
    chown(&data, NOBODY, NOBODY);

    let p = Provider::OpenAi;
    let llm = FakeLlm::start();
    llm.push(Scripted::Json(
        200,
        tool_call(
            p,
            "run_command",
            // As the recorder's user: root's files are closed, and so is the recorder's own
            // environment (it is non-dumpable), where the key was when it started.
            json!({"command": "id -u; cat /proc/1/environ >/dev/null 2>&1 || echo no-root-files; \
                cat /proc/$PPID/environ 2>/dev/null | tr '\\0' '\\n' | grep -c 'test-[k]ey' || echo key-hidden"}),
        ),
    ));
    llm.push(Scripted::Json(
        200,
        tool_call(
            p,
            "write_overview",
            json!({"sections": [{"section": "TL;DR", "content": "Explored by the binary."}]}),
        ),
    ));
    let child = base(dir.path(), &llm)
        .env("MYMCP_RECORDER_ENABLED", "true")
        .env("MYMCP_RECORDER_LLM_PROVIDER", "openai")
        .env("MYMCP_RECORDER_MERGE_INTERVAL_SEC", "1")
        .uid(NOBODY)
        .gid(NOBODY)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // A failed assertion must not leave the recorder running.
    let mut child = KillOnDrop(child);
    let overview = data.join("overview/overview.md");
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("the first overview", &|| overview.exists());
    let text = std::fs::read_to_string(&overview).unwrap();
    assert!(text.contains("Explored by the binary."), "{text}");
    let probe = &llm.requests()[1];
    let tool = probe.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        tool.contains("65534") && tool.contains("no-root-files"),
        "{tool}"
    );
    assert!(
        tool.contains("key-hidden") && !tool.contains("test-key"),
        "{tool}"
    );

    // A change lands in the log: merged on the next one-second tick.
    llm.push(echo_merge(p));
    let body = json!({"ts": "2026-11-21T18:00:00.000000Z", "token_name": "laptop", "role": "rw",
        "ip": "127.0.0.1", "tool": "write_file", "params": {"file_path": "/srv/from-binary"},
        "result": "ok", "request_id": "r", "duration_ms": 1});
    log.append(&body.to_string()).unwrap();
    wait_for("the merge", &|| {
        std::fs::read_to_string(&overview).is_ok_and(|t| t.contains("/srv/from-binary"))
    });
    let metrics = data.join("metrics.prom");
    wait_for("the metrics file", &|| {
        std::fs::read_to_string(&metrics)
            .is_ok_and(|t| t.contains("mymcp_recorder_merge_cycles_total{reason=\"merged\"} 1"))
    });
    // Files the recorder made are its own.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&overview).unwrap().uid(), NOBODY);

    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!err.contains("test-key"), "the key never shows in the logs");
}

#[test]
fn once_exits_nonzero_when_the_tick_fails() {
    if !runs_as_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recorder/overview")).unwrap();
    std::fs::write(dir.path().join("recorder/overview/overview.md"), "# h\n").unwrap();
    std::fs::create_dir(dir.path().join("audit")).unwrap();
    std::fs::write(
        dir.path().join("audit/audit.log"),
        "{\"tool\":\"bash_execute\",\"result\":\"ok\",\"params\":{\"command\":\"apt install nginx\"},\"seq\":1}\n",
    )
    .unwrap();
    let llm = FakeLlm::start();
    llm.push(Scripted::Json(503, json!({"error": "overloaded"})));
    let out = base(dir.path(), &llm)
        .env("MYMCP_RECORDER_ENABLED", "true")
        .args(["--once", "--allow-root"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    llm.push(echo_merge(Provider::Anthropic));
    let out = base(dir.path(), &llm)
        .env("MYMCP_RECORDER_ENABLED", "true")
        .args(["--once", "--allow-root"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(dir.path().join("recorder/overview/changelog.md"))
            .unwrap()
            .contains("| bash_execute |")
    );
}
