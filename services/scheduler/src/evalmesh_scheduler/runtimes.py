"""Which runtimes the executor pool offers, from the executors' heartbeats.

Submits are checked here before anything is stored: a runtime that no healthy executor offers,
while some executor is healthy, is refused at once with FAILED_PRECONDITION (reason
``RUNTIME_UNAVAILABLE``, metadata ``runtime`` and ``offered``). Queued instead, its job would be
passed from executor to executor until its deliveries ran out and it ended in ERROR long after
the client had moved on. When no executor is healthy at all (the pool is starting, restarting,
draining or failing its self-check) nothing is refused: work waits for the pool, as a queue should.

The check is on every submit's path, so it costs no round trip: it reads the scheduler's local
view of the executors bucket (``BucketView.current``, kept current by one watch) and decodes the
heartbeats at most every ``refresh`` seconds while some executor is healthy. A runtime that
appears in a heartbeat is accepted within that time; while no executor is healthy the view is
read on every submit, so the first healthy heartbeat counts at once. The scheduler is not ready
before the view's first snapshot (``probe``); until then, everything is accepted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from evalmesh.executor.v1 import pool_pb2
from evalmesh.v1 import cluster_pb2
from evalmesh_common import FailedPrecondition
from evalmesh_common.messaging import BucketView
from evalmesh_scheduler.jobs import nats_unavailable

__all__ = ["DEFAULT_RUNTIME", "RUNTIME_UNAVAILABLE", "RuntimeOffers", "describe_runtimes"]

RUNTIME_UNAVAILABLE = "RUNTIME_UNAVAILABLE"
DEFAULT_RUNTIME = "python"


@dataclass(frozen=True)
class _Offers:
    healthy: int  # healthy executors
    runtimes: frozenset[str]  # the runtimes at least one of them offers


def _healthy(status: pool_pb2.PoolStatus) -> bool:
    return status.healthy and not status.draining


def _decode(values: Iterable[bytes]) -> list[pool_pb2.PoolStatus]:
    return [pool_pb2.PoolStatus.FromString(value) for value in values]


class RuntimeOffers:
    """The runtimes the healthy executors offer, for admission and for ListRuntimes."""

    def __init__(
        self,
        executors: BucketView,
        *,
        refresh: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._executors = executors
        self._refresh = refresh
        self._clock = clock
        self._cached: tuple[float, _Offers] | None = None

    async def probe(self) -> bool:
        """Health dependency: the heartbeats' first snapshot is in."""
        return self._executors.current() is not None

    def require(self, runtimes: Iterable[str]) -> None:
        """Raise FailedPrecondition(RUNTIME_UNAVAILABLE) for the first runtime that no healthy
        executor offers while some executor is healthy."""
        offers = self._offers()
        if offers is None or offers.healthy == 0:
            return
        for runtime in runtimes:
            name = runtime or DEFAULT_RUNTIME
            if name not in offers.runtimes:
                offered = ", ".join(sorted(offers.runtimes)) or "none"
                raise FailedPrecondition(
                    f"no healthy executor offers runtime {name!r} (offered now: {offered})",
                    reason=RUNTIME_UNAVAILABLE,
                    metadata={"runtime": name, "offered": ",".join(sorted(offers.runtimes))},
                )

    async def runtimes(self) -> list[cluster_pb2.Runtime]:
        """What the healthy executors offer, read fresh from the bucket, by name."""
        async with nats_unavailable("cannot read executor heartbeats"):
            values = await self._executors.values()
        return describe_runtimes(_decode(values))

    def _offers(self) -> _Offers | None:
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._refresh:
            return self._cached[1]
        values = self._executors.current()
        if values is None:
            return None
        healthy = [status for status in _decode(values) if _healthy(status)]
        offered = frozenset(rt.name for status in healthy for rt in status.runtimes)
        offers = _Offers(len(healthy), offered)
        if healthy:
            # Only a view that can refuse is kept: with no healthy executor the next submit
            # looks again, so the first heartbeat of a healthy pool counts at once.
            self._cached = (now, offers)
        return offers


def describe_runtimes(statuses: Sequence[pool_pb2.PoolStatus]) -> list[cluster_pb2.Runtime]:
    """One Runtime per name the healthy executors offer: how many offer it, the versions,
    digests and packages they report (several when they differ, as during a rollout)."""
    infos: dict[str, list[pool_pb2.RuntimeInfo]] = defaultdict(list)
    for status in statuses:
        if _healthy(status):
            for info in status.runtimes:
                infos[info.name].append(info)
    return [_runtime(name, infos[name]) for name in sorted(infos)]


def _runtime(name: str, infos: list[pool_pb2.RuntimeInfo]) -> cluster_pb2.Runtime:
    versions = sorted({info.version for info in infos if info.version})
    packages = sorted({(p.name, p.version) for info in infos for p in info.packages})
    return cluster_pb2.Runtime(
        name=name,
        description=next((info.description for info in infos if info.description), ""),
        language="python",
        version=", ".join(versions),
        digests=sorted({info.digest for info in infos if info.digest}),
        executor_count=len(infos),
        packages=[cluster_pb2.RuntimePackage(name=n, version=v) for n, v in packages],
    )
