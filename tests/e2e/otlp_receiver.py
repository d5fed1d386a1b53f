"""An OTLP receiver for the tests: OTLP/HTTP (protobuf) and OTLP/gRPC, decoded with the
official `opentelemetry-proto` messages. It keeps what it was sent, flattened: spans, metric
names and log records, each with its resource's `service.name` and its scope's name."""

import gzip
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass
class Received:
    spans: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    logs: list = field(default_factory=list)
    # (path or method, content type) of every export, to show which transport carried it.
    exports: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_traces(self, req: trace_service_pb2.ExportTraceServiceRequest):
        with self.lock:
            for rs in req.resource_spans:
                service = _service(rs.resource)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({
                            "service": service,
                            "scope": ss.scope.name,
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "attributes": _attributes(s.attributes),
                            "status": s.status.code,
                        })

    def add_metrics(self, req: metrics_service_pb2.ExportMetricsServiceRequest):
        with self.lock:
            for rm in req.resource_metrics:
                service = _service(rm.resource)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        self.metrics.append({"service": service, "scope": sm.scope.name,
                                             "name": m.name, "metric": m})

    def add_logs(self, req: logs_service_pb2.ExportLogsServiceRequest):
        with self.lock:
            for rl in req.resource_logs:
                service = _service(rl.resource)
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        self.logs.append({
                            "service": service,
                            "scope": sl.scope.name,
                            "body": r.body.string_value,
                            "event_name": r.event_name,
                            "trace_id": r.trace_id.hex(),
                            "span_id": r.span_id.hex(),
                            "attributes": _attributes(r.attributes),
                        })

    def snapshot(self) -> tuple:
        with self.lock:
            return list(self.spans), list(self.metrics), list(self.logs)


def _service(resource) -> str:
    return _attributes(resource.attributes).get("service.name", "")


def _attributes(kvs) -> dict:
    out = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = getattr(v, kind) if kind else None
    return out


_PATHS = {
    "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest,
                   trace_service_pb2.ExportTraceServiceResponse, "add_traces"),
    "/v1/metrics": (metrics_service_pb2.ExportMetricsServiceRequest,
                    metrics_service_pb2.ExportMetricsServiceResponse, "add_metrics"),
    "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest,
                 logs_service_pb2.ExportLogsServiceResponse, "add_logs"),
}


class HttpReceiver:
    """OTLP/HTTP with protobuf bodies on 127.0.0.1 (a free port)."""

    def __init__(self):
        self.received = Received()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                entry = _PATHS.get(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if entry is None or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404 if entry is None else 415)
                    self.end_headers()
                    return
                request_type, response_type, add = entry
                request = request_type()
                request.ParseFromString(body)
                with received.lock:
                    received.exports.append((self.path, self.headers.get("Content-Type")))
                getattr(received, add)(request)
                answer = response_type().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class GrpcReceiver:
    """OTLP/gRPC (plain HTTP/2) on 127.0.0.1 (a free port)."""

    def __init__(self):
        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.received = received = Received()

        def servicer(base, add, response_type, method):
            class S(base):
                def Export(self, request, context):
                    with received.lock:
                        received.exports.append((method, "grpc"))
                    getattr(received, add)(request)
                    return response_type()
            return S()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            servicer(trace_service_pb2_grpc.TraceServiceServicer, "add_traces",
                     trace_service_pb2.ExportTraceServiceResponse, "TraceService/Export"),
            self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            servicer(metrics_service_pb2_grpc.MetricsServiceServicer, "add_metrics",
                     metrics_service_pb2.ExportMetricsServiceResponse, "MetricsService/Export"),
            self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
            servicer(logs_service_pb2_grpc.LogsServiceServicer, "add_logs",
                     logs_service_pb2.ExportLogsServiceResponse, "LogsService/Export"),
            self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{port}"
        self.server.start()

    def stop(self):
        self.server.stop(grace=None)


def wait_for(pred, timeout=20.0):
    """Polls `pred` until it returns something true, or returns its last answer."""
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got or time.monotonic() > end:
            return got
        time.sleep(0.1)
