//! inotify and `poll` for the protected set's change watch ([`crate::paths`]): create an
//! instance, add a watch, ask without waiting whether descriptors are ready, read events.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Set on an event when the kernel's queue overflowed: events were lost.
pub const OVERFLOW: u32 = libc::IN_Q_OVERFLOW;

/// A new inotify instance, non-blocking and close-on-exec.
pub fn inotify() -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes only flags and returns a new descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `inotify_add_watch(fd, path, mask)`: the watch descriptor.
pub fn add_watch(fd: BorrowedFd<'_>, path: &Path, mask: u32) -> io::Result<i32> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
    if wd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(wd)
    }
}

/// `poll` with a zero timeout: for each `(fd, events)`, the events it has now (0: none).
pub fn ready_now<const N: usize>(fds: [(BorrowedFd<'_>, i16); N]) -> io::Result<[i16; N]> {
    let mut p = fds.map(|(fd, events)| libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    });
    loop {
        // SAFETY: `p` is a live array of `N` pollfd structures, writable for the call.
        let n = unsafe { libc::poll(p.as_mut_ptr(), N as libc::nfds_t, 0) };
        if n >= 0 {
            return Ok(p.map(|p| p.revents));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads every queued event of a non-blocking inotify descriptor, calling `each` with the
/// watch descriptor, the mask and the name (empty for an event on the watched object itself),
/// until the queue is empty.
pub fn read_events(fd: BorrowedFd<'_>, mut each: impl FnMut(i32, u32, &OsStr)) -> io::Result<()> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    // Room for many events; aligned for the header.
    let mut buf = vec![0u64; 4096 / 8];
    loop {
        // SAFETY: the pointer and length describe `buf`, a live, writable buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len() * 8) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        // SAFETY: `buf` holds `n` initialised bytes; viewing u64s as bytes is always valid.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        let mut at = 0;
        while at + HEADER <= bytes.len() {
            // SAFETY: `at + HEADER` bytes are within `bytes`; read_unaligned has no alignment
            // requirement and inotify_event is plain data.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(bytes[at..].as_ptr().cast()) };
            let name_end = (at + HEADER + ev.len as usize).min(bytes.len());
            let raw = &bytes[at + HEADER..name_end];
            // The name is NUL-padded.
            let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            each(ev.wd, ev.mask, OsStr::from_bytes(name));
            at = name_end;
        }
    }
}
