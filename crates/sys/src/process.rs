//! Process-related syscalls for `spawn` (starting isolated children, signals to process
//! groups, exit checks and reaping).
//!
//! Everything here is a thin, checked wrapper around one libc call; the policy (when to signal,
//! what to wait for) lives in [`crate::spawn`].

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;

/// A process or process-group id.
pub type Pid = libc::pid_t;

/// A child started by [`spawn_isolated`]: its pid and the read ends of its output pipes.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Starts `program` with `argv` and exactly the environment `envp` (`NAME=value` strings), in
/// directory `dir`, as the leader of a new session and process group (pgid = its pid), with
/// stdin from `/dev/null`, stdout and stderr on fresh pipes, every signal at its default
/// disposition, an empty signal mask, and no descriptor from 3 up.
///
/// This is `posix_spawn` (glibc: a `CLONE_VM | CLONE_VFORK` child that runs only the listed
/// steps before `execve`), not `fork`: the executor's page tables are neither copied nor
/// write-protected, which made `fork` most of the cost of starting a short command.
/// An `execve` failure comes back as this call's error.
pub fn spawn_isolated(
    program: &CStr,
    argv: &[CString],
    envp: &[CString],
    dir: &CStr,
) -> io::Result<Spawned> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut actions = FileActions::new()?;
    actions.open(0, c"/dev/null", libc::O_RDONLY)?;
    actions.dup2(&out_w, 1)?;
    actions.dup2(&err_w, 2)?;
    actions.chdir(dir)?;
    actions.close_from(3)?;
    let attr = SpawnAttr::isolated()?;

    let argv_ptrs: Vec<*mut libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let envp_ptrs: Vec<*mut libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let mut pid: libc::pid_t = 0;
    // SAFETY: `program`, every `argv`/`envp` string and both pointer arrays (null-terminated)
    // outlive the call, which only reads them; `actions` and `attr` were initialised by their
    // constructors and stay alive until after it; `pid` is a valid place for the child's pid.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attr.0,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    };
    // The write ends belong to the child now; ours must close, or the pipes never reach EOF.
    drop((out_w, err_w));
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: err_r,
    })
}

/// The ids a command started by [`spawn_isolated_as`] runs with.
#[derive(Clone, Copy, Debug)]
pub struct Ids<'a> {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (as `initgroups` would set them).
    pub groups: &'a [u32],
}

/// [`spawn_isolated`] for another account: the child is started with `ids` — real, effective,
/// saved and file-system uids and gids, and `ids.groups` — set between its start and its
/// `execve`, so that it changes directory to `dir` and executes `program` as the account, with
/// no capability left. The calling thread's credentials never change: no process of the
/// account can signal or trace a thread of the caller at any point, as it could one whose real
/// uid were the account's (`kill_ok_by_cred`).
///
/// Like glibc's `posix_spawn`, a `CLONE_VM | CLONE_VFORK` child on a stack of its own that makes
/// only raw system calls (no allocation, no lock, no glibc `set*id` wrapper, which would
/// signal the caller's threads) before `execve`; the caller's thread is suspended until the
/// child has executed or failed, with every signal blocked so that no handler runs in the
/// child. A failed step comes back as this call's error (the child is reaped).
pub fn spawn_isolated_as(
    program: &CStr,
    argv: &[CString],
    envp: &[CString],
    dir: &CStr,
    ids: Ids<'_>,
) -> io::Result<Spawned> {
    spawn_confined(program, argv, envp, dir, Some(ids), Placement::default())
}

/// The cgroups a command's first process starts in (see [`spawn_confined`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Placement<'a> {
    /// A cgroup v2 directory and its `cgroup.procs`: the child is created in it
    /// (`clone3` with `CLONE_INTO_CGROUP`, Linux 5.7, x86-64), else writes itself into it.
    pub v2: Option<(BorrowedFd<'a>, BorrowedFd<'a>)>,
    /// `cgroup.procs` of further cgroups (cgroup v1 hierarchies), which the child writes
    /// itself into.
    pub procs: &'a [BorrowedFd<'a>],
    /// The command's own view of the file system and network; nothing changes when empty.
    pub view: View<'a>,
}

/// A command's own view of the file system and network, set up by the child of
/// [`spawn_confined`] (while still root, after entering its cgroups, before its ids change) in
/// a mount namespace of its own whose mounts are slaves of the host's (host mounts appear
/// in it, nothing done in it reaches the host):
///
/// 1. `writable` trees are cloned (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`) as they are;
/// 2. with `read_only`, every mount is made read-only (`mount_setattr(AT_RECURSIVE,
///    MOUNT_ATTR_RDONLY)` on `/`), and the clones are moved back onto their trees
///    (`move_mount`), so those alone stay as writable as they were;
/// 3. every `protect` path gets a read-only bind mount of itself on top;
/// 4. every `hide_dirs` directory gets an empty, read-only tmpfs of mode 000 over it, every
///    `hide_files` file `/dev/null`, read-only;
/// 5. with `no_network`, a network namespace of its own whose loopback is brought up.
///
/// `writable` are `O_PATH` descriptors the caller opened (the objects, not names that could
/// change in between); the others are absolute paths resolved in the new view after step 2,
/// so a protection inside a writable tree lands on top of it. Linux 5.12+ (`mount_setattr`).
#[derive(Clone, Copy, Debug, Default)]
pub struct View<'a> {
    pub writable: &'a [BorrowedFd<'a>],
    /// The paths `writable` were opened at, one each (opened again in the new view, without
    /// following symlinks, and checked to be the same objects).
    pub writable_paths: &'a [CString],
    pub read_only: bool,
    pub protect: &'a [CString],
    pub hide_dirs: &'a [CString],
    pub hide_files: &'a [CString],
    pub no_network: bool,
}

impl View<'_> {
    /// Whether the command runs in the host's namespaces (nothing to set up).
    pub fn is_empty(&self) -> bool {
        !self.read_only
            && !self.no_network
            && self.protect.is_empty()
            && self.hide_dirs.is_empty()
            && self.hide_files.is_empty()
    }
}

/// `struct mount_attr` of `mount_setattr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_int = 0x8000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// The one child every command starts from: [`spawn_isolated`]'s isolation, run as `ids` when
/// given (see [`spawn_isolated_as`]; `None` keeps the caller's credentials), and placed in the
/// cgroups of `placement` **before** anything else happens in the child: created inside the
/// v2 cgroup by `clone3(CLONE_INTO_CGROUP)` where the kernel can, and writing `0` (itself) into
/// the other `cgroup.procs` files (and the v2 one when `clone3` could not be used) as its first
/// step, so the command and everything it ever starts are inside them from its first
/// instruction, with no window in which a process could leave unnoticed. The writes are done
/// with root's rights, before the ids change. A failed placement fails the call (the child is
/// reaped), like a failed `execve`.
///
/// `CLONE_INTO_CGROUP` is not only shorter: moving a running task takes the kernel's
/// cgroup-wide thread-group lock for writing (an RCU grace period when the lock was idle,
/// about 0.25 ms measured here), creating it in place does not.
pub fn spawn_confined(
    program: &CStr,
    argv: &[CString],
    envp: &[CString],
    dir: &CStr,
    ids: Option<Ids<'_>>,
    placement: Placement<'_>,
) -> io::Result<Spawned> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // The pipes are the account's, as a shell of its own would make them: a command that
    // opens its output again by name (`echo x > /dev/stderr`, through /proc/self/fd) may.
    if let Some(ids) = &ids {
        for end in [&out_w, &err_w] {
            // SAFETY: fchown of a pipe end this function owns, integer arguments.
            if unsafe { libc::fchown(end.as_raw_fd(), ids.uid, ids.gid) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    let devnull = open_devnull()?;
    let stdio = [devnull.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
    let pid = spawn_child(program, argv, envp, dir, ids, placement, stdio, false);
    drop((out_w, err_w, devnull));
    Ok(Spawned {
        pid: pid?,
        stdout: out_r,
        stderr: err_r,
    })
}

/// [`spawn_confined`] on a terminal: the child's stdin, stdout and stderr are `tty` (the slave
/// side of a pseudo-terminal, see [`crate::pty`]), which becomes the controlling terminal of
/// its new session (`TIOCSCTTY` right after `setsid`). With `ids`, the terminal is given to
/// the account first, as `login` would. Returns the child's pid (and process group id).
pub fn spawn_confined_tty(
    program: &CStr,
    argv: &[CString],
    envp: &[CString],
    dir: &CStr,
    ids: Option<Ids<'_>>,
    placement: Placement<'_>,
    tty: BorrowedFd<'_>,
) -> io::Result<Pid> {
    if let Some(ids) = &ids {
        // SAFETY: fchown of a descriptor the caller keeps open for the call, integer
        // arguments; gid -1 keeps the terminal's group (`tty`, set by grantpt).
        if unsafe { libc::fchown(tty.as_raw_fd(), ids.uid, u32::MAX) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let fd = tty.as_raw_fd();
    spawn_child(program, argv, envp, dir, ids, placement, [fd, fd, fd], true)
}

/// The clone of [`spawn_confined`] and [`spawn_confined_tty`]: `stdio` become 0, 1 and 2;
/// `ctty` makes 0 the controlling terminal.
#[allow(clippy::too_many_arguments)]
fn spawn_child(
    program: &CStr,
    argv: &[CString],
    envp: &[CString],
    dir: &CStr,
    ids: Option<Ids<'_>>,
    placement: Placement<'_>,
    stdio: [RawFd; 3],
    ctty: bool,
) -> io::Result<Pid> {
    // Every cgroup.procs the child may write: the v2 one first (skipped after CLONE_INTO_CGROUP).
    let cgroups: Vec<RawFd> = placement
        .v2
        .map(|(_, procs)| procs.as_raw_fd())
        .into_iter()
        .chain(placement.procs.iter().map(|fd| fd.as_raw_fd()))
        .collect();
    let (change_ids, ids) = match ids {
        Some(ids) => (true, ids),
        None => (
            false,
            Ids {
                uid: 0,
                gid: 0,
                groups: &[],
            },
        ),
    };
    let view = placement.view;
    let writable: Vec<RawFd> = view.writable.iter().map(|fd| fd.as_raw_fd()).collect();
    // Where the child keeps its clones of the writable trees between steps 1 and 2.
    let mut clones: Vec<RawFd> = vec![-1; writable.len()];
    let c_ptrs = |list: &[CString]| -> Vec<*const libc::c_char> {
        list.iter().map(|p| p.as_ptr()).collect()
    };
    let writable_paths = c_ptrs(view.writable_paths);
    if writable_paths.len() != writable.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let (protect, hide_dirs, hide_files) = (
        c_ptrs(view.protect),
        c_ptrs(view.hide_dirs),
        c_ptrs(view.hide_files),
    );
    // SAFETY: an all-zero `ifreq` is a valid value (a C struct of integers and a union).
    let mut lo: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in lo.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *b as libc::c_char;
    }
    lo.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    let argv_ptrs: Vec<*mut libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let envp_ptrs: Vec<*mut libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let mut setup = ChildSetup {
        program: program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        dir: dir.as_ptr(),
        stdio,
        ctty,
        change_ids,
        uid: ids.uid,
        gid: ids.gid,
        groups: ids.groups.as_ptr(),
        ngroups: ids.groups.len(),
        cgroups: cgroups.as_ptr(),
        ncgroups: cgroups.len(),
        view: !view.is_empty(),
        read_only: view.read_only,
        no_network: view.no_network,
        writable: writable.as_ptr(),
        writable_paths: writable_paths.as_ptr(),
        clones: clones.as_mut_ptr(),
        nwritable: writable.len(),
        protect: protect.as_ptr(),
        nprotect: protect.len(),
        hide_dirs: hide_dirs.as_ptr(),
        nhide_dirs: hide_dirs.len(),
        hide_files: hide_files.as_ptr(),
        nhide_files: hide_files.len(),
        lo,
        error: std::sync::atomic::AtomicI32::new(0),
    };
    let stack = ChildStack::new()?;
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: raw rt_sigprocmask of this thread with pointers to two live 8-byte sets (the
    // kernel's sigset size on Linux), which it reads and writes.
    let blocked = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            &mut old as *mut u64,
            8usize,
        )
    };
    if blocked == -1 {
        return Err(io::Error::last_os_error());
    }
    let mut pid = -1;
    let mut clone_error = io::Error::from_raw_os_error(libc::ENOSYS);
    if let Some((cgroup, _)) = placement.v2 {
        // Created in the v2 cgroup: the child writes only the others.
        // SAFETY: one past the first element of `cgroups` (which has the v2 entry first), at
        // most its end; `ncgroups` shrinks to match.
        setup.cgroups = unsafe { cgroups.as_ptr().add(1) };
        setup.ncgroups = cgroups.len() - 1;
        match clone3_into(&setup, &stack, cgroup.as_raw_fd()) {
            Ok(p) => pid = p,
            Err(e) => {
                clone_error = e;
                setup.cgroups = cgroups.as_ptr();
                setup.ncgroups = cgroups.len();
            }
        }
    }
    if pid == -1
        && !matches!(
            clone_error.raw_os_error(),
            Some(libc::EAGAIN | libc::ENOMEM)
        )
    {
        // SAFETY: `child` only reads `setup` (and stores into its atomic) and makes raw system
        // calls; `setup`, every string and pointer array it points to, the descriptors and
        // the stack outlive the child's use of them, because CLONE_VFORK suspends this thread
        // until the child has executed (its memory is then no longer ours) or exited. The
        // stack's top is 16-byte aligned and the stack is not otherwise used.
        pid = unsafe {
            libc::clone(
                child,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&setup as *const ChildSetup).cast_mut().cast(),
            )
        };
        clone_error = io::Error::last_os_error();
    }
    // SAFETY: as above; restores the mask saved there.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &old as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
    if pid == -1 {
        return Err(clone_error);
    }
    let failed = setup.error.load(std::sync::atomic::Ordering::Acquire);
    if failed != 0 {
        // The child has exited (the vfork is over): reap it.
        let mut status = 0;
        // SAFETY: waitpid of our own child, writing into `status`.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(io::Error::from_raw_os_error(failed));
    }
    Ok(pid)
}

/// What the child of [`spawn_confined`] needs, prepared by the parent (the child allocates
/// nothing).
struct ChildSetup {
    program: *const libc::c_char,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
    dir: *const libc::c_char,
    /// Descriptors that become 0, 1 and 2.
    stdio: [RawFd; 3],
    /// Make 0 (a terminal) the controlling terminal of the new session.
    ctty: bool,
    /// Whether to set the ids below (else the child keeps the caller's).
    change_ids: bool,
    uid: u32,
    gid: u32,
    groups: *const u32,
    ngroups: usize,
    /// Open `cgroup.procs` files the child writes `0` into, first of all.
    cgroups: *const RawFd,
    ncgroups: usize,
    /// Whether to set up a [`View`] (its fields below).
    view: bool,
    read_only: bool,
    no_network: bool,
    writable: *const RawFd,
    /// Their paths, opened again in the new view.
    writable_paths: *const *const libc::c_char,
    /// `nwritable` slots for the clones of the writable trees.
    clones: *mut RawFd,
    nwritable: usize,
    protect: *const *const libc::c_char,
    nprotect: usize,
    hide_dirs: *const *const libc::c_char,
    nhide_dirs: usize,
    hide_files: *const *const libc::c_char,
    nhide_files: usize,
    /// `lo` up, for `SIOCSIFFLAGS`.
    lo: libc::ifreq,
    /// The errno of the step that failed; 0 while none has.
    error: std::sync::atomic::AtomicI32,
}

/// The child of [`spawn_confined`]: returns (and so exits) only if a step failed.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildSetup`, alive and unchanged while the parent is
    // suspended by CLONE_VFORK.
    let s = unsafe { &*(arg as *const ChildSetup) };
    let fail = |rc: libc::c_long| -> Option<libc::c_int> {
        if rc != -1 {
            return None;
        }
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL);
        s.error
            .store(errno.max(1), std::sync::atomic::Ordering::Release);
        Some(127)
    };
    // SAFETY: every call below is a system call (or glibc's plain, lock-free wrapper of one:
    // write, setsid, dup2, ioctl(TIOCSCTTY), prctl, chdir, close, execve) on integers, on the
    // child's own copy of the descriptor table and signal handlers, or on NUL-terminated
    // strings and null-terminated arrays of them that the parent keeps alive (see
    // `spawn_confined`); `cgroups` points to `ncgroups` descriptors in the parent's live
    // vector, and the byte written is a literal. None allocates or takes a lock, and the
    // set*id calls are the raw ones, which change this child only.
    unsafe {
        // Into the call's cgroups before anything else, while still root: from here on every
        // process this child starts is born inside them.
        for i in 0..s.ncgroups {
            let fd = *s.cgroups.add(i);
            let zero = b"0";
            if let Some(rc) = fail(libc::write(fd, zero.as_ptr().cast(), 1) as libc::c_long) {
                return rc;
            }
        }
        // Every signal at its default disposition (the parent's handlers and ignored signals
        // are copies here), glibc's internal ones included, hence the raw call: the kernel's
        // `struct sigaction` all zero is SIG_DFL without flags or mask in every layout.
        // SIGKILL and SIGSTOP refuse, which is fine.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
        if let Some(rc) = fail(libc::setsid() as libc::c_long) {
            return rc;
        }
        for (to, &from) in s.stdio.iter().enumerate() {
            if let Some(rc) = fail(libc::dup2(from, to as libc::c_int) as libc::c_long) {
                return rc;
            }
        }
        // The session leader takes its terminal (a pty slave nobody else has as theirs).
        if s.ctty {
            if let Some(rc) = fail(libc::ioctl(0, libc::TIOCSCTTY, 0) as libc::c_long) {
                return rc;
            }
        }
        // The command's own view, while still root (see `View`).
        if s.view && set_up_view(s).is_err() {
            return fail(-1).unwrap_or(127);
        }
        if s.change_ids {
            // One after the other: a step is made only once the one before it succeeded.
            if let Some(rc) = fail(libc::syscall(libc::SYS_setgroups, s.ngroups, s.groups)) {
                return rc;
            }
            if let Some(rc) = fail(libc::syscall(libc::SYS_setresgid, s.gid, s.gid, s.gid)) {
                return rc;
            }
            if let Some(rc) = fail(libc::syscall(libc::SYS_setresuid, s.uid, s.uid, s.uid)) {
                return rc;
            }
            // Now all the account's, this child shares the caller's memory until it executes:
            // no process of the account may trace it. The kernel made it non-dumpable with the
            // uid change unless fs.suid_dumpable says otherwise; say it again whatever that is.
            if let Some(rc) = fail(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) as libc::c_long) {
                return rc;
            }
        }
        // As the account: the kernel checks its search permission on the way.
        if let Some(rc) = fail(libc::chdir(s.dir) as libc::c_long) {
            return rc;
        }
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == -1 {
            // Before Linux 5.9: one by one.
            for fd in 3..65_536 {
                libc::close(fd);
            }
        }
        let none: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
        libc::execve(s.program, s.argv.cast(), s.envp.cast());
        fail(-1).unwrap_or(127)
    }
}

/// The steps of [`View`] in the child of [`spawn_confined`]: `Err` (errno set) at the first
/// that fails.
///
/// # Safety
///
/// Only in that child, with `s` as the parent prepared it (see `spawn_confined`).
unsafe fn set_up_view(s: &ChildSetup) -> Result<(), ()> {
    let check = |rc: libc::c_long| if rc == -1 { Err(()) } else { Ok(()) };
    let ro_set = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let size = std::mem::size_of::<MountAttr>();
    // SAFETY: raw system calls on integers, on the child's own namespaces
    // and descriptor table, on NUL-terminated strings (literals, or the parent's, alive while
    // it is suspended), on `ro_set` and `s.lo` (alive for the call), and stores into the
    // parent's `clones` vector of `nwritable` slots, which nothing else touches meanwhile.
    // Nothing allocates or takes a lock.
    unsafe {
        // Clones of the writable trees as they are, taken in the host's namespace (a mount of
        // another namespace cannot be cloned from inside a new one).
        if s.read_only {
            for i in 0..s.nwritable {
                let tree = libc::syscall(
                    libc::SYS_open_tree,
                    *s.writable.add(i),
                    c"".as_ptr(),
                    OPEN_TREE_CLONE
                        | libc::O_CLOEXEC as libc::c_uint
                        | AT_RECURSIVE as libc::c_uint
                        | libc::AT_EMPTY_PATH as libc::c_uint,
                );
                check(tree)?;
                *s.clones.add(i) = tree as RawFd;
            }
        }
        let flags = libc::CLONE_NEWNS | if s.no_network { libc::CLONE_NEWNET } else { 0 };
        check(libc::unshare(flags) as libc::c_long)?;
        // Nothing done here may reach the host's mounts; the host's still reach this view.
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) as libc::c_long)?;
        if s.read_only {
            check(libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                AT_RECURSIVE as libc::c_uint,
                &ro_set as *const MountAttr,
                size,
            ))?;
            for i in 0..s.nwritable {
                // The place in this view, through real directories only, and the very object
                // the caller opened (else a rename in between would put the tree elsewhere).
                let mut how: libc::open_how = std::mem::zeroed();
                how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
                how.resolve = libc::RESOLVE_NO_SYMLINKS;
                let target = libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    *s.writable_paths.add(i),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                );
                check(target)?;
                let target = target as RawFd;
                let mut a: libc::stat = std::mem::zeroed();
                let mut b: libc::stat = std::mem::zeroed();
                check(libc::fstat(target, &mut a) as libc::c_long)?;
                check(libc::fstat(*s.writable.add(i), &mut b) as libc::c_long)?;
                if a.st_dev != b.st_dev || a.st_ino != b.st_ino {
                    *libc::__errno_location() = libc::ESTALE;
                    return Err(());
                }
                check(libc::syscall(
                    libc::SYS_move_mount,
                    *s.clones.add(i),
                    c"".as_ptr(),
                    target,
                    c"".as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                ))?;
                libc::close(target);
            }
        }
        for i in 0..s.nprotect {
            let p = *s.protect.add(i);
            check(libc::mount(
                p,
                p,
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) as libc::c_long)?;
            check(libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                p,
                AT_RECURSIVE as libc::c_uint,
                &ro_set as *const MountAttr,
                size,
            ))?;
        }
        for i in 0..s.nhide_dirs {
            check(libc::mount(
                c"mymcp-hidden".as_ptr(),
                *s.hide_dirs.add(i),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=000,size=4k".as_ptr().cast(),
            ) as libc::c_long)?;
        }
        for i in 0..s.nhide_files {
            let p = *s.hide_files.add(i);
            check(libc::mount(
                c"/dev/null".as_ptr(),
                p,
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) as libc::c_long)?;
            check(libc::mount(
                std::ptr::null(),
                p,
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            ) as libc::c_long)?;
        }
        if s.no_network {
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            check(sock as libc::c_long)?;
            let up = libc::ioctl(sock, libc::SIOCSIFFLAGS, &s.lo as *const libc::ifreq);
            libc::close(sock);
            check(up as libc::c_long)?;
        }
    }
    Ok(())
}

/// `struct clone_args` of `clone3` (the version with `cgroup`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP)` of [`child`] on `stack`, created in the
/// cgroup (v2 directory) `cgroup`. The child's pid, or the error (ENOSYS and the like where
/// the kernel or a seccomp filter does not offer it; then nothing was started).
#[cfg(target_arch = "x86_64")]
fn clone3_into(setup: &ChildSetup, stack: &ChildStack, cgroup: RawFd) -> io::Result<Pid> {
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let (low, size) = stack.usable();
    let mut args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: low as u64,
        stack_size: size as u64,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    let f: extern "C" fn(*mut libc::c_void) -> libc::c_int = child;
    let arg = (setup as *const ChildSetup)
        .cast_mut()
        .cast::<libc::c_void>();
    let ret: i64;
    // SAFETY: the raw clone3 system call with a valid, live `clone_args` of the size given.
    // In the parent it returns the pid or -errno and clobbers only rax, rcx and r11 (declared).
    // The child starts on its own stack (`stack`, mapped, 16-byte aligned top) with the
    // parent's registers, calls `child(setup)` as the C ABI wants (the call pushes the return
    // address, so `child` sees the usual alignment) and, should `child` return (a failed step),
    // exits with its value; it never comes back into this function. `setup`, the strings it
    // points to, the descriptors and the stack outlive the child's use of them because
    // CLONE_VFORK suspends this thread until the child has executed or exited; the caller has
    // blocked every signal, so no handler runs on the child's stack.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") &mut args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") f,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error((-ret) as i32));
    }
    Ok(ret as Pid)
}

/// Elsewhere the child writes itself into the v2 cgroup too.
#[cfg(not(target_arch = "x86_64"))]
fn clone3_into(_: &ChildSetup, _: &ChildStack, _: RawFd) -> io::Result<Pid> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// The stack of a [`spawn_isolated_as`] child: mapped for one spawn, with a guard page below.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// The child makes a handful of system calls; a debug build's frames are far below this.
    const SIZE: usize = 128 * 1024;
    const GUARD: usize = 4096;

    fn new() -> io::Result<ChildStack> {
        let len = Self::SIZE + Self::GUARD;
        // SAFETY: an anonymous private mapping at an address of the kernel's choice.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping just made: a fault instead of an overflow
        // into other memory.
        if unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The lowest usable address (above the guard page) and the usable size.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn usable(&self) -> (*mut libc::c_void, usize) {
        // SAFETY: GUARD bytes into the mapping, which is longer.
        (
            unsafe { self.base.cast::<u8>().add(Self::GUARD).cast() },
            Self::SIZE,
        )
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is page-aligned and so 16-aligned.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the child no longer uses it (it
        // has executed or exited before the parent goes on).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// `/dev/null` for reading, close-on-exec, above the standard descriptors.
fn open_devnull() -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated literal path and integer flags.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor and nothing else owns it.
    above_stdio(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec pipe whose ends are never 0, 1 or 2 (so `dup2` onto those cannot clash,
/// even if the executor was started with some of them closed).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor `fd` keeps open onto the lowest free
    // number >= 3 and touches no memory.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        // SAFETY: an all-zero value is only storage here; init fills it in before any use.
        let mut actions: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        // SAFETY: init takes a pointer to storage for the object, which lives in `actions`.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut actions) })?;
        Ok(FileActions(actions))
    }

    fn open(&mut self, fd: RawFd, path: &'static CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: the object was initialised; glibc copies `path` into it.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
        })
    }

    fn dup2(&mut self, from: &OwnedFd, to: RawFd) -> io::Result<()> {
        // SAFETY: the object was initialised; the action refers to descriptor numbers only,
        // and `from` stays open until posix_spawn has run.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from.as_raw_fd(), to) })
    }

    fn chdir(&mut self, dir: &CStr) -> io::Result<()> {
        // SAFETY: the object was initialised; glibc copies `dir` into it (glibc 2.29+).
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }

    fn close_from(&mut self, from: RawFd) -> io::Result<()> {
        // SAFETY: the object was initialised; the action holds a number only (glibc 2.34+).
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, from) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: the object was initialised by `new` and is destroyed exactly once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`, destroyed on drop.
struct SpawnAttr(libc::posix_spawnattr_t);

impl SpawnAttr {
    /// New session, all signals at their defaults, empty mask.
    fn isolated() -> io::Result<SpawnAttr> {
        // SAFETY: an all-zero value is only storage here; init fills it in before any use.
        let mut raw: libc::posix_spawnattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: init takes a pointer to storage for the object, which lives in `raw`.
        check(unsafe { libc::posix_spawnattr_init(&mut raw) })?;
        let mut attr = SpawnAttr(raw);
        let mut all = MaybeUninit::<libc::sigset_t>::uninit();
        let mut none = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset/sigemptyset initialise the sets they are given.
        unsafe {
            libc::sigfillset(all.as_mut_ptr());
            libc::sigemptyset(none.as_mut_ptr());
        }
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short;
        // SAFETY: the attribute object was initialised; both sets were initialised above and
        // are copied into it.
        unsafe {
            check(libc::posix_spawnattr_setflags(&mut attr.0, flags))?;
            check(libc::posix_spawnattr_setsigdefault(
                &mut attr.0,
                all.as_ptr(),
            ))?;
            check(libc::posix_spawnattr_setsigmask(&mut attr.0, none.as_ptr()))?;
        }
        Ok(attr)
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: the object was initialised by `isolated` and is destroyed exactly once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// Reaps our terminated child `pid` if it has exited; `Ok(None)` while it runs.
pub fn try_reap(pid: Pid) -> io::Result<Option<std::process::ExitStatus>> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes the status into `status`, which lives for the whole call.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match rc {
        0 => Ok(None),
        r if r == pid => {
            use std::os::unix::process::ExitStatusExt;
            Ok(Some(std::process::ExitStatus::from_raw(status)))
        }
        _ => Err(io::Error::last_os_error()),
    }
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

/// Duplicates `fd` *without* close-on-exec, as a descriptor leaked by careless code would be.
/// Tests use it to prove that children do not inherit such descriptors.
pub fn dup_inheritable(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: dup takes a descriptor number that `fd` keeps open for the duration of the call.
    let new = unsafe { libc::dup(fd.as_raw_fd()) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Executes this program's file again, with the same arguments and the current environment:
/// same pid, same descriptors (those not close-on-exec). By the path `/proc/self/exe` links
/// to, not by that link, which would rename the process `exe`. Returns only if that failed,
/// with the error.
pub fn exec_self() -> io::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStringExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let path = CString::new(exe.into_os_string().into_vec());
    let args: Result<Vec<CString>, _> = std::env::args_os()
        .map(|a| CString::new(a.into_vec()))
        .collect();
    let (Ok(path), Ok(args)) = (path, args) else {
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the path or arguments",
        );
    };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: the path and every argument are NUL-terminated strings that outlive the call,
    // and `argv` ends with a null pointer; execv uses the process's `environ` as it is. It
    // returns only on failure, and then has changed nothing.
    unsafe {
        libc::execv(path.as_ptr(), argv.as_ptr());
    }
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;

    /// Runs `sh -c script` as `ids` in `dir`; its stdout and exit status.
    fn run_as(script: &str, dir: &CStr, ids: Ids<'_>) -> io::Result<(String, i32)> {
        let argv = [c"sh".into(), c"-c".into(), CString::new(script).unwrap()];
        let child =
            spawn_isolated_as(c"/bin/sh", &argv, &[c"PATH=/bin:/usr/bin".into()], dir, ids)?;
        let mut out = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .unwrap();
        let mut status = 0;
        // SAFETY: waitpid of the child just spawned, into `status`.
        let reaped = unsafe { libc::waitpid(child.pid, &mut status, 0) };
        assert_eq!(reaped, child.pid);
        Ok((out, libc::WEXITSTATUS(status)))
    }

    fn nobody() -> Option<crate::Account> {
        if crate::euid() != 0 {
            eprintln!("skipped: needs root");
            return None;
        }
        crate::user_by_name("nobody").unwrap()
    }

    /// The child is the account in all four uids and gids, with its groups and no capability
    /// at all, in a session of its own, with no descriptor above 2 and no signal ignored.
    #[test]
    fn a_command_spawned_as_an_account_is_that_account_with_no_capability() {
        let Some(nobody) = nobody() else { return };
        let (u, g) = (nobody.uid, nobody.gid);
        let groups = [g, 4242];
        let ids = Ids {
            uid: u,
            gid: g,
            groups: &groups,
        };
        let before = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let (out, code) = run_as(
            "cat /proc/self/status; ls /proc/$$/fd | tr '\\n' ' '; echo; pwd; ps -o sid= -p $$ 2>/dev/null; echo pid $$; echo again > /dev/stdout",
            c"/tmp",
            ids,
        )
        .unwrap();
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            crate::testing::status_field(&out, "Uid:"),
            format!("{u} {u} {u} {u}"),
            "{out}"
        );
        assert_eq!(
            crate::testing::status_field(&out, "Gid:"),
            format!("{g} {g} {g} {g}"),
            "{out}"
        );
        let mut want = [g, 4242];
        want.sort();
        assert_eq!(
            crate::testing::status_field(&out, "Groups:"),
            format!("{} {}", want[0], want[1]),
            "{out}"
        );
        for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
            assert_eq!(
                crate::testing::status_field(&out, cap),
                "0000000000000000",
                "{cap} in {out}"
            );
        }
        assert_eq!(
            crate::testing::status_field(&out, "SigIgn:"),
            "0000000000000000",
            "{out}"
        );
        assert_eq!(
            crate::testing::status_field(&out, "SigBlk:"),
            "0000000000000000",
            "{out}"
        );
        assert!(out.lines().any(|l| l.trim() == "0 1 2"), "{out}");
        assert!(out.lines().any(|l| l == "/tmp"), "{out}");
        assert!(out.lines().any(|l| l == "again"), "{out}");
        // The spawning thread's credentials are what they were.
        let after = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert_eq!(
            crate::testing::status_field(&before, "Uid:"),
            crate::testing::status_field(&after, "Uid:")
        );
        assert_eq!(
            crate::testing::status_field(&before, "Groups:"),
            crate::testing::status_field(&after, "Groups:")
        );
        assert_eq!(
            crate::testing::status_field(&before, "CapEff:"),
            crate::testing::status_field(&after, "CapEff:")
        );
    }

    /// A directory the account may not enter, or a program that is not there, fails the call
    /// with the child's errno, and leaves no zombie.
    #[test]
    fn failures_of_the_child_come_back_as_errors() {
        let Some(nobody) = nobody() else { return };
        let ids = Ids {
            uid: nobody.uid,
            gid: nobody.gid,
            groups: &[],
        };
        let dir = tempfile::tempdir().unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let closed = CString::new(closed.to_str().unwrap()).unwrap();
        let e = run_as("true", &closed, ids).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
        let argv = [c"x".into()];
        let e = spawn_isolated_as(c"/no/such/program", &argv, &[], c"/", ids).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        // SAFETY: waitpid for any child without waiting: none may be left to reap.
        let rc = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        assert!(rc <= 0, "a child was left to reap: {rc}");
    }

    /// The child is in the given cgroup before it executes anything: the command's own first
    /// look at `/proc/self/cgroup` already shows it there. Without ids it stays root.
    #[test]
    fn a_confined_command_starts_inside_its_cgroup() {
        if crate::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(mount) = mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(str::to_owned))?
        }) else {
            eprintln!("skipped: cgroup v2 is not mounted");
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_owned();
        let rel = format!(
            "{}/mymcp-sys-test-{}",
            own.trim_end_matches('/'),
            std::process::id()
        );
        let dir = std::path::PathBuf::from(format!("{mount}{rel}"));
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("skipped: cannot make a cgroup: {e}");
            return;
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .unwrap();
        let handle = std::fs::File::open(&dir).unwrap();
        let run = |placement: Placement<'_>| {
            let argv = [
                c"sh".into(),
                c"-c".into(),
                c"cat /proc/self/cgroup; id -u".into(),
            ];
            let env = [c"PATH=/bin:/usr/bin".into()];
            let child = spawn_confined(c"/bin/sh", &argv, &env, c"/", None, placement).unwrap();
            let mut out = String::new();
            std::fs::File::from(child.stdout)
                .read_to_string(&mut out)
                .unwrap();
            let mut status = 0;
            // SAFETY: waitpid of the child just spawned, into `status`.
            let reaped = unsafe { libc::waitpid(child.pid, &mut status, 0) };
            assert_eq!(reaped, child.pid);
            out
        };
        // Created there (clone3 CLONE_INTO_CGROUP), and written there by the child itself.
        // On x86-64 the v2 `cgroup.procs` given is read-only: a write (the fallback) would fail,
        // so success proves that clone3 placed the child.
        let read_only = std::fs::File::open(dir.join("cgroup.procs")).unwrap();
        let v2_procs = if cfg!(target_arch = "x86_64") {
            read_only.as_fd()
        } else {
            procs.as_fd()
        };
        let created = run(Placement {
            v2: Some((handle.as_fd(), v2_procs)),
            procs: &[],
            ..Placement::default()
        });
        // A failure of the clone3 child comes back as the error, with no zombie left.
        let e = spawn_confined(
            c"/no/such/program",
            &[c"x".into()],
            &[],
            c"/",
            None,
            Placement {
                v2: Some((handle.as_fd(), v2_procs)),
                procs: &[],
                ..Placement::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        let written = run(Placement {
            v2: None,
            procs: &[procs.as_fd()],
            ..Placement::default()
        });
        std::fs::remove_dir(&dir).unwrap();
        for out in [created, written] {
            assert!(out.lines().any(|l| l == format!("0::{rel}")), "{out}");
            assert_eq!(out.lines().last(), Some("0"), "{out}");
        }
    }

    /// Runs `command` with `view` as root and returns its stdout and stderr.
    fn in_view(command: &str, view: View<'_>) -> (String, String) {
        let argv = [c"sh".into(), c"-c".into(), CString::new(command).unwrap()];
        let env = [CString::from(c"PATH=/usr/bin:/bin")];
        let placement = Placement {
            view,
            ..Placement::default()
        };
        let child = spawn_confined(c"/bin/sh", &argv, &env, c"/", None, placement).unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .unwrap();
        std::fs::File::from(child.stderr)
            .read_to_string(&mut err)
            .unwrap();
        let mut status = 0;
        // SAFETY: waitpid of the child just spawned, into `status`.
        unsafe { libc::waitpid(child.pid, &mut status, 0) };
        (out, err)
    }

    #[test]
    fn a_view_makes_all_but_its_write_roots_read_only_hides_and_cuts_the_network() {
        if crate::euid() != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let outside = tempfile::tempdir_in("/var/tmp").unwrap();
        let root = tempfile::tempdir().unwrap();
        let secret = tempfile::tempdir_in("/var/tmp").unwrap();
        std::fs::write(secret.path().join("key"), "s3cret").unwrap();
        let fd = crate::fs::openat2(
            crate::fs::Base::Cwd,
            root.path().as_os_str(),
            libc::O_PATH | libc::O_CLOEXEC,
            0,
            crate::fs::Resolve::default(),
        )
        .unwrap();
        let writable = [fd.as_fd()];
        let writable_paths = [CString::new(root.path().as_os_str().as_bytes()).unwrap()];
        let hide = [CString::new(secret.path().as_os_str().as_bytes()).unwrap()];
        let view = View {
            writable: &writable,
            writable_paths: &writable_paths,
            read_only: true,
            hide_dirs: &hide,
            no_network: true,
            ..View::default()
        };
        let (o, r, s) = (
            outside.path().display(),
            root.path().display(),
            secret.path().display(),
        );
        let (out, err) = in_view(
            &format!(
                "touch {o}/x && echo outside; touch {r}/y && echo inside; \
                 cat {s}/key; ls /sys/class/net | tr '\n' ' '"
            ),
            view,
        );
        assert!(!outside.path().join("x").exists(), "{out} {err}");
        assert!(root.path().join("y").exists(), "{out} {err}");
        assert!(out.starts_with("inside\n"), "{out} {err}");
        assert!(err.contains("Read-only file system"), "{err}");
        assert!(!out.contains("s3cret"), "{out}");
        // The host's mounts are untouched.
        assert_eq!(
            std::fs::read_to_string(secret.path().join("key")).unwrap(),
            "s3cret"
        );
        std::fs::write(outside.path().join("z"), "host").unwrap();
    }
}
