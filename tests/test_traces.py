"""One evaluation is one trace, from the gateway's CreateEvaluation to the executor's last span
and a watcher's delivery of its end.

A real OTLP/gRPC receiver (the collector's TraceService, a grpc.aio server on port 0 in a thread
of its own) takes what the whole mesh exports; the mesh runs as ``scripts/up`` runs it, with
only ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointed at the receiver and a short batch delay.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from evalmesh.v1 import (
    api_key_pb2,
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    evaluation_pb2,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
)
from evalmesh_testing.mesh import running_mesh

ES = evaluation_service_pb2
State = evaluation_pb2.Evaluation.State
CREATE = "/evalmesh.v1.EvaluationService/CreateEvaluation"
WATCH = "/evalmesh.v1.EvaluationService/WatchEvaluation"
SERVER, CONSUMER = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CONSUMER
DELIVER = "gateway.watch.deliver"
SERVICES = ("gateway", "scheduler", "storage", "executor-pool")
# Output while it runs, so a batch is stored before the result (an output.flush span).
CODE = "import time\nprint('traced', flush=True)\ntime.sleep(0.5)\nprint('done')\n"
EXECUTOR_SPANS = (
    "executor.job",
    "executor.claim",
    "executor.sandbox",
    "sandbox.prepare",
    "sandbox.run",
    "executor.output.flush",
    "executor.complete",
)


@dataclass(frozen=True)
class Span:
    """One received span, with the service.name of the process that sent it."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[str, ...] = ()  # the span ids it links to


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver on 127.0.0.1, port 0, serving from a thread of its own."""

    def __init__(self) -> None:
        self.port = 0
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="otlp-receiver", daemon=True)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = [
            Span(
                service,
                span.name,
                span.kind,
                span.trace_id.hex(),
                span.span_id.hex(),
                span.parent_span_id.hex(),
                tuple(link.span_id.hex() for link in span.links),
            )
            for resource in request.resource_spans
            for service in [_service_name(resource.resource.attributes)]
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self._spans += received
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the OTLP receiver did not start")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        server = grpc.aio.server()
        add_servicer = trace_service_pb2_grpc.add_TraceServiceServicer_to_server
        add_servicer(self, server)  # type: ignore[no-untyped-call]
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(None)


def _service_name(attributes: Any) -> str:
    return next((a.value.string_value for a in attributes if a.key == "service.name"), "")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


def _eventually(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        time.sleep(0.1)


def _auth(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


class Watch:
    """A WatchEvaluation stream read to its end by a thread of its own."""

    def __init__(self, evaluations: evaluation_service_pb2_grpc.EvaluationServiceStub) -> None:
        self._evaluations = evaluations
        self.states: list[int] = []
        self._thread: threading.Thread | None = None

    def open(self, evaluation_id: str, key: str) -> None:
        request = ES.WatchEvaluationRequest(id=evaluation_id)
        stream = self._evaluations.WatchEvaluation(request, metadata=_auth(key), timeout=60)
        self._thread = threading.Thread(target=self._read, args=(stream,), name="watch")
        self._thread.start()

    def close(self) -> list[int]:
        """The states the stream passed on, once it ended."""
        assert self._thread is not None
        self._thread.join(60)
        assert not self._thread.is_alive(), "the watch stream did not end"
        return self.states

    def _read(self, stream: Iterator[ES.WatchEvaluationResponse]) -> None:
        for response in stream:
            if response.HasField("evaluation"):
                self.states.append(response.evaluation.state)


def _run_one_evaluation(gateway: str, admin_key: str) -> str:
    """Create an evaluation as a fresh tenant, watch it from the start and wait for it to
    succeed; return its id."""
    with grpc.insecure_channel(gateway) as channel:
        keys = api_key_service_pb2_grpc.ApiKeyServiceStub(channel)
        evaluations = evaluation_service_pb2_grpc.EvaluationServiceStub(channel)
        request = api_key_service_pb2.CreateApiKeyRequest(
            tenant=f"traced-{uuid.uuid4().hex[:6]}",
            role=api_key_pb2.ROLE_USER,
        )
        key = keys.CreateApiKey(request, metadata=_auth(admin_key), timeout=10).secret
        spec = evaluation_pb2.EvaluationSpec(code=CODE)
        create = ES.CreateEvaluationRequest(request_id=uuid.uuid4().hex, spec=spec)
        created = evaluations.CreateEvaluation(create, metadata=_auth(key), timeout=10)
        # Opened while the evaluation waits or runs, so its end reaches the watcher as an event.
        watch = Watch(evaluations)
        watch.open(created.evaluation.id, key)

        def finished() -> evaluation_pb2.Evaluation | None:
            get = ES.GetEvaluationRequest(id=created.evaluation.id)
            got = evaluations.GetEvaluation(get, metadata=_auth(key), timeout=10).evaluation
            return got if got.state not in (State.STATE_QUEUED, State.STATE_RUNNING) else None

        done = _eventually(finished, 60, "the evaluation's end")
        assert done.state == State.STATE_SUCCEEDED, done.result
        states = watch.close()
        assert states[0] in (State.STATE_QUEUED, State.STATE_RUNNING), states
        assert states[-1] == State.STATE_SUCCEEDED, states
        return str(created.evaluation.id)


def _ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    chain: list[Span] = []
    while span.parent_id and span.parent_id in by_id and len(chain) < 100:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def _stored_under(phase: str, trace: list[Span]) -> bool:
    """Storage answered a call made inside the executor's span ``phase``."""
    by_id = {s.span_id: s for s in trace}
    under = [s for s in trace if s.name == phase]
    stored = [s for s in trace if s.service == "storage" and s.kind == SERVER]
    return any(span in _ancestors(s, by_id) for s in stored for span in under)


def _arrived(trace: list[Span]) -> bool:
    """Every span the test looks at has been exported."""
    names = {s.name for s in trace}
    phases = ("executor.claim", "executor.complete")
    return {*EXECUTOR_SPANS, DELIVER} <= names and all(_stored_under(p, trace) for p in phases)


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_one_evaluation_is_one_trace_from_the_gateway_through_nats_to_the_executor(
    tmp_path: Path, receiver: Receiver
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "EVALMESH_PROBE_INTERVAL": "0.2",
    }
    with running_mesh(tmp_path / "mesh", env) as mesh:
        evaluation_id = _run_one_evaluation(
            mesh.endpoints.services["gateway"], mesh.endpoints.admin_api_key
        )

        def the_trace() -> list[Span] | None:
            spans = receiver.spans()
            roots = [s for s in spans if s.name == CREATE and s.kind == SERVER]
            if len(roots) != 1:
                return None
            if not any(s.name == WATCH for s in spans):
                return None  # the watch stream's span, to show it is not in the trace
            trace = [s for s in spans if s.trace_id == roots[0].trace_id]
            # Each process exports in its own batches: wait for the last of them.
            return trace if _arrived(trace) else None

        trace = _eventually(the_trace, 30, "the evaluation's trace, every span it needs in it")
        logs = mesh.state_dir / "logs"

    by_id = {s.span_id: s for s in trace}
    names = {s.name for s in trace}
    root = next(s for s in trace if s.name == CREATE and s.kind == SERVER)
    assert root.service == "gateway"
    assert not root.parent_id or root.parent_id not in by_id
    # Every service took part in the one trace, and every executor phase is in it.
    assert {s.service for s in trace} >= set(SERVICES)
    assert set(EXECUTOR_SPANS) <= names, sorted(names)
    # The scheduler's submit and storage's create hang under the gateway's call.
    submits = [s for s in trace if s.service == "scheduler" and s.kind == SERVER]
    assert submits
    assert all(root in _ancestors(s, by_id) for s in submits)
    stored = [s for s in trace if s.service == "storage" and s.kind == SERVER]
    assert stored
    assert all(root in _ancestors(s, by_id) for s in stored)
    # The executor's delivery continues the trace through the job's NATS header: the claim's
    # ancestors are the job span, the scheduler's submit and the gateway's CreateEvaluation.
    claim = next(s for s in trace if s.name == "executor.claim")
    chain = _ancestors(claim, by_id)
    assert [s.name for s in chain][:1] == ["executor.job"]
    assert (chain[0].kind, chain[0].service) == (CONSUMER, "executor-pool")
    assert chain[1] in submits
    assert chain[-1] == root
    # The watcher's delivery of the end continues it through the event's NATS header: one
    # delivery span, in the gateway, whose parent is the executor's job span.
    deliveries = [s for s in trace if s.name == DELIVER]
    assert len(deliveries) == 1, deliveries
    delivery = deliveries[0]
    assert (delivery.service, delivery.kind) == ("gateway", CONSUMER)
    delivered_under = _ancestors(delivery, by_id)
    assert delivered_under[0] == chain[0]
    assert delivered_under[-1] == root
    # The watch stream's own server span is not part of the evaluation's trace.
    watches = [s for s in receiver.spans() if s.name == WATCH and s.kind == SERVER]
    assert watches
    assert all(s.trace_id != root.trace_id for s in watches)
    assert any(s.span_id in delivery.links for s in watches), delivery.links
    # Storage's claim and completion answer inside the executor's spans.
    assert _stored_under("executor.claim", trace)
    assert _stored_under("executor.complete", trace)
    # A log line written inside a span carries its trace and span ids.
    executor_spans = {s.span_id for s in trace if s.service == "executor-pool"}
    lines = [
        line
        for line in _log_lines(logs / "executor-pool.log")
        if line.get("evaluation") == evaluation_id and line.get("trace_id") == root.trace_id
    ]
    assert lines, "no executor log line of the evaluation carries its trace id"
    assert all(line["span_id"] in executor_spans for line in lines)
