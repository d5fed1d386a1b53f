//! Pipes for transfers: creating them, handing one end to the frontend (`SCM_RIGHTS`),
//! moving bytes between a file and a pipe (`splice`), and waiting on a pipe or a wake-up
//! (`poll`, `eventfd`).
//!
//! The transfer code ([`crate::transfer`]) decides what to move; these wrappers are one
//! checked libc call each.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A new pipe `(read end, write end)`, both `O_CLOEXEC | O_NONBLOCK`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires; on success the kernel
    // stored two new descriptors in it.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created for us and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Asks for a pipe buffer of `bytes` (`F_SETPIPE_SZ`); returns the size the kernel chose.
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    // SAFETY: fcntl on a descriptor we hold, with an integer argument.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `splice(from, offset, to, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)`: moves up to `len`
/// bytes from a file at `*offset` (advanced by the kernel) into a pipe. `Ok(0)` at the end of
/// the file; `WouldBlock` when the pipe is full.
pub fn splice_to_pipe(
    from: BorrowedFd<'_>,
    offset: &mut i64,
    to: BorrowedFd<'_>,
    len: usize,
) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the duration of the call; `offset` points to a
        // live, exclusively borrowed loff_t that the kernel reads and updates; the output
        // offset is NULL, as it must be for a pipe.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                offset as *mut i64,
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `splice(from, NULL, to, offset, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)`: moves up to `len`
/// bytes from a pipe into a file at `*offset` (advanced by the kernel), without passing them
/// through user space. `Ok(0)` when the pipe's write end is closed and it is empty;
/// `WouldBlock` when it is empty for now.
pub fn splice_from_pipe(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    offset: &mut i64,
    len: usize,
) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the duration of the call; the input offset is
        // NULL, as it must be for a pipe; `offset` points to a live, exclusively borrowed
        // loff_t that the kernel reads and updates.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                offset as *mut i64,
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `read(fd, buf)` on a non-blocking descriptor: `WouldBlock` when nothing is there yet,
/// `Ok(0)` at end of file.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a live, exclusively borrowed slice of `buf.len()` writable bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What [`wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// The descriptor is ready (or hung up, or in error: the next call says which).
    Io,
    /// The wake-up descriptor was signalled.
    Woken,
    TimedOut,
}

/// Waits until `fd` is ready for `events` (`libc::POLLIN` or `libc::POLLOUT`), `wake` is
/// readable, or `timeout_ms` passes.
pub fn wait(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    wake: BorrowedFd<'_>,
    timeout_ms: i32,
) -> io::Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a live array of two initialised pollfd structs, and its length is
        // passed alongside; poll only writes their `revents` fields.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(if n == 0 {
            Ready::TimedOut
        } else if fds[1].revents != 0 {
            Ready::Woken
        } else {
            Ready::Io
        });
    }
}

/// A new `eventfd` (`EFD_CLOEXEC | EFD_NONBLOCK`), used to wake a thread blocked in [`wait`].
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Signals an eventfd (adds 1; a full counter is already signalled, so errors are moot).
pub fn signal_eventfd(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of `one`, a live local, to a descriptor we hold.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// `sendmsg` of `buf` with `fd` attached as `SCM_RIGHTS` (the kernel duplicates it into the
/// receiver). Returns how many bytes of `buf` were sent (at least one on success; the
/// descriptor travels with the first byte). Non-blocking sockets give `WouldBlock`.
pub fn send_with_fd(socket: RawFd, buf: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    // Room for one cmsghdr carrying one int, aligned as the kernel expects.
    const SPACE: usize = 64;
    #[repr(C, align(8))]
    struct Control([u8; SPACE]);
    let mut control = Control([0; SPACE]);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    assert!(space <= SPACE, "control buffer too small");
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero (null pointers, zero lengths) is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points to `control`, which holds at least CMSG_SPACE(sizeof(int)) bytes, so
    // CMSG_FIRSTHDR returns a valid, aligned, writable header inside it, and CMSG_DATA points
    // to room for one int after it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
    }
    loop {
        // SAFETY: `msg` and everything it points to (`iov` → `buf`, `control`) are alive for
        // the call; sendmsg only reads them. MSG_NOSIGNAL turns a closed peer into EPIPE.
        let n = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `sync_file_range(fd, offset, len, SYNC_FILE_RANGE_WRITE)`: starts writing those pages back
/// without waiting, so the final `fsync` of a large upload has little left to do.
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: a syscall on a descriptor we hold with integer arguments; it touches no memory
    // of ours.
    let r = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn splice_moves_a_file_into_a_pipe() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"hello, pipe").unwrap();
        let (r, w) = pipe().unwrap();
        let mut off = 7i64;
        let n = splice_to_pipe(f.as_fd(), &mut off, w.as_fd(), 100).unwrap();
        assert_eq!((n, off), (4, 11));
        assert_eq!(
            splice_to_pipe(f.as_fd(), &mut off, w.as_fd(), 100).unwrap(),
            0
        );
        let mut buf = [0u8; 16];
        assert_eq!(read(r.as_fd(), &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"pipe");
        let e = read(r.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn splice_moves_a_pipe_into_a_file_at_an_offset() {
        use std::os::unix::fs::FileExt;
        let f = tempfile::tempfile().unwrap();
        let (r, w) = pipe().unwrap();
        let mut off = 0i64;
        let e = splice_from_pipe(r.as_fd(), f.as_fd(), &mut off, 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        (&File::from(w.try_clone().unwrap()))
            .write_all(b"abcdef")
            .unwrap();
        assert_eq!(
            splice_from_pipe(r.as_fd(), f.as_fd(), &mut off, 4).unwrap(),
            4
        );
        assert_eq!(
            splice_from_pipe(r.as_fd(), f.as_fd(), &mut off, 100).unwrap(),
            2
        );
        assert_eq!(off, 6);
        drop(w);
        assert_eq!(
            splice_from_pipe(r.as_fd(), f.as_fd(), &mut off, 100).unwrap(),
            0
        );
        let mut back = [0u8; 6];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"abcdef");
    }

    #[test]
    fn wait_wakes_on_the_eventfd_and_times_out() {
        let (r, _w) = pipe().unwrap();
        let wake = eventfd().unwrap();
        assert_eq!(
            wait(r.as_fd(), libc::POLLIN, wake.as_fd(), 10).unwrap(),
            Ready::TimedOut
        );
        signal_eventfd(wake.as_fd());
        assert_eq!(
            wait(r.as_fd(), libc::POLLIN, wake.as_fd(), 1000).unwrap(),
            Ready::Woken
        );
    }

    #[test]
    fn a_passed_descriptor_arrives_with_the_bytes() {
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = pipe().unwrap();
        assert_eq!(send_with_fd(a.as_raw_fd(), b"x", r.as_fd()).unwrap(), 1);
        drop(r);
        // The receiver's copy is still a read end of the same pipe.
        let mut buf = [0u8; 1];
        let mut cmsg = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // SAFETY: test-only recvmsg into live local buffers described by `msg`.
        let got = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.as_mut_ptr().cast();
            msg.msg_controllen = cmsg.len() as _;
            assert_eq!(libc::recvmsg(b.as_raw_fd(), &mut msg, 0), 1);
            let c = libc::CMSG_FIRSTHDR(&msg);
            OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>()))
        };
        (&std::fs::File::from(w)).write_all(b"ok").unwrap();
        let mut two = [0u8; 2];
        assert_eq!(read(got.as_fd(), &mut two).unwrap(), 2);
        assert_eq!(&two, b"ok");
    }
}
