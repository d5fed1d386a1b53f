//! The audit log: every tool call, transfer redemption, job end and token change, with the
//! reference servers' fields (spec §9), every field capped, written through
//! [`mymcp_audit::log::AuditLog`] (hash chain, rotation, seals).
//!
//! Tool calls are recorded through [`Audit::prepare`], [`Audit::start`] and [`Audit::finish`].
//! Everything else that reads or changes the host is an [`Operation`] — a record of the same
//! shape whose `tool` names the action (`transfer_upload`, `job_finished`, `token_add`, …) and
//! whose `token_name`/`role`/`ip` name who did it ([`Actor`]) — written with
//! [`Audit::op_start`] and [`Audit::op_outcome`] under the same rules.
//!
//! **Fail closed before the side effect.** A tool that changes the host (`bash_execute`,
//! `write_file`, `edit_file`, `job_kill`) first gets a `"type":"start"` record; if that record
//! cannot be written the tool does not run and the client gets `InternalError`. When it ends,
//! its outcome record follows (if that one fails, the call's real result is still returned —
//! the start record shows it ran — and the failure is counted and logged). A tool that only
//! reads has no side effect but its answer: it gets one record after it ran, and if that
//! record cannot be written the answer is withheld (`InternalError`). Every failed write counts
//! in `mymcp_audit_write_failures_total`.

use crate::audit_feed::AuditFeed;
use crate::metrics::Metrics;
use mymcp_audit::log::{AuditLog, LogConfig};
use mymcp_protocol::{
    AuditState, CallOrigin, CallResult, ErrorCode, Identity, Role, SpanId, TokenLimits, TokenView,
    ToolCall, ToolFailure, ToolName, ToolOutput, TraceId,
};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest string kept from a parameter, in bytes.
const MAX_PARAM_BYTES: usize = 4096;
/// Longest error message or reason kept.
const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest other short field (token name, ip, request id).
const MAX_SHORT_BYTES: usize = 256;

/// Audit settings (`MYMCP_AUDIT_*`).
#[derive(Clone, Debug)]
pub(crate) struct AuditSettings {
    pub(crate) enabled: bool,
    pub(crate) log: LogConfig,
    /// `MYMCP_AUDIT_OUTPUT_BASH_HEAD_BYTES` / `_TAIL_BYTES`.
    pub(crate) bash_head_bytes: usize,
    pub(crate) bash_tail_bytes: usize,
}

/// The audit log as the dispatcher uses it.
#[derive(Debug)]
pub(crate) struct Audit {
    log: Option<Mutex<AuditLog>>,
    dir: PathBuf,
    head_bytes: usize,
    tail_bytes: usize,
    metrics: Arc<Metrics>,
    /// Records written, for the frontend's OTLP export (`MYMCP_OTLP_AUDIT_LOGS`).
    feed: Option<Arc<AuditFeed>>,
}

impl Audit {
    /// No audit log (`MYMCP_AUDIT_ENABLED=false`).
    pub(crate) fn disabled(metrics: Arc<Metrics>) -> Audit {
        Audit {
            log: None,
            dir: PathBuf::new(),
            head_bytes: 0,
            tail_bytes: 0,
            metrics,
            feed: None,
        }
    }

    /// Opens the log when enabled. Returns the install key when this created the key chain.
    pub(crate) fn open(
        settings: &AuditSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Audit, Option<String>)> {
        if !settings.enabled {
            return Ok((Audit::disabled(metrics), None));
        }
        let opened = AuditLog::open(settings.log.clone(), mymcp_sys::fill_random)?;
        if opened.log.tampered_at_start() {
            tracing::error!(dir = %settings.log.dir.display(), "the audit log is shorter than when the executor last stopped: it was cut or edited; a notice is in the log and mymcpctl audit verify reports it");
        }
        Ok((
            Audit {
                log: Some(Mutex::new(opened.log)),
                dir: settings.log.dir.clone(),
                head_bytes: settings.bash_head_bytes,
                tail_bytes: settings.bash_tail_bytes,
                metrics,
                feed: None,
            },
            opened.new_install_key,
        ))
    }

    pub(crate) fn enabled(&self) -> bool {
        self.log.is_some()
    }

    /// Also hands every record written to `feed` (when the log is enabled).
    pub(crate) fn with_feed(mut self, feed: Arc<AuditFeed>) -> Audit {
        if self.enabled() {
            self.feed = Some(feed);
        }
        self
    }

    /// The feed of written records, when the export is on.
    pub(crate) fn feed(&self) -> Option<&Arc<AuditFeed>> {
        self.feed.as_ref()
    }

    /// Writes one record; `false` (counted, logged) if it could not be written.
    fn write(&self, body: &str) -> bool {
        let Some(log) = &self.log else { return true };
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        // A record is one write to the page cache; a seal also fsyncs and stores a key, which
        // must not stall a runtime worker that serves other calls.
        let appended = if log.seals_on_next_append() {
            blocking_in_place(|| log.append(body))
        } else {
            log.append(body)
        };
        match appended {
            Ok(seq) => {
                // Only what the log holds is exported; under the log's lock, so in order.
                if let Some(feed) = &self.feed {
                    feed.push(seq, body);
                }
                true
            }
            Err(e) => {
                drop(log);
                self.metrics.audit_write_failure();
                tracing::error!(error = %e, dir = %self.dir.display(), "audit record could not be written");
                false
            }
        }
    }

    /// Seals when the interval has passed (called every second).
    pub(crate) fn tick(&self) {
        if let Some(log) = &self.log {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = log.seal_if_due() {
                tracing::error!(error = %e, "audit seal could not be written");
            }
        }
    }

    /// Seals what is unsealed (at shutdown).
    pub(crate) fn close(&self) {
        if let Some(log) = &self.log {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = log.seal_pending() {
                tracing::error!(error = %e, "audit seal could not be written at shutdown");
            }
        }
    }

    pub(crate) fn state(&self) -> AuditState {
        let Some(log) = &self.log else {
            return AuditState {
                write_failures: self.metrics.audit_write_failures(),
                ..AuditState::default()
            };
        };
        let log = log.lock().unwrap_or_else(|p| p.into_inner());
        let (head_seq, head_hash) = log.head();
        AuditState {
            enabled: true,
            dir: self.dir.display().to_string(),
            head_seq,
            head_hash,
            last_seal: log.last_seal().map(|s| (s.seq, s.epoch, s.ts.clone())),
            write_failures: self.metrics.audit_write_failures(),
        }
    }

    /// What is needed to audit `call`, taken before the call consumes its arguments. `who`
    /// is the account the call acts as: its name, and its uid when it resolved.
    pub(crate) fn prepare(
        &self,
        identity: &Identity,
        who: (&str, Option<u32>),
        origin: &CallOrigin,
        call: &ToolCall,
    ) -> Prepared {
        if !self.enabled() {
            return Prepared::default();
        }
        Prepared {
            enabled: true,
            tool: Some(call.name()),
            token_name: cap(&identity.name, MAX_SHORT_BYTES),
            role: identity.role.as_str(),
            user: cap(who.0, MAX_SHORT_BYTES),
            uid: who.1,
            ip: cap(&origin.peer, MAX_SHORT_BYTES),
            request_id: cap(&origin.request_id, MAX_SHORT_BYTES),
            params: params(call),
            summary: Summary::of(call),
            trace_id: None,
            span_id: None,
        }
    }

    /// Writes the start record of a tool with side effects. `Err` means: do not run it.
    pub(crate) fn start(&self, p: &Prepared) -> Result<(), ToolFailure> {
        if !p.enabled {
            return Ok(());
        }
        let body = serialize(&Record {
            ts: mymcp_audit::now_rfc3339(),
            kind: Some("start"),
            ..p.record()
        });
        if self.write(&body) {
            Ok(())
        } else {
            Err(audit_failure(p.tool))
        }
    }

    /// Writes the outcome record. For a tool without side effects, a failed write replaces
    /// the result with `InternalError`.
    pub(crate) fn finish(
        &self,
        p: &Prepared,
        result: Result<ToolOutput, ToolFailure>,
        duration: Duration,
    ) -> Result<ToolOutput, ToolFailure> {
        if !p.enabled {
            return result;
        }
        let (class, code, message) = classify(&result);
        let mut r = Record {
            ts: mymcp_audit::now_rfc3339(),
            result: Some(class.as_str()),
            ..p.record()
        };
        match class {
            CallResult::Denied => r.reason = message,
            CallResult::Error => {
                r.error_code = code;
                r.error_message = message;
                r.duration_ms = Some(duration.as_millis() as u64);
            }
            CallResult::Ok => {
                r.duration_ms = Some(duration.as_millis() as u64);
                r.output = result
                    .as_ref()
                    .ok()
                    .and_then(|o| self.output(p.tool, &p.summary, o));
            }
        }
        let written = self.write(&serialize(&r));
        let tool = p.tool.expect("prepared for a call");
        if !written && !has_side_effects(tool) && class != CallResult::Denied {
            return Err(audit_failure(p.tool));
        }
        result
    }

    /// An operation other than a tool call, by `actor`, to be recorded as `tool`.
    pub(crate) fn operation(&self, tool: &'static str, actor: Actor, params: Value) -> Operation {
        let (trace_id, span_id) = trace_strings(actor.trace);
        Operation {
            enabled: self.enabled(),
            tool,
            trace_id,
            span_id,
            actor: Actor {
                name: cap(&actor.name, MAX_SHORT_BYTES),
                ip: cap(&actor.ip, MAX_SHORT_BYTES),
                request_id: cap(&actor.request_id, MAX_SHORT_BYTES),
                role: actor.role,
                trace: actor.trace,
                account: actor
                    .account
                    .map(|(user, uid)| (cap(&user, MAX_SHORT_BYTES), uid)),
            },
            params,
        }
    }

    /// Writes the start record of an operation with side effects. `false` (counted, logged)
    /// means: do not act.
    #[must_use]
    pub(crate) fn op_start(&self, op: &Operation) -> bool {
        if !op.enabled {
            return true;
        }
        self.write(&serialize(&Record {
            ts: mymcp_audit::now_rfc3339(),
            kind: Some("start"),
            ..op.record()
        }))
    }

    /// Writes the outcome record of an operation; `false` (counted, logged) if it could not be
    /// written — the caller decides what that means for what it did.
    pub(crate) fn op_outcome(&self, op: &Operation, outcome: Outcome) -> bool {
        if !op.enabled {
            return true;
        }
        let mut r = Record {
            ts: mymcp_audit::now_rfc3339(),
            result: Some(outcome.result.as_str()),
            duration_ms: outcome.duration.map(|d| d.as_millis() as u64),
            output: outcome.output,
            ..op.record()
        };
        if let Some((code, message)) = outcome.error {
            r.error_code = Some(cap(&code, MAX_SHORT_BYTES));
            r.error_message = Some(cap(&message, MAX_MESSAGE_BYTES));
        }
        self.write(&serialize(&r))
    }

    /// Runs `act` between the start record of `op` and its outcome record, which `outcome`
    /// makes from what `act` returned and how long it took. `None`: the start record could not
    /// be written and `act` did not run. The outcome record is best effort (counted, logged):
    /// the start record shows that `act` ran.
    pub(crate) fn around<T>(
        &self,
        op: &Operation,
        act: impl FnOnce() -> T,
        outcome: impl FnOnce(&T, Duration) -> Outcome,
    ) -> Option<T> {
        if !self.op_start(op) {
            return None;
        }
        let started = std::time::Instant::now();
        let done = act();
        self.op_outcome(op, outcome(&done, started.elapsed()));
        Some(done)
    }

    /// Records a call the frontend refused before it reached a tool (unknown name, arguments
    /// that do not decode). Nothing ran, so a failed write is only counted.
    pub(crate) fn refusal(
        &self,
        identity: &Identity,
        who: (&str, Option<u32>),
        origin: &CallOrigin,
        tool: &str,
        result: &Result<ToolOutput, ToolFailure>,
        trace: Option<(TraceId, SpanId)>,
    ) {
        if !self.enabled() {
            return;
        }
        let (trace_id, span_id) = trace_strings(trace);
        let (class, code, message) = classify(result);
        let (token_name, ip, request_id) = (
            cap(&identity.name, MAX_SHORT_BYTES),
            cap(&origin.peer, MAX_SHORT_BYTES),
            cap(&origin.request_id, MAX_SHORT_BYTES),
        );
        let tool = cap(tool, MAX_SHORT_BYTES);
        let user = cap(who.0, MAX_SHORT_BYTES);
        let params = Value::Object(Map::new());
        let mut r = Record {
            ts: mymcp_audit::now_rfc3339(),
            kind: None,
            token_name: &token_name,
            role: identity.role.as_str(),
            account: Some(Who {
                user: &user,
                uid: who.1,
            }),
            ip: &ip,
            tool: &tool,
            params: &params,
            result: Some(class.as_str()),
            request_id: &request_id,
            trace_id: trace_id.as_deref(),
            span_id: span_id.as_deref(),
            reason: None,
            error_code: None,
            error_message: None,
            duration_ms: None,
            output: None,
        };
        if class == CallResult::Denied {
            r.reason = message;
        } else {
            r.error_code = code;
            r.error_message = message;
        }
        self.write(&serialize(&r));
    }

    fn output(&self, tool: Option<ToolName>, summary: &Summary, out: &ToolOutput) -> Option<Value> {
        match (out, summary) {
            (ToolOutput::Bash(b), _) => {
                let stdout = &b.stdout.head;
                let head = &stdout[..stdout.len().min(self.head_bytes)];
                let tail = &stdout[stdout.len().saturating_sub(self.tail_bytes)..];
                Some(json!({
                    "stdout_head": String::from_utf8_lossy(head),
                    "stdout_tail": String::from_utf8_lossy(tail),
                    "stdout_truncated_bytes": b.stdout.total_bytes.saturating_sub(stdout.len() as u64),
                    "stdout_sha256": mymcp_audit::hex(&Sha256::digest(stdout)),
                    "exit_code": b.exit_code,
                    "timed_out": b.timed_out,
                }))
            }
            // No `first_line` (the Go reference's): it would undo the redaction of `content`.
            (ToolOutput::WriteFile(_), Summary::Write { path, size, sha256 }) => {
                Some(json!({"path": path, "size_bytes": size, "sha256": sha256}))
            }
            (
                ToolOutput::EditFile(e),
                Summary::Edit {
                    path,
                    old_lines,
                    new_lines,
                },
            ) => Some(json!({
                "path": path,
                "lines_added": new_lines * e.replacements,
                "lines_removed": old_lines * e.replacements,
                "hunk_count": e.replacements,
            })),
            // Which job a start or job_kill touched, so that its `job_finished` record can be
            // found by `job_id`.
            (ToolOutput::Job(j), _) => Some(json!({
                "job_id": j.job_id,
                "running": j.running,
                "exit_code": j.exit_code,
                "killed": j.killed,
            })),
            // A `bash_execute` handed off to a job: which job goes on.
            (ToolOutput::JobOutput(c), _) if tool == Some(ToolName::BashExecute) => Some(json!({
                "job_id": c.job_id,
                "handed_off": true,
                "running": c.running,
                "stdout_offset": c.stdout_offset,
                "stderr_offset": c.stderr_offset,
            })),
            // Which terminal, and its recording (size and SHA-256 once it has ended).
            (ToolOutput::Terminal(t), _) => Some(json!({
                "terminal_id": t.terminal_id,
                "running": t.running,
                "exit_code": t.exit_code,
                "recording": t.recording,
                "recording_bytes": t.recording_bytes,
                "recording_sha256": t.recording_sha256,
            })),
            // The ticket prefix its redemption record carries in `params.ticket`.
            (ToolOutput::TransferGrant(g), _) => Some(json!({
                "ticket": g.grant.short(),
                "bytes": g.bytes,
                "expires_at": g.expires_at,
            })),
            _ => None,
        }
    }
}

/// Runs `f`, telling a multi-threaded tokio runtime first that this thread will block.
fn blocking_in_place<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Tools whose call changes the host: audited before they run.
pub(crate) fn has_side_effects(tool: ToolName) -> bool {
    matches!(
        tool,
        ToolName::BashExecute
            | ToolName::WriteFile
            | ToolName::EditFile
            | ToolName::JobKill
            | ToolName::TerminalOpen
            | ToolName::TerminalSend
            | ToolName::TerminalResize
            | ToolName::TerminalClose
    )
}

fn audit_failure(tool: Option<ToolName>) -> ToolFailure {
    let name = tool.map(ToolName::as_str).unwrap_or("?");
    ToolFailure::new(
        ErrorCode::InternalError,
        format!("Tool '{name}' failed with an unexpected error: the audit log cannot be written, so the call was refused"),
    )
}

/// How a call ended, with the reference's `error_code`/`error_message` (or `reason`).
pub(crate) fn classify(
    result: &Result<ToolOutput, ToolFailure>,
) -> (CallResult, Option<String>, Option<String>) {
    match result {
        Err(f)
            if matches!(
                f.code,
                ErrorCode::PermissionDenied | ErrorCode::InsufficientScope | ErrorCode::UnknownTool
            ) =>
        {
            (
                CallResult::Denied,
                None,
                Some(cap(&f.message, MAX_MESSAGE_BYTES)),
            )
        }
        Err(f) => (
            CallResult::Error,
            Some(f.code.as_str().to_owned()),
            Some(cap(&f.message, MAX_MESSAGE_BYTES)),
        ),
        Ok(ToolOutput::Bash(b)) if b.timed_out => (
            CallResult::Error,
            Some("TimeoutError".to_owned()),
            Some(cap_chars(&String::from_utf8_lossy(&b.stderr.head), 200)),
        ),
        Ok(ToolOutput::Bash(b)) if b.exit_code != 0 => {
            let stderr = String::from_utf8_lossy(&b.stderr.head);
            let message = if stderr.trim().is_empty() {
                "Non-zero exit code".to_owned()
            } else {
                cap_chars(&stderr, 200)
            };
            (
                CallResult::Error,
                Some(format!("ExitCode:{}", b.exit_code)),
                Some(message),
            )
        }
        Ok(_) => (CallResult::Ok, None, None),
    }
}

/// Inputs of the output summary, taken from the arguments before the call.
#[derive(Clone, Debug, Default)]
enum Summary {
    #[default]
    None,
    Write {
        path: String,
        size: u64,
        sha256: String,
    },
    Edit {
        path: String,
        old_lines: u64,
        new_lines: u64,
    },
}

impl Summary {
    fn of(call: &ToolCall) -> Summary {
        match call {
            ToolCall::WriteFile(w) => {
                // Hashing megabytes takes milliseconds: not on a runtime worker as is.
                let hash = || mymcp_audit::hex(&Sha256::digest(w.content.as_bytes()));
                let sha256 = if w.content.len() > 1 << 20 {
                    blocking_in_place(hash)
                } else {
                    hash()
                };
                Summary::Write {
                    path: cap(&w.file_path, MAX_PARAM_BYTES),
                    size: w.content.len() as u64,
                    sha256,
                }
            }
            ToolCall::EditFile(e) => Summary::Edit {
                path: cap(&e.file_path, MAX_PARAM_BYTES),
                old_lines: memchr::memchr_iter(b'\n', e.old_string.as_bytes()).count() as u64,
                new_lines: memchr::memchr_iter(b'\n', e.new_string.as_bytes()).count() as u64,
            },
            _ => Summary::None,
        }
    }
}

/// A call's audit context, taken before it runs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Prepared {
    enabled: bool,
    tool: Option<ToolName>,
    token_name: String,
    role: &'static str,
    user: String,
    uid: Option<u32>,
    ip: String,
    request_id: String,
    params: Value,
    summary: Summary,
    /// OpenTelemetry ids of the call (its trace, the executor's span), when tracing is on.
    trace_id: Option<String>,
    span_id: Option<String>,
}

/// The ids as the records write them: 32 and 16 lower-case hex digits.
fn trace_strings(trace: Option<(TraceId, SpanId)>) -> (Option<String>, Option<String>) {
    match trace {
        Some((t, s)) => (Some(t.to_string()), Some(s.to_string())),
        None => (None, None),
    }
}

impl Prepared {
    /// Adds the call's trace id and the executor's span id (when tracing is on).
    pub(crate) fn traced(mut self, trace: Option<(TraceId, SpanId)>) -> Prepared {
        if self.enabled {
            (self.trace_id, self.span_id) = trace_strings(trace);
        }
        self
    }

    fn record(&self) -> Record<'_> {
        Record {
            ts: String::new(),
            kind: None,
            token_name: &self.token_name,
            role: self.role,
            account: Some(Who {
                user: &self.user,
                uid: self.uid,
            }),
            ip: &self.ip,
            tool: self.tool.map(ToolName::as_str).unwrap_or(""),
            params: &self.params,
            result: None,
            request_id: &self.request_id,
            trace_id: self.trace_id.as_deref(),
            span_id: self.span_id.as_deref(),
            reason: None,
            error_code: None,
            error_message: None,
            duration_ms: None,
            output: None,
        }
    }
}

/// Who did an [`Operation`]: a token (`token_name`, `role`, `ip`, `request_id` of the HTTP
/// request), `mymcpctl` on the control socket, or the executor itself.
#[derive(Clone, Debug)]
pub(crate) struct Actor {
    pub(crate) name: String,
    /// A token role, or [`CONTROL_ROLE`].
    pub(crate) role: &'static str,
    pub(crate) ip: String,
    pub(crate) request_id: String,
    /// The OpenTelemetry trace and the executor's span of the request, when it carried a
    /// trace context.
    pub(crate) trace: Option<(TraceId, SpanId)>,
    /// The account a token acts as, and its uid ([`Actor::with_account`]); `None` for actions
    /// of no account.
    pub(crate) account: Option<(String, u32)>,
}

/// `role` of actions taken by root on the host (`mymcpctl`, the executor at start-up).
pub(crate) const CONTROL_ROLE: &str = "control";
/// `ip` of actions that came through no network (the control socket, start-up).
pub(crate) const LOCAL_IP: &str = "local";

impl Actor {
    /// The holder of a token, from the address and request id the frontend saw.
    pub(crate) fn token(identity: &Identity, origin: &CallOrigin) -> Actor {
        Actor {
            name: identity.name.clone(),
            role: identity.role.as_str(),
            ip: origin.peer.clone(),
            request_id: origin.request_id.clone(),
            trace: None,
            account: None,
        }
    }

    /// This actor acting as the account `user` (uid `uid`).
    pub(crate) fn with_account(mut self, user: &str, uid: u32) -> Actor {
        self.account = Some((user.to_owned(), uid));
        self
    }

    /// Root through `mymcpctl` (`control.sock`, checked to be uid 0 on accept).
    pub(crate) fn control() -> Actor {
        Actor {
            name: "mymcpctl".to_owned(),
            role: CONTROL_ROLE,
            ip: LOCAL_IP.to_owned(),
            request_id: String::new(),
            trace: None,
            account: None,
        }
    }

    /// The executor acting on its own (start-up).
    pub(crate) fn executor() -> Actor {
        Actor {
            name: "mymcp-executor".to_owned(),
            role: CONTROL_ROLE,
            ip: LOCAL_IP.to_owned(),
            request_id: String::new(),
            trace: None,
            account: None,
        }
    }
}

/// An audited action other than a tool call: a start record before it acts (when it has side
/// effects), an outcome record after.
#[derive(Clone, Debug)]
pub(crate) struct Operation {
    enabled: bool,
    tool: &'static str,
    actor: Actor,
    params: Value,
    /// The actor's trace ids as the records write them.
    trace_id: Option<String>,
    span_id: Option<String>,
}

impl Operation {
    pub(crate) fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Done in a traced request: its records name the trace and the executor's span.
    pub(crate) fn set_trace(&mut self, trace: Option<(TraceId, SpanId)>) {
        if self.enabled {
            (self.trace_id, self.span_id) = trace_strings(trace);
        }
        self.actor.trace = trace;
    }

    /// A string parameter, `""` if there is none.
    pub(crate) fn param_str(&self, key: &str) -> &str {
        self.params.get(key).and_then(Value::as_str).unwrap_or("")
    }

    /// Adds or replaces a parameter (for the records still to be written).
    pub(crate) fn set_param(&mut self, key: &str, value: Value) {
        if let Value::Object(m) = &mut self.params {
            m.insert(key.to_owned(), value);
        }
    }

    /// Records this operation as done by a token acting as the account `user` (uid `uid`).
    pub(crate) fn set_account(&mut self, user: &str, uid: u32) {
        self.actor.account = Some((cap(user, MAX_SHORT_BYTES), uid));
    }

    fn record(&self) -> Record<'_> {
        Record {
            ts: String::new(),
            kind: None,
            token_name: &self.actor.name,
            role: self.actor.role,
            account: self.actor.account.as_ref().map(|(user, uid)| Who {
                user,
                uid: Some(*uid),
            }),
            ip: &self.actor.ip,
            tool: self.tool,
            params: &self.params,
            result: None,
            request_id: &self.actor.request_id,
            trace_id: self.trace_id.as_deref(),
            span_id: self.span_id.as_deref(),
            reason: None,
            error_code: None,
            error_message: None,
            duration_ms: None,
            output: None,
        }
    }
}

/// How an [`Operation`] ended.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    result: CallResult,
    /// `error_code`, `error_message`.
    error: Option<(String, String)>,
    duration: Option<Duration>,
    output: Option<Value>,
}

impl Outcome {
    pub(crate) fn ok(duration: Option<Duration>, output: Option<Value>) -> Outcome {
        Outcome {
            result: CallResult::Ok,
            error: None,
            duration,
            output,
        }
    }

    pub(crate) fn error(
        code: impl Into<String>,
        message: impl Into<String>,
        duration: Option<Duration>,
    ) -> Outcome {
        Outcome {
            result: CallResult::Error,
            error: Some((code.into(), message.into())),
            duration,
            output: None,
        }
    }

    /// Adds an `output` summary.
    pub(crate) fn with_output(mut self, output: Value) -> Outcome {
        self.output = Some(output);
        self
    }
}

/// What a client is told when an operation was not done because its start record could not be
/// written.
pub(crate) const REFUSED_UNAUDITED: &str =
    "The audit log cannot be written, so nothing was done; see the executor's log";

/// The outcome of a token store change: `output` with the token's listing (never its value),
/// or the error with a message that repeats no selector (it may be a token value).
pub(crate) fn token_outcome(
    result: Result<&mymcp_protocol::TokenInfo, &mymcp_tokens::TokenError>,
    duration: Duration,
) -> Outcome {
    use mymcp_tokens::TokenError as E;
    match result {
        Ok(info) => {
            let mut output = json!({"id": info.id, "name": cap(&info.name, MAX_SHORT_BYTES), "role": info.role.as_str()});
            // The account a client token acts as (admin and metrics tokens have none).
            if !info.user.is_empty() {
                output["user"] = Value::String(cap(&info.user, MAX_SHORT_BYTES));
            }
            if !info.limits.is_default() {
                output["limits"] = Value::String(info.limits.describe());
            }
            if !info.view.is_default() {
                output["view"] = Value::String(cap(&info.view.describe(), MAX_SHORT_BYTES));
            }
            Outcome::ok(Some(duration), Some(output))
        }
        Err(e) => {
            let (code, message) = match e {
                E::NotFound(_) => (ErrorCode::NotFound, "no token matches".to_owned()),
                E::Ambiguous(_) => (
                    ErrorCode::InvalidArguments,
                    "the id prefix matches more than one token".to_owned(),
                ),
                E::InvalidName(_)
                | E::InvalidUser(_)
                | E::InvalidLimits(_)
                | E::LimitsOnNonClient
                | E::Io { .. }
                | E::Corrupt { .. } => (
                    match e {
                        E::InvalidName(_)
                        | E::InvalidUser(_)
                        | E::InvalidLimits(_)
                        | E::LimitsOnNonClient => ErrorCode::InvalidArguments,
                        _ => ErrorCode::InternalError,
                    },
                    e.to_string(),
                ),
            };
            Outcome::error(code.as_str(), message, Some(duration))
        }
    }
}

/// A revoke's selector as the audit shows it: an id prefix as given; a token value never —
/// only the id it names.
pub(crate) fn selector_param(selector: &str) -> Value {
    if selector.starts_with(mymcp_tokens::TOKEN_PREFIX) {
        let d = mymcp_tokens::digest(selector);
        return Value::String(format!("<token value, id {}>", mymcp_audit::hex(&d.0[..6])));
    }
    let id_prefix =
        (6..=12).contains(&selector.len()) && selector.bytes().all(|b| b.is_ascii_hexdigit());
    if id_prefix {
        Value::String(selector.to_owned())
    } else {
        Value::String(format!("<{} chars>", selector.chars().count()))
    }
}

/// A string parameter, capped like a tool call's.
pub(crate) fn param(s: &str) -> Value {
    Value::String(cap(s, MAX_PARAM_BYTES))
}

/// The `params` of a `token_add` record, whether the token comes from `mymcpctl` or the admin
/// API: what the new token is, never its value.
pub(crate) fn token_add_params(
    name: &str,
    role: Role,
    user: Option<&str>,
    limits: &TokenLimits,
    view: &TokenView,
) -> Value {
    let mut params = json!({"name": param(name), "role": role.as_str()});
    if let Some(u) = user {
        params["user"] = param(u);
    }
    if !limits.is_default() {
        params["limits"] = json!(limits.describe());
    }
    if !view.is_default() {
        params["view"] = param(&view.describe());
    }
    params
}

/// One line, fields in the reference's order (`seq` and `prev` are appended by the log).
#[derive(Serialize)]
struct Record<'a> {
    ts: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    token_name: &'a str,
    role: &'a str,
    ip: &'a str,
    tool: &'a str,
    params: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'static str>,
    /// Absent for actions no HTTP request asked for (`mymcpctl`, the executor itself).
    #[serde(skip_serializing_if = "str::is_empty")]
    request_id: &'a str,
    /// The account the call acts as (`user`), and its uid (`null` when it did not resolve);
    /// after the reference's fields, like every field of ours. Absent for actions of no
    /// account (`mymcpctl`, admin tokens, the executor itself).
    #[serde(flatten)]
    account: Option<Who<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Value>,
}

/// The account of a record: its name and uid.
#[derive(Serialize)]
struct Who<'a> {
    user: &'a str,
    uid: Option<u32>,
}

fn serialize(r: &Record<'_>) -> String {
    serde_json::to_string(r).expect("audit records serialize")
}

/// The call's arguments as the client gave them: `content`, `old_string` and `new_string`
/// reduced to `"<N chars>"`, every other string capped.
pub(crate) fn params(call: &ToolCall) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: &str| {
        m.insert(k.to_owned(), Value::String(cap(v, MAX_PARAM_BYTES)));
    };
    let chars = |v: &str| Value::String(format!("<{} chars>", v.chars().count()));
    match call {
        ToolCall::BashExecute(a) => {
            s("command", &a.command);
            if let Some(d) = &a.working_dir {
                s("working_dir", d);
            }
        }
        ToolCall::ReadFile(a) => s("file_path", &a.file_path),
        ToolCall::WriteFile(a) => s("file_path", &a.file_path),
        ToolCall::EditFile(a) => s("file_path", &a.file_path),
        ToolCall::Glob(a) => {
            s("pattern", &a.pattern);
            if let Some(p) = &a.path {
                s("path", p);
            }
        }
        ToolCall::Grep(a) => {
            s("pattern", &a.pattern);
            if let Some(p) = &a.path {
                s("path", p);
            }
            if let Some(g) = &a.glob {
                s("glob", g);
            }
        }
        ToolCall::JobStatus(a) => s("job_id", &a.job_id),
        ToolCall::JobOutput(a) => s("job_id", &a.job_id),
        ToolCall::JobKill(a) => {
            s("job_id", &a.job_id);
            if let Some(sig) = &a.signal {
                s("signal", sig);
            }
        }
        ToolCall::PrepareUpload(a) => {
            s("dest_path", &a.dest_path);
            if let Some(h) = &a.sha256 {
                s("sha256", h);
            }
        }
        ToolCall::PrepareDownload(a) => s("src_path", &a.src_path),
        ToolCall::TerminalOpen(a) => {
            if let Some(c) = &a.command {
                s("command", c);
            }
            if let Some(d) = &a.working_dir {
                s("working_dir", d);
            }
        }
        ToolCall::TerminalSend(a) => s("terminal_id", &a.terminal_id),
        ToolCall::TerminalRead(a) => {
            s("terminal_id", &a.terminal_id);
            if let Some(w) = &a.wait_for {
                s("wait_for", w);
            }
        }
        ToolCall::TerminalResize(a) => s("terminal_id", &a.terminal_id),
        ToolCall::TerminalClose(a) => s("terminal_id", &a.terminal_id),
        // No parameters.
        ToolCall::ServerOverview | ToolCall::TerminalList => {}
    }
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    match call {
        ToolCall::BashExecute(a) => {
            if let Some(t) = a.timeout {
                put("timeout", t.into());
            }
            if let Some(x) = a.max_output_bytes {
                put("max_output_bytes", x.into());
            }
            if a.background {
                put("background", true.into());
            }
        }
        ToolCall::ReadFile(a) => {
            if let Some(o) = a.offset {
                put("offset", o.into());
            }
            if let Some(l) = a.limit {
                put("limit", l.into());
            }
        }
        ToolCall::WriteFile(a) => put("content", chars(&a.content)),
        ToolCall::EditFile(a) => {
            put("old_string", chars(&a.old_string));
            put("new_string", chars(&a.new_string));
            if let Some(r) = a.replace_all {
                put("replace_all", r.into());
            }
        }
        ToolCall::Grep(a) => {
            if let Some(mode) = a.output_mode {
                put("output_mode", mode.as_str().into());
            }
            if let Some(c) = a.context_lines {
                put("context_lines", c.into());
            }
            if let Some(x) = a.max_results {
                put("max_results", x.into());
            }
            if let Some(ci) = a.case_insensitive {
                put("case_insensitive", ci.into());
            }
        }
        ToolCall::PrepareUpload(a) => {
            if let Some(x) = a.max_bytes {
                put("max_bytes", x.into());
            }
            if let Some(x) = a.expires_in {
                put("expires_in", x.into());
            }
            if let Some(o) = a.overwrite {
                put("overwrite", o.into());
            }
        }
        ToolCall::PrepareDownload(a) => {
            if let Some(x) = a.expires_in {
                put("expires_in", x.into());
            }
        }
        // What is typed may be a password: its length and the named keys only.
        ToolCall::TerminalSend(a) => {
            if let Some(t) = &a.text {
                put("text", chars(t));
            }
            if !a.keys.is_empty() {
                let keys: Vec<Value> = a.keys.iter().take(64).map(|k| param(k)).collect();
                put("keys", Value::Array(keys));
            }
        }
        ToolCall::TerminalOpen(a) => {
            for (k, v) in [("rows", a.rows), ("cols", a.cols)] {
                if let Some(v) = v {
                    put(k, v.into());
                }
            }
        }
        ToolCall::TerminalResize(a) => {
            for (k, v) in [("rows", a.rows), ("cols", a.cols)] {
                if let Some(v) = v {
                    put(k, v.into());
                }
            }
        }
        ToolCall::JobOutput(a) => {
            for (k, v) in [
                ("stdout_offset", a.stdout_offset),
                ("stderr_offset", a.stderr_offset),
                ("max_bytes", a.max_bytes),
                ("wait_seconds", a.wait_seconds),
            ] {
                if let Some(v) = v {
                    put(k, v.into());
                }
            }
        }
        _ => {}
    }
    Value::Object(m)
}

/// `s` cut to at most `max` bytes at a character boundary, with a note of what was cut.
pub(crate) fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[+{} bytes]", &s[..end], s.len() - end)
}

fn cap_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mymcp_protocol::{BashExecute, EditFile, WriteFile};

    #[test]
    fn contents_are_reduced_to_their_size_and_strings_capped() {
        let p = params(&ToolCall::WriteFile(WriteFile {
            file_path: "/tmp/x".into(),
            content: "héllo".into(),
        }));
        assert_eq!(p, json!({"file_path": "/tmp/x", "content": "<5 chars>"}));
        let p = params(&ToolCall::EditFile(EditFile {
            file_path: "/f".into(),
            old_string: "secret".into(),
            new_string: "".into(),
            replace_all: None,
        }));
        assert_eq!(p["old_string"], "<6 chars>");
        assert_eq!(p["new_string"], "<0 chars>");
        let p = params(&ToolCall::BashExecute(BashExecute {
            command: "x".repeat(10_000),
            timeout: Some(5),
            working_dir: None,
            max_output_bytes: None,
            background: false,
            handoff_after: None,
        }));
        let cmd = p["command"].as_str().unwrap();
        assert!(cmd.len() < MAX_PARAM_BYTES + 32 && cmd.ends_with("[+5904 bytes]"));
        assert_eq!(p["timeout"], 5);
        assert_eq!(cap("ééé", 3), "é…[+4 bytes]");
    }

    #[test]
    fn a_revoke_selector_never_shows_a_token_value() {
        let value = "tok_0123456789abcdefghijklmnopqrstuvwxyzABCDEF";
        let shown = selector_param(value).to_string();
        assert!(!shown.contains("tok_") && shown.contains("id "), "{shown}");
        assert_eq!(selector_param("a1b2c3"), json!("a1b2c3"));
        // Longer than an id, or not hex: it may be a secret (a legacy token value).
        assert_eq!(selector_param("a1b2c3d4e5f6a7"), json!("<14 chars>"));
        assert_eq!(selector_param("hunter2!"), json!("<8 chars>"));
        let e = mymcp_tokens::TokenError::NotFound(value.to_owned());
        let o = token_outcome(Err(&e), Duration::ZERO);
        assert!(!format!("{o:?}").contains("tok_"), "{o:?}");
    }

    fn open_in(dir: &std::path::Path, max_bytes: u64) -> Audit {
        let settings = AuditSettings {
            enabled: true,
            log: LogConfig {
                dir: dir.join("audit"),
                key_file: dir.join("state/signing.key"),
                max_bytes,
                backup_count: 1,
                seal_records: 1000,
                seal_interval: Duration::from_secs(3600),
            },
            bash_head_bytes: 16,
            bash_tail_bytes: 16,
        };
        Audit::open(&settings, Arc::new(Metrics::default()))
            .unwrap()
            .0
    }

    fn lines(dir: &std::path::Path) -> Vec<Value> {
        std::fs::read_to_string(dir.join("audit/audit.log"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn an_operation_gets_a_start_and_an_outcome_record_of_the_tool_call_shape() {
        let dir = tempfile::tempdir().unwrap();
        let audit = open_in(dir.path(), 1 << 20);
        let op = audit.operation(
            "token_add",
            Actor::control(),
            json!({"name": "ci", "role": "ro"}),
        );
        let r = audit.around(
            &op,
            || 7,
            |_, d| Outcome::ok(Some(d), Some(json!({"id": "x"}))),
        );
        assert_eq!(r, Some(7));
        let l = lines(dir.path());
        assert_eq!(l.len(), 2);
        assert_eq!(l[0]["type"], "start");
        assert!(l[0].get("result").is_none());
        assert_eq!(l[1]["tool"], "token_add");
        assert_eq!(l[1]["token_name"], "mymcpctl");
        assert_eq!(l[1]["role"], "control");
        assert_eq!(l[1]["ip"], "local");
        assert_eq!(l[1]["result"], "ok");
        assert_eq!(l[1]["output"]["id"], "x");
        // No HTTP request: no request id.
        assert!(l[1].get("request_id").is_none());
        // The reference's field order, in the line as written.
        let text = std::fs::read_to_string(dir.path().join("audit/audit.log")).unwrap();
        let line = text.lines().nth(1).unwrap();
        let at = |k: &str| {
            line.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k}"))
        };
        let order = [
            "ts",
            "token_name",
            "role",
            "ip",
            "tool",
            "params",
            "result",
            "duration_ms",
            "output",
            "seq",
            "prev",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{line}");
    }

    #[test]
    fn without_its_start_record_an_operation_does_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let audit = open_in(dir.path(), 10);
        // The first record fits; the next must rotate, and a directory in the way of
        // audit.log.1 makes the rotation (so the write) fail.
        let op = audit.operation("token_revoke", Actor::control(), json!({}));
        assert!(audit.op_outcome(&op, Outcome::ok(None, None)));
        std::fs::create_dir_all(dir.path().join("audit/audit.log.1/in-the-way")).unwrap();
        let ran = std::cell::Cell::new(false);
        let r = audit.around(&op, || ran.set(true), |_, _| Outcome::ok(None, None));
        assert!(r.is_none() && !ran.get(), "ran without its start record");
        assert_eq!(audit.metrics.audit_write_failures(), 1);
        assert_eq!(lines(dir.path()).len(), 1);
    }
}
