"""The tenant share: how many evaluations one tenant may run at once across the pool.

Storage decides, in the claim's transaction (``ClaimEvaluationRequest.tenant_share``): past the
hard cap a claim is always refused; past the fair share (a fraction of the pool's slots) it is
refused while another tenant below its own share has QUEUED work. An idle pool still serves a
lone tenant, a busy one is shared, and nothing running is preempted.

A refused job goes to the back of its priority class: the delivery is acked and the same job
published again (``send_to_back``). A ``nak`` would count as a delivery and, repeated, end the
job as a dead letter. If the executor dies between the ack and the publish, the evaluation is
still QUEUED in storage and the scheduler's reconciler publishes it again. After a refusal this
executor remembers the tenant for a moment and sends its jobs back without asking storage, so a
long run of one tenant's jobs in front of another's costs NATS round trips only.

A slot frees once its sandbox is gone, so the next job is claimed while the last one's result is
still being recorded. Each claim names those runs (``TenantShare.ending``): storage then counts
them in no tenant's fair share, as if their results were already in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError

from evalmesh.executor.v1 import pool_pb2
from evalmesh.storage.v1 import storage_service_pb2
from evalmesh_common.backoff import exponential_delay
from evalmesh_common.messaging import BucketView
from evalmesh_common.subjects import JOBS_STREAM, job_hint_subject, job_priority
from evalmesh_executor.config import TenantShareConfig

__all__ = ["TenantShares", "fair_running", "send_to_back"]

logger = logging.getLogger(__name__)

_NATS_ERRORS = (nats.errors.Error, JetStreamError, OSError)
_PUBLISH_TRIES = 5
_ALREADY_QUEUED = "maximum messages per subject exceeded"
_TRACE_HEADERS = ("traceparent", "tracestate")


def fair_running(pool_slots: int, fair_share: float) -> int:
    """A tenant's fair share of ``pool_slots`` (at least one); 0 when the share is off (1)."""
    if fair_share >= 1:
        return 0
    return max(1, math.floor(max(pool_slots, 0) * fair_share))


class TenantShares:
    """What this executor asks storage to enforce, and the tenants it was recently refused."""

    def __init__(
        self,
        config: TenantShareConfig,
        own_slots: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.pool_slots = own_slots
        self._own_slots = own_slots
        self._clock = clock
        self._refused: dict[str, float] = {}
        self._ending: set[str] = set()

    def limits(self) -> storage_service_pb2.TenantShare | None:
        """The share to send with a claim, or None when neither bound is on."""
        fair = fair_running(self.pool_slots, self.config.fair_share)
        if not fair and not self.config.max_running:
            return None
        return storage_service_pb2.TenantShare(
            max_running=self.config.max_running,
            fair_running=fair,
            ending=sorted(self._ending) if fair else (),
        )

    def refused(self, tenant: str) -> None:
        """Storage refused a claim of ``tenant``: remember it for a moment."""
        if self.config.remember > 0:
            self._refused[tenant] = self._clock() + self.config.remember

    def sandbox_gone(self, tenant: str, evaluation_id: str) -> None:
        """A run's sandbox is gone, its result still to be recorded: its place is free."""
        self._ending.add(evaluation_id)
        self._refused.pop(tenant, None)

    def ended(self, tenant: str, evaluation_id: str) -> None:
        """A run of ``tenant`` ended here (recorded or given back): it may have room again."""
        self._ending.discard(evaluation_id)
        self._refused.pop(tenant, None)

    def at_limit(self, tenant: str) -> bool:
        """Whether ``tenant`` was refused a moment ago (its jobs go back without a claim)."""
        until = self._refused.get(tenant)
        if until is None:
            return False
        if self._clock() >= until:
            del self._refused[tenant]
            return False
        return True

    def count_pool(self, statuses: list[pool_pb2.PoolStatus]) -> None:
        """Set the pool's size from the executors' heartbeats (at least this instance's)."""
        serving = sum(s.slots for s in statuses if s.healthy and not s.draining)
        self.pool_slots = max(self._own_slots, serving)

    async def watch_pool(self, heartbeats: BucketView, interval: float) -> None:
        """Recount the pool every ``interval`` seconds from the heartbeats' local view (reads
        that create nothing on the server) until cancelled; the view is closed at the end."""
        try:
            while True:
                try:
                    values = await heartbeats.values()
                    self.count_pool([pool_pb2.PoolStatus.FromString(v) for v in values])
                except (*_NATS_ERRORS, TimeoutError) as exc:
                    logger.debug("could not count the pool: %s", exc)
                await asyncio.sleep(interval)
        finally:
            await heartbeats.close()


async def send_to_back(client: Client, msg: Msg, evaluation_id: str) -> bool:
    """Ack the delivery and publish the same job again, at the back of its class.

    The ack comes first: the stream holds one job per evaluation. False if the job could not
    be published again (the reconciler will).
    """
    try:
        await msg.ack_sync()
    except _NATS_ERRORS as exc:  # still ours until ack_wait: it will be delivered again
        logger.warning("could not ack a job sent back: %s", exc)
        return False
    js = client.jetstream()
    msg_id = f"{evaluation_id}.back.{msg.metadata.sequence.stream}"
    headers = {"Nats-Msg-Id": msg_id}
    for name in _TRACE_HEADERS:  # the job stays in its evaluation's trace (traces on)
        if msg.headers and name in msg.headers:
            headers[name] = msg.headers[name]
    for attempt in range(_PUBLISH_TRIES):
        try:
            await js.publish(msg.subject, msg.data, stream=JOBS_STREAM, headers=headers)
            priority = job_priority(msg.subject)
            with contextlib.suppress(*_NATS_ERRORS):  # idle executors find it on their recheck
                if priority is not None:
                    await client.publish(job_hint_subject(priority), b"1")
            return True
        except JetStreamError as exc:
            if _ALREADY_QUEUED in str(exc) and await _queued_anew(js, msg):
                return True  # by the reconciler, in the meantime
            problem: Exception = exc
        except _NATS_ERRORS as exc:
            problem = exc
        await asyncio.sleep(exponential_delay(attempt + 1, base=0.05))
    logger.warning(
        "could not queue a job again; the reconciler will: %s",
        problem,
        extra={"evaluation": evaluation_id},
    )
    return False


async def _queued_anew(js: JetStreamContext, msg: Msg) -> bool:
    """Whether the subject's job is a new one, not the acked delivery still being removed."""
    try:
        last = await js.get_last_msg(JOBS_STREAM, msg.subject)
    except _NATS_ERRORS:
        return False
    return last.seq != msg.metadata.sequence.stream
