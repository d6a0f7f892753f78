"""One campaign, start to end: mesh up, steady load, every fault in turn, settle, check, the
negative control, mesh down, the last look for orphans."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import random
import shutil
import sqlite3
import time
import uuid
from datetime import datetime
from pathlib import Path

from chaos.checker import Verdict, check
from chaos.diagnose import dead_letter_trail, job_whereabouts
from chaos.disk import SmallDisk
from chaos.faults import Injector
from chaos.hostwatch import HostWatch
from chaos.ledger import Ledger, StoredEvaluation
from chaos.load import Load, client_pool
from chaos.mesh import ChaosMesh
from chaos.plan import Plan
from evalmesh.client import AsyncClient, Evaluation, NotFoundError, Priority, Role

__all__ = ["Control", "Outcome", "run_campaign"]

log = logging.getLogger(__name__)

_DISK_BYTES = 64 * 2**20
_WARMUP = 3


@dataclasses.dataclass
class Control:
    """The negative control: one evaluation deleted behind the platform's back and one
    request dropped from the ledger, which the checker must report as exactly one lost and
    one phantom more, and nothing else."""

    deleted_rid: str = ""
    dropped_rid: str = ""
    lost: list[str] = dataclasses.field(default_factory=list)
    phantom: list[str] = dataclasses.field(default_factory=list)
    passed: bool = False
    why: str = ""


@dataclasses.dataclass
class Outcome:
    """What a campaign found."""

    plan: Plan
    ledger: Ledger
    verdict: Verdict
    control: Control
    baseline: list[float]
    seconds: float
    disk: str
    stored: dict[str, StoredEvaluation] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


async def run_campaign(
    plan: Plan, work_dir: Path, disk_problem: str, seed: int, keep: bool = False
) -> Outcome:
    """Run one campaign in ``work_dir``; ``disk_problem`` says why no private disk exists.
    With ``keep``, the database is copied off the small disk into ``work_dir`` at the end."""
    started = time.monotonic()
    rng = random.Random(seed)  # noqa: S311 - timings and choices, not secrets
    disk = None if disk_problem else SmallDisk(work_dir / "db", _DISK_BYTES)
    if disk is not None:
        try:
            disk.mount()
        except OSError as error:
            disk_problem, disk = str(error), None
    env = dict(plan.mesh_env())
    database = (disk.path if disk else work_dir) / "evalmesh.db"
    env["EVALMESH_DATABASE_URL"] = f"sqlite+aiosqlite:///{database}"
    mesh = ChaosMesh(work_dir / "mesh", env)
    ledger = Ledger()
    prefix = "cx" + uuid.uuid4().hex[:6]
    watch = HostWatch(prefix, mesh.known_pids)
    try:
        await asyncio.to_thread(mesh.start)
        watch.start()
        return await _campaign(
            plan, mesh, ledger, watch, prefix, disk, disk_problem, work_dir, rng, started
        )
    finally:
        watch.stop()
        await asyncio.to_thread(mesh.stop)
        if disk is not None:
            if keep:
                for path in disk.path.glob("evalmesh.db*"):
                    shutil.copy2(path, work_dir / path.name)
            disk.unmount()


async def _campaign(
    plan: Plan,
    mesh: ChaosMesh,
    ledger: Ledger,
    watch: HostWatch,
    prefix: str,
    disk: SmallDisk | None,
    disk_problem: str,
    work_dir: Path,
    rng: random.Random,
    started: float,
) -> Outcome:
    api_key = await _tenant_key(mesh)
    clients = client_pool(mesh.gateway, api_key, 3)
    load = Load(clients, ledger, prefix, plan.seconds, plan.rounds, rng)
    database = (disk.path if disk else work_dir) / "evalmesh.db"
    injector = Injector(mesh, load, clients[0], ledger, plan, disk, database, disk_problem)
    notes: list[str] = []
    try:
        baseline = await _warm_up(load, clients[0], watch, notes)
        stop = asyncio.Event()
        steady = asyncio.ensure_future(load.steady(plan.rate, stop))
        for cycle in range(1, plan.cycles + 1):
            for name in plan.faults:
                await asyncio.sleep(plan.gap)
                await injector.inject(name, cycle)
        stop.set()
        await steady
        await _settle(load, plan, notes)
        await _resubmit_bursts(load, ledger, notes)
        await asyncio.sleep(2.5)  # a run that outlives its evaluation by the grace is an orphan
        stored = await _stored(clients[0], ledger)
        ledger.sightings = watch.sightings()
        ledger.orphans = dict(watch.orphans)
        ledger.unexpected_exits = _unexpected_exits(mesh, ledger)
        verdict = check(ledger, stored, stuck_after=plan.stuck_after)
        unfinished = [f.evaluation_id for f in verdict.of("lost") if "still" in f.detail]
        for evaluation_id, where in (await job_whereabouts(mesh.nats, unfinished)).items():
            verdict.annotate(evaluation_id, where)
        if unfinished:
            notes.append(f"NATS at the end: {await dead_letter_trail(mesh.nats)}")
        control = await _negative_control(clients[0], ledger, stored, verdict, database, plan)
    finally:
        await load.close()
        await asyncio.gather(*(client.close() for client in clients))
    await _last_look_for_orphans(mesh, watch, ledger, verdict)
    seconds = time.monotonic() - started
    disk_text = disk_problem or f"tmpfs of {_DISK_BYTES // 2**20} MiB"
    return Outcome(plan, ledger, verdict, control, baseline, seconds, disk_text, stored, notes)


async def _tenant_key(mesh: ChaosMesh) -> str:
    """A user key of a tenant of the campaign's own: everything in it is the campaign's."""
    async with AsyncClient(mesh.gateway, mesh.admin_key) as admin:
        created = await admin.create_api_key("chaos", Role.USER, "chaos campaign")
    return created.secret


async def _warm_up(
    load: Load, client: AsyncClient, watch: HostWatch, notes: list[str]
) -> list[float]:
    """A few evaluations one at a time before any fault: the mesh works, the host sees runs,
    and the probe's own latency without a fault (the floor under every recovery time)."""
    latencies = []
    for _ in range(_WARMUP):
        sub = load.fire("warmup", seconds=0.25, priority=Priority.HIGH)
        if not await load.ended(sub, 120):
            raise RuntimeError("the mesh did not run a warm-up evaluation within 120 s")
        evaluation = await client.get(sub.evaluation_id, full=False)
        if evaluation.end_time is not None:
            latencies.append(evaluation.end_time.timestamp() - sub.first_sent)
    await asyncio.sleep(0.3)
    seen = {run.tag for run in watch.sightings()}
    warm = [s for s in load.ledger.submissions.values() if s.kind == "warmup"]
    if not any(s.tag in seen for s in warm):
        notes.append("the host saw no warm-up run: run counts come from output only")
    return latencies


async def _settle(load: Load, plan: Plan, notes: list[str]) -> None:
    left = await load.all_ended(plan.settle)
    if left:
        after = f"{plan.settle:.0f} s after the last fault"
        notes.append(f"{len(left)} evaluations had not ended {after}")


async def _resubmit_bursts(load: Load, ledger: Ledger, notes: list[str]) -> None:
    """Submit every burst request once more: the answer must be the evaluation it made."""
    for sub in ledger.submissions.values():
        if sub.kind == "burst" and sub.accepted_at is not None:
            try:
                await load.resubmit(sub)
            except Exception as error:
                notes.append(f"resubmitting {sub.rid} failed: {error}")


def _stored_from(evaluation: Evaluation) -> StoredEvaluation:
    def stamp(value: datetime | None) -> float | None:
        return value.timestamp() if value is not None else None

    return StoredEvaluation(
        id=evaluation.id,
        request_id=evaluation.request_id,
        state=evaluation.state.value,
        attempt=evaluation.attempt,
        code=evaluation.code,
        stdout=evaluation.stdout,
        stderr=evaluation.stderr,
        exit_code=evaluation.exit_code,
        detail=evaluation.detail,
        create_time=stamp(evaluation.create_time) or 0.0,
        start_time=stamp(evaluation.start_time),
        end_time=stamp(evaluation.end_time),
    )


async def _stored(client: AsyncClient, ledger: Ledger) -> dict[str, StoredEvaluation]:
    """Every evaluation of the campaign's tenant, as the public API returns it, plus any the
    ledger knows that a listing missed."""
    stored = {}
    async for evaluation in client.list(full=True, page_size=100):
        stored[evaluation.id] = _stored_from(evaluation)
    for sub in ledger.submissions.values():
        for evaluation_id in sub.evaluation_ids - stored.keys():
            with contextlib.suppress(NotFoundError):
                stored[evaluation_id] = _stored_from(await client.get(evaluation_id))
    return stored


def _unexpected_exits(mesh: ChaosMesh, ledger: Ledger) -> list[str]:
    killed = {f.name for f in ledger.faults if f.keeps_identity}
    exits = [line for _, line in mesh.reports if " after " in line and "restarting" in line]
    return [line for line in exits if "SIGKILL" not in line or line.split()[0] not in killed]


async def _negative_control(
    client: AsyncClient,
    ledger: Ledger,
    stored: dict[str, StoredEvaluation],
    verdict: Verdict,
    database: Path,
    plan: Plan,
) -> Control:
    control = Control()
    flagged = {f.rid for f in verdict.findings}
    clean = [
        s
        for s in ledger.submissions.values()
        if s.kind == "load" and s.rid not in flagged and s.evaluation_id in stored
    ]
    if len(clean) < 2:
        control.why = "fewer than two clean evaluations to tamper with"
        return control
    deleted, dropped = clean[len(clean) // 3], clean[2 * len(clean) // 3]
    control.deleted_rid, control.dropped_rid = deleted.rid, dropped.rid
    await asyncio.to_thread(_delete_row, database, deleted.evaluation_id)
    tampered = copy.copy(ledger)
    tampered.submissions = {r: s for r, s in ledger.submissions.items() if r != dropped.rid}
    after = check(tampered, await _stored(client, tampered), stuck_after=plan.stuck_after)
    control.lost = sorted({f.rid for f in after.of("lost")} - {f.rid for f in verdict.of("lost")})
    before_phantom = {f.evaluation_id for f in verdict.of("phantom")}
    phantom = {f.evaluation_id for f in after.of("phantom")} - before_phantom
    control.phantom = sorted(phantom)
    expected = dict(verdict.counts())
    expected["lost"] += 1
    expected["phantom"] += 1
    control.passed = (
        control.lost == [deleted.rid]
        and control.phantom == [dropped.evaluation_id]
        and after.counts() == expected
    )
    if not control.passed:
        control.why = f"expected {expected}, the checker said {after.counts()}"
    return control


def _delete_row(database: Path, evaluation_id: str) -> None:
    """Delete one evaluation straight from SQLite, as a broken platform might lose it."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db, db:
        for table, column in (
            ("output_chunks", "evaluation_id"),
            ("evaluation_labels", "evaluation_id"),
            ("evaluations", "id"),
        ):
            db.execute(f"DELETE FROM {table} WHERE {column} = ?", (evaluation_id,))  # noqa: S608


async def _last_look_for_orphans(
    mesh: ChaosMesh, watch: HostWatch, ledger: Ledger, verdict: Verdict
) -> None:
    """Stop the mesh, then look twice for sandbox processes re-parented to the campaign."""
    await asyncio.to_thread(mesh.stop)
    for _ in range(3):
        await asyncio.sleep(1.0)
        watch.sample()
    for pid, description in watch.orphans.items():
        if pid not in ledger.orphans:
            ledger.orphans[pid] = description
            verdict.add("orphans", f"pid {pid}", "", description + " (after the mesh stopped)")
