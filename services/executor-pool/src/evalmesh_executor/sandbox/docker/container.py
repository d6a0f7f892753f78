"""A started sandbox container whose pid 1 waits for its one job, and how one is made and removed.

`boot()` creates a container from ``spec``'s settings, attaches to its stdin, stdout and
stderr, and starts it. pid 1 (``init``) then waits for the hand-over on stdin, so the same
container serves a run at once (cold) or later (warm: started ahead of demand). The attached
socket is the container's lifeline from boot on: when it closes, pid 1 ends everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

import docker

from evalmesh_executor.sandbox.core.background import Background
from evalmesh_executor.sandbox.core.models import MAX_CHUNK_BYTES, SandboxError, SandboxLimits

from .engine import DockerEngine
from .protocol import init_argv
from .spec import ContainerSpec, container_spec

__all__ = [
    "LABEL_DEADLINE",
    "LABEL_EVALUATION",
    "LABEL_OWNER",
    "Booted",
    "DockerHost",
    "boot",
    "discard",
    "name_after",
    "remove_later",
]

log = logging.getLogger(__name__)

LABEL_OWNER = "org.evalmesh.owner"
LABEL_EVALUATION = "org.evalmesh.evaluation"
LABEL_DEADLINE = "org.evalmesh.deadline"
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


@dataclass(frozen=True, slots=True)
class DockerHost:
    """What every run of one DockerSandbox shares.

    background: engine calls after a result (removing containers whose result is known,
    renaming handed-over warm ones); close() waits for them.
    """

    engine: DockerEngine
    owner: str
    seccomp_profile: str | None
    kill_timeout_s: float
    backstop_s: float
    deadline_grace_s: float
    host_cpus: int
    background: Background


@dataclass(eq=False, slots=True)
class Booted:
    """A started container whose pid 1 waits for its job on the attached stdin.

    deadline: wall-clock time (its label) after which any executor's reaper removes it.
    """

    container: str
    name: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    deadline: float
    booted_at: float = field(default_factory=time.monotonic)

    def fits(self, wall_timeout: float, grace_s: float) -> bool:
        """True while a job of this wall timeout would end well before the deadline."""
        return time.time() + wall_timeout + grace_s <= self.deadline


async def boot(
    host: DockerHost,
    image: str,
    limits: SandboxLimits,
    *,
    deadline: float,
    idle_s: float,
    evaluation_id: str = "",
) -> Booted:
    """Create, attach and start one container; pid 1 then waits up to idle_s for its job.

    A container that was created is removed again if attaching or starting fails (or the
    caller is cancelled).
    """
    spec = _spec(host, image, limits, deadline, idle_s, evaluation_id)
    container = await _create(host.engine, spec)
    try:
        sock = await host.engine.attach(container)
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=2 * MAX_CHUNK_BYTES)
        except BaseException:
            sock.close()
            raise
        try:
            await host.engine.call("start", lambda api: api.start(container))
        except BaseException:
            writer.close()
            raise
    except BaseException:
        remove_later(host, container)
        raise
    return Booted(container, spec.name, reader, writer, deadline)


def _spec(
    host: DockerHost,
    image: str,
    limits: SandboxLimits,
    deadline: float,
    idle_s: float,
    evaluation_id: str,
) -> ContainerSpec:
    return container_spec(
        name=f"evalmesh-job-{uuid.uuid4().hex}",
        image=image,
        command=init_argv(idle_s),
        limits=limits,
        host_cpus=host.host_cpus,
        labels={
            LABEL_OWNER: host.owner,
            LABEL_EVALUATION: evaluation_id[:128],
            LABEL_DEADLINE: str(int(deadline)),
        },
        seccomp_profile=host.seccomp_profile,
    )


async def _create(engine: DockerEngine, spec: ContainerSpec) -> str:
    # Retried on a transient failure; a create that did happen answers the retry with
    # 409 (name in use), which is then looked up by name.
    try:
        created = await engine.call("create", spec.create)
    except SandboxError as exc:
        if "409" not in str(exc) and "Conflict" not in str(exc):
            raise
        created = await engine.call("inspect", lambda api: api.inspect_container(spec.name))
    return str(created["Id"])


def name_after(host: DockerHost, booted: Booted, evaluation_id: str) -> None:
    """Rename a handed-over warm container after its evaluation, in the background (labels
    are fixed at create; the name is how `docker ps` then tells which evaluation it runs)."""
    if not evaluation_id:
        return
    safe = _NAME_UNSAFE.sub("-", evaluation_id)[:64]
    name = f"evalmesh-job-{safe}-{booted.name[-8:]}"
    host.background.start(_rename(host.engine, booted.container, name))


async def _rename(engine: DockerEngine, container: str, name: str) -> None:
    # Cosmetic: the container may already be gone (a short job), or the name taken.
    with contextlib.suppress(SandboxError, docker.errors.NotFound, docker.errors.APIError):
        await engine.call("rename", lambda api: api.rename(container, name), quiet_404=True)


def discard(host: DockerHost, booted: Booted) -> None:
    """Close a container's lifeline (its pid 1 exits) and remove it in the background."""
    booted.writer.close()
    remove_later(host, booted.container)


def remove_later(host: DockerHost, container: str) -> None:
    """Force-remove a container in the background; close() waits for it."""
    host.background.start(_remove(host.engine, container))


async def _remove(engine: DockerEngine, container: str) -> None:
    """Force-remove a container (killing pid 1 if it still holds it)."""
    try:
        await engine.call(
            "remove",
            lambda api: api.remove_container(container, force=True, v=True),
            quiet_404=True,
        )
    except docker.errors.NotFound:
        pass
    except SandboxError as exc:
        # Left for the reaper (labelled with its owner and deadline).
        log.error("could not remove container %s: %s", container, exc)
    await engine.release_idle()
