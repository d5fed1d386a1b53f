"""Prometheus as operators run it: the real Prometheus server (Debian package `prometheus`)
scrapes the quick try with the metrics token, in OpenMetrics (what it asks for first) and, through
a small proxy that sends the Accept header of `scrape_protocols: [PrometheusText0.0.4]`, in the
classic text format. The alert rules and the Grafana dashboard of deploy/observability/ are
checked with promtool and run in that server.

Prometheus is started on loopback with a scrape config of its own: only the static targets
below, no remote write, no Alertmanager, no service discovery, so it opens no connection other
than its scrapes (it has no update check or telemetry of its own).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, start_server, stop_server, tool_json, with_session

OBSERVABILITY = REPO / "deploy" / "observability"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    not (PROMETHEUS and PROMTOOL),
    reason="prometheus/promtool not installed (tests/run installs the Debian package prometheus)",
)

# What Prometheus >= 2.49 sends with `scrape_protocols: [PrometheusText0.0.4]`; the proxy job
# uses it so that this Prometheus (2.42 in Debian 12, which always prefers OpenMetrics) also
# ingests the classic text format.
TEXT_ONLY_ACCEPT = "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"

# Grafana's variables, as the dashboard's queries are checked: one job, any instance.
GRAFANA_VARIABLES = {
    "job": "mymcp",
    "instance": ".+",
    "__rate_interval": "1m",
    "__range": "5m",
    "__interval": "15s",
}


def dashboard() -> dict:
    return json.loads((OBSERVABILITY / "dashboard.json").read_text())


def dashboard_queries() -> list:
    """(panel title, PromQL expression) of every target of every panel."""
    out = []
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def expand(expr: str) -> str:
    """A dashboard expression with Grafana's variables (`$x`, `${x}`) replaced."""
    def sub(m):
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown variable ${name} in {expr}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def alert_exprs() -> list:
    """The `expr` of every rule in alerts.yml (read without a YAML parser: `expr:` is either
    one line or a `|` block)."""
    lines = (OBSERVABILITY / "alerts.yml").read_text().splitlines()
    exprs = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2) != "|":
            exprs.append(m.group(2))
            continue
        block, indent = [], len(m.group(1))
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            block.append(nxt.strip())
        exprs.append(" ".join(block))
    return exprs


def metric_names(expr: str) -> set:
    return set(re.findall(r"\bmymcp_[a-z0-9_]+", expr))


@needs_prometheus
def test_alert_rules_pass_promtool():
    r = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"], cwd=OBSERVABILITY,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=OBSERVABILITY,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_dashboard_is_a_well_formed_grafana_dashboard():
    d = dashboard()
    assert d["uid"] == "mymcp-overview" and len(d["uid"]) <= 40
    assert d["title"] and isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    # A Prometheus data source variable, which every panel and query uses.
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == source
        assert variables[name]["definition"] == variables[name]["query"]["query"]
    ids, cells = set(), set()
    for p in d["panels"]:
        assert isinstance(p["id"], int) and p["id"] not in ids, p
        ids.add(p["id"])
        assert p["type"] in {"row", "stat", "timeseries", "heatmap"}, p["type"]
        assert p["title"], p
        g = p["gridPos"]
        assert all(isinstance(g[k], int) and g[k] >= 0 for k in "hwxy"), p["title"]
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] + g["w"] <= 24, p["title"]
        # No two panels overlap.
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            assert p["panels"] == [] and not p["collapsed"] and g["w"] == 24
            continue
        assert p["datasource"] == source, p["title"]
        assert p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(set(refs)) == len(refs), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == source and t["expr"].strip(), p["title"]
            expand(t["expr"])  # only known variables
            assert metric_names(t["expr"]) or "up{" in t["expr"], t["expr"]


class TextOnlyProxy:
    """Forwards scrapes to the frontend with the text-only Accept header; remembers what
    Prometheus asked for and what the frontend answered."""

    def __init__(self, target: str):
        self.seen = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                req = urllib.request.Request(target + self.path)
                req.add_header("Accept", TEXT_ONLY_ACCEPT)
                if self.headers.get("Authorization"):
                    req.add_header("Authorization", self.headers["Authorization"])
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        status, ctype, body = r.status, r.headers["Content-Type"], r.read()
                except urllib.error.HTTPError as e:
                    status, ctype, body = e.code, e.headers["Content-Type"], e.read()
                proxy.seen.append((self.headers.get("Accept"), ctype))
                self.send_response(status)
                self.send_header("Content-Type", ctype or "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, workdir: Path, frontend: str, proxy: str, token: str):
        credentials = workdir / "metrics-token"
        credentials.write_text(token)
        credentials.chmod(0o600)
        auth = f"    authorization:\n      credentials_file: {credentials}\n"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {OBSERVABILITY / 'alerts.yml'}\n"
            "scrape_configs:\n"
            f"  - job_name: mymcp\n{auth}"
            f"    static_configs:\n      - targets: ['{frontend}']\n"
            f"  - job_name: mymcp-text\n{auth}"
            f"    static_configs:\n      - targets: ['{proxy}']\n"
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.logfile = workdir / "prometheus.log"

    def api(self, path: str, **params):
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        return body

    def query(self, expr: str) -> list:
        body = self.api("query", query=expr)
        assert body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def wait(self, what: str, pred, timeout=30.0):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            assert self.proc.poll() is None, "prometheus exited:\n" + self.logfile.read_text()
            try:
                last = pred()
                if last:
                    return last
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what} (last: {last})\n"
                             + self.logfile.read_text())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def values(result: list) -> dict:
    """job → value of a query result with one series per job."""
    return {r["metric"]["job"]: float(r["value"][1]) for r in result}


@needs_prometheus
def test_real_prometheus_scrapes_both_formats_and_runs_the_dashboard_and_rules(tmp_path):
    server = start_server()
    proxy = prometheus = None
    try:
        r = server.ctl("token", "rotate-metrics")
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        base = server.url.rsplit("/mcp", 1)[0]
        frontend = base.removeprefix("http://")
        proxy = TextOnlyProxy(base)
        prometheus = Prometheus(tmp_path, frontend, proxy.address, token)

        def targets_up():
            active = prometheus.api("targets")["data"]["activeTargets"]
            health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in active}
            return health if health == {"mymcp": ("up", ""), "mymcp-text": ("up", "")} else None

        prometheus.wait("both targets up", targets_up)
        # The proxy's scrapes came from Prometheus asking for OpenMetrics first, and got the
        # classic text format.
        accept, ctype = proxy.seen[-1]
        assert accept.startswith("application/openmetrics-text"), accept
        assert ctype == "text/plain; version=0.0.4; charset=utf-8"

        # A few calls: 2 reads, a failing read, an unknown tool, a command, a download.
        data = tmp_path / "data.txt"
        data.write_text("one\ntwo\n")

        async def calls(session, _init):
            await session.call_tool("read_file", {"file_path": str(data)})
            await session.call_tool("read_file", {"file_path": str(data)})
            await session.call_tool("read_file", {"file_path": str(tmp_path / "missing")})
            await session.call_tool("no_such_tool", {})
            await session.call_tool("bash_execute", {"command": "true"})
            return tool_json(await session.call_tool("prepare_download", {"src_path": str(data)}))

        grant = with_session(server.url, server.rw_token, calls)
        # The quick try gives absolute links (its public base URL is its own address).
        assert grant["url"].startswith(base + "/files/raw/"), grant["url"]
        with urllib.request.urlopen(grant["url"], timeout=30) as r:
            assert r.read() == data.read_bytes()

        # The download shows in the HTTP counter and, with its 8 bytes, in the transfer bytes.
        both = {"mymcp": 2.0, "mymcp-text": 2.0}
        expected = {
            'mymcp_tool_calls_total{tool="read_file", result="ok"}': both,
            'mymcp_tool_calls_total{tool="read_file", result="error"}': {"mymcp": 1.0, "mymcp-text": 1.0},
            'mymcp_tool_calls_total{tool="unknown", result="denied"}': {"mymcp": 1.0, "mymcp-text": 1.0},
            'mymcp_tool_calls_total{tool="bash_execute", result="ok"}': {"mymcp": 1.0, "mymcp-text": 1.0},
            'mymcp_tool_duration_seconds_count{tool="read_file"}': {"mymcp": 3.0, "mymcp-text": 3.0},
            'mymcp_tool_duration_seconds_bucket{tool="read_file", le="+Inf"}': {"mymcp": 3.0, "mymcp-text": 3.0},
            'mymcp_http_requests_total{path="/files/raw/{ticket}", method="GET", status="200"}':
                {"mymcp": 1.0, "mymcp-text": 1.0},
            'mymcp_transfer_bytes_total{direction="download"}': {"mymcp": 8.0, "mymcp-text": 8.0},
            "mymcp_executor_connected": {"mymcp": 1.0, "mymcp-text": 1.0},
            'mymcp_tokens_count{role="metrics"}': {"mymcp": 1.0, "mymcp-text": 1.0},
            "mymcp_audit_write_failures_total": {"mymcp": 0.0, "mymcp-text": 0.0},
        }

        got = {}

        def caught_up():
            got.update({e: values(prometheus.query(e)) for e in expected})
            return got == expected

        try:
            prometheus.wait("the calls in Prometheus", caught_up)
        except AssertionError:
            assert got == expected
            raise

        # Each job parsed its own format: OpenMetrics names the counter family without
        # `_total`, the classic text format with it (a counter family announced without it
        # would leave the samples untyped).
        def metadata(job):
            found = prometheus.api("targets/metadata", match_target=f'{{job="{job}"}}')["data"]
            return {m["metric"]: m["type"] for m in found if m["metric"].startswith("mymcp_")}

        om, text = metadata("mymcp"), metadata("mymcp-text")
        assert om["mymcp_tool_calls"] == "counter" and "mymcp_tool_calls_total" not in om, om
        assert text["mymcp_tool_calls_total"] == "counter" and "mymcp_tool_calls" not in text, text
        assert om["mymcp_tool_duration_seconds"] == text["mymcp_tool_duration_seconds"] == "histogram"
        assert "unknown" not in text.values() and "unknown" not in om.values(), (om, text)

        # The dashboard: every variable and panel query is valid PromQL for this Prometheus,
        # returns data, and names only metrics /metrics exposes; every metric /metrics exposes
        # is on the dashboard.
        exposed = {n for n in prometheus.api("label/__name__/values")["data"] if n.startswith("mymcp_")}
        prometheus.wait("two scrapes after the calls in every rate window",
                        lambda: all(prometheus.query(expand(e)) for _, e in dashboard_queries()),
                        timeout=15)
        used = set()
        for title, expr in dashboard_queries():
            assert prometheus.query(expand(expr)), f"{title}: no data for {expand(expr)}"
            assert metric_names(expr) <= exposed, f"{title}: {metric_names(expr) - exposed}"
            used |= metric_names(expr)
        family = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
        missing = {n for n in exposed if n not in used and re.sub(r"_(bucket|sum|count)$", "", n) not in family}
        assert not missing, f"metrics exposed but on no dashboard panel: {missing}"
        for v in dashboard()["templating"]["list"]:
            if v["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["definition"])
            assert m, v["definition"]
            series = prometheus.api("series", **{"match[]": expand(m.group(1))})
            assert series["status"] == "success", series
            got = {s[m.group(2)] for s in series["data"]}
            assert got, v["definition"]
            if v["name"] == "job":
                assert got == {"mymcp", "mymcp-text"}, got

        # The alert rules: loaded, evaluated without error, on metrics that exist; nothing fires.
        for expr in alert_exprs():
            assert metric_names(expr) <= exposed, f"{expr}: {metric_names(expr) - exposed}"

        def rules_evaluated():
            groups = prometheus.api("rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if len(rules) != len(alert_exprs()) or any(r["lastEvaluation"].startswith("0001") for r in rules):
                return None
            return rules

        rules = prometheus.wait("the alert rules evaluated", rules_evaluated)
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        firing = [a for a in prometheus.api("alerts")["data"]["alerts"] if a["state"] == "firing"]
        assert firing == [], firing
    finally:
        if prometheus:
            prometheus.stop()
        if proxy:
            proxy.close()
        stop_server(server)
