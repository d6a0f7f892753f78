"""Runtimes are admitted by what the healthy executors offer, read from their heartbeats.

A runtime that no healthy executor offers, while one is healthy, is refused at once with
FAILED_PRECONDITION / RUNTIME_UNAVAILABLE and creates nothing; with no healthy executor at all,
work waits in the queue as before. ListRuntimes sums the healthy executors' runtimes up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc.aio
import pytest
from nats.js import JetStreamContext
from scheduler_test_helpers import Mesh, SchedulerStub, eventually, spec, start_scheduler

from evalmesh.executor.v1 import pool_pb2
from evalmesh.scheduler.v1 import scheduler_service_pb2 as spb
from evalmesh.v1 import cluster_pb2, evaluation_pb2
from evalmesh_common import FailedPrecondition
from evalmesh_common.server import error_from_rpc
from evalmesh_common.subjects import EXECUTORS_BUCKET

Channels = Callable[[str], grpc.aio.Channel]
State = evaluation_pb2.Evaluation.State


def _status(
    instance_id: str,
    runtimes: dict[str, str],
    *,
    healthy: bool = True,
    draining: bool = False,
    packages: tuple[tuple[str, str], ...] = (),
) -> bytes:
    infos = [
        pool_pb2.RuntimeInfo(
            name=name,
            digest=digest,
            version="3.11.2",
            description=f"{name} here",
            packages=[cluster_pb2.RuntimePackage(name=n, version=v) for n, v in packages],
        )
        for name, digest in runtimes.items()
    ]
    status = pool_pb2.PoolStatus(
        instance_id=instance_id,
        slots=2,
        healthy=healthy,
        draining=draining,
        unhealthy_reason="" if healthy else "self-check failed",
        runtimes=infos,
    )
    return status.SerializeToString()


def _submit(runtime: str, request_id: str | None = None) -> spb.SubmitEvaluationRequest:
    request = spb.SubmitEvaluationRequest(
        tenant="tenant-a", request_id=request_id or uuid.uuid4().hex, spec=spec()
    )
    request.spec.runtime = runtime
    return request


async def _refusal(scheduler: SchedulerStub, request: spb.SubmitEvaluationRequest) -> str | None:
    """The refusal's reason, or None when the submit was accepted."""
    try:
        reply = await scheduler.SubmitEvaluation(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        error = error_from_rpc(exc)
    else:
        assert reply.record.evaluation.state == State.STATE_QUEUED
        return None
    assert isinstance(error, FailedPrecondition), error
    assert error.metadata["runtime"] == request.spec.runtime
    return error.reason


async def test_a_runtime_no_healthy_executor_offers_is_refused_until_one_does(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    heartbeats = await js.key_value(EXECUTORS_BUCKET)
    await heartbeats.put("exec-1", _status("exec-1", {"python": "sha256:aa"}))

    async def refused() -> bool:
        return await _refusal(scheduler, _submit("python-ml")) is not None

    await eventually(refused, 5, "python-ml refused while only python is offered")
    request = _submit("python-ml")
    assert await _refusal(scheduler, request) == "RUNTIME_UNAVAILABLE"
    assert await _refusal(scheduler, _submit("python")) is None
    assert await _refusal(scheduler, _submit("")) is None  # the default runtime, python
    batch = spb.BatchSubmitEvaluationsRequest(requests=[_submit("python"), _submit("python-ml")])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await scheduler.BatchSubmitEvaluations(batch, timeout=10)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    await heartbeats.put("exec-2", _status("exec-2", {"python": "sha256:aa", "python-ml": "s"}))

    async def accepted() -> bool:
        return await _refusal(scheduler, request) is None  # the same request_id, now admitted

    await eventually(accepted, 5, "python-ml accepted once an executor offers it")


async def test_with_no_healthy_executor_at_all_work_waits_instead_of_being_refused(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    assert await _refusal(scheduler, _submit("python-ml")) is None  # an empty pool
    heartbeats = await js.key_value(EXECUTORS_BUCKET)
    await heartbeats.put("sick", _status("sick", {"python": "sha256:aa"}, healthy=False))
    await heartbeats.put("leaving", _status("leaving", {"python": "sha256:aa"}, draining=True))
    listing = spb.ListExecutorsRequest()

    async def seen() -> bool:
        return len((await scheduler.ListExecutors(listing, timeout=10)).executors) == 2

    await eventually(seen, 5, "the heartbeats in the view")
    for _ in range(3):
        assert await _refusal(scheduler, _submit("python-ml")) is None


async def test_list_runtimes_sums_up_the_healthy_executors(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    heartbeats = await js.key_value(EXECUTORS_BUCKET)
    numpy = (("numpy", "2.3.5"),)
    await heartbeats.put("a", _status("a", {"python": "sha256:p", "python-ml": "sha256:m1"}))
    await heartbeats.put("b", _status("b", {"python-ml": "sha256:m2"}, packages=numpy))
    await heartbeats.put("c", _status("c", {"python-gpu": "sha256:g"}, healthy=False))

    async def listed() -> list[cluster_pb2.Runtime]:
        return list((await scheduler.ListRuntimes(spb.ListRuntimesRequest(), timeout=10)).runtimes)

    async def both() -> bool:
        return [r.name for r in await listed()] == ["python", "python-ml"]

    await eventually(both, 5, "the healthy executors' runtimes")
    python, ml = await listed()
    assert (python.executor_count, list(python.digests), python.version) == (
        1,
        ["sha256:p"],
        "3.11.2",
    )
    assert python.description == "python here"
    assert ml.executor_count == 2
    assert list(ml.digests) == ["sha256:m1", "sha256:m2"]
    assert [(p.name, p.version) for p in ml.packages] == [("numpy", "2.3.5")]
    assert ml.language == "python"


async def test_the_first_healthy_heartbeat_counts_at_once_after_a_submit_that_found_none(
    mesh: Mesh, channels: Channels, js: JetStreamContext
) -> None:
    _, scheduler = await start_scheduler(mesh, channels)
    heartbeats = await js.key_value(EXECUTORS_BUCKET)
    await heartbeats.put("exec-1", _status("exec-1", {"python": "sha256:aa"}, healthy=False))
    listing = spb.ListExecutorsRequest()

    async def healthy(expected: bool) -> bool:
        executors = (await scheduler.ListExecutors(listing, timeout=10)).executors
        return [executor.healthy for executor in executors] == [expected]

    await eventually(lambda: healthy(False), 5, "the self-checking executor in the view")
    assert await _refusal(scheduler, _submit("python-ml")) is None  # no healthy pool: it waits
    await heartbeats.put("exec-1", _status("exec-1", {"python": "sha256:aa"}))
    await eventually(lambda: healthy(True), 5, "the executor healthy in the view")
    assert await _refusal(scheduler, _submit("python-ml")) == "RUNTIME_UNAVAILABLE"
