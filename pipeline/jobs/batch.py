"""``mcdrop export-batch JOB.toml``: train (optionally with k-fold selection) and export many models.

Job file::

    repository = "repo"              # relative to the job file
    workdir = "job-work"             # trained models go here (default: <job>.work next to the file)
    cpus_per_entry = 1               # with --ray: CPUs each entry's task reserves

    [defaults]                       # training settings shared by every entry
    epochs = 20
    seed = 1

    [[entry]]                        # train with fixed settings, then export
    name = "digits-mlp"
    dataset = "digits"
    dropout = [0.2, 0.5]

    [[entry]]                        # choose the dropout rates by 3-fold cross-validation
    name = "digits-cv"
    select = { dropout = [[0.1, 0.1], [0.2, 0.5]], folds = 3 }

    [[entry]]                        # export an existing Keras model
    name = "external"
    model = "models/external.keras"
    quantize = ["float16"]
    import = ["layers.py"]           # the user's custom layers: modules or .py files (relative to the job file)

Resumable: each entry's effective settings hash into ``source.job_entry`` of the
manifest; an entry whose hash is already exported is skipped. A failing entry is
reported and the job goes on; the exit code is non-zero if any entry failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback
from pathlib import Path
from typing import Any

from mcdrop.pipeline.export.convert.shapes import Shape, parse_shape
from mcdrop.pipeline.training.config import FIELD_NAMES, read_toml
from mcdrop.serving.calibration.calibrate import CalibrationOptions, parse_target
from mcdrop.serving.core.scores import Score
from mcdrop.serving.errors import InvalidArgument, MCDropError, first_line
from mcdrop.serving.models.layout import check_model_name, versions
from mcdrop.serving.models.manifest import Manifest, sha256_file

CALIBRATION_KEYS = ("calibration_data", "calibration_target", "abstain_target", "abstain_delta", "abstain_score")
"""``mcdrop export --calibration-data`` and its flags; the label column is ``calibration_target``, else the entry's
(training) ``target`` when it names one column, else ``y`` in a .npz."""

EXPORT_KEYS = ("name", "model", "quantize", "samples", "select", "import", "noise_precision", "mc_layers",
               "device_shapes", "moments", "verify_data", *CALIBRATION_KEYS)  # fmt: skip


@dataclasses.dataclass
class EntryResult:
    name: str
    status: str
    """``exported``, ``skipped`` (already done) or ``failed``."""
    version: int | None = None
    selected: dict[str, Any] | None = None
    val_metric: str = ""
    seconds: float = 0.0
    detail: str = ""
    node: str = ""
    """The Ray node that ran the entry (``--ray``), else empty."""


@dataclasses.dataclass
class Job:
    path: Path
    repository: Path
    workdir: Path
    entries: list[dict[str, Any]]
    cpus_per_entry: float = 1.0


def load_job(path: Path) -> Job:
    """Read and check the job file's structure (entries themselves are checked when they run)."""
    data = read_toml(path)
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(f"{path} has no [[entry]] tables. Expected at least one entry to export.")
    base = path.parent
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InvalidArgument(f"[defaults] in {path} must be a table. Received: {defaults!r}")
    merged = []
    names = set()
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidArgument(f'Entry {index} of {path} has no name. Expected name = "..." in every entry.')
        if entry["name"] in names:
            raise InvalidArgument(f"Entry name {entry['name']!r} appears twice in {path}. Expected unique names.")
        names.add(entry["name"])
        merged.append({**(defaults if "model" not in entry else {}), **entry})
    repository = base / str(data.get("repository", "repository"))
    workdir = base / str(data.get("workdir", f"{path.stem}.work"))
    cpus = data.get("cpus_per_entry", 1)
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus <= 0:
        raise InvalidArgument(f"cpus_per_entry = {cpus!r} in {path}. Expected a number > 0.")
    return Job(path, repository, workdir, merged, float(cpus))


def entry_hash(entry: dict[str, Any], model_sha256: str | None = None) -> str:
    """Stable digest of everything that decides an entry's output."""
    canonical = json.dumps({"entry": entry, "model_sha256": model_sha256}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def exported_version(repository: Path, name: str, digest: str) -> int | None:
    """The newest version of ``name`` that this exact entry already produced, if any."""
    for version in reversed(versions(repository / name)):
        try:
            manifest = Manifest.load(repository / name / str(version))
        except MCDropError:
            continue
        if manifest.source.get("job_entry") == digest:
            return version
    return None


def run_entry(job: Job, entry: dict[str, Any]) -> EntryResult:
    """Train (or take) one model and export it; never raises for an entry's own failure."""
    started = time.perf_counter()
    name = entry["name"]
    try:
        check_model_name(name)
        model_path = job.path.parent / entry["model"] if "model" in entry else None
        model_digest = sha256_file(model_path) if model_path and model_path.is_file() else None
        calibration = _calibration(job, entry)
        if calibration is not None and calibration.data.is_file():  # new labels make a new version
            model_digest = f"{model_digest}+{sha256_file(calibration.data)}"
        verify_data = _verify_data(job, entry)
        if verify_data is not None and verify_data.is_file():  # so do new verification rows
            model_digest = f"{model_digest}+{sha256_file(verify_data)}"
        digest = entry_hash(entry, model_digest)
        done = exported_version(job.repository, name, digest)
        if done is not None:
            return EntryResult(name, "skipped", done, detail="already exported by this entry")
        selection, record = None, None
        if model_path is None:
            model_path, record, selection = _train_entry(job, entry)
        from mcdrop.pipeline.export.exporter import ExportOptions, export

        options = ExportOptions(
            model_path=model_path,
            repository=job.repository,
            name=name,
            samples=int(entry.get("samples", 100)),
            quantize=tuple(entry.get("quantize", ())),
            imports=_imports(job, entry),
            noise_precision=_noise_precision(entry),
            mc_layers=_mc_layers(entry),
            device_shapes=_device_shapes(entry),
            moments=_moments(entry),
            calibration=calibration,
            verify_data=verify_data,
            extra_source={"job": str(job.path), "job_entry": digest, "selection": selection},
        )
        version, _ = export(options)
        metric = ""
        if record is not None:
            val = record["final_metrics"]["val"]
            metric = ", ".join(f"{key.replace('accuracy', 'acc')}={value:.4g}" for key, value in val.items()
                               if key.endswith(("accuracy", "rmse")))  # fmt: skip
        best = selection["best"] if selection else None
        return EntryResult(name, "exported", version, best, metric, time.perf_counter() - started)
    except MCDropError as exc:
        return EntryResult(name, "failed", seconds=time.perf_counter() - started, detail=first_line(exc))
    except Exception as exc:  # noqa: BLE001 - one broken entry must not stop the job
        detail = f"internal error: {type(exc).__name__}: {first_line(exc, fallback='(no message)')}"
        return EntryResult(name, "failed", seconds=time.perf_counter() - started, detail=detail + _where(exc))


def _mc_layers(entry: dict[str, Any]) -> str:
    """The entry's ``mc_layers``: ``"all"``, ``"last"``, a comma-separated string or a list of names."""
    value = entry.get("mc_layers", "all")
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, str):
        return value
    raise InvalidArgument(f"mc_layers must be all, last or a list of layer names. Received: {value!r}")


def _moments(entry: dict[str, Any]) -> bool:
    """The entry's ``moments``: true (default) or false (``mcdrop export --no-moments``)."""
    value = entry.get("moments", True)
    if not isinstance(value, bool):
        raise InvalidArgument(f"moments must be true or false. Received: {value!r}")
    return value


def _device_shapes(entry: dict[str, Any]) -> tuple[Shape, ...]:
    """The entry's ``device_shapes``: a list of ``"B=1,T=32"`` strings (``mcdrop export --device-shape``)."""
    value = entry.get("device_shapes", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f'device_shapes must be a list of "B=ROWS,T=SAMPLES" strings. Received: {value!r}')
    return tuple(parse_shape(v) for v in value)


def _noise_precision(entry: dict[str, Any]) -> tuple[float, ...]:
    """The entry's ``noise_precision``: a number or a list of numbers (one per output)."""
    value = entry.get("noise_precision", ())
    values = value if isinstance(value, list) else [value] if value != () else []
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values):
        raise InvalidArgument(f"noise_precision must be a number > 0 or a list of them. Received: {value!r}")
    return tuple(float(v) for v in values)


def _verify_data(job: Job, entry: dict[str, Any]) -> Path | None:
    """The entry's ``verify_data`` file (relative to the job file), or None."""
    value = entry.get("verify_data")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"verify_data in entry {entry['name']!r} must be text (a file). Received: {value!r}")
    return job.path.parent / value


def _calibration(job: Job, entry: dict[str, Any]) -> CalibrationOptions | None:
    """The entry's calibration (``calibration_data`` relative to the job file, and the abstention settings)."""
    data = entry.get("calibration_data")
    if data is None:
        given = [key for key in CALIBRATION_KEYS if key in entry]
        if given:
            raise InvalidArgument(f"{', '.join(given)} in entry {entry['name']!r} need calibration data. Expected "
                                  'calibration_data = "FILE" too.')  # fmt: skip
        return None
    texts = {key: entry.get(key) for key in ("calibration_data", "calibration_target", "abstain_target",
                                             "abstain_score")}  # fmt: skip
    wrong = [key for key, value in texts.items() if value is not None and not isinstance(value, str)]
    if wrong:
        raise InvalidArgument(f"{', '.join(wrong)} in entry {entry['name']!r} must be text. Received: "
                              f"{[texts[key] for key in wrong]!r}")  # fmt: skip
    trained = entry.get("target")
    column = texts["calibration_target"] or (trained[0] if isinstance(trained, list) and len(trained) == 1
                                             else trained if isinstance(trained, str) else None)  # fmt: skip
    delta = entry.get("abstain_delta", 0.05)
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise InvalidArgument(f"abstain_delta must be a number in (0, 1). Received: {delta!r}")
    target = parse_target(texts["abstain_target"], float(delta)) if texts["abstain_target"] else None
    try:
        score = Score(texts["abstain_score"]) if texts["abstain_score"] else None
    except ValueError:
        raise InvalidArgument(f"Unknown abstain_score {texts['abstain_score']!r}. Expected one of "
                              f"{', '.join(s.value for s in Score)}.") from None  # fmt: skip
    return CalibrationOptions(job.path.parent / str(data), column, target, score)


def _imports(job: Job, entry: dict[str, Any]) -> tuple[str, ...]:
    """The entry's ``import`` list: module names as they are, ``.py`` files relative to the job file."""
    value = entry.get("import", [])
    targets = [value] if isinstance(value, str) else value
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise InvalidArgument(
            f"import = {value!r} in entry {entry['name']!r}. Expected a list of modules or .py files."
        )
    base = job.path.parent
    return tuple(str(base / t) if t.endswith(".py") or "/" in t else t for t in targets)


def _train_entry(job: Job, entry: dict[str, Any]) -> tuple[Path, dict[str, Any], dict[str, Any] | None]:
    from mcdrop.pipeline.training.config import load_config
    from mcdrop.pipeline.training.data import load_dataset
    from mcdrop.pipeline.training.loop import fit, save
    from mcdrop.pipeline.training.selection import cross_validate

    settings = {k: v for k, v in entry.items() if k not in EXPORT_KEYS}
    unknown = sorted(set(settings) - set(FIELD_NAMES))
    if unknown:
        raise InvalidArgument(f"Unknown setting(s) {', '.join(unknown)} in entry {entry['name']!r}.")
    out = job.workdir / entry["name"]
    kind, _, location = str(settings.get("dataset", "")).partition(":")
    if kind in ("csv", "npz") and location and not Path(location).is_absolute():
        settings["dataset"] = f"{kind}:{job.path.parent / location}"  # relative to the job file
    config = load_config(None, {**settings, "out": str(out), "quiet": True})
    dataset = load_dataset(
        config.dataset, task=config.task, target=config.target, val_fraction=config.val_fraction, seed=config.seed,
        categorical=config.categorical,
    )  # fmt: skip
    selection = None
    if "select" in entry:
        grid = dict(entry["select"])
        folds = grid.pop("folds", 3)
        bad = sorted(set(grid) - set(FIELD_NAMES))
        if bad:
            raise InvalidArgument(f"Cannot select over {', '.join(bad)}. Expected training settings.")
        selection = cross_validate(config, dataset, grid, folds)
        config = dataclasses.replace(config, **selection["best"]).validate()
    model, record = fit(config, dataset)
    if selection is not None:
        record["selection"] = selection
    save(model, record, out)
    return out / "model.keras", record, selection


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
