"""Throughput: the raw bwrap floor against evalmesh on SQLite and on PostgreSQL.

The same ``print(1)`` job, the same concurrency (the executor's slots, N jobs at a time for
the references), interleaved rounds whose order rotates each round. A round on the mesh is
timed from the first submit to the last result seen by the client.
"""

from __future__ import annotations

import asyncio
import contextlib

from benchmarks import charts
from benchmarks.context import Context
from benchmarks.floor import library_sandbox, run_floor_job, run_library_job
from benchmarks.mesh import BenchMesh, ClientPool, CpuMeter, running_mesh
from benchmarks.postgres import durable_postgres, postgres_missing
from benchmarks.results import Headline, ScenarioResult, Table
from benchmarks.rounds import Side, interleave, mesh_side, reference_side
from benchmarks.stats import fmt_rate, fmt_ratio, median, ratio

__all__ = ["NAME", "TITLE", "run"]

NAME = "throughput"
TITLE = "Throughput: evalmesh against the raw bwrap floor"
CODE = "print(1)"
FLOOR = "raw floor: fresh bwrap per job"
LIBRARY = "sandbox library: BwrapSandbox.run per job"
SQLITE = "evalmesh on SQLite"
POSTGRES = "evalmesh on PostgreSQL"


def run(ctx: Context) -> ScenarioResult:
    """Start both meshes, then time interleaved rounds of every side."""
    result = ScenarioResult(NAME, TITLE, method=_method(ctx))
    with contextlib.ExitStack() as stack:
        meshes = {SQLITE: stack.enter_context(_mesh(ctx, "throughput-sqlite", None))}
        missing = postgres_missing()
        if missing:
            result.notes.append(f"PostgreSQL side skipped: {missing}.")
        else:
            url = stack.enter_context(durable_postgres())
            meshes[POSTGRES] = stack.enter_context(_mesh(ctx, "throughput-postgres", url))
        meters = {label: CpuMeter(mesh) for label, mesh in meshes.items()}
        rates, failures = asyncio.run(_measure(ctx, meshes, meters))
    _report(ctx, result, rates, failures)
    _report_cpu(result, meters)
    return result


def _mesh(ctx: Context, name: str, url: str | None) -> contextlib.AbstractContextManager[BenchMesh]:
    return running_mesh(ctx.state_dir(name), database_url=url, slots=ctx.sizes.slots)


async def _measure(
    ctx: Context, meshes: dict[str, BenchMesh], meters: dict[str, CpuMeter]
) -> tuple[dict[str, list[float]], dict[str, int]]:
    sizes = ctx.sizes
    async with contextlib.AsyncExitStack() as stack:
        sandbox = await stack.enter_async_context(library_sandbox())
        sides: dict[str, Side] = {
            FLOOR: reference_side(sizes.slots, lambda: run_floor_job(CODE)),
            LIBRARY: reference_side(sizes.slots, lambda: run_library_job(sandbox, CODE)),
        }
        for label, mesh in meshes.items():
            pool = await stack.enter_async_context(ClientPool(mesh, sizes.throughput_jobs))
            sides[label] = mesh_side(pool, CODE, meters[label])

        def warmed() -> None:
            for meter in meters.values():
                meter.reset()

        return await interleave(sides, sizes.throughput_rounds, sizes.throughput_jobs, warmed)


def _report(
    ctx: Context, result: ScenarioResult, rates: dict[str, list[float]], failures: dict[str, int]
) -> None:
    medians = {name: median(values) for name, values in rates.items()}
    floor = medians[FLOOR]
    ctx.shared["capacity"] = medians[SQLITE]
    rows = [
        [
            name,
            fmt_rate(medians[name], " jobs/s"),
            _spread(values),
            fmt_ratio(ratio(medians[name], floor)),
            str(failures[name]),
        ]
        for name, values in rates.items()
    ]
    result.tables.append(
        Table(["side", "median", "rounds (min-max)", "vs floor", "failed jobs"], rows)
    )
    targets = {SQLITE: ">= 1.0x (never < 0.8x)", POSTGRES: ">= 1.0x; within 20% of SQLite"}
    for name in (SQLITE, POSTGRES, LIBRARY):
        if name in medians:
            result.headlines.append(
                Headline(
                    f"throughput, {name}, print(1), {ctx.sizes.slots} slots",
                    f"{fmt_ratio(ratio(medians[name], floor))} of the floor",
                    f"{fmt_rate(medians[name], ' jobs/s')} vs {fmt_rate(floor, ' jobs/s')}",
                    targets.get(name, ""),
                )
            )
    if POSTGRES in medians:
        result.headlines.append(
            Headline(
                "throughput, PostgreSQL vs SQLite",
                fmt_ratio(ratio(medians[POSTGRES], medians[SQLITE])),
                "same run, same rounds",
                ">= 0.8x",
            )
        )
    path = ctx.chart(NAME)
    labels = {name: fmt_ratio(ratio(medians[name], floor)) for name in rates}
    charts.bar_chart(
        path,
        rates,
        title=f"print(1) throughput, {ctx.sizes.slots} at a time "
        "(bar: median, dots: rounds; label: vs floor)",
        ylabel="jobs/s",
        labels=labels,
    )
    result.charts.append(path.name)
    result.data = {"jobs_per_second": rates, "failed": failures}


def _report_cpu(result: ScenarioResult, meters: dict[str, CpuMeter]) -> None:
    """CPU per evaluation of each service in the measured rounds, and storage's headline."""
    per_mesh = {label: meter.per_evaluation_ms() for label, meter in meters.items()}
    services = next(iter(meters.values())).services
    rows = [
        [service, *(f"{per_mesh[label][service]:.2f} ms" for label in per_mesh)]
        for service in services
    ]
    result.tables.append(Table(["CPU per evaluation (the process's own)", *per_mesh], rows))
    sqlite = per_mesh.get(SQLITE)
    if sqlite is not None:
        others = ", ".join(f"{name} {sqlite[name]:.1f} ms" for name in services[1:])
        result.headlines.append(
            Headline(
                "storage CPU per evaluation, SQLite, in the throughput rounds",
                f"{sqlite['storage']:.2f} ms",
                f"same rounds: {others}",
                "<= 3 ms",
            )
        )
    result.notes.append(
        "CPU per evaluation: each service process's own user and system time (from /proc) "
        "over the measured rounds, divided by their evaluations; the sandboxes are the "
        "executor's children and not in its figure, and PostgreSQL's own server processes are "
        "not in storage's."
    )
    result.data["cpu_ms_per_evaluation"] = per_mesh


def _spread(values: list[float]) -> str:
    return f"{min(values):.3g}-{max(values):.3g}" if values else "n/a"


def _method(ctx: Context) -> str:
    s = ctx.sizes
    return (
        f"{s.throughput_rounds} interleaved rounds (order rotated each round, after one "
        f"discarded warm-up round per side) of {s.throughput_jobs} `print(1)` jobs per side. "
        f"The references run {s.slots} jobs at a time; evalmesh gets all of a round's jobs "
        f"submitted at once through `AsyncClient.run` (one RunEvaluation stream each) with "
        f"an executor of {s.slots} slots, timed from the first submit to the last result seen. "
        "The raw floor is `bwrap --unshare-all --die-with-parent --new-session --ro-bind /usr "
        "/usr` (plus /bin, /lib... as on the host, and the runtime's masked package "
        "directories as empty tmpfs, as in evalmesh's sandboxes) `--proc /proc --dev /dev "
        "--tmpfs /tmp --clearenv /usr/bin/python3 -I -B -u -c 'print(1)'`: the interpreter "
        "starts exactly as in evalmesh's default runtime. Both meshes run for the whole scenario; "
        "PostgreSQL keeps its durability defaults (fsync and synchronous_commit on), as SQLite "
        "runs with `synchronous = FULL`."
    )
