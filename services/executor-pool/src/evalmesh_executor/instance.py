"""One executor instance's moving parts and their lifecycle, behind the gRPC app.

Start (in the background, so health is served from the first moment): wait for NATS, bind the
priority consumers, check the executors bucket, listen for cancels, end the leases a previous
process with this instance id left behind, then pull, report status and self-check. Stop, in
the app's shutdown order: stop pulling and drain the running jobs (STOP_WORK); unsubscribe,
delete the status entry and close NATS (DRAIN); release the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import nats.errors
from nats.js.errors import Error as JetStreamError

from evalmesh.storage.v1 import record_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import Aborted, DeadlineExceeded, DomainError, Unavailable
from evalmesh_common.messaging import BucketView, NatsConnection
from evalmesh_common.subjects import EXECUTORS_BUCKET, LEASES_RELEASED_SUBJECT
from evalmesh_executor.config import ExecutorConfig
from evalmesh_executor.control import CancelListener, DrainListener
from evalmesh_executor.pool import Pool
from evalmesh_executor.runs import RunRegistry, Stop
from evalmesh_executor.sandbox.core.backend import Backend
from evalmesh_executor.selfcheck import SelfCheck, address_port, url_port
from evalmesh_executor.share import TenantShares, send_to_back
from evalmesh_executor.status import InstanceInfo, StatusReporter, runtime_infos
from evalmesh_executor.storage_client import StorageClient
from evalmesh_executor.worker import JobRunner, RunnerSettings

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

__all__ = ["ExecutorInstance"]

logger = logging.getLogger(__name__)

_NATS_ERRORS = (nats.errors.Error, JetStreamError, OSError)
_BIND_RETRY = 1.0
_FLUSH_TIMEOUT = 2
T = TypeVar("T")
NATS_DEFAULT_PORT = 4222


def crash_now() -> None:
    """The F05 fault hook: die like kill -9 would, between the stored result and the ack."""
    logger.warning("EVALMESH_TEST_CRASH_BEFORE_ACK: killing this process before the ack")
    os.kill(os.getpid(), signal.SIGKILL)


class ExecutorInstance:
    """The pool, cancel listener, status reporter and self-check of one instance."""

    def __init__(
        self,
        config: ExecutorConfig,
        nats_connection: NatsConnection,
        store: StorageClient,
        backend: Backend,
        *,
        executor_id: str,
        gate: Callable[[], bool],
        on_finished: Callable[[record_pb2.EvaluationRecord], None] = lambda record: None,
        tracer: Tracer | None = None,
    ) -> None:
        self.config = config
        self.nats = nats_connection
        self.backend = backend
        self.store = store
        self.executor_id = executor_id
        self.runs = RunRegistry()
        client = nats_connection.client
        self.shares = TenantShares(config.share, config.slots)
        runner = JobRunner(
            store,
            backend.sandbox,
            self._publish,
            self.runs,
            RunnerSettings(config.lease, config.limits, config.output, config.pull),
            self.shares,
            lambda msg, evaluation_id: send_to_back(client, msg, evaluation_id),
            before_ack=crash_now if config.test_crash_before_ack else lambda: None,
            finished=on_finished,
            tracer=tracer,
        )
        self.pool = Pool(
            client,
            runner,
            self.runs,
            slots=config.slots,
            pull=config.pull,
            can_pull=lambda: gate() and self.self_check.passed,
        )
        self.cancels = CancelListener(client, self.runs)
        self._own_ports: tuple[int, ...] = ()
        self.self_check = SelfCheck(
            backend.sandbox, self._platform_ports, config.self_check_interval
        )
        info = InstanceInfo(
            instance_id=executor_id,
            host=socket.gethostname(),
            backend=backend.name,
            slots=config.slots,
            start_time=datetime.now(UTC),
            runtimes=tuple(
                runtime_infos(backend.sandbox.runtimes, backend.sandbox.runtime_details)
            ),
        )
        self.status = StatusReporter(
            info,
            self.runs,
            unhealthy_reason=lambda: self.self_check.reason,
            draining=lambda: self.pool.draining,
            interval=config.status_interval,
        )
        self.drains = DrainListener(client, executor_id, self.begin_drain, self.status.snapshot)
        self._tasks: list[asyncio.Task[None]] = []

    def _platform_ports(self) -> list[int]:
        ports = (
            url_port(self.config.nats_url, NATS_DEFAULT_PORT),
            address_port(self.config.storage_address),
            *self._own_ports,
        )
        return [port for port in ports if port]

    async def _publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        try:
            await self.nats.client.publish(subject, data, headers=headers)
        except _NATS_ERRORS as exc:  # live events are best effort; storage has the output
            logger.debug("event not published: %s", exc)

    # ------------------------------------------------------------------ probes

    async def queues_probe(self) -> bool:
        """Consumers bound, cancel subscription open, status written to the bucket."""
        return self.pool.bound and self.cancels.listening and self.status.written

    async def accepting_probe(self) -> bool:
        """False once a drain began: the instance takes no new work."""
        return not self.pool.draining

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait_for_ports: Callable[[], Awaitable[Sequence[int]]]) -> None:
        """Start the background work (call inside the event loop, before serving).
        ``wait_for_ports`` returns this instance's own listening ports (gRPC, metrics)."""
        self._spawn(self._connect_and_pull(), "executor-pull")
        self._spawn(self._self_check(wait_for_ports), "executor-self-check")

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s stopped unexpectedly", name)

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def _self_check(self, wait_for_ports: Callable[[], Awaitable[Sequence[int]]]) -> None:
        self._own_ports = tuple(await wait_for_ports())  # the canaries aim at our own ports too
        await self.self_check.run()

    async def _connect_and_pull(self) -> None:
        await self.nats.wait_connected()
        await self._bind()
        self._spawn(self.status.run(self.nats.client), "executor-status")
        if self.config.share.fair_share < 1:  # only the fair share depends on the pool's size
            interval = self.config.status_interval
            heartbeats = BucketView(self.nats, EXECUTORS_BUCKET)
            self._spawn(self.shares.watch_pool(heartbeats, interval), "executor-pool-size")
        await self._end_predecessor_leases()
        logger.info("bound to the job consumers; pulling when healthy")
        await self.pool.run()

    async def _end_predecessor_leases(self) -> None:
        """End the leases an earlier process under this instance id left behind.

        Whatever this id still holds RUNNING in storage was claimed by a process that is gone
        (a restart keeps ``EVALMESH_INSTANCE_ID``), and its sandboxes died with it. Each lease
        is shortened to nothing, fenced by its attempt like a renewal, and the scheduler is told
        (``LEASES_RELEASED_SUBJECT``): its reaper requeues them now, with the attempt limit and
        backoff it applies to any lost attempt, instead of after the lease. This runs before
        the pool pulls, so nothing this process claimed itself can be among them.
        """
        try:
            held = await self._until_storage_answers(self.store.list_leases)
            ended = [r for r in held if await self._end_lease(r.evaluation)]
        except DomainError as exc:  # e.g. an older storage without ListLeases: leases run out
            logger.warning("could not end a previous process's leases: %s", exc)
            return
        if not ended:
            return
        logger.warning(
            "ended %d leases a previous process under this id left; the scheduler requeues them",
            len(ended),
            extra={"evaluations": [r.evaluation.id for r in ended]},
        )
        try:
            await self.nats.client.publish(LEASES_RELEASED_SUBJECT, self.executor_id.encode())
            await self.nats.client.flush(timeout=_FLUSH_TIMEOUT)
        except _NATS_ERRORS as exc:  # the reaper still finds them at its next pass
            logger.info("could not tell the scheduler: %s", exc)

    async def _end_lease(self, evaluation: evaluation_pb2.Evaluation) -> bool:
        return await self._until_storage_answers(
            lambda: self.store.end_lease(evaluation.id, evaluation.attempt)
        )

    async def _until_storage_answers(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried while storage is unreachable; any other error is raised."""
        complained = False
        while True:
            try:
                return await call()
            except (Unavailable, DeadlineExceeded, Aborted) as exc:
                if not complained:
                    logger.warning("storage did not answer; retrying: %s", exc)
                    complained = True
            await asyncio.sleep(_BIND_RETRY)

    async def _bind(self) -> None:
        complained = False
        while True:
            try:
                await self.nats.client.jetstream().key_value(EXECUTORS_BUCKET)
                await self.pool.bind()
                await self.cancels.start()
                await self.drains.start()
                return
            except _NATS_ERRORS as exc:
                if not complained:
                    logger.warning("job consumers or executors bucket not ready: %s", exc)
                    complained = True
            await asyncio.sleep(_BIND_RETRY)

    async def drain(self, grace: float) -> tuple[int, int]:
        """Stop pulling; running jobs get ``grace`` seconds, the rest are given back."""
        return await self.pool.drain(grace)

    def begin_drain(self, grace: float | None) -> None:
        """Start a drain in the background (a drain request from the control plane): the
        instance is draining when this returns, and says so in its heartbeat at once."""
        self.pool.draining = True
        self._spawn(self._drain_now(self.config.drain_grace if grace is None else grace), "drain")

    async def _drain_now(self, grace: float) -> None:
        await self.status.report(self.nats.client)  # the heartbeat says "draining" at once
        await self.drain(grace)

    async def stop_work(self) -> None:
        """STOP_WORK hook: drain within the configured grace."""
        await self.drain(self.config.drain_grace)

    async def close_messaging(self) -> None:
        """DRAIN hook: unsubscribe everything (a subscription left open holds up the
        connection's drain), remove the status entry, then drain and close NATS."""
        self.runs.stop_all(Stop.GIVE_BACK, "the executor is shutting down")
        await self.cancels.stop()
        await self.drains.stop()
        await self.pool.close()
        await self._cancel_tasks()
        if self.nats.client.is_connected:
            await self.status.remove(self.nats.client)
        await self.nats.close()

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def dispose(self) -> None:
        """DISPOSE hook: release the sandbox backend."""
        await self.backend.sandbox.close()
