"""The Prometheus alert rules (deploy/prometheus): valid, unit-tested with promtool, and the same for the operator.

promtool comes from Debian's ``prometheus`` package; CI installs it and sets ``MCDROP_REQUIRE_PROMTOOL=1``, so there a
missing promtool fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

yaml = pytest.importorskip("yaml")
RULES = REPO / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("MCDROP_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is missing. Expected Debian's prometheus package (apt-get install prometheus).")
        pytest.skip("promtool is missing (apt-get install prometheus); CI requires it")
    return found


def run(promtool: str, *args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_the_rules_are_valid_and_their_unit_tests_pass(promtool: str) -> None:
    checked = run(promtool, "check", "rules", "mcdrop-rules.yml")
    assert checked.returncode == 0 and "SUCCESS: 5 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", "mcdrop-rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_unit_tests_catch_a_changed_threshold(promtool: str, tmp_path: Path) -> None:
    """The tests can fail: with the abstain alert at 4× the calibration rate instead of 2×, 30 % is no longer enough."""
    shutil.copy(RULES / "mcdrop-rules.test.yml", tmp_path)
    rules = (RULES / "mcdrop-rules.yml").read_text(encoding="utf-8")
    assert "on (model, version, output) 2 *" in rules
    stricter = rules.replace("on (model, version, output) 2 *", "on (model, version, output) 4 *")
    (tmp_path / "mcdrop-rules.yml").write_text(stricter, encoding="utf-8")
    tested = run(promtool, "test", "rules", "mcdrop-rules.test.yml", cwd=tmp_path)
    assert tested.returncode != 0 and "McdropAbstainRateHigh" in tested.stdout + tested.stderr


def test_the_operator_rule_holds_the_same_groups() -> None:
    rules = yaml.safe_load((RULES / "mcdrop-rules.yml").read_text(encoding="utf-8"))
    operator = yaml.safe_load((RULES / "prometheus-rule.yaml").read_text(encoding="utf-8"))
    assert operator["apiVersion"] == "monitoring.coreos.com/v1" and operator["kind"] == "PrometheusRule"
    assert operator["spec"] == rules


def test_every_metric_the_rules_read_is_one_the_server_exports(tmp_path: Path) -> None:
    from mcdrop.serving.runtime.metrics import AggregatedMetrics, Metrics

    families = [*Metrics().registry.collect(), *AggregatedMetrics(tmp_path).registry.collect()]  # worker, supervisor
    exported = {family.name + suffix for family in families for suffix in ("", "_total")}
    text = (RULES / "mcdrop-rules.yml").read_text(encoding="utf-8")

    read = set(re.findall(r"\b(mcdrop_[a-z0-9_]+)", text))
    missing = sorted(name for name in read if name not in exported)
    assert missing == [], f"the rules read metrics the server does not export: {missing}"
