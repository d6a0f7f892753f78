"""The operators' commands (``deadletters``, ``executors``, ``purge``) end to end against a real
mesh of its own: dead letters made by a job nobody acknowledges, an executor process started by
the test and drained, evaluations purged from storage."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import nats
import pytest
from client_mesh import Cli, wait_until

from evalmesh.client import AsyncClient, Client, NotFoundError, State
from evalmesh_common.subjects import JOBS_STREAM, job_consumer
from evalmesh_deploy.local.mesh import MeshEndpoints
from evalmesh_deploy.local.processes import ManagedProcess, read_port_file
from evalmesh_testing.mesh import mesh_for_tests

pytestmark = pytest.mark.slow

DRAINED_ID = "executor-drain-test"


@pytest.fixture(scope="module")
def operated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshEndpoints]:
    """A mesh without an executor (the test starts its own), whose jobs are dead-lettered after
    one unacknowledged delivery of a second."""
    env = {
        "EVALMESH_PROBE_INTERVAL": "0.2",
        "EVALMESH_QUEUE_ACK_WAIT": "1s",
        "EVALMESH_QUEUE_MAX_DELIVER": "1",
    }
    local = mesh_for_tests(tmp_path_factory.mktemp("operated"), env, without=("executor-pool",))
    try:
        endpoints = local.start(timeout=120)
    except Exception as error:  # a host where the mesh cannot start
        local.stop()
        pytest.skip(f"the local mesh cannot start: {error}")
    yield endpoints
    local.stop()


@pytest.fixture
def admin(operated: MeshEndpoints) -> Iterator[Client]:
    with Client(operated.services["gateway"], operated.admin_api_key, timeout=30) as made:
        yield made


@pytest.fixture
def cli(operated: MeshEndpoints, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "EVALMESH_ADDRESS": operated.services["gateway"],
        "EVALMESH_API_KEY": operated.admin_api_key,
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    return Cli(env, tmp_path)


async def _take_and_never_ack(nats_url: str) -> None:
    """Be an executor that takes the next normal job and dies without acknowledging it."""
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        pull = await js.pull_subscribe_bind(job_consumer("normal"), stream=JOBS_STREAM)
        (message,) = await pull.fetch(1, timeout=10)
        assert message.metadata.num_delivered == 1
        await pull.unsubscribe()
    finally:
        await client.close()


def test_deadletters_are_listed_shown_and_redriven(
    cli: Cli, admin: Client, operated: MeshEndpoints
) -> None:
    stuck = admin.submit("print('never acknowledged')", labels={"op": "deadletter"})
    asyncio.run(_take_and_never_ack(operated.nats))
    ended = wait_until(admin, stuck.id, lambda e: e.state is State.ERROR, timeout=30)
    assert "delivered 1 times" in ended.detail

    listed = json.loads(cli("deadletters", "ls", "--json").stdout)
    (letter,) = [item for item in listed if item["evaluation_id"] == stuck.id]
    assert (letter["tenant"], letter["priority"], letter["deliveries"]) == ("default", "NORMAL", 1)
    sequence = str(letter["sequence"])
    table = cli("deadletters", "ls")
    assert table.returncode == 0, table.stderr
    assert stuck.id.encode() in table.stdout
    assert b"DELIVERIES" in table.stdout

    shown = cli("deadletters", "show", sequence)
    assert shown.returncode == 0, shown.stderr
    assert b"max deliveries" in shown.stdout
    assert b"ERROR" in shown.stdout  # the evaluation it was for, as it ended
    detail = json.loads(cli("deadletters", "show", sequence, "--json").stdout)
    assert detail["evaluation"]["id"] == stuck.id

    redriven = cli("deadletters", "redrive", sequence)
    assert redriven.returncode == 0, redriven.stderr
    new_id = redriven.stdout.decode().split()[-1]
    again = admin.get(new_id, full=False)
    assert again.state is State.QUEUED
    assert again.labels["evalmesh.dev/redrive-of"] == stuck.id
    admin.cancel(new_id, "test over")  # so no executor of a later test runs it

    gone = cli("deadletters", "show", sequence)
    assert gone.returncode == 1
    assert b"not found" in gone.stderr


def test_deadletters_need_an_admin_key(cli: Cli, admin: Client) -> None:
    user = admin.create_api_key(f"op-user-{int(time.time())}", "user", "operator tests")
    refused = cli("deadletters", "ls", EVALMESH_API_KEY=user.secret)
    assert refused.returncode == 1
    assert b"permission denied" in refused.stderr


def test_purge_deletes_terminal_evaluations_of_every_tenant_past_the_age(
    cli: Cli, admin: Client
) -> None:
    other = admin.create_api_key(f"op-other-{int(time.time())}", "user", "operator tests")
    with Client(admin.address, other.secret) as theirs:
        their = theirs.cancel(theirs.submit("print(1)").id)
    mine = admin.cancel(admin.submit("print(2)").id)
    waiting = admin.submit("print(3)")  # QUEUED: never purged
    assert their.terminal
    assert mine.terminal

    kept = cli("purge", "--older-than", "1h", "--yes", "--json")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["purged"] == 0
    declined = cli("purge", "--older-than", "0s", stdin=b"n\n")
    assert declined.returncode == 1
    assert admin.get(mine.id, full=False).terminal

    done = cli("purge", "--older-than", "0s", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"purged ")
    assert int(done.stdout.split()[1]) >= 2
    with pytest.raises(NotFoundError):
        admin.get(mine.id)
    with Client(admin.address, other.secret) as theirs, pytest.raises(NotFoundError):
        theirs.get(their.id)
    assert admin.get(waiting.id, full=False).state is State.QUEUED
    admin.cancel(waiting.id)

    bad = cli("purge", "--older-than", "soon", "--yes")
    assert bad.returncode == 2
    assert b"is not a duration" in bad.stderr


def test_the_async_client_mirrors_the_operator_calls(
    admin: Client, operated: MeshEndpoints
) -> None:
    ended = admin.cancel(admin.submit("print('activity')").id)
    assert ended.terminal
    activity = admin.queue_activity("10m")
    assert (len(activity.buckets), activity.bucket_width) == (60, timedelta(seconds=10))
    assert activity.completed >= 1

    async def mirror() -> None:
        async with AsyncClient(admin.address, operated.admin_api_key) as client:
            same = await client.queue_activity("10m")
            assert same.completed >= activity.completed
            letters = [letter async for letter in client.dead_letters(page_size=1)]
            assert letters == list(admin.dead_letters(page_size=1))
            purged = await client.purge_evaluations("1h")
            assert purged.purged == 0
            assert purged.end_time_before is not None
            with pytest.raises(NotFoundError):
                await client.drain_executor("executor-nobody", grace="1s")
            with pytest.raises(NotFoundError):
                await client.dead_letter(10**9)

    asyncio.run(mirror())


@pytest.fixture
def executor(operated: MeshEndpoints, tmp_path: Path) -> Iterator[ManagedProcess]:
    """A real executor-pool process joining the mesh, stopped by pid afterwards."""
    port_file = tmp_path / "executor.port"
    env = {
        **os.environ,
        "EVALMESH_LISTEN_ADDRESS": "127.0.0.1:0",
        "EVALMESH_PORT_FILE": str(port_file),
        "EVALMESH_PROBE_INTERVAL": "0.2",
        "EVALMESH_NATS_URL": operated.nats,
        "EVALMESH_STORAGE_ADDRESS": operated.services["storage"],
        "EVALMESH_INSTANCE_ID": DRAINED_ID,
        "EVALMESH_EXECUTOR_SLOTS": "2",
        "EVALMESH_DRAIN_GRACE": "2s",
    }
    log = tmp_path / "executor.log"
    process = ManagedProcess("executor-pool", [sys.executable, "-m", "evalmesh_executor"], log, env)
    process.start()
    try:
        read_port_file(port_file, process)
        yield process
    finally:
        process.stop()


def _pool(cli: Cli) -> dict[str, dict[str, object]]:
    result = cli("executors", "ls", "--json")
    assert result.returncode == 0, result.stderr
    return {item["id"]: item for item in json.loads(result.stdout)}


def test_an_executor_is_listed_then_drained_letting_its_running_work_finish(
    cli: Cli, admin: Client, executor: ManagedProcess
) -> None:
    deadline = time.monotonic() + 90
    while not _pool(cli).get(DRAINED_ID, {}).get("healthy"):
        executor.ensure_running()
        assert time.monotonic() < deadline, f"never healthy:\n{executor.log_tail()}"
        time.sleep(0.5)
    table = cli("executors", "ls")
    assert DRAINED_ID.encode() in table.stdout
    assert b"healthy" in table.stdout

    code = "import time\nprint('working', flush=True)\ntime.sleep(3)\nprint('done')"
    running = admin.submit(code)
    wait_until(admin, running.id, lambda e: e.state is State.RUNNING, timeout=60)
    drained = cli("executors", "drain", DRAINED_ID, "--grace", "30s", "--wait", "--json")
    assert drained.returncode == 0, drained.stderr
    status = json.loads(drained.stdout)
    assert (status["draining"], status["healthy"], status["busy_slots"]) == (True, False, 0)
    finished = admin.get(running.id)
    assert finished.state is State.SUCCEEDED  # the grace let it finish
    assert finished.stdout == b"working\ndone\n"
    # Where its time went, every moment on the database's clock and in order.
    moments = [
        finished.create_time,
        finished.start_time,
        finished.run_start_time,
        finished.run_end_time,
        finished.output_stored_time,
        finished.end_time,
    ]
    assert None not in moments
    assert moments == sorted(moments)  # type: ignore[type-var]
    assert finished.run_start_time is not None
    assert finished.run_end_time is not None
    assert finished.wall_time is not None
    ran = finished.run_end_time - finished.run_start_time
    assert abs(ran - finished.wall_time) < timedelta(milliseconds=5)
    status = cli("status", running.id)
    assert status.returncode == 0, status.stderr
    stages = re.search(rb"^stages +(.*)$", status.stdout, re.MULTILINE)
    assert stages is not None, status.stdout
    assert re.fullmatch(
        # Three significant digits: a run of 3.004 s reads "3s".
        rb"queued \d+ms, sandbox \d+ms, running 3(\.\d+)?s, output and result \d+ms",
        stages[1],
    ), stages[1]

    after = admin.submit("print('after the drain')")
    time.sleep(2)
    assert admin.get(after.id, full=False).state is State.QUEUED  # it takes no new work
    assert _pool(cli)[DRAINED_ID]["draining"] is True
    admin.cancel(after.id)

    unknown = cli("executors", "drain", "executor-nobody")
    assert unknown.returncode == 1
    assert b"not found" in unknown.stderr
