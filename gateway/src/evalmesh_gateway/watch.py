"""WatchEvaluation: replay what storage holds from the requested offsets, then follow live events.

Executors publish output chunks and state changes on the evaluation's event subject (core NATS, best
effort) and persist the same chunks to storage in batches. A watcher subscribes first, then replays
from storage, then applies live chunks by byte offset: anything before the offset already sent is a
duplicate and dropped; anything after it means a gap, filled from storage once it has the bytes.
A state event carries the evaluation as the executor's write left it, so the watcher passes the
change on without reading storage, and reads output only when the terminal result says more bytes
were stored than it has sent. Storage is re-read at any change an event does not describe and on a
quiet timer, so a lost event can delay a watcher but never leave it hanging or skipping bytes. The
stream ends after the terminal snapshot.

RunEvaluation follows an evaluation that does not exist yet: the gateway picks its id, subscribes,
and only then has it created, so the created evaluation is the first snapshot and no event can
come before the subscription; that spares the storage read a watch opens with.

With traces on (a ``tracer``), passing on a terminal state event is one ``gateway.watch.deliver``
span (kind CONSUMER) in the evaluation's trace: its parent is the executor's job span, from the
event's ``traceparent`` header, and it lasts from the event's arrival until the stream has sent
the terminal snapshot. With traces off, each event costs one comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from evalmesh.executor.v1 import pool_pb2
from evalmesh.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from evalmesh.v1 import evaluation_pb2, evaluation_service_pb2
from evalmesh_common.messaging import extract_trace_context
from evalmesh_common.states import TERMINAL_STATES
from evalmesh_common.subjects import event_subject
from evalmesh_gateway.usage import WatchCap

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["Watcher"]

State = evaluation_pb2.Evaluation.State
Response: TypeAlias = (
    evaluation_service_pb2.WatchEvaluationResponse | evaluation_service_pb2.RunEvaluationResponse
)
ResponseType: TypeAlias = (
    type[evaluation_service_pb2.WatchEvaluationResponse]
    | type[evaluation_service_pb2.RunEvaluationResponse]
)
#: Creates the evaluation a run follows and returns it (BASIC view).
Create: TypeAlias = Callable[[], Awaitable[evaluation_pb2.Evaluation]]
STDOUT = evaluation_pb2.OUTPUT_STREAM_STDOUT
STDERR = evaluation_pb2.OUTPUT_STREAM_STDERR
READ_BYTES = 256 * 1024
# Every this many quiet polls without news, also re-read the stored output (lost live chunks).
QUIET_READS_EVERY = 3
TIMEOUT = 10.0
_FLUSH_TIMEOUT = 1


class Watcher:
    """Serves watch streams for every tenant from one NATS connection and the storage service."""

    def __init__(
        self,
        nats: Client,
        storage: storage_service_pb2_grpc.StorageServiceAsyncStub,
        poll_interval: float = 5.0,
        max_per_tenant: int = 100,
        cap: WatchCap | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._nats = nats
        self._storage = storage
        self._poll_interval = poll_interval
        # Counts the open watches per tenant, with the other gateways' when the cap is shared.
        self.cap = cap or WatchCap(max_per_tenant)
        self._tracer = tracer  # None: traces are off

    async def watch(
        self, tenant: str, evaluation_id: str, offsets: tuple[int, int]
    ) -> AsyncIterator[Response]:
        """Yield the snapshot, output from ``offsets`` (stdout, stderr), then live events."""
        self.cap.enter(tenant)
        try:
            session = _Session(self, tenant, evaluation_id, offsets)
            async for response in session.run():
                yield response
        finally:
            self.cap.leave(tenant)

    async def run(self, tenant: str, new_id: str, create: Create) -> AsyncIterator[Response]:
        """Follow the evaluation ``create`` makes with id ``new_id``: subscribe, create, then
        yield it and its events as a watch from offset 0 does. If ``create`` returns another
        evaluation (its request_id made one earlier), follow that one as a watch does."""
        self.cap.enter(tenant)
        try:
            session = _Session(
                self, tenant, new_id, (0, 0), evaluation_service_pb2.RunEvaluationResponse
            )
            async for response in session.run(create):
                yield response
        finally:
            self.cap.leave(tenant)


def _told(event: pool_pb2.RunEvent | None, attempt: int) -> evaluation_pb2.Evaluation | None:
    """The evaluation a state event carries, if it is about the current attempt or a newer one."""
    if event is None or not event.HasField("evaluation") or event.evaluation.attempt < attempt:
        return None
    return event.evaluation


def _delivery_span(
    tracer: Tracer, arrival: tuple[dict[str, str], int], evaluation: evaluation_pb2.Evaluation
) -> Span:
    """The span of passing on a terminal event that arrived (headers, wall-clock ns) then; a
    child of the span that published it, linked to the watch stream's own span if there is one."""
    from opentelemetry.trace import Link, SpanKind, get_current_span

    headers, arrived_ns = arrival
    watch = get_current_span().get_span_context()
    return tracer.start_span(
        "gateway.watch.deliver",
        context=extract_trace_context(headers),
        kind=SpanKind.CONSUMER,
        start_time=arrived_ns,
        links=[Link(watch)] if watch.is_valid else None,
        attributes={
            "evalmesh.evaluation_id": evaluation.id,
            "evalmesh.attempt": evaluation.attempt,
            "evalmesh.state": State.Name(evaluation.state),
            "messaging.system": "nats",
            "messaging.destination.name": event_subject(evaluation.id),
        },
    )


class _Session:
    """One watch stream's state: the next byte to send per stream, and the live event queue."""

    def __init__(
        self,
        watcher: Watcher,
        tenant: str,
        evaluation_id: str,
        offsets: tuple[int, int],
        response: ResponseType = evaluation_service_pb2.WatchEvaluationResponse,
    ) -> None:
        self._watcher = watcher
        self._response = response
        self._tracer = watcher._tracer
        self._tenant = tenant
        self._id = evaluation_id
        self._next = {STDOUT: offsets[0], STDERR: offsets[1]}
        self._events: asyncio.Queue[pool_pb2.RunEvent] = asyncio.Queue(maxsize=1024)
        self._overflowed = False
        self._attempt = 0
        self._quiet = 0
        self._stored: tuple[int, int] | None = None  # output bytes storage held at the last read
        # Traces on: the trace headers of the last terminal event and when it arrived (ns).
        self._terminal_arrival: tuple[dict[str, str], int] | None = None

    async def run(self, create: Create | None = None) -> AsyncIterator[Response]:
        # Interest first, then the read (or the creation): an event published in between is
        # queued, not lost.
        subscription = await self._subscribe()
        try:
            if create is None:
                # The read also proves the tenant owns the evaluation: NOT_FOUND ends the stream
                # here, before anything queued is sent.
                evaluation = await self._snapshot()
            else:
                evaluation = await create()
                self._stored = (0, 0)
                if evaluation.id != self._id:  # request_id's earlier evaluation: watch that one
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
                    self._id, self._stored = evaluation.id, None
                    subscription = await self._subscribe()
                    evaluation = await self._snapshot()
            self._attempt = evaluation.attempt
            yield self._response(evaluation=evaluation)
            async for response in self._follow(evaluation):
                yield response
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _subscribe(self) -> Subscription:
        nats = self._watcher._nats
        subscription = await nats.subscribe(event_subject(self._id), cb=self._on_message)
        with contextlib.suppress(Exception):  # NATS away: the quiet timer still catches up
            await nats.flush(timeout=_FLUSH_TIMEOUT)
        return subscription

    async def _follow(self, evaluation: evaluation_pb2.Evaluation) -> AsyncIterator[Response]:
        state = evaluation.state
        if self._unsent(evaluation):
            for response in await self._catch_up():
                yield response
        while state not in TERMINAL_STATES:
            event = await self._next_event()
            if event is not None and event.HasField("output") and not self._overflowed:
                if event.attempt < self._attempt:
                    continue  # a lost attempt's late output
                if event.attempt == self._attempt:
                    for response in await self._apply(event.output):
                        yield response
                    continue
            told = _told(event, self._attempt)
            # A state change the event describes needs no read; a change it does not describe,
            # a new attempt, a quiet spell or a lost event: ask storage.
            evaluation = told or await self._snapshot(queued=state == State.STATE_QUEUED)
            changed = evaluation.state != state or evaluation.attempt != self._attempt
            if not changed and event is None:
                self._quiet += 1
                if self._quiet % QUIET_READS_EVERY:
                    # Gaps show up at the next live chunk or the terminal state; a quiet spell
                    # costs one read, and the output is re-read only now and then.
                    continue
            if evaluation.attempt > self._attempt > 0:
                # A new attempt rewrites the output from offset 0; its snapshot comes first.
                self._next = {STDOUT: 0, STDERR: 0}
            state, self._attempt = evaluation.state, evaluation.attempt
            if changed and state not in TERMINAL_STATES:
                yield self._response(evaluation=evaluation)
            # At a terminal state everything was persisted already: send the rest, then the end.
            # An event's RUNNING is a claim: the new attempt has stored nothing yet.
            if told is None or (state in TERMINAL_STATES and self._unsent(evaluation)):
                for response in await self._catch_up():
                    yield response
            if changed and state in TERMINAL_STATES:
                delivery = self._delivery(told)
                try:
                    yield self._response(evaluation=evaluation)
                finally:
                    if delivery is not None:
                        delivery.end()

    def _delivery(self, told: evaluation_pb2.Evaluation | None) -> Span | None:
        """The delivery span of the terminal event ``told``; None while traces are off, or when
        the terminal state came from storage or from an event without trace headers."""
        tracer, arrival = self._tracer, self._terminal_arrival
        if tracer is None or told is None or arrival is None:
            return None
        return _delivery_span(tracer, arrival, told)

    def _unsent(self, evaluation: evaluation_pb2.Evaluation) -> bool:
        """Whether storage may hold output of ``evaluation`` this stream has not sent yet.

        A terminal evaluation says how many bytes it stored, and so does the last read of
        storage; a run that just started (or one never claimed) has stored none.
        """
        if evaluation.state in TERMINAL_STATES:
            stored = (evaluation.result.stdout_bytes, evaluation.result.stderr_bytes)
        elif self._stored is not None:
            stored = self._stored
        else:
            return evaluation.attempt > 0
        return stored[0] > self._next[STDOUT] or stored[1] > self._next[STDERR]

    async def _next_event(self) -> pool_pb2.RunEvent | None:
        # Jitter keeps thousands of quiet watchers from polling storage in lockstep.
        quiet = self._watcher._poll_interval * random.uniform(0.8, 1.2)  # noqa: S311
        try:  # not wait_for: in Python 3.11 it can return an event instead of a cancel
            async with asyncio.timeout(quiet):
                return await self._events.get()
        except TimeoutError:
            self._overflowed = False
            return None

    async def _on_message(self, message: Msg) -> None:
        event = pool_pb2.RunEvent()
        try:
            event.ParseFromString(message.data)
        except Exception:
            return
        if self._tracer is not None and message.headers:
            self._note_arrival(event, message.headers)
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            # A slow watcher stops taking live chunks and re-reads storage instead.
            self._overflowed = True

    def _note_arrival(self, event: pool_pb2.RunEvent, headers: dict[str, str]) -> None:
        if event.HasField("evaluation") and event.evaluation.state in TERMINAL_STATES:
            self._terminal_arrival = (headers, time.time_ns())

    async def _apply(self, chunk: evaluation_pb2.OutputChunk) -> list[Response]:
        if chunk.stream in self._next and chunk.offset > self._next[chunk.stream]:
            return await self._catch_up()  # a gap: storage has (or soon has) the missing bytes
        response = self._take(chunk)
        return [response] if response is not None else []

    def _take(self, chunk: evaluation_pb2.OutputChunk) -> Response | None:
        """The part of ``chunk`` not sent yet, if it starts where the stream stands."""
        start = self._next.get(chunk.stream)
        end = chunk.offset + len(chunk.data)
        if start is None or end <= start or chunk.offset > start:
            return None
        self._next[chunk.stream] = end
        piece = chunk.data[start - chunk.offset :]
        return self._response(
            output=evaluation_pb2.OutputChunk(
                stream=chunk.stream, sequence=chunk.sequence, offset=start, data=piece
            )
        )

    async def _catch_up(self) -> list[Response]:
        responses: list[Response] = []
        for stream in (STDOUT, STDERR):
            progressed = True
            while progressed:
                progressed = False
                for chunk in await self._read(stream, self._next[stream]):
                    response = self._take(chunk)
                    if response is not None:
                        responses.append(response)
                        progressed = True
        return responses

    async def _read(
        self, stream: evaluation_pb2.OutputStream.ValueType, offset: int
    ) -> list[evaluation_pb2.OutputChunk]:
        request = storage_service_pb2.ReadOutputRequest(
            tenant=self._tenant, id=self._id, stream=stream, offset=offset, max_bytes=READ_BYTES
        )
        reply = await self._watcher._storage.ReadOutput(request, timeout=TIMEOUT)
        return [chunk for chunk in reply.chunks if chunk.data]

    async def _snapshot(self, queued: bool = True) -> evaluation_pb2.Evaluation:
        request = storage_service_pb2.GetEvaluationRequest(
            tenant=self._tenant,
            id=self._id,
            view=evaluation_pb2.EVALUATION_VIEW_BASIC,
            include_queue_position=queued,
        )
        reply = await self._watcher._storage.GetEvaluation(request, timeout=TIMEOUT)
        progress = reply.record.progress
        self._stored = (progress.stdout_bytes, progress.stderr_bytes)
        return reply.record.evaluation
