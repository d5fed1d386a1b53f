//! `/metrics`: the frontend's own counters (HTTP requests, in-flight requests, refused
//! tokens it could tell without asking, the executor link) merged with the executor's
//! snapshot, rendered with `prometheus-client` in the OpenMetrics text format.
//!
//! Every label value comes from a closed set: route patterns (never raw paths or ticket ids),
//! a fixed list of methods, status codes, tool names (an unknown name is `unknown`), roles,
//! results.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use mymcp_protocol::{ExecutorMetrics, Role, ToolName, DURATION_BUCKETS};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// Counters the frontend keeps itself.
#[derive(Debug, Default)]
pub struct FrontendMetrics {
    /// (route, method, status) → requests.
    http: Mutex<HashMap<(&'static str, &'static str, u16), u64>>,
    in_flight: AtomicI64,
    /// Requests refused here for a missing bearer token: mcp, admin, metrics.
    missing_token: [AtomicU64; 3],
}

/// `tools/call`s of names that are not tools, by caller role (ro, rw). Counted where the MCP
/// layer answers them, which has no handle on the router state.
static UNKNOWN_TOOL_CALLS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Counts a `tools/call` of an unknown tool name (as `tool="unknown"`, `result="denied"`).
pub fn unknown_tool_call(role: Role) {
    UNKNOWN_TOOL_CALLS[usize::from(role == Role::Rw)].fetch_add(1, Ordering::Relaxed);
}

/// Which surface refused a token.
#[derive(Clone, Copy, Debug)]
pub enum Surface {
    Mcp,
    Admin,
    Metrics,
}

const ROUTES: [&str; 5] = ["/mcp", "/health", "/version", "/metrics", "/admin/tokens"];
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"];

impl FrontendMetrics {
    pub fn missing_token(&self, surface: Surface) {
        self.missing_token[surface as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn request(&self, route: &'static str, method: &'static str, status: u16) {
        let mut http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        *http.entry((route, method, status)).or_default() += 1;
    }

    /// Renders everything; `executor` is `None` when the executor could not be asked.
    pub fn render(&self, executor: &ExecutorMetrics, connected: bool) -> String {
        let mut reg = Registry::default();

        let calls = Family::<Labels, Counter>::default();
        for c in &executor.tool_calls {
            calls
                .get_or_create(&labels(&[
                    ("tool", c.tool.as_str()),
                    ("role", c.role.as_str()),
                    ("result", c.result.as_str()),
                ]))
                .inc_by(c.count);
        }
        for (i, role) in [Role::Ro, Role::Rw].into_iter().enumerate() {
            let n = UNKNOWN_TOOL_CALLS[i].load(Ordering::Relaxed);
            if n > 0 {
                calls
                    .get_or_create(&labels(&[
                        ("tool", "unknown"),
                        ("role", role.as_str()),
                        ("result", "denied"),
                    ]))
                    .inc_by(n);
            }
        }
        reg.register(
            "mymcp_tool_calls",
            "Tool calls by tool, role and result (ok, error, denied)",
            calls,
        );

        reg.register(
            "mymcp_tool_duration_seconds",
            "Duration of tool calls (denied calls excluded)",
            Histograms(
                executor
                    .durations
                    .iter()
                    .map(|h| {
                        // Per-bucket counts: the encoder accumulates them itself.
                        let buckets: Vec<(f64, u64)> = h
                            .buckets
                            .iter()
                            .enumerate()
                            .map(|(i, n)| {
                                (
                                    DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                                    *n,
                                )
                            })
                            .collect();
                        (
                            labels(&[("tool", h.tool.as_str())]),
                            h.sum_micros as f64 / 1e6,
                            h.count,
                            buckets,
                        )
                    })
                    .collect(),
            ),
        );

        let http = Family::<Labels, Counter>::default();
        for ((route, method, status), n) in
            self.http.lock().unwrap_or_else(|p| p.into_inner()).iter()
        {
            http.get_or_create(&labels(&[
                ("path", route),
                ("method", method),
                ("status", &status.to_string()),
            ]))
            .inc_by(*n);
        }
        reg.register(
            "mymcp_http_requests",
            "HTTP requests by route pattern, method and status",
            http,
        );
        reg.register(
            "mymcp_http_requests_in_flight",
            "HTTP requests being served",
            gauge(self.in_flight.load(Ordering::Relaxed)),
        );

        let auth = Family::<Labels, Counter>::default();
        let executor_side = [
            executor.auth_failures_mcp,
            executor.auth_failures_admin,
            executor.auth_failures_metrics,
        ];
        for (i, endpoint) in ["mcp", "admin", "metrics"].into_iter().enumerate() {
            auth.get_or_create(&labels(&[("endpoint", endpoint)]))
                .inc_by(executor_side[i] + self.missing_token[i].load(Ordering::Relaxed));
        }
        reg.register(
            "mymcp_auth_failures",
            "Requests refused for a missing, unknown, disabled or wrong-role token",
            auth,
        );

        reg.register(
            "mymcp_bash_inflight_processes",
            "bash_execute commands running in the foreground",
            gauge(executor.running_commands as i64),
        );
        reg.register(
            "mymcp_jobs_running",
            "Background jobs running",
            gauge(executor.running_jobs as i64),
        );
        let audit = Counter::<u64>::default();
        audit.inc_by(executor.audit_write_failures);
        reg.register(
            "mymcp_audit_write_failures",
            "Audit records that could not be written (their calls were refused)",
            audit,
        );
        let tokens = Family::<Labels, Gauge>::default();
        for (role, n) in &executor.tokens {
            tokens
                .get_or_create(&labels(&[("role", role.as_str())]))
                .set(*n as i64);
        }
        reg.register("mymcp_tokens_count", "Enabled tokens by role", tokens);
        let transfer = Family::<Labels, Counter>::default();
        for (direction, n) in [
            ("upload", executor.transfer_bytes_upload),
            ("download", executor.transfer_bytes_download),
        ] {
            transfer
                .get_or_create(&labels(&[("direction", direction)]))
                .inc_by(n);
        }
        reg.register(
            "mymcp_transfer_bytes",
            "Bytes moved through /files/raw by direction",
            transfer,
        );
        reg.register(
            "mymcp_executor_connected",
            "Whether the frontend's link to the executor is up (1) or not (0)",
            gauge(i64::from(connected)),
        );
        let info = Family::<Labels, Gauge>::default();
        info.get_or_create(&labels(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("wire_version", &mymcp_protocol::WIRE_VERSION.to_string()),
        ]))
        .set(1);
        reg.register("mymcp_build_info", "Version of this build (always 1)", info);

        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("writing to a String cannot fail");
        out
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

/// One histogram series counted elsewhere: labels, sum, count, (upper bound, count) buckets.
type HistogramSeries = (Labels, f64, u64, Vec<(f64, u64)>);

/// Histograms whose buckets were counted elsewhere (by the executor).
#[derive(Debug)]
struct Histograms(Vec<HistogramSeries>);

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, sum, count, buckets) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Middleware: counts every request by route pattern, method and status, and the requests
/// in flight.
pub async fn track(
    State(metrics): State<Arc<FrontendMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str())
        .map(closed_route)
        .unwrap_or("<unmatched>");
    let method = METHODS
        .into_iter()
        .find(|m| *m == request.method().as_str())
        .unwrap_or("OTHER");
    metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let guard = InFlight(&metrics.in_flight);
    let response = next.run(request).await;
    drop(guard);
    metrics.request(route, method, response.status().as_u16());
    response
}

/// Maps a matched route pattern to a static label (patterns of routes added later by other
/// modules fall back to their first segment).
fn closed_route(pattern: &str) -> &'static str {
    if let Some(r) = ROUTES.into_iter().find(|r| *r == pattern) {
        return r;
    }
    match pattern {
        p if p.starts_with("/admin/tokens/") => "/admin/tokens/{token}",
        p if p.starts_with("/files/raw/") => "/files/raw/{ticket}",
        _ => "<other>",
    }
}

struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps `ToolName` in the closed set of tool labels (for documentation and tests).
pub fn tool_label(name: &str) -> &'static str {
    ToolName::parse(name).map_or("unknown", ToolName::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mymcp_protocol::{CallResult, DurationHistogram, ToolCallCount};

    #[test]
    fn renders_merged_counters_in_openmetrics_text() {
        let m = FrontendMetrics::default();
        m.request("/mcp", "POST", 200);
        m.missing_token(Surface::Mcp);
        let mut buckets = vec![0; DURATION_BUCKETS.len() + 1];
        buckets[0] = 1;
        buckets[3] = 2;
        let snapshot = ExecutorMetrics {
            tool_calls: vec![ToolCallCount {
                tool: ToolName::ReadFile,
                role: Role::Ro,
                result: CallResult::Ok,
                count: 3,
            }],
            durations: vec![DurationHistogram {
                tool: ToolName::ReadFile,
                buckets,
                count: 3,
                sum_micros: 1_500_000,
            }],
            auth_failures_mcp: 2,
            tokens: vec![(Role::Rw, 4)],
            ..ExecutorMetrics::default()
        };
        let text = m.render(&snapshot, true);
        for want in [
            "mymcp_tool_calls_total{tool=\"read_file\",role=\"ro\",result=\"ok\"} 3",
            "mymcp_tool_duration_seconds_bucket{le=\"0.005\",tool=\"read_file\"} 1",
            "mymcp_tool_duration_seconds_bucket{le=\"0.05\",tool=\"read_file\"} 3",
            "mymcp_tool_duration_seconds_count{tool=\"read_file\"} 3",
            "mymcp_http_requests_total{path=\"/mcp\",method=\"POST\",status=\"200\"} 1",
            "mymcp_auth_failures_total{endpoint=\"mcp\"} 3",
            "mymcp_tokens_count{role=\"rw\"} 4",
            "mymcp_executor_connected 1",
            "mymcp_audit_write_failures_total 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert_eq!(tool_label("rm -rf"), "unknown");
        assert_eq!(
            closed_route("/admin/tokens/{selector}"),
            "/admin/tokens/{token}"
        );
    }
}
