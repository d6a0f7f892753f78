"""Docker: a sandbox's start latency, cold (a container created per job) against prepared
ahead (the warm pool: a container started before the job arrives, still used once).

Runs the executor's docker backend directly, as its own benchmark
(services/executor-pool/benchmarks/backend_overhead.py) does, beside the bwrap backend; the
engine is the one that answers, else a private dockerd started and stopped by pid
(``evalmesh_testing.docker_engine``, which also builds the runtime image offline).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from benchmarks import charts
from benchmarks.context import Context
from benchmarks.floor import library_sandbox
from benchmarks.results import Headline, ScenarioResult, Table
from benchmarks.stats import fmt_ms, fmt_ratio, median, ratio
from evalmesh_executor.sandbox import SandboxOutcome, SandboxRequest
from evalmesh_executor.sandbox.bwrap import BwrapSandbox
from evalmesh_executor.sandbox.docker import DockerConfig, DockerSandbox
from evalmesh_testing.docker_engine import PYTHON_IMAGE, engine_for_tests

__all__ = ["NAME", "TITLE", "run"]

NAME = "docker"
TITLE = "Docker backend: sandbox start, cold against prepared ahead"
IMAGES = {"python": PYTHON_IMAGE}
COLD, WARM, BWRAP = "docker cold", "docker prepared ahead (warm)", "bwrap (reference)"
Timed = Callable[[], Awaitable[tuple[float, float]]]


def run(ctx: Context) -> ScenarioResult:
    """Measure on an engine, or report why there is none."""
    result = ScenarioResult(NAME, TITLE, method=_method(ctx))
    with engine_for_tests() as engine:
        if isinstance(engine, str):
            result.skipped = f"no Docker engine could be had: {engine}"
            return result
        times = asyncio.run(_measure(ctx, str(engine.base_url)))
    _report(ctx, result, times)
    return result


async def _measure(ctx: Context, base_url: str) -> dict[str, list[tuple[float, float]]]:
    owner = f"evalmesh-bench-{uuid.uuid4().hex[:8]}"
    cold_config = DockerConfig(base_url=base_url, images=IMAGES, owner=owner + "-cold")
    warm_config = DockerConfig(base_url=base_url, images=IMAGES, owner=owner + "-warm", warm=1)
    async with (
        library_sandbox() as bwrap,
        DockerSandbox(cold_config) as cold,
        DockerSandbox(warm_config) as warm,
    ):
        kinds: dict[str, Timed] = {
            COLD: _timed(cold),
            WARM: _timed(warm),
            BWRAP: _timed(bwrap),
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in kinds}
        for number in range(ctx.sizes.docker_runs + 1):  # the first round warms caches
            for name, timed in kinds.items():
                await _settled(cold, 0)
                await _settled(warm, 1)
                measured = await timed()
                if number:
                    times[name].append(measured)
    return times


def _timed(sandbox: BwrapSandbox | DockerSandbox) -> Timed:
    async def timed() -> tuple[float, float]:
        started = time.perf_counter()
        result = await sandbox.run(SandboxRequest(b"print(1)"))
        elapsed = time.perf_counter() - started
        if result.outcome is not SandboxOutcome.EXITED or result.stdout != b"1\n":
            raise RuntimeError(f"print(1) did not print 1: {result.outcome} {result.detail}")
        return elapsed, elapsed - result.wall_time_s

    return timed


async def _settled(box: DockerSandbox, warm: int) -> None:
    """No removal of an earlier container still running, and the warm pool full again: the
    steady state where demand does not outrun the refill."""
    await box.settle()
    deadline = time.monotonic() + 60
    while len(box.warm_containers) < warm:
        if time.monotonic() > deadline:
            raise RuntimeError("the warm pool did not refill within 60 s")
        await asyncio.sleep(0.01)
    await box.settle()


def _report(
    ctx: Context, result: ScenarioResult, times: dict[str, list[tuple[float, float]]]
) -> None:
    totals = {name: [t for t, _ in values] for name, values in times.items()}
    starts = {name: [s for _, s in values] for name, values in times.items()}
    med = {name: median(values) for name, values in totals.items()}
    start_med = {name: median(values) for name, values in starts.items()}
    rows = [
        [name, fmt_ms(med[name]), fmt_ms(start_med[name]), fmt_ratio(ratio(med[name], med[COLD]))]
        for name in totals
    ]
    columns = ["sandbox", "median per print(1) job", "of which outside the run", "vs cold"]
    result.tables.append(Table(columns, rows))
    result.headlines.append(
        Headline(
            "docker: per-job time, prepared ahead vs cold",
            fmt_ratio(ratio(med[WARM], med[COLD])),
            f"{fmt_ms(med[WARM])} vs {fmt_ms(med[COLD])}; bwrap {fmt_ms(med[BWRAP])}",
        )
    )
    path = ctx.chart(NAME)
    labels = {name: fmt_ratio(ratio(med[name], med[COLD])) for name in totals}
    ms = {name: [v * 1000 for v in values] for name, values in totals.items()}
    charts.bar_chart(
        path,
        ms,
        title="print(1) per job, whole run() call (label: vs cold)",
        ylabel="ms",
        labels=labels,
    )
    result.charts.append(path.name)
    result.data = {"seconds": times}


def _method(ctx: Context) -> str:
    return (
        f"{ctx.sizes.docker_runs} interleaved runs of `print(1)` per sandbox, after a discarded "
        "first round, each a whole `run()` call on the executor's backends: docker cold creates, "
        "attaches and starts a fresh container; docker warm hands the job to a container its "
        "pool started ahead (measured once the pool is full again); bwrap is the embedded "
        "backend. \"Outside the run\" is the call's time minus the run's own wall time."
    )
