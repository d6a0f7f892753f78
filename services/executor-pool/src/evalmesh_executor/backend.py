"""The choice of sandbox backend by config, and the settings each is built with.

Every backend (``docker``, ``bwrap``) offers the same small surface, :class:`SandboxBackend`
(defined with the sandboxes, in ``sandbox.core.backend``, and handed on here): prepare once,
name its runtimes with exact identities, run one request with live output and a cancel event,
run the escape canaries, close. The run loop sees only that surface.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from evalmesh.v1 import evaluation_pb2
from evalmesh_executor.config import ExecutorConfig
from evalmesh_executor.limits import sandbox_limits
from evalmesh_executor.sandbox import SandboxUnavailableError
from evalmesh_executor.sandbox.bwrap import DEFAULT_RUNTIMES, BwrapConfig, BwrapSandbox, Runtime
from evalmesh_executor.sandbox.bwrap.runtime import python_with_tree
from evalmesh_executor.sandbox.bwrap.tree import load_tree
from evalmesh_executor.sandbox.core.backend import Backend, SandboxBackend

__all__ = [
    "Backend",
    "BackendFactory",
    "SandboxBackend",
    "bwrap_runtimes",
    "choose_backend",
    "factories",
]

logger = logging.getLogger(__name__)

# A backend that cannot say within this long whether it works is treated as unavailable.
PREPARE_TIMEOUT = 120.0


BackendFactory = Callable[[ExecutorConfig], SandboxBackend]


def bwrap_runtimes(trees: Mapping[str, str]) -> dict[str, Runtime]:
    """The standard-library runtime, plus one runtime per package tree that can be used; a tree
    that cannot is left out with the reason in the log."""
    runtimes = dict(DEFAULT_RUNTIMES)
    if not trees:
        logger.info(
            "bwrap: no package trees configured (EVALMESH_BWRAP_RUNTIME_TREES), so only the "
            "standard-library runtime; scripts/setup builds python-ml and scripts/up passes it"
        )
    for name, path in trees.items():
        try:
            runtimes[name] = python_with_tree(load_tree(path, name))
        except SandboxUnavailableError as exc:
            logger.warning("bwrap: runtime %s is not offered: %s", name, exc)
    return runtimes


def _bwrap(config: ExecutorConfig) -> SandboxBackend:
    # Sandboxes started ahead for requests that leave every limit to the defaults: two per
    # slot, so the slots of a burst find some while the refill catches up (prepared.py).
    prepared = 2 * config.slots if config.bwrap_prepared is None else config.bwrap_prepared
    return BwrapSandbox(
        BwrapConfig(
            runtimes=bwrap_runtimes(config.bwrap_tree_paths()),
            prepared=prepared,
            prepared_limits=sandbox_limits(evaluation_pb2.Limits(), config.limits),
        )
    )


def _docker(config: ExecutorConfig) -> SandboxBackend:
    try:  # imported only when chosen: it needs the docker SDK, bwrap hosts may lack it
        from evalmesh_executor.sandbox.docker import DEFAULT_IMAGES, DockerConfig, DockerSandbox
    except ImportError as exc:
        raise SandboxUnavailableError(f"the docker backend cannot load: {exc}") from exc
    settings = config.docker
    images = {**DEFAULT_IMAGES, **settings.image_overrides()}
    docker_config = DockerConfig(
        base_url=settings.host,
        images={runtime: image for runtime, image in images.items() if image},
        warm=settings.warm_per_runtime(config.slots),
        # The shape of a request that leaves every limit to the defaults.
        warm_limits=sandbox_limits(evaluation_pb2.Limits(), config.limits),
        warm_max_idle_s=settings.warm_max_idle,
    )
    if config.instance_id:  # the owner label: a restarted instance removes what it left
        docker_config = replace(docker_config, owner=config.instance_id)
    return DockerSandbox(docker_config)


def factories() -> Mapping[str, BackendFactory]:
    """Backend constructors by name, in the order ``auto`` tries them."""
    return {"docker": _docker, "bwrap": _bwrap}


async def choose_backend(
    config: ExecutorConfig, available: Mapping[str, BackendFactory] | None = None
) -> Backend:
    """Build and prepare the configured backend; ``auto`` takes the first one that works.

    Raises SandboxUnavailableError when no allowed backend can run on this host.
    """
    options = dict(available if available is not None else factories())
    names = list(options) if config.backend == "auto" else [config.backend]
    problems: list[str] = []
    for name in names:
        try:
            sandbox = options[name](config)
            await asyncio.wait_for(sandbox.prepare(), PREPARE_TIMEOUT)
        except (SandboxUnavailableError, TimeoutError) as exc:
            logger.info("sandbox backend %s unavailable: %s", name, exc)
            problems.append(f"{name}: {exc}")
            continue
        logger.info("sandbox backend: %s", name, extra={"backend": name})
        return Backend(name, sandbox)
    raise SandboxUnavailableError("no sandbox backend can run here (" + "; ".join(problems) + ")")
