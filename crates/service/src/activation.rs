//! Sockets passed by the service manager (`sd_listen_fds_with_names(3)`).
//!
//! systemd (or `systemd-socket-activate`) binds the sockets of a `.socket` unit itself, with
//! the owner, group and mode the unit names, and passes them to the service as fds 3, 4, …,
//! announcing them in `LISTEN_FDS` (how many), `LISTEN_PID` (for which process) and
//! `LISTEN_FDNAMES` (colon-separated names, from `FileDescriptorName=`). The daemons then
//! serve on them instead of binding: no window where a socket exists with the wrong mode, and
//! connections that arrive while the daemon (re)starts wait in the backlog.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// One passed socket and its name (`"unknown"` when the manager gave none).
#[derive(Debug)]
pub struct Activated {
    pub name: String,
    pub fd: OwnedFd,
}

/// The sockets passed to this process, in order; empty when `LISTEN_PID` names another
/// process or `LISTEN_FDS` is unset. Removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`
/// from the environment and marks the descriptors close-on-exec.
///
/// Fails on a descriptor that is not an open socket: adopting (and later closing) an
/// unrelated file because of a stray variable would be worse than not starting.
///
/// Call before any other thread exists: it modifies the environment.
pub fn take() -> io::Result<Vec<Activated>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let count = match parse(pid.as_deref(), fds.as_deref(), std::process::id()) {
        Some(n) => n,
        None => return Ok(Vec::new()),
    };
    let names = names_for(names.as_deref(), count);
    let mut out = Vec::with_capacity(count);
    for (i, name) in names.into_iter().enumerate() {
        let fd = LISTEN_FDS_START + i as RawFd;
        let fd = mymcp_sys::net::adopt_socket(fd)
            .map_err(|e| io::Error::new(e.kind(), format!("passed fd {fd} ({name}): {e}")))?;
        out.push(Activated { name, fd });
    }
    Ok(out)
}

/// How many descriptors are meant for `own`, if any.
fn parse(pid: Option<&str>, fds: Option<&str>, own: u32) -> Option<usize> {
    if pid?.trim().parse::<u32>().ok()? != own {
        return None;
    }
    let n: usize = fds?.trim().parse().ok()?;
    // A handful is all a daemon of ours takes; a huge count is a broken environment.
    (1..=64).contains(&n).then_some(n)
}

/// The names of `count` descriptors: `LISTEN_FDNAMES` split at `:`, `"unknown"` for the
/// missing ones (as systemd names unnamed sockets).
fn names_for(names: Option<&str>, count: usize) -> Vec<String> {
    let mut given = names
        .filter(|n| !n.is_empty())
        .map(|n| n.split(':').map(str::to_owned).collect::<Vec<_>>())
        .unwrap_or_default();
    given.resize(count, "unknown".to_owned());
    given
}

/// Takes the socket named `name` out of `sockets`, if there is one.
pub fn named(sockets: &mut Vec<Activated>, name: &str) -> Option<OwnedFd> {
    let i = sockets.iter().position(|s| s.name == name)?;
    Some(sockets.remove(i).fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_only_for_the_named_process() {
        assert_eq!(parse(Some("42"), Some("2"), 42), Some(2));
        assert_eq!(parse(Some("41"), Some("2"), 42), None);
        assert_eq!(parse(None, Some("2"), 42), None);
        assert_eq!(parse(Some("42"), None, 42), None);
        assert_eq!(parse(Some("42"), Some("0"), 42), None);
        assert_eq!(parse(Some("42"), Some("100000"), 42), None);
    }

    #[test]
    fn names_are_padded_with_unknown() {
        assert_eq!(
            names_for(Some("executor:control"), 2),
            ["executor", "control"]
        );
        assert_eq!(names_for(Some("executor"), 2), ["executor", "unknown"]);
        assert_eq!(names_for(None, 1), ["unknown"]);
        assert_eq!(names_for(Some("a:b:c"), 2), ["a", "b"]);
    }

    #[test]
    fn named_takes_the_socket_out() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut sockets = vec![
            Activated {
                name: "executor".into(),
                fd: a.into(),
            },
            Activated {
                name: "control".into(),
                fd: b.into(),
            },
        ];
        assert!(named(&mut sockets, "control").is_some());
        assert!(named(&mut sockets, "control").is_none());
        assert_eq!(sockets.len(), 1);
    }
}

/// Turns a passed socket into a std `UnixListener`, refusing anything but a listening
/// `AF_UNIX` stream socket (e.g. a `.socket` unit with `ListenDatagram=` by mistake).
pub fn unix_listener(fd: OwnedFd) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::AsRawFd;
    if !mymcp_sys::net::is_listening_stream(fd.as_raw_fd(), libc::AF_UNIX)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening Unix stream socket",
        ));
    }
    Ok(std::os::unix::net::UnixListener::from(fd))
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    #[test]
    fn only_listening_unix_stream_sockets_become_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        assert!(unix_listener(OwnedFd::from(listener)).is_ok());
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(unix_listener(OwnedFd::from(a)).is_err());
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(unix_listener(OwnedFd::from(tcp)).is_err());
    }
}
