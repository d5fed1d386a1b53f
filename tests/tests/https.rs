//! The real frontend binary and plain HTTP: refused on a non-loopback address unless
//! `MYMCP_ALLOW_PLAINTEXT=true` says a TLS-terminating proxy is in front. (HTTPS itself is
//! tested in `crates/frontend/tests/tls.rs` and, with the MCP Python SDK, in `tests/e2e/test_https.py`.)

use mymcp_tests::{bin, http_get, user_ids, wait_until};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn frontend(host: &str, port: u16, env: &[(&str, &str)]) -> Command {
    mymcp_tests::assert_root_test();
    let (uid, gid) = user_ids("nobody");
    let mut cmd = Command::new(bin("mymcp-frontend"));
    cmd.env_clear()
        .env("MYMCP_EXECUTOR_SOCKET", "/nonexistent/executor.sock")
        .envs(env.iter().copied())
        .args(["--host", host, "--port", &port.to_string()])
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn plain_http_on_all_interfaces_is_refused_with_one_line() {
    mymcp_tests::needs_root!();
    let out = frontend("0.0.0.0", free_port(), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refusal: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refusing plain HTTP on 0.0.0.0:"))
        .collect();
    assert_eq!(refusal.len(), 1, "{stderr}");
    assert!(
        refusal[0].contains("MYMCP_ALLOW_PLAINTEXT=true"),
        "{stderr}"
    );
    assert!(refusal[0].contains("MYMCP_TLS_CERT"), "{stderr}");
}

#[test]
fn plain_http_on_all_interfaces_is_served_when_allowed() {
    mymcp_tests::needs_root!();
    let port = free_port();
    let mut child = frontend("0.0.0.0", port, &[("MYMCP_ALLOW_PLAINTEXT", "true")])
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = wait_until(Duration::from_secs(10), || {
        http_get(addr, "/health").contains("\"status\":\"ok\"")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        up,
        "the frontend did not serve with MYMCP_ALLOW_PLAINTEXT=true"
    );
}

#[test]
fn half_a_tls_configuration_stops_start_up() {
    mymcp_tests::needs_root!();
    let out = frontend("127.0.0.1", free_port(), &[("MYMCP_TLS_CERT", "/x.pem")])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MYMCP_TLS_CERT and MYMCP_TLS_KEY must be set together"),
        "{stderr}"
    );
}

#[test]
fn the_quick_try_refuses_plain_http_off_loopback_and_says_to_add_tls() {
    mymcp_tests::needs_root!();
    let out = Command::new(bin("mymcpctl"))
        .env_remove("MYMCP_ALLOW_PLAINTEXT")
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing plain HTTP on 0.0.0.0:"),
        "{stderr}"
    );
    assert!(stderr.contains("add --tls"), "{stderr}");
}

#[test]
fn acme_and_a_certificate_file_together_stop_start_up() {
    mymcp_tests::needs_root!();
    let out = frontend(
        "127.0.0.1",
        free_port(),
        &[
            ("MYMCP_TLS_CERT", "/x.pem"),
            ("MYMCP_TLS_KEY", "/x.key"),
            ("MYMCP_ACME_DOMAIN", "mcp.example.com"),
            ("MYMCP_ACME_DIR", "/nonexistent/acme"),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MYMCP_ACME_DOMAIN and MYMCP_TLS_CERT/MYMCP_TLS_KEY are both set"),
        "{stderr}"
    );
}

#[test]
fn a_bad_acme_setting_stops_start_up_naming_it() {
    mymcp_tests::needs_root!();
    for (name, value, domain) in [
        ("MYMCP_ACME_DOMAIN", "*.example.com", "*.example.com"),
        (
            "MYMCP_ACME_DIRECTORY",
            "http://acme.example/dir",
            "mcp.example.com",
        ),
        ("MYMCP_ACME_EMAIL", "nobody", "mcp.example.com"),
    ] {
        let out = frontend(
            "127.0.0.1",
            free_port(),
            &[("MYMCP_ACME_DOMAIN", domain), (name, value)],
        )
        .output()
        .unwrap();
        assert_ne!(out.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("{name}: ")), "{name}: {stderr}");
    }
}
