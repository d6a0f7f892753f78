"""Build the executor pool's server: its control API, healthy once NATS and storage answer."""

from __future__ import annotations

from evalmesh.executor.v1 import executor_service_pb2
from evalmesh_common import ServiceApp, health_probe
from evalmesh_common.messaging import NatsConnection
from evalmesh_executor.config import ExecutorConfig

__all__ = ["SERVICE_NAME", "build_app"]

SERVICE_NAME: str = executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name
STORAGE_SERVICE = "evalmesh.storage.v1.StorageService"


async def build_app(config: ExecutorConfig) -> ServiceApp:
    """Return the executor pool's app; it serves once NATS and storage both answer."""
    nats = NatsConnection(config.nats_url, name="executor-pool")
    nats.start()
    storage = health_probe(config.storage_address, STORAGE_SERVICE)
    # No handlers are registered yet, so every RPC answers UNIMPLEMENTED until the executor
    # pool's own issue lands; reflection still describes the whole service from its descriptor.
    app = ServiceApp("executor-pool", config.server, services=[SERVICE_NAME])
    app.add_probe("nats", nats.probe)
    app.add_probe("storage", storage)
    app.on_drain("nats", nats.close)
    app.on_dispose("storage-channel", storage.aclose)
    return app
