"""Job cgroups: the small interface the sandbox needs, and control-file helpers.

A job cgroup holds every process of one evaluation. It carries the memory (swap disabled),
process-count and CPU limits, reports CPU time, peak memory and OOM kills, and kills the
whole tree on teardown. `cgroup_v1` and `cgroup_v2` implement it; `cgroup_detect` picks
the one this host offers.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from evalmesh_executor.sandbox.core.models import SandboxUnavailableError

__all__ = [
    "JOB_PREFIX",
    "CgroupDriver",
    "CgroupLimits",
    "CgroupStats",
    "JobCgroup",
    "MountInfo",
    "cgroup_dir",
    "ensure_parent",
    "is_busy",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "read_int",
    "read_keyed",
    "read_pids",
    "read_text",
    "sweep_stale_jobs",
    "write_control",
]

JOB_PREFIX = "job-"
CPU_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    """What a job cgroup enforces."""

    memory_bytes: int
    max_processes: int
    cpu_quota: float

    @property
    def cpu_quota_us(self) -> int:
        """CFS quota per CPU_PERIOD_US, in microseconds (the kernel's minimum is 1 ms)."""
        return max(1000, round(self.cpu_quota * CPU_PERIOD_US))


@dataclass(frozen=True, slots=True)
class CgroupStats:
    """Accounting read from a job cgroup after its processes are gone."""

    cpu_time_s: float
    peak_memory_bytes: int
    oom_kills: int


class JobCgroup(Protocol):
    """The cgroup (v2) or set of cgroups (v1, one per hierarchy) of one job."""

    @property
    def name(self) -> str:
        """The job directory's name, unique per job."""
        ...

    def add_process(self, pid: int) -> None:
        """Move pid (a whole thread group) into the job; its future children follow it."""

    def apply(self, limits: CgroupLimits) -> None:
        """Enforce ``limits`` from now on (raising or lowering any of them)."""

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this job so far."""
        ...

    def sample(self) -> None:
        """Record current usage where the kernel keeps no peak (called while running)."""

    def stats(self) -> CgroupStats:
        """CPU time, peak memory and OOM kills of the job."""
        ...

    def pids(self) -> list[int]:
        """Host pids of the processes still in the job."""
        ...

    async def kill_all(self, within_s: float) -> None:
        """SIGKILL every process of the job; return once none is left, or raise SandboxError."""

    def remove(self) -> None:
        """Delete the job's cgroup directories (the job must be empty)."""


class CgroupDriver(Protocol):
    """Creates job cgroups on one host; `version` is 1 or 2."""

    @property
    def version(self) -> int:
        """The cgroup version in use."""
        ...

    @property
    def parents(self) -> tuple[Path, ...]:
        """Directories that hold this driver's job cgroups."""
        ...

    @property
    def created(self) -> set[str]:
        """Names of the jobs this driver created (other executors may share the parents)."""
        ...

    def create(self, limits: CgroupLimits) -> JobCgroup:
        """Create a job cgroup with limits applied and no process in it."""
        ...


# ---------------------------------------------------------------- control-file helpers


def write_control(path: str | Path, value: str) -> None:
    """Write one value to a cgroup control file in a single write(2)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_text(path: str | Path) -> str:
    """A control file's (or a /proc file's) whole text, in plain reads: these are read several
    times per job, and a text file object costs several times the system calls' own time."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while part := os.read(fd, 65536):
            parts.append(part)
    finally:
        os.close(fd)
    return b"".join(parts).decode()


def read_int(path: str | Path) -> int:
    """Read a control file holding one integer."""
    return int(read_text(path).split()[0])


def read_keyed(path: str | Path, key: str) -> int:
    """Read `key value` from a flat-keyed control file (memory.events, cpu.stat...)."""
    for line in read_text(path).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return 0


def read_pids(paths: Iterable[str | Path]) -> list[int]:
    """Union of the pids in the given cgroup.procs files (missing files count as empty)."""
    found: set[int] = set()
    for path in paths:
        try:
            found.update(int(line) for line in read_text(path).split())
        except FileNotFoundError:
            continue
    return sorted(found)


def sweep_stale_jobs(parent: Path, min_age_s: float = 60.0) -> None:
    """Remove empty job directories a crashed executor left behind.

    rmdir fails on a cgroup that still has processes, so a live job is never touched; the
    age threshold keeps a sibling executor's freshly created (still empty) job safe.
    """
    now = time.time()
    for child in parent.glob(JOB_PREFIX + "*"):
        try:
            if now - child.stat().st_ctime >= min_age_s:
                child.rmdir()
        except OSError:
            continue


# ---------------------------------------------------------------- detection


@dataclass(frozen=True, slots=True)
class MountInfo:
    """A cgroup filesystem mount: its root inside the hierarchy, mount point and options."""

    root: str
    mountpoint: Path
    fstype: str
    options: frozenset[str]


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def parse_mountinfo(text: str) -> list[MountInfo]:
    """The cgroup and cgroup2 mounts listed in a /proc/<pid>/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(tail[2].split(","))
        mounts.append(MountInfo(_unescape(fields[3]), Path(_unescape(fields[4])), tail[0], options))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Map controller name ('' for the v2 unified hierarchy) to this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def cgroup_dir(mount: MountInfo, path: str) -> Path:
    """The directory of cgroup `path` (as /proc/self/cgroup names it) under `mount`."""
    root = mount.root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return mount.mountpoint / path.lstrip("/")


def ensure_parent(candidates: Iterable[Path]) -> Path:
    """Create (if needed) the first candidate directory this process may write to."""
    errors = []
    for candidate in candidates:
        try:
            candidate.mkdir(exist_ok=True)
        except OSError as exc:
            errors.append(f"{candidate}: {exc.strerror}")
            continue
        if os.access(candidate, os.W_OK):
            return candidate
        errors.append(f"{candidate}: not writable")
    raise SandboxUnavailableError("no writable cgroup parent: " + "; ".join(errors))


def is_busy(exc: OSError) -> bool:
    """True for the errno the kernel uses for 'cgroup has processes' and similar."""
    return exc.errno in (errno.EBUSY, errno.ENOTEMPTY)
