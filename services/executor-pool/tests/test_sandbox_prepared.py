"""bwrap sandboxes prepared ahead of their job, each serving one run.

No timing asserts about speed: these check behaviour. A prepared sandbox serves one run and is
torn down with it, the pool refills, a request of another shape is prepared on demand with its
own shape, a prepared sandbox is the same sandbox as one prepared on demand (what the job sees,
and the limits the host enforces), its clock and CPU time start at the hand-over, a sandbox that
died while waiting is replaced, close() leaves nothing behind, and big code and stdin get
through the hand-over whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from sandbox_helpers import (
    SMALL,
    MiB,
    assert_teardown_complete,
    processes_in_cgroups,
    python_ml_runtimes,
)

from evalmesh_executor.sandbox import OutputChunk, SandboxOutcome, SandboxRequest
from evalmesh_executor.sandbox.bwrap import BwrapConfig, BwrapSandbox
from evalmesh_executor.sandbox.bwrap import sandbox as bwrap_sandbox
from evalmesh_executor.sandbox.bwrap.cgroup_detect import detect_cgroups

# What the job sees of its sandbox, leaving out what names one sandbox (pids, cgroup names).
PROBE = dedent("""
    import os, resource, sys
    def read(path):
        try:
            with open(path) as f:
                return f.read()
        except OSError as e:
            return f"<{e.errno}>"
    print(sorted(os.environ.items()), sys.argv, __file__, __name__, sorted(globals()))
    print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups(), os.getcwd())
    status = dict(line.split(":", 1) for line in read("/proc/self/status").splitlines())
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
        print(key, status[key].strip())
    for limit in ("RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NPROC"):
        print(limit, resource.getrlimit(getattr(resource, limit)))
    for line in read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        print("mount", fields[4], fields[5], fields[-1])
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    print(pids, os.getpid(), os.getppid(), sorted(os.listdir("/proc/self/fd")))
    print(read("/proc/self/cmdline").split("\\0")[:5], os.readlink("/proc/self/fd/0")[:7])
    print(sorted(os.listdir("/tmp")), sorted(os.listdir("/dev/shm")), os.uname().nodename)
    print(sorted(os.listdir("/job")), oct(os.stat("/job").st_mode), read("/job/main.py")[:22])
    print(read("/proc/net/dev").count("\\n"), sys.stdin.read(), sorted(sys.modules)[:8])
    print("probe done", flush=True)
""").encode()


def _request(
    code: bytes, stdin: bytes = b"", runtime: str = "python", **limits: Any
) -> SandboxRequest:
    return SandboxRequest(code, stdin, runtime, limits=replace(SMALL, **limits))


async def _eventually(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.02)


@pytest.fixture
def parent() -> str:
    """A cgroup parent of the test's own, so its processes are found by cgroup."""
    if os.geteuid() != 0:
        pytest.skip("the bwrap backend tests need root (cgroup writes)")
    return "evalmesh-test-" + uuid.uuid4().hex[:12]


@pytest.fixture
async def pooled(parent: str) -> AsyncIterator[BwrapSandbox]:
    """A sandbox keeping one sandbox of SMALL's shape prepared; nothing is left afterwards."""
    config = BwrapConfig(cgroup_parent=parent, prepared=1, prepared_limits=SMALL)
    async with BwrapSandbox(config) as box:
        await _eventually(lambda: box.prepared_waiting() == 1, 20, "the pool never filled")
        yield box
    await _assert_nothing_left(box, parent)


async def _assert_nothing_left(box: BwrapSandbox, parent: str) -> None:
    await _eventually(
        lambda: not box.live_jobs() and not processes_in_cgroups(parent),
        2,
        f"left behind: {box.live_jobs()} {processes_in_cgroups(parent)}",
    )
    for directory in box.cgroups.parents:
        directory.rmdir()


async def test_a_prepared_sandbox_serves_one_run_and_the_pool_refills(pooled: BwrapSandbox) -> None:
    waiting = _waiting_job(pooled)
    first = await pooled.run(_request(b"open('/tmp/left', 'w').write('x'); print('first')"))
    assert first.stdout == b"first\n"
    await _eventually(lambda: not waiting.exists(), 1, "the run took it and tore it down")
    await _eventually(lambda: pooled.prepared_waiting() == 1, 20, "the pool did not refill")
    refilled = _waiting_job(pooled)
    assert refilled != waiting
    second = await pooled.run(_request(b"import os; print(os.listdir('/tmp'))"))
    assert second.stdout == b"[]\n", "a new sandbox: nothing of the first run is there"


async def test_the_pool_is_refilled_after_the_job_that_emptied_it_not_while_it_runs(
    pooled: BwrapSandbox,
) -> None:
    # The job says when it runs; the pool stays empty for as long as it does.
    run = asyncio.ensure_future(
        pooled.run(_request(b"import time; print('running', flush=True); time.sleep(1.5)"))
    )
    await _eventually(lambda: pooled.live_jobs() != [], 10, "the job never started")
    await asyncio.sleep(1.0)  # a preparation takes tens of milliseconds
    assert pooled.prepared_waiting() == 0
    assert len({job.name for job in pooled.live_jobs()}) == 1, "only the running job has cgroups"
    assert (await run).stdout == b"running\n"
    await _eventually(lambda: pooled.prepared_waiting() == 1, 20, "the pool did not refill")


async def test_a_take_from_a_pool_already_short_refills_it_while_the_jobs_run(
    parent: str,
) -> None:
    config = BwrapConfig(cgroup_parent=parent, prepared=2, prepared_limits=SMALL)
    long_job = _request(
        b"import time; print('running', flush=True); time.sleep(4)", wall_timeout=20.0
    )
    running = asyncio.Event()

    async def on_output(chunk: OutputChunk) -> None:
        running.set()

    async with BwrapSandbox(config) as box:
        await _eventually(lambda: box.prepared_waiting() == 2, 20, "the pool never filled")
        first = asyncio.ensure_future(box.run(long_job, on_output))
        await asyncio.wait_for(running.wait(), 10)
        await asyncio.sleep(0.5)  # a preparation takes tens of milliseconds
        # One at a time: the pool waits for the job's end, as with one prepared.
        assert box.prepared_waiting() == 1
        # A second take before the first was replaced: a burst, so the pool refills now.
        second = asyncio.ensure_future(box.run(long_job))
        await _eventually(lambda: box.prepared_waiting() == 2, 2, "the pool did not refill")
        assert not first.done(), "the first job still runs"
        assert not second.done(), "the second job still runs"
        for result in (await first, await second):
            assert (result.outcome, result.stdout) == (SandboxOutcome.EXITED, b"running\n")
    await _assert_nothing_left(box, parent)


async def test_a_prepared_sandbox_is_the_same_sandbox_as_one_prepared_on_demand(
    pooled: BwrapSandbox, parent: str
) -> None:
    stdin = b"the job's stdin"
    from_pool, pool_limits = await _probe_with_host_limits(pooled, stdin)
    async with BwrapSandbox(BwrapConfig(cgroup_parent=parent + "-b")) as fresh:
        assert fresh.prepared_waiting() == 0
        on_demand, demand_limits = await _probe_with_host_limits(fresh, stdin)
        await assert_teardown_complete(fresh, parent + "-b")
    for directory in fresh.cgroups.parents:
        directory.rmdir()
    # Environment, argv, __main__, ids, capabilities, seccomp, rlimits, mounts, processes,
    # descriptors, scratch, /job, hostname, network, stdin, loaded modules.
    assert from_pool == on_demand, "the job sees the same sandbox"
    assert b"NoNewPrivs 1" in from_pool
    assert b"CapEff 0000000000000000" in from_pool
    assert b"['/job/main.py'] /job/main.py __main__" in from_pool
    assert b"the job's stdin" in from_pool
    # The limits the host enforces are the job's, not the waiting interpreter's.
    assert pool_limits == demand_limits == _small_cgroup_limits()


async def test_a_prepared_python_ml_sandbox_is_the_same_as_one_prepared_on_demand(
    parent: str,
) -> None:
    runtimes = python_ml_runtimes()
    stdin = b"the job's stdin"
    pooled_config = BwrapConfig(
        cgroup_parent=parent, prepared=1, prepared_limits=SMALL, runtimes=runtimes
    )
    async with BwrapSandbox(pooled_config) as pooled:
        await _eventually(lambda: pooled.prepared_waiting() == 2, 20, "the pool never filled")
        from_pool, pool_limits = await _probe_with_host_limits(pooled, stdin, "python-ml")
        await _eventually(lambda: pooled.prepared_waiting() == 2, 20, "the pool did not refill")
    await _assert_nothing_left(pooled, parent)
    fresh_config = BwrapConfig(cgroup_parent=parent + "-b", runtimes=runtimes)
    async with BwrapSandbox(fresh_config) as fresh:
        on_demand, demand_limits = await _probe_with_host_limits(fresh, stdin, "python-ml")
        await assert_teardown_complete(fresh, parent + "-b")
    for directory in fresh.cgroups.parents:
        directory.rmdir()
    assert from_pool == on_demand, "the job sees the same python-ml sandbox"
    site_dir = runtimes["python-ml"].tree.site_dir  # type: ignore[union-attr]
    mounted = re.search(rf"mount {site_dir} \S+ ro,".encode(), from_pool)
    assert mounted, "the tree is mounted read-only (the overlay's superblock is ro)"
    assert pool_limits == demand_limits == _small_cgroup_limits()


def _small_cgroup_limits() -> dict[str, str]:
    return {
        "memory.limit_in_bytes": str(SMALL.memory_bytes),
        "pids.max": str(SMALL.max_processes),
        "cpu.cfs_quota_us": str(round(SMALL.cpu_quota * 100_000)),
    }


async def _probe_with_host_limits(
    box: BwrapSandbox, stdin: bytes, runtime: str = "python"
) -> tuple[bytes, dict[str, str]]:
    """Run the probe (then a sleep), read the job's cgroup limits from the host, cancel."""
    printed = bytearray()
    done = asyncio.Event()

    async def on_output(chunk: OutputChunk) -> None:
        printed.extend(chunk.data if chunk.stream == "stdout" else b"")
        if printed.endswith(b"probe done\n"):
            done.set()

    cancel = asyncio.Event()
    sleeper = PROBE + b"\nimport time\ntime.sleep(30)"
    request = _request(sleeper, stdin, runtime)
    task = asyncio.ensure_future(box.run(request, on_output, cancel=cancel))
    await asyncio.wait_for(done.wait(), 20)
    limits = _host_limits(box)
    cancel.set()
    result = await task
    assert result.outcome is SandboxOutcome.CANCELLED
    return result.stdout, limits


def _host_limits(box: BwrapSandbox) -> dict[str, str]:
    """The cgroup v1 limits of the job running (v2 hosts: the same values, other files)."""
    if box.cgroups.version != 1:
        pytest.skip("reads cgroup v1 files; this host is v2")
    (name,) = {path.name for path in box.live_jobs() if _runs_a_job(path)}
    return {
        limit: (parent / name / limit).read_text().strip()
        for limit in _small_cgroup_limits()
        for parent in box.cgroups.parents
        if (parent / name / limit).exists()
    }


def _runs_a_job(path: Path) -> bool:
    """Whether a process of this cgroup has its job's stdin (a waiting one reads a pipe)."""
    procs = path / "cgroup.procs"
    pids = procs.read_text().split() if procs.exists() else []
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/fd/0").startswith("/memfd:stdin"):
                return True
        except OSError:
            continue
    return False


def _waiting_job(box: BwrapSandbox) -> Path:
    """The one job cgroup alive (in its first hierarchy): the prepared sandbox's."""
    (name,) = {path.name for path in box.live_jobs()}
    return box.cgroups.parents[0] / name


def _has_processes(path: Path) -> bool:
    procs = path / "cgroup.procs"
    return procs.exists() and bool(procs.read_text().strip())


async def test_another_shape_is_prepared_on_demand_with_its_own_scratch(
    pooled: BwrapSandbox,
) -> None:
    waiting = _waiting_job(pooled)
    code = b"import os; s = os.statvfs('/tmp'); print(s.f_blocks * s.f_frsize)"
    result = await pooled.run(_request(code, scratch_bytes=4 * MiB))
    assert result.stdout == f"{4 * MiB}\n".encode()
    assert waiting.exists(), "the prepared sandbox of the other shape is still waiting"


async def test_the_wall_timeout_and_cpu_time_count_from_the_hand_over(
    pooled: BwrapSandbox,
) -> None:
    await asyncio.sleep(2.1)  # it waits prepared for longer than the job may run
    # The job's wall timeout leaves it a second besides its sleep, for a loaded host.
    ran = await pooled.run(_request(b"import time\ntime.sleep(1.0)\nprint('ran')", wall_timeout=2))
    assert ran.outcome is SandboxOutcome.EXITED, ran.stderr
    assert 1.0 <= ran.wall_time_s < 2.0
    await _eventually(lambda: pooled.prepared_waiting() == 1, 20, "the pool did not refill")
    spin = dedent("""
        import time
        started = time.process_time()
        while time.process_time() - started < 0.3:
            pass
        print(time.process_time())
    """).encode()
    result = await pooled.run(_request(spin))
    own = float(result.stdout)  # includes the interpreter's start-up, before the hand-over
    # The interpreter's start-up came before the hand-over: not counted; its exit is.
    assert 0.3 <= result.cpu_time_s < own + 0.05
    overrun = await pooled.run(_request(b"import time\ntime.sleep(30)", wall_timeout=1.0))
    assert overrun.outcome is SandboxOutcome.TIMED_OUT
    assert 1.0 <= overrun.wall_time_s < 2.0


async def test_a_prepared_sandbox_that_died_while_waiting_is_replaced_not_used(
    pooled: BwrapSandbox,
) -> None:
    waiting = _waiting_job(pooled)
    for pid in (waiting / "cgroup.procs").read_text().split():
        os.kill(int(pid), 9)
    await _eventually(lambda: not _has_processes(waiting), 5, "the waiting sandbox survived")
    result = await pooled.run(_request(b"print('fine')"))
    assert result.outcome is SandboxOutcome.EXITED
    assert result.stdout == b"fine\n"


async def test_close_tears_every_prepared_sandbox_down(parent: str) -> None:
    config = BwrapConfig(cgroup_parent=parent, prepared=3, prepared_limits=SMALL)
    box = BwrapSandbox(config)
    await box.prepare()
    await _eventually(lambda: box.prepared_waiting() == 3, 30, "the pool never filled")
    assert len(processes_in_cgroups(parent)) >= 3  # bwrap's init (then an interpreter) each
    await box.close()
    await _assert_nothing_left(box, parent)


async def test_a_megabyte_of_code_and_of_stdin_get_through_the_hand_over_whole(
    pooled: BwrapSandbox,
) -> None:
    padding = b"#" * (1 * MiB - 200) + b"\n"
    digest = b"import sys, hashlib\nprint(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"
    code = padding + digest
    stdin = os.urandom(1 * MiB)
    result = await pooled.run(_request(code, stdin))
    assert result.outcome is SandboxOutcome.EXITED, result.stderr[-500:]
    assert result.stdout == hashlib.sha256(stdin).hexdigest().encode() + b"\n"


class _HeldMoves:
    """Wraps the host's cgroup driver so that the first move of a process into a job's cgroups
    waits until the test lets it go, as the kernel makes a move wait for an RCU grace period."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver
        self.entered = threading.Event()
        self.go = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)

    def create(self, limits: Any) -> Any:
        job = self._driver.create(limits)
        held = self

        class Job:
            def __getattr__(self, name: str) -> Any:
                return getattr(job, name)

            def add_process(self, pid: int) -> None:
                if not held.entered.is_set():
                    held.entered.set()
                    held.go.wait(30)
                job.add_process(pid)

        return Job()


@pytest.fixture
async def held_pool(
    parent: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[BwrapSandbox, _HeldMoves]]:
    """A sandbox whose pool's first preparation is held in its move into its cgroups."""
    made: list[_HeldMoves] = []

    def detect(*args: Any) -> _HeldMoves:
        made.append(_HeldMoves(detect_cgroups(*args)))
        return made[-1]

    monkeypatch.setattr(bwrap_sandbox, "detect_cgroups", detect)
    box = BwrapSandbox(BwrapConfig(cgroup_parent=parent, prepared=1, prepared_limits=SMALL))
    await box.prepare()
    (held,) = made
    try:
        assert await asyncio.to_thread(held.entered.wait, 20), "the pool never began preparing"
        yield box, held
    finally:
        held.go.set()
        await box.close()
    await _assert_nothing_left(box, parent)


async def test_runs_go_on_while_a_preparation_waits_to_move_into_its_cgroups(
    held_pool: tuple[BwrapSandbox, _HeldMoves],
) -> None:
    box, held = held_pool
    # Another shape is prepared on demand, and runs, while the pool's move is still held.
    result = await box.run(_request(b"print('meanwhile')", scratch_bytes=4 * MiB))
    assert result.stdout == b"meanwhile\n"
    assert not held.go.is_set()
    assert box.prepared_waiting() == 0
    held.go.set()
    await _eventually(lambda: box.prepared_waiting() == 1, 20, "the pool did not fill")
    assert (await box.run(_request(b"print('after')"))).stdout == b"after\n"


async def test_closing_while_a_preparation_moves_into_its_cgroups_leaves_nothing(
    held_pool: tuple[BwrapSandbox, _HeldMoves],
) -> None:
    box, held = held_pool
    closing = asyncio.ensure_future(box.close())
    await asyncio.sleep(0.2)
    held.go.set()  # the move ends after the close began: the teardown must still find it
    await closing
