"""The Grafana dashboard in deploy/grafana/: a valid dashboard whose every query names metrics (and grouping labels)
that a running server really exports."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest

from mcdrop.serving.harness.process import free_port
from mcdrop.serving.runtime.metrics import AggregatedMetrics
from tests.helpers import REPO, in_process_server

DASHBOARD = REPO / "deploy" / "grafana" / "mcdrop-dashboard.json"
METRIC = re.compile(r"\b(mcdrop_[a-z_]+)")
GROUPING = re.compile(r"\bby \(([^)]*)\)")
SERIES = re.compile(r"^(mcdrop_[a-z_]+)(?:\{([^}]*)\})? ", re.MULTILINE)


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
        assert panel["type"] in ("timeseries", "stat") and panel["title"]
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
    for subject in ("requests", "latency", "in flight", "samples per request", "loaded model versions", "restarts"):
        assert subject in titles, subject


def scraped_series(text: str) -> dict[str, set[str]]:
    """Metric name → the label names its series carry."""
    series: dict[str, set[str]] = {}
    for name, labels in SERIES.findall(text):
        series.setdefault(name, set()).update(re.findall(r"(\w+)=", labels or ""))
    return series


def test_every_query_names_metrics_and_labels_the_server_exports(
    model_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(model_repository, repository)
    (repository / "digits" / "9").mkdir()
    (repository / "digits" / "9" / "manifest.json").write_text("{}")  # a version that fails to load: counted
    http_port = free_port()
    with in_process_server(repository, metrics_port=0, http_port=http_port) as (server, client):
        client.predict("digits", digits_rows[:2], samples=10, seed=1)  # series for every label the panels group by
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
        names = METRIC.findall(expr)
        assert names, expr
        for name in names:
            assert name in series, f"{name} (in {expr!r}) is not exported; exported: {sorted(series)}"
        for grouping in GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",")} - {"le"}
            assert labels <= series[names[0]], f"{expr!r} groups by {labels}; {names[0]} has {series[names[0]]}"
