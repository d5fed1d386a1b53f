//! A blocking client for the executor's `control.sock`.

use anyhow::{bail, Context};
use mymcp_protocol::frame;
use mymcp_protocol::{ClientFrame, ControlRequest, ControlResponse, Hello, ServerFrame};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One handshaken connection to `control.sock`.
#[derive(Debug)]
pub struct ControlClient {
    stream: UnixStream,
    next_id: u64,
}

impl ControlClient {
    /// Connects and performs the `Hello` exchange.
    pub fn connect(path: &Path) -> anyhow::Result<ControlClient> {
        let mut stream = UnixStream::connect(path).with_context(|| {
            format!(
                "cannot reach the executor at {} (is mymcp-executor running, and are you root?)",
                path.display()
            )
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        frame::write_to(
            &mut stream,
            &ClientFrame::<ControlRequest>::Hello(Hello::current()),
        )?;
        match frame::read_from::<ServerFrame<ControlResponse>, _>(&mut stream)
            .context("executor handshake")?
        {
            ServerFrame::Welcome(_) => Ok(ControlClient { stream, next_id: 1 }),
            ServerFrame::Refused { reason } => bail!("executor refused the connection: {reason}"),
            ServerFrame::Response { .. }
            | ServerFrame::Progress { .. }
            | ServerFrame::Pipe { .. } => {
                bail!("executor answered the handshake out of order")
            }
        }
    }

    /// Sends one request and waits for its response.
    pub fn call(&mut self, body: ControlRequest) -> anyhow::Result<ControlResponse> {
        let id = self.next_id;
        self.next_id += 1;
        frame::write_to(&mut self.stream, &ClientFrame::Request { id, body })?;
        match frame::read_from::<ServerFrame<ControlResponse>, _>(&mut self.stream)? {
            ServerFrame::Response { id: got, body } if got == id => Ok(body),
            other => bail!("unexpected answer from the executor: {other:?}"),
        }
    }
}
