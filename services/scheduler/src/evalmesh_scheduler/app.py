"""Build the scheduler's server: its API, and health that waits for NATS and storage."""

from __future__ import annotations

from evalmesh.scheduler.v1 import scheduler_service_pb2
from evalmesh_common import ServiceApp, health_probe
from evalmesh_common.messaging import NatsConnection
from evalmesh_scheduler.config import SchedulerConfig

__all__ = ["SERVICE_NAME", "build_app"]

SERVICE_NAME: str = scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name
STORAGE_SERVICE = "evalmesh.storage.v1.StorageService"


async def build_app(config: SchedulerConfig) -> ServiceApp:
    """Return the scheduler's app; it serves once NATS and storage both answer."""
    nats = NatsConnection(config.nats_url, name="scheduler")
    nats.start()
    storage = health_probe(config.storage_address, STORAGE_SERVICE)
    # No handlers are registered yet, so every RPC answers UNIMPLEMENTED until the scheduler's
    # own issue lands; reflection still describes the whole service from its descriptor.
    app = ServiceApp("scheduler", config.server, services=[SERVICE_NAME])
    app.add_probe("nats", nats.probe)
    app.add_probe("storage", storage)
    app.on_drain("nats", nats.close)
    app.on_dispose("storage-channel", storage.aclose)
    return app
