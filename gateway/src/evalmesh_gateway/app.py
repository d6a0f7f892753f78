"""Build the gateway's server: the public services, healthy once its upstreams answer."""

from __future__ import annotations

import dataclasses
import socket
import uuid

import grpc.aio

from evalmesh.scheduler.v1 import scheduler_service_pb2_grpc
from evalmesh.storage.v1 import storage_service_pb2_grpc
from evalmesh.v1 import (
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
)
from evalmesh_common.messaging import NatsConnection
from evalmesh_common.server import AddServicers, ServiceApp, health_probe
from evalmesh_common.server.tracing import tracer
from evalmesh_gateway.auth import Authenticator
from evalmesh_gateway.config import GatewayConfig
from evalmesh_gateway.deadline import DeadlineInterceptor
from evalmesh_gateway.metrics import TenantMetrics
from evalmesh_gateway.ratelimit import RateLimiter
from evalmesh_gateway.servicer import (
    ApiKeyServicer,
    ClusterServicer,
    EvaluationServicer,
    Upstreams,
)
from evalmesh_gateway.usage import ClusterUsage, WatchCap
from evalmesh_gateway.usage_sync import UsageSync
from evalmesh_gateway.watch import Watcher

__all__ = ["SERVICE_NAMES", "build_app"]

SERVICE_NAMES: tuple[str, ...] = (
    evaluation_service_pb2.DESCRIPTOR.services_by_name["EvaluationService"].full_name,
    cluster_service_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
    api_key_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"].full_name,
)
STORAGE_SERVICE = "evalmesh.storage.v1.StorageService"
SCHEDULER_SERVICE = "evalmesh.scheduler.v1.SchedulerService"


def _registrar(upstreams: Upstreams, watcher: Watcher) -> AddServicers:
    def add(server: grpc.aio.Server) -> None:
        evaluation_service_pb2_grpc.add_EvaluationServiceServicer_to_server(
            EvaluationServicer(upstreams, watcher), server
        )
        cluster_service_pb2_grpc.add_ClusterServiceServicer_to_server(
            ClusterServicer(upstreams), server
        )
        api_key_service_pb2_grpc.add_ApiKeyServiceServicer_to_server(
            ApiKeyServicer(upstreams), server
        )

    return add


def _usage_sync(
    config: GatewayConfig, nats: NatsConnection, limiter: RateLimiter, watches: WatchCap
) -> UsageSync | None:
    """Share the tenant limits with the other gateways over NATS, unless switched off."""
    if config.tenant_sync_interval <= 0:
        return None
    gateway_id = f"gateway-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    sync = UsageSync(nats, ClusterUsage(gateway_id, limiter, watches), config.tenant_sync_interval)
    sync.start()
    return sync


async def build_app(config: GatewayConfig) -> ServiceApp:
    """Return the gateway's app; it serves once NATS, storage and the scheduler answer."""
    storage_channel = config.upstream_tls.channel(config.storage_address)
    scheduler_channel = config.upstream_tls.channel(config.scheduler_address)
    storage = storage_service_pb2_grpc.StorageServiceStub(storage_channel)
    auth = Authenticator(storage, ttl=config.api_key_cache_ttl)
    nats = NatsConnection(config.nats_url, name="gateway")
    nats.on_connect(auth.listen)
    nats.start()
    upstreams = Upstreams(
        storage=storage,
        scheduler=scheduler_service_pb2_grpc.SchedulerServiceStub(scheduler_channel),
        bounds=config.bounds(),
        limiter=RateLimiter(config.rate_per_second, config.rate_burst),
        auth=auth,
    )
    watcher = Watcher(
        nats.client,
        storage,
        max_per_tenant=config.max_watches_per_tenant,
        tracer=tracer("evalmesh_gateway"),
    )
    sync = _usage_sync(config, nats, upstreams.limiter, watcher.cap)
    server = dataclasses.replace(
        config.server,
        max_receive_message_bytes=min(
            config.server.max_receive_message_bytes, config.max_request_bytes
        ),
        max_concurrent_streams=min(
            config.server.max_concurrent_streams, config.max_streams_per_connection
        ),
        maximum_concurrent_rpcs=config.server.maximum_concurrent_rpcs or config.max_concurrent_rpcs,
    )
    app = ServiceApp(
        "gateway",
        server,
        services=SERVICE_NAMES,
        add_servicers=_registrar(upstreams, watcher),
        interceptors=[DeadlineInterceptor(config.max_deadline)],
    )
    upstreams.tenant_metrics = TenantMetrics(app.metrics)
    app.add_probe("nats", nats.probe)
    app.add_probe("storage", health_probe(storage_channel, STORAGE_SERVICE))
    app.add_probe("scheduler", health_probe(scheduler_channel, SCHEDULER_SERVICE))
    if sync is not None:
        app.on_drain("tenant-usage", sync.close)
    app.on_drain("nats", nats.close)
    app.on_dispose("storage-channel", lambda: storage_channel.close(None))
    app.on_dispose("scheduler-channel", lambda: scheduler_channel.close(None))
    return app
