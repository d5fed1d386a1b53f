//! Background jobs: `bash_execute` with `background: true`, and `job_status`, `job_output`,
//! `job_kill`.
//!
//! A job is a command started exactly like a foreground one (same isolation, see
//! [`crate::spawn`]) whose call returns at once with a job id, so it can outlive a client's
//! tool timeout. Around it:
//!
//! * **Output** goes to two spool files in the jobs directory (`<MYMCP_STATE_DIR>/jobs`, mode
//!   0700, files 0600, named after the job id), at most `MYMCP_JOB_MAX_OUTPUT_BYTES` for both
//!   streams together; the rest is counted, not kept. The executor reads the pipes and writes
//!   the files itself, so memory stays bounded and a job cannot write past its cap.
//! * **Ownership**: a job belongs to the token (digest) that started it. For any other token it
//!   does not exist: `NotFound`, the same answer as for an id that never existed.
//! * **End**: like a foreground command, when its shell has exited and both pipes are at EOF,
//!   or at its deadline (`timeout`, default [`DEFAULT_TIMEOUT_SECS`], at most
//!   [`MAX_TIMEOUT_SECS`]: SIGTERM, grace, SIGKILL). Its process group is killed when it ends.
//! * **Limits**: each token may have `MYMCP_JOB_MAX_RUNNING_PER_TOKEN` jobs running; a running
//!   job also takes one of the `MYMCP_BASH_MAX_CONCURRENT` command slots.
//! * **Retention**: an ended job and its spools are deleted `MYMCP_JOB_RETENTION_SEC` after it
//!   ended; at most [`MAX_KEPT_PER_TOKEN`] ended jobs are kept per token (the oldest go first).
//! * **Lifetime**: jobs live in the executor, so a frontend restart does not touch them. When
//!   the executor stops, running jobs are treated like every running command (SIGTERM, the
//!   shutdown grace, SIGKILL) and every job record and spool is deleted; spools left behind by a
//!   crash are deleted at the next start.
//! * **Audit**: the `bash_execute` call that starts a job and a `job_kill` are audited as tool
//!   calls (their outcome records name the `job_id`); the end of every job is a `job_finished`
//!   record — exit code, how it ended (`exit`, `timeout`, `job_kill`, `shutdown`), bytes of
//!   output — in the name of the token that started it, from that call's address and request
//!   id. It is written before shutdown closes the log. Deleting an ended job (retention) only
//!   touches the executor's own state directory and is not audited.

use crate::audit::{self, Actor, Audit, Outcome};
use crate::auth::{Authorized, Rw};
use crate::limits::{PerToken, TokenSlot};
use crate::server::{CancelSignal, ShutdownWatch, Stop};
use crate::spawn::{self, BashConfig, CommandSpec, Control, Controller, Sink, StopReason};
use mymcp_protocol::{
    BashExecute, BashOutput, CallOrigin, CapturedStream, ErrorCode, JobInfo, JobKillArgs,
    JobOutputArgs, JobOutputChunk, TokenDigest, ToolFailure, ToolOutput,
};
use mymcp_sys::process::GroupSignal;
use mymcp_tokens::clock;
use serde_json::json;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

/// A job's timeout when the client gives none, in seconds.
pub(crate) const DEFAULT_TIMEOUT_SECS: u32 = 3600;
/// Longest timeout a job may ask for, in seconds.
pub(crate) const MAX_TIMEOUT_SECS: u32 = 86_400;
/// Ended jobs kept per token; beyond this the oldest are deleted before their retention ends.
const MAX_KEPT_PER_TOKEN: usize = 50;
/// Longest `wait_seconds` of `job_output`.
const MAX_WAIT_SECS: u64 = 60;
/// Bytes per stream that `job_output` returns when the client does not say.
const DEFAULT_CHUNK_BYTES: u64 = 65_536;
/// How long `job_kill` waits, after SIGKILL (or a signal that is not TERM), for the job to end
/// before it answers anyway.
const KILL_SETTLE: Duration = Duration::from_secs(2);
/// Time between progress reports of a call waiting for its hand-off.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Length of a job id in hex digits.
const ID_LEN: usize = 16;

/// Settings of the job subsystem.
#[derive(Clone, Debug)]
pub(crate) struct JobConfig {
    /// The jobs directory, `<MYMCP_STATE_DIR>/jobs`.
    pub(crate) dir: PathBuf,
    /// Spooled bytes per job, both streams together.
    pub(crate) max_output_bytes: u64,
    /// How long an ended job is kept.
    pub(crate) retention: Duration,
    /// Running jobs per token.
    pub(crate) max_running_per_token: usize,
}

impl JobConfig {
    /// The defaults for a state directory.
    pub(crate) fn new(state_dir: &Path) -> JobConfig {
        JobConfig {
            dir: state_dir.join("jobs"),
            max_output_bytes: mymcp_settings::JOB_MAX_OUTPUT_BYTES.default(),
            retention: Duration::from_secs(mymcp_settings::JOB_RETENTION_SEC.default()),
            max_running_per_token: mymcp_settings::JOB_MAX_RUNNING_PER_TOKEN.default() as usize,
        }
    }
}

/// The job table.
#[derive(Debug)]
pub(crate) struct Jobs {
    cfg: JobConfig,
    /// Why jobs cannot run (the jobs directory could not be prepared), if so.
    unavailable: Option<String>,
    running: PerToken,
    table: Mutex<HashMap<String, Arc<Job>>>,
    audit: Arc<Audit>,
}

#[derive(Debug)]
struct Job {
    id: String,
    owner: TokenDigest,
    owner_name: String,
    /// The token that started it and the call's address, for its `job_finished` record.
    actor: Actor,
    command: String,
    working_dir: String,
    started_at: SystemTime,
    started: Instant,
    timeout_secs: u32,
    /// The starting call's `max_output_bytes`, clamped.
    output_cap: u64,
    paths: [PathBuf; 2],
    state: Mutex<JobState>,
    /// Bumped on new output and when the job ends.
    changed: watch::Sender<()>,
    /// To the task that supervises the job; closed once it has ended.
    control: mpsc::Sender<Control>,
}

#[derive(Debug, Default)]
struct JobState {
    /// stdout, stderr.
    streams: [StreamState; 2],
    kill_requested: bool,
    ended: Option<Ended>,
    /// The kernel limit the job hit, once it has ended.
    limit_hit: Option<String>,
}

#[derive(Clone, Copy, Debug, Default)]
struct StreamState {
    /// Bytes the job wrote.
    total: u64,
    /// Bytes in the spool file.
    kept: u64,
}

#[derive(Clone, Copy, Debug)]
struct Ended {
    exit_code: i32,
    timed_out: bool,
    killed: bool,
    at: SystemTime,
    /// For choosing which ended jobs to drop first.
    instant: Instant,
}

const STDOUT: usize = 0;
const STDERR: usize = 1;

impl Job {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        // Every critical section leaves the state consistent; a panic cannot tear it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn info(&self) -> JobInfo {
        let state = self.lock();
        let ended = state.ended;
        let duration = match ended {
            Some(e) => e.instant.duration_since(self.started),
            None => self.started.elapsed(),
        };
        JobInfo {
            job_id: self.id.clone(),
            command: self.command.clone(),
            working_dir: self.working_dir.clone(),
            running: ended.is_none(),
            exit_code: ended.map(|e| e.exit_code),
            timed_out: ended.is_some_and(|e| e.timed_out),
            killed: ended.is_some_and(|e| e.killed),
            started_at: rfc3339(self.started_at),
            finished_at: ended.map(|e| rfc3339(e.at)),
            duration_ms: duration.as_millis() as u64,
            timeout_secs: self.timeout_secs,
            stdout_bytes: state.streams[STDOUT].total,
            stderr_bytes: state.streams[STDERR].total,
            output_truncated: state.streams.iter().any(|s| s.total > s.kept),
            limit_hit: state.limit_hit.clone(),
            output_cap: self.output_cap,
        }
    }

    fn has_ended(&self) -> bool {
        self.lock().ended.is_some()
    }

    /// Waits up to `timeout` for the job to end; returns whether it has.
    async fn wait_ended(&self, timeout: Duration) -> bool {
        let mut changed = self.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if self.has_ended() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the job is gone from everywhere (cannot happen while we hold it).
                _ => return self.has_ended(),
            }
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    clock::rfc3339(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64)
}

/// The executor's log line of a job event (the audit log has the records).
fn log_event(event: &'static str, job: &Job, detail: &str) {
    tracing::info!(
        event,
        job_id = %job.id,
        token = %job.owner_name,
        detail,
        "job {event}"
    );
}

/// How a job ended, as its `job_finished` record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndedBy {
    /// Its shell exited (any code).
    Exit,
    Timeout,
    JobKill,
    /// The executor's shutdown signalled or killed it.
    Shutdown,
    /// Its client cancelled the call before the command was handed off.
    Cancelled,
}

impl EndedBy {
    fn as_str(self) -> &'static str {
        match self {
            EndedBy::Exit => "exit",
            EndedBy::Timeout => "timeout",
            EndedBy::JobKill => "job_kill",
            EndedBy::Shutdown => "shutdown",
            EndedBy::Cancelled => "cancelled",
        }
    }
}

/// Writes the `job_finished` record of `job` (best effort: the job has ended either way; a
/// failure is counted and logged).
fn audit_end(audit: &Audit, job: &Job, ended_by: EndedBy) {
    let (ended, streams) = {
        let state = job.lock();
        (state.ended, state.streams)
    };
    let Some(ended) = ended else { return };
    let params = json!({
        "job_id": job.id,
        "command": audit::param(&job.command),
        "working_dir": audit::param(&job.working_dir),
    });
    let op = audit.operation("job_finished", job.actor.clone(), params);
    let duration = Some(ended.instant.duration_since(job.started));
    let outcome = match ended_by {
        EndedBy::Exit if ended.exit_code == 0 => Outcome::ok(duration, None),
        EndedBy::Exit => Outcome::error(
            format!("ExitCode:{}", ended.exit_code),
            "Non-zero exit code",
            duration,
        ),
        EndedBy::Timeout => Outcome::error(
            "TimeoutError",
            format!("Job timed out after {}s", job.timeout_secs),
            duration,
        ),
        EndedBy::JobKill => Outcome::error("Killed", "Stopped by job_kill", duration),
        EndedBy::Shutdown => Outcome::error(
            ErrorCode::ShuttingDown.as_str(),
            "Stopped by the executor's shutdown",
            duration,
        ),
        EndedBy::Cancelled => Outcome::error(
            ErrorCode::Cancelled.as_str(),
            "The client cancelled the call",
            duration,
        ),
    };
    audit.op_outcome(
        &op,
        outcome.with_output(json!({
            "exit_code": ended.exit_code,
            "timed_out": ended.timed_out,
            "killed": ended.killed,
            "ended_by": ended_by.as_str(),
            "stdout_bytes": streams[STDOUT].total,
            "stderr_bytes": streams[STDERR].total,
        })),
    );
}

/// A spool file as the sink of one of a job's streams.
struct Spool {
    job: Arc<Job>,
    stream: usize,
    file: File,
    max: u64,
    failed: bool,
}

impl Sink for Spool {
    fn push(&mut self, bytes: &[u8]) {
        {
            let mut state = self.job.lock();
            let kept: u64 = state.streams.iter().map(|s| s.kept).sum();
            let room = usize::try_from(self.max.saturating_sub(kept)).unwrap_or(usize::MAX);
            let keep = if self.failed {
                0
            } else {
                room.min(bytes.len())
            };
            // Written under the lock, before `kept` grows, so a reader never sees a length
            // the file does not have yet. A write of at most 64 KiB to the page cache.
            if keep > 0 {
                match self.file.write_all(&bytes[..keep]) {
                    Ok(()) => state.streams[self.stream].kept += keep as u64,
                    Err(e) => {
                        tracing::warn!(job_id = %self.job.id, "cannot write the job's spool ({e}); counting its output from now on");
                        self.failed = true;
                    }
                }
            }
            state.streams[self.stream].total += bytes.len() as u64;
        }
        self.job.changed.send_replace(());
    }
}

/// What a job's supervisor obeys: `job_kill` and shutdown.
struct JobControls {
    kill: mpsc::Receiver<Control>,
    kill_open: bool,
    shutdown: ShutdownWatch,
    /// Shutdown has signalled or stopped the job.
    by_shutdown: bool,
}

impl Controller for JobControls {
    async fn next(&mut self) -> Control {
        loop {
            tokio::select! {
                c = self.kill.recv(), if self.kill_open => match c {
                    Some(c) => return c,
                    None => self.kill_open = false,
                },
                stop = self.shutdown.next() => {
                    self.by_shutdown = true;
                    return match stop {
                        Stop::Terminate => Control::Signal(GroupSignal::Term),
                        Stop::Cancel | Stop::Kill => Control::Stop(StopReason::Shutdown),
                    };
                }
            }
        }
    }
}

/// How a call that may be handed off runs: its timeout, how long the call waits before it
/// hands off, and the output per stream the answer carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandOffLimits {
    pub(crate) timeout_secs: u32,
    pub(crate) after: Duration,
    pub(crate) max_output: u64,
}

/// The timeout of a job: default [`DEFAULT_TIMEOUT_SECS`], clamped to [1, [`MAX_TIMEOUT_SECS`]].
pub(crate) fn clamp_timeout(timeout: Option<i64>) -> u32 {
    match timeout {
        None => DEFAULT_TIMEOUT_SECS,
        Some(t) => t.clamp(1, MAX_TIMEOUT_SECS as i64) as u32,
    }
}

fn not_found(id: &str) -> ToolFailure {
    let shown: String = id.chars().take(64).collect();
    ToolFailure::new(ErrorCode::NotFound, format!("Job not found: {shown}")).with_suggestion(
        "Job ids come from bash_execute with background: true; ended jobs are deleted after a while",
    )
}

fn internal(what: &str, e: &io::Error) -> ToolFailure {
    ToolFailure::new(ErrorCode::InternalError, format!("{what}: {e}"))
}

/// Whether `name` is a job id (the only strings ever joined to the jobs directory), or a
/// terminal id: 16 lowercase hex digits.
pub(crate) fn is_job_id(name: &str) -> bool {
    name.len() == ID_LEN && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new id of a job or a terminal: 16 random lowercase hex digits.
pub(crate) fn new_job_id() -> io::Result<String> {
    let mut bytes = [0u8; ID_LEN / 2];
    mymcp_sys::fill_random(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates the jobs (or terminals) directory `dir` (mode 0700) if needed and checks that
/// nobody else can use it.
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other("exists and is not a directory"));
    }
    if meta.uid() != mymcp_sys::euid() {
        return Err(io::Error::other(format!(
            "owned by uid {}, not by the executor",
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn create_spool(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl Jobs {
    /// Prepares the jobs directory and deletes spools a previous run left behind. If the
    /// directory cannot be used, jobs are unavailable (each start says why); the rest of the
    /// executor works on.
    pub(crate) fn open(cfg: JobConfig, audit: Arc<Audit>) -> Jobs {
        let unavailable = match prepare_dir(&cfg.dir) {
            Ok(()) => {
                remove_stale_spools(&cfg.dir);
                None
            }
            Err(e) => {
                let why = format!("cannot use {}: {e}", cfg.dir.display());
                tracing::warn!("background jobs are unavailable: {why}");
                Some(why)
            }
        };
        Jobs {
            running: PerToken::new(cfg.max_running_per_token),
            cfg,
            unavailable,
            table: Mutex::default(),
            audit,
        }
    }

    /// A job table that refuses every start (no state directory configured).
    pub(crate) fn disabled() -> Jobs {
        let cfg = JobConfig::new(Path::new("/nonexistent"));
        Jobs {
            running: PerToken::new(cfg.max_running_per_token),
            cfg,
            unavailable: Some("no state directory is configured".into()),
            table: Mutex::default(),
            audit: Arc::new(Audit::disabled(Arc::default())),
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Jobs running right now.
    pub(crate) fn running(&self) -> usize {
        self.table().values().filter(|j| !j.has_ended()).count()
    }

    /// Starts a job for the caller. `slot` is its share of the total command limit, held until
    /// the job ends; `shutdown` makes the executor's shutdown wait for, then stop, the job.
    pub(crate) fn start(
        self: &Arc<Self>,
        auth: &Authorized<Rw>,
        origin: &CallOrigin,
        args: &BashExecute,
        bash: &BashConfig,
        slot: OwnedSemaphorePermit,
        shutdown: ShutdownWatch,
    ) -> Result<JobInfo, ToolFailure> {
        let timeout_secs = crate::spawn::cap_timeout(clamp_timeout(args.timeout), auth.limits());
        self.start_job(auth, origin, args, bash, slot, shutdown, timeout_secs)
            .map(|job| job.info())
    }

    /// Whether a job could start for `token` right now (jobs are available and the token has
    /// a running-job slot free): a call that may be handed off is a plain foreground call
    /// otherwise.
    pub(crate) fn has_room(&self, token: &TokenDigest) -> bool {
        self.unavailable.is_none() && self.running.taken(token) < self.running.max()
    }

    /// [`Jobs::start`] with the timeout decided by the caller.
    #[allow(clippy::too_many_arguments)]
    fn start_job(
        self: &Arc<Self>,
        auth: &Authorized<Rw>,
        origin: &CallOrigin,
        args: &BashExecute,
        bash: &BashConfig,
        slot: OwnedSemaphorePermit,
        shutdown: ShutdownWatch,
        timeout_secs: u32,
    ) -> Result<Arc<Job>, ToolFailure> {
        if let Some(why) = &self.unavailable {
            return Err(ToolFailure::new(
                ErrorCode::InternalError,
                format!("Background jobs are unavailable: {why}"),
            )
            .with_suggestion("Check MYMCP_STATE_DIR, or run the command without background"));
        }
        let spec = CommandSpec::check(auth, args)?;
        let own: TokenSlot = self.running.acquire(auth.token()).ok_or_else(|| {
            ToolFailure::new(
                ErrorCode::Busy,
                format!(
                    "Too many background jobs are running for this token (limit {})",
                    self.running.max()
                ),
            )
            .with_suggestion("Wait for a job to end, or stop one with job_kill")
        })?;

        let id = new_job_id().map_err(|e| internal("cannot make a job id", &e))?;
        let paths = [
            self.cfg.dir.join(format!("{id}.out")),
            self.cfg.dir.join(format!("{id}.err")),
        ];
        let files = create_spool(&paths[STDOUT])
            .and_then(|out| Ok([out, create_spool(&paths[STDERR])?]))
            .map_err(|e| {
                remove_files(&paths);
                internal("cannot create the job's spool file", &e)
            })?;
        let started = match spawn::start(auth, &spec, bash) {
            Ok(s) => s,
            Err(f) => {
                remove_files(&paths);
                return Err(f);
            }
        };

        let (control, kill) = mpsc::channel(8);
        let job = Arc::new(Job {
            id: id.clone(),
            owner: *auth.token(),
            owner_name: auth.identity().name.clone(),
            actor: Actor::token(auth.identity(), origin)
                .with_account(&auth.account().name, auth.account().uid),
            command: spec.command.clone(),
            working_dir: spec.dir.display().to_string(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            timeout_secs,
            output_cap: spawn::clamp_max_output(args.max_output_bytes, bash),
            paths,
            state: Mutex::default(),
            changed: watch::Sender::new(()),
            control,
        });
        self.table().insert(id, job.clone());
        log_event("started", &job, &format!("pgid {}", started.pgid()));

        let [out, err] = files.map(|file| Spool {
            job: job.clone(),
            stream: STDOUT,
            file,
            max: self.cfg.max_output_bytes,
            failed: false,
        });
        let err = Spool {
            stream: STDERR,
            ..err
        };
        let mut controls = JobControls {
            kill,
            kill_open: true,
            shutdown,
            by_shutdown: false,
        };
        let deadline = Instant::now() + Duration::from_secs(u64::from(timeout_secs));
        let grace = bash.kill_grace;
        let jobs = Arc::downgrade(self);
        let supervised = job.clone();
        let audit = self.audit.clone();
        tokio::spawn(async move {
            let (mut out, mut err) = (out, err);
            let finished = started
                .supervise(&mut out, &mut err, &mut controls, deadline, grace)
                .await;
            drop((out, err, own, slot));
            let job = supervised;
            {
                let mut state = job.lock();
                state.ended = Some(Ended {
                    exit_code: finished.exit_code,
                    timed_out: finished.timed_out,
                    killed: state.kill_requested || finished.stopped.is_some(),
                    at: SystemTime::now(),
                    instant: Instant::now(),
                });
                state.limit_hit.clone_from(&finished.limit_hit);
            }
            job.changed.send_replace(());
            let ended_by = if finished.timed_out {
                EndedBy::Timeout
            } else if finished.stopped == Some(StopReason::Client) {
                EndedBy::Cancelled
            } else if job.lock().kill_requested {
                EndedBy::JobKill
            } else if finished.stopped.is_some() || controls.by_shutdown {
                EndedBy::Shutdown
            } else {
                EndedBy::Exit
            };
            let mut detail = format!("{}, exit code {}", ended_by.as_str(), finished.exit_code);
            if let Some(limit) = &finished.limit_hit {
                detail.push_str(&format!("; {limit}"));
            }
            log_event("finished", &job, &detail);
            // While `controls` (and its shutdown watch) lives, shutdown waits: the record is
            // in the log before it is closed.
            audit_end(&audit, &job, ended_by);
            drop(controls);
            if let Some(jobs) = jobs.upgrade() {
                jobs.ended(&job);
            }
        });
        Ok(job)
    }

    /// Bookkeeping once a job has ended: schedule its deletion, drop the oldest ended jobs of
    /// its token beyond [`MAX_KEPT_PER_TOKEN`].
    fn ended(self: &Arc<Self>, job: &Arc<Job>) {
        let jobs = Arc::downgrade(self);
        let (id, retention) = (job.id.clone(), self.cfg.retention);
        tokio::spawn(async move {
            tokio::time::sleep(retention).await;
            if let Some(jobs) = Weak::upgrade(&jobs) {
                jobs.remove(&id);
            }
        });
        let mut ended: Vec<(Instant, String)> = self
            .table()
            .values()
            .filter(|j| j.owner == job.owner)
            .filter_map(|j| j.lock().ended.map(|e| (e.instant, j.id.clone())))
            .collect();
        if ended.len() > MAX_KEPT_PER_TOKEN {
            ended.sort();
            for (_, id) in &ended[..ended.len() - MAX_KEPT_PER_TOKEN] {
                self.remove(id);
            }
        }
    }

    /// Deletes an ended job and its spools.
    fn remove(&self, id: &str) {
        let job = {
            let mut table = self.table();
            match table.get(id) {
                Some(j) if j.has_ended() => table.remove(id),
                _ => None,
            }
        };
        if let Some(job) = job {
            remove_files(&job.paths);
            tracing::debug!(job_id = %job.id, "job deleted");
        }
    }

    /// Deletes every job record and spool. For the end of shutdown, once no job runs.
    pub(crate) fn remove_all(&self) {
        let jobs: Vec<Arc<Job>> = self.table().drain().map(|(_, j)| j).collect();
        for job in jobs {
            if !job.has_ended() {
                tracing::warn!(job_id = %job.id, "deleting the spools of a job that still runs");
            }
            remove_files(&job.paths);
        }
    }

    fn find(&self, auth: &Authorized<Rw>, id: &str) -> Result<Arc<Job>, ToolFailure> {
        if !is_job_id(id) {
            return Err(not_found(id));
        }
        match self.table().get(id) {
            // Someone else's job is answered exactly like a missing one.
            Some(job) if job.owner == *auth.token() => Ok(job.clone()),
            _ => Err(not_found(id)),
        }
    }

    /// The jobs of `token` (authenticated by the caller, with the rw role), running and kept
    /// ones, oldest first.
    pub(crate) fn list(&self, token: &TokenDigest) -> Vec<JobInfo> {
        let mut jobs: Vec<Arc<Job>> = self
            .table()
            .values()
            .filter(|j| j.owner == *token)
            .cloned()
            .collect();
        jobs.sort_by_key(|j| (j.started, j.id.clone()));
        jobs.iter().map(|j| j.info()).collect()
    }

    /// `job_status`.
    pub(crate) fn status(&self, auth: &Authorized<Rw>, id: &str) -> Result<JobInfo, ToolFailure> {
        Ok(self.find(auth, id)?.info())
    }

    /// `job_output`: up to `max_bytes` (clamped to `hard_max`) of each stream from the given
    /// offsets, after waiting up to `wait_seconds` for output past them or for the end of the
    /// job. The wait ends early when the request is cancelled or shutdown begins.
    pub(crate) async fn output(
        &self,
        auth: &Authorized<Rw>,
        args: &JobOutputArgs,
        hard_max: u64,
        cancel: &mut CancelSignal,
    ) -> Result<JobOutputChunk, ToolFailure> {
        let job = self.find(auth, &args.job_id)?;
        let offsets = [
            args.stdout_offset.unwrap_or(0).max(0) as u64,
            args.stderr_offset.unwrap_or(0).max(0) as u64,
        ];
        let max = args
            .max_bytes
            .map_or(DEFAULT_CHUNK_BYTES, |m| m.max(1) as u64)
            .min(hard_max.max(1));
        let wait = Duration::from_secs(
            args.wait_seconds
                .unwrap_or(0)
                .clamp(0, MAX_WAIT_SECS as i64) as u64,
        );
        if !wait.is_zero() {
            let deadline = Instant::now() + wait;
            let mut changed = job.changed.subscribe();
            loop {
                {
                    let state = job.lock();
                    let news = (0..2).any(|i| state.streams[i].kept > offsets[i]);
                    if news || state.ended.is_some() {
                        break;
                    }
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { break },
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = cancel.next() => break,
                }
            }
        }

        chunk(&job, offsets, max)
    }

    /// Runs a `bash_execute` call that may be handed off: the command starts as a job of the
    /// caller (timeout `timeout_secs`), and the call waits for it up to `after`. If it ends
    /// in time the answer is the foreground result (`max_output` bytes per stream, from the
    /// spools) and the job is deleted at once: it was never shown. Else the answer is its
    /// output so far from offset 0 (at most `max_output` per stream) and it goes on as a job.
    /// A cancelled call stops the command, as a foreground one would. `progress` is called
    /// every [`PROGRESS_INTERVAL`] with the bytes written so far.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_handoff(
        self: &Arc<Self>,
        auth: &Authorized<Rw>,
        origin: &CallOrigin,
        args: &BashExecute,
        bash: &BashConfig,
        slot: OwnedSemaphorePermit,
        cancel: &mut CancelSignal,
        limits: HandOffLimits,
        progress: impl Fn(Duration, u64, u64),
    ) -> Result<ToolOutput, ToolFailure> {
        let shutdown = cancel.detach();
        let job = self.start_job(
            auth,
            origin,
            args,
            bash,
            slot,
            shutdown,
            limits.timeout_secs,
        )?;
        let start = Instant::now();
        let deadline = start + limits.after;
        let mut changed = job.changed.subscribe();
        let mut tick = tokio::time::interval_at(start + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Shutdown reaches the job through its own watch; only the client's cancel is ours.
        let mut follow_cancel = true;
        loop {
            if job.has_ended() {
                return self.finish_in_time(&job, limits);
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { break },
                () = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    let [out, err] = job.lock().streams.map(|s| s.total);
                    progress(start.elapsed(), out, err);
                }
                stop = cancel.next(), if follow_cancel => match stop {
                    Stop::Cancel => {
                        let _ = job.control.send(Control::Stop(StopReason::Client)).await;
                        job.wait_ended(KILL_SETTLE).await;
                        self.remove(&job.id);
                        return Err(ToolFailure::new(
                            ErrorCode::Cancelled,
                            "Command cancelled: the client cancelled the request or went away",
                        ));
                    }
                    Stop::Terminate | Stop::Kill => follow_cancel = false,
                },
            }
        }
        if job.has_ended() {
            return self.finish_in_time(&job, limits);
        }
        log_event(
            "handed off",
            &job,
            &format!("after {} s", limits.after.as_secs()),
        );
        chunk(&job, [0, 0], limits.max_output).map(ToolOutput::JobOutput)
    }

    /// The foreground answer of a hand-off call whose job ended before the hand-off.
    fn finish_in_time(
        &self,
        job: &Arc<Job>,
        limits: HandOffLimits,
    ) -> Result<ToolOutput, ToolFailure> {
        let (ended, streams, limit_hit) = {
            let state = job.lock();
            (state.ended, state.streams, state.limit_hit.clone())
        };
        let Some(ended) = ended else {
            return Err(ToolFailure::new(
                ErrorCode::InternalError,
                "the job has not ended",
            ));
        };
        let read = |i: usize| {
            read_spool(&job.paths[i], 0, streams[i].kept, limits.max_output, true)
                .map_err(|e| internal("cannot read the job's spool", &e))
        };
        let (stdout, stderr) = (read(STDOUT), read(STDERR));
        self.remove(&job.id);
        // Killed here means: by the shutdown after its grace (nobody else knew the job).
        if ended.killed {
            return Err(ToolFailure::new(
                ErrorCode::ShuttingDown,
                "Command killed: the server is shutting down",
            ));
        }
        Ok(ToolOutput::Bash(BashOutput {
            stdout: CapturedStream {
                head: stdout?,
                total_bytes: streams[STDOUT].total,
            },
            stderr: CapturedStream {
                head: stderr?,
                total_bytes: streams[STDERR].total,
            },
            exit_code: ended.exit_code,
            timed_out: ended.timed_out,
            timeout_secs: limits.timeout_secs,
            limit_hit,
        }))
    }
}

/// A piece of `job`'s output: at most `max` bytes of each stream from `offsets`.
fn chunk(job: &Job, offsets: [u64; 2], max: u64) -> Result<JobOutputChunk, ToolFailure> {
    let (kept, ended, truncated) = {
        let state = job.lock();
        (
            [state.streams[STDOUT].kept, state.streams[STDERR].kept],
            state.ended,
            state.streams.iter().any(|s| s.total > s.kept),
        )
    };
    let mut chunks = [Vec::new(), Vec::new()];
    let mut next = offsets;
    for i in [STDOUT, STDERR] {
        let bytes = read_spool(&job.paths[i], offsets[i], kept[i], max, ended.is_some())
            .map_err(|e| internal("cannot read the job's spool", &e))?;
        next[i] = offsets[i] + bytes.len() as u64;
        chunks[i] = bytes;
    }
    let [stdout, stderr] = chunks;
    Ok(JobOutputChunk {
        job_id: job.id.clone(),
        stdout,
        stderr,
        stdout_offset: next[STDOUT],
        stderr_offset: next[STDERR],
        running: ended.is_none(),
        exit_code: ended.map(|e| e.exit_code),
        complete: ended.is_some() && next[STDOUT] >= kept[STDOUT] && next[STDERR] >= kept[STDERR],
        output_truncated: truncated,
    })
}

impl Jobs {
    /// `job_kill`: sends the signal (default TERM) to the job's process group. After TERM the
    /// job gets `grace` to end, then SIGKILL. Answers with the job's status once it has ended,
    /// or after a short wait for other signals.
    pub(crate) async fn kill(
        &self,
        auth: &Authorized<Rw>,
        args: &JobKillArgs,
        grace: Duration,
    ) -> Result<JobInfo, ToolFailure> {
        let job = self.find(auth, &args.job_id)?;
        let signal = match args.signal.as_deref() {
            None => GroupSignal::Term,
            Some(s) => GroupSignal::parse(s).ok_or_else(|| {
                ToolFailure::new(
                    ErrorCode::InvalidArguments,
                    format!("Unknown signal {s:?}: use TERM, KILL, INT or HUP"),
                )
            })?,
        };
        {
            let mut state = job.lock();
            if state.ended.is_some() {
                drop(state);
                return Ok(job.info());
            }
            state.kill_requested = true;
        }
        log_event("kill", &job, signal.name());
        // The supervisor signals the group itself: only it knows the group is still ours.
        let _ = job.control.send(Control::Signal(signal)).await;
        if signal == GroupSignal::Term && !job.wait_ended(grace).await {
            let _ = job.control.send(Control::Signal(GroupSignal::Kill)).await;
        }
        job.wait_ended(KILL_SETTLE).await;
        Ok(job.info())
    }
}

/// Reads `[offset, min(kept, offset + max))` of a spool. Unless the read reaches the end of a
/// finished job's output, a UTF-8 sequence cut at the end is left for the next read, so that
/// chunks decode and concatenate exactly.
fn read_spool(path: &Path, offset: u64, kept: u64, max: u64, ended: bool) -> io::Result<Vec<u8>> {
    if offset >= kept {
        return Ok(Vec::new());
    }
    let len = (kept - offset).min(max);
    let mut buf = vec![0u8; len as usize];
    File::open(path)?.read_exact_at(&mut buf, offset)?;
    let at_end = offset + len == kept;
    if !(at_end && ended) {
        let keep = complete_utf8_prefix(&buf);
        // At the current end the rest of the character is still to come. Cut by `max`, a
        // chunk smaller than one character is returned as it is, or reading would stall.
        if keep > 0 || at_end {
            buf.truncate(keep);
        }
    }
    Ok(buf)
}

/// The length of `buf` without a UTF-8 sequence that starts near its end but is cut off.
/// Invalid bytes are left alone (they decode to U+FFFD wherever they are cut).
fn complete_utf8_prefix(buf: &[u8]) -> usize {
    let start = buf.len().saturating_sub(3);
    for i in (start..buf.len()).rev() {
        let b = buf[i];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for its lead
        }
        let needed = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if buf.len() - i < needed { i } else { buf.len() };
    }
    buf.len()
}

fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %p.display(), "cannot delete a job spool: {e}"),
        }
    }
}

/// Deletes `<id>.out` / `<id>.err` files in the jobs directory (and nothing else).
fn remove_stale_spools(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_spool = name
            .strip_suffix(".out")
            .or_else(|| name.strip_suffix(".err"))
            .is_some_and(is_job_id);
        if is_spool && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "deleted job spools left by a previous run");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{self, Authorized, Rw};
    use mymcp_protocol::{Role, ToolName};
    use mymcp_tokens::{digest, TokenStore};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    /// A job table in a temporary state directory, with two rw tokens.
    struct Fixture {
        _dir: tempfile::TempDir,
        jobs: Arc<Jobs>,
        alice: Authorized<Rw>,
        bob: Authorized<Rw>,
        slots: Arc<Semaphore>,
        bash: BashConfig,
    }

    fn fixture_with(adjust: impl FnOnce(&mut JobConfig)) -> Fixture {
        fixture_audited(adjust, false)
    }

    /// With `audit`, the audit log is `<dir>/audit/audit.log`.
    fn fixture_audited(adjust: impl FnOnce(&mut JobConfig), audit: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::audit::AuditSettings {
            enabled: audit,
            log: mymcp_audit::log::LogConfig {
                dir: dir.path().join("audit"),
                key_file: dir.path().join("state/audit/signing.key"),
                max_bytes: 1 << 20,
                backup_count: 1,
                seal_records: 1000,
                seal_interval: Duration::from_secs(3600),
            },
            bash_head_bytes: 64,
            bash_tail_bytes: 64,
        };
        let audit = Arc::new(Audit::open(&settings, Arc::default()).unwrap().0);
        let store = TokenStore::open(&dir.path().join("tokens.json")).unwrap();
        let who = |name| {
            let (token, _) = store.add(name, Role::Rw).unwrap();
            auth::authenticate(&store, &digest(&token))
                .unwrap()
                .resolve_here(&crate::accounts::Accounts::new())
                .authorize::<Rw>(ToolName::BashExecute)
                .unwrap()
        };
        let (alice, bob) = (who("alice"), who("bob"));
        let mut cfg = JobConfig::new(&dir.path().join("state"));
        adjust(&mut cfg);
        Fixture {
            jobs: Arc::new(Jobs::open(cfg, audit)),
            _dir: dir,
            alice,
            bob,
            slots: Arc::new(Semaphore::new(64)),
            bash: BashConfig {
                kill_grace: Duration::from_millis(300),
                ..BashConfig::default()
            },
        }
    }

    fn fixture() -> Fixture {
        fixture_with(|_| {})
    }

    fn origin() -> CallOrigin {
        CallOrigin {
            peer: "192.0.2.7".into(),
            request_id: "req-job".into(),
        }
    }

    impl Fixture {
        fn start(&self, who: &Authorized<Rw>, command: &str) -> Result<JobInfo, ToolFailure> {
            let args = BashExecute {
                command: command.into(),
                timeout: None,
                working_dir: None,
                max_output_bytes: None,
                background: true,
                handoff_after: None,
            };
            let slot = self.slots.clone().try_acquire_owned().unwrap();
            self.jobs.start(
                who,
                &origin(),
                &args,
                &self.bash,
                slot,
                ShutdownWatch::never(),
            )
        }

        async fn output(
            &self,
            who: &Authorized<Rw>,
            id: &str,
            offsets: (u64, u64),
            max_bytes: Option<i64>,
            wait: i64,
        ) -> Result<JobOutputChunk, ToolFailure> {
            let args = JobOutputArgs {
                job_id: id.into(),
                stdout_offset: Some(offsets.0 as i64),
                stderr_offset: Some(offsets.1 as i64),
                max_bytes,
                wait_seconds: Some(wait),
            };
            self.jobs
                .output(who, &args, 1 << 20, &mut CancelSignal::never())
                .await
        }

        async fn kill(
            &self,
            who: &Authorized<Rw>,
            id: &str,
            signal: Option<&str>,
        ) -> Result<JobInfo, ToolFailure> {
            let args = JobKillArgs {
                job_id: id.into(),
                signal: signal.map(str::to_owned),
            };
            self.jobs.kill(who, &args, self.bash.kill_grace).await
        }

        /// Reads a job to its end in small chunks, as a client following it would.
        async fn follow(&self, id: &str, chunk: i64) -> (Vec<u8>, Vec<u8>, JobOutputChunk) {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut offsets = (0, 0);
            let polls = AtomicUsize::new(0);
            loop {
                let c = self
                    .output(&self.alice, id, offsets, Some(chunk), 5)
                    .await
                    .unwrap();
                // Each chunk decodes on its own: the client turns chunks into text one by one.
                if !c.complete {
                    assert!(std::str::from_utf8(&c.stdout).is_ok(), "{:?}", c.stdout);
                }
                out.extend_from_slice(&c.stdout);
                err.extend_from_slice(&c.stderr);
                assert_eq!(c.stdout_offset, out.len() as u64);
                assert_eq!(c.stderr_offset, err.len() as u64);
                offsets = (c.stdout_offset, c.stderr_offset);
                assert!(polls.fetch_add(1, Ordering::Relaxed) < 10_000);
                if c.complete {
                    return (out, err, c);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_job_runs_in_the_background_and_its_output_reassembles_exactly() {
        let f = fixture();
        // Multi-byte characters (2, 3 and 4 bytes), written in bursts, read back in 5-byte
        // chunks that would cut most of them.
        let command = "for i in 1 2 3 4 5; do printf 'ligne %s: é€🦀é€🦀é€🦀\\n' $i; echo warn $i >&2; sleep 0.1; done; exit 3";
        let started = f.start(&f.alice, command).unwrap();
        assert!(started.running);
        assert_eq!(started.exit_code, None);
        assert_eq!(started.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert!(is_job_id(&started.job_id));

        let (out, err, last) = f.follow(&started.job_id, 5).await;
        let expected: String = (1..=5)
            .map(|i| format!("ligne {i}: é€🦀é€🦀é€🦀\n"))
            .collect();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let expected_err: String = (1..=5).map(|i| format!("warn {i}\n")).collect();
        assert_eq!(String::from_utf8(err).unwrap(), expected_err);
        assert!(!last.running);
        assert_eq!(last.exit_code, Some(3));

        let status = f.jobs.status(&f.alice, &started.job_id).unwrap();
        assert!(!status.running && !status.killed && !status.timed_out);
        assert_eq!(status.exit_code, Some(3));
        assert_eq!(status.stdout_bytes, expected.len() as u64);
        assert!(status.finished_at.is_some());
        assert!(status.duration_ms >= 400, "{}", status.duration_ms);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_job_end_is_one_job_finished_record_saying_how_it_ended() {
        let f = fixture_audited(|_| {}, true);
        let exited = f.start(&f.alice, "echo out; exit 3").unwrap();
        let killed = f.start(&f.alice, "sleep 30").unwrap();
        f.kill(&f.alice, &killed.job_id, None).await.unwrap();
        f.follow(&exited.job_id, 1 << 16).await;
        let log = f._dir.path().join("audit/audit.log");
        let records = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        // Written by each job's supervisor just after the job is seen to end.
        for _ in 0..200 {
            if records().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(records().len(), 2, "{:?}", records());
        let all = records();
        let of = |id: &str| all.iter().find(|r| r["params"]["job_id"] == id).unwrap();
        let e = of(&exited.job_id);
        assert_eq!(e["tool"], "job_finished");
        assert_eq!(
            (e["token_name"].as_str(), e["role"].as_str()),
            (Some("alice"), Some("rw"))
        );
        assert_eq!(
            (e["ip"].as_str(), e["request_id"].as_str()),
            (Some("192.0.2.7"), Some("req-job"))
        );
        assert_eq!(e["params"]["command"], "echo out; exit 3");
        assert_eq!(
            (e["result"].as_str(), e["error_code"].as_str()),
            (Some("error"), Some("ExitCode:3"))
        );
        assert_eq!(e["output"]["ended_by"], "exit");
        assert_eq!(e["output"]["stdout_bytes"], 4);
        assert!(e.get("duration_ms").is_some() && e.get("type").is_none());
        let k = of(&killed.job_id);
        assert_eq!(
            (k["error_code"].as_str(), k["output"]["ended_by"].as_str()),
            (Some("Killed"), Some("job_kill"))
        );
        assert_eq!(k["output"]["killed"], true);
    }

    #[tokio::test]
    async fn another_token_cannot_see_or_touch_a_job() {
        let f = fixture();
        let job = f.start(&f.alice, "sleep 30").unwrap();
        let e = f.jobs.status(&f.bob, &job.job_id).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert_eq!(e.message, format!("Job not found: {}", job.job_id));
        assert_eq!(
            f.output(&f.bob, &job.job_id, (0, 0), None, 0)
                .await
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        assert_eq!(
            f.kill(&f.bob, &job.job_id, None).await.unwrap_err().code,
            ErrorCode::NotFound
        );
        assert!(
            f.jobs.status(&f.alice, &job.job_id).unwrap().running,
            "bob's kill did nothing"
        );
        // Unknown and malformed ids look the same.
        assert_eq!(
            f.jobs
                .status(&f.alice, "../../etc/passwd")
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        f.kill(&f.alice, &job.job_id, Some("KILL")).await.unwrap();
    }

    #[tokio::test]
    async fn job_kill_stops_the_whole_group_even_when_term_is_ignored() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let command = format!(
            "trap '' TERM; sleep 30 & echo $! > {}; wait",
            pidfile.display()
        );
        let job = f.start(&f.alice, &command).unwrap();
        let pidfile2 = pidfile.clone();
        let pid: i32 = loop {
            if let Ok(s) = std::fs::read_to_string(&pidfile2) {
                if let Ok(p) = s.trim().parse() {
                    break p;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let t = std::time::Instant::now();
        let killed = f.kill(&f.alice, &job.job_id, None).await.unwrap();
        assert!(!killed.running, "{killed:?}");
        assert!(killed.killed);
        assert_eq!(killed.exit_code, Some(-9));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // Dead (gone, or a zombie for its new parent to reap) within a moment: a process
        // closes its files, and so our pipe, a little before it is marked dead.
        let dead = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z") || s.contains(") X"))
        };
        let mut waited = 0;
        while !dead() && waited < 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
        assert!(dead(), "the job's background sleep survived");
        // Killing an ended job changes nothing.
        assert_eq!(f.kill(&f.alice, &job.job_id, None).await.unwrap(), killed);
        let e = f
            .kill(&f.alice, &job.job_id, Some("STOP"))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArguments);
    }

    #[tokio::test]
    async fn ended_jobs_and_their_spools_are_deleted_after_the_retention() {
        let f = fixture_with(|c| c.retention = Duration::from_millis(500));
        let job = f.start(&f.alice, "echo done").unwrap();
        let spool = f.jobs.cfg.dir.join(format!("{}.out", job.job_id));
        assert!(spool.exists());
        let c = f
            .output(&f.alice, &job.job_id, (0, 0), None, 5)
            .await
            .unwrap();
        assert_eq!(c.stdout, b"done\n");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            f.jobs.status(&f.alice, &job.job_id).unwrap_err().code,
            ErrorCode::NotFound
        );
        assert!(!spool.exists(), "spool left behind");
        let mode = std::fs::metadata(&f.jobs.cfg.dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[tokio::test]
    async fn running_jobs_per_token_are_capped() {
        let f = fixture_with(|c| c.max_running_per_token = 2);
        let a = f.start(&f.alice, "sleep 30").unwrap();
        let _b = f.start(&f.alice, "sleep 30").unwrap();
        let e = f.start(&f.alice, "sleep 30").unwrap_err();
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(
            f.start(&f.bob, "true").is_ok(),
            "other tokens are not affected"
        );
        f.kill(&f.alice, &a.job_id, Some("KILL")).await.unwrap();
        let c = f.start(&f.alice, "sleep 30").unwrap();
        f.kill(&f.alice, &c.job_id, Some("KILL")).await.unwrap();
        f.kill(&f.alice, &_b.job_id, Some("KILL")).await.unwrap();
    }

    #[tokio::test]
    async fn spooled_output_is_capped_per_job_and_the_rest_counted() {
        let f = fixture_with(|c| c.max_output_bytes = 1000);
        let job = f
            .start(
                &f.alice,
                "head -c 800 /dev/zero; head -c 5000 /dev/zero >&2",
            )
            .unwrap();
        let (out, err, last) = f.follow(&job.job_id, 4096).await;
        assert_eq!(out.len() + err.len(), 1000);
        assert_eq!(out.len(), 800);
        assert!(last.output_truncated);
        let status = f.jobs.status(&f.alice, &job.job_id).unwrap();
        assert_eq!((status.stdout_bytes, status.stderr_bytes), (800, 5000));
        assert!(status.output_truncated);
    }

    #[tokio::test]
    async fn a_failing_start_leaves_nothing_behind() {
        let f = fixture();
        let args = BashExecute {
            command: "true".into(),
            timeout: None,
            working_dir: Some("/nonexistent-dir".into()),
            max_output_bytes: None,
            background: true,
            handoff_after: None,
        };
        let slot = f.slots.clone().try_acquire_owned().unwrap();
        let e = f
            .jobs
            .start(
                &f.alice,
                &origin(),
                &args,
                &f.bash,
                slot,
                ShutdownWatch::never(),
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::FileNotFoundError);
        assert_eq!(std::fs::read_dir(&f.jobs.cfg.dir).unwrap().count(), 0);
        assert_eq!(f.jobs.running.taken(f.alice.token()), 0);
    }

    #[tokio::test]
    async fn without_a_usable_state_directory_jobs_say_why() {
        let f = fixture();
        let jobs = Jobs::disabled();
        let args = BashExecute {
            command: "true".into(),
            timeout: None,
            working_dir: None,
            max_output_bytes: None,
            background: true,
            handoff_after: None,
        };
        let slot = f.slots.clone().try_acquire_owned().unwrap();
        let e = Arc::new(jobs)
            .start(
                &f.alice,
                &origin(),
                &args,
                &f.bash,
                slot,
                ShutdownWatch::never(),
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InternalError);
        assert!(
            e.message.starts_with("Background jobs are unavailable"),
            "{e}"
        );
    }

    #[test]
    fn utf8_sequences_cut_at_the_end_are_held_back() {
        assert_eq!(complete_utf8_prefix(b"abc"), 3);
        assert_eq!(complete_utf8_prefix("aé".as_bytes()), 3);
        assert_eq!(complete_utf8_prefix(&"aé".as_bytes()[..2]), 1);
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(complete_utf8_prefix(&[b"x", &euro[..2]].concat()), 1);
        assert_eq!(complete_utf8_prefix(&[b"x", euro].concat()), 4);
        let emoji = "🦀".as_bytes(); // 4 bytes
        assert_eq!(complete_utf8_prefix(&[b"x", &emoji[..3]].concat()), 1);
        // Invalid bytes are not held back.
        assert_eq!(complete_utf8_prefix(b"x\xff"), 2);
        assert_eq!(complete_utf8_prefix(b""), 0);
    }

    #[test]
    fn job_ids_are_16_lowercase_hex_digits() {
        let id = new_job_id().unwrap();
        assert!(is_job_id(&id), "{id}");
        for bad in [
            "",
            "../../etc/passw",
            "ABCDEF0123456789",
            "0123456789abcdef0",
        ] {
            assert!(!is_job_id(bad), "{bad}");
        }
    }

    #[test]
    fn stale_spools_are_deleted_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("notes.txt");
        std::fs::write(&keep, "x").unwrap();
        let stale = dir.path().join("0123456789abcdef.out");
        std::fs::write(&stale, "x").unwrap();
        remove_stale_spools(dir.path());
        assert!(keep.exists());
        assert!(!stale.exists());
    }

    #[test]
    fn the_jobs_directory_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("state/jobs");
        prepare_dir(&jobs).unwrap();
        let mode = std::fs::metadata(&jobs).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&jobs, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dir(&jobs).unwrap();
        let mode = std::fs::metadata(&jobs).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "a loosened mode is tightened again");
    }

    #[test]
    fn reads_stop_before_a_cut_character_unless_the_job_ended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "aé".as_bytes()).unwrap();
        // The spool holds "a" and the first byte of "é" so far.
        assert_eq!(read_spool(&p, 0, 2, 100, false).unwrap(), b"a");
        assert_eq!(read_spool(&p, 0, 3, 2, false).unwrap(), b"a");
        assert_eq!(read_spool(&p, 0, 2, 100, true).unwrap(), b"a\xc3");
        assert_eq!(read_spool(&p, 1, 3, 100, false).unwrap(), "é".as_bytes());
        assert!(read_spool(&p, 5, 3, 100, false).unwrap().is_empty());
        // Only part of a character so far: nothing yet; a one-byte limit still makes progress.
        assert!(read_spool(&p, 1, 2, 100, false).unwrap().is_empty());
        assert_eq!(read_spool(&p, 1, 3, 1, false).unwrap(), b"\xc3");
    }
}
