"""One docker sandbox run: create, attach, start, relay output, stop, account, remove.

The container's pid 1 is docker_init's program: it relays the job's output in frames on the
container's stdout and ends with an exit frame carrying the status and the container's cgroup
accounting, read once every job process is dead. To stop a job early (wall timeout, output
cap, cancel) the executor writes `K` on the container's stdin; pid 1 kills every job process
and reports the same way. Only if pid 1 does not answer is the container killed through the
engine (then the accounting comes from the stats API, or is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from signal import SIGKILL
from typing import Any

import docker

from .capture import StreamCapture
from .docker_engine import DockerEngine
from .docker_init import ExitFrame, FrameParser, init_argv
from .docker_spec import ContainerSpec, container_spec
from .models import (
    MAX_CHUNK_BYTES,
    OutputCallback,
    SandboxError,
    SandboxOutcome,
    SandboxRequest,
    SandboxResult,
)

__all__ = ["DockerHost", "DockerJob", "RunStats"]

log = logging.getLogger(__name__)

# Docker's attach stream without a TTY: stream id (1 stdout, 2 stderr), 3 zero bytes, length.
_MUX = struct.Struct(">BxxxI")
_DETAIL_BYTES = 2000


@dataclass(frozen=True, slots=True)
class DockerHost:
    """What every run of one DockerSandbox shares.

    removals: containers being removed in the background once their result is known (every
    job process is dead by then; only pid 1 may still be exiting).
    """

    engine: DockerEngine
    owner: str
    seccomp_profile: str | None
    kill_timeout_s: float
    backstop_s: float
    deadline_grace_s: float
    host_cpus: int
    removals: set[asyncio.Task[None]]


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
    """Runs one request in one fresh container; `execute()` is called once."""

    def __init__(
        self,
        host: DockerHost,
        image_id: str,
        runtime_identity: str,
        request: SandboxRequest,
        on_output: OutputCallback | None,
        cancel: asyncio.Event | None,
    ) -> None:
        self._host = host
        self._engine = host.engine
        self._image_id = image_id
        self._identity = runtime_identity
        self._request = request
        self._limits = request.limits
        self._cancel = cancel
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
        self._writer: asyncio.StreamWriter | None = None
        self._container: str | None = None
        self._started = 0.0
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
        spec = self._spec()
        self._container = await self._create(spec)
        sock = await self._engine.attach(self._container)
        reader, self._writer = await asyncio.open_connection(sock=sock, limit=2 * MAX_CHUNK_BYTES)
        self._reader = self._spawn(self._read(reader))
        self._spawn(self._feed_stdin(self._writer))
        await self._engine.call("start", lambda api: api.start(self._container))
        self._started = time.monotonic()
        timer = asyncio.get_running_loop().call_later(
            self._limits.wall_timeout, self._finish, SandboxOutcome.TIMED_OUT
        )
        if self._cancel is not None:
            self._spawn(self._watch_cancel(self._cancel))
        try:
            return await self._stop
        finally:
            timer.cancel()

    def _spec(self) -> ContainerSpec:
        request, host = self._request, self._host
        deadline = time.time() + self._limits.wall_timeout + host.deadline_grace_s
        return container_spec(
            name=f"evalmesh-job-{uuid.uuid4().hex}",
            image=self._image_id,
            command=init_argv(len(request.code), len(request.stdin), self._backstop()),
            limits=self._limits,
            host_cpus=host.host_cpus,
            labels={
                "org.evalmesh.owner": host.owner,
                "org.evalmesh.evaluation": request.evaluation_id[:128],
                "org.evalmesh.deadline": str(int(deadline)),
            },
            seccomp_profile=host.seccomp_profile,
        )

    def _backstop(self) -> float:
        return self._limits.wall_timeout + self._host.backstop_s

    async def _create(self, spec: ContainerSpec) -> str:
        # Retried on a transient failure; a create that did happen answers the retry with
        # 409 (name in use), which is then looked up by name.
        try:
            created = await self._engine.call("create", spec.create)
        except SandboxError as exc:
            if "409" not in str(exc) and "Conflict" not in str(exc):
                raise
            created = await self._engine.call(
                "inspect", lambda api: api.inspect_container(spec.name)
            )
        return str(created["Id"])

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

    async def _feed_stdin(self, writer: asyncio.StreamWriter) -> None:
        """Code, then the job's stdin; the connection stays open as the job's lifeline."""
        with contextlib.suppress(ConnectionError):
            writer.write(self._request.code)
            writer.write(self._request.stdin)
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
        container = self._container
        try:
            if container is not None and self._started:
                await self._stop_container(container)
        except (OSError, SandboxError, TimeoutError) as exc:
            log.error("docker sandbox teardown of %s failed: %s", container, exc)
            self._detail = self._detail or f"teardown: {exc}"
        finally:
            for task in self._tasks:
                task.cancel()
            if self._writer is not None:
                self._writer.close()  # the lifeline: pid 1 exits if it still runs
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await asyncio.wait_for(self._writer.wait_closed(), self._host.kill_timeout_s)
            await self._engine.release_idle()

    def _schedule_removal(self, _: asyncio.Future[None]) -> None:
        """Remove the container in the background, once the result is known.

        Every job process is dead by then (only pid 1 may still be exiting), so the result
        need not wait for the engine. Scheduled after the teardown task, it starts after the
        caller has the result; close() waits for it.
        """
        if self._container is None:
            return
        # A free function: the finished job (and its output) must not be kept alive.
        removal = asyncio.ensure_future(_remove(self._engine, self._container))
        self._host.removals.add(removal)
        removal.add_done_callback(self._host.removals.discard)

    async def _stop_container(self, container: str) -> None:
        if self._exit is None and self._writer is not None:
            with contextlib.suppress(ConnectionError):
                self._writer.write(b"K")  # pid 1 kills the job and reports
                await asyncio.wait_for(self._writer.drain(), self._host.kill_timeout_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), self._host.kill_timeout_s)
        if self._exit is None:
            await self._kill_through_engine(container)
        else:
            self._stats = RunStats.from_exit(self._exit) or await self._read_stats(container)

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
            wall_time_s=ended - self._started if self._started else 0.0,
            cpu_time_s=self._stats.cpu_time_s if self._stats else 0.0,
            peak_memory_bytes=self._stats.peak_memory_bytes if self._stats else 0,
            runtime=self._request.runtime,
            runtime_identity=self._identity,
            applied_limits=self._limits,
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


async def _remove(engine: DockerEngine, container: str) -> None:
    """Force-remove a container (killing pid 1 if it still holds it)."""
    try:
        await engine.call(
            "remove",
            lambda api: api.remove_container(container, force=True, v=True),
            quiet_404=True,
        )
    except docker.errors.NotFound:
        pass
    except SandboxError as exc:
        # Left for the reaper (labelled with its owner and deadline).
        log.error("could not remove container %s: %s", container, exc)
    await engine.release_idle()
