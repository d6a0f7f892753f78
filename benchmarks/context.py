"""The sizes of a run (full or ``--quick``) and what every scenario is handed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

__all__ = ["FULL", "QUICK", "Context", "Sizes"]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work each scenario does. FULL is what the issue asks for; QUICK is the smoke
    size (CI and development): the same code paths, a few jobs each."""

    slots: int = 2
    throughput_rounds: int = 5
    throughput_jobs: int = 100
    latency_runs: int = 50
    latency_steady_runs: int = 100
    submit_rounds: int = 3
    submit_single: int = 2000  # across all rounds
    submit_in_flight: int = 64
    submit_batch: int = 15_000  # across all rounds
    dbsize_rows: int = 1_000_000
    dbsize_templates: int = 100
    dbsize_rounds: int = 3
    dbsize_jobs: int = 100
    burst_jobs: int = 100
    burst_slots: int = 10
    burst_seconds: float = 1.0
    burst_rounds: int = 2
    watch_streams: int = 1000
    watch_per_tenant: int = 100
    watch_single_runs: int = 5
    docker_runs: int = 20


FULL = Sizes()
QUICK = Sizes(
    throughput_rounds=2,
    throughput_jobs=8,
    latency_runs=4,
    latency_steady_runs=8,
    submit_rounds=1,
    submit_single=64,
    submit_batch=1000,
    dbsize_rows=2000,
    dbsize_templates=10,
    dbsize_rounds=1,
    dbsize_jobs=8,
    burst_jobs=20,
    burst_rounds=1,
    watch_streams=40,
    watch_per_tenant=20,
    watch_single_runs=2,
    docker_runs=2,
)


@dataclasses.dataclass
class Context:
    """Context is handed to every scenario: the sizes, where to put temporary state, the
    prepared-database cache and the charts, and figures one scenario leaves for another
    (the latency scenario's steady rate comes from the throughput scenario's capacity)."""

    sizes: Sizes
    quick: bool
    work_dir: Path
    cache_dir: Path
    charts_dir: Path
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)

    def state_dir(self, name: str) -> Path:
        """A fresh folder for one mesh's state (database, NATS store, logs)."""
        path = self.work_dir / name
        suffix = 1
        while path.exists():
            suffix += 1
            path = self.work_dir / f"{name}-{suffix}"
        path.mkdir(parents=True)
        return path

    def chart(self, name: str) -> Path:
        """Where the chart ``name`` (without extension) is written."""
        self.charts_dir.mkdir(parents=True, exist_ok=True)
        return self.charts_dir / f"{name}.png"
