"""The library against the real mesh: run, watch, list, cancel, batch, admin calls, typed errors."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from client_mesh import Mesh, wait_until

from evalmesh.client import (
    AsyncClient,
    BatchProgress,
    Cause,
    Client,
    Fault,
    InvalidArgumentError,
    NotFoundError,
    Output,
    PermissionDeniedError,
    Priority,
    Role,
    Spec,
    State,
    UnauthenticatedError,
)

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
COUNTDOWN = "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.3)\n"


def unique_label() -> dict[str, str]:
    return {"test": uuid.uuid4().hex[:12]}


def test_run_returns_the_programs_exit_code_and_both_outputs(client: Client) -> None:
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n"
    evaluation = client.run(code, timeout="20s")
    assert evaluation.state is State.FAILED
    assert (evaluation.exit_code, evaluation.stdout, evaluation.stderr) == (3, b"out\n", b"err\n")
    assert (evaluation.cause, evaluation.fault) == (Cause.EXITED, Fault.USER)
    assert evaluation.terminal
    assert evaluation.full
    assert evaluation.proto.id == evaluation.id


def test_run_answers_exactly_what_a_full_read_of_the_evaluation_answers(client: Client) -> None:
    code = "import sys\nprint('out')\nsys.stderr.buffer.write(bytes(range(256)))\nsys.exit(3)\n"
    ran = client.run(code, stdin=b"in", labels=unique_label(), timeout="20s")
    read = client.get(ran.id)
    assert ran == read  # every field, the code, stdin and both outputs included
    assert ran.proto.spec.stdin == read.proto.spec.stdin == b"in"
    assert ran.stderr == bytes(range(256))


def test_run_streams_output_live_before_the_program_ends(client: Client) -> None:
    arrivals: list[tuple[float, bytes]] = []
    evaluation = client.run(
        COUNTDOWN, on_output=lambda piece: arrivals.append((time.monotonic(), piece.data))
    )
    finished = time.monotonic()
    assert evaluation.succeeded
    assert b"".join(data for _, data in arrivals) == evaluation.stdout == b"0\n1\n2\n3\n4\n"
    assert finished - arrivals[0][0] > 0.6  # the first line came while the rest still ran


def test_run_feeds_stdin_and_returns_any_bytes_exactly(client: Client) -> None:
    data = bytes(range(256)) * 4
    code = "import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])\n"
    evaluation = client.run(code, stdin=data)
    assert evaluation.stdout == data[::-1]


def test_resubmitting_a_request_id_returns_the_same_evaluation(client: Client) -> None:
    request_id = f"same-{uuid.uuid4()}"
    first = client.submit("print(1)", request_id=request_id)
    second = client.submit("print(1)", request_id=request_id)
    assert first.id == second.id
    assert first.request_id == request_id


def test_list_filters_by_label_and_state_and_pages_through_everything(client: Client) -> None:
    labels = unique_label()
    created = client.submit_batch(
        [Spec("print(1)", labels=labels, priority="low") for _ in range(7)]
    )
    for item in created:
        wait_until(client, item.id, lambda e: e.terminal)
    listed = list(client.list(labels=labels, page_size=2))
    assert sorted(item.id for item in listed) == sorted(item.id for item in created)
    assert all(item.priority is Priority.LOW for item in listed)
    assert list(client.list(labels=labels, state="running")) == []
    assert len(list(client.list(labels=labels, state=[State.SUCCEEDED, "failed"]))) == 7


def test_cancel_stops_a_running_evaluation_and_keeps_its_partial_output(client: Client) -> None:
    created = client.submit("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    for event in client.watch(created.id):
        if isinstance(event, Output):
            break
    asked = time.monotonic()
    client.cancel(created.id, reason="test")
    final = wait_until(client, created.id, lambda e: e.terminal, timeout=10)
    assert final.state is State.CANCELLED
    assert time.monotonic() - asked < 5
    assert client.get(created.id).stdout == b"started\n"


BAD_INPUTS: list[tuple[dict[str, Any], str, str]] = [
    ({"timeout": 1000}, "spec.limits.wall_timeout", "900"),
    ({"timeout": "500ms"}, "spec.limits.wall_timeout", "between 1 and 900 seconds"),
    ({"memory": "1M"}, "spec.limits.memory_bytes", "between"),
    ({"max_processes": 1000}, "spec.limits.max_processes", "256"),
    ({"max_output": "64M"}, "spec.limits.max_output_bytes", "between"),
    ({"runtime": "cobol"}, "spec.runtime", "python"),
    ({"code": ""}, "spec.code", "must not be empty"),
    ({"labels": {"Bad Key": "x"}}, "spec.labels", "keys are"),
    ({"request_id": "has spaces"}, "request_id", "printable ASCII"),
    ({"stdin": b"x" * (MIB + 1)}, "spec.stdin", str(MIB)),
]


@pytest.mark.parametrize(("kwargs", "field", "bound"), BAD_INPUTS)
def test_each_bad_input_raises_invalid_argument_naming_the_field_and_bound(
    client: Client, kwargs: dict[str, Any], field: str, bound: str
) -> None:
    labels = unique_label()
    code = kwargs.pop("code", "print(1)")
    with pytest.raises(InvalidArgumentError) as caught:
        client.submit(code, labels={**labels, **kwargs.pop("labels", {})}, **kwargs)
    violation = caught.value.violations[0]
    assert violation.field.startswith(field)
    assert bound in violation.description
    assert field in str(caught.value)
    assert bound in str(caught.value)
    assert list(client.list(labels=labels)) == []  # nothing was created


def test_an_unknown_id_is_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError):
        client.get("ev_doesnotexist")


def test_another_tenants_evaluation_looks_exactly_like_a_missing_one(
    client: Client, mesh: Mesh, user_key: str
) -> None:
    mine = client.submit("print(1)")
    with Client(mesh.address, user_key) as other, pytest.raises(NotFoundError):
        other.get(mine.id)


def test_a_bad_key_is_unauthenticated(mesh: Mesh) -> None:
    with Client(mesh.address, "em_not_a_real_key") as stranger, pytest.raises(UnauthenticatedError):
        stranger.get("ev_1")


def test_a_user_key_may_not_see_the_cluster(mesh: Mesh, user_key: str) -> None:
    with Client(mesh.address, user_key) as user, pytest.raises(PermissionDeniedError):
        user.queue_stats()


def test_a_batch_of_200_reports_progress_and_every_evaluation_runs(client: Client) -> None:
    labels = unique_label()
    specs = [
        Spec(f"print({i} * 2)", labels=labels, request_id=f"b-{uuid.uuid4()}") for i in range(200)
    ]
    progress: list[BatchProgress] = []
    created = client.submit_batch(specs, concurrency=4, on_progress=progress.append)
    assert [item.request_id for item in created] == [spec.request_id for spec in specs]
    assert progress[-1] == BatchProgress(200, 200)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        finished = [item for item in client.list(labels=labels, page_size=500) if item.terminal]
        if len(finished) == 200:
            break
        time.sleep(1)
    assert len(finished) == 200
    assert {item.state for item in finished} == {State.SUCCEEDED}
    assert client.get(created[7].id).stdout == b"14\n"


def test_admins_see_queue_depths_executors_and_runtimes(client: Client) -> None:
    stats = client.queue_stats()
    assert [queue.priority for queue in stats.priorities] == [
        Priority.HIGH,
        Priority.NORMAL,
        Priority.LOW,
    ]
    assert stats.depth("low") >= 0
    executors = client.executors()
    assert executors
    assert all(item.slots > 0 for item in executors)
    assert "python" in [runtime.name for runtime in client.runtimes()]


def test_api_keys_are_created_listed_used_and_revoked(client: Client, mesh: Mesh) -> None:
    tenant = f"keys-{uuid.uuid4().hex[:8]}"
    created = client.create_api_key(tenant, Role.USER, "client test")
    assert created.key.tenant == tenant
    assert created.key.role is Role.USER
    assert created.key.id in [key.id for key in client.list_api_keys(tenant=tenant)]
    with Client(mesh.address, created.secret) as user:
        assert user.run("print('mine')").stdout == b"mine\n"
        revoked = client.revoke_api_key(created.key.id)
        assert revoked.revoked
        with pytest.raises(UnauthenticatedError):
            user.get("ev_1")


async def test_the_async_client_runs_and_streams_output(mesh: Mesh) -> None:
    pieces: list[bytes] = []

    async def collect(piece: Output) -> None:
        pieces.append(piece.data)

    async with AsyncClient(mesh.address, mesh.admin_key) as client:
        evaluation = await client.run(COUNTDOWN, priority="high", on_output=collect)
        listed = [item async for item in client.list(page_size=5)]
    assert evaluation.succeeded
    assert b"".join(pieces) == evaluation.stdout == b"0\n1\n2\n3\n4\n"
    assert evaluation.priority is Priority.HIGH
    assert evaluation.id in [item.id for item in listed]
