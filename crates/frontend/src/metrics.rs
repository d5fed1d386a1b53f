//! `/metrics`: the frontend's own counters (HTTP requests, in-flight requests, refused
//! tokens it could tell without asking, the executor link) merged with the executor's
//! snapshot, rendered with `prometheus-client`.
//!
//! The exposition format is negotiated like the Prometheus client libraries do it (see
//! [`Format::negotiate`]): the classic text format 0.0.4 unless the scraper's `Accept` prefers
//! OpenMetrics. `prometheus-client` only writes OpenMetrics, so the classic rendering is its
//! output rewritten by [`openmetrics_to_text`] (counter families named with `_total`, no
//! `# UNIT`, no `_created`, no exemplars, no `# EOF`).
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

/// Content type of the classic Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the OpenMetrics text format 0.0.1 (the same bytes as 1.0.0 for what we
/// expose; answered to a scraper that asks for that version only).
const OPENMETRICS_0_0_1_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=0.0.1; charset=utf-8";

/// An exposition format of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4: the default.
    Text,
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
    /// OpenMetrics text, asked for as version 0.0.1.
    OpenMetrics001,
}

impl Format {
    /// Picks the format from the `Accept` header values as the Prometheus client libraries
    /// do: among the media ranges this endpoint can serve (`application/openmetrics-text` of
    /// version 1.0.0, 0.0.1 or unspecified; `text/plain`), the one with the highest `q`
    /// (the first on a tie); `q=0` refuses a range. Anything else (no header, `*/*`,
    /// protobuf, unknown versions) gets the classic text format, which never answers 406.
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        let mut best: Option<(f32, Format)> = None;
        for range in accept.into_iter().flat_map(|v| v.split(',')) {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let (mut q, mut version) = (1.0_f32, None);
            for param in parts {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value),
                    _ => {}
                }
            }
            let format = if media.eq_ignore_ascii_case("application/openmetrics-text") {
                match version {
                    None | Some("1.0.0") => Format::OpenMetrics,
                    Some("0.0.1") => Format::OpenMetrics001,
                    Some(_) => continue,
                }
            } else if media.eq_ignore_ascii_case("text/plain") {
                Format::Text
            } else {
                continue;
            };
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, format));
            }
        }
        best.map_or(Format::Text, |(_, f)| f)
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::OpenMetrics001 => OPENMETRICS_0_0_1_CONTENT_TYPE,
        }
    }
}

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

    /// Renders everything in `format`: the executor's snapshot, and whether the link to the
    /// executor is up.
    pub fn render(&self, executor: &ExecutorMetrics, connected: bool, format: Format) -> String {
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
        match format {
            Format::Text => openmetrics_to_text(&out),
            Format::OpenMetrics | Format::OpenMetrics001 => out,
        }
    }
}

/// Rewrites OpenMetrics text as written by `prometheus-client` in the classic text format
/// 0.0.4, the way the Prometheus client libraries expose the same metrics there:
///
/// - a counter family `x` (samples `x_total`) is announced as `# HELP x_total`,
///   `# TYPE x_total counter`; its `x_created` samples are left out;
/// - an info family `x` becomes the gauge `x_info`, a state set a gauge, `unknown` and gauge
///   histograms `untyped`;
/// - `# UNIT` lines, exemplars and the `# EOF` terminator are left out; timestamps go from
///   seconds to milliseconds.
///
/// `prometheus-client` writes help texts unescaped, the same way in both formats: ours
/// contain no backslash, quote or line break (a test checks).
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(openmetrics.len());
    // The HELP line waits for its TYPE line, which decides the classic name.
    let mut help: Option<(&str, &str)> = None;
    // The current family's name and OpenMetrics type.
    let mut family: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (classic_name, classic_kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_owned(), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), kind),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(h, _)| *h == name) {
                let _ = writeln!(out, "# HELP {classic_name} {text}");
            }
            let _ = writeln!(out, "# TYPE {classic_name} {classic_kind}");
            family = Some((name, kind));
        } else if line.starts_with('#') {
            // `# UNIT`, `# EOF`: nothing in the classic format.
        } else if !line.is_empty() {
            let (series, value, timestamp) = split_sample(line);
            if let Some((name, "counter")) = family {
                let sample_name = series.split('{').next().unwrap_or(series);
                if sample_name.strip_prefix(name) == Some("_created") {
                    continue;
                }
            }
            let _ = write!(out, "{series} {value}");
            if let Some(ts) = timestamp.and_then(|t| t.parse::<f64>().ok()) {
                let _ = write!(out, " {}", (ts * 1000.0).round() as i64);
            }
            out.push('\n');
        }
    }
    out
}

/// An OpenMetrics sample line as (name and labels, value, timestamp); an exemplar after
/// ` # ` is dropped. Label values may contain anything, escaped: they are skipped quote-aware.
fn split_sample(line: &str) -> (&str, &str, Option<&str>) {
    let mut end = line.find([' ', '{']).unwrap_or(line.len());
    if line[end..].starts_with('{') {
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in line[end..].char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    end += i + 1;
                    break;
                }
                _ => {}
            }
        }
    }
    let (series, rest) = line.split_at(end);
    let rest = rest.split(" # ").next().unwrap_or("");
    let mut fields = rest.split_whitespace();
    (series, fields.next().unwrap_or(""), fields.next())
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

    /// A snapshot with a bit of everything.
    fn rendered(format: Format) -> String {
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
        m.render(&snapshot, true, format)
    }

    /// Sample lines are the same in both formats.
    const SAMPLES: [&str; 10] = [
        "mymcp_tool_calls_total{tool=\"read_file\",role=\"ro\",result=\"ok\"} 3",
        "mymcp_tool_duration_seconds_bucket{le=\"0.005\",tool=\"read_file\"} 1",
        "mymcp_tool_duration_seconds_bucket{le=\"0.05\",tool=\"read_file\"} 3",
        "mymcp_tool_duration_seconds_bucket{le=\"+Inf\",tool=\"read_file\"} 3",
        "mymcp_tool_duration_seconds_count{tool=\"read_file\"} 3",
        "mymcp_http_requests_total{path=\"/mcp\",method=\"POST\",status=\"200\"} 1",
        "mymcp_auth_failures_total{endpoint=\"mcp\"} 3",
        "mymcp_tokens_count{role=\"rw\"} 4",
        "mymcp_executor_connected 1",
        "mymcp_audit_write_failures_total 0",
    ];

    #[test]
    fn renders_merged_counters_in_openmetrics_text() {
        let text = rendered(Format::OpenMetrics);
        for want in SAMPLES {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert!(text.contains("# TYPE mymcp_tool_calls counter\n"), "{text}");
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        // The same bytes, up to the order of series within a family (a hash map's).
        let sorted = |t: &str| {
            let mut lines: Vec<String> = t.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&rendered(Format::OpenMetrics001)), sorted(&text));
        assert_eq!(tool_label("rm -rf"), "unknown");
        assert_eq!(
            closed_route("/admin/tokens/{selector}"),
            "/admin/tokens/{token}"
        );
    }

    #[test]
    fn renders_the_same_samples_in_the_classic_text_format() {
        let text = rendered(Format::Text);
        for want in SAMPLES {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        for want in [
            "# HELP mymcp_tool_calls_total Tool calls by tool, role and result (ok, error, denied).\n",
            "# TYPE mymcp_tool_calls_total counter\n",
            "# TYPE mymcp_http_requests_total counter\n",
            "# TYPE mymcp_audit_write_failures_total counter\n",
            "# TYPE mymcp_tool_duration_seconds histogram\n",
            "# TYPE mymcp_executor_connected gauge\n",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        for unwanted in [
            "# EOF",
            "# UNIT",
            "_created",
            "# TYPE mymcp_tool_calls counter",
        ] {
            assert!(!text.contains(unwanted), "{unwanted} in:\n{text}");
        }
        check_classic(&text);
    }

    /// Both formats take the help texts as they are: nothing in them needs escaping.
    #[test]
    fn help_texts_need_no_escaping() {
        let text = rendered(Format::Text);
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
        assert_eq!(helps.len(), 12, "{text}");
        for help in helps {
            assert!(!help.contains(['\\', '"']), "{help}");
        }
    }

    /// What prometheus-client can write beyond what we use (units, exemplars, info metrics,
    /// unknown types, escaped label values) also comes out as classic text.
    #[test]
    fn converts_every_openmetrics_construct_prometheus_client_writes() {
        use prometheus_client::metrics::exemplar::CounterWithExemplar;
        use prometheus_client::metrics::info::Info;
        use prometheus_client::registry::Unit;
        let mut reg = Registry::default();
        let c = CounterWithExemplar::<Labels>::default();
        c.inc_by(2, Some(vec![("trace_id".into(), "a # {b}".into())]), None);
        reg.register_with_unit("busy", "Busy time", Unit::Seconds, c);
        reg.register(
            "build",
            "Build",
            Info::new(vec![("v".to_owned(), "1 } {".to_owned())]),
        );
        let odd = Family::<Labels, Counter>::default();
        odd.get_or_create(&labels(&[("path", "a\"b\\c\nd} 7 # x")]))
            .inc();
        reg.register("odd", "Odd label values", odd);
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &reg).unwrap();
        assert!(om.contains("# UNIT busy_seconds seconds"), "{om}");
        let text = openmetrics_to_text(&om);
        assert_eq!(
            text,
            concat!(
                "# HELP busy_seconds_total Busy time.\n",
                "# TYPE busy_seconds_total counter\n",
                "busy_seconds_total 2\n",
                "# HELP build_info Build.\n",
                "# TYPE build_info gauge\n",
                "build_info{v=\"1 } {\"} 1\n",
                "# HELP odd_total Odd label values.\n",
                "# TYPE odd_total counter\n",
                "odd_total{path=\"a\\\"b\\\\c\\nd} 7 # x\"} 1\n",
            ),
            "from:\n{om}"
        );
        check_classic(&text);
        // Created timestamps and sample timestamps, which prometheus-client does not write.
        let text = openmetrics_to_text(concat!(
            "# TYPE x counter\n",
            "x_total 1 1700000000.5\n",
            "x_created 1699999999\n",
            "# TYPE y unknown\n",
            "y 3\n",
            "# EOF\n"
        ));
        assert_eq!(
            text,
            "# TYPE x_total counter\nx_total 1 1700000000500\n# TYPE y untyped\ny 3\n"
        );
    }

    /// Checks the rules of the classic text format 0.0.4 that differ from OpenMetrics: one
    /// TYPE per family, before its samples; counters named `_total` in TYPE and samples;
    /// histogram samples `_bucket` (with `le`), `_sum`, `_count`; plain numeric values; no
    /// other comment lines than HELP and TYPE.
    fn check_classic(text: &str) {
        let mut types = HashMap::new();
        let mut family: Option<(&str, &str)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(types.insert(name, kind).is_none(), "second TYPE: {line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                family = Some((name, kind));
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!types.contains_key(name), "HELP after TYPE: {line}");
            } else {
                assert!(!line.starts_with('#'), "{line}");
                let (series, value, timestamp) = split_sample(line);
                let name = series.split('{').next().unwrap();
                let (fam, kind) = family.expect("sample before any TYPE");
                let ok = match kind {
                    "histogram" => {
                        (name == format!("{fam}_bucket") && series.contains("le=\""))
                            || name == format!("{fam}_sum")
                            || name == format!("{fam}_count")
                    }
                    _ => name == fam,
                };
                assert!(ok, "sample {name} in family {fam} ({kind})");
                assert!(
                    ["+Inf", "-Inf", "NaN"].contains(&value) || value.parse::<f64>().is_ok(),
                    "{line}"
                );
                assert!(timestamp.is_none_or(|t| t.parse::<i64>().is_ok()), "{line}");
            }
        }
    }

    #[test]
    fn negotiates_like_the_prometheus_client_libraries() {
        let om = Format::OpenMetrics;
        for (accept, want) in [
            (&[][..], Format::Text),
            (&["*/*"], Format::Text),
            (&["text/plain"], Format::Text),
            (&["application/json"], Format::Text),
            (&["text/*, application/*"], Format::Text),
            (&["application/openmetrics-text"], om),
            (&["Application/OpenMetrics-Text; Version=\"1.0.0\""], om),
            (
                &["application/openmetrics-text; version=0.0.1"],
                Format::OpenMetrics001,
            ),
            (
                &["application/openmetrics-text; version=2.0.0"],
                Format::Text,
            ),
            (&["application/openmetrics-text;q=0"], Format::Text),
            (&["application/openmetrics-text;q=x"], Format::Text),
            // Prometheus 2.x's default scrape Accept header.
            (
                &[
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                   version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ],
                om,
            ),
            // Prometheus 3.x's default.
            (
                &[
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8,\
                   application/openmetrics-text;version=0.0.1;q=0.9,\
                   text/plain;version=1.0.0;escaping=allow-utf-8;q=0.8,\
                   text/plain;version=0.0.4;q=0.7,*/*;q=0.6",
                ],
                om,
            ),
            // scrape_protocols: [PrometheusText0.0.4]
            (&["text/plain;version=0.0.4;q=0.5,*/*;q=0.1"], Format::Text),
            // Protobuf first, which we do not serve.
            (
                &[
                    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                   encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ],
                Format::Text,
            ),
            // The higher q wins, wherever it is; on a tie, the first.
            (
                &["text/plain;q=0.5, application/openmetrics-text;q=0.9"],
                om,
            ),
            (
                &["application/openmetrics-text;q=0.4, text/plain"],
                Format::Text,
            ),
            (&["text/plain, application/openmetrics-text"], Format::Text),
            (&["application/openmetrics-text, text/plain"], om),
            // Several Accept headers read as one list.
            (
                &["text/plain;q=0.1", "application/openmetrics-text;q=0.2"],
                om,
            ),
        ] {
            assert_eq!(
                Format::negotiate(accept.iter().copied()),
                want,
                "{accept:?}"
            );
        }
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(om
            .content_type()
            .starts_with("application/openmetrics-text; version=1.0.0"));
    }
}
