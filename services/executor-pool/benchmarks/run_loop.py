"""Latency and throughput of the run loop through the real mesh (NATS, storage, scheduler, bwrap).

    .venv/bin/python services/executor-pool/benchmarks/run_loop.py [--runs 20] [--jobs 100]
        [--slots 1,2,4]

Latency: ``print(1)`` submitted one at a time; submit call -> terminal RunEvent received, plus
the storage timestamps (create -> start -> end). Throughput: ``--jobs`` evaluations submitted in
one batch to an executor with N slots; first submit -> last terminal event. Needs root (bwrap).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from run_loop.harness import TENANT, TERMINAL, Driver, EventLog, Mesh

from evalmesh.scheduler.v1 import scheduler_service_pb2
from evalmesh.v1 import evaluation_pb2


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def _terminal(log: EventLog, evaluation_id: str) -> None:
    await log.wait_for(lambda: any(s in TERMINAL for s in log.states(evaluation_id)), 60)


async def latency(driver: Driver, runs: int) -> None:
    log = await driver.events()
    await driver.run("print(0)")  # warm up
    seen, stored = [], []
    for _ in range(runs):
        started = time.monotonic()
        evaluation_id = await driver.submit("print(1)")
        await _terminal(log, evaluation_id)
        seen.append(time.monotonic() - started)
        evaluation = await driver.get(evaluation_id)
        create, start, end = (
            t.ToNanoseconds() / 1e9
            for t in (evaluation.create_time, evaluation.start_time, evaluation.end_time)
        )
        stored.append((start - create, end - start))
    print(f"latency print(1), {runs} runs: submit -> terminal event")
    print(f"  median {_ms(statistics.median(seen))}, min {_ms(min(seen))}, max {_ms(max(seen))}")
    queued = statistics.median(q for q, _ in stored)
    running = statistics.median(r for _, r in stored)
    print(f"  median create->start {_ms(queued)}, start->end {_ms(running)}")


async def throughput(driver: Driver, jobs: int, slots: int) -> None:
    log = await driver.events()
    spec = evaluation_pb2.EvaluationSpec(code="print(1)", language="python")
    requests = [
        scheduler_service_pb2.SubmitEvaluationRequest(
            tenant=TENANT, request_id=uuid.uuid4().hex, spec=spec
        )
        for _ in range(jobs)
    ]
    started = time.monotonic()
    reply = await driver.scheduler.BatchSubmitEvaluations(
        scheduler_service_pb2.BatchSubmitEvaluationsRequest(requests=requests), timeout=60
    )
    for response in reply.responses:
        await _terminal(log, response.record.evaluation.id)
    took = time.monotonic() - started
    print(f"throughput, {slots} slots: {jobs} jobs in {took:.1f} s = {jobs / took:.1f} jobs/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--slots", default="1,2,4")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evalmesh-bench-") as root:
        for index, slots in enumerate(int(s) for s in options.slots.split(",")):
            mesh = Mesh(Path(root) / str(slots)).start()
            try:
                mesh.executor(
                    {"EVALMESH_EXECUTOR_SLOTS": str(slots), "EVALMESH_LOG_LEVEL": "WARNING"}
                )
                async with Driver(mesh) as driver:
                    if index == 0:
                        await latency(driver, options.runs)
                    await throughput(driver, options.jobs, slots)
            finally:
                mesh.stop()


if __name__ == "__main__":
    asyncio.run(main())
