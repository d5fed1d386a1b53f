//! OpenTelemetry: OTLP push of traces, metrics and the audit log, with the official SDK.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`);
//! then [`init`] builds one tracer, meter and logger provider from the standard variables
//! (`OTEL_EXPORTER_OTLP_*`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_{TRACES,METRICS,LOGS}_EXPORTER=none`,
//! the batch processors' `OTEL_BSP_*`/`OTEL_BLRP_*`), which the SDK reads itself.
//! `OTEL_EXPORTER_OTLP_PROTOCOL` picks the transport: `http/protobuf` (the default) through
//! [`HyperClient`], on the hyper and rustls the frontend already has, or `grpc` through tonic.
//!
//! What is traced: every HTTP request ([`trace_request`]: a server span, honouring an incoming
//! W3C `traceparent`), each `tools/call` under it ([`ToolSpan`]), and under that the
//! executor's own spans, which come back with the executor's answer and are exported here
//! with the ids the executor drew ([`export_executor_spans`]): the executor never opens a
//! network socket. Metrics: the frontend's request and tool durations as histograms, and the
//! executor's counters as observable instruments; logs: the executor's audit records — both
//! read from the executor by [`crate::otel_executor`], when its operator enabled them.
//!
//! When off, each hook costs one atomic load ([`get`]).

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use mymcp_protocol::{
    Direction, ExecutorSpans, FrontendResponse, SpanName, SpanStatus, TraceContext,
    DURATION_BUCKETS,
};
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// The instrumentation scope of the frontend's spans and instruments.
const FRONTEND_SCOPE: &str = "mymcp-frontend";
/// The scope of the spans the executor recorded (exported here).
const EXECUTOR_SCOPE: &str = "mymcp-executor";
/// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
const DEFAULT_SERVICE_NAME: &str = "mymcp";
/// The header variables, which often carry an API key: taken out of the environment at start.
pub const HEADER_VARIABLES: [&str; 4] = [
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
];
/// Longest an OTLP response body is read.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Why OpenTelemetry could not be set up (start-up fails with it: a set endpoint that cannot
/// be used is a configuration error, not something to run without silently).
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("{variable}={value:?} is not supported: use http/protobuf or grpc")]
    Protocol { variable: String, value: String },
    #[error("{variable}={value:?} is not supported: the exporter is built without compression (use none)")]
    Compression { variable: String, value: String },
    #[error("OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The set-up SDK, once [`init`] has run with an endpoint.
#[derive(Debug)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    logger_provider: Option<SdkLoggerProvider>,
    frontend: Option<Tracer>,
    executor: Option<Tracer>,
    meter: Option<Meter>,
    audit: Option<SdkLogger>,
    tool_duration: Option<Histogram<f64>>,
    http_duration: Option<Histogram<f64>>,
    runtime: tokio::runtime::Handle,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// The SDK, when on.
pub fn get() -> Option<&'static Telemetry> {
    TELEMETRY.get()
}

impl Telemetry {
    /// The frontend's meter, when metrics are exported.
    pub fn meter(&self) -> Option<&Meter> {
        self.meter.as_ref()
    }

    /// The logger of the audit records, when logs are exported.
    pub fn audit_logger(&self) -> Option<&SdkLogger> {
        self.audit.as_ref()
    }

    /// The runtime the frontend serves on (the SDK's threads block on it).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

/// Header values taken from the environment at start ([`HEADER_VARIABLES`]).
#[derive(Clone, Debug, Default)]
pub struct ExporterHeaders(Vec<(String, String)>);

impl ExporterHeaders {
    /// Takes the header variables out of the environment (overwritten where
    /// `/proc/<pid>/environ` shows them). Call while the process has one thread.
    pub fn take_from_env() -> Self {
        ExporterHeaders(mymcp_service::environment::take_secrets(&HEADER_VARIABLES))
    }

    /// The headers for `signal`: its own variable, else the general one (as the spec says).
    fn for_signal(&self, signal: &str) -> HashMap<String, String> {
        let own = format!("OTEL_EXPORTER_OTLP_{signal}_HEADERS");
        let raw = self
            .0
            .iter()
            .find(|(k, _)| *k == own)
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(k, _)| k == "OTEL_EXPORTER_OTLP_HEADERS")
            })
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        parse_headers(raw)
    }
}

/// `k1=v1,k2=v2`, values percent-decoded (W3C baggage octets, as the spec says).
fn parse_headers(raw: &str) -> HashMap<String, String> {
    raw.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which OTLP transport a signal uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    HttpProtobuf,
    Grpc,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn transport(signal: &str) -> Result<Transport, OtelError> {
    let own = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
    let (variable, value) = match env(&own) {
        Some(v) => (own, v),
        None => match env("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(v) => ("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), v),
            None => return Ok(Transport::HttpProtobuf),
        },
    };
    match value.trim() {
        "http/protobuf" => Ok(Transport::HttpProtobuf),
        "grpc" => Ok(Transport::Grpc),
        other => Err(OtelError::Protocol {
            variable,
            value: other.to_owned(),
        }),
    }
}

/// Refuses a compression the exporter is not built with (rather than losing every export).
fn no_compression() -> Result<(), OtelError> {
    for variable in [
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
    ] {
        if let Some(value) = env(variable).filter(|v| v.trim() != "none") {
            return Err(OtelError::Compression {
                variable: variable.to_owned(),
                value,
            });
        }
    }
    Ok(())
}

/// Whether a signal is exported: not when `OTEL_<SIGNAL>_EXPORTER=none`.
fn signal_on(signal: &str) -> bool {
    env(&format!("OTEL_{signal}_EXPORTER")).is_none_or(|v| v.trim() != "none")
}

/// Whether the endpoint of `signal` is HTTPS (tonic then needs a TLS configuration).
fn https(signal: &str) -> bool {
    env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some_and(|e| e.trim_start().to_ascii_lowercase().starts_with("https:"))
}

fn grpc_tls() -> opentelemetry_otlp::tonic_types::transport::ClientTlsConfig {
    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_webpki_roots()
}

fn metadata(
    headers: HashMap<String, String>,
) -> opentelemetry_otlp::tonic_types::metadata::MetadataMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            map.insert(k, v);
        }
    }
    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map)
}

/// Sets the SDK up when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Must run inside the runtime
/// (tonic's channels start a task on it). Returns whether telemetry is on.
pub fn init(headers: &ExporterHeaders) -> Result<bool, OtelError> {
    if env("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        || env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Ok(false);
    }
    no_compression()?;
    let runtime = tokio::runtime::Handle::current();
    let client = HyperClient::new(runtime.clone());
    let resource = resource();
    let exporter_error = |signal| move |source| OtelError::Exporter { signal, source };

    let tracer_provider = if signal_on("TRACES") {
        let exporter = match transport("TRACES")? {
            Transport::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client.clone())
                .with_headers(headers.for_signal("TRACES"))
                .build(),
            Transport::Grpc => {
                let b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_metadata(metadata(headers.for_signal("TRACES")));
                if https("TRACES") {
                    b.with_tls_config(grpc_tls()).build()
                } else {
                    b.build()
                }
            }
        }
        .map_err(exporter_error("traces"))?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_id_generator(PresetIds)
                .with_resource(resource.clone())
                .build(),
        )
    } else {
        None
    };

    let meter_provider = if signal_on("METRICS") {
        let exporter = match transport("METRICS")? {
            Transport::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_http_client(client.clone())
                .with_headers(headers.for_signal("METRICS"))
                .build(),
            Transport::Grpc => {
                let b = opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_metadata(metadata(headers.for_signal("METRICS")));
                if https("METRICS") {
                    b.with_tls_config(grpc_tls()).build()
                } else {
                    b.build()
                }
            }
        }
        .map_err(exporter_error("metrics"))?;
        Some(
            SdkMeterProvider::builder()
                .with_reader(PeriodicReader::builder(exporter).build())
                .with_resource(resource.clone())
                .build(),
        )
    } else {
        None
    };

    let logger_provider = if signal_on("LOGS") {
        let exporter = match transport("LOGS")? {
            Transport::HttpProtobuf => opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_headers(headers.for_signal("LOGS"))
                .build(),
            Transport::Grpc => {
                let b = opentelemetry_otlp::LogExporter::builder()
                    .with_tonic()
                    .with_metadata(metadata(headers.for_signal("LOGS")));
                if https("LOGS") {
                    b.with_tls_config(grpc_tls()).build()
                } else {
                    b.build()
                }
            }
        }
        .map_err(exporter_error("logs"))?;
        Some(
            SdkLoggerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    } else {
        None
    };

    let meter = meter_provider.as_ref().map(|p| p.meter(FRONTEND_SCOPE));
    let bounds = DURATION_BUCKETS.to_vec();
    let telemetry = Telemetry {
        frontend: tracer_provider.as_ref().map(|p| p.tracer(FRONTEND_SCOPE)),
        executor: tracer_provider.as_ref().map(|p| p.tracer(EXECUTOR_SCOPE)),
        audit: logger_provider.as_ref().map(|p| p.logger(EXECUTOR_SCOPE)),
        tool_duration: meter.as_ref().map(|m| {
            m.f64_histogram("mymcp.tool.duration")
                .with_unit("s")
                .with_description(
                    "Tool calls by tool, as the frontend times them (the executor round trip)",
                )
                .with_boundaries(bounds.clone())
                .build()
        }),
        http_duration: meter.as_ref().map(|m| {
            m.f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("HTTP requests by route, method and status")
                .with_boundaries(bounds)
                .build()
        }),
        meter,
        tracer_provider,
        meter_provider,
        logger_provider,
        runtime,
    };
    let _ = TELEMETRY.set(telemetry);
    Ok(true)
}

/// The resource: the standard detectors (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`),
/// `service.name` `mymcp` unless named there, and our version.
fn resource() -> Resource {
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    let builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        builder.build()
    } else {
        builder.with_service_name(DEFAULT_SERVICE_NAME).build()
    }
}

/// Flushes and stops the exporters (at shutdown, outside the runtime's threads).
pub fn shutdown() {
    let Some(t) = get() else { return };
    if let Some(p) = &t.tracer_provider {
        let _ = p.shutdown();
    }
    if let Some(p) = &t.meter_provider {
        let _ = p.shutdown();
    }
    if let Some(p) = &t.logger_provider {
        let _ = p.shutdown();
    }
}

// Span ids -----------------------------------------------------------------------------------

thread_local! {
    /// The id the next span built on this thread gets (an executor span's own id).
    static PRESET: Cell<Option<opentelemetry::trace::SpanId>> = const { Cell::new(None) };
}

/// Random ids, except for a span whose id the executor drew: the SDK asks the generator once
/// per span, first thing, and [`export_executor_spans`] presets that answer on its thread.
#[derive(Debug)]
struct PresetIds;

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> opentelemetry::trace::TraceId {
        RandomIdGenerator::default().new_trace_id()
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        PRESET
            .with(Cell::take)
            .unwrap_or_else(|| RandomIdGenerator::default().new_span_id())
    }
}

// Traces -------------------------------------------------------------------------------------

/// The wire form of the current span: what the executor continues, and what its audit
/// records name.
pub fn wire_context(cx: &Context) -> Option<TraceContext> {
    get()?.frontend.as_ref()?;
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    Some(TraceContext {
        trace_id: mymcp_protocol::TraceId(sc.trace_id().to_bytes()),
        parent: mymcp_protocol::SpanId(sc.span_id().to_bytes()),
        sampled: sc.is_sampled(),
    })
}

/// The current span's wire form (see [`wire_context`]).
pub fn current_wire() -> Option<TraceContext> {
    get()?;
    wire_context(&Context::current())
}

/// Middleware: a server span per HTTP request, child of the client's `traceparent` if it sent
/// one; the handler runs with it as the current context. The request's duration goes to
/// `http.server.request.duration`. Tickets (bearer capabilities in the path) never reach a
/// span: only the route pattern does.
pub async fn trace_request(request: Request, next: Next) -> Response {
    let Some(t) = get() else {
        return next.run(request).await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "<unmatched>".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let cx = match &t.frontend {
        Some(tracer) => {
            let parent = TraceContextPropagator::new()
                .extract(&opentelemetry_http::HeaderExtractor(request.headers()));
            let span = tracer
                .span_builder(format!("{method} {route}"))
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("http.request.method", method.clone()),
                    KeyValue::new("http.route", route.clone()),
                ])
                .start_with_context(tracer, &parent);
            Some(parent.with_span(span))
        }
        None => None,
    };
    let response = match &cx {
        Some(cx) => {
            use opentelemetry::context::FutureExt as _;
            next.run(request).with_context(cx.clone()).await
        }
        None => next.run(request).await,
    };
    let status = response.status().as_u16();
    if let Some(cx) = cx {
        let span = cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", status as i64));
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
    if let Some(h) = &t.http_duration {
        h.record(
            started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route),
                KeyValue::new("http.response.status_code", status as i64),
            ],
        );
    }
    response
}

/// Spawns `task` in the current trace context when tracing is on, else as a plain task.
pub fn spawn_in_trace<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use opentelemetry::context::FutureExt as _;
    match get().and_then(|t| t.frontend.as_ref()) {
        Some(_) => tokio::spawn(task.with_context(Context::current())),
        None => tokio::spawn(task),
    }
}

/// The frontend's span of one `tools/call`, child of the current (HTTP) span; the executor's
/// spans hang under it.
#[derive(Debug)]
pub struct ToolSpan {
    cx: Option<Context>,
    /// When OpenTelemetry is on (no clock read otherwise).
    started: Option<Instant>,
    tool: &'static str,
}

impl ToolSpan {
    /// Starts the span (nothing when telemetry is off).
    pub fn start(tool: &'static str, request_id: &serde_json::Value) -> ToolSpan {
        let cx = get().and_then(|t| t.frontend.as_ref()).map(|tracer| {
            let parent = Context::current();
            let id = match request_id {
                serde_json::Value::String(s) => s.chars().take(64).collect(),
                other => other.to_string(),
            };
            let span = tracer
                .span_builder(format!("tools/call {tool}"))
                .with_kind(SpanKind::Internal)
                .with_attributes([
                    KeyValue::new("mcp.method.name", "tools/call"),
                    KeyValue::new("gen_ai.operation.name", "execute_tool"),
                    KeyValue::new("gen_ai.tool.name", tool),
                    KeyValue::new("jsonrpc.request.id", id),
                ])
                .start_with_context(tracer, &parent);
            parent.with_span(span)
        });
        ToolSpan {
            cx,
            started: get().map(|_| Instant::now()),
            tool,
        }
    }

    /// What the executor continues.
    pub fn wire(&self) -> Option<TraceContext> {
        self.cx.as_ref().and_then(wire_context)
    }

    /// Ends the span with the call's outcome and records its duration: `failure` is the
    /// failure code when the call failed, `denied` when it was refused for the role.
    pub fn end(self, failure: Option<&str>, denied: bool) {
        let Some(t) = get() else { return };
        if let Some(cx) = &self.cx {
            let span = cx.span();
            if let Some(code) = failure {
                span.set_attribute(KeyValue::new("error.type", code.to_owned()));
                span.set_status(Status::error(code.to_owned()));
            }
            span.end();
        }
        // As /metrics: denied calls have no duration.
        if let (Some(h), Some(started), false) = (&t.tool_duration, self.started, denied) {
            h.record(
                started.elapsed().as_secs_f64(),
                &[KeyValue::new("tool", self.tool)],
            );
        }
    }
}

/// Exports the spans the executor recorded for a request whose context was `context`, with
/// the executor's ids, times and parents.
pub fn export_executor_spans(context: &TraceContext, spans: &ExecutorSpans) {
    let Some(tracer) = get().and_then(|t| t.executor.as_ref()) else {
        return;
    };
    let trace_id = opentelemetry::trace::TraceId::from_bytes(context.trace_id.0);
    let sampled = TraceFlags::SAMPLED;
    let remote = SpanContext::new(
        trace_id,
        opentelemetry::trace::SpanId::from_bytes(context.parent.0),
        sampled,
        true,
        TraceState::default(),
    );
    let mut made: Vec<SpanContext> = Vec::with_capacity(spans.as_slice().len());
    for s in spans.as_slice() {
        let parent = match s.parent.and_then(|p| made.get(p as usize)) {
            Some(sc) => sc.clone(),
            None => remote.clone(),
        };
        let parent = Context::new().with_remote_span_context(parent);
        let a = &s.attributes;
        let name = match (s.name, a.tool, a.direction) {
            (SpanName::ExecuteTool, Some(tool), _) => format!("execute_tool {}", tool.as_str()),
            (SpanName::Refused, Some(tool), _) => format!("refused call {}", tool.as_str()),
            (SpanName::Transfer, _, Some(Direction::Upload)) => "transfer upload".to_owned(),
            (SpanName::Transfer, _, Some(Direction::Download)) => "transfer download".to_owned(),
            (name, _, _) => name.as_str().to_owned(),
        };
        let mut attributes = Vec::with_capacity(6);
        if let Some(tool) = a.tool {
            attributes.push(KeyValue::new("gen_ai.tool.name", tool.as_str()));
            attributes.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        }
        if let Some(role) = a.role {
            attributes.push(KeyValue::new("mymcp.role", role.as_str()));
        }
        if let Some(result) = a.result {
            attributes.push(KeyValue::new("mymcp.result", result.as_str()));
        }
        if let Some(code) = a.error {
            attributes.push(KeyValue::new("error.type", code.as_str()));
        }
        if let Some(code) = a.exit_code {
            attributes.push(KeyValue::new("process.exit.code", code as i64));
        }
        if let Some(d) = a.direction {
            attributes.push(KeyValue::new(
                "mymcp.transfer.direction",
                match d {
                    Direction::Upload => "upload",
                    Direction::Download => "download",
                },
            ));
        }
        if let Some(bytes) = a.bytes {
            attributes.push(KeyValue::new("mymcp.transfer.bytes", bytes as i64));
        }
        let start = UNIX_EPOCH + Duration::from_nanos(s.start_unix_nanos);
        let id = opentelemetry::trace::SpanId::from_bytes(s.span_id.0);
        PRESET.with(|p| p.set(Some(id)));
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        // The SDK asked for the id unless it refused the span outright (shut down).
        PRESET.with(Cell::take);
        match s.status {
            SpanStatus::Ok => span.set_status(Status::Ok),
            SpanStatus::Error => span.set_status(Status::error(
                a.error.map(|c| c.as_str()).unwrap_or("").to_owned(),
            )),
            SpanStatus::Unset => {}
        }
        made.push(SpanContext::new(
            trace_id,
            id,
            sampled,
            false,
            TraceState::default(),
        ));
        span.end_with_timestamp(start + Duration::from_nanos(s.duration_nanos));
    }
}

/// The executor's answer, with its spans exported (see [`export_executor_spans`]).
pub fn untraced(response: FrontendResponse) -> FrontendResponse {
    match response {
        FrontendResponse::Traced(traced) => {
            let context = traced.context;
            let (response, spans) = traced.split();
            export_executor_spans(&context, &spans);
            response
        }
        other => other,
    }
}

// The HTTP client ----------------------------------------------------------------------------

/// The OTLP/HTTP exporters' client: hyper with rustls (ring, Mozilla's roots), the stack the
/// frontend already has. The SDK calls it from its own export threads, outside the runtime, so
/// each request runs as a task on the runtime and is awaited from there.
#[derive(Clone, Debug)]
pub struct HyperClient {
    runtime: tokio::runtime::Handle,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    timeout: Duration,
}

impl HyperClient {
    fn new(runtime: tokio::runtime::Handle) -> HyperClient {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        // OTEL_EXPORTER_OTLP_TIMEOUT, in milliseconds (10 s by default, as the spec says).
        let timeout = env("OTEL_EXPORTER_OTLP_TIMEOUT")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        HyperClient {
            runtime,
            client,
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HyperClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        let task = self.runtime.spawn(async move {
            let exchange = async {
                let (parts, body) = request.into_parts();
                let response = client
                    .request(http::Request::from_parts(parts, Full::new(body)))
                    .await?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| -> opentelemetry_http::HttpError { "OTLP request timed out".into() })?
        });
        task.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_parsed_and_percent_decoded() {
        let h = parse_headers("api-key=a%20b, x=1,bad,=v");
        assert_eq!(h.get("api-key").map(String::as_str), Some("a b"));
        assert_eq!(h.get("x").map(String::as_str), Some("1"));
        assert_eq!(h.len(), 2);
        let headers = ExporterHeaders(vec![
            ("OTEL_EXPORTER_OTLP_HEADERS".into(), "a=1".into()),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS".into(), "b=2".into()),
        ]);
        assert!(headers.for_signal("TRACES").contains_key("a"));
        assert!(headers.for_signal("LOGS").contains_key("b"));
        assert!(!headers.for_signal("LOGS").contains_key("a"));
    }
}
