"""Submit rate: concurrent single CreateEvaluation calls against BatchCreateEvaluations.

The mesh runs without an executor, so nothing is claimed or run while evaluations are
created: the figure is the submit path alone (gateway, scheduler, storage, NATS publish).
"""

from __future__ import annotations

import asyncio
import time

from benchmarks import charts
from benchmarks.context import Context
from benchmarks.mesh import BenchMesh, running_mesh
from benchmarks.results import Headline, ScenarioResult, Table
from benchmarks.stats import fmt_rate, fmt_ratio, median, ratio
from evalmesh.client import AsyncClient, Spec

__all__ = ["NAME", "TITLE", "run"]

NAME = "submit"
TITLE = "Submit rate: single CreateEvaluation calls and BatchCreateEvaluations"
CODE = "print(1)"
SINGLE = "CreateEvaluation, concurrent single calls"
BATCH = "BatchCreateEvaluations"
BATCH_CALLS_IN_FLIGHT = 2


def run(ctx: Context) -> ScenarioResult:
    """Interleaved rounds of single creates and batches on one mesh without an executor."""
    result = ScenarioResult(NAME, TITLE, method=_method(ctx))
    with running_mesh(ctx.state_dir(NAME), executor=False) as mesh:
        rates = asyncio.run(_measure(ctx, mesh))
    _report(ctx, result, rates)
    return result


async def _measure(ctx: Context, mesh: BenchMesh) -> dict[str, list[float]]:
    s = ctx.sizes
    single_per_round = max(1, s.submit_single // s.submit_rounds)
    batch_per_round = max(1, s.submit_batch // s.submit_rounds)
    rates: dict[str, list[float]] = {SINGLE: [], BATCH: []}
    async with mesh.client() as client:
        await _singles(client, min(64, single_per_round), s.submit_in_flight)  # warm-up
        for number in range(s.submit_rounds):
            order = [SINGLE, BATCH] if number % 2 == 0 else [BATCH, SINGLE]
            for name in order:
                if name == SINGLE:
                    rate = await _singles(client, single_per_round, s.submit_in_flight)
                else:
                    rate = await _batches(client, batch_per_round)
                rates[name].append(rate)
    return rates


async def _singles(client: AsyncClient, count: int, in_flight: int) -> float:
    """Evaluations per second from ``count`` CreateEvaluation calls, ``in_flight`` at a time."""
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            await client.submit(CODE, labels={"bench": "submit"})

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - started)


async def _batches(client: AsyncClient, count: int) -> float:
    """Evaluations per second from BatchCreateEvaluations calls of up to 1000 each."""
    specs = [Spec(CODE, labels={"bench": "submit"}) for _ in range(count)]
    started = time.perf_counter()
    created = await client.submit_batch(specs, concurrency=BATCH_CALLS_IN_FLIGHT)
    elapsed = time.perf_counter() - started
    if len(created) != count:
        raise RuntimeError(f"asked for {count} evaluations, got {len(created)}")
    return count / elapsed


def _report(ctx: Context, result: ScenarioResult, rates: dict[str, list[float]]) -> None:
    medians = {name: median(values) for name, values in rates.items()}
    targets = {SINGLE: ">= 500/s", BATCH: ">= 5,000/s"}
    rows = [
        [
            name,
            fmt_rate(medians[name], " evaluations/s"),
            ", ".join(f"{v:,.0f}" for v in values),
            targets[name],
        ]
        for name, values in rates.items()
    ]
    result.tables.append(Table(["call", "median", "rounds", "target"], rows))
    for name, target in targets.items():
        result.headlines.append(
            Headline(
                f"submit rate, {name}",
                fmt_rate(medians[name], " evaluations/s"),
                f"batch/single {fmt_ratio(ratio(medians[BATCH], medians[SINGLE]))}",
                target,
            )
        )
    path = ctx.chart(NAME)
    charts.bar_chart(
        path,
        rates,
        title="Evaluations created per second (no executor running)",
        ylabel="evaluations/s",
        labels={n: fmt_rate(v) for n, v in medians.items()},
    )
    result.charts.append(path.name)
    result.data = {"evaluations_per_second": rates}


def _method(ctx: Context) -> str:
    s = ctx.sizes
    return (
        f"One mesh on SQLite started without an executor (nothing runs). {s.submit_rounds} "
        f"interleaved rounds, after a discarded warm-up: {s.submit_single // s.submit_rounds} "
        f"CreateEvaluation calls per round with {s.submit_in_flight} in flight on one "
        f"connection, and {s.submit_batch // s.submit_rounds} evaluations per round through "
        "BatchCreateEvaluations calls of up to 1000 (the API's maximum) "
        f"({BATCH_CALLS_IN_FLIGHT} calls in flight, `AsyncClient.submit_batch`). The queue "
        "keeps growing across rounds, for both kinds alike."
    )
