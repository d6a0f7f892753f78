"""Database size: throughput with many finished evaluations already stored, against an
empty database, in the same run (two meshes, interleaved rounds)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path

from benchmarks import charts
from benchmarks.context import Context
from benchmarks.mesh import BenchMesh, ClientPool, running_mesh
from benchmarks.results import Headline, ScenarioResult, Table
from benchmarks.rounds import Side, interleave, mesh_side
from benchmarks.seed import seeded_database
from benchmarks.stats import fmt_rate, fmt_ratio, median, ratio

__all__ = ["NAME", "TITLE", "run"]

NAME = "dbsize"
TITLE = "Database size: throughput with many evaluations stored"
CODE = "print(1)"


def run(ctx: Context) -> ScenarioResult:
    """Seed (or reuse) the big database, copy it, then race it against an empty one."""
    s = ctx.sizes
    result = ScenarioResult(NAME, TITLE)
    started = time.monotonic()
    cached = seeded_database(ctx.cache_dir, ctx.work_dir, s.dbsize_rows, s.dbsize_templates)
    seed_seconds = time.monotonic() - started
    big_dir, empty_dir = ctx.state_dir("dbsize-full"), ctx.state_dir("dbsize-empty")
    big_db = big_dir / "bench.db"
    shutil.copyfile(cached, big_db)
    size_mib = big_db.stat().st_size / 2**20
    full, empty = f"{s.dbsize_rows:,} stored", "empty database"
    with contextlib.ExitStack() as stack:
        meshes = {
            empty: stack.enter_context(_mesh(ctx, empty_dir, empty_dir / "bench.db")),
            full: stack.enter_context(_mesh(ctx, big_dir, big_db)),
        }
        rates, failures = asyncio.run(_measure(ctx, meshes))
    result.method = _method(ctx, size_mib, seed_seconds)
    _report(ctx, result, rates, failures, empty, full)
    return result


def _mesh(
    ctx: Context, state: Path, database: Path
) -> contextlib.AbstractContextManager[BenchMesh]:
    return running_mesh(
        state, database_url=f"sqlite+aiosqlite:///{database}", slots=ctx.sizes.slots
    )


async def _measure(
    ctx: Context, meshes: dict[str, BenchMesh]
) -> tuple[dict[str, list[float]], dict[str, int]]:
    s = ctx.sizes
    async with contextlib.AsyncExitStack() as stack:
        sides: dict[str, Side] = {}
        for label, mesh in meshes.items():
            pool = await stack.enter_async_context(ClientPool(mesh, s.dbsize_jobs))
            sides[label] = mesh_side(pool, CODE)
        return await interleave(sides, s.dbsize_rounds, s.dbsize_jobs)


def _report(
    ctx: Context,
    result: ScenarioResult,
    rates: dict[str, list[float]],
    failures: dict[str, int],
    empty: str,
    full: str,
) -> None:
    medians = {name: median(values) for name, values in rates.items()}
    rows = [
        [
            name,
            fmt_rate(medians[name], " jobs/s"),
            ", ".join(f"{v:.3g}" for v in values),
            fmt_ratio(ratio(medians[name], medians[empty])),
            str(failures[name]),
        ]
        for name, values in rates.items()
    ]
    columns = ["database", "median", "rounds (jobs/s)", "vs empty", "failed jobs"]
    result.tables.append(Table(columns, rows))
    result.headlines.append(
        Headline(
            f"throughput with {full} vs an empty database",
            fmt_ratio(ratio(medians[full], medians[empty])),
            f"{fmt_rate(medians[full], ' jobs/s')} vs {fmt_rate(medians[empty], ' jobs/s')}",
            ">= 0.9x",
        )
    )
    path = ctx.chart(NAME)
    labels = {name: fmt_ratio(ratio(medians[name], medians[empty])) for name in rates}
    charts.bar_chart(
        path,
        rates,
        title="print(1) throughput by database size (label: vs empty)",
        ylabel="jobs/s",
        labels=labels,
    )
    result.charts.append(path.name)
    result.data = {"jobs_per_second": rates, "failed": failures}


def _method(ctx: Context, size_mib: float, seed_seconds: float) -> str:
    s = ctx.sizes
    return (
        f"Two meshes on SQLite, {s.slots} slots each, up together: one on an empty database, "
        f"one on a copy of a database holding {s.dbsize_rows:,} finished evaluations "
        f"({size_mib:,.0f} MiB; copies of {s.dbsize_templates} real `print(1)` evaluations "
        "with their output rows, under the same tenant as the benchmark's key, created over "
        f"the 30 days before; prepared or read from the cache in {seed_seconds:.0f} s). "
        f"{s.dbsize_rounds} interleaved rounds of {s.dbsize_jobs} `print(1)` jobs each, "
        "submitted at once, after a discarded warm-up round each."
    )
