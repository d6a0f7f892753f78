"""Fast unit tests of the output sink's batching and backpressure, of the self-check gate, and
of what the metrics say about it and about finished runs.

The sink's collaborators are plain functions here (the end-to-end tests run it against the real
storage service and NATS); the self-check is driven by a backend that reports canned canaries,
because no real sandbox can be made to let a canary out on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from evalmesh.executor.v1 import pool_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import FailedPrecondition, Unavailable
from evalmesh_executor.config import OutputConfig
from evalmesh_executor.metrics import ExecutorMetrics
from evalmesh_executor.output import OutputLostError, OutputSink
from evalmesh_executor.runs import RunRegistry, Stop
from evalmesh_executor.sandbox import (
    OutputCallback,
    OutputChunk,
    RuntimeDetails,
    SandboxError,
    SandboxRequest,
    SandboxResult,
)
from evalmesh_executor.selfcheck import SelfCheck
from evalmesh_executor.status import InstanceInfo, StatusReporter

KiB = 1024


class Recorder:
    """Collects live events and stored batches; storing can be held back or made to fail."""

    def __init__(self) -> None:
        self.events: list[pool_pb2.RunEvent] = []
        self.batches: list[list[evaluation_pb2.OutputChunk]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.fail = False
        self.unavailable = 0  # how many more appends storage answers UNAVAILABLE
        self.stored_a_batch = asyncio.Event()

    async def publish(self, subject: str, data: bytes) -> None:
        assert subject == "evalmesh.events.ev_1"
        self.events.append(pool_pb2.RunEvent.FromString(data))

    async def append(self, chunks: list[evaluation_pb2.OutputChunk]) -> None:
        await self.open.wait()
        if self.fail:
            raise FailedPrecondition("attempt 1 no longer holds it", reason="STALE_ATTEMPT")
        if self.unavailable:
            self.unavailable -= 1
            raise Unavailable("the database is unavailable", reason="DATABASE_UNAVAILABLE")
        self.batches.append(chunks)
        self.stored_a_batch.set()

    def stored(self) -> bytes:
        return b"".join(c.data for batch in self.batches for c in batch)


def _sink(recorder: Recorder, **config: int | float) -> OutputSink:
    settings = OutputConfig(**config)  # type: ignore[arg-type]
    return OutputSink("ev_1", 1, recorder.publish, recorder.append, settings)


def _chunk(seq: int, size: int) -> OutputChunk:
    return OutputChunk("stdout", seq, seq * size, bytes([seq % 256]) * size)


async def test_chunks_go_live_at_once_and_are_stored_in_size_bounded_batches() -> None:
    recorder = Recorder()
    sink = _sink(recorder, flush_interval=10.0, flush_bytes=64 * KiB, buffer_bytes=256 * KiB)
    for seq in range(40):
        await sink.add(_chunk(seq, 8 * KiB))
    assert [e.output.sequence for e in recorder.events] == list(range(40))
    assert {e.attempt for e in recorder.events} == {1}
    await sink.close()
    assert recorder.stored() == b"".join(_chunk(s, 8 * KiB).data for s in range(40))
    assert all(sum(len(c.data) for c in b) <= 64 * KiB for b in recorder.batches)
    assert len(recorder.batches) >= 5


async def test_a_quiet_stream_is_flushed_after_the_interval() -> None:
    recorder = Recorder()
    sink = _sink(recorder, flush_interval=0.05)
    await sink.add(_chunk(0, 10))
    # Awaited, not slept for: a stalled event loop (a loaded host) can wake the test first.
    await asyncio.wait_for(recorder.stored_a_batch.wait(), 2)
    assert recorder.stored() == _chunk(0, 10).data
    await sink.close()


async def test_a_full_buffer_makes_the_reader_wait_instead_of_growing() -> None:
    recorder = Recorder()
    recorder.open.clear()  # storage is slow
    sink = _sink(recorder, flush_interval=0.01, flush_bytes=16 * KiB, buffer_bytes=32 * KiB)
    for seq in range(4):
        await sink.add(_chunk(seq, 8 * KiB))
    blocked = asyncio.create_task(sink.add(_chunk(4, 8 * KiB)))
    await asyncio.sleep(0.1)
    assert not blocked.done()
    recorder.open.set()
    await asyncio.wait_for(blocked, 1)
    await sink.close()
    assert len(recorder.stored()) == 5 * 8 * KiB


async def test_a_refused_append_loses_the_output_and_never_blocks_the_reader() -> None:
    recorder = Recorder()
    recorder.fail = True
    sink = _sink(recorder, flush_interval=0.01, flush_bytes=8 * KiB, buffer_bytes=16 * KiB)
    for seq in range(10):
        await asyncio.wait_for(sink.add(_chunk(seq, 8 * KiB)), 1)
    with pytest.raises(OutputLostError):
        await sink.close()


async def test_output_is_kept_and_stored_in_order_while_storage_is_away_for_a_while() -> None:
    recorder = Recorder()
    recorder.unavailable = 4  # beyond the storage client's own retries: a restart, a full disk
    sink = _sink(recorder, flush_interval=0.01, flush_bytes=8 * KiB, buffer_bytes=32 * KiB)
    for seq in range(10):
        await asyncio.wait_for(sink.add(_chunk(seq, 8 * KiB)), 10)
    await asyncio.wait_for(sink.close(), 10)
    assert recorder.unavailable == 0
    assert recorder.stored() == b"".join(_chunk(s, 8 * KiB).data for s in range(10))


class CannedBackend:
    """A backend whose canaries report what the test says (nothing else is used)."""

    def __init__(self, escaped: list[str] | None) -> None:
        self.escaped = escaped
        self.ports: list[Sequence[int]] = []

    async def prepare(self) -> None:
        """Nothing to prepare."""

    @property
    def runtimes(self) -> Mapping[str, str]:
        return {}

    @property
    def runtime_details(self) -> Mapping[str, RuntimeDetails]:
        return {}

    async def run(
        self,
        request: SandboxRequest,
        on_output: OutputCallback | None = None,
        *,
        cancel: asyncio.Event | None = None,
    ) -> SandboxResult:
        raise NotImplementedError

    async def self_check(self, tcp_ports: Sequence[int] = ()) -> list[str]:
        self.ports.append(tcp_ports)
        if self.escaped is None:
            raise SandboxError("canaries did not finish")
        return self.escaped

    async def close(self) -> None:
        """Nothing to close."""


async def test_readiness_waits_for_a_passing_self_check_aimed_at_the_platform_ports() -> None:
    backend = CannedBackend([])
    check = SelfCheck(backend, lambda: [4222, 50051, 4222], interval=60)
    assert not await check.probe()
    assert await check.check()
    assert await check.probe()
    assert check.reason == ""
    assert backend.ports == [[4222, 50051]]


async def test_an_escaped_canary_makes_the_instance_unhealthy_and_says_which() -> None:
    backend = CannedBackend([])
    check = SelfCheck(backend, lambda: [4222], interval=60)
    await check.check()
    backend.escaped = ["tcp:127.0.0.1:4222", "read:/etc/shadow"]
    assert await check.check()
    assert not await check.probe()
    assert "tcp:127.0.0.1:4222" in check.reason
    assert "read:/etc/shadow" in check.reason


async def test_a_self_check_that_cannot_finish_counts_as_failed() -> None:
    check = SelfCheck(CannedBackend(None), lambda: [], interval=60)
    assert not await check.check()
    assert not check.passed
    assert "did not complete" in check.reason


def _metrics(check: SelfCheck, runs: RunRegistry) -> CollectorRegistry:
    info = InstanceInfo("exec-1", "host-1", "bwrap", 3, datetime.now(UTC), ())
    status = StatusReporter(
        info, runs, unhealthy_reason=lambda: check.reason, draining=lambda: False, interval=1
    )
    registry = CollectorRegistry()
    registry.register(ExecutorMetrics(status, runs, check))
    return registry


async def test_an_escaped_canary_shows_in_the_metrics_by_name_with_the_reason() -> None:
    backend = CannedBackend([])
    check = SelfCheck(backend, lambda: [4222], interval=60)
    registry = _metrics(check, RunRegistry())
    await check.check()
    assert registry.get_sample_value("evalmesh_executor_healthy") == 1
    assert registry.get_sample_value("evalmesh_executor_self_check_escapes") == 0

    backend.escaped = ["tcp:127.0.0.1:4222", "read:/etc/shadow"]
    await check.check()

    assert registry.get_sample_value("evalmesh_executor_healthy") == 0
    assert registry.get_sample_value("evalmesh_executor_self_check_escapes") == 2
    for canary in backend.escaped:
        escaped = {"canary": canary}
        assert registry.get_sample_value("evalmesh_executor_self_check_escaped", escaped) == 1
    labels = {"reason": check.reason}
    assert registry.get_sample_value("evalmesh_executor_unhealthy_info", labels) == 1
    assert registry.get_sample_value("evalmesh_executor_slots") == 3


def test_finished_runs_are_counted_by_how_they_ended() -> None:
    runs = RunRegistry()
    registry = _metrics(SelfCheck(CannedBackend([]), list, interval=60), runs)
    ended = {
        "completed": (1, None, True),
        "unclaimed": (0, None, False),
        "given_back": (1, Stop.GIVE_BACK, False),
        "lost": (2, Stop.LOST, False),
        "fault": (1, None, False),
    }
    for index, (attempt, stop, completed) in enumerate(ended.values()):
        handle = runs.open(f"ev_{index}", "tenant")
        assert handle is not None
        handle.attempt = attempt
        if stop is not None:
            handle.stop(stop)
        assert registry.get_sample_value("evalmesh_executor_running") == 1
        runs.close(handle, completed=completed)

    for outcome in ended:
        labels = {"outcome": outcome}
        assert registry.get_sample_value("evalmesh_executor_runs_finished_total", labels) == 1
    assert registry.get_sample_value("evalmesh_executor_running") == 0
    assert runs.completed == 1
