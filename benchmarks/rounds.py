"""Interleaved rounds: every side runs the same number of jobs per round, in an order that
rotates from round to round, so drift on the machine (other load, caches, a growing
database) falls on every side alike."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from benchmarks.floor import run_bounded
from benchmarks.mesh import ClientPool, CpuMeter, run_mesh_round

__all__ = ["Side", "interleave", "mesh_side", "reference_side"]

Side = Callable[[int], Awaitable[tuple[float, int]]]
"""A side runs one round of N jobs and returns (jobs per second, jobs that succeeded)."""


async def interleave(
    sides: dict[str, Side], rounds: int, jobs: int, warmed: Callable[[], None] = lambda: None
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """A discarded warm-up round per side (``warmed`` is called after them), then ``rounds``
    rounds with the order rotated each time; returns every round's jobs per second and the
    failed jobs, per side."""
    names = list(sides)
    for name in names:
        await sides[name](max(4, jobs // 5))
    warmed()
    rates: dict[str, list[float]] = {name: [] for name in names}
    failures = dict.fromkeys(names, 0)
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            rate, ok = await sides[name](jobs)
            rates[name].append(rate)
            failures[name] += jobs - ok
    return rates, failures


def reference_side(concurrency: int, job: Callable[[], Awaitable[bool]]) -> Side:
    """A reference side: ``job`` run ``concurrency`` at a time."""

    async def side(jobs: int) -> tuple[float, int]:
        times = await run_bounded(jobs, concurrency, job)
        return times.rate, times.ok

    return side


def mesh_side(pool: ClientPool, code: str, meter: CpuMeter | None = None) -> Side:
    """A mesh side: every job of the round submitted at once through ``pool``; ``meter``
    adds up the services' CPU over its rounds."""

    async def side(jobs: int) -> tuple[float, int]:
        with meter.measuring(jobs) if meter else contextlib.nullcontext():
            measured = await run_mesh_round(pool, [code] * jobs)
        return measured.rate, measured.ok

    return side
