"""Watch events and the cursor that makes a reconnecting watch exact: no gap, no duplicate.

The server sends a snapshot first, then output chunks whose per-stream byte offsets follow each
other, state snapshots, and the terminal snapshot last. The cursor remembers the next byte of
each stream, so a reopened stream asks for exactly what is missing, and anything the server
repeats is trimmed away. When a platform fault makes the evaluation run again, a snapshot with a
higher attempt comes first and the new attempt's output starts over at offset 0.
"""

from __future__ import annotations

import dataclasses

from evalmesh.client._models import Evaluation, State, Stream
from evalmesh.v1 import evaluation_pb2, evaluation_service_pb2

__all__ = ["Output", "Snapshot", "Transcript", "WatchCursor", "WatchEvent", "WatchGapError"]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The evaluation's state (BASIC view: no output bytes), first and at every change.

    A snapshot whose ``evaluation.attempt`` is higher than the last one's means the platform
    runs the program again after a fault: the output that follows starts over from offset 0.
    """

    evaluation: Evaluation

    @property
    def state(self) -> State:
        """The evaluation's state at this point."""
        return self.evaluation.state


@dataclasses.dataclass(frozen=True)
class Output:
    """The next ``data`` of one stream, starting at byte ``offset`` of that stream."""

    stream: Stream
    offset: int
    data: bytes


WatchEvent = Snapshot | Output


class WatchGapError(Exception):
    """The server skipped bytes of a stream; the watch reopens from the last good offset."""


class WatchCursor:
    """Where a watch stands: the next byte per stream, and whether the end has been seen."""

    def __init__(self, evaluation_id: str, stdout_offset: int = 0, stderr_offset: int = 0) -> None:
        self.evaluation_id = evaluation_id
        self.offsets = {Stream.STDOUT: stdout_offset, Stream.STDERR: stderr_offset}
        self._done = False
        self._last: Snapshot | None = None
        self._reopened = False

    def request(self) -> evaluation_service_pb2.WatchEvaluationRequest:
        """The request that resumes exactly where the watch stands."""
        return evaluation_service_pb2.WatchEvaluationRequest(
            id=self.evaluation_id,
            stdout_offset=self.offsets[Stream.STDOUT],
            stderr_offset=self.offsets[Stream.STDERR],
        )

    def finished(self) -> bool:
        """True once the terminal snapshot has been accepted."""
        return self._done

    def reopening(self) -> None:
        """Note that the next stream replays: its first snapshot is dropped if nothing changed."""
        self._reopened = True

    def accept(
        self,
        response: (
            evaluation_service_pb2.WatchEvaluationResponse
            | evaluation_service_pb2.RunEvaluationResponse
        ),
    ) -> WatchEvent | None:
        """The event to hand on for ``response``, or None when it repeats what was handed on."""
        if response.HasField("evaluation"):
            return self._snapshot(Evaluation.from_proto(response.evaluation))
        if response.HasField("output"):
            chunk = response.output
            return self._output(Stream.from_proto(chunk.stream), chunk.offset, chunk.data)
        return None

    def _snapshot(self, evaluation: Evaluation) -> Snapshot | None:
        reopened, self._reopened = self._reopened, False
        self._done = evaluation.terminal
        last = self._last
        if reopened and last is not None and _same(last.evaluation, evaluation):
            return None
        if last is not None and evaluation.attempt > last.evaluation.attempt > 0:
            # A new attempt rewrites both streams from the start. If a reopened stream resumed
            # at the old attempt's offsets, its next chunk shows a gap and the watch reopens at 0.
            self.offsets = {Stream.STDOUT: 0, Stream.STDERR: 0}
        self._last = Snapshot(evaluation)
        return self._last

    def _output(self, stream: Stream, offset: int, data: bytes) -> Output | None:
        expected = self.offsets[stream]
        end = offset + len(data)
        if offset > expected:
            raise WatchGapError(f"{stream} jumped from byte {expected} to {offset}")
        if end <= expected:
            return None
        self.offsets[stream] = end
        return Output(stream, expected, data[expected - offset :])


class Transcript:
    """Everything a watch from the first byte showed: each stream's bytes and the last snapshot.

    For a caller that knows the code and stdin (``run`` submitted them), that is the whole
    evaluation once the terminal snapshot says the stored sizes match what arrived, so no read
    of the full view is needed; otherwise :meth:`full` says so and the caller reads it.
    """

    def __init__(self) -> None:
        self._streams = {Stream.STDOUT: bytearray(), Stream.STDERR: bytearray()}
        self._last: Evaluation | None = None

    def add(self, event: WatchEvent) -> None:
        """Take the next event of the watch."""
        if isinstance(event, Output):
            kept = self._streams[event.stream]
            if event.offset == len(kept):
                kept += event.data
            return
        last, self._last = self._last, event.evaluation
        if last is not None and event.evaluation.attempt > last.attempt > 0:
            for kept in self._streams.values():  # a new attempt's output starts over
                kept.clear()

    @property
    def evaluation_id(self) -> str:
        """The id of the evaluation watched ("" before its first snapshot)."""
        return self._last.id if self._last is not None else ""

    def full(self, code: str, stdin: bytes) -> Evaluation | None:
        """The evaluation in the full view, or None when what arrived is not all of it."""
        last = self._last
        stdout, stderr = self._streams[Stream.STDOUT], self._streams[Stream.STDERR]
        if last is None or not last.terminal:
            return None
        if (len(stdout), len(stderr)) != (last.stdout_bytes, last.stderr_bytes):
            return None
        message = evaluation_pb2.Evaluation()
        message.CopyFrom(last.proto)
        message.spec.code = code
        message.spec.stdin = stdin
        message.result.stdout = bytes(stdout)
        message.result.stderr = bytes(stderr)
        return Evaluation.from_proto(message)


def _same(before: Evaluation, after: Evaluation) -> bool:
    return (before.state, before.attempt, before.cancel_requested) == (
        after.state,
        after.attempt,
        after.cancel_requested,
    )
