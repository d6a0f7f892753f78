"""``evalmesh up`` starts the whole mesh, which the other commands then find on their own, and
keeps it running: a component that dies is restarted, one that keeps crashing is given up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from client_mesh import evalmesh_command
from grpc_health.v1 import health_pb2, health_pb2_grpc

from evalmesh_deploy.local import LocalMesh
from evalmesh_deploy.local.processes import StartupError
from evalmesh_deploy.local.supervisor import RestartPolicy, Supervisor

pytestmark = pytest.mark.slow


def test_up_starts_a_mesh_that_run_finds_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    env = {**os.environ, "EVALMESH_ADDRESS": "", "EVALMESH_API_KEY": "", "HOME": str(tmp_path)}
    env.pop("EVALMESH_HOME", None)
    state = tmp_path / ".evalmesh"
    up = subprocess.Popen(
        [*evalmesh_command(), "up", "--state-dir", str(state), "--edge-port", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (state / "mesh.json").exists() and up.poll() is None:
            assert time.monotonic() < deadline, "evalmesh up did not start in time"
            time.sleep(0.2)
        if up.poll() is not None:
            _, stderr = up.communicate()
            pytest.skip(f"the local mesh cannot start: {stderr.decode()[-500:]}")
        project = tmp_path / "work" / "deep"
        project.mkdir(parents=True)
        result = subprocess.run(
            [*evalmesh_command(), "run", "-c", "print('via the state file')"],
            env=env,
            cwd=project,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stdout) == (0, b"via the state file\n"), result.stderr
    finally:
        up.send_signal(signal.SIGINT)
        stdout, stderr = up.communicate(timeout=60)
    assert b"evalmesh is up." in stdout
    assert b"admin API key:" in stdout
    assert up.returncode == 0
    assert b"nothing left running" in stderr
    assert not (state / "mesh.json").exists()


def _state(path: Path) -> dict[str, Any]:
    with contextlib.suppress(FileNotFoundError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return {}


def _serving(address: str, service: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_up_restarts_a_service_killed_with_sigkill_and_the_mesh_still_runs_evaluations(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "EVALMESH_ADDRESS": "", "EVALMESH_API_KEY": "", "HOME": str(tmp_path)}
    env.pop("EVALMESH_HOME", None)
    state_file = tmp_path / ".evalmesh" / "mesh.json"
    up = subprocess.Popen(
        [*evalmesh_command(), "up", "--state-dir", str(state_file.parent), "--edge-port", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not state_file.exists() and up.poll() is None:
            assert time.monotonic() < deadline, "evalmesh up did not start in time"
            time.sleep(0.2)
        if up.poll() is not None:
            _, stderr = up.communicate()
            pytest.skip(f"the local mesh cannot start: {stderr.decode()[-500:]}")
        before = _state(state_file)
        killed = before["pids"]["storage"]
        os.kill(killed, signal.SIGKILL)  # the system of record, which everything else needs

        deadline = time.monotonic() + 60
        while _state(state_file).get("pids", {}).get("storage") in (None, killed):
            assert up.poll() is None, "evalmesh up stopped when one service died"
            assert time.monotonic() < deadline, "storage was not restarted"
            time.sleep(0.2)
        after = _state(state_file)
        assert after["restarts"] == {"storage": 1}
        assert after["services"] == before["services"]  # the same addresses: clients reconnect
        storage = after["services"]["storage"]
        while not _serving(storage, "evalmesh.storage.v1.StorageService"):
            assert time.monotonic() < deadline, "the restarted storage is not SERVING"
            time.sleep(0.2)
        others = {k: v for k, v in after["pids"].items() if k != "storage"}
        assert others == {k: v for k, v in before["pids"].items() if k != "storage"}

        result = subprocess.run(
            [*evalmesh_command(), "run", "-c", "print('after the crash')"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=90,
            check=False,
        )
        assert (result.returncode, result.stdout) == (0, b"after the crash\n"), result.stderr
        assert up.poll() is None
    finally:
        up.send_signal(signal.SIGINT)
        _, stderr = up.communicate(timeout=60)
    report = stderr.decode()
    assert "evalmesh: storage killed by SIGKILL after" in report, report
    assert "evalmesh: storage restarted (pid" in report, report
    assert "evalmesh: storage is SERVING again" in report, report
    assert "nothing left running" in report
    assert up.returncode == 0
    log = (state_file.parent / "logs" / "storage.log").read_text(errors="replace")
    assert "[evalmesh up " in log
    assert "storage killed by SIGKILL" in log


def test_a_component_that_keeps_crashing_is_given_up_with_its_last_log_lines(
    tmp_path: Path,
) -> None:
    mesh = LocalMesh(
        tmp_path / "mesh",
        extra_env={"EVALMESH_PROBE_INTERVAL": "0.2"},
        without=("executor-pool",),
    )
    try:
        mesh.start(timeout=120)
    except StartupError as error:
        mesh.stop()
        pytest.skip(f"the local mesh cannot start: {error}")
    reports: list[str] = []
    gave_up = threading.Event()
    failures: list[str] = []

    def give_up(message: str) -> None:
        failures.append(message)
        gave_up.set()

    policy = RestartPolicy(base_delay=0.05, stable_after=300, max_fast_crashes=3)
    supervisor = Supervisor(mesh, reports.append, policy, on_give_up=give_up)
    supervisor.start()
    try:
        # From now on the gateway cannot start: its configuration is broken.
        mesh.extra_env["EVALMESH_SHUTDOWN_GRACE"] = "soon"
        os.kill(mesh.process("gateway").pid, signal.SIGKILL)
        assert gave_up.wait(60), reports
    finally:
        supervisor.stop()
        mesh.stop()
    assert mesh.restarts == {"gateway": 2}
    (message,) = failures
    # 78 is EX_CONFIG: a service refuses a configuration it cannot parse.
    assert message.startswith("gateway exited with status 78 3 times in a row"), message
    assert "EVALMESH_SHUTDOWN_GRACE" in message  # the log tail shows why
    assert reports[0].startswith("gateway killed by SIGKILL after")
