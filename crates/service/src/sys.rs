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

/// For every `NAME=value` string of the process environment whose name is in `names`, copies
/// the value out and overwrites its bytes, in place, with NULs. Returns `(name, value)` pairs.
///
/// `std::env::remove_var` only edits libc's `environ` array: the strings themselves stay
/// where the kernel put them at `execve`, at the top of the initial stack, and that region is
/// what `/proc/<pid>/environ` shows for the life of the process. Overwriting the bytes there
/// is the only way to take a secret out of it.
///
/// Must be called while this is the only thread and before anything has modified the
/// environment (so that every entry still points into the region the kernel filled).
pub fn scrub_environment(names: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut taken = Vec::new();
    // SAFETY: `environ` is libc's NULL-terminated array of pointers to NUL-terminated
    // `NAME=value` strings, set up by the kernel and libc at start-up; this is the only thread
    // (documented precondition), so nothing modifies the array or the strings while we walk
    // them. Each string lies in the writable initial stack (or, had it been replaced with
    // setenv, in writable heap memory libc allocated); we write only the `len` bytes of the
    // value that `CStr` measured before its terminating NUL, which stays in place.
    unsafe {
        let mut entry = libc::environ;
        if entry.is_null() {
            return taken;
        }
        while !(*entry).is_null() {
            let text = *entry;
            let bytes = std::ffi::CStr::from_ptr(text).to_bytes();
            if let Some(eq) = bytes.iter().position(|&b| b == b'=') {
                let name = &bytes[..eq];
                if names.iter().any(|n| n.as_bytes() == name) {
                    let value = bytes[eq + 1..].to_vec();
                    let name = String::from_utf8_lossy(name).into_owned();
                    std::ptr::write_bytes(text.add(eq + 1), 0, value.len());
                    taken.push((name, value));
                }
            }
            entry = entry.add(1);
        }
    }
    taken
}
