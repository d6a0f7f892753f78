"""Build the storage server: database engine, schema, domain, servicer, health and shutdown.

Start-up migrates the schema (or checks it, with ``EVALMESH_DATABASE_MIGRATE=false``) before the
server binds; a schema newer than this code stops start-up with a clear error. Health reports
SERVING only while ``SELECT 1`` succeeds, so it follows database outages both ways without a
restart. Shutdown disposes the engine last, after in-flight RPCs have finished.
"""

from __future__ import annotations

import logging

import grpc.aio

from evalmesh.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from evalmesh_common.server import ServiceApp
from evalmesh_storage.config import StorageConfig
from evalmesh_storage.db import Database, create_engine
from evalmesh_storage.migrate import prepare_schema
from evalmesh_storage.servicer import StorageServicer
from evalmesh_storage.storage import Storage
from evalmesh_storage.tokens import PageTokens

__all__ = ["SERVICE_NAME", "build_app"]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name


async def build_app(config: StorageConfig) -> ServiceApp:
    """Prepare the database and return the (not yet started) storage server."""
    settings = config.database()
    engine = create_engine(settings)
    try:
        revision = await prepare_schema(
            engine, upgrade=config.migrate, patience=config.startup_timeout
        )
    except BaseException:
        engine.dispose()
        raise
    logger.info("database schema ready", extra={"revision": revision, "backend": engine.name})
    if config.uses_dev_secret and engine.name != "sqlite":
        logger.warning("EVALMESH_PAGE_TOKEN_SECRET is the public development default; set one")
    threads = settings.pool_size if engine.name == "postgresql" else settings.readers
    db = Database(engine, settings.retry, threads=threads, max_group=settings.max_group)
    servicer = StorageServicer(Storage(db, PageTokens(config.page_token_secret.reveal().encode())))

    def add_servicers(server: grpc.aio.Server) -> None:
        storage_service_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)

    app = ServiceApp("storage", config.server, services=[SERVICE_NAME], add_servicers=add_servicers)
    app.add_probe("database", db.ping)
    app.on_dispose("database", db.dispose)
    return app
