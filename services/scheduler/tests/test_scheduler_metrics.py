"""The scheduler's /metrics, scraped over loopback from the real process, shows the backlog."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc.aio
from scheduler_test_helpers import Mesh, start_scheduler, submit_request

from evalmesh.v1 import evaluation_pb2
from evalmesh_common.server.metrics import scrape
from evalmesh_deploy.local.processes import read_port_file

Channels = Callable[[str], grpc.aio.Channel]
BACKLOG = {
    "high": (evaluation_pb2.PRIORITY_HIGH, 3),
    "normal": (evaluation_pb2.PRIORITY_NORMAL, 2),
    "low": (evaluation_pb2.PRIORITY_LOW, 1),
}


async def test_queue_depth_per_priority_matches_a_backlog_no_executor_takes(
    mesh: Mesh, channels: Channels, tmp_path: Path
) -> None:
    metrics_file = tmp_path / "scheduler.metrics.port"
    process, scheduler = await start_scheduler(
        mesh, channels, EVALMESH_METRICS_PORT="0", EVALMESH_METRICS_PORT_FILE=str(metrics_file)
    )
    address = f"127.0.0.1:{read_port_file(metrics_file, process)}"
    for priority, count in BACKLOG.values():
        for _ in range(count):
            request = submit_request(uuid.uuid4().hex, priority=priority)
            await scheduler.SubmitEvaluation(request, timeout=10)

    metrics = await asyncio.to_thread(scrape, address)

    for name, (_, count) in BACKLOG.items():
        assert metrics[f'evalmesh_scheduler_queue_depth{{priority="{name}"}}'] == count
        wait = metrics[f'evalmesh_scheduler_queue_oldest_wait_seconds{{priority="{name}"}}']
        assert 0 <= wait < 60
    assert metrics["evalmesh_scheduler_running"] == 0
    assert metrics["evalmesh_scheduler_dead_letters"] == 0
