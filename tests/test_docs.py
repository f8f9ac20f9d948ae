"""The manual and the landing page are part of the product.

- the site (``mkdocs.yml``, ``docs/``) builds with ``--strict``: a broken link or anchor, or a page left out of
  the navigation, fails the build (shown on a copy with one of each added);
- the built site opens in headless Chromium (Debian's, driven by Playwright as the browser test does): the index,
  a search that finds a page, and two pages, without console errors;
- the README is a landing page (≤ 250 lines, the two commands first), and its five-minute tour runs as written.

CI installs Chromium (``.ci/run``) and sets MCDROP_REQUIRE_BROWSER_TESTS=1: there a missing browser fails.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcdrop.serving.harness.process import free_port
from tests.browser import chromium_tab
from tests.helpers import REPO

SCRIPTS = Path(sys.executable).parent
QUIET = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / "mkdocs"), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent, env=QUIET, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = _build(REPO / "mkdocs.yml", out)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "WARNING" not in built.stderr, built.stderr
    return out


def test_the_manual_builds_strictly_with_every_page_and_the_api(site: Path) -> None:
    pages = sorted(p.stem for p in (REPO / "docs").glob("*.md"))
    assert len(pages) >= 15
    for page in pages:
        built = site / "index.html" if page == "index" else site / page / "index.html"
        assert built.is_file(), page
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # mkdocstrings rendered the docstrings, not only the headings
    assert "ExportOptions" in api and "Export, verify and publish" in api and "predict_stream" in api


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda docs: _append(docs / "serving.md", "\nSee [the missing page](missing.md).\n"), "missing.md"),
        (lambda docs: _append(docs / "serving.md", "\nSee [REST](rest.md#no-such-heading).\n"), "no-such-heading"),
        (lambda docs: (docs / "orphan.md").write_text("# Orphan\n", encoding="utf-8"), "orphan.md"),
    ],
    ids=["broken-link", "broken-anchor", "orphan-page"],
)
def test_a_broken_link_anchor_or_orphan_page_fails_the_build(tmp_path: Path, change: Any, expected: str) -> None:
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / ".typecheck").symlink_to(REPO / ".typecheck")
    change(tmp_path / "docs")
    built = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0
    assert expected in built.stderr


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


@pytest.fixture(scope="module")
def browser_tab(site: Path) -> Iterator[tuple[Any, str, list[str]]]:
    """A headless Chromium tab, the site's URL on loopback, and the page and console errors seen."""
    with chromium_tab(site, {"width": 1280, "height": 800}, console_errors=True) as found:
        yield found


def test_the_site_opens_in_a_browser_with_search_and_pages(browser_tab: tuple[Any, str, list[str]]) -> None:
    tab, url, errors = browser_tab
    tab.goto(f"{url}/index.html")
    assert tab.title().startswith("mcdrop")
    assert tab.locator("article h1").first.inner_text().strip().rstrip("¶") == "mcdrop"  # ¶: the permalink

    # search: Material's search box, fed by the built search index, finds the REST page
    tab.keyboard.press("s")  # Material's shortcut opens the search dialog
    query = tab.locator("input[data-md-component=search-query]")
    query.wait_for(state="visible", timeout=10_000)
    query.press_sequentially("binary tensor data", delay=20)  # key events: what Material's search listens to
    results = tab.locator(".md-search-result__item")
    results.first.wait_for(timeout=20_000)
    assert results.count() >= 1
    assert "rest/" in " ".join(results.locator("a").evaluate_all("links => links.map(l => l.href)"))

    for page, heading in (("export/", "Export"), ("architecture/", "Architecture")):
        tab.goto(f"{url}/{page}")
        assert tab.locator("article h1").first.inner_text().strip().startswith(heading)
        assert tab.locator("nav.md-nav").count() > 0  # the navigation is there: the theme loaded
    assert errors == []


README = (REPO / "README.md").read_text(encoding="utf-8")


def test_the_readme_is_a_landing_page_that_starts_with_the_two_commands() -> None:
    lines = README.splitlines()
    assert len(lines) <= 250
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == ["make demo", "make test"]
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", README))
    assert linked and all((REPO / "docs" / page).is_file() for page in linked)


def _tour() -> list[str]:
    section = README.split("## A five-minute tour", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def _wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the tour's server exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the tour's server did not listen on {port} within {timeout} s")


@pytest.mark.slow
def test_the_five_minute_tour_runs_as_written(tmp_path: Path) -> None:
    """Each command of the README's tour, in order, in a fresh directory (ports made free, the server in the
    background as the ``&`` says); both predictions answer, and noise is less certain than the digit."""
    grpc_port, http_port = free_port(), free_port()
    env = {**os.environ, "PATH": f"{SCRIPTS}{os.pathsep}{os.environ['PATH']}"}
    server: subprocess.Popen[str] | None = None
    outputs = []
    try:
        for line in _tour():
            command = line.replace("8500", str(grpc_port)).replace("8501", str(http_port))
            if command.endswith("&"):
                server = subprocess.Popen(shlex.split(command.rstrip("& ")), cwd=tmp_path, env=env, text=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
                _wait_for_port(grpc_port, server)
                _wait_for_port(http_port, server)
                continue
            done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=600, check=False)  # fmt: skip
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            outputs.append(done.stdout)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert (tmp_path / "repo" / "digits" / "1" / "manifest.json").is_file()
    digit, noise = outputs[-2], outputs[-1]

    def mutual_information(table: str) -> float:
        row = next(line for line in table.splitlines() if re.match(r"^\W*0\s*│", line))
        return float([cell.strip() for cell in row.split("│")][-3])

    assert mutual_information(noise) > 10 * mutual_information(digit)
