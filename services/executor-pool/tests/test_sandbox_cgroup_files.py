"""cgroup control-file logic against fake directory trees (v2 cannot run on this host)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evalmesh_executor.sandbox import SandboxError, SandboxUnavailableError
from evalmesh_executor.sandbox.bwrap.cgroup_detect import detect_cgroups
from evalmesh_executor.sandbox.bwrap.cgroup_v1 import CgroupV1Driver
from evalmesh_executor.sandbox.bwrap.cgroup_v2 import SUPERVISOR_LEAF, CgroupV2Driver
from evalmesh_executor.sandbox.bwrap.cgroups import (
    CgroupLimits,
    cgroup_dir,
    parse_mountinfo,
    parse_proc_cgroup,
)

LIMITS = CgroupLimits(memory_bytes=64 * 1024 * 1024, max_processes=32, cpu_quota=1.5)

V2_MOUNTINFO = "30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTINFO = (
    "32 31 0:29 / {root}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / {root}/memory rw - cgroup cgroup rw,memory\n"
    "39 31 0:36 / {root}/pids rw - cgroup cgroup rw,pids\n"
    "41 31 0:38 / {root}/unified rw - cgroup2 cgroup2 rw\n"
)


def fake_v2(tmp_path: Path, own: str = "/svc") -> Path:
    """A unified hierarchy where the executor sits in `own`, which has processes."""
    root = tmp_path / "cgroup"
    base = root / own.strip("/")
    base.mkdir(parents=True)
    (base / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (base / "cgroup.subtree_control").write_text("")
    (base / "cgroup.procs").write_text(f"{os.getpid()}\n")
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "mountinfo").write_text(V2_MOUNTINFO.format(root=root))
    (proc / "cgroup").write_text(f"0::{own}\n")
    return tmp_path


def test_v2_is_detected_and_controllers_are_delegated_to_the_job_parent(tmp_path: Path) -> None:
    driver = detect_cgroups(fake_v2(tmp_path) / "proc")
    base = tmp_path / "cgroup" / "svc"
    assert isinstance(driver, CgroupV2Driver)
    assert driver.parents == (base / "evalmesh",)
    assert (base / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (base / "evalmesh" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"


def test_v2_job_gets_memory_without_swap_pids_and_cpu_limits(tmp_path: Path) -> None:
    driver = detect_cgroups(fake_v2(tmp_path) / "proc")
    job = driver.create(LIMITS)
    path = driver.parents[0] / job.name
    assert job.name.startswith("job-")
    assert (path / "memory.max").read_text() == str(64 * 1024 * 1024)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "memory.oom.group").read_text() == "1"
    assert (path / "pids.max").read_text() == "32"
    assert (path / "cpu.max").read_text() == "150000 100000"


def test_v2_add_process_writes_cgroup_procs(tmp_path: Path) -> None:
    job = detect_cgroups(fake_v2(tmp_path) / "proc").create(LIMITS)
    job.add_process(4242)
    assert job.pids() == [4242]


def test_v2_stats_come_from_cpu_stat_memory_peak_and_memory_events(tmp_path: Path) -> None:
    driver = detect_cgroups(fake_v2(tmp_path) / "proc")
    job = driver.create(LIMITS)
    path = driver.parents[0] / job.name
    (path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (path / "memory.peak").write_text("12345678\n")
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    stats = job.stats()
    assert (stats.cpu_time_s, stats.peak_memory_bytes, stats.oom_kills) == (2.5, 12345678, 1)


def test_v2_peak_memory_falls_back_to_sampled_memory_current(tmp_path: Path) -> None:
    driver = detect_cgroups(fake_v2(tmp_path) / "proc")
    job = driver.create(LIMITS)
    path = driver.parents[0] / job.name
    (path / "cpu.stat").write_text("usage_usec 1\n")
    (path / "memory.events").write_text("oom_kill 0\n")
    for current in (1000, 9000, 3000):
        (path / "memory.current").write_text(f"{current}\n")
        job.sample()
    assert job.stats().peak_memory_bytes == 9000


async def test_v2_kill_all_writes_cgroup_kill_and_waits_for_an_empty_cgroup(
    tmp_path: Path,
) -> None:
    driver = detect_cgroups(fake_v2(tmp_path) / "proc")
    job = driver.create(LIMITS)
    path = driver.parents[0] / job.name
    (path / "cgroup.kill").write_text("0")
    (path / "cgroup.procs").write_text("")
    await job.kill_all(0.5)
    (path / "cgroup.procs").write_text("999999999\n")
    with pytest.raises(SandboxError, match="survive"):
        await job.kill_all(0.05)
    assert (path / "cgroup.kill").read_text() == "1"


def test_v2_without_a_needed_controller_falls_back_or_fails(tmp_path: Path) -> None:
    root = fake_v2(tmp_path)
    (tmp_path / "cgroup" / "svc" / "cgroup.controllers").write_text("cpu io\n")
    with pytest.raises(SandboxUnavailableError):
        detect_cgroups(root / "proc")


def test_v2_supervisor_leaf_is_used_when_the_base_refuses_with_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "cgroup" / "svc"
    fake_v2(tmp_path)
    calls = []

    def busy_once(directory: Path) -> None:
        calls.append(directory)
        if len(calls) == 1:
            raise OSError(16, "Device or resource busy")
        (directory / "cgroup.subtree_control").write_text("+memory +pids +cpu")

    monkeypatch.setattr("evalmesh_executor.sandbox.bwrap.cgroup_v2._enable_controllers", busy_once)
    (base / "cgroup.procs").write_text(f"{os.getpid()}\n")
    CgroupV2Driver.setup(base, "evalmesh")
    # The fake file keeps only the last write; the real one accumulates.
    assert (base / SUPERVISOR_LEAF / "cgroup.procs").read_text() == str(os.getpid())
    assert calls[:2] == [base, base]


def test_v1_hierarchies_are_found_in_mountinfo_including_comounted_ones(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    mounts = parse_mountinfo(V1_MOUNTINFO.format(root=root))
    own = parse_proc_cgroup("4:memory:/pod/abc\n3:cpu,cpuacct:/\n2:pids:/\n0::/\n")
    for name in ("cpu,cpuacct", "memory/pod/abc", "pids"):
        (root / name).mkdir(parents=True)
        (root / name / "cgroup.procs").write_text("")
    assert cgroup_dir(mounts[1], own["memory"]) == root / "memory" / "pod" / "abc"
    driver = CgroupV1Driver.discover(mounts, own, "evalmesh")
    assert driver is not None
    assert driver.parent_dirs["memory"] == root / "memory" / "pod" / "abc" / "evalmesh"
    assert driver.parent_dirs["cpu"] == driver.parent_dirs["cpuacct"]
    assert "freezer" not in driver.parent_dirs


def test_v1_without_a_memory_hierarchy_is_not_usable(tmp_path: Path) -> None:
    mounts = parse_mountinfo(V1_MOUNTINFO.format(root=tmp_path).replace("memory", "blkio"))
    assert CgroupV1Driver.discover(mounts, {}, "evalmesh") is None


def test_mount_root_below_the_hierarchy_root_is_translated() -> None:
    (mount,) = parse_mountinfo("1 0 0:1 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert cgroup_dir(mount, "/kubepods/pod1/c1") == Path("/sys/fs/cgroup/pod1/c1")
