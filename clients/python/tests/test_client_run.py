"""``run()``: one RunEvaluation stream queues and follows. When it fails, CreateEvaluation with the
same request_id and a watch take over: the evaluation is made once, its output arrives whole."""

from __future__ import annotations

import grpc
from client_fake_gateway import FakeGateway, output, rich_status, snapshot

from evalmesh.client import AsyncClient, Client, Output, RetryPolicy, Snapshot, State
from evalmesh.v1 import evaluation_pb2, evaluation_service_pb2

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
QUEUED = evaluation_pb2.Evaluation.STATE_QUEUED
RUNNING = evaluation_pb2.Evaluation.STATE_RUNNING
DROP = rich_status(grpc.StatusCode.UNAVAILABLE, "connection reset")


def ended(evaluation_id: str, stdout: bytes) -> evaluation_service_pb2.WatchEvaluationResponse:
    """The terminal snapshot of a run that printed ``stdout``."""
    evaluation = evaluation_pb2.Evaluation(
        id=evaluation_id, state=evaluation_pb2.Evaluation.STATE_SUCCEEDED, attempt=1
    )
    evaluation.result.stdout_bytes = len(stdout)
    return evaluation_service_pb2.WatchEvaluationResponse(evaluation=evaluation)


async def test_one_run_stream_queues_and_follows_with_no_other_call(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.runs.append(
        [
            snapshot("ev", QUEUED),
            snapshot("ev", RUNNING, 1),
            output("stdout", 0, b"hi\n"),
            ended("ev", b"hi\n"),
        ]
    )
    seen: list[bytes] = []
    async with AsyncClient(fake_gateway.address, "k", retry=FAST) as client:
        done = await client.run("print('hi')", on_output=lambda piece: seen.append(piece.data))
    assert (done.id, done.state, done.stdout) == ("ev", State.SUCCEEDED, b"hi\n")
    assert done.code == "print('hi')"  # known to the client: no read of the full view
    assert seen == [b"hi\n"]
    called = {name for name, _, _ in fake_gateway.calls}
    assert called == {"RunEvaluation"}


def test_stream_yields_the_queued_evaluation_first_then_its_events(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.runs.append([snapshot("ev", QUEUED), output("stdout", 0, b"x"), ended("ev", b"x")])
    with Client(fake_gateway.address, "k", retry=FAST) as client:
        events = list(client.stream("print('x', end='')"))
    first = events[0]
    assert isinstance(first, Snapshot)
    assert (first.evaluation.id, first.state) == ("ev", State.QUEUED)
    assert [type(event) for event in events] == [Snapshot, Output, Snapshot]


def test_a_run_stream_dropped_after_its_first_event_goes_on_with_a_watch_from_its_offsets(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.runs.append([snapshot("ev", RUNNING, 1), output("stdout", 0, b"ab"), DROP])
    fake_gateway.watches.append(
        [snapshot("ev", RUNNING, 1), output("stdout", 1, b"bcd"), ended("ev", b"abcd")]
    )
    with Client(fake_gateway.address, "k", retry=FAST) as client:
        done = client.run("print('abcd', end='')")
    assert done.stdout == b"abcd"
    (watch,) = fake_gateway.requests("WatchEvaluation")
    assert (watch.id, watch.stdout_offset, watch.stderr_offset) == ("ev", 2, 0)
    assert not fake_gateway.requests("CreateEvaluation")


async def test_a_run_stream_failing_before_its_first_event_creates_with_the_same_request_id(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.errors["RunEvaluation"].append(DROP)
    async with AsyncClient(fake_gateway.address, "k", retry=FAST) as client:
        made = fake_gateway.evaluation(
            evaluation_service_pb2.CreateEvaluationRequest(request_id="mine")
        )
        fake_gateway.watches.append(
            [snapshot(made.id, RUNNING, 1), output("stdout", 0, b"1\n"), ended(made.id, b"1\n")]
        )
        done = await client.run("print(1)", request_id="mine")
    assert (done.id, done.stdout) == (made.id, b"1\n")
    (run,) = fake_gateway.requests("RunEvaluation")
    (create,) = fake_gateway.requests("CreateEvaluation")
    assert run.request_id == create.request_id == "mine"
    assert run.spec == create.spec


def test_a_gateway_without_run_evaluation_is_served_by_create_and_watch(
    fake_gateway: FakeGateway,
) -> None:
    with Client(fake_gateway.address, "k", retry=FAST) as client:
        made = fake_gateway.evaluation(
            evaluation_service_pb2.CreateEvaluationRequest(request_id="old")
        )
        fake_gateway.watches.append([output("stdout", 0, b"x"), ended(made.id, b"x")])
        done = client.run("print('x', end='')", request_id="old")
    assert (done.id, done.stdout) == (made.id, b"x")
    assert [name for name, _, _ in fake_gateway.calls] == [
        "RunEvaluation",
        "CreateEvaluation",
        "WatchEvaluation",
    ]
