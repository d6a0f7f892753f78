"""The metrics listener: off unless configured; on port 0 it serves /metrics, says where in its
port file, keeps each app's metrics apart, and goes away with the rest at shutdown. Every call
is counted by method and the code the client received."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from prometheus_client import Gauge

from evalmesh_common import ConfigError, NotFound, load_config
from evalmesh_common.server import ServerConfig, ServiceApp
from evalmesh_common.server.metrics import LoopSnapshot, scrape

StartApp = Callable[..., Awaitable[ServiceApp]]
OpenChannel = Callable[[str], grpc.aio.Channel]
Context = grpc.aio.ServicerContext[Any, Any]


def _serving_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if "serve_forever" in thread.name]


async def test_a_metrics_port_left_unset_starts_no_listener_and_writes_no_port_file(
    start_app: StartApp, tmp_path: Path
) -> None:
    before = _serving_threads()
    metrics_file = tmp_path / "metrics.port"

    app = await start_app(
        port_file=str(tmp_path / "grpc.port"), metrics_port_file=str(metrics_file)
    )

    assert (tmp_path / "grpc.port").exists()
    assert app.metrics_port is None
    assert app.metrics_address is None
    assert not metrics_file.exists()
    assert _serving_threads() == before


async def test_metrics_port_zero_serves_metrics_found_through_the_port_file_until_shutdown(
    start_app: StartApp, tmp_path: Path
) -> None:
    metrics_file = tmp_path / "metrics.port"
    app = await start_app(metrics_port=0, metrics_port_file=str(metrics_file))
    Gauge("demo_widgets", "Widgets.", registry=app.metrics).set(7)
    address = f"127.0.0.1:{int(metrics_file.read_text())}"
    assert app.metrics_address == address

    metrics = await asyncio.to_thread(scrape, address)
    await app.shutdown()

    assert metrics["demo_widgets"] == 7
    assert metrics["process_cpu_seconds_total"] >= 0
    assert any(name.startswith("python_info{") for name in metrics)
    assert not metrics_file.exists()
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(scrape, address, 1.0)


async def test_two_apps_in_one_process_keep_their_metrics_apart(start_app: StartApp) -> None:
    first = await start_app(metrics_port=0)
    second = await start_app(metrics_port=0)
    Gauge("demo_widgets", "Widgets.", registry=first.metrics).set(1)
    Gauge("demo_widgets", "Widgets.", registry=second.metrics).set(2)

    assert first.metrics_address is not None
    assert second.metrics_address is not None
    assert (await asyncio.to_thread(scrape, first.metrics_address))["demo_widgets"] == 1
    assert (await asyncio.to_thread(scrape, second.metrics_address))["demo_widgets"] == 2


def test_a_metrics_port_outside_the_tcp_range_is_a_config_error() -> None:
    assert load_config(ServerConfig, {"EVALMESH_METRICS_PORT": ""}).metrics_port is None
    with pytest.raises(ConfigError, match="metrics_port"):
        load_config(ServerConfig, {"EVALMESH_METRICS_PORT": "70000"})


async def test_a_loop_snapshot_fetches_once_for_scrapes_within_its_max_age() -> None:
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        return calls

    snapshot = LoopSnapshot(fetch, max_age=60)

    values = [await asyncio.to_thread(snapshot.get) for _ in range(3)]

    assert values == [1, 1, 1]
    assert calls == 1


async def test_a_failing_loop_snapshot_gives_nothing_rather_than_raising() -> None:
    async def fetch() -> int:
        raise ConnectionError("storage is down")

    snapshot = LoopSnapshot(fetch)

    assert await asyncio.to_thread(snapshot.get) is None


async def test_every_call_is_counted_by_method_and_the_code_the_client_received(
    start_app: StartApp, open_channel: OpenChannel
) -> None:
    async def echo(request: bytes, context: Context) -> bytes:
        return request

    async def missing(request: bytes, context: Context) -> bytes:
        raise NotFound("no such thing")

    async def count(request: bytes, context: Context) -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x"

    app = await start_app(
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
            "Count": grpc.unary_stream_rpc_method_handler(count),
        },
        metrics_port=0,
    )
    channel = open_channel(app.address)
    prefix = f"/{app.services[0]}"
    for _ in range(2):
        await channel.unary_unary(f"{prefix}/Echo", None, None)(b"hi", timeout=5)
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary(f"{prefix}/Missing", None, None)(b"", timeout=5)
    assert len([r async for r in channel.unary_stream(f"{prefix}/Count", None, None)(b"")]) == 3
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary(f"{prefix}/Invented", None, None)(b"", timeout=5)

    assert app.metrics_address is not None
    metrics = await asyncio.to_thread(scrape, app.metrics_address)

    def handled(kind: str, method: str, code: str) -> float:
        labels = f'grpc_code="{code}",grpc_method="{method}",grpc_service="{app.services[0]}"'
        return metrics[f'grpc_server_handled_total{{{labels},grpc_type="{kind}"}}']

    assert handled("unary", "Echo", "OK") == 2
    assert handled("unary", "Missing", "NOT_FOUND") == 1
    assert handled("server_stream", "Count", "OK") == 1
    assert not [name for name in metrics if 'grpc_method="Invented"' in name]
