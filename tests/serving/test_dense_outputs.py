"""Dense outputs end to end: a U-Net's per-pixel softmax exports, serves the same maps on every transport, is
summarised per image by ``mcdrop predict``, calibrated and abstained on per pixel, and scored into Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("keras")

from mcdrop.serving.client import RestClient
from mcdrop.serving.harness.process import free_port
from tests.helpers import in_process_server, run_cli
from tests.pipeline.export import models

SIZE = 32  # the dense_repository U-Net's images (tests/conftest.py)


def test_the_export_describes_the_dense_output_and_refuses_moments_by_name(dense_repository: Path) -> None:
    manifest = json.loads((dense_repository / "unet" / "1" / "manifest.json").read_text())
    assert manifest["output"]["shape"] == [-1, SIZE, SIZE, 3] and manifest["task"] == "classification"
    assert all(c["passed"] for c in manifest["verification"]["checks"])  # MC mean per pixel against Keras's own
    reason = manifest["moments"]["reason"]
    assert "'concatenate" in reason and "share the dropout masks of 'spatial_dropout'" in reason


def test_every_transport_answers_the_same_maps(dense_repository: Path) -> None:
    x, _ = models.segmentation_scenes(2, SIZE, seed=7)
    with in_process_server(dense_repository, http_port=free_port()) as (server, client):
        grpc_answer = client.predict("unet", x, samples=20, seed=4, version=1)
        with RestClient(f"http://127.0.0.1:{server.http_port}", timeout=30) as rest:
            rest_answer = rest.predict("unet", x, samples=20, seed=4, version=1)
        body = {"inputs": {"x": x.tolist(), "mc_samples": 20, "seed": 4}, "output_filter": ["y", "mutual_information"]}
        tf_serving = httpx.post(f"http://127.0.0.1:{server.http_port}/v1/models/unet/versions/1:predict",
                                json=body, timeout=60).json()["outputs"]  # fmt: skip
    assert grpc_answer.mean.shape == (2, SIZE, SIZE, 3) and grpc_answer.mutual_information.shape == (2, SIZE, SIZE)
    assert grpc_answer.predicted_class.shape == (2, SIZE, SIZE) and not grpc_answer.predicted_label
    for field in ("mean", "std", "mutual_information", "predictive_entropy", "predicted_class"):
        np.testing.assert_array_equal(getattr(grpc_answer, field), getattr(rest_answer, field), err_msg=field)
    np.testing.assert_allclose(np.array(tf_serving["y"]), grpc_answer.mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.array(tf_serving["mutual_information"]), grpc_answer.mutual_information,
                               rtol=0, atol=1e-6)  # fmt: skip
    # The maps mean something: the trained U-Net labels most pixels right.
    _, labels = models.segmentation_scenes(2, SIZE, seed=7)
    assert np.mean(grpc_answer.predicted_class == labels) > 0.8


def test_predict_summarises_each_image_and_writes_the_maps(dense_repository: Path, tmp_path: Path) -> None:
    x, _ = models.segmentation_scenes(3, SIZE, seed=8)
    np.save(tmp_path / "x.npy", x)
    with in_process_server(dense_repository) as (server, _):
        address = f"127.0.0.1:{server.port}"
        shown = run_cli("predict", "--server", address, "--model", "unet", "--input", str(tmp_path / "x.npy"),
                        "--samples", "20", "--seed", "1", "--out", str(tmp_path / "maps.npz"))  # fmt: skip
        as_json = run_cli("predict", "--server", address, "--model", "unet", "--input", str(tmp_path / "x.npy"),
                          "--samples", "20", "--seed", "1", "--json", "--pixel-threshold", "0.001")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert (
        f"dense {SIZE}×{SIZE}×3" in shown.stdout and "pixels MI > 0.1" in shown.stdout and "abstained" in shown.stdout
    )
    maps = np.load(tmp_path / "maps.npz")
    assert maps["mutual_information"].shape == (3, SIZE, SIZE) and maps["abstain"].shape == (3, SIZE, SIZE)
    images = json.loads(as_json.stdout)["images"]
    assert [image["row"] for image in images] == [0, 1, 2] and all(image["pixels"] == SIZE * SIZE for image in images)
    for image, mi, predicted in zip(images, maps["mutual_information"], maps["predicted_class"], strict=True):
        assert image["mean_mutual_information"] == pytest.approx(mi.mean(), rel=1e-6)  # the same seed, the same maps
        assert image["share_above_threshold"] == pytest.approx(np.mean(mi > 0.001))
        assert image["classes"] == pytest.approx({str(c): np.mean(predicted == c) for c in np.unique(predicted)})


def test_calibration_is_per_pixel_and_the_server_abstains_per_pixel(dense_repository: Path) -> None:
    manifest = json.loads((dense_repository / "unet" / "2" / "manifest.json").read_text())
    (calibrated,) = manifest["calibration"]["outputs"]
    chosen = next(s for s in calibrated["scores"] if s["name"] == calibrated["score"])
    assert chosen["selection"]["accepted"] == pytest.approx(0.9 * 40 * SIZE * SIZE, rel=0.01)  # pixels, not images
    images, _ = models.segmentation_scenes(40, SIZE, seed=1)
    with in_process_server(dense_repository) as (_, client):
        answer = client.predict("unet", images[8:24], seed=0)
    assert answer.version == 2 and answer.abstain.shape == (16, SIZE, SIZE)
    assert 0.05 < answer.abstain.mean() < 0.15  # about the 10 % the calibration held back
    np.testing.assert_array_equal(answer.abstain, answer.abstain_score > answer.abstain_threshold)


def test_score_writes_per_pixel_list_columns(dense_repository: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    x, _ = models.segmentation_scenes(5, SIZE, seed=9)
    np.save(tmp_path / "x.npy", x)
    result = run_cli("score", "--repository", str(dense_repository), "--model", "unet", "--input",
                     str(tmp_path / "x.npy"), "--output", str(tmp_path / "out.parquet"), "--samples", "10")  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 5 and "predicted_label" not in table.column_names
    assert len(table.column("mutual_information")[0]) == SIZE * SIZE
    assert len(table.column("p_mean")[0]) == SIZE * SIZE * 3 and len(table.column("abstain")[0]) == SIZE * SIZE


def test_export_web_refuses_a_dense_output_in_one_line(dense_repository: Path, tmp_path: Path) -> None:
    result = run_cli("export-web", str(dense_repository / "unet" / "1"), str(tmp_path / "page"))
    assert result.returncode == 2 and "has a dense output 'y' [32, 32, 3]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "page").exists()


def test_the_prefix_check_reads_one_image_as_one_row(dense_repository: Path) -> None:
    """``prefix_cached`` with one verification row (a --verify-data file of one image): the U-Net's samples come
    from a TILE of ``[1, 32, 32, 4]``, which is that one row — it was read as 32 broadcast rows and refused."""
    from mcdrop.pipeline.export.verify.randomness import prefix_cached

    mc = (dense_repository / "unet" / "1" / "mc.tflite").read_bytes()
    for rows in (1, 3):
        check = prefix_cached(mc, {"x": np.zeros((rows, SIZE, SIZE, 3), np.float32)})
        assert check["passed"] and check["rows_before_samples"] == rows and check["expanding_op"] == "TILE", check
