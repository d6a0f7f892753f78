"""Detect at start whether this host gives the sandbox cgroup v2 or v1."""

from __future__ import annotations

from pathlib import Path

from evalmesh_executor.sandbox.core.models import SandboxUnavailableError

from . import cgroup_v1, cgroup_v2
from .cgroups import CgroupDriver, cgroup_dir, parse_mountinfo, parse_proc_cgroup

__all__ = ["detect_cgroups"]


def detect_cgroups(proc: Path = Path("/proc"), parent_name: str = "evalmesh") -> CgroupDriver:
    """Pick cgroup v2 when its unified hierarchy has memory, pids and cpu, else v1."""
    mounts = parse_mountinfo((proc / "self" / "mountinfo").read_text())
    own = parse_proc_cgroup((proc / "self" / "cgroup").read_text())
    for mount in mounts:
        if mount.fstype == "cgroup2" and "" in own:
            base = cgroup_dir(mount, own[""])
            if cgroup_v2.has_controllers(base):
                return cgroup_v2.CgroupV2Driver.setup(base, parent_name)
    v1 = cgroup_v1.CgroupV1Driver.discover(mounts, own, parent_name)
    if v1 is not None:
        return v1
    raise SandboxUnavailableError(
        "neither cgroup v2 (memory, pids, cpu delegated) nor v1 (memory, pids, cpu, cpuacct)"
    )
