"""``scripts/up`` brings the mesh to SERVING behind one URL; Ctrl-C leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import ROOT

SERVICES = {
    "storage": "evalmesh.storage.v1.StorageService",
    "scheduler": "evalmesh.scheduler.v1.SchedulerService",
    "executor-pool": "evalmesh.executor.v1.ExecutorService",
    "gateway": "evalmesh.v1.EvaluationService",
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_state(path: Path, process: subprocess.Popen[bytes], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "scripts/up exited before the mesh was up"
        assert time.monotonic() < deadline, "scripts/up did not bring the mesh up in time"
        time.sleep(0.2)
    return json.loads(path.read_text())


@pytest.fixture
def mesh_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Any, Path]]:
    state_dir = tmp_path / "mesh"
    # One metrics port and port file for everything, as a careless shell might export: the
    # launcher must still give each service its own.
    shared = {"EVALMESH_METRICS_PORT": "1", "EVALMESH_METRICS_PORT_FILE": str(tmp_path / "one")}
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "up"), "--state-dir", str(state_dir), "--edge-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **shared},
    )
    try:
        state = _wait_for_state(state_dir / "mesh.json", process, timeout=240)
        yield process, state, state_dir
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _grpc_web_health(url: str, service: str) -> int:
    message = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    request = urllib.request.Request(
        f"{url}/grpc.health.v1.Health/Check",
        data=b"\x00" + struct.pack(">I", len(message)) + message,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = reply.read()
    assert body[0] == 0, "the first grpc-web frame must be the message"
    (length,) = struct.unpack(">I", body[1:5])
    return int(health_pb2.HealthCheckResponse.FromString(body[5 : 5 + length]).status)


def _assert_metrics_on_for_every_service(metrics: dict[str, str]) -> None:
    """Metrics are on by default: each service (and Envoy) on a port of its own, listed in the
    state file, each serving its own families."""
    assert set(metrics) == {*SERVICES, "envoy"}
    ports = {url.split("/")[2] for url in metrics.values()}
    assert len(ports) == len(metrics)
    own = {
        "storage": b"grpc_server_handled_total",
        "scheduler": b"evalmesh_scheduler_queue_depth",
        "executor-pool": b"evalmesh_executor_slots",
        "gateway": b"grpc_server_started_total",
        "envoy": b"envoy_server_live",
    }
    for name, url in metrics.items():
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert own[name] in reply.read(), name


def test_scripts_up_serves_every_component_and_ctrl_c_leaves_no_process(
    mesh_up: tuple[subprocess.Popen[bytes], Any, Path],
) -> None:
    process, state, state_dir = mesh_up
    for name, service in SERVICES.items():
        with grpc.insecure_channel(state["services"][name]) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    # The browser's way in: gRPC-web through the Envoy edge reaches the gateway.
    assert _grpc_web_health(state["url"], SERVICES["gateway"]) == 1
    # ... on the same origin as the browser UI, which scripts/up built and Envoy serves.
    with urllib.request.urlopen(f"{state['url']}/", timeout=10) as reply:
        assert reply.headers["content-type"] == "text/html; charset=utf-8"
        assert b'<div id="root">' in reply.read()
    assert state["admin_api_key"].startswith("em_")
    assert (state_dir / "mesh.json").stat().st_mode & 0o077 == 0
    _assert_metrics_on_for_every_service(state["metrics"])

    pids = list(state["pids"].values())
    assert len(pids) == 6
    assert all(_alive(pid) for pid in pids)
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0
    output = process.stdout.read().decode() if process.stdout else ""
    assert state["url"] in output
    assert "nothing left running" in output
    assert not [pid for pid in pids if _alive(pid)]
    assert not (state_dir / "mesh.json").exists()
