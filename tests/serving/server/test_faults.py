"""Injected faults: the server keeps serving what it can, reports the problem, never serves unverified bytes."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.client import RpcFailed
from mcdrop.serving.server.server import REPOSITORY_HEALTH
from tests.helpers import copy_repository, in_process_server

X = np.zeros((2, 64), np.float32)


def add_version(model_dir: Path, version: int, corrupt: str | None = None, fix_manifest: bool = False) -> None:
    """Copy version 1 as ``version``; optionally corrupt one file (and make the manifest agree with it)."""
    target = model_dir / f".staging-{version}"
    shutil.copytree(model_dir / "1", target)
    if corrupt:
        path = target / corrupt
        data = bytearray(path.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = b"\xde\xad\xbe\xef" * 16
        path.write_bytes(bytes(data))
        if fix_manifest:
            manifest = json.loads((target / "manifest.json").read_text())
            manifest["files"][corrupt] = hashlib.sha256(bytes(data)).hexdigest()
            (target / "manifest.json").write_text(json.dumps(manifest))
    target.rename(model_dir / str(version))


def status(client: object, name: str) -> object:
    return {m.name: m for m in client.list_models()}[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("corrupt", "fix_manifest", "reason"),
    [
        ("mc_masked.tflite", False, "sha256"),  # digest mismatch
        ("manifest.json", False, ""),  # corrupt manifest (not valid JSON any more)
        ("mc_masked.tflite", True, ""),  # digest matches a corrupted flatbuffer: fails to load or run
        ("deterministic.tflite", True, ""),
    ],
)
def test_broken_versions_never_replace_the_good_one(
    model_repository: Path, tmp_path: Path, corrupt: str, fix_manifest: bool, reason: str
) -> None:
    repo = copy_repository(model_repository, tmp_path / "repo")
    with in_process_server(repo, max_versions=3) as (server, client):
        before = client.predict("digits", X, samples=30, seed=1).mean
        add_version(repo / "digits", 2, corrupt, fix_manifest)
        server.repository.scan()
        digits = status(client, "digits")
        if 2 in digits.failed_versions:
            assert reason in digits.failed_versions[2]
            assert digits.versions == [1]
        else:
            pytest.fail(f"a corrupted {corrupt} was loaded")
        answer = client.predict("digits", X, samples=30, seed=1)
        assert answer.version == 1 and answer.mean.tobytes() == before.tobytes()
        assert server.metrics.load_failures.labels("digits")._value.get() == 1


def test_truncated_file(model_repository: Path, tmp_path: Path) -> None:
    repo = copy_repository(model_repository, tmp_path / "repo")
    with in_process_server(repo) as (server, client):
        add_version(repo / "digits", 2)
        path = repo / "digits" / "2" / "deterministic.tflite"
        path.write_bytes(path.read_bytes()[:100])
        server.repository.scan()
        assert 2 in status(client, "digits").failed_versions
        assert client.predict("digits", X, mode="deterministic").version == 1


def test_version_deleted_while_serving(model_repository: Path, tmp_path: Path) -> None:
    repo = copy_repository(model_repository, tmp_path / "repo")
    with in_process_server(repo, max_versions=3) as (server, client):
        add_version(repo / "digits", 2)
        server.repository.scan()
        assert client.predict("digits", X, samples=10).version == 2
        phase = ["before"]
        served: dict[str, list[int]] = {"before": [], "during": [], "after": []}
        errors: list[str] = []
        done = threading.Event()

        def burst() -> None:
            while not done.is_set():
                current = phase[0]
                try:
                    version = client.predict("digits", X, samples=200).version
                except RpcFailed as exc:
                    errors.append(exc.code)
                    continue
                if phase[0] == current and current in served:  # started and ended in one phase
                    served[current].append(version)

        def wait_for(name: str, count: int) -> None:
            deadline = time.monotonic() + 30
            while len(served[name]) < count and time.monotonic() < deadline:
                time.sleep(0.01)

        threads = [threading.Thread(target=burst) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for("before", 20)
        phase[0] = "during"
        shutil.rmtree(repo / "digits" / "2")  # files gone under the server's feet, version still loaded
        wait_for("during", 20)
        phase[0] = "unloading"  # not counted: a request may see either version
        server.repository.scan()  # the version is unloaded
        phase[0] = "after"
        wait_for("after", 20)
        done.set()
        for thread in threads:
            thread.join()
    assert errors == []  # in-flight and later requests all served (interpreters hold their bytes)
    assert len(served["before"]) >= 20 and set(served["before"]) == {2}
    assert len(served["during"]) >= 20 and set(served["during"]) == {2}
    assert len(served["after"]) >= 20 and set(served["after"]) == {1}


def test_unreadable_repository_keeps_serving_and_reports_it(model_repository: Path, tmp_path: Path) -> None:
    repo = copy_repository(model_repository, tmp_path / "repo")
    with in_process_server(repo) as (server, client):
        assert client.health(REPOSITORY_HEALTH) == "SERVING"
        hidden = tmp_path / "unmounted"
        repo.rename(hidden)  # the volume disappears
        repo.write_text("not a directory")
        server.repository.scan()
        assert client.health(REPOSITORY_HEALTH) == "NOT_SERVING"
        assert client.health() == "SERVING"  # still answering from what is loaded
        assert client.predict("digits", X, samples=10).version == 1
        assert server.metrics.scan_errors._value.get() == 1
        assert "cannot read repository" in (server.repository.last_scan_error or "")
        repo.unlink()
        hidden.rename(repo)  # back
        server.repository.scan()
        assert client.health(REPOSITORY_HEALTH) == "SERVING"
        assert {m.name for m in client.list_models()} == {"digits", "diabetes"}
