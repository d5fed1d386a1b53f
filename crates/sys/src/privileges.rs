//! Giving up privileges: what `mymcpctl serve` does in the frontend's child before `exec`,
//! the parent-death signal of the quick try's children, and a process's own dumpable flag.

use crate::check;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `cmd`'s child give up every privilege before `exec`
/// ([`drop_privileges_in_child`]).
pub fn drop_privileges_at_exec(
    cmd: &mut Command,
    uid: u32,
    gid: u32,
    switch_user: bool,
    listener: Option<RawFd>,
) {
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, dup2, fcntl, setgroups, setresgid, setresuid, pthread_sigmask); it
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || drop_privileges_in_child(uid, gid, switch_user, listener));
    }
}

/// Makes `cmd`'s child start with a clean signal mask and die with its parent
/// ([`prepare_child`]).
pub fn prepare_child_at_exec(cmd: &mut Command) {
    // SAFETY: as in `drop_privileges_at_exec`: pthread_sigmask and prctl only.
    unsafe {
        cmd.pre_exec(prepare_child);
    }
}

/// Runs in the forked child before `exec` of the frontend: gives up every privilege for good.
///
/// Drops the whole capability bounding set (while still root), clears supplementary groups,
/// switches gid then uid, forbids regaining privileges (`no_new_privs`), asks for SIGTERM if
/// mymcpctl dies, and places the listening socket at fd 3.
///
/// Only async-signal-safe calls are made: this runs between `fork` and `exec`.
pub fn drop_privileges_in_child(
    uid: u32,
    gid: u32,
    switch_user: bool,
    listener: Option<RawFd>,
) -> io::Result<()> {
    match listener {
        // dup2(3, 3) would do nothing and leave CLOEXEC set: clear the flag instead.
        // SAFETY: fcntl F_SETFD on a descriptor number this process owns; no memory arguments.
        Some(3) => check(unsafe { libc::fcntl(3, libc::F_SETFD, 0) })?,
        // SAFETY: dup2 on two valid descriptor numbers; `fd` is owned by the parent's listener,
        // which outlives the fork. The copy at 3 has no CLOEXEC, so exec keeps it.
        Some(fd) => check(unsafe { libc::dup2(fd, 3) })?,
        None => {}
    }
    if switch_user {
        // Capabilities above the last one the kernel knows are ignored with EINVAL; stop there.
        for cap in 0..64 {
            // SAFETY: PR_CAPBSET_DROP takes a capability number and has no memory arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } == -1 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: setgroups with a zero length never dereferences the (null) list.
        check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
        // SAFETY: plain integer arguments.
        check(unsafe { libc::setresgid(gid, gid, gid) })?;
        // SAFETY: plain integer arguments. Going from root to a non-zero uid without
        // SECBIT_KEEP_CAPS clears the permitted, effective and ambient capability sets.
        check(unsafe { libc::setresuid(uid, uid, uid) })?;
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS with constant integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    unblock_all_signals()?;
    parent_death_signal()
}

/// Unblocks every signal. mymcpctl blocks its shutdown signals to wait for them; children
/// inherit the mask through fork and exec, so each child must clear it before exec or it would
/// never see SIGTERM.
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: sigset_t is a plain bit set, initialised by sigemptyset before use.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid, exclusively borrowed sigset_t.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: `empty` is initialised; the old mask is not needed (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Runs in a forked child before exec: a clean signal mask, and SIGTERM when the parent dies.
pub fn prepare_child() -> io::Result<()> {
    unblock_all_signals()?;
    parent_death_signal()
}

/// Asks the kernel to send SIGTERM to this (child) process when mymcpctl exits. Must be
/// called after any uid change, which resets it.
pub fn parent_death_signal() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG with a valid signal number and no memory arguments.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        )
    })
}

/// Makes this process non-dumpable: its `/proc/<pid>/environ` and memory become root's, so
/// processes of the same user (the recorder's probe commands) cannot read secrets from them.
pub fn forbid_same_user_inspection() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE with constant integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
}
