"""The surface every sandbox backend offers, and the part of it both implement alike.

The run loop sees only :class:`SandboxBackend`: prepare once, name the runtimes with exact
identities, run one request with live output and a cancel event, run the escape canaries,
close. :class:`BaseSandbox` is what ``BwrapSandbox`` and ``DockerSandbox`` share of it: the
context manager, the checks before a run, the bookkeeping that lets ``close()`` cancel the runs
in progress (:class:`ActiveRuns`), and the self-check.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from .canaries import canary_request, self_check_escapes
from .models import (
    OutputCallback,
    RuntimeDetails,
    SandboxError,
    SandboxRequest,
    SandboxResult,
    unavailable_runtime,
)

__all__ = ["ActiveRuns", "Backend", "BaseSandbox", "SandboxBackend"]


class SandboxBackend(Protocol):
    """What the executor needs of a sandbox backend."""

    async def prepare(self) -> None:
        """Check the host once; raise SandboxUnavailableError if this backend cannot run."""

    @property
    def runtimes(self) -> Mapping[str, str]:
        """Runtime names and exact identities (``<name> <version> <digest>``), after prepare."""
        ...

    @property
    def runtime_details(self) -> Mapping[str, RuntimeDetails]:
        """Description and installed packages of each runtime, after prepare."""
        ...

    async def run(
        self,
        request: SandboxRequest,
        on_output: OutputCallback | None = None,
        *,
        cancel: asyncio.Event | None = None,
    ) -> SandboxResult:
        """Run one program in a fresh sandbox; setting ``cancel`` kills it within a second."""
        ...

    async def self_check(self, tcp_ports: Sequence[int] = ()) -> list[str]:
        """Run the escape canaries; return the ones that got out (want: none)."""
        ...

    async def close(self) -> None:
        """Stop the runs in progress and release the backend."""


@dataclass(frozen=True)
class Backend:
    """A prepared backend and the name it reports (``docker`` or ``bwrap``)."""

    name: str
    sandbox: SandboxBackend


async def _forward_event(source: asyncio.Event, target: asyncio.Event) -> None:
    """Set ``target`` once ``source`` is set (a caller's cancel event onto a run's own)."""
    await source.wait()
    target.set()


class ActiveRuns:
    """A backend's runs in progress, so that closing it cancels them all and waits for them."""

    def __init__(self) -> None:
        self.closed = False
        self._cancels: set[asyncio.Event] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def check_open(self) -> None:
        """Raise SandboxError once the backend is closed."""
        if self.closed:
            raise SandboxError("the sandbox is closed")

    @contextlib.asynccontextmanager
    async def track(self, cancel: asyncio.Event | None) -> AsyncIterator[asyncio.Event]:
        """Count one run for its duration; yields its own cancel event, which the caller's
        ``cancel`` and :meth:`cancel_all` both set."""
        own_cancel = asyncio.Event()
        self._cancels.add(own_cancel)
        self._idle.clear()
        watcher = asyncio.ensure_future(_forward_event(cancel, own_cancel)) if cancel else None
        try:
            yield own_cancel
        finally:
            self._cancels.discard(own_cancel)
            if not self._cancels:
                self._idle.set()
            if watcher is not None:
                watcher.cancel()

    def cancel_all(self) -> None:
        """Refuse new runs and cancel the ones in progress."""
        self.closed = True
        for cancel in list(self._cancels):
            cancel.set()

    async def wait_idle(self) -> None:
        """Wait until no run is in progress."""
        await self._idle.wait()


class BaseSandbox(abc.ABC):
    """A backend that runs untrusted programs one per fresh sandbox. Runs may overlap.

    Use ``async with`` or call prepare()/close(). A backend implements ``prepare``, ``close``,
    ``runtimes``, ``runtime_details`` and ``_execute`` (one tracked run).
    """

    def __init__(self) -> None:
        self._runs = ActiveRuns()

    async def __aenter__(self) -> Self:
        await self.prepare()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def prepare(self) -> None:
        """Check the host once; raise SandboxUnavailableError if this backend cannot run."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Cancel the runs in progress (their results say CANCELLED), refuse new ones, and
        release the backend."""

    @property
    @abc.abstractmethod
    def runtimes(self) -> Mapping[str, str]:
        """Available runtime names and their identities (after prepare)."""

    @property
    @abc.abstractmethod
    def runtime_details(self) -> Mapping[str, RuntimeDetails]:
        """Description and packages of each available runtime (after prepare)."""

    async def run(
        self,
        request: SandboxRequest,
        on_output: OutputCallback | None = None,
        *,
        cancel: asyncio.Event | None = None,
    ) -> SandboxResult:
        """Run one program in a fresh sandbox and return how it ended.

        on_output receives the output live, in order per stream. Setting `cancel` kills the
        run (within a second) and returns CANCELLED with the output so far. Cancelling the
        calling task also kills and tears the sandbox down, then lets CancelledError
        propagate, as asyncio code expects. A runtime this backend lacks is a platform fault.
        """
        await self.prepare()
        self._runs.check_open()
        if request.runtime not in self.runtimes:
            return unavailable_runtime(request)
        async with self._runs.track(cancel) as own_cancel:
            return await self._execute(request, on_output, own_cancel)

    @abc.abstractmethod
    async def _execute(
        self, request: SandboxRequest, on_output: OutputCallback | None, cancel: asyncio.Event
    ) -> SandboxResult:
        """One run of a runtime this backend has; ``cancel`` is the run's own event."""

    async def self_check(self, tcp_ports: Sequence[int] = ()) -> list[str]:
        """Run the escape canaries in a sandbox (the ``python`` runtime where there is one);
        return the ones that got out (want: []). SandboxError if they could not finish."""
        await self.prepare()
        runtimes = self.runtimes
        runtime = "python" if "python" in runtimes else next(iter(runtimes), "python")
        return self_check_escapes(await self.run(canary_request(runtime, tcp_ports)))
