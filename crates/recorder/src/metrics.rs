//! The recorder's metrics (`mymcp_recorder_*`), written as a Prometheus text file after every
//! tick (`MYMCP_RECORDER_METRICS_FILE`, for node_exporter's textfile collector or any scraper
//! that reads files). The recorder listens on no socket at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

/// Type and help of every family, in output order.
const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "mymcp_recorder_merge_cycles_total",
        Kind::Counter,
        "Merge ticks by outcome (merged, idle, failed, backoff, circuit_open, bootstrap).",
    ),
    (
        "mymcp_recorder_merge_duration_seconds",
        Kind::Histogram,
        "Time a tick took, by outcome.",
    ),
    (
        "mymcp_recorder_llm_calls_total",
        Kind::Counter,
        "LLM calls by phase (merge, bootstrap) and result.",
    ),
    (
        "mymcp_recorder_llm_tokens_total",
        Kind::Counter,
        "LLM tokens by phase and direction (input, output).",
    ),
    (
        "mymcp_recorder_events_consumed_total",
        Kind::Counter,
        "Audit events folded into the overview, by tool.",
    ),
    (
        "mymcp_recorder_event_loss_total",
        Kind::Counter,
        "Audit lines lost to the overview, by reason (rotated, malformed, skipped).",
    ),
    (
        "mymcp_recorder_bootstrap_runs_total",
        Kind::Counter,
        "Bootstrap runs by result.",
    ),
    (
        "mymcp_recorder_bash_probe_runs_total",
        Kind::Counter,
        "Bootstrap probe commands by result.",
    ),
    (
        "mymcp_recorder_pending_events",
        Kind::Gauge,
        "Events read but not merged yet (the last batch while it fails).",
    ),
    (
        "mymcp_recorder_merge_last_attempt_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last merge attempt (an LLM call).",
    ),
    (
        "mymcp_recorder_merge_last_success_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last successful merge.",
    ),
    (
        "mymcp_recorder_circuit_open",
        Kind::Gauge,
        "1 while the circuit breaker is open.",
    ),
    (
        "mymcp_recorder_consecutive_failures",
        Kind::Gauge,
        "Merge attempts that failed in a row.",
    ),
    (
        "mymcp_recorder_batch_limit",
        Kind::Gauge,
        "Events per merge call now (halved after a max-tokens answer).",
    ),
];

/// Upper bounds of the duration buckets, in seconds (LLM calls take seconds to minutes).
const BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The recorder's metric values.
#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<(&'static str, Labels), f64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
}

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, l: &[(&'static str, &str)], by: u64) {
        debug_assert!(kind(name) == Some(Kind::Counter), "{name}");
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *v.entry((name, labels(l))).or_default() += by as f64;
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, value: f64) {
        debug_assert!(kind(name) == Some(Kind::Gauge), "{name}");
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        v.insert((name, Vec::new()), value);
    }

    /// Records a duration.
    pub fn observe(&self, name: &'static str, l: &[(&'static str, &str)], seconds: f64) {
        debug_assert!(kind(name) == Some(Kind::Histogram), "{name}");
        let mut h = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        let h = h.entry((name, labels(l))).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// A counter's or gauge's value (0 when never set).
    pub fn get(&self, name: &'static str, l: &[(&'static str, &str)]) -> f64 {
        let v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        v.get(&(name, labels(l))).copied().unwrap_or(0.0)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let values = self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let hists = self
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            let t = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {t}");
            for ((n, l), v) in values.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{} {v}", render_labels(l, None));
            }
            for ((n, l), h) in hists.iter().filter(|((n, _), _)| n == name) {
                for (i, le) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{n}_bucket{} {}",
                        render_labels(l, Some(&le.to_string())),
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{n}_bucket{} {}",
                    render_labels(l, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(out, "{n}_sum{} {}", render_labels(l, None), h.sum);
                let _ = writeln!(out, "{n}_count{} {}", render_labels(l, None), h.count);
            }
        }
        out
    }

    /// Writes [`Metrics::render`] to `path` atomically.
    pub fn write_textfile(&self, path: &Path) -> std::io::Result<()> {
        crate::store::write_atomic(path, self.render().as_bytes())
    }
}

fn kind(name: &str) -> Option<Kind> {
    FAMILIES.iter().find(|f| f.0 == name).map(|f| f.1)
}

fn render_labels(l: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc(
            "mymcp_recorder_merge_cycles_total",
            &[("reason", "idle")],
            2,
        );
        m.inc(
            "mymcp_recorder_llm_tokens_total",
            &[("phase", "merge"), ("direction", "input")],
            10,
        );
        m.set("mymcp_recorder_circuit_open", 1.0);
        m.observe(
            "mymcp_recorder_merge_duration_seconds",
            &[("reason", "merged")],
            0.7,
        );
        let t = m.render();
        assert!(t.contains("# TYPE mymcp_recorder_merge_cycles_total counter\nmymcp_recorder_merge_cycles_total{reason=\"idle\"} 2\n"), "{t}");
        assert!(
            t.contains("mymcp_recorder_llm_tokens_total{phase=\"merge\",direction=\"input\"} 10\n")
        );
        assert!(t.contains("mymcp_recorder_circuit_open 1\n"));
        assert!(t.contains(
            "mymcp_recorder_merge_duration_seconds_bucket{reason=\"merged\",le=\"0.5\"} 0\n"
        ));
        assert!(t.contains(
            "mymcp_recorder_merge_duration_seconds_bucket{reason=\"merged\",le=\"1\"} 1\n"
        ));
        assert!(t.contains("mymcp_recorder_merge_duration_seconds_count{reason=\"merged\"} 1\n"));
        assert_eq!(
            m.get("mymcp_recorder_merge_cycles_total", &[("reason", "idle")]),
            2.0
        );
        // Every family has its HELP and TYPE, even before a value exists.
        assert_eq!(t.matches("# TYPE ").count(), FAMILIES.len());
    }
}
