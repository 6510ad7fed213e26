"""deploy/k8s/: every document parses and is of a current stable kind; the API's probes are
paths the app serves (asked of the app itself); every QUANYI_* variable the pods get is a real
setting; selectors pick the pods they are meant to; the HPA and the PodDisruptionBudget target
the API Deployment; the workers are the real kinds; every container is bounded and unprivileged;
the Secret holds placeholders only.

`kubectl apply --dry-run=client` cannot check these files here: it asks an API server for the
schemas and the kinds even in a dry run, and there is none. `kubectl kustomize` works offline
and is used for what it checks (the kustomization builds, with every file it names)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from quanyi.cli.serve import WORKER_KINDS
from quanyi.core.settings import Settings

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
STABLE = {
    "Namespace": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}
SETTING_NAMES = {f"QUANYI_{name.upper()}" for name in Settings.__dataclass_fields__}


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in MANIFESTS:
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    return found


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_document_is_of_a_current_stable_kind():
    docs = documents()
    assert {doc["kind"] for doc in docs} == set(STABLE)
    for doc in docs:
        assert doc["apiVersion"] == STABLE[doc["kind"]], doc["metadata"]["name"]
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in docs]
    assert len(set(names)) == len(names)


async def test_the_api_probes_are_paths_the_app_serves(api):
    (container,) = one("Deployment", "quanyi-api")["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in port_names, probe
        resp = await api.client.get(get["path"])
        assert resp.status == 200, (probe, await resp.text())
    assert container["command"][:2] == ["quanyi", "serve"]
    assert container["command"][-1] == str(port_names["http"])  # --port


def test_every_variable_the_pods_get_is_a_real_setting():
    config = one("ConfigMap", "quanyi-settings")["data"]
    assert set(config) <= SETTING_NAMES, set(config) - SETTING_NAMES
    Settings.from_env({k: str(v) for k, v in config.items()})  # and each value parses
    secret = one("Secret", "quanyi-secrets")["stringData"]
    for deployment in of_kind("Deployment"):
        for container in containers(deployment):
            refs = [r["configMapRef"]["name"] for r in container["envFrom"]]
            assert refs == ["quanyi-settings"]
            for var in container.get("env", []):
                assert var["name"] in SETTING_NAMES, var["name"]
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "quanyi-secrets" and ref["key"] in secret
    key_file = config["QUANYI_SECRETS_KEY"].removeprefix("file:")
    mounts = {
        m["mountPath"] for m in containers(one("Deployment", "quanyi-api"))[1]["volumeMounts"]
    }
    assert str(Path(key_file).parent) in mounts


def test_the_secret_holds_placeholders_only():
    text = (K8S / "secret.yaml").read_text()
    assert "PLACEHOLDERS ONLY" in text
    for key, value in one("Secret", "quanyi-secrets")["stringData"].items():
        assert "CHANGE-ME" in value, key
    # Nothing secret in the ConfigMap: no secret setting, no credentials in a URL.
    config = one("ConfigMap", "quanyi-settings")["data"]
    assert not {"QUANYI_DATABASE_URL", "QUANYI_WEBHOOK_SECRET", "QUANYI_H5_SESSION_KEY"} & set(
        config
    )
    assert not any(re.search(r"://[^/@]*:[^/@]*@", str(v)) for v in config.values())


def test_selectors_pick_their_own_pods_and_the_hpa_and_pdb_target_the_api():
    deployments = of_kind("Deployment")
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selects(selector, deployment["spec"]["template"]["metadata"]["labels"])
        others = [d for d in deployments if d is not deployment]
        assert not any(
            selects(selector, d["spec"]["template"]["metadata"]["labels"]) for d in others
        )
    api_labels = one("Deployment", "quanyi-api")["spec"]["template"]["metadata"]["labels"]

    def picked(selector: dict[str, str]) -> list[str]:
        return [
            d["metadata"]["name"]
            for d in deployments
            if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]

    service = one("Service", "quanyi-api")
    assert picked(service["spec"]["selector"]) == ["quanyi-api"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = one("PodDisruptionBudget", "quanyi-api")
    assert picked(pdb["spec"]["selector"]["matchLabels"]) == ["quanyi-api"]
    assert pdb["spec"]["minAvailable"] < one("Deployment", "quanyi-api")["spec"]["replicas"]
    hpa = one("HorizontalPodAutoscaler", "quanyi-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "quanyi-api",
    }
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    assert api_labels["app.kubernetes.io/component"] == "api"


def test_one_worker_deployment_per_kind_with_its_metrics_port():
    workers = {}
    for deployment in of_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if container["command"][:2] == ["quanyi", "worker"]:
            (kind,) = container["command"][2:]
            workers[kind] = container
    assert set(workers) == set(WORKER_KINDS)
    base = int(one("ConfigMap", "quanyi-settings")["data"]["QUANYI_WORKER_METRICS_PORT"])
    for kind, container in workers.items():
        assert [p["containerPort"] for p in container["ports"]] == [base + WORKER_KINDS[kind]]


def test_every_container_is_bounded_and_unprivileged():
    for deployment in of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in containers(deployment):
            where = f"{deployment['metadata']['name']}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], where
            assert resources["limits"]["memory"], where


def test_kubectl_kustomize_builds_every_manifest():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    rendered = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    expected = documents()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in expected
    )
    namespaced = [d for d in rendered if d["kind"] != "Namespace"]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"quanyi"}
