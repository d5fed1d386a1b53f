//! `mymcpctl install` / `uninstall [--purge]` into a scratch root (`--root`): the package's
//! layout, units pointing at the installed binaries, directory modes; uninstall keeps the data
//! unless asked to purge it. (The Debian package itself: tests/package-check.)

use mymcp_tests::bin;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn ctl(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("mymcpctl")).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_then_uninstall_keeps_data_and_purge_removes_it() {
    mymcp_tests::needs_root!();
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();

    let (ok, dry) = ctl(&["install", "--root", r, "--dry-run"]);
    assert!(ok, "{dry}");
    assert!(dry.contains("would: copy"), "{dry}");
    assert!(!root.path().join("usr").exists(), "a dry run wrote files");

    let (ok, out) = ctl(&["install", "--root", r]);
    assert!(ok, "{out}");
    for b in ["mymcp-executor", "mymcp-frontend", "mymcpctl"] {
        let p = root.path().join("usr/local/bin").join(b);
        assert_eq!(mode(&p), 0o755, "{}", p.display());
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(bin(b)).unwrap());
    }
    let units = root.path().join("etc/systemd/system");
    let service = std::fs::read_to_string(units.join("mymcp-executor.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/mymcp-executor "));
    for u in [
        "mymcp-executor.socket",
        "mymcp-executor-control.socket",
        "mymcp-frontend.socket",
        "mymcp-frontend.service",
    ] {
        assert_eq!(
            std::fs::read_to_string(units.join(u)).unwrap(),
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../deploy/systemd")
                    .join(u)
            )
            .unwrap()
            .replace("/usr/bin/mymcp-", "/usr/local/bin/mymcp-"),
            "{u}"
        );
    }
    assert!(root.path().join("etc/sysusers.d/mymcp.conf").is_file());
    assert!(root.path().join("etc/tmpfiles.d/mymcp.conf").is_file());
    assert_eq!(mode(&root.path().join("etc/mymcp")), 0o700);
    assert_eq!(mode(&root.path().join("var/lib/mymcp")), 0o711);
    assert_eq!(mode(&root.path().join("var/log/mymcp")), 0o750);
    assert_eq!(mode(&root.path().join("run/mymcp")), 0o750);
    assert!(
        out.contains("skip creating the user mymcp (--root)"),
        "{out}"
    );

    // Data the installation collected meanwhile.
    std::fs::write(root.path().join("etc/mymcp/tokens.json"), "{}").unwrap();
    let (ok, out) = ctl(&["uninstall", "--root", r]);
    assert!(ok, "{out}");
    assert!(!root.path().join("usr/local/bin/mymcp-executor").exists());
    assert!(!units.join("mymcp-frontend.socket").exists());
    assert!(root.path().join("etc/mymcp/tokens.json").is_file());
    assert!(out.contains("--purge removes them"), "{out}");

    let (ok, out) = ctl(&["uninstall", "--root", r, "--purge"]);
    assert!(ok, "{out}");
    for d in ["etc/mymcp", "var/lib/mymcp", "var/log/mymcp", "run/mymcp"] {
        assert!(!root.path().join(d).exists(), "{d} survived --purge");
    }
}
