"""Build the gateway's server: the public services, healthy once its upstreams answer."""

from __future__ import annotations

from evalmesh.v1 import (
    api_key_service_pb2,
    cluster_service_pb2,
    evaluation_service_pb2,
)
from evalmesh_common import ServiceApp, health_probe
from evalmesh_common.messaging import NatsConnection
from evalmesh_gateway.config import GatewayConfig

__all__ = ["SERVICE_NAMES", "build_app"]

SERVICE_NAMES: tuple[str, ...] = (
    evaluation_service_pb2.DESCRIPTOR.services_by_name["EvaluationService"].full_name,
    cluster_service_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
    api_key_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"].full_name,
)
UPSTREAMS = {
    "storage": "evalmesh.storage.v1.StorageService",
    "scheduler": "evalmesh.scheduler.v1.SchedulerService",
}


async def build_app(config: GatewayConfig) -> ServiceApp:
    """Return the gateway's app; it serves once NATS, storage and the scheduler answer."""
    nats = NatsConnection(config.nats_url, name="gateway")
    nats.start()
    # No handlers are registered yet, so every RPC answers UNIMPLEMENTED until the gateway's own
    # issue lands; reflection still describes every service from its descriptor.
    app = ServiceApp("gateway", config.server, services=SERVICE_NAMES)
    app.add_probe("nats", nats.probe)
    addresses = {"storage": config.storage_address, "scheduler": config.scheduler_address}
    for name, service in UPSTREAMS.items():
        probe = health_probe(addresses[name], service)
        app.add_probe(name, probe)
        app.on_dispose(f"{name}-channel", probe.aclose)
    app.on_drain("nats", nats.close)
    return app
