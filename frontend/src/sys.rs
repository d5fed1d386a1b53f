//! Every raw system call and every `unsafe` block of the frontend, each with its justification.
//!
//! The frontend needs very little from the kernel beyond what tokio and std already wrap: its
//! effective uid (to refuse running as root), random bytes (request ids), turning the
//! socket systemd passed as fd 3 into a listener, and one allocator setting.

use std::io;
use std::os::fd::{FromRawFd, RawFd};

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Keeps glibc from giving buffers of up to 4 MiB back to the kernel on every free.
///
/// A large tool result passes through several megabyte-sized buffers. By default glibc maps
/// each one freshly and unmaps it when freed, so every call paid for page faults and for the
/// kernel zeroing those pages: half the frontend's CPU time per megabyte. Served from the heap
/// instead, they are reused; at most 8 MiB of free memory is kept per arena before it is
/// returned. Call before any thread starts.
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it is called before the runtime starts
    // any thread, and rejects values it does not accept (its return value only says so).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

/// Fills `buf` with bytes from the kernel's CSPRNG (`getrandom(2)`, blocking until the pool is
/// initialised, which on any booted system it already is).
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid, writable slice of `rest.len()` bytes that we exclusively
        // borrow for the duration of the call; getrandom writes at most that many bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Takes ownership of an inherited file descriptor that must be a listening socket and wraps it
/// in a std `TcpListener`.
///
/// Refuses descriptors that are not open or not sockets, so a stray `LISTEN_FDS` cannot make us
/// adopt (and later close) an unrelated file.
pub fn adopt_listening_socket(fd: RawFd) -> io::Result<std::net::TcpListener> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat` we own; fstat only writes into it and does not
    // retain the pointer. An invalid fd makes it return -1 (EBADF), which we check.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited fd {fd} is not a socket"),
        ));
    }
    // SAFETY: the fd is open and is a socket (checked above). It was handed to this process by
    // its service manager for us to own; the caller takes it exactly once (it clears the
    // LISTEN_* variables afterwards), so no other owner will close it.
    Ok(unsafe { std::net::TcpListener::from_raw_fd(fd) })
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
    fn a_regular_file_is_not_adopted_as_a_listener() {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let err = adopt_listening_socket(f.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
