"""Full-integer variants in a real browser: ``mcdrop export-web --variant int8|int8-io`` pages run the int8 graphs
with LiteRT.js (WebAssembly's int8 kernels); a variant the version lacks is refused. (A module of its own: the
browser tests' page fixture keeps a Playwright session open for its module.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.browser import chromium_tab
from tests.device.test_browser import CACHE, SAMPLES, digits_and_noise
from tests.helpers import in_process_server, run_cli


@pytest.mark.parametrize("variant", ["int8"])
def test_a_full_integer_variant_runs_in_the_browser_as_on_the_server(
    variant: str, device_repository: Path, tmp_path: Path
) -> None:
    """``mcdrop export-web --variant int8``: the int8 graphs in LiteRT.js (WebAssembly's int8 kernels), with float32
    input and output tensors."""
    out = tmp_path / variant
    done = run_cli("export-web", str(device_repository / "digits" / "1"), str(out), "--cache-dir", str(CACHE),
                   "--variant", variant)  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "model" / "model.json").read_text())
    assert config["variant"] == variant and all(f".{variant}.tflite" in f for f in config["graphs"].values())
    digits, noise = digits_and_noise()
    with in_process_server(device_repository) as (_, client):
        server = client.predict("digits", digits[:2], samples=SAMPLES, seed=7, variant=variant)
        server_mi = {kind: client.predict("digits", rows, samples=SAMPLES, seed=1, variant=variant).mutual_information
                     for kind, rows in (("digits", digits), ("noise", noise))}  # fmt: skip
    with chromium_tab(out, {"width": 1040, "height": 600}) as (tab, url, errors):
        tab.goto(f"{url}/index.html")
        tab.wait_for_function("window.mcdropReady === true", timeout=120_000)
        first = tab.evaluate("async (x) => await window.mcdrop.maskedMean(x, '7')", digits[0].tolist())
        browser_mi = {
            kind: np.asarray([tab.evaluate("async (x) => await window.mcdrop.summary(x)", row.tolist())
                              ["mutual_information"][0] for row in rows])
            for kind, rows in (("digits", digits), ("noise", noise))
        }  # fmt: skip
        assert not errors, errors
    gap = float(np.max(np.abs(np.asarray(first["mean"]) - server.mean[0])))
    # The same int8 graph and masks: WebAssembly's int8 kernels may round a step differently than x86's XNNPACK.
    assert gap <= 0.02, gap
    from mcdrop.serving.core.uncertainty import auroc

    ours, theirs = auroc(browser_mi["digits"], browser_mi["noise"]), auroc(server_mi["digits"], server_mi["noise"])
    print(f"{variant} in the browser: seeded mean within {gap:.3g} of the server's; MI digits vs noise AUROC "
          f"browser {ours:.3f}, server {theirs:.3f}")  # fmt: skip
    assert ours >= 0.85 and theirs >= 0.85


def test_export_web_refuses_int8_tensors_and_an_unexported_variant(device_repository: Path, tmp_path: Path) -> None:
    """LiteRT.js 2.5 has no int8 tensors (measured: it fails with 'Element type INT8 is not supported'), so an int8-io
    page is refused before it is written; so is a variant the version does not have."""
    done = run_cli("export-web", str(device_repository / "digits" / "1"), str(tmp_path / "io"), "--cache-dir",
                   str(CACHE), "--variant", "int8-io")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "LiteRT.js" in done.stderr and "Expected --variant int8" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "io").exists()
    done = run_cli("export-web", str(device_repository / "lstm" / "1"), str(tmp_path / "page"), "--cache-dir",
                   str(CACHE), "--variant", "int8")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "has no variant 'int8'. Expected one of float32" in done.stderr and "Traceback" not in done.stderr
