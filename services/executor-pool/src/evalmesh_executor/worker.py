"""One job's life on this executor: claim, run, stream, record, acknowledge.

    parse Job -> read the evaluation -> claim (fenced) -> RUNNING event -> heartbeat
      -> sandbox run (output live + batched) -> all output stored -> complete (fenced)
      -> terminal event -> ack

A delivery whose evaluation is gone, terminal, cancelled or claimed by another is acked and
dropped without running. One whose tenant is at its share goes to the back of the queue
(``share.send_to_back``). A user-caused outcome is recorded and acked: final, never retried. A
platform fault before the result is recorded gives the evaluation back (requeued in storage,
message nak'd with backoff from its delivery count), so another attempt runs it and the
consumer's max deliveries bound the retries; storage being away for the claim is waited out with
the message kept, not nak'd. A lost lease writes nothing at all.

With traces on (a ``tracer``), a delivery is one ``executor.job`` span (``spans``) holding
``executor.claim``, ``executor.sandbox`` (with ``sandbox.prepare`` and ``sandbox.run``),
``executor.output.flush`` per stored batch and ``executor.complete``, and the attempt's live
events carry the job span's ``traceparent`` in their NATS headers. With traces off, each of
them costs one comparison.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg

from evalmesh.executor.v1 import pool_pb2
from evalmesh.scheduler.v1 import job_pb2
from evalmesh.storage.v1 import record_pb2, storage_service_pb2
from evalmesh.v1 import evaluation_pb2
from evalmesh_common import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from evalmesh_common.backoff import backoff_delay
from evalmesh_common.server.tracing import span
from evalmesh_common.subjects import event_subject, job_hint_subject, job_priority
from evalmesh_executor.config import LimitDefaults, OutputConfig, PullConfig
from evalmesh_executor.delivery import ack, deliveries, nak, parse_job, touch
from evalmesh_executor.heartbeat import Heartbeat
from evalmesh_executor.limits import applied_limits, sandbox_limits
from evalmesh_executor.outcome import Verdict, verdict
from evalmesh_executor.output import OutputLostError, OutputSink, Publish
from evalmesh_executor.runs import RunHandle, RunRegistry, Stop
from evalmesh_executor.sandbox import SandboxError, SandboxLimits, SandboxRequest, SandboxResult
from evalmesh_executor.sandbox.core.backend import SandboxBackend
from evalmesh_executor.share import TenantShares
from evalmesh_executor.spans import event_headers, job_span, sandbox_phases
from evalmesh_executor.storage_client import STALE_ATTEMPT, StorageClient
from evalmesh_executor.timings import run_timings

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["JobRunner", "PublishEvent", "RunnerSettings"]

logger = logging.getLogger(__name__)

Record = record_pb2.EvaluationRecord
State = evaluation_pb2.Evaluation.State
DEFAULT_RUNTIME = "python"
TENANT_AT_LIMIT = "TENANT_AT_LIMIT"
SendBack = Callable[[Msg, str], Awaitable[bool]]


class PublishEvent(Protocol):
    """Publishes a live event on a core NATS subject (best effort), with ``headers`` if any."""

    def __call__(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class RunnerSettings:
    """The parts of the config one job needs."""

    lease: float
    limits: LimitDefaults
    output: OutputConfig
    pull: PullConfig


class JobRunner:
    """Runs deliveries of jobs; shared by every slot of the pool."""

    def __init__(
        self,
        store: StorageClient,
        sandbox: SandboxBackend,
        publish: PublishEvent,
        runs: RunRegistry,
        settings: RunnerSettings,
        shares: TenantShares,
        send_back: SendBack,
        before_ack: Callable[[], None] = lambda: None,
        finished: Callable[[Record], None] = lambda record: None,
        tracer: Tracer | None = None,
    ) -> None:
        self.store = store
        self.sandbox = sandbox
        self.publish = publish
        self.runs = runs
        self.settings = settings
        self.shares = shares
        self.send_back = send_back
        self.before_ack = before_ack
        self.finished = finished  # sees each recorded result (the run metrics)
        self.tracer = tracer  # None: traces are off
        self._hints: set[asyncio.Task[None]] = set()

    async def process(
        self, msg: Msg, ack_wait: float, sandbox_done: Callable[[], None] = lambda: None
    ) -> None:
        """Handle one delivery to the end; never raises (a bug gives the job back).

        ``sandbox_done`` is called once the job's sandbox is gone (or none will run), before
        its result is recorded.
        """
        try:
            job = parse_job(msg.data)
        except DecodeError as exc:
            logger.error("undecodable job on %s: %s", msg.subject, exc)
            await self.retry_later(msg)
            return
        with job_span(self.tracer, msg, job):
            await self._process(msg, job, ack_wait, sandbox_done)

    async def _process(
        self, msg: Msg, job: job_pb2.Job, ack_wait: float, sandbox_done: Callable[[], None]
    ) -> None:
        if (job.runtime or DEFAULT_RUNTIME) not in self.sandbox.runtimes:
            logger.info("runtime %r not offered here; passing the job on", job.runtime)
            await self.requeue(msg, self.settings.pull.pass_on_delay)
            return
        handle = self.runs.open(job.evaluation_id, job.tenant)
        if handle is None:  # a duplicate delivery of a job this instance already runs
            await ack(msg)
            return
        completed = False
        try:
            completed = await _Attempt(self, msg, job, handle, ack_wait, sandbox_done).run()
        except Exception:
            logger.exception("job failed unexpectedly", extra={"evaluation": job.evaluation_id})
            await self.give_back(msg, handle)
        finally:
            self.runs.close(handle, completed=completed)
            if handle.attempt:
                self.shares.ended(job.tenant, job.evaluation_id)

    async def retry_later(self, msg: Msg) -> None:
        """Nak with exponential backoff and jitter from the delivery count."""
        pull = self.settings.pull
        delivered = max(1, deliveries(msg))
        delay = backoff_delay(delivered, base=pull.backoff_base, cap=pull.backoff_cap)
        await self.requeue(msg, delay)

    async def requeue(self, msg: Msg, delay: float) -> None:
        """Nak ``msg`` for delivery again after ``delay`` seconds, and tell idle executors (this
        one too) once it is deliverable: a redelivery is no publication, so without the hint
        they would find it only at their recheck."""
        await nak(msg, delay)
        priority = job_priority(msg.subject)
        if priority is None:
            return
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._spawn_hint, priority)
        else:
            await self._hint(priority)

    def _spawn_hint(self, priority: str) -> None:
        task = asyncio.ensure_future(self._hint(priority))
        self._hints.add(task)
        task.add_done_callback(self._hints.discard)

    async def _hint(self, priority: str) -> None:
        await self.publish(job_hint_subject(priority), b"1", None)  # best effort, as events

    async def give_back(self, msg: Msg, handle: RunHandle, *, at_once: bool = False) -> None:
        """Return a claimed evaluation to the queue and the message to the consumer."""
        if handle.attempt:
            why = handle.reason or "the executor gave the evaluation back"
            await self.store.release(handle.evaluation_id, handle.attempt, why)
        if at_once:
            await self.requeue(msg, 0)
        else:
            await self.retry_later(msg)

    async def event(
        self, handle: RunHandle, record: Record, headers: dict[str, str] | None = None
    ) -> None:
        """Publish a state change, with the evaluation as stored, for watchers (best effort);
        ``headers`` carry the trace context while traces are on."""
        evaluation = evaluation_pb2.Evaluation()
        evaluation.CopyFrom(record.evaluation)
        _basic_view(evaluation)
        event = pool_pb2.RunEvent(
            evaluation_id=handle.evaluation_id,
            attempt=handle.attempt,
            state=evaluation.state,
            evaluation=evaluation,
        )
        await self.publish(event_subject(handle.evaluation_id), event.SerializeToString(), headers)


class _Attempt:
    """One delivery's attempt at one evaluation."""

    def __init__(
        self,
        runner: JobRunner,
        msg: Msg,
        job: job_pb2.Job,
        handle: RunHandle,
        ack_wait: float,
        sandbox_done: Callable[[], None],
    ) -> None:
        self.runner = runner
        self.msg = msg
        self.job = job
        self.handle = handle
        self.ack_wait = ack_wait
        self.sandbox_done = sandbox_done
        self.limits = SandboxLimits()
        self._marks = {"received": time.monotonic()}
        self.claimed_at: float | None = None  # when the claim's answer arrived (monotonic)
        # The job span's trace context for the live events; None (no headers) with traces off.
        self.headers = event_headers(runner.tracer)

    def _span(self, name: str) -> AbstractContextManager[Span | None]:
        return span(self.runner.tracer, name)

    def _mark(self, name: str) -> None:
        self._marks[name] = time.monotonic()

    def _timings(self) -> dict[str, int]:
        """Milliseconds between consecutive marks, named by the later mark."""
        names = list(self._marks)
        return {
            f"{later}_ms": round((self._marks[later] - self._marks[earlier]) * 1000)
            for earlier, later in itertools.pairwise(names)
        }

    async def run(self) -> bool:
        """Claim and run; True once a result is recorded and the message acked."""
        shares, tenant = self.runner.shares, self.job.tenant
        if shares.at_limit(tenant):
            await self.runner.send_back(self.msg, self.job.evaluation_id)
            return False
        try:
            with self._span("executor.claim"):
                record = await self._claim_through_outages()
        except ResourceExhausted as exc:
            if exc.reason == TENANT_AT_LIMIT:
                logger.info("tenant at its share; job sent back: %s", exc, extra=self._extra())
                shares.refused(tenant)
                await self.runner.send_back(self.msg, self.job.evaluation_id)
            else:
                await self.runner.retry_later(self.msg)
            return False
        except DomainError as exc:  # storage unreachable within the retry budget
            logger.warning("could not claim: %s", exc, extra=self._extra())
            await self.runner.retry_later(self.msg)
            return False
        if record is None:
            await ack(self.msg)
            return False
        if self.handle.stopped is Stop.GIVE_BACK:  # draining began while we claimed
            await self.runner.give_back(self.msg, self.handle, at_once=True)
            return False
        return await self._run(record)

    async def _claim_through_outages(self) -> Record | None:
        """Claim; while storage is away, keep the message in progress and try again for up to
        ack_wait: a nak would spend one of the job's deliveries on an outage (a restart, a full
        disk), and five of them go in seconds."""
        give_up = time.monotonic() + self.ack_wait
        failures = 0
        while True:
            try:
                return await self._claim()
            except (Unavailable, DeadlineExceeded) as exc:
                failures += 1
                if time.monotonic() >= give_up or self.handle.stopped is not None:
                    raise
                logger.info("storage away; keeping the job to claim: %s", exc, extra=self._extra())
            await asyncio.sleep(backoff_delay(failures, base=0.2, cap=2.0))
            await touch(self.msg, patience=1.0)

    async def _claim(self) -> Record | None:
        store, evaluation_id = self.runner.store, self.job.evaluation_id
        try:
            limits = await self._requested_limits()
            if limits is None:
                return None
            self.limits = sandbox_limits(limits, self.runner.settings.limits)
            record = await store.claim(
                evaluation_id,
                self.runner.settings.lease,
                self._digest(),
                applied_limits(self.limits),
                self.runner.shares.limits(),
            )
        except (FailedPrecondition, NotFound) as exc:
            logger.info("dropping a job whose claim failed: %s", exc, extra=self._extra())
            return None
        self.claimed_at = time.monotonic()
        handle = self.handle
        handle.attempt = record.evaluation.attempt
        handle.tenant = record.tenant
        handle.start_time = datetime.now(UTC)
        return record

    async def _requested_limits(self) -> evaluation_pb2.Limits | None:
        """The limits the spec asks for: from the job, or (jobs of earlier schedulers) from a
        read of the evaluation, which also drops a job whose evaluation is no longer queued."""
        if self.job.HasField("limits"):
            return self.job.limits
        current = await self.runner.store.get(self.job.evaluation_id)
        if current.evaluation.state != State.STATE_QUEUED:
            logger.info("dropping a job that is not queued", extra=self._extra(current))
            return None
        return current.evaluation.spec.limits

    def _digest(self) -> str:
        return self.runner.sandbox.runtimes.get(self.job.runtime or DEFAULT_RUNTIME, "")

    async def _run(self, record: Record) -> bool:
        runner, handle = self.runner, self.handle
        settings = runner.settings
        await runner.event(handle, record, self.headers)
        self._mark("claimed")
        logger.info("running", extra={**self._extra(), **self._timings()})
        heartbeat = Heartbeat(
            handle,
            runner.store.renew,
            self.msg.in_progress,
            lease=settings.lease,
            ack_wait=self.ack_wait,
        )
        heartbeat.start()
        try:
            return await self._sandbox_and_record(record)
        finally:
            await heartbeat.stop()

    async def _sandbox_and_record(self, record: Record) -> bool:
        runner, handle = self.runner, self.handle
        sink = OutputSink(
            handle.evaluation_id,
            handle.attempt,
            self._publish_live(),
            self._append,
            runner.settings.output,
        )
        with self._span("executor.sandbox") as current:
            began = time.monotonic()
            result = await self._sandbox(record, sink)
            if current is not None and result is not None:
                sandbox_phases(self.runner.tracer, began, result)
        runner.shares.sandbox_gone(self.job.tenant, handle.evaluation_id)
        self.sandbox_done()
        self._mark("ran")
        found = verdict(result) if result is not None else None
        if found is None or not self._recordable(found):
            await sink.abort()
            await self._abandon(result)
            return False
        try:
            rest = await sink.close(hand_over=self.runner.settings.output.with_result_bytes)
            self._mark("stored")
        except OutputLostError as exc:
            logger.warning("output not stored: %s", exc, extra=self._extra())
            await self._abandon(result)
            return False
        stored_at = None if rest else self._marks["stored"]
        timings = run_timings(self.claimed_at, result, stored_at) if result else None
        return await self._record(found, rest, timings)

    def _publish_live(self) -> Publish:
        """The sink's publish: the runner's own, or (traces on) one that adds the headers."""
        publish, headers = self.runner.publish, self.headers
        if headers is None:
            return publish
        return lambda subject, data: publish(subject, data, headers)

    def _recordable(self, found: Verdict) -> bool:
        """False when this attempt must not write: its lease is lost, or it was stopped
        to be given back (a kill that was not the user's cancel is no result)."""
        if self.handle.stopped is Stop.LOST:
            return False
        if found.state == State.STATE_CANCELLED and self.handle.stopped is not Stop.CANCEL:
            self.handle.stopped = self.handle.stopped or Stop.GIVE_BACK
            return False
        return True

    async def _sandbox(self, record: Record, sink: OutputSink) -> SandboxResult | None:
        spec = record.evaluation.spec
        request = SandboxRequest(
            code=spec.code.encode(),
            stdin=spec.stdin,
            runtime=spec.runtime or DEFAULT_RUNTIME,
            limits=self.limits,
            evaluation_id=self.handle.evaluation_id,
        )
        try:
            return await self.runner.sandbox.run(request, sink.add, cancel=self.handle.cancel)
        except SandboxError as exc:
            logger.error("sandbox failed: %s", exc, extra=self._extra())
            self.handle.reason = f"sandbox failed: {exc}"
            return None

    async def _append(self, chunks: list[evaluation_pb2.OutputChunk]) -> None:
        try:
            with self._span("executor.output.flush") as current:
                if current is not None:
                    current.set_attribute("evalmesh.chunks", len(chunks))
                    current.set_attribute("evalmesh.bytes", sum(len(c.data) for c in chunks))
                await self.runner.store.append(
                    self.handle.evaluation_id, self.handle.attempt, chunks
                )
        except FailedPrecondition as exc:
            if exc.reason == STALE_ATTEMPT:
                self.handle.stop(Stop.LOST, str(exc))
            raise

    async def _abandon(self, result: SandboxResult | None) -> None:
        """No result will be recorded by this attempt: give the job back or let it go."""
        handle, msg = self.handle, self.msg
        if handle.stopped is Stop.LOST:
            logger.warning("lease lost; result dropped unwritten", extra=self._extra())
            await self.runner.retry_later(msg)
            return
        if handle.stopped is Stop.GIVE_BACK:
            logger.info("giving the evaluation back", extra=self._extra())
            await self.runner.give_back(msg, handle, at_once=True)
            return
        if result is not None and not handle.reason:
            handle.reason = f"platform error: {result.detail}"
        logger.warning("platform fault; giving back: %s", handle.reason, extra=self._extra())
        await self.runner.give_back(msg, handle)

    async def _record(
        self,
        found: Verdict,
        rest: list[evaluation_pb2.OutputChunk],
        timings: storage_service_pb2.RunTimings | None,
    ) -> bool:
        runner, handle = self.runner, self.handle
        try:
            with self._span("executor.complete"):
                final = await runner.store.complete(
                    handle.evaluation_id, handle.attempt, found.state, found.result, rest, timings
                )
        except FailedPrecondition as exc:
            handle.stop(Stop.LOST, str(exc))
            await self._abandon(None)
            return False
        except DomainError as exc:
            logger.error("could not record the result: %s", exc, extra=self._extra())
            await runner.retry_later(self.msg)
            return False
        self._mark("completed")
        state = final.evaluation.state
        await runner.event(handle, final, self.headers)
        extra = {**self._extra(), **self._timings(), "state": State.Name(state)}
        logger.info("finished %s", State.Name(state), extra=extra)
        runner.finished(final)
        runner.before_ack()
        await ack(self.msg)
        return True

    def _extra(self, record: Record | None = None) -> dict[str, object]:
        extra: dict[str, object] = {
            "evaluation": self.job.evaluation_id,
            "attempt": self.handle.attempt,
            "deliveries": deliveries(self.msg),
        }
        if record is not None:
            extra["state"] = State.Name(record.evaluation.state)
        return extra


def _basic_view(evaluation: evaluation_pb2.Evaluation) -> None:
    """Drop what the BASIC view leaves out: code, stdin and output bytes."""
    evaluation.spec.ClearField("code")
    evaluation.spec.ClearField("stdin")
    evaluation.result.ClearField("stdout")
    evaluation.result.ClearField("stderr")
    if evaluation.result.ByteSize() == 0:
        evaluation.ClearField("result")
