//! Readiness and liveness for the service manager (`sd_notify(3)`).
//!
//! With `Type=notify`, systemd considers the unit started only once the daemon sends
//! `READY=1`: for mymcp that is after its sockets are listening and its configuration loaded,
//! so units ordered after it (and `systemctl start`) wait for a daemon that can really serve.
//! `STATUS=` is the one-line state `systemctl status` shows; `STOPPING=1` marks an orderly
//! shutdown; `WATCHDOG=1`, sent from the daemon's event loop at half of `WatchdogSec=`, lets
//! systemd restart a daemon whose loop is stuck.
//!
//! Without `$NOTIFY_SOCKET` every call does nothing, so the daemons behave the same when
//! started by hand.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket (or none).
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` and removes them from the
    /// environment. A socket path starting with `@` is in the abstract namespace.
    ///
    /// Call before any other thread exists: it modifies the environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
        let target = socket.and_then(|path| match open(&path) {
            Ok(target) => Some(target),
            Err(e) => {
                eprintln!(
                    "NOTIFY_SOCKET {path:?} unusable ({e}); not notifying the service manager"
                );
                None
            }
        });
        Notifier {
            target,
            watchdog: watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id()),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments) as one datagram. Failures are
    /// returned, not fatal: a daemon must not stop because its manager went away.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        match &self.target {
            None => Ok(()),
            Some((socket, addr)) => socket.send_to_addr(state.as_bytes(), addr).map(|_| ()),
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        let _ = self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// The status line `systemctl status` shows.
    pub fn status(&self, status: &str) {
        let _ = self.notify(&format!("STATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with a status line: shutdown has begun.
    pub fn stopping(&self, status: &str) {
        let _ = self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the event loop is alive.
    pub fn watchdog(&self) {
        let _ = self.notify("WATCHDOG=1");
    }

    /// How often to send [`Notifier::watchdog`]: half the manager's timeout, or `None` when
    /// no watchdog is configured for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Pings the watchdog at its interval from a task of the current tokio runtime, the one
    /// that serves the daemon's work: if that runtime's threads are stuck, the pings stop and
    /// the service manager restarts the daemon. `None` when no watchdog is configured.
    #[cfg(feature = "tokio")]
    pub fn spawn_watchdog(self: &std::sync::Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.watchdog?;
        let notifier = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notifier.watchdog();
            }
        }))
    }
}

fn open(path: &std::ffi::OsStr) -> io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(path)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither an absolute path nor @abstract",
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    Ok((socket, addr))
}

/// Half of `WATCHDOG_USEC` when it is meant for `pid` (or `WATCHDOG_PID` is unset, as
/// `sd_watchdog_enabled(3)` accepts).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// STATUS= ends at a newline: keep the text on one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_half_the_timeout_for_this_process_only() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn messages_arrive_as_datagrams_on_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some(open(path.as_os_str()).unwrap()),
            watchdog: None,
        };
        notifier.ready("serving\non 1");
        notifier.watchdog();
        notifier.stopping("bye");
        let mut buf = [0u8; 256];
        let mut next = || {
            let n = manager.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert_eq!(next(), "READY=1\nSTATUS=serving on 1");
        assert_eq!(next(), "WATCHDOG=1");
        assert_eq!(next(), "STOPPING=1\nSTATUS=bye");
    }

    #[test]
    fn abstract_sockets_are_reached_too() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mymcp-notify-test-{}", std::process::id());
        let manager =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier {
            target: Some(open(format!("@{name}").as_ref()).unwrap()),
            watchdog: None,
        };
        notifier.status("hello");
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=hello");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let n = Notifier::disabled();
        assert!(!n.enabled());
        n.ready("x");
        assert!(n.notify("READY=1").is_ok());
    }

    #[test]
    fn a_relative_socket_path_is_refused() {
        assert!(open("relative/notify".as_ref()).is_err());
    }
}
