//! Protected paths, enforced on the opened object.
//!
//! The reference servers checked a path *string* (`realpath`, then a prefix test) and then
//! opened the path again, so a symlink swapped in between escaped the check, hard links were
//! never noticed, and `/etc/mymcp` matched `/etc/mymcpx`. Here every file tool opens first and
//! checks what it opened:
//!
//! 1. The path is resolved by the kernel with `openat2(RESOLVE_NO_MAGICLINKS)` (no
//!    `/proc/*/fd/*` or `/proc/*/root` tricks) into a descriptor.
//! 2. The descriptor's real path (`/proc/self/fd/N`) is compared with each protected entry
//!    *by components*, its `(dev, ino)` with the protected entries' own, and the `(dev, ino)` of
//!    each of its ancestors with the protected directories' (a bind mount of a protected
//!    directory elsewhere is still that directory).
//! 3. Reads use that descriptor; writes open and check the parent directory, then create a
//!    temporary file inside it with `O_EXCL|O_NOFOLLOW` and `renameat` it over the name, so
//!    what is written is always inside the directory that was checked.
//!
//! Walks (`grep`, `glob`) check their root the same way, then ask one rule, [`Walk::verdict`],
//! whether a directory may be entered and an entry reported or read: protected directories
//! are pruned by path and `(dev, ino)`, and `grep` opens each file relative to a checked
//! directory descriptor without following symlinks, so protected content is never read.
//!
//! Entries are of two kinds. Most protect against reading and writing alike; a *write-only*
//! entry (the recorder's data directory, whose overview the file tools may read but not
//! change) is only protected against writes. A policy is built for one kind of access
//! ([`ProtectedPaths::policy`]): for reads, a write-only entry also opens what lies inside it
//! when it sits within a read-write entry (the default data directory
//! `/var/lib/mymcp/recorder` is inside the protected state directory): the most specific entry
//! decides. That exemption holds only for a real directory (never a symlink, which its
//! unprivileged owner could point anywhere), and never for an object that is itself a
//! protected entry (by inode).
//!
//! The protected set is resolved at the start of every call ([`ProtectedPaths::policy`]): an
//! entry that is replaced (the token store is rewritten by rename) is recognised by its current
//! inode. Resolving means a `realpath` and a `stat` per entry, about 45 system calls for the
//! default set, which was most of a small read's cost; so a resolved set is reused while
//! nothing it depends on has changed, which the kernel reports (see [`Watch`]): an inotify
//! watch on each entry as configured and as really found and on every ancestor of both, for
//! any name on those paths created, removed, renamed or given new metadata (a new hard link
//! changes a file's link count), and the mount table, for any mount or unmount. The kernel
//! queues these events before the change's system call returns, so the next call sees them;
//! asking costs one `poll`. A set with a missing entry is never reused. A read whose path
//! and file are in the kernel's caches is opened on a runtime worker
//! ([`open_for_read_now`], with the mount table of [`crate::mounts`]). The values that
//! prove a check happened — [`CheckedFile`], [`CheckedDir`],
//! [`CheckedTarget`] — can only be built here.

use crate::mounts::Mounts;
use mymcp_protocol::{ErrorCode, ToolFailure};
use mymcp_sys::fs::{self as sysfs, Base, EntryStat, Resolve};
use mymcp_sys::watch as sysfs_watch;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How many symlinks a write may follow to reach the file it replaces.
const MAX_WRITE_LINK_HOPS: usize = 8;

/// The configured protected entries (files or directories), as written in the configuration.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProtectedPaths {
    /// Protected against reads and writes.
    entries: Vec<PathBuf>,
    /// Protected against writes only.
    write_only: Vec<PathBuf>,
    /// The last resolved policy per access kind, shared by clones (same entries).
    cache: Arc<PolicyCache>,
    /// `(dev, ino)` of the mymcp binaries as they were when the executor started (its own
    /// and those beside it), so that a process still running a binary since replaced by an
    /// upgrade is known as a mymcp process.
    started_exes: Arc<HashSet<(u64, u64)>>,
}

#[derive(Debug, Default)]
struct PolicyCache {
    read: Mutex<Option<Arc<Cached>>>,
    write: Mutex<Option<Arc<Cached>>>,
    /// Said once: the watch could not be set up, so every call resolves the set.
    unwatched: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Cached {
    policy: Arc<Policy>,
    watch: Watch,
    /// For reads: the mount table read after the watch was set up, so as current as the
    /// policy (`None` if it could not be read).
    mounts: Option<Mounts>,
}

/// A resolution of the protected set with the mount table of its time
/// ([`ProtectedPaths::current`], [`ProtectedPaths::last`]).
#[derive(Clone, Debug)]
pub(crate) struct Current(Arc<Cached>);

impl Current {
    pub(crate) fn policy(&self) -> &Policy {
        &self.0.policy
    }

    /// Whether nothing it depends on (protected entries, the mount table) changed since.
    fn holds(&self) -> bool {
        !self.0.watch.changed()
    }
}

/// What the kernel reports on a watched directory or entry: any change of a name in it, of
/// its own metadata (modes, link count), or of the object itself (deleted, moved).
const WATCH_MASK: u32 = libc::IN_ATTRIB
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_DONT_FOLLOW;

/// A watch on everything a resolved set depends on: an inotify watch on every path it was
/// resolved through (each entry as configured and as really found, and every ancestor of
/// both), and the mount table (`/proc/self/mountinfo`, which reports any mount or unmount).
/// Asking whether anything changed is one `poll` with no wait.
#[derive(Debug)]
struct Watch {
    inotify: OwnedFd,
    mounts: File,
    /// Per watch descriptor, the names in that directory the set goes through; an event on
    /// another name there does not matter, one on the watched object itself always does.
    names: std::collections::HashMap<i32, HashSet<OsString>>,
    /// Readers of the event queue take turns.
    reading: Mutex<()>,
    changed: std::sync::atomic::AtomicBool,
}

impl Watch {
    /// Watches `paths` and all their ancestors, each ancestor before what lies below it, so
    /// that an object is watched through a name whose own change would already be reported.
    /// A path that does not exist is left out (its creation is an event on its parent).
    fn new(paths: &[PathBuf]) -> io::Result<Watch> {
        let mut wanted: std::collections::BTreeMap<(usize, PathBuf), HashSet<OsString>> =
            Default::default();
        for p in paths {
            let mut child: Option<&OsStr> = None;
            for a in p.ancestors() {
                let names = wanted
                    .entry((a.components().count(), a.to_owned()))
                    .or_default();
                names.extend(child.map(OsStr::to_owned));
                child = a.file_name();
            }
        }
        let inotify = sysfs_watch::inotify()?;
        let mounts = File::open("/proc/self/mountinfo")?;
        let mut names: std::collections::HashMap<i32, HashSet<OsString>> = Default::default();
        for ((_, path), in_it) in wanted {
            match sysfs_watch::add_watch(inotify.as_fd(), &path, WATCH_MASK | libc::IN_MASK_ADD) {
                Ok(wd) => names.entry(wd).or_default().extend(in_it),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Watch {
            inotify,
            mounts,
            names,
            reading: Mutex::new(()),
            changed: Default::default(),
        })
    }

    /// Whether anything the set depends on may have changed since the watch was set up.
    fn changed(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.changed.load(Ordering::Acquire) {
            return true;
        }
        let ready = sysfs_watch::ready_now([
            (self.inotify.as_fd(), libc::POLLIN),
            (self.mounts.as_fd(), libc::POLLPRI),
        ]);
        let changed = match ready {
            Ok([0, 0]) => return false,
            Ok([_, 0]) => {
                let _turn = self.reading.lock().unwrap_or_else(|p| p.into_inner());
                let mut changed = false;
                let read = sysfs_watch::read_events(self.inotify.as_fd(), |wd, mask, name| {
                    changed |= mask & sysfs_watch::OVERFLOW != 0
                        || name.is_empty()
                        || self.names.get(&wd).is_none_or(|n| n.contains(name));
                });
                changed || read.is_err()
            }
            // The mount table changed, or the question failed.
            _ => true,
        };
        if changed {
            self.changed.store(true, Ordering::Release);
        }
        changed
    }
}

/// Where the executor keeps what must never be read or written through the file tools.
#[derive(Clone, Debug, Default)]
pub(crate) struct DefaultProtected {
    /// The token store; its directory (the configuration directory) is protected too.
    pub(crate) token_file: PathBuf,
    /// Sockets.
    pub(crate) runtime_dir: PathBuf,
    /// `MYMCP_STATE_DIR`.
    pub(crate) state_dir: PathBuf,
    /// `MYMCP_AUDIT_LOG_DIR`.
    pub(crate) audit_log_dir: PathBuf,
    /// `MYMCP_ENV_FILE`, when set.
    pub(crate) env_file: Option<PathBuf>,
    /// The directory of the running executor binary: `mymcp-executor`, `mymcp-frontend` and
    /// `mymcpctl` in it are protected (not the directory, which may be `/usr/bin`).
    pub(crate) binary_dir: Option<PathBuf>,
    /// `MYMCP_PROTECTED_PATHS`.
    pub(crate) extra: Vec<PathBuf>,
    /// `MYMCP_RECORDER_DATA_DIR`: readable, never writable.
    pub(crate) recorder_data_dir: Option<PathBuf>,
    /// The frontend's TLS key (`MYMCP_TLS_KEY`), when the executor's settings name it.
    pub(crate) tls_key: Option<PathBuf>,
}

/// The installed binaries protected beside the executor; a running process of one of them is
/// a mymcp process, whose `/proc/<pid>` tree is protected too.
pub(crate) const BINARIES: [&str; 4] = [
    "mymcp-executor",
    "mymcp-frontend",
    "mymcpctl",
    "mymcp-recorder",
];

/// Where systemd puts a service's credentials (`LoadCredential=`): one directory per unit.
const CREDENTIALS_DIR: &str = "/run/credentials";

/// What a refusal by one of the rules that are not configured entries names.
const PROCESS_ENTRY: &str = "/proc/<pid> of a mymcp process";
const KCORE_ENTRY: &str = "/proc/kcore";
const CREDENTIALS_ENTRY: &str = "/run/credentials/mymcp*";

impl ProtectedPaths {
    pub(crate) fn new(entries: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut out = ProtectedPaths::default();
        for e in entries {
            if !out.entries.contains(&e) {
                out.entries.push(e);
            }
        }
        let mut exes: Vec<PathBuf> = vec![PathBuf::from("/proc/self/exe")];
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_owned))
        {
            exes.extend(BINARIES.iter().map(|b| dir.join(b)));
        }
        out.started_exes = Arc::new(
            exes.iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| (m.dev(), m.ino()))
                .collect(),
        );
        out
    }

    /// The default set plus the configured extra entries.
    pub(crate) fn with_defaults(d: &DefaultProtected) -> Self {
        let mut entries = Vec::new();
        if let Some(dir) = d.token_file.parent().filter(|p| !p.as_os_str().is_empty()) {
            entries.push(dir.to_owned());
        }
        entries.push(d.token_file.clone());
        entries.push(d.state_dir.clone());
        entries.push(d.audit_log_dir.clone());
        entries.push(d.runtime_dir.clone());
        if let Some(env) = &d.env_file {
            entries.push(env.clone());
        }
        if let Some(dir) = &d.binary_dir {
            // Only those installed: an entry that does not exist is resolved anew for every
            // call (see `policy`), and a missing binary has nothing to protect.
            entries.extend(BINARIES.iter().map(|b| dir.join(b)).filter(|p| p.exists()));
        }
        if let Some(key) = &d.tls_key {
            entries.push(key.clone());
        }
        entries.extend(d.extra.iter().cloned());
        let mut out = ProtectedPaths::new(entries.into_iter().map(|p| absolute(&p)));
        out.write_only = d.recorder_data_dir.iter().map(|p| absolute(p)).collect();
        out
    }

    /// Adds a write-only entry: readable, never writable.
    #[cfg(test)]
    fn with_write_only(mut self, entry: PathBuf) -> Self {
        if !self.write_only.contains(&entry) {
            self.write_only.push(entry);
        }
        self
    }

    /// The read-write entries.
    pub(crate) fn entries(&self) -> &[PathBuf] {
        &self.entries
    }

    /// The write-only entries.
    pub(crate) fn write_only(&self) -> &[PathBuf] {
        &self.write_only
    }

    /// The protected set as it is now (symlinks resolved, current inodes) for one call that
    /// reads or writes: the last resolution while nothing it depends on has changed since,
    /// else a new one.
    pub(crate) fn policy(&self, access: Access) -> Arc<Policy> {
        if let Some(c) = self.current(access) {
            return c.0.policy.clone();
        }
        let slot = self.slot(access);
        // Watched before resolving, and the resolution kept only if it resolved to the
        // watched real paths and nothing changed meanwhile.
        let configured = self.protected_for(access);
        let real: Vec<PathBuf> = configured.iter().map(|e| resolve_lenient(e)).collect();
        let mut depends: Vec<PathBuf> = configured.iter().map(|e| (*e).clone()).collect();
        depends.extend(real.iter().cloned());
        if access == Access::Read {
            depends.extend(self.write_only.iter().cloned());
            depends.extend(self.readable_paths(access));
        }
        let watch = Watch::new(&depends);
        // Read after the watch is set up, so a mount made meanwhile is reported by it.
        let mounts = Mounts::read().ok();
        let policy = Arc::new(self.resolve(access, mounts.as_ref()));
        match watch {
            Ok(watch) => {
                // A missing entry resolves through whatever lies on its way: not reused.
                let kept = policy
                    .entries
                    .iter()
                    .zip(&real)
                    .all(|(e, r)| e.path == *r && e.id.is_some());
                // Kept for reads on the runtime workers ([`open_for_read_now`]).
                let mounts = match access {
                    Access::Read => mounts,
                    Access::Write => None,
                };
                if kept && !watch.changed() {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Cached {
                        policy: policy.clone(),
                        watch,
                        mounts,
                    }));
                }
            }
            Err(e) => {
                if !self
                    .cache
                    .unwatched
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(error = %e, "cannot watch the protected paths; resolving them for every call");
                }
            }
        }
        policy
    }

    /// The last resolution for `access` while nothing it depends on has changed, without
    /// resolving (which may wait on a disk): `None` when there is none or it is out of date.
    pub(crate) fn current(&self, access: Access) -> Option<Current> {
        self.last(access).filter(Current::holds)
    }

    /// The last resolution for `access`, current or not: [`open_for_read_now`] asks whether it
    /// still holds once its path is resolved, which covers the resolution too.
    pub(crate) fn last(&self, access: Access) -> Option<Current> {
        let last = self.slot(access).lock().unwrap_or_else(|p| p.into_inner());
        last.clone().map(Current)
    }

    fn slot(&self, access: Access) -> &Mutex<Option<Arc<Cached>>> {
        match access {
            Access::Read => &self.cache.read,
            Access::Write => &self.cache.write,
        }
    }

    fn protected_for(&self, access: Access) -> Vec<&PathBuf> {
        match access {
            Access::Read => self.entries.iter().collect(),
            Access::Write => self.entries.iter().chain(&self.write_only).collect(),
        }
    }

    /// For reads: the write-only entries' real paths (a real parent and the entry's own
    /// name, as [`real_dir`] resolves them), existing or not.
    fn readable_paths(&self, access: Access) -> Vec<PathBuf> {
        match access {
            Access::Read => self
                .write_only
                .iter()
                .map(|e| match (e.parent(), e.file_name()) {
                    (Some(parent), Some(name)) => resolve_lenient(parent).join(name),
                    _ => e.clone(),
                })
                .collect(),
            Access::Write => Vec::new(),
        }
    }

    /// Resolves every entry now (symlinks, current inode); `mounts` tells where `proc` file
    /// systems are mounted (`/proc` alone when it could not be read).
    fn resolve(&self, access: Access, mounts: Option<&Mounts>) -> Policy {
        let protected = self.protected_for(access);
        let readable = match access {
            Access::Read => self.write_only.iter().filter_map(|e| real_dir(e)).collect(),
            Access::Write => Vec::new(),
        };
        let mut entries = Vec::with_capacity(protected.len());
        let mut ids = HashSet::new();
        let mut dir_ids = HashSet::new();
        let mut exact = HashSet::new();
        let mut linked_files = false;
        for e in protected {
            let path = resolve_lenient(e);
            exact.insert(path.as_os_str().as_bytes().to_vec());
            let meta = std::fs::metadata(&path).ok();
            if let Some(m) = &meta {
                ids.insert((m.dev(), m.ino()));
                linked_files |= !m.is_dir() && m.nlink() > 1;
                if m.is_dir() {
                    dir_ids.insert((m.dev(), m.ino()));
                }
            }
            entries.push(Resolved {
                shown: e.display().to_string(),
                path,
                id: meta.as_ref().map(|m| (m.dev(), m.ino())),
            });
        }
        let mut exes: HashSet<(u64, u64)> = (*self.started_exes).clone();
        exes.extend(ids.iter().copied());
        let proc_mounts = match mounts {
            Some(m) => m.proc_mounts(),
            None => vec![(PathBuf::from("/proc"), PathBuf::from("/"))],
        };
        Policy {
            entries,
            readable,
            ids,
            dir_ids,
            exact,
            linked_files,
            proc_mounts,
            exes,
            hidden: Vec::new(),
            write_roots: None,
        }
    }
}

/// A write-only entry as a read exemption: its real path and inode, only if it is a real
/// directory (its parent resolved, itself not a symlink).
fn real_dir(e: &Path) -> Option<Resolved> {
    let name = e.file_name()?;
    let parent = std::fs::canonicalize(e.parent()?).ok()?;
    let meta = std::fs::symlink_metadata(e).ok()?;
    if !meta.is_dir() {
        return None;
    }
    Some(Resolved {
        shown: e.display().to_string(),
        path: parent.join(name),
        id: Some((meta.dev(), meta.ino())),
    })
}

/// `p` made absolute against `/` (configuration values are expected to be absolute already).
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        Path::new("/").join(p)
    }
}

/// `realpath(p)`, or for a path that does not exist, the real path of its deepest existing
/// ancestor with the rest appended (as the reference did).
fn resolve_lenient(p: &Path) -> PathBuf {
    if let Ok(r) = std::fs::canonicalize(p) {
        return r;
    }
    let mut rest = Vec::new();
    let mut cur = p;
    while let Some(parent) = cur.parent() {
        if let Some(name) = cur.file_name() {
            rest.push(name.to_owned());
        }
        if let Ok(mut r) = std::fs::canonicalize(parent) {
            for n in rest.iter().rev() {
                r.push(n);
            }
            return r;
        }
        cur = parent;
    }
    p.to_owned()
}

#[derive(Clone, Debug)]
#[cfg_attr(test, derive(PartialEq, Eq))]
struct Resolved {
    /// The entry as configured: what the error message shows.
    shown: String,
    /// Its real path.
    path: PathBuf,
    /// Its `(dev, ino)` when it exists.
    id: Option<(u64, u64)>,
}

/// The protected set as resolved for one call.
#[derive(Clone, Debug)]
#[cfg_attr(test, derive(PartialEq, Eq))]
pub(crate) struct Policy {
    entries: Vec<Resolved>,
    /// Reads only: write-only directories, readable even inside a protected directory.
    readable: Vec<Resolved>,
    /// `(dev, ino)` of every existing entry.
    ids: HashSet<(u64, u64)>,
    /// `(dev, ino)` of the entries that are directories.
    dir_ids: HashSet<(u64, u64)>,
    /// The entries' real paths, for walks (see [`Policy::is_entry_path`]).
    exact: HashSet<Vec<u8>>,
    /// A protected file has more than one name (a hard link elsewhere).
    linked_files: bool,
    /// Where `proc` file systems are mounted, and which of their directories (see
    /// [`Policy::rule_entry`]).
    proc_mounts: Vec<(PathBuf, PathBuf)>,
    /// `(dev, ino)` of the mymcp binaries, for telling a mymcp process by its `exe`.
    exes: HashSet<(u64, u64)>,
    /// The caller's token's hidden paths (see [`Policy::with_view`]).
    hidden: Vec<PathBuf>,
    /// Writes only, for a token with write roots: the trees an object must be inside.
    write_roots: Option<Vec<PathBuf>>,
}

impl Policy {
    /// The protected places that are rules rather than configured entries, because what they
    /// cover comes and goes with processes and services:
    ///
    /// - the `/proc/<pid>` tree (`environ`, `mem`, `cmdline`, `maps`, the tasks, …) of every
    ///   mymcp process — a process whose `exe` is one of the mymcp binaries, whichever uid it
    ///   runs as — on any `proc` mount (`/proc/self` and `/proc/thread-self` resolve to such a
    ///   path), and `/proc/kcore` (all of memory);
    /// - systemd's credential directories of the mymcp units, `/run/credentials/mymcp*`.
    ///
    /// `exact` asks only whether `real` is the top of such a place (what a walk meets before
    /// anything inside it; see [`Policy::is_entry_path`]); otherwise anything inside counts.
    fn rule_entry(&self, real: &Path, exact: bool) -> Option<&'static str> {
        let bytes = real.as_os_str().as_bytes();
        let below = |top: &[u8]| {
            bytes.starts_with(top)
                && (bytes.len() == top.len() || bytes[top.len()] == b'/' || top == b"/")
        };
        if below(CREDENTIALS_DIR.as_bytes()) {
            let mut rest = real.strip_prefix(CREDENTIALS_DIR).ok()?.components();
            let unit = rest.next()?;
            let deeper = rest.next().is_some();
            let ours = unit.as_os_str().as_bytes().starts_with(b"mymcp");
            return (ours && !(exact && deeper)).then_some(CREDENTIALS_ENTRY);
        }
        for (point, root) in &self.proc_mounts {
            if !below(point.as_os_str().as_bytes()) {
                continue;
            }
            let Ok(rest) = real.strip_prefix(point) else {
                continue;
            };
            let within = root.join(rest);
            let mut names = within.components().skip(1);
            let Some(top) = names.next() else {
                continue;
            };
            if exact && names.next().is_some() {
                continue;
            }
            let top = top.as_os_str();
            if top == "kcore" {
                return Some(KCORE_ENTRY);
            }
            // The mount shows `root`'s subtree: the process directory is at the mount point
            // when `root` is one (a bind mount of `/proc/<pid>`), else one level below it.
            let dir = if root.components().count() > 1 {
                point.clone()
            } else {
                point.join(top)
            };
            let numeric = !top.is_empty() && top.as_bytes().iter().all(u8::is_ascii_digit);
            if numeric && self.is_mymcp_process(&dir) {
                return Some(PROCESS_ENTRY);
            }
        }
        None
    }

    /// Whether the process whose `/proc` directory is `dir` runs a mymcp binary. Its threads'
    /// directories (`/proc/<tid>`, `/proc/<pid>/task/<tid>`) are within its own or show the
    /// same `exe`. A call acting as an account may not be allowed to look at another uid's
    /// `exe` (EACCES): such a process counts as a mymcp one, so that the rule holds for every
    /// account whatever it may see (its world-readable files, `status` or `cmdline`, are then
    /// refused to the file tools too).
    fn is_mymcp_process(&self, dir: &Path) -> bool {
        match std::fs::metadata(dir.join("exe")) {
            Ok(m) => self.exes.contains(&(m.dev(), m.ino())),
            Err(e) => matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
        }
    }

    /// The entry that `real` (an absolute path without symlinks) is, or lies within.
    /// Component-wise: `/etc/mymcpx` is not within `/etc/mymcp`.
    fn entry_for_path(&self, real: &Path) -> Option<&str> {
        if let Some(rule) = self.rule_entry(real, false) {
            return Some(rule);
        }
        let hit = self.entries.iter().find(|e| real.starts_with(&e.path))?;
        if !self.readable.is_empty() {
            // The most specific entry decides: a readable directory deeper than every
            // protected entry around `real` opens it.
            let depth = |p: &Path| p.components().count();
            let protected = self
                .entries
                .iter()
                .filter(|e| real.starts_with(&e.path))
                .map(|e| depth(&e.path))
                .max()
                .unwrap_or(0);
            if self
                .readable
                .iter()
                .any(|r| real.starts_with(&r.path) && depth(&r.path) > protected)
            {
                return None;
            }
        }
        Some(hit.shown.as_str())
    }

    /// The entry whose inode this is (a hard link or bind mount of it counts).
    fn entry_for_id(&self, dev: u64, ino: u64) -> Option<&str> {
        if !self.ids.contains(&(dev, ino)) {
            return None;
        }
        self.entries
            .iter()
            .find(|e| e.id == Some((dev, ino)))
            .map(|e| e.shown.as_str())
    }

    /// Whether `real` is exactly a protected entry. Enough for a walk that starts at a checked,
    /// unprotected root and never descends into a pruned directory: the first protected path it
    /// meets is an entry itself. A hash lookup instead of a component-wise prefix test per entry.
    fn is_entry_path(&self, real: &Path) -> bool {
        self.exact.contains(real.as_os_str().as_bytes()) || self.rule_entry(real, true).is_some()
    }

    /// Whether some protected file is also reachable under another name (its link count is
    /// above one), so that files met in a walk must be checked by inode. When it is not, a file
    /// opened inside a checked directory cannot be a protected one.
    fn has_linked_files(&self) -> bool {
        self.linked_files
    }

    /// Whether `(dev, ino)` is a protected directory (used to prune walks).
    fn is_protected_dir_id(&self, dev: u64, ino: u64) -> bool {
        self.dir_ids.contains(&(dev, ino))
    }

    /// Whether `(dev, ino)` is any protected entry.
    fn is_protected_id(&self, dev: u64, ino: u64) -> bool {
        self.ids.contains(&(dev, ino))
    }

    /// This policy for a token with `view`: its hidden paths are refused like protected ones,
    /// and for writes (`access`) an object outside every write root is refused too — both
    /// checked on the opened object's real path, by components, as the protected entries are.
    /// The same policy when the view changes nothing for `access`.
    pub(crate) fn with_view(
        self: Arc<Self>,
        view: &mymcp_protocol::TokenView,
        access: Access,
    ) -> Arc<Policy> {
        let roots = access == Access::Write && !view.write_roots.is_empty();
        if view.hide.is_empty() && !roots {
            return self;
        }
        let mut p = (*self).clone();
        p.hidden = view.hide.iter().map(PathBuf::from).collect();
        if roots {
            p.write_roots = Some(view.write_roots.iter().map(PathBuf::from).collect());
        }
        Arc::new(p)
    }

    /// Whether the view of the caller's token refuses `real` (see [`Policy::with_view`]).
    fn view_denies(&self, real: &Path) -> Option<Denied> {
        if let Some(h) = self.hidden.iter().find(|h| real.starts_with(h)) {
            return Some(Denied(h.display().to_string()));
        }
        match &self.write_roots {
            Some(roots) if !roots.iter().any(|r| real.starts_with(r)) => Some(Denied(format!(
                "{} (outside the token's write roots)",
                real.display()
            ))),
            _ => None,
        }
    }

    /// The full check of an opened object: its real path, its inode, and its ancestors'
    /// inodes. Returns the real path.
    fn check_fd(&self, fd: BorrowedFd<'_>, meta: &Metadata) -> Result<PathBuf, Denied> {
        let real = sysfs::fd_path(fd).map_err(|_| Denied(String::from("(unknown)")))?;
        self.check_object(&real, meta)?;
        Ok(real)
    }

    /// [`Policy::check_fd`] once the descriptor's real path is known.
    fn check_object(&self, real: &Path, meta: &Metadata) -> Result<(), Denied> {
        // A file unlinked or replaced by a rename since it was opened shows as `<name>
        // (deleted)`, and no longer has its inode in a set resolved after the rename: checked
        // under the name it had, so the old content of a protected file that was just
        // replaced (a rotated key) is not readable in that window.
        if let Some(name) = real.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
            self.check_real_path(Path::new(OsStr::from_bytes(name)))?;
        }
        self.check_real_path(real)?;
        if let Some(e) = self.entry_for_id(meta.dev(), meta.ino()) {
            return Err(Denied(e.to_owned()));
        }
        Ok(())
    }

    /// Path and ancestor checks of a real path.
    fn check_real_path(&self, real: &Path) -> Result<(), Denied> {
        if let Some(d) = self.view_denies(real) {
            return Err(d);
        }
        if let Some(e) = self.entry_for_path(real) {
            return Err(Denied(e.to_owned()));
        }
        if !self.dir_ids.is_empty() {
            // Nearest first, so that a readable directory opens what it holds but not a
            // protected directory inside it. The object itself counts as a readable directory.
            let skip = usize::from(self.readable.is_empty());
            for a in real.ancestors().skip(skip) {
                if let Ok(m) = std::fs::symlink_metadata(a) {
                    if a != real && self.is_protected_dir_id(m.dev(), m.ino()) {
                        let e = self.entry_for_id(m.dev(), m.ino()).unwrap_or("");
                        return Err(Denied(e.to_owned()));
                    }
                    let id = Some((m.dev(), m.ino()));
                    if self.readable.iter().any(|r| r.id == id) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A protected entry was hit; holds the entry as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Denied(pub String);

impl Denied {
    pub(crate) fn failure(&self) -> ToolFailure {
        protected_failure(&self.0)
    }
}

/// The reference's `ProtectedPath` failure.
pub(crate) fn protected_failure(entry: &str) -> ToolFailure {
    ToolFailure::new(
        ErrorCode::ProtectedPath,
        format!("Access denied: path is within protected directory {entry}"),
    )
}

/// Longest accepted path argument, in bytes (Linux `PATH_MAX`).
const MAX_PATH_BYTES: usize = 4096;

/// A path argument (when given) must be at most [`MAX_PATH_BYTES`] long.
pub(crate) fn check_path_len(field: &str, path: Option<&str>) -> Result<(), ToolFailure> {
    match path {
        Some(p) if p.len() > MAX_PATH_BYTES => Err(ToolFailure::new(
            ErrorCode::InvalidPath,
            format!("{field} is {} bytes long, max is {MAX_PATH_BYTES}", p.len()),
        )),
        _ => Ok(()),
    }
}

/// A path argument must be absolute and free of NUL bytes.
pub(crate) fn check_absolute(field: &str, path: &str) -> Result<(), ToolFailure> {
    if path.contains('\0') {
        return Err(ToolFailure::new(
            ErrorCode::InvalidPath,
            format!("{field} contains a NUL byte"),
        ));
    }
    if !path.starts_with('/') {
        return Err(ToolFailure::new(
            ErrorCode::InvalidPath,
            format!("{field} must be an absolute path: {path}"),
        ));
    }
    Ok(())
}

/// What the file tools say when the operating system refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Maps an OS error while opening `path` to the reference's failure codes.
pub(crate) fn os_failure(path: &str, e: &io::Error, access: Access) -> ToolFailure {
    match e.raw_os_error() {
        Some(libc::ENOENT) => ToolFailure::new(
            ErrorCode::FileNotFoundError,
            format!("File not found: {path}"),
        )
        .with_suggestion("Check the file path"),
        Some(libc::ENOTDIR) => match access {
            Access::Read => ToolFailure::new(
                ErrorCode::FileNotFoundError,
                format!("File not found: {path}"),
            )
            .with_suggestion("Check the file path"),
            Access::Write => ToolFailure::new(
                ErrorCode::NotADirectoryError,
                format!("A parent of {path} is not a directory"),
            ),
        },
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            ToolFailure::new(ErrorCode::PermissionError, os_message(e, path)).with_suggestion(
                match access {
                    Access::Read => "Check file read permissions",
                    Access::Write => "Check write permissions",
                },
            )
        }
        Some(libc::EISDIR) => ToolFailure::new(
            ErrorCode::IsADirectoryError,
            format!("{path} is a directory"),
        ),
        Some(libc::ENAMETOOLONG) => ToolFailure::new(ErrorCode::InvalidPath, os_message(e, path)),
        Some(libc::ELOOP) => ToolFailure::new(
            ErrorCode::InvalidPath,
            format!("{path}: too many symbolic links, or a /proc magic link (refused)"),
        ),
        Some(libc::EXDEV) => ToolFailure::new(
            ErrorCode::InvalidPath,
            format!("{path}: leaves the directory it must stay in"),
        ),
        // What open(2) says of a socket.
        Some(libc::ENXIO) => not_regular(path),
        _ => ToolFailure::new(ErrorCode::InternalError, os_message(e, path)),
    }
}

/// The OS text of `e` followed by `path`, as in `Permission denied: /root/x`
/// (without std's `(os error N)` suffix).
pub(crate) fn os_message(e: &io::Error, path: &str) -> String {
    let text = e.to_string();
    let text = match text.rsplit_once(" (os error ") {
        Some((head, _)) => head.to_string(),
        None => text,
    };
    if path.is_empty() {
        text
    } else {
        format!("{text}: {path}")
    }
}

fn not_regular(path: &str) -> ToolFailure {
    ToolFailure::new(
        ErrorCode::NotARegularFile,
        format!("{path} is not a regular file"),
    )
}

fn is_a_directory(path: &str) -> ToolFailure {
    ToolFailure::new(
        ErrorCode::IsADirectoryError,
        format!("{path} is a directory"),
    )
    .with_suggestion("Use glob to list directory contents")
}

/// A regular file opened for reading after the protected-path check.
#[derive(Debug)]
pub(crate) struct CheckedFile {
    pub(crate) file: File,
    pub(crate) meta: Metadata,
    /// Its real path.
    pub(crate) real: PathBuf,
}

/// A directory descriptor opened and checked; the parent of a write or the root of a walk.
#[derive(Debug)]
pub(crate) struct CheckedDir {
    fd: OwnedFd,
    pub(crate) real: PathBuf,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl CheckedDir {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `fstat` through std, keeping the descriptor.
fn fstat(fd: OwnedFd) -> io::Result<(OwnedFd, Metadata)> {
    let f = File::from(fd);
    let meta = f.metadata()?;
    Ok((OwnedFd::from(f), meta))
}

/// Opens `path` (absolute) with the kernel's resolution, never through a magic link, as an
/// `O_PATH` descriptor that cannot have side effects (devices and FIFOs are not really opened).
fn open_path(path: &str, access: Access) -> Result<(OwnedFd, Metadata), ToolFailure> {
    let fd = sysfs::openat2(
        Base::Cwd,
        OsStr::new(path),
        libc::O_PATH,
        0,
        Resolve::NO_MAGIC,
    )
    .map_err(|e| os_failure(path, &e, access))?;
    let (fd, meta) = fstat(fd).map_err(|e| os_failure(path, &e, access))?;
    Ok((fd, meta))
}

/// Opens a regular file for reading: resolve, check the object, then reopen that very inode
/// for reading through `/proc/self/fd`. Directories, devices, FIFOs and sockets are refused
/// without ever being opened for I/O.
pub(crate) fn open_for_read(policy: &Policy, path: &str) -> Result<CheckedFile, ToolFailure> {
    open_file_for_read(policy, path).map_err(|f| within_protected(policy, path, f))
}

fn open_file_for_read(policy: &Policy, path: &str) -> Result<CheckedFile, ToolFailure> {
    let (fd, meta) = open_path(path, Access::Read)?;
    let real = policy
        .check_fd(fd.as_fd(), &meta)
        .map_err(|d| d.failure())?;
    if meta.is_dir() {
        return Err(is_a_directory(path));
    }
    if !meta.is_file() {
        return Err(not_regular(path));
    }
    let file = reopen_for_read(&fd, path)?;
    Ok(CheckedFile { file, meta, real })
}

/// The largest file [`open_for_read_now`] takes: reading more is work for the blocking pool
/// whatever the cache holds.
pub(crate) const READ_NOW_MAX_BYTES: u64 = 256 * 1024;

/// Kernels without `RESOLVE_CACHED` (before 5.12) answer `EINVAL`: remembered, not asked again.
static NO_CACHED_RESOLVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// [`open_for_read`] for a runtime worker, which must not wait for a disk, a network or
/// another process: `None` whenever a step might, and the caller then runs [`open_for_read`]
/// on the blocking pool. It takes the path only from the kernel's lookup cache
/// (`RESOLVE_CACHED`), only through mounts of local file systems that answer from memory
/// ([`Mounts::local`]), only while the protected set and the mount table it checks against are
/// current, only files of at most [`READ_NOW_MAX_BYTES`], and only when reading will not update
/// the access time (a journal write). `current` may be out of date ([`ProtectedPaths::last`]):
/// it is used only if it holds once the path is resolved. The checks are those of
/// [`open_for_read`]: a protected, directory or special-file answer is given here.
pub(crate) fn open_for_read_now(
    current: &Current,
    path: &str,
) -> Option<Result<CheckedFile, ToolFailure>> {
    use std::sync::atomic::Ordering;
    let mounts = current.0.mounts.as_ref()?;
    if NO_CACHED_RESOLVE.load(Ordering::Relaxed) {
        return None;
    }
    let fd = match sysfs::openat2(
        Base::Cwd,
        OsStr::new(path),
        libc::O_PATH,
        0,
        Resolve::NO_MAGIC_CACHED,
    ) {
        Ok(fd) => fd,
        Err(e) => {
            if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
                NO_CACHED_RESOLVE.store(true, Ordering::Relaxed);
            }
            return None;
        }
    };
    let real = sysfs::fd_path(fd.as_fd()).ok()?;
    let atime = mounts.local(&real)?;
    // The path was resolved under that mount table, and is checked against that protected
    // set, only if both still hold now that it is resolved.
    if !current.holds() {
        return None;
    }
    let (fd, meta) = fstat(fd).ok()?;
    if let Err(d) = current.policy().check_object(&real, &meta) {
        return Some(Err(d.failure()));
    }
    if meta.is_dir() {
        return Some(Err(is_a_directory(path)));
    }
    if !meta.is_file() {
        return Some(Err(not_regular(path)));
    }
    let keeps_atime = atime.read_keeps(
        (meta.atime(), meta.atime_nsec()),
        (meta.mtime(), meta.mtime_nsec()),
        (meta.ctime(), meta.ctime_nsec()),
        std::time::SystemTime::now(),
    );
    if meta.len() > READ_NOW_MAX_BYTES || !keeps_atime {
        return None;
    }
    let file = reopen_for_read(&fd, path).ok()?;
    Some(Ok(CheckedFile { file, meta, real }))
}

fn reopen_for_read(fd: &OwnedFd, path: &str) -> Result<File, ToolFailure> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(sysfs::proc_fd_path(fd.as_fd()))
        .map_err(|e| os_failure(path, &e, Access::Read))
}

/// What a walk starts from.
#[derive(Debug)]
pub(crate) enum SearchRoot {
    File(CheckedFile),
    Dir(CheckedDir),
}

/// Opens the root of a `grep` or `glob`. `Ok(None)` when it does not exist or is neither a
/// file nor a directory (the reference answers those with an empty result); a protected root
/// (or a symlink to one) is refused.
pub(crate) fn open_search_root(
    policy: &Policy,
    path: &str,
) -> Result<Option<SearchRoot>, ToolFailure> {
    open_root(policy, path).map_err(|f| within_protected(policy, path, f))
}

fn open_root(policy: &Policy, path: &str) -> Result<Option<SearchRoot>, ToolFailure> {
    let (fd, meta) = match open_path(path, Access::Read) {
        Ok(x) => x,
        Err(f) if f.code == ErrorCode::FileNotFoundError => {
            // Missing is an empty result, unless it would be protected (no existence oracle).
            return match protected_entry_lenient(policy, path) {
                Some(e) => Err(protected_failure(&e)),
                None => Ok(None),
            };
        }
        Err(f) => return Err(f),
    };
    let real = policy
        .check_fd(fd.as_fd(), &meta)
        .map_err(|d| d.failure())?;
    if meta.is_dir() {
        let dir = sysfs::openat2(
            Base::Cwd,
            sysfs::proc_fd_path(fd.as_fd()).as_os_str(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
            Resolve::default(),
        )
        .map_err(|e| os_failure(path, &e, Access::Read))?;
        return Ok(Some(SearchRoot::Dir(CheckedDir {
            fd: dir,
            real,
            dev: meta.dev(),
            ino: meta.ino(),
        })));
    }
    if meta.is_file() {
        let file = reopen_for_read(&fd, path)?;
        return Ok(Some(SearchRoot::File(CheckedFile { file, meta, real })));
    }
    Ok(None)
}

/// Opens a directory below a checked one, through real directories only (no symlink, no
/// `..` out of it), for a walk. `None` when [`Walk::verdict`] does not allow it.
pub(crate) fn open_subdir(
    walk: &Walk,
    parent: &CheckedDir,
    name: &OsStr,
) -> io::Result<Option<CheckedDir>> {
    let fd = sysfs::openat2(
        Base::Dir(parent.fd()),
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
        Resolve::STRICTLY_BENEATH,
    )?;
    let (fd, meta) = fstat(fd)?;
    let real = parent.real.join(name);
    let met = Met::Entry {
        real: &real,
        kind: Kind::Dir,
        id: Some((meta.dev(), meta.ino())),
    };
    if walk.verdict(met) != Verdict::Allowed {
        return Ok(None);
    }
    Ok(Some(CheckedDir {
        fd,
        real,
        dev: meta.dev(),
        ino: meta.ino(),
    }))
}

/// What a walk met, for [`Walk::verdict`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Met<'a> {
    /// An entry of a directory the walk opened and checked: `real` is that directory's real
    /// path joined with the entry's name, `id` its `(dev, ino)` — not following a symlink —
    /// when the walker has it.
    Entry {
        real: &'a Path,
        kind: Kind,
        id: Option<(u64, u64)>,
    },
    /// A path reported by its name, not met in a checked directory (a `glob` pattern without
    /// wildcards): resolved now.
    Named(&'a Path),
}

/// The kind of a walked entry, as its directory entry or `lstat` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// What [`Walk::verdict`] says of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It may be entered (a directory), reported and read.
    Allowed,
    /// It is protected, or a symlink into a protected place: neither entered, nor reported,
    /// nor read.
    Protected,
    /// That depends on its inode: ask again with its `id`.
    NeedsId,
}

/// The one rule `grep` and `glob` follow below a checked root: whether a directory may be
/// entered and a file or other entry reported and read.
///
/// A walk starts at a root that was opened and checked like any other object
/// ([`open_search_root`]), opens each directory below its checked parent without following
/// symlinks ([`open_subdir`], which asks this rule) and never descends into one the rule
/// refused. So the first protected place it meets is an entry itself (or the top of a rule's
/// place, such as `/proc/<pid>` of a mymcp process), and an entry's real path is its
/// directory's real path and its name: a hash lookup of that path decides by path, with no
/// prefix test per entry. By inode: a directory always (a bind mount of a protected directory
/// is that directory), a reported entry always, a file about to be read only when some
/// protected file has a second name (a hard link) or something is mounted below the root (a
/// bind mount of a protected file gives it one without a link) — otherwise a file inside a
/// checked directory cannot be protected content. A symlink is reported, never followed, and
/// not at all when what it leads to would be refused if it were opened. A path reported by its
/// name ([`Met::Named`]) is not below a checked directory: it is resolved now and checked as
/// opening it would be (its own inode, the inode and the real path it leads to, and that
/// path's ancestors).
#[derive(Debug)]
pub(crate) struct Walk {
    policy: Arc<Policy>,
    /// The walk's root, if it has one: files met below it need their inode only when
    /// something is mounted below it (or a protected file has a second name).
    root: Option<PathBuf>,
    /// [`Walk::files_by_inode`], once asked.
    files_by_inode: std::sync::OnceLock<bool>,
}

impl Walk {
    /// The rule for a walk below `root` (a checked directory's real path), or for paths
    /// reported by name (`None`: any file is checked by inode).
    pub(crate) fn new(policy: Arc<Policy>, root: Option<&Path>) -> Walk {
        Walk {
            policy,
            root: root.map(Path::to_owned),
            files_by_inode: std::sync::OnceLock::new(),
        }
    }

    /// Whether `met` may be entered (a directory), reported and read.
    pub(crate) fn verdict(&self, met: Met<'_>) -> Verdict {
        let policy = &*self.policy;
        let protected_id =
            |id: Option<(u64, u64)>| id.is_some_and(|(dev, ino)| policy.is_protected_id(dev, ino));
        let (real, kind, id) = match met {
            Met::Named(path) => {
                let own = std::fs::symlink_metadata(path).ok();
                let target = std::fs::metadata(path).ok();
                let protected = protected_id(own.map(|m| (m.dev(), m.ino())))
                    || protected_id(target.map(|m| (m.dev(), m.ino())))
                    || policy.check_real_path(&resolve_lenient(path)).is_err();
                return if protected {
                    Verdict::Protected
                } else {
                    Verdict::Allowed
                };
            }
            Met::Entry { real, kind, id } => (real, kind, id),
        };
        if policy.is_entry_path(real)
            || protected_id(id)
            || policy.hidden.iter().any(|h| real.starts_with(h))
        {
            return Verdict::Protected;
        }
        match kind {
            Kind::Dir if id.is_none() => Verdict::NeedsId,
            Kind::File | Kind::Other if id.is_none() && self.files_by_inode() => Verdict::NeedsId,
            Kind::Symlink if self.leads_into_protected(real) => Verdict::Protected,
            _ => Verdict::Allowed,
        }
    }

    /// Whether files met below the root must be checked by inode. Asked once per walk, and
    /// only by a walker that would otherwise read a file without its inode (`grep`). An
    /// unreadable mount table means checking.
    fn files_by_inode(&self) -> bool {
        *self.files_by_inode.get_or_init(|| {
            self.policy.has_linked_files()
                || match &self.root {
                    Some(root) => Mounts::read().map_or(true, |m| m.any_below(root)),
                    None => true,
                }
        })
    }

    /// Whether the symlink at `link` leads to a protected object: the full check of what it
    /// resolves to now (its real path by components, its ancestors' and its own inode), as
    /// opening it would make. A link that leads nowhere leads to nothing protected.
    fn leads_into_protected(&self, link: &Path) -> bool {
        let Ok(real) = std::fs::canonicalize(link) else {
            return false;
        };
        let target_id = std::fs::metadata(&real).map(|m| (m.dev(), m.ino()));
        self.policy.check_real_path(&real).is_err()
            || target_id.is_ok_and(|(d, i)| self.policy.is_protected_id(d, i))
    }
}

/// A file to be written: its checked parent directory and its name in it.
#[derive(Debug)]
pub(crate) struct CheckedTarget {
    dir: CheckedDir,
    name: OsString,
    /// The file being replaced, if any (never a symlink: those are followed first).
    existing: Option<EntryStat>,
}

impl CheckedTarget {
    pub(crate) fn dir(&self) -> &CheckedDir {
        &self.dir
    }
    pub(crate) fn name(&self) -> &OsStr {
        &self.name
    }
    pub(crate) fn existing(&self) -> Option<&EntryStat> {
        self.existing.as_ref()
    }
    /// The target's real path.
    pub(crate) fn real(&self) -> PathBuf {
        self.dir.real.join(&self.name)
    }

    /// Opens the existing file for reading: `O_NOFOLLOW` inside the checked directory, and
    /// only if it is still the inode that was checked.
    pub(crate) fn open_existing(
        &self,
        shown: &str,
    ) -> Result<Option<(File, Metadata)>, ToolFailure> {
        let Some(st) = self.existing else {
            return Ok(None);
        };
        let fd = sysfs::openat(
            Base::Dir(self.dir.fd()),
            &self.name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        )
        .map_err(|e| os_failure(shown, &e, Access::Read))?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| os_failure(shown, &e, Access::Read))?;
        if (meta.dev(), meta.ino()) != (st.dev, st.ino) || !meta.is_file() {
            return Err(ToolFailure::new(
                ErrorCode::InternalError,
                format!("{shown} changed while it was being opened; try again"),
            ));
        }
        Ok(Some((file, meta)))
    }
}

/// Resolves the file a write to `path` replaces or creates, checking its parent directory
/// object (and the name in it) against the protected set. A symlink at the end is followed
/// (writes go to its target, as in the reference) by resolving it and checking the target's
/// directory in turn. `create_parents` creates missing directories (mode 0755) below the
/// deepest existing one, after checking that one.
pub(crate) fn open_for_write(
    policy: &Policy,
    path: &str,
    create_parents: bool,
) -> Result<CheckedTarget, ToolFailure> {
    open_target(policy, path, create_parents).map_err(|f| within_protected(policy, path, f))
}

fn open_target(
    policy: &Policy,
    path: &str,
    create_parents: bool,
) -> Result<CheckedTarget, ToolFailure> {
    let names_a_file = !(path.ends_with('/') || path.ends_with("/.") || path.ends_with("/.."));
    let mut current = PathBuf::from(path);
    if !names_a_file || current.file_name().is_none() {
        return Err(ToolFailure::new(
            ErrorCode::InvalidPath,
            format!("{path} does not name a file"),
        ));
    }
    for _ in 0..=MAX_WRITE_LINK_HOPS {
        let name = current.file_name().expect("checked above").to_owned();
        let parent = current.parent().unwrap_or(Path::new("/")).to_owned();
        let dir = open_dir_for_write(policy, &parent, path, create_parents)?;
        let real = dir.real.join(&name);
        if let Some(e) = policy.entry_for_path(&real) {
            return Err(protected_failure(e));
        }
        let st =
            sysfs::stat_entry(dir.fd(), &name).map_err(|e| os_failure(path, &e, Access::Write))?;
        match st {
            None => {
                return Ok(CheckedTarget {
                    dir,
                    name,
                    existing: None,
                })
            }
            Some(st) if st.is_symlink() => {
                // Follow one link: its text, read inside the checked directory (the final
                // component of a readlink is never followed), relative to that directory.
                let text = std::fs::read_link(sysfs::proc_fd_path(dir.fd()).join(&name))
                    .map_err(|e| os_failure(path, &e, Access::Write))?;
                current = dir.real.join(text);
                if current.file_name().is_none() {
                    return Err(is_a_directory(path));
                }
            }
            Some(st) if st.is_dir() => return Err(is_a_directory(path)),
            Some(st) if st.is_file() => {
                if let Some(e) = policy.entry_for_id(st.dev, st.ino) {
                    return Err(protected_failure(e));
                }
                return Ok(CheckedTarget {
                    dir,
                    name,
                    existing: Some(st),
                });
            }
            Some(_) => return Err(not_regular(path)),
        }
    }
    Err(os_failure(
        path,
        &io::Error::from_raw_os_error(libc::ELOOP),
        Access::Write,
    ))
}

/// Where a new file at `path` would be, checked without creating anything: the deepest
/// existing ancestor is opened and checked as an object, and the rest of the path below its
/// real path must not be protected either. For `prepare_upload`, whose directories are only
/// created when the upload arrives. Returns the real path the file would have.
pub(crate) fn check_new_path(policy: &Policy, path: &str) -> Result<PathBuf, ToolFailure> {
    new_path(policy, path).map_err(|f| within_protected(policy, path, f))
}

fn new_path(policy: &Policy, path: &str) -> Result<PathBuf, ToolFailure> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let mut missing: Vec<OsString> = Vec::new();
    let mut cur = Path::new(path);
    let base = loop {
        match cur.components().next_back() {
            Some(Component::Normal(n)) => missing.push(n.to_owned()),
            _ => {
                return Err(ToolFailure::new(
                    ErrorCode::InvalidPath,
                    format!("{path} does not name a file"),
                ))
            }
        }
        cur = cur.parent().unwrap_or(Path::new("/"));
        match sysfs::openat2(Base::Cwd, cur.as_os_str(), flags, 0, Resolve::NO_MAGIC) {
            Ok(fd) => break fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(os_failure(path, &e, Access::Write)),
        }
    };
    let dir = check_dir(policy, base, path)?;
    let mut real = dir.real.clone();
    for name in missing.iter().rev() {
        real.push(name);
    }
    if let Some(e) = policy.entry_for_path(&real) {
        return Err(protected_failure(e));
    }
    Ok(real)
}

/// Any failure for a path that lies within a protected entry — it does not exist, a parent is
/// missing or not a directory, … — is answered as the protected entry itself is
/// (`ProtectedPath`), so that refusals say nothing about what exists in a protected place.
fn within_protected(policy: &Policy, path: &str, failure: ToolFailure) -> ToolFailure {
    if failure.code == ErrorCode::ProtectedPath {
        return failure;
    }
    match protected_entry_lenient(policy, path) {
        Some(entry) => protected_failure(&entry),
        None => failure,
    }
}

/// The protected entry that `path` — which need not exist — lies within, resolving the path as
/// the reference did (`realpath` of the deepest existing ancestor). Used only to pick the
/// right answer for a path that could not be opened; every access checks the opened object.
pub(crate) fn protected_entry_lenient(policy: &Policy, path: &str) -> Option<String> {
    let real = resolve_lenient(Path::new(path));
    policy.check_real_path(&real).err().map(|d| d.0)
}

/// Opens and checks the directory `dir` for a write to `shown`, creating missing components
/// when asked.
fn open_dir_for_write(
    policy: &Policy,
    dir: &Path,
    shown: &str,
    create: bool,
) -> Result<CheckedDir, ToolFailure> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    match sysfs::openat2(Base::Cwd, dir.as_os_str(), flags, 0, Resolve::NO_MAGIC) {
        Ok(fd) => check_dir(policy, fd, shown),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
            // Find the deepest existing ancestor, check it, then create downwards inside it.
            let mut missing: Vec<OsString> = Vec::new();
            let mut cur = dir;
            let base = loop {
                match cur.components().next_back() {
                    Some(Component::Normal(n)) => missing.push(n.to_owned()),
                    _ => {
                        return Err(os_failure(shown, &e, Access::Write));
                    }
                }
                cur = cur.parent().unwrap_or(Path::new("/"));
                match sysfs::openat2(Base::Cwd, cur.as_os_str(), flags, 0, Resolve::NO_MAGIC) {
                    Ok(fd) => break fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(os_failure(shown, &e, Access::Write)),
                }
            };
            let mut at = check_dir(policy, base, shown)?;
            for name in missing.iter().rev() {
                match sysfs::mkdirat(at.fd(), name, 0o755) {
                    Ok(()) => {
                        // The umask is strict; a created directory gets the usual 0755.
                        let d = sysfs::openat2(
                            Base::Dir(at.fd()),
                            name,
                            flags | libc::O_NOFOLLOW,
                            0,
                            Resolve::STRICTLY_BENEATH,
                        )
                        .map_err(|e| os_failure(shown, &e, Access::Write))?;
                        let f = File::from(d);
                        f.set_permissions(std::fs::Permissions::from_mode(0o755))
                            .map_err(|e| os_failure(shown, &e, Access::Write))?;
                        at = check_dir(policy, OwnedFd::from(f), shown)?;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        let d =
                            sysfs::openat2(Base::Dir(at.fd()), name, flags, 0, Resolve::NO_MAGIC)
                                .map_err(|e| os_failure(shown, &e, Access::Write))?;
                        at = check_dir(policy, d, shown)?;
                    }
                    Err(e) => return Err(os_failure(shown, &e, Access::Write)),
                }
            }
            Ok(at)
        }
        Err(e) => Err(os_failure(shown, &e, Access::Write)),
    }
}

fn check_dir(policy: &Policy, fd: OwnedFd, shown: &str) -> Result<CheckedDir, ToolFailure> {
    let (fd, meta) = fstat(fd).map_err(|e| os_failure(shown, &e, Access::Write))?;
    let real = policy
        .check_fd(fd.as_fd(), &meta)
        .map_err(|d| d.failure())?;
    Ok(CheckedDir {
        fd,
        real,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_for(entries: &[&Path]) -> Arc<Policy> {
        ProtectedPaths::new(entries.iter().map(|p| p.to_path_buf())).policy(Access::Read)
    }

    use crate::testing::mount_table;

    /// The policy once it is reused (a resolution that saw a change while it ran is not
    /// kept), at most 5 s.
    fn settled(p: &ProtectedPaths, access: Access) -> Arc<Policy> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let a = p.policy(access);
            if Arc::ptr_eq(&a, &p.policy(access)) {
                return a;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the policy is never reused"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_resolved_set_is_reused_until_an_entry_is_replaced_moved_or_linked() {
        let _mounts = mount_table();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        let store = conf.join("tokens.json");
        std::fs::write(&store, "v1").unwrap();
        let secret = dir.path().join("app/secret");
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::fs::write(&secret, "s").unwrap();
        let p = ProtectedPaths::new([conf.clone(), store.clone(), secret.clone()]);
        let real = std::fs::canonicalize(dir.path()).unwrap();

        // Unrelated names changing beside the entries and inside a protected directory: the
        // resolution is still reused.
        let before = settled(&p, Access::Read);
        std::fs::write(dir.path().join("other"), "x").unwrap();
        std::fs::write(conf.join("other"), "x").unwrap();
        std::fs::rename(dir.path().join("other"), dir.path().join("other2")).unwrap();
        assert!(Arc::ptr_eq(&before, &p.policy(Access::Read)));

        // Replaced by rename, as the token store is: the new inode is protected at once.
        let tmp = dir.path().join("new.json");
        std::fs::write(&tmp, "v2").unwrap();
        std::fs::rename(&tmp, &store).unwrap();
        let ino = std::fs::metadata(&store).unwrap().ino();
        let now = p.policy(Access::Read);
        assert!(!Arc::ptr_eq(&before, &now), "resolved anew");
        let dev = std::fs::metadata(&store).unwrap().dev();
        assert!(now.is_protected_id(dev, ino));

        // A hard link made later (under a name the set does not go through, so only the
        // file's own link count tells): walks must check files by inode from now on.
        let before = settled(&p, Access::Read);
        assert!(!before.has_linked_files());
        std::fs::hard_link(&secret, dir.path().join("alias")).unwrap();
        assert!(p.policy(Access::Read).has_linked_files());
        std::fs::remove_file(dir.path().join("alias")).unwrap();

        // The directory of a protected file moved and a symlink left in its place: the file
        // is known by its new real path (a walk of the new place would otherwise read it).
        let before = settled(&p, Access::Read);
        assert!(before.is_entry_path(&real.join("app/secret")));
        std::fs::rename(dir.path().join("app"), dir.path().join("app2")).unwrap();
        std::os::unix::fs::symlink("app2", dir.path().join("app")).unwrap();
        let now = p.policy(Access::Read);
        assert!(now.is_entry_path(&real.join("app2/secret")));
        assert!(!now.is_entry_path(&real.join("app/secret")));

        // The same for writes, which have a cache of their own.
        let before = settled(&p, Access::Write);
        std::fs::rename(dir.path().join("app2"), dir.path().join("app3")).unwrap();
        std::fs::remove_file(dir.path().join("app")).unwrap();
        std::os::unix::fs::symlink("app3", dir.path().join("app")).unwrap();
        let now = p.policy(Access::Write);
        assert!(!Arc::ptr_eq(&before, &now));
        assert!(now.is_entry_path(&real.join("app3/secret")));
    }

    /// Differential test of the reused resolution (the fast path: the last one while the
    /// kernel reports no change) against a fresh resolution (the slow path it shortcuts), for
    /// reads and writes, after each of a few hundred changes drawn at random: unrelated names
    /// and names inside protected directories come and go, the token store is replaced by
    /// rename, a protected file gets and loses a hard link and is recreated, its directory is
    /// moved and a symlink left in its place, a symlink an entry is reached through is pointed
    /// elsewhere, an entry's mode changes, a write-only entry comes and goes, and (as root) a
    /// directory on an entry's way is mounted over and unmounted.
    #[test]
    fn a_reused_resolution_is_always_what_a_fresh_one_would_be() {
        let _mounts = mount_table();
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        for d in ["conf", "app0", "real-a", "real-b", "real-c", "other"] {
            std::fs::create_dir(base.join(d)).unwrap();
        }
        for f in [
            "conf/tokens.json",
            "app0/secret",
            "real-a/key",
            "real-b/key",
            "real-c/key",
        ] {
            std::fs::write(base.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("app0", base.join("app")).unwrap();
        std::os::unix::fs::symlink("real-a", base.join("link")).unwrap();
        let p = ProtectedPaths::new([
            base.join("conf"),
            base.join("conf/tokens.json"),
            base.join("app/secret"),
            base.join("link/key"),
        ])
        .with_write_only(base.join("rec"));
        let fresh = |access| p.resolve(access, Mounts::read().ok().as_ref());
        let mut rng = crate::testing::Rng::new(7);
        let (mut app, mut alias, mut mount, mut can_mount) = (0, false, None, true);
        let mut reused = 0;
        for step in 0..300 {
            let before = p.policy(Access::Read);
            let change = rng.below(10);
            match change {
                0 => std::fs::write(base.join(format!("other/f{}", rng.below(5))), "x").unwrap(),
                1 => std::fs::write(base.join(format!("conf/f{}", rng.below(5))), "x").unwrap(),
                2 => {
                    std::fs::write(base.join("conf/new.json"), format!("{step}")).unwrap();
                    std::fs::rename(base.join("conf/new.json"), base.join("conf/tokens.json"))
                        .unwrap();
                }
                3 => {
                    let a = base.join("other/alias");
                    if alias {
                        std::fs::remove_file(&a).unwrap();
                    } else {
                        std::fs::hard_link(base.join("app/secret"), &a).unwrap();
                    }
                    alias = !alias;
                }
                4 => {
                    std::fs::rename(
                        base.join(format!("app{app}")),
                        base.join(format!("app{}", app + 1)),
                    )
                    .unwrap();
                    app += 1;
                    std::os::unix::fs::symlink(format!("app{app}"), base.join("app.new")).unwrap();
                    std::fs::rename(base.join("app.new"), base.join("app")).unwrap();
                }
                5 => {
                    let to = ["real-a", "real-b"][rng.below(2)];
                    std::os::unix::fs::symlink(to, base.join("link.new")).unwrap();
                    std::fs::rename(base.join("link.new"), base.join("link")).unwrap();
                }
                6 => {
                    let mode = [0o600, 0o640][rng.below(2)];
                    std::fs::set_permissions(
                        base.join("conf/tokens.json"),
                        std::fs::Permissions::from_mode(mode),
                    )
                    .unwrap();
                }
                7 => {
                    if alias {
                        std::fs::remove_file(base.join("other/alias")).unwrap();
                        alias = false;
                    }
                    std::fs::remove_file(base.join("app/secret")).unwrap();
                    std::fs::write(base.join("app/secret"), format!("{step}")).unwrap();
                }
                8 => {
                    if base.join("rec").exists() {
                        std::fs::remove_dir(base.join("rec")).unwrap();
                    } else {
                        std::fs::create_dir(base.join("rec")).unwrap();
                    }
                }
                _ => {
                    // Unmounted, or mounted (once it failed, not tried again).
                    if mount.take().is_none() && can_mount {
                        mount =
                            crate::testing::bind_mount(&base.join("real-c"), &base.join("real-a"));
                        can_mount = mount.is_some();
                    }
                }
            }
            for access in [Access::Read, Access::Write] {
                let now = p.policy(access);
                assert_eq!(
                    *now,
                    fresh(access),
                    "step {step}, change {change}, {access:?}"
                );
            }
            if change < 2 && Arc::ptr_eq(&before, &p.policy(Access::Read)) {
                reused += 1;
            }
        }
        drop(mount);
        assert!(
            reused > 10,
            "the resolution was reused after {reused} unrelated changes"
        );
    }

    #[test]
    fn an_entry_reached_through_a_symlink_is_followed_when_the_link_is_replaced() {
        let _mounts = mount_table();
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
            std::fs::write(dir.path().join(d).join("tokens.json"), d).unwrap();
        }
        std::os::unix::fs::symlink("a", dir.path().join("conf")).unwrap();
        let p = ProtectedPaths::new([dir.path().join("conf/tokens.json")]);
        let id = |d: &str| {
            let m = std::fs::metadata(dir.path().join(d).join("tokens.json")).unwrap();
            (m.dev(), m.ino())
        };
        let before = settled(&p, Access::Read);
        assert!(before.is_protected_id(id("a").0, id("a").1));
        // Pointed elsewhere the only way a symlink can be: replaced by another.
        std::os::unix::fs::symlink("b", dir.path().join("conf.new")).unwrap();
        std::fs::rename(dir.path().join("conf.new"), dir.path().join("conf")).unwrap();
        let now = p.policy(Access::Read);
        assert!(now.is_protected_id(id("b").0, id("b").1));
        assert!(!now.is_protected_id(id("a").0, id("a").1));
    }

    #[test]
    fn a_mount_over_a_protected_directory_is_seen_by_the_next_call() {
        let _mounts = mount_table();
        let dir = tempfile::tempdir().unwrap();
        let (conf, other) = (dir.path().join("conf"), dir.path().join("other"));
        std::fs::create_dir(&conf).unwrap();
        std::fs::create_dir(&other).unwrap();
        std::fs::write(conf.join("tokens.json"), "real").unwrap();
        std::fs::write(other.join("tokens.json"), "decoy").unwrap();
        let p = ProtectedPaths::new([conf.join("tokens.json")]);
        let before = settled(&p, Access::Read);
        let Some(mount) = crate::testing::bind_mount(&other, &conf) else {
            return;
        };
        let now = p.policy(Access::Read);
        let m = std::fs::metadata(conf.join("tokens.json")).unwrap();
        drop(mount);
        assert!(!Arc::ptr_eq(&before, &now), "resolved anew");
        assert!(
            now.is_protected_id(m.dev(), m.ino()),
            "the file now at the path"
        );
    }

    #[test]
    fn a_set_with_a_missing_entry_is_resolved_for_every_call() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProtectedPaths::new([dir.path().join("not-yet")]);
        let first = p.policy(Access::Read);
        let again = p.policy(Access::Read);
        assert!(!Arc::ptr_eq(&first, &again));
        assert!(!Arc::ptr_eq(&again, &p.policy(Access::Read)));
        std::fs::write(dir.path().join("not-yet"), "x").unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap().join("not-yet");
        let m = std::fs::metadata(&real).unwrap();
        assert!(p.policy(Access::Read).is_protected_id(m.dev(), m.ino()));
    }

    #[test]
    fn prefix_collisions_are_not_matches() {
        let dir = tempfile::tempdir().unwrap();
        let prot = dir.path().join("mymcp");
        std::fs::create_dir(&prot).unwrap();
        std::fs::create_dir(dir.path().join("mymcpx")).unwrap();
        let p = policy_for(&[&prot]);
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert!(p.entry_for_path(&real.join("mymcp")).is_some());
        assert!(p.entry_for_path(&real.join("mymcp/tokens.json")).is_some());
        assert!(p.entry_for_path(&real.join("mymcpx")).is_none());
        assert!(p.entry_for_path(&real.join("mymcpx/tokens.json")).is_none());
        assert!(p.entry_for_path(&real).is_none());
    }

    #[test]
    fn missing_entries_resolve_through_their_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let p = policy_for(&[&link.join("not/yet")]);
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            p.entry_for_path(&real.join("not/yet/x")),
            Some(link.join("not/yet").to_str().unwrap())
        );
    }

    #[test]
    fn defaults_protect_config_state_audit_runtime_and_binaries_not_their_directory() {
        // Binaries are protected where they are installed; one that is not there is not an
        // entry (a missing entry would be resolved for every call).
        let bin = tempfile::tempdir().unwrap();
        for b in ["mymcp-executor", "mymcp-frontend", "mymcpctl"] {
            std::fs::write(bin.path().join(b), "").unwrap();
        }
        let d = DefaultProtected {
            token_file: "/etc/mymcp/tokens.json".into(),
            runtime_dir: "/run/mymcp".into(),
            state_dir: "/var/lib/mymcp".into(),
            audit_log_dir: "/var/log/mymcp".into(),
            env_file: Some("/etc/default/mymcp".into()),
            binary_dir: Some(bin.path().to_owned()),
            extra: vec!["/srv/secret".into()],
            recorder_data_dir: Some("/var/lib/mymcp/recorder".into()),
            tls_key: Some("/etc/ssl/private/mymcp.key".into()),
        };
        let p = ProtectedPaths::with_defaults(&d);
        assert_eq!(p.write_only(), [PathBuf::from("/var/lib/mymcp/recorder")]);
        let e: Vec<String> = p
            .entries()
            .iter()
            .map(|p| {
                p.to_str()
                    .unwrap()
                    .replace(bin.path().to_str().unwrap(), "BIN")
            })
            .collect();
        assert_eq!(
            e,
            [
                "/etc/mymcp",
                "/etc/mymcp/tokens.json",
                "/var/lib/mymcp",
                "/var/log/mymcp",
                "/run/mymcp",
                "/etc/default/mymcp",
                "BIN/mymcp-executor",
                "BIN/mymcp-frontend",
                "BIN/mymcpctl",
                "/etc/ssl/private/mymcp.key",
                "/srv/secret"
            ]
        );
    }

    #[test]
    fn reads_are_checked_on_the_object_behind_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let prot = dir.path().join("prot");
        std::fs::create_dir(&prot).unwrap();
        std::fs::write(prot.join("secret"), "s").unwrap();
        std::fs::write(dir.path().join("ok"), "o").unwrap();
        std::os::unix::fs::symlink(prot.join("secret"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(&prot, dir.path().join("dirlink")).unwrap();
        let p = policy_for(&[&prot]);
        let s = |p: &Path| p.to_str().unwrap().to_owned();
        let shown = s(&prot);
        for bad in [
            prot.join("secret"),
            dir.path().join("link"),
            dir.path().join("dirlink/secret"),
            prot.join("../prot/secret"),
        ] {
            let e = open_for_read(&p, &s(&bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtectedPath, "{bad:?}");
            assert_eq!(
                e.message,
                format!("Access denied: path is within protected directory {shown}")
            );
        }
        // `protected/../x` is outside.
        assert!(open_for_read(&p, &s(&prot.join("../ok"))).is_ok());
    }

    #[test]
    fn hard_links_to_protected_files_are_recognised_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        let alias = dir.path().join("alias");
        std::fs::hard_link(&secret, &alias).unwrap();
        let p = policy_for(&[&secret]);
        let e = open_for_read(&p, alias.to_str().unwrap()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtectedPath);
        let e = open_for_write(&p, alias.to_str().unwrap(), false).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtectedPath);
    }

    #[test]
    fn magic_links_are_refused() {
        let p = policy_for(&[]);
        let f = File::open("/etc/hostname").unwrap();
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f));
        let e = open_for_read(&p, &path).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPath, "{e}");
        let e = open_for_read(&p, "/proc/self/root/etc/hostname").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPath, "{e}");
    }

    #[test]
    fn writes_check_the_parent_and_follow_a_final_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let prot = dir.path().join("prot");
        std::fs::create_dir(&prot).unwrap();
        std::os::unix::fs::symlink(&prot, dir.path().join("dirlink")).unwrap();
        std::os::unix::fs::symlink(prot.join("new"), dir.path().join("filelink")).unwrap();
        let p = policy_for(&[&prot]);
        let s = |p: PathBuf| p.to_str().unwrap().to_owned();
        for bad in [
            prot.join("x"),
            dir.path().join("dirlink/x"),
            dir.path().join("filelink"),
            prot.join("deep/er/x"),
        ] {
            let e = open_for_write(&p, &s(bad.clone()), true).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtectedPath, "{bad:?}");
        }
        assert!(!prot.join("deep").exists(), "nothing created in protected");
        let t = open_for_write(&p, &s(dir.path().join("a/b/c")), true).unwrap();
        assert!(t.existing().is_none());
        let mode = std::fs::metadata(dir.path().join("a/b")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o755);
        let e = open_for_write(&p, &s(dir.path().join("z/y")), false).unwrap_err();
        assert_eq!(e.code, ErrorCode::FileNotFoundError);
        let e = open_for_write(&p, &format!("{}/", dir.path().display()), true).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPath);
        let e = open_for_write(&p, dir.path().to_str().unwrap(), true).unwrap_err();
        assert_eq!(e.code, ErrorCode::IsADirectoryError);
    }

    /// A state directory with the recorder's data directory inside, as installed by default.
    fn state_with_recorder() -> (tempfile::TempDir, PathBuf, PathBuf, ProtectedPaths) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let data = state.join("recorder");
        std::fs::create_dir_all(data.join("overview")).unwrap();
        std::fs::create_dir_all(data.join("inner")).unwrap();
        std::fs::create_dir_all(state.join("audit")).unwrap();
        std::fs::write(state.join("audit/signing.key"), "k").unwrap();
        std::fs::write(data.join("overview/overview.md"), "# o").unwrap();
        let p =
            ProtectedPaths::new([state.clone(), data.join("inner")]).with_write_only(data.clone());
        (dir, state, data, p)
    }

    #[test]
    fn a_write_only_entry_is_readable_inside_a_protected_directory_but_never_writable() {
        let (_dir, state, data, p) = state_with_recorder();
        let s = |p: &Path| p.to_str().unwrap().to_owned();
        let read = p.policy(Access::Read);
        let write = p.policy(Access::Write);
        let overview = data.join("overview/overview.md");
        assert!(open_for_read(&read, &s(&overview)).is_ok());
        assert!(matches!(
            open_search_root(&read, &s(&data)),
            Ok(Some(SearchRoot::Dir(_)))
        ));
        // What is around it and what is protected inside it stay protected.
        for bad in [state.join("audit/signing.key"), data.join("inner")] {
            let e = open_search_root(&read, &s(&bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtectedPath, "{bad:?}");
        }
        let e = open_for_read(&read, &s(&data.join("../audit/signing.key"))).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtectedPath);
        // Never writable, for any access that writes.
        for target in [overview.clone(), data.join("new.md"), data.join("x/y.md")] {
            let e = open_for_write(&write, &s(&target), true).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtectedPath, "{target:?}");
        }
        assert!(!data.join("x").exists());
        assert_eq!(
            check_new_path(&write, &s(&data.join("up.bin")))
                .unwrap_err()
                .code,
            ErrorCode::ProtectedPath
        );
    }

    #[test]
    fn a_write_only_entry_outside_the_protected_set_is_readable_and_walked() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("rec");
        std::fs::create_dir_all(data.join("overview")).unwrap();
        let p = ProtectedPaths::new([]).with_write_only(data.clone());
        let read = p.policy(Access::Read);
        let real = std::fs::canonicalize(&data).unwrap();
        assert!(!read.is_entry_path(&real));
        assert!(read.entry_for_path(&real.join("overview")).is_none());
        let write = p.policy(Access::Write);
        assert!(write.entry_for_path(&real.join("overview")).is_some());
    }

    #[test]
    fn a_symlinked_write_only_entry_opens_nothing() {
        // Its owner could point the link at anything; the exemption must not follow it.
        let (dir, state, _data, _) = state_with_recorder();
        let link = state.join("linked");
        std::os::unix::fs::symlink(state.join("audit"), &link).unwrap();
        let p = ProtectedPaths::new([state.clone()]).with_write_only(link.clone());
        let read = p.policy(Access::Read);
        let e = open_for_read(&read, link.join("signing.key").to_str().unwrap()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtectedPath);
        drop(dir);
    }

    /// This test process counts as a mymcp process (its own `exe` is among the started ones,
    /// as the executor's is): its `/proc` tree is protected however it is named, another
    /// process's is not.
    #[test]
    fn a_mymcp_processs_proc_tree_is_protected_under_every_name() {
        let p = ProtectedPaths::new([]);
        for access in [Access::Read, Access::Write] {
            let policy = p.policy(access);
            let me = std::process::id();
            let tid = std::fs::read_dir(format!("/proc/{me}/task"))
                .unwrap()
                .flatten()
                .last()
                .unwrap()
                .file_name();
            let tid = tid.to_str().unwrap();
            for path in [
                "/proc/self/environ".to_owned(),
                "/proc/thread-self/environ".to_owned(),
                format!("/proc/{me}/cmdline"),
                format!("/proc/{me}/task/{tid}/maps"),
                format!("/proc/{tid}/environ"),
            ] {
                let e = open_for_read(&policy, &path).unwrap_err();
                assert_eq!(e.code, ErrorCode::ProtectedPath, "{path}");
            }
            assert!(policy.is_entry_path(Path::new(&format!("/proc/{me}"))));
            assert!(!policy.is_entry_path(Path::new(&format!("/proc/{me}/environ"))));
            assert!(policy.entry_for_path(Path::new("/proc/kcore")).is_some());
            assert!(policy.entry_for_path(Path::new("/proc/cpuinfo")).is_none());

            let mut other = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let theirs = format!("/proc/{}/cmdline", other.id());
            let read = open_for_read(&policy, &theirs);
            let _ = other.kill();
            let _ = other.wait();
            assert!(read.is_ok(), "{theirs}: {read:?}");
        }
    }

    #[test]
    fn mymcp_credential_directories_are_protected_and_others_are_not() {
        let p = ProtectedPaths::new([]).policy(Access::Read);
        let ours = Path::new("/run/credentials/mymcp-frontend.service");
        assert!(p.is_entry_path(ours));
        assert!(p.entry_for_path(&ours.join("tls.key")).is_some());
        // A walk meets the directory first; what lies inside is never reached.
        assert!(!p.is_entry_path(&ours.join("tls.key")));
        let other = Path::new("/run/credentials/nginx.service");
        assert!(!p.is_entry_path(other));
        assert!(p.entry_for_path(&other.join("key")).is_none());
        assert!(p.entry_for_path(Path::new("/run/credentials")).is_none());
        assert!(p
            .entry_for_path(Path::new("/run/credentialsx/mymcp"))
            .is_none());
    }

    #[test]
    fn a_proc_mount_of_one_process_is_mapped_to_that_process() {
        let me = std::process::id();
        let mut policy = (*ProtectedPaths::new([]).policy(Access::Read)).clone();
        policy.proc_mounts = vec![
            (PathBuf::from("/proc"), PathBuf::from("/")),
            (PathBuf::from("/srv/mine"), PathBuf::from(format!("/{me}"))),
        ];
        // `/srv/mine` would be this process's /proc/<pid>: mapped through `/proc` here, where
        // its `exe` is found.
        policy.proc_mounts[1].0 = PathBuf::from(format!("/proc/{me}"));
        assert!(policy
            .entry_for_path(Path::new(&format!("/proc/{me}/environ")))
            .is_some());
        policy.proc_mounts = vec![(PathBuf::from("/elsewhere"), PathBuf::from("/"))];
        // No proc mount at /proc any more: /proc/<pid> is an ordinary path.
        assert!(policy
            .entry_for_path(Path::new(&format!("/proc/{me}/environ")))
            .is_none());
    }

    /// The window of the rename race: the descriptor was opened on the old inode of a
    /// protected file, which was then replaced; the set now knows only the new inode, and the
    /// old one's path reads `<name> (deleted)`.
    #[test]
    fn a_protected_file_replaced_after_it_was_opened_is_still_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server.key");
        std::fs::write(&key, "OLD").unwrap();
        let p = ProtectedPaths::new([key.clone()]);
        let fd: OwnedFd = File::open(&key).unwrap().into();
        let meta = File::from(fd.try_clone().unwrap()).metadata().unwrap();
        std::fs::write(dir.path().join("new"), "NEW").unwrap();
        std::fs::rename(dir.path().join("new"), &key).unwrap();
        let policy = settled(&p, Access::Read);
        assert!(
            !policy.is_protected_id(meta.dev(), meta.ino()),
            "the old inode is out of the set"
        );
        let real = sysfs::fd_path(fd.as_fd()).unwrap();
        assert!(real.to_str().unwrap().ends_with(" (deleted)"), "{real:?}");
        assert!(policy.check_fd(fd.as_fd(), &meta).is_err());
    }
}
