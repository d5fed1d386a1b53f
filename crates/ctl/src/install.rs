//! `mymcpctl install` / `mymcpctl uninstall [--purge]`: the Debian package's layout on a host
//! without the package (or from the offline bundle).
//!
//! The units, sysusers.d and tmpfiles.d files are compiled into mymcpctl from `deploy/`, so the
//! binary installs exactly what the package ships. What goes where:
//!
//! ```text
//! <bin-dir>/mymcp-executor, mymcp-frontend, mymcpctl   (default /usr/local/bin; copied from
//!                                                        beside this mymcpctl)
//! /etc/systemd/system/mymcp-*.{socket,service}          (ExecStart= pointing at <bin-dir>)
//! /etc/sysusers.d/mymcp.conf, /etc/tmpfiles.d/mymcp.conf
//! /usr/local/share/doc/mymcp/mymcp.env.example
//! /etc/mymcp 0700, /var/lib/mymcp 0711 (others may only pass through to the recorder's
//! directory), /var/log/mymcp 0750, /run/mymcp 0750 root:mymcp
//! ```
//!
//! Then the `mymcp` user is created and the three socket units enabled (and started when systemd
//! runs). `uninstall` stops and removes all of it but the data: tokens and env file
//! (`/etc/mymcp`), state (`/var/lib/mymcp`) and the audit log (`/var/log/mymcp`) go only with
//! `--purge`. Every step is printed; `--root DIR` installs into another root (an image, a test)
//! and then touches neither users nor systemd.

use anyhow::{bail, Context};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit files, as in `deploy/systemd`.
const UNITS: [(&str, &str); 5] = [
    (
        "mymcp-executor.service",
        include_str!("../../../deploy/systemd/mymcp-executor.service"),
    ),
    (
        "mymcp-executor.socket",
        include_str!("../../../deploy/systemd/mymcp-executor.socket"),
    ),
    (
        "mymcp-executor-control.socket",
        include_str!("../../../deploy/systemd/mymcp-executor-control.socket"),
    ),
    (
        "mymcp-frontend.service",
        include_str!("../../../deploy/systemd/mymcp-frontend.service"),
    ),
    (
        "mymcp-frontend.socket",
        include_str!("../../../deploy/systemd/mymcp-frontend.socket"),
    ),
];
const SYSUSERS: &str = include_str!("../../../deploy/sysusers.d/mymcp.conf");
const TMPFILES: &str = include_str!("../../../deploy/tmpfiles.d/mymcp.conf");
const ENV_EXAMPLE: &str = include_str!("../../../deploy/mymcp.env.example");
/// The units enabled (and started) by `install`: everything else starts on demand.
pub const SOCKETS: [&str; 3] = [
    "mymcp-executor.socket",
    "mymcp-executor-control.socket",
    "mymcp-frontend.socket",
];
const BINARIES: [&str; 3] = ["mymcp-executor", "mymcp-frontend", "mymcpctl"];
/// Data directories: kept by `uninstall`, removed by `uninstall --purge`.
pub const DATA_DIRS: [&str; 5] = [
    "/etc/mymcp",
    "/var/lib/mymcp",
    // The frontend's own state (StateDirectory=): the ACME account and certificates.
    "/var/lib/mymcp-frontend",
    "/var/log/mymcp",
    "/run/mymcp",
];

/// What `install` and `uninstall` work on.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `/`, or another root to install into (no users, no systemd then).
    pub root: PathBuf,
    /// Where the binaries go, as seen on the installed host.
    pub bin_dir: PathBuf,
    /// Print the steps without doing them.
    pub dry_run: bool,
}

impl Layout {
    fn at(&self, path: impl AsRef<Path>) -> PathBuf {
        let rel = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        self.root.join(rel)
    }

    fn live(&self) -> bool {
        self.root == Path::new("/")
    }

    fn step(&self, what: &str) {
        let prefix = if self.dry_run { "would" } else { "" };
        if prefix.is_empty() {
            println!("[mymcp] {what}");
        } else {
            println!("[mymcp] {prefix}: {what}");
        }
    }
}

/// A unit file with its binaries at `bin_dir`.
pub fn unit_text(text: &str, bin_dir: &Path) -> String {
    text.replace("/usr/bin/mymcp-", &format!("{}/mymcp-", bin_dir.display()))
}

/// Installs mymcp from the binaries beside this mymcpctl. `tools_user`: the account tokens
/// act as when they name none (`MYMCP_DEFAULT_USER` in the env file); it must exist on a live
/// host.
pub fn install(layout: &Layout, tools_user: Option<&str>) -> anyhow::Result<()> {
    if layout.live() && package_installed() {
        bail!("the Debian package mymcp is installed: it already provides all of this (use apt/dpkg to manage it)");
    }
    if let Some(user) = tools_user {
        if !mymcp_tokens::valid_user(user) {
            bail!("--tools-user {user:?} is not an account name");
        }
        if layout.live() && mymcp_sys::user_by_name(user)?.is_none() {
            bail!("--tools-user: no account named {user:?} on this host (create it first, e.g. useradd --create-home {user})");
        }
    }
    let me = std::env::current_exe().context("locating mymcpctl")?;
    let from = me.parent().unwrap_or(Path::new("."));
    for name in BINARIES {
        let src = from.join(name);
        if !src.is_file() {
            bail!("{} not found (expected beside mymcpctl)", src.display());
        }
        let dst = layout.at(layout.bin_dir.join(name));
        layout.step(&format!("copy {} → {}", src.display(), dst.display()));
        if !layout.dry_run {
            copy_atomically(&src, &dst, 0o755)?;
        }
    }
    for (name, text) in UNITS {
        let dst = layout.at(Path::new("/etc/systemd/system").join(name));
        layout.step(&format!("write {}", dst.display()));
        if !layout.dry_run {
            write_atomically(&dst, unit_text(text, &layout.bin_dir).as_bytes(), 0o644)?;
        }
    }
    for (path, text, mode) in [
        ("/etc/sysusers.d/mymcp.conf", SYSUSERS, 0o644),
        ("/etc/tmpfiles.d/mymcp.conf", TMPFILES, 0o644),
        (
            "/usr/local/share/doc/mymcp/mymcp.env.example",
            ENV_EXAMPLE,
            0o644,
        ),
    ] {
        let dst = layout.at(path);
        layout.step(&format!("write {}", dst.display()));
        if !layout.dry_run {
            write_atomically(&dst, text.as_bytes(), mode)?;
        }
    }

    let group = if layout.live() {
        layout.step("create the system user mymcp (systemd-sysusers, else useradd)");
        if !layout.dry_run {
            create_user()?;
        }
        gid_of("mymcp")
    } else {
        layout.step("skip creating the user mymcp (--root)");
        None
    };
    for (dir, mode, gid) in [
        ("/etc/mymcp", 0o700, None),
        ("/var/lib/mymcp", 0o711, None),
        ("/var/log/mymcp", 0o750, None),
        ("/run/mymcp", 0o750, group),
    ] {
        let path = layout.at(dir);
        layout.step(&format!("directory {} {mode:04o}", path.display()));
        if !layout.dry_run {
            make_dir(&path, mode, gid)?;
        }
    }

    if let Some(user) = tools_user {
        let env = layout.at(ENV_FILE);
        layout.step(&format!(
            "set {}={user} in {}: tokens without --user act as {user}",
            mymcp_settings::DEFAULT_USER.name,
            env.display()
        ));
        if !layout.dry_run {
            set_env_value(&env, mymcp_settings::DEFAULT_USER.name, user)?;
        }
    }

    if !layout.live() {
        layout.step("skip systemctl (--root)");
    } else if !systemctl_available() {
        layout.step("systemctl not found: start the daemons by hand (see README, Running the daemons yourself)");
    } else {
        let running = Path::new("/run/systemd/system").is_dir();
        if running {
            systemctl(layout, &["daemon-reload"])?;
        }
        let mut args = vec!["enable"];
        if running {
            args.push("--now");
        }
        args.extend(SOCKETS);
        systemctl(layout, &args)?;
    }
    layout.step("done; next: mymcpctl doctor, then mymcpctl token add --name NAME --role rw");
    Ok(())
}

/// The executor's env file.
const ENV_FILE: &str = "/etc/mymcp/.env";

/// Sets `name=value` in the env file `path` (0600, created if missing): the line that sets
/// `name` is replaced, other lines stay as they are.
fn set_env_value(path: &Path, name: &str, value: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let line = format!("{name}={value}");
    let mut found = false;
    let mut lines: Vec<&str> = old
        .lines()
        .map(|l| {
            let key = l
                .trim_start()
                .trim_start_matches("export ")
                .split('=')
                .next();
            if key.map(str::trim) == Some(name) {
                found = true;
                line.as_str()
            } else {
                l
            }
        })
        .collect();
    if !found {
        lines.push(&line);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    write_atomically(path, text.as_bytes(), 0o600)
}

/// Removes what [`install`] put in place; with `purge`, the data directories too.
pub fn uninstall(layout: &Layout, purge: bool) -> anyhow::Result<()> {
    if layout.live() && package_installed() {
        bail!(
            "the Debian package mymcp is installed: remove it with apt remove (or apt purge) mymcp"
        );
    }
    if layout.live() && systemctl_available() {
        if Path::new("/run/systemd/system").is_dir() {
            let mut stop = vec!["stop"];
            stop.extend(SOCKETS);
            stop.extend(["mymcp-frontend.service", "mymcp-executor.service"]);
            systemctl(layout, &stop)?;
        }
        let mut disable = vec!["disable"];
        disable.extend(SOCKETS);
        systemctl(layout, &disable)?;
    }
    let mut files: Vec<PathBuf> = UNITS
        .iter()
        .map(|(name, _)| Path::new("/etc/systemd/system").join(name))
        .collect();
    files.extend(
        [
            "/etc/sysusers.d/mymcp.conf",
            "/etc/tmpfiles.d/mymcp.conf",
            "/usr/local/share/doc/mymcp/mymcp.env.example",
        ]
        .map(PathBuf::from),
    );
    files.extend(BINARIES.iter().map(|b| layout.bin_dir.join(b)));
    for file in files {
        let path = layout.at(&file);
        if path.exists() {
            layout.step(&format!("remove {}", path.display()));
            if !layout.dry_run {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
    }
    let doc = layout.at("/usr/local/share/doc/mymcp");
    if doc.is_dir() && !layout.dry_run {
        let _ = std::fs::remove_dir(&doc);
    }
    if layout.live() && Path::new("/run/systemd/system").is_dir() && systemctl_available() {
        systemctl(layout, &["daemon-reload"])?;
    }
    for dir in DATA_DIRS {
        let path = layout.at(dir);
        if !path.exists() {
            continue;
        }
        if purge {
            layout.step(&format!("purge {}", path.display()));
            if !layout.dry_run {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        } else {
            layout.step(&format!(
                "keep {} (tokens, state, audit log: --purge removes them)",
                path.display()
            ));
        }
    }
    if layout.live() {
        layout.step("the user mymcp stays (remove it with: userdel mymcp)");
    }
    Ok(())
}

fn package_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "mymcp"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn systemctl_available() -> bool {
    Command::new("systemctl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn systemctl(layout: &Layout, args: &[&str]) -> anyhow::Result<()> {
    layout.step(&format!("systemctl {}", args.join(" ")));
    if layout.dry_run {
        return Ok(());
    }
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .context("running systemctl")?;
    if !status.success() {
        bail!("systemctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn create_user() -> anyhow::Result<()> {
    if gid_of("mymcp").is_some() {
        return Ok(());
    }
    let sysusers = Command::new("systemd-sysusers")
        .arg("/etc/sysusers.d/mymcp.conf")
        .status();
    if !matches!(sysusers, Ok(s) if s.success()) {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                "mymcp",
            ])
            .status()
            .context("running useradd")?;
        if !status.success() {
            bail!("useradd mymcp failed ({status})");
        }
    }
    Ok(())
}

/// The primary group of `user`, via getent.
fn gid_of(user: &str) -> Option<u32> {
    let out = Command::new("getent")
        .args(["passwd", user])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(':')
        .nth(3)?
        .parse()
        .ok()
}

fn make_dir(path: &Path, mode: u32, gid: Option<u32>) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(())
}

fn copy_atomically(src: &Path, dst: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    write_atomically(dst, &bytes, mode)
}

/// Writes `dst` through a temporary file beside it and a rename, so that a running binary
/// is replaced, never rewritten in place ("text file busy").
fn write_atomically(dst: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = dst.parent().context("destination has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.mymcp-tmp",
        dst.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    std::fs::rename(&tmp, dst).with_context(|| format!("renaming into {}", dst.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_point_at_the_installed_binaries() {
        let text = unit_text(UNITS[0].1, Path::new("/usr/local/bin"));
        assert!(
            text.contains("ExecStart=/usr/local/bin/mymcp-executor "),
            "{text}"
        );
        assert!(!text.contains("/usr/bin/mymcp-"));
    }

    #[test]
    fn the_tools_user_replaces_its_line_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        set_env_value(&env, "MYMCP_DEFAULT_USER", "alice").unwrap();
        assert_eq!(
            std::fs::read_to_string(&env).unwrap(),
            "MYMCP_DEFAULT_USER=alice\n"
        );
        assert_eq!(
            std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&env, "# x\nMYMCP_PORT=1\nMYMCP_DEFAULT_USER=alice\n").unwrap();
        set_env_value(&env, "MYMCP_DEFAULT_USER", "bob").unwrap();
        assert_eq!(
            std::fs::read_to_string(&env).unwrap(),
            "# x\nMYMCP_PORT=1\nMYMCP_DEFAULT_USER=bob\n"
        );
    }

    #[test]
    fn paths_land_under_the_root() {
        let layout = Layout {
            root: "/tmp/r".into(),
            bin_dir: "/usr/local/bin".into(),
            dry_run: true,
        };
        assert_eq!(layout.at("/etc/mymcp"), Path::new("/tmp/r/etc/mymcp"));
        assert!(!layout.live());
    }
}
