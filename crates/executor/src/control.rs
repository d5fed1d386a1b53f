//! The request set of `control.sock` (root only): token management and status.

use crate::cgroup::KillMode;
use crate::dispatch::Executor;
use crate::server::{CancelSignal, Events, Peer, Service};
use mymcp_protocol::{ControlRequest, ControlResponse, ErrorCode, Role, StatusInfo};
use mymcp_tokens::TokenError;
use std::sync::Arc;

/// The administration service behind `control.sock`.
#[derive(Debug)]
pub(crate) struct Control {
    executor: Arc<Executor>,
}

impl Control {
    pub(crate) fn new(executor: Arc<Executor>) -> Self {
        Control { executor }
    }
}

fn error(e: TokenError) -> ControlResponse {
    let code = match e {
        TokenError::NotFound(_) => ErrorCode::NotFound,
        TokenError::InvalidName(_) | TokenError::Ambiguous(_) => ErrorCode::InvalidArguments,
        TokenError::Io { .. } | TokenError::Corrupt { .. } => ErrorCode::InternalError,
    };
    ControlResponse::Error {
        code,
        message: e.to_string(),
    }
}

impl Service for Control {
    type Request = ControlRequest;
    type Response = ControlResponse;

    async fn handle(
        self: Arc<Self>,
        request: ControlRequest,
        peer: Peer,
        _cancel: CancelSignal,
        _events: Events,
    ) -> ControlResponse {
        let tokens = self.executor.tokens();
        match request {
            ControlRequest::TokenAdd { name, role } => match tokens.add(&name, role) {
                Ok((token, info)) => {
                    tracing::info!(name = %info.name, role = %info.role, id = %info.id, peer_pid = ?peer.pid, "token created");
                    ControlResponse::TokenAdded { token, info }
                }
                Err(e) => error(e),
            },
            ControlRequest::TokenList => ControlResponse::Tokens(tokens.list()),
            ControlRequest::TokenRevoke { selector } => match tokens.revoke(&selector) {
                Ok(info) => {
                    tracing::info!(name = %info.name, id = %info.id, peer_pid = ?peer.pid, "token revoked");
                    ControlResponse::Revoked(info)
                }
                Err(e) => error(e),
            },
            ControlRequest::Status => ControlResponse::Status(StatusInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                build_id: mymcp_protocol::BUILD_ID.to_owned(),
                uptime_secs: self.executor.started.elapsed().as_secs(),
                tokens: tokens.count() as u64,
                running_commands: self.executor.running_commands(),
                running_jobs: self.executor.jobs().running() as u64,
                token_file: tokens.path().display().to_string(),
                audit: self.executor.audit().state(),
                confinement: self.executor.confinement().describe(),
                confined: self.executor.confinement().kill_mode() != KillMode::ProcessGroup,
            }),
            ControlRequest::TokenRotate { role } => {
                if role.is_client() {
                    return ControlResponse::Error {
                        code: ErrorCode::InvalidArguments,
                        message:
                            "only admin and metrics tokens are rotated; add and revoke ro/rw tokens"
                                .into(),
                    };
                }
                match tokens.rotate(role) {
                    Ok((token, info, removed)) => {
                        tracing::info!(role = %role, id = %info.id, removed, peer_pid = ?peer.pid, "token rotated");
                        ControlResponse::Rotated {
                            token,
                            info,
                            removed: removed as u64,
                        }
                    }
                    Err(e) => error(e),
                }
            }
            ControlRequest::TokenRemoveRole { role } => {
                if role != Role::Metrics {
                    return ControlResponse::Error {
                        code: ErrorCode::InvalidArguments,
                        message: "only the metrics role can be disabled as a whole".into(),
                    };
                }
                match tokens.remove_role(role) {
                    Ok(n) => {
                        tracing::info!(role = %role, removed = n, peer_pid = ?peer.pid, "tokens of a role removed");
                        ControlResponse::RemovedRole(n as u64)
                    }
                    Err(e) => error(e),
                }
            }
            ControlRequest::TokenImport { tokens: list } => match tokens.import(list) {
                Ok((added, skipped)) => {
                    tracing::info!(added, skipped, peer_pid = ?peer.pid, "tokens imported");
                    ControlResponse::Imported {
                        added: added as u64,
                        skipped: skipped as u64,
                    }
                }
                Err(e) => error(e),
            },
            ControlRequest::AuditState => {
                ControlResponse::AuditState(self.executor.audit().state())
            }
        }
    }
}
