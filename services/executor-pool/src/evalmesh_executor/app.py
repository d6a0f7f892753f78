"""Build the executor pool's server: its control API, its metrics, and health that is SERVING
only while NATS and storage answer, the job consumers and executors bucket exist, the sandbox
self-check passed and no drain has begun."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc.aio

from evalmesh.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from evalmesh_common.messaging import NatsConnection
from evalmesh_common.server import ServiceApp, health_probe
from evalmesh_common.server.channels import plaintext_channel
from evalmesh_common.server.tracing import tracer
from evalmesh_executor.backend import choose_backend
from evalmesh_executor.config import ExecutorConfig, default_instance_id
from evalmesh_executor.instance import ExecutorInstance
from evalmesh_executor.metrics import ExecutorMetrics, RunMetrics
from evalmesh_executor.servicer import ExecutorServicer
from evalmesh_executor.storage_client import StorageClient

__all__ = ["SERVICE_NAME", "build_app"]

SERVICE_NAME: str = executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name
STORAGE_SERVICE = "evalmesh.storage.v1.StorageService"
_PORT_POLL = 0.01


async def _bound_ports(app: ServiceApp) -> list[int]:
    """The gRPC and metrics ports, once listening (the metrics port is bound first)."""
    while True:
        try:
            port = app.port
        except RuntimeError:  # not listening yet
            await asyncio.sleep(_PORT_POLL)
            continue
        return [port] if app.metrics_port is None else [port, app.metrics_port]


async def build_app(config: ExecutorConfig) -> ServiceApp:
    """Return the executor pool's app, its background work started."""
    # One id names this instance everywhere: claims, its status entry, its docker containers.
    config = replace(config, instance_id=config.instance_id or default_instance_id())
    executor_id = config.instance_id
    backend = await choose_backend(config)  # fails fast where no sandbox can run
    nats = NatsConnection(config.nats_url, name=executor_id)
    nats.start()
    channel = plaintext_channel(config.storage_address)
    store = StorageClient(channel, executor_id, config.storage_timeout, config.storage_retry_budget)

    def add_servicers(server: grpc.aio.Server) -> None:
        executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server(
            ExecutorServicer(instance), server
        )

    app = ServiceApp(
        "executor-pool", config.server, services=[SERVICE_NAME], add_servicers=add_servicers
    )
    instance = ExecutorInstance(
        config,
        nats,
        store,
        backend,
        executor_id=executor_id,
        gate=lambda: app.health.serving,
        on_finished=RunMetrics(app.metrics).observe,
        tracer=tracer("evalmesh_executor"),
    )
    app.metrics.register(ExecutorMetrics(instance.status, instance.runs, instance.self_check))
    app.add_probe("nats", nats.probe)
    app.add_probe("storage", health_probe(channel, STORAGE_SERVICE))
    app.add_probe("queues", instance.queues_probe)
    app.add_probe("sandbox-self-check", instance.self_check.probe)
    app.add_probe("accepting-work", instance.accepting_probe)
    app.on_stop_work("drain-jobs", instance.stop_work)
    app.on_drain("nats", instance.close_messaging)
    app.on_dispose("storage-channel", lambda: channel.close(None))
    app.on_dispose("sandbox", instance.dispose)
    instance.start(lambda: _bound_ports(app))
    return app
