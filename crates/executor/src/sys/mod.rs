//! Every `unsafe` block and raw syscall of the executor, each with its `SAFETY:` argument.
//! Callers get safe functions with `io::Result`s.

pub mod fs;
pub mod pipe;
pub mod process;
pub mod watch;

use std::ffi::CString;
use std::io;

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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
        // SAFETY: on success with a non-null result, pw_name and pw_dir point to
        // NUL-terminated strings inside `buf`, which is still alive here.
        let (name, home) = unsafe {
            (
                std::ffi::CStr::from_ptr(pwd.pw_name)
                    .to_string_lossy()
                    .into_owned(),
                std::ffi::CStr::from_ptr(pwd.pw_dir)
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        return Ok(Some(Account {
            name,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_nobody_resolve() {
        let root = user_by_uid(0).unwrap().unwrap();
        assert_eq!(root.name, "root");
        let nobody = user_by_name("nobody").unwrap().unwrap();
        assert_ne!(nobody.uid, 0);
        assert_eq!(user_by_name("no-such-user-mymcp").unwrap(), None);
    }

    #[test]
    fn random_bytes_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill_random(&mut a).unwrap();
        fill_random(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
