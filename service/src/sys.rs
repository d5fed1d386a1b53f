//! The raw system calls of this crate, each `unsafe` justified.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of inherited descriptor `fd` after checking that it is an open socket, and
/// marks it close-on-exec (so commands started later do not inherit it).
pub fn adopt_socket(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat` we own; fstat only writes into it. An invalid
    // fd makes it return -1 (EBADF), which we check.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"));
    }
    // SAFETY: F_SETFD with FD_CLOEXEC on a descriptor just checked to be open; no memory.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open and a socket (checked above); the service manager handed it to
    // this process to own, and `activation::take` adopts each passed fd exactly once (it
    // clears LISTEN_FDS first), so nothing else will close it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` is a listening socket of `domain` (e.g. `AF_UNIX`) and type `SOCK_STREAM`.
pub fn is_listening_stream(fd: RawFd, domain: libc::c_int) -> io::Result<bool> {
    let get = |option: libc::c_int| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid, writable locals of the sizes passed; the kernel
        // writes at most `len` bytes into `value`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(value)
    };
    Ok(get(libc::SO_DOMAIN)? == domain
        && get(libc::SO_TYPE)? == libc::SOCK_STREAM
        && get(libc::SO_ACCEPTCONN)? != 0)
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
