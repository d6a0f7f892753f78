"""submit_batch: chunks within the API's caps, bounded concurrency, order kept, progress told."""

from __future__ import annotations

import grpc
import pytest
from client_fake_gateway import FakeGateway, rich_status

from evalmesh.client import (
    AsyncClient,
    BatchProgress,
    Client,
    InvalidArgumentError,
    RetryPolicy,
    Spec,
)

FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)


def test_a_batch_is_split_into_calls_of_at_most_1000_and_keeps_its_order(
    fake_gateway: FakeGateway,
) -> None:
    specs = [Spec(f"print({i})", request_id=f"req-{i}") for i in range(2500)]
    progress: list[BatchProgress] = []
    with Client(fake_gateway.address, "k") as client:
        created = client.submit_batch(specs, concurrency=3, on_progress=progress.append)
    sizes = sorted(len(call.requests) for call in fake_gateway.requests("BatchCreateEvaluations"))
    assert sizes == [500, 1000, 1000]
    assert [item.request_id for item in created] == [f"req-{i}" for i in range(2500)]
    assert [step.submitted for step in progress] == sorted(step.submitted for step in progress)
    assert progress[-1] == BatchProgress(2500, 2500)


def test_a_batch_also_stays_under_the_request_size_cap(fake_gateway: FakeGateway) -> None:
    code = "x = 1\n" * 40_000  # 240 KB of code each: about eight fit in one 2 MiB call
    with Client(fake_gateway.address, "k") as client:
        created = client.submit_batch([code] * 30, concurrency=2)
    calls = fake_gateway.requests("BatchCreateEvaluations")
    assert len(created) == 30
    assert len(calls) >= 4
    assert all(call.ByteSize() <= 2 * 1024 * 1024 for call in calls)


def test_plain_strings_are_code_with_fresh_request_ids(fake_gateway: FakeGateway) -> None:
    with Client(fake_gateway.address, "k") as client:
        created = client.submit_batch(["print(1)", "print(2)"])
    assert len({item.request_id for item in created}) == 2
    assert [item.proto.spec.code for item in created] == ["print(1)", "print(2)"]


def test_a_retried_batch_call_reuses_its_request_ids(fake_gateway: FakeGateway) -> None:
    fake_gateway.errors["BatchCreateEvaluations"].append(
        rich_status(grpc.StatusCode.UNAVAILABLE, "scheduler restarting")
    )
    with Client(fake_gateway.address, "k", retry=FAST) as client:
        client.submit_batch(["print(1)"] * 5)
    first, second = fake_gateway.requests("BatchCreateEvaluations")
    assert [r.request_id for r in first.requests] == [r.request_id for r in second.requests]
    assert len(fake_gateway.evaluations) == 5


def test_violations_are_indexed_over_the_whole_batch(fake_gateway: FakeGateway) -> None:
    fake_gateway.errors["BatchCreateEvaluations"] += [
        None,
        rich_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request",
            violations=[("requests[3].spec.code", "must not be empty")],
        ),
    ]
    specs = ["print(1)"] * 1003 + [""] + ["print(1)"] * 10
    with (
        Client(fake_gateway.address, "k") as client,
        pytest.raises(InvalidArgumentError) as caught,
    ):
        client.submit_batch(specs, concurrency=1)
    assert caught.value.violations[0].field == "requests[1003].spec.code"


async def test_the_async_batch_keeps_order_and_reports_progress(
    fake_gateway: FakeGateway,
) -> None:
    specs = [Spec(f"print({i})", request_id=f"a-{i}", priority="low") for i in range(1200)]
    progress: list[BatchProgress] = []
    async with AsyncClient(fake_gateway.address, "k") as client:
        created = await client.submit_batch(specs, concurrency=2, on_progress=progress.append)
    assert [item.request_id for item in created] == [f"a-{i}" for i in range(1200)]
    assert progress[-1] == BatchProgress(1200, 1200)
    assert all(item.priority == "LOW" for item in created)
