//! The mount table (`/proc/self/mountinfo`), read for one question: can a file at this real
//! path be opened and read with nothing but memory, so that a runtime worker may do it rather
//! than hand it to the blocking pool?
//!
//! Two things decide it, both known from the table:
//!
//! * every mount on the way to the file is a local file system that answers a cached lookup,
//!   `stat` and `open` from memory ([`FROM_MEMORY`]). A network file system (NFS, CIFS, 9p,
//!   Ceph), a FUSE daemon or anything else not in the list may wait on a server or a process
//!   for any of them, and is always read on the blocking pool;
//! * whether reading updates the file's access time ([`Atime`]): an update dirties the inode,
//!   which starts a journal transaction that can wait for the disk. Under `noatime` it never
//!   happens; under `relatime` (the default) the kernel's rule is known and checked against the
//!   file's own times ([`Atime::read_keeps`]); under `strictatime` every read updates it.
//!
//! The table is read when the protected set is resolved and dropped with it: a mount or unmount
//! anywhere invalidates that resolution ([`crate::paths`] watches the mount table), so a table
//! in use is the current one.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// File system types whose lookups, `stat`, `open` and cached reads wait on memory only.
const FROM_MEMORY: [&str; 7] = ["ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs"];

/// When a read updates a file's access time, by the mount's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Atime {
    /// `noatime`, or a read-only mount: never.
    Never,
    /// `relatime`: when the access time is not after the modification and change times, or
    /// is a day old.
    Relative,
    /// `strictatime`: on every read.
    Always,
}

/// The kernel updates a `relatime` access time once it is a day old; a minute less, because
/// its clock for file times is coarser than the system clock.
const RELATIME_AGE_SECS: i64 = 24 * 60 * 60 - 60;

impl Atime {
    /// Whether reading a file with these times (seconds and nanoseconds) leaves its access
    /// time as it is.
    pub(crate) fn read_keeps(
        self,
        atime: (i64, i64),
        mtime: (i64, i64),
        ctime: (i64, i64),
        now: SystemTime,
    ) -> bool {
        match self {
            Atime::Never => true,
            Atime::Always => false,
            Atime::Relative => {
                let now = now
                    .duration_since(UNIX_EPOCH)
                    .map_or(i64::MAX, |d| d.as_secs() as i64);
                atime > mtime && atime > ctime && now.saturating_sub(atime.0) < RELATIME_AGE_SECS
            }
        }
    }
}

#[derive(Debug)]
struct Mount {
    point: PathBuf,
    /// The directory of its file system that is mounted there (`/` unless a bind mount of a
    /// subtree).
    root: PathBuf,
    from_memory: bool,
    /// A `proc` file system: its top-level numeric directories are processes.
    proc: bool,
    atime: Atime,
}

/// The mounts of this process's namespace, as seen from its root.
#[derive(Debug)]
pub(crate) struct Mounts {
    mounts: Vec<Mount>,
}

impl Mounts {
    /// This process's mount table.
    pub(crate) fn read() -> io::Result<Mounts> {
        Mounts::parse(&std::fs::read("/proc/self/mountinfo")?)
    }

    /// Parses `mountinfo` text; a line that is not understood makes the whole table an error
    /// (a mount whose place is unknown could be on any path).
    pub(crate) fn parse(text: &[u8]) -> io::Result<Mounts> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "unreadable mountinfo line");
        let mut mounts = Vec::new();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let dash = fields.iter().position(|f| *f == b"-").ok_or_else(bad)?;
            if dash < 6 || fields.len() < dash + 2 {
                return Err(bad());
            }
            let root = PathBuf::from(OsString::from_vec(unescape(fields[3])));
            let point = PathBuf::from(OsString::from_vec(unescape(fields[4])));
            let options = fields[5];
            let has = |o: &[u8]| options.split(|&b| b == b',').any(|x| x == o);
            // A read-only mount never writes an access time, whatever its options say.
            let atime = if has(b"noatime") || has(b"ro") {
                Atime::Never
            } else if has(b"relatime") {
                Atime::Relative
            } else {
                Atime::Always
            };
            let fstype = fields[dash + 1];
            let from_memory = FROM_MEMORY.iter().any(|t| t.as_bytes() == fstype);
            mounts.push(Mount {
                point,
                root,
                from_memory,
                proc: fstype == b"proc",
                atime,
            });
        }
        if mounts.is_empty() {
            return Err(bad());
        }
        Ok(Mounts { mounts })
    }

    /// Every mount of a `proc` file system: where it is mounted, and which of its directories
    /// is mounted there (`/`, or e.g. `/1234` for a bind mount of one process's directory).
    pub(crate) fn proc_mounts(&self) -> Vec<(PathBuf, PathBuf)> {
        self.mounts
            .iter()
            .filter(|m| m.proc)
            .map(|m| (m.point.clone(), m.root.clone()))
            .collect()
    }

    /// Whether something is mounted strictly below the real directory `dir` (a bind mount of
    /// a single file counts: a name there may be a second name of any file).
    pub(crate) fn any_below(&self, dir: &Path) -> bool {
        self.mounts
            .iter()
            .any(|m| m.point != dir && m.point.starts_with(dir))
    }

    /// For a real path (absolute, as `/proc/self/fd` gives it): `None` when any mount on the
    /// way to it (including ones covered by a later mount) is not known to answer from
    /// memory, else how its mount updates access times (the strictest of those on the path
    /// itself, should several be stacked there).
    pub(crate) fn local(&self, real: &Path) -> Option<Atime> {
        let mut own: Option<(usize, Atime)> = None;
        // A byte prefix first (both are normalized absolute paths, so a component prefix is
        // one): most mounts are ruled out without splitting either path into components.
        let bytes = real.as_os_str().as_encoded_bytes();
        let on_the_way = |m: &&Mount| {
            bytes.starts_with(m.point.as_os_str().as_encoded_bytes()) && real.starts_with(&m.point)
        };
        for m in self.mounts.iter().filter(on_the_way) {
            if !m.from_memory {
                return None;
            }
            let depth = m.point.components().count();
            own = match own {
                Some((d, a)) if d > depth => Some((d, a)),
                Some((d, a)) if d == depth => Some((d, a.max(m.atime))),
                _ => Some((depth, m.atime)),
            };
        }
        own.map(|(_, a)| a)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\012` for a newline, …).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| {
            field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TABLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 27 0:27 / /tmp rw,nosuid,nodev,noatime - tmpfs tmpfs rw,size=1024k
31 27 0:40 /export /srv/nfs rw,relatime shared:5 - nfs4 server:/export rw,vers=4.2
32 31 8:1 / /srv/nfs/scratch rw,relatime - ext4 /dev/sda1 rw
33 27 8:2 / /data\\040disk rw,strictatime - xfs /dev/sda2 rw
34 27 0:50 / /home/u/fuse rw,nosuid,nodev,relatime - fuse.sshfs host: rw
35 27 8:3 / /stack rw,noatime - ext4 /dev/sda3 rw
36 27 8:4 / /stack rw,relatime - ext4 /dev/sda4 rw
37 27 8:5 / /usr ro,relatime - ext4 /dev/sda5 ro
";

    fn table() -> Mounts {
        Mounts::parse(TABLE.as_bytes()).unwrap()
    }

    #[test]
    fn a_path_on_local_file_systems_gets_its_mounts_access_time_rule() {
        let t = table();
        assert_eq!(t.local(Path::new("/etc/passwd")), Some(Atime::Relative));
        assert_eq!(t.local(Path::new("/tmp/f.txt")), Some(Atime::Never));
        assert_eq!(t.local(Path::new("/tmp")), Some(Atime::Never));
        assert_eq!(t.local(Path::new("/data disk/x")), Some(Atime::Always));
        assert_eq!(t.local(Path::new("/usr/bin/env")), Some(Atime::Never));
        // By components: /tmpx is on the root file system, not the tmpfs.
        assert_eq!(t.local(Path::new("/tmpx/f")), Some(Atime::Relative));
        // Two mounts stacked on one place: the stricter rule counts.
        assert_eq!(t.local(Path::new("/stack/f")), Some(Atime::Relative));
    }

    #[test]
    fn any_mount_on_the_way_that_may_wait_on_something_else_refuses() {
        let t = table();
        assert_eq!(t.local(Path::new("/srv/nfs/file")), None);
        // A local disk mounted inside the NFS mount: its ancestors are looked up over NFS.
        assert_eq!(t.local(Path::new("/srv/nfs/scratch/file")), None);
        assert_eq!(t.local(Path::new("/home/u/fuse/file")), None);
        assert_eq!(t.local(Path::new("/proc/self/status")), None);
        // Beside them, not under them.
        assert_eq!(t.local(Path::new("/srv/other")), Some(Atime::Relative));
        assert_eq!(t.local(Path::new("/home/u/fusex")), Some(Atime::Relative));
    }

    #[test]
    fn mounts_strictly_below_a_directory_are_found_by_components() {
        let t = table();
        assert!(t.any_below(Path::new("/srv")));
        assert!(t.any_below(Path::new("/srv/nfs")));
        assert!(t.any_below(Path::new("/")));
        // The mount point itself, a place beside one, a name sharing a prefix, a leaf.
        assert!(!t.any_below(Path::new("/srv/nfs/scratch")));
        assert!(!t.any_below(Path::new("/srv/other")));
        assert!(!t.any_below(Path::new("/tm")));
        assert!(!t.any_below(Path::new("/tmp/sub")));
    }

    #[test]
    fn proc_mounts_are_found_with_their_roots() {
        let extra = format!("{TABLE}40 27 0:21 /1234 /srv/one\\040proc rw - proc proc rw\n");
        let t = Mounts::parse(extra.as_bytes()).unwrap();
        assert_eq!(
            t.proc_mounts(),
            vec![
                (PathBuf::from("/proc"), PathBuf::from("/")),
                (PathBuf::from("/srv/one proc"), PathBuf::from("/1234")),
            ]
        );
    }

    #[test]
    fn a_table_that_is_not_understood_is_an_error() {
        assert!(Mounts::parse(b"").is_err());
        assert!(Mounts::parse(b"27 1 254:0 / / rw,relatime ext4 /dev/vda rw\n").is_err());
        assert!(Mounts::parse(b"27 1 254:0 / / - ext4\n").is_err());
        let mixed = format!("{TABLE}garbage\n");
        assert!(Mounts::parse(mixed.as_bytes()).is_err());
    }

    #[test]
    fn escapes_are_undone_and_malformed_ones_kept() {
        assert_eq!(unescape(br"/a\040b\011c\134d"), b"/a b\tc\\d");
        assert_eq!(unescape(br"/a\04"), br"/a\04");
        assert_eq!(unescape(br"/a\999"), br"/a\999");
    }

    #[test]
    fn this_processs_own_table_is_understood() {
        let t = Mounts::read().unwrap();
        assert!(t.mounts.iter().any(|m| m.point == Path::new("/")));
    }

    #[test]
    fn relatime_updates_when_the_access_time_is_not_newer_or_a_day_old() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t = |s: i64| (s, 0);
        let r = Atime::Relative;
        // Read since the last change, within the day: kept.
        assert!(r.read_keeps(t(999_000), t(998_000), t(998_000), now));
        // Changed (or modified) at or after the last read: updated.
        assert!(!r.read_keeps(t(999_000), t(999_000), t(998_000), now));
        assert!(!r.read_keeps(t(999_000), t(998_000), (999_000, 1), now));
        assert!(!r.read_keeps((999_000, 5), (999_000, 6), t(998_000), now));
        // A day old: updated (with the margin for the kernel's coarser clock).
        assert!(!r.read_keeps(t(1_000_000 - 86_400), t(0), t(0), now));
        assert!(!r.read_keeps(t(1_000_000 - 86_400 + 30), t(0), t(0), now));
        assert!(r.read_keeps(t(1_000_000 - 86_400 + 120), t(0), t(0), now));
        assert!(Atime::Never.read_keeps(t(0), t(5), t(5), now));
        assert!(!Atime::Always.read_keeps(t(999_000), t(0), t(0), now));
    }
}
