//! The authorization server's decisions: each [`OAuthRequest`] the frontend forwards and each
//! [`OAuthControl`] `mymcpctl oauth` sends, answered from the tables of this module's siblings.
//! Nothing here talks to the network or the disk; the caller brings the clock and the random
//! bytes (so the tests drive whole flows).

use super::codes::{self, Codes, Exchange, Refused};
use super::grants::{GrantInfo, Grants, RefreshRefused};
use super::login::{self, Attempt, Checked, Checker, Limiter};
use super::pending::{ApproveRefused, Fresh, Pending, Request, Stage};
use super::text;
use mymcp_protocol::oauth::{
    AuthorizeParams, ClientAuth, ClientMetadata, OAuthClientInfo, OAuthControl,
    OAuthControlOutcome, OAuthError, OAuthErrorCode, OAuthOutcome, OAuthRequest, PendingInfo,
    PendingRef, Secret, TokenSet, Waiting,
};
use mymcp_protocol::Role;
use std::sync::Arc;
use std::time::Instant;

/// Random bytes on demand (the executor's `getrandom`; a counter in tests).
pub(crate) type Random = Box<dyn Fn(&mut [u8]) + Send + Sync>;

/// The authorization server of one issuer.
pub(crate) struct Server {
    /// The issuer (RFC 8414, RFC 9207 `iss`): the public base URL.
    issuer: String,
    /// The resource tokens are for (RFC 8707): the canonical URL of `/mcp`.
    resource: String,
    pending: Pending,
    codes: Codes,
    grants: Arc<Grants>,
    /// Clients registered with `POST /register` (RFC 7591), by id.
    clients: std::sync::Mutex<std::collections::HashMap<String, RegisteredClient>>,
    random: Random,
    /// Where clients and grants are kept across restarts, and the lock that orders writes.
    state_file: Option<std::path::PathBuf>,
    /// Held while saving: the changes (grants', clients') the file holds, if known.
    saving: std::sync::Mutex<Option<(u64, u64)>>,
    /// Counts registrations and removals of clients.
    client_changes: std::sync::atomic::AtomicU64,
    /// The consent page's password login (`MYMCP_OAUTH_PAM`), if on.
    pam: Option<Pam>,
}

/// The password login: its limits and how a login is checked.
struct Pam {
    limiter: Limiter,
    checker: Box<dyn Checker>,
}

/// How a login ended, for its audit record (never the password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoginReport {
    /// The client of the request the login was for, when the browser held one.
    pub(crate) client_id: Option<String>,
    pub(crate) result: LoginResult,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LoginResult {
    /// Approved as the account (uid).
    Approved { uid: u32 },
    /// Wrong password, not a member, no such account, refused by PAM: why.
    Refused(String),
    /// Not tried: a limit was reached.
    Limited(&'static str),
    /// The check could not be made.
    Failed(String),
    /// No waiting request for this browser and form (cookie, CSRF token), or the login is off.
    Invalid(&'static str),
}

/// A client registered with `POST /register`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct RegisteredClient {
    metadata: ClientMetadata,
    /// Wall-clock seconds of the registration.
    created: i64,
}

/// What outlives a restart (the state file): registered clients and live grants. Waiting
/// requests and authorization codes live minutes and are not kept.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    clients: std::collections::BTreeMap<String, RegisteredClient>,
    grants: Vec<super::grants::Stored>,
}

/// The approval code as typed, normalised, or why it is not one.
fn approval_code(typed: &str) -> Result<String, String> {
    text::normalize_approval_code(typed)
        .ok_or_else(|| "not an approval code (ABCD-EFGH, as the page shows it)".into())
}

fn refused(why: ApproveRefused) -> String {
    match why {
        ApproveRefused::NoSuchCode => {
            "no request is waiting with this code (it may have expired)".into()
        }
        ApproveRefused::TooManyWrongCodes => {
            "too many wrong codes were typed; wait, then open the page again".into()
        }
    }
}

/// Why `client` cannot be registered (RFC 7591 §3.2.2), if it cannot: a public client (PKCE,
/// no secret) with redirect URIs this server accepts.
fn registration_problem(client: &ClientMetadata) -> Option<(OAuthErrorCode, &'static str)> {
    use mymcp_protocol::oauth::ClientAuthMethod;
    if client.token_endpoint_auth_method != ClientAuthMethod::None {
        return Some((
            OAuthErrorCode::InvalidClientMetadata,
            "public clients only: token_endpoint_auth_method must be none",
        ));
    }
    if client.redirect_uris.is_empty() {
        return Some((
            OAuthErrorCode::InvalidRedirectUri,
            "redirect_uris is required",
        ));
    }
    (client.redirect_uris.iter())
        .find_map(|u| text::redirect_uri_problem(u))
        .map(|why| (OAuthErrorCode::InvalidRedirectUri, why))
}

/// Registered clients, at most (beyond, registration is refused).
pub(crate) const MAX_CLIENTS: usize = 256;

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("issuer", &self.issuer)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

fn error(code: OAuthErrorCode, description: &str) -> OAuthOutcome {
    OAuthOutcome::Error(OAuthError {
        code,
        description: description.to_owned(),
        redirect: None,
    })
}

impl Server {
    /// The server of `config`, with the clients and grants its state file kept (a file that
    /// cannot be read is reported and left to be replaced: its clients sign in again).
    pub(crate) fn new(config: super::OAuthConfig, random: Random) -> Server {
        let pam = config.pam.map(|config| Pam {
            limiter: Limiter::default(),
            checker: Box::new(login::PamChecker {
                config,
                helper: login::Helper::executor(),
            }),
        });
        let server = Server {
            pam,
            issuer: config.issuer,
            resource: config.resource,
            pending: Pending::default(),
            codes: Codes::default(),
            grants: Arc::new(Grants::new(config.lifetimes)),
            clients: Default::default(),
            random,
            state_file: config.state_file,
            saving: Default::default(),
            client_changes: Default::default(),
        };
        if let Some(path) = &server.state_file {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                    Ok(state) => server.restore(state),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "the OAuth state file cannot be read; its clients and grants are not restored")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "the OAuth state file cannot be read; its clients and grants are not restored")
                }
            }
        }
        server
    }

    fn restore(&self, state: State) {
        let (now, wall) = (Instant::now(), mymcp_tokens::clock::unix_now());
        let clients: std::collections::HashMap<_, _> = (state.clients.into_iter())
            .filter(|(id, c)| {
                id.starts_with("mcpc_") && registration_problem(&c.metadata).is_none()
            })
            .take(MAX_CLIENTS)
            .collect();
        let n_clients = clients.len();
        *self.clients.lock().unwrap_or_else(|e| e.into_inner()) = clients;
        let n_grants = self.grants.restore(state.grants, &self.resource, now, wall);
        // The file holds this (or more: what was dropped goes at the next change).
        *self.saving.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.changes());
        tracing::info!(
            clients = n_clients,
            grants = n_grants,
            "OAuth clients and grants restored"
        );
    }

    /// Writes the clients and live grants to the state file (atomically, mode 0600), if there
    /// is one. A failure is logged: the server goes on with what it has in memory.
    fn save(&self) {
        let Some(path) = &self.state_file else {
            return;
        };
        // One at a time, and only what changed since: a refused request writes nothing.
        let mut saved = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let changes = self.changes();
        if *saved == Some(changes) {
            return;
        }
        let clients = (self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter())
        .map(|(id, c)| (id.clone(), c.clone()))
        .collect();
        let state = State {
            clients,
            grants: (self.grants).snapshot(Instant::now(), mymcp_tokens::clock::unix_now()),
        };
        let written = serde_json::to_vec(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| mymcp_audit::keys::write_atomic(path, &bytes, 0o600));
        match written {
            Ok(()) => *saved = Some(changes),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the OAuth state file cannot be written; clients and grants live in memory until it can")
            }
        }
    }

    /// The changes grants and clients have seen.
    fn changes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.grants.changes(),
            self.client_changes.load(Ordering::Relaxed),
        )
    }

    /// The grants, for the token store to answer for ([`mymcp_tokens::TokenStore::delegate`]).
    pub(crate) fn grants(&self) -> Arc<Grants> {
        Arc::clone(&self.grants)
    }

    fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        (self.random)(&mut b);
        b
    }

    /// Answers one request of the frontend; what registered a client or created, rotated or
    /// revoked a grant is saved.
    pub(crate) fn handle(&self, request: OAuthRequest, now: Instant) -> OAuthOutcome {
        let changes = matches!(
            request,
            OAuthRequest::Register { .. }
                | OAuthRequest::Exchange { .. }
                | OAuthRequest::Refresh { .. }
                | OAuthRequest::Revoke { .. }
        );
        let outcome = self.answer(request, now);
        if changes {
            self.save();
        }
        outcome
    }

    fn answer(&self, request: OAuthRequest, now: Instant) -> OAuthOutcome {
        match request {
            OAuthRequest::Authorize {
                params, document, ..
            } => self.authorize(params, document, now),
            OAuthRequest::Consent { request } => self.consent(&request, None, now),
            OAuthRequest::Deny { request, csrf } => {
                if self.pending.deny(&request, &csrf, now) {
                    self.handle(OAuthRequest::Consent { request }, now)
                } else {
                    error(OAuthErrorCode::InvalidRequest, "nothing to deny")
                }
            }
            OAuthRequest::Exchange {
                code,
                client,
                redirect_uri,
                verifier,
                resource,
                ..
            } => {
                if let Some(e) = public_client(&client) {
                    return e;
                }
                let exchange = Exchange {
                    client_id: &client.client_id,
                    redirect_uri: &redirect_uri,
                    verifier: &verifier,
                    resource: resource.as_deref(),
                };
                match self.codes.redeem(&code, &exchange, now) {
                    Ok(a) => {
                        let info = GrantInfo {
                            client_id: a.client_id,
                            user: a.user,
                            role: a.role,
                            resource: a.resource,
                        };
                        let role = info.role;
                        let random = [self.bytes(), self.bytes(), self.bytes()];
                        match self.grants.create(info, random, now) {
                            Some(issued) => {
                                self.codes.issued(&code, issued.grant);
                                OAuthOutcome::Tokens(TokenSet {
                                    access_token: issued.access_token,
                                    refresh_token: issued.refresh_token,
                                    expires_in: issued.expires_in.as_secs(),
                                    scope: role,
                                })
                            }
                            None => error(
                                OAuthErrorCode::TemporarilyUnavailable,
                                "too many grants; revoke some with mymcpctl oauth revoke",
                            ),
                        }
                    }
                    Err(Refused::Error(code, why)) => error(code, why),
                    Err(Refused::Replayed { grant }) => {
                        if let Some(g) = grant {
                            self.grants.revoke(g);
                        }
                        error(
                            OAuthErrorCode::InvalidGrant,
                            "authorization code already used; the tokens issued with it are revoked",
                        )
                    }
                }
            }
            OAuthRequest::Refresh {
                token,
                client,
                scope,
                resource,
                ..
            } => {
                if let Some(e) = public_client(&client) {
                    return e;
                }
                if resource.is_some_and(|r| r != self.resource) {
                    return error(
                        OAuthErrorCode::InvalidTarget,
                        "tokens are for this server only",
                    );
                }
                let random = [self.bytes(), self.bytes()];
                match self
                    .grants
                    .refresh(&token, &client.client_id, scope, random, now)
                {
                    Ok(issued) => {
                        let role = self.grants.role(issued.grant).unwrap_or(Role::Ro);
                        OAuthOutcome::Tokens(TokenSet {
                            access_token: issued.access_token,
                            refresh_token: issued.refresh_token,
                            expires_in: issued.expires_in.as_secs(),
                            scope: role,
                        })
                    }
                    Err(RefreshRefused::Invalid) => error(
                        OAuthErrorCode::InvalidGrant,
                        "unknown, expired or revoked refresh token",
                    ),
                    Err(RefreshRefused::Reused { .. }) => error(
                        OAuthErrorCode::InvalidGrant,
                        "refresh token already used; the grant is revoked",
                    ),
                }
            }
            OAuthRequest::Revoke { token, client, .. } => {
                self.grants.revoke_token(&token, &client.client_id);
                OAuthOutcome::Revoked
            }
            OAuthRequest::Register { client, .. } => self.register(client),
            // A login may take seconds: the caller awaits [`Server::login`] instead.
            OAuthRequest::Login { .. } => error(
                OAuthErrorCode::ServerError,
                "a login is answered by Server::login",
            ),
        }
    }

    /// The consent page of the request the browser holds, with `notice` (after a login that
    /// did not approve); an approved or denied request's redirect.
    fn consent(&self, request: &PendingRef, notice: Option<String>, now: Instant) -> OAuthOutcome {
        match self.pending.consent(request, now) {
            None => error(
                OAuthErrorCode::InvalidRequest,
                "this authorization request is unknown or has expired; start again from the client",
            ),
            Some((
                req,
                Stage::Waiting {
                    approval_code,
                    csrf,
                },
            )) => OAuthOutcome::Waiting(Waiting {
                approval_code,
                client_id: req.client_id,
                client_name: req.client_name,
                redirect_uri: req.redirect_uri,
                scope: req.scope,
                csrf,
                pam: self.pam.is_some(),
                expires_in: super::pending::PENDING_TTL.as_secs(),
                notice,
            }),
            Some((req, Stage::Approved { user, role })) => self.approved(req, user, role, now),
            Some((req, Stage::Denied)) => OAuthOutcome::Redirect(
                self.redirect(&req, &[("error", OAuthErrorCode::AccessDenied.as_str())]),
            ),
        }
    }

    /// The consent page's login form: approves the request as `user` when the password is
    /// right and the account may approve (see [`login`]); else the page again, with a notice
    /// that does not say which of the checks failed. `now` is when the login began.
    pub(crate) async fn login(
        &self,
        request: PendingRef,
        csrf: Secret,
        user: String,
        password: String,
        peer: String,
        now: Instant,
    ) -> (OAuthOutcome, LoginReport) {
        let attempt = Attempt {
            user,
            peer,
            password,
        };
        let report = |client_id: Option<String>, result| LoginReport { client_id, result };
        let Some(pam) = &self.pam else {
            return (
                error(
                    OAuthErrorCode::InvalidRequest,
                    "password logins are off on this server (MYMCP_OAUTH_PAM); approve on the host",
                ),
                report(None, LoginResult::Invalid("password logins are off")),
            );
        };
        let Some(target) = self.pending.login_target(&request, &csrf, now) else {
            return (
                error(
                    OAuthErrorCode::InvalidRequest,
                    "this request is no longer waiting, or the form is stale; reload the page",
                ),
                report(
                    None,
                    LoginResult::Invalid("no waiting request for this page"),
                ),
            );
        };
        let client_id = Some(target.client_id);
        let permit = match pam.limiter.admit(&attempt.user, &attempt.peer, now) {
            Ok(p) => p,
            Err(limited) => {
                return (
                    self.consent(&request, Some(limited.notice()), now),
                    report(client_id, LoginResult::Limited(limited.reason())),
                )
            }
        };
        let (user, peer) = (attempt.user.clone(), attempt.peer.clone());
        let began = Instant::now();
        let checked = pam.checker.check(attempt).await;
        drop(permit);
        let now = now + began.elapsed();
        match checked {
            Checked::Accepted { uid } => {
                pam.limiter.succeeded(&user);
                if self
                    .pending
                    .approve_login(&request, &csrf, &user, now)
                    .is_none()
                {
                    return (
                        error(
                            OAuthErrorCode::InvalidRequest,
                            "this request expired or was decided meanwhile; start again from the client",
                        ),
                        report(client_id, LoginResult::Invalid("decided or expired meanwhile")),
                    );
                }
                (
                    self.consent(&request, None, now),
                    report(client_id, LoginResult::Approved { uid }),
                )
            }
            Checked::Refused(why) => {
                pam.limiter.failed(&user, &peer, now);
                (
                    self.consent(&request, Some(login::NOTICE_REFUSED.into()), now),
                    report(client_id, LoginResult::Refused(why)),
                )
            }
            Checked::Failed(why) => {
                pam.limiter.failed(&user, &peer, now);
                (
                    self.consent(
                        &request,
                        Some("The password could not be checked now. Try again later, or approve on the host with the code.".into()),
                        now,
                    ),
                    report(client_id, LoginResult::Failed(why)),
                )
            }
        }
    }

    /// Checks logins with `checker` instead of PAM (tests).
    #[cfg(test)]
    fn with_checker(mut self, checker: Box<dyn Checker>) -> Server {
        self.pam = Some(Pam {
            limiter: Limiter::default(),
            checker,
        });
        self
    }

    /// Answers `mymcpctl oauth …`.
    pub(crate) fn control(
        &self,
        request: OAuthControl,
        now: Instant,
    ) -> Result<OAuthControlOutcome, String> {
        match request {
            OAuthControl::Pending => Ok(OAuthControlOutcome::Pending(
                (self.pending.waiting(now).into_iter())
                    .map(|(r, left)| PendingInfo {
                        client_id: r.client_id,
                        client_name: r.client_name,
                        redirect_uri: r.redirect_uri,
                        scope: r.scope,
                        expires_in: left.as_secs(),
                    })
                    .collect(),
            )),
            OAuthControl::Approve { code, user, role } => {
                let r = self
                    .pending
                    .approve(&approval_code(&code)?, &user, role, now)
                    .map_err(refused)?;
                Ok(OAuthControlOutcome::Approved {
                    client_id: r.client_id,
                    client_name: r.client_name,
                    redirect_uri: r.redirect_uri,
                    user,
                    role: if r.scope == Role::Ro { Role::Ro } else { role },
                })
            }
            OAuthControl::Deny { code } => {
                (self.pending)
                    .deny_code(&approval_code(&code)?, now)
                    .map_err(refused)?;
                Ok(OAuthControlOutcome::Denied)
            }
            OAuthControl::Clients => {
                let grants = self.grants.list(now);
                let registered = self.clients.lock().unwrap_or_else(|e| e.into_inner());
                let mut out: Vec<OAuthClientInfo> = (registered.iter())
                    .map(|(id, c)| OAuthClientInfo {
                        client_id: id.clone(),
                        client_name: c.metadata.client_name.clone(),
                        kind: "registered".into(),
                        redirect_uris: c.metadata.redirect_uris.clone(),
                        auth_method: c.metadata.token_endpoint_auth_method,
                        created_at: mymcp_tokens::clock::rfc3339(c.created),
                        grants: (grants.iter()).filter(|g| &g.info.client_id == id).count() as u64,
                    })
                    .collect();
                out.sort_by(|a, b| a.created_at.cmp(&b.created_at));
                Ok(OAuthControlOutcome::Clients(out))
            }
            OAuthControl::Grants => {
                let registered = self.clients.lock().unwrap_or_else(|e| e.into_inner());
                let wall = mymcp_tokens::clock::unix_now();
                Ok(OAuthControlOutcome::Grants(
                    (self.grants.list(now).into_iter())
                        .map(|g| mymcp_protocol::oauth::GrantInfo {
                            id: g.id.to_string(),
                            client_name: (registered.get(&g.info.client_id))
                                .and_then(|c| c.metadata.client_name.clone()),
                            client_id: g.info.client_id,
                            user: g.info.user,
                            role: g.info.role,
                            resource: g.info.resource,
                            created_at: mymcp_tokens::clock::rfc3339(g.created),
                            last_refreshed: g.refreshed.map(mymcp_tokens::clock::rfc3339),
                            expires_at: mymcp_tokens::clock::rfc3339(
                                wall + g.remaining.as_secs() as i64,
                            ),
                        })
                        .collect(),
                ))
            }
            OAuthControl::Revoke { selector } => {
                let revoked = self.revoke(&selector);
                self.save();
                revoked
            }
        }
    }

    /// `mymcpctl oauth revoke SELECTOR`: a grant by number, or a client and its grants.
    fn revoke(&self, selector: &str) -> Result<OAuthControlOutcome, String> {
        if let Ok(id) = selector.parse::<u64>() {
            return match self.grants.revoke(id) {
                true => Ok(OAuthControlOutcome::Revoked {
                    clients: 0,
                    grants: 1,
                }),
                false => Err(format!("no live grant {id} (see mymcpctl oauth grants)")),
            };
        }
        let removed = (self.clients.lock().unwrap_or_else(|e| e.into_inner()))
            .remove(selector)
            .is_some();
        if removed {
            (self.client_changes).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let grants = self.grants.revoke_client(selector);
        if !removed && grants == 0 {
            return Err(format!(
                "no grant or client {selector} (see mymcpctl oauth grants and clients)"
            ));
        }
        Ok(OAuthControlOutcome::Revoked {
            clients: u64::from(removed),
            grants,
        })
    }

    fn authorize(
        &self,
        params: AuthorizeParams,
        document: Option<ClientMetadata>,
        now: Instant,
    ) -> OAuthOutcome {
        // Until the redirect URI is known to be the client's, errors are shown, never sent.
        if let Some(why) = text::redirect_uri_problem(&params.redirect_uri) {
            return error(OAuthErrorCode::InvalidRequest, why);
        }
        let client = match document.filter(|_| text::is_document_client_id(&params.client_id)) {
            // The frontend fetched it; it is held to what a registration is held to.
            Some(document) => match registration_problem(&document) {
                Some((code, why)) => return error(code, why),
                None => document,
            },
            None => {
                let registered = self.clients.lock().unwrap_or_else(|e| e.into_inner());
                match registered.get(&params.client_id) {
                    Some(c) => c.metadata.clone(),
                    None => {
                        return error(
                            OAuthErrorCode::InvalidClient,
                            "unknown client: register it (RFC 7591) or use a metadata document",
                        )
                    }
                }
            }
        };
        if !client.redirect_uris.contains(&params.redirect_uri) {
            return error(
                OAuthErrorCode::InvalidRequest,
                "redirect_uri is not one of the client's",
            );
        }
        let request = Request {
            client_id: params.client_id,
            client_name: client.client_name,
            redirect_uri: params.redirect_uri,
            state: params.state,
            challenge: params.code_challenge,
            scope: params.scope,
            resource: self.resource.clone(),
        };
        if !text::is_s256_challenge(&request.challenge) {
            return self.redirect_error(&request, OAuthErrorCode::InvalidRequest);
        }
        if params.resource.is_some_and(|r| r != self.resource) {
            return self.redirect_error(&request, OAuthErrorCode::InvalidTarget);
        }
        let fresh = Fresh {
            id: self.bytes(),
            secret: self.bytes(),
            csrf: self.bytes(),
            code: self.bytes(),
        };
        match self.pending.open(request.clone(), fresh, now) {
            Some(r) => OAuthOutcome::Opened(r),
            None => self.redirect_error(&request, OAuthErrorCode::TemporarilyUnavailable),
        }
    }

    /// RFC 7591: a public client (PKCE, no secret) with redirect URIs this server accepts.
    fn register(&self, client: ClientMetadata) -> OAuthOutcome {
        use mymcp_protocol::oauth::Registered;
        if let Some((code, why)) = registration_problem(&client) {
            return error(code, why);
        }
        let id = format!("mcpc_{}", text::hex(&self.bytes::<16>()));
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS {
            return error(
                OAuthErrorCode::TemporarilyUnavailable,
                "too many registered clients",
            );
        }
        let issued_at = mymcp_tokens::clock::unix_now();
        (self.client_changes).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        clients.insert(
            id.clone(),
            RegisteredClient {
                metadata: client.clone(),
                created: issued_at,
            },
        );
        OAuthOutcome::Registered(Registered {
            client_id: id,
            client_secret: None,
            issued_at: issued_at as u64,
            client,
        })
    }

    fn approved(&self, req: Request, user: String, role: Role, now: Instant) -> OAuthOutcome {
        let approved = codes::Approved {
            client_id: req.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            challenge: req.challenge.clone(),
            resource: req.resource.clone(),
            user,
            role,
        };
        match self.codes.issue(approved, self.bytes(), now) {
            Some(code) => OAuthOutcome::Redirect(self.redirect(&req, &[("code", &code)])),
            None => self.redirect_error(&req, OAuthErrorCode::TemporarilyUnavailable),
        }
    }

    /// The client's redirect URI with `params`, its `state` and our `iss` (RFC 9207).
    fn redirect(&self, req: &Request, params: &[(&str, &str)]) -> String {
        let mut all: Vec<(&str, &str)> = params.to_vec();
        if let Some(state) = &req.state {
            all.push(("state", state));
        }
        all.push(("iss", &self.issuer));
        text::with_query(&req.redirect_uri, &all)
    }

    fn redirect_error(&self, req: &Request, code: OAuthErrorCode) -> OAuthOutcome {
        OAuthOutcome::Error(OAuthError {
            code,
            description: code.as_str().to_owned(),
            redirect: Some(self.redirect(req, &[("error", code.as_str())])),
        })
    }
}

/// Clients are public for now (metadata documents: PKCE, no secret): a secret is refused.
fn public_client(client: &ClientAuth) -> Option<OAuthOutcome> {
    client.secret.map(|_| {
        error(
            OAuthErrorCode::InvalidClient,
            "this client has no secret; authenticate with PKCE only",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mymcp_protocol::oauth::{ClientAuthMethod, PendingRef};
    use mymcp_protocol::{CallOrigin, TokenDigest};
    use mymcp_tokens::{digest, Delegated};
    use std::sync::atomic::{AtomicU64, Ordering};

    const CLIENT: &str = "https://client.example/oauth/metadata.json";
    const REDIRECT: &str = "https://client.example/callback";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn origin() -> CallOrigin {
        CallOrigin {
            peer: "203.0.113.7".into(),
            request_id: "r1".into(),
        }
    }

    fn server() -> Server {
        server_with(None, 1)
    }

    /// A server keeping its state in `state_file`, its random bytes counting from `first`.
    fn server_with(state_file: Option<std::path::PathBuf>, first: u64) -> Server {
        let n = AtomicU64::new(first);
        Server::new(
            crate::oauth::OAuthConfig {
                issuer: "https://host.example".into(),
                resource: "https://host.example/mcp".into(),
                lifetimes: Default::default(),
                pam: None,
                state_file,
            },
            Box::new(move |b: &mut [u8]| {
                let v = n.fetch_add(1, Ordering::Relaxed).to_le_bytes();
                for (i, x) in b.iter_mut().enumerate() {
                    *x = v[i % 8] ^ (i as u8);
                }
            }),
        )
    }

    fn document() -> ClientMetadata {
        ClientMetadata {
            client_name: Some("Client".into()),
            redirect_uris: vec![REDIRECT.into()],
            token_endpoint_auth_method: ClientAuthMethod::None,
        }
    }

    fn authorize(s: &Server, scope: Role, now: Instant) -> PendingRef {
        let r = s.handle(
            OAuthRequest::Authorize {
                params: AuthorizeParams {
                    client_id: CLIENT.into(),
                    redirect_uri: REDIRECT.into(),
                    state: Some("st".into()),
                    code_challenge: CHALLENGE.into(),
                    scope,
                    resource: Some("https://host.example/mcp".into()),
                },
                document: Some(document()),
                origin: origin(),
            },
            now,
        );
        match r {
            OAuthOutcome::Opened(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn client() -> ClientAuth {
        ClientAuth {
            client_id: CLIENT.into(),
            secret: None,
        }
    }

    fn code_in(url: &str) -> String {
        let q = url.split_once('?').unwrap().1;
        q.split('&')
            .find_map(|kv| kv.strip_prefix("code="))
            .unwrap()
            .to_owned()
    }

    fn exchange(s: &Server, code: &str, now: Instant) -> OAuthOutcome {
        s.handle(
            OAuthRequest::Exchange {
                code: digest(code),
                client: client(),
                redirect_uri: REDIRECT.into(),
                verifier: VERIFIER.into(),
                resource: None,
                origin: origin(),
            },
            now,
        )
    }

    /// Authorize, approve on the host, follow the redirect, exchange: the tokens.
    fn flow(s: &Server, now: Instant) -> (String, TokenSet) {
        let r = authorize(s, Role::Rw, now);
        let approval_code = match s.handle(OAuthRequest::Consent { request: r }, now) {
            OAuthOutcome::Waiting(w) => w.approval_code,
            other => panic!("{other:?}"),
        };
        let typed = approval_code.to_lowercase().replace('-', " ");
        s.control(
            OAuthControl::Approve {
                code: typed,
                user: "alice".into(),
                role: Role::Rw,
            },
            now,
        )
        .unwrap();
        let url = match s.handle(OAuthRequest::Consent { request: r }, now) {
            OAuthOutcome::Redirect(url) => url,
            other => panic!("{other:?}"),
        };
        assert!(url.starts_with(REDIRECT), "{url}");
        assert!(url.contains("state=st"), "{url}");
        assert!(url.contains("iss=https%3A%2F%2Fhost.example"), "{url}");
        let code = code_in(&url);
        match exchange(s, &code, now) {
            OAuthOutcome::Tokens(t) => (code, t),
            other => panic!("{other:?}"),
        }
    }

    fn holder(s: &Server, token: &str) -> Option<(mymcp_tokens::Holder, TokenDigest)> {
        s.grants().authenticate(&digest(token))
    }

    #[test]
    fn clients_and_grants_outlive_a_restart_and_the_file_holds_no_token() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("oauth.json");
        let now = Instant::now();
        let first = server_with(Some(file.clone()), 1);
        let (_, tokens) = flow(&first, now);
        let registered = match first.handle(
            OAuthRequest::Register {
                client: document(),
                origin: origin(),
            },
            now,
        ) {
            OAuthOutcome::Registered(r) => r.client_id,
            other => panic!("{other:?}"),
        };
        let stored = std::fs::read_to_string(&file).unwrap();
        assert!(!stored.contains(&tokens.access_token) && !stored.contains(&tokens.refresh_token));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Refused requests change nothing and write nothing (each write is a new file).
        let written = || {
            let meta = std::fs::metadata(&file).unwrap();
            (
                std::os::unix::fs::MetadataExt::ino(&meta),
                meta.modified().unwrap(),
            )
        };
        let before = written();
        let garbage = first.handle(
            OAuthRequest::Refresh {
                token: digest("mcp_guessed"),
                client: client(),
                scope: None,
                resource: None,
                origin: origin(),
            },
            now,
        );
        assert!(matches!(garbage, OAuthOutcome::Error(_)), "{garbage:?}");
        first.handle(
            OAuthRequest::Revoke {
                token: digest("mcp_guessed"),
                client: client(),
                origin: origin(),
            },
            now,
        );
        assert_eq!(
            written(),
            before,
            "a refused request rewrote the state file"
        );
        drop(first);

        let second = server_with(Some(file.clone()), 1000);
        let (h, _) = holder(&second, &tokens.access_token).expect("the access token still works");
        assert_eq!((h.user.as_str(), h.identity.role), ("alice", Role::Rw));
        let refreshed = second.handle(
            OAuthRequest::Refresh {
                token: digest(&tokens.refresh_token),
                client: client(),
                scope: None,
                resource: None,
                origin: origin(),
            },
            now,
        );
        assert!(
            matches!(refreshed, OAuthOutcome::Tokens(_)),
            "{refreshed:?}"
        );
        let listed = format!("{:?}", second.control(OAuthControl::Clients, now).unwrap());
        assert!(listed.contains(&registered), "{listed}");

        // Revoked before the next restart: gone after it.
        let revoked = second.control(
            OAuthControl::Revoke {
                selector: CLIENT.into(),
            },
            now,
        );
        assert!(revoked.is_ok(), "{revoked:?}");
        drop(second);
        let third = server_with(Some(file.clone()), 2000);
        assert!(holder(&third, &tokens.access_token).is_none());

        // A file that cannot be read: nothing restored, and the server still serves.
        std::fs::write(&file, b"{not json").unwrap();
        let fourth = server_with(Some(file), 3000);
        assert!(matches!(
            fourth.control(OAuthControl::Grants, now).unwrap(),
            OAuthControlOutcome::Grants(g) if g.is_empty()
        ));
        let (_, again) = flow(&fourth, now);
        assert!(holder(&fourth, &again.access_token).is_some());
    }

    #[test]
    fn approval_on_the_host_gives_the_client_tokens_that_act_as_the_account() {
        let s = server();
        let now = Instant::now();
        let (_, tokens) = flow(&s, now);
        assert_eq!(tokens.scope, Role::Rw);
        let (h, _) = holder(&s, &tokens.access_token).unwrap();
        assert_eq!(h.user, "alice");
        assert_eq!(h.identity.role, Role::Rw);
    }

    #[test]
    fn a_replayed_code_revokes_the_tokens_it_gave() {
        let s = server();
        let now = Instant::now();
        let (code, tokens) = flow(&s, now);
        assert!(matches!(
            exchange(&s, &code, now),
            OAuthOutcome::Error(OAuthError {
                code: OAuthErrorCode::InvalidGrant,
                ..
            })
        ));
        assert!(holder(&s, &tokens.access_token).is_none());
    }

    #[test]
    fn a_reused_refresh_token_ends_the_grant() {
        let s = server();
        let now = Instant::now();
        let (_, first) = flow(&s, now);
        let refresh = |token: &str| {
            s.handle(
                OAuthRequest::Refresh {
                    token: digest(token),
                    client: client(),
                    scope: None,
                    resource: None,
                    origin: origin(),
                },
                now,
            )
        };
        let second = match refresh(&first.refresh_token) {
            OAuthOutcome::Tokens(t) => t,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            refresh(&first.refresh_token),
            OAuthOutcome::Error(_)
        ));
        assert!(holder(&s, &second.access_token).is_none());
        assert!(matches!(
            refresh(&second.refresh_token),
            OAuthOutcome::Error(_)
        ));
    }

    #[test]
    fn a_registered_client_is_known_by_its_id_and_a_bad_registration_refused() {
        let s = server();
        let now = Instant::now();
        let reg = |uris: Vec<&str>| {
            s.handle(
                OAuthRequest::Register {
                    client: ClientMetadata {
                        client_name: Some("Inspector".into()),
                        redirect_uris: uris.into_iter().map(str::to_owned).collect(),
                        token_endpoint_auth_method: ClientAuthMethod::None,
                    },
                    origin: origin(),
                },
                now,
            )
        };
        assert!(matches!(
            reg(vec!["javascript:alert(1)"]),
            OAuthOutcome::Error(OAuthError {
                code: OAuthErrorCode::InvalidRedirectUri,
                ..
            })
        ));
        let id = match reg(vec!["http://127.0.0.1:6274/oauth/callback"]) {
            OAuthOutcome::Registered(r) => r.client_id,
            other => panic!("{other:?}"),
        };
        let opened = s.handle(
            OAuthRequest::Authorize {
                params: AuthorizeParams {
                    client_id: id,
                    redirect_uri: "http://127.0.0.1:6274/oauth/callback".into(),
                    state: None,
                    code_challenge: CHALLENGE.into(),
                    scope: Role::Ro,
                    resource: None,
                },
                document: None,
                origin: origin(),
            },
            now,
        );
        assert!(matches!(opened, OAuthOutcome::Opened(_)), "{opened:?}");
    }

    #[test]
    fn a_metadata_document_is_held_to_what_a_registration_is() {
        let s = server();
        let now = Instant::now();
        let open = |document: ClientMetadata, redirect_uri: &str| {
            s.handle(
                OAuthRequest::Authorize {
                    params: AuthorizeParams {
                        client_id: CLIENT.into(),
                        redirect_uri: redirect_uri.into(),
                        state: Some("st".into()),
                        code_challenge: CHALLENGE.into(),
                        scope: Role::Ro,
                        resource: None,
                    },
                    document: Some(document),
                    origin: origin(),
                },
                now,
            )
        };
        let refused = |o: OAuthOutcome, code: OAuthErrorCode| match o {
            OAuthOutcome::Error(e) => e.code == code && e.redirect.is_none(),
            _ => false,
        };
        let bad_uri = ClientMetadata {
            redirect_uris: vec![REDIRECT.into(), "javascript:alert(1)".into()],
            ..document()
        };
        assert!(refused(
            open(bad_uri, REDIRECT),
            OAuthErrorCode::InvalidRedirectUri
        ));
        let confidential = ClientMetadata {
            token_endpoint_auth_method: ClientAuthMethod::ClientSecretBasic,
            ..document()
        };
        assert!(refused(
            open(confidential, REDIRECT),
            OAuthErrorCode::InvalidClientMetadata
        ));
        let none = ClientMetadata {
            redirect_uris: vec![],
            ..document()
        };
        assert!(refused(
            open(none, REDIRECT),
            OAuthErrorCode::InvalidRedirectUri
        ));
        assert!(refused(
            open(document(), "https://client.example/other"),
            OAuthErrorCode::InvalidRequest
        ));
        assert!(matches!(
            open(document(), REDIRECT),
            OAuthOutcome::Opened(_)
        ));
    }

    #[test]
    fn the_host_lists_and_revokes_grants_and_never_sees_approval_codes() {
        let s = server();
        let now = Instant::now();
        let (_, tokens) = flow(&s, now);
        let r = authorize(&s, Role::Ro, now);
        let code = match s.handle(OAuthRequest::Consent { request: r }, now) {
            OAuthOutcome::Waiting(w) => w.approval_code,
            other => panic!("{other:?}"),
        };
        let listed = format!("{:?}", s.control(OAuthControl::Pending, now).unwrap());
        assert!(
            listed.contains(CLIENT) && !listed.contains(&code),
            "{listed}"
        );

        let grants = match s.control(OAuthControl::Grants, now).unwrap() {
            OAuthControlOutcome::Grants(g) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!(grants.len(), 1);
        assert_eq!(
            (grants[0].user.as_str(), grants[0].role),
            ("alice", Role::Rw)
        );
        let revoke = |selector: &str| {
            s.control(
                OAuthControl::Revoke {
                    selector: selector.into(),
                },
                now,
            )
        };
        assert_eq!(
            revoke(&grants[0].id).unwrap(),
            OAuthControlOutcome::Revoked {
                clients: 0,
                grants: 1
            }
        );
        assert!(holder(&s, &tokens.access_token).is_none());
        assert!(revoke(&grants[0].id).is_err());
        // By client: every grant it holds.
        let (_, a) = flow(&s, now);
        let (_, b) = flow(&s, now);
        assert_eq!(
            revoke(CLIENT).unwrap(),
            OAuthControlOutcome::Revoked {
                clients: 0,
                grants: 2
            }
        );
        assert!(holder(&s, &a.access_token).is_none() && holder(&s, &b.access_token).is_none());
        assert!(revoke("no-such-client").is_err());

        // Denied on the host: the page sends the client access_denied.
        assert_eq!(
            s.control(OAuthControl::Deny { code }, now).unwrap(),
            OAuthControlOutcome::Denied
        );
        match s.handle(OAuthRequest::Consent { request: r }, now) {
            OAuthOutcome::Redirect(url) => assert!(url.contains("error=access_denied"), "{url}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn denied_on_the_page_the_client_gets_access_denied() {
        let s = server();
        let now = Instant::now();
        let r = authorize(&s, Role::Ro, now);
        let csrf = match s.handle(OAuthRequest::Consent { request: r }, now) {
            OAuthOutcome::Waiting(w) => w.csrf,
            other => panic!("{other:?}"),
        };
        match s.handle(OAuthRequest::Deny { request: r, csrf }, now) {
            OAuthOutcome::Redirect(url) => assert!(url.contains("error=access_denied"), "{url}"),
            other => panic!("{other:?}"),
        }
    }

    /// Accepts alice with "right", refuses everything else; counts the checks.
    struct FakeChecker(Arc<AtomicU64>);

    impl Checker for FakeChecker {
        fn check(&self, attempt: Attempt) -> login::Checking<'_> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let right = attempt.user == "alice" && attempt.password == "right";
            Box::pin(async move {
                if right {
                    Checked::Accepted { uid: 1000 }
                } else {
                    Checked::Refused("wrong password".into())
                }
            })
        }
    }

    fn pam_server() -> (Server, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let s = server().with_checker(Box::new(FakeChecker(calls.clone())));
        (s, calls)
    }

    fn page(s: &Server, r: PendingRef, now: Instant) -> Waiting {
        match s.handle(OAuthRequest::Consent { request: r }, now) {
            OAuthOutcome::Waiting(w) => w,
            other => panic!("{other:?}"),
        }
    }

    async fn log_in(
        s: &Server,
        r: PendingRef,
        csrf: Secret,
        user: &str,
        password: &str,
        now: Instant,
    ) -> (OAuthOutcome, LoginReport) {
        s.login(
            r,
            csrf,
            user.into(),
            password.into(),
            "203.0.113.7".into(),
            now,
        )
        .await
    }

    #[tokio::test]
    async fn the_right_password_approves_as_the_account_with_the_scope_asked_for() {
        let (s, calls) = pam_server();
        let now = Instant::now();
        let r = authorize(&s, Role::Ro, now);
        let w = page(&s, r, now);
        assert!(w.pam && w.notice.is_none());
        let (outcome, report) = log_in(&s, r, w.csrf, "alice", "right", now).await;
        assert_eq!(report.result, LoginResult::Approved { uid: 1000 });
        assert_eq!(report.client_id.as_deref(), Some(CLIENT));
        let url = match outcome {
            OAuthOutcome::Redirect(url) => url,
            other => panic!("{other:?}"),
        };
        assert!(
            url.starts_with(REDIRECT) && url.contains("state=st"),
            "{url}"
        );
        let tokens = match exchange(&s, &code_in(&url), now) {
            OAuthOutcome::Tokens(t) => t,
            other => panic!("{other:?}"),
        };
        let (h, _) = holder(&s, &tokens.access_token).unwrap();
        assert_eq!((h.user.as_str(), h.identity.role), ("alice", Role::Ro));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Decided: the form does nothing more.
        let (_, again) = log_in(&s, r, w.csrf, "alice", "right", now).await;
        assert!(matches!(again.result, LoginResult::Invalid(_)), "{again:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_login_shows_the_page_again_with_one_notice_for_every_reason() {
        let (s, _) = pam_server();
        let now = Instant::now();
        let r = authorize(&s, Role::Rw, now);
        let csrf = page(&s, r, now).csrf;
        for (user, password) in [("alice", "wrong"), ("mallory", "right")] {
            let (outcome, report) = log_in(&s, r, csrf, user, password, now).await;
            assert!(
                matches!(report.result, LoginResult::Refused(_)),
                "{report:?}"
            );
            match outcome {
                OAuthOutcome::Waiting(w) => {
                    assert_eq!(w.notice.as_deref(), Some(login::NOTICE_REFUSED))
                }
                other => panic!("{other:?}"),
            }
        }
        // Still waiting: nothing was approved.
        assert!(page(&s, r, now).notice.is_none());
    }

    #[tokio::test]
    async fn after_too_many_failures_even_the_right_password_is_not_tried() {
        let (s, calls) = pam_server();
        let now = Instant::now();
        let r = authorize(&s, Role::Rw, now);
        let csrf = page(&s, r, now).csrf;
        for _ in 0..login::ACCOUNT_FAILURES {
            log_in(&s, r, csrf, "alice", "wrong", now).await;
        }
        let checks = calls.load(Ordering::SeqCst);
        let (outcome, report) = log_in(&s, r, csrf, "alice", "right", now).await;
        assert!(
            matches!(report.result, LoginResult::Limited(_)),
            "{report:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), checks, "PAM did not run");
        match outcome {
            OAuthOutcome::Waiting(w) => assert!(w.notice.unwrap().contains("Wait 15 minute")),
            other => panic!("{other:?}"),
        }
        // Once the window has passed, the right password approves.
        let later = now + login::WINDOW + std::time::Duration::from_secs(1);
        let r = authorize(&s, Role::Rw, later);
        let csrf = page(&s, r, later).csrf;
        let (_, report) = log_in(&s, r, csrf, "alice", "right", later).await;
        assert_eq!(report.result, LoginResult::Approved { uid: 1000 });
    }

    #[tokio::test]
    async fn a_login_without_the_cookie_secret_or_csrf_token_or_with_pam_off_runs_nothing() {
        let (s, calls) = pam_server();
        let now = Instant::now();
        let r = authorize(&s, Role::Rw, now);
        let csrf = page(&s, r, now).csrf;
        let forged = PendingRef {
            id: r.id,
            secret: Secret([0; 32]),
        };
        for (r, csrf) in [(forged, csrf), (r, Secret([9; 32]))] {
            let (outcome, report) = log_in(&s, r, csrf, "alice", "right", now).await;
            assert!(matches!(outcome, OAuthOutcome::Error(_)), "{outcome:?}");
            assert!(matches!(report.result, LoginResult::Invalid(_)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        let off = server();
        let r = authorize(&off, Role::Rw, now);
        let w = page(&off, r, now);
        assert!(!w.pam, "no form offered");
        let (outcome, _) = log_in(&off, r, w.csrf, "alice", "right", now).await;
        assert!(matches!(outcome, OAuthOutcome::Error(_)));
        assert!(page(&off, r, now).notice.is_none(), "still waiting");
    }

    #[test]
    fn a_foreign_redirect_or_resource_is_refused_without_sending_the_browser_there() {
        let s = server();
        let now = Instant::now();
        let ask = |redirect: &str, resource: &str| {
            s.handle(
                OAuthRequest::Authorize {
                    params: AuthorizeParams {
                        client_id: CLIENT.into(),
                        redirect_uri: redirect.into(),
                        state: None,
                        code_challenge: CHALLENGE.into(),
                        scope: Role::Rw,
                        resource: Some(resource.into()),
                    },
                    document: Some(document()),
                    origin: origin(),
                },
                now,
            )
        };
        match ask("https://evil.example/callback", "https://host.example/mcp") {
            OAuthOutcome::Error(e) => assert_eq!(e.redirect, None),
            other => panic!("{other:?}"),
        }
        match ask(REDIRECT, "https://other.example/mcp") {
            OAuthOutcome::Error(e) => {
                assert_eq!(e.code, OAuthErrorCode::InvalidTarget);
                assert!(e.redirect.unwrap().starts_with(REDIRECT));
            }
            other => panic!("{other:?}"),
        }
    }
}
