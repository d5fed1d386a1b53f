//! File-system syscalls for the path policy and the file tools: `openat2`, `openat`,
//! `mkdirat`, `renameat`, `unlinkat`, `fstatat`, and reading an fd's real path.
//!
//! Each wrapper is one checked libc call on descriptors and NUL-terminated names; the policy
//! (what may be opened, what is protected) lives in [`crate::paths`].

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where a relative name is resolved from.
#[derive(Clone, Copy, Debug)]
pub enum Base<'a> {
    /// The process's working directory (only ever used with absolute paths here).
    Cwd,
    Dir(BorrowedFd<'a>),
}

impl Base<'_> {
    fn raw(self) -> RawFd {
        match self {
            Base::Cwd => libc::AT_FDCWD,
            Base::Dir(fd) => fd.as_raw_fd(),
        }
    }
}

/// How `openat2` may resolve a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resolve {
    /// `RESOLVE_NO_MAGICLINKS`: never follow `/proc/*/fd/*`, `/proc/*/root`, … links.
    pub no_magic_links: bool,
    /// `RESOLVE_NO_SYMLINKS`: fail with `ELOOP` on any symlink.
    pub no_symlinks: bool,
    /// `RESOLVE_BENEATH`: stay below the base directory (no `..` out of it, no absolute paths).
    pub beneath: bool,
    /// `RESOLVE_CACHED`: answer from the kernel's caches only; `EAGAIN` when the lookup would
    /// have to read a directory or ask a network file system to revalidate.
    pub cached: bool,
}

impl Resolve {
    /// Ordinary resolution, except that magic links are refused.
    pub const NO_MAGIC: Resolve = Resolve {
        no_magic_links: true,
        no_symlinks: false,
        beneath: false,
        cached: false,
    };
    /// [`Resolve::NO_MAGIC`] from the kernel's caches only.
    pub const NO_MAGIC_CACHED: Resolve = Resolve {
        cached: true,
        ..Resolve::NO_MAGIC
    };
    /// Below the base, through real directories only.
    pub const STRICTLY_BENEATH: Resolve = Resolve {
        no_magic_links: true,
        no_symlinks: true,
        beneath: true,
        cached: false,
    };

    fn bits(self) -> u64 {
        let mut r = 0;
        if self.no_magic_links {
            r |= libc::RESOLVE_NO_MAGICLINKS;
        }
        if self.no_symlinks {
            r |= libc::RESOLVE_NO_SYMLINKS;
        }
        if self.beneath {
            r |= libc::RESOLVE_BENEATH;
        }
        if self.cached {
            r |= libc::RESOLVE_CACHED;
        }
        r
    }
}

fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `openat2(base, path, flags | O_CLOEXEC, mode, resolve)`. On kernels without `openat2`
/// (before 5.6) falls back to `openat`, which cannot refuse magic links or stay beneath a
/// directory: callers check the opened object anyway, so the fallback loses a layer, not the
/// check. A cached resolution has no fallback: it fails (`EAGAIN` when not cached, `EINVAL` or
/// `ENOSYS` on kernels before 5.12) and the caller resolves the ordinary way.
pub fn openat2(
    base: Base<'_>,
    path: &OsStr,
    flags: libc::c_int,
    mode: u32,
    resolve: Resolve,
) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: open_how is a plain C struct of three integers; all-zero is valid (and is what
    // the kernel expects of any field not set below).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = resolve.bits();
    loop {
        // SAFETY: `c` is a valid NUL-terminated string and `how` a fully initialised
        // `open_how` whose size is passed alongside; both outlive the call. The kernel returns a
        // new descriptor or -1 and touches no other memory.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                base.raw(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) if resolve.cached => return Err(e),
            Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
            Some(libc::ENOSYS) if !resolve.cached => {
                let mut flags = flags;
                if resolve.no_symlinks {
                    flags |= libc::O_NOFOLLOW;
                }
                return openat(base, path, flags, mode);
            }
            _ => return Err(e),
        }
    }
}

/// `openat(base, name, flags | O_CLOEXEC, mode)`.
pub fn openat(base: Base<'_>, name: &OsStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    loop {
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call; the mode is
        // passed as the variadic argument openat expects (an unsigned int).
        let fd = unsafe {
            libc::openat(
                base.raw(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstring(name)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the calling thread's effective ids may create and replace entries in the open
/// directory `dir` (`faccessat2(dir, ".", W_OK | X_OK, AT_EACCESS)`): for a thread acting as an
/// account, an early answer to "may the account write here". `Ok(())` also where the kernel
/// cannot answer (`ENOSYS`, before Linux 5.8): the write itself is checked anyway.
pub fn may_write_in(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the raw faccessat2 system call with an open descriptor, a NUL-terminated literal
    // and integer arguments; it only reads the string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) => Ok(()),
        _ => Err(e),
    }
}

/// `renameat(dir, from, dir, to)`: atomically replaces `to` by `from` within one directory.
pub fn rename_within(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let (f, t) = (cstring(from)?, cstring(to)?);
    // SAFETY: both strings are valid, NUL-terminated and outlive the call.
    if unsafe { libc::renameat(dir.as_raw_fd(), f.as_ptr(), dir.as_raw_fd(), t.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `renameat2(dir, from, dir, to, RENAME_NOREPLACE)`: as [`rename_within`], but fails with
/// `EEXIST` instead of replacing an existing `to` — atomically, with no window in between.
pub fn rename_within_noreplace(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let (f, t) = (cstring(from)?, cstring(to)?);
    // SAFETY: both strings are valid, NUL-terminated and outlive the call; the descriptors are
    // the same open directory.
    let r = unsafe {
        libc::renameat2(
            dir.as_raw_fd(),
            f.as_ptr(),
            dir.as_raw_fd(),
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `linkat(dir, from, dir, to, 0)`: a second name for the file `from` (a symlink is linked
/// itself, never followed); fails with `EEXIST` if `to` exists.
pub fn link_within(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let (f, t) = (cstring(from)?, cstring(to)?);
    // SAFETY: both strings are valid, NUL-terminated and outlive the call.
    let r = unsafe { libc::linkat(dir.as_raw_fd(), f.as_ptr(), dir.as_raw_fd(), t.as_ptr(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives the unnamed file `fd` (opened `O_TMPFILE`) the name `name` in `dir`; fails with
/// `EEXIST` if the name exists, never replacing it. `linkat(AT_EMPTY_PATH)` needs
/// `CAP_DAC_READ_SEARCH`; without it, the same link is made through `/proc/self/fd/N`.
pub fn link_into(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let t = cstring(name)?;
    // SAFETY: the empty string and `t` are valid, NUL-terminated and outlive the call.
    let r = unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            t.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOENT)) {
        return Err(e);
    }
    let proc_path = cstring(proc_fd_path(fd).as_os_str())?;
    // SAFETY: both strings are valid, NUL-terminated and outlive the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            dir.as_raw_fd(),
            t.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `unlinkat(dir, name, 0)`: removes a file (not a directory).
pub fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let c = cstring(name)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What `fstatat` reports about one directory entry, without following a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryStat {
    pub dev: u64,
    pub ino: u64,
    /// `st_mode` including the type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
}

impl EntryStat {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `Ok(None)` when the name does not exist.
pub fn stat_entry(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<EntryStat>> {
    stat_entry_c(dir, &cstring(name)?)
}

/// [`stat_entry`] for a name that is already a C string (a directory entry's, say).
pub fn stat_entry_c(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<EntryStat>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is valid and NUL-terminated; `st` points to writable storage of the
    // right type, which fstatat fills completely on success and which is only read then.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: fstatat returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    Ok(Some(EntryStat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
    }))
}

/// `getdents64(dir)` into `buf`: the number of bytes filled (whole records, read with
/// [`Dirents`]), 0 at the end of the directory.
pub fn getdents(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is writable
        // for that length and outlives the call.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// One record of [`getdents`].
#[derive(Clone, Copy, Debug)]
pub struct Dirent<'a> {
    /// `d_type`: `libc::DT_DIR`, `DT_REG`, `DT_LNK`, ... or `DT_UNKNOWN` when the file system
    /// does not say (then `fstatat` must).
    pub kind: u8,
    /// The name with its NUL.
    pub name: &'a CStr,
}

/// The records of one [`getdents`] buffer (`struct linux_dirent64`: `d_ino` u64, `d_off` i64,
/// `d_reclen` u16, `d_type` u8, then the NUL-terminated name). A malformed record ends it.
#[derive(Debug)]
pub struct Dirents<'a> {
    buf: &'a [u8],
}

impl<'a> Dirents<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dirents { buf }
    }
}

impl<'a> Iterator for Dirents<'a> {
    type Item = Dirent<'a>;

    fn next(&mut self) -> Option<Dirent<'a>> {
        const NAME: usize = 19;
        let len = usize::from(u16::from_ne_bytes(self.buf.get(16..18)?.try_into().ok()?));
        let record = self.buf.get(..len).filter(|_| len > NAME)?;
        let kind = record[18];
        let name = CStr::from_bytes_until_nul(&record[NAME..]).ok()?;
        self.buf = &self.buf[len..];
        Some(Dirent { kind, name })
    }
}

/// The path the kernel records for an open descriptor (`readlink /proc/self/fd/N`): absolute,
/// without symlinks, as seen from this process's root.
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    std::fs::read_link(proc_fd_path(fd))
}

/// `/proc/self/fd/N` for `fd`.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A `File` that owns `fd` (for std's metadata, read, write, sync, chmod and chown).
pub fn into_file(fd: OwnedFd) -> File {
    File::from(fd)
}

/// `preadv2(fd, buf, offset, RWF_NOWAIT)`: reads what the page cache holds at `offset`
/// without waiting for a disk; `WouldBlock` when it would have to (or the file system cannot
/// say), a short count when only part of `buf` is cached.
pub fn pread_nowait(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    loop {
        // SAFETY: one iovec describing `buf`, which is valid for writes of its length and
        // outlives the call; the kernel writes at most that many bytes into it.
        let n = unsafe {
            libc::preadv2(
                fd.as_raw_fd(),
                &iov,
                1,
                offset as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS) => {
                Err(io::Error::from(io::ErrorKind::WouldBlock))
            }
            _ => Err(e),
        };
    }
}

/// `fsync(fd)`: flushes a file or, for a directory, its entries.
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fsync takes a descriptor number and touches no memory.
    if unsafe { libc::fsync(fd.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fstatfs(fd).f_type`: the magic number of the file system `fd` is on.
pub fn fs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: statfs is plain data; zeroed is a valid value for fstatfs to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live, exclusively borrowed statfs the kernel fills in; the descriptor
    // is borrowed for the call.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } == 0 {
        #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, narrower elsewhere
        Ok(st.f_type as i64)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `O_NONBLOCK` on an open file description: reads that would wait answer `WouldBlock`
/// instead (for files that honour it: pipes, FIFOs, and the kernel's stream files such as
/// `/proc/kmsg` or tracefs' `trace_pipe`).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and touches no memory.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: F_SETFL takes an int of flags and touches no memory.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout_ms` for `fd` to be readable (or hung up, or in error: the next read
/// says which). `Ok(false)` when the time passed first; an interrupted wait is `Ok(false)`
/// too (the caller looks at its clock and asks again).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live, initialised pollfd and a count of 1; poll writes only its `revents`.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0)
}
