"""``mcdrop export``: turn a Keras model with dropout into a verified, versioned set of LiteRT graphs.

``export()`` is the list of steps; each lives in ``mcdrop.pipeline.export.stages``:

1. describe: import the user's modules, load the model, find every dropout mask it draws (refusing randomness it
   cannot export), its tasks and output specs (``stages.subject``);
2. the server's graphs: convert ``deterministic``, ``mc``, ``mc_masked`` (and ``mc_summary``), verify them through
   LiteRT against Keras (``stages.server``);
3. device graphs: verify ``mc_summary``, convert and verify the static-shape graphs (``stages.device``);
4. the one-pass moments graph, checked against Monte Carlo (``stages.moments``);
5. quantised variants for the server (``stages.quantized``);
6. the fingerprint and the timing record (``verify.fingerprint``, ``verify.timing``);
7. the manifest (``stages.manifest``);
8. with calibration data: predict the labelled rows through the staged graphs with the server's own code and add
   the ``calibration`` section (``mcdrop.serving.calibration``); then publish the staging directory atomically
   as the next version.

Everything is written into a staging directory first; nothing is published if any step or check fails.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from pathlib import Path

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.model import inputs, rows, signature
from mcdrop.pipeline.export.options import ExportOptions
from mcdrop.pipeline.export.stages import device, manifest, moments, quantized, server
from mcdrop.pipeline.export.stages.subject import Step, Subject, describe
from mcdrop.pipeline.export.verify import budget
from mcdrop.pipeline.export.verify.fingerprint import FINGERPRINT_ROWS, FINGERPRINT_SEED, fingerprint
from mcdrop.pipeline.export.verify.timing import timing
from mcdrop.serving.calibration import agreement
from mcdrop.serving.calibration.calibrate import calibrate, check_rows
from mcdrop.serving.calibration.data import read_labelled
from mcdrop.serving.errors import InferenceFailed
from mcdrop.serving.models import publish
from mcdrop.serving.models.manifest import Manifest, Variant

__all__ = ["ExportOptions", "Step", "export"]


def export(options: ExportOptions, step: Step = lambda _: None) -> tuple[int, Manifest]:
    """Export, verify and publish; return ``(version, manifest)``.

    Args:
        options: what to export and where.
        step: called with a short description before each stage (for progress display).

    Raises:
        NotFound / InvalidArgument: the model file or options are unusable.
        ExportError: the model cannot be exported or a graph failed verification.
        WriteFailed: the repository cannot be written (full, read-only); nothing was published, nothing was left.
    """
    started = time.perf_counter()
    options.check()
    subject = describe(options, step)
    if options.calibration is not None:  # a target these rows cannot certify is refused before anything converts
        check_rows(options.calibration, tuple(subject.output_names))
    with publish.staged(options.repository, options.name, f"the export of {options.name!r}") as staging:
        try:
            return _export_into(staging, subject, options, started, step)
        except InferenceFailed as exc:
            raise ExportError(
                f"Verifying model {options.name!r} ({options.model_path.name}) failed inside LiteRT; nothing was "
                f"published. {exc}. Each verification invoke holds at most {budget.VERIFY_BUDGET_BYTES // 2**20} "
                "MiB of activations; if the machine is short of memory, free some and retry, else report the model."
            ) from exc


def _export_into(
    staging: Path, subject: Subject, options: ExportOptions, started: float, step: Step
) -> tuple[int, Manifest]:
    """Every stage after ``describe``, written into ``staging``, which is then published."""
    graphs = server.convert_and_verify(subject, staging, step)
    device_graphs, device_checks = device.convert_and_verify(subject, graphs, staging, step)
    moments_graph = moments.convert_and_check(subject, graphs, staging, step)
    if subject.data is not None:
        fixed_rows = subject.data.pick(FINGERPRINT_ROWS)
    else:
        fixed_rows = inputs.check_inputs(subject.model, signature.model_inputs(subject.model), None,
                                         FINGERPRINT_ROWS, FINGERPRINT_SEED)  # fmt: skip
    variants = {
        quantization: quantized.convert_and_check(
            subject, graphs, device_graphs, quantization, staging, step, fixed_rows
        )
        for quantization in options.quantize
    }
    step("fingerprint")
    step("timing")
    timed = timing(graphs.graphs, bool(subject.sites), subject.row_shapes, options.samples,
                   graphs.budget.samples_per_invoke(1))  # fmt: skip
    found = manifest.Measurements(
        graphs=graphs.graphs,
        checks=[*graphs.checks, *device_checks],
        footprints=graphs.budget.footprints,
        variants=variants,
        device_graphs=device_graphs,
        moments=moments_graph,
        fingerprint=fingerprint(graphs.graphs, subject.sites, fixed_rows, subject.output_names),
        timing=timed,
        export={
            "wall_s": round(time.perf_counter() - started, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "verification_samples_per_invoke": graphs.chunk,
        },
    )
    record = manifest.build(subject, found, staging)
    record.write(staging)
    if options.calibration is not None:
        step("calibrating")
        calibration = calibrate(staging, record, options.calibration)
        # The one field added after the build: calibration reads the staged version, manifest included.
        record = dataclasses.replace(record, calibration=calibration)
        record.write(staging)
    if record.variants:
        step("comparing the variants with float32")
        record = dataclasses.replace(record, variants=compared(subject, record, staging))
        record.write(staging)
    step("publishing")
    version = publish.publish(staging)
    return version, record


def compared(subject: Subject, record: Manifest, staging: Path) -> dict[str, Variant]:
    """The variants with their agreement with float32 on the export's real rows (through the server's own code);
    without real rows there is nothing meaningful to compare on, and the record says so."""
    data = subject.data
    if data is None:
        skipped = {"skipped": "no real rows to compare on: give --verify-data FILE or --calibration-data FILE"}
        return {name: dataclasses.replace(v, agreement=skipped) for name, v in record.variants.items()}
    count = agreement.rows_for(record, data.kept)
    labels = None
    calibration = subject.options.calibration
    if data.source == rows.CALIBRATION_DATA and calibration is not None:
        outputs = tuple(spec.name for spec in record.outputs)
        labelled = read_labelled(calibration.data, record, calibration.columns(outputs))
        positions = data.picked_positions(count)
        labels = {name: values[positions] for name, values in labelled.labels.items()}
    found = agreement.agreement(staging, record, data.pick(count), labels)
    return {name: dataclasses.replace(v, agreement=found[name]) for name, v in record.variants.items()}
