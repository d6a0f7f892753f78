"""Cold time per job, `print(1)`: docker sandbox vs bwrap sandbox vs bare /usr/bin/python3.

Each run is a whole `run()` call on a fresh sandbox: bwrap creates cgroups and starts bwrap;
docker creates, attaches and starts a fresh container, reads the exit report (container
removal happens in the background, as in production). Runs are interleaved; prints medians
and ratios. Needs root; uses the Docker engine that answers, or starts a private dockerd
and builds the runtime image offline (tests/docker_helpers.py).

    .venv/bin/python services/executor-pool/benchmarks/backend_overhead.py [runs]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from docker_helpers import Engine, engine_for_tests

from evalmesh_executor.sandbox import (
    BwrapSandbox,
    SandboxOutcome,
    SandboxRequest,
)
from evalmesh_executor.sandbox.docker import DockerConfig, DockerSandbox

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


async def measure(engine: Engine, runs: int) -> dict[str, list[float]]:
    images = {"python": "evalmesh-runtime-python:latest"}
    async with (
        BwrapSandbox() as bwrap,
        DockerSandbox(DockerConfig(base_url=engine.base_url, images=images)) as docker_box,
    ):
        kinds: dict[str, Timed] = {
            "bare": bare_run,
            "bwrap": sandboxed(bwrap),
            "docker": sandboxed(docker_box),
        }
        for timed in kinds.values():  # warm the page cache
            await timed()
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(runs):
            for name, timed in kinds.items():
                times[name].append(await timed())
            await docker_box.settle()  # cold: no removal still running from the last job
    return times


def report(times: dict[str, list[float]], runs: int) -> None:
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"runs: {runs} each, interleaved; print(1) per job")
    for name, median in medians.items():
        ratio = median / medians["bare"]
        print(f"{name:>7}: median {median:7.1f} ms  ({ratio:5.2f}x bare)")
    print(f"docker / bwrap: {medians['docker'] / medians['bwrap']:.2f}x")


def main(runs: int) -> None:
    with engine_for_tests() as engine:
        if isinstance(engine, str):
            raise SystemExit(f"no Docker engine: {engine}")
        report(asyncio.run(measure(engine, runs)), runs)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
