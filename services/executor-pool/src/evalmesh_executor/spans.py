"""The executor's own spans, while traces are on (a tracer); with traces off, none is made.

A delivery is one ``executor.job`` span (kind CONSUMER) whose parent is the submit that
published the job, found in the message's ``traceparent`` header. The sandbox's phases are
placed afterwards from its own monotonic times, so the run itself carries no tracing code.
The run's live events carry the job span's ``traceparent`` (:func:`event_headers`), so a
watcher's delivery of them joins the evaluation's trace.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from nats.aio.msg import Msg

from evalmesh.scheduler.v1 import job_pb2
from evalmesh_common.messaging import extract_trace_context, inject_trace_context
from evalmesh_common.server.tracing import span
from evalmesh_executor.delivery import deliveries
from evalmesh_executor.sandbox import SandboxResult

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["event_headers", "job_span", "sandbox_phases"]


def job_span(
    tracer: Tracer | None, msg: Msg, job: job_pb2.Job
) -> AbstractContextManager[Span | None]:
    """The delivery's span, a child of the submit that published the job."""
    if tracer is None:
        return span(None, "")
    from opentelemetry.trace import SpanKind

    attributes: dict[str, str | int] = {
        "evalmesh.evaluation_id": job.evaluation_id,
        "evalmesh.tenant": job.tenant,
        "messaging.system": "nats",
        "messaging.destination.name": msg.subject,
        "messaging.nats.deliveries": deliveries(msg),
    }
    parent = extract_trace_context(msg.headers)
    return span(
        tracer, "executor.job", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    )


def event_headers(tracer: Tracer | None) -> dict[str, str] | None:
    """The NATS headers that put the current span (the job's) under a run's live events, or
    None while traces are off."""
    return None if tracer is None else inject_trace_context({})


def sandbox_phases(tracer: Tracer | None, began: float, result: SandboxResult) -> None:
    """``sandbox.prepare`` from ``began`` to the program's start, then ``sandbox.run`` to its
    end (``time.monotonic()`` moments), as children of the current span."""
    if tracer is None or not result.ended_at:
        return
    started = max(began, result.ended_at - result.wall_time_s)
    offset = time.time_ns() - time.monotonic_ns()  # the wall clock the spans are written in
    began_ns, started_ns = offset + round(began * 1e9), offset + round(started * 1e9)
    tracer.start_span("sandbox.prepare", start_time=began_ns).end(end_time=started_ns)
    run = tracer.start_span("sandbox.run", start_time=started_ns)
    run.set_attribute("evalmesh.outcome", result.outcome.name)
    run.end(end_time=offset + round(result.ended_at * 1e9))
