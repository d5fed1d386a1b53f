"""OpenTelemetry end to end: the quick try with OTEL_EXPORTER_OTLP_ENDPOINT pointing at an OTLP
receiver started here (built on the official opentelemetry-proto messages), over OTLP/HTTP and
OTLP/gRPC. A tools/call is one trace: the frontend's spans and the executor's (which the
executor hands back in its answer, never opening a socket itself) share its trace id, parent to
child; the local audit record names the same trace and span; the audit record arrives as an
OTLP log record when the executor's operator opted in, and not otherwise; metrics arrive."""

import json
import os
from pathlib import Path

import pytest

from conftest import start_server, stop_server, tool_json, with_session
from otlp_receiver import GrpcReceiver, HttpReceiver, wait_for


def otel_env(endpoint: str, protocol: str, **more) -> dict:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": "mymcp-e2e",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "MYMCP_OTLP_EXECUTOR_METRICS": "true",
        **more,
    }


def audit_lines(server) -> list:
    path = Path(server.runtime_dir).parent / "audit" / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def call_tools(server) -> tuple:
    async def calls(session, _init):
        read = tool_json(await session.call_tool("read_file", {"file_path": "/etc/hostname"}))
        bash = tool_json(await session.call_tool("bash_execute", {"command": "echo traced"}))
        return read, bash

    return with_session(server.url, server.rw_token, calls)


def one_trace(received, tool: str) -> dict:
    """The spans of the tools/call of `tool`: the frontend's, the executor's under it."""
    spans, _, _ = received.snapshot()
    front = [s for s in spans if s["scope"] == "mymcp-frontend" and s["name"] == f"tools/call {tool}"]
    if not front:
        return {}
    call = front[-1]
    execute = [s for s in spans if s["scope"] == "mymcp-executor"
               and s["name"] == f"execute_tool {tool}" and s["parent_span_id"] == call["span_id"]]
    if not execute:
        return {}
    steps = [s for s in spans if s["parent_span_id"] == execute[0]["span_id"]]
    http = [s for s in spans if s["span_id"] == call["parent_span_id"]]
    return {"call": call, "execute": execute[0], "steps": steps, "http": http}


def check_one_trace(received, tool: str, step_names: set) -> dict:
    trace = wait_for(lambda: (t := one_trace(received, tool)) and
                     {s["name"] for s in t["steps"]} >= step_names and t["http"] and t)
    assert trace, f"no {tool} trace with both processes' spans: {received.snapshot()[0]}"
    call, execute = trace["call"], trace["execute"]
    assert call["trace_id"] == execute["trace_id"] == trace["http"][0]["trace_id"]
    assert all(s["trace_id"] == call["trace_id"] for s in trace["steps"])
    assert trace["http"][0]["name"] == "POST /mcp"
    assert {call["service"], execute["service"]} == {"mymcp-e2e"}
    assert execute["attributes"]["gen_ai.tool.name"] == tool
    assert execute["attributes"]["mymcp.result"] == "ok"
    assert execute["attributes"]["mymcp.role"] == "rw"
    return trace


def check_audit_names(server, tool: str, trace: dict) -> dict:
    records = [r for r in audit_lines(server) if r.get("tool") == tool and "result" in r]
    assert records, audit_lines(server)
    record = records[-1]
    assert record["trace_id"] == trace["execute"]["trace_id"]
    assert record["span_id"] == trace["execute"]["span_id"]
    return record


@pytest.fixture
def http_receiver():
    r = HttpReceiver()
    yield r
    r.stop()


def test_otlp_http_one_trace_across_both_processes_metrics_and_audit_logs(http_receiver):
    received = http_receiver.received
    server = start_server(otel_env(http_receiver.endpoint, "http/protobuf",
                                   MYMCP_OTLP_AUDIT_LOGS="true"))
    try:
        read, bash = call_tools(server)
        assert read["content"] and bash["stdout"] == "traced\n"

        read_trace = check_one_trace(received, "read_file", {"run"})
        bash_trace = check_one_trace(
            received, "bash_execute", {"audit start record", "run", "audit outcome record"})
        assert read_trace["call"]["trace_id"] != bash_trace["call"]["trace_id"]
        read_record = check_audit_names(server, "read_file", read_trace)
        check_audit_names(server, "bash_execute", bash_trace)
        # The record of bash_execute's start (before the side effect) names the same span.
        starts = [r for r in audit_lines(server)
                  if r.get("tool") == "bash_execute" and "result" not in r]
        assert starts and starts[-1]["span_id"] == bash_trace["execute"]["span_id"]

        # The audit records, as OTLP log records with the call's trace context.
        def audit_log_of_read():
            _, _, logs = received.snapshot()
            return [r for r in logs if r["event_name"] == "mymcp.audit"
                    and r["trace_id"] == read_trace["execute"]["trace_id"]]
        logs = wait_for(audit_log_of_read)
        assert logs, received.snapshot()[2]
        log = logs[-1]
        assert log["span_id"] == read_trace["execute"]["span_id"]
        assert log["attributes"]["mymcp.audit.tool"] == "read_file"
        assert log["attributes"]["mymcp.audit.seq"] == read_record["seq"]
        body = json.loads(log["body"])
        assert {k: v for k, v in read_record.items() if k not in ("seq", "prev")} == body

        # Metrics: the frontend's own and the executor's counters (read over the socket).
        def metric_names():
            _, metrics, _ = received.snapshot()
            names = {m["name"] for m in metrics}
            return names if {"mymcp.tool.duration", "mymcp.tool.calls",
                             "http.server.request.duration"} <= names else None
        assert wait_for(metric_names), {m["name"] for m in received.snapshot()[1]}
        _, metrics, _ = received.snapshot()
        calls = [m["metric"] for m in metrics if m["name"] == "mymcp.tool.calls"][-1]
        points = {(a["tool"], a["result"]): p.as_int for p in calls.sum.data_points
                  for a in [{kv.key: kv.value.string_value for kv in p.attributes}]}
        assert points.get(("read_file", "ok"), 0) >= 1, points
        assert {path for path, _ in received.exports} >= {"/v1/traces", "/v1/metrics", "/v1/logs"}
        assert {ct for _, ct in received.exports} == {"application/x-protobuf"}
    finally:
        stop_server(server)


def test_a_clients_traceparent_is_continued_into_the_executor(http_receiver):
    import urllib.request

    received = http_receiver.received
    server = start_server(otel_env(http_receiver.endpoint, "http/protobuf"))
    try:
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                           "params": {"name": "read_file",
                                      "arguments": {"file_path": "/etc/hostname"}}}).encode()
        request = urllib.request.Request(server.url, data=body, method="POST", headers={
            "Authorization": f"Bearer {server.rw_token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-06-18",
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        })
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200
        trace = check_one_trace(received, "read_file", {"run"})
        assert trace["execute"]["trace_id"] == trace_id
        assert trace["http"][0]["parent_span_id"] == "00f067aa0ba902b7"
        check_audit_names(server, "read_file", trace)
    finally:
        stop_server(server)


def test_a_download_is_one_trace_and_its_audit_records_name_it(http_receiver, tmp_path):
    import urllib.request

    received = http_receiver.received
    server = start_server(otel_env(http_receiver.endpoint, "http/protobuf"))
    try:
        src = tmp_path / "blob.bin"
        src.write_bytes(b"x" * 5000)
        os.chmod(tmp_path, 0o755)

        async def prepare(session, _init):
            return tool_json(await session.call_tool("prepare_download", {"src_path": str(src)}))

        grant = with_session(server.url, server.rw_token, prepare)
        with urllib.request.urlopen(grant["url"], timeout=30) as r:
            assert r.read() == src.read_bytes()

        def transfer():
            spans, _, _ = received.snapshot()
            http = [s for s in spans if s["name"] == "GET /files/raw/{ticket}"]
            done = [s for s in spans if s["name"] == "transfer download" and http
                    and s["parent_span_id"] == http[-1]["span_id"]]
            return done and (http[-1], done[-1])
        found = wait_for(transfer)
        assert found, received.snapshot()[0]
        http, span = found
        assert span["scope"] == "mymcp-executor" and span["trace_id"] == http["trace_id"]
        assert span["attributes"]["mymcp.transfer.bytes"] == 5000
        # The ticket (a bearer capability) is in no span: only the route pattern is.
        ticket = grant["url"].rsplit("/", 1)[1]
        assert not any(ticket in json.dumps(s) for s in received.snapshot()[0])
        records = [r for r in audit_lines(server) if r.get("tool") == "transfer_download"]
        assert len(records) == 2, records
        assert all((r["trace_id"], r["span_id"]) == (span["trace_id"], span["span_id"])
                   for r in records), records
    finally:
        stop_server(server)


def test_otlp_grpc_one_trace_and_no_audit_logs_unless_opted_in():
    receiver = GrpcReceiver()
    received = receiver.received
    server = start_server(otel_env(receiver.endpoint, "grpc"))
    try:
        read, _ = call_tools(server)
        assert read["content"]
        trace = check_one_trace(received, "read_file", {"run"})
        check_audit_names(server, "read_file", trace)
        assert wait_for(lambda: any(m["name"] == "mymcp.tool.calls"
                                    for m in received.snapshot()[1]))
        assert {m for m, _ in received.exports} >= {"TraceService/Export", "MetricsService/Export"}
        # MYMCP_OTLP_AUDIT_LOGS is off: the audit log stays local.
        assert not wait_for(lambda: received.snapshot()[2], timeout=2)
    finally:
        stop_server(server)
        receiver.stop()


def test_without_an_endpoint_audit_records_carry_no_trace_ids(server):
    async def call(session, _init):
        return tool_json(await session.call_tool("read_file", {"file_path": "/etc/hostname"}))

    assert with_session(server.url, server.rw_token, call)["content"]
    records = [r for r in audit_lines(server) if r.get("tool") == "read_file"]
    assert records and all("trace_id" not in r and "span_id" not in r for r in records)


@pytest.mark.parametrize("variable,value", [
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
])
def test_an_otlp_setting_the_frontend_cannot_honour_refuses_start_up(variable, value):
    import subprocess

    from conftest import bin_dir

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", variable: value,
           "MYMCP_PORT": "0", "MYMCP_EXECUTOR_SOCKET": "/nonexistent/executor.sock",
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([str(bin_dir() / "mymcp-frontend")], env=env, user=65534, group=65534,
                       extra_groups=[], capture_output=True, text=True, timeout=30, cwd="/")
    assert r.returncode != 0
    assert f'{variable}="{value}" is not supported' in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
