//! The audit records handed to the frontend for export as OTLP log records
//! (`MYMCP_OTLP_AUDIT_LOGS`).
//!
//! A record enters the feed only once the audit log has written it, so the export never shows
//! a record the local log does not have, and the export can never stop or slow a call: the
//! feed is a bounded buffer (the newest [`MAX_RECORDS`] records, at most [`MAX_BYTES`]), the
//! oldest dropped first. The frontend asks for records from a position on (a long poll); what
//! it missed while away or slow is counted, not kept.

use mymcp_protocol::{AuditRecord, AuditRecords, MAX_AUDIT_BATCH};
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// Records kept for the frontend.
const MAX_RECORDS: usize = 4096;
/// Bytes of records kept for the frontend.
const MAX_BYTES: usize = 8 << 20;
/// Most bytes of records in one answer.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// How long a request waits for a record before it is answered empty.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Held {
    records: VecDeque<AuditRecord>,
    bytes: usize,
    /// Feed position of `records[0]`: records dropped so far.
    first: u64,
}

/// The feed: written by the audit log, read by the frontend's `AuditRecords` requests.
#[derive(Debug, Default)]
pub(crate) struct AuditFeed {
    held: Mutex<Held>,
    written: Notify,
}

impl AuditFeed {
    /// Adds a record the log has written.
    pub(crate) fn push(&self, seq: u64, json: &str) {
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.bytes += json.len();
            held.records.push_back(AuditRecord {
                seq,
                json: json.to_owned(),
            });
            while held.records.len() > MAX_RECORDS || held.bytes > MAX_BYTES {
                let Some(old) = held.records.pop_front() else {
                    break;
                };
                held.bytes -= old.json.len();
                held.first += 1;
            }
        }
        self.written.notify_waiters();
    }

    /// The records from position `from` on, as soon as there is one, or none after `wait`
    /// (or when `stop` ends first).
    pub(crate) async fn read(
        &self,
        from: u64,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> AuditRecords {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline, stop);
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            let batch = self.take(from);
            let empty = matches!(&batch, AuditRecords::Records { records, missed: 0, .. } if records.is_empty());
            if !empty {
                return batch;
            }
            tokio::select! {
                () = &mut written => {}
                () = &mut deadline => return self.take(from),
                () = &mut stop => return self.take(from),
            }
        }
    }

    fn take(&self, from: u64) -> AuditRecords {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let end = held.first + held.records.len() as u64;
        // A position past the end is from before an executor restart: start over.
        let from = if from > end { held.first } else { from };
        let missed = held.first.saturating_sub(from);
        let start = from.max(held.first);
        let mut records = Vec::new();
        let mut bytes = 0;
        for r in held.records.iter().skip((start - held.first) as usize) {
            if records.len() >= MAX_AUDIT_BATCH
                || (bytes > 0 && bytes + r.json.len() > MAX_BATCH_BYTES)
            {
                break;
            }
            bytes += r.json.len();
            records.push(r.clone());
        }
        let next = start + records.len() as u64;
        AuditRecords::Records {
            records,
            missed,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(r: AuditRecords) -> (Vec<u64>, u64, u64) {
        match r {
            AuditRecords::Records {
                records,
                missed,
                next,
            } => (records.iter().map(|r| r.seq).collect(), missed, next),
            AuditRecords::Off => panic!("off"),
        }
    }

    #[tokio::test]
    async fn records_come_in_order_from_a_position_and_what_was_dropped_is_counted() {
        let feed = AuditFeed::default();
        for seq in 1..=3 {
            feed.push(seq, "{}");
        }
        let quick = Duration::from_millis(1);
        assert_eq!(
            parts(feed.read(0, quick, std::future::pending()).await),
            (vec![1, 2, 3], 0, 3)
        );
        assert_eq!(
            parts(feed.read(2, quick, std::future::pending()).await),
            (vec![3], 0, 3)
        );
        assert_eq!(
            parts(feed.read(3, quick, std::future::pending()).await),
            (vec![], 0, 3)
        );
        for seq in 4..(7 + MAX_RECORDS as u64) {
            feed.push(seq, "{}");
        }
        let (seqs, missed, next) = parts(feed.read(3, quick, std::future::pending()).await);
        assert_eq!(missed, 3, "the three oldest were dropped");
        assert_eq!(seqs.len(), MAX_AUDIT_BATCH);
        assert_eq!(next, 3 + 3 + MAX_AUDIT_BATCH as u64);
        // A position from before a restart starts over.
        let (seqs, _, _) = parts(feed.read(1 << 40, quick, std::future::pending()).await);
        assert_eq!(seqs.first(), Some(&7));
    }

    #[tokio::test]
    async fn a_waiting_reader_gets_the_next_record_at_once() {
        let feed = std::sync::Arc::new(AuditFeed::default());
        let reader = tokio::spawn({
            let feed = feed.clone();
            async move {
                feed.read(0, Duration::from_secs(30), std::future::pending())
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        feed.push(42, "{\"tool\":\"read_file\"}");
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("answered before the wait ended")
            .unwrap();
        assert_eq!(parts(got), (vec![42], 0, 1));
    }
}
