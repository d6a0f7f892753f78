"""Docker sandboxes for the executor's tests: one with an owner of its own, and the check that
none of its containers is left behind. The engine itself is ``evalmesh_testing.docker_engine``'s
(the one that answers, or a private dockerd)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import docker

from evalmesh_executor.sandbox.docker import LABEL_OWNER, DockerConfig, DockerSandbox
from evalmesh_testing.docker_engine import PYTHON_IMAGE, Engine

__all__ = ["assert_no_containers_left", "docker_sandbox"]


async def assert_no_containers_left(engine: Engine, owner: str) -> None:
    """U2 for docker: within 1 s of the last result, no container of this owner exists.

    Asked through a client of its own, so it holds after the sandbox was closed too.
    """
    client = docker.APIClient(base_url=engine.base_url, version="1.41", timeout=10)
    try:
        deadline = time.monotonic() + 1.0
        while left := await asyncio.to_thread(_containers_of, client, owner):
            if time.monotonic() > deadline:
                raise AssertionError(f"containers left behind: {left}")
            await asyncio.sleep(0.02)
    finally:
        client.close()


def _containers_of(client: docker.APIClient, owner: str) -> list[str]:
    listed = client.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
    return [str(container["Id"]) for container in listed]


@contextlib.asynccontextmanager
async def docker_sandbox(engine: Engine, **settings: Any) -> AsyncIterator[DockerSandbox]:
    """A prepared DockerSandbox with an owner of its own; on exit, U2 must hold."""
    owner = "evalmesh-test-" + uuid.uuid4().hex[:12]
    settings.setdefault("images", {"python": PYTHON_IMAGE})  # probing python-ml costs time
    config = DockerConfig(base_url=engine.base_url, owner=owner, **settings)
    async with DockerSandbox(config) as box:
        yield box
    await assert_no_containers_left(engine, owner)
