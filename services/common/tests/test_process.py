"""A real service process drains in-flight RPCs on SIGTERM and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from evalmesh_common.server import wait_for_serving

EXAMPLE = Path(__file__).with_name("example_service.py")
SERVICE = "evalmesh.example.v1.ExampleService"


@pytest.fixture
async def example(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """Start example_service.py on port 0; kill it by pid if a test leaves it running."""
    port_file = tmp_path / "example.port"
    env = {
        **os.environ,
        "EVALMESH_LISTEN_ADDRESS": "127.0.0.1:0",
        "EVALMESH_PORT_FILE": str(port_file),
        "EVALMESH_SHUTDOWN_GRACE": "5s",
        "EVALMESH_PROBE_INTERVAL": "50ms",
        "EXAMPLE_SLOW_CALL": "0.5s",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield process, port_file
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


def _read_port(port_file: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        assert time.monotonic() < deadline, "the service never wrote its port file"
        time.sleep(0.02)
    return int(port_file.read_text())


async def test_sigterm_drains_in_flight_rpcs_within_the_grace_and_exits_zero(
    example: tuple[asyncio.subprocess.Process, Path],
) -> None:
    process, port_file = example
    address = f"127.0.0.1:{await asyncio.to_thread(_read_port, port_file)}"
    await wait_for_serving(address, SERVICE, timeout=10)

    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        statuses = watch.__aiter__()
        assert (await anext(statuses)).status == health_pb2.HealthCheckResponse.SERVING
        call = channel.unary_unary(f"/{SERVICE}/Slow", None, None)(b"job-1", timeout=10)
        await call.initial_metadata()  # the handler is now running

        process.send_signal(signal.SIGTERM)

        assert (await anext(statuses)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await call == b"done:job-1"
        assert await call.code() == grpc.StatusCode.OK
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)

    assert process.returncode == 0
    assert not port_file.exists()
    logs = [json.loads(line) for line in stderr.decode().splitlines()]
    assert {line["service"] for line in logs} == {"example"}
    messages = [line["message"] for line in logs]
    assert "received SIGTERM; shutting down" in messages
    hooks = [m for m in messages if m.startswith("hook ")]
    assert hooks == ["hook stop_work", "hook drain", "hook dispose"]
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Slow", None, None)(b"late", timeout=1)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
