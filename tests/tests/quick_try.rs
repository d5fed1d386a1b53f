//! The quick try (`mymcpctl serve`) starts wherever the binaries live. A checkout in a home
//! directory (mode 0700 or 0750, as Debian and Ubuntu create them) is out of the frontend
//! user's reach; mymcpctl executes the frontend through a descriptor it opened before the
//! frontend's process dropped its privileges.

use mymcp_tests::{
    bin, children_of, http_get, post_mcp, proc_comm, proc_status, tools_call, user_ids, QuickTry,
};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

#[test]
fn the_quick_try_serves_from_a_home_directory_the_frontend_user_cannot_enter() {
    mymcp_tests::needs_root!();
    // A developer's home (owned by a uid that is neither root nor nobody, mode 0700) holding a
    // checkout's release directory: mymcpctl and its two daemons, copied there.
    let base = tempfile::Builder::new()
        .prefix("mymcp-home-")
        .tempdir()
        .unwrap();
    let home = base.path().join("dev");
    let release = home.join("mymcp/target/release");
    std::fs::create_dir_all(&release).unwrap();
    for name in ["mymcpctl", "mymcp-executor", "mymcp-frontend"] {
        std::fs::copy(bin(name), release.join(name)).unwrap();
    }
    let developer = 4242;
    for dir in [
        &home,
        &home.join("mymcp"),
        &home.join("mymcp/target"),
        &release,
    ] {
        std::os::unix::fs::chown(dir, Some(developer), Some(developer)).unwrap();
    }
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The layout is what it should be: nobody cannot reach the frontend's binary by its path.
    let (nobody_uid, nobody_gid) = user_ids("nobody");
    let frontend_bin = release.join("mymcp-frontend");
    let reachable = Command::new("test")
        .arg("-x")
        .arg(&frontend_bin)
        .uid(nobody_uid)
        .gid(nobody_gid)
        .status()
        .unwrap();
    assert!(
        !reachable.success(),
        "{} is within nobody's reach: the test proves nothing",
        frontend_bin.display()
    );

    let serve = QuickTry::start_from(&release.join("mymcpctl"), &[]);
    let addr = serve
        .url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/mcp"))
        .unwrap()
        .parse()
        .unwrap();

    // The frontend answers, as nobody, under its own name, connected to the executor.
    assert!(mymcp_tests::wait_until(
        std::time::Duration::from_secs(10),
        || http_get(addr, "/health").contains(r#""executor":"connected""#)
    ));
    let frontend = children_of(serve.pid())
        .into_iter()
        .find(|&p| proc_comm(p) == "mymcp-frontend")
        .expect("a child process named mymcp-frontend");
    let uid_line = proc_status(frontend, "Uid");
    assert!(
        uid_line
            .split_whitespace()
            .all(|u| u == nobody_uid.to_string()),
        "frontend uids: {uid_line}"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{frontend}/exe")).unwrap(),
        frontend_bin
    );

    // A tool call goes through.
    let r = post_mcp(
        addr,
        &serve.rw_token,
        &tools_call(1, "bash_execute", json!({"command": "echo from-home"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("from-home"), "{}", r.body);
}
