"""The docker backend's warm pool: containers started ahead of demand, each serving one run.

No timing asserts about speed: these check behaviour. A warm container is used once and
removed, the pool refills, a request of another shape runs cold with its own limits, a warm
container is the same sandbox as a cold one, its clock starts at the hand-over, and close()
and a restart after a crash leave no warm container behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from textwrap import dedent
from typing import Any

import docker
import pytest
from docker_helpers import docker_sandbox
from sandbox_helpers import SMALL, MiB

from evalmesh_executor.sandbox import OutputChunk, SandboxLimits, SandboxOutcome, SandboxRequest
from evalmesh_executor.sandbox.docker import (
    LABEL_DEADLINE,
    LABEL_OWNER,
    DockerConfig,
    DockerSandbox,
)
from evalmesh_executor.sandbox.docker.spec import container_spec, settings_shape
from evalmesh_testing.docker_engine import PYTHON_IMAGE, Engine

pytestmark = pytest.mark.docker

# Prints what the job sees of its sandbox, leaving out what names one container (its overlay
# directories, the job's pid).
PROBE = dedent("""
    import os, resource
    def read(path):
        try:
            with open(path) as f:
                return f.read()
        except OSError as e:
            return f"<{e.errno}>"
    print(sorted(os.environ.items()))
    print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups(), os.getcwd())
    status = dict(line.split(":", 1) for line in read("/proc/self/status").splitlines())
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
        print(key, status[key].strip())
    for limit in ("RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NPROC"):
        print(limit, resource.getrlimit(getattr(resource, limit)))
    for line in read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        options = [o for o in fields[-1].split(",") if "dir=" not in o]  # overlay paths
        print("mount", fields[4], fields[5], options)
    for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                 "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
                 "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                 "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.swap.max",
                 "/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/cpu.max"):
        print(path, read(path).strip())
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    print(len(pids), pids[0], os.getppid())  # the job's pid depends on runc's threads
    print(read("/proc/1/cmdline").split("\\0")[:6])
    print(sorted(os.listdir("/tmp")), sorted(os.listdir("/dev/shm")), os.uname().nodename)
    print(read("/proc/net/dev").count("\\n"), os.listdir("/sys/class/net"))
    print("probe done", flush=True)
""").encode()
# The job's own container id, where its cgroup path shows it (cgroup v1 without a namespace).
CGROUP_ID = re.compile(rb"[0-9a-f]{64}")


def _api(engine: Engine) -> docker.APIClient:
    return docker.APIClient(base_url=engine.base_url, version="1.41", timeout=30)


async def _eventually(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        await asyncio.sleep(0.02)


async def _full(box: DockerSandbox, count: int) -> list[str]:
    """The warm containers once `count` of them wait."""
    await _eventually(lambda: len(box.warm_containers) == count, 20, "the pool never filled")
    return box.warm_containers


@pytest.fixture
async def warm_box(docker_engine: Engine) -> AsyncIterator[DockerSandbox]:
    """A sandbox keeping one container of SMALL's shape warm; U2 holds after the test."""
    async with docker_sandbox(docker_engine, warm=1, warm_limits=SMALL) as box:
        yield box


def _request(code: bytes, **limits: Any) -> SandboxRequest:
    return SandboxRequest(code, limits=replace(SMALL, **limits), evaluation_id="ev-warm")


async def test_a_warm_container_serves_one_run_and_is_never_reused(
    warm_box: DockerSandbox, docker_engine: Engine
) -> None:
    code = dedent("""
        import os
        print(sorted(os.listdir("/tmp")), sorted(os.listdir("/dev/shm")))
        for path in ("/tmp/left-by-a-job", "/dev/shm/left-by-a-job"):
            open(path, "w").write("secret")
        print(open("/proc/self/cgroup").read())
    """).encode()
    (first,) = await _full(warm_box, 1)
    one = await warm_box.run(_request(code))
    assert one.outcome is SandboxOutcome.EXITED, one.stderr
    assert first not in warm_box.warm_containers, "the run took the warm container"
    (second,) = await _full(warm_box, 1)
    assert second != first
    two = await warm_box.run(_request(code))
    assert two.outcome is SandboxOutcome.EXITED, two.stderr
    assert one.stdout.splitlines()[0] == two.stdout.splitlines()[0] == b"[] []"
    seen = [set(CGROUP_ID.findall(result.stdout)) for result in (one, two)]
    if all(seen):  # cgroup v1 (host cgroup namespace): the path names the container
        assert seen == [{first.encode()}, {second.encode()}]
    await warm_box.settle()
    live = set(await warm_box.live_containers())
    assert first not in live
    assert second not in live
    with _api(docker_engine) as api:
        names = [c["Names"][0] for c in api.containers(all=True, filters={"id": first})]
    assert names == []


async def test_the_pool_refills_in_the_background_after_runs_take_from_it(
    docker_engine: Engine,
) -> None:
    async with docker_sandbox(docker_engine, warm=2, warm_limits=SMALL) as box:
        before = set(await _full(box, 2))
        results = await asyncio.gather(*(box.run(_request(b"print(1)")) for _ in range(3)))
        assert [r.stdout for r in results] == [b"1\n"] * 3
        await _eventually(lambda: len(box.warm_containers) == 2, 20, "the pool never refilled")
        assert not before & set(box.warm_containers), "every waiting container is new"


async def test_a_request_of_another_shape_runs_cold_with_its_own_limits(
    warm_box: DockerSandbox, docker_engine: Engine
) -> None:
    (waiting,) = await _full(warm_box, 1)
    code = dedent("""
        import resource
        for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):
            try:
                print(open(path).read().strip())
            except OSError:
                pass
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    """).encode()
    result = await warm_box.run(_request(code, memory_bytes=96 * MiB, max_open_files=50))
    assert result.outcome is SandboxOutcome.EXITED, result.stderr
    assert result.stdout.split() == [str(96 * MiB).encode(), b"50"]
    assert result.applied_limits.memory_bytes == 96 * MiB
    assert warm_box.warm_containers == [waiting], "the warm container was left alone"
    # A job longer than warm_max_wall_s would outlive a warm container's deadline: cold too.
    longer = warm_box.config.warm_max_wall_s + 1
    assert (await warm_box.run(_request(code, wall_timeout=longer))).stdout.split()[-1] == b"64"
    assert warm_box.warm_containers == [waiting]
    # Only the wall timeout and the output cap may differ: they are not container settings.
    other = await warm_box.run(_request(code, wall_timeout=5.0, max_output_bytes=1000))
    assert other.stdout.split() == [str(SMALL.memory_bytes).encode(), b"64"]
    assert waiting not in warm_box.warm_containers


async def test_a_warm_container_is_the_same_sandbox_as_a_cold_one(
    warm_box: DockerSandbox, docker_engine: Engine
) -> None:
    (waiting,) = await _full(warm_box, 1)
    with _api(docker_engine) as api:
        warm_attrs = api.inspect_container(waiting)
    warm = await warm_box.run(_request(PROBE))
    assert warm.outcome is SandboxOutcome.EXITED, warm.stderr
    async with docker_sandbox(docker_engine) as cold_box:  # no pool: a container per run
        cold_attrs, cold = await _inspected_run(cold_box, docker_engine, PROBE)
    assert warm_attrs["State"]["Running"]
    assert warm_attrs["HostConfig"] == cold_attrs["HostConfig"]
    for key in ("User", "Env", "WorkingDir", "Hostname", "NetworkDisabled", "Image",
                "Entrypoint", "OpenStdin", "StdinOnce", "AttachStdin", "Tty"):  # fmt: skip
        assert warm_attrs["Config"][key] == cold_attrs["Config"][key], key
    warm_cmd, cold_cmd = warm_attrs["Config"]["Cmd"], cold_attrs["Config"]["Cmd"]
    assert warm_cmd[:-2] == cold_cmd[:-2]  # all but pid 1's idle limit
    assert set(warm_attrs["Config"]["Labels"]) == set(cold_attrs["Config"]["Labels"])
    # What the job sees: environment, ids, capabilities, seccomp, rlimits, mounts, cgroup
    # limits, processes, scratch, hostname, network.
    assert warm.stdout == cold, "the job sees the same sandbox"
    assert b"NoNewPrivs 1" in warm.stdout
    assert b"CapEff 0000000000000000" in warm.stdout


async def _inspected_run(
    box: DockerSandbox, engine: Engine, code: bytes
) -> tuple[dict[str, Any], bytes]:
    """Run the probe (then a long sleep); inspect its container; cancel; the probe's output."""
    printed = bytearray()
    done = asyncio.Event()

    async def on_output(chunk: OutputChunk) -> None:
        printed.extend(chunk.data if chunk.stream == "stdout" else b"")
        if printed.endswith(b"probe done\n"):
            done.set()

    cancel = asyncio.Event()
    sleeper = code + b"\nimport time\ntime.sleep(30)"
    task = asyncio.ensure_future(box.run(_request(sleeper), on_output, cancel=cancel))
    await asyncio.wait_for(done.wait(), 20)
    (container,) = await box.live_containers()
    with _api(engine) as api:
        attrs: dict[str, Any] = api.inspect_container(container)
    cancel.set()
    result = await task
    assert result.outcome is SandboxOutcome.CANCELLED
    return attrs, result.stdout


async def test_the_wall_timeout_counts_from_the_hand_over_not_from_the_start(
    warm_box: DockerSandbox, docker_engine: Engine
) -> None:
    (waiting,) = await _full(warm_box, 1)
    await asyncio.sleep(2.1)  # it sits warm for longer than the job may run
    # The job's wall timeout leaves it a second besides its sleep, for a loaded host.
    code = b"import time\ntime.sleep(1.0)\nprint('ran fully')"
    task = asyncio.ensure_future(warm_box.run(_request(code, wall_timeout=2.0)))
    with _api(docker_engine) as api:  # labels are fixed at create: the name tells instead
        await _eventually(
            lambda: (
                [c["Id"] for c in api.containers(filters={"name": "evalmesh-job-ev-warm-"})]
                == [waiting]
            ),
            1.0,
            "the warm container was not named after its evaluation",
        )
    result = await task
    assert waiting not in warm_box.warm_containers, "the run took the warm container"
    assert result.outcome is SandboxOutcome.EXITED, result.detail
    assert result.stdout == b"ran fully\n"
    assert 1.0 <= result.wall_time_s < 2.0
    # A job that does overrun is stopped at its own wall timeout, counted the same way.
    (again,) = await _full(warm_box, 1)
    overrun = await warm_box.run(_request(b"import time\ntime.sleep(30)", wall_timeout=1.0))
    assert again not in warm_box.warm_containers
    assert overrun.outcome is SandboxOutcome.TIMED_OUT
    assert 1.0 <= overrun.wall_time_s < 2.0


async def test_cpu_time_is_the_jobs_not_the_waiting_containers(warm_box: DockerSandbox) -> None:
    await _full(warm_box, 1)
    spin = dedent("""
        import time
        started = time.process_time()
        while time.process_time() - started < 0.3:
            pass
        print(time.process_time())
    """).encode()
    result = await warm_box.run(_request(spin))
    own = float(result.stdout)
    # pid 1's own start-up (its interpreter, ~50 ms) came before the hand-over: not counted.
    assert own <= result.cpu_time_s < own + 0.04
    assert 0 < result.peak_memory_bytes < SMALL.memory_bytes


async def test_warm_containers_are_replaced_after_max_idle_long_before_their_deadline(
    docker_engine: Engine,
) -> None:
    settings = {"warm": 1, "warm_limits": SMALL, "warm_max_idle_s": 1.0, "warm_max_wall_s": 60.0}
    before = time.time()  # every container of the pool is created after this
    async with docker_sandbox(docker_engine, **settings) as box:
        (first,) = await _full(box, 1)
        with _api(docker_engine) as api:
            labels = api.inspect_container(first)["Config"]["Labels"]
        deadline = float(labels[LABEL_DEADLINE])
        # Waiting (max idle) plus a job of up to max_wall, plus the grace, from its creation
        # (the label holds whole seconds).
        assert deadline >= int(before + 1.0 + 60.0 + box.config.deadline_grace_s)
        assert labels[LABEL_OWNER] == box.owner
        await _eventually(lambda: box.warm_containers not in ([], [first]), 10, "never replaced")
        (second,) = box.warm_containers
    assert first != second


async def test_close_removes_every_warm_container(docker_engine: Engine) -> None:
    owner = "evalmesh-test-" + uuid.uuid4().hex[:12]
    config = DockerConfig(
        base_url=docker_engine.base_url,
        owner=owner,
        images={"python": PYTHON_IMAGE},
        warm=2,
        warm_limits=SMALL,
    )
    box = DockerSandbox(config)
    await box.prepare()
    try:
        waiting = await _full(box, 2)
        with _api(docker_engine) as api:
            listed = api.containers(filters={"label": f"{LABEL_OWNER}={owner}"})
            assert sorted(c["Id"] for c in listed) == sorted(waiting)
            assert {c["State"] for c in listed} == {"running"}
    finally:
        await box.close()
    with _api(docker_engine) as api:
        assert api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"}) == []


async def test_a_warm_container_that_died_while_waiting_is_replaced_not_used(
    warm_box: DockerSandbox, docker_engine: Engine
) -> None:
    (waiting,) = await _full(warm_box, 1)
    with _api(docker_engine) as api:
        api.kill(waiting, "SIGKILL")
    await _eventually(lambda: warm_box.warm_containers not in ([], [waiting]), 20, "never replaced")
    result = await warm_box.run(_request(b"print('fine')"))
    assert (result.outcome, result.stdout) == (SandboxOutcome.EXITED, b"fine\n")


CRASHING_EXECUTOR = """
import asyncio, sys
from evalmesh_executor.sandbox import SandboxLimits
from evalmesh_executor.sandbox.docker import DockerConfig, DockerSandbox

async def main():
    config = DockerConfig(
        base_url=sys.argv[1], owner=sys.argv[2], images={"python": sys.argv[3]}, warm=2,
        warm_limits=SandboxLimits(),
    )
    sandbox = DockerSandbox(config)
    await sandbox.prepare()
    while len(sandbox.warm_containers) < 2:
        await asyncio.sleep(0.05)
    print(" ".join(sandbox.warm_containers), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_warm_containers_of_a_crashed_process_stop_and_are_reaped_at_prepare(
    docker_engine: Engine, tmp_path: Path
) -> None:
    owner = "evalmesh-test-" + uuid.uuid4().hex[:12]
    script = tmp_path / "executor.py"
    script.write_text(CRASHING_EXECUTOR)
    crashing = await asyncio.create_subprocess_exec(
        sys.executable, str(script), docker_engine.base_url, owner, PYTHON_IMAGE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert crashing.stdout is not None
        left = (await asyncio.wait_for(crashing.stdout.readline(), 60)).decode().split()
    finally:
        os.kill(crashing.pid, signal.SIGKILL)
        await crashing.wait()
    assert len(left) == 2
    api = _api(docker_engine)

    def states() -> list[str]:
        listed = api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
        return sorted(str(c["State"]) for c in listed)

    # The executor's connection was their lifeline: their pid 1 exits with it.
    await _eventually(lambda: states() == ["exited", "exited"], 5, "a warm container still runs")
    config = DockerConfig(
        base_url=docker_engine.base_url, owner=owner, images={"python": PYTHON_IMAGE}
    )
    async with DockerSandbox(config):  # a restart under the same owner
        ids = {c["Id"] for c in api.containers(all=True)}
    api.close()
    assert not ids & set(left)


# ---------------------------------------------------------------------- no engine needed


def _settings(limits: SandboxLimits) -> tuple[object, object]:
    spec = container_spec(
        name="x", image="i", command=["c"], limits=limits, host_cpus=64, labels={},
        seccomp_profile=None,
    )  # fmt: skip
    return spec.config, spec.host_config


def test_only_the_wall_timeout_and_output_cap_are_not_container_settings() -> None:
    base = SandboxLimits()
    for limit in dataclasses.fields(SandboxLimits):
        value = getattr(base, limit.name)
        changed = replace(base, **{limit.name: value * 2})
        same_settings = repr(_settings(changed)) == repr(_settings(base))
        same_shape = settings_shape(changed) == settings_shape(base)
        assert same_settings == same_shape, limit.name
        assert same_shape == (limit.name in ("wall_timeout", "max_output_bytes")), limit.name
