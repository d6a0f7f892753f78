"""One sandbox run, from cgroup creation to the teardown that leaves no process behind.

Placement without a race: bwrap is started with --block-fd. Its sandbox child (pid 1 of
the new pid namespace, the parent of everything the job will ever run) reports its host
pid on --json-status-fd and then blocks, before it forks or execs anything of the user.
The executor moves that pid into the job cgroups, and only then writes the byte that lets
it continue. Every user process is therefore a descendant of a process that was already
placed. (rlimits are set by prlimit inside the sandbox before the interpreter starts.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Coroutine
from signal import SIGKILL
from typing import Any

from .capture import StreamCapture
from .cgroups import CgroupLimits, CgroupStats, JobCgroup
from .launch import HostSetup, Launch, launch
from .models import (
    OutputCallback,
    SandboxError,
    SandboxOutcome,
    SandboxRequest,
    SandboxResult,
)
from .runtime import Runtime
from .verdict import classify, decode_status, exit_status

__all__ = ["JobRun"]

log = logging.getLogger(__name__)

_DETAIL_BYTES = 2000


class JobRun:
    """Runs one request; `execute()` is called once."""

    def __init__(
        self,
        host: HostSetup,
        runtime: Runtime,
        request: SandboxRequest,
        on_output: OutputCallback | None,
        cancel: asyncio.Event | None,
    ) -> None:
        self._host = host
        self._runtime = runtime
        self._request = request
        self._limits = request.limits
        self._cancel = cancel
        self._stop: asyncio.Future[SandboxOutcome] = asyncio.get_running_loop().create_future()
        cap = self._limits.max_output_bytes
        self._captures = (
            StreamCapture("stdout", cap, on_output, self._overflow),
            StreamCapture("stderr", cap, on_output, self._overflow),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._status_lines: list[bytes] = []
        self._launch: Launch | None = None
        self._started = 0.0
        self._ended: float | None = None
        self._detail = ""

    async def execute(self) -> SandboxResult:
        """Run the program and return its result; never leaves a job process alive."""
        limits = self._limits
        try:
            cgroup = self._host.cgroups.create(
                CgroupLimits(limits.memory_bytes, limits.max_processes, limits.cpu_quota)
            )
        except OSError as exc:
            self._detail = f"cgroup setup: {exc}"
            return self._result(SandboxOutcome.PLATFORM_ERROR, None)
        try:
            outcome = await self._run(cgroup)
        except (OSError, SandboxError) as exc:
            log.warning("sandbox run failed: %s", exc)
            outcome = SandboxOutcome.PLATFORM_ERROR
            self._detail = f"{type(exc).__name__}: {exc}"
        finally:
            stats = await asyncio.shield(self._teardown(cgroup))
        return self._result(outcome, stats)

    async def _run(self, cgroup: JobCgroup) -> SandboxOutcome:
        self._started = time.monotonic()
        started = self._launch = await launch(self._host, self._runtime, self._request)
        self._start_readers(started.proc)
        await self._place_and_release(started, cgroup)
        timer = asyncio.get_running_loop().call_later(
            self._remaining(), self._finish, SandboxOutcome.TIMED_OUT
        )
        self._start_watchers(started.proc, cgroup)
        try:
            return await self._stop
        finally:
            timer.cancel()

    # ------------------------------------------------------------------ start

    async def _place_and_release(self, started: Launch, cgroup: JobCgroup) -> None:
        child = None
        try:
            child = await asyncio.wait_for(
                self._child_pid(started.status), self._host.setup_timeout_s
            )
            cgroup.add_process(child)  # every job process inherits the cgroups
            os.write(started.block, b"\x01")
        except BaseException:
            # Closing the block pipe would let bwrap go on unplaced: kill it first.
            self._abort_setup(started.proc, child)
            raise
        finally:
            os.close(started.block)

    async def _child_pid(self, status: asyncio.StreamReader) -> int:
        line = await status.readline()
        self._status_lines.append(line)
        try:
            return int(json.loads(line)["child-pid"])
        except (ValueError, KeyError) as exc:
            raise SandboxError("bwrap exited during setup") from exc

    @staticmethod
    def _abort_setup(proc: asyncio.subprocess.Process, child: int | None) -> None:
        if proc.returncode is not None:
            return
        if child is not None:  # bwrap is alive and has not reaped it: the pid is still its
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()

    def _start_readers(self, proc: asyncio.subprocess.Process) -> None:
        """Read both pipes from the start, so a bwrap setup error lands in stderr."""
        assert proc.stdout is not None
        assert proc.stderr is not None
        stdout, stderr = self._captures
        self._spawn_task(stdout.pump(proc.stdout))
        self._spawn_task(stderr.pump(proc.stderr))

    def _start_watchers(self, proc: asyncio.subprocess.Process, cgroup: JobCgroup) -> None:
        self._spawn_task(self._wait_exit(proc))
        self._spawn_task(self._watch_memory(cgroup))
        if self._cancel is not None:
            self._spawn_task(self._watch_cancel(self._cancel))

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A reader or watcher that raised (e.g. the on_output callback) ends the run."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not self._stop.done():
            self._stop.set_exception(error)

    # ------------------------------------------------------------------ watchers

    def _finish(self, outcome: SandboxOutcome) -> None:
        if not self._stop.done():
            self._ended = time.monotonic()
            self._stop.set_result(outcome)

    def _overflow(self) -> None:
        self._finish(SandboxOutcome.OUTPUT_LIMIT)

    def _remaining(self) -> float:
        return max(0.0, self._started + self._limits.wall_timeout - time.monotonic())

    async def _wait_exit(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self._finish(SandboxOutcome.EXITED)

    async def _watch_memory(self, cgroup: JobCgroup) -> None:
        while not self._stop.done():
            cgroup.sample()
            if cgroup.oom_kills() > 0:
                self._finish(SandboxOutcome.MEMORY_LIMIT)
                return
            await asyncio.sleep(self._host.poll_interval_s)

    async def _watch_cancel(self, cancel: asyncio.Event) -> None:
        await cancel.wait()
        self._finish(SandboxOutcome.CANCELLED)

    # ------------------------------------------------------------------ stop

    async def _teardown(self, cgroup: JobCgroup) -> CgroupStats | None:
        """Kill what is left, drain the pipes, collect accounting, remove the cgroup."""
        stats = None
        try:
            await self._kill(cgroup)
            await self._drain()
            await cgroup.kill_all(self._host.kill_timeout_s)
            stats = cgroup.stats()
            cgroup.remove()
        except (OSError, SandboxError, TimeoutError) as exc:
            log.error("sandbox teardown of %s failed: %s", cgroup.name, exc)
            self._detail = self._detail or f"teardown: {exc}"
            stats = None
        finally:
            for task in self._tasks:
                task.cancel()
            if self._launch is not None:
                self._launch.status_transport.close()
        return stats

    async def _kill(self, cgroup: JobCgroup) -> None:
        """Kill the job through its cgroup; bwrap's monitor then exits by itself.

        bwrap is signalled directly only if it outlives the job (never in practice): an
        early kill() would race asyncio's child watcher for the exit status.
        """
        await cgroup.kill_all(self._host.kill_timeout_s)
        if self._launch is None:
            return
        proc = self._launch.proc
        try:
            await asyncio.wait_for(proc.wait(), self._host.kill_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), self._host.kill_timeout_s)

    async def _drain(self) -> None:
        """Let the readers reach EOF (every writer is dead by now), then read the status."""
        readers = self._tasks[:2]
        if readers:
            await asyncio.wait(readers, timeout=self._host.kill_timeout_s)
        if self._launch is not None:
            with contextlib.suppress(TimeoutError):
                rest = await asyncio.wait_for(self._launch.status.read(), self._host.kill_timeout_s)
                self._status_lines += rest.splitlines()

    # ------------------------------------------------------------------ result

    def _result(self, stopped_by: SandboxOutcome, stats: CgroupStats | None) -> SandboxResult:
        stdout, stderr = self._captures
        raw = exit_status(self._status_lines)
        truncated = stdout.truncated or stderr.truncated
        outcome = classify(stopped_by, raw, stats, truncated)
        exit_code, signal = decode_status(raw, outcome)
        detail = self._detail
        if outcome is SandboxOutcome.PLATFORM_ERROR and raw is None:
            # The program never ran, so stderr holds bwrap's own complaint.
            said = stderr.data[-_DETAIL_BYTES:].decode(errors="replace").strip()
            detail = "; ".join(part for part in (detail, said) if part)
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
            cpu_time_s=stats.cpu_time_s if stats else 0.0,
            peak_memory_bytes=stats.peak_memory_bytes if stats else 0,
            runtime=self._runtime.name,
            runtime_identity=self._host.identities[self._runtime.name],
            applied_limits=self._limits,
            detail=detail,
        )
