"""Watch: many concurrent WatchEvaluation streams, the gateway's memory per stream and how
late the terminal event reaches each watcher.

To have every watcher attached before its evaluation ends, the executor has one slot and a
"plug" evaluation (a long sleep) holds it: the watched evaluations wait in the queue while the
streams open, then the plug is cancelled and they run. A watcher's delivery time is from its
evaluation's ``end_time`` to the moment it holds the terminal snapshot. The same is measured
with a single watcher first, as the reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence

from benchmarks import charts
from benchmarks.context import Context
from benchmarks.mesh import BenchMesh, ClientPool, rss_bytes, running_mesh
from benchmarks.results import Headline, ScenarioResult, Table
from benchmarks.stats import fmt_ms, fmt_ratio, percentile, ratio
from evalmesh.client import AsyncClient, Snapshot, State

__all__ = ["NAME", "TITLE", "run"]

NAME = "watch"
TITLE = "Watch: concurrent WatchEvaluation streams"
PLUG = "import time; time.sleep(600)"
ATTACH_TIMEOUT = 180.0
END_TIMEOUT = 180.0


@dataclasses.dataclass
class Phase:
    """One plug cycle: its watchers' delivery times and the gateway's memory around them."""

    streams: int
    delivery: list[float]
    attach_seconds: float
    rss_before: int
    rss_after: int


def run(ctx: Context) -> ScenarioResult:
    """Single-watcher reference cycles, then one cycle with every stream open at once."""
    result = ScenarioResult(NAME, TITLE, method=_method(ctx))
    with running_mesh(ctx.state_dir(NAME), slots=1) as mesh:
        single, many = asyncio.run(_measure(ctx, mesh))
    _report(ctx, result, single, many)
    return result


async def _measure(ctx: Context, mesh: BenchMesh) -> tuple[list[Phase], Phase]:
    s = ctx.sizes
    tenants = math.ceil(s.watch_streams / s.watch_per_tenant)
    async with mesh.client() as admin:
        keys = [
            (await admin.create_api_key(f"bench-watch-{i}", name="benchmark watcher")).secret
            for i in range(tenants)
        ]
        await _cycle(mesh, admin, keys[:1], 1)  # warm-up, discarded
        single = [await _cycle(mesh, admin, keys[:1], 1) for _ in range(s.watch_single_runs)]
        many = await _cycle(mesh, admin, keys, s.watch_per_tenant)
    return single, many


async def _cycle(
    mesh: BenchMesh, admin: AsyncClient, keys: Sequence[str], per_tenant: int
) -> Phase:
    plug = await admin.submit(PLUG, timeout="600s")
    await _until_running(admin, plug.id)
    async with contextlib.AsyncExitStack() as stack:
        pools = [
            await stack.enter_async_context(ClientPool(mesh, per_tenant, api_key=key))
            for key in keys
        ]
        targets = [(await pool[0].submit("print(1)")).id for pool in pools]
        rss_before = rss_bytes(mesh.pid("gateway"))
        total = len(keys) * per_tenant
        attached = _Countdown(total)
        started = time.perf_counter()
        watchers = [
            asyncio.ensure_future(_watch(pool[i], target, attached))
            for pool, target in zip(pools, targets, strict=True)
            for i in range(per_tenant)
        ]
        try:
            await asyncio.wait_for(attached.done.wait(), ATTACH_TIMEOUT)
            attach_seconds = time.perf_counter() - started
            await asyncio.sleep(0.5)
            rss_after = rss_bytes(mesh.pid("gateway"))
            await admin.cancel(plug.id, reason="benchmark plug")
            delivery = await asyncio.wait_for(asyncio.gather(*watchers), END_TIMEOUT)
        finally:
            for watcher in watchers:
                watcher.cancel()
    return Phase(total, list(delivery), attach_seconds, rss_before, rss_after)


class _Countdown:
    def __init__(self, count: int) -> None:
        self.left = count
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.done.set()


async def _watch(client: AsyncClient, evaluation_id: str, attached: _Countdown) -> float:
    """Follow one evaluation; seconds from its end_time to holding the terminal snapshot."""
    first = True
    async for event in client.watch(evaluation_id):
        if first:
            attached.tick()
            first = False
        if isinstance(event, Snapshot) and event.state.terminal:
            seen = time.time()
            end = event.evaluation.end_time
            if end is None or event.state is not State.SUCCEEDED:
                raise RuntimeError(f"{evaluation_id} ended {event.state} without an end time")
            return seen - end.timestamp()
    raise RuntimeError(f"the watch of {evaluation_id} ended without a terminal snapshot")


async def _until_running(client: AsyncClient, evaluation_id: str) -> None:
    deadline = time.monotonic() + 60
    while (await client.get(evaluation_id, full=False)).state is not State.RUNNING:
        if time.monotonic() > deadline:
            raise RuntimeError("the plug evaluation did not start within 60 s")
        await asyncio.sleep(0.05)


def _report(ctx: Context, result: ScenarioResult, single: list[Phase], many: Phase) -> None:
    reference = [d for phase in single for d in phase.delivery]
    per_stream = (many.rss_after - many.rss_before) / many.streams
    rows = [
        _row("1 watcher (reference)", reference, math.nan),
        _row(f"{many.streams} watchers at once", many.delivery, per_stream),
    ]
    columns = ["streams", "delivery p50", "p90", "p99", "max", "gateway memory per stream"]
    result.tables.append(Table(columns, rows))
    ref50, p99 = percentile(reference, 50), percentile(many.delivery, 99)
    result.headlines += [
        Headline(
            f"watch: {many.streams} streams, terminal event delivery p99",
            f"{fmt_ratio(ratio(p99, ref50))} one watcher's p50",
            f"{fmt_ms(p99)} vs {fmt_ms(ref50)}",
        ),
        Headline(
            f"watch: gateway memory per stream ({many.streams} open)",
            f"{per_stream / 1024:.0f} KiB",
            f"gateway RSS {many.rss_before / 2**20:.0f} -> {many.rss_after / 2**20:.0f} MiB",
        ),
    ]
    result.notes.append(
        f"Opening the {many.streams} streams took {many.attach_seconds:.1f} s "
        f"({many.streams / many.attach_seconds:.0f} streams/s from one client process)."
    )
    path = ctx.chart(NAME)
    series = {"1 watcher": reference, f"{many.streams} watchers": many.delivery}
    charts.cdf_chart(
        path,
        series,
        title="end_time to terminal snapshot held by the watcher",
        xlabel="seconds (log)",
        ylabel="fraction of watchers",
    )
    result.charts.append(path.name)
    result.data = {
        "single": [dataclasses.asdict(p) for p in single],
        "many": dataclasses.asdict(many),
    }


def _row(name: str, values: list[float], per_stream: float) -> list[str]:
    memory = "" if math.isnan(per_stream) else f"{per_stream / 1024:.0f} KiB"
    quantiles = [fmt_ms(percentile(values, q)) for q in (50, 90, 99)]
    return [name, *quantiles, fmt_ms(max(values)), memory]


def _method(ctx: Context) -> str:
    s = ctx.sizes
    tenants = math.ceil(s.watch_streams / s.watch_per_tenant)
    return (
        f"One mesh on SQLite whose executor has one slot. {s.watch_streams} streams over "
        f"{tenants} tenants ({s.watch_per_tenant} each, under the gateway's per-tenant cap, on "
        f"{math.ceil(s.watch_per_tenant / 50)} connections per tenant), all watching their "
        "tenant's one queued `print(1)` evaluation while a plug evaluation holds the slot; the "
        "gateway's RSS is read before the streams open and once all are open; then the plug is "
        f"cancelled and the evaluations run. Reference: {s.watch_single_runs} cycles with one "
        "watcher, same procedure, in the same mesh before. All streams are read by one client "
        "process, whose own handling of the burst of events is part of the delivery time."
    )
