"""cgroup v1: one directory per hierarchy (memory, pids, cpu, cpuacct, freezer if mounted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from evalmesh_executor.sandbox.core.models import SandboxError

from .cgroups import (
    CPU_PERIOD_US,
    JOB_PREFIX,
    CgroupLimits,
    CgroupStats,
    MountInfo,
    cgroup_dir,
    ensure_parent,
    read_int,
    read_keyed,
    read_pids,
    sweep_stale_jobs,
    write_control,
)

__all__ = ["CgroupV1Driver", "CgroupV1Job"]

log = logging.getLogger(__name__)

REQUIRED = ("memory", "pids", "cpu", "cpuacct")
OPTIONAL = ("freezer",)
_FREEZE_WAIT_S = 0.2


def _write_optional(path: Path, value: str) -> None:
    try:
        write_control(path, value)
    except OSError as exc:
        log.debug("cgroup v1: %s not applied (%s)", path.name, exc.strerror)


@dataclass(frozen=True, slots=True)
class CgroupV1Job:
    """One job: a directory in each hierarchy, keyed by controller name."""

    name: str
    dirs: Mapping[str, Path]
    # The files read and written several times per job, named once.
    _procs: tuple[str, ...] = field(init=False, repr=False)
    _oom_control: str = field(init=False, repr=False)
    _cpu_usage: str = field(init=False, repr=False)
    _peak_memory: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        unique = self._unique_dirs()
        memory = self.dirs["memory"]
        object.__setattr__(self, "_procs", tuple(f"{d}/cgroup.procs" for d in unique))
        object.__setattr__(self, "_oom_control", f"{memory}/memory.oom_control")
        object.__setattr__(self, "_cpu_usage", f"{self.dirs['cpuacct']}/cpuacct.usage")
        object.__setattr__(self, "_peak_memory", f"{memory}/memory.max_usage_in_bytes")

    def _unique_dirs(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def add_process(self, pid: int) -> None:
        """Write pid into cgroup.procs of every hierarchy."""
        for procs in self._procs:
            write_control(procs, str(pid))

    def apply(self, limits: CgroupLimits) -> None:
        """Write new limits (a prepared sandbox gets its job's at the hand-over)."""
        _apply(self.dirs, limits)

    def oom_kills(self) -> int:
        """The `oom_kill` counter of memory.oom_control."""
        return read_keyed(self._oom_control, "oom_kill")

    def sample(self) -> None:
        """Nothing to do: v1 keeps memory.max_usage_in_bytes itself."""

    def stats(self) -> CgroupStats:
        """cpuacct.usage (ns) and memory.max_usage_in_bytes."""
        return CgroupStats(
            cpu_time_s=read_int(self._cpu_usage) / 1e9,
            peak_memory_bytes=read_int(self._peak_memory),
            oom_kills=self.oom_kills(),
        )

    def pids(self) -> list[int]:
        """Union of cgroup.procs over the hierarchies."""
        return read_pids(self._procs)

    async def kill_all(self, within_s: float) -> None:
        """Freeze, SIGKILL every task, thaw; repeat until every hierarchy is empty.

        Frozen tasks cannot fork or exit, so the pid list read while frozen is complete
        and no pid in it can be recycled before the signal lands.
        """
        deadline = time.monotonic() + within_s
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise SandboxError(f"cgroup {self.name}: {len(pids)} processes survive SIGKILL")
            await self._freeze()
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._thaw()
            await asyncio.sleep(0.002)

    async def _freeze(self) -> None:
        freezer = self.dirs.get("freezer")
        if freezer is None:
            return
        write_control(freezer / "freezer.state", "FROZEN")
        deadline = time.monotonic() + _FREEZE_WAIT_S
        while (freezer / "freezer.state").read_text().strip() != "FROZEN":
            if time.monotonic() > deadline:
                return  # a task stuck in the kernel; SIGKILL it unfrozen and loop again
            await asyncio.sleep(0.001)

    def _thaw(self) -> None:
        freezer = self.dirs.get("freezer")
        if freezer is not None:
            write_control(freezer / "freezer.state", "THAWED")

    def remove(self) -> None:
        """rmdir the job directory in every hierarchy."""
        for directory in self._unique_dirs():
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()


@dataclass(frozen=True, slots=True)
class CgroupV1Driver:
    """Job cgroups under `<hierarchy>/<own cgroup or root>/<parent_name>/` per controller."""

    parent_dirs: Mapping[str, Path]
    created: set[str] = field(default_factory=set)

    @property
    def version(self) -> int:
        """Always 1."""
        return 1

    @property
    def parents(self) -> tuple[Path, ...]:
        """The parent directory of each hierarchy."""
        return tuple(dict.fromkeys(self.parent_dirs.values()))

    @classmethod
    def discover(
        cls, mounts: list[MountInfo], own: Mapping[str, str], parent_name: str
    ) -> CgroupV1Driver | None:
        """Find each controller's hierarchy; None if a required one is not mounted."""
        found: dict[str, Path] = {}
        for controller in REQUIRED + OPTIONAL:
            mount = next(
                (m for m in mounts if m.fstype == "cgroup" and controller in m.options), None
            )
            if mount is None:
                if controller in REQUIRED:
                    return None
                continue
            own_dir = cgroup_dir(mount, own.get(controller, "/"))
            candidates = [own_dir / parent_name, mount.mountpoint / parent_name]
            found[controller] = ensure_parent(dict.fromkeys(candidates))
        driver = cls(found)
        for parent in driver.parents:
            sweep_stale_jobs(parent)
        return driver

    def create(self, limits: CgroupLimits) -> CgroupV1Job:
        """mkdir the job in every hierarchy and write its limits."""
        name = JOB_PREFIX + uuid.uuid4().hex[:16]
        dirs = {controller: parent / name for controller, parent in self.parent_dirs.items()}
        job = CgroupV1Job(name, dirs)
        try:
            for directory in job._unique_dirs():
                directory.mkdir()
            self.created.add(name)
            _apply(dirs, limits)
        except BaseException:
            job.remove()
            raise
        return job


def _apply(dirs: Mapping[str, Path], limits: CgroupLimits) -> None:
    memory = dirs["memory"]
    limit = memory / "memory.limit_in_bytes"
    value = str(limits.memory_bytes)
    # memsw = memory + swap; equal to the memory limit means no swap at all. It only exists
    # with swap accounting; swappiness 0 is the fallback. The kernel keeps memsw at least the
    # memory limit, so memsw goes first when the limit rises and last when it falls.
    memsw = memory / "memory.memsw.limit_in_bytes"
    order = [limit]
    if memsw.exists():
        rising = limits.memory_bytes > read_int(limit)
        order = [memsw, limit] if rising else [limit, memsw]
    for path in order:
        write_control(path, value)
    _write_optional(memory / "memory.swappiness", "0")
    write_control(dirs["pids"] / "pids.max", str(limits.max_processes))
    write_control(dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
    write_control(dirs["cpu"] / "cpu.cfs_quota_us", str(limits.cpu_quota_us))
