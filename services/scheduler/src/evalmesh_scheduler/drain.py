"""Draining an executor instance on an operator's request (``DrainExecutor``).

The control plane reaches executors over NATS, not by dialling them: every executor already
holds a NATS connection, listens on its own ``drain_subject`` and answers a drain request with
its ``PoolStatus`` once the drain began. So no executor has to publish an address the scheduler
can reach (behind NAT, in a pod network, with its own TLS settings), and the request is checked
against the live heartbeats first, so an unknown id answers NOT_FOUND rather than timing out.
"""

from __future__ import annotations

import logging

import nats.errors
from google.protobuf import duration_pb2
from nats.aio.client import Client

from evalmesh.executor.v1 import executor_service_pb2, pool_pb2
from evalmesh.v1 import cluster_pb2
from evalmesh_common import FieldViolation, InvalidArgument, NotFound, Unavailable
from evalmesh_common.subjects import drain_subject
from evalmesh_scheduler.stats import Stats, to_executor

__all__ = ["MAX_GRACE", "Drains"]

logger = logging.getLogger(__name__)

MAX_GRACE = 3600.0  # the executor's own bound on a drain's grace


class Drains:
    """Sends drain requests to executor instances and returns how they answered."""

    def __init__(self, client: Client, stats: Stats, timeout: float) -> None:
        self._client = client
        self._stats = stats
        self.timeout = timeout

    async def drain(
        self, executor_id: str, grace: duration_pb2.Duration | None
    ) -> cluster_pb2.Executor:
        """Ask the live instance ``executor_id`` to drain within ``grace`` (None: its own)."""
        request = executor_service_pb2.DrainRequest()
        if grace is not None:
            seconds = grace.ToNanoseconds() / 1e9
            if not 0 <= seconds <= MAX_GRACE:
                description = f"must be between 0 and {MAX_GRACE:g} seconds"
                raise InvalidArgument(f"invalid grace: {description}", [_violation(description)])
            request.grace.CopyFrom(grace)
        if executor_id not in {executor.id for executor in await self._stats.executors()}:
            raise _not_found(executor_id)
        try:
            reply = await self._client.request(
                drain_subject(executor_id), request.SerializeToString(), timeout=self.timeout
            )
        except nats.errors.NoRespondersError:
            raise _not_found(executor_id) from None  # it went away since its last heartbeat
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise Unavailable(
                f"executor {executor_id} did not answer the drain request ({exc!r})",
                reason="EXECUTOR_UNAVAILABLE",
            ) from exc
        logger.warning("executor %s is draining on request", executor_id)
        return to_executor(pool_pb2.PoolStatus.FromString(reply.data))


def _violation(description: str) -> FieldViolation:
    return FieldViolation("grace", description)


def _not_found(executor_id: str) -> NotFound:
    return NotFound(
        f"no live executor has the id {executor_id!r}",
        reason="EXECUTOR_NOT_FOUND",
        metadata={"executor": executor_id[:256]},
    )
