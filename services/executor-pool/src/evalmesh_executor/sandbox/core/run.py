"""One run of one request, on either backend: the lifecycle both share.

A backend's run hands the job over (``_start``); from then on the job's clock runs, output is
captured (capped, live), and the first of these stops the run: the program's end (which the
backend reports), the wall timer, a stream's first byte past its cap, the cancel event, or a
reader or watcher that raised. What stopped it first is kept. The teardown then ends every
process of the job and collects its accounting (``_stop_job``, shielded: cancelling the
caller still tears the sandbox down), releases what the run held (``_release``), and the
verdict turns what was seen into the result. What may wait longer (removing a finished
container) starts only once the caller has resumed with the result (``_after_result``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar

from .capture import StreamCapture
from .models import (
    OutputCallback,
    SandboxError,
    SandboxOutcome,
    SandboxRequest,
    SandboxResult,
)

__all__ = ["KILLED", "SandboxRun", "Verdict", "classify"]

log = logging.getLogger(__name__)

#: Outcomes in which the sandbox, not the program, ended the run (with SIGKILL).
KILLED = frozenset(
    {
        SandboxOutcome.TIMED_OUT,
        SandboxOutcome.MEMORY_LIMIT,
        SandboxOutcome.OUTPUT_LIMIT,
        SandboxOutcome.CANCELLED,
    }
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a run ended, as its backend judged it once the teardown was over."""

    outcome: SandboxOutcome
    exit_code: int | None = None
    signal: int | None = None
    cpu_time_s: float = 0.0
    peak_memory_bytes: int = 0
    detail: str = ""


def classify(
    stopped_by: SandboxOutcome, *, finished: bool, oom_killed: bool, truncated: bool
) -> SandboxOutcome:
    """The outcome: what stopped the run first, refined by what the teardown found.

    finished: the program's end status and the accounting are both known; a run that ended
    by itself without them is a platform fault (the setup or the teardown failed). An OOM
    kill turns an exit or a timeout into MEMORY_LIMIT (the first kill by the kernel decides);
    a stream that passed its cap while the pipes drained turns an exit into OUTPUT_LIMIT.
    """
    if stopped_by is SandboxOutcome.EXITED and truncated:
        return SandboxOutcome.OUTPUT_LIMIT
    if oom_killed and stopped_by in (SandboxOutcome.EXITED, SandboxOutcome.TIMED_OUT):
        return SandboxOutcome.MEMORY_LIMIT
    if stopped_by is not SandboxOutcome.EXITED:
        return stopped_by
    return stopped_by if finished else SandboxOutcome.PLATFORM_ERROR


class SandboxRun(abc.ABC):
    """Runs one request in one sandbox; `execute()` is called once.

    A backend's run implements ``_start`` (hand the job over, start its readers and watchers,
    set ``_started``), ``_stop_job``, ``_release``, ``_after_result`` and ``_verdict``.
    Readers and watchers report through ``_finish``.
    """

    #: The backend's name, for the log.
    backend: ClassVar[str]
    #: Exceptions of the run (before the teardown) that make it a platform fault.
    failures: ClassVar[tuple[type[Exception], ...]] = (OSError, SandboxError)

    def __init__(
        self,
        request: SandboxRequest,
        on_output: OutputCallback | None,
        cancel: asyncio.Event | None,
        *,
        runtime: str,
        identity: str,
    ) -> None:
        self._request = request
        self._limits = request.limits
        self._cancel = cancel
        self._runtime = runtime
        self._identity = identity
        self._stop: asyncio.Future[SandboxOutcome] = asyncio.get_running_loop().create_future()
        cap = self._limits.max_output_bytes
        self._stdout = StreamCapture("stdout", cap, on_output, self._overflow)
        self._stderr = StreamCapture("stderr", cap, on_output, self._overflow)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0  # monotonic, at the hand-over: the job's clock starts there
        self._ended: float | None = None
        self._detail = ""

    async def execute(self) -> SandboxResult:
        """Run the program and return its result; never leaves a job process alive."""
        try:
            stopped_by = await self._run()
        except self.failures as exc:
            log.warning("%s sandbox run failed: %s", self.backend, exc)
            stopped_by = SandboxOutcome.PLATFORM_ERROR
            self._detail = f"{type(exc).__name__}: {exc}"
        finally:
            teardown = asyncio.ensure_future(self._teardown())
            shielded = asyncio.shield(teardown)
            # Registered after shield's own callback, so what it starts begins only once the
            # caller has resumed with the result.
            teardown.add_done_callback(self._torn_down)
            await shielded
        return self._result(stopped_by)

    async def _run(self) -> SandboxOutcome:
        await self._start()
        timer = asyncio.get_running_loop().call_later(
            self._remaining(), self._finish, SandboxOutcome.TIMED_OUT
        )
        if self._cancel is not None:
            self._spawn(self._watch_cancel(self._cancel))
        try:
            return await self._stop
        finally:
            timer.cancel()

    # ------------------------------------------------------------------ the backend's part

    @abc.abstractmethod
    async def _start(self) -> None:
        """Hand the job over and start reading its output; set ``_started``."""

    @abc.abstractmethod
    async def _stop_job(self) -> None:
        """End every process of the job and collect its accounting."""

    @abc.abstractmethod
    async def _release(self) -> None:
        """Let go of what the run holds (descriptors, connections); never raises."""

    @abc.abstractmethod
    def _verdict(self, stopped_by: SandboxOutcome) -> Verdict:
        """How the run ended, given what stopped it first."""

    @abc.abstractmethod
    def _describe(self) -> str:
        """The sandbox, as the log names it."""

    @abc.abstractmethod
    def _after_result(self) -> None:
        """Start what may wait until the caller has resumed with the result."""

    # ------------------------------------------------------------------ readers and watchers

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start a reader or watcher of this run; the teardown cancels it."""
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
        """Stop the run, unless something stopped it already."""
        if not self._stop.done():
            self._ended = time.monotonic()
            self._stop.set_result(outcome)

    def _overflow(self) -> None:
        self._finish(SandboxOutcome.OUTPUT_LIMIT)

    def _remaining(self) -> float:
        return max(0.0, self._started + self._limits.wall_timeout - time.monotonic())

    async def _watch_cancel(self, cancel: asyncio.Event) -> None:
        await cancel.wait()
        self._finish(SandboxOutcome.CANCELLED)

    # ------------------------------------------------------------------ teardown and result

    async def _teardown(self) -> None:
        try:
            await self._stop_job()
        except (OSError, SandboxError, TimeoutError) as exc:
            log.error("%s sandbox teardown of %s failed: %s", self.backend, self._describe(), exc)
            self._detail = self._detail or f"teardown: {exc}"
        finally:
            for task in self._tasks:
                task.cancel()
            await self._release()

    def _torn_down(self, _: asyncio.Future[None]) -> None:
        self._after_result()

    def _result(self, stopped_by: SandboxOutcome) -> SandboxResult:
        verdict = self._verdict(stopped_by)
        stdout, stderr = self._stdout, self._stderr
        ended = self._ended or time.monotonic()
        return SandboxResult(
            outcome=verdict.outcome,
            exit_code=verdict.exit_code,
            signal=verdict.signal,
            stdout=stdout.data,
            stderr=stderr.data,
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            wall_time_s=ended - self._started if self._started else 0.0,
            cpu_time_s=verdict.cpu_time_s,
            peak_memory_bytes=verdict.peak_memory_bytes,
            runtime=self._runtime,
            runtime_identity=self._identity,
            applied_limits=self._limits,
            detail=verdict.detail,
            ended_at=ended if self._started else 0.0,
        )
