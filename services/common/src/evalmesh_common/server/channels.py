"""How a service dials an upstream that may run as several replicas (storage, the scheduler).

An upstream address is either one ``host:port`` or a comma-separated list of ``ip:port``. A
name is resolved by gRPC's DNS resolver, so one name that resolves to every replica (a compose
service scaled out, a headless Kubernetes service) reaches all of them; a list names them
directly (the local replicated mesh and its tests). Either way the channel balances calls
round robin over the replicas that are up, and one that goes away (killed, restarted) is
skipped until it answers again: a call in flight on it fails UNAVAILABLE, and the callers
retry those as they retry any other.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import grpc.aio

from evalmesh_common.server.tracing import client_interceptors

__all__ = ["BALANCED", "RECONNECT", "channel_options", "grpc_target", "plaintext_channel"]

# gRPC's own round-robin policy, as a channel's default service config.
BALANCED: tuple[str, Any] = (
    "grpc.service_config",
    json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}),
)


def _family(address: str) -> str:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        raise ValueError(
            f"{address!r}: a list of replicas must name each by IP address and port "
            "(or give one DNS name that resolves to all of them)"
        ) from None
    if not port.isdigit():
        raise ValueError(f"{address!r} has no port")
    return f"ipv{version}"


def grpc_target(address: str) -> str:
    """The gRPC target for ``address``: as it is for one, ``ipv4:a,b`` for a list."""
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) <= 1:
        return address.strip()
    families = {_family(part) for part in parts}
    if len(families) > 1:
        raise ValueError(f"{address!r}: mix of IPv4 and IPv6 addresses")
    return f"{families.pop()}:{','.join(parts)}"


# How soon a channel tries again after its peer went away. gRPC's defaults (1 s, growing to
# 120 s) leave a mesh client waiting long after a restarted replica is back; inside the mesh a
# peer is either restarting or replaced within seconds, so retry fast and cap the wait at 2 s.
RECONNECT: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def channel_options(options: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """``options`` plus round-robin balancing and the mesh's reconnect backoff, each unless
    ``options`` set it already."""
    named = {name for name, _ in options}
    return [*options, *(option for option in (BALANCED, *RECONNECT) if option[0] not in named)]


def plaintext_channel(address: str) -> grpc.aio.Channel:
    """A balanced plaintext channel to the replicas at ``address`` (traced when traces are on)."""
    return grpc.aio.insecure_channel(
        grpc_target(address), options=channel_options(), interceptors=client_interceptors()
    )
