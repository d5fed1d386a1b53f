//! Grants and their tokens: what an exchanged authorization code becomes.
//!
//! A grant is one approval of one client, acting as one account with one role, for one
//! resource. It holds one live access token (short-lived) and one live refresh token at a
//! time; only digests are kept. A refresh rotates both (OAuth 2.1 §4.3.1: refresh tokens for
//! public clients are sender-constrained or rotated). Presenting a refresh token that was
//! already rotated away is **reuse** — someone holds a copy — and revokes the whole grant: its
//! live access and refresh tokens stop working at once, whoever holds them (OAuth 2.0 Security
//! BCP §4.14.2). A grant's *key* — a digest made when it is created, never shown — is what its
//! calls are kept under (jobs, transfer grants, per-token limits), so they survive the
//! rotation of its tokens; the token store answers for it through [`mymcp_tokens::Delegated`].
//! At most [`MAX_GRANTS`] live grants, at most [`MAX_GRANTS_PER_CLIENT`] per client: a new
//! approval beyond is refused, nothing is evicted.

use super::text::{hex, unhex32};
use mymcp_protocol::{Identity, Role, TokenDigest, TokenLimits, TokenView};
use mymcp_tokens::{digest, Delegated, Holder};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long tokens live (`MYMCP_OAUTH_ACCESS_TTL_SEC`, `MYMCP_OAUTH_REFRESH_TTL_SEC`): an
/// access token from its issue, a refresh token (and with it the grant) from its last use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    pub(crate) access: Duration,
    pub(crate) refresh: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        use mymcp_settings as settings;
        Lifetimes {
            access: Duration::from_secs(settings::OAUTH_ACCESS_TTL_SEC.default()),
            refresh: Duration::from_secs(settings::OAUTH_REFRESH_TTL_SEC.default()),
        }
    }
}
/// Wall-clock seconds `at` is from `now` (`wall` is now's): for storing an `Instant`.
fn wall_of(at: Instant, now: Instant, wall: i64) -> i64 {
    wall + at.saturating_duration_since(now).as_secs() as i64
}

/// Live grants, at most.
pub(crate) const MAX_GRANTS: usize = 1024;
/// Live grants of one client, at most.
pub(crate) const MAX_GRANTS_PER_CLIENT: usize = 32;
/// Rotated-away refresh tokens remembered per grant, to tell reuse from a stranger's token.
const SPENT_PER_GRANT: usize = 64;

/// What a grant is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GrantInfo {
    pub(crate) client_id: String,
    pub(crate) user: String,
    pub(crate) role: Role,
    pub(crate) resource: String,
}

/// Tokens handed to the client: the values, shown only now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issued {
    pub(crate) grant: u64,
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
    pub(crate) expires_in: Duration,
}

/// Why a refresh failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RefreshRefused {
    /// Not a refresh token of a live grant of this client (or expired): `invalid_grant`.
    Invalid,
    /// A rotated-away refresh token: the grant is revoked now (`invalid_grant`, audited).
    Reused { grant: u64 },
}

#[derive(Debug)]
struct Grant {
    info: GrantInfo,
    key: TokenDigest,
    access: TokenDigest,
    access_expires: Instant,
    refresh: TokenDigest,
    refresh_expires: Instant,
    spent: Vec<TokenDigest>,
    /// Wall-clock seconds of the approval and of the last refresh, for listing.
    created: i64,
    refreshed: Option<i64>,
}

/// A grant as the state file keeps it: digests (hex) and wall-clock seconds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Stored {
    id: u64,
    client_id: String,
    user: String,
    role: Role,
    resource: String,
    key: String,
    access: String,
    access_expires: i64,
    refresh: String,
    refresh_expires: i64,
    spent: Vec<String>,
    created: i64,
    refreshed: Option<i64>,
}

/// A live grant as `mymcpctl oauth grants` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) id: u64,
    pub(crate) info: GrantInfo,
    pub(crate) created: i64,
    pub(crate) refreshed: Option<i64>,
    /// Until the refresh token expires (then the grant is gone).
    pub(crate) remaining: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// Counts the changes (a grant made, rotated or gone): what is stored is current while
    /// it has not moved.
    changes: u64,
    grants: HashMap<u64, Grant>,
    by_access: HashMap<TokenDigest, u64>,
    by_refresh: HashMap<TokenDigest, u64>,
    by_spent: HashMap<TokenDigest, u64>,
    by_key: HashMap<TokenDigest, u64>,
}

/// The executor's live grants.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    inner: Mutex<Inner>,
    lifetimes: Lifetimes,
}

/// 32 random bytes as a token value (`mcp_` + 64 hex digits).
fn value(random: [u8; 32]) -> String {
    format!("mcp_{}", super::text::hex(&random))
}

impl Grants {
    pub(crate) fn new(lifetimes: Lifetimes) -> Grants {
        Grants {
            inner: Mutex::default(),
            lifetimes,
        }
    }

    /// A new grant for `info` with its first tokens (from `random`: access, refresh, key).
    /// `None` when the bounds are reached.
    pub(crate) fn create(
        &self,
        info: GrantInfo,
        random: [[u8; 32]; 3],
        now: Instant,
    ) -> Option<Issued> {
        let mut inner = self.lock();
        inner.expire(now);
        let of_client = (inner.grants.values())
            .filter(|g| g.info.client_id == info.client_id)
            .count();
        if inner.grants.len() >= MAX_GRANTS || of_client >= MAX_GRANTS_PER_CLIENT {
            return None;
        }
        let (access, refresh) = (value(random[0]), value(random[1]));
        let key = digest(&value(random[2]));
        inner.next += 1;
        inner.changes += 1;
        let id = inner.next;
        let grant = Grant {
            info,
            key,
            access: digest(&access),
            access_expires: now + self.lifetimes.access,
            refresh: digest(&refresh),
            refresh_expires: now + self.lifetimes.refresh,
            spent: Vec::new(),
            created: mymcp_tokens::clock::unix_now(),
            refreshed: None,
        };
        inner.by_access.insert(grant.access, id);
        inner.by_refresh.insert(grant.refresh, id);
        inner.by_key.insert(key, id);
        inner.grants.insert(id, grant);
        Some(Issued {
            grant: id,
            access_token: access,
            refresh_token: refresh,
            expires_in: self.lifetimes.access,
        })
    }

    /// Rotates the tokens of the grant whose live refresh token is `refresh`, for
    /// `client_id`. A rotated-away token revokes the grant. `role`, when given, narrows the
    /// grant's role for good (never widens).
    pub(crate) fn refresh(
        &self,
        refresh: &TokenDigest,
        client_id: &str,
        role: Option<Role>,
        random: [[u8; 32]; 2],
        now: Instant,
    ) -> Result<Issued, RefreshRefused> {
        let mut inner = self.lock();
        inner.expire(now);
        if let Some(&id) = inner.by_spent.get(refresh) {
            let owner = inner.grants.get(&id).map(|g| g.info.client_id.clone());
            if owner.as_deref() == Some(client_id) {
                inner.revoke(id);
                return Err(RefreshRefused::Reused { grant: id });
            }
            return Err(RefreshRefused::Invalid);
        }
        let Some(&id) = inner.by_refresh.get(refresh) else {
            return Err(RefreshRefused::Invalid);
        };
        let Some(grant) = inner.grants.get(&id) else {
            return Err(RefreshRefused::Invalid);
        };
        if grant.info.client_id != client_id {
            return Err(RefreshRefused::Invalid);
        }
        let (access, new_refresh) = (value(random[0]), value(random[1]));
        let (old_access, old_refresh) = (grant.access, grant.refresh);
        inner.changes += 1;
        inner.by_access.remove(&old_access);
        inner.by_refresh.remove(&old_refresh);
        inner.by_spent.insert(old_refresh, id);
        inner.by_access.insert(digest(&access), id);
        inner.by_refresh.insert(digest(&new_refresh), id);
        let grant = inner.grants.get_mut(&id).expect("looked up above");
        grant.access = digest(&access);
        grant.access_expires = now + self.lifetimes.access;
        grant.refresh = digest(&new_refresh);
        grant.refresh_expires = now + self.lifetimes.refresh;
        grant.spent.push(old_refresh);
        grant.refreshed = Some(mymcp_tokens::clock::unix_now());
        let forgotten = (grant.spent.len() > SPENT_PER_GRANT).then(|| grant.spent.remove(0));
        if let Some(r) = role {
            if r == Role::Ro {
                grant.info.role = Role::Ro;
            }
        }
        if let Some(old) = forgotten {
            inner.by_spent.remove(&old);
        }
        Ok(Issued {
            grant: id,
            access_token: access,
            refresh_token: new_refresh,
            expires_in: self.lifetimes.access,
        })
    }

    /// RFC 7009: revokes the grant of `token` (its access or refresh token) if it is
    /// `client_id`'s. Whether a grant was revoked (the answer is 200 either way).
    pub(crate) fn revoke_token(&self, token: &TokenDigest, client_id: &str) -> bool {
        let mut inner = self.lock();
        let id = inner
            .by_access
            .get(token)
            .or_else(|| inner.by_refresh.get(token))
            .copied();
        match id {
            Some(id)
                if inner
                    .grants
                    .get(&id)
                    .is_some_and(|g| g.info.client_id == client_id) =>
            {
                inner.revoke(id);
                true
            }
            _ => false,
        }
    }

    /// Revokes grant `id` (`mymcpctl oauth revoke`, reuse, the client's removal).
    pub(crate) fn revoke(&self, id: u64) -> bool {
        self.lock().revoke(id)
    }

    /// The role of grant `id`, if it lives.
    pub(crate) fn role(&self, id: u64) -> Option<Role> {
        self.lock().grants.get(&id).map(|g| g.info.role)
    }

    /// Revokes every grant of `client_id`; how many there were.
    pub(crate) fn revoke_client(&self, client_id: &str) -> u64 {
        let mut inner = self.lock();
        let ids: Vec<u64> = (inner.grants.iter())
            .filter(|(_, g)| g.info.client_id == client_id)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            inner.revoke(*id);
        }
        ids.len() as u64
    }

    /// The live grants, oldest first.
    pub(crate) fn list(&self, now: Instant) -> Vec<Listed> {
        let mut inner = self.lock();
        inner.expire(now);
        let mut out: Vec<_> = (inner.grants.iter())
            .map(|(id, g)| Listed {
                id: *id,
                info: g.info.clone(),
                created: g.created,
                refreshed: g.refreshed,
                remaining: g.refresh_expires.saturating_duration_since(now),
            })
            .collect();
        out.sort_by_key(|l| l.id);
        out
    }

    /// How many changes the grants have seen (see [`Grants::snapshot`]).
    pub(crate) fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// The live grants as stored (digests only: nothing in them authenticates), at `now`
    /// whose wall-clock time is `wall`.
    pub(crate) fn snapshot(&self, now: Instant, wall: i64) -> Vec<Stored> {
        let mut inner = self.lock();
        inner.expire(now);
        let mut out: Vec<Stored> = (inner.grants.iter())
            .map(|(id, g)| Stored {
                id: *id,
                client_id: g.info.client_id.clone(),
                user: g.info.user.clone(),
                role: g.info.role,
                resource: g.info.resource.clone(),
                key: hex(&g.key.0),
                access: hex(&g.access.0),
                access_expires: wall_of(g.access_expires, now, wall),
                refresh: hex(&g.refresh.0),
                refresh_expires: wall_of(g.refresh_expires, now, wall),
                spent: g.spent.iter().map(|d| hex(&d.0)).collect(),
                created: g.created,
                refreshed: g.refreshed,
            })
            .collect();
        out.sort_by_key(|g| g.id);
        out
    }

    /// Puts back grants stored by [`Grants::snapshot`] (at `now`, wall-clock `wall`): those
    /// for `resource` that have not expired, within the bounds; how many.
    pub(crate) fn restore(
        &self,
        stored: Vec<Stored>,
        resource: &str,
        now: Instant,
        wall: i64,
    ) -> usize {
        let at = |w: i64| now + Duration::from_secs(w.saturating_sub(wall).max(0) as u64);
        let mut inner = self.lock();
        let mut n = 0;
        for g in stored {
            let digests = (unhex32(&g.key), unhex32(&g.access), unhex32(&g.refresh));
            let (Some(key), Some(access), Some(refresh)) = digests else {
                continue;
            };
            let of_client = (inner.grants.values())
                .filter(|x| x.info.client_id == g.client_id)
                .count();
            if g.resource != resource
                || g.refresh_expires <= wall
                || !g.role.is_client()
                || !mymcp_tokens::valid_user(&g.user)
                || inner.grants.len() >= MAX_GRANTS
                || of_client >= MAX_GRANTS_PER_CLIENT
                || inner.grants.contains_key(&g.id)
            {
                continue;
            }
            let spent: Vec<TokenDigest> = (g.spent.iter())
                .filter_map(|d| unhex32(d).map(TokenDigest))
                .take(SPENT_PER_GRANT)
                .collect();
            let grant = Grant {
                info: GrantInfo {
                    client_id: g.client_id,
                    user: g.user,
                    role: g.role,
                    resource: g.resource,
                },
                key: TokenDigest(key),
                access: TokenDigest(access),
                access_expires: at(g.access_expires),
                refresh: TokenDigest(refresh),
                refresh_expires: at(g.refresh_expires),
                spent,
                created: g.created,
                refreshed: g.refreshed,
            };
            inner.by_access.insert(grant.access, g.id);
            inner.by_refresh.insert(grant.refresh, g.id);
            inner.by_key.insert(grant.key, g.id);
            for d in &grant.spent {
                inner.by_spent.insert(*d, g.id);
            }
            inner.next = inner.next.max(g.id);
            inner.grants.insert(g.id, grant);
            n += 1;
        }
        n
    }

    /// The grant an access token or a key authenticates as, at `now`.
    fn holder(&self, token: &TokenDigest, now: Instant) -> Option<(Holder, TokenDigest)> {
        let inner = self.lock();
        let (grant, by_key) = match inner.by_access.get(token) {
            Some(id) => (inner.grants.get(id)?, false),
            None => (inner.grants.get(inner.by_key.get(token)?)?, true),
        };
        if !by_key && now >= grant.access_expires {
            return None;
        }
        Some((
            Holder {
                identity: Identity {
                    name: format!("oauth:{}", grant.info.client_id),
                    role: grant.info.role,
                },
                user: grant.info.user.clone(),
                limits: TokenLimits::default(),
                view: TokenView::default(),
                delegated: true,
            },
            grant.key,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Delegated for Grants {
    fn authenticate(&self, digest: &TokenDigest) -> Option<(Holder, TokenDigest)> {
        self.holder(digest, Instant::now())
    }

    fn is_valid(&self, key: &TokenDigest) -> bool {
        self.lock().by_key.contains_key(key)
    }
}

impl Inner {
    fn revoke(&mut self, id: u64) -> bool {
        let Some(g) = self.grants.remove(&id) else {
            return false;
        };
        self.changes += 1;
        self.by_access.remove(&g.access);
        self.by_refresh.remove(&g.refresh);
        self.by_key.remove(&g.key);
        for s in &g.spent {
            self.by_spent.remove(s);
        }
        true
    }

    /// Grants whose refresh token expired are gone (their access token expired before).
    fn expire(&mut self, now: Instant) {
        let dead: Vec<u64> = (self.grants.iter())
            .filter(|(_, g)| now >= g.refresh_expires)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.revoke(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(client: &str) -> GrantInfo {
        GrantInfo {
            client_id: client.into(),
            user: "alice".into(),
            role: Role::Rw,
            resource: "https://host.example/mcp".into(),
        }
    }

    fn r(n: u64) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b
    }

    fn auth(g: &Grants, token: &str, now: Instant) -> Option<(Holder, TokenDigest)> {
        g.holder(&digest(token), now)
    }

    #[test]
    fn an_access_token_acts_as_the_grants_account_under_a_key_that_outlives_rotation() {
        let g = Grants::default();
        let now = Instant::now();
        let first = g.create(info("c1"), [r(1), r(2), r(3)], now).unwrap();
        let (holder, key) = auth(&g, &first.access_token, now).unwrap();
        assert_eq!(holder.user, "alice");
        assert_eq!(holder.identity.role, Role::Rw);
        let second = g
            .refresh(&digest(&first.refresh_token), "c1", None, [r(4), r(5)], now)
            .unwrap();
        assert!(
            auth(&g, &first.access_token, now).is_none(),
            "old access token"
        );
        let (_, same_key) = auth(&g, &second.access_token, now).unwrap();
        assert_eq!(key, same_key);
        assert!(g.is_valid(&key));
        // An access token ends with its life; the grant does not.
        assert!(auth(&g, &second.access_token, now + Lifetimes::default().access).is_none());
        assert!(g.is_valid(&key));
    }

    #[test]
    fn configured_lifetimes_end_an_access_token_and_an_unused_grant() {
        let g = Grants::new(Lifetimes {
            access: Duration::from_secs(60),
            refresh: Duration::from_secs(3600),
        });
        let now = Instant::now();
        let first = g.create(info("c1"), [r(1), r(2), r(3)], now).unwrap();
        assert_eq!(first.expires_in, Duration::from_secs(60));
        let later = now + Duration::from_secs(61);
        assert!(auth(&g, &first.access_token, later).is_none(), "expired");
        // Refreshed in time, the grant lives on from the refresh.
        let second = g
            .refresh(
                &digest(&first.refresh_token),
                "c1",
                None,
                [r(4), r(5)],
                later,
            )
            .unwrap();
        assert!(auth(&g, &second.access_token, later).is_some());
        assert_eq!(g.list(later + Duration::from_secs(3599)).len(), 1);
        // Unused for the refresh lifetime: gone, and its refresh token with it.
        let gone = later + Duration::from_secs(3600);
        assert!(g.list(gone).is_empty());
        assert_eq!(
            g.refresh(
                &digest(&second.refresh_token),
                "c1",
                None,
                [r(6), r(7)],
                gone
            ),
            Err(RefreshRefused::Invalid)
        );
    }

    #[test]
    fn a_reused_refresh_token_revokes_the_whole_grant() {
        let g = Grants::default();
        let now = Instant::now();
        let first = g.create(info("c1"), [r(1), r(2), r(3)], now).unwrap();
        let (_, key) = auth(&g, &first.access_token, now).unwrap();
        let stolen = digest(&first.refresh_token);
        let legit = g.refresh(&stolen, "c1", None, [r(4), r(5)], now).unwrap();
        // The thief (or the client, after a lost answer) presents the old one.
        assert_eq!(
            g.refresh(&stolen, "c1", None, [r(6), r(7)], now),
            Err(RefreshRefused::Reused { grant: legit.grant })
        );
        assert!(auth(&g, &legit.access_token, now).is_none());
        assert_eq!(
            g.refresh(&digest(&legit.refresh_token), "c1", None, [r(8), r(9)], now),
            Err(RefreshRefused::Invalid)
        );
        assert!(!g.is_valid(&key));
        assert!(g.list(now).is_empty());
    }

    #[test]
    fn another_client_can_neither_refresh_nor_revoke_nor_make_a_grant_reused() {
        let g = Grants::default();
        let now = Instant::now();
        let t = g.create(info("c1"), [r(1), r(2), r(3)], now).unwrap();
        let refresh = digest(&t.refresh_token);
        assert_eq!(
            g.refresh(&refresh, "c2", None, [r(4), r(5)], now),
            Err(RefreshRefused::Invalid)
        );
        assert!(!g.revoke_token(&digest(&t.access_token), "c2"));
        let t2 = g.refresh(&refresh, "c1", None, [r(6), r(7)], now).unwrap();
        // c2 replaying c1's spent token does not revoke c1's grant.
        assert_eq!(
            g.refresh(&refresh, "c2", None, [r(8), r(9)], now),
            Err(RefreshRefused::Invalid)
        );
        assert!(auth(&g, &t2.access_token, now).is_some());
        assert!(g.revoke_token(&digest(&t2.refresh_token), "c1"));
        assert!(auth(&g, &t2.access_token, now).is_none());
    }

    #[test]
    fn a_refresh_narrows_the_role_and_never_widens_it() {
        let g = Grants::default();
        let now = Instant::now();
        let t = g.create(info("c1"), [r(1), r(2), r(3)], now).unwrap();
        let t = g
            .refresh(
                &digest(&t.refresh_token),
                "c1",
                Some(Role::Ro),
                [r(4), r(5)],
                now,
            )
            .unwrap();
        assert_eq!(
            auth(&g, &t.access_token, now).unwrap().0.identity.role,
            Role::Ro
        );
        let t = g
            .refresh(
                &digest(&t.refresh_token),
                "c1",
                Some(Role::Rw),
                [r(6), r(7)],
                now,
            )
            .unwrap();
        assert_eq!(
            auth(&g, &t.access_token, now).unwrap().0.identity.role,
            Role::Ro
        );
    }

    #[test]
    fn grants_are_bounded_per_client_and_in_all_and_expire() {
        let g = Grants::default();
        let now = Instant::now();
        for i in 0..MAX_GRANTS_PER_CLIENT as u64 {
            assert!(g
                .create(info("c1"), [r(3 * i), r(3 * i + 1), r(3 * i + 2)], now)
                .is_some());
        }
        assert!(g
            .create(info("c1"), [r(900), r(901), r(902)], now)
            .is_none());
        assert!(g
            .create(info("c2"), [r(903), r(904), r(905)], now)
            .is_some());
        assert_eq!(g.list(now + Lifetimes::default().refresh).len(), 0);
    }
}
