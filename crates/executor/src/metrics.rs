//! The executor's own counters: plain atomics, read into an [`ExecutorMetrics`] snapshot when
//! the frontend asks (it renders `/metrics`). Every label is an index into a closed set, so no
//! request can create a new series.

use mymcp_protocol::{
    CallResult, Direction, DurationHistogram, ExecutorMetrics, Role, ToolCallCount, ToolName,
    DURATION_BUCKETS,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const TOOLS: usize = ToolName::ALL.len();
const ROLES: [Role; 2] = [Role::Ro, Role::Rw];
const BUCKETS: usize = DURATION_BUCKETS.len() + 1;

/// Where a token was refused.
#[derive(Clone, Copy, Debug)]
pub(crate) enum AuthSurface {
    Mcp,
    Admin,
    Metrics,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Counters kept by the executor.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    calls: [[[AtomicU64; 3]; 2]; TOOLS],
    durations: [Histogram; TOOLS],
    auth_failures: [AtomicU64; 3],
    audit_write_failures: AtomicU64,
    transfer_upload: AtomicU64,
    transfer_download: AtomicU64,
}

fn tool_index(tool: ToolName) -> usize {
    ToolName::ALL
        .iter()
        .position(|t| *t == tool)
        .expect("every tool is in ALL")
}

fn result_index(r: CallResult) -> usize {
    match r {
        CallResult::Ok => 0,
        CallResult::Error => 1,
        CallResult::Denied => 2,
    }
}

impl Metrics {
    /// Counts one finished call; `duration` is `None` for denied calls.
    pub(crate) fn call(
        &self,
        tool: ToolName,
        role: Role,
        result: CallResult,
        duration: Option<Duration>,
    ) {
        let role = usize::from(role == Role::Rw);
        let t = tool_index(tool);
        self.calls[t][role][result_index(result)].fetch_add(1, Ordering::Relaxed);
        if let Some(d) = duration {
            let h = &self.durations[t];
            let secs = d.as_secs_f64();
            let b = DURATION_BUCKETS
                .iter()
                .position(|le| secs <= *le)
                .unwrap_or(DURATION_BUCKETS.len());
            h.buckets[b].fetch_add(1, Ordering::Relaxed);
            h.count.fetch_add(1, Ordering::Relaxed);
            h.sum_micros
                .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn auth_failure(&self, surface: AuthSurface) {
        self.auth_failures[surface as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the bytes of a completed transfer.
    pub(crate) fn transfer_bytes(&self, direction: Direction, bytes: u64) {
        let counter = match direction {
            Direction::Upload => &self.transfer_upload,
            Direction::Download => &self.transfer_download,
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn audit_write_failure(&self) {
        self.audit_write_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn audit_write_failures(&self) -> u64 {
        self.audit_write_failures.load(Ordering::Relaxed)
    }

    /// A snapshot of everything counted here; the caller fills in gauges it owns.
    pub(crate) fn snapshot(&self) -> ExecutorMetrics {
        let mut tool_calls = Vec::new();
        let mut durations = Vec::new();
        for (t, tool) in ToolName::ALL.into_iter().enumerate() {
            for (r, role) in ROLES.into_iter().enumerate() {
                for result in CallResult::ALL {
                    let count = self.calls[t][r][result_index(result)].load(Ordering::Relaxed);
                    if count > 0 {
                        tool_calls.push(ToolCallCount {
                            tool,
                            role,
                            result,
                            count,
                        });
                    }
                }
            }
            let h = &self.durations[t];
            let count = h.count.load(Ordering::Relaxed);
            if count > 0 {
                durations.push(DurationHistogram {
                    tool,
                    buckets: h
                        .buckets
                        .iter()
                        .map(|b| b.load(Ordering::Relaxed))
                        .collect(),
                    count,
                    sum_micros: h.sum_micros.load(Ordering::Relaxed),
                });
            }
        }
        ExecutorMetrics {
            tool_calls,
            durations,
            auth_failures_mcp: self.auth_failures[0].load(Ordering::Relaxed),
            auth_failures_admin: self.auth_failures[1].load(Ordering::Relaxed),
            auth_failures_metrics: self.auth_failures[2].load(Ordering::Relaxed),
            audit_write_failures: self.audit_write_failures(),
            transfer_bytes_upload: self.transfer_upload.load(Ordering::Relaxed),
            transfer_bytes_download: self.transfer_download.load(Ordering::Relaxed),
            ..ExecutorMetrics::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_their_series_and_buckets() {
        let m = Metrics::default();
        m.call(
            ToolName::ReadFile,
            Role::Ro,
            CallResult::Ok,
            Some(Duration::from_millis(3)),
        );
        m.call(
            ToolName::ReadFile,
            Role::Ro,
            CallResult::Ok,
            Some(Duration::from_secs(1000)),
        );
        m.call(ToolName::BashExecute, Role::Ro, CallResult::Denied, None);
        m.auth_failure(AuthSurface::Metrics);
        m.transfer_bytes(Direction::Upload, 5);
        m.transfer_bytes(Direction::Upload, 7);
        m.transfer_bytes(Direction::Download, 3);
        let s = m.snapshot();
        assert_eq!(s.tool_calls.len(), 2);
        assert!(s.tool_calls.contains(&ToolCallCount {
            tool: ToolName::ReadFile,
            role: Role::Ro,
            result: CallResult::Ok,
            count: 2
        }));
        assert_eq!(s.durations.len(), 1);
        let h = &s.durations[0];
        assert_eq!((h.count, h.buckets[0], h.buckets[BUCKETS - 1]), (2, 1, 1));
        assert_eq!(s.auth_failures_metrics, 1);
        assert_eq!(
            (s.transfer_bytes_upload, s.transfer_bytes_download),
            (12, 3)
        );
    }
}
