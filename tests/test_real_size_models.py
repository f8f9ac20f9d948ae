"""The vision models people ship, end to end at a small resolution: export (all and last dropout layers sampled),
bounded-memory verification, serving in invokes that fit a budget with answers identical for every budget, and the
clear refusal of a request whose one sample row does not fit.

The families are ``keras.applications`` backbones with random weights (``mcdrop.pipeline.bench.zoo``: batch norm
calibrated so that dropout moves the output, as in a trained model). 32 px keeps the suite fast; ``mcdrop bench
--zoo`` runs them at 224 px.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mcdrop.pipeline.bench import zoo  # noqa: E402
from mcdrop.pipeline.export.graphs.forward import upstream_owners  # noqa: E402
from mcdrop.pipeline.export.model import selection  # noqa: E402
from mcdrop.pipeline.export.model.sites import describe  # noqa: E402
from mcdrop.serving.core import invokes  # noqa: E402
from mcdrop.serving.core.requests import PredictionRequest  # noqa: E402
from mcdrop.serving.errors import InferenceFailed, InvalidArgument, ResourceExhausted  # noqa: E402
from mcdrop.serving.models.repository import ModelRepository  # noqa: E402
from mcdrop.serving.runtime.dataplane import DataPlane  # noqa: E402
from mcdrop.serving.server.server import data_plane  # noqa: E402
from mcdrop.serving.server.settings import ServerSettings  # noqa: E402
from tests.helpers import in_process_server, run_cli  # noqa: E402

pytestmark = pytest.mark.slow
SIZE = 32
ALL_CHECKS = {"ops", "deterministic_parity", "training_mode_parity", "masked_parity", "drop_fraction", "prefix_cached",
              "mc_mean", "fresh_randomness", "summary_arithmetic", "summary_consistency",
              "summary_statistics"}  # fmt: skip


FAMILIES = tuple(family for family in zoo.FAMILIES if family != "convnext_tiny")
"""ConvNeXt-Tiny (28 M parameters, 18 stochastic-depth sites) takes 407 s and 9.1 GB to export even at 32 px: it runs
in ``mcdrop bench --zoo``; its stochastic depth is tested on small residual models (``test_dropout_kinds``)."""
WITHOUT_MOMENTS = ("resnet50", "efficientnet_b0-last")
"""Exported with --no-moments: the option on real models, and the suite's time (ResNet50 is the largest graph)."""


@pytest.fixture(scope="module")
def zoo_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Every family exported with ``all``; EfficientNetB0 (dropout inside its blocks) also with ``last``."""
    root = tmp_path_factory.mktemp("zoo")
    repository = root / "repo"
    models: dict[str, Any] = {}
    exports = []
    for family in FAMILIES:
        model = models[family] = zoo.build(family, SIZE)
        model.save(root / f"{family}.keras")
        exports.append((family, family, "all"))
    exports.append(("efficientnet_b0", "efficientnet_b0-last", "last"))

    def run(job: tuple[str, str, str]) -> None:  # as users run it: the command, in its own process
        family, name, mode = job
        skip = ["--no-moments"] if name in WITHOUT_MOMENTS else []
        result = run_cli("export", str(root / f"{family}.keras"), "--repository", str(repository), "--name", name,
                         "--mc-layers", mode, "--quiet", *skip)  # fmt: skip
        assert result.returncode == 0, result.stderr

    with ThreadPoolExecutor(2) as pool:  # two exports at a time: conversion runs mostly on one core
        list(pool.map(run, exports))
    return repository, models


def _manifest(repository: Path, name: str) -> dict[str, Any]:
    return json.loads((repository / name / "1" / "manifest.json").read_text())  # type: ignore[no-any-return]


def _plane(repository: Path, **settings: Any) -> DataPlane:
    store = ModelRepository(repository, pool_size=1)
    store.scan()
    return data_plane(store, ServerSettings(repository=str(repository), **settings).validate())


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_exports_with_every_check_passing(
    zoo_repository: tuple[Path, dict[str, Any]], family: str
) -> None:
    manifest = _manifest(zoo_repository[0], family)
    checks = {check["check"]: check for check in manifest["verification"]["checks"]}
    assert set(checks) == ALL_CHECKS and all(check["passed"] for check in checks.values())
    if family in WITHOUT_MOMENTS:
        assert "moments" not in manifest and not (zoo_repository[0] / family / "1" / "moments.tflite").exists()
    elif family == "efficientnet_b0":
        # Every block's stochastic depth has a rule, but squeeze-and-excitation multiplies a feature map by a gate
        # computed from it, and residual adds join a block's output with its input: branches that share masks,
        # which one-pass moments treat as independent (the approximation landed 0.77 MC std from Monte Carlo).
        # The export refuses the graph by name, before the check; Monte Carlo is unaffected.
        moments = manifest["moments"]
        assert not moments["available"] and "joins branches that share the dropout masks" in moments["reason"], moments
    else:  # dropout at the head: every family has rules and passes
        moments = manifest["moments"]
        assert moments["available"] and moments["check"]["passed"], moments.get("reason")
    assert checks["mc_mean"]["samples"] == 2000
    # mcdrop export verified against strict float32 TensorFlow (oneDNN off: the command sets it, not the tests)
    assert checks["deterministic_parity"]["reference_onednn"] is False
    assert manifest["mc_layers"] == "all" and manifest["unsampled_dropout_layers"] == []
    assert manifest["export"]["wall_s"] > 0 and manifest["export"]["peak_rss_mb"] > 0
    per_sample_row = manifest["activation_memory"]["mc_masked"]["per_sample_row"]
    assert per_sample_row >= 4 * manifest["output"]["shape"][-1]  # at least the sampled output row itself


def test_efficientnet_statistics_run_in_chunks_within_the_budget(zoo_repository: tuple[Path, dict[str, Any]]) -> None:
    from mcdrop.pipeline.export.verify.budget import VERIFY_BUDGET_BYTES
    from mcdrop.serving.models.memory import Footprint

    manifest = _manifest(zoo_repository[0], "efficientnet_b0")
    footprint = Footprint.from_manifest(manifest["activation_memory"]["mc_masked"])
    chunk = manifest["export"]["verification_samples_per_invoke"]
    assert chunk < 2000  # 2,000 samples x 4 rows would not fit: the check ran in chunks ...
    assert footprint.bytes_for(4, chunk) <= VERIFY_BUDGET_BYTES < footprint.bytes_for(4, chunk + 1)  # ... that fit


def test_last_samples_only_the_dropout_nearest_the_output(zoo_repository: tuple[Path, dict[str, Any]]) -> None:
    repository, models = zoo_repository
    every = _manifest(repository, "efficientnet_b0")
    last = _manifest(repository, "efficientnet_b0-last")
    assert len(every["dropout_layers"]) > 5  # stochastic depth inside the blocks, and the head
    assert [d["name"] for d in last["dropout_layers"]] == ["top_dropout"]
    assert {d["name"] for d in last["unsampled_dropout_layers"]} == {d["name"] for d in every["dropout_layers"][:-1]}
    assert last["mc_layers"] == "last" and all(c["passed"] for c in last["verification"]["checks"])
    # The whole backbone is now the deterministic prefix, computed once per row.
    assert last["cost"]["prefix"] > 0.99 * (every["cost"]["prefix"] + every["cost"]["per_sample"])
    prefix = next(c for c in last["verification"]["checks"] if c["check"] == "prefix_cached")
    assert prefix["rows_before_samples"] == 4 and len(prefix["prefix_ops"]) > 100
    # In the single-head families the only dropout is the last one: last selects it, the same as all.
    for family in ("mobilenet_v2", "mobilenet_v3_small", "resnet50"):
        sites = describe(models[family])
        chosen = selection.select("last", sites, upstream_owners(models[family], sites))
        assert chosen.sampled == sites and chosen.unsampled == []


def test_mc_layers_names_and_refusals(zoo_repository: tuple[Path, dict[str, Any]]) -> None:
    model = zoo_repository[1]["efficientnet_b0"]
    sites = describe(model)
    upstream = upstream_owners(model, sites)
    chosen = selection.select("block6d_drop,top_dropout", sites, upstream)
    assert [s.name for s in chosen.sampled] == ["block6d_drop", "top_dropout"]
    assert len(chosen.unsampled) == len(sites) - 2
    assert "top_dropout" not in upstream["top_dropout"] and "block6d_drop" in upstream["top_dropout"]
    with pytest.raises(InvalidArgument, match=r"no dropout site\. Expected any of"):
        selection.select("block99_drop", sites, upstream)


def test_served_answers_are_identical_for_every_invoke_budget(zoo_repository: tuple[Path, dict[str, Any]]) -> None:
    repository, _ = zoo_repository
    x = zoo.images(3, SIZE, 7)
    roomy, tight = _plane(repository, max_invoke_mb=1024), _plane(repository, max_invoke_mb=0.5)
    for name in ("efficientnet_b0", "efficientnet_b0-last", "mobilenet_v2"):
        version = tight.model(name)
        footprint = version.footprint("mc_masked")
        assert invokes.plan(footprint, 3, 40, 1024 * invokes.MIB, name).invokes(3, 40) == 1
        if name == "efficientnet_b0":  # 0.5 MiB holds a few sample rows of it: many invokes, rows split too
            split = invokes.plan(footprint, 3, 40, invokes.MIB // 2, name)
            assert split.invokes(3, 40) > 10 and split.rows < 3
        for mode in ("monte_carlo", "deterministic"):
            request = PredictionRequest(model=name, x=x, samples=40, seed=11, mode=mode, return_samples=True)
            one, many = roomy.predict(request), tight.predict(request)
            assert one.sample_outputs is not None and many.sample_outputs is not None
            assert one.sample_outputs.tobytes() == many.sample_outputs.tobytes()
            assert one.summary.mean.tobytes() == many.summary.mean.tobytes()
            if mode == "monte_carlo":
                assert float(one.summary.std.max()) > 0  # dropout moves the outputs: the comparison means something


def test_a_budget_too_small_for_one_sample_row_is_refused_with_the_numbers(
    zoo_repository: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    repository, _ = zoo_repository
    plane = _plane(repository, max_invoke_mb=0.01)
    invoked: list[int] = []
    pool = plane.model("efficientnet_b0").pools["mc_masked"]
    with pool.lease() as graph:
        monkeypatch.setattr(type(graph), "run", lambda self, feeds: invoked.append(1) or [])
    request = PredictionRequest(model="efficientnet_b0", x=zoo.images(1, SIZE), samples=10, seed=1)
    with pytest.raises(ResourceExhausted, match=r"needs [0-9.]+ MiB of activations for one sample of one row, above "
                                                 r"the invoke memory budget of 0\.0 MiB.*--max-invoke-mb"):  # fmt: skip
        plane.predict(request)
    assert invoked == []  # refused before any invoke


def test_a_litert_failure_names_the_model_graph_rows_and_what_to_change(
    zoo_repository: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    repository, _ = zoo_repository
    plane = _plane(repository)

    from mcdrop.serving.models.litert import Graph

    version = plane.model("resnet50")
    with version.pools["mc_masked"].lease() as graph:
        interpreter = graph._interpreter

    def fail() -> None:
        raise RuntimeError("")  # what LiteRT raises when an invoke fails: an empty message

    monkeypatch.setattr(interpreter, "invoke", fail)
    assert isinstance(graph, Graph)
    request = PredictionRequest(model="resnet50", x=zoo.images(2, SIZE), samples=30, seed=1)
    with pytest.raises(InferenceFailed) as raised:
        plane.predict(request)
    message = str(raised.value)
    assert "mc_masked.tflite of model 'resnet50' version 1 on 60 sample rows (T=30 x B=2)" in message
    assert "LiteRT failed at inputs x [2, 32, 32, 3], mask_head_dropout [30, 2, 2048]" in message
    assert "RuntimeError without a message" in message and "smaller T or batch" in message


def test_metadata_over_every_api_says_where_the_uncertainty_comes_from(
    zoo_repository: tuple[Path, dict[str, Any]],
) -> None:
    import httpx

    from mcdrop.serving.harness.process import free_port

    repository, _ = zoo_repository
    with in_process_server(repository, http_port=free_port()) as (server, client):
        meta = client.metadata("efficientnet_b0-last")
        assert meta["mc_layers"] == "last" and len(meta["unsampled_dropout_layers"]) > 5
        rest = httpx.get(f"http://127.0.0.1:{server.http_port}/v2/models/efficientnet_b0-last", timeout=10).json()
        assert rest["parameters"]["mc_layers"] == "last"
        assert rest["parameters"]["sampled_dropout"] == "top_dropout"
        assert rest["parameters"]["activation_bytes_per_sample_row"] > 0
        prediction = client.predict("efficientnet_b0", zoo.images(2, SIZE), samples=100, seed=3)
        assert prediction.samples == 100 and prediction.mean.shape == (2, zoo.CLASSES)
        rows = repository.parent / "rows.npy"
        np.save(rows, zoo.images(1, SIZE))
        args = ("predict", "--server", f"127.0.0.1:{server.port}", "--model", "efficientnet_b0-last", "--input",
                str(rows), "--samples", "20", "--seed", "1")  # fmt: skip
        shown = run_cli(*args)
        assert shown.returncode == 0, shown.stderr
        expected = "Uncertainty from 1 sampled dropout site(s): top_dropout; 9 other(s) run as in inference"
        assert f"{expected} (exported with --mc-layers last)" in " ".join(shown.stdout.split())
        as_json = json.loads(run_cli(*args, "--json").stdout)
        assert as_json["uncertainty_from"]["sampled"] == ["top_dropout"]
        assert len(as_json["uncertainty_from"]["unsampled"]) == 9
