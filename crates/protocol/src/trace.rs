//! How a frontend trace continues in the executor, and what the executor gives back for the
//! frontend to export (OpenTelemetry, OTLP).
//!
//! The frontend sends the [`TraceContext`] of its span for a request inside the request's
//! [`CallOrigin`](crate::CallOrigin). When it says `sampled`, the executor records its own
//! spans for that request ([`ExecutorSpan`]: a closed set of names and attributes, ids it draws
//! itself) and returns them with the answer ([`FrontendResponse::Traced`](crate::FrontendResponse::Traced)).
//! The executor never opens a network socket: the frontend exports them. Every id is checked
//! on decoding (W3C: an all-zero trace or span id is invalid), a batch holds at most
//! [`MAX_EXECUTOR_SPANS`] spans and names its parents only backwards, so a frame that breaks
//! any of this does not decode.

use crate::{CallResult, Direction, ErrorCode, Role, ToolName};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A W3C trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TraceId(pub [u8; 16]);

/// A W3C span id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SpanId(pub [u8; 8]);

impl<'de> Deserialize<'de> for TraceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = <[u8; 16]>::deserialize(d)?;
        if bytes == [0; 16] {
            return Err(D::Error::custom("an all-zero trace id is invalid"));
        }
        Ok(TraceId(bytes))
    }
}

impl<'de> Deserialize<'de> for SpanId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = <[u8; 8]>::deserialize(d)?;
        if bytes == [0; 8] {
            return Err(D::Error::custom("an all-zero span id is invalid"));
        }
        Ok(SpanId(bytes))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The frontend's span for a request: the executor's spans are its children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    pub trace_id: TraceId,
    /// The frontend span the executor's spans hang under.
    pub parent: SpanId,
    /// Whether the trace is recorded (W3C `sampled` flag). Unsampled, the executor records no
    /// spans but still puts the ids in its audit records.
    pub sampled: bool,
}

/// Most spans the executor returns for one request.
pub const MAX_EXECUTOR_SPANS: usize = 8;

/// What an executor span stands for; the frontend turns each into an OpenTelemetry span name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SpanName {
    /// A tool call from authentication to its answer (`execute_tool <tool>`).
    ExecuteTool,
    /// Writing the call's start record in the audit log (before a side effect).
    AuditStart,
    /// Running the tool itself.
    Run,
    /// Writing the call's outcome record.
    AuditOutcome,
    /// A call the frontend refused, audited by the executor (`Refused`).
    Refused,
    /// A transfer redemption (`/files/raw`), from the grant check to the last byte.
    Transfer,
}

impl SpanName {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanName::ExecuteTool => "execute_tool",
            SpanName::AuditStart => "audit start record",
            SpanName::Run => "run",
            SpanName::AuditOutcome => "audit outcome record",
            SpanName::Refused => "refused call",
            SpanName::Transfer => "transfer",
        }
    }
}

/// Whether the work a span stands for succeeded (OpenTelemetry's span status).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SpanStatus {
    #[default]
    Unset,
    Ok,
    Error,
}

/// The attributes an executor span may carry: a fixed set, each from a closed set of values
/// or a number, so nothing a client typed reaches a span through the executor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanAttributes {
    pub tool: Option<ToolName>,
    pub role: Option<Role>,
    pub result: Option<CallResult>,
    pub error: Option<ErrorCode>,
    /// A command's exit code.
    pub exit_code: Option<i32>,
    pub direction: Option<Direction>,
    /// Bytes moved by a transfer.
    pub bytes: Option<u64>,
}

/// One span the executor recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorSpan {
    pub span_id: SpanId,
    /// Index in the same batch of this span's parent (always an earlier one), or `None`: the
    /// request's [`TraceContext::parent`].
    pub parent: Option<u8>,
    pub name: SpanName,
    /// Wall-clock start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    pub duration_nanos: u64,
    pub status: SpanStatus,
    pub attributes: SpanAttributes,
}

/// The spans of one request, oldest first; at most [`MAX_EXECUTOR_SPANS`], parents named only
/// backwards.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExecutorSpans(Vec<ExecutorSpan>);

impl ExecutorSpans {
    /// An empty batch.
    pub fn new() -> Self {
        ExecutorSpans(Vec::new())
    }

    /// Adds a span unless the batch is full; returns its index. A `parent` index must name a
    /// span already in the batch (else the span hangs under the request's parent).
    pub fn push(&mut self, mut span: ExecutorSpan) -> Option<u8> {
        if self.0.len() >= MAX_EXECUTOR_SPANS {
            return None;
        }
        let index = self.0.len() as u8;
        if span.parent.is_some_and(|p| p >= index) {
            span.parent = None;
        }
        self.0.push(span);
        Some(index)
    }

    pub fn as_slice(&self) -> &[ExecutorSpan] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for ExecutorSpans {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bounded;
        impl<'de> serde::de::Visitor<'de> for Bounded {
            type Value = ExecutorSpans;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "at most {MAX_EXECUTOR_SPANS} spans")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ExecutorSpans, A::Error> {
                let mut spans = Vec::new();
                while let Some(span) = seq.next_element::<ExecutorSpan>()? {
                    if spans.len() >= MAX_EXECUTOR_SPANS {
                        return Err(A::Error::custom("too many executor spans"));
                    }
                    if span.parent.is_some_and(|p| p as usize >= spans.len()) {
                        return Err(A::Error::custom("a span's parent must come before it"));
                    }
                    spans.push(span);
                }
                Ok(ExecutorSpans(spans))
            }
        }
        d.deserialize_seq(Bounded)
    }
}

/// Most audit records in one [`AuditRecords`] answer.
pub const MAX_AUDIT_BATCH: usize = 256;

/// One audit record as the executor wrote it (without the chain's `seq` and `prev`, which the
/// log adds), for export as an OTLP log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    /// The record's JSON object.
    pub json: String,
}

/// The executor's answer to [`FrontendRequest::AuditRecords`](crate::FrontendRequest::AuditRecords).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditRecords {
    /// The executor's operator did not enable the export (`MYMCP_OTLP_AUDIT_LOGS`), or there is
    /// no audit log.
    Off,
    Records {
        /// Records from the asked-for position on, oldest first; empty when none was written
        /// within the executor's wait.
        records: Vec<AuditRecord>,
        /// Records from the asked-for position on that the executor no longer holds (its
        /// buffer is bounded): they are only in the log files.
        missed: u64,
        /// The position to ask from next.
        next: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;

    fn span(parent: Option<u8>) -> ExecutorSpan {
        ExecutorSpan {
            span_id: SpanId([1; 8]),
            parent,
            name: SpanName::Run,
            start_unix_nanos: 1,
            duration_nanos: 2,
            status: SpanStatus::Ok,
            attributes: SpanAttributes::default(),
        }
    }

    fn decodes<T: serde::de::DeserializeOwned + Serialize>(value: &T) -> bool {
        let bytes = frame::encode(value).unwrap();
        frame::decode::<T>(&bytes[frame::HEADER_LEN..]).is_ok()
    }

    #[test]
    fn zero_ids_do_not_decode() {
        let context = |trace_id: [u8; 16], parent: [u8; 8]| TraceContext {
            trace_id: TraceId(trace_id),
            parent: SpanId(parent),
            sampled: true,
        };
        assert!(decodes(&context([1; 16], [2; 8])));
        assert!(!decodes(&context([0; 16], [2; 8])));
        assert!(!decodes(&context([1; 16], [0; 8])));
    }

    #[test]
    fn batches_are_bounded_and_parents_point_backwards() {
        let mut spans = ExecutorSpans::new();
        assert_eq!(spans.push(span(Some(0))), Some(0));
        assert_eq!(
            spans.as_slice()[0].parent,
            None,
            "a forward parent is dropped"
        );
        for i in 1..MAX_EXECUTOR_SPANS {
            assert_eq!(spans.push(span(Some(0))), Some(i as u8));
        }
        assert_eq!(spans.push(span(None)), None);
        assert!(decodes(&spans));

        let forward = ExecutorSpans(vec![span(None), span(Some(1))]);
        assert!(!decodes(&forward));
        let too_many = ExecutorSpans(vec![span(None); MAX_EXECUTOR_SPANS + 1]);
        assert!(!decodes(&too_many));
    }

    #[test]
    fn ids_print_as_lowercase_hex() {
        assert_eq!(
            TraceId([0xab; 16]).to_string(),
            "abababababababababababababababab"
        );
        assert_eq!(SpanId([0x0f; 8]).to_string(), "0f0f0f0f0f0f0f0f");
    }
}
