"""docker-compose.scale.yml, the replicated topology on one Docker host, rendered from the same
catalog and the same service definitions as docker-compose.yml:
``python -m evalmesh_deploy.compose_scale``, run by ``scripts/gen`` (a test fails on drift).

Three NATS servers in one JetStream cluster (streams and buckets at R3), two storage instances on
the one PostgreSQL, two schedulers, two executor pools and two gateways, with the edge balancing
over both gateways. Each replica is a compose service of its own (``storage-1``, ``storage-2``),
so each keeps its identity (``EVALMESH_INSTANCE_ID``) and can be killed and started alone, and
all replicas of a component share its name as a network alias on ``mesh``: ``storage:50053``
resolves to every storage replica, which gRPC's DNS resolver hands to the round-robin balancer
(``evalmesh_common.server.channels``). NATS is a list of its three servers, as clients want it.

It stands alone (``docker compose -f docker-compose.scale.yml up -d``) rather than overriding
docker-compose.yml: compose merges lists such as ports and networks of an override into the
base service, and a one-server NATS store cannot be turned into a cluster member in place, so
it is a project of its own (``evalmesh-scale``) with volumes of its own. What differs from one
host: only the edge is published (it terminates TLS and forwards gRPC too; the gateways serve
plaintext on the private networks, as on Kubernetes), and there is no Prometheus, whose
targets name one container per service. README, "Many hosts", says how to run it.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable
from typing import Any

from evalmesh_deploy.catalog import (
    EDGE,
    EXECUTOR_POOL,
    GATEWAY,
    NATS,
    PROMETHEUS,
    SCHEDULER,
    STORAGE,
    Component,
    service_env,
)
from evalmesh_deploy.compose import ENTRIES, Entry, document
from evalmesh_deploy.kubernetes.network import NATS_CLUSTER_PORT

__all__ = ["CLUSTER_NAME", "PROJECT", "REPLICAS", "render", "replicas"]

PROJECT = "evalmesh-scale"
CLUSTER_NAME = "evalmesh"
# How many of each replicated component run; every other one runs once.
REPLICAS = {NATS.name: 3, STORAGE.name: 2, SCHEDULER.name: 2, EXECUTOR_POOL.name: 2,
            GATEWAY.name: 2}  # fmt: skip
# Each replica of these needs an identity of its own that survives a restart: the executor's
# leases and the scheduler's leader lease are held under it.
_IDENTIFIED = (SCHEDULER.name, EXECUTOR_POOL.name)
# Ready once JetStream is current with the cluster (a meta leader is elected), not merely on:
# services that create R3 streams start after that. urlopen raises on a 503.
_NATS_HEALTH = (
    "import urllib.request; "
    f"urllib.request.urlopen('http://127.0.0.1:{NATS.ports['monitor']}/healthz', timeout=3)"
)

HEADER = """\
# evalmesh scaled out on one Docker host: 3 NATS servers in one JetStream cluster, 2 storage, 2
# schedulers, 2 executor pools, 2 gateways, the edge balancing over both gateways. Build the
# images first (scripts/images), then: docker compose -f docker-compose.scale.yml up -d
# (README, "Many hosts"; the one-host file's comments explain each service's settings, and every
# `docker compose` command in them takes `-f docker-compose.scale.yml` here).
#
# Generated from the catalog of services (deploy/src/evalmesh_deploy/catalog.py) by scripts/gen;
# change the catalog or deploy/src/evalmesh_deploy/compose_scale.py, not this file.
#
# The replicas of a component share its name as a network alias on `mesh` (storage:50053 reaches
# every storage instance; clients balance round robin over them). Only the edge is published; it
# terminates TLS for the browser UI and for gRPC clients alike. Settings come from .env.
"""

FOOTER = """\
networks:
  # Internal: no default route, so nothing on it reaches the host's networks or the internet.
  mesh:
    internal: true
  # The published edge and its hop to the gateways.
  public: {}

volumes:
"""


def replicas(component: str) -> list[str]:
    """The compose services that run ``component``: ``name-1``, ``name-2``, ... when it is
    replicated, else its own name."""
    count = REPLICAS.get(component)
    return [f"{component}-{n}" for n in range(1, count + 1)] if count else [component]


def _address(component: Component) -> str:
    """NATS as the list of its servers; a replicated service by the alias its replicas share."""
    hosts = replicas(component.name) if component is NATS else [component.name]
    return ",".join(component.endpoint(host) for host in hosts)


def _after(depends_on: dict[str, Any]) -> dict[str, Any]:
    """``depends_on`` with each replicated component replaced by all of its replicas."""
    return {name: rule for need, rule in depends_on.items() for name in replicas(need)}


def _replica(component: Component, name: str) -> dict[str, Any]:
    """One replica: the one-host service, reached on ``mesh`` by its component's name too."""
    body = copy.deepcopy(_one_host(component.name))
    body.pop("ports", None)  # the mesh is internal: nothing of it is published
    body["networks"] = {net: {"aliases": [component.name]} if net == "mesh" else {}
                        for net in body["networks"]}  # fmt: skip
    if "depends_on" in body:
        body["depends_on"] = _after(body["depends_on"])
    if "environment" in body:
        body["environment"].update(service_env(component, _address))
    if component.name in _IDENTIFIED:
        body["environment"]["EVALMESH_INSTANCE_ID"] = name
    return body


def _nats(name: str) -> dict[str, Any]:
    body = _replica(NATS, name)
    body["volumes"] = [f"{name}-data:/data"]
    routes = ",".join(f"nats://{peer}:{NATS_CLUSTER_PORT}" for peer in replicas(NATS.name))
    body["command"] = [
        "--name", name, "--cluster_name", CLUSTER_NAME,
        "--cluster", f"nats://0.0.0.0:{NATS_CLUSTER_PORT}", "--routes", routes,
    ]  # fmt: skip
    body["healthcheck"] = {"test": ["CMD", "python3", "-I", "-c", _NATS_HEALTH]}
    return body


def _scheduler(name: str) -> dict[str, Any]:
    body = _replica(SCHEDULER, name)
    body["environment"]["EVALMESH_JETSTREAM_REPLICAS"] = str(REPLICAS[NATS.name])
    return body


def _gateway(name: str) -> dict[str, Any]:
    """Plaintext on the private networks only: the edge terminates TLS for it."""
    body = _replica(GATEWAY, name)
    env = body["environment"]
    for variable in ("EVALMESH_TLS_CERT_FILE", "EVALMESH_TLS_KEY_FILE",
                     "EVALMESH_PLAINTEXT_LISTEN_ADDRESS"):  # fmt: skip
        env.pop(variable)
    env["EVALMESH_LISTEN_ADDRESS"] = f"0.0.0.0:{GATEWAY.ports['plaintext']}"
    body.pop("volumes")
    return body


def _edge(name: str) -> dict[str, Any]:
    """The edge, balancing over every gateway (it health-checks each)."""
    body = copy.deepcopy(_one_host(name))
    single = f"--gateway={GATEWAY.endpoint(GATEWAY.name)}"
    gateways = [f"--gateway={GATEWAY.endpoint(name)}" for name in replicas(GATEWAY.name)]
    at = body["command"].index(single)
    body["command"][at : at + 1] = gateways
    body["depends_on"] = _after(body["depends_on"])
    return body


def _unchanged(name: str) -> dict[str, Any]:
    body = copy.deepcopy(_one_host(name))
    if "depends_on" in body:
        body["depends_on"] = _after(body["depends_on"])
    return body


def _one_host(name: str) -> dict[str, Any]:
    return next(entry for entry in ENTRIES if entry.name == name).body()


# Where a group differs from one host, its own comment instead of the one-host file's.
_COMMENTS = {
    NATS.name: (
        "One JetStream cluster of three, routed to each other on the cluster port; streams and",
        "buckets are made at R3 by the schedulers (EVALMESH_JETSTREAM_REPLICAS), so one server",
        "can be lost. Healthy once current with the cluster, not merely started.",
    ),
    GATEWAY.name: (
        "Plaintext on the private networks only: the edge terminates TLS and balances over",
        "both gateways; the CLI inside the mesh reaches either through the alias `gateway`.",
    ),
    EDGE.name: (
        "Envoy: the one published service, HTTPS (gRPC, gRPC-web and the browser UI) in front",
        "of both gateways, each health-checked every second. It starts last: once it serves,",
        "the first admin key exists (and `docker compose up --wait` sees it done).",
    ),
}
_BUILDERS: dict[str, Callable[[str], dict[str, Any]]] = {
    NATS.name: _nats,
    EDGE.name: _edge,
    SCHEDULER.name: _scheduler,
    GATEWAY.name: _gateway,
    STORAGE.name: lambda name: _replica(STORAGE, name),
    EXECUTOR_POOL.name: lambda name: _replica(EXECUTOR_POOL, name),
}


def _entries() -> list[Entry]:
    """The one-host entries in their order, each replicated as REPLICAS says, without
    Prometheus; a group's comment stands above its first replica."""
    entries = []
    for one_host in ENTRIES:
        if one_host.name == PROMETHEUS.name:
            continue
        build = _BUILDERS.get(one_host.name, _unchanged)
        for n, name in enumerate(replicas(one_host.name)):
            comment = _COMMENTS.get(one_host.name, one_host.comment) if n == 0 else ()
            entries.append(Entry(name, one_host.extends, functools.partial(build, name), comment))
    return entries


def _volumes() -> list[str]:
    nats = [f"{name}-data" for name in replicas(NATS.name)]
    return ["postgres-data", *nats, "setup-state", "tls", "db-password", "storage-secrets",
            "admin-key"]  # fmt: skip


def render() -> str:
    """The whole docker-compose.scale.yml."""
    return document(HEADER, PROJECT, _entries(), FOOTER, _volumes())


def main() -> int:
    """Write docker-compose.scale.yml to standard output."""
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
