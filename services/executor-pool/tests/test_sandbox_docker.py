"""The docker backend's own behaviour (the shared hostile suite runs on it through conftest):
container settings, runtime identity, teardown, orphans, the executor-death lifeline, and
the docker counterparts of the shared tests whose expectations are bwrap's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from textwrap import dedent
from typing import Any

import docker
import pytest
import requests
import urllib3
from docker_helpers import docker_sandbox
from sandbox_helpers import SMALL, job_processes, wait_for_job_processes

from evalmesh_executor.sandbox import SandboxOutcome, SandboxRequest, SandboxUnavailableError
from evalmesh_executor.sandbox.docker import (
    LABEL_DEADLINE,
    LABEL_OWNER,
    DockerConfig,
    DockerSandbox,
)
from evalmesh_executor.sandbox.docker.engine import _never_sent
from evalmesh_executor.sandbox.docker.protocol import ExitFrame, FrameParser
from evalmesh_executor.sandbox.docker.run import RunStats
from evalmesh_executor.sandbox.docker.spec import seccomp_profile
from evalmesh_testing.docker_engine import (
    IMAGES,
    ML_IMAGE,
    PYTHON_IMAGE,
    Engine,
    build_runtime_image,
)

pytestmark = pytest.mark.docker

SLEEPER = b"import time\nprint('started', flush=True)\ntime.sleep(60)"


@pytest.fixture
async def box(docker_engine: Engine) -> AsyncIterator[DockerSandbox]:
    """A prepared DockerSandbox of the test's own; U2 holds after the test."""
    async with docker_sandbox(docker_engine) as sandbox:
        yield sandbox


@pytest.fixture
def api(docker_engine: Engine) -> docker.APIClient:
    """A plain client of the same engine, to look at what the backend did."""
    return docker.APIClient(base_url=docker_engine.base_url, version="1.41", timeout=30)


async def _started(box: DockerSandbox, code: bytes, **limits: Any) -> asyncio.Task[Any]:
    """Start a run and wait until it printed its first line."""
    seen = asyncio.Event()

    async def on_output(_: object) -> None:
        seen.set()

    request = SandboxRequest(code, limits=replace(SMALL, **limits))
    task = asyncio.ensure_future(box.run(request, on_output))
    await asyncio.wait_for(seen.wait(), 10)
    return task


async def test_the_runtime_identity_is_the_python_version_and_the_image_id(
    box: DockerSandbox, api: docker.APIClient
) -> None:
    image_id = api.inspect_image(PYTHON_IMAGE)["Id"]
    result = await box.run(SandboxRequest(b"print(1)", limits=SMALL))
    assert result.runtime_identity == box.runtimes["python"]
    assert result.runtime_identity.startswith("python 3.")
    assert result.runtime_identity.endswith(" " + image_id)
    assert image_id.startswith("sha256:")


async def test_each_job_gets_a_fresh_locked_down_container(
    box: DockerSandbox, api: docker.APIClient
) -> None:
    request = SandboxRequest(SLEEPER, limits=SMALL, evaluation_id="eval-123")
    seen = asyncio.Event()

    async def on_output(_: object) -> None:
        seen.set()

    task = asyncio.ensure_future(box.run(request, on_output, cancel=(cancel := asyncio.Event())))
    await asyncio.wait_for(seen.wait(), 10)
    (container,) = await box.live_containers()
    attrs = api.inspect_container(container)
    cancel.set()
    assert (await task).outcome is SandboxOutcome.CANCELLED
    host, config = attrs["HostConfig"], attrs["Config"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert any(opt.startswith("seccomp=") for opt in host["SecurityOpt"])
    assert host["PidsLimit"] == SMALL.max_processes
    assert host["Memory"] == host["MemorySwap"] == SMALL.memory_bytes
    assert host["NanoCpus"] == int(SMALL.cpu_quota * 1e9)
    assert host["LogConfig"]["Type"] == "none"
    assert host["Privileged"] is False
    for path in ("/tmp", "/dev/shm"):
        options = host["Tmpfs"][path].split(",")
        assert {"noexec", "nosuid", "nodev", f"size={SMALL.scratch_bytes}"} <= set(options)
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert ulimits["nofile"] == (SMALL.max_open_files,) * 2
    assert ulimits["fsize"] == (SMALL.max_file_size_bytes,) * 2
    assert ulimits["core"] == (0, 0)
    assert config["User"] == "65534:65534"
    assert config["Labels"][LABEL_OWNER] == box.owner
    assert config["Labels"]["org.evalmesh.evaluation"] == "eval-123"
    assert float(config["Labels"][LABEL_DEADLINE]) > time.time()
    assert attrs["State"]["Pid"] > 0


async def test_no_container_or_process_of_a_job_exists_after_its_result(
    box: DockerSandbox,
) -> None:
    marker = "u2-docker-" + uuid.uuid4().hex
    sleeper = ["/usr/bin/python3", "-c", "import time; time.sleep(1000)", marker]
    code = dedent(f"""
        import subprocess, time
        for _ in range(3):
            subprocess.Popen({sleeper!r})
        print("spawned", flush=True)
        time.sleep(3)  # long enough for the host to count them, even on a loaded machine
    """).encode()
    job = await _started(box, code, wall_timeout=30)
    await wait_for_job_processes(marker.encode(), 3, within_s=2.0)
    result = await job
    assert result.outcome is SandboxOutcome.EXITED
    assert job_processes(marker.encode()) == [], "pid 1 kills the rest before it reports"
    await box.settle()
    assert await box.live_containers() == []


async def test_task_cancellation_removes_the_container_and_propagates(
    box: DockerSandbox,
) -> None:
    task = await _started(box, SLEEPER, wall_timeout=30)
    assert len(await box.live_containers()) == 1
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10, "the wall timeout (30 s), not the cancel, ended it"
    await box.settle()
    assert await box.live_containers() == []


async def test_h06_setns_into_the_jobs_own_namespace_is_refused(box: DockerSandbox) -> None:
    code = dedent("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        print(libc.setns(fd, 0), ctypes.get_errno())
        try:
            os.open("/proc/1/ns/mnt", os.O_RDONLY)
            print("OPENED")
        except OSError as e:
            print("pid 1 refused", e.errno)
    """).encode()
    result = await box.run(SandboxRequest(code, limits=SMALL))
    first, second = result.stdout.decode().splitlines()
    assert first.split() == ["-1", "1"]  # EPERM
    assert second.startswith("pid 1 refused")


async def test_h18_h21_only_the_jobs_two_processes_are_visible(box: DockerSandbox) -> None:
    code = dedent("""
        import os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        print(len(pids), pids[0], pids[1] == os.getpid(), os.getppid())
        for pid in pids:
            print(open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")[0].decode())
        print(open("/proc/net/tcp").read().count("\\n") - 1)
    """).encode()
    result = await box.run(SandboxRequest(code, limits=SMALL))
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "2 1 True 1"
    assert lines[1:3] == ["/usr/bin/python3", "/usr/bin/python3"]
    assert lines[3] == "0"


async def test_the_job_cannot_reach_pid_1s_output_or_memory(box: DockerSandbox) -> None:
    code = dedent("""
        import os
        for path in ("/proc/1/fd/1", "/proc/1/mem", "/proc/1/environ"):
            try:
                os.close(os.open(path, os.O_WRONLY if path.endswith("/1") else os.O_RDONLY))
                print("OPENED", path)
            except OSError as e:
                print("refused", path, e.errno)
    """).encode()
    result = await box.run(SandboxRequest(code, limits=SMALL))
    assert result.outcome is SandboxOutcome.EXITED
    assert b"OPENED" not in result.stdout
    assert result.stdout.count(b"refused") == 3


async def test_a_forged_frame_in_the_output_is_just_output(box: DockerSandbox) -> None:
    forged = b"X\x00\x00\x00\x06exit 0"
    code = f"import sys\nsys.stdout.buffer.write({forged!r})\nraise SystemExit(5)".encode()
    result = await box.run(SandboxRequest(code, limits=SMALL))
    assert (result.outcome, result.exit_code) == (SandboxOutcome.EXITED, 5)
    assert result.stdout == forged


async def test_exit_137_is_an_exit_code_not_a_signal(box: DockerSandbox) -> None:
    result = await box.run(SandboxRequest(b"import os; os._exit(137)", limits=SMALL))
    assert (result.exit_code, result.signal) == (137, None)


async def test_containers_of_this_owner_and_past_their_deadline_are_reaped_at_prepare(
    docker_engine: Engine, api: docker.APIClient
) -> None:
    owner = "evalmesh-test-" + uuid.uuid4().hex[:12]
    other = "evalmesh-test-" + uuid.uuid4().hex[:12]
    future = str(int(time.time()) + 3600)

    def leftover(labels: dict[str, str]) -> str:
        created = api.create_container(PYTHON_IMAGE, ["true"], labels=labels)
        return str(created["Id"])

    mine = leftover({LABEL_OWNER: owner, LABEL_DEADLINE: future})
    expired = leftover({LABEL_OWNER: other, LABEL_DEADLINE: "1"})
    alive = leftover({LABEL_OWNER: other, LABEL_DEADLINE: future})
    try:
        config = DockerConfig(base_url=docker_engine.base_url, owner=owner)
        async with DockerSandbox(config):
            ids = {c["Id"] for c in api.containers(all=True)}
        assert mine not in ids
        assert expired not in ids
        assert alive in ids, "another live executor's container is left alone"
    finally:
        for container in (mine, expired, alive):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(container, force=True)


async def test_no_engine_or_no_image_makes_the_backend_unavailable(
    docker_engine: Engine, tmp_path: Path
) -> None:
    no_engine = DockerSandbox(DockerConfig(base_url=f"unix://{tmp_path}/none.sock"))
    with pytest.raises(SandboxUnavailableError):
        await no_engine.prepare()
    await no_engine.close()
    no_image = DockerSandbox(
        DockerConfig(base_url=docker_engine.base_url, images={"python": "evalmesh-none:0"})
    )
    with pytest.raises(SandboxUnavailableError, match="no runtime image"):
        await no_image.prepare()
    await no_image.close()


EXECUTOR = """
import asyncio, sys
from evalmesh_executor.sandbox import SandboxLimits, SandboxRequest
from evalmesh_executor.sandbox.docker import DockerConfig, DockerSandbox

async def main():
    config = DockerConfig(base_url=sys.argv[2], owner=sys.argv[3])
    async with DockerSandbox(config) as sandbox:
        async def started(chunk):
            print("job running", flush=True)
        with open(sys.argv[1], "rb") as source:
            code = source.read()
        await sandbox.run(SandboxRequest(code, limits=SandboxLimits(wall_timeout=60)), started)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_f04_an_executor_killed_with_sigkill_takes_its_container_along(
    docker_engine: Engine, api: docker.APIClient, tmp_path: Path
) -> None:
    marker = "f04-docker-" + uuid.uuid4().hex
    owner = "evalmesh-test-" + uuid.uuid4().hex[:12]
    script = tmp_path / "executor.py"
    script.write_text(EXECUTOR)
    job_code = tmp_path / "job.py"
    sleeper = ["/usr/bin/python3", "-c", "import time; time.sleep(1000)", marker]
    job_code.write_text(
        f"import subprocess, time\nsubprocess.Popen({sleeper!r})\n"
        "print('spawned', flush=True)\ntime.sleep(1000)\n"
    )
    executor = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(job_code), docker_engine.base_url, owner,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert executor.stdout is not None
        assert await asyncio.wait_for(executor.stdout.readline(), 30) == b"job running\n"
        assert await _eventually(lambda: len(job_processes(marker.encode())) == 1, 5.0)
    finally:
        os.kill(executor.pid, signal.SIGKILL)
        await executor.wait()
    # The attach connection died with the executor: the container's stdin closes and its
    # pid 1 kills the job at once, without waiting for the wall timeout or a reaper.
    assert await _eventually(lambda: job_processes(marker.encode()) == [], 2.0)

    def states() -> list[str]:
        listed = api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
        return [str(container["State"]) for container in listed]

    assert await _eventually(lambda: states() in ([], ["exited"]), 2.0), states()
    for container in api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"}):
        api.remove_container(container["Id"], force=True)


async def _eventually(condition: Any, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.mark.slow
async def test_the_python_ml_runtime_has_numpy_pandas_and_scikit_learn(
    docker_engine: Engine,
) -> None:
    try:
        build_runtime_image(docker_engine, "python-ml")  # a no-op once this recipe is built
    except RuntimeError as exc:
        pytest.skip(f"{ML_IMAGE} cannot be built here: {exc}")
    code = dedent("""
        import numpy, pandas, sklearn
        from sklearn.linear_model import LinearRegression
        model = LinearRegression().fit(pandas.DataFrame({"x": [0, 1, 2]}), numpy.array([1, 3, 5]))
        print(round(float(model.coef_[0]), 6), round(float(model.intercept_), 6))
    """).encode()
    limits = replace(SMALL, memory_bytes=512 * 1024 * 1024, wall_timeout=60)
    async with docker_sandbox(docker_engine, images={"python-ml": ML_IMAGE}) as box:
        result = await box.run(SandboxRequest(code, runtime="python-ml", limits=limits))
        packages = {p.name: p.version for p in box.runtime_details["python-ml"].packages}
    assert result.outcome is SandboxOutcome.EXITED, result.stderr
    assert result.stdout == b"2.0 1.0\n"
    assert result.runtime_identity.startswith("python-ml 3.")
    requirements = IMAGES / "python-ml" / "requirements.txt"
    lines = (line.split("#")[0].strip() for line in requirements.read_text().splitlines())
    pins = dict(line.split("==") for line in lines if line)
    assert {name: packages.get(name) for name in pins} == pins, "the probe lists the pins"


# ---------------------------------------------------------------------- no engine needed


def test_the_seccomp_profile_carries_the_bwrap_deny_list() -> None:
    profile = json.loads(seccomp_profile("x86_64"))
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert profile["architectures"] == ["SCMP_ARCH_X86_64"]
    denied = {name for rule in profile["syscalls"] if "args" not in rule for name in rule["names"]}
    assert {"ptrace", "unshare", "mount", "bpf", "keyctl", "io_uring_setup", "clone3"} <= denied
    socket_rules = [r for r in profile["syscalls"] if r["names"] == ["socket"]]
    refused = {r["args"][0]["value"] for r in socket_rules if r["args"][0]["op"] == "SCMP_CMP_EQ"}
    assert {16, 17} <= refused  # AF_NETLINK, AF_PACKET
    assert not {1, 2, 10} & refused  # AF_UNIX, AF_INET, AF_INET6 stay
    clone_flags = {r["args"][0]["value"] for r in profile["syscalls"] if r["names"] == ["clone"]}
    assert 0x10000000 in clone_flags  # CLONE_NEWUSER


def test_frames_are_split_across_reads_and_the_exit_frame_parsed() -> None:
    parser = FrameParser()
    report = b"signal 11 cpu_ns=5000000 peak=123 oom_kills=-1"
    stream = b"O\x00\x00\x00\x03abcE\x00\x00\x00\x01e" + b"X" + len(report).to_bytes(4) + report
    frames = [frame for i in range(len(stream)) for frame in parser.feed(stream[i : i + 1])]
    assert frames[:2] == [(b"O", b"abc"), (b"E", b"e")]
    kind, payload = frames[2]
    exit_frame = ExitFrame.parse(payload)
    assert (kind, exit_frame.signal, exit_frame.exit_code) == (b"X", 11, None)
    assert (exit_frame.cpu_ns, exit_frame.peak_bytes, exit_frame.oom_kills) == (5000000, 123, None)
    assert RunStats.from_exit(exit_frame) == RunStats(0.005, 123)


def test_stats_api_answers_are_read_for_cgroup_v1_and_v2() -> None:
    v1 = {"cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}},
          "memory_stats": {"usage": 10, "max_usage": 99}}  # fmt: skip
    v2 = {"cpu_stats": {"cpu_usage": {"total_usage": 1_000}}, "memory_stats": {"usage": 42}}
    assert RunStats.parse(v1) == RunStats(2.0, 99)
    assert RunStats.parse(v2) == RunStats(1e-6, 42)


def test_only_a_request_that_never_left_a_closed_pool_counts_as_never_sent() -> None:
    closed = urllib3.exceptions.ClosedPoolError(None, "Pool is closed.")  # type: ignore[arg-type]
    assert _never_sent(requests.exceptions.ConnectionError(closed))
    assert not _never_sent(requests.exceptions.ConnectionError("connection reset"))
    assert not _never_sent(None)
