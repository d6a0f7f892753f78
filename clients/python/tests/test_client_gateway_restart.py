"""A watch and a submit ride out a gateway killed by pid and restarted on the same port."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid

import pytest
from client_mesh import Mesh

from evalmesh.client import Client, Evaluation, Output, RetryPolicy, Snapshot, State, WatchEvent

pytestmark = pytest.mark.slow

LINES = 120
# One numbered line every 50 ms, about six seconds in all: the gateway is down in the middle.
TICKER = (
    f"import time\nfor i in range({LINES}):\n"
    "    print(f'line {i:04d}', flush=True)\n    time.sleep(0.05)\n"
)
EXPECTED = b"".join(f"line {i:04d}\n".encode() for i in range(LINES))
# Patient enough to outlast a gateway restart (a fresh Python process and its health checks).
PATIENT = RetryPolicy(max_attempts=60, max_reconnects=60, initial_backoff=0.1, max_backoff=0.5)


def kill_gateway(mesh: Mesh) -> int:
    gateway = next(process for process in mesh.local.processes if process.name == "gateway")
    os.kill(gateway.pid, signal.SIGKILL)
    return gateway.pid


def test_a_watch_resumes_across_a_gateway_restart_with_no_gap_or_duplicate(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="evalmesh.client")
    events: list[WatchEvent] = []
    failure: list[BaseException] = []
    first_output = threading.Event()
    with Client(mesh.address, mesh.admin_key, retry=PATIENT) as client:
        created = client.submit(TICKER, timeout="60s")

        def follow() -> None:
            try:
                for event in client.watch(created.id):
                    events.append(event)
                    if isinstance(event, Output):
                        first_output.set()
            except BaseException as error:
                failure.append(error)

        watcher = threading.Thread(target=follow)
        watcher.start()
        assert first_output.wait(30), "no output before the restart"
        killed = kill_gateway(mesh)
        time.sleep(1.0)  # output keeps coming while no gateway listens
        restarted = mesh.local.restart_service("gateway")
        watcher.join(90)
        assert not watcher.is_alive()
        assert not failure, failure
        final = client.get(created.id)

    assert restarted.pid != killed
    assert any("dropped" in record.getMessage() for record in caplog.records)  # it did reconnect
    stdout = [event for event in events if isinstance(event, Output) and event.stream == "stdout"]
    assert b"".join(event.data for event in stdout) == EXPECTED == final.stdout
    offsets = [event.offset for event in stdout]
    assert offsets == sorted(set(offsets))  # strictly increasing: nothing repeated
    ends = [event.offset + len(event.data) for event in stdout]
    assert offsets[1:] == ends[:-1]  # each chunk starts where the last ended: no gap
    states = [event.state for event in events if isinstance(event, Snapshot)]
    assert states[-1] is State.SUCCEEDED
    assert final.state is State.SUCCEEDED


def test_a_submit_retried_across_a_gateway_restart_creates_exactly_one_evaluation(
    mesh: Mesh,
) -> None:
    labels = {"restart": uuid.uuid4().hex[:12]}
    results: list[Evaluation] = []
    with Client(mesh.address, mesh.admin_key, retry=PATIENT) as client:
        kill_gateway(mesh)
        submitter = threading.Thread(
            target=lambda: results.append(client.run("print('after')", labels=labels))
        )
        submitter.start()  # its first attempts meet no gateway and are retried
        time.sleep(0.5)
        mesh.local.restart_service("gateway")
        submitter.join(90)
        assert results, "the submit did not get through after the restart"
        assert results[0].stdout == b"after\n"
        assert len(list(client.list(labels=labels))) == 1
