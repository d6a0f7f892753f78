"""Time per job, `print(1)`: docker cold vs docker warm vs bwrap vs bare /usr/bin/python3.

Each run is a whole `run()` call on a fresh sandbox: bwrap creates cgroups and starts bwrap;
docker cold creates, attaches and starts a fresh container, reads the exit report (container
removal happens in the background, as in production); docker warm hands the job to a
container its warm pool started ahead of demand (the run begins once the pool is full again,
i.e. at a steady state where demand does not outrun the refill). Runs are interleaved;
prints medians and ratios. Needs root; uses the Docker engine that answers, or starts a
private dockerd and builds the runtime image offline (evalmesh_testing.docker_engine).

    .venv/bin/python services/executor-pool/benchmarks/backend_overhead.py [runs]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from evalmesh_executor.sandbox import SandboxOutcome, SandboxRequest
from evalmesh_executor.sandbox.bwrap import BwrapSandbox
from evalmesh_executor.sandbox.docker import DockerConfig, DockerSandbox
from evalmesh_testing.docker_engine import Engine, engine_for_tests

BARE = ("/usr/bin/python3", "-c", "print(1)")
Timed = Callable[[], Awaitable[float]]


async def bare_run() -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *BARE, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    elapsed = time.perf_counter() - started
    assert out == b"1\n", out
    return elapsed


def sandboxed(sandbox: BwrapSandbox | DockerSandbox) -> Timed:
    async def timed() -> float:
        started = time.perf_counter()
        result = await sandbox.run(SandboxRequest(b"print(1)"))
        elapsed = time.perf_counter() - started
        assert result.outcome is SandboxOutcome.EXITED, result
        assert result.stdout == b"1\n", result
        return elapsed

    return timed


async def settled(docker_box: DockerSandbox, warm: int) -> None:
    """No removal still running from the last job, and the warm pool full again."""
    await docker_box.settle()
    deadline = time.monotonic() + 60
    while len(docker_box.warm_containers) < warm:
        if time.monotonic() > deadline:
            raise SystemExit("the warm pool did not refill within 60 s")
        await asyncio.sleep(0.01)
    await docker_box.settle()


async def measure(engine: Engine, runs: int) -> dict[str, list[float]]:
    images = {"python": "evalmesh-runtime-python:latest"}
    cold_config = DockerConfig(base_url=engine.base_url, images=images)
    warm_config = DockerConfig(base_url=engine.base_url, images=images, warm=1)
    async with (
        BwrapSandbox() as bwrap,
        DockerSandbox(cold_config) as cold_box,
        DockerSandbox(warm_config) as warm_box,
    ):
        kinds: dict[str, Timed] = {
            "bare": bare_run,
            "bwrap": sandboxed(bwrap),
            "docker cold": sandboxed(cold_box),
            "docker warm": sandboxed(warm_box),
        }
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for run in range(runs + 1):  # the first round warms the page cache
            for name, timed in kinds.items():
                await settled(cold_box, 0)
                await settled(warm_box, 1)
                elapsed = await timed()
                if run:
                    times[name].append(elapsed)
    return times


def report(times: dict[str, list[float]], runs: int) -> None:
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"runs: {runs} each, interleaved; print(1) per job; median ms and ratios")
    names = list(medians)
    print(f"{'':>12} {'median':>8}  " + "  ".join(f"{'/ ' + n:>13}" for n in names))
    for name in names:
        ratios = "  ".join(f"{medians[name] / medians[other]:12.2f}x" for other in names)
        print(f"{name:>12} {medians[name]:8.1f}  {ratios}")


def main(runs: int) -> None:
    with engine_for_tests() as engine:
        if isinstance(engine, str):
            raise SystemExit(f"no Docker engine: {engine}")
        report(asyncio.run(measure(engine, runs)), runs)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
