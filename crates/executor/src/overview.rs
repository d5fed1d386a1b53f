//! `server_overview`: the Markdown document about the host that `mymcp-recorder` keeps in
//! `<MYMCP_RECORDER_DATA_DIR>/overview/overview.md`, with the reference's freshness fields
//! (spec §4.8).
//!
//! The recorder is an unprivileged user and owns its data directory, so what is there is
//! treated as that user's: the executor (root) opens `overview/overview.md` and `cursor.json`
//! below the data directory without following any symlink, never blocks on a FIFO, and refuses
//! a document owned by someone else than its directory's owner (a hard link to a file the
//! recorder could not read). Otherwise an ro token could read, through the recorder's files,
//! what root can read.

use crate::auth::{Authorized, Ro};
use crate::paths::os_message;
use mymcp_audit::follow::{self, Cursor, CURSOR_FILE};
use mymcp_protocol::{ErrorCode, OverviewOutput, ToolFailure};
use mymcp_sys::fs::{self as sysfs, Base, Resolve};
use mymcp_tokens::clock;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest overview returned (the recorder keeps it far smaller).
const MAX_OVERVIEW_BYTES: u64 = 4 << 20;

/// Where the overview is and how fresh it should be.
#[derive(Clone, Debug)]
pub(crate) struct OverviewConfig {
    /// `MYMCP_RECORDER_DATA_DIR`.
    pub(crate) data_dir: PathBuf,
    /// `MYMCP_RECORDER_MERGE_INTERVAL_SEC`: the overview is stale once it is older than two of
    /// these while events wait.
    pub(crate) merge_interval: Duration,
    /// `MYMCP_AUDIT_LOG_DIR`: where the events the recorder has yet to merge are.
    pub(crate) audit_dir: PathBuf,
    /// The executor runs as a systemd service, where the recorder is the unit
    /// `mymcp-recorder` and messages point at it; elsewhere (the quick try, a shell) they say
    /// that no recorder runs with this server.
    pub(crate) under_systemd: bool,
}

/// Where `mymcp-recorder` keeps its files unless `MYMCP_RECORDER_DATA_DIR` says otherwise.
const DEFAULT_DATA_DIR: &str = mymcp_settings::RECORDER_DATA_DIR.default();

impl Default for OverviewConfig {
    /// The reference's defaults.
    fn default() -> Self {
        OverviewConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            merge_interval: Duration::from_secs(
                mymcp_settings::RECORDER_MERGE_INTERVAL_SEC.default(),
            ),
            audit_dir: PathBuf::from(mymcp_settings::AUDIT_LOG_DIR.default()),
            under_systemd: true,
        }
    }
}

impl OverviewConfig {
    /// The document's path, as messages show it.
    pub(crate) fn path(&self) -> PathBuf {
        self.data_dir.join("overview").join("overview.md")
    }

    /// What to check when the overview is missing or old, for the way the server was started.
    fn check(&self) -> &'static str {
        if self.under_systemd {
            "Check: systemctl status mymcp-recorder"
        } else {
            "Check that the mymcp recorder (mymcp-recorder) runs for this server"
        }
    }
}

/// Whether `server_overview` has a document to return now: it exists and passes the checks
/// of a read. The frontend lists the tool only then.
pub(crate) fn available(cfg: &OverviewConfig) -> bool {
    open_overview(cfg).is_ok()
}

/// Runs `server_overview` at `now` for the holder of `_auth`.
pub(crate) fn server_overview(
    _auth: &Authorized<Ro>,
    cfg: &OverviewConfig,
    now: SystemTime,
) -> Result<OverviewOutput, ToolFailure> {
    let path = cfg.path();
    let shown = path.display().to_string();
    let unreadable = |e: &io::Error| {
        ToolFailure::new(
            ErrorCode::RecorderDisabled,
            format!("could not read overview at {shown}: {}", os_message(e, "")),
        )
    };
    let (text, meta) = match read_overview(cfg) {
        Ok(x) => x,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let message = if cfg.under_systemd {
                // The reference's words: true for an install under systemd.
                format!("overview not generated yet at {shown} — is the recorder sidecar running? Check: systemctl status mymcp-recorder")
            } else {
                format!("overview not generated yet at {shown}: the mymcp recorder (mymcp-recorder) keeps it, and none has written it for this server, which runs outside systemd (the quick try, mymcpctl serve, starts no recorder)")
            };
            return Err(ToolFailure::new(ErrorCode::RecorderDisabled, message));
        }
        Err(e) => return Err(unreadable(&e)),
    };
    let (last_updated, updated_at) = match stamp(&text) {
        Some((s, at)) => (s.to_owned(), Some(at)),
        None => {
            let at = meta.mtime();
            (clock::rfc3339(at), Some(at))
        }
    };
    let pending_events = pending(cfg);
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let age = updated_at.map(|at| now.saturating_sub(at));
    let stale =
        pending_events > 0 && age.is_some_and(|a| a > 2 * cfg.merge_interval.as_secs() as i64);
    let overview = if stale {
        let minutes = age.unwrap_or(0) / 60;
        format!(
            "_Warning: this overview may be out of date: {pending_events} audit event{} not merged yet, last updated {minutes} minute{} ago. {}_\n\n{text}",
            if pending_events == 1 { "" } else { "s" },
            if minutes == 1 { "" } else { "s" },
            cfg.check(),
        )
    } else {
        text
    };
    Ok(OverviewOutput {
        overview,
        last_updated,
        pending_events,
        stale,
    })
}

/// The `_Last updated: <RFC 3339>_` line of the document: its timestamp as written and as
/// seconds since the epoch.
fn stamp(text: &str) -> Option<(&str, i64)> {
    text.lines().find_map(|l| {
        let ts = l
            .trim()
            .strip_prefix("_Last updated:")?
            .strip_suffix('_')?
            .trim();
        clock::parse_rfc3339(ts).map(|at| (ts, at))
    })
}

/// Opens `name` below `dir`: no symlink anywhere, no blocking open of a FIFO.
fn open_below(dir: &OwnedFd, name: &str, flags: libc::c_int) -> io::Result<(File, Metadata)> {
    let fd = sysfs::openat2(
        Base::Dir(dir.as_fd()),
        OsStr::new(name),
        flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
        Resolve::STRICTLY_BENEATH,
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            io::Error::other(format!("{name} is a symbolic link (refused)"))
        } else {
            e
        }
    })?;
    let f = sysfs::into_file(fd);
    let m = f.metadata()?;
    Ok((f, m))
}

fn open_data_dir(cfg: &OverviewConfig) -> io::Result<OwnedFd> {
    sysfs::openat2(
        Base::Cwd,
        cfg.data_dir.as_os_str(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        Resolve::NO_MAGIC,
    )
}

/// The document, opened and checked: a regular file below the data directory, owned by the
/// directory's owner, not too large.
fn open_overview(cfg: &OverviewConfig) -> io::Result<(File, Metadata)> {
    let data = open_data_dir(cfg)?;
    let (dir, dir_meta) = open_below(&data, "overview", libc::O_RDONLY | libc::O_DIRECTORY)?;
    let (file, meta) = open_below(&OwnedFd::from(dir), "overview.md", libc::O_RDONLY)?;
    if !meta.is_file() {
        return Err(io::Error::other("overview.md is not a regular file"));
    }
    if dir_meta.uid() != 0 && meta.uid() != dir_meta.uid() {
        return Err(io::Error::other(format!(
            "overview.md belongs to uid {}, not to the owner of its directory (uid {}): refused",
            meta.uid(),
            dir_meta.uid()
        )));
    }
    if meta.len() > MAX_OVERVIEW_BYTES {
        return Err(io::Error::other(format!(
            "it is {} bytes, more than the {MAX_OVERVIEW_BYTES} returned at most",
            meta.len()
        )));
    }
    Ok((file, meta))
}

/// The document and its metadata, checked.
fn read_overview(cfg: &OverviewConfig) -> io::Result<(String, Metadata)> {
    let (file, meta) = open_overview(cfg)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_OVERVIEW_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Ok((text, meta))
}

/// Events behind the recorder's cursor; 0 when anything is missing or odd (the reference's
/// rule: this is a hint, never an error).
fn pending(cfg: &OverviewConfig) -> u64 {
    let cursor = || -> io::Result<Cursor> {
        let data = open_data_dir(cfg)?;
        let (f, m) = open_below(&data, CURSOR_FILE, libc::O_RDONLY)?;
        if !m.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut text = Vec::new();
        f.take(64 * 1024).read_to_end(&mut text)?;
        serde_json::from_slice(&text).map_err(io::Error::other)
    };
    cursor()
        .and_then(|c| follow::pending_events(&cfg.audit_dir, &c))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn ro() -> Authorized<Ro> {
        Authorized::for_tests()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        cfg: OverviewConfig,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let cfg = OverviewConfig {
                data_dir: dir.path().join("recorder"),
                merge_interval: Duration::from_secs(300),
                audit_dir: dir.path().join("audit"),
                under_systemd: true,
            };
            std::fs::create_dir_all(cfg.data_dir.join("overview")).unwrap();
            std::fs::create_dir_all(&cfg.audit_dir).unwrap();
            Fixture { _dir: dir, cfg }
        }

        fn write(&self, text: &str) {
            std::fs::write(self.cfg.path(), text).unwrap();
        }

        /// Appends audit lines; returns the log's size before them.
        fn audit(&self, lines: &[&str]) -> u64 {
            let log = self.cfg.audit_dir.join("audit.log");
            let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            for l in lines {
                writeln!(f, "{l}").unwrap();
            }
            before
        }

        fn cursor_at(&self, offset: u64) {
            let log = self.cfg.audit_dir.join("audit.log");
            let c = Cursor {
                file: log.display().to_string(),
                inode: std::fs::metadata(&log).unwrap().ino(),
                offset,
                seq: 0,
            };
            std::fs::write(
                self.cfg.data_dir.join(CURSOR_FILE),
                serde_json::to_string(&c).unwrap(),
            )
            .unwrap();
        }
    }

    const WRITE_OK: &str = r#"{"ts":"t","tool":"write_file","params":{},"result":"ok"}"#;
    const READ_OK: &str = r#"{"ts":"t","tool":"read_file","params":{},"result":"ok"}"#;

    fn at(ts: &str) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(clock::parse_rfc3339(ts).unwrap() as u64)
    }

    #[test]
    fn missing_overview_is_recorder_disabled_with_the_reference_message() {
        let f = Fixture::new();
        let e = server_overview(&ro(), &f.cfg, SystemTime::now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::RecorderDisabled);
        assert_eq!(
            e.message,
            format!(
                "overview not generated yet at {} — is the recorder sidecar running? Check: systemctl status mymcp-recorder",
                f.cfg.path().display()
            )
        );
        // A missing data directory is the same.
        let cfg = OverviewConfig {
            data_dir: f.cfg.data_dir.join("nope"),
            ..f.cfg.clone()
        };
        let e = server_overview(&ro(), &cfg, SystemTime::now()).unwrap_err();
        assert!(e.message.starts_with("overview not generated yet at "));
        assert!(!available(&f.cfg) && !available(&cfg));
    }

    #[test]
    fn outside_systemd_the_messages_do_not_point_at_a_unit() {
        let f = Fixture::new();
        let cfg = OverviewConfig {
            under_systemd: false,
            ..f.cfg.clone()
        };
        let e = server_overview(&ro(), &cfg, SystemTime::now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::RecorderDisabled);
        assert_eq!(
            e.message,
            format!(
                "overview not generated yet at {}: the mymcp recorder (mymcp-recorder) keeps it, and none has written it for this server, which runs outside systemd (the quick try, mymcpctl serve, starts no recorder)",
                cfg.path().display()
            )
        );
        assert!(!e.message.contains("systemctl"));
        f.write("# Host\n_Last updated: 2026-11-21T18:00:00Z_\n");
        f.audit(&[WRITE_OK]);
        f.cursor_at(0);
        let o = server_overview(&ro(), &cfg, at("2026-11-21T19:00:00Z")).unwrap();
        assert!(o.stale);
        assert!(
            o.overview.starts_with("_Warning: this overview may be out of date: 1 audit event not merged yet, last updated 60 minutes ago. Check that the mymcp recorder (mymcp-recorder) runs for this server_\n\n"),
            "{}",
            o.overview
        );
    }

    #[test]
    fn available_only_when_a_readable_document_is_there() {
        let f = Fixture::new();
        assert!(!available(&f.cfg));
        f.write("# Host\n");
        assert!(available(&f.cfg));
        std::fs::remove_file(f.cfg.path()).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", f.cfg.path()).unwrap();
        assert!(!available(&f.cfg), "a symlink is not an overview");
    }

    #[test]
    fn fresh_overview_with_its_stamp_and_no_pending_events() {
        let f = Fixture::new();
        f.write("# Host\n\n_Last updated: 2026-11-21T18:15:33.164390Z_\n\n## TL;DR\nweb server\n");
        let o = server_overview(&ro(), &f.cfg, at("2026-11-21T19:00:00Z")).unwrap();
        assert_eq!(o.last_updated, "2026-11-21T18:15:33.164390Z");
        assert_eq!((o.pending_events, o.stale), (0, false));
        assert!(o.overview.starts_with("# Host\n"));
    }

    #[test]
    fn without_a_stamp_the_modification_time_is_last_updated() {
        let f = Fixture::new();
        f.write("# Host\n_Last updated: yesterday_\n");
        let mtime = std::fs::metadata(f.cfg.path()).unwrap().mtime();
        let o = server_overview(&ro(), &f.cfg, SystemTime::now()).unwrap();
        assert_eq!(o.last_updated, clock::rfc3339(mtime));
    }

    #[test]
    fn pending_events_are_counted_behind_the_cursor_and_make_an_old_overview_stale() {
        let f = Fixture::new();
        f.write("# Host\n_Last updated: 2026-11-21T18:00:00Z_\n");
        f.audit(&[WRITE_OK]);
        let offset = f.audit(&[WRITE_OK, READ_OK, WRITE_OK]);
        f.cursor_at(offset);
        // Within two intervals (600 s): fresh even with events waiting.
        let o = server_overview(&ro(), &f.cfg, at("2026-11-21T18:10:00Z")).unwrap();
        assert_eq!((o.pending_events, o.stale), (2, false));
        // Later: stale, with the banner first.
        let o = server_overview(&ro(), &f.cfg, at("2026-11-21T18:45:00Z")).unwrap();
        assert_eq!((o.pending_events, o.stale), (2, true));
        let (banner, rest) = o.overview.split_once("\n\n").unwrap();
        assert_eq!(
            banner,
            "_Warning: this overview may be out of date: 2 audit events not merged yet, last updated 45 minutes ago. Check: systemctl status mymcp-recorder_"
        );
        assert!(rest.starts_with("# Host\n"));
        assert_eq!(o.last_updated, "2026-11-21T18:00:00Z");
        // Old but nothing waiting: not stale.
        f.cursor_at(
            std::fs::metadata(f.cfg.audit_dir.join("audit.log"))
                .unwrap()
                .len(),
        );
        let o = server_overview(&ro(), &f.cfg, at("2026-11-22T18:00:00Z")).unwrap();
        assert_eq!((o.pending_events, o.stale), (0, false));
        assert!(o.overview.starts_with("# Host"));
    }

    #[test]
    fn a_broken_cursor_means_no_pending_events() {
        let f = Fixture::new();
        f.write("x");
        f.audit(&[WRITE_OK]);
        std::fs::write(f.cfg.data_dir.join(CURSOR_FILE), "{").unwrap();
        let o = server_overview(&ro(), &f.cfg, SystemTime::now()).unwrap();
        assert_eq!(o.pending_events, 0);
        // A symlinked cursor is not followed.
        std::fs::remove_file(f.cfg.data_dir.join(CURSOR_FILE)).unwrap();
        let real = f.cfg.data_dir.join("real-cursor.json");
        std::fs::write(&real, r#"{"file":"","inode":1,"offset":0}"#).unwrap();
        std::os::unix::fs::symlink(&real, f.cfg.data_dir.join(CURSOR_FILE)).unwrap();
        assert_eq!(
            server_overview(&ro(), &f.cfg, SystemTime::now())
                .unwrap()
                .pending_events,
            0
        );
    }

    #[test]
    fn symlinks_fifos_and_foreign_files_are_refused() {
        let f = Fixture::new();
        let secret = f.cfg.data_dir.join("secret");
        std::fs::write(&secret, "root only").unwrap();
        std::os::unix::fs::symlink(&secret, f.cfg.path()).unwrap();
        let e = server_overview(&ro(), &f.cfg, SystemTime::now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::RecorderDisabled);
        assert!(
            e.message.starts_with(&format!(
                "could not read overview at {}: ",
                f.cfg.path().display()
            )) && e.message.contains("symbolic link"),
            "{}",
            e.message
        );
        std::fs::remove_file(f.cfg.path()).unwrap();
        crate::testing::mkfifo(&f.cfg.path());
        let e = server_overview(&ro(), &f.cfg, SystemTime::now()).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{}", e.message);
        std::fs::remove_file(f.cfg.path()).unwrap();
        // A recorder-owned directory holding a file of another user (a hard link to it).
        if mymcp_sys::euid() == 0 {
            let dir = f.cfg.data_dir.join("overview");
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            f.write("x");
            std::fs::set_permissions(f.cfg.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = server_overview(&ro(), &f.cfg, SystemTime::now()).unwrap_err();
            assert!(e.message.contains("refused"), "{}", e.message);
            std::os::unix::fs::chown(f.cfg.path(), Some(65534), Some(65534)).unwrap();
            assert!(server_overview(&ro(), &f.cfg, SystemTime::now()).is_ok());
        }
    }

    #[test]
    fn the_stamp_is_found_on_its_own_line_only() {
        assert_eq!(
            stamp("a\n  _Last updated: 2026-01-01T00:00:00Z_  \nb").map(|s| s.0),
            Some("2026-01-01T00:00:00Z")
        );
        assert!(stamp("see _Last updated: 2026-01-01T00:00:00Z_").is_none());
        assert!(stamp("_Last updated: 2026-01-01_").is_none());
    }
}
