"""The export summary's variants table: what each quantised variant costs (file size) and keeps (its answers and
its uncertainty against float32's, measured by the export on real rows)."""

from __future__ import annotations

from typing import Any

from mcdrop.serving.models.manifest import FLOAT32, GraphName, Manifest

__all__ = ["print_variants", "variant_rows"]


def variant_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """One row per variant and output (float32 first): size of the deterministic graph and the agreement figures."""
    float_bytes = manifest.file_bytes.get(manifest.graphs[GraphName.DETERMINISTIC].file, 0)
    found: list[dict[str, Any]] = [{"variant": FLOAT32, "output": "", "bytes": float_bytes, "size_ratio": 1.0}]
    for name, variant in manifest.variants.items():
        size = manifest.file_bytes.get(variant.graphs[GraphName.DETERMINISTIC].file, 0)
        mc = variant.graphs.get(GraphName.MC)
        base = {"variant": name, "bytes": size, "size_ratio": size / float_bytes if float_bytes else None,
                "float_ops": ", ".join(mc.float_ops) if mc is not None else ""}  # fmt: skip
        outputs = variant.agreement.get("outputs") or {"": {"skipped": variant.agreement.get("skipped", "")}}
        for output, record in outputs.items():
            found.append({**base, "output": output, **record})
    return found


def print_variants(manifest: Manifest, console: Any) -> None:
    """A table of the variants (nothing when the export made none)."""
    if not manifest.variants:
        return
    from rich.table import Table

    agreement = next((v.agreement for v in manifest.variants.values() if v.agreement.get("rows")), {})
    title = "variants against float32"
    if agreement:
        title += f" · {agreement['rows']} real rows, {agreement['mode']} T={agreement['samples']}, same masks"
    table = Table(title=title)
    columns = ("variant", "output", "size", "float ops (mc)", "top-1 / RMSE", "max |Δp|", "uncertainty ρ",
               "abstain agree", "OOD AUROC", "accuracy / RMSE")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("variant", "output", "float ops (mc)") else "right")
    several = len(manifest.outputs) > 1
    for row in variant_rows(manifest):
        name = row["variant"]
        size = f"{row['bytes'] / 2**20:.2f} MiB" + ("" if row["size_ratio"] in (None, 1.0) else
                                                   f" ({row['size_ratio']:.0%})")  # fmt: skip
        if name == FLOAT32:
            table.add_row(name, "", size, "", "", "", "", "", "", "")
            continue
        if "skipped" in row:
            table.add_row(name, "", size, row["float_ops"], f"[yellow]{row['skipped']}[/]", "", "", "", "", "")
            continue
        auroc = row.get("ood_auroc", {})
        judged = row.get("accuracy") or row.get("rmse") or {}
        table.add_row(
            name,
            row["output"] if several else "",
            size,
            row["float_ops"],
            _figure(row.get("top1_agreement", row.get("rmse_vs_float32"))),
            _figure(row.get("max_abs_diff")),
            _figure(row.get("mutual_information_spearman", row.get("std_spearman"))),
            _figure(row.get("abstain_agreement")),
            _pair(auroc.get(FLOAT32), auroc.get(name)),
            _pair(judged.get(FLOAT32), judged.get(name)),
        )
    console.print(table)
    for name, variant in manifest.variants.items():
        for file, reason in variant.unsupported.items():
            console.print(f"[yellow]{name}: {file} not made[/] — {reason}")


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _pair(reference: float | None, other: float | None) -> str:
    """``float32 → variant``."""
    if reference is None or other is None:
        return "—"
    return f"{reference:.4f} → {other:.4f}"
