"""A run's output: each chunk goes live to watchers at once and to storage in batches.

Live events are core NATS, best effort: a lost one only makes a watcher re-read storage. The
durable copy is appended in batches (every ``flush_interval`` or ``flush_bytes``, whichever
comes first), retried by the storage client and then here for as long as storage is away,
fenced by the attempt. At most ``buffer_bytes``
wait unpersisted: past that the sandbox's reader waits, so the program blocks in write()
instead of the executor growing. :meth:`OutputSink.close` returns only once everything is
stored, which is what lets watchers trust storage once the terminal state is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from evalmesh.executor.v1 import pool_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import Aborted, DeadlineExceeded, DomainError, Unavailable
from evalmesh_common.backoff import backoff_delay
from evalmesh_common.subjects import event_subject
from evalmesh_executor.config import OutputConfig
from evalmesh_executor.sandbox import OutputChunk

__all__ = ["AppendOutput", "OutputLostError", "OutputSink", "Publish", "chunk_to_proto"]

logger = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
"""Publishes bytes on a core NATS subject (best effort)."""

AppendOutput = Callable[[list[evaluation_pb2.OutputChunk]], Awaitable[None]]
"""Stores a batch of the attempt's chunks durably (raises a DomainError when it cannot)."""

# Storage down (a restart, a full disk): keep the batch and try again; the buffer's limit makes
# the program wait in write() meanwhile. Only a refusal (the attempt lost its claim) is final.
_TRANSIENT = (Unavailable, DeadlineExceeded, Aborted)
_RETRY_BASE, _RETRY_CAP = 0.1, 2.0

_STREAMS = {
    "stdout": evaluation_pb2.OUTPUT_STREAM_STDOUT,
    "stderr": evaluation_pb2.OUTPUT_STREAM_STDERR,
}


class OutputLostError(Exception):
    """Some output could not be stored; the run cannot be recorded as it happened."""


def chunk_to_proto(chunk: OutputChunk) -> evaluation_pb2.OutputChunk:
    """The sandbox's chunk as the contract's OutputChunk."""
    return evaluation_pb2.OutputChunk(
        stream=_STREAMS[chunk.stream], sequence=chunk.seq, offset=chunk.offset, data=chunk.data
    )


class OutputSink:
    """Receives one attempt's chunks (``add`` is the sandbox's on_output callback)."""

    def __init__(
        self,
        evaluation_id: str,
        attempt: int,
        publish: Publish,
        append: AppendOutput,
        config: OutputConfig,
    ) -> None:
        self._id = evaluation_id
        self._attempt = attempt
        self._subject = event_subject(evaluation_id)
        self._publish = publish
        self._append = append
        self._config = config
        self._pending: deque[evaluation_pb2.OutputChunk] = deque()
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._closing = False
        self._hand_over = 0
        self._failure: DomainError | None = None
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"output-{evaluation_id}")

    async def add(self, chunk: OutputChunk) -> None:
        """Publish ``chunk`` live and queue it for storage; waits while the buffer is full."""
        message = chunk_to_proto(chunk)
        event = pool_pb2.RunEvent(evaluation_id=self._id, attempt=self._attempt, output=message)
        await self._publish(self._subject, event.SerializeToString())
        async with self._changed:
            await self._changed.wait_for(self._has_room)
            if self._failure is None:
                self._pending.append(message)
                self._pending_bytes += len(message.data)
        if self._pending_bytes >= self._config.flush_bytes:
            self._wake.set()

    async def close(self, hand_over: int = 0) -> list[evaluation_pb2.OutputChunk]:
        """Store everything queued, except up to ``hand_over`` bytes of the last chunks, which
        are returned for the caller to store with the result; raise OutputLostError if
        storing is impossible."""
        self._hand_over = hand_over
        self._closing = True
        self._wake.set()
        await asyncio.shield(self._flusher)
        if self._failure is not None:
            raise OutputLostError(str(self._failure)) from self._failure
        rest = list(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        return rest

    async def abort(self) -> None:
        """Stop without storing what is queued (the attempt lost its claim)."""
        self._flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._flusher

    def _has_room(self) -> bool:
        return self._failure is not None or self._pending_bytes < self._config.buffer_bytes

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                async with asyncio.timeout(self._config.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            closing = self._closing  # read before flushing: a chunk added meanwhile is kept
            if closing and self._pending_bytes <= self._hand_over:
                return  # the rest goes with the result
            await self._flush()
            if self._failure is not None or (closing and not self._pending):
                return

    async def _flush(self) -> None:
        failures = 0
        while self._pending and self._failure is None:
            batch, size = self._take_batch()
            try:
                await self._append(batch)
            except _TRANSIENT as exc:
                self._pending.extendleft(reversed(batch))
                failures += 1
                logger.info(
                    "could not store output yet (try %d): %s",
                    failures,
                    exc,
                    extra={"evaluation": self._id},
                )
                await asyncio.sleep(backoff_delay(failures, base=_RETRY_BASE, cap=_RETRY_CAP))
                continue
            except DomainError as exc:
                logger.warning("could not store output: %s", exc, extra={"evaluation": self._id})
                self._failure = exc
            failures = 0
            async with self._changed:
                self._pending_bytes -= size
                self._changed.notify_all()

    def _take_batch(self) -> tuple[list[evaluation_pb2.OutputChunk], int]:
        batch: list[evaluation_pb2.OutputChunk] = []
        size = 0
        while self._pending and (not batch or size < self._config.flush_bytes):
            chunk = self._pending.popleft()
            batch.append(chunk)
            size += len(chunk.data)
        return batch, size
