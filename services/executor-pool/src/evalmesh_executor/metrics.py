"""The executor's Prometheus metrics, read from the instance's own state at each scrape.

Nothing here keeps a second copy of a number: slots and identity come from the status
reporter's ``InstanceInfo``, health from the same function that fills ``PoolStatus``, the
escapes from the last self-check, the finished runs from the run registry's counts. So the
metrics, the pool status and the logs always tell one story.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from evalmesh_executor.runs import RunRegistry
from evalmesh_executor.selfcheck import SelfCheck
from evalmesh_executor.status import StatusReporter

__all__ = ["ExecutorMetrics"]


class ExecutorMetrics:
    """A collector for ``app.metrics``: slots, running, finished runs, health and self-check."""

    def __init__(self, status: StatusReporter, runs: RunRegistry, self_check: SelfCheck) -> None:
        self._status = status
        self._runs = runs
        self._self_check = self_check

    def collect(self) -> Iterator[Metric]:
        """The current values (called on the metrics listener's thread)."""
        info = self._status.info
        yield InfoMetricFamily(
            "evalmesh_executor",
            "This executor instance: its id, host and sandbox backend.",
            value={"executor_id": info.instance_id, "host": info.host, "backend": info.backend},
        )
        yield _gauge("slots", "Evaluations this instance runs at once.", info.slots)
        yield _gauge("running", "Evaluations this instance holds now.", len(self._runs))
        yield from self._health()
        yield from self._escapes()
        yield self._finished()

    def _health(self) -> Iterator[Metric]:
        reason, draining = self._status.health()
        yield _gauge(
            "healthy", "1 while the self-check passes and no drain has begun.", int(not reason)
        )
        yield _gauge("draining", "1 once a drain began: the instance takes no new work.", draining)
        if reason:
            yield InfoMetricFamily(
                "evalmesh_executor_unhealthy",
                "Why the instance is unhealthy (present only while it is).",
                value={"reason": reason},
            )

    def _escapes(self) -> Iterator[Metric]:
        escaped = self._self_check.escaped
        yield _gauge(
            "self_check_escapes",
            "Escape canaries that got out of the sandbox in the last completed self-check.",
            len(escaped),
        )
        by_name = GaugeMetricFamily(
            "evalmesh_executor_self_check_escaped",
            "1 for each canary that escaped in the last completed self-check.",
            labels=["canary"],
        )
        for canary in escaped:
            by_name.add_metric([canary], 1)
        yield by_name

    def _finished(self) -> Metric:
        finished = CounterMetricFamily(
            "evalmesh_executor_runs_finished",
            "Runs this instance ended, by outcome (completed, unclaimed, given_back, lost, fault).",
            labels=["outcome"],
        )
        for outcome, count in dict(self._runs.finished).items():
            finished.add_metric([outcome], count)
        return finished


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"evalmesh_executor_{name}", documentation, value=value)
