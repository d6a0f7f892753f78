"""Reading one output pipe: bytes, bounded chunks, a hard cap, never more memory than that."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .models import MAX_CHUNK_BYTES, OutputCallback, OutputChunk, OutputStream

__all__ = ["StreamCapture"]


class StreamCapture:
    """Keeps the first `cap` bytes of a stream and forwards them as OutputChunks.

    The first byte past the cap marks the stream truncated and calls `on_overflow`, which
    ends the job; whatever is still in the pipe is read and dropped. Reads are at most
    MAX_CHUNK_BYTES and the callback is awaited before the next read, so a slow consumer
    pushes back on the pipe (the program blocks in write) instead of growing a buffer here.
    """

    def __init__(
        self,
        stream: OutputStream,
        cap: int,
        on_output: OutputCallback | None,
        on_overflow: Callable[[], None],
    ) -> None:
        self.stream: OutputStream = stream
        self.truncated = False
        self._cap = cap
        self._data = bytearray()
        self._seq = 0
        self._on_output = on_output
        self._on_overflow = on_overflow

    @property
    def data(self) -> bytes:
        """Everything kept so far (at most the cap)."""
        return bytes(self._data)

    async def pump(self, reader: asyncio.StreamReader) -> None:
        """Read until EOF; past the cap, report the overflow once and discard the rest."""
        while block := await reader.read(MAX_CHUNK_BYTES):
            await self.feed(block)

    async def feed(self, block: bytes) -> None:
        """Take the next bytes of the stream (at most MAX_CHUNK_BYTES), keeping the cap.

        Once truncated, everything is dropped: the job is being killed, and the caller reads
        on only so that its source reaches EOF.
        """
        if self.truncated:
            return
        room = self._cap - len(self._data)
        if len(block) > room:
            self.truncated = True
            block = block[:room]
        if block:
            await self._emit(block)
        if self.truncated:
            self._on_overflow()

    async def _emit(self, block: bytes) -> None:
        offset = len(self._data)
        self._data += block
        if self._on_output is not None:
            await self._on_output(OutputChunk(self.stream, self._seq, offset, block))
        self._seq += 1
