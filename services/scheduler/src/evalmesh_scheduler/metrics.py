"""The scheduler's Prometheus metrics: the queue as ``GetQueueStats`` reports it.

The numbers are cluster-wide (storage is the truth for what waits), so every replica reports
the same ones: aggregate them with ``max``, never ``sum``. A scrape costs at most one storage
``GetStats`` and one dead-letter stream lookup, shared by every scrape within ``max_age``
seconds (:class:`~evalmesh_common.server.metrics.LoopSnapshot`). When they cannot be read
(storage or NATS down, the topology not made yet) the scrape lacks these metrics rather than
showing stale ones.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from evalmesh.v1 import cluster_pb2
from evalmesh_common.server.metrics import LoopSnapshot
from evalmesh_common.subjects import priority_name
from evalmesh_scheduler.deadletters import DeadLetters

__all__ = ["DeadLetterMetrics", "QueueMetrics"]


class QueueMetrics:
    """A collector for ``app.metrics``: depth and oldest wait per priority, running, dead
    letters."""

    def __init__(self, stats: LoopSnapshot[cluster_pb2.QueueStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        """The latest snapshot (called on the metrics listener's thread)."""
        stats = self._stats.get()
        if stats is None:
            return
        depth = GaugeMetricFamily(
            "evalmesh_scheduler_queue_depth",
            "Evaluations waiting to start (QUEUED), by priority class.",
            labels=["priority"],
        )
        oldest = GaugeMetricFamily(
            "evalmesh_scheduler_queue_oldest_wait_seconds",
            "How long the oldest waiting evaluation of each priority class has waited.",
            labels=["priority"],
        )
        for entry in stats.priorities:
            name = priority_name(entry.priority)
            depth.add_metric([name], entry.depth)
            oldest.add_metric([name], entry.oldest_wait.ToTimedelta().total_seconds())
        yield depth
        yield oldest
        yield GaugeMetricFamily(
            "evalmesh_scheduler_running", "Evaluations running now (RUNNING).", value=stats.running
        )
        yield GaugeMetricFamily(
            "evalmesh_scheduler_dead_letters",
            "Jobs waiting in the dead-letter stream.",
            value=stats.dead_letters,
        )


class DeadLetterMetrics:
    """A collector for ``app.metrics``: the jobs this replica set aside as dead letters.

    A counter per replica (sum them), so ``increase()`` shows letters appearing even while
    redrives take others out of the stream, which the stream's size alone would hide.
    """

    def __init__(self, dead: DeadLetters) -> None:
        self._dead = dead

    def collect(self) -> Iterator[Metric]:
        """The count so far (called on the metrics listener's thread)."""
        yield CounterMetricFamily(
            "evalmesh_scheduler_dead_lettered",
            "Jobs this replica set aside as dead letters (their evaluations ended ERROR).",
            value=self._dead.set_aside,
        )
