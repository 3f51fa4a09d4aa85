"""The Kubernetes manifests: they parse, have the expected kinds, agree with relrec and each other.

No cluster here. Each object is validated against the Kubernetes OpenAPI schema (strict, with
the kubernetes-validate package); the rest are the checks a reviewer would do by hand: the
kustomization lists every manifest; the probes hit /healthz and /readyz on the port `relrec
serve` is told to use; the grace period outlasts uvicorn's drain; every RELREC_* variable is a
`Settings` field; Secret, ConfigMap and volume references resolve; `$(VAR)` references are
defined before use; selectors match the pods; every command parses with relrec's own parsers
(torchrun's too).
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.server import serve
from tests.deploy.conftest import (
    DEPLOY,
    REPO,
    check_container_args,
    json_args,
    parse_relrec,
    settings_env_names,
    stages,
)

K8S = DEPLOY / "k8s"
KUSTOMIZATION = DEPLOY / "kustomization.yaml"
EXPECTED = {  # kind -> apiVersion, of what `kubectl apply -k deploy/` creates
    "Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "PersistentVolumeClaim": "v1",
    "Service": "v1", "StatefulSet": "apps/v1", "Deployment": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1",
    "CronJob": "batch/v1",
}
OUR_IMAGES = {"relrec", "relrec-train"}


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    docs = load(KUSTOMIZATION)
    assert len(docs) == 1 and docs[0]["kind"] == "Kustomization"
    return docs[0]


@pytest.fixture(scope="module")
def applied(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object `kubectl apply -k deploy/` creates (the generated ConfigMap aside)."""
    return [doc for res in kustomization["resources"] for doc in load(DEPLOY / res)]


@pytest.fixture(scope="module")
def everything(applied: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`applied` plus the optional manifests applied by hand (deploy/k8s/gpu)."""
    return applied + [doc for path in sorted((K8S / "gpu").glob("*.yaml")) for doc in load(path)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] == "CronJob":
        spec: dict[str, Any] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        spec = doc["spec"]["template"]["spec"]
        return spec
    return None


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) for every container and init container."""
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield spec, c


def image_name(container: dict[str, Any]) -> str:
    return str(container["image"]).split(":")[0].rsplit("/", 1)[-1]


def test_kustomization_lists_every_manifest(kustomization: dict[str, Any]) -> None:
    listed = {DEPLOY / r for r in kustomization["resources"]}
    assert listed == set(K8S.glob("*.yaml")), "list each deploy/k8s/*.yaml in kustomization"
    generated = kustomization["configMapGenerator"][0]
    assert generated["name"] == "relrec-redis-conf" and generated["files"] == ["redis.conf"]
    assert {i["name"] for i in kustomization["images"]} == OUR_IMAGES


def test_expected_kinds_and_api_versions(applied: list[dict[str, Any]],
                                         everything: list[dict[str, Any]]) -> None:
    assert {d["kind"] for d in applied} == set(EXPECTED)
    for doc in applied:
        assert doc["apiVersion"] == EXPECTED[doc["kind"]], doc["kind"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    job = one(everything, "Job", "relrec-train-ddp")
    assert job["apiVersion"] == "batch/v1"


# The oldest Kubernetes the manifests are meant for, and the newest schema installed.
SCHEMA_VERSIONS = ("1.27.0", "latest")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_manifests_match_the_kubernetes_schema(everything: list[dict[str, Any]],
                                               version: str) -> None:
    """Strict: an unknown field (a typo such as `periodSecond`) fails, as `kubectl` would."""
    validate = pytest.importorskip(
        "kubernetes_validate", reason="`pip install -e '.[dev]'` brings kubernetes-validate")
    version = validate.latest_version() if version == "latest" else version
    for doc in everything:
        try:
            validate.validate(doc, version, strict=True)
        except validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} at {where}: {exc.message}")


def test_api_probes_ports_and_termination(applied: list[dict[str, Any]], tmp_path: Path) -> None:
    deployment = one(applied, "Deployment", "relrec-api")
    spec = deployment["spec"]["template"]["spec"]
    (api,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    (args,) = check_container_args(api["args"], tmp_path)
    assert args.command == "serve" and args.host == "0.0.0.0" and ports["http"] == args.port

    probes = {name: api[name]["httpGet"] for name in
              ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert all(p["port"] in ports or p["port"] == args.port for p in probes.values())

    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(api["resources"][key])
    from service.settings import Settings

    drain = inspect.signature(serve).parameters["graceful_timeout_s"].default
    drain += Settings.model_fields["shutdown_drain_s"].default  # readiness 503 before closing
    pre_stop = int(api["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_hpa_pdb_select_the_api(applied: list[dict[str, Any]]) -> None:
    deployment = one(applied, "Deployment", "relrec-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(applied, "Service", "relrec-api")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0][
        "ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    hpa = one(applied, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "relrec-api"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = one(applied, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    redis = one(applied, "StatefulSet", "relrec-redis")
    assert one(applied, "Service", "relrec-redis")["spec"]["selector"].items() <= redis[
        "spec"]["template"]["metadata"]["labels"].items()


def test_env_names_and_references(everything: list[dict[str, Any]]) -> None:
    known = settings_env_names()
    secret = one(everything, "Secret", "relrec-secrets")
    config_maps = {d["metadata"]["name"]: d for d in everything if d["kind"] == "ConfigMap"}
    used = {k for cm in config_maps.values() for k in cm["data"] if k.startswith("RELREC_")}
    for _, c in containers(everything):
        defined: set[str] = set()
        for ref in c.get("envFrom", []):
            name = ref["configMapRef"]["name"]
            assert name in config_maps, f"no ConfigMap {name}"
            defined |= set(config_maps[name]["data"])
        for var in c.get("env", []):
            # $(VAR) expands only to variables defined before it (Kubernetes' rule)
            for ref in re.findall(r"\$\((\w+)\)", str(var.get("value", ""))):
                assert ref in defined, f"{c['name']}: {var['name']} uses $({ref}) before it"
            key = var.get("valueFrom", {}).get("secretKeyRef")
            if key is not None:
                assert key["name"] == "relrec-secrets" and key["key"] in secret["stringData"]
            defined.add(var["name"])
            if var["name"].startswith("RELREC_"):
                used.add(var["name"])
        for ref in re.findall(r"\$\((\w+)\)", " ".join(c.get("command", []) + c.get("args", []))):
            assert ref in defined, f"{c['name']}: its command uses $({ref}), not defined"
    assert used, "no RELREC_ settings found"
    assert used - known == set(), f"not fields of service.settings.Settings: {used - known}"


def test_volumes_and_claims_resolve(everything: list[dict[str, Any]]) -> None:
    claims = {d["metadata"]["name"]: d for d in everything
              if d["kind"] == "PersistentVolumeClaim"}
    assert claims["relrec-artifacts"]["spec"]["accessModes"] == ["ReadWriteMany"]
    for doc in everything:
        spec = pod_spec(doc)
        if spec is None:
            continue
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
        for c in spec.get("initContainers", []) + spec["containers"]:
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, mount


def test_commands_parse_with_relrec_parsers(everything: list[dict[str, Any]],
                                            tmp_path: Path) -> None:
    ours = [c for _, c in containers(everything) if image_name(c) in OUR_IMAGES]
    assert ours
    seen = set()
    for c in ours:
        if "command" in c:  # bypasses the entrypoint: only torchrun does
            check_torchrun(c["command"] + c.get("args", []))
            seen.add("torchrun")
            continue
        parsed = check_container_args(c["args"], tmp_path)
        seen |= {ns.command for ns in parsed}
    assert {"serve", "export-interactions", "train", "export", "torchrun"} <= seen
    cron = one(everything, "CronJob", "relrec-train")
    (train,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    parsed = check_container_args(train["args"], tmp_path)
    assert [ns.command for ns in parsed] == ["export-interactions", "train", "export"]
    assert parsed[2].out == "/artifacts" and parsed[2].run_dir == parsed[1].out


def check_torchrun(argv: list[str]) -> None:
    """`torchrun ... -m training.distributed ARGS`: ARGS as training.distributed parses them."""
    from training.cli import add_train_parser

    assert argv[0] == "torchrun" and "--nproc_per_node" in argv
    module = argv.index("-m")
    assert argv[module + 1] == "training.distributed"
    parser = argparse.ArgumentParser(prog="torchrun -m training.distributed")
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *argv[module + 2:]])
    assert args.model == "hlr" and args.out and args.data


def test_api_runs_what_the_image_and_compose_run(applied: list[dict[str, Any]]) -> None:
    api = one(applied, "Deployment", "relrec-api")["spec"]["template"]["spec"]["containers"][0]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert api["args"] == json_args(stages()["runtime"], "CMD")
    assert api["args"] == compose["services"]["api"]["command"]
    assert parse_relrec(api["args"]).port == api["ports"][0]["containerPort"]
