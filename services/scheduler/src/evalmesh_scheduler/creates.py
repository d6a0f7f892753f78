"""Concurrent submits share their storage calls: natural batching of single creates.

Each submit creates its evaluation in storage before publishing its job. Under a burst, every
one of those creates was a call of its own: a gRPC call's overhead on both sides, and one more
unit for storage's writer. Now at most ``in_flight`` creates go to storage at once; a create that
arrives while they are all out waits for one of them to come back, and goes with every other
create that waited meanwhile in one BatchCreateEvaluations. Nothing waits for a batch to fill:
a lone submit still makes its CreateEvaluation the moment it arrives.

A batch is all or none in storage, but the submits in it are unrelated. If it is refused (one
request's spec reused a request_id with another spec, say) or fails, each of its requests is
sent again alone, so each submit gets exactly the answer it would have had on its own; only
storage being away or too slow fails them all at once, as it would each of them.
Idempotency is storage's, on (tenant, request_id), within a batch as across batches. With
traces on, a shared call shows in the trace of the submit that started its sender.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from evalmesh.storage.v1 import storage_service_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import DeadlineExceeded, Unavailable
from evalmesh_scheduler.storage_client import Created, StorageClient

__all__ = ["CreateBatcher"]

logger = logging.getLogger(__name__)

_Request = storage_service_pb2.CreateEvaluationRequest


class CreateBatcher:
    """Creates evaluations, sharing one storage call among the creates that wait together."""

    def __init__(self, storage: StorageClient, *, max_batch: int, in_flight: int = 2) -> None:
        self._storage = storage
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._waiting: list[tuple[_Request, asyncio.Future[Created]]] = []
        self._senders: set[asyncio.Task[None]] = set()

    async def create(
        self, tenant: str, request_id: str, spec: evaluation_pb2.EvaluationSpec, new_id: str = ""
    ) -> Created:
        """Create (or find) one QUEUED evaluation; returns it and whether this call created it.
        ``new_id``, if given, is the id a new one gets."""
        request = _Request(tenant=tenant, request_id=request_id, spec=spec, id=new_id)
        answer: asyncio.Future[Created] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        if len(self._senders) < self._in_flight:
            sender = asyncio.create_task(self._send())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return await answer

    async def _send(self) -> None:
        """Send what waits, one call at a time, until nothing waits."""
        while self._waiting:
            taken = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            # A submit whose caller went away still has its evaluation created: it is stored
            # QUEUED and unpublished, which the reconciler publishes (as after any crash).
            try:
                await self._create(taken)
            except BaseException:  # cancelled (shutdown): no submit waits forever
                for _, answer in taken:
                    _fail(answer, Unavailable("the scheduler is stopping"))
                raise

    async def _create(self, taken: Sequence[tuple[_Request, asyncio.Future[Created]]]) -> None:
        if len(taken) > 1:
            try:
                results = await self._storage.batch_create([request for request, _ in taken])
            except (Unavailable, DeadlineExceeded) as exc:
                # Storage away or too slow: each alone would wait as long again for the same.
                for _, answer in taken:
                    _fail(answer, exc)
                return
            except Exception as exc:  # a refusal: each alone, so each gets its own answer
                logger.debug("%d creates together failed (%s); each goes alone", len(taken), exc)
            else:
                for (_, answer), result in zip(taken, results, strict=True):
                    _settle(answer, result)
                return
        await asyncio.gather(*(self._create_one(request, answer) for request, answer in taken))

    async def _create_one(self, request: _Request, answer: asyncio.Future[Created]) -> None:
        try:
            result = await self._storage.create(
                request.tenant, request.request_id, request.spec, request.id
            )
        except Exception as exc:
            _fail(answer, exc)
            return
        _settle(answer, result)


def _settle(answer: asyncio.Future[Created], result: Created) -> None:
    if not answer.done():  # else its caller was cancelled
        answer.set_result(result)


def _fail(answer: asyncio.Future[Created], error: BaseException) -> None:
    if not answer.done():
        answer.set_exception(error)
