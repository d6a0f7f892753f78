"""Teardown and neighbours: U2 (nothing survives a job), U5 (a concurrent canary is
unaffected), and F04's sandbox half (an executor killed with SIGKILL takes its jobs along)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sandbox_helpers import (
    Runner,
    assert_gone,
    assert_no_process_left,
    assert_still_fast,
    job_processes,
    run_until_printed,
    timed_run,
    wait_for_job_processes,
)

from evalmesh_executor.sandbox import SandboxOutcome
from evalmesh_executor.sandbox.bwrap import BwrapSandbox
from evalmesh_executor.sandbox.bwrap.binary import bundled_bwrap
from evalmesh_executor.sandbox.bwrap.cgroup_detect import detect_cgroups
from evalmesh_executor.sandbox.bwrap.cgroups import JOB_PREFIX
from evalmesh_executor.sandbox.bwrap.layout import BOOT_MARKER
from evalmesh_executor.sandbox.bwrap.reaper import StrandedSweeper

POOL_SPINNER = """
import multiprocessing
def spin(_):
    while True:
        pass
multiprocessing.Pool(8).map(spin, range(8))
"""

SPAWN_MARKED_CHILDREN = """
import os, subprocess, time
for _ in range(3):
    subprocess.Popen(["/usr/bin/python3", "-c", "import time; time.sleep(1000)", {marker!r}])
print("spawned", flush=True)
time.sleep({linger})
"""


async def test_u2_no_process_or_cgroup_of_a_job_exists_after_its_result(
    sandbox: BwrapSandbox, run: Runner
) -> None:
    marker = "u2-" + uuid.uuid4().hex
    # Counted once the job says it spawned them; it lingers long enough for a loaded host.
    code = SPAWN_MARKED_CHILDREN.format(marker=marker, linger=2)
    job = await run_until_printed(run, code, b"spawned", wall_timeout=10)
    cgroup_dirs = sandbox.live_jobs()
    assert len(cgroup_dirs) == len(sandbox.cgroups.parents), "one directory per hierarchy"
    await wait_for_job_processes(marker.encode(), 3, within_s=1.0)
    result = await job
    assert result.outcome is SandboxOutcome.EXITED
    await assert_no_process_left(marker.encode())
    await assert_gone(cgroup_dirs)


async def test_a_sandbox_whose_bwrap_dies_first_leaves_no_zombie_and_is_reaped_here(
    sandbox: BwrapSandbox, run: Runner
) -> None:
    marker = "orphan-" + uuid.uuid4().hex
    code = SPAWN_MARKED_CHILDREN.format(marker=marker, linger=30)
    job = await run_until_printed(run, code, b"spawned", wall_timeout=40)
    await wait_for_job_processes(marker.encode(), 3, within_s=1.0)
    inside = [pid for name in {p.name for p in sandbox.live_jobs()} for pid in _pids_of(name)]
    monitors = _bwrap_monitors()
    assert inside
    assert len(monitors) == 1
    for pid in monitors:  # bwrap's outer process goes first: its sandbox is orphaned
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    result = await job
    ended = time.monotonic() - killed
    assert result.outcome is not SandboxOutcome.EXITED or result.signal is not None
    # Every process of the sandbox is gone, reaped here (this process is their subreaper)
    # rather than left as zombies of the host's init until it gets round to them (U2: 1 s).
    assert not _states(inside), "still there (Z: a zombie nobody reaped)"
    assert ended < 1.0
    await assert_no_process_left(marker.encode())


def _pids_of(job_name: str) -> list[int]:
    """Host pids in a job cgroup (any hierarchy)."""
    found: set[int] = set()
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for procs in hierarchy.glob(f"**/{job_name}/cgroup.procs"):
            found.update(int(pid) for pid in procs.read_text().split())
    return sorted(found)


def _bwrap_monitors() -> list[int]:
    """bwrap processes that are this test process's children (one per running sandbox)."""
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"bwrap")
    ]


def _states(pids: list[int]) -> dict[int, str]:
    """The state letter of each of ``pids`` that still exists."""
    states = {}
    for pid in pids:
        try:
            states[pid] = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
        except OSError:
            continue
    return states


@pytest.mark.parametrize(
    ("hostile", "limits"),
    [
        ("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", {}),
        ("b = b'x' * (1 << 30)", {}),
        ("import os\nwhile True: os.write(1, b'z' * 65536)", {}),
        (POOL_SPINNER, {"max_processes": 64, "memory_bytes": 256 * 1024 * 1024}),
        ("import time\nwhile True: open('/tmp/f', 'ab').write(b'q' * 65536)", {}),
    ],
    ids=["fork-bomb", "memory-hog", "output-flood", "pool-spinner", "scratch-filler"],
)
async def test_u5_a_concurrent_canary_gets_the_right_output(
    run: Runner, hostile: str, limits: dict[str, int]
) -> None:
    canary_code = "import sys\nprint(sum(range(10)), sys.stdin.read())"
    # The canary is timed alone first, on the same host, then beside the hostile job.
    _, alone = await timed_run(run, canary_code, stdin=b"ok")
    bad = asyncio.ensure_future(run(hostile, wall_timeout=1.5, **limits))
    await asyncio.sleep(0.3)
    canary, beside_the_job = await timed_run(run, canary_code, stdin=b"ok")
    assert canary.outcome is SandboxOutcome.EXITED
    assert canary.stdout == b"45 ok\n"
    assert_still_fast(beside_the_job, alone)
    assert not (await bad).outcome.platform_fault


EXECUTOR = """
import asyncio, sys
from evalmesh_executor.sandbox import SandboxLimits, SandboxRequest
from evalmesh_executor.sandbox.bwrap import BwrapConfig, BwrapSandbox

async def main():
    async with BwrapSandbox(BwrapConfig(cgroup_parent=sys.argv[2])) as sandbox:
        async def started(chunk):
            print("job running", flush=True)
        with open(sys.argv[1], "rb") as source:  # not in argv: the marker must not be
            code = source.read()                  # in the executor's own command line
        await sandbox.run(SandboxRequest(code, limits=SandboxLimits(wall_timeout=60)), started)

asyncio.run(main())
"""


async def test_f04_an_executor_killed_with_sigkill_takes_its_sandbox_along(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    marker = "f04-" + uuid.uuid4().hex
    parent_name = "evalmesh-test-" + uuid.uuid4().hex[:12]
    parents = detect_cgroups(parent_name=parent_name).parents
    script = tmp_path / "executor.py"
    script.write_text(EXECUTOR)
    job_code = tmp_path / "job.py"
    job_code.write_text(SPAWN_MARKED_CHILDREN.format(marker=marker, linger=1000))
    executor = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(job_code), parent_name, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert executor.stdout is not None
        assert await asyncio.wait_for(executor.stdout.readline(), 10) == b"job running\n"
        await _wait_for(lambda: len(job_processes(marker.encode())) == 3, 5.0)
    finally:
        executor.send_signal(signal.SIGKILL)
        await executor.wait()
    await _wait_for(lambda: job_processes(marker.encode()) == [], 1.0)
    leftovers = [job for parent in parents for job in parent.glob(JOB_PREFIX + "*")]
    assert len(leftovers) == len(parents), "the killed executor could not remove its job"
    for directory in [*leftovers, *parents]:
        _rmdir_when_empty(directory)  # succeeds only because the job cgroup is empty


def _rmdir_when_empty(directory: Path, within_s: float = 2.0) -> None:
    """rmdir a cgroup; the kernel may report it busy for a moment after its last task exited."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            directory.rmdir()
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.02)


async def _wait_for(condition: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within_s} s")
        await asyncio.sleep(0.02)


async def test_a_sandbox_a_killed_executor_left_waiting_is_killed_and_a_live_one_is_not(
    sandbox: BwrapSandbox, run: Runner
) -> None:
    if os.geteuid() != 0 or not isinstance(sandbox, BwrapSandbox):
        pytest.skip("bwrap's sandboxes, as root")
    # A live job: its sandbox's pid 1 carries the marker too, under its bwrap monitor. It
    # outlasts the sweep below, so no run's own teardown can be what reaps the stranded one.
    code = "import time; print('up', flush=True); time.sleep(6); print('ok')"
    live = await run_until_printed(run, code, b"up", wall_timeout=20)
    # What an executor killed while starting a sandbox leaves: the monitor has reported the
    # sandbox's pid and not yet released it (here it waits on --userns-block-fd), then dies.
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    monitor = await asyncio.create_subprocess_exec(
        "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
        bundled_bwrap() or "bwrap", "--unshare-user", "--unshare-pid",
        "--info-fd", str(info_w), "--userns-block-fd", str(block_r),
        "--ro-bind", "/", "/", "--", "/bin/true", BOOT_MARKER.decode(),
        pass_fds=(info_w, block_r),
    )  # fmt: skip
    os.close(info_w)
    os.close(block_r)
    try:
        pid_one = int(json.loads(await asyncio.to_thread(_read_json, info_r))["child-pid"])
    finally:
        monitor.kill()
        await monitor.wait()
        os.close(info_r)
        os.close(block_w)
    await asyncio.sleep(0.2)
    assert not _zombie(pid_one), "nothing else ends a sandbox left waiting"
    # The executor's sweep kills it, and reaps it: it was re-parented to this process (a
    # subreaper) when its monitor died, and no run waits for it.
    sweeper = StrandedSweeper(BOOT_MARKER, 65534, every_s=0.2, min_age_s=0)
    sweeper.start()
    try:
        await _wait_for(lambda: not os.path.exists(f"/proc/{pid_one}"), 5.0)
    finally:
        sweeper.stop()
    assert not live.done()
    result = await live
    assert (result.outcome, result.stdout) == (SandboxOutcome.EXITED, b"up\nok\n")


def _read_json(fd: int) -> str:
    data = b""
    while b"}" not in data:
        part = os.read(fd, 4096)
        assert part, f"bwrap reported no pid: {data!r}"
        data += part
    return data.decode()


def _zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
