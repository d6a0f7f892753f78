"""This instance's PoolStatus: what GetPoolStatus answers and what goes into the executors
bucket every few seconds (the entry expires with the bucket's TTL if the instance vanishes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import nats.errors
from google.protobuf import timestamp_pb2
from nats.aio.client import Client
from nats.js.errors import Error as JetStreamError

from evalmesh.executor.v1 import pool_pb2
from evalmesh.v1 import cluster_pb2
from evalmesh_common.subjects import EXECUTORS_BUCKET
from evalmesh_executor.runs import RunRegistry
from evalmesh_executor.sandbox import RuntimeDetails

__all__ = ["InstanceInfo", "StatusReporter", "runtime_infos"]

logger = logging.getLogger(__name__)

# What a runtime holds, unless its backend says (a bwrap package tree's manifest does).
_DESCRIPTIONS = {
    "python": "CPython with the standard library only",
    "python-ml": "CPython with numpy, pandas, scikit-learn and scipy",
}
_NATS_ERRORS = (nats.errors.Error, JetStreamError, OSError)
_HEALTH_POLL = 0.2  # how soon a change of health reaches the bucket


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def runtime_infos(
    identities: Mapping[str, str], details: Mapping[str, RuntimeDetails]
) -> list[pool_pb2.RuntimeInfo]:
    """RuntimeInfo per runtime from ``<name> <version> <digest>`` identities and what the
    backend knows of each (description, packages), by name."""
    infos = []
    for name in sorted(identities):
        parts = identities[name].split()
        detail = details.get(name) or RuntimeDetails()
        infos.append(
            pool_pb2.RuntimeInfo(
                name=name,
                digest=parts[-1] if parts else "",
                version=parts[1] if len(parts) >= 3 else "",
                description=detail.description or _DESCRIPTIONS.get(name, ""),
                packages=[
                    cluster_pb2.RuntimePackage(name=p.name, version=p.version)
                    for p in detail.packages
                ],
            )
        )
    return infos


@dataclass(frozen=True)
class InstanceInfo:
    """What does not change while the instance runs."""

    instance_id: str
    host: str
    backend: str
    slots: int
    start_time: datetime
    runtimes: tuple[pool_pb2.RuntimeInfo, ...]


class StatusReporter:
    """Builds PoolStatus snapshots and puts them into the executors bucket."""

    def __init__(
        self,
        info: InstanceInfo,
        runs: RunRegistry,
        *,
        unhealthy_reason: Callable[[], str],
        draining: Callable[[], bool],
        interval: float,
    ) -> None:
        self.info = info
        self._runs = runs
        self._unhealthy_reason = unhealthy_reason
        self._draining = draining
        self.interval = interval
        self._ok = False  # whether the latest heartbeat reached the bucket
        self._reported: tuple[str, bool] | None = None  # the health it said

    @property
    def written(self) -> bool:
        """Whether the bucket holds this instance's heartbeat and it says the health of now.
        Readiness waits for it: the scheduler admits work by what the bucket says."""
        return self._ok and self._reported == self.health()

    def health(self) -> tuple[str, bool]:
        """Why the instance takes no work (``""`` while healthy), and whether it is draining."""
        draining = self._draining()
        return self._unhealthy_reason() or ("draining" if draining else ""), draining

    def snapshot(self) -> pool_pb2.PoolStatus:
        """The status right now."""
        info = self.info
        reason, draining = self.health()
        status = pool_pb2.PoolStatus(
            instance_id=info.instance_id,
            host=info.host,
            backend=info.backend,
            slots=info.slots,
            runtimes=info.runtimes,
            healthy=not reason,
            unhealthy_reason=reason,
            draining=draining,
            start_time=_timestamp(info.start_time),
            report_time=_timestamp(datetime.now(info.start_time.tzinfo)),
            completed=self._runs.completed,
        )
        for handle in self._runs.running():
            run = status.runs.add(
                evaluation_id=handle.evaluation_id, attempt=handle.attempt, tenant=handle.tenant
            )
            if handle.start_time is not None:
                run.start_time.CopyFrom(_timestamp(handle.start_time))
        return status

    async def run(self, client: Client) -> None:
        """Put the status every ``interval`` seconds, and as soon as the health changes (the
        scheduler admits work by the heartbeats: a pool that just passed its self-check must
        not look unhealthy for a whole interval), until cancelled."""
        last = 0.0
        while True:
            changed = self._ok and not self.written
            if changed or time.monotonic() - last >= self.interval:
                await self.report(client)
                last = time.monotonic()
            await asyncio.sleep(min(self.interval, _HEALTH_POLL))

    async def report(self, client: Client) -> bool:
        """Put one snapshot; False if the bucket could not be written."""
        snapshot = self.snapshot()
        try:
            bucket = await client.jetstream().key_value(EXECUTORS_BUCKET)
            await bucket.put(self.info.instance_id, snapshot.SerializeToString())
        except _NATS_ERRORS as exc:
            if self._ok:
                logger.warning("could not report pool status: %s", exc)
            self._ok = False
            return False
        self._ok, self._reported = True, (snapshot.unhealthy_reason, snapshot.draining)
        return True

    async def remove(self, client: Client) -> None:
        """Delete this instance's entry (on a clean shutdown)."""
        with contextlib.suppress(*_NATS_ERRORS):
            bucket = await client.jetstream().key_value(EXECUTORS_BUCKET)
            await bucket.delete(self.info.instance_id)
