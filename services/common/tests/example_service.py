"""A tiny service built on evalmesh_common, run as a real process by test_process.py.

It exposes one slow unary RPC over raw bytes (no generated protos), so a test can send SIGTERM
while a call is in flight. Its shutdown hooks log, so the test can check their order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from evalmesh_common import Seconds, env_field, env_group
from evalmesh_common.server import ServerConfig, ServiceApp, run

SERVICE = "evalmesh.example.v1.ExampleService"

logger = logging.getLogger("example")


@dataclass(frozen=True)
class ExampleConfig:
    server: ServerConfig = env_group(ServerConfig)
    slow_call: Seconds = env_field("EXAMPLE_SLOW_CALL", default=Seconds(1.0))


def _hook(name: str) -> Any:
    async def hook() -> None:
        logger.info("hook %s", name)

    return hook


async def build(config: ExampleConfig) -> ServiceApp:
    """Build the example app: one Slow RPC that announces itself, then sleeps."""

    async def slow(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        # Initial metadata tells the client the handler is running before SIGTERM is sent.
        await context.send_initial_metadata((("x-started", "1"),))
        await asyncio.sleep(config.slow_call)
        return b"done:" + request

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Slow": grpc.unary_unary_rpc_method_handler(slow)}
    )
    app = ServiceApp(
        "example",
        config.server,
        services=[SERVICE],
        add_servicers=lambda server: server.add_generic_rpc_handlers((handler,)),
    )
    app.on_stop_work("puller", _hook("stop_work"))
    app.on_drain("nats", _hook("drain"))
    app.on_dispose("engine", _hook("dispose"))
    return app


if __name__ == "__main__":
    run("example", ExampleConfig, build)
