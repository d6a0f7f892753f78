"""Queue positions on reads: asked of the scheduler, left out (with the reason) when it cannot say.

A read of a QUEUED evaluation is answered by storage; its ``queue_position`` and
``estimated_start_time`` come from the scheduler, which applies the executors' priority policy
to the backlog and knows the pool's free slots. They are an estimate on top of the read, so a
scheduler that is down, slow or not ready must not fail the read: GetEvaluation then answers
without both fields (they are optional in the contract) and names the reason in the trailing
metadata key ``evalmesh-queue-position-unavailable``, a stable reason followed by ": " and a
short description, e.g. ``SCHEDULER_UNAVAILABLE: the scheduler did not answer (UNAVAILABLE)``.
Storage's own count (strict priority, no policy, no pool) is not shown in their place: it means
something else, and a client could not tell the two apart.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import grpc.aio

from evalmesh.scheduler.v1 import scheduler_service_pb2, scheduler_service_pb2_grpc
from evalmesh.v1 import evaluation_pb2

__all__ = ["POSITION_TIMEOUT", "POSITION_UNAVAILABLE_KEY", "estimate_start"]

logger = logging.getLogger(__name__)

POSITION_UNAVAILABLE_KEY = "evalmesh-queue-position-unavailable"
# A position is not worth a slow read: a scheduler that hangs costs a read at most this much.
POSITION_TIMEOUT = 2.0
_REASONS = {
    grpc.StatusCode.UNAVAILABLE: "SCHEDULER_UNAVAILABLE",
    grpc.StatusCode.DEADLINE_EXCEEDED: "SCHEDULER_TIMEOUT",
}
_MAX_VALUE = 256

Context = grpc.aio.ServicerContext[Any, Any]


async def estimate_start(
    scheduler: scheduler_service_pb2_grpc.SchedulerServiceAsyncStub,
    tenant: str,
    evaluation: evaluation_pb2.Evaluation,
    context: Context,
) -> None:
    """Set the QUEUED ``evaluation``'s position and estimated start from the scheduler, or
    clear both and say why in the trailing metadata."""
    request = scheduler_service_pb2.GetQueuePositionRequest(tenant=tenant, id=evaluation.id)
    try:
        reply = await scheduler.GetQueuePosition(request, timeout=POSITION_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        evaluation.ClearField("queue_position")
        evaluation.ClearField("estimated_start_time")
        reason = _REASONS.get(exc.code(), "SCHEDULER_ERROR")
        why = f"the scheduler did not answer ({exc.code().name})"
        logger.info("queue position left out: %s: %s", reason, exc.details() or why)
        context.set_trailing_metadata(((POSITION_UNAVAILABLE_KEY, _header(f"{reason}: {why}")),))
        return
    if reply.HasField("position"):
        evaluation.queue_position = reply.position
    if reply.HasField("estimated_start_time"):
        evaluation.estimated_start_time.CopyFrom(reply.estimated_start_time)


def _header(text: str) -> str:
    """Printable ASCII only, as a metadata value must be."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:_MAX_VALUE]
