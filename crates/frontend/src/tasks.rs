//! MCP tasks (revision 2025-11-25, experimental): a task-augmented `tools/call` of
//! `bash_execute` is a background job underneath, so it has the job's ownership by token,
//! spools, limits, retention and audit records, and survives a frontend restart.
//!
//! The frontend keeps no task state: the task id is the job id (the job remembers the call's
//! `max_output_bytes`, which `tasks/result` needs to answer exactly what the call would have
//! answered), and every task operation is a job operation of the executor for the caller's
//! token — `tasks/get` is `job_status`, `tasks/cancel` is `job_kill`, `tasks/result` waits with
//! `job_output` and reads the head of both streams, `tasks/list` lists the token's jobs. This
//! module holds the mapping; `mcp` does the calls.

use mymcp_protocol::{BashExecute, JobInfo};
use serde_json::{json, Value};

/// What a client should wait between two `tasks/get`, in milliseconds.
pub const POLL_INTERVAL_MS: u64 = 2000;

/// The 2026-07-28 tasks extension.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// How long a 2026-07-28 `bash_execute` of a client with the tasks extension runs in the
/// foreground before it becomes a task, unless the call says `handoff_after`.
pub const MODERN_HANDOFF_SECS: i64 = 10;

/// Whether a 2026-07-28 request's client capabilities name the tasks extension.
pub fn client_has_extension(params: &serde_json::Map<String, Value>) -> bool {
    params
        .get("_meta")
        .and_then(|m| m.get(crate::revisions::META_CLIENT_CAPABILITIES))
        .and_then(|c| c.get("extensions"))
        .and_then(|e| e.get(EXTENSION))
        .is_some_and(Value::is_object)
}

/// The 2026-07-28 `Task` of a job (`ttlMs`, `pollIntervalMs`).
pub fn modern_task(task_id: &str, job: &JobInfo, now: &str) -> Value {
    let mut t = task(task_id, job, now);
    if let Some(map) = t.as_object_mut() {
        map.remove("ttl");
        map.remove("pollInterval");
        map.insert("ttlMs".into(), Value::Null);
        map.insert("pollIntervalMs".into(), json!(POLL_INTERVAL_MS));
    }
    t
}

/// The `_meta` key that ties a result to its task.
pub const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

/// The foreground timeout rules (default 30 s, 1-600): a task answers what the call would have.
const DEFAULT_TIMEOUT_SECS: i64 = 30;
const MAX_TIMEOUT_SECS: i64 = 600;

/// The server's `tasks` capability: task-augmented `tools/call`, `tasks/list`, `tasks/cancel`.
pub fn capability() -> Value {
    json!({ "list": {}, "cancel": {}, "requests": { "tools": { "call": {} } } })
}

/// A task id as a client sent it, if it can name a job (the executor decides whether it does).
pub fn parse_task_id(task_id: &str) -> Option<String> {
    (!task_id.is_empty() && task_id.len() <= 64).then(|| task_id.to_owned())
}

/// The `taskId` of a `tasks/*` request's `params`, if it can name a job.
pub fn task_id_param(params: Option<&Value>) -> Option<String> {
    params
        .and_then(|p| p.get("taskId"))
        .and_then(Value::as_str)
        .and_then(parse_task_id)
}

/// Turns a `bash_execute` call into the job that runs its task: in the background, with the
/// foreground timeout the call would have had.
pub fn as_job(mut args: BashExecute) -> BashExecute {
    args.background = true;
    args.handoff_after = None;
    args.timeout = Some(
        args.timeout
            .unwrap_or(DEFAULT_TIMEOUT_SECS)
            .clamp(1, MAX_TIMEOUT_SECS),
    );
    args
}

/// Now, as RFC 3339 UTC with second precision (the job times' format).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A task's status, from its job.
pub fn status(job: &JobInfo) -> &'static str {
    if job.running {
        "working"
    } else if job.killed {
        "cancelled"
    } else {
        "completed"
    }
}

/// The `Task` object of a job.
pub fn task(task_id: &str, job: &JobInfo, now: &str) -> Value {
    let status = status(job);
    let message = match status {
        "working" => format!("running for {} s", job.duration_ms / 1000),
        "cancelled" => "stopped by tasks/cancel (or the server's shutdown)".to_owned(),
        _ => match job.exit_code {
            Some(code) => format!("exited with code {code}"),
            None => "ended".to_owned(),
        },
    };
    json!({
        "taskId": task_id,
        "status": status,
        "statusMessage": message,
        "createdAt": job.started_at,
        "lastUpdatedAt": job.finished_at.as_deref().unwrap_or(now),
        // Kept until MYMCP_JOB_RETENTION_SEC after its end, which the frontend does not know.
        "ttl": Value::Null,
        "pollInterval": POLL_INTERVAL_MS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(running: bool, killed: bool) -> JobInfo {
        JobInfo {
            job_id: "0123456789abcdef".into(),
            command: "x".into(),
            working_dir: "/".into(),
            running,
            exit_code: (!running).then_some(0),
            timed_out: false,
            killed,
            started_at: "2026-12-07T15:00:00Z".into(),
            finished_at: (!running).then(|| "2026-12-07T15:00:01Z".into()),
            duration_ms: 1000,
            timeout_secs: 30,
            stdout_bytes: 0,
            stderr_bytes: 0,
            output_truncated: false,
            limit_hit: None,
            output_cap: 102_400,
        }
    }

    #[test]
    fn task_ids_are_bounded() {
        assert_eq!(parse_task_id("ab"), Some("ab".into()));
        assert_eq!(parse_task_id(""), None);
        assert_eq!(parse_task_id(&"a".repeat(65)), None);
    }

    #[test]
    fn statuses_follow_the_job() {
        assert_eq!(status(&job(true, false)), "working");
        assert_eq!(status(&job(false, false)), "completed");
        assert_eq!(status(&job(false, true)), "cancelled");
        let t = task("t", &job(true, false), "2026-12-07T15:00:05Z");
        assert_eq!(t["lastUpdatedAt"], "2026-12-07T15:00:05Z");
        assert_eq!(t["pollInterval"], POLL_INTERVAL_MS);
    }

    #[test]
    fn a_task_has_the_foreground_timeout() {
        let args = BashExecute {
            command: "x".into(),
            timeout: None,
            working_dir: None,
            max_output_bytes: None,
            background: false,
            handoff_after: Some(5),
        };
        let job = as_job(args.clone());
        assert!(job.background);
        assert_eq!(job.timeout, Some(30));
        assert_eq!(job.handoff_after, None);
        let job = as_job(BashExecute {
            timeout: Some(9999),
            ..args
        });
        assert_eq!(job.timeout, Some(600));
    }
}
