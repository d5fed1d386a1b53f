//! The executor's part of the OTLP export: its counters (observable instruments, read over
//! the socket when the SDK collects) and its audit records (log records, long-polled from the
//! executor), both served only when the executor's operator enabled them
//! (`MYMCP_OTLP_EXECUTOR_METRICS`, `MYMCP_OTLP_AUDIT_LOGS`). The SDK itself is set up in
//! [`crate::otel`]; this module is apart from it because it needs the executor link
//! ([`crate::forward`]), which needs `otel` for the executor's spans.

use crate::forward::Forwarder;
use crate::otel::get;
use mymcp_protocol::{
    AuditRecords, ExecutorMetrics, FrontendRequest, FrontendResponse, MetricsOutcome,
};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::trace::TraceFlags;
use opentelemetry::KeyValue;
use opentelemetry_sdk::logs::SdkLogger;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How fresh the executor's counters must be for a collection (one fetch serves every
/// instrument of one collection).
const SNAPSHOT_FRESH: Duration = Duration::from_millis(500);
/// How long a collection waits for the executor's counters.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// One value of an observable instrument, with its attributes.
type Observation = (u64, Vec<KeyValue>);

/// The executor's counters, fetched at most once per [`SNAPSHOT_FRESH`].
#[derive(Debug)]
struct Snapshots {
    forwarder: Weak<Forwarder>,
    runtime: tokio::runtime::Handle,
    last: Mutex<Option<(Instant, Option<Arc<ExecutorMetrics>>)>>,
    refused_logged: std::sync::atomic::AtomicBool,
}

impl Snapshots {
    fn get(&self) -> Option<Arc<ExecutorMetrics>> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, snapshot)) = &*last {
            if at.elapsed() < SNAPSHOT_FRESH {
                return snapshot.clone();
            }
        }
        let snapshot = self.fetch().map(Arc::new);
        *last = Some((Instant::now(), snapshot.clone()));
        snapshot
    }

    /// Runs on the SDK's reader thread, never on the runtime's.
    fn fetch(&self) -> Option<ExecutorMetrics> {
        let forwarder = self.forwarder.upgrade()?;
        let answer = self.runtime.block_on(async move {
            tokio::time::timeout(
                SNAPSHOT_WAIT,
                forwarder.request(FrontendRequest::TelemetryMetrics),
            )
            .await
        });
        match answer {
            Ok(Ok(FrontendResponse::Metrics(MetricsOutcome::Snapshot(s)))) => Some(s),
            Ok(Ok(FrontendResponse::Metrics(MetricsOutcome::Disabled))) => {
                if !self
                    .refused_logged
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::info!("the executor's counters are not exported over OTLP: MYMCP_OTLP_EXECUTOR_METRICS is off in the executor's settings");
                }
                None
            }
            _ => None,
        }
    }
}

/// Registers the executor's counters (fetched over the socket at each collection) and the
/// link's state as observable instruments. Does nothing when metrics are off.
pub fn register_metrics(forwarder: &Arc<Forwarder>) {
    let Some(t) = get() else { return };
    let Some(meter) = t.meter() else { return };
    let snapshots = Arc::new(Snapshots {
        forwarder: Arc::downgrade(forwarder),
        runtime: t.runtime().clone(),
        last: Mutex::new(None),
        refused_logged: Default::default(),
    });
    let s = snapshots.clone();
    meter
        .u64_observable_counter("mymcp.tool.calls")
        .with_description("Tool calls by tool, role and result (ok, error, denied)")
        .with_callback(move |o| {
            if let Some(m) = s.get() {
                for c in &m.tool_calls {
                    o.observe(
                        c.count,
                        &[
                            KeyValue::new("tool", c.tool.as_str()),
                            KeyValue::new("role", c.role.as_str()),
                            KeyValue::new("result", c.result.as_str()),
                        ],
                    );
                }
            }
        })
        .build();
    let gauge = |name: &'static str, description: &'static str, f: fn(&ExecutorMetrics) -> u64| {
        let s = snapshots.clone();
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |o| {
                if let Some(m) = s.get() {
                    o.observe(f(&m), &[]);
                }
            })
            .build();
    };
    gauge(
        "mymcp.bash.inflight_processes",
        "Foreground commands running",
        |m| m.running_commands,
    );
    gauge("mymcp.jobs.running", "Background jobs running", |m| {
        m.running_jobs
    });
    let counter = |name: &'static str,
                   unit: &'static str,
                   description: &'static str,
                   f: fn(&ExecutorMetrics) -> Vec<Observation>| {
        let s = snapshots.clone();
        meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| {
                if let Some(m) = s.get() {
                    for (value, attributes) in f(&m) {
                        o.observe(value, &attributes);
                    }
                }
            })
            .build();
    };
    counter(
        "mymcp.auth.failures",
        "",
        "Requests refused for an unknown, disabled or wrong-role token, by endpoint",
        |m| {
            vec![
                (m.auth_failures_mcp, vec![KeyValue::new("endpoint", "mcp")]),
                (
                    m.auth_failures_admin,
                    vec![KeyValue::new("endpoint", "admin")],
                ),
                (
                    m.auth_failures_metrics,
                    vec![KeyValue::new("endpoint", "metrics")],
                ),
            ]
        },
    );
    counter(
        "mymcp.audit.write_failures",
        "",
        "Audit records that could not be written (those calls were refused)",
        |m| vec![(m.audit_write_failures, vec![])],
    );
    counter(
        "mymcp.transfer.bytes",
        "By",
        "Bytes moved by transfers, by direction",
        |m| {
            vec![
                (
                    m.transfer_bytes_upload,
                    vec![KeyValue::new("direction", "upload")],
                ),
                (
                    m.transfer_bytes_download,
                    vec![KeyValue::new("direction", "download")],
                ),
            ]
        },
    );
    let s = snapshots.clone();
    meter
        .u64_observable_gauge("mymcp.tokens")
        .with_description("Enabled tokens by role")
        .with_callback(move |o| {
            if let Some(m) = s.get() {
                for (role, n) in &m.tokens {
                    o.observe(*n, &[KeyValue::new("role", role.as_str())]);
                }
            }
        })
        .build();
    let link = Arc::downgrade(forwarder);
    meter
        .u64_observable_gauge("mymcp.executor.connected")
        .with_description("1 while the executor link is up")
        .with_callback(move |o| {
            let up = link.upgrade().is_some_and(|f| f.is_connected());
            o.observe(u64::from(up), &[]);
        })
        .build();
}

// Logs ---------------------------------------------------------------------------------------

/// Exports the executor's audit records as OTLP log records, for as long as the process runs:
/// asks the executor for what it wrote since the last answer (a long poll), and waits a
/// minute between asks while the executor's operator has not enabled it.
pub async fn export_audit_records(forwarder: Arc<Forwarder>) {
    let Some(logger) = get().and_then(|t| t.audit_logger()) else {
        return;
    };
    let mut from = 0u64;
    let mut told_off = false;
    loop {
        match forwarder
            .request(FrontendRequest::AuditRecords { from })
            .await
        {
            Ok(FrontendResponse::AuditRecords(AuditRecords::Records {
                records,
                missed,
                next,
            })) => {
                told_off = false;
                if missed > 0 {
                    tracing::warn!(missed, "audit records were written faster than they could be exported; they are only in the audit log");
                }
                for r in &records {
                    logger.emit(audit_log_record(logger, r.seq, &r.json));
                }
                from = next;
            }
            Ok(FrontendResponse::AuditRecords(AuditRecords::Off)) => {
                if !told_off {
                    tracing::info!("audit records are not exported over OTLP: MYMCP_OTLP_AUDIT_LOGS is off (or the audit log is) in the executor's settings");
                    told_off = true;
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(_) => {
                tracing::error!("executor answered AuditRecords with something else");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            // Executor away (or restarting): try again soon; its feed starts over.
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// One audit record as an OTLP log record: the JSON line as the body, the fields one filters
/// on as attributes, and the call's trace and span ids as the record's trace context.
fn audit_log_record(
    logger: &SdkLogger,
    seq: u64,
    json: &str,
) -> opentelemetry_sdk::logs::SdkLogRecord {
    let mut record = logger.create_log_record();
    record.set_event_name("mymcp.audit");
    record.set_body(AnyValue::String(json.to_owned().into()));
    record.add_attribute("mymcp.audit.seq", seq as i64);
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let text = |k: &str| value.get(k).and_then(serde_json::Value::as_str);
    let result = text("result");
    let severity = match result {
        Some("error") | Some("denied") => Severity::Warn,
        _ => Severity::Info,
    };
    record.set_severity_number(severity);
    record.set_severity_text(severity.name());
    for (field, attribute) in [
        ("tool", "mymcp.audit.tool"),
        ("type", "mymcp.audit.type"),
        ("result", "mymcp.audit.result"),
        ("token_name", "mymcp.audit.token_name"),
        ("role", "mymcp.audit.role"),
        ("error_code", "error.type"),
        ("request_id", "mymcp.request_id"),
    ] {
        if let Some(v) = text(field) {
            record.add_attribute(attribute, v.to_owned());
        }
    }
    if let Some(ts) = text("ts").and_then(parse_rfc3339) {
        record.set_timestamp(ts);
    }
    let hex = |k: &str, n: usize| {
        text(k)
            .filter(|s| s.len() == 2 * n)
            .and_then(|s| u128::from_str_radix(s, 16).ok().map(|v| (s, v)))
    };
    if let (Some((_, t)), Some((s, _))) = (hex("trace_id", 16), hex("span_id", 8)) {
        if let Ok(span) = u64::from_str_radix(s, 16) {
            record.set_trace_context(
                opentelemetry::trace::TraceId::from(t),
                opentelemetry::trace::SpanId::from(span),
                Some(TraceFlags::SAMPLED),
            );
        }
    }
    record
}

/// `2026-01-02T03:04:05.678Z`-style timestamps (what the audit log writes).
fn parse_rfc3339(ts: &str) -> Option<SystemTime> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut nanos = 0u64;
    if b.get(19) == Some(&b'.') {
        let frac: String = ts[20..].chars().take_while(char::is_ascii_digit).collect();
        let digits = frac.len().min(9);
        nanos = frac[..digits].parse::<u64>().ok()? * 10u64.pow((9 - digits) as u32);
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_timestamps_parse() {
        let t = parse_rfc3339("2026-03-01T12:34:56.789Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_772_368_496);
        assert_eq!(d.subsec_millis(), 789);
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
