"""``mcdrop score``: plan the input, score it in process or on Ray, and write every row exactly once, atomically."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mcdrop.serving.core.requests import DEFAULT_INTERVAL, Mode
from mcdrop.serving.errors import InvalidArgument, MCDropError, NotFound
from mcdrop.serving.models.layout import check_model_name, versions
from mcdrop.serving.models.manifest import FLOAT32, Manifest
from mcdrop.serving.models.masks import fresh_seed
from mcdrop.serving.scoring import inputs
from mcdrop.serving.scoring.scorer import BOOKKEEPING, ERROR, ROW, Scorer, ScoreSettings

__all__ = ["ScoreOptions", "run_score"]

NODE = "_mcdrop_node"
"""Which Ray node scored a unit (dropped before writing; counted in the summary)."""
ON_ERROR = ("fail", "skip")


@dataclasses.dataclass
class ScoreOptions:
    repository: Path
    model: str
    input: str
    output: Path
    version: int | None = None
    samples: int | None = None
    seed: int | None = None
    mode: str | None = None
    interval: float = DEFAULT_INTERVAL
    keep: tuple[str, ...] = ()
    batch_size: int = 1024
    ray: str | None = None
    """None: in process; "": a local Ray; else the address of a running cluster."""
    workers: int | None = None
    on_error: str = "fail"
    threads: int = 1
    """LiteRT threads per worker."""
    variant: str = FLOAT32
    """The exported graphs that score (``float32``, ``int8``, …)."""


@dataclasses.dataclass
class ScoreSummary:
    model: str
    version: int
    samples: int
    seed: int
    mode: str
    variant: str
    rows_in: int
    rows_scored: int
    rows_failed: int
    seconds: float
    workers: int
    nodes: int
    backend: str
    output: str
    errors_output: str | None

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else math.inf


Progress = Callable[[int, int], None]
"""Called with (rows done, rows in all) as units arrive."""


def run_score(options: ScoreOptions, progress: Progress = lambda done, total: None) -> ScoreSummary:
    """Score ``options.input`` into ``options.output``.

    Raises:
        InvalidArgument / NotFound: bad options or input (with ``on_error="fail"``, the first bad row);
            nothing is written at the output path then.
    """
    started = time.perf_counter()
    _check(options)
    number, manifest = _manifest(options.repository, options.model, options.version)  # the workers load the graphs
    mode = (options.mode or (Mode.MONTE_CARLO if manifest.stochastic else Mode.DETERMINISTIC)).lower()
    if mode not in tuple(Mode):
        raise InvalidArgument(f"Invalid mode {options.mode!r}. Expected deterministic, monte_carlo or moments.")
    if mode == Mode.MOMENTS and (manifest.moments is None or manifest.moments.graph is None):
        reason = manifest.moments.reason if manifest.moments is not None and manifest.moments.reason else (
            "it was exported without one (re-export it with mcdrop export)")  # fmt: skip
        raise InvalidArgument(
            f"Model {options.model!r} version {number} has no moments graph, so --mode moments cannot be scored: "
            f"{reason}. Expected --mode monte_carlo or deterministic."
        )
    if options.variant != FLOAT32 and options.variant not in manifest.variants:
        exported = ", ".join([FLOAT32, *manifest.variants])
        raise InvalidArgument(f"Model {options.model!r} version {number} has no variant {options.variant!r}. "
                              f"Expected one of {exported} (the variants it was exported with).")  # fmt: skip
    found = inputs.sources(options.input)
    settings = ScoreSettings(
        repository=str(options.repository),
        model=options.model,
        version=number,
        samples=options.samples or manifest.default_samples,
        seed=fresh_seed() if options.seed is None else options.seed,
        mode=mode,
        interval=options.interval,
        columns=inputs.columns(found, manifest, options.keep),
        threads=options.threads,
        variant=options.variant,
    )
    work = inputs.units(found, options.batch_size)
    total = sum(s.rows for s in found)
    if options.ray is None:
        workers = options.workers or 1
        tables, backend = _in_process(settings, work, workers), "in process"
    else:
        from mcdrop.serving.scoring.on_ray import score_on_ray

        workers = options.workers or 2
        tables, backend = score_on_ray(settings, work, options.ray, workers), "ray"
    metadata = {"model": options.model, "version": number, "samples": settings.samples, "seed": settings.seed,
                "mode": mode, "variant": options.variant, "interval": options.interval, "input": options.input,
                "rows": total}  # fmt: skip
    written = _write(tables, options, metadata, total, progress)
    return ScoreSummary(
        model=options.model, version=number, samples=settings.samples, seed=settings.seed, mode=mode,
        variant=options.variant, rows_in=total, rows_scored=written.scored, rows_failed=written.failed,
        seconds=time.perf_counter() - started, workers=workers, nodes=max(1, len(written.nodes)), backend=backend,
        output=str(options.output), errors_output=str(written.errors_path) if written.errors_path else None,
    )  # fmt: skip


def _manifest(repository: Path, model: str, version: int | None) -> tuple[int, Manifest]:
    """The version to score (the newest by default) and its manifest, without loading any graph."""
    check_model_name(model)
    available = versions(repository / model)
    if not available:
        raise NotFound(f"Model {model!r} not found in {repository}. Expected REPO/{model}/<version>/manifest.json.")
    number = available[-1] if version is None else version
    if number not in available:
        raise NotFound(f"Model {model!r} has no version {number}. Available: {available}.")
    return number, Manifest.load(repository / model / str(number))


def _check(options: ScoreOptions) -> None:
    if options.on_error not in ON_ERROR:
        raise InvalidArgument(f"Invalid --on-error {options.on_error!r}. Expected fail or skip.")
    for name in ("batch_size", "workers", "threads", "samples"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise InvalidArgument(f"Invalid {name}. Expected an integer >= 1. Received: {value}")
    if not (math.isfinite(options.interval) and 0 < options.interval < 1):
        raise InvalidArgument(f"Invalid interval. Expected a level in (0, 1). Received: {options.interval}")
    if options.output.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise InvalidArgument(f"Output {options.output} must end in .parquet or .csv.")
    if not options.output.parent.is_dir():
        raise InvalidArgument(f"Output folder {options.output.parent} does not exist.")


def _in_process(settings: ScoreSettings, work: list[inputs.Unit], workers: int) -> Iterator[pa.Table]:
    """Units in order; with ``workers`` > 1, that many threads share one data plane (LiteRT releases the GIL)."""
    local = threading.local()

    def score(unit: inputs.Unit) -> pa.Table:
        if not hasattr(local, "scorer"):
            local.scorer = Scorer(settings)
        return local.scorer.score(unit)

    if workers == 1:
        yield from map(score, work)
        return
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="score") as pool:
        window = 2 * workers  # bounded read-ahead: results are consumed in order
        pending = [pool.submit(score, unit) for unit in work[:window]]
        for index in range(len(work)):
            table = pending[index].result()
            if index + window < len(work):
                pending.append(pool.submit(score, work[index + window]))
            pending[index] = None  # type: ignore[call-overload]  # free the result once written
            yield table


@dataclasses.dataclass
class _Written:
    scored: int = 0
    failed: int = 0
    nodes: set[str] = dataclasses.field(default_factory=set)
    errors_path: Path | None = None


def _write(
    tables: Iterator[pa.Table], options: ScoreOptions, metadata: dict[str, Any], total: int, progress: Progress
) -> _Written:
    """Stream tables into temporary files beside the output, checking every row arrives once and in order;
    rename them into place at the end (nothing at the output path if anything fails)."""
    output = options.output
    temporary = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
    errors_path = output.with_name(f"{output.stem}.errors.parquet")
    errors_temporary = errors_path.with_name(f".{errors_path.name}.{uuid.uuid4().hex[:8]}.partial")
    csv = output.suffix.lower() == ".csv"
    writer: _TableWriter | None = None
    errors_writer: pq.ParquetWriter | None = None
    written = _Written()
    expected = 0
    try:
        for table in tables:
            if NODE in table.column_names:
                written.nodes.update(str(n) for n in pc.unique(table.column(NODE)).to_pylist())
                table = table.drop_columns([NODE])
            rows = table.column(ROW).to_numpy()
            if len(rows) and (rows[0] != expected or (rows != range(expected, expected + len(rows))).any()):
                raise MCDropError(f"Rows arrived out of order: expected row {expected}, got {int(rows[0])}.")
            expected += len(rows)
            failed = pc.is_valid(table.column(ERROR))
            if pc.any(failed).as_py():
                bad = table.filter(failed)
                if options.on_error == "fail":
                    first = bad.column(ERROR)[0].as_py()
                    raise InvalidArgument(f"{first}. Nothing was written (use --on-error skip to set such rows aside).")
                keep = [c for c in bad.column_names if c in options.keep or c in BOOKKEEPING]
                bad = bad.select(keep).rename_columns([_public(c) for c in keep])
                if errors_writer is None:
                    errors_writer = pq.ParquetWriter(errors_temporary, bad.schema)
                errors_writer.write_table(bad)
                written.failed += bad.num_rows
            good = table.filter(pc.invert(failed)).drop_columns(list(BOOKKEEPING))
            if writer is None:
                writer = _TableWriter(temporary, good.schema, metadata, csv)
            elif good.schema != writer.schema:  # e.g. a --keep column read as int in one file, float in another
                good = good.cast(writer.schema)
            writer.write(good)
            written.scored += good.num_rows
            progress(expected, total)
        if expected != total or written.scored + written.failed != total:
            raise MCDropError(
                f"Row count mismatch: read {total}, scored {written.scored}, failed {written.failed}, seen {expected}."
            )
        if writer is None:  # no input rows
            writer = _TableWriter(temporary, pa.schema([]), metadata, csv)
        writer.close()
        writer = None
        if errors_writer is not None:
            errors_writer.close()
            errors_writer = None
            os.replace(errors_temporary, errors_path)
            written.errors_path = errors_path
        os.replace(temporary, output)
        return written
    finally:
        if writer is not None:
            writer.close()
        if errors_writer is not None:
            errors_writer.close()
        for path in (temporary, errors_temporary):
            path.unlink(missing_ok=True)


def _public(column: str) -> str:
    return {ROW: "row", ERROR: "error"}.get(column, column)


class _TableWriter:
    """Parquet (with the run's settings in the schema metadata) or CSV (list columns as JSON text)."""

    def __init__(self, path: Path, schema: pa.Schema, metadata: dict[str, Any], csv: bool) -> None:
        self._csv = csv
        self._path, self.schema, self._metadata = path, schema, metadata
        self._writer: Any = None

    def write(self, table: pa.Table) -> None:
        if self._csv:
            table = pa.table({name: _as_text(table.column(name)) for name in table.column_names})
            if self._writer is None:
                self._writer = pa_csv.CSVWriter(self._path, table.schema)
        elif self._writer is None:
            schema = table.schema.with_metadata({"mcdrop": json.dumps(self._metadata)})
            self._writer = pq.ParquetWriter(self._path, schema)
        if not self._csv:
            table = table.replace_schema_metadata({"mcdrop": json.dumps(self._metadata)})
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is None:
            self.write(self.schema.empty_table())
        self._writer.close()


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return pa.array([None if v is None else json.dumps(v) for v in column.to_pylist()], pa.string())
    return column
