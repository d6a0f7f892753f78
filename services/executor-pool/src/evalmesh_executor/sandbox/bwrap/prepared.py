"""bwrap sandboxes started ahead of their job, and the pool that keeps some waiting.

Starting a sandbox is most of a short run's cost: creating the job cgroups, bwrap's namespaces
and mounts, the first migration into the cgroups, and the interpreter's own start-up (about
20 ms together here, against a few for ``print(1)`` itself). None of it depends on the job. A
prepared sandbox has all of it done: bwrap started for a shape (runtime, scratch size, rlimits:
`Shape`), its sandbox placed in fresh cgroups and released, and the interpreter inside waiting
on its stdin for the job (``boot``). What belongs to the job comes at the hand-over: the
limits that are cgroup settings are written, then the code and stdin go down the pipe.

Every run goes this way, so a sandbox taken from the pool is the same sandbox as one prepared
for the run on demand. Each serves one job and is torn down with it; the pool refills in the
background, one preparation at a time per shape, backing off while preparations fail.

A taken sandbox is replaced shortly after its job has ended, not while the job runs nor while
its result is written (unless a burst is draining the pool: below). A preparation is a burst of
work (a process started, cgroups and mounts made, an interpreter's start-up) on the executor's
event loop and on the CPUs the job and the result's path use. Measured on two cores, one
``print(1)`` at a time: begun at the hand-over, it held the program's end back by about 10 ms
(its end seen 14-16 ms after its last line, against 3.3-3.6 ms); begun as the job ended, it held
the result back as much (end_time to the client's hands 11-12 ms, against 3-4 ms).
``after_job_s`` (``BwrapConfig``, 30 ms) after the job's end covers the result's way to storage
and to its watchers (p90 about 15 ms there) on such a host; the finished sandbox's cgroups and
scratch are removed then too.

Under a burst that wait leaves the pool empty: jobs end every few milliseconds, each refill
begins 30 ms after one of them, and half the jobs of a burst of 150 ``print(1)`` on two slots
prepared their own sandbox, each waiting about 15 ms for it (most of it the kernel's grace
period in the cgroup move, time in which nothing else ran: the machine was 16% idle). So a
take from a pool that is already short of its target, one whose last take was not replaced
yet, refills at once: one at a time, every job takes from a full pool, while a burst keeps
the refill going between its jobs (the executor keeps two per slot, so the slots find some).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from signal import SIGKILL

from evalmesh_common.backoff import exponential_delay
from evalmesh_executor.sandbox.core.models import SandboxError

from .cgroups import CgroupLimits
from .fds import close_all, write_all
from .host import HostSetup, Launch, Prepared, Shape
from .launch import launch
from .runtime import Runtime

__all__ = ["PreparedPool", "prepare"]

log = logging.getLogger(__name__)

# The waiting interpreter's cgroup limits until the hand-over writes the job's: room for the
# interpreter (about 10 MiB) and bwrap's own init, nothing more.
WAITING_LIMITS = CgroupLimits(memory_bytes=128 * 1024 * 1024, max_processes=8, cpu_quota=1.0)
_SAID_BYTES = 2000
_RETRY_FIRST_S = 0.5
_RETRY_CAP_S = 30.0


async def prepare(host: HostSetup, runtime: Runtime, shape: Shape) -> Prepared:
    """Start bwrap for ``shape``, place its sandbox in fresh cgroups and release it.

    Raises OSError or SandboxError when that fails, leaving nothing behind.
    """
    cgroup = host.cgroups.create(WAITING_LIMITS)
    started: Launch | None = None
    scratch = None
    try:
        if host.scratch is not None:
            scratch = host.scratch.create(shape.scratch_bytes, shape.scratch_inodes)
        started = await launch(host, runtime, shape, scratch)
        prepared = Prepared(shape, runtime, cgroup, started, scratch, host.scratch)
        await _place_and_release(host, prepared)
    except BaseException as error:
        said = await _abandon(host, started) if started is not None else ""
        with contextlib.suppress(OSError, SandboxError, TimeoutError):
            await cgroup.kill_all(host.kill_timeout_s)
            cgroup.remove()
        if scratch is not None and host.scratch is not None:
            host.scratch.remove(scratch)
        if said and isinstance(error, OSError | SandboxError):
            raise SandboxError(f"{error}; bwrap said: {said}") from error
        raise
    return prepared


async def _abandon(host: HostSetup, started: Launch) -> str:
    """Kill a launch that failed before its release; return what bwrap wrote on stderr."""
    close_all([started.handover])
    started.status_transport.close()
    with contextlib.suppress(ProcessLookupError):
        started.proc.kill()
    said = b""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(started.proc.wait(), host.kill_timeout_s)
        if started.proc.stderr is not None:
            said = await asyncio.wait_for(started.proc.stderr.read(), host.kill_timeout_s)
    return said[-_SAID_BYTES:].decode(errors="replace").strip()


async def _place_and_release(host: HostSetup, prepared: Prepared) -> None:
    """Move the sandbox's pid 1 into the cgroups before anything of it runs, release it, and
    give its interpreter the boot program's code (``layout.boot_loader``).

    bwrap's sandbox child (pid 1 of the new pid namespace, the parent of everything that will
    ever run inside) reports its host pid on the status pipe and blocks; every later process
    descends from it, so every one is placed. Closing the block pipe would let it go on
    unplaced, so on failure it is killed first.
    """
    started = prepared.launch
    child = None
    try:
        child = await asyncio.wait_for(_child_pid(prepared), host.setup_timeout_s)
        prepared.child_pid = child
        # On a thread: a move waits for an RCU grace period in the kernel (about 12 ms on a
        # small VM), which on the event loop would hold up every other job's work.
        await asyncio.to_thread(prepared.cgroup.add_process, child)
        os.write(started.block, b"\x01")
    except BaseException:
        if started.proc.returncode is None and child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, SIGKILL)  # bwrap has not reaped it: the pid is still its child
        raise
    finally:
        os.close(started.block)
    # Released, the sandbox is in its cgroups: a failure from here is killed through them.
    boot = host.boot_code[prepared.runtime.name]
    await asyncio.wait_for(write_all(started.handover, boot), host.setup_timeout_s)


async def _child_pid(prepared: Prepared) -> int:
    line = await prepared.launch.status.readline()
    prepared.status_lines.append(line)
    try:
        return int(json.loads(line)["child-pid"])
    except (ValueError, KeyError) as exc:
        raise SandboxError("bwrap exited during setup") from exc


class PreparedPool:
    """Keeps ``targets[shape]`` prepared sandboxes of each shape waiting for a job."""

    def __init__(
        self,
        host: HostSetup,
        runtimes: Mapping[str, Runtime],
        targets: Mapping[Shape, int],
    ) -> None:
        self._host = host
        self._runtimes = runtimes
        self._targets = {shape: n for shape, n in targets.items() if n > 0}
        self._ready: dict[Shape, collections.deque[Prepared]] = {
            shape: collections.deque() for shape in self._targets
        }
        self._wake = {shape: asyncio.Event() for shape in self._targets}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def start(self) -> None:
        """Begin filling the pool in the background."""
        for shape in self._targets:
            if shape.runtime in self._runtimes:
                self._tasks.append(asyncio.create_task(self._refill(shape)))

    def take(self, shape: Shape) -> Prepared | None:
        """A waiting sandbox of ``shape``, now the caller's; None if none is ready.

        The pool is refilled once the caller's job is over (call ``job_ended``), or at once if
        it was already short before this take.
        """
        ready = self._ready.get(shape)
        while ready:
            prepared = ready.popleft()
            if prepared.alive:
                if len(ready) + 1 < self._targets[shape]:  # a burst is draining the pool
                    self._wake[shape].set()
                return prepared
            log.warning("a prepared sandbox died while waiting; discarding it")
            self._spawn_discard(prepared)
            self._wake[shape].set()
        return None

    def job_ended(self, shape: Shape) -> None:
        """A job of ``shape`` ended: prepare what the pool lacks once its result is on its way
        (the host's ``after_job_s`` later)."""
        wake = self._wake.get(shape)
        if wake is not None:
            asyncio.get_running_loop().call_later(self._host.after_job_s, wake.set)

    def waiting(self) -> int:
        """How many prepared sandboxes wait now, all shapes together."""
        return sum(len(ready) for ready in self._ready.values())

    async def close(self) -> None:
        """Stop refilling and tear every waiting sandbox down."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        waiting = [prepared for ready in self._ready.values() for prepared in ready]
        for ready in self._ready.values():
            ready.clear()
        await asyncio.gather(*(p.discard(self._host.kill_timeout_s) for p in waiting))

    async def _refill(self, shape: Shape) -> None:
        ready, wake = self._ready[shape], self._wake[shape]
        failures = 0
        while not self._closed:
            if len(ready) >= self._targets[shape]:
                wake.clear()
                await wake.wait()
                continue
            try:
                prepared = await prepare(self._host, self._runtimes[shape.runtime], shape)
            except (OSError, SandboxError) as exc:
                failures += 1
                delay = exponential_delay(failures, base=_RETRY_FIRST_S, cap=_RETRY_CAP_S)
                log.warning("preparing a sandbox failed (retrying in %.1fs): %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            failures = 0
            ready.append(prepared)

    def _spawn_discard(self, prepared: Prepared) -> None:
        task = asyncio.create_task(prepared.discard(self._host.kill_timeout_s))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)
