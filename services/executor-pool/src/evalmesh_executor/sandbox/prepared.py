"""bwrap sandboxes started ahead of their job, and the pool that keeps some waiting.

Starting a sandbox is most of a short run's cost: creating the job cgroups, bwrap's namespaces
and mounts, the first migration into the cgroups, and the interpreter's own start-up (about
20 ms together here, against a few for ``print(1)`` itself). None of it depends on the job. A
prepared sandbox has all of it done: bwrap started for a shape (runtime, scratch size, rlimits:
`Shape`), its sandbox placed in fresh cgroups and released, and the interpreter inside waiting
on its stdin for the job (`bwrap_boot`). What belongs to the job comes at the hand-over: the
limits that are cgroup settings are written, then the code and stdin go down the pipe.

Every run goes this way, so a sandbox taken from the pool is the same sandbox as one prepared
for the run on demand. Each serves one job and is torn down with it; the pool refills in the
background, one preparation at a time per shape, backing off while preparations fail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from signal import SIGKILL

from .cgroups import CgroupLimits, JobCgroup, is_busy
from .fds import close_all
from .launch import HostSetup, Launch, Shape, launch
from .models import SandboxError
from .reaper import wait_gone
from .runtime import Runtime
from .scratch import Scratch, ScratchMounts

__all__ = ["Cleanups", "Prepared", "PreparedPool", "prepare"]

log = logging.getLogger(__name__)

# The waiting interpreter's cgroup limits until the hand-over writes the job's: room for the
# interpreter (about 10 MiB) and bwrap's own init, nothing more.
WAITING_LIMITS = CgroupLimits(memory_bytes=128 * 1024 * 1024, max_processes=8, cpu_quota=1.0)
_SAID_BYTES = 2000
_REMOVE_TRIES = 50  # a cgroup may be reported busy for a moment after its last task exits
_REMOVE_PAUSE_S = 0.01
_RETRY_FIRST_S = 0.5
_RETRY_CAP_S = 30.0


class Cleanups:
    """Teardown that need not hold up a run's result: removing a job's emptied cgroups and
    its scratch mounts (rmdir and umount wait on the kernel for a millisecond or two each),
    done right after the result is handed back. ``wait`` lets a closing sandbox finish them.
    (On the event loop, not a thread: a thread hop per step cost more CPU than it saved.)"""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, prepared: Prepared) -> None:
        """Remove the cgroups and scratch of a sandbox whose processes are all gone."""
        task = asyncio.ensure_future(_remove(prepared))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def wait(self) -> None:
        """Until every cleanup started so far has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("removing a finished sandbox failed: %s", task.exception())


async def _remove(prepared: Prepared) -> None:
    for _ in range(_REMOVE_TRIES):
        try:
            prepared.cgroup.remove()
            break
        except OSError as exc:
            if not is_busy(exc):
                raise
            await asyncio.sleep(_REMOVE_PAUSE_S)
    prepared.remove_scratch()


@dataclass(eq=False)
class Prepared:
    """A sandbox whose interpreter waits for its job; `discard` tears it down unused."""

    shape: Shape
    runtime: Runtime
    cgroup: JobCgroup
    launch: Launch
    scratch: Scratch | None
    scratches: ScratchMounts | None
    status_lines: list[bytes] = field(default_factory=list)
    child_pid: int = 0  # the sandbox's pid 1, as the host sees it

    def remove_scratch(self) -> None:
        """Detach the job's scratch tmpfs (once its processes are gone)."""
        if self.scratch is not None and self.scratches is not None:
            self.scratches.remove(self.scratch)

    @property
    def alive(self) -> bool:
        """False once bwrap exited (the sandbox cannot take a job any more)."""
        return self.launch.proc.returncode is None

    async def discard(self, kill_timeout_s: float) -> None:
        """Kill and remove a sandbox that never got a job (or whose job is over)."""
        try:
            await self.cgroup.kill_all(kill_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                self.launch.proc.kill()
            await asyncio.wait_for(self.launch.proc.wait(), kill_timeout_s)
            await self.cgroup.kill_all(kill_timeout_s)
            await wait_gone([self.child_pid], kill_timeout_s)
            await _remove(self)
        except (OSError, SandboxError, TimeoutError) as exc:
            log.error("discarding prepared sandbox %s failed: %s", self.cgroup.name, exc)
        finally:
            close_all([self.launch.handover])
            self.launch.status_transport.close()


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
    """Move the sandbox's pid 1 into the cgroups before anything of it runs, then release it.

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
        prepared.cgroup.add_process(child)
        os.write(started.block, b"\x01")
    except BaseException:
        if started.proc.returncode is None and child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, SIGKILL)  # bwrap has not reaped it: the pid is still its child
        raise
    finally:
        os.close(started.block)


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
        self, host: HostSetup, runtimes: Mapping[str, Runtime], targets: Mapping[Shape, int]
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
        """A waiting sandbox of ``shape``, now the caller's; None if none is ready."""
        ready = self._ready.get(shape)
        while ready:
            prepared = ready.popleft()
            self._wake[shape].set()
            if prepared.alive:
                return prepared
            log.warning("a prepared sandbox died while waiting; discarding it")
            self._spawn_discard(prepared)
        return None

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
        delay = _RETRY_FIRST_S
        while not self._closed:
            if len(ready) >= self._targets[shape]:
                wake.clear()
                await wake.wait()
                continue
            try:
                prepared = await prepare(self._host, self._runtimes[shape.runtime], shape)
            except (OSError, SandboxError) as exc:
                log.warning("preparing a sandbox failed (retrying in %.1fs): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_CAP_S)
                continue
            delay = _RETRY_FIRST_S
            ready.append(prepared)

    def _spawn_discard(self, prepared: Prepared) -> None:
        task = asyncio.create_task(prepared.discard(self._host.kill_timeout_s))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)
