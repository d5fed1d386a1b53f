//! Every `unsafe` block and raw syscall of mymcp-recorder, each with its `SAFETY:` argument.

use std::io;
use std::time::Duration;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sends `sig` to the process group `pgid` (a probe command and everything it started).
pub fn kill_group(pgid: u32, sig: libc::c_int) -> io::Result<()> {
    if pgid == 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill with a negative, non-zero pid (a process group this process created) and a
    // valid signal number; no memory arguments.
    check(unsafe { libc::kill(-(pgid as libc::pid_t), sig) })
}

/// Makes this process non-dumpable: its `/proc/<pid>/environ` and memory become root's, so
/// the probe commands, which run as the same user, cannot read the LLM API key from them.
pub fn forbid_same_user_inspection() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE with constant integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
}

/// The shutdown signals, blocked in this process so that they can be waited for synchronously.
#[derive(Debug)]
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGINT and SIGTERM for this thread (call it before starting any thread, so that
    /// all inherit the mask). Children get an empty mask again (std resets it before exec).
    pub fn block() -> io::Result<Signals> {
        // SAFETY: sigset_t is a plain bit set; sigemptyset initialises it before any use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed sigset_t; the signal numbers are valid.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
        }
        // SAFETY: `set` is initialised; the old mask is not needed (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Signals { set })
    }

    /// Waits up to `timeout` for a shutdown signal; returns it, or `None` on timeout.
    pub fn wait(&self, timeout: Duration) -> Option<libc::c_int> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        // SAFETY: `self.set` is an initialised sigset_t, `ts` a valid timespec, and a null
        // siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (sig > 0).then_some(sig)
    }
}
