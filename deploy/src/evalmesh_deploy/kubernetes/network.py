"""Services and NetworkPolicies. Every pod starts denied in both directions; each component is
then allowed exactly the hops the catalog's ``needs`` describe (a service dials what it needs,
on the port the catalog says it dials), plus DNS, and only the edge accepts traffic from
outside the namespace. Sandboxes have no network interface at all (bwrap unshares the network
namespace), so no policy can or need name them; the executor's own egress is the bound that
holds even if one escaped."""

from __future__ import annotations

from typing import Any

from evalmesh_deploy.catalog import (
    COMPONENTS,
    EDGE,
    METRICS_PORT,
    NATS,
    POSTGRES,
    SERVICES,
    STORAGE,
    Component,
)
from evalmesh_deploy.kubernetes.objects import metadata, selector

__all__ = [
    "MONITORING_NAMESPACE",
    "NATS_CLUSTER_PORT",
    "NATS_PEERS",
    "baseline_policies",
    "component_policy",
    "nats_policy",
    "service",
]

# Where Prometheus runs: the only namespace that may scrape metrics (an overlay can change it).
MONITORING_NAMESPACE = "monitoring"
# NATS servers route to each other on this port (Kubernetes only: compose runs one server).
NATS_CLUSTER_PORT = 6222
# The headless Service that gives each NATS pod a stable name for the routes.
NATS_PEERS = "nats-cluster"
_NAMESPACE_NAME = "kubernetes.io/metadata.name"


def service(
    component: Component, names: tuple[str, ...], *, headless: bool = False
) -> dict[str, Any]:
    """A Service named as the component, forwarding the named catalog ports."""
    ports = [{"name": n, "port": component.ports[n], "targetPort": n} for n in names]
    spec: dict[str, Any] = {"selector": selector(component.name), "ports": ports}
    if headless:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(component.name),
        "spec": spec,
    }


def _pods(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": selector(name)}}


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


_Rules = list[dict[str, Any]]


def _policy(
    name: str, pods: dict[str, Any], ingress: _Rules | None, egress: _Rules | None
) -> dict[str, Any]:
    """A policy for ``pods``; a direction given as ``[]`` is denied, ``None`` left alone."""
    spec: dict[str, Any] = {"podSelector": pods, "policyTypes": []}
    for direction, rules in (("Ingress", ingress), ("Egress", egress)):
        if rules is not None:
            spec["policyTypes"].append(direction)
        if rules:
            spec[direction.lower()] = rules
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, name if name in COMPONENTS else "evalmesh"),
        "spec": spec,
    }


def _dialled(need: Component) -> int:
    return need.ports[need.dialled_port]


def _callers(component: Component) -> list[str]:
    return [c.name for c in COMPONENTS.values() if component.name in c.needs]


def component_policy(component: Component) -> dict[str, Any]:
    """What one of our components may send and accept: its needs out, its callers in."""
    egress = [{"to": [_pods(n)], "ports": _tcp(_dialled(COMPONENTS[n]))} for n in component.needs]
    callers = _callers(component)
    ingress = []
    if callers:
        ingress.append({"from": [_pods(c) for c in callers], "ports": _tcp(_dialled(component))})
    if component is STORAGE:
        # The database is outside the cluster, at the address in the DSN secret.
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _tcp(_postgres())})
    if component is EDGE:
        ingress.append({"ports": _tcp(*EDGE.ports.values())})  # from anywhere
    return _policy(component.name, _pods(component.name)["podSelector"], ingress, egress)


def _postgres() -> int:
    return POSTGRES.ports[POSTGRES.dialled_port]


def nats_policy() -> dict[str, Any]:
    """NATS: clients in, and the servers' routes to each other."""
    clients = [_pods(c) for c in _callers(NATS)]
    peers = [_pods(NATS.name)]
    ingress = [
        {"from": clients, "ports": _tcp(_dialled(NATS))},
        {"from": peers, "ports": _tcp(NATS_CLUSTER_PORT)},
    ]
    egress = [{"to": peers, "ports": _tcp(NATS_CLUSTER_PORT)}]
    return _policy(NATS.name, _pods(NATS.name)["podSelector"], ingress, egress)


def baseline_policies() -> list[dict[str, Any]]:
    """Deny everything not allowed elsewhere; allow DNS; let monitoring scrape metrics."""
    everyone: dict[str, Any] = {}
    deny = _policy("default-deny", everyone, [], [])
    dns_pods = {
        "namespaceSelector": {"matchLabels": {_NAMESPACE_NAME: "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    dns_ports = [{"protocol": p, "port": 53} for p in ("UDP", "TCP")]
    dns = _policy("dns", everyone, None, [{"to": [dns_pods], "ports": dns_ports}])
    monitoring = {"namespaceSelector": {"matchLabels": {_NAMESPACE_NAME: MONITORING_NAMESPACE}}}
    ours = {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In",
                                  "values": [s.name for s in SERVICES]}]}  # fmt: skip
    scrape = _policy("metrics", ours, [{"from": [monitoring], "ports": _tcp(METRICS_PORT)}], None)
    nats_monitor = [{"from": [monitoring], "ports": _tcp(NATS.ports["monitor"])}]
    scrape_nats = _policy("nats-monitoring", _pods(NATS.name)["podSelector"], nats_monitor, None)
    return [deny, dns, scrape, scrape_nats]
