"""Calibrate a model version on labelled rows: predict them through the prediction core, then record thresholds and
conformal scores in a ``Calibration`` (the manifest's ``calibration`` section).

The rows are predicted exactly as the server would answer them — the same graphs, the same summary code, seeded
Monte Carlo at the version's default T — so the thresholds apply to the server's own numbers.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.calibration import conformal, selective
from mcdrop.serving.calibration.data import count_rows, read_labelled, target_columns
from mcdrop.serving.core import PredictionRequest, Sampler
from mcdrop.serving.core.requests import Mode, Prediction
from mcdrop.serving.core.scores import MONTE_CARLO_SCORES, Score, score_values
from mcdrop.serving.core.uncertainty import ClassificationSummary, RegressionSummary
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.calibration import (
    Calibration,
    ClassificationCalibration,
    OutputCalibration,
    RegressionCalibration,
    ScoreRecord,
    Selection,
    Target,
    TargetKind,
    conformal_rank,
    deciles,
)
from mcdrop.serving.models.manifest import Manifest, Task
from mcdrop.serving.models.repository import ModelRepository

__all__ = [
    "CalibrationOptions",
    "Predicted",
    "Progress",
    "calibrate",
    "check_rows",
    "join_predictions",
    "parse_target",
    "predict_rows",
]

Progress = Callable[[int, int], None]
BATCH_ROWS = 256
MIN_REGRESSION_LEVEL = 0.95
"""Regression calibration needs enough rows for a finite interval at this level (19 rows)."""


@dataclasses.dataclass(frozen=True)
class CalibrationOptions:
    data: Path
    target: str | None = None
    """``--target``: the label column (``OUTPUT=COLUMN,…`` for several outputs); ``y`` for .npz when not given."""
    abstain_target: Target | None = None
    abstain_score: Score | None = None
    """Abstain by this score instead of the lowest-AURC one."""
    seed: int = 0

    def columns(self, outputs: tuple[str, ...]) -> dict[str, str]:
        default = "y" if self.data.suffix.lower() == ".npz" else None
        return target_columns(self.target, outputs, default=default)


def parse_target(text: str, delta: float = 0.05) -> Target:
    """``risk=R`` or ``coverage=C`` (each in (0, 1)) → a ``Target``."""
    kind, _, value = text.partition("=")
    try:
        target = Target(TargetKind(kind.strip()), float(value), delta)
    except ValueError:
        raise InvalidArgument(
            f"Invalid abstain target {text!r}. Expected risk=R or coverage=C, e.g. risk=0.02."
        ) from None
    if not 0 < target.value < 1 or not math.isfinite(target.value):
        raise InvalidArgument(f"Invalid abstain target {text!r}. Expected a value in (0, 1).")
    if not 0 < delta < 1:
        raise InvalidArgument(f"Invalid abstain delta {delta}. Expected a value in (0, 1), e.g. 0.05.")
    return target


def check_rows(options: CalibrationOptions, outputs: tuple[str, ...]) -> int:
    """Read just enough of the calibration file to refuse a target it cannot reach whatever the model does: a risk
    target needs ``selective.rows_needed`` accepted rows even with no error. Returns the row count."""
    rows = count_rows(options.data, list(options.columns(outputs).values()))
    target = options.abstain_target
    if target is not None and target.kind == TargetKind.RISK:
        needed = selective.rows_needed(target.value, target.delta)
        if needed is not None and rows < needed:
            reachable = _smallest_risk(rows, target.delta)
            raise InvalidArgument(
                f"--abstain-target {target} with --abstain-delta {target.delta:g} needs at least {needed} accepted "
                f"calibration rows even if not one of them is wrong; {options.data} has {rows}. Expected more "
                f"labelled rows, or a target these rows can certify (with {rows} rows and no error: risk >= "
                f"{reachable:.4f}), or a larger --abstain-delta."
            )
    return rows


def _smallest_risk(rows: int, delta: float) -> float:
    return selective.binomial_upper_bound(0, rows, delta / selective.CANDIDATES)


def calibrate(version_dir: Path, manifest: Manifest, options: CalibrationOptions,
              progress: Progress = lambda done, total: None) -> Calibration:  # fmt: skip
    """The calibration of the version in ``version_dir`` (a published version or an export's staging directory).

    Raises:
        InvalidArgument: unusable data (the message names file, row and column), too few rows for the target, or a
            target no threshold reaches (with the best bound found); nothing is written.
    """
    outputs = tuple(spec.name for spec in manifest.outputs)
    check_rows(options, outputs)
    rows = read_labelled(options.data, manifest, options.columns(outputs))
    predicted = predict_rows(version_dir, manifest, rows.inputs, options.seed, progress)
    calibrated: list[OutputCalibration] = []
    for spec in manifest.outputs:
        if spec.name not in rows.labels:
            continue
        labels = rows.labels[spec.name]
        if spec.task == Task.CLASSIFICATION:
            calibrated.append(_classification(spec.name, predicted, labels, options, manifest.stochastic))
        else:
            calibrated.append(_regression(spec.name, predicted, labels))
    return Calibration(
        data_file=Path(rows.file).name,
        data_sha256=rows.sha256,
        rows=rows.rows,
        samples=predicted.monte_carlo.samples if predicted.monte_carlo else 1,
        seed=options.seed,
        outputs=tuple(calibrated),
        target=options.abstain_target,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        mode=(Mode.MONTE_CARLO if predicted.monte_carlo else Mode.DETERMINISTIC).value,
    )


@dataclasses.dataclass
class Predicted:
    """Every row's answer in both modes: one deterministic pass, and (with dropout) seeded Monte Carlo."""

    deterministic: Prediction
    monte_carlo: Prediction | None


def predict_rows(
    version_dir: Path, manifest: Manifest, inputs: dict[str, np.ndarray], seed: int,
    progress: Progress = lambda done, total: None,
) -> Predicted:  # fmt: skip
    """Monte Carlo (seeded, default T) and one deterministic pass over every row of ``inputs`` (by input name),
    through the prediction core: the server's answers to the same seeded requests."""
    name = manifest.name or "model"
    repository = ModelRepository(version_dir, pool_size=1, model_name=name, max_versions=1)
    repository.scan()
    if repository.last_scan_error:
        raise InvalidArgument(f"Cannot load {version_dir} to calibrate it: {repository.last_scan_error}")
    sampler = Sampler(repository)
    modes = [Mode.DETERMINISTIC] + ([Mode.MONTE_CARLO] if manifest.stochastic else [])
    results: dict[Mode, list[Prediction]] = {mode: [] for mode in modes}
    count = len(next(iter(inputs.values())))
    total, done = count * len(modes), 0
    for mode in modes:
        for start in range(0, count, BATCH_ROWS):
            block = {key: value[start : start + BATCH_ROWS] for key, value in inputs.items()}
            request = PredictionRequest(model=name, inputs=block, mode=mode.value, seed=seed, first_row=start)
            results[mode].append(sampler.run(sampler.plan(request)))
            done += len(next(iter(block.values())))
            progress(done, total)
    repository.stop()
    joined = {mode: join_predictions(parts) for mode, parts in results.items()}
    return Predicted(joined[Mode.DETERMINISTIC], joined.get(Mode.MONTE_CARLO))


def join_predictions(parts: list[Prediction]) -> Prediction:
    """One prediction over every row from per-block ones (summaries and decisions concatenated field by field)."""
    first = parts[0]
    outputs = []
    for i, output in enumerate(first.outputs):
        summaries = [p.outputs[i].summary for p in parts]
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(summaries[0]):
            values = [getattr(s, field.name) for s in summaries]
            fields[field.name] = np.concatenate(values) if isinstance(values[0], np.ndarray) else values[0]
        decision = output.decision
        if decision is not None:
            decisions = [d for p in parts if (d := p.outputs[i].decision) is not None]
            decision = dataclasses.replace(decision, score_values=np.concatenate([d.score_values for d in decisions]),
                                           abstain=np.concatenate([d.abstain for d in decisions]))  # fmt: skip
        outputs.append(dataclasses.replace(output, summary=type(summaries[0])(**fields), sample_outputs=None,
                                           decision=decision))  # fmt: skip
    return dataclasses.replace(first, outputs=tuple(outputs))


def _classification(name: str, predicted: Predicted, labels: np.ndarray, options: CalibrationOptions,
                    stochastic: bool) -> ClassificationCalibration:  # fmt: skip
    deterministic = predicted.deterministic.output(name).summary
    assert isinstance(deterministic, ClassificationSummary)
    scored: dict[Score, tuple[np.ndarray, np.ndarray]] = {
        Score.DETERMINISTIC_LEAST_CONFIDENCE: (
            score_values(deterministic, Score.DETERMINISTIC_LEAST_CONFIDENCE),
            deterministic.predicted_class != labels,
        )
    }
    main = deterministic
    if predicted.monte_carlo is not None:
        main = predicted.monte_carlo.output(name).summary  # type: ignore[assignment]
        assert isinstance(main, ClassificationSummary)
        wrong = main.predicted_class != labels
        scored |= {score: (score_values(main, score), wrong) for score in MONTE_CARLO_SCORES}
    # A dense output is calibrated per pixel: every pixel of every image is one point of the risk-coverage curve.
    records = {score: _score_record(score, values.reshape(-1), wrong.reshape(-1), options.abstain_target)
               for score, (values, wrong) in scored.items()}  # fmt: skip
    served = [s for s in scored if s in MONTE_CARLO_SCORES] if stochastic else [Score.DETERMINISTIC_LEAST_CONFIDENCE]
    chosen = _chosen(name, records, served, options)
    return ClassificationCalibration(name, len(labels), round(float(np.mean(main.predicted_class != labels)), 6),
                                     tuple(records.values()), chosen)  # fmt: skip


def _score_record(score: Score, values: np.ndarray, wrong: np.ndarray, target: Target | None) -> ScoreRecord:
    curve = selective.risk_coverage(values, wrong)
    coverage, risk = curve.points()
    selection: Selection | selective.Unreachable | None = None
    if target is not None:
        if target.kind == TargetKind.RISK:
            selection = selective.risk_threshold(curve, target.value, target.delta)
        else:
            selection = selective.coverage_threshold(curve, target.value)
    return ScoreRecord(
        name=score.value,
        aurc=round(curve.aurc, 6),
        coverage=coverage,
        risk=risk,
        deciles=deciles(values),
        selection=selection if isinstance(selection, Selection) else None,
        unreachable=str(selection) if isinstance(selection, selective.Unreachable) else None,
    )


def _chosen(
    name: str, records: dict[Score, ScoreRecord], served: list[Score], options: CalibrationOptions
) -> str | None:
    """The score the server abstains by: ``--abstain-score``, else the lowest AURC among the served scores that reach
    the target. None without a target. A target no score reaches is an error."""
    target = options.abstain_target
    if target is None:
        return None
    if options.abstain_score is not None:
        if options.abstain_score not in served:
            raise InvalidArgument(f"--abstain-score {options.abstain_score}: this version answers with "
                                  f"{', '.join(served)}. Expected one of those.")  # fmt: skip
        record = records[options.abstain_score]
        if record.selection is None:
            raise InvalidArgument(f"Output {name!r}, score {record.name}: {record.unreachable} Nothing was published.")
        return record.name
    reaching = [records[s] for s in served if records[s].selection is not None]
    if not reaching:
        best = min((records[s] for s in served), key=lambda r: r.aurc)
        raise InvalidArgument(f"Output {name!r}: with the best-ranking score ({best.name}), {best.unreachable} "
                              "Nothing was published.")  # fmt: skip
    return min(reaching, key=lambda r: r.aurc).name


def _regression(name: str, predicted: Predicted, targets: np.ndarray) -> RegressionCalibration:
    prediction = predicted.monte_carlo or predicted.deterministic
    summary = prediction.output(name).summary
    assert isinstance(summary, RegressionSummary)
    rows = len(targets)
    if conformal_rank(rows, MIN_REGRESSION_LEVEL) > rows:
        raise InvalidArgument(
            f"Output {name!r}: {rows} calibration rows cannot give a conformal interval at level "
            f"{MIN_REGRESSION_LEVEL:g} (that needs at least 19). Expected more labelled rows."
        )
    scores = conformal.normalised_residuals(targets, summary.mean, summary.predictive_std)
    return RegressionCalibration(
        output=name,
        rows=rows,
        conformal=conformal.conformal_scores(scores),
        gaussian_coverage=conformal.gaussian_coverage(targets, summary.mean, summary.predictive_std),
        deciles=deciles(np.asarray(summary.predictive_std, np.float64).reshape(-1)),
    )
