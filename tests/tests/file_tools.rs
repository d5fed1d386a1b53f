//! File tools through the real frontend and executor: protected paths under attack (symlink
//! swaps, traversal, prefix collisions, option injection), byte-exact edits, kept ownership,
//! bounded reads, and the write size limit reachable over HTTP.

use mymcp_tests::{post_mcp, swap_symlink, tools_call, ExecutorProcess, FrontendProcess};
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "TOP-SECRET-BYTES";

/// An executor protecting `<dir>/prot` (plus its defaults) with a frontend and two tokens.
struct Setup {
    // Field order: the frontend stops before the executor.
    front: FrontendProcess,
    exec: ExecutorProcess,
    ro: String,
    rw: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        Self::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("mymcp-files-")
            .tempdir()
            .unwrap();
        let prot = dir.path().join("prot");
        std::fs::create_dir(&prot).unwrap();
        std::fs::write(prot.join("secret.txt"), format!("{SECRET}\n")).unwrap();
        let prot_s = prot.to_str().unwrap().to_owned();
        let mut all = vec![("MYMCP_PROTECTED_PATHS", prot_s.as_str())];
        all.extend_from_slice(env);
        let exec = ExecutorProcess::start_with_env("nobody", &all);
        let ro = exec.add_token("reader", "ro");
        let rw = exec.add_token("writer", "rw");
        let front = FrontendProcess::start(&exec.executor_socket());
        Setup {
            front,
            exec,
            ro,
            rw,
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn p(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_owned()
    }

    /// Calls a tool; returns (isError, tool JSON).
    fn call(&self, token: &str, tool: &str, args: Value) -> (bool, Value) {
        let r = post_mcp(self.front.addr, token, &tools_call(1, tool, args));
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let is_error = v["result"]["isError"].as_bool().unwrap_or(false);
        (is_error, r.tool_json())
    }

    fn error(&self, token: &str, tool: &str, args: Value) -> String {
        let (is_error, v) = self.call(token, tool, args);
        assert!(is_error, "expected a failure: {v}");
        v["error"].as_str().unwrap().to_owned()
    }
}

#[test]
fn read_file_through_a_swapped_symlink_never_returns_protected_bytes() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("harmless.txt"), "harmless\n").unwrap();
    let link = s.path("link");
    std::os::unix::fs::symlink(s.path("harmless.txt"), &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = swap_symlink(
        &link,
        &s.path("harmless.txt"),
        &s.path("prot/secret.txt"),
        stop.clone(),
    );
    let (mut ok, mut refused) = (0, 0);
    for i in 0..2000 {
        let r = post_mcp(
            s.front.addr,
            if i % 2 == 0 { &s.ro } else { &s.rw },
            &tools_call(i, "read_file", json!({"file_path": s.p("link")})),
        );
        assert!(!r.body.contains(SECRET), "leaked on call {i}: {}", r.body);
        let v = r.tool_json();
        match v["error"].as_str() {
            None => {
                assert_eq!(v["content"], "   1\tharmless");
                ok += 1;
            }
            Some("ProtectedPath") => refused += 1,
            Some(other) => panic!("unexpected {other}: {v}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    eprintln!("{ok} harmless reads, {refused} refusals, {flips} swaps");
    assert!(ok > 0 && refused > 0, "the race was not exercised");
}

#[test]
fn write_file_through_a_swapped_parent_never_touches_the_protected_directory() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::create_dir(s.path("harmless")).unwrap();
    let link = s.path("d");
    std::os::unix::fs::symlink(s.path("harmless"), &link).unwrap();
    let before = std::fs::metadata(s.path("prot/secret.txt")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = swap_symlink(&link, &s.path("harmless"), &s.path("prot"), stop.clone());
    let (mut ok, mut refused) = (0, 0);
    for i in 0..2000 {
        let (_, v) = s.call(
            &s.rw,
            "write_file",
            json!({"file_path": s.p("d/secret.txt"), "content": "PWNED"}),
        );
        match v["error"].as_str() {
            None => ok += 1,
            Some("ProtectedPath") => refused += 1,
            Some(other) => panic!("call {i}: unexpected {other}: {v}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    eprintln!("{ok} harmless writes, {refused} refusals");
    assert!(ok > 0 && refused > 0, "the race was not exercised");
    let after = std::fs::metadata(s.path("prot/secret.txt")).unwrap();
    assert_eq!(
        std::fs::read_to_string(s.path("prot/secret.txt")).unwrap(),
        format!("{SECRET}\n")
    );
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );
    let names: Vec<_> = std::fs::read_dir(s.path("prot"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["secret.txt"],
        "nothing created in the protected directory"
    );
    assert_eq!(
        std::fs::read_to_string(s.path("harmless/secret.txt")).unwrap(),
        "PWNED"
    );
}

#[test]
fn traversal_prefix_collision_and_symlinks_into_protected_are_refused_for_ro_and_rw() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::create_dir(s.path("protx")).unwrap();
    std::fs::write(s.path("protx/file.txt"), "neighbour\n").unwrap();
    std::fs::create_dir(s.path("sub")).unwrap();
    std::os::unix::fs::symlink(s.path("prot"), s.path("into")).unwrap();
    std::os::unix::fs::symlink(s.path("prot/secret.txt"), s.path("to-secret")).unwrap();
    let attacks = [
        s.p("sub/../prot/secret.txt"),
        s.p("prot/secret.txt"),
        s.p("into/secret.txt"),
        s.p("to-secret"),
        s.p("prot/../prot/./secret.txt"),
    ];
    for token in [&s.ro, &s.rw] {
        for a in &attacks {
            assert_eq!(
                s.error(token, "read_file", json!({"file_path": a})),
                "ProtectedPath",
                "read {a}"
            );
            assert_eq!(
                s.error(token, "grep", json!({"pattern": "SECRET", "path": a})),
                "ProtectedPath",
                "grep {a}"
            );
        }
        assert_eq!(
            s.error(
                token,
                "grep",
                json!({"pattern": "SECRET", "path": s.p("prot")})
            ),
            "ProtectedPath"
        );
        // The neighbour with a common prefix is not protected.
        let (_, v) = s.call(
            token,
            "read_file",
            json!({"file_path": s.p("protx/file.txt")}),
        );
        assert_eq!(v["content"], "   1\tneighbour");
        // A search of the parent never shows protected content or names.
        let (_, v) = s.call(
            token,
            "grep",
            json!({"pattern": "SECRET|neighbour", "path": s.p(""), "context_lines": 3}),
        );
        let results = v["results"].as_str().unwrap();
        assert!(!results.contains(SECRET), "{results}");
        assert!(results.contains("protx/file.txt:1:neighbour"), "{results}");
        let (_, v) = s.call(
            token,
            "glob",
            json!({"pattern": "**/*.txt", "path": s.p("")}),
        );
        let files = v["files"].to_string();
        assert!(!files.contains("/prot/"), "{files}");
        assert!(files.contains("protx/file.txt"), "{files}");
    }
    for a in &attacks {
        assert_eq!(
            s.error(&s.rw, "write_file", json!({"file_path": a, "content": "x"})),
            "ProtectedPath",
            "write {a}"
        );
        assert_eq!(
            s.error(
                &s.rw,
                "edit_file",
                json!({"file_path": a, "old_string": SECRET, "new_string": "x"})
            ),
            "ProtectedPath",
            "edit {a}"
        );
    }
    assert_eq!(
        s.error(
            &s.rw,
            "write_file",
            json!({"file_path": s.p("into/new.txt"), "content": "x"})
        ),
        "ProtectedPath"
    );
    assert!(!s.path("prot/new.txt").exists());
    // The executor's own state is protected by default: its token store and sockets.
    let token_file = s.exec.token_file.to_str().unwrap().to_owned();
    assert_eq!(
        s.error(&s.ro, "read_file", json!({"file_path": token_file})),
        "ProtectedPath"
    );
    let exe = mymcp_tests::bin("mymcp-executor");
    assert_eq!(
        s.error(
            &s.rw,
            "write_file",
            json!({"file_path": exe, "content": "x"})
        ),
        "ProtectedPath"
    );
}

#[test]
fn option_like_patterns_and_paths_run_nothing() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    std::fs::write(s.path("victim.txt"), "text\n").unwrap();
    let marker = s.path("touched");
    for token in [&s.ro, &s.rw] {
        let (is_error, v) = s.call(
            token,
            "grep",
            json!({"pattern": format!("--pre=/bin/touch {}", marker.display()), "path": s.p("")}),
        );
        assert!(!is_error, "{v}");
        assert_eq!(v["match_count"], 0);
        let (_, v) = s.call(
            token,
            "grep",
            json!({"pattern": "--pre=/bin/touch", "path": s.p("")}),
        );
        assert_eq!(v["match_count"], 0);
        assert_eq!(
            s.error(token, "grep", json!({"pattern": "x", "path": "-rf"})),
            "InvalidPath"
        );
        assert_eq!(
            s.error(
                token,
                "grep",
                json!({"pattern": "x", "path": "--pre=/bin/touch"})
            ),
            "InvalidPath"
        );
        assert_eq!(
            s.error(token, "glob", json!({"pattern": "*", "path": "-x"})),
            "InvalidPath"
        );
    }
    assert!(!marker.exists());
    assert!(!Path::new("touched").exists());
    // And `--pre` is just text to search for.
    std::fs::write(s.path("doc.txt"), "use --pre=/bin/touch with care\n").unwrap();
    let (_, v) = s.call(
        &s.ro,
        "grep",
        json!({"pattern": "--pre=/bin/touch", "path": s.p("doc.txt")}),
    );
    assert_eq!(v["results"], "1:use --pre=/bin/touch with care");
}

#[test]
fn edit_file_changes_only_the_replaced_bytes_of_a_crlf_file_with_invalid_utf8() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let f = s.path("dos.ini");
    let before: &[u8] = b"[section]\r\nname=\xff\xfeold\x80\r\nkey=value\r\nlone\rcr\r\nend";
    std::fs::write(&f, before).unwrap();
    let (is_error, v) = s.call(
        &s.rw,
        "edit_file",
        json!({"file_path": s.p("dos.ini"), "old_string": "key=value\r\n", "new_string": "key=new\r\nadded=1\r\n"}),
    );
    assert!(!is_error, "{v}");
    assert_eq!(v, json!({"success": true, "replacements": 1}));
    let expected: &[u8] =
        b"[section]\r\nname=\xff\xfeold\x80\r\nkey=new\r\nadded=1\r\nlone\rcr\r\nend";
    assert_eq!(std::fs::read(&f).unwrap(), expected);
}

#[test]
fn write_file_keeps_mode_and_owner_of_the_file_it_replaces() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let f = s.path("owned.conf");
    std::fs::write(&f, "old\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
    let (is_error, v) = s.call(
        &s.rw,
        "write_file",
        json!({"file_path": s.p("owned.conf"), "content": "new\n"}),
    );
    assert!(!is_error, "{v}");
    assert_eq!(v, json!({"success": true, "bytes_written": 4}));
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "new\n");
    // A new file: 0644, root.
    s.call(
        &s.rw,
        "write_file",
        json!({"file_path": s.p("fresh/new.txt"), "content": "x"}),
    );
    let m = std::fs::metadata(s.path("fresh/new.txt")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o644, 0));
}

#[test]
fn read_file_of_dev_zero_is_refused_at_once() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let t = Instant::now();
    assert_eq!(
        s.error(
            &s.ro,
            "read_file",
            json!({"file_path": "/dev/zero", "limit": 10})
        ),
        "NotARegularFile"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // grep of a device is nothing to search, never an endless read.
    let t = Instant::now();
    let (_, v) = s.call(&s.ro, "grep", json!({"pattern": "x", "path": "/dev/zero"}));
    assert_eq!(v["match_count"], 0);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn a_ten_mib_write_fits_through_http_and_one_byte_more_is_too_large() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let max = 10 * 1024 * 1024;
    let content = "x".repeat(max);
    let (is_error, v) = s.call(
        &s.rw,
        "write_file",
        json!({"file_path": s.p("big.txt"), "content": content}),
    );
    assert!(!is_error, "{v}");
    assert_eq!(v["bytes_written"], max);
    assert_eq!(
        std::fs::metadata(s.path("big.txt")).unwrap().len(),
        max as u64
    );
    let content = "x".repeat(max + 1);
    let (is_error, v) = s.call(
        &s.rw,
        "write_file",
        json!({"file_path": s.p("big2.txt"), "content": content}),
    );
    assert!(is_error);
    assert_eq!(v["error"], "FileTooLarge");
    assert_eq!(
        v["message"],
        "Content is 10485761 bytes, max is 10485760 (10MB)"
    );
}

#[test]
fn a_long_search_does_not_stall_other_calls() {
    mymcp_tests::needs_root!();
    let s = Setup::start_with(&[("MYMCP_SEARCH_TIMEOUT_SEC", "3")]);
    std::fs::write(s.path("quick.txt"), "quick\n").unwrap();
    let addr = s.front.addr;
    let ro = s.ro.clone();
    // Searching the whole file system for something absent keeps the searcher busy.
    let slow = std::thread::spawn(move || {
        post_mcp(
            addr,
            &ro,
            &tools_call(
                1,
                "grep",
                json!({"pattern": "a{2}z{3}q{4}absent", "path": "/usr"}),
            ),
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..5 {
        let t = Instant::now();
        let (_, v) = s.call(&s.ro, "read_file", json!({"file_path": s.p("quick.txt")}));
        assert_eq!(v["content"], "   1\tquick");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "call {i}: {:?}",
            t.elapsed()
        );
    }
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200);
}

/// No existence oracle: for every tool, a name that exists inside a protected directory and
/// one that does not (or whose parent does not) get the same answer, so an `ro` token cannot
/// probe which secrets are there. The reference answered `ProtectedPath` for any path under a
/// protected directory; before this, `read_file` of a missing name said `FileNotFoundError`
/// and `grep` gave an empty result.
#[test]
fn a_protected_directory_answers_alike_whether_a_name_exists_or_not() {
    mymcp_tests::needs_root!();
    let s = Setup::start();
    let existing = s.p("prot/secret.txt");
    let missing = s.p("prot/no-such-file.txt");
    let missing_parent = s.p("prot/no-such-dir/file.txt");
    type Args = Box<dyn Fn(&str) -> Value>;
    let calls: Vec<(&str, &str, Args)> = vec![
        ("read_file", "ro", Box::new(|p| json!({"file_path": p}))),
        (
            "prepare_download",
            "ro",
            Box::new(|p| json!({"src_path": p})),
        ),
        (
            "grep",
            "ro",
            Box::new(|p| json!({"pattern": "x", "path": p})),
        ),
        (
            "write_file",
            "rw",
            Box::new(|p| json!({"file_path": p, "content": "x"})),
        ),
        (
            "edit_file",
            "rw",
            Box::new(|p| json!({"file_path": p, "old_string": "a", "new_string": "b"})),
        ),
        (
            "prepare_upload",
            "rw",
            Box::new(|p| json!({"dest_path": p})),
        ),
    ];
    for (tool, role, args) in &calls {
        let token = if *role == "ro" { &s.ro } else { &s.rw };
        let answers: Vec<Value> = [&existing, &missing, &missing_parent]
            .iter()
            .map(|p| {
                let (is_error, v) = s.call(token, tool, args(p));
                assert!(is_error, "{tool} {p}: {v}");
                v
            })
            .collect();
        assert_eq!(
            answers[0]["error"], "ProtectedPath",
            "{tool}: {}",
            answers[0]
        );
        for a in &answers[1..] {
            assert_eq!(a, &answers[0], "{tool} answers differ");
        }
    }
    // glob filters protected places silently, existing or not.
    for p in [&existing, &missing, &missing_parent] {
        let (is_error, v) = s.call(&s.ro, "glob", json!({"pattern": "*", "path": p}));
        assert!(!is_error, "{v}");
        assert_eq!(v["count"], 0, "{v}");
    }
    // Outside protected places a missing file is still just missing.
    let (_, v) = s.call(
        &s.ro,
        "read_file",
        json!({"file_path": s.p("nothing-here")}),
    );
    assert_eq!(v["error"], "FileNotFoundError", "{v}");
}
