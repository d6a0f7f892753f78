"""One sandbox run, from the hand-over to the teardown that leaves no process behind.

The run starts from a prepared sandbox (``prepared``): bwrap already placed in its own job
cgroups, the interpreter inside waiting on its stdin. The hand-over writes the job's limits to
the cgroups, then the code and stdin down the pipe; the wall clock and the CPU time count from
there. Output is read from the pipes from the hand-over on, and the first of the program's exit,
the wall timer, an OOM kill, the output cap or a cancel ends the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from .capture import StreamCapture
from .cgroups import CgroupLimits, CgroupStats, JobCgroup
from .fds import close_all, write_all
from .launch import HostSetup
from .models import (
    OutputCallback,
    SandboxError,
    SandboxOutcome,
    SandboxRequest,
    SandboxResult,
)
from .prepared import Prepared
from .reaper import wait_gone
from .verdict import classify, decode_status, exit_status

__all__ = ["JobRun"]

log = logging.getLogger(__name__)

_DETAIL_BYTES = 2000


class JobRun:
    """Runs one request in one prepared sandbox; `execute()` is called once."""

    def __init__(
        self,
        host: HostSetup,
        prepared: Prepared,
        request: SandboxRequest,
        on_output: OutputCallback | None,
        cancel: asyncio.Event | None,
    ) -> None:
        self._host = host
        self._prepared = prepared
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
        self._status_lines = prepared.status_lines
        self._started = 0.0
        self._ended: float | None = None
        self._cpu_before = 0.0
        self._detail = ""

    async def execute(self) -> SandboxResult:
        """Run the program and return its result; never leaves a job process alive."""
        try:
            outcome = await self._run()
        except (OSError, SandboxError) as exc:
            log.warning("sandbox run failed: %s", exc)
            outcome = SandboxOutcome.PLATFORM_ERROR
            self._detail = f"{type(exc).__name__}: {exc}"
        finally:
            stats = await asyncio.shield(self._teardown())
        return self._result(outcome, stats)

    async def _run(self) -> SandboxOutcome:
        limits, cgroup = self._limits, self._prepared.cgroup
        cgroup.apply(CgroupLimits(limits.memory_bytes, limits.max_processes, limits.cpu_quota))
        self._cpu_before = cgroup.stats().cpu_time_s  # the waiting interpreter's is not the job's
        self._started = time.monotonic()
        proc = self._prepared.launch.proc
        self._start_readers(proc)
        timer = asyncio.get_running_loop().call_later(
            self._remaining(), self._finish, SandboxOutcome.TIMED_OUT
        )
        self._start_watchers(proc, cgroup)
        self._spawn_task(self._hand_over())
        try:
            return await self._stop
        finally:
            timer.cancel()

    # ------------------------------------------------------------------ start

    async def _hand_over(self) -> None:
        """Write the header, the code and stdin down the waiting interpreter's stdin pipe.

        A sandbox that died meanwhile cannot read it: its exit (and bwrap's status) then says
        what happened, so a broken pipe is not an error of its own.
        """
        request = self._request
        header = len(request.code).to_bytes(8, "big") + len(request.stdin).to_bytes(8, "big")
        fd = self._prepared.launch.handover
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await write_all(fd, header + request.code + request.stdin)

    def _start_readers(self, proc: asyncio.subprocess.Process) -> None:
        """Read both pipes (bwrap's own errors land in stderr too)."""
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

    async def _teardown(self) -> CgroupStats | None:
        """Kill what is left, drain the pipes, collect accounting, remove the cgroup."""
        cgroup = self._prepared.cgroup
        stats = None
        try:
            await self._kill(cgroup)
            await self._drain()
            await cgroup.kill_all(self._host.kill_timeout_s)
            # Finished only once pid 1 is gone: reaped by bwrap, or by the executor if bwrap
            # went first and pid 1 became the executor's (see reaper.py).
            if not await wait_gone([self._prepared.child_pid], self._host.kill_timeout_s):
                raise SandboxError(f"pid {self._prepared.child_pid} of the sandbox outlived it")
            stats = cgroup.stats()
            # Every process is gone: the empty cgroups and the scratch go after the result.
            self._host.cleanups.start(self._prepared)
        except (OSError, SandboxError, TimeoutError) as exc:
            log.error("sandbox teardown of %s failed: %s", cgroup.name, exc)
            self._detail = self._detail or f"teardown: {exc}"
            stats = None
        finally:
            for task in self._tasks:
                task.cancel()
            close_all([self._prepared.launch.handover])
            self._prepared.launch.status_transport.close()
        return stats

    async def _kill(self, cgroup: JobCgroup) -> None:
        """Kill the job through its cgroup; bwrap's monitor then exits by itself.

        bwrap is signalled directly only if it outlives the job (never in practice): an
        early kill() would race asyncio's child watcher for the exit status.
        """
        await cgroup.kill_all(self._host.kill_timeout_s)
        proc = self._prepared.launch.proc
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
        status = self._prepared.launch.status
        with contextlib.suppress(TimeoutError):
            rest = await asyncio.wait_for(status.read(), self._host.kill_timeout_s)
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
            cpu_time_s=max(0.0, stats.cpu_time_s - self._cpu_before) if stats else 0.0,
            peak_memory_bytes=stats.peak_memory_bytes if stats else 0,
            runtime=self._prepared.runtime.name,
            runtime_identity=self._host.identities[self._prepared.runtime.name],
            applied_limits=self._limits,
            detail=detail,
            ended_at=ended if self._started else 0.0,
        )
