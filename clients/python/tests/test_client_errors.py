"""Error decoding and retries, against a real gRPC server that answers with rich statuses."""

from __future__ import annotations

import time

import grpc
import pytest
from client_fake_gateway import FakeGateway, RawStatus, rich_status

from evalmesh.client import (
    AlreadyExistsError,
    AsyncClient,
    Client,
    DeadlineExceededError,
    EvalmeshError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
)

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
TIMEOUT_VIOLATION = ("spec.limits.wall_timeout", "must be between 1 and 900 seconds, got 1000")


def connect(fake: FakeGateway, retry: RetryPolicy = FAST) -> Client:
    return Client(fake.address, "test-key", retry=retry, timeout=5)


def test_invalid_argument_names_each_field_and_its_bound(fake_gateway: FakeGateway) -> None:
    fake_gateway.errors["CreateEvaluation"].append(
        rich_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request: spec.limits.wall_timeout",
            reason="INVALID_ARGUMENT",
            violations=[TIMEOUT_VIOLATION],
        )
    )
    with connect(fake_gateway) as client, pytest.raises(InvalidArgumentError) as caught:
        client.submit("print(1)", timeout=1000)
    error = caught.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert error.violations == (TIMEOUT_VIOLATION,)
    assert str(error) == (
        "invalid request: spec.limits.wall_timeout: must be between 1 and 900 seconds, got 1000"
    )


def test_several_violations_are_listed_one_per_line(fake_gateway: FakeGateway) -> None:
    fake_gateway.errors["CreateEvaluation"].append(
        rich_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request",
            violations=[TIMEOUT_VIOLATION, ("spec.code", "must not be empty")],
        )
    )
    with connect(fake_gateway) as client, pytest.raises(InvalidArgumentError) as caught:
        client.submit("")
    assert str(caught.value).splitlines() == [
        "invalid request:",
        f"  {TIMEOUT_VIOLATION[0]}: {TIMEOUT_VIOLATION[1]}",
        "  spec.code: must not be empty",
    ]


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExistsError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
        (grpc.StatusCode.INTERNAL, InternalError),
    ],
)
def test_each_status_code_raises_its_own_exception_with_the_servers_reason(
    fake_gateway: FakeGateway, code: grpc.StatusCode, error_class: type[EvalmeshError]
) -> None:
    fake_gateway.errors["GetEvaluation"].append(rich_status(code, "nope", reason="SOME_REASON"))
    with connect(fake_gateway) as client, pytest.raises(error_class) as caught:
        client.get("ev-1")
    assert caught.value.code is code
    assert caught.value.reason == "SOME_REASON"
    assert caught.value.message == "nope"
    assert len(fake_gateway.requests("GetEvaluation")) == 1  # none of these is retried


def test_a_garbled_details_trailer_still_decodes_the_status_code(
    fake_gateway: FakeGateway,
) -> None:
    garbled = (("grpc-status-details-bin", b"\xff not a status"),)
    fake_gateway.errors["GetEvaluation"].append(
        RawStatus(grpc.StatusCode.NOT_FOUND, "gone", garbled)
    )
    with connect(fake_gateway) as client, pytest.raises(NotFoundError) as caught:
        client.get("ev-1")
    assert caught.value.reason == "NOT_FOUND"
    assert caught.value.violations == ()


def test_unavailable_is_retried_with_the_same_request_id_so_nothing_is_created_twice(
    fake_gateway: FakeGateway,
) -> None:
    unavailable = rich_status(grpc.StatusCode.UNAVAILABLE, "storage is restarting")
    fake_gateway.errors["CreateEvaluation"] += [unavailable, unavailable]
    with connect(fake_gateway) as client:
        created = client.submit("print(1)")
    sent = fake_gateway.requests("CreateEvaluation")
    assert len(sent) == 3
    assert len({request.request_id for request in sent}) == 1
    assert created.request_id == sent[0].request_id
    assert len(fake_gateway.evaluations) == 1


def test_deadline_exceeded_is_retried_too(fake_gateway: FakeGateway) -> None:
    fake_gateway.errors["GetEvaluation"].append(
        rich_status(grpc.StatusCode.DEADLINE_EXCEEDED, "slow")
    )
    fake_gateway.errors["GetEvaluation"].append(
        rich_status(grpc.StatusCode.NOT_FOUND, "really not there")
    )
    with connect(fake_gateway) as client, pytest.raises(NotFoundError):
        client.get("ev-1")
    assert len(fake_gateway.requests("GetEvaluation")) == 2


def test_retries_stop_after_the_policys_attempts(fake_gateway: FakeGateway) -> None:
    fake_gateway.errors["GetEvaluation"] += [
        rich_status(grpc.StatusCode.UNAVAILABLE, "down") for _ in range(10)
    ]
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    with connect(fake_gateway, policy) as client, pytest.raises(UnavailableError):
        client.get("ev-1")
    assert len(fake_gateway.requests("GetEvaluation")) == 3


# What gRPC says when the server refused a stream before reading it (HTTP/2 REFUSED_STREAM).
REFUSED = "Stream removed (RST_STREAM (Received RST_STREAM with error code 7))"


def test_refused_streams_are_resent_without_spending_the_calls_attempts(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.errors["CreateEvaluation"] += [
        rich_status(grpc.StatusCode.UNAVAILABLE, REFUSED) for _ in range(12)
    ]
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
    with connect(fake_gateway, policy) as client:
        created = client.submit("print(1)")
    # Twelve refusals resent, though the policy allows a call two attempts.
    sent = fake_gateway.requests("CreateEvaluation")
    assert len(sent) == 13
    assert {request.request_id for request in sent} == {created.request_id}


def test_refused_streams_are_resent_a_bounded_number_of_times(fake_gateway: FakeGateway) -> None:
    fake_gateway.errors["GetEvaluation"] += [
        rich_status(grpc.StatusCode.UNAVAILABLE, REFUSED) for _ in range(10)
    ]
    policy = RetryPolicy(max_attempts=2, max_refused=3, initial_backoff=0.01, max_backoff=0.02)
    with connect(fake_gateway, policy) as client, pytest.raises(UnavailableError):
        client.get("ev-1")
    # Three refusals resent at once, then the policy's two attempts.
    assert len(fake_gateway.requests("GetEvaluation")) == 5


def test_rate_limits_are_retried_no_sooner_than_the_server_asks(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.errors["CreateEvaluation"].append(
        rich_status(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", reason="RATE_LIMITED", retry_after=0.4
        )
    )
    started = time.monotonic()
    with connect(fake_gateway) as client:
        client.submit("print(1)")
    assert time.monotonic() - started >= 0.4
    sent = fake_gateway.requests("CreateEvaluation")
    assert [request.request_id for request in sent] == [sent[0].request_id] * 2


def test_a_rate_limit_too_far_away_is_raised_with_its_retry_after(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.errors["CreateEvaluation"].append(
        rich_status(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "quota", reason="RATE_LIMITED", retry_after=120
        )
    )
    with connect(fake_gateway) as client, pytest.raises(RateLimitedError) as caught:
        client.submit("print(1)")
    assert caught.value.retry_after == pytest.approx(120)
    assert caught.value.reason == "RATE_LIMITED"
    assert len(fake_gateway.requests("CreateEvaluation")) == 1


def test_resource_exhausted_without_retry_info_is_not_retried(fake_gateway: FakeGateway) -> None:
    fake_gateway.errors["CreateEvaluation"].append(
        rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "message larger than max")
    )
    with connect(fake_gateway) as client, pytest.raises(RateLimitedError):
        client.submit("print(1)")
    assert len(fake_gateway.requests("CreateEvaluation")) == 1


def test_creating_an_api_key_is_never_retried(fake_gateway: FakeGateway) -> None:
    fake_gateway.errors["CreateApiKey"].append(rich_status(grpc.StatusCode.UNAVAILABLE, "blip"))
    with connect(fake_gateway) as client, pytest.raises(UnavailableError):
        client.create_api_key("team-a", "admin", "ci")
    assert len(fake_gateway.requests("CreateApiKey")) == 1


def test_every_call_carries_the_bearer_key_and_a_deadline(fake_gateway: FakeGateway) -> None:
    with connect(fake_gateway) as client:
        created = client.submit("print(1)")
        client.get(created.id)
        client.queue_stats()
    assert {metadata["authorization"] for _, _, metadata in fake_gateway.calls} == {
        "Bearer test-key"
    }
    # gRPC rounds the deadline it sends up to the next millisecond unit, hence the slack.
    assert all(left is not None and 0 < left <= 5.1 for left in fake_gateway.deadlines)


def test_an_unreachable_address_raises_unavailable(unused_port: int) -> None:
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
    with (
        Client(f"127.0.0.1:{unused_port}", "k", retry=policy, timeout=2) as client,
        pytest.raises(UnavailableError),
    ):
        client.get("ev-1")


def test_a_call_slower_than_its_deadline_raises_deadline_exceeded(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.delay = 2.0
    policy = RetryPolicy(max_attempts=1)
    with (
        Client(fake_gateway.address, "k", retry=policy, timeout=0.2) as client,
        pytest.raises(DeadlineExceededError),
    ):
        client.get("ev-1")


async def test_the_async_client_decodes_and_retries_the_same_way(
    fake_gateway: FakeGateway,
) -> None:
    fake_gateway.errors["CreateEvaluation"] += [
        rich_status(grpc.StatusCode.UNAVAILABLE, "blip"),
        rich_status(
            grpc.StatusCode.INVALID_ARGUMENT, "invalid request", violations=[TIMEOUT_VIOLATION]
        ),
    ]
    async with AsyncClient(fake_gateway.address, "k", retry=FAST) as client:
        with pytest.raises(InvalidArgumentError) as caught:
            await client.submit("print(1)", timeout="1000s")
    assert caught.value.violations == (TIMEOUT_VIOLATION,)
    sent = fake_gateway.requests("CreateEvaluation")
    assert len(sent) == 2
    assert sent[0].request_id == sent[1].request_id
    assert sent[0].spec.limits.wall_timeout.seconds == 1000
