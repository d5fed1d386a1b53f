//! The frontend's sockets: turning the socket systemd passed as fd 3 into a listener,
//! receiving the transfer pipes the executor passes (`recvmsg` with `SCM_RIGHTS`), and the
//! descriptor limit that sizes the connection cap.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The soft limit on open descriptors (`RLIMIT_NOFILE`), if it is finite.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit we own; getrlimit only writes into it and
    // does not retain the pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Raises the soft limit on open descriptors to the hard one; returns the new soft limit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit we own; getrlimit only writes into it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit that setrlimit only reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
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

/// Most descriptors one `recvmsg` may bring. The executor sends one per frame and the kernel
/// never merges two descriptor-carrying sends into one read, so one would do.
const MAX_FDS_PER_READ: usize = 8;

/// Reads from a non-blocking Unix stream socket into the spare capacity of `buf` (at least
/// one byte must be spare) with `recvmsg`, appending what arrived to `buf` and any
/// descriptors passed with it (`SCM_RIGHTS`, received close-on-exec) to `fds`, in order.
/// `Ok(0)` at end of stream; `WouldBlock` when nothing is there.
pub fn recv_with_fds(
    socket: RawFd,
    buf: &mut Vec<u8>,
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    #[repr(C, align(8))]
    struct Control([u8; 256]);
    let spare = buf.spare_capacity_mut();
    assert!(!spare.is_empty(), "recv_with_fds needs room in the buffer");
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    let mut control = Control([0; 256]);
    // SAFETY: CMSG_SPACE only computes a size.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS_PER_READ * std::mem::size_of::<RawFd>()) as u32) };
    debug_assert!(space as usize <= control.0.len());
    // SAFETY: msghdr is a plain C struct; all-zero (null pointers, zero lengths) is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points to `iov` (the spare capacity of `buf`, writable for its length)
        // and to `control` (writable for `space` bytes); all outlive the call, and recvmsg
        // writes only within those lengths.
        let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: on success the kernel filled `msg_controllen` bytes of `control` with complete
    // cmsghdr records; CMSG_FIRSTHDR/CMSG_NXTHDR walk exactly those, and each SCM_RIGHTS record
    // holds `(cmsg_len - CMSG_LEN(0)) / sizeof(int)` descriptors that are now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push_back(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other(
            "more descriptors arrived than fit; some were lost",
        ));
    }
    let len = buf.len();
    // SAFETY: recvmsg initialised the first `n` bytes of the spare capacity (n ≤ its length).
    unsafe { buf.set_len(len + n) };
    Ok(n)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_arrive_in_order_with_their_bytes() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        (&a).write_all(b"ab").unwrap();
        let files = [
            std::fs::File::open("/proc/self/status").unwrap(),
            std::fs::File::open("/dev/null").unwrap(),
        ];
        for f in &files {
            send_fd(a.as_raw_fd(), b"x", f.as_raw_fd());
        }
        let (mut buf, mut fds) = (Vec::with_capacity(64), VecDeque::new());
        while buf.len() < 4 {
            recv_with_fds(b.as_raw_fd(), &mut buf, &mut fds).unwrap();
        }
        assert_eq!(buf, b"abxx");
        assert_eq!(fds.len(), 2);
        let target =
            |fd: &OwnedFd| std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(target(&fds[1]), std::path::Path::new("/dev/null"));
        let e = recv_with_fds(b.as_raw_fd(), &mut buf, &mut fds).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    /// Test helper: sends `data` with one descriptor attached.
    fn send_fd(socket: RawFd, data: &[u8], fd: RawFd) {
        #[repr(C, align(8))]
        struct Control([u8; 64]);
        let mut control = Control([0; 64]);
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: test-only sendmsg from live locals described by `msg`.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
            assert_eq!(libc::sendmsg(socket, &msg, 0), data.len() as isize);
        }
    }

    #[test]
    fn a_regular_file_is_not_adopted_as_a_listener() {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let err = adopt_listening_socket(f.as_raw_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
