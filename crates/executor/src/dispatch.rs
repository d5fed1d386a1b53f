//! The request set of `executor.sock`: authenticate, authorize, re-validate, run.
//!
//! Every call is decided here, from the executor's own token store: the frontend forwards the
//! caller's token digest and nothing it says about roles is trusted. Tool entry points take an
//! [`Authorized`] proof of the right level, so a tool cannot run without the check.

use crate::accounts::Accounts;
use crate::audit::{self, Actor, Audit, Outcome};
use crate::audit_feed;
use crate::auth::{self, Authorized, Caller, Ro, Rw};
use crate::config::FileTools;
use crate::files::{self, ReadConfig};
use crate::jobs::{HandOffLimits, Jobs};
use crate::limits::{CommandLimits, FileLimits, FileSlot};
use crate::metrics::{AuthSurface, Metrics};
use crate::overview::{self, OverviewConfig};
use crate::paths::{check_path_len, Access};
use crate::server::{CancelSignal, Events, Peer, Service};
use crate::spawn::{self, Activity, BashConfig};
use crate::terminals::Terminals;
use crate::trace::RequestTrace;
use crate::transfer::{TransferConfig, Transfers};
use crate::{edit, search};
use mymcp_protocol::{
    AdminOp, AdminOutcome, AuditRecords, BashExecute, CallOrigin, CallResult, EditFile, ErrorCode,
    FrontendRequest, FrontendResponse, Glob, Grep, HostOffer, MetricsOutcome, Progress, ReadFile,
    Role, SpanAttributes, SpanName, SpanStatus, TokenDigest, ToolCall, ToolFailure, ToolName,
    ToolOutput, TraceContext, TracedRequest, WriteFile,
};
use mymcp_tokens::TokenStore;
use serde_json::json;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest accepted command, in bytes: one `execve` argument (with its NUL) cannot be longer.
const MAX_COMMAND_BYTES: usize = 128 * 1024 - 1;
/// Foreground commands one token may run at once unless configured
/// (`MYMCP_BASH_MAX_CONCURRENT_PER_TOKEN`).
const DEFAULT_BASH_MAX_PER_TOKEN: usize =
    mymcp_settings::BASH_MAX_CONCURRENT_PER_TOKEN.default() as usize;
/// How often a running command reports progress (the first report comes after this long).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// The tool executor behind `executor.sock`.
#[derive(Debug)]
pub(crate) struct Executor {
    tokens: Arc<TokenStore>,
    /// Resolves the accounts tokens act as.
    accounts: Arc<Accounts>,
    bash: BashConfig,
    read: ReadConfig,
    files: Arc<FileTools>,
    limits: CommandLimits,
    /// File-tool calls and transfers on the blocking pool, in total and per token.
    file_limits: FileLimits,
    jobs: Arc<Jobs>,
    terminals: Arc<Terminals>,
    /// The OAuth authorization server (`MYMCP_OAUTH_ENABLED`), if on.
    oauth: Option<Arc<crate::oauth::server::Server>>,
    transfers: Arc<Transfers>,
    running_commands: AtomicU64,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
    overview: Arc<OverviewConfig>,
    /// `MYMCP_OTLP_EXECUTOR_METRICS`: the frontend may read the counters without a token.
    telemetry_metrics: bool,
    pub(crate) started: Instant,
}

impl Executor {
    pub(crate) fn new(
        tokens: Arc<TokenStore>,
        bash: BashConfig,
        read: ReadConfig,
        files: FileTools,
        bash_max_concurrent: usize,
    ) -> Self {
        Executor {
            tokens,
            accounts: Arc::new(Accounts::new()),
            bash,
            read,
            file_limits: FileLimits::new(files.max_concurrent, files.max_concurrent_per_token),
            files: Arc::new(files),
            limits: CommandLimits::new(bash_max_concurrent, DEFAULT_BASH_MAX_PER_TOKEN),
            jobs: Arc::new(Jobs::disabled()),
            terminals: Arc::new(Terminals::disabled()),
            oauth: None,
            transfers: Arc::new(Transfers::new(TransferConfig::default())),
            running_commands: AtomicU64::new(0),
            metrics: Arc::new(Metrics::default()),
            audit: Arc::new(Audit::disabled(Arc::new(Metrics::default()))),
            overview: Arc::new(OverviewConfig::default()),
            telemetry_metrics: false,
            started: Instant::now(),
        }
    }

    /// Uses these counters and this audit log (which should count into the same counters).
    pub(crate) fn with_observability(mut self, metrics: Arc<Metrics>, audit: Arc<Audit>) -> Self {
        Arc::get_mut(&mut self.transfers)
            .expect("transfers are not shared while the executor is built")
            .observe(metrics.clone(), audit.clone());
        self.metrics = metrics;
        self.audit = audit;
        self
    }

    pub(crate) fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// Sets both command limits: in total (as given to `new`) and per token.
    pub(crate) fn with_command_limits(mut self, total: usize, per_token: usize) -> Self {
        self.limits = CommandLimits::new(total, per_token);
        self
    }

    /// Enables background jobs.
    pub(crate) fn with_jobs(mut self, jobs: Arc<Jobs>) -> Self {
        self.jobs = jobs;
        self
    }

    /// Serves OAuth: its grants authenticate like the store's tokens from now on.
    pub(crate) fn with_oauth(mut self, server: crate::oauth::server::Server) -> Self {
        self.tokens.delegate(server.grants());
        self.oauth = Some(Arc::new(server));
        self
    }

    /// Serves OAuth as configured, when on (the executor's own randomness).
    pub(crate) fn with_oauth_from(self, oauth: Option<crate::oauth::OAuthConfig>) -> Self {
        match oauth {
            Some(config) => {
                let random = Box::new(|b: &mut [u8]| {
                    mymcp_sys::fill_random(b).expect("the kernel's random numbers")
                });
                self.with_oauth(crate::oauth::server::Server::new(config, random))
            }
            None => self,
        }
    }

    /// The OAuth authorization server, if on.
    pub(crate) fn oauth(&self) -> Option<&crate::oauth::server::Server> {
        self.oauth.as_deref()
    }

    /// Answers an OAuth request; each one that changes something (a registration, a request
    /// opened or denied, tokens issued, refreshed or revoked) is an audit record around it,
    /// and is not done when that record cannot be written. The consent page's polls are not
    /// recorded; the approval is (by `mymcpctl`).
    fn oauth_audited(
        &self,
        server: &crate::oauth::server::Server,
        request: mymcp_protocol::oauth::OAuthRequest,
    ) -> mymcp_protocol::oauth::OAuthOutcome {
        use mymcp_protocol::oauth::{OAuthError, OAuthErrorCode, OAuthOutcome, OAuthRequest};
        let now = std::time::Instant::now();
        let (tool, client, origin): (&'static str, String, Option<CallOrigin>) = match &request {
            OAuthRequest::Register { client, origin } => (
                "oauth_register",
                client.client_name.clone().unwrap_or_default(),
                Some(origin.clone()),
            ),
            OAuthRequest::Authorize { params, origin, .. } => (
                "oauth_authorize",
                params.client_id.clone(),
                Some(origin.clone()),
            ),
            OAuthRequest::Exchange { client, origin, .. } => (
                "oauth_token",
                client.client_id.clone(),
                Some(origin.clone()),
            ),
            OAuthRequest::Refresh { client, origin, .. } => (
                "oauth_refresh",
                client.client_id.clone(),
                Some(origin.clone()),
            ),
            OAuthRequest::Revoke { client, origin, .. } => (
                "oauth_revoke",
                client.client_id.clone(),
                Some(origin.clone()),
            ),
            // Answered by `oauth_login` (it awaits the PAM check).
            OAuthRequest::Login { origin, .. } => {
                ("oauth_login", String::new(), Some(origin.clone()))
            }
            OAuthRequest::Deny { .. } => ("oauth_deny", String::new(), None),
            OAuthRequest::Consent { .. } => return server.handle(request, now),
        };
        let actor = Actor {
            name: format!("oauth:{client}"),
            role: "oauth",
            ip: origin.as_ref().map(|o| o.peer.clone()).unwrap_or_default(),
            request_id: origin.map(|o| o.request_id).unwrap_or_default(),
            trace: None,
            account: None,
        };
        let op = self
            .audit
            .operation(tool, actor, serde_json::json!({"client_id": client}));
        let answered = self.audit.around(
            &op,
            || server.handle(request, now),
            |outcome, d| match outcome {
                OAuthOutcome::Error(e) => Outcome::error(e.code.as_str(), &e.description, Some(d)),
                _ => Outcome::ok(Some(d), None),
            },
        );
        answered.unwrap_or_else(|| {
            OAuthOutcome::Error(OAuthError {
                code: OAuthErrorCode::TemporarilyUnavailable,
                description: audit::REFUSED_UNAUDITED.into(),
                redirect: None,
            })
        })
    }

    /// The consent page's password login: one `oauth_login` record with the account, the
    /// client's address, the client and the result (never the password). Its start record
    /// comes before PAM runs; without it, PAM does not run.
    async fn oauth_login(
        &self,
        server: &crate::oauth::server::Server,
        request: mymcp_protocol::oauth::OAuthRequest,
    ) -> mymcp_protocol::oauth::OAuthOutcome {
        use crate::oauth::server::LoginResult;
        use mymcp_protocol::oauth::{OAuthError, OAuthErrorCode, OAuthOutcome, OAuthRequest};
        let OAuthRequest::Login {
            request,
            csrf,
            user,
            password: mymcp_protocol::oauth::Password(mut password),
            origin,
        } = request
        else {
            return self.oauth_audited(server, request);
        };
        let now = Instant::now();
        let actor = Actor {
            name: "oauth:".to_owned(),
            role: "oauth",
            ip: origin.peer.clone(),
            request_id: origin.request_id.clone(),
            trace: None,
            account: None,
        };
        let mut op =
            self.audit
                .operation("oauth_login", actor, json!({"user": audit::param(&user)}));
        if !self.audit.op_start(&op) {
            mymcp_sys::pam::wipe_string(&mut password);
            return OAuthOutcome::Error(OAuthError {
                code: OAuthErrorCode::TemporarilyUnavailable,
                description: audit::REFUSED_UNAUDITED.into(),
                redirect: None,
            });
        }
        let (outcome, report) = server
            .login(request, csrf, user.clone(), password, origin.peer, now)
            .await;
        let duration = Some(now.elapsed());
        if let Some(client) = &report.client_id {
            op.set_param("client_id", audit::param(client));
        }
        let recorded = match report.result {
            LoginResult::Approved { uid } => {
                op.set_account(&user, uid);
                Outcome::ok(duration, None)
            }
            LoginResult::Refused(why) => Outcome::error("access_denied", why, duration),
            LoginResult::Failed(why) => Outcome::error("server_error", why, duration),
            LoginResult::Limited(why) => Outcome::error("rate_limited", why, duration),
            LoginResult::Invalid(why) => Outcome::error("invalid_request", why, duration),
        };
        self.audit.op_outcome(&op, recorded);
        outcome
    }

    /// Enables terminals.
    pub(crate) fn with_terminals(mut self, terminals: Arc<Terminals>) -> Self {
        self.terminals = terminals;
        self
    }

    /// Sets the transfer settings (`MYMCP_TRANSFER_*`); the default is the reference's.
    pub(crate) fn with_transfers(mut self, config: TransferConfig) -> Self {
        let mut transfers = Transfers::new(config);
        transfers.observe(self.metrics.clone(), self.audit.clone());
        self.transfers = Arc::new(transfers);
        self
    }

    /// Where `server_overview` finds the recorder's document (`MYMCP_RECORDER_*`).
    pub(crate) fn with_overview(mut self, config: OverviewConfig) -> Self {
        self.overview = Arc::new(config);
        self
    }

    /// Lets the frontend read the counters for its OTLP export without a metrics token
    /// (`MYMCP_OTLP_EXECUTOR_METRICS`).
    pub(crate) fn with_telemetry_metrics(mut self, allowed: bool) -> Self {
        self.telemetry_metrics = allowed;
        self
    }

    pub(crate) fn jobs(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    pub(crate) fn tokens(&self) -> &Arc<TokenStore> {
        &self.tokens
    }

    /// How commands are confined.
    pub(crate) fn confinement(&self) -> &crate::cgroup::Confinement {
        &self.bash.confine
    }

    /// Why commands cannot get a view of their own here (`None`: they can).
    pub(crate) fn views_unavailable(&self) -> Option<&str> {
        self.bash.views_unavailable.as_deref()
    }

    /// Foreground commands running right now.
    pub(crate) fn running_commands(&self) -> u64 {
        self.running_commands.load(Ordering::Relaxed)
    }

    async fn run(
        &self,
        caller: &Caller,
        origin: &CallOrigin,
        call: ToolCall,
        cancel: CancelSignal,
        events: Events,
    ) -> Result<ToolOutput, ToolFailure> {
        match call {
            ToolCall::BashExecute(args) => {
                let auth = caller.authorize::<Rw>(ToolName::BashExecute)?;
                self.bash_execute(&auth, origin, args, cancel, events).await
            }
            ToolCall::ReadFile(args) => {
                let auth = caller.authorize::<Ro>(ToolName::ReadFile)?;
                self.read_file(auth, args, cancel).await
            }
            ToolCall::WriteFile(args) => {
                let auth = caller.authorize::<Rw>(ToolName::WriteFile)?;
                self.write_file(auth, args).await
            }
            ToolCall::EditFile(args) => {
                let auth = caller.authorize::<Rw>(ToolName::EditFile)?;
                self.edit_file(auth, args).await
            }
            ToolCall::Glob(args) => {
                let auth = caller.authorize::<Ro>(ToolName::Glob)?;
                self.glob(auth, args, cancel).await
            }
            ToolCall::Grep(args) => {
                let auth = caller.authorize::<Ro>(ToolName::Grep)?;
                self.grep(auth, args, cancel).await
            }
            ToolCall::JobStatus(args) => {
                let auth = caller.authorize::<Rw>(ToolName::JobStatus)?;
                self.jobs.status(&auth, &args.job_id).map(ToolOutput::Job)
            }
            ToolCall::JobOutput(args) => {
                let auth = caller.authorize::<Rw>(ToolName::JobOutput)?;
                let mut cancel = cancel;
                self.jobs
                    .output(&auth, &args, self.bash.hard_max_output, &mut cancel)
                    .await
                    .map(ToolOutput::JobOutput)
            }
            ToolCall::JobKill(args) => {
                let auth = caller.authorize::<Rw>(ToolName::JobKill)?;
                self.jobs
                    .kill(&auth, &args, self.bash.kill_grace)
                    .await
                    .map(ToolOutput::Job)
            }
            ToolCall::PrepareUpload(args) => {
                let auth = caller.authorize::<Rw>(ToolName::PrepareUpload)?;
                let slot = self.file_limits.call(auth.token())?;
                let (transfers, files) = (self.transfers.clone(), self.files.clone());
                let tokens = self.tokens.clone();
                file_work("prepare_upload", slot, move || {
                    transfers.prepare_upload(&auth, &args, &files.protected, &tokens)
                })
                .await
                .map(ToolOutput::TransferGrant)
            }
            ToolCall::PrepareDownload(args) => {
                let auth = caller.authorize::<Ro>(ToolName::PrepareDownload)?;
                let slot = self.file_limits.call(auth.token())?;
                let (transfers, files) = (self.transfers.clone(), self.files.clone());
                let tokens = self.tokens.clone();
                file_work("prepare_download", slot, move || {
                    transfers.prepare_download(&auth, &args, &files.protected, &tokens)
                })
                .await
                .map(ToolOutput::TransferGrant)
            }
            ToolCall::TerminalOpen(args) => {
                let auth = caller.authorize::<Rw>(ToolName::TerminalOpen)?;
                if let Some(c) = &args.command {
                    if c.len() > MAX_COMMAND_BYTES {
                        return Err(ToolFailure::new(
                            ErrorCode::InvalidArguments,
                            format!("command is {} bytes, max is {MAX_COMMAND_BYTES}", c.len()),
                        ));
                    }
                }
                check_path_len("working_dir", args.working_dir.as_deref())?;
                if cancel.shutting_down() {
                    return Err(ToolFailure::new(
                        ErrorCode::ShuttingDown,
                        "The server is shutting down and opens no new terminals",
                    ));
                }
                let shutdown = cancel.detach();
                self.terminals
                    .start(&auth, origin, &args, &self.bash, shutdown)
                    .map(ToolOutput::Terminal)
            }
            ToolCall::TerminalSend(args) => {
                let auth = caller.authorize::<Rw>(ToolName::TerminalSend)?;
                self.terminals
                    .send(&auth, &args)
                    .await
                    .map(ToolOutput::TerminalSent)
            }
            ToolCall::TerminalRead(args) => {
                let auth = caller.authorize::<Rw>(ToolName::TerminalRead)?;
                let mut cancel = cancel;
                self.terminals
                    .read(&auth, &args, &mut cancel)
                    .await
                    .map(ToolOutput::TerminalScreen)
            }
            ToolCall::TerminalResize(args) => {
                let auth = caller.authorize::<Rw>(ToolName::TerminalResize)?;
                self.terminals
                    .resize(&auth, &args)
                    .map(ToolOutput::Terminal)
            }
            ToolCall::TerminalList => {
                let auth = caller.authorize::<Rw>(ToolName::TerminalList)?;
                Ok(ToolOutput::TerminalList(self.terminals.list(&auth)))
            }
            ToolCall::TerminalClose(args) => {
                let auth = caller.authorize::<Rw>(ToolName::TerminalClose)?;
                self.terminals
                    .close(&auth, &args.terminal_id)
                    .await
                    .map(ToolOutput::Terminal)
            }
            ToolCall::ServerOverview => {
                let auth = caller.authorize::<Ro>(ToolName::ServerOverview)?;
                let slot = self.file_limits.call(auth.token())?;
                let config = self.overview.clone();
                file_work("server_overview", slot, move || {
                    overview::server_overview(&auth, &config, std::time::SystemTime::now())
                })
                .await
                .map(ToolOutput::Overview)
            }
        }
    }

    async fn bash_execute(
        &self,
        auth: &Authorized<Rw>,
        origin: &CallOrigin,
        args: BashExecute,
        mut cancel: CancelSignal,
        events: Events,
    ) -> Result<ToolOutput, ToolFailure> {
        if args.command.len() > MAX_COMMAND_BYTES {
            return Err(ToolFailure::new(
                ErrorCode::InvalidArguments,
                format!(
                    "command is {} bytes, max is {MAX_COMMAND_BYTES}",
                    args.command.len()
                ),
            ));
        }
        check_path_len("working_dir", args.working_dir.as_deref())?;
        if cancel.shutting_down() {
            return Err(ToolFailure::new(
                ErrorCode::ShuttingDown,
                "The server is shutting down and starts no new commands",
            )
            .with_suggestion("Try again once the server is back"));
        }
        if args.background {
            let slot = self.limits.total_slot()?;
            let shutdown = cancel.detach();
            return self
                .jobs
                .start(auth, origin, &args, &self.bash, slot, shutdown)
                .map(ToolOutput::Job);
        }
        if let Some(limits) = self.handoff(auth, &args) {
            let slot = self.limits.total_slot()?;
            return self
                .jobs
                .run_handoff(
                    auth,
                    origin,
                    &args,
                    &self.bash,
                    slot,
                    &mut cancel,
                    limits,
                    |elapsed, stdout_bytes, stderr_bytes| {
                        events.progress(Progress {
                            elapsed_ms: elapsed.as_millis() as u64,
                            stdout_bytes,
                            stderr_bytes,
                        });
                    },
                )
                .await;
        }
        let _slot = self.limits.foreground(auth.token())?;
        self.running_commands.fetch_add(1, Ordering::Relaxed);
        let activity = Activity::default();
        let out = {
            let mut run = pin!(spawn::bash_execute(
                auth,
                &args,
                &self.bash,
                &mut cancel,
                &activity
            ));
            let mut progress = pin!(report_progress(&activity, &events));
            tokio::select! {
                biased;
                out = &mut run => out,
                () = &mut progress => unreachable!("progress reports never end"),
            }
        };
        self.running_commands.fetch_sub(1, Ordering::Relaxed);
        out.map(ToolOutput::Bash)
    }

    /// Whether this foreground call may be handed off to a job, and how: `handoff_after`
    /// (else `MYMCP_BASH_HANDOFF_SEC`) is set and shorter than the timeout, and the token may
    /// start a job now. Otherwise it runs as a plain foreground call.
    fn handoff(&self, auth: &Authorized<Rw>, args: &BashExecute) -> Option<HandOffLimits> {
        let after = match args.handoff_after {
            Some(n) => n.clamp(0, i64::from(spawn::MAX_TIMEOUT_SECS)) as u32,
            None => self.bash.handoff_secs,
        };
        let timeout_secs = spawn::cap_timeout(spawn::clamp_timeout(args.timeout), auth.limits());
        if after == 0 || after >= timeout_secs || !self.jobs.has_room(auth.token()) {
            return None;
        }
        Some(HandOffLimits {
            timeout_secs,
            after: Duration::from_secs(u64::from(after)),
            max_output: spawn::clamp_max_output(args.max_output_bytes, &self.bash),
        })
    }

    async fn read_file(
        &self,
        auth: Authorized<Ro>,
        args: ReadFile,
        cancel: CancelSignal,
    ) -> Result<ToolOutput, ToolFailure> {
        check_path_len("file_path", Some(&args.file_path))?;
        // Answered here when everything it needs is in memory (it cannot wait, so it takes
        // no slot); else on the blocking pool.
        // A token with hidden paths takes the path below, where its view applies.
        let last = match auth.view().hide.is_empty() {
            true => self.files.protected.last(Access::Read),
            false => None,
        };
        if let Some(last) = last {
            if let Some(out) = files::read_file_now(&auth, &args, &self.read, &last) {
                return out.map(ToolOutput::ReadFile);
            }
        }
        let slot = self.file_limits.call(auth.token())?;
        let cfg = self.read.clone();
        let files = self.files.clone();
        file_work("read_file", slot, move || {
            let policy = files
                .protected
                .policy(Access::Read)
                .with_view(auth.view(), Access::Read);
            files::read_file_until(&auth, &args, &cfg, &policy, &|| cancel.shutting_down())
        })
        .await
        .map(ToolOutput::ReadFile)
    }

    async fn write_file(
        &self,
        auth: Authorized<Rw>,
        args: WriteFile,
    ) -> Result<ToolOutput, ToolFailure> {
        check_path_len("file_path", Some(&args.file_path))?;
        let slot = self.file_limits.call(auth.token())?;
        let files = self.files.clone();
        file_work("write_file", slot, move || {
            let policy = files
                .protected
                .policy(Access::Write)
                .with_view(auth.view(), Access::Write);
            edit::write_file(&auth, &args, &files.write, &policy)
        })
        .await
        .map(ToolOutput::WriteFile)
    }

    async fn edit_file(
        &self,
        auth: Authorized<Rw>,
        args: EditFile,
    ) -> Result<ToolOutput, ToolFailure> {
        check_path_len("file_path", Some(&args.file_path))?;
        let slot = self.file_limits.call(auth.token())?;
        let files = self.files.clone();
        file_work("edit_file", slot, move || {
            let policy = files
                .protected
                .policy(Access::Write)
                .with_view(auth.view(), Access::Write);
            edit::edit_file(&auth, &args, &files.write, &policy)
        })
        .await
        .map(ToolOutput::EditFile)
    }

    async fn glob(
        &self,
        auth: Authorized<Ro>,
        args: Glob,
        cancel: CancelSignal,
    ) -> Result<ToolOutput, ToolFailure> {
        check_path_len("path", args.path.as_deref())?;
        let slot = self.file_limits.call(auth.token())?;
        let files = self.files.clone();
        let (budget, _watch) = budget(&files.search, cancel);
        file_work("glob", slot, move || {
            search::glob(
                &auth,
                &args,
                &files.search,
                &files
                    .protected
                    .policy(Access::Read)
                    .with_view(auth.view(), Access::Read),
                &budget,
            )
        })
        .await
        .map(ToolOutput::Glob)
    }

    async fn grep(
        &self,
        auth: Authorized<Ro>,
        args: Grep,
        cancel: CancelSignal,
    ) -> Result<ToolOutput, ToolFailure> {
        check_path_len("path", args.path.as_deref())?;
        let slot = self.file_limits.call(auth.token())?;
        let files = self.files.clone();
        let (budget, _watch) = budget(&files.search, cancel);
        file_work("grep", slot, move || {
            search::grep(
                &auth,
                &args,
                &files.search,
                &files
                    .protected
                    .policy(Access::Read)
                    .with_view(auth.view(), Access::Read),
                &budget,
            )
        })
        .await
        .map(ToolOutput::Grep)
    }
}

/// Runs blocking file work on tokio's blocking pool, so it never stalls the runtime that
/// serves other requests: where it is, when the whole request already runs there
/// ([`Service::runs_blocking`]).
async fn blocking<T: Send + 'static>(
    tool: &str,
    f: impl FnOnce() -> Result<T, ToolFailure> + Send + 'static,
) -> Result<T, ToolFailure> {
    if crate::server::on_blocking_pool() {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ToolFailure::new(ErrorCode::InternalError, format!("{tool} failed: {e}")))?
}

/// [`blocking`] work holding a file slot: the slot moves onto the thread that does the work
/// and is given back only when the work really ends, even if the call's task is gone by then
/// (its client went away) — so work stuck in the kernel keeps counting against its token.
async fn file_work<T: Send + 'static>(
    tool: &str,
    slot: FileSlot,
    f: impl FnOnce() -> Result<T, ToolFailure> + Send + 'static,
) -> Result<T, ToolFailure> {
    blocking(tool, move || {
        let _slot = slot;
        f()
    })
    .await
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The time budget of a search and a flag raised when the client cancels; the returned guard
/// stops watching for the cancel when the call ends.
fn budget(cfg: &search::SearchConfig, cancel: CancelSignal) -> (search::Budget, AbortOnDrop) {
    let flag = Arc::new(AtomicBool::new(false));
    let watch = tokio::spawn({
        let flag = flag.clone();
        let mut cancel = cancel;
        async move {
            // Any stop (client cancel, shutdown) ends the search.
            cancel.next().await;
            flag.store(true, Ordering::Relaxed);
        }
    });
    (search::Budget::new(cfg.timeout, flag), AbortOnDrop(watch))
}

/// Sends a progress event every [`PROGRESS_INTERVAL`], forever (the caller stops polling).
async fn report_progress(activity: &Activity, events: &Events) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(start + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        events.progress(Progress {
            elapsed_ms: start.elapsed().as_millis() as u64,
            stdout_bytes: activity.stdout.load(Ordering::Relaxed),
            stderr_bytes: activity.stderr.load(Ordering::Relaxed),
        });
    }
}

impl Executor {
    /// What the host can serve now, for an `ro`/`rw` caller: whether there is an overview for
    /// `server_overview` (checked as a read would, off the runtime: it opens files).
    async fn offer(&self, token: &TokenDigest) -> FrontendResponse {
        if auth::authenticate(&self.tokens, token).is_none() {
            self.metrics.auth_failure(AuthSurface::Mcp);
            return FrontendResponse::Unauthenticated;
        }
        let config = self.overview.clone();
        let server_overview = tokio::task::spawn_blocking(move || overview::available(&config))
            .await
            .unwrap_or(false);
        FrontendResponse::Offer(HostOffer { server_overview })
    }

    /// The jobs of an `rw` caller (MCP `tasks/list`). A read of the executor's own table, like
    /// `Offer`: not audited.
    fn job_list(&self, token: &TokenDigest) -> FrontendResponse {
        let Some(caller) = auth::authenticate(&self.tokens, token) else {
            self.metrics.auth_failure(AuthSurface::Mcp);
            return FrontendResponse::Unauthenticated;
        };
        // Owned by the token: no account needs resolving to list them. An ro token has none.
        if caller.identity().role.allows(Role::Rw) {
            FrontendResponse::Jobs(self.jobs.list(token))
        } else {
            FrontendResponse::Jobs(Vec::new())
        }
    }

    fn identify(&self, token: &TokenDigest) -> FrontendResponse {
        match auth::authenticate(&self.tokens, token) {
            Some(caller) => FrontendResponse::Identity(caller.identity().clone()),
            None => {
                self.metrics.auth_failure(AuthSurface::Mcp);
                FrontendResponse::Unauthenticated
            }
        }
    }
}

impl Service for Executor {
    type Request = FrontendRequest;
    type Response = FrontendResponse;

    /// The file tools are file system calls from start to end; `read_file` is not listed: it
    /// is answered on the runtime when its file is in memory.
    fn runs_blocking(&self, request: &FrontendRequest) -> bool {
        let call = match request {
            FrontendRequest::Call { call, .. }
            | FrontendRequest::Traced {
                request: TracedRequest::Call { call, .. },
                ..
            } => call,
            _ => return false,
        };
        matches!(
            call,
            ToolCall::WriteFile(_) | ToolCall::EditFile(_) | ToolCall::Glob(_) | ToolCall::Grep(_)
        )
    }

    /// `Identify` is a token lookup: answered by the connection's reader, without a task.
    fn answer_now(
        &self,
        request: FrontendRequest,
        _peer: Peer,
    ) -> Result<FrontendResponse, FrontendRequest> {
        match request {
            FrontendRequest::Identify { token } => Ok(self.identify(&token)),
            other => Err(other),
        }
    }

    async fn handle(
        self: Arc<Self>,
        request: FrontendRequest,
        _peer: Peer,
        cancel: CancelSignal,
        events: Events,
    ) -> FrontendResponse {
        let (request, trace) = request.split_trace();
        match request {
            FrontendRequest::Identify { token } => self.identify(&token),
            FrontendRequest::OAuth(request) => FrontendResponse::OAuth(match &self.oauth {
                Some(server)
                    if matches!(request, mymcp_protocol::oauth::OAuthRequest::Login { .. }) =>
                {
                    self.oauth_login(server, request).await
                }
                Some(server) => self.oauth_audited(server, request),
                None => {
                    mymcp_protocol::oauth::OAuthOutcome::Error(mymcp_protocol::oauth::OAuthError {
                        code: mymcp_protocol::oauth::OAuthErrorCode::TemporarilyUnavailable,
                        description: "OAuth is off on this server (MYMCP_OAUTH_ENABLED)".into(),
                        redirect: None,
                    })
                }
            }),
            FrontendRequest::Call {
                token,
                origin,
                call,
            } => self.call(token, origin, trace, call, cancel, events).await,
            FrontendRequest::Admin { token, origin, op } => {
                FrontendResponse::Admin(self.admin(&token, &origin, op))
            }
            FrontendRequest::Metrics { token } => {
                FrontendResponse::Metrics(self.metrics_for(token.as_ref()))
            }
            FrontendRequest::Refused {
                token,
                origin,
                tool,
                failure,
            } => {
                let Some(caller) = auth::authenticate(&self.tokens, &token) else {
                    self.metrics.auth_failure(AuthSurface::Mcp);
                    return FrontendResponse::Unauthenticated;
                };
                let id = caller.identity();
                let trace = RequestTrace::start(trace.as_ref());
                let code = failure.code;
                let result = Err(failure);
                let (class, _, _) = audit::classify(&result);
                let known = ToolName::parse(&tool);
                if let Some(known) = known {
                    // Unknown names are counted by the frontend, as `unknown`.
                    self.metrics.call(known, id.role, class, None);
                }
                // Nothing runs: the account is not looked up for this (its uid only if known).
                let uid = match self.accounts.resolve_now(caller.user()) {
                    Some(Ok(a)) => Some(a.uid),
                    _ => None,
                };
                self.audit.refusal(
                    id,
                    (caller.user(), uid),
                    &origin,
                    &tool,
                    &result,
                    trace.ids(),
                );
                tracing::info!(tool = %audit::cap(&tool, 64), token = %id.name, role = %id.role, peer = %origin.peer, request_id = %origin.request_id, result = class.as_str(), "tool call refused by the frontend");
                let spans = trace.finish(
                    SpanName::Refused,
                    SpanStatus::Error,
                    SpanAttributes {
                        tool: known,
                        role: Some(id.role),
                        result: Some(class),
                        error: Some(code),
                        ..SpanAttributes::default()
                    },
                );
                FrontendResponse::Tool(result).traced(spans)
            }
            FrontendRequest::Redeem {
                grant,
                direction,
                announced_len,
                origin,
            } => {
                let trace = RequestTrace::start(trace.as_ref());
                let result = self
                    .transfers
                    .redeem(
                        &grant,
                        direction,
                        announced_len,
                        &origin,
                        &self.tokens,
                        &self.accounts,
                        &self.files.protected,
                        &self.file_limits,
                        cancel,
                        &events,
                        trace.ids(),
                    )
                    .await;
                let spans = trace.finish(
                    SpanName::Transfer,
                    if result.is_ok() {
                        SpanStatus::Ok
                    } else {
                        SpanStatus::Error
                    },
                    SpanAttributes {
                        direction: Some(direction),
                        bytes: result.as_ref().ok().map(|done| done.bytes),
                        ..SpanAttributes::default()
                    },
                );
                FrontendResponse::Transfer(result).traced(spans)
            }
            FrontendRequest::Probe {
                grant,
                direction,
                origin,
            } => FrontendResponse::TransferProbe(
                self.transfers
                    .probe(
                        &grant,
                        direction,
                        &origin,
                        &self.tokens,
                        &self.accounts,
                        &self.files.protected,
                        &self.file_limits,
                    )
                    .await,
            ),
            FrontendRequest::CommitUpload { grant, claim } => {
                FrontendResponse::Acknowledged(self.transfers.commit(&grant, claim))
            }
            FrontendRequest::Offer { token } => self.offer(&token).await,
            FrontendRequest::AuditRecords { from } => {
                FrontendResponse::AuditRecords(match self.audit.feed() {
                    None => AuditRecords::Off,
                    Some(feed) => {
                        let mut cancel = cancel;
                        let stop = async move {
                            cancel.next().await;
                        };
                        feed.read(from, audit_feed::WAIT, stop).await
                    }
                })
            }
            // Unwrapped above; a nested one cannot decode.
            FrontendRequest::Traced { .. } => FrontendResponse::Unauthenticated,
            FrontendRequest::Jobs { token } => self.job_list(&token),
            FrontendRequest::TelemetryMetrics => {
                FrontendResponse::Metrics(if self.telemetry_metrics {
                    MetricsOutcome::Snapshot(self.snapshot())
                } else {
                    MetricsOutcome::Disabled
                })
            }
        }
    }
}

impl Executor {
    /// One tool call: authenticate, audit, run, count.
    async fn call(
        &self,
        token: TokenDigest,
        origin: CallOrigin,
        trace: Option<TraceContext>,
        call: ToolCall,
        cancel: CancelSignal,
        events: Events,
    ) -> FrontendResponse {
        let Some(caller) = auth::authenticate(&self.tokens, &token) else {
            self.metrics.auth_failure(AuthSurface::Mcp);
            tracing::info!(peer = %origin.peer, request_id = %origin.request_id, tool = %call.name(), "call with an unknown token refused");
            return FrontendResponse::Unauthenticated;
        };
        let tool = call.name();
        let started = Instant::now();
        let mut trace = RequestTrace::start(trace.as_ref());
        // The account the call acts as, from the store's name for it: resolved before the
        // audit record, which names it.
        let caller = caller.resolve(&self.accounts).await;
        let id = caller.identity().clone();
        let prepared = self
            .audit
            .prepare(&id, (caller.user(), caller.uid()), &origin, &call)
            .traced(trace.ids());
        let allowed = id.role.allows(tool.required_role());
        let started_record = if allowed && audit::has_side_effects(tool) {
            let t = trace.mark();
            let written = self.audit.start(&prepared);
            if self.audit.enabled() {
                trace.step(SpanName::AuditStart, t, step_status(written.is_ok()));
            }
            written
        } else {
            Ok(())
        };
        let result = match started_record {
            // Fail closed: no record, no side effect.
            Err(refused) => Err(refused),
            Ok(()) => {
                let t = trace.mark();
                let result = self.run(&caller, &origin, call, cancel, events).await;
                trace.step(SpanName::Run, t, step_status(result.is_ok()));
                let t = trace.mark();
                let result = self.audit.finish(&prepared, result, started.elapsed());
                if self.audit.enabled() {
                    trace.step(SpanName::AuditOutcome, t, SpanStatus::Unset);
                }
                result
            }
        };
        let elapsed = started.elapsed();
        let (class, code, _) = audit::classify(&result);
        let duration = (class != mymcp_protocol::CallResult::Denied).then_some(elapsed);
        self.metrics.call(tool, id.role, class, duration);
        let ms = elapsed.as_millis() as u64;
        match &result {
            Ok(_) => {
                tracing::info!(tool = %tool, token = %id.name, role = %id.role, user = %caller.user(), peer = %origin.peer, request_id = %origin.request_id, ms, result = class.as_str(), code = code.as_deref().unwrap_or(""), "tool call")
            }
            Err(f) => {
                tracing::info!(tool = %tool, token = %id.name, role = %id.role, user = %caller.user(), peer = %origin.peer, request_id = %origin.request_id, ms, result = class.as_str(), code = %f.code, "tool call failed")
            }
        }
        let spans = trace.finish(
            SpanName::ExecuteTool,
            step_status(class == CallResult::Ok),
            SpanAttributes {
                tool: Some(tool),
                role: Some(id.role),
                result: Some(class),
                error: result.as_ref().err().map(|f| f.code),
                exit_code: match &result {
                    Ok(ToolOutput::Bash(b)) => Some(b.exit_code),
                    _ => None,
                },
                ..SpanAttributes::default()
            },
        );
        FrontendResponse::Tool(result).traced(spans)
    }

    /// `/admin/tokens`: only an admin token may manage, and only `ro`/`rw` tokens. Every
    /// request of an admin token but `Check` is audited: a listing with one record (withheld
    /// without it), a change between a start record (no record, no change) and an outcome
    /// record.
    fn admin(&self, token: &TokenDigest, origin: &CallOrigin, op: AdminOp) -> AdminOutcome {
        let admin = self
            .tokens
            .lookup(token)
            .filter(|id| id.role == Role::Admin);
        let Some(admin) = admin else {
            self.metrics.auth_failure(AuthSurface::Admin);
            return AdminOutcome::Forbidden;
        };
        let actor = Actor::token(&admin, origin);
        let failed = |e: &mymcp_tokens::TokenError| match e {
            mymcp_tokens::TokenError::InvalidName(_)
            | mymcp_tokens::TokenError::InvalidUser(_)
            | mymcp_tokens::TokenError::InvalidLimits(_)
            | mymcp_tokens::TokenError::LimitsOnNonClient
            | mymcp_tokens::TokenError::Ambiguous(_) => AdminOutcome::Invalid(e.to_string()),
            mymcp_tokens::TokenError::NotFound(_) => AdminOutcome::NotFound,
            e => AdminOutcome::Failed(e.to_string()),
        };
        let unaudited = || AdminOutcome::Failed(audit::REFUSED_UNAUDITED.to_owned());
        match op {
            AdminOp::Check => AdminOutcome::Allowed,
            AdminOp::List => {
                let list: Vec<_> = self
                    .tokens
                    .list()
                    .into_iter()
                    .filter(|t| t.role.is_client())
                    .collect();
                let op = self.audit.operation("token_list", actor, json!({}));
                let output = json!({"count": list.len()});
                if !self.audit.op_outcome(&op, Outcome::ok(None, Some(output))) {
                    return unaudited();
                }
                AdminOutcome::Tokens(list)
            }
            AdminOp::Create {
                name,
                role,
                user,
                limits,
                view,
            } => {
                let params = audit::token_add_params(&name, role, user.as_deref(), &limits, &view);
                let op = self.audit.operation("token_add", actor, params);
                // `Err(Ok(why))`: refused before the store was asked.
                let created = self.audit.around(
                    &op,
                    || {
                        if !role.is_client() {
                            return Err(Ok(format!(
                                "Invalid role: '{role}'. Must be 'ro' or 'rw'."
                            )));
                        }
                        let user = new_token_user(&self.tokens, user).map_err(Ok)?;
                        self.tokens
                            .add_limited(&name, role, Some(&user), limits, view)
                            .map_err(Err)
                    },
                    |r, d| match r {
                        Ok((_, info)) => audit::token_outcome(Ok(info), d),
                        Err(Ok(why)) => {
                            Outcome::error(ErrorCode::InvalidArguments.as_str(), why, Some(d))
                        }
                        Err(Err(e)) => audit::token_outcome(Err(e), d),
                    },
                );
                match created {
                    None => unaudited(),
                    Some(Ok((token, info))) => {
                        tracing::info!(name = %info.name, role = %info.role, user = %info.user, id = %info.id, by = %admin.name, "token created through the admin API");
                        AdminOutcome::Created { token, info }
                    }
                    Some(Err(Ok(why))) => AdminOutcome::Invalid(why),
                    Some(Err(Err(e))) => failed(&e),
                }
            }
            AdminOp::Revoke { selector } => {
                let params = json!({"selector": audit::selector_param(&selector)});
                let op = self.audit.operation("token_revoke", actor, params);
                let revoked = self.audit.around(
                    &op,
                    || {
                        // Admin and metrics tokens are managed with mymcpctl only.
                        match self.tokens.find(&selector) {
                            Some(t) if t.role.is_client() => self.tokens.revoke(&selector),
                            _ => Err(mymcp_tokens::TokenError::NotFound(String::new())),
                        }
                    },
                    |r, d| audit::token_outcome(r.as_ref(), d),
                );
                match revoked {
                    None => unaudited(),
                    Some(Ok(info)) => {
                        tracing::info!(name = %info.name, id = %info.id, by = %admin.name, "token revoked through the admin API");
                        AdminOutcome::Revoked(info)
                    }
                    Some(Err(e)) => failed(&e),
                }
            }
            AdminOp::OAuth(request) => {
                use mymcp_protocol::oauth::OAuthControl;
                let Some(server) = self.oauth() else {
                    return AdminOutcome::Invalid(
                        "OAuth is off on this server (MYMCP_OAUTH_ENABLED)".into(),
                    );
                };
                let now = std::time::Instant::now();
                let answered = match &request {
                    OAuthControl::Clients | OAuthControl::Grants => {
                        Some(server.control(request, now))
                    }
                    OAuthControl::Revoke { selector } => {
                        let params = json!({"selector": selector});
                        let op = self.audit.operation("oauth_revoke", actor, params);
                        self.audit.around(
                            &op,
                            || server.control(request, now),
                            |r, d| match r {
                                Ok(_) => Outcome::ok(Some(d), None),
                                Err(e) => Outcome::error("NotFound", e, Some(d)),
                            },
                        )
                    }
                    // A person approves at the host, with the code only their page shows.
                    OAuthControl::Pending
                    | OAuthControl::Approve { .. }
                    | OAuthControl::Deny { .. } => {
                        return AdminOutcome::Invalid(
                            "approvals are made on the host: mymcpctl oauth approve|deny".into(),
                        )
                    }
                };
                match answered {
                    None => unaudited(),
                    Some(Ok(outcome)) => AdminOutcome::OAuth(outcome),
                    Some(Err(_)) => AdminOutcome::NotFound,
                }
            }
        }
    }

    /// `/metrics`: 503 when no metrics token exists, 401 for any other token.
    fn metrics_for(&self, token: Option<&TokenDigest>) -> MetricsOutcome {
        if !self.tokens.has_role(Role::Metrics) {
            return MetricsOutcome::Disabled;
        }
        let ok = token
            .and_then(|t| self.tokens.lookup(t))
            .is_some_and(|id| id.role == Role::Metrics);
        if !ok {
            self.metrics.auth_failure(AuthSurface::Metrics);
            return MetricsOutcome::Unauthorized;
        }
        MetricsOutcome::Snapshot(self.snapshot())
    }

    /// The counters as `/metrics` and the OTLP export show them.
    fn snapshot(&self) -> mymcp_protocol::ExecutorMetrics {
        let mut snapshot = self.metrics.snapshot();
        snapshot.running_commands = self.running_commands();
        snapshot.running_jobs = self.jobs.running() as u64;
        snapshot.tokens = self.tokens.count_by_role();
        snapshot
    }
}

/// A step's span status: succeeded or not.
fn step_status(ok: bool) -> SpanStatus {
    if ok {
        SpanStatus::Ok
    } else {
        SpanStatus::Error
    }
}

/// The account of a token being created: `user`, else the store's default; refused (with the
/// reason) when no such account exists on this host, so a typo does not make a token that can
/// run nothing. Written into the store either way: the token keeps its account when the
/// default changes.
pub(crate) fn new_token_user(tokens: &TokenStore, user: Option<String>) -> Result<String, String> {
    let user = user.unwrap_or_else(|| tokens.default_user().to_owned());
    if !mymcp_tokens::valid_user(&user) {
        return Err(mymcp_tokens::TokenError::InvalidUser(user).to_string());
    }
    match mymcp_sys::user_by_name(&user) {
        Ok(Some(_)) => Ok(user),
        Ok(None) => Err(format!("no account named '{user}' on this host")),
        Err(e) => Err(format!("cannot look up the account '{user}': {e}")),
    }
}
