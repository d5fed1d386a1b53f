//! The authorization server's endpoints: `POST /register`, `GET /authorize`, the consent page
//! (`/consent/{id}`, its Deny and its password login), `POST /token` and `POST /revoke`. Forms
//! are read here, every secret in them (code, refresh token, token to revoke) leaves as its
//! SHA-256 digest, and the executor decides. Public clients only (PKCE; a `client_secret` is
//! refused there).
//! `GET /authorize` with an `https` `client_id` fetches the client's metadata document first
//! ([`crate::cimd`]).

use crate::cimd::{Cimd, CimdConfig, Refused};
use crate::forward::Forwarder;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use mymcp_protocol::oauth::{ClientAuth, OAuthErrorCode, OAuthOutcome, OAuthRequest};
use mymcp_protocol::{CallOrigin, FrontendRequest, FrontendResponse, Role, TokenDigest};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest form accepted (a code, a verifier and URIs fit many times over).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// What the handlers share: the executor connection and the metadata document fetcher.
#[derive(Clone)]
struct Endpoints {
    forwarder: Arc<Forwarder>,
    cimd: Arc<Cimd>,
}

impl FromRef<Endpoints> for Arc<Forwarder> {
    fn from_ref(e: &Endpoints) -> Arc<Forwarder> {
        e.forwarder.clone()
    }
}

impl FromRef<Endpoints> for Arc<Cimd> {
    fn from_ref(e: &Endpoints) -> Arc<Cimd> {
        e.cimd.clone()
    }
}

/// The routes, when OAuth is on (none otherwise). The extra roots were checked at start-up
/// ([`CimdConfig::from_settings`]); one rustls refuses anyway is left out, with an error.
/// `trusted`: the reverse proxies whose `X-Forwarded-For` names the client of a login (its
/// failures count per client address).
pub fn routes(
    on: bool,
    forwarder: Arc<Forwarder>,
    cimd: &CimdConfig,
    trusted: crate::origin::TrustedProxies,
) -> Router {
    if !on {
        return Router::new();
    }
    let cimd = Cimd::new(cimd)
        .or_else(|e| {
            tracing::error!("MYMCP_OUTBOUND_CA_FILE: {e}; the Mozilla roots alone are trusted");
            Cimd::new(&CimdConfig::default())
        })
        .expect("the Mozilla roots make a TLS client");
    let state = Endpoints {
        forwarder,
        cimd: Arc::new(cimd),
    };
    // What clients fetch themselves (browser-based ones too: CORS); then the pages.
    let for_clients = Router::new()
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/register", post(register))
        .layer(axum::middleware::from_fn(crate::authz::cors));
    Router::new()
        .route("/authorize", axum::routing::get(authorize))
        .route(
            "/consent/{id}",
            axum::routing::get(consent).post(consent_deny),
        )
        .route(
            "/consent/{id}/login",
            post(consent_login).layer(axum::Extension(Arc::new(trusted))),
        )
        .merge(for_clients)
        // No form or registration comes near this; nothing larger is read (413).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Largest body any of these endpoints reads: a registration with ten 2 KiB redirect URIs and
/// a name fits, and each handler holds forms to [`MAX_FORM_BYTES`].
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The cookie that carries a pending request's secret.
const COOKIE: &str = "mymcp_consent";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A page with `text` for a person (an error that cannot go back to the client).
fn page(status: StatusCode, html: String) -> Response {
    let mut r = (status, axum::response::Html(html)).into_response();
    for (name, value) in crate::consent::HEADERS {
        r.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    r
}

fn problem_page(text: &str) -> Response {
    problem_page_with(StatusCode::BAD_REQUEST, text)
}

fn problem_page_with(status: StatusCode, text: &str) -> Response {
    page(
        status,
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mymcp</title></head>\
<body><h1>This request cannot go on</h1><p>{}</p></body></html>\n",
            crate::consent::escape(text)
        ),
    )
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => problem_page("the client's redirect URI cannot be used"),
    }
}

/// The pending request the browser holds: the id in the path, the secret in the cookie.
fn pending_ref(id: &str, headers: &HeaderMap) -> Option<mymcp_protocol::oauth::PendingRef> {
    let id = unhex::<16>(id)?;
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    let secret = cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .and_then(|(_, v)| unhex::<32>(v))?;
    Some(mymcp_protocol::oauth::PendingRef {
        id: mymcp_protocol::oauth::PendingId(id),
        secret: mymcp_protocol::oauth::Secret(secret),
    })
}

/// Where the executor's decision sends the browser.
fn decided(outcome: OAuthOutcome, id: &str) -> Response {
    match outcome {
        OAuthOutcome::Waiting(w) => {
            let mut r = page(
                StatusCode::OK,
                crate::consent::waiting_page(&w, &format!("/consent/{id}"), &hex(&w.csrf.0)),
            );
            if let Ok(csp) =
                HeaderValue::from_str(&crate::consent::content_security_policy(&w.redirect_uri))
            {
                r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
            }
            r
        }
        OAuthOutcome::Redirect(url) => see_other(&url),
        OAuthOutcome::Error(e) => match e.redirect {
            Some(url) => see_other(&url),
            None => problem_page(&e.description),
        },
        _ => problem_page("unexpected answer"),
    }
}

async fn authorize(
    State(forwarder): State<Arc<Forwarder>>,
    State(cimd): State<Arc<Cimd>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
) -> Response {
    let Some(q) = parse_form(uri.query().unwrap_or("").as_bytes()) else {
        return problem_page("malformed query, or a parameter given twice");
    };
    if field(&q, "response_type") != Some("code") {
        return problem_page("response_type must be code");
    }
    if field(&q, "code_challenge_method") != Some("S256") {
        return problem_page("PKCE with code_challenge_method=S256 is required");
    }
    let (Some(client_id), Some(redirect_uri), Some(challenge)) = (
        field(&q, "client_id"),
        field(&q, "redirect_uri"),
        field(&q, "code_challenge"),
    ) else {
        return problem_page("client_id, redirect_uri and code_challenge are required");
    };
    let scope = match field(&q, "scope").unwrap_or("mymcp:ro") {
        s if s.split(' ').all(|x| x == "mymcp:ro") => Role::Ro,
        s if s.split(' ').all(|x| x == "mymcp:ro" || x == "mymcp:rw") => Role::Rw,
        _ => return problem_page("unknown scope (mymcp:ro, mymcp:rw)"),
    };
    let params = mymcp_protocol::oauth::AuthorizeParams {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        state: field(&q, "state").map(str::to_owned),
        code_challenge: challenge.to_owned(),
        scope,
        resource: field(&q, "resource").map(str::to_owned),
    };
    // An `https` client_id is its metadata document's URL; any other URL cannot be one; a
    // plain id is a registered client's. Refusals are shown here: the redirect URI is not
    // known to be the client's.
    let document = if client_id.starts_with("https://") {
        match cimd.document(client_id).await {
            Ok(document) => Some(document),
            Err(Refused::Busy) => {
                return problem_page_with(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("temporarily_unavailable: {}", Refused::Busy),
                )
            }
            Err(e) => return problem_page(&e.to_string()),
        }
    } else if client_id.contains("://") {
        return problem_page(
            "a client_id URL must be https: it names the client's metadata document, which is fetched over https only",
        );
    } else {
        None
    };
    let request = OAuthRequest::Authorize {
        params,
        document,
        origin: origin(peer),
    };
    match ask(&forwarder, request).await {
        Ok(OAuthOutcome::Opened(r)) => {
            let id = hex(&r.id.0);
            let mut resp = see_other(&format!("/consent/{id}"));
            let cookie = format!(
                "{COOKIE}={}; Path=/consent/{id}; HttpOnly; Secure; SameSite=Lax; Max-Age=600",
                hex(&r.secret.0)
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Ok(other) => decided(other, ""),
        Err((_, why)) => problem_page(why),
    }
}

async fn consent(
    State(forwarder): State<Arc<Forwarder>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(request) = pending_ref(&id, &headers) else {
        return problem_page("this page belongs to another browser, or has expired");
    };
    match ask(&forwarder, OAuthRequest::Consent { request }).await {
        Ok(outcome) => decided(outcome, &id),
        Err((_, why)) => problem_page(why),
    }
}

async fn consent_deny(
    State(forwarder): State<Arc<Forwarder>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(request) = pending_ref(&id, &headers) else {
        return problem_page("this page belongs to another browser, or has expired");
    };
    let csrf = parse_form(&body)
        .and_then(|f| field(&f, "csrf").and_then(unhex::<32>))
        .map(mymcp_protocol::oauth::Secret);
    let Some(csrf) = csrf else {
        return problem_page("the form is incomplete; reload the page");
    };
    match ask(&forwarder, OAuthRequest::Deny { request, csrf }).await {
        Ok(outcome) => decided(outcome, &id),
        Err((_, why)) => problem_page(why),
    }
}

/// The consent page's login form (`MYMCP_OAUTH_PAM`): the account and its password go to the
/// executor, which checks them with PAM (never here) and answers with the redirect or the page
/// again. The bounds the executor decodes with are checked first.
async fn consent_login(
    State(forwarder): State<Arc<Forwarder>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(trusted): axum::Extension<Arc<crate::origin::TrustedProxies>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use mymcp_protocol::oauth::{MAX_PASSWORD_LEN, MAX_USER_LEN};
    let Some(request) = pending_ref(&id, &headers) else {
        return problem_page("this page belongs to another browser, or has expired");
    };
    let Some(mut form) = (body.len() <= MAX_FORM_BYTES)
        .then(|| parse_form(&body))
        .flatten()
    else {
        return problem_page("the form is incomplete; reload the page");
    };
    let csrf = field(&form, "csrf")
        .and_then(unhex::<32>)
        .map(mymcp_protocol::oauth::Secret);
    let user = field(&form, "user").map(str::to_owned);
    let password = form
        .iter_mut()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| std::mem::take(v));
    for (_, v) in &mut form {
        mymcp_sys::pam::wipe_string(v);
    }
    let (Some(csrf), Some(user), Some(mut password)) = (csrf, user, password) else {
        return problem_page("the form is incomplete; reload the page");
    };
    // As the executor decodes them (a longer field would be a protocol violation).
    if user.is_empty()
        || user.len() > MAX_USER_LEN
        || !user.bytes().all(|b| b.is_ascii_graphic())
        || password.is_empty()
        || password.len() > MAX_PASSWORD_LEN
    {
        mymcp_sys::pam::wipe_string(&mut password);
        return problem_page(
            "an account name is 1 to 32 visible characters, a password 1 to 512 bytes; go back and try again",
        );
    }
    let forwarded_for = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let client = trusted.client(peer.ip(), forwarded_for);
    let login = OAuthRequest::Login {
        request,
        csrf,
        user,
        password: mymcp_protocol::oauth::Password(password),
        origin: origin(SocketAddr::new(client, peer.port())),
    };
    match ask(&forwarder, login).await {
        Ok(outcome) => decided(outcome, &id),
        Err((_, why)) => problem_page(why),
    }
}

/// `application/x-www-form-urlencoded` pairs, percent- and `+`-decoded; `None` if malformed
/// or a name repeats (RFC 6749 §3.2: parameters must not be included more than once).
pub fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k)?, decode(v)?);
        if out.iter().any(|(name, _)| *name == k) {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    let s = String::from_utf8(out).ok()?;
    (!s.chars().any(char::is_control)).then_some(s)
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn digest(secret: &str) -> TokenDigest {
    TokenDigest(Sha256::digest(secret.as_bytes()).into())
}

/// An RFC 6749 §5.2 error (`invalid_client` is 401), never cached.
fn oauth_error(code: OAuthErrorCode, description: &str) -> Response {
    let status = match code {
        OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        OAuthErrorCode::TemporarilyUnavailable | OAuthErrorCode::ServerError => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    no_store(
        status,
        json!({"error": code.as_str(), "error_description": description}),
    )
}

fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error answered as [`oauth_error`] says.
type Refusal = (OAuthErrorCode, &'static str);

fn refused((code, description): Refusal) -> Response {
    oauth_error(code, description)
}

fn form_of(headers: &HeaderMap, body: &Bytes) -> Result<Vec<(String, String)>, Refusal> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form || body.len() > MAX_FORM_BYTES {
        return Err((
            OAuthErrorCode::InvalidRequest,
            "expected an application/x-www-form-urlencoded body",
        ));
    }
    parse_form(body).ok_or((
        OAuthErrorCode::InvalidRequest,
        "malformed form, or a parameter given twice",
    ))
}

/// The form of a client's request to `/token` or `/revoke`, and who the client is.
fn client_form(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Vec<(String, String)>, ClientAuth), Refusal> {
    let form = form_of(headers, body)?;
    let client = client_of(&form)?;
    Ok((form, client))
}

fn client_of(form: &[(String, String)]) -> Result<ClientAuth, Refusal> {
    if field(form, "client_secret").is_some() {
        return Err((
            OAuthErrorCode::InvalidClient,
            "public clients only: authenticate with PKCE, without a client_secret",
        ));
    }
    let client_id = field(form, "client_id")
        .filter(|c| !c.is_empty())
        .ok_or((OAuthErrorCode::InvalidRequest, "client_id is missing"))?;
    Ok(ClientAuth {
        client_id: client_id.to_owned(),
        secret: None,
    })
}

fn origin(peer: SocketAddr) -> CallOrigin {
    CallOrigin {
        peer: peer.ip().to_string(),
        request_id: "oauth".into(),
    }
}

async fn ask(forwarder: &Forwarder, request: OAuthRequest) -> Result<OAuthOutcome, Refusal> {
    match forwarder.request(FrontendRequest::OAuth(request)).await {
        Ok(FrontendResponse::OAuth(outcome)) => Ok(outcome),
        // A frame the executor refused (a field out of bounds) or no executor.
        Ok(_) | Err(_) => Err((
            OAuthErrorCode::TemporarilyUnavailable,
            "the authorization server cannot answer now",
        )),
    }
}

async fn token(
    State(forwarder): State<Arc<Forwarder>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, client) = match client_form(&headers, &body) {
        Ok(fc) => fc,
        Err(r) => return refused(r),
    };
    let resource = field(&form, "resource").map(str::to_owned);
    let request = match field(&form, "grant_type") {
        Some("authorization_code") => {
            let (Some(code), Some(redirect_uri), Some(verifier)) = (
                field(&form, "code"),
                field(&form, "redirect_uri"),
                field(&form, "code_verifier"),
            ) else {
                return oauth_error(
                    OAuthErrorCode::InvalidRequest,
                    "code, redirect_uri and code_verifier are required",
                );
            };
            OAuthRequest::Exchange {
                code: digest(code),
                client,
                redirect_uri: redirect_uri.to_owned(),
                verifier: verifier.to_owned(),
                resource,
                origin: origin(peer),
            }
        }
        Some("refresh_token") => {
            let Some(refresh) = field(&form, "refresh_token") else {
                return oauth_error(OAuthErrorCode::InvalidRequest, "refresh_token is required");
            };
            let scope = match field(&form, "scope") {
                None => None,
                Some(s) if s.split(' ').all(|x| x == "mymcp:ro") => Some(Role::Ro),
                Some(s) if s.split(' ').all(|x| x == "mymcp:ro" || x == "mymcp:rw") => {
                    Some(Role::Rw)
                }
                Some(_) => {
                    return oauth_error(OAuthErrorCode::InvalidScope, "unknown scope");
                }
            };
            OAuthRequest::Refresh {
                token: digest(refresh),
                client,
                scope,
                resource,
                origin: origin(peer),
            }
        }
        _ => {
            return oauth_error(
                OAuthErrorCode::InvalidRequest,
                "grant_type must be authorization_code or refresh_token",
            )
        }
    };
    match ask(&forwarder, request).await {
        Ok(OAuthOutcome::Tokens(t)) => no_store(
            StatusCode::OK,
            json!({
                "access_token": t.access_token,
                "token_type": "Bearer",
                "expires_in": t.expires_in,
                "refresh_token": t.refresh_token,
                "scope": if t.scope == Role::Rw { "mymcp:ro mymcp:rw" } else { "mymcp:ro" },
            }),
        ),
        Ok(OAuthOutcome::Error(e)) => oauth_error(e.code, &e.description),
        Ok(_) => oauth_error(OAuthErrorCode::ServerError, "unexpected answer"),
        Err(r) => refused(r),
    }
}

async fn revoke(
    State(forwarder): State<Arc<Forwarder>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, client) = match client_form(&headers, &body) {
        Ok(fc) => fc,
        Err(r) => return refused(r),
    };
    let Some(token) = field(&form, "token") else {
        return oauth_error(OAuthErrorCode::InvalidRequest, "token is required");
    };
    let request = OAuthRequest::Revoke {
        token: digest(token),
        client,
        origin: origin(peer),
    };
    match ask(&forwarder, request).await {
        // RFC 7009 §2.2: 200 whether or not there was something to revoke.
        Ok(_) => no_store(StatusCode::OK, json!({})),
        Err(r) => refused(r),
    }
}

/// RFC 7591 `POST /register`: a public client (PKCE, no secret). The bounds the executor
/// decodes with are checked here first.
async fn register(
    State(forwarder): State<Arc<Forwarder>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    use mymcp_protocol::oauth::{
        ClientAuthMethod, ClientMetadata, MAX_CLIENT_NAME_LEN, MAX_REDIRECT_URIS, MAX_URI_LEN,
    };
    let invalid = |why: &'static str| refused((OAuthErrorCode::InvalidClientMetadata, why));
    if body.len() > MAX_FORM_BYTES {
        return invalid("registration too large");
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return invalid("expected a JSON object");
    };
    let uris: Option<Vec<String>> = v["redirect_uris"].as_array().map(|a| {
        a.iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect()
    });
    let Some(uris) = uris.filter(|u| {
        !u.is_empty()
            && u.len() <= MAX_REDIRECT_URIS
            && u.iter()
                .all(|x| x.len() <= MAX_URI_LEN && !x.chars().any(char::is_control))
    }) else {
        return refused((
            OAuthErrorCode::InvalidRedirectUri,
            "redirect_uris: 1 to 10 URIs",
        ));
    };
    let name = v["client_name"]
        .as_str()
        .filter(|n| n.len() <= MAX_CLIENT_NAME_LEN && !n.chars().any(char::is_control))
        .map(str::to_owned);
    match v["token_endpoint_auth_method"].as_str() {
        None | Some("none") => {}
        Some(_) => return invalid("public clients only: token_endpoint_auth_method none"),
    }
    let request = OAuthRequest::Register {
        client: ClientMetadata {
            client_name: name,
            redirect_uris: uris,
            token_endpoint_auth_method: ClientAuthMethod::None,
        },
        origin: origin(peer),
    };
    match ask(&forwarder, request).await {
        Ok(OAuthOutcome::Registered(r)) => no_store(
            StatusCode::CREATED,
            json!({
                "client_id": r.client_id,
                "client_id_issued_at": r.issued_at,
                "client_name": r.client.client_name,
                "redirect_uris": r.client.redirect_uris,
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            }),
        ),
        Ok(OAuthOutcome::Error(e)) => oauth_error(e.code, &e.description),
        Ok(_) => oauth_error(OAuthErrorCode::ServerError, "unexpected answer"),
        Err(r) => refused(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_decoded_and_repeated_or_broken_ones_refused() {
        assert_eq!(
            parse_form(
                b"grant_type=authorization_code&redirect_uri=https%3A%2F%2Fc.example%2Fcb&x=a+b"
            ),
            Some(vec![
                ("grant_type".into(), "authorization_code".into()),
                ("redirect_uri".into(), "https://c.example/cb".into()),
                ("x".into(), "a b".into()),
            ])
        );
        assert_eq!(parse_form(b"code=1&code=2"), None);
        assert_eq!(parse_form(b"code=%zz"), None);
        assert_eq!(parse_form(b"code=%0a"), None, "control characters");
        assert_eq!(parse_form(b"code=%"), None);
    }
}
