"""Predictions over real loopback gRPC: the semantics of modes, seeds, streaming and adaptive sampling."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mcdrop.serving.client import Client
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.server.server import Server
from tests.helpers import in_process_server


def test_deterministic_mode_equals_the_deterministic_graph(
    served: tuple[Server, Client], model_repository: Path, digits_rows: np.ndarray
) -> None:
    _, client = served
    p = client.predict("digits", digits_rows, mode="deterministic")
    expected = Graph(model_repository / "digits" / "1" / "deterministic.tflite").run({"x": digits_rows})[0]
    np.testing.assert_array_equal(p.mean, expected)
    assert p.samples == 1 and p.mode == "deterministic"
    np.testing.assert_array_equal(p.mutual_information, 0.0)
    assert p.predicted_label == [str(c) for c in expected.argmax(1)]


def test_monte_carlo_mean_is_near_the_deterministic_prediction(
    served: tuple[Server, Client], digits_rows: np.ndarray
) -> None:
    _, client = served
    deterministic = client.predict("digits", digits_rows, mode="deterministic")
    mc = client.predict("digits", digits_rows, samples=2000, seed=1)
    other = client.predict("digits", digits_rows, samples=2000, seed=2)
    assert mc.samples == 2000 and mc.mode == "monte_carlo"
    # Converged: two independent 2000-sample estimates agree closely...
    assert np.abs(mc.mean - other.mean).max() < 0.03
    # ...and sit in the deterministic prediction's neighbourhood (same class, small mean L1 distance).
    np.testing.assert_array_equal(mc.predicted_class, deterministic.predicted_class)
    assert np.abs(mc.mean - deterministic.mean).sum(axis=1).mean() < 0.2
    assert (mc.mutual_information >= 0).all() and (mc.mutual_information > 0).any()
    np.testing.assert_allclose(mc.predictive_entropy, mc.expected_entropy + mc.mutual_information, atol=1e-9)


def test_seeded_calls_are_identical_and_unseeded_calls_differ(
    served: tuple[Server, Client], digits_rows: np.ndarray
) -> None:
    _, client = served
    first = client.predict("digits", digits_rows, samples=100, seed=42, return_samples=True)
    again = client.predict("digits", digits_rows, samples=100, seed=42, return_samples=True)
    assert first.seed == 42
    assert first.sample_outputs is not None and again.sample_outputs is not None
    assert first.sample_outputs.tobytes() == again.sample_outputs.tobytes()
    other_seed = client.predict("digits", digits_rows, samples=100, seed=43, return_samples=True)
    assert other_seed.sample_outputs is not None
    assert not np.array_equal(first.sample_outputs, other_seed.sample_outputs)


@pytest.mark.parametrize("mask_source", ["host", "graph"])
def test_unseeded_masks_never_repeat_across_batch_sizes(
    model_repository: Path, digits_rows: np.ndarray, mask_source: str
) -> None:
    """A fixed-seed in-graph RNG restarts on re-allocation: B=1, B=3, B=1 would repeat the first answer."""
    with in_process_server(model_repository, mask_source=mask_source) as (_, client):
        outputs, seeds = [], []
        for batch in (1, 3, 1, 5, 1, 1):
            p = client.predict("digits", digits_rows[:batch], samples=50, return_samples=True)
            assert p.sample_outputs is not None
            outputs.append(p.sample_outputs[:, 0].tobytes())
            seeds.append(p.seed)
        assert len(set(outputs)) == len(outputs)
        if mask_source == "graph":
            assert seeds == [None] * 6  # LiteRT's OS-seeded random ops: nothing to report
        else:
            assert None not in seeds and len(set(seeds)) == 6
            # The reported seed replays the answer exactly.
            replay = client.predict("digits", digits_rows[:1], samples=50, seed=seeds[-1], return_samples=True)
            assert replay.sample_outputs is not None and replay.sample_outputs[:, 0].tobytes() == outputs[-1]


def test_seeded_results_survive_a_restart(model_repository: Path, digits_rows: np.ndarray) -> None:
    answers = []
    for _ in range(2):
        with in_process_server(model_repository) as (_, client):
            answers.append(client.predict("digits", digits_rows[:2], samples=64, seed=7).mean.tobytes())
    assert answers[0] == answers[1]


def test_regression_mean_std_and_interval(served: tuple[Server, Client], model_repository: Path) -> None:
    from sklearn.datasets import load_diabetes

    _, client = served
    x = load_diabetes().data[:5].astype(np.float32)
    p = client.predict("diabetes", x, samples=500, seed=3, interval=0.9)
    assert p.task == "regression" and p.interval == pytest.approx(0.9)
    assert p.mean.shape == (5, 1) and p.std.shape == (5, 1)
    assert p.lower is not None and p.upper is not None
    assert (p.lower < p.mean).all() and (p.mean < p.upper).all() and (p.std > 0).all()
    assert 25 < float(p.mean.mean()) < 350  # original units of the diabetes target
    # Trained by mcdrop, so its manifest has tau: the predictive spread adds 1/tau to the samples' variance.
    manifest = json.loads((model_repository / "diabetes" / "1" / "manifest.json").read_text())
    variance = manifest["output"]["observation_noise"]["variance"]
    assert p.noise_variance is not None and p.noise_variance.tolist() == pytest.approx(variance)
    np.testing.assert_allclose(p.predictive_std**2, p.std.astype(np.float64) ** 2 + variance[0], rtol=1e-5)
    np.testing.assert_allclose(p.upper - p.mean, 1.6448536 * p.predictive_std, rtol=1e-4)
    assert (p.lower < p.mean_lower).all() and (p.mean_upper < p.upper).all()


def test_stream_is_progressive_and_ends_where_a_one_shot_call_does(
    served: tuple[Server, Client], digits_rows: np.ndarray
) -> None:
    _, client = served
    updates = list(client.predict_stream("digits", digits_rows[:2], samples=50, chunk=10, seed=5))
    assert [u.samples for u in updates] == [10, 20, 30, 40, 50]
    assert [u.final for u in updates] == [False] * 4 + [True]
    one_shot = client.predict("digits", digits_rows[:2], samples=50, seed=5)
    assert updates[-1].mean.tobytes() == one_shot.mean.tobytes()


def test_stream_can_stop_early(served: tuple[Server, Client], digits_rows: np.ndarray) -> None:
    _, client = served
    seen = 0
    for update in client.predict_stream("digits", digits_rows[:1], samples=5000, chunk=10):
        seen += 1
        if update.max_standard_error < 0.05:
            break
    assert 1 <= seen < 500
    assert client.health() == "SERVING"


def test_adaptive_sampling_stops_at_the_tolerance(served: tuple[Server, Client], digits_rows: np.ndarray) -> None:
    _, client = served
    p = client.predict("digits", digits_rows, tolerance=0.02, max_samples=5000, chunk=20, seed=11)
    assert p.max_standard_error <= 0.02
    assert 20 <= p.samples < 5000 and p.samples % 20 == 0
    capped = client.predict("digits", digits_rows, tolerance=1e-9, max_samples=60, chunk=20, seed=11)
    assert capped.samples == 60 and capped.max_standard_error > 1e-9


def test_list_models_and_metadata(served: tuple[Server, Client]) -> None:
    _, client = served
    models = {m.name: m for m in client.list_models()}
    assert models["digits"].versions == [1] and models["digits"].latest == 1
    assert models["digits"].task == "classification" and models["diabetes"].task == "regression"
    meta = client.metadata("digits")
    assert meta["input"]["shape"] == [-1, 64] and meta["class_labels"] == [str(i) for i in range(10)]
    assert [d["rate"] for d in meta["dropout_layers"]] == [pytest.approx(0.2), pytest.approx(0.5)]


def test_health_and_reflection(served: tuple[Server, Client]) -> None:
    server, client = served
    assert client.health() == "SERVING"
    assert client.health("mcdrop.v1.Inference") == "SERVING"
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for r in responses for s in r.list_services_response.service}
    assert {"mcdrop.v1.Inference", "grpc.health.v1.Health", "inference.GRPCInferenceService",
            "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"} <= services  # fmt: skip
    for symbol in ("tensorflow.serving.PredictionService", "inference.GRPCInferenceService", "mcdrop.v1.Inference"):
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                file_containing_symbol=symbol)]))  # fmt: skip
        assert answer.file_descriptor_response.file_descriptor_proto, (symbol, answer.error_response)
    assert client.health("tensorflow.serving.PredictionService") == "SERVING"
