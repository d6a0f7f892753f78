"""The executor's Prometheus metrics, read from the instance's own state at each scrape.

Nothing here keeps a second copy of a number: slots and identity come from the status
reporter's ``InstanceInfo``, health from the same function that fills ``PoolStatus``, the
escapes from the last self-check, the finished runs from the run registry's counts. So the
metrics, the pool status and the logs always tell one story.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from evalmesh.storage.v1 import record_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.server.tenant_labels import TenantLabels
from evalmesh_executor.runs import RunRegistry
from evalmesh_executor.selfcheck import SelfCheck
from evalmesh_executor.status import StatusReporter

__all__ = ["ExecutorMetrics", "RunMetrics"]

# Seconds: from a few milliseconds (a warm pool) to the longest wall timeout (900 s) and beyond.
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_RUN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
_DEFAULT_RUNTIME = "python"


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


class RunMetrics:
    """Histograms and per-tenant counters of the runs this instance recorded a result for.

    Observed once per recorded result (``JobRunner.finished``), from the evaluation as storage
    recorded it: the queue wait is ``start_time - create_time`` on the database clock (the wait
    of the attempt that ran, retries included), the duration is the sandbox's wall time. The
    labels are bounded: runtimes are the few this instance offers, outcomes the terminal states,
    and tenants go through :class:`~evalmesh_common.server.tenant_labels.TenantLabels`.
    """

    def __init__(self, registry: CollectorRegistry, tenants: TenantLabels | None = None) -> None:
        self._tenants = tenants or TenantLabels()
        self.queue_wait = Histogram(
            "evalmesh_executor_queue_wait_seconds",
            "How long evaluations waited from acceptance to the claim of the attempt that ran.",
            ["runtime", "outcome"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.run_duration = Histogram(
            "evalmesh_executor_run_duration_seconds",
            "How long the program ran in its sandbox (wall time).",
            ["runtime", "outcome"],
            buckets=_RUN_BUCKETS,
            registry=registry,
        )
        self.tenant_runs = Counter(
            "evalmesh_executor_tenant_runs",
            "Runs with a recorded result, by tenant (the heavy ones; the rest are 'other').",
            ["tenant", "outcome"],
            registry=registry,
        )
        self.tenant_seconds = Counter(
            "evalmesh_executor_tenant_run_seconds",
            "Sandbox wall time used, by tenant (the heavy ones; the rest are 'other').",
            ["tenant"],
            registry=registry,
        )

    def observe(self, record: record_pb2.EvaluationRecord) -> None:
        """Count one recorded result."""
        evaluation = record.evaluation
        runtime = evaluation.runtime or evaluation.spec.runtime or _DEFAULT_RUNTIME
        outcome = _outcome(evaluation.state)
        ran = evaluation.result.wall_time.ToNanoseconds() / 1e9
        if evaluation.HasField("create_time") and evaluation.HasField("start_time"):
            waited = (
                evaluation.start_time.ToNanoseconds() - evaluation.create_time.ToNanoseconds()
            ) / 1e9
            self.queue_wait.labels(runtime, outcome).observe(max(0.0, waited))
        self.run_duration.labels(runtime, outcome).observe(max(0.0, ran))
        tenant = self._tenants.label(record.tenant)
        self.tenant_runs.labels(tenant, outcome).inc()
        self.tenant_seconds.labels(tenant).inc(max(0.0, ran))


def _outcome(state: int) -> str:
    """``succeeded``, ``timed_out``...: the terminal state's name in lower case."""
    name = evaluation_pb2.Evaluation.State.Name(state)  # type: ignore[arg-type]
    return name.removeprefix("STATE_").lower()
