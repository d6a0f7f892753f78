"""The faults, each injected the same way: a burst of submits fired just before it, the fault,
its healing, then a probe that times how long the mesh took to finish an evaluation again.

- ``storage``, ``scheduler``, ``executor-pool``, ``gateway``, ``nats-server``: kill -9; the
  supervisor starts the component again at once where it was (same port, store and, for the
  executor, the same ``EVALMESH_INSTANCE_ID``). Timed from the kill.
- ``executor-pause``: SIGSTOP of the executor for longer than its lease and a reaper pass,
  then SIGCONT: its runs were requeued meanwhile, and its late results must be refused.
  Timed from the SIGCONT.
- ``disk-full``: the database's filesystem filled to the last byte, then freed. Timed from
  the freeing.
- ``nats-link-cut``: the executor's link to NATS partitioned (see ``chaos.proxy``), then
  restored. Timed from the restoring.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

from chaos.disk import SmallDisk, truncate_wal
from chaos.ledger import FaultRecord, Ledger, Submission
from chaos.load import Load
from chaos.mesh import ChaosMesh
from chaos.plan import Plan
from evalmesh.client import AsyncClient, Evaluation, Priority, State

__all__ = ["Injector"]

log = logging.getLogger(__name__)

_SERVICES = ["storage", "scheduler", "executor-pool", "gateway"]
# The probe runs this long: long enough for the host sampler to see it.
_PROBE_SECONDS = 0.25


@dataclasses.dataclass
class Injector:
    """Injects faults into ``mesh`` while ``load`` runs, recording each in ``ledger``."""

    mesh: ChaosMesh
    load: Load
    client: AsyncClient
    ledger: Ledger
    plan: Plan
    disk: SmallDisk | None
    database: Path
    disk_unavailable: str = ""

    async def inject(self, name: str, cycle: int) -> FaultRecord | None:
        """Run fault ``name`` once; None if it cannot be injected here (logged)."""
        if name == "disk-full" and self.disk is None:
            log.warning("disk-full skipped: %s", self.disk_unavailable)
            return None
        keeps_identity = name in (*_SERVICES, "nats-server")
        interrupted = await self._running() if name.startswith(("executor", "nats-link")) else []
        burst = [self.load.fire("burst") for _ in range(self.plan.burst)]
        await asyncio.sleep(self.load.rng.uniform(0.0, 0.03))
        record = FaultRecord(name, cycle, keeps_identity, injected_at=time.time())
        record.burst_rids = [s.rid for s in burst]
        record.interrupted = interrupted
        self.ledger.faults.append(record)
        log.info("cycle %d: %s", cycle, name)
        if keeps_identity:
            await self._kill_and_restart(record)
        else:
            holds = {
                "executor-pause": self._pause,
                "disk-full": self._disk_full,
                "nats-link-cut": self._cut,
            }
            await holds[name](record)
        return record

    async def _running(self) -> list[str]:
        try:
            found = self.client.list(state=State.RUNNING, page_size=100)
            return [evaluation.id async for evaluation in found]
        except Exception as error:  # the list is informative only
            log.warning("could not list running evaluations: %s", error)
            return []

    async def _kill_and_restart(self, record: FaultRecord) -> None:
        old = self.mesh.signal(record.name, signal.SIGKILL)
        probe = self.load.fire("probe", seconds=_PROBE_SECONDS, priority=Priority.HIGH)
        record.probe_rid = probe.rid
        if not await self.mesh.wait_restarted(record.name, old, self.plan.recover_within):
            record.notes.append("not restarted within the deadline")
        record.healed_at = time.time()
        names = _SERVICES if record.name == "nats-server" else [record.name]
        if await self.mesh.wait_serving(names, self.plan.recover_within):
            record.serving_after = time.time() - record.injected_at
        await self._time_probe(record, probe)

    async def _hold(
        self, record: FaultRecord, start: Callable[[], object], heal: Callable[[], object]
    ) -> None:
        start()
        await asyncio.sleep(self._hold_for(record.name))
        heal()
        record.healed_at = time.time()
        probe = self.load.fire("probe", seconds=_PROBE_SECONDS, priority=Priority.HIGH)
        record.probe_rid = probe.rid
        if await self.mesh.wait_serving(_SERVICES, self.plan.recover_within):
            record.serving_after = time.time() - record.healed_at
        await self._time_probe(record, probe)

    def _hold_for(self, name: str) -> float:
        return {
            "executor-pause": self.plan.pause_for,
            "disk-full": self.plan.disk_full_for,
            "nats-link-cut": self.plan.cut_for,
        }[name]

    async def _pause(self, record: FaultRecord) -> None:
        await self._hold(
            record,
            lambda: self.mesh.signal("executor-pool", signal.SIGSTOP),
            lambda: self.mesh.signal("executor-pool", signal.SIGCONT),
        )

    async def _disk_full(self, record: FaultRecord) -> None:
        disk = self.disk
        assert disk is not None

        def fill() -> None:
            truncate_wal(self.database)
            record.notes.append(f"filled with {disk.fill() / 2**20:.1f} MiB")

        await self._hold(record, fill, disk.free)

    async def _cut(self, record: FaultRecord) -> None:
        await self._hold(record, self.mesh.proxy.cut, self.mesh.proxy.restore)

    async def _time_probe(self, record: FaultRecord, probe: Submission) -> None:
        """Wait for the probe to end; recovered_after is its end (database clock) minus the
        fault's start (kills) or healing (held faults)."""
        origin = record.injected_at if record.keeps_identity else record.healed_at
        if not await self.load.ended(probe, self.plan.recover_within):
            record.notes.append("the probe did not end within the deadline")
            return
        if probe.accepted_at is not None:
            record.probe_accepted_after = probe.accepted_at - origin
        evaluation = await self._read(probe)
        if evaluation is not None and evaluation.end_time is not None:
            record.recovered_after = evaluation.end_time.timestamp() - origin
            if evaluation.start_time is not None:
                record.probe_started_after = evaluation.start_time.timestamp() - origin

    async def _read(self, probe: Submission) -> Evaluation | None:
        for _ in range(50):
            try:
                return await self.client.get(probe.evaluation_id, full=False)
            except Exception:  # the mesh may still be settling; try again
                await asyncio.sleep(0.1)
        return None
