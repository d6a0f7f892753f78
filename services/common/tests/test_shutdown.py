"""Shutdown runs health -> stop work -> server.stop(grace) -> drain -> dispose, once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from evalmesh_common.server import ServiceApp, wait_for_serving
from evalmesh_common.server.portfile import write_port_file

StartApp = Callable[..., Awaitable[ServiceApp]]
OpenChannel = Callable[[str], grpc.aio.Channel]
HealthOf = Callable[[grpc.aio.Channel, str], Awaitable[str]]
Context = grpc.aio.ServicerContext[Any, Any]


async def test_shutdown_hooks_run_in_the_documented_order(
    start_app: StartApp, open_channel: OpenChannel, health_of: HealthOf
) -> None:
    events: list[str] = []
    started = asyncio.Event()

    async def slow(request: bytes, context: Context) -> bytes:
        started.set()
        await asyncio.sleep(0.3)
        events.append("in-flight rpc finished")
        return b"done"

    app = await start_app({"Slow": grpc.unary_unary_rpc_method_handler(slow)})
    channel = open_channel(app.address)
    await wait_for_serving(app.address, timeout=3)

    async def stop_work() -> None:
        events.append(f"stop_work, health {await health_of(channel, '')}")

    def record(name: str) -> Callable[[], Awaitable[None]]:
        async def hook() -> None:
            events.append(name)

        return hook

    app.on_dispose("engine", record("dispose engine"))
    app.on_drain("nats", record("drain nats"))
    app.on_stop_work("puller", stop_work)
    app.on_drain("outbox", record("drain outbox"))
    call = asyncio.ensure_future(
        channel.unary_unary(f"/{app.services[0]}/Slow", None, None)(b"", timeout=5)
    )
    await started.wait()

    await app.shutdown()

    assert await call == b"done"
    assert events == [
        "stop_work, health NOT_SERVING",
        "in-flight rpc finished",
        "drain nats",
        "drain outbox",
        "dispose engine",
    ]


async def test_shutdown_is_idempotent(start_app: StartApp) -> None:
    app = await start_app()
    runs: list[str] = []

    async def dispose() -> None:
        await asyncio.sleep(0.05)
        runs.append("dispose")

    app.on_dispose("engine", dispose)
    await asyncio.gather(app.shutdown(), app.shutdown())
    await app.shutdown()
    assert runs == ["dispose"]


async def test_a_failing_or_hanging_hook_is_logged_and_the_sequence_goes_on(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start_app(hook_timeout=0.1)
    runs: list[str] = []

    async def fail() -> None:
        raise RuntimeError("nats already closed")

    async def hang() -> None:
        await asyncio.sleep(3600)

    async def dispose() -> None:
        runs.append("dispose")

    app.on_stop_work("puller", fail)
    app.on_drain("nats", hang)
    app.on_dispose("engine", dispose)
    with caplog.at_level(logging.ERROR, logger="evalmesh_common.server.shutdown"):
        await app.shutdown()

    assert runs == ["dispose"]
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["shutdown hook puller failed", "shutdown hook nats timed out after 0.1s"]


async def test_in_flight_rpcs_past_the_grace_are_cancelled(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    started = asyncio.Event()

    async def stuck(request: bytes, context: Context) -> bytes:
        started.set()
        await asyncio.sleep(3600)
        return b""

    app = await start_app({"Stuck": grpc.unary_unary_rpc_method_handler(stuck)}, shutdown_grace=0.2)
    method = open_channel(app.address).unary_unary(f"/{app.services[0]}/Stuck", None, None)
    call = asyncio.ensure_future(method(b"", timeout=5))
    await started.wait()

    await asyncio.wait_for(app.shutdown(), timeout=2)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


async def test_port_file_holds_the_bound_port_until_shutdown(
    start_app: StartApp, tmp_path: Path
) -> None:
    port_file = tmp_path / "storage.port"
    app = await start_app(port_file=str(port_file))

    assert app.port > 0
    assert port_file.read_text() == f"{app.port}\n"
    await app.shutdown()
    assert not port_file.exists()


def test_port_file_is_replaced_atomically_without_leftovers(tmp_path: Path) -> None:
    port_file = tmp_path / "gateway.port"
    write_port_file(port_file, 1)
    write_port_file(port_file, 50051)
    assert port_file.read_text() == "50051\n"
    assert [p.name for p in tmp_path.iterdir()] == ["gateway.port"]


async def test_a_taken_port_fails_to_start_instead_of_sharing_it(start_app: StartApp) -> None:
    first = await start_app()
    with pytest.raises((OSError, RuntimeError)):
        await start_app(listen_address=f"127.0.0.1:{first.port}")
