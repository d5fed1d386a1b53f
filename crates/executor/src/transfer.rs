//! File transfers: `prepare_upload`/`prepare_download` make single-use *grants*; a redeem
//! claims one and moves the bytes between the file and a pipe whose other end the frontend
//! holds.
//!
//! A grant is a random 128-bit [`GrantId`] bound to the token that made it, a direction, the
//! canonical path (checked against the protected set when it is made), a byte limit, the
//! `overwrite` flag, an optional SHA-256 and an expiry. It lives only in this process.
//!
//! Redeeming ([`Transfers::redeem`]) checks, in order: transfer enabled, grant known, not
//! expired, right direction, not used or in use, the token that made it still valid (a
//! revoked token takes its tickets with it) and the announced length. Then the grant is
//! *claimed* (atomically, under one lock: of 20 parallel redeems exactly one gets it), the
//! claim takes a transfer slot of the grant's token ([`FileLimits::transfer`]; `Busy`
//! beyond), and the path is checked again on the opened object — a symlink swapped in since
//! the grant was made is caught here. None of these refusals spends the grant (a refused
//! claim is released). Then the executor hands the frontend one end of a pipe
//! ([`Events::pipe`], `SCM_RIGHTS`):
//!
//! - **download**: the file, opened after the check, is `splice`d into the pipe (no copy in
//!   this process); exactly the size seen at redeem time is sent (`Content-Length`).
//! - **upload**: the pipe is `splice`d into a temporary file created inside the checked
//!   directory, stopping as soon as the body exceeds `max_bytes`; a second thread hashes what
//!   was written, reading it back from the page cache while more arrives. Once the pipe is drained *and* the frontend confirms the body ended normally
//!   ([`Transfers::commit`]; a closed pipe alone may be a client that went away), the file is
//!   synced, its SHA-256 checked if the grant has one, given the mode and owner of the file it
//!   replaces, and put in place (the temporary file is unnamed until then, [`TempFile`]) — with `RENAME_NOREPLACE` when `overwrite` is false, so a
//!   file that appeared in the meantime is never replaced. Any failure removes the temporary
//!   file; the destination is untouched.
//!
//! A completed transfer spends the grant for good (a second use is `ticket_used`); a failed one
//! (client gone, too large, checksum mismatch) releases it, so the same URL can be retried
//! until it expires.
//!
//! **Audit** ([`Redemption`]). Every redeem of a grant whose token is still valid is in the
//! audit log as `transfer_upload` / `transfer_download` (the reference's v3 records: the
//! issuing token's name and role, the redeemer's address, the path, the ticket prefix, the
//! bytes moved). Refusals before the claim (too large by `Content-Length`, in use, busy) get
//! one outcome record. A claimed redeem writes a **start record before its first side
//! effect** — before an upload creates a directory or a temporary file, before a download
//! opens the file or sends its size — and does nothing if that record cannot be written
//! (`audit_failed`; the grant is released). A download's outcome record follows when the bytes
//! are sent. An upload's outcome record is written right after its file is put in place,
//! under the file's lock; if it cannot be written, the file is **taken out again**
//! ([`TempFile::commit_undoable`]: the replaced file comes back under its name, a new name is
//! removed) and the client gets `audit_failed`, never a success — so a file is in place only
//! with its record in the log. A `HEAD` ([`Transfers::probe`]) reads the file's size: one
//! `transfer_head` record after it, and no answer without it. Completed transfers count in
//! `mymcp_transfer_bytes_total`.

use crate::accounts::Accounts;
use crate::audit::{self, Actor, Audit, Operation, Outcome};
use crate::auth::{self, Authorized, Ro, Rw};
use crate::edit::{self, Replace, TempFile};
use crate::limits::FileLimits;
use crate::metrics::Metrics;
use crate::paths::{self, Access, CheckedTarget, ProtectedPaths};
use crate::server::{CancelSignal, Events};
use mymcp_audit::hex;
use mymcp_protocol::{
    CallOrigin, Direction, ErrorCode, GrantId, Identity, PrepareDownload, PrepareUpload, SpanId,
    TokenDigest, ToolFailure, ToolName, TraceId, TransferDone, TransferError,
    TransferErrorKind as Kind, TransferGrant, TransferStart,
};
use mymcp_sys::pipe::{self as syspipe, Ready};
use mymcp_tokens::TokenStore;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// Transfer settings (`MYMCP_TRANSFER_*`), read by the `config` module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TransferConfig {
    pub(crate) enabled: bool,
    /// Default and cap of `max_bytes`.
    pub(crate) max_bytes: u64,
    pub(crate) default_ttl_secs: u64,
    pub(crate) max_ttl_secs: u64,
    /// `MYMCP_TRANSFER_MAX_GRANTS_PER_TOKEN`: grants one token may hold (of [`MAX_GRANTS`]).
    pub(crate) max_grants_per_token: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            enabled: mymcp_settings::TRANSFER_ENABLED.default(),
            max_bytes: mymcp_settings::TRANSFER_MAX_BYTES.default(),
            default_ttl_secs: mymcp_settings::TRANSFER_DEFAULT_TTL_SEC.default(),
            max_ttl_secs: mymcp_settings::TRANSFER_MAX_TTL_SEC.default(),
            max_grants_per_token: DEFAULT_GRANTS_PER_TOKEN,
        }
    }
}

/// Most grants alive at once (expired ones are purged first).
pub(crate) const MAX_GRANTS: usize = 4096;
/// Default of `MYMCP_TRANSFER_MAX_GRANTS_PER_TOKEN`: one token holds at most a sixteenth of
/// the table, so that it cannot keep the other tokens from their transfers.
const DEFAULT_GRANTS_PER_TOKEN: usize =
    mymcp_settings::TRANSFER_MAX_GRANTS_PER_TOKEN.default() as usize;
/// A transfer in which nothing moves for this long is abandoned.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an upload whose pipe is drained waits for the frontend's commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Buffer of the upload hash (reading the written file back) and of the read/write fallbacks.
const CHUNK: usize = 256 * 1024;
/// Pipe buffer asked for; fewer wake-ups per megabyte than the default 64 KiB.
const PIPE_SIZE: usize = 1024 * 1024;
/// Start writeback of an upload every this many bytes, so the final fsync is short.
const WRITEBACK_EVERY: u64 = 16 * 1024 * 1024;

/// Where a grant is in its single life.
#[derive(Debug)]
enum State {
    Ready,
    /// Claimed by a running redeem; `commit` is taken by [`Transfers::commit`].
    Busy {
        claim: u64,
        commit: Option<oneshot::Sender<()>>,
    },
    /// A transfer completed.
    Used,
}

#[derive(Debug)]
struct Grant {
    token: TokenDigest,
    direction: Direction,
    /// As the client gave it: what the response and the audit show.
    path: String,
    /// The real path found when the grant was made; redeem re-opens and re-checks it.
    target: PathBuf,
    /// Upload: body limit. Download: size when the grant was made.
    bytes: u64,
    overwrite: bool,
    sha256: Option<[u8; 32]>,
    expires_at: u64,
    state: State,
}

/// What a redeem needs of a grant, copied out of the lock.
#[derive(Clone, Debug)]
struct View {
    id: GrantId,
    token: TokenDigest,
    path: String,
    target: PathBuf,
    bytes: u64,
    overwrite: bool,
    sha256: Option<[u8; 32]>,
}

/// The grants of this executor.
#[derive(Debug)]
pub(crate) struct Transfers {
    config: TransferConfig,
    grants: Mutex<HashMap<GrantId, Grant>>,
    next_claim: AtomicU64,
    /// Transfers moving bytes right now.
    running: AtomicU64,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
}

/// Seconds since the epoch.
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn refuse(kind: Kind, hint: impl Into<String>) -> TransferError {
    TransferError::new(kind, hint)
}

const MINT_NEW: &str = "Mint a new ticket.";

impl Transfers {
    pub(crate) fn new(config: TransferConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        Transfers {
            config,
            grants: Mutex::new(HashMap::new()),
            next_claim: AtomicU64::new(1),
            running: AtomicU64::new(0),
            audit: Arc::new(Audit::disabled(metrics.clone())),
            metrics,
        }
    }

    /// Audits redeems into `audit` and counts their bytes in `metrics`.
    pub(crate) fn observe(&mut self, metrics: Arc<Metrics>, audit: Arc<Audit>) {
        self.metrics = metrics;
        self.audit = audit;
    }

    /// Grants alive (ready, busy or used but not yet purged).
    #[cfg(test)]
    pub(crate) fn grants(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<GrantId, Grant>> {
        // Every critical section is a lookup, insert or state change: consistent even after a
        // panic elsewhere.
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn disabled() -> ToolFailure {
        ToolFailure::new(
            ErrorCode::TransferDisabled,
            "File transfer feature is disabled on this server.",
        )
    }

    /// `expires_in` after the reference's default and clamp.
    fn ttl(&self, expires_in: Option<i64>) -> Result<u64, ToolFailure> {
        match expires_in {
            None => Ok(self.config.default_ttl_secs),
            Some(n) if n <= 0 => Err(ToolFailure::new(
                ErrorCode::InvalidExpiresIn,
                "expires_in must be positive.",
            )),
            Some(n) => Ok((n as u64).min(self.config.max_ttl_secs)),
        }
    }

    /// `prepare_upload`. Blocking (path checks).
    pub(crate) fn prepare_upload(
        &self,
        auth: &Authorized<Rw>,
        args: &PrepareUpload,
        protected: &ProtectedPaths,
        tokens: &TokenStore,
    ) -> Result<TransferGrant, ToolFailure> {
        if !self.config.enabled {
            return Err(Self::disabled());
        }
        let path = args.dest_path.as_str();
        absolute("dest_path", path)?;
        let policy = protected
            .policy(Access::Write)
            .with_view(auth.view(), Access::Write);
        // The path is checked with the account's rights (the protected set above, as root).
        let _as = auth.act()?;
        let (target, exists) = match paths::open_for_write(&policy, path, false) {
            Ok(t) => {
                // Refused now rather than when the bytes arrive: the account may not write
                // there (root, as before accounts, is not asked: it may, or the upload says why).
                if auth.account().acts() {
                    mymcp_sys::fs::may_write_in(t.dir().fd())
                        .map_err(|e| paths::os_failure(path, &e, Access::Write))?;
                }
                (t.real(), t.existing().is_some())
            }
            // A missing parent directory is created when the upload arrives; check what exists.
            Err(f)
                if f.code == ErrorCode::FileNotFoundError
                    || f.code == ErrorCode::NotADirectoryError =>
            {
                (paths::check_new_path(&policy, path)?, false)
            }
            Err(f) => return Err(f),
        };
        let overwrite = args.overwrite.unwrap_or(true);
        if exists && !overwrite {
            return Err(ToolFailure::new(
                ErrorCode::FileExists,
                format!("{path} already exists and overwrite=False."),
            ));
        }
        let max_bytes = match args.max_bytes {
            None => self.config.max_bytes,
            Some(n) if n <= 0 => {
                return Err(ToolFailure::new(
                    ErrorCode::InvalidMaxBytes,
                    "max_bytes must be positive.",
                ))
            }
            Some(n) => (n as u64).min(self.config.max_bytes),
        };
        let ttl = self.ttl(args.expires_in)?;
        let sha256 = match &args.sha256 {
            None => None,
            Some(hex) => Some(parse_sha256(hex).ok_or_else(|| {
                ToolFailure::new(
                    ErrorCode::InvalidArguments,
                    "sha256 must be 64 hexadecimal digits.",
                )
            })?),
        };
        self.insert(
            tokens,
            auth.token(),
            Direction::Upload,
            path,
            target,
            max_bytes,
            overwrite,
            sha256,
            ttl,
        )
    }

    /// `prepare_download`. Blocking (opens the file to check it).
    pub(crate) fn prepare_download(
        &self,
        auth: &Authorized<Ro>,
        args: &PrepareDownload,
        protected: &ProtectedPaths,
        tokens: &TokenStore,
    ) -> Result<TransferGrant, ToolFailure> {
        if !self.config.enabled {
            return Err(Self::disabled());
        }
        let path = args.src_path.as_str();
        absolute("src_path", path)?;
        let policy = protected
            .policy(Access::Read)
            .with_view(auth.view(), Access::Read);
        let _as = auth.act()?;
        let file = match paths::open_for_read(&policy, path) {
            Ok(f) => f,
            Err(f) if f.code == ErrorCode::FileNotFoundError => {
                // The reference checks protection before existence.
                if let Some(entry) = paths::protected_entry_lenient(&policy, path) {
                    return Err(paths::protected_failure(&entry));
                }
                return Err(ToolFailure::new(
                    ErrorCode::FileNotFound,
                    format!("{path} does not exist."),
                ));
            }
            Err(f)
                if f.code == ErrorCode::IsADirectoryError
                    || f.code == ErrorCode::NotARegularFile =>
            {
                return Err(ToolFailure::new(
                    ErrorCode::NotARegularFile,
                    format!("{path} is not a regular file."),
                ))
            }
            Err(f) => return Err(f),
        };
        let ttl = self.ttl(args.expires_in)?;
        self.insert(
            tokens,
            auth.token(),
            Direction::Download,
            path,
            file.real,
            file.meta.len(),
            false,
            None,
            ttl,
        )
    }

    /// Adds a grant of `token`: refused (`Busy`) when the token holds its share of the table
    /// already, or when the table is full even without the grants of tokens that are no
    /// longer valid (revoked or disabled by `mymcpctl`, the admin API or a hand edit of the
    /// store), which are dropped then: they can never be redeemed.
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        tokens: &TokenStore,
        token: &TokenDigest,
        direction: Direction,
        path: &str,
        target: PathBuf,
        bytes: u64,
        overwrite: bool,
        sha256: Option<[u8; 32]>,
        ttl: u64,
    ) -> Result<TransferGrant, ToolFailure> {
        let mut id = [0u8; 16];
        mymcp_sys::fill_random(&mut id).map_err(|e| {
            ToolFailure::new(ErrorCode::InternalError, format!("no random bytes: {e}"))
        })?;
        let id = GrantId(id);
        let now = now_unix();
        let expires_at = now + ttl;
        let mut grants = self.lock();
        // Expired grants cannot be redeemed any more; a running transfer keeps its own.
        let mut mine = 0;
        grants.retain(|_, g| {
            let keep = g.expires_at > now || matches!(g.state, State::Busy { .. });
            mine += usize::from(keep && g.token == *token);
            keep
        });
        let share = self.config.max_grants_per_token;
        if mine >= share {
            return Err(ToolFailure::new(
                ErrorCode::Busy,
                format!(
                    "This token holds {mine} transfer tickets (limit {share}, used ones count until they expire); wait until some expire"
                ),
            )
            .with_suggestion("Use the tickets already prepared, or ask for shorter expires_in"));
        }
        if grants.len() >= MAX_GRANTS {
            let mut holders: Vec<TokenDigest> = grants.values().map(|g| g.token).collect();
            holders.sort_unstable_by_key(|d| d.0);
            holders.dedup();
            let gone = tokens.not_valid(&holders);
            if !gone.is_empty() {
                grants.retain(|_, g| !gone.contains(&g.token));
            }
        }
        if grants.len() >= MAX_GRANTS {
            return Err(ToolFailure::new(
                ErrorCode::Busy,
                format!("{MAX_GRANTS} transfer tickets are outstanding; wait until some expire"),
            ));
        }
        grants.insert(
            id,
            Grant {
                token: *token,
                direction,
                path: path.to_owned(),
                target,
                bytes,
                overwrite,
                sha256,
                expires_at,
                state: State::Ready,
            },
        );
        Ok(TransferGrant {
            grant: id,
            direction,
            expires_at_unix: expires_at,
            expires_in: ttl,
            expires_at: mymcp_tokens::clock::rfc3339(expires_at as i64),
            path: path.to_owned(),
            bytes,
            overwrite,
            sha256: sha256.map(|d| hex(&d)),
        })
    }

    /// The checks every redeem and probe makes before touching the path (see the module
    /// documentation), without claiming anything.
    fn check(&self, id: &GrantId, direction: Direction) -> Result<View, TransferError> {
        if !self.config.enabled {
            return Err(refuse(
                Kind::Disabled,
                "File transfer is disabled on this server.",
            ));
        }
        let grants = self.lock();
        let Some(g) = grants.get(id) else {
            return Err(refuse(Kind::NotFound, MINT_NEW));
        };
        if now_unix() >= g.expires_at {
            return Err(refuse(Kind::Expired, MINT_NEW));
        }
        if g.direction != direction {
            return Err(refuse(
                Kind::WrongMethod,
                format!("This ticket requires {}.", g.direction.method()),
            ));
        }
        ready(&g.state)?;
        Ok(View {
            id: *id,
            token: g.token,
            path: g.path.clone(),
            target: g.target.clone(),
            bytes: g.bytes,
            overwrite: g.overwrite,
            sha256: g.sha256,
        })
    }

    /// Claims a grant for one transfer: at most one claim holds a grant at a time.
    fn claim(
        self: &Arc<Self>,
        id: &GrantId,
    ) -> Result<(Claim, oneshot::Receiver<()>), TransferError> {
        let mut grants = self.lock();
        let Some(g) = grants.get_mut(id) else {
            return Err(refuse(Kind::NotFound, MINT_NEW));
        };
        ready(&g.state)?;
        let claim = self.next_claim.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        g.state = State::Busy {
            claim,
            commit: Some(tx),
        };
        self.running.fetch_add(1, Ordering::Relaxed);
        Ok((
            Claim {
                transfers: self.clone(),
                id: *id,
                claim,
                done: false,
            },
            rx,
        ))
    }

    /// [`Transfers::claim`], then a slot of the grant's token for the transfer's blocking
    /// work (opening the file, moving the bytes): claimed first, so that of concurrent
    /// redeems of one grant only the one that runs takes a slot (the others are `InUse`). A
    /// refusal after the claim releases it (the claim is dropped unspent).
    fn claim_with_slot(
        self: &Arc<Self>,
        id: &GrantId,
        token: &TokenDigest,
        limits: &FileLimits,
    ) -> Result<(Claim, oneshot::Receiver<()>, crate::limits::FileSlot), TransferError> {
        let (claim, committed) = self.claim(id)?;
        let slot = limits.transfer(token).map_err(busy)?;
        Ok((claim, committed, slot))
    }

    /// The frontend says the body of `claim` ended normally. Returns whether a running upload
    /// took it.
    pub(crate) fn commit(&self, id: &GrantId, claim: u64) -> bool {
        let mut grants = self.lock();
        match grants.get_mut(id).map(|g| &mut g.state) {
            Some(State::Busy {
                claim: c,
                commit: tx,
            }) if *c == claim => tx.take().is_some_and(|tx| tx.send(()).is_ok()),
            _ => false,
        }
    }

    /// `HEAD`: what a `GET` would send, without claiming the grant.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn probe(
        &self,
        id: &GrantId,
        direction: Direction,
        origin: &CallOrigin,
        tokens: &TokenStore,
        accounts: &Arc<Accounts>,
        protected: &ProtectedPaths,
        limits: &FileLimits,
    ) -> Result<TransferStart, TransferError> {
        let started = Instant::now();
        let view = self.check(id, direction)?;
        let maker = Maker::authorize(tokens, accounts, &view.token, direction).await?;
        // A read of the file's metadata: one record after it, and no answer without it.
        let mut op = self.audit.operation(
            "transfer_head",
            maker.actor(origin),
            redeem_params(maker.identity(), origin, id, &view),
        );
        let result = self.probe_file(maker, &view, protected, limits).await;
        let outcome = match &result {
            Ok(start) => {
                op.set_param("bytes", start.size.unwrap_or(0).into());
                Outcome::ok(Some(started.elapsed()), None)
            }
            Err(e) => Outcome::error(e.kind.as_str(), e.hint.as_str(), Some(started.elapsed())),
        };
        if !self.audit.op_outcome(&op, outcome) && result.is_ok() {
            return Err(refuse(
                Kind::AuditFailed,
                "The server's audit log cannot be written, so the answer is withheld. Retry once it is repaired.",
            ));
        }
        result
    }

    /// What a `GET` would send (the size), or why it would be refused.
    async fn probe_file(
        &self,
        maker: Maker,
        view: &View,
        protected: &ProtectedPaths,
        limits: &FileLimits,
    ) -> Result<TransferStart, TransferError> {
        let _slot = limits.transfer(&view.token).map_err(busy)?;
        let size = match maker {
            Maker::Download(auth) => {
                let policy = protected
                    .policy(Access::Read)
                    .with_view(auth.view(), Access::Read);
                let target = view.target.clone();
                let file = blocking(move || open_download(&auth, &policy, &target)).await?;
                Some(file.meta.len())
            }
            Maker::Upload(auth) => {
                let policy = protected
                    .policy(Access::Write)
                    .with_view(auth.view(), Access::Write);
                let target = view.target.clone();
                let overwrite = view.overwrite;
                let path = view.path.clone();
                blocking(move || check_upload(&auth, &policy, &target, &path, overwrite)).await?;
                None
            }
        };
        Ok(TransferStart {
            claim: 0,
            size,
            file_name: file_name(&view.path),
        })
    }

    /// Redeems grant `id` (see the module documentation). Answers when the transfer has
    /// ended; the pipe goes out through `events` once the grant is claimed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn redeem(
        self: &Arc<Self>,
        id: &GrantId,
        direction: Direction,
        announced_len: Option<u64>,
        origin: &CallOrigin,
        tokens: &TokenStore,
        accounts: &Arc<Accounts>,
        protected: &ProtectedPaths,
        limits: &FileLimits,
        cancel: CancelSignal,
        events: &Events,
        trace: Option<(TraceId, SpanId)>,
    ) -> Result<TransferDone, TransferError> {
        let started = Instant::now();
        if cancel.shutting_down() {
            return Err(refuse(
                Kind::ShuttingDown,
                "The server is shutting down; try again once it is back.",
            ));
        }
        // Refusals before the grant is known to belong to a live token are not audited (as in
        // the reference): they carry no identity.
        let view = self.check(id, direction)?;
        let maker = Maker::authorize(tokens, accounts, &view.token, direction).await?;
        let mut record = Redemption::new(
            &self.audit,
            direction,
            maker.identity(),
            origin,
            id,
            &view,
            started,
        );
        record.op.set_trace(trace);
        let (user, uid) = maker.account();
        record.op.set_account(user, uid);
        let result = match maker {
            Maker::Upload(auth) => {
                let limits = (announced_len, limits);
                self.upload(&auth, &view, limits, protected, cancel, events, &mut record)
                    .await
            }
            Maker::Download(auth) => {
                self.download(&auth, &view, limits, protected, cancel, events, &mut record)
                    .await
            }
        };
        record.ended(&result);
        log_redeem(&record, &result);
        if let Ok(done) = &result {
            self.metrics.transfer_bytes(direction, done.bytes);
        }
        result
    }

    /// Runs a claimed upload for the holder of `auth` (the token that made the grant).
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        self: &Arc<Self>,
        auth: &Authorized<Rw>,
        view: &View,
        (announced_len, limits): (Option<u64>, &FileLimits),
        protected: &ProtectedPaths,
        cancel: CancelSignal,
        events: &Events,
        record: &mut Redemption,
    ) -> Result<TransferDone, TransferError> {
        if announced_len.is_some_and(|n| n > view.bytes) {
            return Err(too_large(view.bytes));
        }
        let (mut claim, committed, _slot) = self.claim_with_slot(&view.id, &view.token, limits)?;
        // No record, no side effect: nothing below runs without it.
        record.start()?;
        let policy = protected
            .policy(Access::Write)
            .with_view(auth.view(), Access::Write);
        let (target, temp) = {
            let (t, p, o) = (view.target.clone(), view.path.clone(), view.overwrite);
            let auth = auth.clone();
            blocking(move || {
                let target = open_upload(&auth, &policy, &t, &p, o)?;
                // Created as the account: the new file is the account's.
                let _as = auth.act().map_err(acting_failed)?;
                let temp = TempFile::create(&target).map_err(|e| write_failed(&p, &e))?;
                Ok((target, temp))
            })
            .await?
        };
        let (read_end, write_end) = pipe()?;
        let wake = Wake::new()?;
        let _watch = wake.watch(cancel);
        let start = TransferStart {
            claim: claim.claim,
            size: None,
            file_name: file_name(&view.path),
        };
        if !events.pipe(start, write_end).await {
            return Err(refuse(Kind::Aborted, "The frontend went away."));
        }
        let (max, w, who) = (view.bytes, wake.clone(), auth.clone());
        let (temp, bytes, digest) = blocking(move || {
            let _as = who.act().map_err(acting_failed)?;
            receive(read_end, temp, max, &w)
        })
        .await?;
        // The pipe is drained: commit only once the frontend says the body ended normally.
        let mut fired = wake.fired.subscribe();
        tokio::select! {
            r = committed => if r.is_err() {
                return Err(refuse(Kind::Aborted, "The upload was cut short."));
            },
            _ = fired.wait_for(|f| *f) => {
                return Err(refuse(Kind::Aborted, "The upload was cut short."));
            }
            () = tokio::time::sleep(COMMIT_TIMEOUT) => {
                return Err(refuse(Kind::Aborted, "The upload was not confirmed by the frontend."));
            }
        }
        if let Some(want) = view.sha256 {
            if want != digest {
                return Err(refuse(
                    Kind::Sha256Mismatch,
                    format!(
                        "The body's SHA-256 is {}, the ticket expects {}. Nothing was written.",
                        hex(&digest),
                        hex(&want)
                    ),
                ));
            }
        }
        let (path, overwrite, who) = (view.path.clone(), view.overwrite, auth.clone());
        // The outcome record is written with the file in place and its lock held; without it
        // the file is taken out again.
        let (audit, mut op, started) = (self.audit.clone(), record.op.clone(), record.started);
        op.set_param("bytes", bytes.into());
        let summary =
            json!({"path": op_path(&view.path), "size_bytes": bytes, "sha256": hex(&digest)});
        let placed = blocking(move || {
            let _lock = edit::lock(&target);
            // Linked and renamed into place with the account's rights on the directory.
            let _as = who.act().map_err(acting_failed)?;
            let replace = if overwrite { Replace::Yes } else { Replace::No };
            let placed = temp
                .commit_undoable(&target, replace)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EEXIST) => exists(&path),
                    _ => write_failed(&path, &e),
                })?;
            if audit.op_outcome(&op, Outcome::ok(Some(started.elapsed()), Some(summary))) {
                placed.keep();
                return Ok(Placement::Recorded);
            }
            match placed.undo() {
                Ok(()) => Ok(Placement::TakenBack),
                Err(e) => {
                    tracing::error!(path = %path, error = %e, "an upload whose audit record could not be written could not be taken back; the file stays in place");
                    Ok(Placement::Unrecorded)
                }
            }
        })
        .await?;
        match placed {
            Placement::Recorded => record.recorded(),
            Placement::TakenBack => {
                return Err(refuse(
                    Kind::AuditFailed,
                    "The upload's audit record could not be written, so the upload was taken back; nothing was changed. Retry with the same URL once the server's audit log is repaired.",
                ))
            }
            Placement::Unrecorded => {
                claim.done = true;
                return Err(refuse(
                    Kind::AuditFailed,
                    "The file was written, but its audit record could not be written and the file could not be taken back.",
                ));
            }
        }
        claim.done = true;
        Ok(TransferDone {
            path: view.path.clone(),
            bytes,
            sha256: Some(hex(&digest)),
        })
    }

    /// Runs a claimed download for the holder of `auth`.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        self: &Arc<Self>,
        auth: &Authorized<Ro>,
        view: &View,
        limits: &FileLimits,
        protected: &ProtectedPaths,
        cancel: CancelSignal,
        events: &Events,
        record: &mut Redemption,
    ) -> Result<TransferDone, TransferError> {
        let (mut claim, _, _slot) = self.claim_with_slot(&view.id, &view.token, limits)?;
        // No record, no byte (nor the size) leaves.
        record.start()?;
        let policy = protected
            .policy(Access::Read)
            .with_view(auth.view(), Access::Read);
        let file = {
            let (t, auth) = (view.target.clone(), auth.clone());
            blocking(move || open_download(&auth, &policy, &t)).await?
        };
        let size = file.meta.len();
        let (read_end, write_end) = pipe()?;
        let wake = Wake::new()?;
        let _watch = wake.watch(cancel);
        let start = TransferStart {
            claim: claim.claim,
            size: Some(size),
            file_name: file_name(&view.path),
        };
        if !events.pipe(start, read_end).await {
            return Err(refuse(Kind::Aborted, "The frontend went away."));
        }
        let (w, who) = (wake.clone(), auth.clone());
        let bytes = blocking(move || {
            let _as = who.act().map_err(acting_failed)?;
            send(file.file, size, write_end, &w)
        })
        .await?;
        claim.done = true;
        Ok(TransferDone {
            path: view.path.clone(),
            bytes,
            sha256: None,
        })
    }
}

/// A claimed grant: spent when the transfer completed (`done`), released otherwise.
struct Claim {
    transfers: Arc<Transfers>,
    id: GrantId,
    claim: u64,
    done: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.transfers.running.fetch_sub(1, Ordering::Relaxed);
        let mut grants = self.transfers.lock();
        if let Some(g) = grants.get_mut(&self.id) {
            if matches!(g.state, State::Busy { claim, .. } if claim == self.claim) {
                g.state = if self.done { State::Used } else { State::Ready };
            }
        }
    }
}

fn busy(f: ToolFailure) -> TransferError {
    refuse(Kind::Busy, f.message)
}

fn token_gone() -> TransferError {
    refuse(
        Kind::NotFound,
        "The token that prepared this ticket is no longer valid. Mint a new ticket.",
    )
}

/// The token that made a grant, authorized again for what the grant does when it is
/// redeemed or probed: it must still be valid and still hold the grant's role.
enum Maker {
    Upload(Authorized<Rw>),
    Download(Authorized<Ro>),
}

impl Maker {
    /// The token must still be valid and hold the role, and its account (resolved again, as
    /// for any call) must be available: the transfer acts as it.
    async fn authorize(
        tokens: &TokenStore,
        accounts: &Arc<Accounts>,
        token: &TokenDigest,
        direction: Direction,
    ) -> Result<Maker, TransferError> {
        let caller = auth::authenticate(tokens, token).ok_or_else(token_gone)?;
        let caller = caller.resolve(accounts).await;
        let made = match direction {
            Direction::Upload => caller
                .authorize::<Rw>(ToolName::PrepareUpload)
                .map(Maker::Upload),
            Direction::Download => caller
                .authorize::<Ro>(ToolName::PrepareDownload)
                .map(Maker::Download),
        };
        made.map_err(|f| match f.code {
            ErrorCode::AccountUnavailable => refuse(Kind::NotFound, f.message),
            _ => token_gone(),
        })
    }

    fn identity(&self) -> &Identity {
        match self {
            Maker::Upload(auth) => auth.identity(),
            Maker::Download(auth) => auth.identity(),
        }
    }

    /// The account the transfer acts as: its name and uid.
    fn account(&self) -> (&str, u32) {
        let a = match self {
            Maker::Upload(auth) => auth.account(),
            Maker::Download(auth) => auth.account(),
        };
        (&a.name, a.uid)
    }

    /// Who the transfer's records name: the token's holder, acting as its account.
    fn actor(&self, origin: &CallOrigin) -> Actor {
        let (user, uid) = self.account();
        Actor::token(self.identity(), origin).with_account(user, uid)
    }
}

/// Opens the destination of an upload again and checks it, creating missing parent
/// directories (inside the checked deepest existing one).
fn open_upload(
    auth: &Authorized<Rw>,
    policy: &paths::Policy,
    target: &Path,
    shown: &str,
    overwrite: bool,
) -> Result<CheckedTarget, TransferError> {
    let _as = auth.act().map_err(acting_failed)?;
    let t =
        paths::open_for_write(policy, &target.to_string_lossy(), true).map_err(upload_refusal)?;
    if !overwrite && t.existing().is_some() {
        return Err(exists(shown));
    }
    Ok(t)
}

/// As [`open_upload`] for `HEAD`: checks without creating anything.
fn check_upload(
    auth: &Authorized<Rw>,
    policy: &paths::Policy,
    target: &Path,
    shown: &str,
    overwrite: bool,
) -> Result<(), TransferError> {
    let _as = auth.act().map_err(acting_failed)?;
    let real = target.to_string_lossy();
    match paths::open_for_write(policy, &real, false) {
        Ok(t) if !overwrite && t.existing().is_some() => Err(exists(shown)),
        Ok(_) => Ok(()),
        Err(f) if f.code == ErrorCode::FileNotFoundError => paths::check_new_path(policy, &real)
            .map(drop)
            .map_err(upload_refusal),
        Err(f) => Err(upload_refusal(f)),
    }
}

fn upload_refusal(f: ToolFailure) -> TransferError {
    match f.code {
        ErrorCode::ProtectedPath => refuse(Kind::Protected, f.message),
        _ => refuse(Kind::WriteFailed, f.message),
    }
}

fn open_download(
    auth: &Authorized<Ro>,
    policy: &paths::Policy,
    target: &Path,
) -> Result<paths::CheckedFile, TransferError> {
    let _as = auth.act().map_err(acting_failed)?;
    paths::open_for_read(policy, &target.to_string_lossy()).map_err(|f| match f.code {
        ErrorCode::ProtectedPath => refuse(Kind::Protected, f.message),
        ErrorCode::FileNotFoundError
        | ErrorCode::IsADirectoryError
        | ErrorCode::NotARegularFile => refuse(Kind::PathNotFound, "Server file no longer exists."),
        _ => refuse(Kind::ReadFailed, f.message),
    })
}

fn acting_failed(f: ToolFailure) -> TransferError {
    refuse(Kind::Internal, f.message)
}

fn too_large(max: u64) -> TransferError {
    refuse(Kind::TooLarge, format!("Body exceeds max_bytes={max}."))
}

fn exists(path: &str) -> TransferError {
    refuse(
        Kind::Exists,
        format!("{path} already exists and overwrite=false; nothing was replaced."),
    )
}

fn write_failed(path: &str, e: &io::Error) -> TransferError {
    refuse(Kind::WriteFailed, paths::os_message(e, path))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), TransferError> {
    let (r, w) = syspipe::pipe().map_err(|e| refuse(Kind::Internal, format!("pipe: {e}")))?;
    // Best effort: a smaller pipe only means more wake-ups.
    let _ = syspipe::set_pipe_size(r.as_fd(), PIPE_SIZE);
    Ok((r, w))
}

/// Runs blocking work (file system, pipe copies) off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| refuse(Kind::Internal, format!("transfer task failed: {e}")))?
}

/// Wakes a copy loop blocked in `poll` when the request is cancelled (the client went away,
/// or shutdown's grace period is over).
#[derive(Clone, Debug)]
struct Wake(Arc<WakeInner>);

#[derive(Debug)]
struct WakeInner {
    eventfd: OwnedFd,
    flag: AtomicBool,
    fired: watch::Sender<bool>,
}

impl std::ops::Deref for Wake {
    type Target = WakeInner;
    fn deref(&self) -> &WakeInner {
        &self.0
    }
}

impl Wake {
    fn new() -> Result<Wake, TransferError> {
        let eventfd =
            syspipe::eventfd().map_err(|e| refuse(Kind::Internal, format!("eventfd: {e}")))?;
        Ok(Wake(Arc::new(WakeInner {
            eventfd,
            flag: AtomicBool::new(false),
            fired: watch::Sender::new(false),
        })))
    }

    fn fire(&self) {
        self.flag.store(true, Ordering::SeqCst);
        syspipe::signal_eventfd(self.eventfd.as_fd());
        self.fired.send_replace(true);
    }

    fn fired(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Fires when `cancel` does; stops watching when the guard is dropped.
    fn watch(&self, cancel: CancelSignal) -> AbortOnDrop {
        let me = self.clone();
        let mut cancel = cancel;
        AbortOnDrop(tokio::spawn(async move {
            // Any stop (client gone, shutdown) ends the transfer.
            cancel.next().await;
            me.fire();
        }))
    }

    /// Waits for `fd` to be ready for `events`.
    fn wait(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        events: libc::c_short,
    ) -> Result<(), TransferError> {
        let ms = IDLE_TIMEOUT.as_millis() as i32;
        match syspipe::wait(fd, events, self.eventfd.as_fd(), ms) {
            Ok(Ready::Io) => Ok(()),
            Ok(Ready::Woken) => Err(refuse(Kind::Aborted, "The transfer was cancelled.")),
            Ok(Ready::TimedOut) => Err(refuse(
                Kind::Stalled,
                format!(
                    "Nothing moved for {} s; the transfer was abandoned.",
                    IDLE_TIMEOUT.as_secs()
                ),
            )),
            Err(e) => Err(refuse(Kind::Internal, format!("poll: {e}"))),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Upload: pipe → temporary file until the pipe ends, stopping as soon as more than `max`
/// bytes arrived. The bytes are `splice`d (they never pass through this process); a second
/// thread hashes what was written by reading it back from the page cache while the next bytes
/// arrive, so the SHA-256 costs no extra time on two cores. Returns the file, the byte count
/// and the SHA-256 of the file's contents.
fn receive(
    pipe: OwnedFd,
    mut temp: TempFile,
    max: u64,
    wake: &Wake,
) -> Result<(TempFile, u64, [u8; 32]), TransferError> {
    let reader = temp
        .file()
        .try_clone()
        .map_err(|e| refuse(Kind::Internal, format!("dup: {e}")))?;
    let progress = HashProgress::default();
    let (received, digest) = std::thread::scope(|scope| {
        let hasher = scope.spawn(|| hash_behind(&reader, &progress));
        let received = copy_in(&pipe, temp.file(), max, wake, &progress, hasher.thread());
        if received.is_err() {
            progress.abort.store(true, Ordering::SeqCst);
        }
        progress.done.store(true, Ordering::SeqCst);
        hasher.thread().unpark();
        let digest = hasher
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the hashing thread panicked")));
        (received, digest)
    });
    let total = received?;
    let digest = digest.map_err(|e| refuse(Kind::WriteFailed, paths::os_message(&e, "")))?;
    Ok((temp, total, digest))
}

/// How far an upload's file is written, for the thread that hashes behind the writer.
#[derive(Debug, Default)]
struct HashProgress {
    written: AtomicU64,
    /// No more bytes will come (set after the last `written`).
    done: AtomicBool,
    /// The upload failed: stop hashing.
    abort: AtomicBool,
}

/// Hashes `file` from the start up to `progress.written` as it grows, until `done`.
fn hash_behind(file: &File, progress: &HashProgress) -> io::Result<[u8; 32]> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    loop {
        if progress.abort.load(Ordering::SeqCst) {
            return Ok([0; 32]);
        }
        // `done` first: once it is seen, `written` is final.
        let done = progress.done.load(Ordering::SeqCst);
        let written = progress.written.load(Ordering::SeqCst);
        if at < written {
            let n = ((written - at) as usize).min(buf.len());
            let got = file.read_at(&mut buf[..n], at)?;
            if got == 0 {
                return Err(io::Error::other(
                    "the temporary file is shorter than written",
                ));
            }
            hasher.update(&buf[..got]);
            at += got as u64;
        } else if done {
            return Ok(hasher.finalize().into());
        } else {
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

/// The writer's half of [`receive`]: returns the byte count.
fn copy_in(
    pipe: &OwnedFd,
    file: &mut File,
    max: u64,
    wake: &Wake,
    progress: &HashProgress,
    hasher: &std::thread::Thread,
) -> Result<u64, TransferError> {
    use std::os::unix::fs::FileExt;
    let mut offset = 0i64;
    let mut written_back = 0u64;
    // Set when the file system cannot splice: read and write through this buffer instead.
    let mut fallback: Option<Vec<u8>> = None;
    loop {
        if wake.fired() {
            return Err(refuse(Kind::Aborted, "The transfer was cancelled."));
        }
        // At most one byte past the limit, so an oversize body is noticed at once.
        let want = (max + 1 - offset as u64).min(PIPE_SIZE as u64) as usize;
        let moved = match fallback.as_mut() {
            None => {
                match syspipe::splice_from_pipe(pipe.as_fd(), file.as_fd(), &mut offset, want) {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        fallback = Some(vec![0u8; CHUNK]);
                        continue;
                    }
                    r => r,
                }
            }
            Some(buf) => {
                let want = want.min(buf.len());
                syspipe::read(pipe.as_fd(), &mut buf[..want]).and_then(|n| {
                    file.write_all_at(&buf[..n], offset as u64)?;
                    offset += n as i64;
                    Ok(n)
                })
            }
        };
        match moved {
            Ok(0) => return Ok(offset as u64),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wake.wait(pipe.as_fd(), libc::POLLIN)?;
                continue;
            }
            Err(e) => return Err(refuse(Kind::WriteFailed, paths::os_message(&e, ""))),
        }
        let total = offset as u64;
        if total > max {
            return Err(too_large(max));
        }
        progress.written.store(total, Ordering::SeqCst);
        hasher.unpark();
        if total - written_back >= WRITEBACK_EVERY {
            let _ = syspipe::start_writeback(file.as_fd(), written_back, total - written_back);
            written_back = total;
        }
    }
}

/// Download: exactly `size` bytes of `file` into the pipe, by `splice` (or read/write where
/// the file system cannot splice).
fn send(file: File, size: u64, pipe: OwnedFd, wake: &Wake) -> Result<u64, TransferError> {
    let mut offset = 0i64;
    let mut buf: Vec<u8> = Vec::new();
    while (offset as u64) < size {
        if wake.fired() {
            return Err(refuse(Kind::Aborted, "The transfer was cancelled."));
        }
        let want = ((size - offset as u64) as usize).min(PIPE_SIZE);
        let moved = if buf.is_empty() {
            match syspipe::splice_to_pipe(file.as_fd(), &mut offset, pipe.as_fd(), want) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    buf = vec![0u8; CHUNK];
                    continue;
                }
                r => r,
            }
        } else {
            copy_some(&file, &mut offset, &pipe, &mut buf[..want.min(CHUNK)])
        };
        match moved {
            Ok(0) => {
                return Err(refuse(
                    Kind::ReadFailed,
                    "The file became shorter while it was being sent.",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wake.wait(pipe.as_fd(), libc::POLLOUT)?
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                return Err(refuse(Kind::Aborted, "The client went away."))
            }
            Err(e) => return Err(refuse(Kind::ReadFailed, paths::os_message(&e, ""))),
        }
    }
    Ok(size)
}

/// One read/write step for files that cannot be spliced. Writes to a pipe of at most its
/// capacity never split here: a short write is retried from the unwritten rest.
fn copy_some(file: &File, offset: &mut i64, pipe: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let n = file.read_at(buf, *offset as u64)?;
    if n == 0 {
        return Ok(0);
    }
    let mut done = 0;
    let out = File::from(pipe.try_clone()?);
    while done < n {
        match (&out).write(&buf[done..n]) {
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Wait for room; report what already went through.
                if done > 0 {
                    break;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    *offset += done as i64;
    Ok(done)
}

/// The last path component, for `Content-Disposition`.
fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".to_owned())
}

fn absolute(field: &str, path: &str) -> Result<(), ToolFailure> {
    if !path.starts_with('/') {
        return Err(ToolFailure::new(
            ErrorCode::InvalidPath,
            format!("{field} must be an absolute path."),
        ));
    }
    paths::check_path_len(field, Some(path))?;
    paths::check_absolute(field, path)
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Where an upload's file ended up after its outcome record was (not) written.
enum Placement {
    /// In place, with its record.
    Recorded,
    /// The record could not be written; the file was taken out again.
    TakenBack,
    /// The record could not be written, nor the file taken out.
    Unrecorded,
}

/// The audit records of one redeem of a grant whose token is valid (see the module
/// documentation): `transfer_upload` / `transfer_download`, the issuing token's name and role,
/// the redeemer's address.
#[derive(Debug)]
struct Redemption {
    audit: Arc<Audit>,
    op: Operation,
    direction: Direction,
    started: Instant,
    state: RecordState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecordState {
    /// Nothing written yet: a refusal before the side effects gets one outcome record.
    Unstarted,
    Started,
    /// The start record could not be written: the redeem did nothing, and gets no outcome.
    Refused,
    /// The outcome record is written.
    Ended,
}

/// The `params` of a redeem's (or a `HEAD`'s) records: the reference's v3 fields.
fn redeem_params(
    issuer: &Identity,
    origin: &CallOrigin,
    grant: &GrantId,
    view: &View,
) -> serde_json::Value {
    json!({
        "path": op_path(&view.path),
        "ticket": grant.short(),
        "issuer_token_name": audit::param(&issuer.name),
        "issuer_role": issuer.role.as_str(),
        "redeemer_ip": audit::param(&origin.peer),
    })
}

/// The path as the audit shows it (capped).
fn op_path(path: &str) -> serde_json::Value {
    audit::param(path)
}

impl Redemption {
    fn new(
        audit: &Arc<Audit>,
        direction: Direction,
        issuer: &Identity,
        origin: &CallOrigin,
        grant: &GrantId,
        view: &View,
        started: Instant,
    ) -> Redemption {
        let tool = match direction {
            Direction::Upload => "transfer_upload",
            Direction::Download => "transfer_download",
        };
        let params = redeem_params(issuer, origin, grant, view);
        Redemption {
            op: audit.operation(tool, Actor::token(issuer, origin), params),
            audit: audit.clone(),
            direction,
            started,
            state: RecordState::Unstarted,
        }
    }

    /// The start record, before the first side effect. `Err`: it could not be written, do
    /// nothing.
    fn start(&mut self) -> Result<(), TransferError> {
        if self.audit.op_start(&self.op) {
            self.state = RecordState::Started;
            return Ok(());
        }
        self.state = RecordState::Refused;
        let what = match self.direction {
            Direction::Upload => "nothing was written",
            Direction::Download => "nothing was sent",
        };
        Err(refuse(
            Kind::AuditFailed,
            format!("The server's audit log cannot be written, so the transfer was refused; {what}. Retry with the same URL once it is repaired."),
        ))
    }

    /// The upload's outcome record was written where the file was put in place.
    fn recorded(&mut self) {
        self.state = RecordState::Ended;
    }

    /// The outcome record, unless written already (or the start record failed). Best effort:
    /// an upload's success is recorded before it is kept, and a failed redeem changed nothing.
    fn ended(&mut self, result: &Result<TransferDone, TransferError>) {
        if matches!(self.state, RecordState::Refused | RecordState::Ended) {
            return;
        }
        let duration = Some(self.started.elapsed());
        let outcome = match result {
            Ok(done) => {
                self.op.set_param("bytes", done.bytes.into());
                Outcome::ok(duration, None)
            }
            Err(e) => {
                self.op.set_param("bytes", 0.into());
                Outcome::error(e.kind.as_str(), e.hint.as_str(), duration)
            }
        };
        self.audit.op_outcome(&self.op, outcome);
        self.state = RecordState::Ended;
    }
}

/// The executor's log line of a redeem (the audit record is [`Redemption`]'s).
fn log_redeem(r: &Redemption, result: &Result<TransferDone, TransferError>) {
    let ms = r.started.elapsed().as_millis() as u64;
    let tool = match r.direction {
        Direction::Upload => "transfer_upload",
        Direction::Download => "transfer_download",
    };
    let who = r.op.actor();
    let ticket = r.op.param_str("ticket");
    match result {
        Ok(done) => {
            tracing::info!(tool, token = %who.name, peer = %who.ip, request_id = %who.request_id, ticket, bytes = done.bytes, ms, "transfer redeemed")
        }
        Err(e) => {
            tracing::info!(tool, token = %who.name, peer = %who.ip, request_id = %who.request_id, ticket, ms, code = e.kind.as_str(), hint = %e.hint, "transfer failed")
        }
    }
}

/// A grant can be redeemed only while no transfer holds it and none has completed it.
fn ready(state: &State) -> Result<(), TransferError> {
    match state {
        State::Ready => Ok(()),
        State::Busy { .. } => Err(refuse(
            Kind::InUse,
            "Another transfer with this ticket is running.",
        )),
        State::Used => Err(refuse(
            Kind::Used,
            "Ticket already used; tickets are single-use. Mint a new ticket.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mymcp_protocol::Role;

    #[test]
    fn sha256_arguments_are_parsed_strictly() {
        let d = parse_sha256(&"ab".repeat(32)).unwrap();
        assert_eq!(d, [0xab; 32]);
        assert_eq!(hex(&d), "ab".repeat(32));
        assert!(parse_sha256(&"ab".repeat(31)).is_none());
        assert!(parse_sha256(&"zz".repeat(32)).is_none());
        assert_eq!(parse_sha256(&"AB".repeat(32)), Some([0xab; 32]));
    }

    /// A store with the named ro tokens; their values.
    fn store(dir: &Path, names: &[&str]) -> (TokenStore, Vec<String>) {
        let roles: Vec<(&str, Role)> = names.iter().map(|n| (*n, Role::Ro)).collect();
        let (store, added) =
            TokenStore::create_temporary(&dir.join("tokens.json"), &roles, None).unwrap();
        (store, added.into_iter().map(|(v, _)| v).collect())
    }

    fn grant(t: &Transfers, tokens: &TokenStore, value: &str) -> Result<(), ErrorCode> {
        let d = mymcp_tokens::digest(value);
        t.insert(
            tokens,
            &d,
            Direction::Download,
            "/f",
            PathBuf::from("/f"),
            1,
            false,
            None,
            900,
        )
        .map(drop)
        .map_err(|f| f.code)
    }

    #[test]
    fn a_token_holds_at_most_its_share_of_the_grants() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, v) = store(dir.path(), &["a", "b"]);
        let t = Transfers::new(TransferConfig {
            max_grants_per_token: 3,
            ..TransferConfig::default()
        });
        for _ in 0..3 {
            grant(&t, &tokens, &v[0]).unwrap();
        }
        assert_eq!(grant(&t, &tokens, &v[0]), Err(ErrorCode::Busy));
        // Used grants still count: they stay to answer `ticket_used` until they expire.
        let used = *t.lock().keys().next().unwrap();
        t.lock().get_mut(&used).unwrap().state = State::Used;
        assert_eq!(grant(&t, &tokens, &v[0]), Err(ErrorCode::Busy));
        // Expired ones do not.
        t.lock().get_mut(&used).unwrap().expires_at = 0;
        grant(&t, &tokens, &v[0]).unwrap();
        // Another token has its own share.
        grant(&t, &tokens, &v[1]).unwrap();
        assert_eq!(t.grants(), 4);
    }

    #[test]
    fn a_full_table_drops_the_grants_of_tokens_no_longer_valid() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, v) = store(dir.path(), &["hoarder", "disabled", "other"]);
        let t = Transfers::new(TransferConfig {
            max_grants_per_token: MAX_GRANTS,
            ..TransferConfig::default()
        });
        for _ in 0..MAX_GRANTS - 1 {
            grant(&t, &tokens, &v[0]).unwrap();
        }
        grant(&t, &tokens, &v[1]).unwrap();
        assert_eq!(grant(&t, &tokens, &v[2]), Err(ErrorCode::Busy));
        // Disabled by a hand edit of the store: its one grant goes when room is needed.
        let text = std::fs::read_to_string(tokens.path()).unwrap();
        let d = mymcp_tokens::digest(&v[1]);
        let hex: String = d.0.iter().map(|b| format!("{b:02x}")).collect();
        let mut store: serde_json::Value = serde_json::from_str(&text).unwrap();
        for e in store["tokens"].as_array_mut().unwrap() {
            if e["sha256"] == hex.as_str() {
                e["enabled"] = serde_json::json!(false);
            }
        }
        let edited = dir.path().join("edited");
        std::fs::write(&edited, store.to_string()).unwrap();
        std::fs::rename(&edited, tokens.path()).unwrap();
        grant(&t, &tokens, &v[2]).unwrap();
        assert_eq!(grant(&t, &tokens, &v[2]), Err(ErrorCode::Busy));
        // Revoked: all of its grants go.
        tokens.revoke(&v[0]).unwrap();
        grant(&t, &tokens, &v[2]).unwrap();
        assert_eq!(t.grants(), 2);
    }

    #[test]
    fn file_names_are_the_last_component() {
        assert_eq!(file_name("/srv/a/b.tar.gz"), "b.tar.gz");
        assert_eq!(file_name("/"), "download");
    }
}
