"""The model repository as the server sees it: load, verify, swap, poll, unload.

Layout (see ``mcdrop.serving.models.layout``): ``REPO/NAME/VERSION/`` with a
``manifest.json`` and the graphs it lists. A version is loaded only after every
file matches its sha256 and each graph has run once; only then is it swapped in.
A version that fails is logged, counted and remembered (it is retried when its
manifest changes); the versions already loaded keep serving.

Threading: ``scan`` runs on one thread (the poller or the caller); readers
(``get``, ``states``) never block, because the loaded set is replaced, never
mutated, on each change.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.errors import InvalidArgument, MCDropError, NotFound, first_line
from mcdrop.serving.models.layout import check_model_name
from mcdrop.serving.models.layout import versions as list_versions
from mcdrop.serving.models.manifest import (
    FLOAT32,
    MANIFEST,
    QUANTIZATIONS,
    DropoutSite,
    Fingerprint,
    GraphName,
    InputSpec,
    Manifest,
    OutputSpec,
    Task,
    read_verified,
)
from mcdrop.serving.models.masks import SCHEME, fingerprint_feeds, mask_dtype
from mcdrop.serving.models.memory import Feeds, Footprint, footprint, zero_feeds
from mcdrop.serving.models.pool import InterpreterPool

__all__ = ["ModelRepository", "ModelVersion"]

log = logging.getLogger("mcdrop.repository")


@dataclasses.dataclass
class ModelVersion:
    """One loaded, verified model version with its interpreter pools. Not changed after loading (the repository
    replaces a version, never mutates it); the footprints are measured once, at load."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    pools: dict[GraphName, InterpreterPool]
    signature: int
    contents: dict[GraphName, bytes] = dataclasses.field(default_factory=dict, repr=False)
    """The verified bytes of each graph (the interpreters' model buffers: LiteRT reads weights from them)."""
    variant_pools: dict[str, dict[GraphName, InterpreterPool]] = dataclasses.field(default_factory=dict)
    """The quantised variants' server graphs (``Manifest.variants``), by variant name."""

    @property
    def variants(self) -> list[str]:
        """The variants a request may name: ``float32`` and each exported quantised one."""
        return [FLOAT32, *self.variant_pools]

    def pools_for(self, variant: str) -> dict[GraphName, InterpreterPool]:
        """The interpreter pools of ``variant``'s graphs.

        Raises:
            InvalidArgument: the version has no such variant (the message names those it has).
        """
        if variant == FLOAT32:
            return self.pools
        found = self.variant_pools.get(variant)
        if found is None:
            known = variant in QUANTIZATIONS
            hint = (f" Re-export with mcdrop export --quantize {variant} to add it." if known
                    else f" Variants are float32, {', '.join(QUANTIZATIONS)}.")  # fmt: skip
            raise InvalidArgument(
                f"Model {self.name!r} version {self.version} has no variant {variant!r}. Expected one of "
                f"{', '.join(self.variants)} (the variants it was exported with).{hint}"
            )
        return found

    @property
    def task(self) -> Task:
        return self.manifest.task

    @property
    def stochastic(self) -> bool:
        return self.manifest.stochastic

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.manifest.input.shape

    @property
    def integer_range(self) -> tuple[int, int] | None:
        """``(low, high)`` for token-id models: whole numbers in this range, sent as float32."""
        return self.manifest.input.integer_range

    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        """Every model input, in the graphs' order (one ``x`` for a single-input model)."""
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        """Every model output, in the graphs' order (one ``y`` for a single-output model)."""
        return self.manifest.outputs

    @property
    def noise_variance(self) -> np.ndarray | None:
        """The first output's observation-noise variance (see ``noise_variances``)."""
        return self.noise_variances[0]

    @functools.cached_property
    def noise_variances(self) -> tuple[np.ndarray | None, ...]:
        """Per output: observation-noise variance 1/tau in the output's shape, or None (classification, or
        epistemic only); read once per version."""
        found: list[np.ndarray | None] = []
        for output in self.outputs:
            noise = output.observation_noise
            if output.task != Task.REGRESSION or noise is None or noise.variance is None:
                found.append(None)
                continue
            shaped = np.asarray(noise.variance, np.float64).reshape(output.row_shape)
            shaped.setflags(write=False)  # shared by every request of this version
            found.append(shaped)
        return tuple(found)

    @property
    def class_labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def default_samples(self) -> int:
        return self.manifest.default_samples

    @property
    def dropout(self) -> tuple[DropoutSite, ...]:
        """The sampled dropout sites, in call order."""
        return self.manifest.dropout_layers

    @property
    def mc_layers(self) -> str:
        """The export's ``--mc-layers`` choice (``all`` for exports from before it existed)."""
        return self.manifest.mc_layers

    @property
    def unsampled_dropout(self) -> tuple[DropoutSite, ...]:
        """Dropout sites the export left out of sampling (they run as in inference)."""
        return self.manifest.unsampled_dropout_layers

    @property
    def has_moments(self) -> bool:
        """Whether this version has a verified one-pass moments graph (mode ``moments``)."""
        return GraphName.MOMENTS in self.pools

    @property
    def modes(self) -> list[str]:
        """The modes this version answers: ``deterministic``, ``monte_carlo`` (with dropout), ``moments`` (with
        the moments graph)."""
        found = ["deterministic"]
        if self.stochastic:
            found.append("monte_carlo")
        if self.has_moments:
            found.append("moments")
        return found

    def uncertainty_source(self) -> dict[str, str | int]:
        """Where the Monte-Carlo uncertainty comes from, for metadata answers (every API says the same)."""
        return {
            "mc_layers": self.mc_layers,
            "sampled_dropout": ",".join(d.name for d in self.dropout),
            "unsampled_dropout": ",".join(d.name for d in self.unsampled_dropout),
            "activation_bytes_per_sample_row": self.footprints[GraphName.MC_MASKED].per_sample_row
            if self.stochastic
            else 0,
            "default_samples": self.default_samples,
            "modes": ",".join(self.modes),
        }

    @functools.cached_property
    def footprints(self) -> dict[GraphName, Footprint]:
        """Activation bytes per row of the deterministic, fed-mask and moments graphs, measured from the graphs."""
        found = {GraphName.DETERMINISTIC: footprint(self.contents[GraphName.DETERMINISTIC], self._feeds(masks=False))}
        if self.stochastic:
            found[GraphName.MC_MASKED] = footprint(self.contents[GraphName.MC_MASKED], self._feeds(masks=True))
        if self.has_moments:
            found[GraphName.MOMENTS] = footprint(self.contents[GraphName.MOMENTS], self._feeds(masks=False))
        return found

    def footprint(self, graph: GraphName) -> Footprint:
        """``graph``'s footprint (``mc`` shares ``mc_masked``'s: the same layers, masks drawn inside)."""
        return self.footprints[GraphName.MC_MASKED if graph == GraphName.MC else graph]

    def _feeds(self, *, masks: bool) -> Feeds:
        specs = self.dropout if masks else ()
        mask_inputs = [(s.feed_name, s.noise_shape, mask_dtype(s)) for s in specs]
        return zero_feeds({spec.name: spec.row_shape for spec in self.inputs}, mask_inputs)


@dataclasses.dataclass(frozen=True)
class ModelState:
    """A model's loaded versions and the ones that failed (version → reason)."""

    versions: dict[int, ModelVersion]
    failed: dict[int, str]

    @property
    def latest(self) -> ModelVersion | None:
        return self.versions[max(self.versions)] if self.versions else None


Listener = Callable[[str, str, int, str], None]
"""Called with (event, model, version, detail): event is loaded, unloaded or failed for a version,
scan_ok or scan_failed (model "" and version 0) after each scan of the repository."""


class ModelRepository:
    """Loads model versions from ``root`` and keeps them current."""

    def __init__(
        self,
        root: Path,
        *,
        pool_size: int = 2,
        interpreter_threads: int = 1,
        lone_request_threads: int = 1,
        max_versions: int = 2,
        listener: Listener | None = None,
        model_name: str | None = None,
    ) -> None:
        """Args:
        model_name: the name to serve a single-model directory under (KServe's ``/mnt/models``: one
            exported version's files directly in ``root``); default: the name in its manifest.
        lone_request_threads: threads of each pool's extra interpreter for a request alone in flight
            (``mcdrop.serving.models.pool``); 1 = no such interpreter.
        """
        self.root = root
        self._model_name = model_name or None
        self._single: tuple[str, int] | None = None
        self._pool_size = pool_size
        self._threads = interpreter_threads
        self._lone_threads = lone_request_threads
        self._max_versions = max_versions
        self._listener = listener or (lambda *_: None)
        self._models: dict[str, ModelState] = {}
        self._failed_signatures: dict[tuple[str, int], int] = {}
        self._scan_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.last_scan_error: str | None = None

    # Reading ------------------------------------------------------------------------------------

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The requested (or latest) loaded version.

        Raises:
            NotFound: no such model, or that version is not loaded.
        """
        state = self._models.get(name)
        if state is None or not state.versions:
            known = ", ".join(sorted(n for n, s in self._models.items() if s.versions)) or "none"
            raise NotFound(f"Model {name!r} is not loaded. Loaded models: {known}.")
        if version is None:
            return state.versions[max(state.versions)]
        if version not in state.versions:
            loaded = ", ".join(str(v) for v in sorted(state.versions))
            reason = f" (it failed to load: {state.failed[version]})" if version in state.failed else ""
            raise NotFound(f"Version {version} of model {name!r} is not loaded{reason}. Loaded versions: {loaded}.")
        return state.versions[version]

    def states(self) -> dict[str, ModelState]:
        return dict(self._models)

    # Loading ------------------------------------------------------------------------------------

    def scan(self) -> None:
        """Bring the loaded set in line with the directory: load new versions, drop removed ones."""
        with self._scan_lock:
            try:
                wanted = self._wanted_versions()
            except OSError as exc:
                # An unreadable repository must not unload what is serving.
                self.last_scan_error = f"cannot read repository {self.root}: {exc}"
                log.error("repository scan failed; keeping the loaded versions", extra={"detail": self.last_scan_error})
                self._listener("scan_failed", "", 0, self.last_scan_error)
                return
            self.last_scan_error = None
            self._listener("scan_ok", "", 0, "")
            current = self._models
            updated: dict[str, ModelState] = {}
            for name, versions in wanted.items():
                state = current.get(name, ModelState({}, {}))
                loaded = dict(state.versions)
                failed = {v: r for v, r in state.failed.items() if v in versions}
                for version, signature in versions.items():
                    existing = loaded.get(version)
                    if existing is not None and existing.signature == signature:
                        continue
                    if self._failed_signatures.get((name, version)) == signature:
                        continue  # unchanged since it failed: do not retry every poll
                    try:
                        self._listener("loading", name, version, "")
                        loaded[version] = self._load(name, version, signature)
                        failed.pop(version, None)
                        self._failed_signatures.pop((name, version), None)
                        self._listener("loaded", name, version, "")
                    except Exception as exc:
                        reason = first_line(exc)
                        failed[version] = reason
                        self._failed_signatures[(name, version)] = signature
                        log.error(
                            "model version failed to load; keeping the loaded versions",
                            extra={"model": name, "version": version, "detail": reason},
                            exc_info=not isinstance(exc, MCDropError),
                        )
                        self._listener("failed", name, version, reason)
                for version in [v for v in loaded if v not in versions]:
                    del loaded[version]
                    self._listener("unloaded", name, version, "")
                if loaded or failed:
                    updated[name] = ModelState(loaded, failed)
            for name, state in current.items():
                if name not in updated:
                    for version in state.versions:
                        self._listener("unloaded", name, version, "")
            self._models = updated

    def _wanted_versions(self) -> dict[str, dict[int, int]]:
        """Newest ``max_versions`` version directories per model, with a change signature each."""
        wanted: dict[str, dict[int, int]] = {}
        if not self.root.is_dir():
            raise OSError(f"{self.root} is not a directory")
        if (self.root / MANIFEST).is_file():
            # KServe's layout: the storage initializer copies one exported version's files into the root.
            name, version = self._single_model()
            self._single = (name, version)
            return {name: {version: _signature(self.root)}}
        self._single = None
        stray = list_versions(self.root)
        if stray:
            raise OSError(
                f"{self.root} holds version folders {stray} but no manifest.json: it looks like one model's folder. "
                "Expected REPO/NAME/VERSION/ (pass its parent as the repository) or one version's files "
                "(manifest.json, *.tflite) directly in the repository (KServe's single-model layout)."
            )
        for model_dir in sorted(self.root.iterdir()):
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            versions = list_versions(model_dir)[-self._max_versions :]
            signatures = {version: _signature(model_dir / str(version)) for version in versions}
            if signatures:
                wanted[model_dir.name] = signatures
        return wanted

    def _single_model(self) -> tuple[str, int]:
        try:
            manifest = Manifest.load(self.root)
            name = check_model_name(self._model_name or manifest.name or "model")
            return name, manifest.version or 1
        except (MCDropError, ValueError) as exc:  # reported like an unreadable repository: nothing is unloaded
            raise OSError(f"single-model directory {self.root}: {exc}") from exc

    def _load(self, name: str, version: int, signature: int) -> ModelVersion:
        path = self.root if self._single == (name, version) else self.root / name / str(version)
        manifest = Manifest.load(path)
        pools, contents = {}, {}
        served = dict(manifest.graphs)
        if manifest.moments is not None and manifest.moments.graph is not None:
            served[GraphName.MOMENTS] = manifest.moments.graph
        for graph, spec in served.items():
            # Hash the very bytes the interpreters get: never serve a file that failed its digest.
            contents[graph] = read_verified(path, spec.file, manifest)
            pools[graph] = InterpreterPool(
                contents[graph], size=self._pool_size, threads=self._threads, lone_threads=self._lone_threads
            )
        variant_pools = {
            variant.name: {
                graph: InterpreterPool(read_verified(path, spec.file, manifest), size=self._pool_size,
                                       threads=self._threads, lone_threads=self._lone_threads)
                for graph, spec in variant.graphs.items()
            }
            for variant in manifest.variants.values()
        }  # fmt: skip
        loaded = ModelVersion(name, version, path, manifest, pools, signature, contents, variant_pools)
        _smoke_test(loaded)
        loaded.footprints  # measured now, not on the first request  # noqa: B018
        return loaded

    # Polling ------------------------------------------------------------------------------------

    def start_polling(self, interval: float) -> None:
        if interval <= 0 or self._poller is not None:
            return

        def poll() -> None:
            while not self._stop.wait(interval):
                try:
                    self.scan()
                except Exception:
                    log.exception("repository poll failed")

        self._poller = threading.Thread(target=poll, name="repository-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)


def _check_fingerprint(version: ModelVersion, fingerprint: Fingerprint) -> None:
    rows, seed = fingerprint.rows, fingerprint.seed
    x = _fingerprint_inputs(version, fingerprint)
    runs: dict[GraphName, tuple[dict[str, np.ndarray], Any]] = {GraphName.DETERMINISTIC: (x, fingerprint.deterministic)}
    if version.stochastic and fingerprint.mc_masked is not None and fingerprint.masks == SCHEME:
        # (older exports drew their fingerprint masks with another scheme: only the deterministic graph is checked)
        feeds = {**x, **fingerprint_feeds(version.dropout, seed, rows, fingerprint.samples or rows)}
        runs[GraphName.MC_MASKED] = (feeds, fingerprint.mc_masked)
    for graph_name, (feeds, recorded) in runs.items():
        with version.pools[graph_name].lease() as graph:
            outputs, names = graph.run(feeds), graph.output_names
        if len(version.outputs) == 1:
            actual, expected = outputs[:1], [recorded]
        else:  # by name: the converter's output order is its own
            actual = [outputs[names.index(o.name)] for o in version.outputs]
            expected = [recorded.get(o.name) for o in version.outputs]
        for got, wanted in zip(actual, expected, strict=True):
            wanted_array = np.asarray(wanted if wanted is not None else [], dtype=np.float32)
            if got.shape != wanted_array.shape or not np.allclose(got, wanted_array, rtol=1e-4, atol=1e-5):
                raise MCDropError(
                    f"{graph_name}.tflite does not reproduce the export's fingerprint (outputs on fixed inputs): "
                    "the file is damaged or not the one that was exported."
                )


def _fingerprint_inputs(version: ModelVersion, fingerprint: Fingerprint) -> dict[str, np.ndarray]:
    rows = fingerprint.rows
    if fingerprint.x is None:  # older exports drew standard normals (token-id models now record valid ids)
        row_shape = version.input_shape[1:]
        return {"x": np.random.default_rng(fingerprint.seed).standard_normal((rows, *row_shape)).astype(np.float32)}
    recorded = {"x": fingerprint.x} if isinstance(fingerprint.x, list) else fingerprint.x
    if set(recorded) != {spec.name for spec in version.inputs}:
        raise MCDropError(f"The fingerprint's inputs {sorted(recorded)} are not the model's inputs.")
    return {spec.name: np.asarray(recorded[spec.name], np.float32).reshape((rows, *spec.row_shape))
            for spec in version.inputs}  # fmt: skip


def _signature(version_dir: Path) -> int:
    """Changes whenever a file in the version directory is added, removed, resized or rewritten.

    A failed version is retried only when this changes, so a version whose files are still
    being copied in (non-atomically) is loaded once the copy completes.
    """
    entries = []
    try:
        for child in sorted(version_dir.iterdir()):
            stat = child.stat()
            entries.append((child.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return 0
    return hash(tuple(entries))


def _check_output_names(version: ModelVersion) -> None:
    """A model with several outputs: every graph must return each output the manifest lists, by name."""
    if len(version.outputs) == 1:
        return
    wanted = [o.name for o in version.outputs]
    for graph_name, pool in version.pools.items():
        if graph_name == GraphName.MOMENTS:
            continue  # checked by _check_moments_outputs
        with pool.lease() as graph:
            found = graph.output_names
        missing = [name for name in wanted if name not in found]
        if missing:
            raise MCDropError(
                f"{graph_name}.tflite has no output tensor named {missing} (its outputs are {found}); the manifest "
                f"lists the outputs {wanted}. Re-export the model: the graph and the manifest do not belong together."
            )


def _check_moments_outputs(version: ModelVersion) -> None:
    """The moments graph returns a mean and a variance per model output, named as the manifest's links say."""
    moments = version.manifest.moments
    if moments is None or moments.graph is None:
        return
    links = moments.links or (None,) * len(version.outputs)
    wanted = moments.output_names([o.name for o in version.outputs])
    x = {spec.name: np.zeros((1, *spec.row_shape), dtype=np.float32) for spec in version.inputs}
    with version.pools[GraphName.MOMENTS].lease() as graph:
        found = graph.output_names
        graph.run(x)
    if sorted(found) != sorted(wanted) or len(links) != len(version.outputs):
        raise MCDropError(
            f"moments.tflite has outputs {found}; the manifest's outputs and links ask for {wanted}. Re-export the "
            "model: the graph and the manifest do not belong together."
        )


def _smoke_test(version: ModelVersion) -> None:
    """Run every graph once so a broken file fails at load time, not on a request; where the manifest has
    a fingerprint (outputs on fixed inputs and masks), the outputs must match it."""
    _check_output_names(version)
    _check_moments_outputs(version)
    if version.manifest.fingerprint is not None:
        _check_fingerprint(version, version.manifest.fingerprint)
        _check_variant_fingerprints(version, version.manifest.fingerprint)
    x = {spec.name: np.zeros((1, *spec.row_shape), dtype=np.float32) for spec in version.inputs}
    for variant in version.variants:
        pools = version.pools_for(variant)
        with pools[GraphName.DETERMINISTIC].lease() as graph:
            graph.run(x)
        if version.stochastic:
            with pools[GraphName.MC].lease() as graph:
                graph.run({**x, "samples": np.array(2, np.int32)})
            feeds = {
                d.feed_name: np.ones((2, 1, *d.noise_shape), mask_dtype(d)) for d in version.dropout
            }  # masks of the right shapes and dtypes; values do not matter here
            with pools[GraphName.MC_MASKED].lease() as graph:
                graph.run({**x, **feeds})


VARIANT_FINGERPRINT_TOLERANCE = 1e-2
"""Absolute tolerance of a quantised variant's fingerprint: int8 kernels may round one step differently on another
CPU (XNNPACK picks kernels by instruction set); damage moves outputs far more."""


def _check_variant_fingerprints(version: ModelVersion, fingerprint: Fingerprint) -> None:
    """Each variant's deterministic graph reproduces its own recorded outputs on the fingerprint's inputs."""
    x = _fingerprint_inputs(version, fingerprint)
    for name, variant in version.manifest.variants.items():
        if variant.fingerprint is None:
            continue
        with version.variant_pools[name][GraphName.DETERMINISTIC].lease() as graph:
            outputs, names = graph.run(x), graph.output_names
        recorded = variant.fingerprint
        if len(version.outputs) == 1:
            pairs = [(outputs[0], recorded)]
        else:
            pairs = [(outputs[names.index(o.name)], recorded.get(o.name)) for o in version.outputs]
        for got, wanted in pairs:
            wanted_array = np.asarray(wanted if wanted is not None else [], dtype=np.float32)
            if got.shape != wanted_array.shape or not np.allclose(got, wanted_array, rtol=0,
                                                                  atol=VARIANT_FINGERPRINT_TOLERANCE):  # fmt: skip
                raise MCDropError(
                    f"{variant.graphs[GraphName.DETERMINISTIC].file} does not reproduce the export's fingerprint "
                    "(outputs on fixed inputs): the file is damaged or not the one that was exported."
                )
