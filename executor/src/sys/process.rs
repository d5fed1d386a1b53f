//! Process-related syscalls for `spawn` (setsid, signals to process groups, fd hygiene).
//!
//! Everything here is a thin, checked wrapper around one libc call; the policy (when to signal,
//! what to wait for) lives in [`crate::spawn`].

use std::ffi::{CStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;

/// A process or process-group id.
pub type Pid = libc::pid_t;

/// Highest signal number on Linux (`_NSIG - 1`).
const MAX_SIGNAL: libc::c_int = 64;

/// Makes the child that `cmd` spawns the leader of a new session and process group
/// (pgid = its pid), with default signal dispositions, an empty signal mask, and every inherited
/// descriptor from 3 up marked close-on-exec.
///
/// Descriptors are marked rather than closed: std reports exec failures through a close-on-exec
/// pipe that must stay open until `execve`.
pub fn isolate_child(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // functions may be called. It calls setsid, signal (sigaction), sigemptyset,
    // pthread_sigmask, syscall(close_range), getrlimit and fcntl, all async-signal-safe; it
    // allocates nothing (io::Error::last_os_error stores the errno inline), takes no lock and
    // touches no state shared with other threads of the parent.
    unsafe {
        cmd.pre_exec(child_setup);
    }
}

/// The pre-exec step of [`isolate_child`]. Only for the forked child.
fn child_setup() -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions. A freshly forked child is never a
    // process-group leader, so it cannot fail with EPERM here; any error is still reported.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    for signo in 1..=MAX_SIGNAL {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code. Numbers the C library reserves
        // (32, 33) are refused with EINVAL, which is ignored on purpose: they cannot be ignored
        // by the parent either.
        unsafe {
            libc::signal(signo, libc::SIG_DFL);
        }
    }
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; pthread_sigmask only reads it after
    // that, and a null old-set pointer is allowed.
    let rc = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    mark_inherited_fds_cloexec()
}

/// Sets close-on-exec on every descriptor from 3 up. Async-signal-safe.
fn mark_inherited_fds_cloexec() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags; it takes plain
    // integers and touches no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack the flag (EINVAL) or the call (ENOSYS): walk the table instead.
    let mut limit = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let max_fd = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, limit.as_mut_ptr()) } == 0 {
        // SAFETY: getrlimit returned 0, so it initialised `limit`.
        let cur = unsafe { limit.assume_init() }.rlim_cur;
        cur.min(1 << 20) as RawFd
    } else {
        1 << 20
    };
    for fd in 3..max_fd {
        // SAFETY: F_GETFD/F_SETFD on an arbitrary integer only reads or sets the flag of that
        // descriptor if it exists (EBADF otherwise, ignored); no memory is involved.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// A signal that `spawn` sends to a process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSignal {
    Term,
    Kill,
    Int,
    Hup,
}

impl GroupSignal {
    fn number(self) -> libc::c_int {
        match self {
            GroupSignal::Term => libc::SIGTERM,
            GroupSignal::Kill => libc::SIGKILL,
            GroupSignal::Int => libc::SIGINT,
            GroupSignal::Hup => libc::SIGHUP,
        }
    }

    /// The conventional name without `SIG`.
    pub fn name(self) -> &'static str {
        match self {
            GroupSignal::Term => "TERM",
            GroupSignal::Kill => "KILL",
            GroupSignal::Int => "INT",
            GroupSignal::Hup => "HUP",
        }
    }

    /// Parses `TERM`, `SIGTERM`, `term`, … (the signals above only).
    pub fn parse(s: &str) -> Option<GroupSignal> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        [
            GroupSignal::Term,
            GroupSignal::Kill,
            GroupSignal::Int,
            GroupSignal::Hup,
        ]
        .into_iter()
        .find(|g| g.name() == name)
    }
}

/// Sends `signal` to every process in group `pgid`. Returns `Ok(false)` when the group no longer
/// has any member (ESRCH).
///
/// `pgid` must be a real group id (> 1): `kill(0, …)` and `kill(-1, …)` would hit the executor's
/// own group or every process on the host, so those values are refused.
pub fn signal_group(pgid: Pid, signal: GroupSignal) -> io::Result<bool> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    // SAFETY: kill takes plain integers; a negative pid addresses the group `pgid` only, and
    // pgid > 1 was checked above.
    if unsafe { libc::kill(-pgid, signal.number()) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Whether our child `pid` has terminated, **without reaping it**: while the zombie exists its
/// pid (and so its process-group id) cannot be handed to another process.
pub fn child_has_exited(pid: Pid) -> io::Result<bool> {
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes only into `info`, which lives for the whole call; WNOWAIT leaves the
    // child waitable, WNOHANG makes the call return at once.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful waitid the pid field is set (to 0 when nothing changed state
    // under WNOHANG, as the struct was zeroed).
    Ok(unsafe { info.si_pid() } != 0)
}

/// A pidfd: becomes readable when the process terminates (zombie included).
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a non-blocking, close-on-exec pidfd for `pid` (Linux 5.3+).
    pub fn open(pid: Pid) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes plain integers and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }
}

/// Registers `pidfd` with the tokio reactor (read interest). Must run inside a tokio runtime.
pub fn register_pidfd(pidfd: PidFd) -> io::Result<tokio::io::unix::AsyncFd<PidFd>> {
    // SAFETY: `PidFd` owns its descriptor (an `OwnedFd` that is never replaced or exposed
    // mutably), so the descriptor stays open and `as_raw_fd` returns the same number for as long
    // as the `AsyncFd` owns it.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into())
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// The account the executor runs as, from the password database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub uid: u32,
    pub name: OsString,
    pub home: OsString,
}

/// Looks up the effective uid in the password database (`getpwuid_r`, thread-safe).
/// `None` when the uid has no entry.
pub fn current_user() -> Option<UserInfo> {
    // SAFETY: geteuid cannot fail and has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        let mut pwd = MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer refers to live memory of the stated size; getpwuid_r stores the
        // strings of the entry in `buf` and points `pwd`'s fields into it.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                pwd.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: a non-null result means `pwd` was filled in.
        let pwd = unsafe { pwd.assume_init() };
        if pwd.pw_name.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        // SAFETY: pw_name and pw_dir are non-null, NUL-terminated strings inside `buf`, which
        // is still alive while they are copied.
        let (name, home) = unsafe {
            (
                CStr::from_ptr(pwd.pw_name).to_bytes().to_vec(),
                CStr::from_ptr(pwd.pw_dir).to_bytes().to_vec(),
            )
        };
        return Some(UserInfo {
            uid,
            name: OsString::from_vec(name),
            home: OsString::from_vec(home),
        });
    }
}

/// Checks that the effective user may search (`chdir` into) directory `path`
/// (`faccessat` with `AT_EACCESS`).
pub fn check_search_access(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call; faccessat only
    // reads it.
    let rc =
        unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// Duplicates `fd` *without* close-on-exec, as a descriptor leaked by careless code would be.
/// Tests use it to prove that children do not inherit such descriptors.
#[cfg(test)]
pub fn dup_inheritable(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: dup takes a descriptor number that `fd` keeps open for the duration of the call.
    let new = unsafe { libc::dup(fd.as_raw_fd()) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
