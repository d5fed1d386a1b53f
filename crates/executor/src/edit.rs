//! `write_file` and `edit_file`: atomic replacement inside a checked directory.
//!
//! Both write the new contents to a temporary file created (`O_EXCL|O_NOFOLLOW`) in the
//! target's own directory — the directory descriptor that passed the protected-path check —
//! give it the mode and owner of the file it replaces (0644 for a new file, group as the
//! directory decides), `fsync` it, `renameat` it over the name and `fsync` the directory.
//! Readers see the old file or the new one, never a mix, and a crash leaves at worst a stray
//! `.<name>.mymcp-*.tmp` beside an intact target.
//!
//! `edit_file` works on bytes: everything outside the replaced spans is kept exactly (CRLF, lone
//! CR, invalid UTF-8, a missing final newline). An edit that changes nothing does not rewrite
//! the file. Writes and edits of one file are serialised inside the executor, so two concurrent
//! edits cannot lose one another's change.

use crate::auth::{Authorized, Rw};
use crate::paths::{self, Access, CheckedTarget, Policy};
use mymcp_protocol::{
    EditFile, EditFileOutput, ErrorCode, ToolFailure, WriteFile, WriteFileOutput,
};
use mymcp_sys::fs as sysfs;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{File, Permissions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Condvar, Mutex, OnceLock};

/// Limits of the writing tools. Built by `config`; defaults are the reference's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WriteConfig {
    /// `MYMCP_WRITE_FILE_MAX_BYTES`.
    pub(crate) max_write_bytes: u64,
    /// `MYMCP_EDIT_STRING_MAX_BYTES`: for `old_string` and `new_string` each.
    pub(crate) max_edit_string_bytes: u64,
    /// `MYMCP_EDIT_FILE_MAX_BYTES`: largest file edit_file loads.
    pub(crate) max_edit_file_bytes: u64,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            max_write_bytes: mymcp_settings::WRITE_FILE_MAX_BYTES.default(),
            max_edit_string_bytes: mymcp_settings::EDIT_STRING_MAX_BYTES.default(),
            max_edit_file_bytes: mymcp_settings::EDIT_FILE_MAX_BYTES.default(),
        }
    }
}

/// `10MB` for 10485760: how the reference's messages name a limit.
fn human(bytes: u64) -> String {
    const MB: u64 = 1024 * 1024;
    const KB: u64 = 1024;
    if bytes >= MB && bytes.is_multiple_of(MB) {
        format!("{}MB", bytes / MB)
    } else if bytes >= KB && bytes.is_multiple_of(KB) {
        format!("{}KB", bytes / KB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Runs one `write_file` call for the holder of `auth`, with its account's rights. Blocking.
pub(crate) fn write_file(
    auth: &Authorized<Rw>,
    args: &WriteFile,
    cfg: &WriteConfig,
    policy: &Policy,
) -> Result<WriteFileOutput, ToolFailure> {
    let path = args.file_path.as_str();
    paths::check_absolute("file_path", path)?;
    let _as = auth.act()?;
    let n = args.content.len() as u64;
    if n > cfg.max_write_bytes {
        return Err(ToolFailure::new(
            ErrorCode::FileTooLarge,
            format!(
                "Content is {n} bytes, max is {} ({})",
                cfg.max_write_bytes,
                human(cfg.max_write_bytes)
            ),
        ));
    }
    // Lock, then resolve again so that the mode and owner kept are the current file's.
    let _lock = lock(&paths::open_for_write(policy, path, true)?);
    let target = paths::open_for_write(policy, path, true)?;
    replace(&target, args.content.as_bytes(), path)?;
    Ok(WriteFileOutput { bytes_written: n })
}

/// Runs one `edit_file` call for the holder of `auth`, with its account's rights. Blocking.
pub(crate) fn edit_file(
    auth: &Authorized<Rw>,
    args: &EditFile,
    cfg: &WriteConfig,
    policy: &Policy,
) -> Result<EditFileOutput, ToolFailure> {
    let path = args.file_path.as_str();
    paths::check_absolute("file_path", path)?;
    let _as = auth.act()?;
    let max = cfg.max_edit_string_bytes;
    for (field, value) in [
        ("old_string", &args.old_string),
        ("new_string", &args.new_string),
    ] {
        if value.len() as u64 > max {
            return Err(ToolFailure::new(
                ErrorCode::FileTooLarge,
                format!("{field} exceeds {} limit", human(max)),
            ));
        }
    }
    if args.old_string.is_empty() {
        return Err(
            ToolFailure::new(ErrorCode::InvalidArguments, "old_string must not be empty")
                .with_suggestion("Use write_file to create or replace a whole file"),
        );
    }
    let _lock = lock(&paths::open_for_write(policy, path, false)?);
    let target = paths::open_for_write(policy, path, false)?;
    if target.existing().is_none() {
        return Err(ToolFailure::new(
            ErrorCode::FileNotFoundError,
            format!("File not found: {path}"),
        ));
    }
    let (file, meta) = target.open_existing(path)?.ok_or_else(|| {
        ToolFailure::new(
            ErrorCode::FileNotFoundError,
            format!("File not found: {path}"),
        )
    })?;
    if meta.len() > cfg.max_edit_file_bytes {
        return Err(too_big(path, meta.len(), cfg.max_edit_file_bytes));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(cfg.max_edit_file_bytes + 1)
        .read_to_end(&mut data)
        .map_err(|e| paths::os_failure(path, &e, Access::Read))?;
    if data.len() as u64 > cfg.max_edit_file_bytes {
        return Err(too_big(path, data.len() as u64, cfg.max_edit_file_bytes));
    }

    let old = args.old_string.as_bytes();
    let new = args.new_string.as_bytes();
    let positions: Vec<usize> = memchr::memmem::find_iter(&data, old).collect();
    // find_iter reports overlapping matches; keep the non-overlapping ones from the left, as
    // str::replace does.
    let mut spans = Vec::with_capacity(positions.len());
    let mut next_free = 0;
    for p in positions {
        if p >= next_free {
            spans.push(p);
            next_free = p + old.len();
        }
    }
    match spans.len() {
        0 => {
            return Err(ToolFailure::new(
                ErrorCode::StringNotFound,
                "old_string not found in file",
            ))
        }
        n if n > 1 && !args.replace_all.unwrap_or(false) => {
            return Err(ToolFailure::new(
                ErrorCode::AmbiguousMatch,
                format!(
                    "old_string appears {n} times. Set replace_all=true to replace all occurrences."
                ),
            ))
        }
        _ => {}
    }
    let replacements = spans.len() as u64;
    if old == new {
        // Nothing would change: leave the file (and its mtime) alone.
        return Ok(EditFileOutput { replacements });
    }
    let mut out =
        Vec::with_capacity(data.len() + spans.len() * new.len().saturating_sub(old.len()));
    let mut at = 0;
    for p in spans {
        out.extend_from_slice(&data[at..p]);
        out.extend_from_slice(new);
        at = p + old.len();
    }
    out.extend_from_slice(&data[at..]);
    replace(&target, &out, path)?;
    Ok(EditFileOutput { replacements })
}

fn too_big(path: &str, size: u64, max: u64) -> ToolFailure {
    ToolFailure::new(
        ErrorCode::FileTooLarge,
        format!(
            "{path} is {size} bytes, edit_file loads at most {max} ({})",
            human(max)
        ),
    )
    .with_suggestion("Use bash_execute with sed or a script for very large files")
}

/// Replaces the target's contents atomically (see the module documentation).
fn replace(target: &CheckedTarget, data: &[u8], shown: &str) -> Result<(), ToolFailure> {
    let fail = |e: std::io::Error| paths::os_failure(shown, &e, Access::Write);
    let mut temp = TempFile::create(target).map_err(fail)?;
    temp.file().write_all(data).map_err(fail)?;
    temp.commit(target, Replace::Yes).map_err(fail)
}

/// Whether [`TempFile::commit`] may replace an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replace {
    Yes,
    /// Fail with `EEXIST` if the name exists at the moment of the rename (`RENAME_NOREPLACE`).
    No,
}

/// A temporary file beside a write target, inside the target's checked directory (mode 0600).
/// It is created unnamed (`O_TMPFILE`) where the filesystem allows, so that nothing is left
/// behind even if the executor is killed mid-write: the kernel frees an unnamed file with its
/// last descriptor. Elsewhere it is a named `.<name>.mymcp-<random>.tmp` created
/// `O_EXCL|O_NOFOLLOW` and removed when dropped unless [`TempFile::commit`] renamed it into
/// place, so a failed or abandoned write leaves nothing behind.
#[derive(Debug)]
pub(crate) struct TempFile {
    /// A duplicate of the checked directory's descriptor, so the file can be removed from
    /// wherever it is dropped.
    dir: std::os::fd::OwnedFd,
    /// `None` while the file is unnamed.
    name: Option<OsString>,
    file: File,
    committed: bool,
}

impl TempFile {
    /// Creates an unnamed file in the target's directory, or `.<name>.mymcp-<random>.tmp`
    /// where the filesystem has no `O_TMPFILE`.
    pub(crate) fn create(target: &CheckedTarget) -> std::io::Result<TempFile> {
        let dir = target.dir().fd().try_clone_to_owned()?;
        // Readable too: an upload hashes what it wrote by reading it back.
        match sysfs::openat(
            sysfs::Base::Dir(dir.as_fd()),
            std::ffi::OsStr::new("."),
            libc::O_RDWR | libc::O_TMPFILE,
            0o600,
        ) {
            Ok(fd) => {
                return Ok(TempFile {
                    dir,
                    name: None,
                    file: File::from(fd),
                    committed: false,
                })
            }
            // No O_TMPFILE on this filesystem (or kernel): a named file instead.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) => {}
            Err(e) => return Err(e),
        }
        let name = temp_name(target.name().as_bytes());
        let fd = sysfs::openat(
            sysfs::Base::Dir(dir.as_fd()),
            &name,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )?;
        Ok(TempFile {
            dir,
            name: Some(name),
            file: File::from(fd),
            committed: false,
        })
    }

    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Gives the file the mode and owner of the file it replaces (as it is now; 0644 and the
    /// caller's owner for a new file), fsyncs it, puts it in place under the target's name
    /// and fsyncs the directory. On failure the temporary file is removed.
    pub(crate) fn commit(self, target: &CheckedTarget, replace: Replace) -> std::io::Result<()> {
        self.place(target, replace, false).map(Placed::keep)
    }

    /// As [`TempFile::commit`], but the file can be taken out again ([`Placed::undo`]) until
    /// it is kept ([`Placed::keep`], or dropping it): a file it replaces is kept aside under a
    /// second name (a hard link) meanwhile. For an upload that must not stay in place when
    /// its audit record cannot be written.
    pub(crate) fn commit_undoable(
        self,
        target: &CheckedTarget,
        replace: Replace,
    ) -> std::io::Result<Placed> {
        self.place(target, replace, true)
    }

    fn place(
        mut self,
        target: &CheckedTarget,
        replace: Replace,
        undoable: bool,
    ) -> std::io::Result<Placed> {
        let dir = target.dir().fd();
        // The file being replaced as it is now (a long upload may outlive the one checked).
        let present = sysfs::stat_entry(dir, target.name())?;
        let existing = present.filter(|st| st.is_file());
        let file = &self.file;
        match existing {
            Some(st) => {
                // chown first: it clears set-id bits, which the chmod then restores.
                if let Err(e) = std::os::unix::fs::fchown(file, Some(st.uid), Some(st.gid)) {
                    // Not root (quick try by an ordinary user): the file stays the caller's.
                    if e.raw_os_error() != Some(libc::EPERM) {
                        return Err(e);
                    }
                }
                file.set_permissions(Permissions::from_mode(st.mode & 0o7777))?;
            }
            None => file.set_permissions(Permissions::from_mode(0o644))?,
        }
        file.sync_all()?;
        let placed_ino = file.metadata().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })?;
        // Undoable: the file about to be replaced gets a second name first, to come back by.
        let backup = match (present, replace, undoable) {
            (_, _, false) => Backup::NotNeeded,
            // Without replacing, the rename succeeds only where nothing was.
            (None, _, true) | (_, Replace::No, true) => Backup::NothingReplaced,
            (Some(_), Replace::Yes, true) => {
                let name = temp_name(target.name().as_bytes());
                match sysfs::link_within(dir, target.name(), &name) {
                    Ok(()) => Backup::Kept(name),
                    // No hard links here (or not allowed): it can be replaced, not restored.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot keep the replaced file aside; this upload cannot be taken back");
                        Backup::Lost
                    }
                }
            }
        };
        let placed = Placed {
            dir: dir.try_clone_to_owned()?,
            name: target.name().to_owned(),
            _held: self.file.try_clone()?,
            ino: placed_ino,
            backup,
        };
        let renamed = match (&self.name, replace) {
            // An unnamed file that must not replace anything is linked under the target's
            // name directly: the link fails if the name exists, atomically.
            (None, Replace::No) => sysfs::link_into(self.file.as_fd(), dir, target.name()),
            // To replace, it gets a temporary name first, then is renamed over the target;
            // only a kill between the two can leave that (complete) file behind.
            (None, Replace::Yes) => {
                let name = temp_name(target.name().as_bytes());
                sysfs::link_into(self.file.as_fd(), self.dir.as_fd(), &name).and_then(|()| {
                    let name = self.name.insert(name);
                    sysfs::rename_within(dir, name, target.name())
                })
            }
            (Some(name), Replace::Yes) => sysfs::rename_within(dir, name, target.name()),
            (Some(name), Replace::No) => sysfs::rename_within_noreplace(dir, name, target.name()),
        };
        if let Err(e) = renamed {
            // Nothing was replaced: drop the second name of the file that stays.
            placed.keep();
            return Err(e);
        }
        self.committed = true;
        // The rename is durable once the directory is synced; a failure here changes nothing
        // the caller can act on.
        let _ = sysfs::fsync(dir.as_fd());
        Ok(placed)
    }
}

/// A file [`TempFile::commit_undoable`] put in place. Dropping it keeps it.
#[derive(Debug)]
pub(crate) struct Placed {
    dir: std::os::fd::OwnedFd,
    name: OsString,
    /// The file put in place, held open so that its inode number cannot be reused by another
    /// file meanwhile.
    _held: File,
    /// `(dev, ino)` of the file put in place.
    ino: (u64, u64),
    backup: Backup,
}

/// What [`Placed::undo`] puts back.
#[derive(Debug)]
enum Backup {
    /// Not undoable.
    NotNeeded,
    /// The name was free: undoing removes it again.
    NothingReplaced,
    /// The replaced file, under this second name.
    Kept(OsString),
    /// A file was replaced and could not be kept aside.
    Lost,
}

impl Placed {
    /// Keeps the file in place and forgets the replaced one.
    pub(crate) fn keep(mut self) {
        self.forget_backup();
    }

    fn forget_backup(&mut self) {
        if let Backup::Kept(name) = std::mem::replace(&mut self.backup, Backup::NotNeeded) {
            if let Err(e) = sysfs::unlinkat(self.dir.as_fd(), &name) {
                tracing::warn!(error = %e, name = %name.to_string_lossy(), "cannot remove the second name of a replaced file");
            }
        }
    }

    /// Takes the file out again: the replaced file comes back under its name (atomically), or
    /// a name that was free is removed (if it still names the file put there).
    pub(crate) fn undo(mut self) -> std::io::Result<()> {
        let dir = self.dir.as_fd();
        match std::mem::replace(&mut self.backup, Backup::NotNeeded) {
            Backup::Kept(old) => sysfs::rename_within(dir, &old, &self.name)?,
            Backup::NothingReplaced => match sysfs::stat_entry(dir, &self.name)? {
                Some(st) if (st.dev, st.ino) == self.ino => sysfs::unlinkat(dir, &self.name)?,
                _ => {
                    return Err(std::io::Error::other(
                        "the name no longer holds the file put there",
                    ))
                }
            },
            Backup::NotNeeded | Backup::Lost => {
                return Err(std::io::Error::other(
                    "the replaced file was not kept aside",
                ))
            }
        }
        let _ = sysfs::fsync(dir);
        Ok(())
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.forget_backup();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let (false, Some(name)) = (self.committed, &self.name) {
            let _ = sysfs::unlinkat(self.dir.as_fd(), name);
        }
    }
}

/// `.<name>.mymcp-<random>.tmp`, shortened so that it stays a valid file name.
fn temp_name(name: &[u8]) -> OsString {
    let mut rnd = [0u8; 8];
    let suffix = match mymcp_sys::fill_random(&mut rnd) {
        Ok(()) => rnd.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        Err(_) => format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ),
    };
    let keep = &name[..name.len().min(200)];
    let mut out = b".".to_vec();
    out.extend_from_slice(keep);
    out.extend_from_slice(format!(".mymcp-{suffix}.tmp").as_bytes());
    std::os::unix::ffi::OsStringExt::from_vec(out)
}

type LockKey = (u64, u64, OsString);

/// Files being written: one writer per (directory, name) at a time inside this executor.
struct Busy {
    held: Mutex<HashSet<LockKey>>,
    freed: Condvar,
}

fn busy() -> &'static Busy {
    static BUSY: OnceLock<Busy> = OnceLock::new();
    BUSY.get_or_init(|| Busy {
        held: Mutex::new(HashSet::new()),
        freed: Condvar::new(),
    })
}

/// Holds the lock of one file until dropped (writes, edits and upload commits of one file are
/// serialised).
pub(crate) struct FileLock(LockKey);

pub(crate) fn lock(target: &CheckedTarget) -> FileLock {
    let key = (target.dir().dev, target.dir().ino, target.name().to_owned());
    let b = busy();
    let mut held = b.held.lock().unwrap_or_else(|p| p.into_inner());
    while held.contains(&key) {
        held = b.freed.wait(held).unwrap_or_else(|p| p.into_inner());
    }
    held.insert(key.clone());
    FileLock(key)
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let b = busy();
        b.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
        b.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::ProtectedPaths;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    fn rw() -> Authorized<Rw> {
        Authorized::for_tests()
    }

    fn policy(entries: &[&Path]) -> std::sync::Arc<Policy> {
        ProtectedPaths::new(entries.iter().map(|p| p.to_path_buf()))
            .policy(crate::paths::Access::Write)
    }

    #[test]
    fn a_temporary_file_has_no_name_and_links_without_replacing_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let target_path = dir.path().join("t.txt");
        let target =
            paths::open_for_write(&policy(&[]), target_path.to_str().unwrap(), false).unwrap();
        let mut temp = TempFile::create(&target).unwrap();
        temp.file().write_all(b"new").unwrap();
        // Nothing to see (or to leave behind if the process died now).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Appears meanwhile: not replaced, and the temporary file goes without a trace.
        std::fs::write(&target_path, "theirs").unwrap();
        let e = temp.commit(&target, Replace::No).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(std::fs::read_to_string(&target_path).unwrap(), "theirs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Replacing is allowed: done, and only the target remains.
        let mut temp = TempFile::create(&target).unwrap();
        temp.file().write_all(b"new").unwrap();
        temp.commit(&target, Replace::Yes).unwrap();
        assert_eq!(std::fs::read_to_string(&target_path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Dropped uncommitted: nothing.
        let target_path = dir.path().join("u.txt");
        let target =
            paths::open_for_write(&policy(&[]), target_path.to_str().unwrap(), false).unwrap();
        drop(TempFile::create(&target).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// As an account: what it creates is its own (file and parent directories), it cannot
    /// write where its rights do not reach, and it cannot replace or edit another's file.
    #[test]
    fn an_account_writes_as_itself_and_only_where_it_may() {
        if mymcp_sys::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let Some(nobody) = crate::accounts::Account::for_tests("nobody") else {
            eprintln!("skipped: no account nobody");
            return;
        };
        let (uid, gid) = (nobody.uid, nobody.gid);
        let auth = Authorized::<Rw>::for_tests_as(std::sync::Arc::new(nobody));
        let as_nobody = |path: &Path, content: &str| {
            write_file(
                &auth,
                &WriteFile {
                    file_path: path.to_str().unwrap().into(),
                    content: content.into(),
                },
                &WriteConfig::default(),
                &policy(&[]),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::os::unix::fs::chown(&open, Some(uid), Some(gid)).unwrap();

        let made = open.join("sub/new.txt");
        as_nobody(&made, "mine").unwrap();
        for p in [&made, &open.join("sub")] {
            let m = std::fs::metadata(p).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", p.display());
        }
        // Root's directory: refused, nothing made.
        let e = as_nobody(&dir.path().join("x.txt"), "no").unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionError, "{e:?}");
        assert!(!dir.path().join("x.txt").exists());
        // Root's readable file in root's directory: not the account's to edit.
        let roots = dir.path().join("roots.txt");
        std::fs::write(&roots, "root's").unwrap();
        std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = edit_file(
            &auth,
            &EditFile {
                file_path: roots.to_str().unwrap().into(),
                old_string: "root's".into(),
                new_string: "mine".into(),
                replace_all: None,
            },
            &WriteConfig::default(),
            &policy(&[]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionError, "{e:?}");
        assert_eq!(std::fs::read_to_string(&roots).unwrap(), "root's");
        // And /etc is root's.
        let e = as_nobody(Path::new("/etc/mymcp-account-test"), "no").unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionError, "{e:?}");
        assert!(!Path::new("/etc/mymcp-account-test").exists());
    }

    /// Puts `content` in place of `target_path` undoably.
    fn place(target_path: &Path, content: &str, replace: Replace) -> std::io::Result<Placed> {
        let target =
            paths::open_for_write(&policy(&[]), target_path.to_str().unwrap(), false).unwrap();
        let mut temp = TempFile::create(&target).unwrap();
        temp.file().write_all(content.as_bytes()).unwrap();
        temp.commit_undoable(&target, replace)
    }

    #[test]
    fn an_undoable_commit_is_taken_back_exactly_or_kept_without_a_trace() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        // A new name: undone, the name is free again.
        let placed = place(&path, "new", Replace::No).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        placed.undo().unwrap();
        assert_eq!(names(dir.path()), Vec::<String>::new());
        // A replaced file comes back, same inode, mode and contents; nothing else is left.
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        let placed = place(&path, "new", Replace::Yes).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            names(dir.path()).len(),
            2,
            "the old file is kept aside meanwhile"
        );
        placed.undo().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        assert_eq!(names(dir.path()), ["t.txt"]);
        // Kept: the new file stays, the old one's second name goes.
        place(&path, "new", Replace::Yes).unwrap().keep();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(names(dir.path()), ["t.txt"]);
        // Dropped counts as kept.
        drop(place(&path, "newer", Replace::Yes).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "newer");
        assert_eq!(names(dir.path()), ["t.txt"]);
        // Refused (the name exists, no replacing): nothing changed, nothing left.
        let e = place(&path, "x", Replace::No).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "newer");
        assert_eq!(names(dir.path()), ["t.txt"]);
        // Undoing a new name someone replaced meanwhile leaves theirs alone.
        let other = dir.path().join("o.txt");
        let placed = place(&other, "ours", Replace::No).unwrap();
        std::fs::remove_file(&other).unwrap();
        std::fs::write(&other, "theirs").unwrap();
        assert!(placed.undo().is_err());
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "theirs");
    }

    fn write(path: &Path, content: &str) -> Result<WriteFileOutput, ToolFailure> {
        write_file(
            &rw(),
            &WriteFile {
                file_path: path.to_str().unwrap().into(),
                content: content.into(),
            },
            &WriteConfig::default(),
            &policy(&[]),
        )
    }

    fn edit(path: &Path, old: &str, new: &str, all: bool) -> Result<u64, ToolFailure> {
        edit_file(
            &rw(),
            &EditFile {
                file_path: path.to_str().unwrap().into(),
                old_string: old.into(),
                new_string: new.into(),
                replace_all: Some(all),
            },
            &WriteConfig::default(),
            &policy(&[]),
        )
        .map(|o| o.replacements)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_creates_parents_and_a_0644_file_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a/b/new.txt");
        let out = write(&f, "héllo\r\n").unwrap();
        assert_eq!(out.bytes_written, 8);
        assert_eq!(std::fs::read(&f).unwrap(), "héllo\r\n".as_bytes());
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o7777, 0o644);
        assert_eq!(names(&dir.path().join("a/b")), ["new.txt"]);
        // Empty content is allowed.
        write(&f, "").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"");
    }

    #[test]
    fn write_keeps_mode_and_owner_of_the_file_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("conf");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o640)).unwrap();
        let owner = if mymcp_sys::euid() == 0 {
            std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
            (65534, 65534)
        } else {
            let m = std::fs::metadata(&f).unwrap();
            (m.uid(), m.gid())
        };
        let ino = std::fs::metadata(&f).unwrap().ino();
        write(&f, "new").unwrap();
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!((m.uid(), m.gid()), owner);
        assert_ne!(m.ino(), ino, "replaced by rename, not rewritten in place");
    }

    #[test]
    fn write_through_a_symlink_replaces_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        write(&link, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn write_limit_names_the_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WriteConfig {
            max_write_bytes: 4,
            ..WriteConfig::default()
        };
        let e = write_file(
            &rw(),
            &WriteFile {
                file_path: dir.path().join("x").to_str().unwrap().into(),
                content: "12345".into(),
            },
            &cfg,
            &policy(&[]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::FileTooLarge);
        assert_eq!(e.message, "Content is 5 bytes, max is 4 (4 bytes)");
        assert!(!dir.path().join("x").exists());
        assert_eq!(human(10_485_760), "10MB");
    }

    #[test]
    fn write_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = write(Path::new("rel.txt"), "x").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidPath);
        let e = write(dir.path(), "x").unwrap_err();
        assert_eq!(e.code, ErrorCode::IsADirectoryError);
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let e = write(&dir.path().join("file/below"), "x").unwrap_err();
        assert_eq!(e.code, ErrorCode::NotADirectoryError, "{e}");
        let e = write(Path::new("/dev/null"), "x").unwrap_err();
        assert_eq!(e.code, ErrorCode::NotARegularFile, "{e}");
    }

    #[test]
    fn edit_changes_only_the_replaced_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dos.txt");
        let before: &[u8] =
            b"line one\r\n\xff\xfe bad \x80 bytes\r\nold value\r\nlone\rcr\r\nno newline";
        std::fs::write(&f, before).unwrap();
        assert_eq!(edit(&f, "old value", "new value", false).unwrap(), 1);
        let after = std::fs::read(&f).unwrap();
        let expected: &[u8] =
            b"line one\r\n\xff\xfe bad \x80 bytes\r\nnew value\r\nlone\rcr\r\nno newline";
        assert_eq!(after, expected);
        // CRLF inside old_string matches.
        assert_eq!(edit(&f, "cr\r\nno", "CR\r\nNO", false).unwrap(), 1);
        assert!(std::fs::read(&f)
            .unwrap()
            .ends_with(b"lone\rCR\r\nNO newline"));
    }

    #[test]
    fn edit_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "a-a-a").unwrap();
        let e = edit(&f, "zzz", "y", false).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::StringNotFound, "old_string not found in file")
        );
        let e = edit(&f, "a", "b", false).unwrap_err();
        assert_eq!(e.code, ErrorCode::AmbiguousMatch);
        assert_eq!(
            e.message,
            "old_string appears 3 times. Set replace_all=true to replace all occurrences."
        );
        assert_eq!(edit(&f, "a", "bb", true).unwrap(), 3);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "bb-bb-bb");
        // Non-overlapping, left to right.
        std::fs::write(&f, "aaaa").unwrap();
        assert_eq!(edit(&f, "aa", "b", true).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "bb");
        let e = edit(&f, "", "x", true).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArguments);
        let e = edit(&dir.path().join("missing"), "a", "b", false).unwrap_err();
        assert_eq!(e.code, ErrorCode::FileNotFoundError);
        assert_eq!(
            e.message,
            format!("File not found: {}", dir.path().join("missing").display())
        );
        let e = edit(dir.path(), "a", "b", false).unwrap_err();
        assert_eq!(e.code, ErrorCode::IsADirectoryError);
        assert_eq!(names(dir.path()), ["f"], "no temporary file left");
    }

    #[test]
    fn no_op_edit_does_not_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "same").unwrap();
        let before = std::fs::metadata(&f).unwrap();
        assert_eq!(edit(&f, "same", "same", false).unwrap(), 1);
        let after = std::fs::metadata(&f).unwrap();
        assert_eq!(before.ino(), after.ino());
        assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    }

    #[test]
    fn edit_string_limits() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "abc").unwrap();
        let cfg = WriteConfig {
            max_edit_string_bytes: 2,
            ..WriteConfig::default()
        };
        let call = |old: &str, new: &str| {
            edit_file(
                &rw(),
                &EditFile {
                    file_path: f.to_str().unwrap().into(),
                    old_string: old.into(),
                    new_string: new.into(),
                    replace_all: None,
                },
                &cfg,
                &policy(&[]),
            )
        };
        let e = call("abc", "x").unwrap_err();
        assert_eq!(e.message, "old_string exceeds 2 bytes limit");
        let e = call("ab", "xyz").unwrap_err();
        assert_eq!(e.message, "new_string exceeds 2 bytes limit");
    }

    #[test]
    fn protected_targets_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let prot = dir.path().join("prot");
        std::fs::create_dir(&prot).unwrap();
        std::fs::write(prot.join("secret"), "s").unwrap();
        let p = policy(&[&prot]);
        let e = write_file(
            &rw(),
            &WriteFile {
                file_path: prot.join("secret").to_str().unwrap().into(),
                content: "x".into(),
            },
            &WriteConfig::default(),
            &p,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtectedPath);
        let e = edit_file(
            &rw(),
            &EditFile {
                file_path: prot.join("secret").to_str().unwrap().into(),
                old_string: "s".into(),
                new_string: "x".into(),
                replace_all: None,
            },
            &WriteConfig::default(),
            &p,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtectedPath);
        assert_eq!(std::fs::read_to_string(prot.join("secret")).unwrap(), "s");
        assert_eq!(names(&prot), ["secret"]);
    }

    #[test]
    fn concurrent_edits_do_not_lose_updates() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("counter");
        let slots: String = (0..16).map(|i| format!("[{i}]")).collect();
        std::fs::write(&f, &slots).unwrap();
        std::thread::scope(|s| {
            for i in 0..16 {
                let f = f.clone();
                s.spawn(move || {
                    edit(&f, &format!("[{i}]"), &format!("<{i}>"), false).unwrap();
                });
            }
        });
        let done: String = (0..16).map(|i| format!("<{i}>")).collect();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), done);
    }
}
