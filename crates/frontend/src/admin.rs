//! `/admin/tokens` and `/metrics`: thin HTTP shells around requests the executor decides.
//!
//! The frontend never judges a token here: it hashes what the client sent and asks; the
//! executor answers `Forbidden`, `Unauthorized` or `Disabled` itself. Bodies and status codes
//! follow the reference (spec §7.2, §10), except that listings never carry token values.
//!
//! | Request | Success | Errors |
//! |---|---|---|
//! | `GET /admin/tokens` | 200 `{"<id>": {id, name, role, created_at, last_used, enabled}}` | 401 no bearer, 403 not admin |
//! | `POST /admin/tokens` `{"name", "role"}` | 200 `{token, id, name, role, created_at}` | 400 `{"detail"}` bad input |
//! | `DELETE /admin/tokens/{token-or-id}` | 200 `{"revoked", id, name, role}` | 404 `{"detail":"Token not found"}` |
//! | `GET /metrics` | 200 Prometheus text, or OpenMetrics text when `Accept` prefers it | 401 wrong token, 503 no metrics token |

// The error type of the helpers here is the HTTP response to send; it is built at most once per
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use crate::bearer::{bearer_token, token_digest, BearerError};
use crate::body::{self, BodyError, BodyTimeouts};
use crate::forward::{ForwardError, Forwarder};
use crate::metrics::{Format, FrontendMetrics, Surface};
use crate::request_id::RequestId;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use mymcp_protocol::oauth::{OAuthControl, OAuthControlOutcome};
use mymcp_protocol::{
    AdminOp, AdminOutcome, CallOrigin, FrontendRequest, FrontendResponse, MetricsOutcome, Role,
    TokenDigest, TokenInfo, TokenLimits, TokenView,
};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest accepted `POST /admin/tokens` body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

#[derive(Clone, Debug)]
struct Ops {
    forwarder: Arc<Forwarder>,
    metrics: Arc<FrontendMetrics>,
    body_timeouts: BodyTimeouts,
}

/// The routes of this module, to merge into the application router. Request bodies are read
/// within `body_timeouts`.
pub fn routes(
    forwarder: Arc<Forwarder>,
    metrics: Arc<FrontendMetrics>,
    body_timeouts: BodyTimeouts,
) -> Router {
    Router::new()
        .route("/admin/tokens", get(list).post(create))
        .route("/admin/tokens/{selector}", delete(revoke))
        .route("/admin/oauth/clients", get(oauth_clients))
        .route("/admin/oauth/grants", get(oauth_grants))
        .route("/admin/oauth/{selector}", delete(oauth_revoke))
        .route("/metrics", get(scrape))
        .with_state(Ops {
            forwarder,
            metrics,
            body_timeouts,
        })
}

fn detail(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "detail": text }))).into_response()
}

fn unavailable() -> Response {
    let mut r = detail(StatusCode::SERVICE_UNAVAILABLE, "Executor unavailable");
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The caller's digest, or the 401 for a missing bearer token.
fn admin_token(ops: &Ops, headers: &HeaderMap) -> Result<TokenDigest, Response> {
    match bearer_token(headers.get(header::AUTHORIZATION)) {
        Ok(t) => Ok(token_digest(t)),
        // `Bearer ` with nothing after it is a token the executor will not know.
        Err(BearerError::Empty) => Ok(token_digest(b"")),
        Err(BearerError::Missing) => {
            ops.metrics.missing_token(Surface::Admin);
            Err(detail(StatusCode::UNAUTHORIZED, "Missing Bearer token"))
        }
    }
}

/// Who sent an admin request, for the executor's audit log.
fn origin(peer: SocketAddr, RequestId(request_id): RequestId) -> CallOrigin {
    CallOrigin {
        peer: peer.ip().to_canonical().to_string(),
        request_id,
    }
}

async fn ask(
    ops: &Ops,
    token: TokenDigest,
    origin: &CallOrigin,
    op: AdminOp,
) -> Result<AdminOutcome, Response> {
    let origin = origin.clone();
    match ops
        .forwarder
        .request(FrontendRequest::Admin { token, origin, op })
        .await
    {
        Ok(FrontendResponse::Admin(outcome)) => Ok(outcome),
        Ok(other) => {
            tracing::error!(
                ?other,
                "executor answered an admin request with something else"
            );
            Err(detail(
                StatusCode::BAD_GATEWAY,
                "Unexpected executor response",
            ))
        }
        Err(ForwardError::Unavailable) => Err(unavailable()),
        Err(e) => Err(detail(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

fn info_json(t: &TokenInfo) -> Value {
    json!({
        "id": t.id, "name": t.name, "role": t.role.as_str(), "user": t.user,
        "created_at": t.created_at, "last_used": t.last_used, "enabled": t.enabled,
        "limits": limits_json(&t.limits),
        "write_roots": t.view.write_roots, "hide": t.view.hide, "no_network": t.view.no_network,
    })
}

/// A token's own limits as the admin API shows them: only the fields that are set (an empty
/// object: the executor's defaults); 0 is "no limit".
pub fn limits_json(l: &TokenLimits) -> Value {
    let mut m = Map::new();
    if let Some(v) = l.memory_max_mib {
        m.insert("memory_max_mib".into(), v.into());
    }
    if let Some(v) = l.tasks_max {
        m.insert("tasks_max".into(), v.into());
    }
    if let Some(v) = l.cpu_max_percent {
        m.insert("cpu_max_percent".into(), v.into());
    }
    if let Some(v) = l.timeout_max_secs {
        m.insert("timeout_max_secs".into(), v.into());
    }
    Value::Object(m)
}

/// What a create body asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct CreateBody {
    pub name: String,
    pub role: Role,
    pub user: Option<String>,
    pub limits: TokenLimits,
    pub view: TokenView,
}

/// Answers for the outcomes every admin call may get.
fn common(outcome: AdminOutcome) -> Response {
    match outcome {
        AdminOutcome::Forbidden => detail(StatusCode::FORBIDDEN, "Admin token required"),
        AdminOutcome::NotFound => detail(StatusCode::NOT_FOUND, "Token not found"),
        AdminOutcome::Invalid(why) => detail(StatusCode::BAD_REQUEST, &why),
        AdminOutcome::Failed(why) => detail(StatusCode::INTERNAL_SERVER_ERROR, &why),
        other => {
            tracing::error!(?other, "unexpected admin outcome");
            detail(StatusCode::BAD_GATEWAY, "Unexpected executor response")
        }
    }
}

async fn list(
    State(ops): State<Ops>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let token = match admin_token(&ops, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match ask(&ops, token, &origin(peer, id), AdminOp::List).await {
        Ok(AdminOutcome::Tokens(list)) => {
            let map: Map<String, Value> =
                list.iter().map(|t| (t.id.clone(), info_json(t))).collect();
            Json(Value::Object(map)).into_response()
        }
        Ok(other) => common(other),
        Err(r) => r,
    }
}

/// Checks a create body: `name` (a non-empty string) is required, `role` is `ro` (default) or
/// `rw`, `user` (optional) the Unix account the token acts as; the executor checks that it
/// exists (none: its `MYMCP_DEFAULT_USER`). The token's own limits are optional:
/// `memory_max` (MiB, or a string such as `"256M"`), `tasks_max`, `cpu_max` (percent of one
/// CPU), `timeout_max` (seconds); 0 (`"none"` for memory) means no limit for this token.
pub fn parse_create(body: &[u8]) -> Result<CreateBody, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "invalid JSON body".to_owned())?;
    let Value::Object(m) = v else {
        return Err("body must be a JSON object with \"name\" and \"role\"".to_owned());
    };
    let name = match m.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
        Some(Value::String(_)) => return Err("name must not be empty".to_owned()),
        Some(_) => return Err("name must be a string".to_owned()),
        None => return Err("name is required".to_owned()),
    };
    let role = match m.get("role") {
        None | Some(Value::Null) => Role::Ro,
        Some(Value::String(r)) => match r.as_str() {
            "ro" => Role::Ro,
            "rw" => Role::Rw,
            _ => return Err(format!("Invalid role: '{r}'. Must be 'ro' or 'rw'.")),
        },
        Some(_) => return Err("role must be a string, 'ro' or 'rw'".to_owned()),
    };
    let user = match m.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err("user must be a string, the name of a Unix account".to_owned()),
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("{key} must be a whole number, 0 or more")),
            Some(_) => Err(format!("{key} must be a whole number, 0 or more")),
        }
    };
    let memory_max_mib = match m.get("memory_max") {
        Some(Value::String(s)) => Some(TokenLimits::parse_memory(s)?),
        _ => number("memory_max")?,
    };
    let limits = TokenLimits {
        memory_max_mib,
        tasks_max: number("tasks_max")?,
        cpu_max_percent: number("cpu_max")?,
        timeout_max_secs: number("timeout_max")?,
    };
    limits.check()?;
    let paths = |key: &str| -> Result<Vec<String>, String> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(format!("{key} must be an array of absolute paths")),
                })
                .collect(),
            Some(_) => Err(format!("{key} must be an array of absolute paths")),
        }
    };
    let view = TokenView {
        write_roots: paths("write_roots")?,
        hide: paths("hide")?,
        no_network: match m.get("no_network") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("no_network must be true or false".to_owned()),
        },
    };
    view.check()?;
    Ok(CreateBody {
        name,
        role,
        user,
        limits,
        view,
    })
}

async fn create(
    State(ops): State<Ops>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = tokio::time::Instant::now();
    let token = match admin_token(&ops, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let origin = origin(peer, id);
    // Who asks comes first: only an admin's body is read, and only an admin learns what is
    // wrong with it.
    match ask(&ops, token, &origin, AdminOp::Check).await {
        Ok(AdminOutcome::Allowed) => {}
        Ok(other) => return common(other),
        Err(r) => return r,
    }
    let parsed = match body::read_all(body, MAX_ADMIN_BODY, started, ops.body_timeouts).await {
        Ok(body) => parse_create(&body),
        Err(BodyError::TooLarge) => Err("body too large".to_owned()),
        Err(BodyError::TimedOut) => {
            return detail(StatusCode::REQUEST_TIMEOUT, "Request body timed out")
        }
        Err(BodyError::Failed(_)) => {
            return detail(StatusCode::BAD_REQUEST, "Failed to read request body")
        }
    };
    let CreateBody {
        name,
        role,
        user,
        limits,
        view,
    } = match parsed {
        Ok(p) => p,
        Err(why) => return detail(StatusCode::BAD_REQUEST, &why),
    };
    let op = AdminOp::Create {
        name,
        role,
        user,
        limits,
        view,
    };
    match ask(&ops, token, &origin, op).await {
        Ok(AdminOutcome::Created { token, info }) => Json(json!({
            "token": token, "id": info.id, "name": info.name, "role": info.role.as_str(),
            "user": info.user, "created_at": info.created_at,
            "limits": limits_json(&info.limits),
            "write_roots": info.view.write_roots, "hide": info.view.hide,
            "no_network": info.view.no_network,
        }))
        .into_response(),
        Ok(other) => common(other),
        Err(r) => r,
    }
}

async fn revoke(
    State(ops): State<Ops>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    Path(selector): Path<String>,
) -> Response {
    let token = match admin_token(&ops, &headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match ask(
        &ops,
        token,
        &origin(peer, id),
        AdminOp::Revoke {
            selector: selector.clone(),
        },
    )
    .await
    {
        Ok(AdminOutcome::Revoked(info)) => Json(json!({
            "revoked": selector, "id": info.id, "name": info.name, "role": info.role.as_str(),
        }))
        .into_response(),
        Ok(other) => common(other),
        Err(r) => r,
    }
}

/// Asks an OAuth management question as the admin token of `headers` and answers with the
/// JSON `render` makes of the outcome (`None`: not the answer this question gets, 502).
async fn oauth(
    ops: &Ops,
    (peer, id, headers): (SocketAddr, RequestId, &HeaderMap),
    request: OAuthControl,
    render: impl FnOnce(OAuthControlOutcome) -> Option<Value>,
) -> Response {
    let token = match admin_token(ops, headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match ask(ops, token, &origin(peer, id), AdminOp::OAuth(request)).await {
        Ok(AdminOutcome::OAuth(outcome)) => match render(outcome) {
            Some(json) => Json(json).into_response(),
            None => detail(StatusCode::BAD_GATEWAY, "Unexpected executor response"),
        },
        Ok(AdminOutcome::NotFound) => detail(StatusCode::NOT_FOUND, "No such grant or client"),
        Ok(other) => common(other),
        Err(r) => r,
    }
}

/// `GET /admin/oauth/clients`: the registered clients and how many live grants each holds.
async fn oauth_clients(
    State(ops): State<Ops>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    oauth(
        &ops,
        (peer, id, &headers),
        OAuthControl::Clients,
        |o| match o {
            OAuthControlOutcome::Clients(list) => Some(Value::Array(
                (list.iter())
                    .map(|c| {
                        json!({
                            "client_id": c.client_id, "client_name": c.client_name,
                            "redirect_uris": c.redirect_uris, "created_at": c.created_at,
                            "grants": c.grants,
                        })
                    })
                    .collect(),
            )),
            _ => None,
        },
    )
    .await
}

/// `GET /admin/oauth/grants`: the live grants (client, account, role, times).
async fn oauth_grants(
    State(ops): State<Ops>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    oauth(
        &ops,
        (peer, id, &headers),
        OAuthControl::Grants,
        |o| match o {
            OAuthControlOutcome::Grants(list) => Some(Value::Array(
                (list.iter())
                    .map(|g| {
                        json!({
                            "id": g.id, "client_id": g.client_id, "client_name": g.client_name,
                            "user": g.user, "role": g.role.as_str(), "created_at": g.created_at,
                            "last_refreshed": g.last_refreshed, "expires_at": g.expires_at,
                        })
                    })
                    .collect(),
            )),
            _ => None,
        },
    )
    .await
}

/// `DELETE /admin/oauth/{grant number or client id}`: its tokens stop working at once.
async fn oauth_revoke(
    State(ops): State<Ops>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    Path(selector): Path<String>,
) -> Response {
    // What the protocol could not carry names nothing here.
    if selector.len() > mymcp_protocol::oauth::MAX_SELECTOR_LEN
        || selector.chars().any(char::is_control)
    {
        return detail(StatusCode::NOT_FOUND, "No such grant or client");
    }
    let request = OAuthControl::Revoke {
        selector: selector.clone(),
    };
    oauth(&ops, (peer, id, &headers), request, |o| match o {
        OAuthControlOutcome::Revoked { clients, grants } => Some(json!({
            "revoked": selector, "clients": clients, "grants": grants,
        })),
        _ => None,
    })
    .await
}

async fn scrape(State(ops): State<Ops>, headers: HeaderMap) -> Response {
    let token = match bearer_token(headers.get(header::AUTHORIZATION)) {
        Ok(t) => Some(token_digest(t)),
        Err(BearerError::Empty) => Some(token_digest(b"")),
        Err(BearerError::Missing) => None,
    };
    let answer = ops
        .forwarder
        .request(FrontendRequest::Metrics { token })
        .await;
    match answer {
        Ok(FrontendResponse::Metrics(MetricsOutcome::Snapshot(snapshot))) => {
            let format = Format::negotiate(
                headers
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            (
                StatusCode::OK,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    ),
                    (header::VARY, HeaderValue::from_static("Accept")),
                ],
                ops.metrics
                    .render(&snapshot, ops.forwarder.is_connected(), format),
            )
                .into_response()
        }
        Ok(FrontendResponse::Metrics(MetricsOutcome::Disabled)) => detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "Metrics disabled: MYMCP_METRICS_TOKEN not configured",
        ),
        // Counted by the executor, which saw the request even without a token.
        Ok(FrontendResponse::Metrics(MetricsOutcome::Unauthorized)) => {
            detail(StatusCode::UNAUTHORIZED, "Unauthorized")
        }
        Ok(other) => {
            tracing::error!(
                ?other,
                "executor answered a metrics request with something else"
            );
            detail(StatusCode::BAD_GATEWAY, "Unexpected executor response")
        }
        Err(ForwardError::Unavailable) => unavailable(),
        Err(e) => detail(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str, role: Role, user: Option<&str>) -> CreateBody {
        CreateBody {
            name: name.into(),
            role,
            user: user.map(Into::into),
            limits: TokenLimits::default(),
            view: TokenView::default(),
        }
    }

    #[test]
    fn create_bodies_are_checked_like_the_reference() {
        assert_eq!(
            parse_create(br#"{"name":"a","role":"rw"}"#),
            Ok(body("a", Role::Rw, None))
        );
        assert_eq!(
            parse_create(br#"{"name":"a"}"#),
            Ok(body("a", Role::Ro, None))
        );
        assert_eq!(
            parse_create(br#"{"name":"a","role":"ro","user":"alice"}"#),
            Ok(body("a", Role::Ro, Some("alice")))
        );
        assert_eq!(
            parse_create(br#"{"name":"a","user":7}"#).unwrap_err(),
            "user must be a string, the name of a Unix account"
        );
        assert_eq!(
            parse_create(br#"{"role":"rw"}"#).unwrap_err(),
            "name is required"
        );
        assert_eq!(
            parse_create(br#"{"name":""}"#).unwrap_err(),
            "name must not be empty"
        );
        assert_eq!(
            parse_create(br#"{"name":1}"#).unwrap_err(),
            "name must be a string"
        );
        assert_eq!(parse_create(b"{").unwrap_err(), "invalid JSON body");
        assert_eq!(
            parse_create(br#"{"name":"a","role":"admin"}"#).unwrap_err(),
            "Invalid role: 'admin'. Must be 'ro' or 'rw'."
        );
    }

    #[test]
    fn create_bodies_carry_the_tokens_limits() {
        let b = parse_create(
            br#"{"name":"a","role":"rw","memory_max":"256M","tasks_max":64,"cpu_max":50,"timeout_max":20}"#,
        )
        .unwrap();
        let want = TokenLimits {
            memory_max_mib: Some(256),
            tasks_max: Some(64),
            cpu_max_percent: Some(50),
            timeout_max_secs: Some(20),
        };
        assert_eq!(b.limits, want);
        assert_eq!(
            limits_json(&b.limits),
            json!({"memory_max_mib": 256, "tasks_max": 64, "cpu_max_percent": 50, "timeout_max_secs": 20})
        );
        let b = parse_create(br#"{"name":"a","memory_max":512,"tasks_max":0}"#).unwrap();
        assert_eq!(b.limits.memory_max_mib, Some(512));
        assert_eq!(b.limits.tasks_max, Some(0), "0: no limit for this token");
        assert_eq!(
            parse_create(br#"{"name":"a","tasks_max":-1}"#).unwrap_err(),
            "tasks_max must be a whole number, 0 or more"
        );
        assert_eq!(
            parse_create(br#"{"name":"a","timeout_max":0}"#).unwrap_err(),
            "timeout_max must be at least 1 second"
        );
        assert!(parse_create(br#"{"name":"a","memory_max":"lots"}"#)
            .unwrap_err()
            .contains("invalid memory size"));
    }
}
