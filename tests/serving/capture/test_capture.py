"""Capture for labelling: which rows, what a captured row holds, and that ``mcdrop score`` reads a capture."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcdrop.serving.capture.rule import parse_rule
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.harness.process import free_port
from mcdrop.serving.scoring.job import ScoreOptions, run_score
from tests.helpers import in_process_server


def published(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*.parquet"))


def test_the_rule_is_parsed_or_refused_naming_what_it_accepts() -> None:
    assert str(parse_rule("always")) == "always" and str(parse_rule(" abstain ")) == "abstain"
    rule = parse_rule("mutual_information>0.25")
    assert (rule.kind, rule.score, rule.threshold) == ("score", "mutual_information", 0.25)
    assert parse_rule("predictive_std>3").score == "predictive_std"
    for wrong in ("sometimes", "mutual_information>", "entropy>0.1", "mutual_information<0.1", "std>nan"):
        with pytest.raises(InvalidArgument, match=r"Expected always, abstain or SCORE>VALUE .*Received: "):
            parse_rule(wrong)


def test_always_captures_every_row_with_its_inputs_answer_and_origin(
    calibrated_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    capture = tmp_path / "capture"
    port = free_port()
    with in_process_server(calibrated_repository, capture_dir=str(capture), capture_when="always",
                           http_port=port) as (_, client):  # fmt: skip
        answers = [client.predict("digits", digits_rows, samples=20, seed=seed) for seed in (1, 2)]
        tensor = {"name": "x", "datatype": "FP32", "shape": [2, 64], "data": digits_rows[:2].reshape(-1).tolist()}
        body = {"id": "ticket-7", "parameters": {"seed": 3}, "inputs": [tensor]}
        rest = httpx.post(f"http://127.0.0.1:{port}/v2/models/digits/infer", timeout=30, json=body)
        assert rest.status_code == 200
        assert not published(capture)  # nothing visible before rotation or shutdown
    files = published(capture)
    assert [f.parent.name for f in files] == ["digits"] and files[0].name.startswith("digits-v2-")
    assert not list(capture.rglob("*.partial"))
    table = pq.read_table(files[0])
    assert table.num_rows == 2 * len(digits_rows) + 2
    rows = table.to_pylist()
    assert {r["model"] for r in rows} == {"digits"} and {r["version"] for r in rows} == {2}
    assert [r["seed"] for r in rows] == [1] * 8 + [2] * 8 + [3] * 2
    assert [r["row"] for r in rows] == [*range(8), *range(8), 0, 1]
    assert {r["samples"] for r in rows[:16]} == {20} and {r["mode"] for r in rows} == {"monte_carlo"}
    assert [r["request_id"] for r in rows[16:]] == ["ticket-7", "ticket-7"]
    assert len({r["request_id"] for r in rows[:8]}) == 1 and rows[0]["request_id"] != rows[8]["request_id"]
    pixels = np.array([[r[f"pixel_{i}"] for i in range(64)] for r in rows[:8]], np.float32)
    np.testing.assert_array_equal(pixels, digits_rows)  # the training columns: mcdrop score reads them back
    for answer, block in zip(answers, (rows[:8], rows[8:16]), strict=True):
        np.testing.assert_allclose([r["served/mutual_information"] for r in block], answer.mutual_information)
        np.testing.assert_allclose([r["served/p_mean"] for r in block], answer.mean, rtol=1e-6)
        assert [r["served/abstain"] for r in block] == answer.abstain.tolist()
    assert table.schema.metadata[b"mcdrop.capture"]


def test_abstain_captures_only_the_rows_the_version_abstains_on(calibrated_repository: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    x = load_digits().data[-200:].astype(np.float32)
    capture = tmp_path / "capture"
    with in_process_server(calibrated_repository, capture_dir=str(capture)) as (_, client):  # default: abstain
        answer = client.predict("digits", x, samples=30, seed=5)
        client.predict("digits", x[:20], version=1, samples=30, seed=5)  # v1 is not calibrated: never abstains
    abstained = np.flatnonzero(answer.abstain)
    assert 0 < len(abstained) < len(x)
    table = pq.read_table(published(capture))
    assert table.column("row").to_pylist() == abstained.tolist()
    assert set(table.column("version").to_pylist()) == {2}
    assert all(table.column("served/abstain").to_pylist())


def test_a_capture_directory_is_input_to_mcdrop_score_beside_the_served_answer(
    calibrated_repository: Path, digits_rows: np.ndarray, tmp_path: Path
) -> None:
    capture = tmp_path / "capture"
    with in_process_server(calibrated_repository, capture_dir=str(capture), capture_when="always") as (_, client):
        served = client.predict("digits", digits_rows, version=1, samples=20, seed=9)
    out = tmp_path / "scored.parquet"
    run_score(ScoreOptions(calibrated_repository, "digits", str(capture / "digits"), out, version=1, samples=20, seed=9,
                           keep=("request_id", "row", "served/mutual_information")))  # fmt: skip
    scored = pq.read_table(out)
    assert scored.column("row").to_pylist() == list(range(8))
    # Same version, seed and row positions: the batch job gives the server's numbers, beside the captured ones.
    np.testing.assert_allclose(scored.column("mutual_information").to_numpy(), served.mutual_information)
    np.testing.assert_allclose(scored.column("served/mutual_information").to_numpy(), served.mutual_information)
    with pytest.raises(InvalidArgument, match=r"holds folders \['digits'\]: a capture directory\? Expected DIR/MODEL"):
        run_score(ScoreOptions(calibrated_repository, "digits", str(capture), tmp_path / "x.parquet"))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_capture_rule_text_is_a_rule_or_a_clear_refusal(text: str) -> None:
    try:
        rule = parse_rule(text)
    except InvalidArgument as exc:
        assert "Expected always, abstain or SCORE>VALUE" in str(exc)
    else:
        assert parse_rule(str(rule)) == rule  # what the log shows parses back to the same rule


@settings(max_examples=10, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=8, max_size=8), min_size=1, max_size=6))
def test_a_batch_of_requests_is_the_same_table_as_each_request_alone(
    calibrated_repository: Path, digits_rows: np.ndarray, keep: list[list[bool]]
) -> None:
    """The writer converts many requests at once; any mix of requests and captured rows gives their rows in order,
    as converting each alone would — nulls where an answer has no abstain columns (moments answers do not abstain)."""
    import pyarrow as pa

    from mcdrop.serving.capture.records import CapturedRequest, capture_schema, captured_table
    from mcdrop.serving.core import PredictionRequest, Sampler

    sampler = Sampler(_store(calibrated_repository))  # type: ignore[arg-type]
    requests = []
    for index, chosen in enumerate(keep):
        mode = "monte_carlo" if index % 2 else "moments"
        plan = sampler.plan(PredictionRequest("digits", digits_rows, version=2, mode=mode, samples=4, seed=index))
        requests.append(CapturedRequest(plan.version.manifest, plan.inputs, sampler.run(plan),
                                        np.flatnonzero(chosen), f"r{index}", 1.7e9 + index))  # fmt: skip
    requests = [r for r in requests if len(r.rows)]
    if not requests:
        return
    schema = capture_schema(requests[0].manifest)
    together = captured_table(requests, schema)
    alone = pa.concat_tables([captured_table([r], schema) for r in requests])
    assert together.equals(alone)
    abstain = together.column("served/abstain")
    assert abstain.null_count == sum(len(r.rows) for r in requests if r.prediction.mode.value == "moments")
    assert together.num_rows == sum(len(r.rows) for r in requests)
    assert together.column("request_id").to_pylist() == [r.request_id for r in requests for _ in r.rows]


_STORES: dict[Path, object] = {}


def _store(repository: Path) -> object:
    from mcdrop.serving.models.repository import ModelRepository

    if repository not in _STORES:
        store = ModelRepository(repository, pool_size=1, max_versions=2)
        store.scan()
        _STORES[repository] = store
    return _STORES[repository]
