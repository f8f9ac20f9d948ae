"""Headless Chromium for the suite's browser tests: Debian's browser, driven by Playwright (never a downloaded one),
on a directory served over HTTP on loopback (browsers fetch no WebAssembly from file://).

CI installs Chromium (``.ci/run``) and sets MCDROP_REQUIRE_BROWSER_TESTS=1: there a missing browser fails.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRED = os.environ.get("MCDROP_REQUIRE_BROWSER_TESTS") == "1"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def chromium_tab(
    directory: Path, viewport: dict[str, int], *, console_errors: bool = False
) -> Iterator[tuple[Any, str, list[str]]]:
    """A tab, the URL ``directory`` is served at, and the page errors seen (with ``console_errors``, also the
    console's error messages). Skips (or, where required, fails) without Debian's chromium."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if REQUIRED:
            pytest.fail("Debian's chromium is not installed (CI installs it in .ci/run)")
        pytest.skip("chromium is not installed here (apt-get install chromium; CI installs it and requires this test)")
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=directory))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
            tab = browser.new_page(viewport=viewport)
            tab.on("pageerror", lambda error: errors.append(str(error)))
            if console_errors:
                tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            yield tab, f"http://127.0.0.1:{server.server_port}", errors
            browser.close()
    finally:
        server.shutdown()
