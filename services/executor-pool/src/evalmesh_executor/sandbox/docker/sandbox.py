"""The `docker` sandbox backend: one fresh, locked-down container per evaluation.

Same surface as BwrapSandbox: prepare()/close(), runtimes, run(request, on_output, cancel=),
self_check(tcp_ports). Containers are never reused; with `warm` > 0 some are started ahead
of demand (``warm``), each still serving exactly one run. Each carries labels naming its
owner (this backend), its evaluation and a deadline; containers of this owner left by a
crash, and any evalmesh container past its deadline, are removed at prepare() and then
periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker

from evalmesh_executor.sandbox.core.backend import BaseSandbox
from evalmesh_executor.sandbox.core.background import Background
from evalmesh_executor.sandbox.core.models import (
    OutputCallback,
    Package,
    RuntimeDetails,
    SandboxError,
    SandboxLimits,
    SandboxOutcome,
    SandboxRequest,
    SandboxResult,
    SandboxUnavailableError,
)
from evalmesh_executor.sandbox.core.seccomp import UnsupportedArchitectureError

from .container import LABEL_DEADLINE, LABEL_OWNER, Booted, DockerHost
from .engine import DockerEngine
from .run import DockerRun
from .spec import seccomp_profile
from .warm import WarmPool, warm_key

__all__ = ["DEFAULT_IMAGES", "LABEL_DEADLINE", "LABEL_OWNER", "DockerConfig", "DockerSandbox"]

log = logging.getLogger(__name__)

#: Runtime name -> image reference (as built by images/build-offline or the Dockerfiles).
DEFAULT_IMAGES: Mapping[str, str] = {
    "python": "evalmesh-runtime-python:latest",
    "python-ml": "evalmesh-runtime-python-ml:latest",
}

# The interpreter's version, then each installed distribution (name and version) on a line.
_PROBE = (
    b"import sys\nfrom importlib import metadata\nprint(sys.version.split()[0])\n"
    b"for d in metadata.distributions(): print(d.metadata['Name'], d.version)\n"
)
_PROBE_LIMITS = SandboxLimits(wall_timeout=30.0, memory_bytes=128 * 1024 * 1024)


def _default_owner() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class DockerConfig:
    """Operator settings of the docker backend.

    base_url: the engine (`unix:///var/run/docker.sock`, `tcp://...`); None: DOCKER_HOST,
        else the local socket, as the docker CLI does.
    images: runtime name -> image reference; a runtime whose image is missing is left out.
        Runs use the image id resolved at prepare(), which is also the runtime's identity.
    owner: names this backend in the containers' labels. Containers of the same owner found
        at prepare() are leftovers of a previous process and are removed; give a stable name
        (the executor's instance id) to have a restarted executor clean up after itself.
    api_timeout_s / api_retries: per daemon call; transient failures are retried.
    kill_timeout_s: how long a killed container may take to be reported gone.
    backstop_s: pid 1 inside kills the job this long after the wall timeout by itself.
    deadline_grace_s: a container is an orphan this long after its wall timeout.
    reap_interval_s: how often orphans are looked for.
    seccomp: load the deny-list profile (on top of no capabilities and no-new-privileges).
    warm: started containers kept waiting per runtime (0: none; every run starts its own).
    warm_limits: their shape; a request takes one when its limits differ at most in the
        wall timeout and the output cap (which are not container settings).
    warm_max_idle_s: a waiting container is replaced after this long.
    warm_max_wall_s: the longest wall timeout a warm container takes (its deadline label
        covers waiting plus a job this long); longer jobs run cold.
    """

    base_url: str | None = None
    images: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_IMAGES))
    owner: str = field(default_factory=_default_owner)
    api_timeout_s: float = 30.0
    api_retries: int = 2
    api_workers: int = 16
    kill_timeout_s: float = 5.0
    backstop_s: float = 10.0
    deadline_grace_s: float = 120.0
    reap_interval_s: float = 60.0
    seccomp: bool = True
    warm: int = 0
    warm_limits: SandboxLimits = field(default_factory=SandboxLimits)
    warm_max_idle_s: float = 300.0
    warm_max_wall_s: float = 900.0

    def __post_init__(self) -> None:
        if self.warm < 0 or self.warm_max_idle_s <= 0 or self.warm_max_wall_s <= 0:
            raise ValueError("warm must be at least 0, its idle and wall limits positive")


@dataclass(frozen=True, slots=True)
class _Runtime:
    image_id: str
    identity: str
    packages: tuple[Package, ...] = ()


def _packages(lines: Sequence[str]) -> tuple[Package, ...]:
    """The probe's ``name version`` lines as packages, by normalised name."""
    found = {}
    for line in lines:
        name, _, version = line.strip().partition(" ")
        if name and version:
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return tuple(Package(name, found[name]) for name in sorted(found))


class DockerSandbox(BaseSandbox):
    """Runs untrusted programs one per fresh container. Runs may overlap."""

    def __init__(self, config: DockerConfig | None = None) -> None:
        super().__init__()
        self._config = config or DockerConfig()
        self._engine = DockerEngine(
            self._config.base_url,
            self._config.api_timeout_s,
            self._config.api_retries,
            self._config.api_workers,
        )
        self._host: DockerHost | None = None
        self._runtimes: dict[str, _Runtime] = {}
        self._prepare_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._removals = Background("removing a container")
        self._warm: WarmPool | None = None

    # ------------------------------------------------------------------ lifecycle

    async def prepare(self) -> None:
        """Reach the engine, reap orphans, resolve and probe the runtime images, once.

        Raises SandboxUnavailableError when no engine answers or no runtime image works.
        """
        async with self._prepare_lock:
            if self._host is not None:
                return
            try:
                await self._prepare()
            except BaseException:
                await self._engine.close()
                raise
            log.info("docker sandbox ready: %s", ", ".join(self.runtimes.values()))

    async def _prepare(self) -> None:
        await self._engine.connect()
        info = await self._engine.call("info", lambda api: api.info())
        host = DockerHost(
            engine=self._engine,
            owner=self._config.owner,
            seccomp_profile=self._seccomp(),
            kill_timeout_s=self._config.kill_timeout_s,
            backstop_s=self._config.backstop_s,
            deadline_grace_s=self._config.deadline_grace_s,
            host_cpus=max(1, int(info.get("NCPU") or 1)),
            background=self._removals,
        )
        await self.reap(include_own=True)
        self._runtimes = await self._probe_runtimes(host)
        await self.settle()
        self._host = host
        self._reaper = asyncio.ensure_future(self._reap_periodically())
        self._start_warm_pool(host)

    def _start_warm_pool(self, host: DockerHost) -> None:
        config = self._config
        if not config.warm:
            return
        targets = {
            warm_key(runtime.image_id, config.warm_limits): config.warm
            for runtime in self._runtimes.values()
        }
        self._warm = WarmPool(
            host, targets, max_idle_s=config.warm_max_idle_s, max_wall_s=config.warm_max_wall_s
        )
        self._warm.start()

    def _seccomp(self) -> str | None:
        if not self._config.seccomp:
            return None
        try:
            return seccomp_profile()
        except UnsupportedArchitectureError as exc:
            log.warning("running without the seccomp deny list: %s", exc)
            return None

    async def _probe_runtimes(self, host: DockerHost) -> dict[str, _Runtime]:
        found = {}
        for name, reference in self._config.images.items():
            try:
                found[name] = await self._probe(host, name, reference)
            except (SandboxError, docker.errors.NotFound) as exc:
                log.warning("runtime %s (%s) unavailable: %s", name, reference, exc)
        if not found:
            images = ", ".join(self._config.images.values())
            raise SandboxUnavailableError(f"no runtime image works here ({images})")
        return found

    async def _probe(self, host: DockerHost, name: str, reference: str) -> _Runtime:
        """Resolve the image id and run the interpreter once through the whole sandbox path."""
        image = await self._engine.call("image inspect", lambda api: api.inspect_image(reference))
        image_id = str(image["Id"])
        request = SandboxRequest(_PROBE, runtime=name, limits=_PROBE_LIMITS)
        result = await DockerRun(host, image_id, image_id, request, None, None).execute()
        if result.outcome is not SandboxOutcome.EXITED or result.exit_code != 0:
            raise SandboxError(f"probe run: {result.outcome.value} {result.detail}".strip())
        version, *installed = result.stdout.decode(errors="replace").strip().splitlines()
        return _Runtime(image_id, f"{name} {version} {image_id}", _packages(installed))

    async def close(self) -> None:
        """Cancel the runs in progress (their results say CANCELLED), remove the warm
        containers, and release the engine."""
        self._runs.cancel_all()
        if self._warm is not None:
            await self._warm.close()
        await self._runs.wait_idle()
        await self.settle()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        await self._engine.close()

    async def settle(self) -> None:
        """Wait for the background removals of finished runs' (and discarded warm) containers."""
        await self._removals.wait()

    # ------------------------------------------------------------------ orphans

    async def reap(self, *, include_own: bool = False) -> list[str]:
        """Remove every evalmesh container past its deadline (a live executor never lets one
        outlive its wall timeout), and with include_own (at start) all of this owner's."""
        listed = await self._engine.call(
            "list", lambda api: api.containers(all=True, filters={"label": LABEL_OWNER})
        )
        now = time.time()
        removed = []
        for container in listed:
            labels = container.get("Labels") or {}
            mine = include_own and labels.get(LABEL_OWNER) == self._config.owner
            if mine or _past(labels.get(LABEL_DEADLINE), now):
                cid = str(container["Id"])
                with contextlib.suppress(SandboxError, docker.errors.NotFound):
                    await self._engine.call("remove orphan", functools.partial(_force_remove, cid))
                    removed.append(cid)
        if removed:
            log.warning("removed %d orphaned sandbox container(s)", len(removed))
        return removed

    async def _reap_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._config.reap_interval_s)
            try:
                await self.reap()
            except SandboxError as exc:
                log.warning("orphan reaping failed: %s", exc)

    # ------------------------------------------------------------------ introspection

    @property
    def runtimes(self) -> Mapping[str, str]:
        """Available runtime names and their identities (`<name> <version> <image id>`)."""
        return {name: runtime.identity for name, runtime in self._runtimes.items()}

    @property
    def runtime_details(self) -> Mapping[str, RuntimeDetails]:
        """The packages each available runtime's image holds, as its probe listed them."""
        return {name: RuntimeDetails(packages=rt.packages) for name, rt in self._runtimes.items()}

    @property
    def owner(self) -> str:
        """The owner label of this backend's containers."""
        return self._config.owner

    @property
    def config(self) -> DockerConfig:
        """The settings this backend runs with."""
        return self._config

    async def live_containers(self) -> list[str]:
        """Ids of this backend's containers that still exist (none once runs ended)."""
        listed = await self._engine.call(
            "list",
            lambda api: api.containers(
                all=True, filters={"label": f"{LABEL_OWNER}={self._config.owner}"}
            ),
        )
        return [str(container["Id"]) for container in listed]

    @property
    def warm_containers(self) -> list[str]:
        """Ids of the started containers waiting for a job (none without a warm pool)."""
        return self._warm.waiting if self._warm is not None else []

    # ------------------------------------------------------------------ running

    async def _execute(
        self, request: SandboxRequest, on_output: OutputCallback | None, cancel: asyncio.Event
    ) -> SandboxResult:
        """The container is a warm one of the request's shape if one waits, else started for
        this run; either way it serves this run only, and the wall timeout counts from the
        hand-over of the job."""
        assert self._host is not None
        runtime = self._runtimes[request.runtime]
        warm = await self._take_warm(runtime.image_id, request)
        run = DockerRun(
            self._host, runtime.image_id, runtime.identity, request, on_output, cancel, warm
        )
        return await run.execute()

    async def _take_warm(self, image_id: str, request: SandboxRequest) -> Booted | None:
        if self._warm is None:
            return None
        return await self._warm.take(
            warm_key(image_id, request.limits), request.limits.wall_timeout
        )


def _force_remove(container: str, api: Any) -> None:
    api.remove_container(container, force=True)


def _past(deadline: Any, now: float) -> bool:
    try:
        return float(deadline) < now
    except (TypeError, ValueError):
        return False
