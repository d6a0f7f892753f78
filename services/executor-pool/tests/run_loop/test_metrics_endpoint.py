"""The executor's /metrics, scraped over loopback from the real process: its slots and health
once its self-check passed, and its finished-runs counter after a run."""

from __future__ import annotations

import asyncio
import time

from evalmesh.v1 import evaluation_pb2
from evalmesh_common.server.metrics import scrape

from .harness import TENANT, Driver, Service

COMPLETED = 'evalmesh_executor_runs_finished_total{outcome="completed"}'


async def _scrape(service: Service) -> dict[str, float]:
    return await asyncio.to_thread(scrape, service.metrics_address)


async def test_the_executor_exposes_its_slots_and_healthy_once_its_self_check_passed(
    executor: Service,
) -> None:
    metrics = await _scrape(executor)  # the fixture waited for SERVING: the self-check passed

    assert metrics["evalmesh_executor_slots"] == 2
    assert metrics["evalmesh_executor_healthy"] == 1
    assert metrics["evalmesh_executor_draining"] == 0
    assert metrics["evalmesh_executor_self_check_escapes"] == 0
    assert not [name for name in metrics if name.startswith("evalmesh_executor_unhealthy_info")]
    info = [name for name in metrics if name.startswith("evalmesh_executor_info{")]
    assert len(info) == 1
    assert 'backend="bwrap"' in info[0]


async def test_a_finished_run_increments_the_completed_runs_counter(
    driver: Driver, executor: Service
) -> None:
    before = (await _scrape(executor))[COMPLETED]

    evaluation = await driver.run("print('counted')")

    assert evaluation.state == evaluation_pb2.Evaluation.STATE_SUCCEEDED
    # The run is closed just after the ack, a moment after storage shows the result.
    deadline = time.monotonic() + 5
    metrics = await _scrape(executor)
    while metrics[COMPLETED] == before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        metrics = await _scrape(executor)
    assert metrics[COMPLETED] == before + 1
    assert metrics["evalmesh_executor_running"] == 0


async def test_a_recorded_result_is_observed_by_runtime_outcome_and_tenant(
    driver: Driver, executor: Service
) -> None:
    evaluation = await driver.run("import sys, time\ntime.sleep(0.3)\nsys.exit(3)")
    assert evaluation.state == evaluation_pb2.Evaluation.STATE_FAILED

    labels = 'outcome="failed",runtime="python"'
    runs = f"evalmesh_executor_run_duration_seconds_count{{{labels}}}"
    deadline = time.monotonic() + 5
    metrics = await _scrape(executor)
    while not metrics.get(runs) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        metrics = await _scrape(executor)
    assert metrics[runs] >= 1
    assert metrics[f"evalmesh_executor_queue_wait_seconds_count{{{labels}}}"] >= 1
    # The 0.3 s the program slept is in the run-duration histogram, not below its 0.25 s bucket.
    assert metrics[f'evalmesh_executor_run_duration_seconds_bucket{{le="0.25",{labels}}}'] == 0
    assert metrics[f"evalmesh_executor_run_duration_seconds_sum{{{labels}}}"] >= 0.3
    tenant = f'evalmesh_executor_tenant_runs_total{{outcome="failed",tenant="{TENANT}"}}'
    assert metrics[tenant] >= 1
    assert metrics[f'evalmesh_executor_tenant_run_seconds_total{{tenant="{TENANT}"}}'] >= 0.3
