//! Pseudo-terminals for the executor's terminal sessions: opening a pair, setting its window
//! size. The child side (`setsid`, `TIOCSCTTY`, the slave as stdio) is in
//! [`crate::process::spawn_confined_tty`].

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A pseudo-terminal pair: the master (kept by the executor, non-blocking, close-on-exec) and
/// the slave (given to the child as its terminal, close-on-exec; the executor closes its copy
/// once the child runs).
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new pseudo-terminal pair (`posix_openpt`, `grantpt`, `unlockpt`, `ptsname_r`) of
/// `rows` × `cols` cells. Neither side becomes the executor's controlling terminal.
pub fn open(rows: u16, cols: u16) -> io::Result<Pty> {
    // SAFETY: integer flags; returns a new descriptor or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: posix_openpt just returned this descriptor and nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: grantpt and unlockpt take the master descriptor we own and touch no memory of
    // ours (glibc's grantpt on devpts is a check and a no-op).
    crate::check(unsafe { libc::grantpt(master.as_raw_fd()) })?;
    // SAFETY: as above.
    crate::check(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes at most `name.len()` bytes, NUL included, into `name`.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: a NUL-terminated path and integer flags; returns a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor and nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    set_size(master.as_fd(), rows, cols)?;
    set_nonblocking(master.as_fd())?;
    Ok(Pty { master, slave })
}

/// The master side of a pseudo-terminal as the executor reads and writes it (non-blocking).
#[derive(Debug)]
pub struct Master(File);

impl Master {
    /// One `read(2)`: `WouldBlock` when nothing is there, `EIO` once no process has the slave
    /// open.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.0).read(buf)
    }

    /// One `write(2)`: `WouldBlock` when the terminal's input queue is full.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.0).write(buf)
    }
}

impl AsRawFd for Master {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsFd for Master {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Registers a master (from [`open`]) with the tokio reactor, for reading and writing.
pub fn register(master: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<Master>> {
    let master = Master(File::from(master));
    // SAFETY: `Master` owns its descriptor (a `File` that is never replaced or exposed
    // mutably), so it stays open and `as_raw_fd` returns the same number for as long as the
    // `AsyncFd` owns it.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            master,
            tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
        )
    }
    .map_err(|e| e.into())
}

/// Sets the window size of the terminal `fd` (either side): `TIOCSWINSZ`. The kernel sends
/// SIGWINCH to the terminal's foreground process group when the size changes.
pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize`, which lives on this stack for the call.
    crate::check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) })
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor the caller keeps open; integer arguments.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    crate::check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_carries_bytes_and_has_its_size() {
        let pty = open(30, 100).unwrap();
        let mut slave = std::fs::File::from(pty.slave.try_clone().unwrap());
        slave.write_all(b"hi\n").unwrap();
        let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
        let mut buf = [0u8; 16];
        let mut got = Vec::new();
        for _ in 0..100 {
            match master.read(&mut buf) {
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.ends_with(b"\r\n") {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"hi\r\n");
        set_size(pty.master.as_fd(), 5, 7).unwrap();
        let mut ws: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `struct winsize` into `ws`.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (5, 7));
    }
}
