//! Where the HTTP listener comes from: a socket passed by systemd (socket activation), one
//! handed over by a parent process (`--listen-fd`, used by `mymcpctl serve`), or one we bind
//! ourselves from `--host`/`--port`.
//!
//! Socket activation lets the service manager own the privileged-looking part (binding a port,
//! possibly below 1024) while this process runs with no capabilities at all.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// The first fd a service manager passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// How the listener will be obtained.
#[derive(Debug)]
pub enum ListenSource {
    /// A listening socket inherited from the service manager or the parent process.
    Activated(std::net::TcpListener),
    /// Bind this host and port.
    Bind { host: String, port: u16 },
}

impl ListenSource {
    /// Reads `LISTEN_PID`/`LISTEN_FDS`; if they are meant for this process, adopts fd 3 and
    /// clears the variables, else falls back to binding `host:port`.
    ///
    /// Call this before the async runtime starts: it modifies the process environment, which
    /// is only sound while no other thread may be reading it.
    pub fn from_env(host: &str, port: u16) -> io::Result<ListenSource> {
        let ours = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        let fds = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if !ours || fds == 0 {
            return Ok(ListenSource::Bind {
                host: host.to_owned(),
                port,
            });
        }
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        if fds > 1 {
            tracing::warn!(
                fds,
                "socket activation passed several sockets; using only the first"
            );
        }
        let listener = mymcp_sys::net::adopt_listening_socket(LISTEN_FDS_START)?;
        listener.set_nonblocking(true)?;
        Ok(ListenSource::Activated(listener))
    }

    /// Adopts an already listening socket inherited as `fd` (from `--listen-fd`).
    pub fn from_fd(fd: RawFd) -> io::Result<ListenSource> {
        let listener = mymcp_sys::net::adopt_listening_socket(fd)?;
        listener.set_nonblocking(true)?;
        Ok(ListenSource::Activated(listener))
    }

    /// Turns the source into a tokio listener and logs where it listens (`https` only says
    /// which scheme the log line shows).
    pub async fn open(self, https: bool) -> io::Result<tokio::net::TcpListener> {
        let (listener, how) = match self {
            ListenSource::Activated(std_listener) => (
                tokio::net::TcpListener::from_std(std_listener)?,
                "inherited socket",
            ),
            ListenSource::Bind { host, port } => {
                let listener = tokio::net::TcpListener::bind((host.as_str(), port))
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("bind {host}:{port}: {e}")))?;
                (listener, "bound")
            }
        };
        // An inherited fd that is a Unix or UDP socket fails here rather than at accept time.
        let addr: SocketAddr = listener.local_addr()?;
        let scheme = if https { "https" } else { "http" };
        tracing::info!(source = how, "listening on {scheme}://{addr}/mcp");
        Ok(listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binding_port_zero_gives_a_real_address() {
        let listener = ListenSource::Bind {
            host: "127.0.0.1".into(),
            port: 0,
        }
        .open(false)
        .await
        .unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }

    #[tokio::test]
    async fn an_inherited_listening_fd_is_served_as_is() {
        use std::os::fd::IntoRawFd;
        let parent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = parent.local_addr().unwrap();
        let listener = ListenSource::from_fd(parent.into_raw_fd())
            .unwrap()
            .open(false)
            .await
            .unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
        let client = tokio::net::TcpStream::connect(addr);
        let (accepted, connected) = tokio::join!(listener.accept(), client);
        assert!(accepted.is_ok() && connected.is_ok());
    }

    #[tokio::test]
    async fn a_bad_host_names_the_address_in_the_error() {
        let err = ListenSource::Bind {
            host: "256.0.0.1".into(),
            port: 1,
        }
        .open(false)
        .await
        .unwrap_err();
        assert!(err.to_string().contains("256.0.0.1:1"), "{err}");
    }
}
