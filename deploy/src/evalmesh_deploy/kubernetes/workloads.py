"""Deployments of our gRPC services and the edge, the executors' autoscaler, and disruption
budgets. Images, container ports, probes (each service's grpc.health.v1 name) and environment
come from the catalog; replica counts, resources and privileges are Kubernetes' own and are set
here. The executor is the one pod that is not plain: deploy/kubernetes/README.md, "The
executor's privileges", gives the reason for each of its settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from evalmesh_deploy.catalog import (
    EDGE,
    EXECUTOR_POOL,
    GATEWAY,
    METRICS_PORT,
    SCHEDULER,
    STORAGE,
    Component,
    service_env,
)
from evalmesh_deploy.kubernetes.objects import (
    container_security,
    grpc_probes,
    image,
    labels,
    metadata,
    pod_security,
    resources,
    selector,
    tmp_volume,
)

__all__ = [
    "EXECUTOR_SLOTS",
    "QUEUE_DEPTH_METRIC",
    "SANDBOX_RUNTIME_CLASS",
    "SECCOMP_PROFILE",
    "SECRET_ENV",
    "STORAGE_SECRET",
    "WORKLOADS",
    "Workload",
    "address",
    "disruption_budget",
    "edge_deployment",
    "executor_autoscaler",
    "sandbox_runtime_class",
    "service_deployment",
    "settings",
]

# Storage's two secrets, created by the operator (README: "Secrets to create").
STORAGE_SECRET = "evalmesh-storage"  # noqa: S105 (the Secret's name)
SECRET_ENV = {
    STORAGE.name: {
        "EVALMESH_DATABASE_URL": (STORAGE_SECRET, "database-url"),
        "EVALMESH_PAGE_TOKEN_SECRET": (STORAGE_SECRET, "page-token-secret"),
    }
}
# The scheduler's gauge of waiting evaluations (evalmesh_scheduler.metrics.QueueMetrics).
QUEUE_DEPTH_METRIC = "evalmesh_scheduler_queue_depth"
EXECUTOR_SLOTS = 2
# The node's runtime handler that gives a container a writable cgroup of its own, and the
# executor's seccomp profile (services/executor-pool/executor-seccomp.json) as installed on
# every node that may run an executor, relative to the kubelet's seccomp directory.
SANDBOX_RUNTIME_CLASS = "evalmesh-sandbox"
SECCOMP_PROFILE = "evalmesh/executor-seccomp.json"


@dataclasses.dataclass(frozen=True)
class Workload:
    """Workload is how one of our gRPC services runs on Kubernetes."""

    component: Component
    # None: the autoscaler decides (the executors).
    replicas: int | None
    resources: Mapping[str, Any]
    # The catalog's ports it listens on here, by name.
    listens: tuple[str, ...]
    # Non-secret settings beside the catalog's, for its ConfigMap.
    settings: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # How long start-up may take before the probes apply.
    start_seconds: int = 120


# Routed by readiness: stop answering only once endpoints have had time to drop the pod.
_ROUTED = {"EVALMESH_SHUTDOWN_DELAY": "3s"}
WORKLOADS = (
    Workload(STORAGE, 2, resources("250m", "256Mi", "1", "512Mi"), ("grpc", "metrics"), _ROUTED),
    Workload(
        SCHEDULER,
        2,
        resources("100m", "128Mi", "500m", "256Mi"),
        ("grpc", "metrics"),
        # Every stream and bucket on all three NATS servers (nats.py), so one may be lost.
        {**_ROUTED, "EVALMESH_JETSTREAM_REPLICAS": "3"},
    ),
    Workload(
        EXECUTOR_POOL,
        None,
        resources("1", "1Gi", "2", "4Gi"),
        ("grpc", "metrics"),
        {"EVALMESH_SANDBOX_BACKEND": "bwrap", "EVALMESH_EXECUTOR_SLOTS": str(EXECUTOR_SLOTS)},
        start_seconds=180,
    ),
    Workload(
        GATEWAY,
        2,
        resources("250m", "256Mi", "1", "512Mi"),
        # Only the edge is exposed and terminates TLS, so the gateway serves its plaintext
        # port alone, the one the mesh dials (the catalog's public "grpc" port stays closed).
        ("plaintext", "metrics"),
        {
            **_ROUTED,
            "EVALMESH_LISTEN_ADDRESS": f"0.0.0.0:{GATEWAY.ports['plaintext']}",
            "EVALMESH_RUNTIMES": "python",
        },
    ),
)


def address(component: Component) -> str:
    """Each component is reached through its Service, named as in the catalog."""
    return component.endpoint(component.name)


def settings(workload: Workload) -> dict[str, str]:
    """The non-secret environment of a service (its ConfigMap): the catalog's, minus what
    differs per pod, plus the Kubernetes settings."""
    env = {
        "EVALMESH_LOG_LEVEL": "INFO",
        **service_env(workload.component, address),
        "EVALMESH_METRICS_PORT": str(METRICS_PORT),
        **workload.settings,
    }
    for name in _pod_env(workload.component):
        env.pop(name, None)
    return env


def _pod_env(component: Component) -> dict[str, Any]:
    """Variables that differ per pod or come from a Secret: set on the container itself."""
    env: dict[str, Any] = {}
    if component is EXECUTOR_POOL:
        # The catalog's fixed id names one instance; here each pod is one, and keeps its name
        # across container restarts, which is when the id lets it end its predecessor's leases.
        env["EVALMESH_INSTANCE_ID"] = {"fieldRef": {"fieldPath": "metadata.name"}}
    for name, (secret, key) in SECRET_ENV.get(component.name, {}).items():
        env[name] = {"secretKeyRef": {"name": secret, "key": key}}
    return env


def _ports(component: Component, names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": n, "containerPort": component.ports[n], "protocol": "TCP"} for n in names]


def _spread(name: str) -> list[dict[str, Any]]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector(name)},
        }
    ]


def _deployment(name: str, replicas: int | None, pod: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    spec |= {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector(name)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {"metadata": {"labels": labels(name)}, "spec": pod},
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(name), "spec": spec}


def _pod(container: dict[str, Any], volumes: list[dict[str, Any]], grace: int) -> dict[str, Any]:
    name = container["name"]
    return {
        "automountServiceAccountToken": False,
        # Service links would add NATS_PORT, STORAGE_PORT, ... to every environment.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace,
        "securityContext": pod_security(),
        "topologySpreadConstraints": _spread(name),
        "containers": [container],
        "volumes": volumes,
    }


def _executor(pod: dict[str, Any]) -> None:
    """What bwrap needs inside the executor's container (README: "The executor's
    privileges"): root only for the entrypoint, in a user namespace of its own."""
    pod["runtimeClassName"] = SANDBOX_RUNTIME_CLASS
    pod["hostUsers"] = False
    pod["securityContext"] = {
        "seccompProfile": {"type": "Localhost", "localhostProfile": SECCOMP_PROFILE},
        "appArmorProfile": {"type": "Unconfined"},
    }
    pod["containers"][0]["securityContext"] = {
        "runAsUser": 0,
        "runAsGroup": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "SETUID", "SETGID"]},
        "procMount": "Unmasked",
    }


def service_deployment(workload: Workload) -> dict[str, Any]:
    """The Deployment of one of our gRPC services."""
    component = workload.component
    env = [{"name": k, "valueFrom": v} for k, v in _pod_env(component).items()]
    container: dict[str, Any] = {
        "name": component.name,
        "image": image(component),
        "imagePullPolicy": "IfNotPresent",
        "ports": _ports(component, workload.listens),
        "envFrom": [{"configMapRef": {"name": f"{component.name}-env"}}],
        **({"env": env} if env else {}),
        **grpc_probes(
            component.ports[component.dialled_port],
            component.health_service,
            workload.start_seconds,
        ),
        "resources": dict(workload.resources),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }
    executor = component is EXECUTOR_POOL
    # The executor's /tmp is on disk: memory there would count against its sandboxes' limit.
    tmp = {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} if executor else tmp_volume()
    pod = _pod(container, [tmp], 30)
    if executor:
        _executor(pod)
    return _deployment(component.name, workload.replicas, pod)


def edge_deployment(replicas: int) -> dict[str, Any]:
    """Envoy: the UI and gRPC-web in front of the gateway, the mesh's only exposed door."""
    http = EDGE.ports["http"]
    container = {
        "name": EDGE.name,
        "image": image(EDGE),
        "imagePullPolicy": "IfNotPresent",
        # Plain HTTP in the base, for whatever terminates TLS in front of the cluster; the
        # production overlay makes it serve HTTPS itself, as compose does.
        "args": [f"--listen=0.0.0.0:{http}", f"--gateway={address(GATEWAY)}"],
        "ports": _ports(EDGE, ("http",)),
        # Its image's own check: grpc.health.v1 through the edge to the gateway (the catalog
        # names no health service for the edge); liveness asks only whether Envoy answers.
        "readinessProbe": {
            "exec": {
                "command": [
                    "python3",
                    "-m",
                    "evalmesh_envoy.healthcheck",
                    f"http://127.0.0.1:{http}",
                ]
            },
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 4,
            "failureThreshold": 6,
        },
        "resources": resources("100m", "64Mi", "500m", "256Mi"),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }
    return _deployment(EDGE.name, replicas, _pod(container, [tmp_volume()], 30))


def executor_autoscaler(minimum: int, maximum: int) -> dict[str, Any]:
    """Executors follow the queue: about two waiting evaluations per slot of each one."""
    external = {
        "metric": {"name": QUEUE_DEPTH_METRIC},
        "target": {"type": "AverageValue", "averageValue": str(2 * EXECUTOR_SLOTS)},
    }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(EXECUTOR_POOL.name),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": EXECUTOR_POOL.name,
            },
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "metrics": [{"type": "External", "external": external}],
            # Up at once; down slowly, one at a time, since a leaving executor drains its runs.
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }


def disruption_budget(name: str) -> dict[str, Any]:
    """Voluntary evictions (node drains) take one pod of ``name`` at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
    }


def sandbox_runtime_class() -> dict[str, Any]:
    """The RuntimeClass whose handler each executor node's containerd defines."""
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": metadata(SANDBOX_RUNTIME_CLASS, EXECUTOR_POOL.name),
        "handler": SANDBOX_RUNTIME_CLASS,
    }
