"""Helpers for the scheduler's tests: the mesh of real processes, request builders, polling."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import grpc.aio
import pytest
from google.protobuf import duration_pb2
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from evalmesh.scheduler.v1 import scheduler_service_pb2 as spb
from evalmesh.scheduler.v1 import scheduler_service_pb2_grpc
from evalmesh.storage.v1 import record_pb2, storage_service_pb2, storage_service_pb2_grpc
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.server import wait_for_serving
from evalmesh_common.subjects import JOBS_STREAM, job_message_subject, priority_name
from evalmesh_deploy.local.processes import ManagedProcess
from evalmesh_testing.ports import free_port
from evalmesh_testing.servers import start_server

SCHEDULER = "evalmesh_scheduler"
STORAGE = "evalmesh_storage"
# Fast loops so a test sees reconciling, reaping and failover in well under a second or two.
FAST = {
    "EVALMESH_PROBE_INTERVAL": "0.2",
    "EVALMESH_RECONCILE_INTERVAL": "0.2",
    "EVALMESH_REAP_INTERVAL": "0.2",
    "EVALMESH_LEADER_TTL": "1.5",
    "EVALMESH_TOPOLOGY_CHECK_INTERVAL": "1",
    "EVALMESH_SHUTDOWN_GRACE": "2",
}


def nats_config(store: Path, port: int) -> str:
    """A JetStream server fsyncing every write, so a killed server loses no acknowledged job."""
    return (
        f"host: 127.0.0.1\nport: {port}\n"
        f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: always\n}}\n'
    )


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Mesh:
    """NATS, storage and any number of schedulers, all stopped at the end."""

    root: Path
    nats_port: int = field(default_factory=free_port)
    nats_process: ManagedProcess | None = None
    storage_address: str = ""
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    def start_nats(self) -> None:
        """Start nats-server on the mesh's port and store (again, after a stop)."""
        state = self.root / "nats"
        (state / "jetstream").mkdir(parents=True, exist_ok=True)
        config = state / "nats.conf"
        config.write_text(nats_config(state / "jetstream", self.nats_port))
        argv = [str(Path(sys.executable).parent / "nats-server"), "-c", str(config)]
        process = ManagedProcess("nats-server", argv, state / "nats.log")
        process.start()
        self.nats_process = process
        deadline = time.monotonic() + 20
        while not _accepts(self.nats_port):
            process.ensure_running()
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.02)

    def stop_nats(self, *, kill: bool = False) -> None:
        assert self.nats_process is not None
        if kill:
            self.nats_process.send_signal(9)
        self.nats_process.stop()

    def start_storage(self) -> None:
        env = {"EVALMESH_DATABASE_URL": f"sqlite+aiosqlite:///{self.root / 'evalmesh.db'}"}
        _, self.storage_address = self.start(STORAGE, env)

    def start(self, module: str, env: Mapping[str, str]) -> tuple[ManagedProcess, str]:
        name = f"{module}-{len(self.processes)}"
        full_env = {"EVALMESH_LOG_LEVEL": "INFO", **FAST, **env}
        process, address = start_server(module, full_env, self.root, name)
        self.processes.append(process)
        return process, address

    def scheduler_env(self, **overrides: str) -> dict[str, str]:
        return {
            "EVALMESH_NATS_URL": self.nats_url,
            "EVALMESH_STORAGE_ADDRESS": self.storage_address,
            **overrides,
        }

    async def start_scheduler(self, **env: str) -> tuple[ManagedProcess, str]:
        """Start a scheduler and wait until it reports SERVING (topology ready)."""
        process, address = self.start(SCHEDULER, self.scheduler_env(**env))
        await wait_for_serving(address, timeout=20)
        return process, address

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        if self.nats_process is not None:
            self.nats_process.stop()


if TYPE_CHECKING:  # the async stub types exist only in the generated .pyi files
    SchedulerStub: TypeAlias = scheduler_service_pb2_grpc.SchedulerServiceAsyncStub
    StorageStub: TypeAlias = storage_service_pb2_grpc.StorageServiceAsyncStub
else:
    SchedulerStub = StorageStub = object


def scheduler_stub(channel: grpc.aio.Channel) -> SchedulerStub:
    return scheduler_service_pb2_grpc.SchedulerServiceStub(channel)


def spec(
    code: str = "print('hi')",
    priority: evaluation_pb2.Priority.ValueType = evaluation_pb2.PRIORITY_UNSPECIFIED,
) -> evaluation_pb2.EvaluationSpec:
    return evaluation_pb2.EvaluationSpec(code=code, language="python", priority=priority)


def submit_request(
    request_id: str,
    tenant: str = "tenant-a",
    priority: evaluation_pb2.Priority.ValueType = evaluation_pb2.PRIORITY_UNSPECIFIED,
) -> spb.SubmitEvaluationRequest:
    return spb.SubmitEvaluationRequest(
        tenant=tenant, request_id=request_id, spec=spec(priority=priority)
    )


async def eventually(
    condition: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition"
) -> None:
    """Poll a condition held by another process until it is true, or fail the test."""
    try:
        async with asyncio.timeout(within):
            # Polling: the state lives in other processes, with no event to await.
            while not await condition():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"{what} did not happen within {within:g} s")


async def start_scheduler(
    mesh: Mesh, open_channel: Callable[[str], grpc.aio.Channel], **env: str
) -> tuple[ManagedProcess, SchedulerStub]:
    """Start a scheduler process, wait until it serves, and return it with a client."""
    process, address = await mesh.start_scheduler(**env)
    return process, scheduler_stub(open_channel(address))


def log_text(process: ManagedProcess) -> str:
    """Everything a process logged so far."""
    return process.log_path.read_text(errors="replace")


async def job_count(js: JetStreamContext) -> int:
    """Jobs in the work queue now."""
    return int((await js.stream_info(JOBS_STREAM)).state.messages)


async def queued_job(
    js: JetStreamContext, record: record_pb2.EvaluationRecord
) -> api.RawStreamMsg | None:
    """The evaluation's job in the work queue, or None."""
    evaluation = record.evaluation
    subject = job_message_subject(priority_name(evaluation.spec.priority), evaluation.id)
    try:
        return await js.get_last_msg(JOBS_STREAM, subject)
    except NotFoundError:
        return None


async def get_record(storage: StorageStub, evaluation_id: str) -> record_pb2.EvaluationRecord:
    """Read an evaluation straight from storage."""
    response = await storage.GetEvaluation(
        storage_service_pb2.GetEvaluationRequest(id=evaluation_id), timeout=5
    )
    return response.record


async def claim(
    storage: StorageStub, evaluation_id: str, lease: float = 30.0, executor: str = "exec-test"
) -> record_pb2.EvaluationRecord:
    """Claim an evaluation as an executor would, with a lease of ``lease`` seconds."""
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(lease * 1e9))
    request = storage_service_pb2.ClaimEvaluationRequest(
        id=evaluation_id, executor_id=executor, lease_duration=duration
    )
    return (await storage.ClaimEvaluation(request, timeout=5)).record


async def complete(
    storage: StorageStub,
    record: record_pb2.EvaluationRecord,
    state: evaluation_pb2.Evaluation.State.ValueType = evaluation_pb2.Evaluation.STATE_SUCCEEDED,
) -> record_pb2.EvaluationRecord:
    """Record a user-visible result for the attempt that holds the evaluation."""
    result = evaluation_pb2.EvaluationResult(
        cause=evaluation_pb2.TERMINATION_CAUSE_EXITED,
        fault=evaluation_pb2.FAULT_NONE,
        exit_code=0,
    )
    request = storage_service_pb2.CompleteEvaluationRequest(
        id=record.evaluation.id, attempt=record.evaluation.attempt, state=state, result=result
    )
    return (await storage.CompleteEvaluation(request, timeout=5)).record
