"""``mcdrop score`` in process: the server's numbers, any partitioning, every row accounted for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from mcdrop.serving.errors import InvalidArgument  # noqa: E402
from mcdrop.serving.scoring.job import ScoreOptions, run_score  # noqa: E402
from tests.helpers import in_process_server, run_cli  # noqa: E402

CLASSIFICATION = ["id", "predicted_class", "predicted_label", "p_mean", "p_std", "predictive_entropy",
                  "expected_entropy", "mutual_information", "variation_ratio"]  # fmt: skip


def digits_file(folder: Path, rows: int = 300, name: str = "digits.parquet") -> Path:
    from sklearn.datasets import load_digits

    x = load_digits().data[:rows]
    table = pa.table({"id": np.arange(rows) + 1000, **{f"pixel_{i}": x[:, i] for i in range(64)}})
    pq.write_table(table, folder / name)
    return folder / name


def score(repository: Path, source: Path, output: Path, **options: Any) -> Any:
    model = options.pop("model", "digits")
    settings = {"samples": 50, "seed": 3, "keep": ("id",), **options}
    return run_score(ScoreOptions(repository, model, str(source), output, **settings))


def test_columns_and_numbers_are_the_servers(model_repository: Path, tmp_path: Path) -> None:
    source = digits_file(tmp_path)
    summary = score(model_repository, source, tmp_path / "out.parquet")
    assert (summary.rows_in, summary.rows_scored, summary.rows_failed) == (300, 300, 0)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == CLASSIFICATION
    assert table.column("id").to_pylist() == list(range(1000, 1300))
    x = np.asarray([[row[f"pixel_{i}"] for i in range(64)] for row in pq.read_table(source).slice(0, 16).to_pylist()])
    with in_process_server(model_repository) as (_, client):
        served = client.predict("digits", x.astype(np.float32), samples=50, seed=3)
    first = table.slice(0, 16)
    assert np.array_equal(np.asarray(first.column("p_mean").to_pylist(), np.float32), served.mean)
    assert np.array_equal(np.asarray(first.column("p_std").to_pylist(), np.float32), served.std)
    assert first.column("predicted_class").to_pylist() == served.predicted_class.tolist()
    np.testing.assert_array_equal(first.column("mutual_information").to_numpy(), served.mutual_information)
    metadata = json.loads(table.schema.metadata[b"mcdrop"])
    assert metadata["seed"] == 3 and metadata["samples"] == 50 and metadata["version"] == 1


def test_any_partitioning_gives_bit_identical_output(model_repository: Path, tmp_path: Path) -> None:
    source = digits_file(tmp_path)
    score(model_repository, source, tmp_path / "a.parquet", batch_size=1024)
    score(model_repository, source, tmp_path / "b.parquet", batch_size=7, workers=2)
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    halves = tmp_path / "halves"
    halves.mkdir()
    table = pq.read_table(source)
    pq.write_table(table.slice(0, 111), halves / "0.parquet")
    pq.write_table(table.slice(111), halves / "1.parquet")
    score(model_repository, halves, tmp_path / "c.parquet", batch_size=50)
    assert pq.read_table(tmp_path / "c.parquet").equals(pq.read_table(tmp_path / "a.parquet"))


def test_without_a_seed_one_is_drawn_recorded_and_replays(model_repository: Path, tmp_path: Path) -> None:
    source = digits_file(tmp_path, rows=40)
    first = score(model_repository, source, tmp_path / "a.parquet", seed=None)
    recorded = json.loads(pq.read_table(tmp_path / "a.parquet").schema.metadata[b"mcdrop"])["seed"]
    assert recorded == first.seed
    score(model_repository, source, tmp_path / "b.parquet", seed=recorded)
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))


def test_regression_columns(model_repository: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    x = load_diabetes().data[:50]
    np.save(tmp_path / "x.npy", x)
    summary = score(model_repository, tmp_path / "x.npy", tmp_path / "out.csv", model="diabetes", keep=(), interval=0.9)
    assert summary.rows_scored == 50
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert rows[0] == '"mean","std","predictive_std","lower","upper","mean_lower","mean_upper"' and len(rows) == 51
    mean, std, predictive_std, lower, upper, mean_lower, mean_upper = (float(v) for v in rows[1].split(","))
    assert 0 < std < predictive_std  # the model was trained by mcdrop: its observation noise is known
    assert lower < mean_lower < mean < mean_upper < upper


def test_bad_rows_fail_the_job_by_default_and_go_aside_with_skip(model_repository: Path, tmp_path: Path) -> None:
    source = digits_file(tmp_path, rows=100)
    table = pq.read_table(source)
    pixels = table.column("pixel_5").to_numpy().copy()
    pixels[[17, 60]] = np.nan
    pq.write_table(table.set_column(table.column_names.index("pixel_5"), "pixel_5", pa.array(pixels)), source)
    output = tmp_path / "out.parquet"
    with pytest.raises(InvalidArgument, match=r"digits.parquet row 17 column pixel_5: missing, NaN or infinite"):
        score(model_repository, source, output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.parquet"]  # nothing written, no leftovers
    summary = score(model_repository, source, output, on_error="skip")
    assert (summary.rows_in, summary.rows_scored, summary.rows_failed) == (100, 98, 2)
    assert pq.read_table(output).column("id").to_pylist() == [1000 + i for i in range(100) if i not in (17, 60)]
    errors = pq.read_table(tmp_path / "out.errors.parquet").to_pylist()
    assert [(e["id"], e["row"]) for e in errors] == [(1017, 17), (1060, 60)]
    assert all("column pixel_5" in e["error"] for e in errors)
    clean = score(
        model_repository, digits_file(tmp_path, rows=100, name="clean.parquet"), tmp_path / "clean.out.parquet"
    )
    scored = pq.read_table(clean.output).filter(pa.compute.is_in(pq.read_table(clean.output).column("id"),
                                                                 pa.array([1000, 1099])))  # fmt: skip
    kept = pq.read_table(output).filter(pa.compute.is_in(pq.read_table(output).column("id"), pa.array([1000, 1099])))
    assert scored.equals(kept)  # a bad row does not shift its neighbours' masks


def test_cli_errors_are_one_line_with_exit_2(model_repository: Path, tmp_path: Path) -> None:
    source = digits_file(tmp_path, rows=20)
    table = pq.read_table(source).drop_columns(["pixel_9"])
    pq.write_table(table, tmp_path / "missing.parquet")
    (tmp_path / "text.csv").write_text("a,b\n1,x\n", encoding="utf-8")
    common = ["--repository", str(model_repository), "--model", "digits", "--output", str(tmp_path / "o.parquet")]
    for source_path, message in (
        (tmp_path / "missing.parquet", "missing.parquet: missing column(s) pixel_9. Expected columns pixel_0,"),
        (tmp_path / "nothing-*.parquet", "No input files at"),
        (tmp_path / "text.csv", "text.csv: missing column(s) pixel_0, pixel_1, pixel_2, pixel_3, pixel_4, pixel_5, …"),
    ):
        result = run_cli("score", *common, "--input", str(source_path))
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "o.parquet").exists()
    done = run_cli("score", *common, "--input", str(source), "--seed", "1", "--samples", "20", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows_scored"] == 20 and summary["rows_per_second"] > 0 and summary["backend"] == "in process"
