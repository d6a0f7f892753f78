"""Build the API's request messages from friendly arguments; shared by both clients."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from evalmesh.client._models import Priority, State
from evalmesh.client._units import Duration, Size, parse_duration, parse_size
from evalmesh.v1 import evaluation_pb2, evaluation_service_pb2

__all__ = ["BatchProgress", "Spec", "chunk_requests", "create_request", "list_request"]

_svc = evaluation_service_pb2

# BatchCreateEvaluations takes at most 1000 requests, and the gateway accepts messages of about
# 2 MiB: a chunk closes at whichever comes first, with headroom for framing.
MAX_BATCH = 1000
MAX_BATCH_BYTES = 2 * 1024 * 1024 - 64 * 1024


@dataclasses.dataclass(frozen=True)
class Spec:
    """What to run, for :meth:`Client.submit_batch`; the same fields as :meth:`Client.submit`.

    ``timeout`` is the evaluation's wall-clock limit; ``memory`` and ``max_output`` are bytes or
    strings such as ``"256M"``. Unset limits take the operator's defaults. ``request_id`` is the
    idempotency key; a random one is made when it is empty.
    """

    code: str
    stdin: bytes = b""
    runtime: str | None = None
    priority: Priority | str | None = None
    timeout: Duration | None = None
    memory: Size | None = None
    max_processes: int | None = None
    max_output: Size | None = None
    labels: Mapping[str, str] | None = None
    request_id: str | None = None


@dataclasses.dataclass(frozen=True)
class BatchProgress:
    """How far :meth:`Client.submit_batch` has got: ``submitted`` of ``total`` are queued."""

    submitted: int
    total: int


def create_request(spec: Spec) -> evaluation_service_pb2.CreateEvaluationRequest:
    """The CreateEvaluationRequest for ``spec``, with a fresh request_id if it has none."""
    return _svc.CreateEvaluationRequest(
        request_id=spec.request_id or str(uuid.uuid4()), spec=_spec(spec)
    )


def run_request(
    create: evaluation_service_pb2.CreateEvaluationRequest,
) -> evaluation_service_pb2.RunEvaluationRequest:
    """The RunEvaluationRequest that queues what ``create`` does, with its request_id."""
    return _svc.RunEvaluationRequest(request_id=create.request_id, spec=create.spec)


def _spec(spec: Spec) -> evaluation_pb2.EvaluationSpec:
    message = evaluation_pb2.EvaluationSpec(
        code=spec.code,
        stdin=spec.stdin,
        runtime=spec.runtime or "",
        labels=dict(spec.labels or {}),
    )
    if spec.priority is not None:
        message.priority = Priority.parse(spec.priority).to_proto()
    limits = message.limits
    if spec.timeout is not None:
        # Duration.FromTimedelta would round sub-microsecond input; nanoseconds keep "1.5s" exact.
        limits.wall_timeout.FromNanoseconds(round(parse_duration(spec.timeout) * 1e9))
    if spec.memory is not None:
        limits.memory_bytes = parse_size(spec.memory)
    if spec.max_processes is not None:
        limits.max_processes = spec.max_processes
    if spec.max_output is not None:
        limits.max_output_bytes = parse_size(spec.max_output)
    return message


def list_request(
    *,
    state: State | str | Iterable[State | str] | None,
    priority: Priority | str | Iterable[Priority | str] | None,
    labels: Mapping[str, str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    page_size: int,
    full: bool,
) -> evaluation_service_pb2.ListEvaluationsRequest:
    """The first ListEvaluationsRequest for these filters (page_token is set per page)."""
    view = evaluation_pb2.EVALUATION_VIEW_FULL if full else evaluation_pb2.EVALUATION_VIEW_BASIC
    request = _svc.ListEvaluationsRequest(
        page_size=page_size,
        states=[State.parse(item).to_proto() for item in _many(state)],
        priorities=[Priority.parse(item).to_proto() for item in _many(priority)],
        labels=dict(labels or {}),
        view=view,
    )
    if created_after is not None:
        request.create_time_after.FromDatetime(created_after)
    if created_before is not None:
        request.create_time_before.FromDatetime(created_before)
    return request


def _many(value: str | Iterable[str] | None) -> list[str]:
    # State and Priority are str enums, so one member is a str and is not iterated over.
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def chunk_requests(
    requests: list[evaluation_service_pb2.CreateEvaluationRequest],
    max_count: int = MAX_BATCH,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[evaluation_service_pb2.CreateEvaluationRequest]]:
    """Split ``requests`` into batches of at most ``max_count`` requests and about ``max_bytes``."""
    chunk: list[evaluation_service_pb2.CreateEvaluationRequest] = []
    size = 0
    for request in requests:
        # Each repeated field costs its bytes plus a tag and a length prefix (at most 6 bytes).
        cost = request.ByteSize() + 6
        if chunk and (len(chunk) >= max_count or size + cost > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(request)
        size += cost
    if chunk:
        yield chunk
