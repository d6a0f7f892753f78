"""Latency: submit-to-result one at a time and at a steady half-capacity arrival rate, and the
platform's share of it broken down by stage from what the public API exposes.

Stages of one ``client.run`` (one RunEvaluation stream: queue, then follow to the end):
- gateway + create: from the call to the evaluation's ``create_time`` (stored);
- publish + queue wait + claim: ``create_time`` to ``start_time`` (the executor's claim);
- sandbox start + result write: ``start_time`` to ``end_time``, minus the run itself;
- watcher notified: ``end_time`` to the result in the client's hands.
The run is the result's ``wall_time``; the platform's share is the total minus the run. The
stages follow each other, so they add up to the total (the client's and the database's clocks
are the same host's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from benchmarks import charts
from benchmarks.context import Context
from benchmarks.floor import run_floor_job
from benchmarks.mesh import BenchMesh, ClientPool, run_mesh_round, running_mesh
from benchmarks.results import Headline, ScenarioResult, Table
from benchmarks.stats import fmt_ms, fmt_rate, fmt_ratio, percentile, ratio
from evalmesh.client import AsyncClient, Evaluation, State

__all__ = ["NAME", "TITLE", "run"]

NAME = "latency"
TITLE = "Latency: submit to result, and the platform's share by stage"
CODE = "print(1)"
QUANTILES = (50, 90, 99)


@dataclasses.dataclass(frozen=True)
class Sample:
    """The timings of one run, in seconds."""

    total: float
    created: float
    queue: float
    sandbox: float
    notified: float
    run: float
    ok: bool

    @property
    def platform(self) -> float:
        """Everything but the program's own run."""
        return self.total - self.run


STAGES: dict[str, Callable[[Sample], float]] = {
    "total: submit to result seen": lambda s: s.total,
    "platform share: total minus run": lambda s: s.platform,
    "gateway + create (submit to create_time)": lambda s: s.created,
    "publish + queue wait + claim (create_time to start_time)": lambda s: s.queue,
    "sandbox start + result write (start to end, minus run)": lambda s: s.sandbox,
    "watcher notified (end_time to result seen)": lambda s: s.notified,
    "run (the result's wall_time)": lambda s: s.run,
}


def run(ctx: Context) -> ScenarioResult:
    """One mesh (SQLite): sequential runs interleaved with floor jobs, then a steady stream."""
    result = ScenarioResult(NAME, TITLE)
    with running_mesh(ctx.state_dir(NAME), slots=ctx.sizes.slots) as mesh:
        floor, single, steady, rate = asyncio.run(_measure(ctx, mesh))
    result.method = _method(ctx, rate)
    _report(ctx, result, floor, single, steady, rate)
    return result


async def _measure(
    ctx: Context, mesh: BenchMesh
) -> tuple[list[float], list[Sample], list[Sample], float]:
    sizes = ctx.sizes
    async with mesh.client() as client:
        for _ in range(3):  # warm-up, discarded
            await timed_run(client)
            await _floor_time()
        floor, single = [], []
        for _ in range(sizes.latency_runs):
            floor.append(await _floor_time())
            single.append(await timed_run(client))
    capacity = ctx.shared.get("capacity") or await _capacity(ctx, mesh)
    rate = capacity / 2
    steady = await _steady(mesh, rate, sizes.latency_steady_runs)
    return floor, single, steady, rate


async def timed_run(client: AsyncClient) -> Sample:
    """One ``client.run``, taken apart by the evaluation's own timestamps."""
    sent_wall, started = time.time(), time.perf_counter()
    evaluation = await client.run(CODE)
    total = time.perf_counter() - started
    return _sample(evaluation, total, sent_wall)


def _sample(evaluation: Evaluation, total: float, sent_wall: float) -> Sample:
    created, start, end = evaluation.create_time, evaluation.start_time, evaluation.end_time
    if created is None or start is None or end is None or evaluation.wall_time is None:
        return Sample(total, 0.0, 0.0, 0.0, 0.0, 0.0, ok=False)
    wall = evaluation.wall_time.total_seconds()
    return Sample(
        total=total,
        created=created.timestamp() - sent_wall,
        queue=(start - created).total_seconds(),
        sandbox=(end - start).total_seconds() - wall,
        notified=sent_wall + total - end.timestamp(),
        run=wall,
        ok=evaluation.state is State.SUCCEEDED,
    )


async def _floor_time() -> float:
    started = time.perf_counter()
    if not await run_floor_job(CODE):
        raise RuntimeError("the raw bwrap floor job did not print 1")
    return time.perf_counter() - started


async def _capacity(ctx: Context, mesh: BenchMesh) -> float:
    jobs = max(8, ctx.sizes.throughput_jobs // 2)
    async with ClientPool(mesh, jobs) as pool:
        return (await run_mesh_round(pool, [CODE] * jobs)).rate


async def _steady(mesh: BenchMesh, rate: float, count: int) -> list[Sample]:
    """``count`` runs started 1/rate seconds apart, whatever the earlier ones are doing."""
    async with ClientPool(mesh, max(1, int(rate * 5))) as pool:
        began = time.perf_counter()

        async def launch(index: int) -> Sample:
            await asyncio.sleep(max(0.0, began + index / rate - time.perf_counter()))
            return await timed_run(pool[index])

        return list(await asyncio.gather(*(launch(i) for i in range(count))))


def _quantiles(samples: list[Sample], stage: Callable[[Sample], float]) -> list[float]:
    values = [stage(s) for s in samples if s.ok]
    return [percentile(values, q) for q in QUANTILES]


def _report(
    ctx: Context,
    result: ScenarioResult,
    floor: list[float],
    single: list[Sample],
    steady: list[Sample],
    rate: float,
) -> None:
    columns = ["stage"] + [f"one at a time p{q}" for q in QUANTILES]
    columns += [f"steady {rate:.1f}/s p{q}" for q in QUANTILES]
    rows = [
        ["raw floor: one bwrap print(1) job"]
        + [fmt_ms(percentile(floor, q)) for q in QUANTILES]
        + ["", "", ""]
    ]
    table: dict[str, dict[str, float]] = {}
    for name, stage in STAGES.items():
        one, many = _quantiles(single, stage), _quantiles(steady, stage)
        rows.append([name, *map(fmt_ms, one), *map(fmt_ms, many)])
        table[name] = {
            "one p50": one[0],
            "one p99": one[2],
            "steady p50": many[0],
            "steady p99": many[2],
        }
    result.tables.append(Table(columns, rows))
    failed = sum(not s.ok for s in single + steady)
    result.notes.append(f"{failed} of {len(single) + len(steady)} runs did not end SUCCEEDED.")
    _headlines(result, floor, single, steady, rate)
    _charts(ctx, result, table, floor, single, steady)
    result.data = {
        "floor_s": floor,
        "one_at_a_time": [dataclasses.asdict(s) for s in single],
        "steady": [dataclasses.asdict(s) for s in steady],
        "steady_rate_per_s": rate,
    }


def _headlines(
    result: ScenarioResult,
    floor: list[float],
    single: list[Sample],
    steady: list[Sample],
    rate: float,
) -> None:
    total = _quantiles(single, STAGES["total: submit to result seen"])
    share = _quantiles(single, STAGES["platform share: total minus run"])
    floor50 = percentile(floor, 50)
    result.headlines += [
        Headline(
            "latency one at a time, submit to result p50",
            f"{fmt_ratio(ratio(total[0], floor50))} the floor's job",
            f"{fmt_ms(total[0])} vs a raw bwrap print(1) {fmt_ms(floor50)}",
        ),
        Headline(
            "latency one at a time, platform share p50 / p99",
            f"{fmt_ms(share[0])} / {fmt_ms(share[2])}: {ratio(share[0], total[0]):.0%} of the "
            "total p50",
            f"{fmt_ratio(ratio(share[0], floor50))} / {fmt_ratio(ratio(share[2], floor50))} a "
            f"raw floor job ({fmt_ms(floor50)})",
            "<= 10 ms / <= 30 ms",
        ),
    ]
    steady_total = _quantiles(steady, STAGES["total: submit to result seen"])
    result.headlines.append(
        Headline(
            f"latency at half capacity ({fmt_rate(rate)}), p99 vs one at a time",
            fmt_ratio(ratio(steady_total[2], total[2])),
            f"p99 {fmt_ms(steady_total[2])} vs {fmt_ms(total[2])}",
        )
    )


def _charts(
    ctx: Context,
    result: ScenarioResult,
    table: dict[str, dict[str, float]],
    floor: list[float],
    single: list[Sample],
    steady: list[Sample],
) -> None:
    stages = {
        name.split(" (")[0].split(":")[0]: {k: v * 1000 for k, v in row.items()}
        for name, row in table.items()
        if not name.startswith("total")
    }
    path = ctx.chart("latency_stages")
    charts.grouped_bars(path, stages, title="Where the time goes (ms), by stage", ylabel="ms")
    result.charts.append(path.name)
    path = ctx.chart("latency_cdf")
    series = {
        "raw floor job": floor,
        "evalmesh one at a time": [s.total for s in single if s.ok],
        "evalmesh steady half capacity": [s.total for s in steady if s.ok],
    }
    charts.cdf_chart(path, series, title="Submit to result seen", xlabel="seconds (log)")
    result.charts.append(path.name)


def _method(ctx: Context, rate: float) -> str:
    s = ctx.sizes
    return (
        f"One mesh on SQLite with {s.slots} slots. One at a time: {s.latency_runs} runs of "
        "`print(1)` through `AsyncClient.run` (one RunEvaluation stream: queue, then follow to "
        "the end), each beside one raw bwrap floor job, alternating, after 3 discarded warm-ups. "
        f"Steady: {s.latency_steady_runs} runs started {1 / rate * 1000:.0f} ms apart "
        f"({rate:.1f}/s, half the capacity measured by the throughput scenario in this run, or "
        "by a round of its own when run alone), however long the earlier ones take. Times "
        "inside the mesh are the evaluation's own timestamps (the database clock, on the same "
        "host as the client)."
    )
