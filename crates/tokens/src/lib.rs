//! The token store: SHA-256 digests of bearer tokens with their name, role and account.
//!
//! The store never holds a token value: a token is shown once when created and only its
//! digest is kept, so reading the file (or a backup of it) yields nothing usable. The file is
//! JSON, mode 0600, replaced atomically (temp file, fsync, rename, fsync of the directory).
//!
//! The executor is the only writer, but an operator may edit the file by hand: before every
//! lookup the file's identity (device, inode, size, mtime, ctime) is compared with what was
//! last loaded, and a changed file is re-read at once. A file that no longer parses is not
//! applied and never overwritten; the last good set stays in force and changes are refused
//! until it is fixed. `last_used` is kept in memory and written lazily ([`TokenStore::flush`]),
//! never once per request.
//!
//! Every client token names the Unix account its calls act as (`user`). A token stored
//! without one (made by an older mymcp, imported, or written by hand) acts as the store's
//! default account, [`TokenStore::with_default_user`] (the executor's `MYMCP_DEFAULT_USER`,
//! `root` unless set).
//!
//! This crate is mymcp-tokens: the store, the digests and the clock its timestamps come from.
//! The executor owns the store at run time; `mymcpctl` (the quick try's temporary store, the
//! import of another mymcp's tokens) and the fuzz targets use it without linking the executor.
//!
//! ```
//! let d = mymcp_tokens::digest("tok_example");
//! assert_eq!(d, mymcp_tokens::digest("tok_example"));
//! assert_ne!(d, mymcp_tokens::digest("tok_other"));
//! ```

#![forbid(unsafe_code)]

pub mod clock;

use mymcp_protocol::{
    Identity, ImportedToken, Role, TokenDigest, TokenInfo, TokenLimits, TokenView,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Prefix of every token value.
pub const TOKEN_PREFIX: &str = "tok_";
/// Random bytes per token (256 bits, printed as 64 hex digits).
const TOKEN_RANDOM_BYTES: usize = 32;
/// Hex digits of the digest shown as a token's id.
pub const ID_LEN: usize = 12;
const FORMAT: &str = "mymcp-tokens-v1";
const MAX_NAME_LEN: usize = 64;
/// Longest account name accepted (local names are at most 32 bytes; directory services'
/// `user@domain` names may be longer).
const MAX_USER_LEN: usize = 256;
/// The account of tokens that name none, unless the store is told otherwise: the built-in
/// default of `MYMCP_DEFAULT_USER` (the executor sets the store's from the setting).
pub const BUILTIN_DEFAULT_USER: &str = "root";

/// Why the store could not be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("token file {path} is not a valid mymcp token store: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid token name {0:?}: use 1-64 printable characters")]
    InvalidName(String),
    #[error(
        "invalid account name {0:?}: use 1-256 printable characters without spaces, ':' or '/'"
    )]
    InvalidUser(String),
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
    #[error("limits are for ro and rw tokens: admin and metrics tokens run no command")]
    LimitsOnNonClient,
    #[error("no token matches {0:?}")]
    NotFound(String),
    #[error("{0:?} matches more than one token; give more digits of the id")]
    Ambiguous(String),
}

/// Computes the digest the store keys on.
pub fn digest(token: &str) -> TokenDigest {
    TokenDigest(Sha256::digest(token.as_bytes()).into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// One token as stored on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredToken {
    sha256: String,
    name: String,
    role: String,
    created_at: String,
    #[serde(default)]
    last_used: Option<String>,
    #[serde(default = "enabled_default")]
    enabled: bool,
    /// The Unix account the token acts as; missing: the store's default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// The token's own kernel limits; missing (stores from before them): the defaults.
    #[serde(default, skip_serializing_if = "StoredLimits::is_empty")]
    limits: StoredLimits,
    /// Its commands' write roots, hidden paths, and whether they have no network; missing:
    /// the host as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    write_roots: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hide: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    no_network: bool,
}

/// [`TokenLimits`] as the file spells them: only the fields that are set.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_max_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tasks_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu_max_percent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_max_secs: Option<u64>,
}

impl StoredLimits {
    fn is_empty(&self) -> bool {
        self.limits().is_default()
    }

    fn limits(&self) -> TokenLimits {
        TokenLimits {
            memory_max_mib: self.memory_max_mib,
            tasks_max: self.tasks_max,
            cpu_max_percent: self.cpu_max_percent,
            timeout_max_secs: self.timeout_max_secs,
        }
    }

    fn of(l: &TokenLimits) -> StoredLimits {
        StoredLimits {
            memory_max_mib: l.memory_max_mib,
            tasks_max: l.tasks_max,
            cpu_max_percent: l.cpu_max_percent,
            timeout_max_secs: l.timeout_max_secs,
        }
    }
}

fn enabled_default() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile {
    format: String,
    tokens: Vec<StoredToken>,
    /// Digests of revoked or rotated tokens: never imported again (from an env file that
    /// still names an old admin token, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retired: Vec<String>,
}

/// Most retired digests remembered (the oldest are forgotten first).
const MAX_RETIRED: usize = 10_000;

/// The Python/Go reference's store: plaintext tokens as map keys.
#[derive(Debug, Deserialize)]
struct LegacyFile {
    tokens: HashMap<String, LegacyToken>,
}

#[derive(Debug, Deserialize)]
struct LegacyToken {
    #[serde(default)]
    name: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    last_used: Option<String>,
    #[serde(default = "enabled_default")]
    enabled: bool,
    /// Missing means rw (the references' legacy rule); anything but "rw" means ro.
    #[serde(default)]
    role: Option<String>,
}

/// Converts a Python/Go `tokens.json` (plaintext tokens) into digests. `None` if `bytes` is
/// not in that format.
pub fn parse_legacy(bytes: &[u8]) -> Option<Vec<ImportedToken>> {
    let file: LegacyFile = serde_json::from_slice(bytes).ok()?;
    let mut out: Vec<ImportedToken> = file
        .tokens
        .into_iter()
        .map(|(token, t)| ImportedToken {
            digest: digest(&token),
            name: {
                // Control characters go first: a name made only of them is no name either.
                let name: String = t
                    .name
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_NAME_LEN)
                    .collect();
                if name.is_empty() {
                    "imported".to_owned()
                } else {
                    name
                }
            },
            role: match t.role.as_deref() {
                None | Some("rw") => Role::Rw,
                Some(_) => Role::Ro,
            },
            created_at: t
                .created_at
                .filter(|c| c != "ephemeral")
                .unwrap_or_else(clock::now_rfc3339),
            last_used: t.last_used,
            enabled: t.enabled,
        })
        .collect();
    out.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)));
    Some(out)
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    role: Role,
    created_at: String,
    last_used: Option<String>,
    enabled: bool,
    /// `None`: the store's default account.
    user: Option<String>,
    /// The token's own limits (client tokens only).
    limits: TokenLimits,
    /// Its commands' view of the host (client tokens only).
    view: TokenView,
}

/// Whether `user` is acceptable as an account name: 1 to 256 bytes, no control character,
/// space, `:` (the passwd field separator) or `/`, and not starting with `-`. Whether the
/// account exists is for the system's user database to say.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && !user.starts_with('-')
        && !user
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == ':' || c == '/')
}

/// The holder of a token as the executor needs it: who (name, role) and as which account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub identity: Identity,
    /// The Unix account the token's calls act as.
    pub user: String,
    /// The token's own limits on its commands (unset fields: the defaults).
    pub limits: TokenLimits,
    /// Its commands' view of the file system and network.
    pub view: TokenView,
    /// An OAuth grant ([`Delegated`]) rather than a token of the store.
    pub delegated: bool,
}

/// What identifies a version of the file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<TokenDigest, Entry>,
    retired: Vec<String>,
    /// The stamp of the file version `entries` came from (or was written as).
    stamp: Option<Stamp>,
    /// The file on disk changed into something unparsable; writes are refused.
    corrupt: Option<String>,
    last_used_dirty: bool,
}

/// Credentials the store does not hold but answers for: the executor's OAuth grants, whose
/// access tokens authenticate like the store's own tokens ([`TokenStore::authenticate`]).
pub trait Delegated: Send + Sync + std::fmt::Debug {
    /// The holder of `digest` (its grant's identity, the account the grant acts as, its
    /// limits and view), and the key what it does is kept under (per-token limits, jobs,
    /// transfer grants): for an OAuth access token, its grant's key, which outlives the
    /// token's rotation. A key itself authenticates as long as its grant lives.
    fn authenticate(&self, digest: &TokenDigest) -> Option<(Holder, TokenDigest)>;
    /// Whether `key` (as [`Delegated::authenticate`] gave it) still names a live grant.
    fn is_valid(&self, key: &TokenDigest) -> bool;
}

/// The executor's token store. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Writes are synced to disk (always, except for [`TokenStore::create_temporary`]).
    durable: bool,
    /// OAuth grants, once the executor has attached them.
    delegated: OnceLock<Arc<dyn Delegated>>,
    /// The account of tokens that name none.
    default_user: String,
}

impl TokenStore {
    /// A new store at `path` holding only `tokens`, written once and never synced to disk:
    /// for tokens that live as long as their process (`mymcpctl serve`'s, in a private
    /// directory removed on exit), where nothing has to survive a crash. Fails if anything
    /// is at `path` already.
    /// Client tokens among them act as `user` (`None`: the default account).
    pub fn create_temporary(
        path: &Path,
        tokens: &[(&str, Role)],
        user: Option<&str>,
    ) -> Result<(TokenStore, Vec<(String, TokenInfo)>), TokenError> {
        if fs::symlink_metadata(path).is_ok() {
            return Err(TokenError::Io {
                path: path.to_owned(),
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            });
        }
        let store = TokenStore::empty(path, false);
        let added = store.add_several(tokens, user)?;
        Ok((store, added))
    }

    /// Makes `user` the account of the tokens that name none (`MYMCP_DEFAULT_USER`).
    pub fn with_default_user(mut self, user: &str) -> Result<TokenStore, TokenError> {
        if !valid_user(user) {
            return Err(TokenError::InvalidUser(user.to_owned()));
        }
        self.default_user = user.to_owned();
        Ok(self)
    }

    /// The account of the tokens that name none.
    pub fn default_user(&self) -> &str {
        &self.default_user
    }

    fn empty(path: &Path, durable: bool) -> TokenStore {
        TokenStore {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                retired: Vec::new(),
                stamp: None,
                corrupt: None,
                last_used_dirty: false,
            }),
            durable,
            delegated: OnceLock::new(),
            default_user: BUILTIN_DEFAULT_USER.to_owned(),
        }
    }

    /// Opens the store at `path`, creating an empty one (mode 0600) if the file is missing.
    /// A file that exists but does not parse is an error: the executor must not start on it.
    pub fn open(path: &Path) -> Result<TokenStore, TokenError> {
        let io_err = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        let store = TokenStore::empty(path, true);
        match fs::metadata(path) {
            Ok(meta) => {
                let bytes = fs::read(path).map_err(io_err)?;
                let mut inner = store.inner.lock().expect("token store lock");
                match store.parse(&bytes) {
                    Ok((entries, retired)) => {
                        inner.entries = entries;
                        inner.retired = retired;
                        inner.stamp = Some(Stamp::of(&meta));
                    }
                    Err(e) => {
                        // A Python/Go store: convert it in place, so no token value stays on disk.
                        let Some(legacy) = parse_legacy(&bytes) else {
                            return Err(e);
                        };
                        let n = legacy.len();
                        for t in legacy {
                            inner.entries.insert(t.digest, entry_of(t));
                        }
                        store.save(&mut inner)?;
                        tracing::warn!(path = %path.display(), tokens = n, "converted a Python/Go token file: only digests are kept now; the tokens keep working");
                    }
                }
                if meta.mode() & 0o077 != 0 {
                    // A store readable by others leaks nothing usable (digests only), but keep
                    // it private anyway.
                    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                        .map_err(io_err)?;
                    tracing::warn!(path = %path.display(), "token file was group/world accessible; set to 0600");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(io_err)?;
                }
                let mut inner = store.inner.lock().expect("token store lock");
                store.save(&mut inner)?;
            }
            Err(e) => return Err(io_err(e)),
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(
        &self,
        bytes: &[u8],
    ) -> Result<(HashMap<TokenDigest, Entry>, Vec<String>), TokenError> {
        parse_store(bytes).map_err(|reason| TokenError::Corrupt {
            path: self.path.clone(),
            reason,
        })
    }

    /// Re-reads the file if it changed since it was loaded or written.
    fn refresh(&self, inner: &mut Inner) {
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            // A temporary store before its first write: there is nothing to read yet.
            Err(e) if inner.stamp.is_none() && e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                // Deleted or unreadable: keep the last good set, and say so once.
                if inner.corrupt.is_none() {
                    tracing::error!(path = %self.path.display(), error = %e, "token file unreadable; keeping the last loaded tokens");
                    inner.corrupt = Some(e.to_string());
                }
                return;
            }
        };
        let stamp = Stamp::of(&meta);
        if inner.stamp == Some(stamp) {
            return;
        }
        let parsed = fs::read(&self.path)
            .map_err(|source| TokenError::Io {
                path: self.path.clone(),
                source,
            })
            .and_then(|b| self.parse(&b));
        match parsed {
            Ok((mut entries, retired)) => {
                // Keep more recent in-memory last_used values of tokens that still exist.
                for (d, e) in entries.iter_mut() {
                    if let Some(old) = inner.entries.get(d) {
                        if old.last_used > e.last_used {
                            e.last_used = old.last_used.clone();
                        }
                    }
                }
                tracing::info!(path = %self.path.display(), tokens = entries.len(), "token file changed on disk; reloaded");
                inner.entries = entries;
                inner.retired = retired;
                inner.corrupt = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "token file changed but does not parse; keeping the last loaded tokens and refusing changes until it is fixed");
                inner.corrupt = Some(e.to_string());
            }
        }
        inner.stamp = Some(stamp);
    }

    /// Looks a digest up. Disabled tokens are treated as unknown. Records the use in memory.
    pub fn lookup(&self, digest: &TokenDigest) -> Option<Identity> {
        self.holder(digest).map(|h| h.identity)
    }

    /// [`TokenStore::lookup`] with the account the token acts as.
    pub fn holder(&self, digest: &TokenDigest) -> Option<Holder> {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        let entry = inner.entries.get_mut(digest)?;
        if !entry.enabled {
            return None;
        }
        entry.last_used = Some(clock::now_rfc3339());
        let holder = Holder {
            identity: Identity {
                name: entry.name.clone(),
                role: entry.role,
            },
            user: entry
                .user
                .clone()
                .unwrap_or_else(|| self.default_user.clone()),
            limits: entry.limits,
            view: entry.view.clone(),
            delegated: false,
        };
        inner.last_used_dirty = true;
        Some(holder)
    }

    /// Answers for `delegated`'s credentials too, from now on (once; later calls are ignored).
    pub fn delegate(&self, delegated: Arc<dyn Delegated>) {
        let _ = self.delegated.set(delegated);
    }

    /// Looks a digest up as [`TokenStore::holder`] does, then among the delegated
    /// credentials: the holder, and the key of what it does (the digest itself for a token
    /// of this store).
    pub fn authenticate(&self, digest: &TokenDigest) -> Option<(Holder, TokenDigest)> {
        if let Some(holder) = self.holder(digest) {
            return Some((holder, *digest));
        }
        self.delegated.get()?.authenticate(digest)
    }

    /// Those of `digests` that name no enabled token (any more), without recording a use:
    /// the transfer table drops what such tokens hold.
    pub fn not_valid(&self, digests: &[TokenDigest]) -> Vec<TokenDigest> {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        let delegated = self.delegated.get();
        digests
            .iter()
            .filter(|d| !inner.entries.get(d).is_some_and(|e| e.enabled))
            .filter(|d| !delegated.is_some_and(|g| g.is_valid(d)))
            .copied()
            .collect()
    }

    /// Creates a token acting as the default account and returns its value (shown once) with
    /// its listing.
    pub fn add(&self, name: &str, role: Role) -> Result<(String, TokenInfo), TokenError> {
        self.add_as(name, role, None)
    }

    /// Creates a token acting as `user` (`None`: the default account, which is then not
    /// written down) and returns its value (shown once) with its listing. Admin and metrics
    /// tokens act as no account: `user` is not recorded for them.
    pub fn add_as(
        &self,
        name: &str,
        role: Role,
        user: Option<&str>,
    ) -> Result<(String, TokenInfo), TokenError> {
        self.add_limited(
            name,
            role,
            user,
            TokenLimits::default(),
            TokenView::default(),
        )
    }

    /// [`TokenStore::add_as`] with the token's own limits and view for its commands (client
    /// tokens only; checked with [`TokenLimits::check`] and [`TokenView::check`]).
    pub fn add_limited(
        &self,
        name: &str,
        role: Role,
        user: Option<&str>,
        limits: TokenLimits,
        view: TokenView,
    ) -> Result<(String, TokenInfo), TokenError> {
        let confined = !(limits.is_default() && view.is_default());
        if confined && !role.is_client() {
            return Err(TokenError::LimitsOnNonClient);
        }
        limits.check().map_err(TokenError::InvalidLimits)?;
        view.check().map_err(TokenError::InvalidLimits)?;
        let mut added = self.add_entries(&[(name, role)], user, limits, view)?;
        Ok(added.remove(0))
    }

    /// Creates several tokens in one write of the file (`mymcpctl serve` makes two before the
    /// executor starts); the client tokens among them act as `user`. All or none are added.
    pub fn add_several(
        &self,
        tokens: &[(&str, Role)],
        user: Option<&str>,
    ) -> Result<Vec<(String, TokenInfo)>, TokenError> {
        self.add_entries(tokens, user, TokenLimits::default(), TokenView::default())
    }

    fn add_entries(
        &self,
        tokens: &[(&str, Role)],
        user: Option<&str>,
        limits: TokenLimits,
        view: TokenView,
    ) -> Result<Vec<(String, TokenInfo)>, TokenError> {
        if let Some(u) = user.filter(|u| !valid_user(u)) {
            return Err(TokenError::InvalidUser(u.to_owned()));
        }
        let mut created = Vec::with_capacity(tokens.len());
        for &(name, role) in tokens {
            if name.is_empty()
                || name.chars().count() > MAX_NAME_LEN
                || name.chars().any(char::is_control)
            {
                return Err(TokenError::InvalidName(name.to_owned()));
            }
            let token = self.new_token_value()?;
            let entry = Entry {
                name: name.to_owned(),
                role,
                created_at: clock::now_rfc3339(),
                last_used: None,
                enabled: true,
                user: user.filter(|_| role.is_client()).map(str::to_owned),
                limits: if role.is_client() {
                    limits
                } else {
                    TokenLimits::default()
                },
                view: if role.is_client() {
                    view.clone()
                } else {
                    TokenView::default()
                },
            };
            created.push((digest(&token), token, entry));
        }
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        self.refuse_if_corrupt(&inner)?;
        for (d, _, entry) in &created {
            inner.entries.insert(*d, entry.clone());
        }
        if let Err(e) = self.save(&mut inner) {
            for (d, _, _) in &created {
                inner.entries.remove(d);
            }
            return Err(e);
        }
        Ok(created
            .into_iter()
            .map(|(d, token, entry)| (token, self.info(&d, &entry)))
            .collect())
    }

    /// All tokens, sorted by creation time then name. Never includes token values.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        let mut out: Vec<TokenInfo> = inner.entries.iter().map(|(d, e)| self.info(d, e)).collect();
        out.sort_by(|a, b| (&a.created_at, &a.name, &a.id).cmp(&(&b.created_at, &b.name, &b.id)));
        out
    }

    /// Number of enabled tokens.
    pub fn count(&self) -> usize {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        inner.entries.values().filter(|e| e.enabled).count()
    }

    /// Removes a token given its value or a unique prefix (≥ 6 hex digits) of its id.
    pub fn revoke(&self, selector: &str) -> Result<TokenInfo, TokenError> {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        self.refuse_if_corrupt(&inner)?;
        let d = if selector.starts_with(TOKEN_PREFIX) {
            let d = digest(selector);
            if !inner.entries.contains_key(&d) {
                return Err(TokenError::NotFound(selector.to_owned()));
            }
            d
        } else {
            let sel = selector.to_ascii_lowercase();
            if sel.len() < 6 || !sel.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TokenError::NotFound(selector.to_owned()));
            }
            let mut matches = inner.entries.keys().filter(|d| hex(&d.0).starts_with(&sel));
            let first = *matches
                .next()
                .ok_or_else(|| TokenError::NotFound(selector.to_owned()))?;
            if matches.next().is_some() {
                return Err(TokenError::Ambiguous(selector.to_owned()));
            }
            first
        };
        let entry = inner.entries.remove(&d).expect("checked above");
        let retired_before = inner.retired.len();
        retire(&mut inner.retired, &d);
        if let Err(e) = self.save(&mut inner) {
            inner.entries.insert(d, entry);
            inner.retired.truncate(retired_before);
            return Err(e);
        }
        Ok(self.info(&d, &entry))
    }

    /// The listing of the token `selector` names (value or id prefix), if any.
    pub fn find(&self, selector: &str) -> Option<TokenInfo> {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        if selector.starts_with(TOKEN_PREFIX) {
            let d = digest(selector);
            return inner.entries.get(&d).map(|e| self.info(&d, e));
        }
        let sel = selector.to_ascii_lowercase();
        if sel.len() < 6 || !sel.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut matches = inner
            .entries
            .iter()
            .filter(|(d, _)| hex(&d.0).starts_with(&sel));
        let (d, e) = matches.next()?;
        matches.next().is_none().then(|| self.info(d, e))
    }

    /// Creates a token of `role` named after the role and removes every other token of that
    /// role, in one write (`rotate-admin`, `rotate-metrics`). Returns the new token, its
    /// listing and how many were removed.
    pub fn rotate(&self, role: Role) -> Result<(String, TokenInfo, usize), TokenError> {
        let token = self.new_token_value()?;
        let d = digest(&token);
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        self.refuse_if_corrupt(&inner)?;
        let before = inner.entries.clone();
        let retired_before = inner.retired.clone();
        let old: Vec<TokenDigest> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.role == role)
            .map(|(d, _)| *d)
            .collect();
        for o in &old {
            inner.entries.remove(o);
            retire(&mut inner.retired, o);
        }
        let entry = Entry {
            name: role.as_str().to_owned(),
            role,
            created_at: clock::now_rfc3339(),
            last_used: None,
            enabled: true,
            user: None,
            limits: TokenLimits::default(),
            view: TokenView::default(),
        };
        inner.entries.insert(d, entry.clone());
        if let Err(e) = self.save(&mut inner) {
            inner.entries = before;
            inner.retired = retired_before;
            return Err(e);
        }
        Ok((token, self.info(&d, &entry), old.len()))
    }

    /// Removes every token of `role` (`disable-metrics`). Returns how many.
    pub fn remove_role(&self, role: Role) -> Result<usize, TokenError> {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        self.refuse_if_corrupt(&inner)?;
        let before = inner.entries.clone();
        let retired_before = inner.retired.clone();
        let old: Vec<TokenDigest> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.role == role)
            .map(|(d, _)| *d)
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        for o in &old {
            inner.entries.remove(o);
            retire(&mut inner.retired, o);
        }
        if let Err(e) = self.save(&mut inner) {
            inner.entries = before;
            inner.retired = retired_before;
            return Err(e);
        }
        Ok(old.len())
    }

    /// Adds imported tokens (digests only). Digests already present or retired are skipped.
    /// Returns (added, skipped).
    pub fn import(&self, tokens: Vec<ImportedToken>) -> Result<(usize, usize), TokenError> {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        self.refuse_if_corrupt(&inner)?;
        let before = inner.entries.clone();
        let (mut added, mut skipped) = (0, 0);
        for t in tokens {
            let retired = inner.retired.iter().any(|r| *r == hex(&t.digest.0));
            if retired || inner.entries.contains_key(&t.digest) {
                skipped += 1;
                continue;
            }
            if t.name.is_empty() || t.name.chars().any(char::is_control) {
                return Err(TokenError::InvalidName(t.name));
            }
            inner.entries.insert(t.digest, entry_of(t));
            added += 1;
        }
        if added > 0 {
            if let Err(e) = self.save(&mut inner) {
                inner.entries = before;
                return Err(e);
            }
        }
        Ok((added, skipped))
    }

    /// Enabled tokens per role, every role listed.
    pub fn count_by_role(&self) -> Vec<(Role, u64)> {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        [Role::Ro, Role::Rw, Role::Admin, Role::Metrics]
            .into_iter()
            .map(|r| {
                let n = inner
                    .entries
                    .values()
                    .filter(|e| e.enabled && e.role == r)
                    .count();
                (r, n as u64)
            })
            .collect()
    }

    /// Whether an enabled token of `role` exists.
    pub fn has_role(&self, role: Role) -> bool {
        let mut inner = self.inner.lock().expect("token store lock");
        self.refresh(&mut inner);
        inner.entries.values().any(|e| e.enabled && e.role == role)
    }

    fn new_token_value(&self) -> Result<String, TokenError> {
        let mut raw = [0u8; TOKEN_RANDOM_BYTES];
        mymcp_sys::fill_random(&mut raw).map_err(|source| TokenError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(format!("{TOKEN_PREFIX}{}", hex(&raw)))
    }

    /// Writes `last_used` changes, if any. Called periodically and at shutdown.
    pub fn flush(&self) -> Result<(), TokenError> {
        let mut inner = self.inner.lock().expect("token store lock");
        if !inner.last_used_dirty {
            return Ok(());
        }
        self.refresh(&mut inner);
        if inner.corrupt.is_some() {
            return Ok(());
        }
        self.save(&mut inner)
    }

    /// The listing of one entry; its account is the default one when it names none.
    fn info(&self, d: &TokenDigest, e: &Entry) -> TokenInfo {
        info(d, e, &self.default_user)
    }

    fn refuse_if_corrupt(&self, inner: &Inner) -> Result<(), TokenError> {
        match &inner.corrupt {
            Some(reason) => Err(TokenError::Corrupt {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Atomically replaces the file with the in-memory set.
    fn save(&self, inner: &mut Inner) -> Result<(), TokenError> {
        let io_err = |source| TokenError::Io {
            path: self.path.clone(),
            source,
        };
        let body = render_store(&inner.entries, &inner.retired);

        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            f.write_all(&body)?;
            if self.durable {
                f.sync_all()?;
            }
            fs::rename(&tmp, &self.path)?;
            if self.durable {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        let meta = fs::metadata(&self.path).map_err(io_err)?;
        inner.stamp = Some(Stamp::of(&meta));
        inner.last_used_dirty = false;
        Ok(())
    }
}

/// Parses the text of a store file: its tokens by digest and its retired digests, or why it
/// is not a valid store.
fn parse_store(bytes: &[u8]) -> Result<(HashMap<TokenDigest, Entry>, Vec<String>), String> {
    let file: StoreFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.format != FORMAT {
        return Err(format!(
            "unknown format {:?} (expected {FORMAT:?})",
            file.format
        ));
    }
    let mut entries = HashMap::with_capacity(file.tokens.len());
    for t in file.tokens {
        let d = unhex(&t.sha256)
            .ok_or_else(|| format!("token {:?}: sha256 is not 64 hex digits", t.name))?;
        let role = Role::parse(&t.role)
            .ok_or_else(|| format!("token {:?}: unknown role {:?}", t.name, t.role))?;
        if let Some(u) = t.user.as_deref().filter(|u| !valid_user(u)) {
            return Err(format!("token {:?}: invalid account name {u:?}", t.name));
        }
        let limits = t.limits.limits();
        limits
            .check()
            .map_err(|why| format!("token {:?}: invalid limits: {why}", t.name))?;
        let view = TokenView {
            write_roots: t.write_roots,
            hide: t.hide,
            no_network: t.no_network,
        };
        view.check()
            .map_err(|why| format!("token {:?}: invalid view: {why}", t.name))?;
        let entry = Entry {
            name: t.name,
            role,
            created_at: t.created_at,
            last_used: t.last_used,
            enabled: t.enabled,
            user: t.user,
            limits,
            view,
        };
        if entries.insert(TokenDigest(d), entry).is_some() {
            return Err(format!("digest {} appears twice", t.sha256));
        }
    }
    Ok((entries, file.retired))
}

/// The file text of a store holding `entries` and `retired` (tokens in a stable order).
fn render_store(entries: &HashMap<TokenDigest, Entry>, retired: &[String]) -> Vec<u8> {
    let mut tokens: Vec<StoredToken> = entries
        .iter()
        .map(|(d, e)| StoredToken {
            sha256: hex(&d.0),
            name: e.name.clone(),
            role: e.role.as_str().to_owned(),
            created_at: e.created_at.clone(),
            last_used: e.last_used.clone(),
            enabled: e.enabled,
            user: e.user.clone(),
            limits: StoredLimits::of(&e.limits),
            write_roots: e.view.write_roots.clone(),
            hide: e.view.hide.clone(),
            no_network: e.view.no_network,
        })
        .collect();
    tokens.sort_by(|a, b| {
        (&a.created_at, &a.name, &a.sha256).cmp(&(&b.created_at, &b.name, &b.sha256))
    });
    let mut body = serde_json::to_vec_pretty(&StoreFile {
        format: FORMAT.to_owned(),
        tokens,
        retired: retired.to_vec(),
    })
    .expect("a token store serializes");
    body.push(b'\n');
    body
}

/// Entry points for the fuzz targets (see `fuzzing/`): the store parser without a file.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// A store file's text parsed, as the tokens it lists (sorted by digest: two tokens of a
    /// hand-edited store may share an id, the digest's first 12 hex digits) with the retired
    /// digests, and rendered back as the executor would write it.
    pub type Parsed = (Vec<TokenInfo>, Vec<String>, Vec<u8>);

    /// Parses a store file as [`TokenStore::open`] does; on success also renders it.
    pub fn parse_and_render(bytes: &[u8]) -> Result<Parsed, String> {
        let (entries, retired) = parse_store(bytes)?;
        let mut sorted: Vec<_> = entries.iter().collect();
        sorted.sort_by_key(|a| a.0 .0);
        let list: Vec<TokenInfo> = sorted
            .into_iter()
            .map(|(d, e)| info(d, e, BUILTIN_DEFAULT_USER))
            .collect();
        let rendered = render_store(&entries, &retired);
        Ok((list, retired, rendered))
    }
}

fn retire(retired: &mut Vec<String>, d: &TokenDigest) {
    retired.push(hex(&d.0));
    if retired.len() > MAX_RETIRED {
        let excess = retired.len() - MAX_RETIRED;
        retired.drain(..excess);
    }
}

fn entry_of(t: ImportedToken) -> Entry {
    Entry {
        name: t.name,
        role: t.role,
        created_at: t.created_at,
        last_used: t.last_used,
        enabled: t.enabled,
        user: None,
        limits: TokenLimits::default(),
        view: TokenView::default(),
    }
}

fn info(d: &TokenDigest, e: &Entry, default_user: &str) -> TokenInfo {
    TokenInfo {
        id: hex(&d.0[..ID_LEN / 2]),
        name: e.name.clone(),
        role: e.role,
        user: match (&e.user, e.role.is_client()) {
            (Some(u), _) => u.clone(),
            (None, true) => default_user.to_owned(),
            // Admin and metrics tokens run no tool: they act as no account.
            (None, false) => String::new(),
        },
        created_at: e.created_at.clone(),
        last_used: e.last_used.clone(),
        enabled: e.enabled,
        limits: e.limits,
        view: e.view.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = TokenStore::open(&dir.path().join("tokens.json")).unwrap();
        (dir, s)
    }

    #[test]
    fn new_store_is_private_and_holds_no_token_values() {
        let (dir, s) = store();
        let (token, info) = s.add("laptop", Role::Rw).unwrap();
        assert!(token.starts_with("tok_") && token.len() == 4 + 64);
        let text = fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(
            !text.contains(&token),
            "the token value must never be stored"
        );
        assert!(!text.contains(&token[4..]));
        let mode = fs::metadata(dir.path().join("tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(info.role, Role::Rw);
        assert_eq!(
            s.lookup(&digest(&token)).unwrap(),
            Identity {
                name: "laptop".into(),
                role: Role::Rw
            }
        );
        assert_eq!(s.lookup(&digest("tok_wrong")), None);
    }

    #[test]
    fn another_process_sees_changes_at_once_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let a = TokenStore::open(&path).unwrap();
        let b = TokenStore::open(&path).unwrap();
        let (t1, _) = a.add("one", Role::Ro).unwrap();
        // b picks up a's write before answering.
        assert!(b.lookup(&digest(&t1)).is_some());
        let (t2, _) = b.add("two", Role::Rw).unwrap();
        // a's next write must not drop b's token (no stale in-memory copy).
        let (t3, _) = a.add("three", Role::Rw).unwrap();
        for t in [&t1, &t2, &t3] {
            assert!(a.lookup(&digest(t)).is_some());
            assert!(b.lookup(&digest(t)).is_some());
        }
        b.revoke(&t2).unwrap();
        assert!(a.lookup(&digest(&t2)).is_none());
    }

    #[test]
    fn several_tokens_are_added_together_or_not_at_all() {
        let (dir, s) = store();
        let added = s
            .add_several(&[("temp-admin", Role::Admin), ("temp-rw", Role::Rw)], None)
            .unwrap();
        assert_eq!(added.len(), 2);
        assert_ne!(added[0].0, added[1].0);
        // Another process (the executor) finds both in the file.
        let other = TokenStore::open(&dir.path().join("tokens.json")).unwrap();
        for ((token, info), role) in added.iter().zip([Role::Admin, Role::Rw]) {
            assert_eq!(info.role, role);
            assert_eq!(other.lookup(&digest(token)).unwrap().role, role);
        }
        // One bad name: nothing is added.
        assert!(matches!(
            s.add_several(&[("fine", Role::Ro), ("", Role::Ro)], None),
            Err(TokenError::InvalidName(_))
        ));
        assert_eq!(other.count(), 2);
    }

    #[test]
    fn a_temporary_store_is_written_once_and_never_over_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let (_s, added) = TokenStore::create_temporary(
            &path,
            &[("temp-admin", Role::Admin), ("temp-rw", Role::Rw)],
            None,
        )
        .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The executor opens it as any store and finds both tokens; no value is on disk.
        let other = TokenStore::open(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        for ((token, _), role) in added.iter().zip([Role::Admin, Role::Rw]) {
            assert_eq!(other.lookup(&digest(token)).unwrap().role, role);
            assert!(!text.contains(&token[4..]));
        }
        let before = fs::read(&path).unwrap();
        let again = TokenStore::create_temporary(&path, &[("x", Role::Rw)], None);
        assert!(matches!(again, Err(TokenError::Io { .. })));
        assert_eq!(fs::read(&path).unwrap(), before, "left as it was");
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left beside it");
    }

    #[test]
    fn revoke_by_id_prefix() {
        let (_d, s) = store();
        let (t, info) = s.add("x", Role::Ro).unwrap();
        assert!(matches!(s.revoke("abc"), Err(TokenError::NotFound(_))));
        let revoked = s.revoke(&info.id[..8]).unwrap();
        assert_eq!(revoked.name, "x");
        assert!(s.lookup(&digest(&t)).is_none());
        assert!(matches!(s.revoke(&info.id), Err(TokenError::NotFound(_))));
    }

    #[test]
    fn disabled_tokens_are_refused() {
        let (dir, s) = store();
        let (t, _) = s.add("x", Role::Rw).unwrap();
        let path = dir.path().join("tokens.json");
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("\"enabled\": true", "\"enabled\": false");
        fs::write(&path, text).unwrap();
        assert!(s.lookup(&digest(&t)).is_none());
    }

    #[test]
    fn corrupt_file_refuses_start_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            TokenStore::open(&path),
            Err(TokenError::Corrupt { .. })
        ));

        // Corrupted while running: the last good set stays, changes are refused, file untouched.
        fs::remove_file(&path).unwrap();
        let s = TokenStore::open(&path).unwrap();
        let (t, _) = s.add("x", Role::Rw).unwrap();
        fs::write(&path, b"garbage").unwrap();
        assert!(s.lookup(&digest(&t)).is_some());
        assert!(matches!(
            s.add("y", Role::Rw),
            Err(TokenError::Corrupt { .. })
        ));
        s.flush().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"garbage");
    }

    #[test]
    fn last_used_is_written_lazily() {
        let (dir, s) = store();
        let path = dir.path().join("tokens.json");
        let (t, _) = s.add("x", Role::Rw).unwrap();
        let before = fs::read(&path).unwrap();
        assert!(s.lookup(&digest(&t)).is_some());
        assert_eq!(
            fs::read(&path).unwrap(),
            before,
            "a lookup must not write the file"
        );
        s.flush().unwrap();
        let after = fs::read_to_string(&path).unwrap();
        assert!(!after.contains("\"last_used\": null"), "{after}");
    }

    #[test]
    fn rotation_replaces_the_role_and_retired_tokens_are_not_imported_again() {
        let (_d, s) = store();
        let (old, _) = s.add("admin", Role::Admin).unwrap();
        let (rw, _) = s.add("w", Role::Rw).unwrap();
        let (new, info, removed) = s.rotate(Role::Admin).unwrap();
        assert_eq!(
            (removed, info.role, info.name.as_str()),
            (1, Role::Admin, "admin")
        );
        assert!(s.lookup(&digest(&old)).is_none());
        assert!(s.lookup(&digest(&new)).is_some());
        assert!(s.lookup(&digest(&rw)).is_some());
        let imported = ImportedToken {
            digest: digest(&old),
            name: "admin".into(),
            role: Role::Admin,
            created_at: "x".into(),
            last_used: None,
            enabled: true,
        };
        assert_eq!(s.import(vec![imported]).unwrap(), (0, 1));
        assert!(s.lookup(&digest(&old)).is_none());
        s.rotate(Role::Metrics).unwrap();
        assert!(s.has_role(Role::Metrics));
        assert_eq!(s.remove_role(Role::Metrics).unwrap(), 1);
        assert!(!s.has_role(Role::Metrics));
    }

    #[test]
    fn a_python_or_go_store_is_converted_and_its_tokens_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let legacy = r#"{"tokens": {
            "tok_0123456789abcdef0123456789abcdef": {"name": "laptop", "created_at": "2026-01-01T00:00:00+00:00", "last_used": null, "enabled": true, "role": "rw"},
            "tok_ffffffffffffffffffffffffffffffff": {"name": "old", "created_at": "ephemeral", "enabled": true},
            "tok_eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee": {"name": "reader", "created_at": "x", "enabled": false, "role": "ro"}
        }, "admin_token": "tok_admin"}"#;
        fs::write(&path, legacy).unwrap();
        let s = TokenStore::open(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("0123456789abcdef0123456789abcdef"), "{text}");
        assert!(text.contains("mymcp-tokens-v1"));
        let id = s
            .lookup(&digest("tok_0123456789abcdef0123456789abcdef"))
            .unwrap();
        assert_eq!((id.name.as_str(), id.role), ("laptop", Role::Rw));
        // No role: rw, as in the references.
        let id = s
            .lookup(&digest("tok_ffffffffffffffffffffffffffffffff"))
            .unwrap();
        assert_eq!(id.role, Role::Rw);
        assert!(s
            .lookup(&digest("tok_eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"))
            .is_none());
    }

    #[test]
    fn every_client_token_acts_as_an_account_and_old_entries_as_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        // A store of an earlier version: no account anywhere.
        let old = TokenStore::open(&path).unwrap();
        let (legacy, _) = old.add("legacy", Role::Rw).unwrap();
        drop(old);
        assert!(!fs::read_to_string(&path).unwrap().contains("\"user\""));

        let s = TokenStore::open(&path).unwrap();
        assert_eq!(s.default_user(), "root");
        assert_eq!(s.holder(&digest(&legacy)).unwrap().user, "root");
        let (alice, info) = s.add_as("a", Role::Ro, Some("alice")).unwrap();
        assert_eq!(info.user, "alice");
        let (admin, info) = s.add_as("adm", Role::Admin, Some("alice")).unwrap();
        assert_eq!(info.user, "", "admin tokens act as no account");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"user\": \"alice\"").count(), 1, "{text}");

        // The default applies to tokens that name no account, whenever it is set.
        let s = TokenStore::open(&path)
            .unwrap()
            .with_default_user("tools")
            .unwrap();
        assert_eq!(s.holder(&digest(&legacy)).unwrap().user, "tools");
        assert_eq!(s.holder(&digest(&alice)).unwrap().user, "alice");
        assert_eq!(s.holder(&digest(&admin)).unwrap().user, "tools");
        let listed: Vec<(String, String)> =
            s.list().into_iter().map(|t| (t.name, t.user)).collect();
        assert!(
            listed.contains(&("legacy".into(), "tools".into())),
            "{listed:?}"
        );
        assert!(listed.contains(&("a".into(), "alice".into())), "{listed:?}");
        // Written back (last_used), the entry without an account still names none.
        s.flush().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"user\"").count(), 1, "{text}");
    }

    #[test]
    fn account_names_are_checked_in_the_store_and_the_file() {
        let (dir, s) = store();
        for bad in ["", "a b", "-x", "a:b", "../a", "a\nb", &"u".repeat(257)] {
            assert!(
                matches!(
                    s.add_as("t", Role::Rw, Some(bad)),
                    Err(TokenError::InvalidUser(_))
                ),
                "{bad:?}"
            );
            assert!(TokenStore::open(&dir.path().join("x.json"))
                .unwrap()
                .with_default_user(bad)
                .is_err());
        }
        for good in ["alice", "svc-backup", "ad.user@example.com", "DOMAIN\\bob"] {
            s.add_as("t", Role::Rw, Some(good)).unwrap();
        }
        let path = dir.path().join("tokens.json");
        let text = fs::read_to_string(&path).unwrap().replacen(
            "\"user\": \"alice\"",
            "\"user\": \"a:b\"",
            1,
        );
        fs::write(dir.path().join("bad.json"), text).unwrap();
        assert!(matches!(
            TokenStore::open(&dir.path().join("bad.json")),
            Err(TokenError::Corrupt { .. })
        ));
    }

    #[test]
    fn bad_names_are_refused() {
        let (_d, s) = store();
        assert!(matches!(
            s.add("", Role::Rw),
            Err(TokenError::InvalidName(_))
        ));
        assert!(matches!(
            s.add("a\nb", Role::Rw),
            Err(TokenError::InvalidName(_))
        ));
        assert!(matches!(
            s.add(&"x".repeat(65), Role::Rw),
            Err(TokenError::InvalidName(_))
        ));
    }

    #[test]
    fn a_legacy_name_of_control_characters_only_is_imported_under_a_default_name() {
        // Found by the token_store fuzz target: "\r" lost its only character and was imported
        // with an empty name, which the store refuses everywhere else.
        let legacy = br#"{"tokens": {"tok_a": {"name": "\r\n\t"}, "tok_b": {"name": "ok\u0007"}}}"#;
        let mut names: Vec<String> = parse_legacy(legacy)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        names.sort();
        assert_eq!(names, ["imported", "ok"]);
    }

    #[test]
    fn limits_are_stored_and_old_stores_read_as_the_defaults() {
        let (dir, s) = store();
        let (plain, _) = s.add("plain", Role::Rw).unwrap();
        let own = TokenLimits {
            memory_max_mib: Some(256),
            tasks_max: Some(0),
            cpu_max_percent: None,
            timeout_max_secs: Some(60),
        };
        let (tight, info) = s
            .add_limited("tight", Role::Rw, None, own, TokenView::default())
            .unwrap();
        assert_eq!(info.limits, own);
        let text = fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(text.contains(r#""memory_max_mib": 256"#), "{text}");
        assert_eq!(
            text.matches("\"limits\"").count(),
            1,
            "only set limits are written: {text}"
        );
        let again = TokenStore::open(&dir.path().join("tokens.json")).unwrap();
        assert_eq!(again.holder(&digest(&tight)).unwrap().limits, own);
        assert!(again.holder(&digest(&plain)).unwrap().limits.is_default());
        // Refused: bad values, limits on a token that runs no command.
        let bad = TokenLimits {
            timeout_max_secs: Some(0),
            ..TokenLimits::default()
        };
        assert!(matches!(
            s.add_limited("b", Role::Rw, None, bad, TokenView::default()),
            Err(TokenError::InvalidLimits(_))
        ));
        assert!(matches!(
            s.add_limited("a", Role::Admin, None, own, TokenView::default()),
            Err(TokenError::LimitsOnNonClient)
        ));
        // A hand-edited store with an unknown limit field does not parse.
        let broken = text.replace("memory_max_mib", "memory_maximum");
        assert!(parse_store(broken.as_bytes()).is_err());
    }

    #[test]
    fn views_are_stored_and_checked() {
        let (dir, s) = store();
        let view = TokenView {
            write_roots: vec!["/srv/app".into(), "/tmp".into()],
            hide: vec!["/etc/ssl/private".into()],
            no_network: true,
        };
        let (token, info) = s
            .add_limited("web", Role::Rw, None, TokenLimits::default(), view.clone())
            .unwrap();
        assert_eq!(info.view, view);
        let text = fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(text.contains(r#""no_network": true"#), "{text}");
        let again = TokenStore::open(&dir.path().join("tokens.json")).unwrap();
        assert_eq!(again.holder(&digest(&token)).unwrap().view, view);
        let bad = TokenView {
            write_roots: vec!["srv".into()],
            ..TokenView::default()
        };
        assert!(matches!(
            s.add_limited("b", Role::Rw, None, TokenLimits::default(), bad),
            Err(TokenError::InvalidLimits(_))
        ));
        // A hand-edited relative path does not load.
        let broken = text.replace("\"/srv/app\"", "\"srv/app\"");
        assert!(parse_store(broken.as_bytes()).is_err());
    }
}
