"""Burst: 100 one-second jobs on 10 slots, total time against the ideal 10 s.

The raw floor runs the same jobs in fresh bwrap sandboxes 10 at a time, in interleaved
rounds, so the report shows both against the ideal and against each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from benchmarks import charts
from benchmarks.context import Context
from benchmarks.floor import run_bounded, run_floor_job
from benchmarks.mesh import BenchMesh, ClientPool, run_mesh_round, running_mesh
from benchmarks.results import Headline, ScenarioResult, Table
from benchmarks.stats import fmt_ratio, median, ratio

__all__ = ["NAME", "TITLE", "run"]

NAME = "burst"
TITLE = "Burst: one-second jobs on 10 slots against the ideal"
FLOOR = "raw floor, 10 at a time"
EVALMESH = "evalmesh, 10 slots"


def run(ctx: Context) -> ScenarioResult:
    """One mesh with the burst's slot count; floor and mesh rounds alternate."""
    s = ctx.sizes
    result = ScenarioResult(NAME, TITLE, method=_method(ctx))
    with running_mesh(ctx.state_dir(NAME), slots=s.burst_slots) as mesh:
        totals, ends, failed = asyncio.run(_measure(ctx, mesh))
    _report(ctx, result, totals, ends, failed)
    return result


def _code(seconds: float) -> str:
    return f"import time; time.sleep({seconds}); print(1)"


async def _measure(
    ctx: Context, mesh: BenchMesh
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, int]]:
    s = ctx.sizes
    code = _code(s.burst_seconds)
    totals: dict[str, list[float]] = {FLOOR: [], EVALMESH: []}
    ends: dict[str, list[float]] = {}
    failed = dict.fromkeys(totals, 0)
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(ClientPool(mesh, s.burst_jobs))
        await run_mesh_round(pool, ["print(1)"] * s.burst_slots)  # warm-up, discarded
        for number in range(s.burst_rounds):
            for name in [FLOOR, EVALMESH] if number % 2 == 0 else [EVALMESH, FLOOR]:
                if name == FLOOR:
                    times = await run_bounded(
                        s.burst_jobs, s.burst_slots, lambda: run_floor_job(code)
                    )
                    elapsed, round_ends, ok = times.elapsed, times.ends, times.ok
                else:
                    measured = await run_mesh_round(pool, [code] * s.burst_jobs)
                    elapsed, round_ends, ok = measured.elapsed, measured.ends, measured.ok
                totals[name].append(elapsed)
                ends.setdefault(name, round_ends)  # the first round's curve for the chart
                failed[name] += s.burst_jobs - ok
    return totals, ends, failed


def _report(
    ctx: Context,
    result: ScenarioResult,
    totals: dict[str, list[float]],
    ends: dict[str, list[float]],
    failed: dict[str, int],
) -> None:
    s = ctx.sizes
    ideal = math.ceil(s.burst_jobs / s.burst_slots) * s.burst_seconds
    medians = {name: median(values) for name, values in totals.items()}
    rows = [
        [
            name,
            f"{medians[name]:.2f} s",
            ", ".join(f"{v:.2f}" for v in values),
            fmt_ratio(ratio(medians[name], ideal)),
            str(failed[name]),
        ]
        for name, values in totals.items()
    ]
    columns = ["side", "median total", "rounds (s)", "vs ideal", "not SUCCEEDED"]
    result.tables.append(Table(columns, rows))
    bound = ideal * 1.15
    result.headlines += [
        Headline(
            f"burst: {s.burst_jobs} x {s.burst_seconds:g} s jobs on {s.burst_slots} slots",
            f"{fmt_ratio(ratio(medians[EVALMESH], ideal))} the ideal "
            f"({medians[EVALMESH]:.2f} s vs {ideal:g} s); {failed[EVALMESH]} not SUCCEEDED",
            f"raw floor {fmt_ratio(ratio(medians[FLOOR], ideal))} the ideal; evalmesh/floor "
            f"{fmt_ratio(ratio(medians[EVALMESH], medians[FLOOR]))}",
            f"<= 1.15x ({bound:.1f} s), all SUCCEEDED",
        )
    ]
    path = ctx.chart(NAME)
    waves = math.ceil(s.burst_jobs / s.burst_slots)
    steps = [
        ((k + 1) * s.burst_seconds, min((k + 1) * s.burst_slots, s.burst_jobs))
        for k in range(waves)
    ]
    charts.completion_chart(
        path,
        ends,
        title=f"{s.burst_jobs} jobs of {s.burst_seconds:g} s "
        f"on {s.burst_slots} slots (first round)",
        ideal=steps,
    )
    result.charts.append(path.name)
    result.data = {
        "total_seconds": totals,
        "ideal_seconds": ideal,
        "failed": failed,
        "first_round_ends": ends,
    }


def _method(ctx: Context) -> str:
    s = ctx.sizes
    return (
        f"One mesh on SQLite with an executor of {s.burst_slots} slots. {s.burst_rounds} "
        f"interleaved rounds of {s.burst_jobs} jobs of `time.sleep({s.burst_seconds:g})` each "
        f"side: evalmesh gets all of them submitted at once (`AsyncClient.run`), the raw floor "
        f"runs them {s.burst_slots} at a time in fresh bwrap sandboxes. Timed from the first "
        "submit to the last result seen; the ideal is every slot busy all the time."
    )
