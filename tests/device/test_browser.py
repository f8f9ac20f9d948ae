"""The digits model in a real browser: headless Chromium (Debian's, driven by Playwright; no browser download)
loads the page of ``mcdrop export-web`` and runs the static-shape graphs with LiteRT.js (WebAssembly).

- the JavaScript mask reference reproduces the test vectors in the browser;
- mc_masked with masks from masks.js gives the server's seeded mean (float tolerance; bit for bit reported);
- mc_summary (in-graph masks) agrees statistically with the server's summary, and its mutual information
  separates digits from noise as the server's does;
- a screenshot of the page is taken.

CI installs Chromium (``.ci/run``) and sets MCDROP_REQUIRE_BROWSER_TESTS=1: there a missing browser fails.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcdrop.pipeline.export.verify.device import REPLICATES, statistical_agreement
from tests.browser import chromium_tab
from tests.helpers import REPO, in_process_server, run_cli

SAMPLES = 100
"""The digits model's device shape (tests/device/conftest.py): B=1, T=100."""
CACHE = REPO / ".web-cache"


@pytest.fixture(scope="module")
def page_dir(device_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("web") / "digits"
    done = run_cli("export-web", str(device_repository / "digits" / "1"), str(out), "--cache-dir", str(CACHE))
    assert done.returncode == 0, done.stderr
    assert "T = 100" in done.stdout
    return out


@pytest.fixture(scope="module")
def page(page_dir: Path) -> Iterator[Any]:
    """The page in headless Chromium, once its models are loaded."""
    with chromium_tab(page_dir, {"width": 1040, "height": 600}) as (tab, url, errors):
        tab.goto(f"{url}/index.html")
        tab.wait_for_function("window.mcdropReady === true", timeout=120_000)
        assert not errors, errors
        yield tab
    assert not errors, errors


def digits_and_noise() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits().data[-8:].astype(np.float32)  # held out of the first 80 % the model trained on
    noise = np.random.default_rng(3).uniform(0, 16, (8, 64)).astype(np.float32)
    return digits, noise


def test_javascript_masks_reproduce_the_test_vectors_in_the_browser(page: Any) -> None:
    vectors = json.loads((REPO / "docs" / "mask-vectors.json").read_text())
    found = page.evaluate(
        """async (vectors) => {
            const { MaskStream } = await import("./masks.js");
            const bad = [];
            for (const c of vectors.cases) {
                const feeds = new MaskStream(c.sites, c.seed, c.rows, c.first_row).next(c.samples);
                for (const s of c.sites) {
                    const units = s.noise_shape.reduce((a, b) => a * b, 1);
                    for (let t = 0; t < c.samples; t++) for (let b = 0; b < c.rows; b++) {
                        const start = (t * c.rows + b) * units;
                        const got = Array.from(feeds[s.feed_name].slice(start, start + units)).join("");
                        if (got !== c.keep[s.feed_name][t][b]) bad.push(`${c.seed} ${s.feed_name} ${t} ${b}`);
                    }
                }
            }
            return {cases: vectors.cases.length, bad};
        }""",
        vectors,
    )
    assert found == {"cases": len(vectors["cases"]), "bad": []}


def test_seeded_mean_in_the_browser_is_the_servers(page: Any, device_repository: Path) -> None:
    digits, noise = digits_and_noise()
    rows = [digits[0], noise[0]]
    with in_process_server(device_repository) as (_, client):
        server = [client.predict("digits", row[None], samples=SAMPLES, seed=seed).mean[0]
                  for row, seed in zip(rows, (7, 2**62 + 5), strict=True)]  # fmt: skip
    browser = [page.evaluate("async ([x, s]) => await window.mcdrop.maskedMean(x, s)", [row.tolist(), str(seed)])
               for row, seed in zip(rows, (7, 2**62 + 5), strict=True)]  # fmt: skip
    for ours, theirs in zip(browser, server, strict=True):
        mean = np.asarray(ours["mean"], np.float32)
        np.testing.assert_allclose(mean, theirs, rtol=0, atol=2e-6)
    means = [(np.asarray(b["mean"], np.float32), s) for b, s in zip(browser, server, strict=True)]
    differences = [float(np.max(np.abs(ours - theirs))) for ours, theirs in means]
    identical = all(ours.tobytes() == theirs.tobytes() for ours, theirs in means)
    print(f"browser vs server seeded mean (T={SAMPLES}): max abs diff {max(differences):.3g}, bit for bit: {identical}")


def test_summary_in_the_browser_agrees_with_the_servers(page: Any, device_repository: Path) -> None:
    """Replicates: R browser invokes (fresh in-graph masks each) vs R server answers (R seeds), per field."""
    digits, noise = digits_and_noise()
    fields = ["mean", "std", "predictive_entropy", "expected_entropy", "mutual_information", "variation_ratio"]
    for row in (digits[1], noise[1]):
        runs = [page.evaluate("async (x) => await window.mcdrop.summary(x)", row.tolist()) for _ in range(REPLICATES)]
        ours = {f: np.asarray([run[f] for run in runs], np.float64) for f in fields}
        with in_process_server(device_repository) as (_, client):
            answers = [client.predict("digits", row[None], samples=SAMPLES, seed=seed) for seed in range(REPLICATES)]
        theirs = {f: np.stack([np.asarray(getattr(a, f), np.float64)[0] for a in answers]) for f in fields}
        check = statistical_agreement("browser_summary", "mc_summary.b1_t100", ours, theirs, fields)
        assert check["passed"], check["problems"]
        gaps = {f: float(np.max(np.abs(ours[f].mean(0) - theirs[f].mean(0)))) for f in fields}
        print(f"browser mc_summary vs server, means of {REPLICATES} answers: "
              + ", ".join(f"{f} {g:.3g}" for f, g in gaps.items()))  # fmt: skip


def test_mutual_information_separates_digits_from_noise_in_the_browser_as_on_the_server(
    page: Any, device_repository: Path, tmp_path: Path
) -> None:
    digits, noise = digits_and_noise()
    browser = {
        kind: np.asarray([page.evaluate("async (x) => await window.mcdrop.summary(x)", row.tolist())
                          ["mutual_information"][0] for row in rows])
        for kind, rows in (("digits", digits), ("noise", noise))
    }  # fmt: skip
    with in_process_server(device_repository) as (_, client):
        server = {kind: client.predict("digits", rows, samples=SAMPLES, seed=1).mutual_information
                  for kind, rows in (("digits", digits), ("noise", noise))}  # fmt: skip
    from mcdrop.serving.core.uncertainty import auroc

    ours, theirs = auroc(browser["digits"], browser["noise"]), auroc(server["digits"], server["noise"])
    print(f"MI digits vs noise AUROC: browser {ours:.3f}, server {theirs:.3f}; median MI browser "
          f"{np.median(browser['digits']):.3f} vs {np.median(browser['noise']):.3f}")  # fmt: skip
    assert theirs >= 0.9 and ours >= 0.9 and abs(ours - theirs) <= 0.1
    times = page.evaluate(
        """async ([x]) => {
            // performance.now() is coarsened to 0.1 ms: time 50 calls at once (each with its tensors and reads)
            let started = performance.now();
            for (let i = 0; i < 50; i++) await window.mcdrop.summary(x);
            const summary = (performance.now() - started) / 50;
            started = performance.now();
            for (let i = 0; i < 50; i++) await window.mcdrop.maskedMean(x, String(i));
            return {summary, masked: (performance.now() - started) / 50};
        }""",
        [digits[2].tolist()],
    )
    print(f"browser, T={SAMPLES}, mean of 50 calls: mc_summary {times['summary']:.3f} ms; mc_masked with masks.js "
          f"masks and the mean {times['masked']:.3f} ms")  # fmt: skip
    result = page.evaluate("async (x) => await window.mcdrop.show(x)", digits[2].tolist())
    assert result["predicted_class"][0] == int(np.argmax(result["mean"]))
    shot = tmp_path / "export-web.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if target := os.environ.get("MCDROP_SCREENSHOT"):  # how the README's picture is made
        shutil.copyfile(shot, target)
