"""The loop the Watch page describes, run on digits: serve a calibrated model with ``--capture-when abstain``,
label the captured rows, retrain with them, export, hot-reload — and the new version is surer of those rows."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import in_process_server

PIXELS = [f"pixel_{i}" for i in range(64)]


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow([*PIXELS, "digit"])
        out.writerows([*map(float, row), int(label)] for row, label in zip(x, y, strict=True))


@pytest.mark.slow
def test_capture_label_retrain_and_reload_lowers_mutual_information_on_the_captured_rows(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from sklearn.datasets import load_digits

    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train
    from mcdrop.serving.calibration.calibrate import CalibrationOptions, parse_target

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    pool, held, rest = order[:400], order[400:700], order[700:]  # served traffic, calibration rows, training rows
    x, y = data.data.astype(np.float32), data.target
    write_csv(tmp_path / "train.csv", x[rest], y[rest])
    np.savez(tmp_path / "calibration.npz", x=x[held], y=y[held])
    repo, capture = tmp_path / "repo", tmp_path / "capture"
    calibration = CalibrationOptions(tmp_path / "calibration.npz", abstain_target=parse_target("coverage=0.85"))

    def train_and_export(dataset: Path, out: Path) -> None:
        train(TrainConfig(out=str(out), dataset=f"csv:{dataset}", target=["digit"], hidden=[64, 64],
                          epochs=60, val_fraction=0.1, seed=1, quiet=True).validate())  # fmt: skip
        export(ExportOptions(model_path=out / "model.keras", repository=repo, name="digits", calibration=calibration))

    train_and_export(tmp_path / "train.csv", tmp_path / "v1")
    with in_process_server(repo, capture_dir=str(capture), capture_when="abstain", poll_seconds=0.2,
                           capture_file_seconds=0.2) as (server, client):  # fmt: skip
        served = client.predict("digits", x[pool], samples=30, seed=1)
        deadline = time.monotonic() + 10
        while not list(capture.glob("digits/*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Label: any tool will do. Here the held-out labels, found by the captured row's position in the request.
        captured = pq.read_table(capture / "digits").to_pylist()
        rows = np.array([r["row"] for r in captured])
        assert rows.tolist() == np.flatnonzero(served.abstain).tolist() and 20 < len(rows) < 150
        before = np.array([r["served/mutual_information"] for r in captured])
        inputs = np.array([[r[name] for name in PIXELS] for r in captured], np.float32)
        np.testing.assert_array_equal(inputs, x[pool][rows])
        labelled = tmp_path / "labelled.csv"
        # The few new rows are repeated (weighted) so that they count against a training set 15 times their size.
        repeats = 3
        write_csv(labelled, np.concatenate([x[rest], *[inputs] * repeats]),
                  np.concatenate([y[rest], *[y[pool][rows]] * repeats]))  # fmt: skip

        train_and_export(labelled, tmp_path / "v2")  # version 2 in the served repository
        while 2 not in server.plane.loaded_versions("digits"):
            assert time.monotonic() < deadline + 120, "version 2 was not hot-reloaded"
            time.sleep(0.1)
        after = client.predict("digits", inputs, version=2, samples=30, seed=1).mutual_information
        others = np.setdiff1d(np.arange(len(pool)), rows)
        control = client.predict("digits", x[pool][others], version=2, samples=30, seed=1).mutual_information
    ratio, control_ratio = after.mean() / before.mean(), control.mean() / served.mutual_information[others].mean()
    print(
        f"{len(rows)} of {len(pool)} rows captured; mean MI on them {before.mean():.3f} -> {after.mean():.3f}; "
        f"on the others x{control_ratio:.3f}"
    )
    assert ratio < 0.7, (before.mean(), after.mean())
    # the rows that were not captured did not get the same boost: labelling the uncertain ones is what helped
    assert ratio < control_ratio
