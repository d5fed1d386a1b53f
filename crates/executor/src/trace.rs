//! The executor's spans of a traced request (OpenTelemetry), recorded here and exported by the
//! frontend.
//!
//! The frontend's span for a request arrives as the request's [`TraceContext`]. A
//! [`RequestTrace`] draws the executor's own span id at once (the audit record names it), and,
//! only when the context says `sampled`, keeps the start and length of the request's few steps
//! (audit start record, run, audit outcome record) and returns them as
//! [`ExecutorSpans`] with the answer. Nothing here does I/O: the executor opens no network
//! socket, and an untraced request costs one branch.

use mymcp_protocol::{
    ExecutorSpan, ExecutorSpans, SpanAttributes, SpanId, SpanName, SpanStatus, TraceContext,
    TraceId,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Steps recorded besides the request's own span.
const MAX_STEPS: usize = 3;

/// A new span id: splitmix64 over a per-process random key plus a counter. splitmix64 is a
/// bijection, so ids never repeat within a process; the key makes them unpredictable across
/// processes. No system call after the first.
pub(crate) fn new_span_id() -> SpanId {
    static KEY: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let key = *KEY.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without the kernel's generator the ids are still unique, only predictable.
        let _ = mymcp_sys::fill_random(&mut b);
        u64::from_ne_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z = key.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    SpanId(z.max(1).to_be_bytes())
}

/// One step of a request, timed.
#[derive(Clone, Copy, Debug)]
struct Step {
    name: SpanName,
    started: Instant,
    ended: Instant,
    status: SpanStatus,
}

/// The trace of one request in the executor: off (no context), ids only (not sampled), or
/// recording.
#[derive(Debug)]
pub(crate) struct RequestTrace {
    context: Option<TraceContext>,
    ids: Option<(TraceId, SpanId)>,
    recording: bool,
    /// When recording: the request's start.
    started: Option<Instant>,
    started_wall: u64,
    steps: [Option<Step>; MAX_STEPS],
}

impl RequestTrace {
    /// Starts the executor's span for a request that carried `context`.
    pub(crate) fn start(context: Option<&TraceContext>) -> RequestTrace {
        let recording = context.is_some_and(|c| c.sampled);
        RequestTrace {
            context: context.copied(),
            ids: context.map(|c| (c.trace_id, new_span_id())),
            recording,
            started: recording.then(Instant::now),
            started_wall: if recording { unix_nanos() } else { 0 },
            steps: [None; MAX_STEPS],
        }
    }

    /// The trace id and the executor's span id, for the audit record.
    pub(crate) fn ids(&self) -> Option<(TraceId, SpanId)> {
        self.ids
    }

    /// Now, when the request is recorded (the start of a step); else `None`, without reading
    /// the clock.
    pub(crate) fn mark(&self) -> Option<Instant> {
        self.recording.then(Instant::now)
    }

    /// Records a step that began at `started` ([`RequestTrace::mark`]) and ends now.
    pub(crate) fn step(&mut self, name: SpanName, started: Option<Instant>, status: SpanStatus) {
        let Some(started) = started.filter(|_| self.recording) else {
            return;
        };
        if let Some(free) = self.steps.iter_mut().find(|s| s.is_none()) {
            *free = Some(Step {
                name,
                started,
                ended: Instant::now(),
                status,
            });
        }
    }

    /// Ends the request's span: the request's context and the spans to return with the
    /// answer (`None` unless sampled).
    pub(crate) fn finish(
        self,
        name: SpanName,
        status: SpanStatus,
        attributes: SpanAttributes,
    ) -> Option<(TraceContext, ExecutorSpans)> {
        let (Some(context), Some((_, span_id)), Some(started), true) =
            (self.context, self.ids, self.started, self.recording)
        else {
            return None;
        };
        let mut spans = ExecutorSpans::new();
        let wall = |at: Instant| {
            let offset = at.saturating_duration_since(started).as_nanos() as u64;
            self.started_wall.saturating_add(offset)
        };
        spans.push(ExecutorSpan {
            span_id,
            parent: None,
            name,
            start_unix_nanos: self.started_wall,
            duration_nanos: started.elapsed().as_nanos() as u64,
            status,
            attributes,
        });
        for step in self.steps.iter().flatten() {
            spans.push(ExecutorSpan {
                span_id: new_span_id(),
                parent: Some(0),
                name: step.name,
                start_unix_nanos: wall(step.started),
                duration_nanos: step
                    .ended
                    .saturating_duration_since(step.started)
                    .as_nanos() as u64,
                status: step.status,
                attributes: SpanAttributes::default(),
            });
        }
        Some((context, spans))
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn context(sampled: bool) -> TraceContext {
        TraceContext {
            trace_id: TraceId([7; 16]),
            parent: SpanId([9; 8]),
            sampled,
        }
    }

    #[test]
    fn span_ids_do_not_repeat_and_are_never_zero() {
        let ids: HashSet<_> = (0..100_000).map(|_| new_span_id()).collect();
        assert_eq!(ids.len(), 100_000);
        assert!(!ids.contains(&SpanId([0; 8])));
    }

    #[test]
    fn a_sampled_request_returns_its_span_and_steps_under_it() {
        let mut trace = RequestTrace::start(Some(&context(true)));
        let (trace_id, span_id) = trace.ids().unwrap();
        assert_eq!(trace_id, TraceId([7; 16]));
        let t = trace.mark();
        assert!(t.is_some());
        trace.step(SpanName::AuditStart, t, SpanStatus::Ok);
        trace.step(SpanName::Run, t, SpanStatus::Error);
        let (context, spans) = trace
            .finish(
                SpanName::ExecuteTool,
                SpanStatus::Error,
                SpanAttributes::default(),
            )
            .unwrap();
        assert_eq!(context.parent, SpanId([9; 8]));
        let spans = spans.as_slice();
        assert_eq!(spans.len(), 3);
        assert_eq!((spans[0].span_id, spans[0].parent), (span_id, None));
        assert!(spans[1..].iter().all(|s| s.parent == Some(0)));
        assert!(spans[1].start_unix_nanos >= spans[0].start_unix_nanos);
        assert_eq!(spans[2].status, SpanStatus::Error);
    }

    #[test]
    fn an_unsampled_request_has_ids_for_the_audit_and_no_spans() {
        let mut trace = RequestTrace::start(Some(&context(false)));
        assert!(trace.ids().is_some());
        assert!(
            trace.mark().is_none(),
            "no clock read for a request not recorded"
        );
        trace.step(SpanName::Run, Some(Instant::now()), SpanStatus::Ok);
        let spans = trace.finish(SpanName::ExecuteTool, SpanStatus::Ok, Default::default());
        assert!(spans.is_none());
        let untraced = RequestTrace::start(None);
        assert!(untraced.ids().is_none());
    }
}
