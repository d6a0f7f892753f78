"""Several gateways behind one edge: balanced, health-checked, and a gateway that goes is left.

The backends here are real gRPC servers on free ports that answer the public health service and
one public method with their own name, so a test can see which gateway the edge chose; the real
gateways behind a real edge are in ``tests/test_replicated_mesh.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from evalmesh_envoy import EdgeSettings, render_yaml
from evalmesh_envoy.upstream import GATEWAY_HEALTH_SERVICE

ENVOY = Path(sys.executable).parent / "envoy"
METHOD = "/evalmesh.v1.EvaluationService/GetEvaluation"


def _settings(*ports: int) -> EdgeSettings:
    return EdgeSettings(
        listen_host="127.0.0.1",
        listen_port=0,
        gateway_host="127.0.0.1",
        gateway_port=ports[0],
        gateway_replicas=tuple(("127.0.0.1", port) for port in ports[1:]),
    )


def _document(settings: EdgeSettings) -> Any:
    return yaml.safe_load(render_yaml(settings))


def _gateway_route(document: Any) -> Any:
    listener = document["staticResources"]["listeners"][0]
    manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
    return manager["routeConfig"]["virtualHosts"][0]["routes"][0]["route"]


def test_one_gateway_is_neither_balanced_nor_health_checked_nor_retried() -> None:
    document = _document(_settings(15051))
    (cluster,) = document["staticResources"]["clusters"]
    assert not {"healthChecks", "outlierDetection", "lbPolicy"} & set(cluster)
    assert "retryPolicy" not in _gateway_route(document)


def test_several_gateways_are_balanced_health_checked_and_pass_envoy_validation(
    tmp_path: Path,
) -> None:
    document = _document(_settings(15051, 15052, 15053))
    (cluster,) = document["staticResources"]["clusters"]
    endpoints = cluster["loadAssignment"]["endpoints"][0]["lbEndpoints"]
    assert [e["endpoint"]["address"]["socketAddress"]["portValue"] for e in endpoints] == [
        15051,
        15052,
        15053,
    ]
    assert cluster["lbPolicy"] == "LEAST_REQUEST"
    (check,) = cluster["healthChecks"]
    assert check["grpcHealthCheck"]["serviceName"] == GATEWAY_HEALTH_SERVICE
    assert check["noTrafficInterval"] == check["interval"] == "1s"
    assert cluster["outlierDetection"]["maxEjectionPercent"] == 50
    retries = _gateway_route(document)["retryPolicy"]
    # Only failures that prove no gateway saw the call: never a reset after it was sent.
    assert set(retries["retryOn"].split(",")) == {
        "connect-failure",
        "refused-stream",
        "reset-before-request",
    }
    path = tmp_path / "envoy.yaml"
    path.write_text(render_yaml(_settings(15051, 15052, 15053)))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_gateways_named_by_host_are_resolved_by_dns() -> None:
    settings = EdgeSettings(
        listen_host="127.0.0.1",
        listen_port=8080,
        gateway_host="gateway-1",
        gateway_port=50051,
        gateway_replicas=(("gateway-2", 50051),),
    )
    (cluster,) = _document(settings)["staticResources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"


class Backend:
    """A gRPC server that says its name and reports its health, on a free port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = grpc.aio.server()
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        handler = grpc.unary_unary_rpc_method_handler(self._answer)
        self.server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "evalmesh.v1.EvaluationService", {"GetEvaluation": handler}
                )
            ]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def _answer(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return self.name.encode()

    async def start(self) -> None:
        await self.server.start()
        await self.set_serving(True)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(GATEWAY_HEALTH_SERVICE, status)


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    started = [Backend("a"), Backend("b")]
    for backend in started:
        await backend.start()
    yield started
    for backend in started:
        await backend.server.stop(None)


def _admin_get(admin: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{admin}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


@pytest.fixture
def envoy(
    tmp_path: Path, backends: list[Backend]
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Envoy over the backends, and the file where it writes its admin address."""
    config = tmp_path / "envoy.yaml"
    config.write_text(render_yaml(_settings(*(backend.port for backend in backends))))
    admin_file = tmp_path / "admin.txt"
    argv = [str(ENVOY), "-c", str(config), "--disable-hot-restart", "--log-level", "error"]
    process = subprocess.Popen(
        [*argv, "--admin-address-path", str(admin_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield process, admin_file
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
async def edge(envoy: tuple[subprocess.Popen[bytes], Path]) -> str:
    """The edge's address once it is ready: its listener waits for the first health checks,
    which the backends answer on this test's event loop, so the wait must not block it."""
    process, admin_file = envoy
    deadline = time.monotonic() + 20
    while not (admin_file.exists() and admin_file.read_text().strip()):
        assert process.poll() is None, "envoy exited during start"
        assert time.monotonic() < deadline, "envoy did not start"
        await asyncio.sleep(0.05)
    admin = admin_file.read_text().strip()
    while (await asyncio.to_thread(_admin_get, admin, "/ready"))[0] != 200:
        assert time.monotonic() < deadline, "envoy did not become ready"
        await asyncio.sleep(0.05)
    listeners = json.loads(
        (await asyncio.to_thread(_admin_get, admin, "/listeners?format=json"))[1]
    )
    port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
    return f"127.0.0.1:{port}"


async def _answers(edge: str, calls: int) -> Counter[str]:
    async with grpc.aio.insecure_channel(edge) as channel:
        call = channel.unary_unary(METHOD, None, None)
        replies = await asyncio.gather(*(call(b"", timeout=5) for _ in range(calls)))
    return Counter(reply.decode() for reply in replies)


async def _until(condition: Any, within: float) -> float:
    """Seconds until ``await condition()`` is true; fails after ``within`` seconds."""
    start = time.monotonic()
    while not await condition():
        assert time.monotonic() - start < within, "condition not reached"
        await asyncio.sleep(0.2)
    return time.monotonic() - start


async def test_calls_are_spread_over_every_serving_gateway(
    edge: str, backends: list[Backend]
) -> None:
    async def both_healthy() -> bool:
        return set(await _answers(edge, 40)) == {"a", "b"}

    await _until(both_healthy, within=10)


async def test_a_gateway_that_reports_not_serving_gets_no_more_calls_within_3_s(
    edge: str, backends: list[Backend]
) -> None:
    await backends[0].set_serving(False)

    async def only_b() -> bool:
        return set(await _answers(edge, 20)) == {"b"}

    await _until(only_b, within=3 + 1)  # two checks 1 s apart, plus the first one's wait
    await backends[0].set_serving(True)

    async def both() -> bool:
        return set(await _answers(edge, 40)) == {"a", "b"}

    await _until(both, within=5)


async def test_a_gateway_that_is_gone_fails_no_call(edge: str, backends: list[Backend]) -> None:
    await _answers(edge, 20)
    await backends[0].server.stop(None)
    # Refused connections are retried on the other gateway, before any health check noticed.
    answers = Counter[str]()
    for _ in range(10):
        answers += await _answers(edge, 10)
    assert answers == Counter({"b": 100})
