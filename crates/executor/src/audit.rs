//! The audit log of tool calls: what the reference servers record (spec §9), every field
//! capped, written through [`mymcp_audit::log::AuditLog`] (hash chain, rotation, seals).
//!
//! **Fail closed before the side effect.** A tool that changes the host (`bash_execute`,
//! `write_file`, `edit_file`, `job_kill`) first gets a `"type":"start"` record; if that record
//! cannot be written the tool does not run and the client gets `InternalError`. When it ends,
//! its outcome record follows (if that one fails, the call's real result is still returned —
//! the start record shows it ran — and the failure is counted and logged). A tool that only
//! reads has no side effect but its answer: it gets one record after it ran, and if that
//! record cannot be written the answer is withheld (`InternalError`). Every failed write counts
//! in `mymcp_audit_write_failures_total`.

use crate::metrics::Metrics;
use mymcp_audit::log::{AuditLog, LogConfig};
use mymcp_protocol::{
    AuditState, CallOrigin, CallResult, ErrorCode, Identity, ToolCall, ToolFailure, ToolName,
    ToolOutput,
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
            },
            opened.new_install_key,
        ))
    }

    pub(crate) fn enabled(&self) -> bool {
        self.log.is_some()
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
            Ok(_) => true,
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

    /// What is needed to audit `call`, taken before the call consumes its arguments.
    pub(crate) fn prepare(
        &self,
        identity: &Identity,
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
            ip: cap(&origin.peer, MAX_SHORT_BYTES),
            request_id: cap(&origin.request_id, MAX_SHORT_BYTES),
            params: params(call),
            summary: Summary::of(call),
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
                    .and_then(|o| self.output(&p.summary, o));
            }
        }
        let written = self.write(&serialize(&r));
        let tool = p.tool.expect("prepared for a call");
        if !written && !has_side_effects(tool) && class != CallResult::Denied {
            return Err(audit_failure(p.tool));
        }
        result
    }

    /// Records a call the frontend refused before it reached a tool (unknown name, arguments
    /// that do not decode). Nothing ran, so a failed write is only counted.
    pub(crate) fn refusal(
        &self,
        identity: &Identity,
        origin: &CallOrigin,
        tool: &str,
        result: &Result<ToolOutput, ToolFailure>,
    ) {
        if !self.enabled() {
            return;
        }
        let (class, code, message) = classify(result);
        let (token_name, ip, request_id) = (
            cap(&identity.name, MAX_SHORT_BYTES),
            cap(&origin.peer, MAX_SHORT_BYTES),
            cap(&origin.request_id, MAX_SHORT_BYTES),
        );
        let tool = cap(tool, MAX_SHORT_BYTES);
        let params = Value::Object(Map::new());
        let mut r = Record {
            ts: mymcp_audit::now_rfc3339(),
            kind: None,
            token_name: &token_name,
            role: identity.role.as_str(),
            ip: &ip,
            tool: &tool,
            params: &params,
            result: Some(class.as_str()),
            request_id: &request_id,
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

    fn output(&self, summary: &Summary, out: &ToolOutput) -> Option<Value> {
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
        ToolName::BashExecute | ToolName::WriteFile | ToolName::EditFile | ToolName::JobKill
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
        Err(f) if matches!(f.code, ErrorCode::PermissionDenied | ErrorCode::UnknownTool) => (
            CallResult::Denied,
            None,
            Some(cap(&f.message, MAX_MESSAGE_BYTES)),
        ),
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
    ip: String,
    request_id: String,
    params: Value,
    summary: Summary,
}

impl Prepared {
    fn record(&self) -> Record<'_> {
        Record {
            ts: String::new(),
            kind: None,
            token_name: &self.token_name,
            role: self.role,
            ip: &self.ip,
            tool: self.tool.map(ToolName::as_str).unwrap_or(""),
            params: &self.params,
            result: None,
            request_id: &self.request_id,
            reason: None,
            error_code: None,
            error_message: None,
            duration_ms: None,
            output: None,
        }
    }
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
    request_id: &'a str,
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
        // No parameters.
        ToolCall::ServerOverview => {}
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
        }));
        let cmd = p["command"].as_str().unwrap();
        assert!(cmd.len() < MAX_PARAM_BYTES + 32 && cmd.ends_with("[+5904 bytes]"));
        assert_eq!(p["timeout"], 5);
        assert_eq!(cap("ééé", 3), "é…[+4 bytes]");
    }
}
