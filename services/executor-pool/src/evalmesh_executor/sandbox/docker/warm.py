"""The docker backend's warm pool: started containers waiting for a job, never reused.

Creating and starting a container is most of a docker run's cost (~200 ms here), and neither
depends on the code. So for each shape kept warm (a runtime's image and the limits that are
container settings, `spec.settings_shape`), the pool holds `target` containers
booted: created with exactly the settings a cold run of that shape gets, attached, started,
pid 1 waiting for its hand-over. A run whose request has that shape takes one (`take` never
waits for a boot: with none ready the run boots its own, as it would without a pool), hands
its job over, and the container is removed with the run, like any other. The pool then
refills in the background, one boot at a time, so refilling never competes with itself.

Each waiting container carries its owner's label and a deadline far enough out for
`max_idle_s` of waiting plus a job of up to `max_wall_s`; it is recycled (removed and
replaced) after `max_idle_s`, so no reaper ever finds it past its deadline, and a request
whose wall timeout would not end well before the deadline runs cold. pid 1 exits by itself
if the executor's connection closes (it died) or no job comes within its idle limit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import docker

from evalmesh_common.backoff import exponential_delay
from evalmesh_executor.sandbox.core.models import SandboxError, SandboxLimits

from .container import Booted, DockerHost, boot, discard
from .spec import settings_shape

__all__ = ["WarmKey", "WarmPool", "warm_key"]

log = logging.getLogger(__name__)

#: What a request must share with a warm container to take it: the image id and the limits
#: that are container settings.
WarmKey = tuple[str, SandboxLimits]

# pid 1 of a waiting container gives up this long after the pool would have recycled it.
_IDLE_MARGIN_S = 30.0
_RETRY_FIRST_S = 0.5
_RETRY_CAP_S = 30.0
_CLOSE_TIMEOUT_S = 60.0


def warm_key(image: str, limits: SandboxLimits) -> WarmKey:
    """The shape of a run: which warm containers could serve it."""
    return image, settings_shape(limits)


@dataclass(eq=False)
class _Waiting:
    key: WarmKey
    booted: Booted
    expires: float  # monotonic: recycled from then on
    watch: asyncio.Task[None] | None = field(default=None, repr=False)


class WarmPool:
    """Keeps `targets[key]` started containers of each shape waiting for a job."""

    def __init__(
        self,
        host: DockerHost,
        targets: Mapping[WarmKey, int],
        *,
        max_idle_s: float,
        max_wall_s: float,
    ) -> None:
        self._host = host
        self._targets = {key: count for key, count in targets.items() if count > 0}
        self._max_idle_s = max_idle_s
        self._max_wall_s = max_wall_s
        self._ready: dict[WarmKey, collections.deque[_Waiting]] = {
            key: collections.deque() for key in self._targets
        }
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._filler: asyncio.Task[None] | None = None
        self._failures = 0

    def start(self) -> None:
        """Begin filling in the background."""
        if self._filler is None and self._targets:
            self._filler = asyncio.ensure_future(self._fill())

    @property
    def waiting(self) -> list[str]:
        """Ids of the containers waiting for a job now."""
        return [w.booted.container for queue in self._ready.values() for w in queue]

    # ------------------------------------------------------------------ taking

    async def take(self, key: WarmKey, wall_timeout: float) -> Booted | None:
        """A waiting container of this shape for a job of this wall timeout, or None (run
        cold). The caller owns it from then on: hand it a job or discard it."""
        queue = self._ready.get(key)
        if not queue or wall_timeout > self._max_wall_s:
            return None
        while queue:
            waiting = queue.popleft()
            self._wake.set()  # refill
            if not await self._stop_watching(waiting):
                continue  # its pid 1 ended; the watcher discarded it
            self._failures = 0  # it was alive when needed: boots work
            if waiting.booted.fits(wall_timeout, self._host.deadline_grace_s):
                return waiting.booted
            discard(self._host, waiting.booted)
        return None

    async def _stop_watching(self, waiting: _Waiting) -> bool:
        """End the container's watcher before the job reads its stream; False if pid 1
        already ended (the watcher saw output or EOF)."""
        watch = waiting.watch
        if watch is None:
            return True
        watch.cancel()
        try:
            await asyncio.wait([watch])
        except asyncio.CancelledError:
            discard(self._host, waiting.booted)  # the caller was cancelled meanwhile
            raise
        return watch.cancelled()

    # ------------------------------------------------------------------ filling

    async def _fill(self) -> None:
        """Boot one container at a time for the shape furthest below its target.

        Boots that fail, and containers that die while waiting, back off exponentially
        (a broken image or engine must not spin), until a container proves healthy.
        """
        while not self._closing.is_set():
            self._wake.clear()
            self._recycle()
            key = self._wanted()
            if key is None:
                await _wait(self._wake, self._until_next_expiry())
                continue
            if self._failures:
                await _wait(self._closing, self._backoff())
                if self._closing.is_set():
                    return
            try:
                booted = await self._boot(key)
            except Exception as exc:
                self._failures += 1
                expected = isinstance(exc, SandboxError | OSError | docker.errors.DockerException)
                log.log(
                    logging.WARNING if expected else logging.ERROR,
                    "warm container not started (retrying in %gs): %s",
                    self._backoff(),
                    exc,
                    exc_info=not expected,
                )
                continue
            if self._closing.is_set():
                discard(self._host, booted)
                return
            self._add(key, booted)

    def _backoff(self) -> float:
        return exponential_delay(self._failures, base=_RETRY_FIRST_S, cap=_RETRY_CAP_S)

    def _wanted(self) -> WarmKey | None:
        """The shape furthest below its target, if any."""
        short = {key: target - len(self._ready[key]) for key, target in self._targets.items()}
        key = max(short, key=short.__getitem__, default=None)
        return key if key is not None and short[key] > 0 else None

    async def _boot(self, key: WarmKey) -> Booted:
        host = self._host
        image, limits = key
        deadline = time.time() + self._max_idle_s + self._max_wall_s + host.deadline_grace_s
        idle = self._max_idle_s + _IDLE_MARGIN_S
        return await boot(host, image, limits, deadline=deadline, idle_s=idle)

    def _add(self, key: WarmKey, booted: Booted) -> None:
        waiting = _Waiting(key, booted, time.monotonic() + self._max_idle_s)
        waiting.watch = asyncio.ensure_future(self._watch(waiting))
        self._ready[key].append(waiting)

    async def _watch(self, waiting: _Waiting) -> None:
        """pid 1 writes nothing before its hand-over: any byte or EOF means it is gone."""
        with contextlib.suppress(OSError):
            await waiting.booted.reader.read(1)
        log.warning("warm container %s ended while waiting", waiting.booted.container[:12])
        self._failures += 1
        self._drop(waiting)
        self._wake.set()

    def _drop(self, waiting: _Waiting) -> None:
        with contextlib.suppress(ValueError):
            self._ready[waiting.key].remove(waiting)
        if waiting.watch is not None and waiting.watch is not asyncio.current_task():
            waiting.watch.cancel()
        discard(self._host, waiting.booted)

    def _recycle(self) -> None:
        """Replace containers that waited max_idle_s (before their deadline comes near)."""
        now = time.monotonic()
        for queue in self._ready.values():
            for waiting in [w for w in queue if w.expires <= now]:
                self._failures = 0  # it lived its whole time
                self._drop(waiting)

    def _until_next_expiry(self) -> float:
        expiries = [w.expires for queue in self._ready.values() for w in queue]
        return max(0.0, min(expiries) - time.monotonic()) if expiries else self._max_idle_s

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Stop filling (a boot in progress finishes first) and remove every waiting container."""
        self._closing.set()
        self._wake.set()
        if self._filler is not None:
            _, pending = await asyncio.wait([self._filler], timeout=_CLOSE_TIMEOUT_S)
            for task in pending:
                task.cancel()
            self._filler = None
        for queue in self._ready.values():
            while queue:
                self._drop(queue[0])


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
