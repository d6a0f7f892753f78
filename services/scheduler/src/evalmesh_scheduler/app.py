"""Build the scheduler's server: its API, background work, queue metrics, and health that waits
for NATS, storage and the JetStream topology."""

from __future__ import annotations

import logging
import os
import sys

from evalmesh.scheduler.v1 import scheduler_service_pb2, scheduler_service_pb2_grpc
from evalmesh_common.messaging import BucketView, NatsConnection
from evalmesh_common.server import ServiceApp, health_probe
from evalmesh_common.server.channels import plaintext_channel
from evalmesh_common.server.metrics import LoopSnapshot
from evalmesh_common.server.tracing import tracing_enabled
from evalmesh_common.subjects import EXECUTORS_BUCKET
from evalmesh_scheduler.background import Background
from evalmesh_scheduler.config import SchedulerConfig, default_instance_id
from evalmesh_scheduler.deadletters import DeadLetters
from evalmesh_scheduler.drain import Drains
from evalmesh_scheduler.jobs import JobQueue
from evalmesh_scheduler.metrics import DeadLetterMetrics, QueueMetrics
from evalmesh_scheduler.publications import PublicationLog
from evalmesh_scheduler.queue import Submitter
from evalmesh_scheduler.reaper import Reaper
from evalmesh_scheduler.reconciler import Reconciler
from evalmesh_scheduler.retention import Retention
from evalmesh_scheduler.runtimes import RuntimeOffers
from evalmesh_scheduler.servicer import SchedulerServicer
from evalmesh_scheduler.stats import Stats
from evalmesh_scheduler.storage_client import StorageClient
from evalmesh_scheduler.topology import Topology

__all__ = ["SERVICE_NAME", "build_app"]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name
STORAGE_SERVICE = "evalmesh.storage.v1.StorageService"
CRASH_EXIT_STATUS = 137  # what a shell reports for a process killed by SIGKILL


def crash_after_commit() -> None:
    """Fault-injection hook (EVALMESH_TEST_CRASH_AFTER_COMMIT): die like kill -9 would."""
    logger.critical("test hook: exiting between the storage commit and the publish")
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(CRASH_EXIT_STATUS)


async def build_app(config: SchedulerConfig) -> ServiceApp:
    """Return the scheduler's app; it serves once NATS, storage and the topology are ready."""
    instance_id = config.instance_id or default_instance_id()
    nats = NatsConnection(config.nats_url, name=instance_id)
    nats.start()
    channel = plaintext_channel(config.storage_address)
    storage = StorageClient(channel, config.storage_timeout)
    js = nats.client.jetstream(timeout=config.nats_timeout)
    queue, loops = config.queue, config.loops
    jobs = JobQueue(
        nats.client,
        js,
        queue.max_jobs,
        queue.max_bytes,
        config.nats_timeout,
        trace_jobs=tracing_enabled(),
    )
    publications = PublicationLog(storage)
    # Retried soon while the bucket is not made yet: readiness waits for its first snapshot.
    executors = BucketView(nats, EXECUTORS_BUCKET, retry=0.2, timeout=config.nats_timeout)
    executors.start()
    runtimes = RuntimeOffers(executors)
    submitter = Submitter(
        storage,
        jobs,
        publications=publications,
        max_batch=config.max_batch,
        tenant_max_queued=queue.tenant_max_queued,
        after_commit=crash_after_commit if config.test_crash_after_commit else lambda: None,
        runtimes=runtimes,
    )
    dead = DeadLetters(
        nats.client,
        js,
        storage,
        jobs,
        submitter,
    )
    reaper = Reaper(
        storage,
        jobs,
        max_attempts=loops.max_attempts,
        batch=loops.batch_limit,
        backoff_base=loops.requeue_backoff_base,
        backoff_cap=loops.requeue_backoff_cap,
    )
    retention = Retention(storage, loops.retention_age)
    background = Background(
        nats,
        js,
        Topology(queue),
        loops,
        reconciler=Reconciler(
            storage,
            jobs,
            republish_after=loops.reconcile_after,
            batch=loops.batch_limit,
            check_after=loops.presence_check_after,
            held=reaper.holds,
        ),
        reaper=reaper,
        dead=dead,
        retention=retention,
        instance_id=instance_id,
        leader_ttl=queue.leader_ttl,
    )
    stats = Stats(storage, executors, dead)
    drains = Drains(nats.client, stats, config.nats_timeout)
    servicer = SchedulerServicer(
        submitter,
        dead,
        stats,
        background.is_ready,
        drains=drains,
        retention=retention,
        runtimes=runtimes,
    )
    storage_probe = health_probe(channel, STORAGE_SERVICE)
    app = ServiceApp(
        "scheduler",
        config.server,
        services=[SERVICE_NAME],
        add_servicers=lambda server: (
            scheduler_service_pb2_grpc.add_SchedulerServiceServicer_to_server(servicer, server)
        ),
    )
    app.metrics.register(QueueMetrics(LoopSnapshot(stats.queue_stats)))
    app.metrics.register(DeadLetterMetrics(dead))
    app.add_probe("nats", nats.probe)
    app.add_probe("storage", storage_probe)
    app.add_probe("topology", background.probe)
    app.add_probe("executor-heartbeats", runtimes.probe)
    app.on_stop_work("background", background.stop)
    app.on_stop_work("publications", publications.stop)
    app.on_drain("executors-view", executors.close)
    app.on_drain("nats", nats.close)
    app.on_dispose("storage-channel", lambda: channel.close(None))
    background.start()
    publications.start()
    logger.info("scheduler instance %s", instance_id, extra={"instance": instance_id})
    return app
