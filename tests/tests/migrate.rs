//! `mymcpctl migrate` on fixture installs of each kind (tests/fixtures/migrate): a Python 2.x
//! and a Go 3.x `/etc/mymcp`, and a 1.x `/opt/mymcp` with `MCP_*` keys. Each is copied into a
//! scratch root and migrated there (`--root`); then the real executor runs on the migrated
//! token store and env file, and the old tokens still work through the real frontend.

use mymcp_tests::{bin, ctl, http_request, post_mcp, tools_call, ExecutorProcess, FrontendProcess};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/migrate")
        .join(name);
    let root = tempfile::tempdir().unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(root.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let path = root.path().to_owned();
    (root, path)
}

/// Every file under `root` with its contents.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn migrate(root: &Path, from: &str, dry_run: bool) -> String {
    let mut cmd = Command::new(bin("mymcpctl"));
    cmd.args(["migrate", "--from", from, "--root"]).arg(root);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The migrated store holds digests only: no token value of the fixture appears in it.
fn assert_digests_only(root: &Path) {
    let store = std::fs::read_to_string(root.join("etc/mymcp/tokens.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&store).unwrap();
    assert_eq!(v["format"], "mymcp-tokens-v1");
    assert!(!store.contains("tok_"), "a token value is on disk: {store}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(root.join("etc/mymcp/tokens.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// Runs the real executor on the migrated store and env file, and the frontend in front.
fn run_migrated(root: &Path) -> (ExecutorProcess, FrontendProcess) {
    let store = root.join("etc/mymcp/tokens.json");
    let env = root.join("etc/mymcp/.env");
    let exec = ExecutorProcess::start_with_env(
        "nobody",
        &[
            ("MYMCP_TOKEN_FILE", store.to_str().unwrap()),
            ("MYMCP_ENV_FILE", env.to_str().unwrap()),
        ],
    );
    let front = FrontendProcess::start(&exec.executor_socket());
    (exec, front)
}

fn token_roles(exec: &ExecutorProcess) -> BTreeMap<String, String> {
    let out = ctl(&exec.runtime_dir, &["token", "list", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                format!(
                    "{}{}",
                    t["role"].as_str().unwrap(),
                    if t["enabled"] == true {
                        ""
                    } else {
                        " (disabled)"
                    }
                ),
            )
        })
        .collect()
}

#[test]
fn a_python_2x_install_keeps_its_tokens_and_settings() {
    mymcp_tests::needs_root!();
    let (_keep, root) = fixture("python-2.x");
    let before = snapshot(&root);
    let plan = migrate(&root, "/etc/mymcp", true);
    assert!(
        plan.contains("would: store 5 token(s) as digests"),
        "{plan}"
    );
    assert_eq!(snapshot(&root), before, "--dry-run changed files");

    let out = migrate(&root, "/etc/mymcp", false);
    assert!(
        out.contains("MYMCP_ADMIN_TOKEN: the admin token, stored as a digest"),
        "{out}"
    );
    assert!(out.contains("refuses plain HTTP on 0.0.0.0"), "{out}");
    assert_digests_only(&root);
    let env = env_file(&root.join("etc/mymcp/.env"));
    assert_eq!(
        env.get("MYMCP_BASH_MAX_OUTPUT_BYTES").map(String::as_str),
        Some("204800")
    );
    assert_eq!(
        env.get("MYMCP_AUDIT_ENABLED").map(String::as_str),
        Some("true")
    );
    assert!(!env.contains_key("MYMCP_ADMIN_TOKEN") && !env.contains_key("MYMCP_TOKEN_FILE"));
    let front_env = env_file(&root.join("etc/mymcp/frontend.env"));
    assert_eq!(front_env["MYMCP_PORT"], "8765");
    assert_eq!(front_env["MYMCP_ALLOWED_ORIGINS"], "https://claude.ai");
    // The old audit records are kept aside; the new chain starts clean.
    assert!(!root.join("var/log/mymcp/audit.log").exists());
    assert!(root
        .join("var/log/mymcp/legacy-2.x-3.x/audit.log")
        .is_file());
    assert!(root
        .join("var/log/mymcp/legacy-2.x-3.x/audit.log.1")
        .is_file());

    let (exec, front) = run_migrated(&root);
    let roles = token_roles(&exec);
    assert_eq!(roles["laptop"], "rw");
    assert_eq!(roles["reader"], "ro");
    assert_eq!(roles["retired-laptop"], "rw (disabled)");
    // The old tokens work as before: rw runs commands, ro is refused them, admin manages.
    let echo = tools_call(1, "bash_execute", json!({"command": "echo migrated"}));
    assert_eq!(
        post_mcp(front.addr, "tok_0123456789abcdef0123456789abcdef", &echo).tool_json()["stdout"],
        "migrated\n"
    );
    let ro = post_mcp(front.addr, "tok_fedcba9876543210fedcba9876543210", &echo);
    assert!(ro.body.contains("rw"), "{}", ro.body);
    assert_eq!(
        post_mcp(front.addr, "tok_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &echo).status,
        401
    );
    let admin = http_request(
        front.addr,
        "GET",
        "/admin/tokens",
        &[(
            "Authorization",
            "Bearer tok_00112233445566778899aabbccddeeff",
        )],
        "",
    );
    assert_eq!(admin.status, 200, "{}", admin.body);
    // Migrating again changes nothing.
    let again = migrate(&root, "/etc/mymcp", false);
    assert!(again.contains("0 added"), "{again}");
}

#[test]
fn a_go_3x_install_with_its_audit_elsewhere_is_copied_not_moved() {
    mymcp_tests::needs_root!();
    let (_keep, root) = fixture("go-3.x");
    let out = migrate(&root, "/etc/mymcp", false);
    assert!(
        out.contains("MYMCP_SOMETHING_REMOVED: unknown setting, not carried over"),
        "{out}"
    );
    assert!(out.contains("MYMCP_METRICS_TOKEN: empty, skipped"), "{out}");
    assert_digests_only(&root);
    let env = env_file(&root.join("etc/mymcp/.env"));
    assert_eq!(env["MYMCP_TRANSFER_MAX_BYTES"], "1073741824");
    assert_eq!(env["MYMCP_GREP_MAX_RESULTS"], "2000");
    assert!(!env.contains_key("MYMCP_SOMETHING_REMOVED"));
    let front_env = env_file(&root.join("etc/mymcp/frontend.env"));
    assert_eq!(front_env["MYMCP_PORT"], "8800");
    assert_eq!(front_env["MYMCP_HOST"], "127.0.0.1");
    assert_eq!(front_env["MYMCP_TRUSTED_PROXIES"], "127.0.0.1");
    assert!(root.join("srv/mymcp-audit/audit.log").is_file());
    assert!(root
        .join("var/log/mymcp/legacy-2.x-3.x/audit.log")
        .is_file());

    let (exec, front) = run_migrated(&root);
    assert_eq!(token_roles(&exec)["dashboard"], "ro");
    let echo = tools_call(1, "bash_execute", json!({"command": "echo go"}));
    assert_eq!(
        post_mcp(front.addr, "tok_4444444444444444444444444444444b", &echo).tool_json()["stdout"],
        "go\n"
    );
}

#[test]
fn a_1x_install_in_opt_mymcp_gets_its_mcp_keys_renamed() {
    mymcp_tests::needs_root!();
    let (_keep, root) = fixture("mymcp-1.x");
    let out = migrate(&root, "/opt/mymcp", false);
    assert!(out.contains("1.x install (MCP_* settings)"), "{out}");
    assert!(out.contains("MCP_PORT as MYMCP_PORT"), "{out}");
    assert!(
        out.contains("MCP_DEBUG as MYMCP_DEBUG: unknown setting"),
        "{out}"
    );
    assert!(out.contains("still holds the tokens in plaintext"), "{out}");
    assert_digests_only(&root);
    let env = env_file(&root.join("etc/mymcp/.env"));
    assert_eq!(env["MYMCP_BASH_MAX_OUTPUT_BYTES"], "65536");
    assert_eq!(env["MYMCP_READ_FILE_MAX_LIMIT"], "20000");
    assert!(env.keys().all(|k| k.starts_with("MYMCP_")));
    assert_eq!(
        env_file(&root.join("etc/mymcp/frontend.env"))["MYMCP_PORT"],
        "9000"
    );
    assert!(root.join("var/log/mymcp/legacy-1.x/audit.log").is_file());

    let (exec, front) = run_migrated(&root);
    let roles = token_roles(&exec);
    assert_eq!(roles["workstation"], "rw");
    assert_eq!(roles["admin"], "admin");
    let echo = tools_call(1, "bash_execute", json!({"command": "echo one"}));
    assert_eq!(
        post_mcp(front.addr, "tok_7777777777777777777777777777777e", &echo).tool_json()["stdout"],
        "one\n"
    );
}

#[test]
fn a_directory_without_an_install_is_refused() {
    mymcp_tests::needs_root!();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/mymcp")).unwrap();
    let out = Command::new(bin("mymcpctl"))
        .args(["migrate", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mymcp install found"));
}
