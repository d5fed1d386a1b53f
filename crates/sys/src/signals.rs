//! Signals: blocking a set to wait for it synchronously, and sending one to a process or a
//! process group.

use crate::check;
use std::io;
use std::time::Duration;

/// Sends `sig` to process `pid`.
pub fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    if pid == 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill with a positive pid and a signal number; no memory arguments.
    check(unsafe { libc::kill(pid as libc::pid_t, sig) })
}

/// Sends `sig` to the process group `pgid` (a command and everything it started).
pub fn kill_group(pgid: u32, sig: libc::c_int) -> io::Result<()> {
    if pgid == 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill with a negative, non-zero pid (a process group) and a signal number; no
    // memory arguments.
    check(unsafe { libc::kill(-(pgid as libc::pid_t), sig) })
}

/// A set of signals blocked in this process so that they can be waited for synchronously.
#[derive(Debug)]
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks `signals` for this thread; call it before starting any thread, so that all
    /// inherit the mask. Children start with an empty mask again (std resets it before exec;
    /// [`crate::privileges::unblock_all_signals`] where a child is prepared by hand).
    pub fn block(signals: &[libc::c_int]) -> io::Result<Signals> {
        // SAFETY: sigset_t is a plain bit set; sigemptyset initialises it before any use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed sigset_t; sigaddset refuses (without
        // touching memory beyond `set`) a number that is not a signal.
        unsafe {
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
        }
        // SAFETY: `set` is initialised; the old mask is not needed (null).
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Signals { set })
    }

    /// Waits up to `timeout` for one of the blocked signals; returns it, or `None` on timeout.
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
