//! Authorization requests waiting for a person: opened by `GET /authorize`, shown on the
//! consent page, approved on the host (`mymcpctl oauth approve CODE --user … --role …`) or
//! with an account's password on the page (PAM, see [`super::login`]), or denied on the
//! page, then answered to the browser with one redirect.
//!
//! The browser holds the request by its id (in the page's URL) **and** a secret (in a cookie
//! the frontend set when it opened the request): the id alone, seen in a log or over a
//! shoulder, shows and decides nothing. The page's own actions also carry a CSRF token. The
//! approval code (`ABCD-EFGH`, 40 bits) is what the person reads on the page and types on the
//! host; typing it approves only within [`PENDING_TTL`], a wrong code counts against
//! [`MAX_WRONG_CODES`] for all requests (after which approvals by code stop until requests
//! expire), and a code is used once. The role approved is at most the one asked for. At most
//! [`MAX_PENDING`] requests wait; beyond, new ones are refused.

use super::text::constant_time_eq;
use mymcp_protocol::oauth::{PendingId, PendingRef, Secret};
use mymcp_protocol::Role;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a request waits for a person.
pub(crate) const PENDING_TTL: Duration = Duration::from_secs(600);
/// Requests waiting at once, at most.
pub(crate) const MAX_PENDING: usize = 256;
/// Wrong approval codes typed (in [`PENDING_TTL`]) before approvals by code stop.
pub(crate) const MAX_WRONG_CODES: usize = 20;

/// What the client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) client_id: String,
    pub(crate) client_name: Option<String>,
    pub(crate) redirect_uri: String,
    pub(crate) state: Option<String>,
    pub(crate) challenge: String,
    pub(crate) scope: Role,
    pub(crate) resource: String,
}

/// Where a request stands, for its consent page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Waiting {
        approval_code: String,
        csrf: Secret,
    },
    /// Approved as `user` with `role`: the caller issues the code and redirects (once).
    Approved {
        user: String,
        role: Role,
    },
    /// Denied on the page or on the host: the caller redirects with `access_denied` (once).
    Denied,
}

/// Why an approval by code failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ApproveRefused {
    NoSuchCode,
    TooManyWrongCodes,
}

#[derive(Debug)]
struct Entry {
    secret: Secret,
    csrf: Secret,
    approval_code: String,
    request: Request,
    stage: Stage,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<PendingId, Entry>,
    wrong_codes: Vec<Instant>,
}

/// The executor's pending authorization requests.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    inner: Mutex<Inner>,
}

/// Random values for a new request: id, cookie secret, CSRF token, approval code.
pub(crate) struct Fresh {
    pub(crate) id: [u8; 16],
    pub(crate) secret: [u8; 32],
    pub(crate) csrf: [u8; 32],
    pub(crate) code: [u8; 5],
}

impl Pending {
    /// Opens a request; `None` when [`MAX_PENDING`] wait (or the random values collide).
    pub(crate) fn open(&self, request: Request, fresh: Fresh, now: Instant) -> Option<PendingRef> {
        let mut inner = self.lock();
        inner.expire(now);
        let id = PendingId(fresh.id);
        let approval_code = super::text::approval_code(fresh.code);
        if inner.entries.len() >= MAX_PENDING
            || inner.entries.contains_key(&id)
            || inner
                .entries
                .values()
                .any(|e| e.approval_code == approval_code)
        {
            return None;
        }
        let csrf = Secret(fresh.csrf);
        let stage = Stage::Waiting {
            approval_code: approval_code.clone(),
            csrf,
        };
        inner.entries.insert(
            id,
            Entry {
                secret: Secret(fresh.secret),
                csrf,
                approval_code,
                request,
                stage,
                expires: now + PENDING_TTL,
            },
        );
        Some(PendingRef {
            id,
            secret: Secret(fresh.secret),
        })
    }

    /// The request and its stage, for the browser that holds `r`. An approved or denied
    /// request is answered once and then gone (its redirect carries the outcome).
    pub(crate) fn consent(&self, r: &PendingRef, now: Instant) -> Option<(Request, Stage)> {
        let mut inner = self.lock();
        inner.expire(now);
        let entry = inner.entries.get(&r.id)?;
        if !constant_time_eq(&entry.secret.0, &r.secret.0) {
            return None;
        }
        let answer = (entry.request.clone(), entry.stage.clone());
        if !matches!(answer.1, Stage::Waiting { .. }) {
            inner.entries.remove(&r.id);
        }
        Some(answer)
    }

    /// Approves the waiting request showing `code` (as typed, normalised by the caller) as
    /// `user`, with at most `role`: the request's scope is the ceiling.
    pub(crate) fn approve(
        &self,
        code: &str,
        user: &str,
        role: Role,
        now: Instant,
    ) -> Result<Request, ApproveRefused> {
        self.decide(code, now, |request| Stage::Approved {
            user: user.to_owned(),
            role: if request.scope == Role::Ro {
                Role::Ro
            } else {
                role
            },
        })
    }

    /// Denies the waiting request showing `code` (`mymcpctl oauth deny`): its page sends the
    /// client `access_denied`.
    pub(crate) fn deny_code(&self, code: &str, now: Instant) -> Result<Request, ApproveRefused> {
        self.decide(code, now, |_| Stage::Denied)
    }

    /// Moves the waiting request showing `code` to the stage `decision` gives; a wrong code
    /// counts towards [`MAX_WRONG_CODES`].
    fn decide(
        &self,
        code: &str,
        now: Instant,
        decision: impl FnOnce(&Request) -> Stage,
    ) -> Result<Request, ApproveRefused> {
        let mut inner = self.lock();
        inner.expire(now);
        if inner.wrong_codes.len() >= MAX_WRONG_CODES {
            return Err(ApproveRefused::TooManyWrongCodes);
        }
        let found = inner.entries.values_mut().find(|e| {
            matches!(e.stage, Stage::Waiting { .. })
                && constant_time_eq(e.approval_code.as_bytes(), code.as_bytes())
        });
        let Some(entry) = found else {
            inner.wrong_codes.push(now);
            return Err(ApproveRefused::NoSuchCode);
        };
        entry.stage = decision(&entry.request);
        Ok(entry.request.clone())
    }

    /// The page's "Deny": needs the cookie secret and the page's CSRF token.
    pub(crate) fn deny(&self, r: &PendingRef, csrf: &Secret, now: Instant) -> bool {
        self.decide_on_page(r, csrf, now, |_| Some(Stage::Denied))
            .is_some()
    }

    /// The waiting request the page's login form is for, if the browser holds it (cookie
    /// secret) and the form is the page's (CSRF token).
    pub(crate) fn login_target(
        &self,
        r: &PendingRef,
        csrf: &Secret,
        now: Instant,
    ) -> Option<Request> {
        self.decide_on_page(r, csrf, now, |_| None)
    }

    /// The page's login succeeded: approved as `user` with the scope the client asked for
    /// (as an approval by code with that role would be). Needs the cookie secret and the CSRF
    /// token again, and the request still waiting.
    pub(crate) fn approve_login(
        &self,
        r: &PendingRef,
        csrf: &Secret,
        user: &str,
        now: Instant,
    ) -> Option<Request> {
        self.decide_on_page(r, csrf, now, |request| {
            Some(Stage::Approved {
                user: user.to_owned(),
                role: request.scope,
            })
        })
    }

    /// The waiting request `r` names when the browser holds its cookie secret and `csrf` is
    /// its page's, moved to the stage `decision` gives (`None`: left waiting).
    fn decide_on_page(
        &self,
        r: &PendingRef,
        csrf: &Secret,
        now: Instant,
        decision: impl FnOnce(&Request) -> Option<Stage>,
    ) -> Option<Request> {
        let mut inner = self.lock();
        inner.expire(now);
        match inner.entries.get_mut(&r.id) {
            Some(e)
                if constant_time_eq(&e.secret.0, &r.secret.0)
                    && constant_time_eq(&e.csrf.0, &csrf.0)
                    && matches!(e.stage, Stage::Waiting { .. }) =>
            {
                if let Some(stage) = decision(&e.request) {
                    e.stage = stage;
                }
                Some(e.request.clone())
            }
            _ => None,
        }
    }

    /// Requests waiting now.
    pub(crate) fn waiting(&self, now: Instant) -> Vec<(Request, std::time::Duration)> {
        let mut inner = self.lock();
        inner.expire(now);
        (inner.entries.values())
            .filter(|e| matches!(e.stage, Stage::Waiting { .. }))
            .map(|e| (e.request.clone(), e.expires.saturating_duration_since(now)))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, e| now < e.expires);
        self.wrong_codes.retain(|t| now < *t + PENDING_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scope: Role) -> Request {
        Request {
            client_id: "https://client.example/metadata.json".into(),
            client_name: Some("Client".into()),
            redirect_uri: "https://client.example/callback".into(),
            state: Some("xyz".into()),
            challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            scope,
            resource: "https://host.example/mcp".into(),
        }
    }

    fn fresh(n: u8) -> Fresh {
        Fresh {
            id: [n; 16],
            secret: [n; 32],
            csrf: [n.wrapping_add(100); 32],
            code: [n; 5],
        }
    }

    fn code_of(p: &Pending, r: &PendingRef, now: Instant) -> String {
        match p.consent(r, now).unwrap().1 {
            Stage::Waiting { approval_code, .. } => approval_code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn approved_on_the_host_the_page_learns_it_once() {
        let p = Pending::default();
        let now = Instant::now();
        let r = p.open(request(Role::Rw), fresh(1), now).unwrap();
        let code = code_of(&p, &r, now);
        assert_eq!(
            p.approve(&code, "alice", Role::Rw, now),
            Ok(request(Role::Rw))
        );
        assert_eq!(
            p.consent(&r, now).unwrap().1,
            Stage::Approved {
                user: "alice".into(),
                role: Role::Rw
            }
        );
        assert_eq!(p.consent(&r, now), None, "answered once");
        assert_eq!(
            p.approve(&code, "alice", Role::Rw, now),
            Err(ApproveRefused::NoSuchCode),
            "a code approves once"
        );
    }

    #[test]
    fn the_id_without_the_cookie_secret_shows_and_decides_nothing() {
        let p = Pending::default();
        let now = Instant::now();
        let r = p.open(request(Role::Rw), fresh(2), now).unwrap();
        let forged = PendingRef {
            id: r.id,
            secret: Secret([0; 32]),
        };
        assert_eq!(p.consent(&forged, now), None);
        let csrf = match p.consent(&r, now).unwrap().1 {
            Stage::Waiting { csrf, .. } => csrf,
            other => panic!("{other:?}"),
        };
        assert!(!p.deny(&forged, &csrf, now));
        assert!(!p.deny(&r, &Secret([1; 32]), now), "without the CSRF token");
        assert!(p.deny(&r, &csrf, now));
        assert_eq!(p.consent(&r, now).unwrap().1, Stage::Denied);
    }

    #[test]
    fn a_login_needs_cookie_and_csrf_and_approves_with_the_scope_asked_for() {
        let p = Pending::default();
        let now = Instant::now();
        let r = p.open(request(Role::Ro), fresh(5), now).unwrap();
        let csrf = match p.consent(&r, now).unwrap().1 {
            Stage::Waiting { csrf, .. } => csrf,
            other => panic!("{other:?}"),
        };
        let forged = PendingRef {
            id: r.id,
            secret: Secret([0; 32]),
        };
        assert_eq!(p.login_target(&forged, &csrf, now), None);
        assert_eq!(p.login_target(&r, &Secret([1; 32]), now), None);
        assert_eq!(p.approve_login(&forged, &csrf, "alice", now), None);
        assert_eq!(p.approve_login(&r, &Secret([1; 32]), "alice", now), None);
        assert_eq!(p.login_target(&r, &csrf, now), Some(request(Role::Ro)));
        assert!(matches!(
            p.consent(&r, now).unwrap().1,
            Stage::Waiting { .. }
        ));
        assert_eq!(
            p.approve_login(&r, &csrf, "alice", now),
            Some(request(Role::Ro))
        );
        assert_eq!(p.approve_login(&r, &csrf, "bob", now), None, "decided once");
        assert_eq!(
            p.consent(&r, now).unwrap().1,
            Stage::Approved {
                user: "alice".into(),
                role: Role::Ro
            }
        );
    }

    #[test]
    fn the_role_approved_is_at_most_the_one_asked_for() {
        let p = Pending::default();
        let now = Instant::now();
        let r = p.open(request(Role::Ro), fresh(3), now).unwrap();
        let code = code_of(&p, &r, now);
        p.approve(&code, "alice", Role::Rw, now).unwrap();
        assert_eq!(
            p.consent(&r, now).unwrap().1,
            Stage::Approved {
                user: "alice".into(),
                role: Role::Ro
            }
        );
    }

    #[test]
    fn guessing_codes_stops_approvals_and_requests_expire() {
        let p = Pending::default();
        let now = Instant::now();
        let r = p.open(request(Role::Rw), fresh(4), now).unwrap();
        let code = code_of(&p, &r, now);
        for _ in 0..MAX_WRONG_CODES {
            assert_eq!(
                p.approve("ZZZZ-ZZZZ", "alice", Role::Rw, now),
                Err(ApproveRefused::NoSuchCode)
            );
        }
        assert_eq!(
            p.approve(&code, "alice", Role::Rw, now),
            Err(ApproveRefused::TooManyWrongCodes)
        );
        assert_eq!(p.consent(&r, now + PENDING_TTL), None);
        assert!(p.waiting(now + PENDING_TTL).is_empty());
    }

    #[test]
    fn requests_that_wait_are_bounded() {
        let p = Pending::default();
        let now = Instant::now();
        for i in 0..MAX_PENDING {
            let mut f = fresh(0);
            f.id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            f.code = [(i >> 8) as u8, i as u8, 7, 7, 7];
            assert!(p.open(request(Role::Rw), f, now).is_some(), "{i}");
        }
        let mut f = fresh(9);
        f.code = [0xff; 5];
        assert!(p.open(request(Role::Rw), f, now).is_none());
    }
}
