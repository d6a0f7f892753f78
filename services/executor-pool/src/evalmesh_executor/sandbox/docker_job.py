"""One docker sandbox run: a started container, the hand-over, relay output, stop, account.

The container is either booted for this run (cold) or taken from the warm pool, started
ahead of demand; either way its pid 1 (docker_init) waits for the hand-over on the attached
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
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from signal import SIGKILL
from typing import Any

import docker

from .capture import StreamCapture
from .docker_container import Booted, DockerHost, boot, name_after, remove_later
from .docker_init import ExitFrame, FrameParser, handover
from .models import (
    MAX_CHUNK_BYTES,
    OutputCallback,
    SandboxError,
    SandboxOutcome,
    SandboxRequest,
    SandboxResult,
)

__all__ = ["COLD_IDLE_S", "DockerHost", "DockerJob", "RunStats"]

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


class DockerJob:
    """Runs one request in one fresh container; `execute()` is called once.

    warm: a started container of the request's image and settings, never used before (from
    the warm pool); None boots one for this run.
    """

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
        self._host = host
        self._engine = host.engine
        self._image_id = image_id
        self._identity = runtime_identity
        self._request = request
        self._limits = request.limits
        self._cancel = cancel
        self._warm = warm
        self._stop: asyncio.Future[SandboxOutcome] = asyncio.get_running_loop().create_future()
        cap = self._limits.max_output_bytes
        self._captures = {
            b"O": StreamCapture("stdout", cap, on_output, self._overflow),
            b"E": StreamCapture("stderr", cap, on_output, self._overflow),
        }
        self._init_stderr = bytearray()
        self._exit: ExitFrame | None = None
        self._exited = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: asyncio.Task[None] | None = None
        self._booted: Booted | None = None
        self._handed_over = 0.0
        self._ended: float | None = None
        self._stats: RunStats | None = None
        self._state: Mapping[str, Any] = {}
        self._detail = ""

    # ------------------------------------------------------------------ run

    async def execute(self) -> SandboxResult:
        """Run the program; the container is always killed and removed before this returns."""
        try:
            outcome = await self._run()
        except (OSError, SandboxError, docker.errors.DockerException) as exc:
            log.warning("docker sandbox run failed: %s", exc)
            outcome = SandboxOutcome.PLATFORM_ERROR
            self._detail = f"{type(exc).__name__}: {exc}"
        finally:
            teardown = asyncio.ensure_future(self._teardown())
            shielded = asyncio.shield(teardown)
            # Registered after shield's own callback, so the removal starts only once the
            # caller has resumed with the result.
            teardown.add_done_callback(self._schedule_removal)
            await shielded
        return self._result(outcome)

    async def _run(self) -> SandboxOutcome:
        booted = self._warm or await self._boot()
        self._booted = booted
        self._reader = self._spawn(self._read(booted.reader))
        self._hand_over(booted)
        timer = asyncio.get_running_loop().call_later(
            self._limits.wall_timeout, self._finish, SandboxOutcome.TIMED_OUT
        )
        if self._cancel is not None:
            self._spawn(self._watch_cancel(self._cancel))
        try:
            return await self._stop
        finally:
            timer.cancel()

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
        self._handed_over = time.monotonic()
        self._spawn(self._drain(booted.writer))
        if self._warm is not None:
            name_after(self._host, booted, request.evaluation_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A reader or watcher that raised (e.g. the on_output callback) ends the run."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not self._stop.done():
            self._stop.set_exception(error)

    def _finish(self, outcome: SandboxOutcome) -> None:
        if not self._stop.done():
            self._ended = time.monotonic()
            self._stop.set_result(outcome)

    def _overflow(self) -> None:
        self._finish(SandboxOutcome.OUTPUT_LIMIT)

    async def _watch_cancel(self, cancel: asyncio.Event) -> None:
        await cancel.wait()
        self._finish(SandboxOutcome.CANCELLED)

    # ------------------------------------------------------------------ streams

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
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
            await self._captures[kind].feed(payload)

    # ------------------------------------------------------------------ stop

    async def _teardown(self) -> None:
        """End every job process and collect the accounting (removal comes after)."""
        booted = self._booted
        try:
            if booted is not None and self._handed_over:
                await self._stop_container(booted)
        except (OSError, SandboxError, TimeoutError) as exc:
            log.error("docker sandbox teardown of %s failed: %s", booted and booted.container, exc)
            self._detail = self._detail or f"teardown: {exc}"
        finally:
            for task in self._tasks:
                task.cancel()
            if booted is not None:
                booted.writer.close()  # the lifeline: pid 1 exits if it still runs
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await asyncio.wait_for(booted.writer.wait_closed(), self._host.kill_timeout_s)
            await self._engine.release_idle()

    def _schedule_removal(self, _: asyncio.Future[None]) -> None:
        """Remove the container in the background, once the result is known.

        Every job process is dead by then (only pid 1 may still be exiting), so the result
        need not wait for the engine. Scheduled after the teardown task, it starts after the
        caller has the result; close() waits for it.
        """
        if self._booted is not None:
            remove_later(self._host, self._booted.container)

    async def _stop_container(self, booted: Booted) -> None:
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

    # ------------------------------------------------------------------ result

    def _oom_killed(self) -> bool:
        if self._exit is not None and self._exit.oom_kills is not None:
            return self._exit.oom_kills > 0
        return bool(self._state.get("OOMKilled"))

    def _outcome(self, stopped_by: SandboxOutcome) -> SandboxOutcome:
        oom = self._oom_killed()
        if oom and stopped_by in (SandboxOutcome.EXITED, SandboxOutcome.TIMED_OUT):
            return SandboxOutcome.MEMORY_LIMIT  # the first kill by the kernel decides
        if stopped_by is not SandboxOutcome.EXITED:
            return stopped_by
        if self._exit is None or self._stats is None:
            return SandboxOutcome.PLATFORM_ERROR  # pid 1 died, or accounting failed
        return stopped_by

    def _result(self, stopped_by: SandboxOutcome) -> SandboxResult:
        outcome = self._outcome(stopped_by)
        exit_code, signal = None, None
        if outcome is SandboxOutcome.EXITED and self._exit is not None:
            exit_code, signal = self._exit.exit_code, self._exit.signal
        elif outcome is not SandboxOutcome.PLATFORM_ERROR:
            signal = self._exit.signal if self._exit and self._exit.signal else int(SIGKILL)
        stdout, stderr = self._captures[b"O"], self._captures[b"E"]
        ended = self._ended or time.monotonic()
        return SandboxResult(
            outcome=outcome,
            exit_code=exit_code,
            signal=signal,
            stdout=stdout.data,
            stderr=stderr.data,
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            wall_time_s=ended - self._handed_over if self._handed_over else 0.0,
            cpu_time_s=self._stats.cpu_time_s if self._stats else 0.0,
            peak_memory_bytes=self._stats.peak_memory_bytes if self._stats else 0,
            runtime=self._request.runtime,
            runtime_identity=self._identity,
            applied_limits=self._limits,
            detail=self._platform_detail(outcome),
            ended_at=ended if self._handed_over else 0.0,
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
