//! mymcp-sys: every `unsafe` block and raw system call of mymcp, each with its `SAFETY:`
//! argument; callers in the other crates (which forbid `unsafe`) get safe functions with
//! `io::Result`s.
//!
//! - [`fs`]: `openat2` and friends, directory reading, `statx`, the file tools' calls;
//! - [`pipe`]: pipes, `splice`, passing descriptors (transfers);
//! - [`process`]: spawning commands (`posix_spawn`), process groups, pidfds;
//! - [`pty`]: pseudo-terminal pairs and their window size (terminal sessions);
//! - [`watch`]: inotify and `poll`;
//! - [`environment`]: secrets overwritten where the kernel put the environment;
//! - [`memory`]: glibc's allocator parameters and trimming;
//! - [`net`]: inherited listening sockets, receiving descriptors, the descriptor limit;
//! - [`privileges`]: dropping privileges before `exec`, parent-death signal, dumpable flag;
//! - [`creds`]: a thread acting as a Unix account; its groups and expiry;
//! - [`pam`]: checking a password with the PAM stack (libpam loaded at run time);
//! - [`signals`]: waiting for signals, sending them;
//! - [`testing`]: what only tests do (bind mounts, FIFOs, the page cache);
//! - at the top: the effective uid, umask, random bytes, user and group lookup.
//!
//! ```
//! let mut key = [0u8; 32];
//! mymcp_sys::fill_random(&mut key).unwrap();
//! assert!(key.iter().any(|&b| b != 0));
//! ```

pub mod creds;
pub mod environment;
pub mod fs;
pub mod memory;
pub mod net;
pub mod pam;
pub mod pipe;
pub mod privileges;
pub mod process;
pub mod pty;
pub mod signals;
pub mod testing;
pub mod watch;

use std::ffi::CString;
use std::io;

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `Ok` unless a libc call returned -1, then the thread's `errno`.
pub(crate) fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets the process umask.
pub fn set_umask(mask: u32) {
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// Fills `buf` from the kernel's CSPRNG (blocking only until it is initialised at boot).
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live, writable, exclusively
        // borrowed slice; getrandom writes at most `rest.len()` bytes into it.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// A user account as the system's user database knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// The login shell (`pw_shell`; empty when the entry names none).
    pub shell: String,
}

/// Looks a user up by name (`getpwnam_r`). `Ok(None)` when no such user exists.
pub fn user_by_name(name: &str) -> io::Result<Option<Account>> {
    let cname = CString::new(name).map_err(|_| io::Error::other("user name contains NUL"))?;
    lookup_user(|pwd, buf, result| {
        // SAFETY: `cname` is a valid NUL-terminated string; `pwd`, `buf` and `result` point
        // to live storage owned by `lookup_user` for the duration of the call, and `buf.len()`
        // is the real size of the buffer.
        unsafe { libc::getpwnam_r(cname.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

/// Looks a user up by uid (`getpwuid_r`).
pub fn user_by_uid(uid: u32) -> io::Result<Option<Account>> {
    lookup_user(|pwd, buf, result| {
        // SAFETY: as in `user_by_name`; `uid` is a plain integer.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

/// The gid of the group `name` (`getgrnam_r`, through NSS). `Ok(None)` when no such group
/// exists.
pub fn group_by_name(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name).map_err(|_| io::Error::other("group name contains NUL"))?;
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: group is a plain C struct of pointers and integers; all-zero is a valid
        // value, read only after getgrnam_r filled it.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `cname` is NUL-terminated; `grp`, `buf` and `result` are live storage of
        // the sizes given for the duration of the call.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < 1 << 24 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok((!result.is_null()).then_some(grp.gr_gid));
    }
}

fn lookup_user(
    call: impl Fn(*mut libc::passwd, &mut [libc::c_char], *mut *mut libc::passwd) -> libc::c_int,
) -> io::Result<Option<Account>> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: passwd is a plain C struct of pointers and integers; all-zero is a valid
        // (if meaningless) value, and it is only read after getpw*_r filled it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, &mut buf, &mut result);
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        let text = |p: *const libc::c_char| {
            if p.is_null() {
                return String::new();
            }
            // SAFETY: on success with a non-null result, the entry's string fields that are
            // not null point to NUL-terminated strings inside `buf`, which is still alive here.
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        };
        return Ok(Some(Account {
            name: text(pwd.pw_name),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: text(pwd.pw_dir),
            shell: text(pwd.pw_shell),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_not_all_zero_and_differ() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        fill_random(&mut a).unwrap();
        fill_random(&mut b).unwrap();
        assert_ne!(a, [0u8; 32]);
        assert_ne!(a, b);
    }

    #[test]
    fn root_and_nobody_resolve() {
        let root = user_by_uid(0).unwrap().unwrap();
        assert_eq!(root.name, "root");
        let nobody = user_by_name("nobody").unwrap().unwrap();
        assert_ne!(nobody.uid, 0);
        assert_eq!(user_by_name("no-such-user-mymcp").unwrap(), None);
    }

    #[test]
    fn groups_resolve_by_name() {
        assert_eq!(group_by_name("root").unwrap(), Some(0));
        assert_eq!(group_by_name("no-such-group-mymcp").unwrap(), None);
    }

    #[test]
    fn random_bytes_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill_random(&mut a).unwrap();
        fill_random(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
