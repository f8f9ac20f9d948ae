"""The Grafana dashboard in deploy/grafana/: a valid dashboard whose every query names metrics (and grouping labels)
that a running server really exports."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest

from mcdrop.serving.harness.process import free_port
from mcdrop.serving.runtime.metrics import AggregatedMetrics
from tests.helpers import REPO, in_process_server

DASHBOARD = REPO / "deploy" / "grafana" / "mcdrop-dashboard.json"
METRIC = re.compile(r"\b(mcdrop_[a-z0-9_]+)")
GROUPING = re.compile(r"\bby \(([^)]*)\)")
SERIES = re.compile(r"^(mcdrop_[a-z0-9_]+)(?:\{([^}]*)\})? ", re.MULTILINE)


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_the_dashboard_is_well_formed() -> None:
    found = dashboard()
    assert found["uid"] and found["title"] and isinstance(found["schemaVersion"], int)
    variables = {v["name"] for v in found["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    ids = [panel["id"] for panel in found["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in found["panels"]:
        assert panel["type"] in ("timeseries", "stat", "heatmap", "state-timeline") and panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "hwxy") and grid["x"] + grid["w"] <= 24
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    for expr in queries():
        for opening, closing in ("()", "[]", "{}"):
            assert expr.count(opening) == expr.count(closing), expr
        for function in re.findall(r"\b(rate|increase)\(", expr):  # range functions take a range selector
            assert re.search(rf"{function}\([^()]*\[[^\]]+\]\)", expr), expr
    titles = " ".join(panel["title"].lower() for panel in found["panels"])
    for subject in (
        "requests",
        "latency",
        "in flight",
        "samples per request",
        "loaded model versions",
        "restarts",
        "uncertainty",
        "abstain rate",
        "drift",
        "distribution",
        "capture",
        "alerts firing",
    ):
        assert subject in titles, subject


def scraped_series(text: str) -> dict[str, set[str]]:
    """Metric name → the label names its series carry."""
    series: dict[str, set[str]] = {}
    for name, labels in SERIES.findall(text):
        series.setdefault(name, set()).update(re.findall(r"(\w+)=", labels or ""))
    return series


def test_every_query_names_metrics_and_labels_the_server_exports(
    calibrated_repository: Path, calibration_files: dict[str, Path], digits_rows: np.ndarray, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(calibrated_repository, repository)  # digits version 2 abstains and watches its drift
    (repository / "digits" / "9").mkdir()
    (repository / "digits" / "9" / "manifest.json").write_text("{}")  # a version that fails to load: counted
    http_port = free_port()
    capture = {"capture_dir": str(tmp_path / "capture"), "capture_when": "always", "capture_max_mb": 0.04,
               "capture_file_seconds": 0.1}  # the first rows are captured, then the budget drops some  # fmt: skip
    with in_process_server(repository, metrics_port=0, http_port=http_port, **capture) as (server, client):
        client.predict("digits", digits_rows[:2], samples=10, seed=1)  # series for every label the panels group by
        time.sleep(1.0)  # the first capture file is published
        calibration = np.load(calibration_files["digits"])["x"][:120]
        client.predict("digits", calibration, samples=10, seed=1)  # enough rows for a drift PSI
        time.sleep(0.5)
        client.predict("digits", digits_rows[:2], mode="moments", seed=1)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]}
        assert httpx.post(f"http://127.0.0.1:{http_port}/v2/models/digits/infer", json=body).status_code == 200
        with pytest.raises(Exception, match="NOT_FOUND"):
            client.predict("no-such-model", digits_rows[:1])
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    (tmp_path / "metrics").mkdir()
    supervisor = AggregatedMetrics(tmp_path / "metrics")  # what `--workers N` adds to the same /metrics
    text += generate_latest(supervisor.registry).decode()
    series = scraped_series(text)
    for expr in queries():
        if expr.startswith("max by (alertname) (ALERTS{"):
            continue  # Prometheus's own series of the alert rules (tests/test_alerts.py checks their metrics)
        names = METRIC.findall(expr)
        assert names, expr
        for name in names:
            assert name in series, f"{name} (in {expr!r}) is not exported; exported: {sorted(series)}"
        for grouping in GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",")} - {"le"}
            assert labels <= series[names[0]], f"{expr!r} groups by {labels}; {names[0]} has {series[names[0]]}"


def load_renderer() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_render", DASHBOARD.with_name("render.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Prometheus(BaseHTTPRequestHandler):
    """Prometheus's query_range API, answering every query with two series (a NaN gap in one), and recording it."""

    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        expr = query["query"][0]
        type(self).asked.append(expr)
        start = float(query["start"][0])
        if "bad(" in expr:
            payload = json.dumps({"status": "error", "errorType": "bad_data", "error": "unknown function bad"})
            self.send_response(400)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload.encode())
            return
        values = [[start + 10 * i, str(i % 7) if i != 3 else "NaN"] for i in range(30)]
        result = [{"metric": {"api": "rest", "code": "200", "model": "digits", "mode": "MONTE_CARLO", "version": "1"},
                   "values": values}, {"metric": {"api": "grpc", "code": "OK"}, "values": values[:10]}]  # fmt: skip
        body = {"status": "success", "data": {"resultType": "matrix", "result": result}}
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def test_render_draws_every_panel_from_prometheus_with_the_dashboards_own_queries(tmp_path: Path) -> None:
    renderer = load_renderer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Prometheus.asked.clear()
    try:
        out = tmp_path / "dashboard.png"
        code = renderer.main(["--prometheus", f"http://127.0.0.1:{server.server_port}", "--minutes", "5",
                              "--rate-interval", "10s", "--out", str(out)])  # fmt: skip
    finally:
        server.shutdown()
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = [q.replace("$__rate_interval", "10s").replace('"$job"', '".+"') for q in queries()]
    assert _Prometheus.asked == expected  # every target of every panel, in order, variables filled in
    assert not any("$" in q for q in _Prometheus.asked)
    assert renderer.formatted(0.0123, "s") == "12.3 ms" and renderer.formatted(0.05, "percentunit") == "5.00 %"


def test_render_says_what_prometheus_refused_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    renderer = load_renderer()
    code = renderer.main(["--prometheus", "http://127.0.0.1:1", "--out", str(tmp_path / "x.png")])
    assert code == 2 and "render.py:" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    broken = dashboard()
    broken["panels"][0]["targets"][0]["expr"] = "bad(mcdrop_requests_total)"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = renderer.main(["--prometheus", f"http://127.0.0.1:{server.server_port}", "--dashboard",
                              str(tmp_path / "broken.json"), "--out", str(tmp_path / "x.png")])  # fmt: skip
    finally:
        server.shutdown()
    error = capsys.readouterr().err
    assert code == 2 and "unknown function bad" in error and "bad(mcdrop_requests_total)" in error
