"""Injected faults: the server keeps serving what it can, reports the problem, never serves unverified bytes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from mcdrop.serving.client import Client, RpcFailed
from mcdrop.serving.harness.process import free_port
from mcdrop.serving.server.server import REPOSITORY_HEALTH
from tests.helpers import copy_repository, in_process_server, run_cli, server_process, small_filesystem

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
    with in_process_server(repo, http_port=free_port()) as (server, client):
        ready = f"http://127.0.0.1:{server.http_port}/v2/health/ready"
        assert client.health(REPOSITORY_HEALTH) == "SERVING" and httpx.get(ready).json() == {"ready": True}
        hidden = tmp_path / "unmounted"
        repo.rename(hidden)  # the volume disappears
        repo.write_text("not a directory")
        server.repository.scan()
        assert client.health(REPOSITORY_HEALTH) == "NOT_SERVING"
        assert client.health() == "SERVING"  # still answering from what is loaded
        assert client.predict("digits", X, samples=10).version == 1
        assert server.metrics.scan_errors._value.get() == 1
        assert "cannot read repository" in (server.repository.last_scan_error or "")
        answer = httpx.get(ready)  # ready, and says why no new version can arrive
        assert answer.status_code == 200 and answer.json()["repository"] == {
            "readable": False, "reason": f"cannot read repository {repo}: {repo} is not a directory"}  # fmt: skip
        repo.unlink()
        hidden.rename(repo)  # back: the next scan clears it
        server.repository.scan()
        assert client.health(REPOSITORY_HEALTH) == "SERVING" and httpx.get(ready).json() == {"ready": True}


def test_a_read_only_repository_serves_and_polls_and_writers_say_why_they_cannot(
    model_repository: Path, calibration_files: dict[str, Path], tmp_path: Path
) -> None:
    """A repository mounted read-only (a Kubernetes volume with readOnly: true): the server only reads, so it serves
    and polls as usual; ``mcdrop export`` and ``mcdrop calibrate`` into it fail in one line and write nothing."""
    with small_filesystem(tmp_path / "repo", "4m") as repo:
        shutil.copytree(model_repository / "digits", repo / "digits")
        subprocess.run(["mount", "-o", "remount,ro", str(repo)], check=True)
        with in_process_server(repo, poll_seconds=0.05) as (server, client):
            time.sleep(0.3)  # a few polls
            assert client.health(REPOSITORY_HEALTH) == "SERVING" and server.repository.last_scan_error is None
            assert client.predict("digits", X, samples=10).version == 1
            result = run_cli("calibrate", str(repo / "digits" / "1"), "--data", str(calibration_files["digits"]))
            assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert "(EROFS)" in result.stderr and "nothing was published" in result.stderr, result.stderr
            assert sorted(p.name for p in (repo / "digits").iterdir()) == ["1"]
            assert client.predict("digits", X, samples=10).version == 1


def _digits(manifest: dict) -> dict:  # type: ignore[type-arg]
    return manifest["calibration"]["outputs"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda m: m.update(calibration="calibrated"), "Invalid manifest field `calibration`"),
        (lambda m: _digits(m).update(output="cls"), "one of the model's outputs"),
        (lambda m: _digits(m).update(task="regression"), "calibration.outputs[0]"),
        (lambda m: _digits(m)["scores"][0].update(deciles=_digits(m)["scores"][0]["deciles"][::-1]), "11 ascending"),
        (lambda m: _digits(m)["scores"][0].update(deciles=[0.1] * 10), "11 ascending"),
        (lambda m: _digits(m)["scores"][0]["selection"].update(threshold=float("nan")), "a finite number"),
        (lambda m: _digits(m)["scores"][0]["selection"].update(coverage=1.5), "a number in [0, 1]"),
        (lambda m: _digits(m).update(score="no-such-score"), "one of the scores"),
    ],
    ids=[
        "not-an-object",
        "unknown-output",
        "wrong-task",
        "unsorted-deciles",
        "ten-deciles",
        "nan-threshold",
        "coverage-1.5",
        "unknown-score",
    ],
)
def test_a_corrupt_calibration_is_refused_and_the_previous_version_keeps_serving(
    calibrated_repository: Path, tmp_path: Path, corrupt: object, reason: str
) -> None:
    """Version 3 is version 2 (calibrated: abstains at coverage 0.9) with its ``calibration`` section damaged."""
    repo = copy_repository(calibrated_repository, tmp_path / "repo")
    x = np.random.default_rng(0).uniform(0, 16, (64, 64)).astype(np.float32)
    with in_process_server(repo, max_versions=3) as (server, client):
        before = client.predict("digits", x, samples=30, seed=1)
        assert before.version == 2 and before.abstain is not None
        staging = repo / "digits" / ".staging-3"
        shutil.copytree(repo / "digits" / "2", staging)
        manifest = json.loads((staging / "manifest.json").read_text())
        corrupt(manifest)  # type: ignore[operator]
        (staging / "manifest.json").write_text(json.dumps(manifest))
        staging.rename(repo / "digits" / "3")
        server.repository.scan()
        digits = status(client, "digits")
        assert digits.versions == [1, 2] and reason in digits.failed_versions[3], digits.failed_versions
        after = client.predict("digits", x, samples=30, seed=1)
        assert after.version == 2 and after.mean.tobytes() == before.mean.tobytes()
        assert np.array_equal(after.abstain, before.abstain)


def test_a_server_killed_while_loading_a_version_serves_it_complete_after_a_restart(
    variant_repository: Path, tmp_path: Path
) -> None:
    """SIGKILL while the poller loads a version of 16 graphs (float32 and three int8 variants): the repository is only
    read, so the next start serves that version whole — every variant answering, as version 1 did."""
    repo = copy_repository(variant_repository, tmp_path / "repo")
    x = np.random.default_rng(0).uniform(0, 16, (4, 64)).astype(np.float32)
    log = tmp_path / "first.log"
    server = server_process(repo, log, "--poll-seconds", "0.05")
    with server:
        with Client(server.address, timeout=30) as client:
            expected = {v: client.predict("digits", x, samples=20, seed=3, variant=v).mean
                        for v in ("float32", "dynamic-int8", "int8", "int8-io")}  # fmt: skip
        add_version(repo / "digits", 2)
        deadline = time.monotonic() + 10
        while not _logged(log, "model version loading", 2) and time.monotonic() < deadline:
            time.sleep(0.002)
        server.process.kill()  # mid-load: the version's graphs are being read and smoke-tested
        server.process.wait(timeout=10)
    assert _logged(log, "model version loading", 2) and not _logged(log, "model version loaded", 2)
    with server_process(repo, tmp_path / "second.log") as restarted, Client(restarted.address, timeout=30) as client:
        assert client.health() == "SERVING"
        for variant, mean in expected.items():
            answer = client.predict("digits", x, samples=20, seed=3, variant=variant)
            assert answer.version == 2 and answer.mean.tobytes() == mean.tobytes(), variant


def _logged(log: Path, message: str, version: int) -> bool:
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return any(r.get("msg") == message and r.get("version") == version for r in records)
