"""Deployment files agree with each other and with the code.

kubernetes-validate checks each manifest against the Kubernetes schemas (``.ci/lint``);
these tests check what no schema knows: KEDA's ScaledObject (a CRD kubernetes-validate
has no schema for), names that must match across files, probes, limits, non-root
images, AOF, and that ``run/*.sh`` document every variable the code reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import env_names

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "kube"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in [*KUBE.glob("*.yaml"), *KUBE.glob("keda/*.yaml")]:
        if path.name == "kustomization.yaml":
            continue
        for doc in docs(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


ALL = manifests()
CONFIG = ALL[("ConfigMap", "tfgen-config")]["data"]
SECRET = ALL[("Secret", "tfgen-secrets")]
DEPLOYMENTS = [d for (kind, _), d in ALL.items() if kind in {"Deployment", "StatefulSet"}]


def test_keda_scales_the_worker_deployment_on_the_job_queue() -> None:
    scaled = ALL[("ScaledObject", "tfgen-worker")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert ("Deployment", spec["scaleTargetRef"]["name"]) in ALL
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == CONFIG["JOB_QUEUE"]
    host = meta["address"].split(":")[0]
    assert ("Service", host) in ALL
    assert int(meta["listLength"]) >= 1
    assert all(isinstance(v, str) for v in meta.values())  # KEDA wants strings
    auth = ALL[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == SECRET["metadata"]["name"]
        assert ref["key"] in SECRET["stringData"]


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = docs(KUBE / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    files = {str(p.relative_to(KUBE)) for p in [*KUBE.glob("*.yaml"), *KUBE.glob("keda/*.yaml")]}
    assert listed == files - {"kustomization.yaml", "secret.template.yaml"}
    images = {i["name"] for i in kustomization["images"]}
    used = {c["image"].rsplit(":", 1)[0] for d in DEPLOYMENTS
            for c in d["spec"]["template"]["spec"]["containers"] if "tfgen" in c["image"]}
    assert used == images


def test_secret_template_holds_no_values() -> None:
    assert set(SECRET["stringData"].values()) <= {"REPLACE_ME", ""}


@pytest.mark.parametrize("workload", DEPLOYMENTS, ids=lambda d: d["metadata"]["name"])
def test_workloads_have_probes_limits_and_run_as_non_root(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        assert "livenessProbe" in container and "readinessProbe" in container
        assert container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert not container["image"].endswith(":latest") or "tfgen" in container["image"]
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in ALL
            if "secretRef" in source:
                assert source["secretRef"]["name"] == SECRET["metadata"]["name"]


def test_worker_grace_period_outlasts_a_job() -> None:
    worker = ALL[("Deployment", "tfgen-worker")]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > int(CONFIG["JOB_TIME_LIMIT"])


def test_pod_disruption_budgets_select_existing_deployments() -> None:
    budgets = [d for (kind, _), d in ALL.items() if kind == "PodDisruptionBudget"]
    assert len(budgets) >= 2
    labels = [d["spec"]["template"]["metadata"]["labels"] for d in DEPLOYMENTS]
    for budget in budgets:
        wanted = budget["spec"]["selector"]["matchLabels"]
        assert any(wanted.items() <= lab.items() for lab in labels)


def test_redis_keeps_an_append_only_file_and_never_evicts() -> None:
    conf = (ROOT / "dockers" / "redis.conf").read_text()
    directives = {tuple(line.split(None, 1)) for line in conf.splitlines()
                  if line and not line.startswith("#")}
    assert {("appendonly", "yes"), ("appendfsync", "everysec"),
            ("maxmemory-policy", "noeviction")} <= directives
    assert ALL[("ConfigMap", "tfgen-redis-config")]["data"]["redis.conf"] == conf


@pytest.mark.parametrize("role", ["app", "celery", "flower"])
def test_images_are_slim_pinned_non_root_with_a_healthcheck(role: str) -> None:
    text = (ROOT / "dockers" / f"{role}.Dockerfile").read_text()
    base = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base[0])
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert "HEALTHCHECK" in text
    assert "instantclient" not in text.lower()
    assert "-r requirements.txt" in text


def test_compose_starts_the_whole_stack_from_the_dockerfiles() -> None:
    compose = docs(ROOT / "dockers" / "compose.yaml")[0]
    services = compose["services"]
    assert {"redis", "api", "worker", "flower"} <= set(services)
    for service in services.values():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).is_file()
    assert "redis.conf" in " ".join(services["redis"]["command"])


# --- the environment files document every variable the code reads --------------------

_READS = re.compile(
    r"""(?:\(\s*(?:env|config),\s*|\.get\(\s*|setting\(\s*|environ\[\s*|_env_int\(\s*)"""
    r"""["']([A-Z][A-Z0-9_]{2,})["']""")
# Besides the settings model (every field's variable): what is read outside of it.
_SOURCES = ["config/gunicorn_conf.py", "app/services.py", "app/metrics.py",
            "app/core/publish/gitlab/client.py", "tasks/observe.py"]
# Flask config keys read with .get that no one sets from the environment.
_NOT_ENV = {"CELERY", "TESTING"}


def variables_read() -> set[str]:
    names = env_names()
    for source in _SOURCES:
        names |= set(_READS.findall((ROOT / source).read_text()))
    for dockerfile in (ROOT / "dockers").glob("*.Dockerfile"):
        names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", dockerfile.read_text()))
    return names - _NOT_ENV - {"PATH", "PYTHON_IMAGE"}  # the last: a build argument


def test_the_code_reads_the_variables_we_expect() -> None:
    read = variables_read()
    assert {"DATABASE_URL", "OIDC_LEEWAY", "WORKER_METRICS_PORT", "GUNICORN_WORKERS",
            "FLOWER_BASIC_AUTH", "PROMETHEUS_MULTIPROC_DIR", "LOG_FORMAT"} <= read


@pytest.mark.parametrize("env_file", ["run/dev-env.sh", "run/prd-env.sh"])
def test_env_files_document_every_variable(env_file: str) -> None:
    text = (ROOT / env_file).read_text()
    # Set, commented with its default, or named in a note: each must appear.
    documented = set(re.findall(r"\b([A-Z][A-Z0-9_]{2,})\b", text))
    missing = variables_read() - documented
    assert not missing, f"{env_file} does not document {sorted(missing)}"


def test_env_files_hold_no_secret_values() -> None:
    for env_file in ("run/dev-env.sh", "run/prd-env.sh"):
        for line in (ROOT / env_file).read_text().splitlines():
            match = re.match(r"^\s*export\s+([A-Z_]*(?:TOKEN|SECRET|PASSWORD|BASIC_AUTH)"
                             r"[A-Z_]*)=(\S*)", line)
            assert not (match and match.group(2)), line
