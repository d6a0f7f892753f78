"""One docker run: a started container, the hand-over, relayed output, stop, accounting.

The container is either booted for this run (cold) or taken from the warm pool, started
ahead of demand; either way its pid 1 (``init``) waits for the hand-over on the attached
stdin, and the run's clock starts when the job is handed over. pid 1 relays the job's
output in frames on the container's stdout and ends with an exit frame carrying the status
and the container's cgroup accounting, read once every job process is dead. To stop a job
early (wall timeout, output cap, cancel) the executor writes `K` on the container's stdin;
pid 1 kills every job process and reports the same way. Only if pid 1 does not answer is
the container killed through the engine (then the accounting comes from the stats API, or
is missing). The container is removed in the background once the result is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from signal import SIGKILL
from typing import Any, ClassVar

import docker

from evalmesh_executor.sandbox.core.models import (
    MAX_CHUNK_BYTES,
    OutputCallback,
    SandboxError,
    SandboxOutcome,
    SandboxRequest,
)
from evalmesh_executor.sandbox.core.run import SandboxRun, Verdict, classify

from .container import Booted, DockerHost, boot, name_after, remove_later
from .protocol import ExitFrame, FrameParser, handover

__all__ = ["COLD_IDLE_S", "DockerRun", "RunStats"]

log = logging.getLogger(__name__)

# Docker's attach stream without a TTY: stream id (1 stdout, 2 stderr), 3 zero bytes, length.
_MUX = struct.Struct(">BxxxI")
_DETAIL_BYTES = 2000
#: How long a container booted for one run waits for its hand-over (it comes at once).
COLD_IDLE_S = 60.0


@dataclass(frozen=True, slots=True)
class RunStats:
    """The container's cgroup accounting, read while only pid 1 was left."""

    cpu_time_s: float
    peak_memory_bytes: int

    @classmethod
    def from_exit(cls, frame: ExitFrame) -> RunStats | None:
        """From pid 1's report, if it could read both counters."""
        if frame.cpu_ns is None or frame.peak_bytes is None:
            return None
        return cls(cpu_time_s=frame.cpu_ns / 1e9, peak_memory_bytes=frame.peak_bytes)

    @classmethod
    def parse(cls, stats: Mapping[str, Any]) -> RunStats:
        """From a stats API answer (cgroup v1: max_usage; v2 has no peak: usage)."""
        cpu = stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0)
        memory = stats.get("memory_stats", {})
        peak = memory.get("max_usage") or memory.get("usage") or 0
        return cls(cpu_time_s=int(cpu) / 1e9, peak_memory_bytes=int(peak))


class DockerRun(SandboxRun):
    """Runs one request in one fresh container; `execute()` is called once.

    warm: a started container of the request's image and settings, never used before (from
    the warm pool); None boots one for this run.
    """

    backend: ClassVar[str] = "docker"
    failures: ClassVar[tuple[type[Exception], ...]] = (
        OSError,
        SandboxError,
        docker.errors.DockerException,
    )

    def __init__(
        self,
        host: DockerHost,
        image_id: str,
        runtime_identity: str,
        request: SandboxRequest,
        on_output: OutputCallback | None,
        cancel: asyncio.Event | None,
        warm: Booted | None = None,
    ) -> None:
        super().__init__(
            request, on_output, cancel, runtime=request.runtime, identity=runtime_identity
        )
        self._host = host
        self._engine = host.engine
        self._image_id = image_id
        self._warm = warm
        self._streams = {b"O": self._stdout, b"E": self._stderr}
        self._init_stderr = bytearray()
        self._exit: ExitFrame | None = None
        self._exited = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._booted: Booted | None = None
        self._stats: RunStats | None = None
        self._state: Mapping[str, Any] = {}

    async def _start(self) -> None:
        booted = self._warm or await self._boot()
        self._booted = booted
        self._reader = self._spawn(self._read(booted.reader))
        self._hand_over(booted)

    async def _boot(self) -> Booted:
        """A container of this run's own (no warm one matched)."""
        host = self._host
        deadline = time.time() + self._limits.wall_timeout + host.deadline_grace_s
        return await boot(
            host,
            self._image_id,
            self._limits,
            deadline=deadline,
            idle_s=COLD_IDLE_S,
            evaluation_id=self._request.evaluation_id,
        )

    def _hand_over(self, booted: Booted) -> None:
        """Give pid 1 the job (written at once, in order before any `K`); the clock starts."""
        request = self._request
        backstop = self._limits.wall_timeout + self._host.backstop_s
        booted.writer.write(handover(request.code, request.stdin, backstop))
        self._started = time.monotonic()
        self._spawn(self._flush(booted.writer))
        if self._warm is not None:
            name_after(self._host, booted, request.evaluation_id)

    # ------------------------------------------------------------------ streams

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        """Flush the hand-over; the connection stays open as the job's lifeline."""
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Demultiplex the attach stream until the container's streams close."""
        frames = FrameParser()
        while True:
            try:
                header = await reader.readexactly(_MUX.size)
            except asyncio.IncompleteReadError:
                break
            stream, size = _MUX.unpack(header)
            while size:
                block = await reader.readexactly(min(size, MAX_CHUNK_BYTES))
                size -= len(block)
                if stream == 1:
                    for kind, payload in frames.feed(block):
                        await self._on_frame(kind, payload)
                elif len(self._init_stderr) < _DETAIL_BYTES:
                    self._init_stderr += block
        # The streams end when the container does: pid 1 is gone.
        self._finish(SandboxOutcome.EXITED)

    async def _on_frame(self, kind: bytes, payload: bytes) -> None:
        if kind == b"X":
            self._exit = ExitFrame.parse(payload)
            self._exited.set()
            self._finish(SandboxOutcome.EXITED)
        else:
            await self._streams[kind].feed(payload)

    # ------------------------------------------------------------------ teardown

    async def _stop_job(self) -> None:
        """End every job process and collect the accounting (removal comes after)."""
        booted = self._booted
        if booted is None or not self._started:
            return
        if self._exit is None:
            with contextlib.suppress(ConnectionError):
                booted.writer.write(b"K")  # pid 1 kills the job and reports
                await asyncio.wait_for(booted.writer.drain(), self._host.kill_timeout_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), self._host.kill_timeout_s)
        if self._exit is None:
            await self._kill_through_engine(booted.container)
        else:
            self._stats = RunStats.from_exit(self._exit) or await self._read_stats(booted.container)

    async def _kill_through_engine(self, container: str) -> None:
        """pid 1 did not report (it died, or does not answer): kill and inspect."""
        with contextlib.suppress(SandboxError):
            await self._engine.call("kill", lambda api: api.kill(container, "SIGKILL"))
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=self._host.kill_timeout_s)
        self._state = await self._inspect(container)
        if self._state.get("Running"):
            await self._engine.call(
                "wait", lambda api: api.wait(container, timeout=self._host.kill_timeout_s)
            )
            self._state = await self._inspect(container)

    async def _read_stats(self, container: str) -> RunStats | None:
        """The stats API: exact, but it answers at the daemon's next 1 s collection."""
        try:
            stats = await self._engine.call(
                "stats", lambda api: api.stats(container, stream=False, one_shot=True)
            )
        except (SandboxError, docker.errors.NotFound) as exc:
            log.warning("docker stats of %s failed: %s", container, exc)
            return None
        return RunStats.parse(stats) if stats.get("cpu_stats") else None

    async def _inspect(self, container: str) -> Mapping[str, Any]:
        attrs = await self._engine.call("inspect", lambda api: api.inspect_container(container))
        state: Mapping[str, Any] = attrs.get("State", {})
        return state

    async def _release(self) -> None:
        booted = self._booted
        if booted is not None:
            booted.writer.close()  # the lifeline: pid 1 exits if it still runs
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(booted.writer.wait_closed(), self._host.kill_timeout_s)
        await self._engine.release_idle()

    def _after_result(self) -> None:
        """Remove the container in the background: every job process is dead by then (only
        pid 1 may still be exiting), so the result need not wait for the engine."""
        if self._booted is not None:
            remove_later(self._host, self._booted.container)

    def _describe(self) -> str:
        return self._booted.container if self._booted is not None else "an unstarted container"

    # ------------------------------------------------------------------ verdict

    def _verdict(self, stopped_by: SandboxOutcome) -> Verdict:
        exit_frame, stats = self._exit, self._stats
        if exit_frame is not None and exit_frame.oom_kills is not None:
            oom = exit_frame.oom_kills > 0
        else:
            oom = bool(self._state.get("OOMKilled"))
        outcome = classify(
            stopped_by,
            finished=exit_frame is not None and stats is not None,  # else pid 1 died
            oom_killed=oom,
            truncated=self._stdout.truncated or self._stderr.truncated,
        )
        exit_code, signal = None, None
        if outcome is SandboxOutcome.EXITED and exit_frame is not None:
            exit_code, signal = exit_frame.exit_code, exit_frame.signal
        elif outcome is not SandboxOutcome.PLATFORM_ERROR:
            signal = exit_frame.signal if exit_frame and exit_frame.signal else int(SIGKILL)
        return Verdict(
            outcome,
            exit_code,
            signal,
            cpu_time_s=stats.cpu_time_s if stats else 0.0,
            peak_memory_bytes=stats.peak_memory_bytes if stats else 0,
            detail=self._platform_detail(outcome),
        )

    def _platform_detail(self, outcome: SandboxOutcome) -> str:
        if outcome is not SandboxOutcome.PLATFORM_ERROR:
            return self._detail
        parts = [self._detail]
        if self._exit is None:
            parts.append(
                f"the sandbox init ended without a status (exit {self._state.get('ExitCode')})"
            )
        if self._state.get("Error"):
            parts.append(str(self._state["Error"]))
        parts.append(self._init_stderr.decode(errors="replace").strip())
        return "; ".join(part for part in parts if part)
