//! The request set of `control.sock` (root only): token management and status. Token changes
//! are audited (see [`Control::handle`]).

use crate::audit::{self, Actor, Outcome};
use crate::cgroup::KillMode;
use crate::dispatch::Executor;
use crate::server::{CancelSignal, Events, Peer, Service};
use mymcp_protocol::{ControlRequest, ControlResponse, ErrorCode, ImportedToken, Role, StatusInfo};
use mymcp_tokens::TokenError;
use serde_json::{json, Value};
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
        TokenError::InvalidName(_)
        | TokenError::InvalidUser(_)
        | TokenError::InvalidLimits(_)
        | TokenError::LimitsOnNonClient
        | TokenError::Ambiguous(_) => ErrorCode::InvalidArguments,
        TokenError::Io { .. } | TokenError::Corrupt { .. } => ErrorCode::InternalError,
    };
    ControlResponse::Error {
        code,
        message: e.to_string(),
    }
}

/// The answer when a change was not made because its start record could not be written.
fn unaudited() -> ControlResponse {
    ControlResponse::Error {
        code: ErrorCode::InternalError,
        message: audit::REFUSED_UNAUDITED.to_owned(),
    }
}

impl Service for Control {
    type Request = ControlRequest;
    type Response = ControlResponse;

    /// Every change of the token store is audited in the name of `mymcpctl` (root on the
    /// control socket): a start record before it (no record, no change) and an outcome record
    /// after. Reads (list, status, audit state) are not: only root can ask, and root reads the
    /// same files directly.
    async fn handle(
        self: Arc<Self>,
        request: ControlRequest,
        peer: Peer,
        _cancel: CancelSignal,
        _events: Events,
    ) -> ControlResponse {
        let tokens = self.executor.tokens();
        let audit = self.executor.audit();
        let op = |tool: &'static str, mut params: Value| {
            if let Value::Object(m) = &mut params {
                m.insert("peer_pid".to_owned(), json!(peer.pid));
            }
            audit.operation(tool, Actor::control(), params)
        };
        match request {
            ControlRequest::OAuth(request) => match self.executor.oauth() {
                Some(server) => {
                    use mymcp_protocol::oauth::OAuthControl;
                    let now = std::time::Instant::now();
                    // What changes something is recorded (an approval: who it lets in, as
                    // whom); never the approval code.
                    let recorded = match &request {
                        OAuthControl::Approve { user, role, .. } => Some((
                            "oauth_approve",
                            json!({"user": user, "role": role.as_str()}),
                        )),
                        OAuthControl::Deny { .. } => Some(("oauth_deny", json!({}))),
                        OAuthControl::Revoke { selector } => {
                            Some(("oauth_revoke", json!({"selector": selector})))
                        }
                        OAuthControl::Pending | OAuthControl::Clients | OAuthControl::Grants => {
                            None
                        }
                    };
                    let answered = match recorded {
                        Some((tool, params)) => audit.around(
                            &op(tool, params),
                            || server.control(request, now),
                            |r, d| match r {
                                Ok(_) => audit::Outcome::ok(Some(d), None),
                                Err(e) => audit::Outcome::error("InvalidArguments", e, Some(d)),
                            },
                        ),
                        None => Some(server.control(request, now)),
                    };
                    match answered {
                        None => unaudited(),
                        Some(Ok(outcome)) => ControlResponse::OAuth(outcome),
                        Some(Err(message)) => ControlResponse::Error {
                            code: ErrorCode::InvalidArguments,
                            message,
                        },
                    }
                }
                None => ControlResponse::Error {
                    code: ErrorCode::InvalidArguments,
                    message: "OAuth is off on this server (MYMCP_OAUTH_ENABLED)".into(),
                },
            },
            ControlRequest::TokenAdd {
                name,
                role,
                user,
                limits,
                view,
            } => {
                // Admin and metrics tokens run no tool: they act as no account. An account
                // that does not exist is refused before anything is asked of the store.
                let params = audit::token_add_params(&name, role, user.as_deref(), &limits, &view);
                let user = if role.is_client() {
                    match crate::dispatch::new_token_user(tokens, user) {
                        Ok(u) => Some(u),
                        Err(message) => {
                            return ControlResponse::Error {
                                code: ErrorCode::InvalidArguments,
                                message,
                            }
                        }
                    }
                } else {
                    None
                };
                let op = op("token_add", params);
                let added = audit.around(
                    &op,
                    || tokens.add_limited(&name, role, user.as_deref(), limits, view),
                    |r, d| audit::token_outcome(r.as_ref().map(|(_, i)| i), d),
                );
                match added {
                    None => unaudited(),
                    Some(Ok((token, info))) => {
                        tracing::info!(name = %info.name, role = %info.role, user = %info.user, id = %info.id, peer_pid = ?peer.pid, "token created");
                        ControlResponse::TokenAdded { token, info }
                    }
                    Some(Err(e)) => error(e),
                }
            }
            ControlRequest::TokenList => ControlResponse::Tokens(tokens.list()),
            ControlRequest::TokenRevoke { selector } => {
                let op = op(
                    "token_revoke",
                    json!({"selector": audit::selector_param(&selector)}),
                );
                let revoked = audit.around(
                    &op,
                    || tokens.revoke(&selector),
                    |r, d| audit::token_outcome(r.as_ref(), d),
                );
                match revoked {
                    None => unaudited(),
                    Some(Ok(info)) => {
                        tracing::info!(name = %info.name, id = %info.id, peer_pid = ?peer.pid, "token revoked");
                        ControlResponse::Revoked(info)
                    }
                    Some(Err(e)) => error(e),
                }
            }
            ControlRequest::Status => ControlResponse::Status(StatusInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                build_id: mymcp_protocol::BUILD_ID.to_owned(),
                uptime_secs: self.executor.started.elapsed().as_secs(),
                tokens: tokens.count() as u64,
                running_commands: self.executor.running_commands(),
                running_jobs: self.executor.jobs().running() as u64,
                token_file: tokens.path().display().to_string(),
                audit: audit.state(),
                confinement: self.executor.confinement().describe(),
                confined: self.executor.confinement().kill_mode() != KillMode::ProcessGroup,
                views_unavailable: self.executor.views_unavailable().map(str::to_owned),
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
                let op = op("token_rotate", json!({"role": role.as_str()}));
                let rotated = audit.around(
                    &op,
                    || tokens.rotate(role),
                    |r, d| {
                        let o = audit::token_outcome(r.as_ref().map(|(_, i, _)| i), d);
                        match r {
                            Ok((_, info, removed)) => o.with_output(json!({
                                "id": info.id, "name": audit::param(&info.name),
                                "role": info.role.as_str(), "removed": removed,
                            })),
                            Err(_) => o,
                        }
                    },
                );
                match rotated {
                    None => unaudited(),
                    Some(Ok((token, info, removed))) => {
                        tracing::info!(role = %role, id = %info.id, removed, peer_pid = ?peer.pid, "token rotated");
                        ControlResponse::Rotated {
                            token,
                            info,
                            removed: removed as u64,
                        }
                    }
                    Some(Err(e)) => error(e),
                }
            }
            ControlRequest::TokenRemoveRole { role } => {
                if role != Role::Metrics {
                    return ControlResponse::Error {
                        code: ErrorCode::InvalidArguments,
                        message: "only the metrics role can be disabled as a whole".into(),
                    };
                }
                let op = op("token_remove_role", json!({"role": role.as_str()}));
                let removed = audit.around(
                    &op,
                    || tokens.remove_role(role),
                    |r, d| match r {
                        Ok(n) => Outcome::ok(Some(d), Some(json!({"removed": n}))),
                        Err(e) => audit::token_outcome(Err(e), d),
                    },
                );
                match removed {
                    None => unaudited(),
                    Some(Ok(n)) => {
                        tracing::info!(role = %role, removed = n, peer_pid = ?peer.pid, "tokens of a role removed");
                        ControlResponse::RemovedRole(n as u64)
                    }
                    Some(Err(e)) => error(e),
                }
            }
            ControlRequest::TokenImport { tokens: list } => {
                let op = op("token_import", import_params(&list));
                let imported = audit.around(
                    &op,
                    || tokens.import(list),
                    |r, d| match r {
                        Ok((added, skipped)) => {
                            Outcome::ok(Some(d), Some(json!({"added": added, "skipped": skipped})))
                        }
                        Err(e) => audit::token_outcome(Err(e), d),
                    },
                );
                match imported {
                    None => unaudited(),
                    Some(Ok((added, skipped))) => {
                        tracing::info!(added, skipped, peer_pid = ?peer.pid, "tokens imported");
                        ControlResponse::Imported {
                            added: added as u64,
                            skipped: skipped as u64,
                        }
                    }
                    Some(Err(e)) => error(e),
                }
            }
            ControlRequest::AuditState => ControlResponse::AuditState(audit.state()),
        }
    }
}

/// What an import names: how many tokens, and their names and roles (never digests: a digest
/// is what the store keys on).
fn import_params(list: &[ImportedToken]) -> Value {
    const SHOWN: usize = 64;
    let tokens: Vec<Value> = list
        .iter()
        .take(SHOWN)
        .map(|t| json!({"name": audit::param(&t.name), "role": t.role.as_str()}))
        .collect();
    json!({"count": list.len(), "tokens": tokens})
}
