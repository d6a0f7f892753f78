"""Real processes for the executor-pool tests and async clients to drive them.

``Mesh`` runs nats-server (JetStream, a temp store), the storage service on a SQLite file (on a
free port it keeps across a restart), the scheduler (which creates the JetStream topology) and
any number of executor-pool instances on port 0, each with its metrics on port 0 too, stopped
by its pid. ``Driver`` submits through the scheduler's real API, reads storage, listens to live
events and cancels, as the gateway would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc
import grpc.aio
import nats
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from sandbox_helpers import job_processes

from evalmesh.executor.v1 import executor_service_pb2_grpc, pool_pb2
from evalmesh.scheduler.v1 import scheduler_service_pb2, scheduler_service_pb2_grpc
from evalmesh.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from evalmesh.v1 import evaluation_pb2
from evalmesh_common.subjects import event_subject
from evalmesh_deploy.local.nats import start_nats
from evalmesh_deploy.local.processes import ManagedProcess, read_port_file
from evalmesh_testing.ports import free_port

__all__ = [
    "TENANT",
    "Driver",
    "EventLog",
    "Mesh",
    "Service",
    "job_processes",
    "marked_program",
]

TENANT = "tenant-e2e"
State = evaluation_pb2.Evaluation.State
TERMINAL = frozenset(
    {
        State.STATE_SUCCEEDED,
        State.STATE_FAILED,
        State.STATE_TIMED_OUT,
        State.STATE_MEMORY_LIMIT_EXCEEDED,
        State.STATE_OUTPUT_LIMIT_EXCEEDED,
        State.STATE_CANCELLED,
        State.STATE_ERROR,
    }
)
STORAGE_SERVICE = "evalmesh.storage.v1.StorageService"
SCHEDULER_SERVICE = "evalmesh.scheduler.v1.SchedulerService"
EXECUTOR_SERVICE = "evalmesh.executor.v1.ExecutorService"

# Fast loops for tests: probes, reconciler and reaper passes, short leases and heartbeats.
BASE_ENV = {
    "EVALMESH_LISTEN_ADDRESS": "127.0.0.1:0",
    "EVALMESH_PROBE_INTERVAL": "0.1",
    "EVALMESH_SHUTDOWN_GRACE": "2",
}
SCHEDULER_ENV = {
    "EVALMESH_RECONCILE_INTERVAL": "0.5",
    "EVALMESH_REAP_INTERVAL": "0.5",
    "EVALMESH_LEADER_TTL": "2",
}
EXECUTOR_ENV = {
    "EVALMESH_EXECUTOR_SLOTS": "2",
    "EVALMESH_STATUS_INTERVAL": "0.5",
    "EVALMESH_FETCH_RECHECK": "0.25",
    "EVALMESH_RETRY_BACKOFF_BASE": "0.2",
    "EVALMESH_RETRY_BACKOFF_CAP": "1",
    "EVALMESH_SHUTDOWN_HOOK_TIMEOUT": "15",
}


def _wait_serving(address: str, service: str, process: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            process.ensure_running()
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.05)
    raise TimeoutError(
        f"{service} at {address} not SERVING after {timeout:g}s:\n{process.log_tail()}"
    )


@dataclass
class Service:
    """One started service process and where it listens."""

    process: ManagedProcess
    address: str
    metrics_address: str = ""

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.process.stop(timeout=5)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; return the exit status."""
        return self.process.stop(timeout=timeout)


@dataclass
class Mesh:
    """nats-server, storage, the scheduler, and executors started on demand."""

    root: Path
    scheduler_env: Mapping[str, str] = field(default_factory=dict)
    # The sandbox backend's settings for every executor (bwrap unless they say otherwise).
    executor_env: Mapping[str, str] = field(default_factory=dict)
    nats_url: str = ""
    storage: Service | None = None
    scheduler: Service | None = None
    _processes: list[ManagedProcess] = field(default_factory=list)
    _count: int = 0

    def start(self) -> Self:
        """Start NATS, storage and the scheduler, each SERVING before the next starts."""
        process, self.nats_url = start_nats(self.root / "nats")
        self._processes.append(process)
        self.storage = self._start_storage(free_port())
        env = {**SCHEDULER_ENV, **self.scheduler_env}
        self.scheduler = self.service("evalmesh_scheduler", SCHEDULER_SERVICE, env)
        return self

    def _start_storage(self, port: int) -> Service:
        # A fixed port, so a restarted storage is found where its clients expect it.
        env = {
            "EVALMESH_DATABASE_URL": f"sqlite+aiosqlite:///{self.root / 'storage.db'}",
            "EVALMESH_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        }
        return self.service("evalmesh_storage", STORAGE_SERVICE, env)

    def restart_storage(self, down_for: float) -> None:
        """kill -9 the storage service, wait ``down_for`` seconds, start it on the same port."""
        assert self.storage is not None
        port = int(self.storage.address.rpartition(":")[2])
        self.storage.kill()
        time.sleep(down_for)
        self.storage = self._start_storage(port)

    def service(
        self, module: str, health: str, env: Mapping[str, str], *, wait: bool = True
    ) -> Service:
        """Start ``python -m module`` with the mesh's endpoints and ``env``."""
        self._count += 1
        name = f"{module}-{self._count}"
        port_file = self.root / f"{name}.port"
        metrics_port_file = self.root / f"{name}.metrics.port"
        full_env = {
            **os.environ,
            **BASE_ENV,
            "EVALMESH_NATS_URL": self.nats_url,
            "EVALMESH_PORT_FILE": str(port_file),
            "EVALMESH_METRICS_PORT": "0",
            "EVALMESH_METRICS_PORT_FILE": str(metrics_port_file),
            **({"EVALMESH_STORAGE_ADDRESS": self.storage.address} if self.storage else {}),
            **env,
        }
        process = ManagedProcess(
            name, [sys.executable, "-m", module], self.root / "logs" / f"{name}.log", full_env
        )
        process.start()
        self._processes.append(process)
        address = f"127.0.0.1:{read_port_file(port_file, process)}"
        metrics_address = f"127.0.0.1:{read_port_file(metrics_port_file, process)}"
        if wait:
            _wait_serving(address, health, process, timeout=30)
        return Service(process, address, metrics_address)

    def executor(self, env: Mapping[str, str] | None = None, *, wait: bool = True) -> Service:
        """Start one executor-pool instance (bwrap backend unless executor_env says otherwise)."""
        full = {
            "EVALMESH_SANDBOX_BACKEND": "bwrap",
            **EXECUTOR_ENV,
            **self.executor_env,
            **(env or {}),
        }
        return self.service("evalmesh_executor", EXECUTOR_SERVICE, full, wait=wait)

    def stop(self) -> None:
        """Stop everything, newest first."""
        for process in reversed(self._processes):
            with contextlib.suppress(Exception):
                process.stop(timeout=10)


class EventLog:
    """RunEvents of every evaluation, as watchers receive them from NATS, in arrival order."""

    def __init__(self) -> None:
        self.events: list[pool_pb2.RunEvent] = []
        self.subscription: Subscription | None = None
        self._changed = asyncio.Event()

    async def on_message(self, msg: Msg) -> None:
        """Subscription callback."""
        self.events.append(pool_pb2.RunEvent.FromString(msg.data))
        self._changed.set()

    def of(self, evaluation_id: str) -> list[pool_pb2.RunEvent]:
        """The events of one evaluation."""
        return [e for e in self.events if e.evaluation_id == evaluation_id]

    def output(
        self, evaluation_id: str, stream: evaluation_pb2.OutputStream.ValueType
    ) -> list[evaluation_pb2.OutputChunk]:
        """The output chunks of one stream of one evaluation."""
        return [
            e.output
            for e in self.of(evaluation_id)
            if e.HasField("output") and e.output.stream == stream
        ]

    def states(self, evaluation_id: str) -> list[State.ValueType]:
        """The state changes of one evaluation."""
        return [e.state for e in self.of(evaluation_id) if e.WhichOneof("event") == "state"]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``predicate()`` holds."""
        deadline = time.monotonic() + within
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.events)} events, condition never held")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


class Driver:
    """Async clients of a mesh: submit, read, watch, cancel, and executor control."""

    def __init__(self, mesh: Mesh) -> None:
        assert mesh.storage is not None
        assert mesh.scheduler is not None
        self.mesh = mesh
        self._storage_channel = grpc.aio.insecure_channel(mesh.storage.address)
        self._scheduler_channel = grpc.aio.insecure_channel(mesh.scheduler.address)
        self.storage = storage_service_pb2_grpc.StorageServiceStub(self._storage_channel)
        self.scheduler = scheduler_service_pb2_grpc.SchedulerServiceStub(self._scheduler_channel)
        self.nats: NatsClient | None = None
        self._executor_channels: list[grpc.aio.Channel] = []

    async def __aenter__(self) -> Self:
        self.nats = await nats.connect(self.mesh.nats_url)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.nats is not None:
            await self.nats.close()
        for channel in (self._storage_channel, self._scheduler_channel, *self._executor_channels):
            await channel.close(None)

    def executor_stub(
        self, executor: Service
    ) -> executor_service_pb2_grpc.ExecutorServiceAsyncStub:
        """A client of one executor's control API."""
        channel = grpc.aio.insecure_channel(executor.address)
        self._executor_channels.append(channel)
        return executor_service_pb2_grpc.ExecutorServiceStub(channel)

    async def submit(
        self,
        code: str,
        *,
        stdin: bytes = b"",
        priority: evaluation_pb2.Priority.ValueType = evaluation_pb2.PRIORITY_NORMAL,
        wall_timeout: float | None = None,
        memory_bytes: int | None = None,
        max_output_bytes: int | None = None,
        max_processes: int | None = None,
        runtime: str = "",
        tenant: str = TENANT,
    ) -> str:
        """Submit through the scheduler; return the evaluation id."""
        limits = evaluation_pb2.Limits()
        if wall_timeout is not None:
            limits.wall_timeout.FromNanoseconds(round(wall_timeout * 1e9))
        if memory_bytes is not None:
            limits.memory_bytes = memory_bytes
        if max_output_bytes is not None:
            limits.max_output_bytes = max_output_bytes
        if max_processes is not None:
            limits.max_processes = max_processes
        spec = evaluation_pb2.EvaluationSpec(
            code=code,
            stdin=stdin,
            language="python",
            runtime=runtime,
            priority=priority,
            limits=limits,
        )
        request = scheduler_service_pb2.SubmitEvaluationRequest(
            tenant=tenant, request_id=uuid.uuid4().hex, spec=spec
        )
        reply = await self.scheduler.SubmitEvaluation(request, timeout=10)
        return reply.record.evaluation.id

    async def get(self, evaluation_id: str) -> evaluation_pb2.Evaluation:
        """The evaluation, of any tenant, with its stored output (FULL view)."""
        request = storage_service_pb2.GetEvaluationRequest(
            id=evaluation_id, view=evaluation_pb2.EVALUATION_VIEW_FULL
        )
        return (await self.storage.GetEvaluation(request, timeout=10)).record.evaluation

    async def wait_state(
        self, evaluation_id: str, states: frozenset[State.ValueType], within: float = 30.0
    ) -> evaluation_pb2.Evaluation:
        """Poll storage until the evaluation is in one of ``states``."""
        deadline = time.monotonic() + within
        while True:
            evaluation = await self.get(evaluation_id)
            if evaluation.state in states:
                return evaluation
            if time.monotonic() > deadline:
                raise TimeoutError(f"{evaluation_id} still {State.Name(evaluation.state)}")
            await asyncio.sleep(0.02)

    async def wait_terminal(
        self, evaluation_id: str, within: float = 30.0
    ) -> evaluation_pb2.Evaluation:
        """Poll storage until the evaluation is terminal."""
        return await self.wait_state(evaluation_id, TERMINAL, within)

    async def run(
        self, code: str, within: float = 30.0, **options: object
    ) -> evaluation_pb2.Evaluation:
        """Submit and wait for the terminal evaluation."""
        evaluation_id = await self.submit(code, **options)  # type: ignore[arg-type]
        return await self.wait_terminal(evaluation_id, within)

    async def events(self) -> EventLog:
        """Start collecting the live events of every evaluation (before submitting)."""
        assert self.nats is not None
        log = EventLog()
        log.subscription = await self.nats.subscribe(event_subject("*"), cb=log.on_message)
        await self.nats.flush()
        return log

    async def wait_offered(self, runtime: str, within: float = 10.0) -> None:
        """Wait until the scheduler's view of the healthy executors includes ``runtime``: an
        executor is SERVING before its first heartbeat reaches the scheduler."""
        deadline = time.monotonic() + within
        request = scheduler_service_pb2.ListRuntimesRequest()
        while True:
            reply = await self.scheduler.ListRuntimes(request, timeout=5)
            if any(offered.name == runtime for offered in reply.runtimes):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no healthy executor offered {runtime!r} within {within} s")
            await asyncio.sleep(0.05)

    async def cancel(self, evaluation_id: str) -> None:
        """Cancel through the scheduler (storage records it, the executor is told)."""
        request = scheduler_service_pb2.CancelEvaluationRequest(
            tenant=TENANT, id=evaluation_id, reason="test"
        )
        await self.scheduler.CancelEvaluation(request, timeout=10)


def marked_program(marker: str, first: str, then: str) -> str:
    """A program that runs ``first``, then becomes a process whose command line holds
    ``marker`` and runs ``then`` (so a test can find exactly its own job's processes)."""
    return (
        f"{first}\n"
        "import os\n"
        f"os.execv('/usr/bin/python3', ['/usr/bin/python3', '-c', {then!r}, {marker!r}])\n"
    )


def two_process_job(marker: str) -> str:
    """A job of two marked processes (a lingering child, and the program itself, which prints
    ``started`` and, two seconds later, ``done``): killing it must take the whole tree."""
    sleeper = ["/usr/bin/python3", "-c", "import time; time.sleep(60)", marker]
    child = f"import subprocess; subprocess.Popen({sleeper!r})"
    then = "import time; print('started', flush=True); time.sleep(2); print('done')"
    return marked_program(marker, child, then)
