//! The recorder's data directory (`MYMCP_RECORDER_DATA_DIR`):
//!
//! ```text
//! cursor.json              where reading the audit log stands ({"file","inode","offset","seq"})
//! overview/overview.md     the document server_overview returns (replaced atomically)
//! overview/changelog.md    one line per change, append-only
//! ```
//!
//! Every replacement is a temporary file in the same directory, fsynced, renamed over the old
//! one, and the directory fsynced: a crash leaves the old file or the new one, never half of
//! one. The executor protects the whole directory against the file tools' writes.

use mymcp_audit::follow::{Cursor, CURSOR_FILE};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes of the changelog's end read back to rebuild "Recent Changes".
const CHANGELOG_TAIL_BYTES: u64 = 64 * 1024;

/// The data directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Uses `dir`, creating it and `overview/` (mode 0750) when missing.
    pub fn open(dir: &Path) -> io::Result<Store> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir.join("overview"))?;
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn overview_path(&self) -> PathBuf {
        self.dir.join("overview").join("overview.md")
    }

    pub fn changelog_path(&self) -> PathBuf {
        self.dir.join("overview").join("changelog.md")
    }

    pub fn cursor_path(&self) -> PathBuf {
        self.dir.join(CURSOR_FILE)
    }

    /// The overview, or `None` when there is none yet (bootstrap).
    pub fn overview(&self) -> io::Result<Option<String>> {
        match fs::read_to_string(self.overview_path()) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write_overview(&self, text: &str) -> io::Result<()> {
        write_atomic(&self.overview_path(), text.as_bytes())
    }

    /// The last lines of the changelog (its final 64 KiB, whole lines only).
    pub fn changelog_tail(&self) -> io::Result<String> {
        let mut f = match File::open(self.changelog_path()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(CHANGELOG_TAIL_BYTES);
        f.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(if start > 0 {
            // Drop the partial first line.
            text.split_once('\n')
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or_default()
        } else {
            text
        })
    }

    /// Appends lines to the changelog and syncs it.
    pub fn append_changelog(&self, lines: &[String]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(self.changelog_path())?;
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }

    /// The cursor, or `None` when there is none (a fresh start).
    pub fn cursor(&self) -> Option<Cursor> {
        Cursor::load(&self.cursor_path())
    }

    pub fn save_cursor(&self, c: &Cursor) -> io::Result<()> {
        let text = serde_json::to_string(c).map_err(io::Error::other)?;
        write_atomic(&self.cursor_path(), text.as_bytes())
    }
}

/// Writes `bytes` to `path` atomically (mode 0640).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_replaced_and_appended() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("rec")).unwrap();
        assert_eq!(s.overview().unwrap(), None);
        assert!(s.cursor().is_none());
        s.write_overview("# a\n").unwrap();
        s.write_overview("# b\n").unwrap();
        assert_eq!(s.overview().unwrap().as_deref(), Some("# b\n"));
        s.append_changelog(&["x".into()]).unwrap();
        s.append_changelog(&["y".into(), "z".into()]).unwrap();
        assert_eq!(s.changelog_tail().unwrap(), "x\ny\nz\n");
        let c = Cursor {
            file: "/var/log/mymcp/audit.log".into(),
            inode: 7,
            offset: 99,
            seq: 3,
        };
        s.save_cursor(&c).unwrap();
        assert_eq!(s.cursor(), Some(c));
        // No temporary files are left.
        let names: Vec<_> = fs::read_dir(s.dir().join("overview"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn the_changelog_tail_is_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let lines: Vec<String> = (0..5000).map(|i| format!("line {i:05}")).collect();
        s.append_changelog(&lines).unwrap();
        let tail = s.changelog_tail().unwrap();
        assert!(tail.len() as u64 <= CHANGELOG_TAIL_BYTES);
        assert!(tail.starts_with("line ") && tail.ends_with("line 04999\n"));
    }
}
