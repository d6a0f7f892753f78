"""The small pieces every manifest is built from: names, labels, hardened security contexts,
probes and resources. Kubernetes-only facts (replica counts, resources, the NATS cluster port)
live here and in the modules beside it; what a component is (image, ports, health service,
environment) is the catalog's."""

from __future__ import annotations

from typing import Any

from evalmesh_deploy.catalog import Component

__all__ = [
    "NAMESPACE",
    "PART_OF",
    "TAG",
    "UID",
    "container_security",
    "grpc_probes",
    "image",
    "labels",
    "metadata",
    "pod_security",
    "resources",
    "selector",
    "tmp_volume",
]

NAMESPACE = "evalmesh"
# Overlays choose the real tag or digest (`kustomize edit set image`); the base names the
# image the way scripts/images tags it.
TAG = "latest"
# The user our images run as (USER 10001:10001 in every Dockerfile).
UID = 10001
PART_OF = "evalmesh"
_NAME = "app.kubernetes.io/name"


def labels(name: str) -> dict[str, str]:
    """The labels of a component's objects and pods."""
    return {_NAME: name, "app.kubernetes.io/part-of": PART_OF}


def selector(name: str) -> dict[str, str]:
    """What selects a component's pods (a subset of :func:`labels` that never changes)."""
    return {_NAME: name}


def metadata(name: str, component: str | None = None) -> dict[str, Any]:
    """``metadata`` of an object named ``name`` that belongs to ``component``."""
    return {"name": name, "labels": labels(component or name)}


def image(component: Component) -> str:
    """The component's image with the base tag."""
    return f"{component.image}:{TAG}"


def pod_security() -> dict[str, Any]:
    """A pod that runs as the images' unprivileged user under the runtime's seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    """A container that cannot gain privileges, has none, and cannot write its image."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def tmp_volume(size: str = "64Mi") -> dict[str, Any]:
    """The container's own /tmp (compose's ``tmpfs: [/tmp]``), in memory."""
    return {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": size}}


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    """Requests (what the scheduler reserves) and limits (where the kernel stops it)."""
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def grpc_probes(port: int, service: str, start_seconds: int) -> dict[str, Any]:
    """Native gRPC probes of ``service`` in grpc.health.v1 on ``port``.

    Every name a server of ours reports shares one verdict, which turns NOT_SERVING while a
    dependency is down: readiness takes the pod out of its Service within 15 s, and liveness
    restarts it only after a minute of that, so a short outage of NATS or storage does not
    restart the whole mesh. Start-up (migrations, the executor's escape canaries) gets
    ``start_seconds`` before either applies.
    """
    grpc = {"port": port, "service": service}
    return {
        "startupProbe": {
            "grpc": grpc,
            "periodSeconds": 5,
            "timeoutSeconds": 4,
            "failureThreshold": start_seconds // 5,
        },
        "readinessProbe": {
            "grpc": grpc,
            "periodSeconds": 5,
            "timeoutSeconds": 4,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "grpc": grpc,
            "periodSeconds": 10,
            "timeoutSeconds": 4,
            "failureThreshold": 6,
        },
    }
