"""One bwrap run, from the hand-over to the teardown that leaves no process behind.

The run starts from a prepared sandbox (``host.Prepared``): bwrap already placed in its own job
cgroups, the interpreter inside waiting on its stdin. The hand-over writes the job's limits to
the cgroups, then the code and stdin down the pipe; the wall clock and the CPU time count from
there. Output is read from the pipes; besides what every run watches (``core.run``), the
program's exit and an OOM kill seen in the cgroup end the run. The teardown kills the job
through its cgroups, waits for the sandbox's pid 1, and starts removing the emptied cgroups and
the scratch in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from signal import SIGKILL
from typing import ClassVar

from evalmesh_executor.sandbox.core.models import (
    OutputCallback,
    SandboxError,
    SandboxOutcome,
    SandboxRequest,
)
from evalmesh_executor.sandbox.core.run import KILLED, SandboxRun, Verdict, classify

from .cgroups import CgroupLimits, CgroupStats, JobCgroup
from .fds import close_all, write_all
from .host import HostSetup, Prepared, remove
from .reaper import wait_gone

__all__ = ["BwrapRun", "decode_status", "exit_status"]

_DETAIL_BYTES = 2000
_MAX_SIGNAL = 64


def exit_status(status_lines: Iterable[bytes]) -> int | None:
    """The `exit-code` bwrap writes on --json-status-fd; absent if the program never ran."""
    for line in status_lines:
        with contextlib.suppress(ValueError, TypeError):
            status = json.loads(line)
            if isinstance(status, dict) and "exit-code" in status:
                return int(status["exit-code"])
    return None


def decode_status(raw: int | None, outcome: SandboxOutcome) -> tuple[int | None, int | None]:
    """(exit_code, signal) from bwrap's status.

    bwrap reports death by signal n as 128+n, so 129..192 reads as a signal (a program
    calling exit(137) itself is reported as SIGKILL; both are user failures).
    """
    if raw is None:
        return None, int(SIGKILL) if outcome in KILLED else None
    if 128 < raw <= 128 + _MAX_SIGNAL:
        return None, raw - 128
    return raw, None


class BwrapRun(SandboxRun):
    """Runs one request in one prepared sandbox; `execute()` is called once."""

    backend: ClassVar[str] = "bwrap"

    def __init__(
        self,
        host: HostSetup,
        prepared: Prepared,
        request: SandboxRequest,
        on_output: OutputCallback | None,
        cancel: asyncio.Event | None,
    ) -> None:
        runtime = prepared.runtime.name
        super().__init__(
            request, on_output, cancel, runtime=runtime, identity=host.identities[runtime]
        )
        self._host = host
        self._prepared = prepared
        self._readers: list[asyncio.Task[None]] = []
        self._status_lines = prepared.status_lines
        self._cpu_before = 0.0
        self._stats: CgroupStats | None = None

    async def _start(self) -> None:
        limits, cgroup = self._limits, self._prepared.cgroup
        cgroup.apply(CgroupLimits(limits.memory_bytes, limits.max_processes, limits.cpu_quota))
        self._cpu_before = cgroup.stats().cpu_time_s  # the waiting interpreter's is not the job's
        self._started = time.monotonic()
        proc = self._prepared.launch.proc
        assert proc.stdout is not None
        assert proc.stderr is not None
        # Both pipes are read (bwrap's own errors land in stderr too).
        self._readers = [
            self._spawn(self._stdout.pump(proc.stdout)),
            self._spawn(self._stderr.pump(proc.stderr)),
        ]
        self._spawn(self._wait_exit(proc))
        self._spawn(self._watch_memory(cgroup))
        self._spawn(self._hand_over())

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

    # ------------------------------------------------------------------ teardown

    async def _stop_job(self) -> None:
        """Kill what is left, drain the pipes, collect the accounting."""
        cgroup = self._prepared.cgroup
        await self._kill(cgroup)
        await self._drain()
        await cgroup.kill_all(self._host.kill_timeout_s)
        # Finished only once pid 1 is gone: reaped by bwrap, or by the executor if bwrap
        # went first and pid 1 became the executor's (see reaper.py).
        if not await wait_gone([self._prepared.child_pid], self._host.kill_timeout_s):
            raise SandboxError(f"pid {self._prepared.child_pid} of the sandbox outlived it")
        stats = cgroup.stats()
        # Every process is gone: the empty cgroups and the scratch go, in the background, once
        # the result is on its way (host.after_job_s).
        self._host.cleanups.start(remove(self._prepared, self._host.after_job_s))
        self._stats = stats

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
        if self._readers:
            await asyncio.wait(self._readers, timeout=self._host.kill_timeout_s)
        status = self._prepared.launch.status
        with contextlib.suppress(TimeoutError):
            rest = await asyncio.wait_for(status.read(), self._host.kill_timeout_s)
            self._status_lines += rest.splitlines()

    async def _release(self) -> None:
        close_all([self._prepared.launch.handover])
        self._prepared.launch.status_transport.close()

    def _after_result(self) -> None:
        """Nothing: the removal started with the teardown and waits ``after_job_s`` for the
        result to be on its way; ``close()`` waits for it."""

    def _describe(self) -> str:
        return self._prepared.cgroup.name

    # ------------------------------------------------------------------ verdict

    def _verdict(self, stopped_by: SandboxOutcome) -> Verdict:
        stats, raw = self._stats, exit_status(self._status_lines)
        outcome = classify(
            stopped_by,
            finished=raw is not None and stats is not None,
            oom_killed=stats is not None and stats.oom_kills > 0,
            truncated=self._stdout.truncated or self._stderr.truncated,
        )
        exit_code, signal = decode_status(raw, outcome)
        detail = self._detail
        if outcome is SandboxOutcome.PLATFORM_ERROR and raw is None:
            # The program never ran, so stderr holds bwrap's own complaint.
            said = self._stderr.data[-_DETAIL_BYTES:].decode(errors="replace").strip()
            detail = "; ".join(part for part in (detail, said) if part)
        return Verdict(
            outcome,
            exit_code,
            signal,
            cpu_time_s=max(0.0, stats.cpu_time_s - self._cpu_before) if stats else 0.0,
            peak_memory_bytes=stats.peak_memory_bytes if stats else 0,
            detail=detail,
        )
