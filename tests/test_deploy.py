"""The Kubernetes manifests agree with the server they deploy: settings, ports, health services, user, grace."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from mcdrop.serving.grpc import mcdrop_v1 as grpc_api
from mcdrop.serving.grpc import oip
from mcdrop.serving.server.server import REPOSITORY_HEALTH
from mcdrop.serving.server.settings import ENV_PREFIX, ServerSettings, load_settings
from tests.helpers import REPO
from tests.tool_venvs import DEPLOY_TOOLS

yaml = pytest.importorskip("yaml")
KUBERNETES = REPO / "deploy" / "kubernetes"


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return found


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, (kind, name, len(matches))
    return matches[0]


def test_every_configmap_variable_is_a_real_setting_with_a_valid_value() -> None:
    data = one("ConfigMap")["data"]
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(ServerSettings)}
    assert set(data) <= fields, sorted(set(data) - fields)
    settings = load_settings({}, environ=data)  # parses and validates every value as the server would
    assert (settings.port, settings.http_port, settings.metrics_port) == (8500, 8501, 8502)


def test_ports_probes_user_and_grace_agree_with_the_server() -> None:
    settings = load_settings({}, environ=one("ConfigMap")["data"])
    pod = one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": settings.port, "http": settings.http_port, "metrics": settings.metrics_port}
    services = {"", grpc_api.SERVICE_NAME, oip.SERVICE_NAME, REPOSITORY_HEALTH}  # what the health servicer knows
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == settings.port
        assert container[probe]["grpc"]["service"] in services
    uid = int(re.search(r"--uid (\d+)", (REPO / "Dockerfile").read_text(encoding="utf-8")).group(1))  # type: ignore[union-attr]
    assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > settings.grace_seconds
    for service in (one("Service", "mcdrop"), one("Service", "mcdrop-headless")):
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert pod["containers"][0]["volumeMounts"][0] == {"name": "models", "mountPath": settings.repository,
                                                       "readOnly": True}  # fmt: skip


def test_the_pod_is_hardened() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])
    assert one("Deployment")["spec"]["replicas"] >= 2
    assert one("PodDisruptionBudget")["spec"]["minAvailable"] >= 1


@pytest.fixture(scope="session")
def tools() -> Path:
    """kubernetes-validate and checkov in a venv of their own (their pins must not move the project's)."""
    return DEPLOY_TOOLS.bin()


NEWEST_BUNDLED = DEPLOY_TOOLS.requirements[0].split("==")[1]  # kubernetes-validate's version is its newest schema


@pytest.mark.parametrize("version", ["1.30.0", NEWEST_BUNDLED])  # the oldest supported and the newest bundled
def test_manifests_validate_strictly(tools: Path, version: str) -> None:
    import subprocess

    manifests = [str(p) for p in sorted(KUBERNETES.glob("*.yaml")) if p.name != "kustomization.yaml"]
    result = subprocess.run([str(tools / "kubernetes-validate"), "-k", version, "--strict", "--quiet", *manifests],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    broken = KUBERNETES.parent / "broken.yaml"  # the validator can fail: a misspelt field is caught
    try:
        broken.write_text((KUBERNETES / "deployment.yaml").read_text().replace("replicas:", "replicaz:"))
        refused = subprocess.run([str(tools / "kubernetes-validate"), "-k", version, "--strict", "--quiet",
                                  str(broken)], capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert refused.returncode == 1 and "replicaz" in refused.stdout + refused.stderr
    finally:
        broken.unlink(missing_ok=True)


def test_checkov_passes_with_every_skip_explained(tools: Path) -> None:
    import subprocess

    result = subprocess.run(
        [str(tools / "checkov"), "-d", str(KUBERNETES), "--framework", "kubernetes", "--skip-download", "--compact",
         "--quiet"], capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    for path in KUBERNETES.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        skips = re.findall(r"checkov\.io/skip\d+: (.*)", text)
        for skip in skips:  # each skip names a check and gives its reason
            assert re.fullmatch(r"CKV_K8S_\d+=.{20,}", skip.strip()), skip


def kserve(kind: str) -> dict[str, Any]:
    found = [d for path in sorted((REPO / "deploy" / "kserve").glob("*.yaml"))
             for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d and d["kind"] == kind]  # fmt: skip
    assert len(found) == 1, kind
    return found[0]


def test_the_kserve_runtime_agrees_with_the_server_and_the_inference_service() -> None:
    runtime = kserve("ClusterServingRuntime")
    spec = runtime["spec"]
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = load_settings({}, environ=env)  # every variable is a setting and its value is valid
    assert settings.repository == "/mnt/models"
    assert container["ports"] == [{"name": "h2c", "containerPort": settings.port, "protocol": "TCP"}]  # gRPC
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"] and spec["securityContext"]["runAsUser"] == 10001
    service = kserve("InferenceService")["spec"]["predictor"]["model"]
    assert service["runtime"] == runtime["metadata"]["name"] and service["modelFormat"]["name"] in formats
    assert service["protocolVersion"] in spec["protocolVersions"] and service["storageUri"]
    model_env = {e["name"]: e["value"] for e in service.get("env", [])}
    assert load_settings({}, environ={**env, **model_env}).model_name == "digits"
    # RawDeployment: KServe's Service maps port 80 to the first container port (REST) and publishes the others
    # under their numbers; a name with "grpc" in it marks the gRPC one.
    annotations = kserve("InferenceService")["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    rest, grpc = service["ports"]
    assert rest == {"name": "http1", "containerPort": settings.http_port, "protocol": "TCP"}
    assert grpc["containerPort"] == settings.port and "grpc" in grpc["name"] and grpc["protocol"] == "TCP"
    for port in service["ports"]:  # a Kubernetes port name: IANA_SVC_NAME
        assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", port["name"]), port
