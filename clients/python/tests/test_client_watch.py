"""Watch streams that drop, repeat or skip bytes: the client's events stay exact."""

from __future__ import annotations

import grpc
import pytest
from client_fake_gateway import FakeGateway, output, rich_status, snapshot

from evalmesh.client import (
    AsyncClient,
    Client,
    Evaluation,
    NotFoundError,
    Output,
    RetryPolicy,
    Snapshot,
    State,
    Stream,
    UnavailableError,
    WatchEvent,
)
from evalmesh.client._watch import Transcript
from evalmesh.v1 import evaluation_pb2

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
RUNNING = evaluation_pb2.Evaluation.STATE_RUNNING
SUCCEEDED = evaluation_pb2.Evaluation.STATE_SUCCEEDED
DROP = rich_status(grpc.StatusCode.UNAVAILABLE, "connection reset")


def stdout_of(events: list[WatchEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Output) and e.stream == "stdout")


def states_of(events: list[WatchEvent]) -> list[State]:
    return [event.state for event in events if isinstance(event, Snapshot)]


def test_a_dropped_watch_resumes_from_its_offsets_with_no_gap_and_no_duplicate(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.watches += [
        [snapshot("ev", RUNNING), output("stdout", 0, b"hello "), output("stderr", 0, b"e1"), DROP],
        [
            snapshot("ev", RUNNING),  # the replayed snapshot: nothing changed, so not repeated
            output("stdout", 3, b"lo world"),  # overlaps what was already received
            output("stdout", 11, b"!"),
            snapshot("ev", SUCCEEDED),
        ],
    ]
    with Client(fake_gateway.address, "k", retry=FAST) as client:
        events = list(client.watch("ev"))
    assert stdout_of(events) == b"hello world!"
    assert states_of(events) == [State.RUNNING, State.SUCCEEDED]
    resumed = fake_gateway.requests("WatchEvaluation")[1]
    assert (resumed.stdout_offset, resumed.stderr_offset) == (6, 2)
    offsets = [(e.stream, e.offset) for e in events if isinstance(e, Output)]
    assert offsets == [("stdout", 0), ("stderr", 0), ("stdout", 6), ("stdout", 11)]


def test_a_stream_that_ends_before_the_terminal_state_is_reopened(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.watches += [
        [snapshot("ev", RUNNING), output("stdout", 0, b"a")],
        [snapshot("ev", SUCCEEDED)],
    ]
    with Client(fake_gateway.address, "k", retry=FAST) as client:
        events = list(client.watch("ev"))
    assert states_of(events) == [State.RUNNING, State.SUCCEEDED]
    assert len(fake_gateway.requests("WatchEvaluation")) == 2


def test_a_gap_in_the_offsets_reopens_from_the_last_good_byte(fake_gateway: FakeGateway) -> None:
    fake_gateway.watches += [
        [snapshot("ev", RUNNING), output("stdout", 0, b"abc"), output("stdout", 10, b"xyz")],
        [snapshot("ev", RUNNING), output("stdout", 3, b"defghijxyz"), snapshot("ev", SUCCEEDED)],
    ]
    with Client(fake_gateway.address, "k", retry=FAST) as client:
        events = list(client.watch("ev"))
    assert stdout_of(events) == b"abcdefghijxyz"
    assert fake_gateway.requests("WatchEvaluation")[1].stdout_offset == 3


def test_a_watch_can_start_from_given_offsets(fake_gateway: FakeGateway) -> None:
    fake_gateway.watches.append([snapshot("ev", SUCCEEDED)])
    with Client(fake_gateway.address, "k") as client:
        list(client.watch("ev", stdout_offset=5, stderr_offset=7))
    request = fake_gateway.requests("WatchEvaluation")[0]
    assert (request.id, request.stdout_offset, request.stderr_offset) == ("ev", 5, 7)


def test_a_watch_gives_up_after_its_reconnect_budget(fake_gateway: FakeGateway) -> None:
    fake_gateway.watches += [[DROP] for _ in range(5)]
    policy = RetryPolicy(max_reconnects=2, initial_backoff=0.01, max_backoff=0.02)
    with (
        Client(fake_gateway.address, "k", retry=policy) as client,
        pytest.raises(UnavailableError),
    ):
        list(client.watch("ev"))
    assert len(fake_gateway.requests("WatchEvaluation")) == 3


def test_a_watch_of_an_unknown_evaluation_fails_at_once(fake_gateway: FakeGateway) -> None:
    fake_gateway.watches.append([rich_status(grpc.StatusCode.NOT_FOUND, "no such evaluation")])
    with Client(fake_gateway.address, "k", retry=FAST) as client, pytest.raises(NotFoundError):
        list(client.watch("nope"))
    assert len(fake_gateway.requests("WatchEvaluation")) == 1


def test_wait_streams_output_to_the_callback_and_returns_the_full_evaluation(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.evaluations["ev"] = evaluation_pb2.Evaluation(
        id="ev",
        state=SUCCEEDED,
        result=evaluation_pb2.EvaluationResult(stdout=b"hi\n", exit_code=0),
    )
    fake_gateway.watches.append(
        [snapshot("ev", RUNNING), output("stdout", 0, b"hi\n"), snapshot("ev", SUCCEEDED)]
    )
    seen: list[bytes] = []
    with Client(fake_gateway.address, "k") as client:
        final = client.wait("ev", on_output=lambda piece: seen.append(piece.data))
    assert seen == [b"hi\n"]
    assert (final.state, final.stdout, final.exit_code) == (State.SUCCEEDED, b"hi\n", 0)
    assert fake_gateway.requests("GetEvaluation")[0].view == evaluation_pb2.EVALUATION_VIEW_FULL


def test_a_new_attempt_restarts_the_output_at_offset_zero(fake_gateway: FakeGateway) -> None:
    fake_gateway.watches.append(
        [
            snapshot("ev", RUNNING, attempt=1),
            output("stdout", 0, b"lost executor"),
            snapshot("ev", RUNNING, attempt=2),
            output("stdout", 0, b"again"),
            snapshot("ev", SUCCEEDED, attempt=2),
        ]
    )
    with Client(fake_gateway.address, "k", retry=FAST) as client:
        events = list(client.watch("ev"))
    outputs = [(e.offset, e.data) for e in events if isinstance(e, Output)]
    assert outputs == [(0, b"lost executor"), (0, b"again")]
    assert [e.evaluation.attempt for e in events if isinstance(e, Snapshot)] == [1, 2, 2]


def test_a_watch_reopened_during_a_new_attempt_replays_that_attempt_from_zero(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.watches += [
        [snapshot("ev", RUNNING, attempt=1), output("stdout", 0, b"abcdef"), DROP],
        # The gateway resumes at the offsets asked for, but attempt 2 started over.
        [snapshot("ev", RUNNING, attempt=2), output("stdout", 6, b"6789")],
        [
            snapshot("ev", RUNNING, attempt=2),
            output("stdout", 0, b"0123456789"),
            snapshot("ev", SUCCEEDED, attempt=2),
        ],
    ]
    with Client(fake_gateway.address, "k", retry=FAST) as client:
        events = list(client.watch("ev"))
    outputs = [(e.offset, e.data) for e in events if isinstance(e, Output)]
    assert outputs == [(0, b"abcdef"), (0, b"0123456789")]
    offsets = [(r.stdout_offset, r.stderr_offset) for r in fake_gateway.requests("WatchEvaluation")]
    assert offsets == [(0, 0), (6, 0), (0, 0)]


async def test_the_async_watch_resumes_the_same_way(fake_gateway: FakeGateway) -> None:
    fake_gateway.watches += [
        [snapshot("ev", RUNNING), output("stdout", 0, b"0123"), DROP],
        [output("stdout", 0, b"0123456"), snapshot("ev", SUCCEEDED)],
    ]
    async with AsyncClient(fake_gateway.address, "k", retry=FAST) as client:
        events = [event async for event in client.watch("ev")]
    assert stdout_of(events) == b"0123456"
    assert states_of(events) == [State.RUNNING, State.SUCCEEDED]
    assert fake_gateway.requests("WatchEvaluation")[1].stdout_offset == 4


def _snapshot(state: int, attempt: int, out: bytes = b"", err: bytes = b"") -> Snapshot:
    message = evaluation_pb2.Evaluation(id="ev_1", attempt=attempt)
    message.state = state  # type: ignore[assignment]
    message.result.stdout_bytes, message.result.stderr_bytes = len(out), len(err)
    return Snapshot(Evaluation.from_proto(message))


def test_a_transcript_of_a_whole_watch_is_the_full_view_given_the_code_and_stdin() -> None:
    transcript = Transcript()
    transcript.add(_snapshot(evaluation_pb2.Evaluation.STATE_RUNNING, 1))
    transcript.add(Output(Stream.STDOUT, 0, b"he"))
    transcript.add(Output(Stream.STDOUT, 2, b"llo"))
    transcript.add(Output(Stream.STDERR, 0, b"!"))
    assert transcript.full("print()", b"in") is None, "not terminal yet"
    transcript.add(_snapshot(evaluation_pb2.Evaluation.STATE_SUCCEEDED, 1, b"hello", b"!"))
    full = transcript.full("print()", b"in")
    assert full is not None
    assert (full.code, full.proto.spec.stdin, full.stdout, full.stderr) == (
        "print()",
        b"in",
        b"hello",
        b"!",
    )


def test_a_transcript_missing_stored_bytes_or_reset_by_a_new_attempt_asks_for_a_read() -> None:
    transcript = Transcript()
    transcript.add(_snapshot(evaluation_pb2.Evaluation.STATE_RUNNING, 1))
    transcript.add(Output(Stream.STDOUT, 0, b"first attempt"))
    transcript.add(_snapshot(evaluation_pb2.Evaluation.STATE_RUNNING, 2))
    transcript.add(Output(Stream.STDOUT, 0, b"x"))
    transcript.add(_snapshot(evaluation_pb2.Evaluation.STATE_SUCCEEDED, 2, b"xy"))
    assert transcript.full("", b"") is None, "one byte never arrived: read the evaluation"
    again = Transcript()
    again.add(_snapshot(evaluation_pb2.Evaluation.STATE_RUNNING, 1))
    again.add(Output(Stream.STDOUT, 0, b"first attempt"))
    again.add(_snapshot(evaluation_pb2.Evaluation.STATE_RUNNING, 2))
    again.add(Output(Stream.STDOUT, 0, b"x"))
    again.add(_snapshot(evaluation_pb2.Evaluation.STATE_SUCCEEDED, 2, b"x"))
    full = again.full("", b"")
    assert full is not None
    assert full.stdout == b"x", "only the last attempt's output"
