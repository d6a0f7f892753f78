"""cgroup v2: one directory per job in the unified hierarchy.

Layout under the executor's own cgroup B (from /proc/self/cgroup):
    B/evalmesh-supervisor/   B's processes (the executor...), moved here if B holds any
    B/evalmesh/              subtree_control: +memory +pids +cpu
    B/evalmesh/job-<id>/     memory.max, memory.swap.max=0, memory.oom.group=1,
                             pids.max, cpu.max; killed with cgroup.kill
The move exists because of the "no internal processes" rule: controllers can only be
enabled for B's children while B itself has no processes (B = the root is exempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from evalmesh_executor.sandbox.core.models import SandboxError, SandboxUnavailableError

from .cgroups import (
    CPU_PERIOD_US,
    JOB_PREFIX,
    CgroupLimits,
    CgroupStats,
    is_busy,
    read_int,
    read_keyed,
    read_pids,
    sweep_stale_jobs,
    write_control,
)

__all__ = ["CONTROLLERS", "CgroupV2Driver", "CgroupV2Job", "has_controllers"]

log = logging.getLogger(__name__)

CONTROLLERS = ("memory", "pids", "cpu")
SUPERVISOR_LEAF = "evalmesh-supervisor"


def has_controllers(directory: Path) -> bool:
    """True if every controller the sandbox needs is available in `directory`."""
    try:
        available = set((directory / "cgroup.controllers").read_text().split())
    except OSError:
        return False
    return set(CONTROLLERS) <= available


def _enable_controllers(directory: Path) -> None:
    write_control(directory / "cgroup.subtree_control", " ".join("+" + c for c in CONTROLLERS))


@dataclass(slots=True)
class CgroupV2Job:
    """One job directory in the unified hierarchy."""

    name: str
    path: Path
    _peak_seen: int = field(default=0)
    # The files read several times per job, named once.
    _procs: str = field(init=False, repr=False)
    _events: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._procs = f"{self.path}/cgroup.procs"
        self._events = f"{self.path}/memory.events"

    def add_process(self, pid: int) -> None:
        """Write pid into cgroup.procs."""
        write_control(self._procs, str(pid))

    def apply(self, limits: CgroupLimits) -> None:
        """Write new limits (a prepared sandbox gets its job's at the hand-over)."""
        _apply(self.path, limits)

    def oom_kills(self) -> int:
        """The `oom_kill` counter of memory.events."""
        return read_keyed(self._events, "oom_kill")

    def sample(self) -> None:
        """Track memory.current for kernels without memory.peak (before 5.19)."""
        with contextlib.suppress(OSError, ValueError):
            self._peak_seen = max(self._peak_seen, read_int(self.path / "memory.current"))

    def stats(self) -> CgroupStats:
        """cpu.stat usage_usec and memory.peak (or the sampled maximum)."""
        try:
            peak = read_int(self.path / "memory.peak")
        except (OSError, ValueError):
            self.sample()
            peak = self._peak_seen
        return CgroupStats(
            cpu_time_s=read_keyed(self.path / "cpu.stat", "usage_usec") / 1e6,
            peak_memory_bytes=peak,
            oom_kills=self.oom_kills(),
        )

    def pids(self) -> list[int]:
        """The pids in cgroup.procs."""
        return read_pids([self._procs])

    async def kill_all(self, within_s: float) -> None:
        """cgroup.kill (Linux 5.14+), else freeze + SIGKILL each + thaw; wait until empty."""
        deadline = time.monotonic() + within_s
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise SandboxError(f"cgroup {self.name}: {len(pids)} processes survive SIGKILL")
            if (self.path / "cgroup.kill").exists():
                write_control(self.path / "cgroup.kill", "1")
            else:
                self._kill_frozen()
            await asyncio.sleep(0.002)

    def _kill_frozen(self) -> None:
        write_control(self.path / "cgroup.freeze", "1")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        write_control(self.path / "cgroup.freeze", "0")

    def remove(self) -> None:
        """rmdir the job directory."""
        with contextlib.suppress(FileNotFoundError):
            self.path.rmdir()


@dataclass(frozen=True, slots=True)
class CgroupV2Driver:
    """Job cgroups under one delegated parent directory."""

    parent: Path
    created: set[str] = field(default_factory=set)

    @property
    def version(self) -> int:
        """Always 2."""
        return 2

    @property
    def parents(self) -> tuple[Path, ...]:
        """The single parent directory."""
        return (self.parent,)

    @classmethod
    def setup(cls, base: Path, parent_name: str) -> CgroupV2Driver:
        """Prepare `base/parent_name` with the controllers enabled for its children."""
        parent = base / parent_name
        try:
            cls._delegate(base)
            parent.mkdir(exist_ok=True)
            _enable_controllers(parent)
        except OSError as exc:
            raise SandboxUnavailableError(f"cgroup v2 under {base}: {exc}") from exc
        sweep_stale_jobs(parent)
        return cls(parent)

    @staticmethod
    def _delegate(base: Path) -> None:
        enabled = set((base / "cgroup.subtree_control").read_text().split())
        if set(CONTROLLERS) <= enabled:
            return
        try:
            _enable_controllers(base)
        except OSError as exc:
            if not is_busy(exc):
                raise
            # base holds processes (this executor, maybe its init): move them to a leaf
            # as container entrypoints that nest cgroups do, then retry.
            leaf = base / SUPERVISOR_LEAF
            leaf.mkdir(exist_ok=True)
            for pid in [os.getpid(), *read_pids([base / "cgroup.procs"])]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    write_control(leaf / "cgroup.procs", str(pid))
            log.info("cgroup v2: moved %s's processes into %s to delegate controllers", base, leaf)
            _enable_controllers(base)

    def create(self, limits: CgroupLimits) -> CgroupV2Job:
        """mkdir the job and write its limits."""
        name = JOB_PREFIX + uuid.uuid4().hex[:16]
        job = CgroupV2Job(name, self.parent / name)
        job.path.mkdir()
        self.created.add(name)
        try:
            _apply(job.path, limits)
        except BaseException:
            job.remove()
            raise
        return job


def _apply(path: Path, limits: CgroupLimits) -> None:
    write_control(path / "memory.max", str(limits.memory_bytes))
    try:
        write_control(path / "memory.swap.max", "0")
    except OSError as exc:  # no swap accounting on this kernel: there is no swap to use
        log.debug("cgroup v2: memory.swap.max not applied (%s)", exc.strerror)
    # An OOM kill takes the whole job down at once; the sandbox ends it anyway.
    with contextlib.suppress(OSError):
        write_control(path / "memory.oom.group", "1")
    write_control(path / "pids.max", str(limits.max_processes))
    write_control(path / "cpu.max", f"{limits.cpu_quota_us} {CPU_PERIOD_US}")
