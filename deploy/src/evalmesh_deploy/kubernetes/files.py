"""The kustomize base as files: one YAML file per component, the ConfigMaps' sources (an env
file per service, nats.conf) and the kustomization that ties them together. ``render()`` is
what ``python -m evalmesh_deploy.kubernetes`` writes and what the drift test compares."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evalmesh_deploy.catalog import EDGE, EXECUTOR_POOL, GATEWAY, NATS
from evalmesh_deploy.kubernetes import nats
from evalmesh_deploy.kubernetes.network import (
    baseline_policies,
    component_policy,
    nats_policy,
    service,
)
from evalmesh_deploy.kubernetes.objects import NAMESPACE, metadata
from evalmesh_deploy.kubernetes.workloads import (
    WORKLOADS,
    Workload,
    disruption_budget,
    edge_deployment,
    executor_autoscaler,
    sandbox_runtime_class,
    service_deployment,
    settings,
)
from evalmesh_deploy.yamltext import block_yaml

__all__ = ["BASE", "main", "render"]

# Where scripts/gen writes the base, from the repository's root.
BASE = Path("deploy/kubernetes/base")
EDGE_REPLICAS = 2
EXECUTORS = (2, 10)  # the autoscaler's bounds

_HEADER = """\
# Generated from the catalog (deploy/src/evalmesh_deploy/catalog.py) by
# deploy/src/evalmesh_deploy/kubernetes (scripts/gen); change those, not this file.
"""


def _documents(objects: Iterable[Mapping[str, Any]]) -> str:
    return _HEADER + "".join(f"---\n{block_yaml(obj)}" for obj in objects)


def _namespace() -> dict[str, Any]:
    # Pod Security Admission warns about and audits anything less than "restricted"; only the
    # executor is (README, "The executor's privileges"), so enforcement is the cluster's call.
    meta = metadata(NAMESPACE, "evalmesh")
    meta["labels"] |= {
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _service_objects(workload: Workload) -> list[dict[str, Any]]:
    component = workload.component
    # The edge's Envoy resolves the gateway's name to every ready pod and balances over them.
    headless = component is GATEWAY
    objects = [
        service_deployment(workload),
        service(component, workload.listens, headless=headless),
        disruption_budget(component.name),
        component_policy(component),
    ]
    if component is EXECUTOR_POOL:
        objects += [executor_autoscaler(*EXECUTORS), sandbox_runtime_class()]
    return objects


def _edge_objects() -> list[dict[str, Any]]:
    exposed = service(EDGE, ("http",))
    exposed["spec"]["type"] = "LoadBalancer"
    exposed["spec"]["ports"][0]["port"] = 80
    return [
        edge_deployment(EDGE_REPLICAS),
        exposed,
        disruption_budget(EDGE.name),
        component_policy(EDGE),
    ]


def _nats_objects() -> list[dict[str, Any]]:
    return [
        nats.statefulset(),
        service(NATS, ("client",)),
        nats.peers_service(),
        disruption_budget(NATS.name),
        # NATS needs nothing of ours, so its policy is its own (routes between servers).
        nats_policy(),
    ]


def _env_file(values: Mapping[str, str]) -> str:
    return _HEADER + "".join(f"{name}={value}\n" for name, value in values.items())


def _kustomization(resources: list[str]) -> str:
    generators: list[dict[str, Any]] = [
        {"name": f"{w.component.name}-env", "envs": [f"{w.component.name}.env"]} for w in WORKLOADS
    ]
    generators.append({"name": "nats-config", "files": [nats.CONFIG_FILE]})
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": resources,
        "configMapGenerator": generators,
    }
    return _HEADER + block_yaml(body)


def render() -> dict[str, str]:
    """Every file of the base, by name."""
    files = {
        "namespace.yaml": _documents([_namespace()]),
        "network-policies.yaml": _documents(baseline_policies()),
        "nats.yaml": _documents(_nats_objects()),
        **{f"{w.component.name}.yaml": _documents(_service_objects(w)) for w in WORKLOADS},
        "edge.yaml": _documents(_edge_objects()),
    }
    resources = list(files)
    files |= {f"{w.component.name}.env": _env_file(settings(w)) for w in WORKLOADS}
    files[nats.CONFIG_FILE] = nats.config()
    files["kustomization.yaml"] = _kustomization(resources)
    return files


def main(argv: list[str] | None = None) -> int:
    """Write the base into the directory given (default: deploy/kubernetes/base), removing
    files the catalog no longer renders."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else BASE
    target.mkdir(parents=True, exist_ok=True)
    files = render()
    for stale in sorted(set(p.name for p in target.iterdir() if p.is_file()) - set(files)):
        (target / stale).unlink()
    for name, text in files.items():
        (target / name).write_text(text)
    return 0
