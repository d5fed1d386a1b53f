//! Accounts: the Unix account a token acts as, resolved through NSS when a call is made.
//!
//! Every client token names an account in the executor's store (`user`, else
//! `MYMCP_DEFAULT_USER`). For each call the executor resolves it through the system's user
//! database — local files, LDAP, SSSD, whatever NSS is configured with — into an [`Account`]:
//! uid, primary gid, supplementary groups as `initgroups` would set them, home directory and
//! login shell. An account that does not exist (any more), has expired (`sp_expire` in the
//! shadow database) or cannot be looked up is an `AccountUnavailable` failure, and nothing
//! runs.
//!
//! How a call then acts as the account is the tools' business: file work runs inside
//! [`Account::act`] (the calling thread's effective ids become the account's, see
//! [`mymcp_sys::creds::act_as_effective`]), commands are spawned with the account's ids set in
//! the child ([`mymcp_sys::process::spawn_isolated_as`]). An account with uid 0 (`root`), or
//! with the executor's own uid, is not acted as: the call runs with the executor's rights,
//! exactly as before accounts existed, at no cost.
//!
//! Looking an account up reads `/etc/passwd`, `/etc/group` and `/etc/shadow` (or asks a
//! directory service), tens of microseconds, as much as a small `read_file` costs in all. So a
//! resolution is kept for [`REUSE_FOR`] and only while those three files keep their stamp
//! (device, inode, size, mtime, ctime: `useradd`, `userdel`, `usermod`, `chage` and `gpasswd`
//! replace or rewrite them, so a local change applies to the next call); expiry is checked
//! against the day on every call. Directory services have caches of their own (SSSD keeps
//! entries for 90 minutes by default) that a few seconds more do not change. The name `root` is
//! never looked up.

use mymcp_protocol::{ErrorCode, ToolFailure};
use mymcp_sys::creds::{self, ActingAs};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a resolution is reused while the local databases keep their stamps.
const REUSE_FOR: Duration = Duration::from_secs(5);
/// The local databases an account is made of.
const DATABASES: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/shadow"];
/// The account that is never looked up.
const ROOT: &str = "root";

/// A Unix account as a call acts as it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups (`getgrouplist`, the primary group included).
    pub(crate) groups: Vec<u32>,
    pub(crate) home: String,
    /// The login shell (`SHELL` of commands); may be empty.
    pub(crate) shell: String,
    /// The day (since 1970-01-01) from which it is expired, if it ever is.
    expires: Option<i64>,
    /// Calls act as it: a uid other than 0 and the executor's own.
    acts: bool,
}

impl Account {
    /// Root, as the executor is: calls run with the executor's rights.
    fn root() -> Account {
        Account {
            name: ROOT.to_owned(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: "/root".to_owned(),
            shell: String::new(),
            expires: None,
            acts: false,
        }
    }

    /// An account calls act as (for the unit tests of the tools).
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str) -> Option<Account> {
        let a = mymcp_sys::user_by_name(name).ok()??;
        let groups = creds::groups_of(&a.name, a.gid).ok()?;
        Some(Account {
            acts: a.uid != 0 && mymcp_sys::euid() == 0,
            name: a.name,
            uid: a.uid,
            gid: a.gid,
            groups,
            home: a.home,
            shell: a.shell,
            expires: None,
        })
    }

    /// Whether calls act as this account (else they run with the executor's rights).
    pub(crate) fn acts(&self) -> bool {
        self.acts
    }

    /// Makes the calling thread act as this account for file work until the returned guard
    /// drops: the kernel then checks every file access as the account's (real ids stay root,
    /// see [`creds::act_as_effective`]). Nothing changes for an account that is not acted as.
    /// Never hold it across an `.await`: it is this thread's (the guard is not `Send`).
    ///
    /// Inside a guard for the same account it is a no-op (the thread already is the account,
    /// and could not change its ids again); for another account it fails.
    pub(crate) fn act(&self) -> Result<Acting, ToolFailure> {
        if !self.acts {
            return Ok(Acting { _guard: None });
        }
        match ACTING.get() {
            Some(uid) if uid == self.uid => return Ok(Acting { _guard: None }),
            Some(uid) => {
                return Err(ToolFailure::new(
                    ErrorCode::InternalError,
                    format!(
                        "cannot act as account '{}': this thread acts as uid {uid}; nothing ran",
                        self.name
                    ),
                ))
            }
            None => {}
        }
        // A thread started by one that acts as the account (a search's scoped threads) has
        // its ids already, and ends with the call's work.
        match mymcp_sys::euid() {
            0 => {}
            uid if uid == self.uid => return Ok(Acting { _guard: None }),
            uid => {
                return Err(ToolFailure::new(
                    ErrorCode::InternalError,
                    format!(
                        "cannot act as account '{}': this thread runs as uid {uid}; nothing ran",
                        self.name
                    ),
                ))
            }
        }
        let guard = creds::act_as_effective(self.uid, self.gid, &self.groups).map_err(|e| {
            ToolFailure::new(
                ErrorCode::InternalError,
                format!("cannot act as account '{}': {e}; nothing ran", self.name),
            )
        })?;
        ACTING.set(Some(self.uid));
        Ok(Acting {
            _guard: Some(Marked(guard)),
        })
    }
}

/// The calling thread acting as an account (or not, for root); root again when dropped.
#[derive(Debug)]
#[must_use = "the thread acts as the account only while this lives"]
pub(crate) struct Acting {
    _guard: Option<Marked>,
}

thread_local! {
    /// The uid this thread acts as, while an [`Acting`] that changed its ids lives.
    static ACTING: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// The guard that changed the thread's ids, with the thread's note of it.
#[derive(Debug)]
struct Marked(#[allow(dead_code)] ActingAs);

impl Drop for Marked {
    fn drop(&mut self) {
        // Before the ids are given back (the field drops after this): the note is cleared
        // either way, and a failure to give them back aborts the process.
        ACTING.set(None);
    }
}

impl Acting {
    /// Whether the thread acts as another account than the executor's.
    #[cfg(test)]
    pub(crate) fn is_acting(&self) -> bool {
        self._guard.is_some()
    }
}

/// Resolves account names, keeping recent resolutions (see the module documentation).
#[derive(Debug)]
pub(crate) struct Accounts {
    /// The executor's effective uid at start: 0 in production.
    executor_uid: u32,
    root: Arc<Account>,
    recent: Mutex<HashMap<String, Recent>>,
}

#[derive(Debug, Clone)]
struct Recent {
    at: Instant,
    stamps: Stamps,
    result: Result<Arc<Account>, ToolFailure>,
}

/// What identifies the versions of the local databases.
type Stamps = [Option<(u64, u64, u64, i64, i64, i64, i64)>; 3];

fn stamps() -> Stamps {
    DATABASES.map(|p| {
        std::fs::metadata(p).ok().map(|m| {
            (
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        })
    })
}

/// Today, in days since 1970-01-01 (the unit of `sp_expire`).
fn today() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

impl Accounts {
    pub(crate) fn new() -> Accounts {
        Accounts {
            executor_uid: mymcp_sys::euid(),
            root: Arc::new(Account::root()),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The account `name`, when that needs no lookup (root, or a recent resolution that still
    /// holds); `None` when it must be looked up ([`Accounts::lookup`], which may block).
    pub(crate) fn resolve_now(&self, name: &str) -> Option<Result<Arc<Account>, ToolFailure>> {
        if name == ROOT {
            return Some(Ok(self.root.clone()));
        }
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()?;
        if recent.at.elapsed() >= REUSE_FOR || recent.stamps != stamps() {
            return None;
        }
        Some(recent.result.and_then(|a| not_expired(a, today())))
    }

    /// Looks `name` up through NSS (blocking: files, or a directory service) and keeps the
    /// result for the next calls.
    pub(crate) fn lookup(&self, name: &str) -> Result<Arc<Account>, ToolFailure> {
        if name == ROOT {
            return Ok(self.root.clone());
        }
        let before = stamps();
        let result = self.look_up(name).map(Arc::new);
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name.to_owned(),
                Recent {
                    at: Instant::now(),
                    stamps: before,
                    result: result.clone(),
                },
            );
        result.and_then(|a| not_expired(a, today()))
    }

    fn look_up(&self, name: &str) -> Result<Account, ToolFailure> {
        let unavailable = |why: String| {
            ToolFailure::new(
                ErrorCode::AccountUnavailable,
                format!("This token acts as the account '{name}', which {why}; nothing ran."),
            )
        };
        let pw = match mymcp_sys::user_by_name(name) {
            Ok(Some(pw)) => pw,
            Ok(None) => {
                return Err(unavailable("does not exist on this host".into())
                    .with_suggestion("Ask the operator to create the account, or to give you a token of another one (mymcpctl token add --user)"))
            }
            Err(e) => return Err(unavailable(format!("cannot be looked up ({e})"))),
        };
        let expires = match creds::expiry_day(name) {
            Ok(day) => day,
            // No shadow entry to read: as root, only a database that has none.
            Err(e) if self.executor_uid != 0 => {
                tracing::debug!(account = name, error = %e, "no shadow entry readable");
                None
            }
            Err(e) => return Err(unavailable(format!("cannot be looked up ({e})"))),
        };
        let groups = creds::groups_of(name, pw.gid)
            .map_err(|e| unavailable(format!("has groups that cannot be listed ({e})")))?;
        let acts = pw.uid != 0 && pw.uid != self.executor_uid;
        if acts && self.executor_uid != 0 {
            return Err(unavailable(format!(
                "the executor cannot act as: it runs as uid {}, not root",
                self.executor_uid
            )));
        }
        Ok(Account {
            name: pw.name,
            uid: pw.uid,
            gid: pw.gid,
            groups,
            home: pw.home,
            shell: pw.shell,
            expires,
            acts,
        })
    }
}

/// `account` unless it has expired by `today` (as `pam_unix` counts: on its expiry day).
fn not_expired(account: Arc<Account>, today: i64) -> Result<Arc<Account>, ToolFailure> {
    match account.expires {
        Some(day) if today >= day => Err(ToolFailure::new(
            ErrorCode::AccountUnavailable,
            format!(
                "This token acts as the account '{}', which has expired; nothing ran.",
                account.name
            ),
        )
        .with_suggestion("Ask the operator to extend the account (chage -E) or to give you a token of another one")),
        _ => Ok(account),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_never_looked_up_and_is_not_acted_as() {
        let accounts = Accounts::new();
        let root = accounts.resolve_now("root").unwrap().unwrap();
        assert_eq!((root.uid, root.acts()), (0, false));
        assert!(!root.act().unwrap().is_acting());
    }

    #[test]
    fn unknown_accounts_are_unavailable_and_remembered() {
        let accounts = Accounts::new();
        assert!(accounts.resolve_now("no-such-user-mymcp").is_none());
        let e = accounts.lookup("no-such-user-mymcp").unwrap_err();
        assert_eq!(e.code, ErrorCode::AccountUnavailable);
        assert!(e.message.contains("'no-such-user-mymcp'"), "{}", e.message);
        assert!(e.message.contains("does not exist"), "{}", e.message);
        let again = accounts.resolve_now("no-such-user-mymcp").unwrap();
        assert_eq!(again.unwrap_err(), e);
    }

    #[test]
    fn an_account_is_resolved_with_its_groups_and_acted_as_only_by_root() {
        let accounts = Accounts::new();
        let nobody = accounts.lookup("nobody").unwrap();
        assert_ne!(nobody.uid, 0);
        assert!(nobody.groups.contains(&nobody.gid));
        assert_eq!(nobody.acts(), mymcp_sys::euid() == 0);
        let again = accounts.resolve_now("nobody").unwrap().unwrap();
        assert!(Arc::ptr_eq(&nobody, &again), "the resolution is reused");
    }

    #[test]
    fn expiry_counts_from_the_expiry_day() {
        let mut a = Account::root();
        a.name = "x".into();
        a.expires = Some(100);
        let a = Arc::new(a);
        assert!(not_expired(a.clone(), 99).is_ok());
        let e = not_expired(a.clone(), 100).unwrap_err();
        assert_eq!(e.code, ErrorCode::AccountUnavailable);
        assert!(e.message.contains("expired"));
        assert!(not_expired(a, 101).is_err());
    }
}
