//! Both daemons as systemd runs them, under `systemd-socket-activate`: the sockets exist before
//! either process does, the first connection starts each daemon on the passed sockets, and each
//! tells a test `NOTIFY_SOCKET` it is ready (`READY=1`, `STATUS=`), pings the watchdog, and says
//! `STOPPING=1` on SIGTERM. A tool call goes through both activated daemons end to end.

use mymcp_tests::{bin, ctl, http_get, post_mcp, proc_comm, tools_call, user_ids, wait_until};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A notification socket standing in for systemd's.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
}

impl Manager {
    fn bind(path: PathBuf) -> Manager {
        let socket = UnixDatagram::bind(&path).unwrap();
        // The frontend runs as nobody.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        Manager {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    fn env(&self) -> String {
        format!("NOTIFY_SOCKET={}", self.path.display())
    }

    /// Waits up to `timeout` for a message containing `needle`; returns it.
    fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.seen.iter().find(|m| m.contains(needle)) {
                return m.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} from {} within {timeout:?}; got {:?}",
                self.path.display(),
                self.seen
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    /// Nothing at all arrives within `quiet`.
    fn silent_for(&mut self, quiet: Duration) -> bool {
        self.socket.set_read_timeout(Some(quiet)).unwrap();
        let mut buf = [0u8; 4096];
        self.socket.recv(&mut buf).is_err() && self.seen.is_empty()
    }
}

fn socket_activate() -> Command {
    let tool = Path::new("/usr/bin/systemd-socket-activate");
    assert!(
        tool.is_file(),
        "systemd-socket-activate is missing (Debian package systemd; tests/run installs it)"
    );
    Command::new(tool)
}

fn spawn_logged(mut cmd: Command, tag: &'static str) -> Child {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
        }
    });
    child
}

fn terminate(child: &mut Child) {
    // kill(2) through the command-line tool.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("process {} did not stop on SIGTERM", child.id());
}

#[test]
fn both_daemons_start_on_the_first_connection_and_report_readiness() {
    mymcp_tests::needs_root!();
    let (nobody_uid, nobody_gid) = user_ids("nobody");
    let dir = tempfile::Builder::new()
        .prefix("mymcp-activation-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(0), Some(nobody_gid)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
    let (exec_sock, control_sock) = (run.join("executor.sock"), run.join("control.sock"));

    // The executor: systemd-socket-activate plays mymcp-executor{,-control}.socket.
    let mut exec_manager = Manager::bind(dir.path().join("notify-executor"));
    let mut cmd = socket_activate();
    cmd.arg("-l")
        .arg(&exec_sock)
        .arg("-l")
        .arg(&control_sock)
        .arg("--fdname=executor:control")
        .args(["-E", &exec_manager.env(), "-E", "WATCHDOG_USEC=400000"])
        .args(["-E", "MYMCP_ENV_FILE=none", "-E", "MYMCP_LOG_LEVEL=info"])
        .arg("-E")
        .arg(format!(
            "MYMCP_STATE_DIR={}",
            dir.path().join("state").display()
        ))
        .arg(bin("mymcp-executor"))
        .arg("--runtime-dir")
        .arg(&run)
        .arg("--token-file")
        .arg(dir.path().join("tokens.json"))
        .args(["--frontend-user", "nobody"]);
    let mut executor = spawn_logged(cmd, "executor");
    assert!(
        wait_until(Duration::from_secs(10), || exec_sock.exists()
            && control_sock.exists()),
        "systemd-socket-activate did not create the sockets"
    );
    // What the socket unit's SocketGroup=/SocketMode= do.
    std::os::unix::fs::chown(&exec_sock, Some(0), Some(nobody_gid)).unwrap();
    std::fs::set_permissions(&exec_sock, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::fs::set_permissions(&control_sock, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Nothing runs until someone connects.
    assert!(exec_manager.silent_for(Duration::from_millis(300)));
    assert_ne!(proc_comm(executor.id()), "mymcp-executor");

    // mymcpctl connects to control.sock: the executor starts on the passed sockets.
    let out = ctl(
        &run,
        &["token", "add", "--name", "activated", "--role", "rw"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(proc_comm(executor.id()), "mymcp-executor");
    let ready = exec_manager.expect("READY=1", Duration::from_secs(10));
    assert!(ready.contains("STATUS=ready: "), "{ready}");
    exec_manager.expect("WATCHDOG=1", Duration::from_secs(5));

    // The frontend, as nobody: systemd-socket-activate plays mymcp-frontend.socket.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut front_manager = Manager::bind(dir.path().join("notify-frontend"));
    let mut cmd = socket_activate();
    cmd.args(["-l", &addr.to_string()])
        .args(["-E", &front_manager.env(), "-E", "WATCHDOG_USEC=400000"])
        .arg("-E")
        .arg(format!("MYMCP_EXECUTOR_SOCKET={}", exec_sock.display()))
        .arg(bin("mymcp-frontend"))
        .uid(nobody_uid)
        .gid(nobody_gid);
    let mut frontend = spawn_logged(cmd, "frontend");
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    }));
    // That probe connection started it; a stray first connection is harmless.
    let ready = front_manager.expect("READY=1", Duration::from_secs(10));
    assert!(
        ready.contains(&format!("STATUS=serving on http://{addr}/mcp")),
        "{ready}"
    );
    assert_eq!(proc_comm(frontend.id()), "mymcp-frontend");
    front_manager.expect("WATCHDOG=1", Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(10), || {
        http_get(addr, "/health").contains("\"executor\":\"connected\"")
    }));

    // A tool call through both activated daemons.
    let echo = tools_call(1, "bash_execute", json!({"command": "echo activated"}));
    assert_eq!(
        post_mcp(addr, &token, &echo).tool_json()["stdout"],
        "activated\n"
    );

    terminate(&mut frontend);
    front_manager.expect("STOPPING=1", Duration::from_secs(5));
    terminate(&mut executor);
    exec_manager.expect("STOPPING=1", Duration::from_secs(5));
    // The sockets belong to the service manager: the executor leaves them in place.
    assert!(exec_sock.exists() && control_sock.exists());
}

#[test]
fn started_by_hand_the_executor_binds_its_own_sockets_and_notifies_nobody() {
    mymcp_tests::needs_root!();
    // The ordinary e2e tests start it without LISTEN_FDS; here: a stale LISTEN_FDS meant for
    // another process is ignored, and the sockets are bound and removed again.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut cmd = Command::new(bin("mymcp-executor"));
    cmd.env_clear()
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "2")
        .env("MYMCP_ENV_FILE", "none")
        .env("MYMCP_STATE_DIR", dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(&run)
        .arg("--token-file")
        .arg(dir.path().join("tokens.json"))
        .args(["--frontend-user", "nobody"]);
    let mut executor = spawn_logged(cmd, "executor");
    assert!(wait_until(Duration::from_secs(10), || {
        ctl(&run, &["status"]).status.success()
    }));
    terminate(&mut executor);
    assert!(!run.join("executor.sock").exists());
    assert!(!run.join("control.sock").exists());
}
