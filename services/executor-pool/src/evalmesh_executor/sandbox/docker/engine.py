"""Calls to the Docker Engine API: each in a private thread pool, with a timeout and retries.

The `docker` SDK is blocking; the executor is asyncio. Every call here runs in a small pool of
its own (so a slow daemon cannot starve the event loop's default executor), carries the
client's request timeout, and is retried a bounded number of times when the failure looks
transient (connection refused or reset, timeouts, 5xx answers). Whatever still fails becomes
a SandboxError: a platform fault, never blamed on the user's program.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import urllib3

from evalmesh_executor.sandbox.core.models import SandboxError, SandboxUnavailableError

__all__ = ["MIN_API_VERSION", "DockerEngine", "is_not_found"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: one-shot stats and seccomp errnoRet need Engine API 1.41 (Docker 20.10).
MIN_API_VERSION = (1, 41)

# requests' ConnectionError and Timeout (what a refused, reset or slow daemon raises) are OSErrors.
_TRANSIENT = (OSError,)
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def is_not_found(error: BaseException) -> bool:
    """True for the daemon's 404 (no such container or image)."""
    return isinstance(error, docker.errors.NotFound)


def _never_sent(error: BaseException | None) -> bool:
    """True when a request failed before reaching the daemon: its connection pool was closed."""
    args = getattr(error, "args", ())
    return any(isinstance(arg, urllib3.exceptions.ClosedPoolError) for arg in args)


def _transient(error: BaseException) -> bool:
    if isinstance(error, _TRANSIENT):
        return True
    if isinstance(error, docker.errors.APIError) and not isinstance(error, docker.errors.NotFound):
        status = error.status_code
        return status is not None and status >= 500
    return False


class DockerEngine:
    """One low-level API client, used from asyncio.

    base_url None means what the docker CLI would use: DOCKER_HOST (and its TLS settings),
    else the local socket.
    """

    def __init__(
        self,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 2,
        workers: int = 16,
    ) -> None:
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._retries = retries
        self._workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="evalmesh-docker")
        self._api: Any = None
        self._pools: Any = None

    async def connect(self) -> None:
        """Create the client and check the daemon answers a recent enough API."""
        missing = self._missing_socket()
        if missing is not None:
            raise SandboxUnavailableError(f"no Docker engine: {missing} does not exist")
        try:
            self._api = await self._run(self._client)
            version = await self.call("version", lambda api: api.version())
        except (docker.errors.DockerException, *_TRANSIENT, SandboxError) as exc:
            raise SandboxUnavailableError(f"no Docker engine answers: {exc}") from exc
        api_version = tuple(int(part) for part in str(version.get("ApiVersion", "0.0")).split("."))
        if api_version < MIN_API_VERSION:
            raise SandboxUnavailableError(
                f"Docker engine API {version.get('ApiVersion')} is older than 1.41 (Docker 20.10)"
            )
        log.info("docker engine %s (API %s)", version.get("Version"), version.get("ApiVersion"))

    def _missing_socket(self) -> str | None:
        """The engine's unix socket path if it does not exist (no daemon to ask)."""
        url = self._base_url or docker.utils.kwargs_from_env().get("base_url") or DEFAULT_SOCKET
        if not url.startswith("unix://"):
            return None
        path = url.removeprefix("unix://")
        return None if os.path.exists(path) else path

    def _client(self) -> Any:
        kwargs: dict[str, Any] = (
            {"base_url": self._base_url} if self._base_url else docker.utils.kwargs_from_env()
        )
        client = docker.APIClient(
            version="1.41", timeout=self._timeout_s, max_pool_size=self._workers, **kwargs
        )
        # The SDK keeps a connection pool per URL (25 of them), and every container has URLs of
        # its own, so cached pools only pile up idle sockets. Keep one. (Its num_pools argument
        # is ignored except for ssh:// in docker 7.2, hence the replacement.)
        adapter = client.get_adapter(client.base_url)
        pools = getattr(adapter, "pools", None)
        if pools is not None:
            adapter.pools = type(pools)(1, dispose_func=lambda pool: pool.close())
            self._pools = adapter.pools
        return client

    async def release_idle(self) -> None:
        """Close the idle pooled connection, so a finished job leaves no socket behind.

        A request racing with this fails with a closed-pool error, which is retried.
        """
        if self._pools is not None and self._api is not None:
            await self._run(self._pools.clear)

    async def close(self) -> None:
        """Close the client's connections and the thread pool (idempotent)."""
        api, self._api = self._api, None
        if api is not None:
            await self._run(api.close)
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def call(
        self, what: str, fn: Callable[[Any], T], *, retry: bool = True, quiet_404: bool = False
    ) -> T:
        """fn(api) in the pool; transient failures retried; a final failure is a SandboxError.

        docker.errors.NotFound propagates unchanged (callers decide what a 404 means).
        """
        if self._api is None:
            raise SandboxError("DockerEngine.connect() has not run")
        attempts = 1 + (self._retries if retry else 0)
        for attempt in range(1, attempts + 1):
            try:
                return await self._run(functools.partial(fn, self._api))
            except docker.errors.NotFound:
                if not quiet_404:
                    log.debug("docker %s: not found", what)
                raise
            except (docker.errors.DockerException, *_TRANSIENT) as exc:
                if attempt < attempts and _transient(exc):
                    log.warning("docker %s failed (attempt %d): %s", what, attempt, exc)
                    await asyncio.sleep(0.1 * 3 ** (attempt - 1))
                    continue
                raise SandboxError(f"docker {what}: {exc}") from exc
        raise AssertionError("unreachable")

    async def attach(self, container: str) -> socket.socket:
        """A socket attached to stdin, stdout and stderr (call before the container starts).

        The SDK hands back its HTTP connection's socket; the caller owns it from then on, to
        drive with asyncio. Not retried: a second attach would also receive the output.
        """
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        try:
            raw = await self.call(
                "attach", lambda api: api.attach_socket(container, params=params), retry=False
            )
        except SandboxError as exc:
            if not _never_sent(exc.__cause__):
                raise
            # release_idle() closed the pool under it; the daemon never saw it: once more.
            raw = await self.call(
                "attach", lambda api: api.attach_socket(container, params=params), retry=False
            )
        inner = getattr(raw, "_sock", raw)
        if not isinstance(inner, socket.socket) or isinstance(inner, ssl.SSLSocket):
            raw.close()
            raise SandboxError(f"docker attach: unsupported transport {type(inner).__name__}")
        # Take the descriptor over: ours is then the only one, so closing it (or the executor
        # dying) closes the container's stdin, the job's lifeline (see ``init``).
        own = socket.socket(fileno=inner.detach())
        raw.close()
        own.setblocking(False)
        return own
