"""The asyncio client: the same API as :class:`~evalmesh.client.Client`, over ``grpc.aio``."""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from evalmesh.client import _admin as admin
from evalmesh.client._batch import BatchPlan
from evalmesh.client._channel import ChannelOption, credentials, metadata
from evalmesh.client._channel import channel_options as _channel_options
from evalmesh.client._cluster import (
    ApiKey,
    CreatedApiKey,
    DeadLetter,
    Executor,
    PurgeResult,
    QueueActivity,
    QueueStats,
    Role,
    Runtime,
)
from evalmesh.client._errors import EvalmeshError, error_from_rpc
from evalmesh.client._models import Evaluation, Priority, State, Stream
from evalmesh.client._requests import (
    BatchProgress,
    Spec,
    create_request,
    list_request,
    run_request,
)
from evalmesh.client._retry import CallRetries, RetryPolicy
from evalmesh.client._target import resolve_target
from evalmesh.client._units import Duration, Size
from evalmesh.client._watch import Output, Transcript, WatchCursor, WatchEvent, WatchGapError
from evalmesh.v1 import (
    api_key_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    evaluation_pb2,
    evaluation_service_pb2,
    evaluation_service_pb2_grpc,
)

__all__ = ["AsyncClient"]

logger = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")
_svc = evaluation_service_pb2
OutputCallback = Callable[[Output], Awaitable[None] | None]


class AsyncClient:
    """An asyncio evalmesh client; see :class:`~evalmesh.client.Client` for the arguments.

    Use it in one event loop, and ``await client.close()`` (or ``async with``) when done.
    """

    def __init__(
        self,
        address: str | None = None,
        api_key: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | str | os.PathLike[str] | None = None,
        channel_options: Sequence[ChannelOption] = (),
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        watch_timeout: float = 600.0,
    ) -> None:
        target = resolve_target(address, api_key)
        self.address = target.address
        self.timeout = timeout
        self.watch_timeout = watch_timeout
        self.retry = retry or RetryPolicy()
        self._metadata = metadata(target.api_key)
        options = _channel_options(channel_options)
        if tls or root_certificates is not None:
            creds = credentials(root_certificates)
            self._channel = grpc.aio.secure_channel(target.address, creds, options)
        else:
            self._channel = grpc.aio.insecure_channel(target.address, options)
        self._evaluations = evaluation_service_pb2_grpc.EvaluationServiceStub(self._channel)
        self._cluster = cluster_service_pb2_grpc.ClusterServiceStub(self._channel)
        self._keys = api_key_service_pb2_grpc.ApiKeyServiceStub(self._channel)

    async def close(self) -> None:
        """Close the channel; calls in flight fail with CANCELLED."""
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # Evaluations

    async def run(
        self,
        code: str,
        *,
        stdin: bytes = b"",
        runtime: str | None = None,
        priority: Priority | str | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 (the program's limit, not the call's)
        memory: Size | None = None,
        max_processes: int | None = None,
        max_output: Size | None = None,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> Evaluation:
        """Submit ``code``, wait for it to end, and return it with its full output.

        ``on_output`` (a function or a coroutine function) sees each piece of output.
        """
        transcript = Transcript()
        async for event in self.stream(
            code,
            stdin=stdin,
            runtime=runtime,
            priority=priority,
            timeout=timeout,
            memory=memory,
            max_processes=max_processes,
            max_output=max_output,
            labels=labels,
            request_id=request_id,
        ):
            transcript.add(event)
            if on_output is not None and isinstance(event, Output):
                result = on_output(event)
                if result is not None:
                    await result
        # What the stream showed is the whole evaluation unless some output arrived elsewhere.
        return transcript.full(code, stdin) or await self.get(transcript.evaluation_id)

    async def stream(
        self,
        code: str,
        *,
        stdin: bytes = b"",
        runtime: str | None = None,
        priority: Priority | str | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 (the program's limit, not the call's)
        memory: Size | None = None,
        max_processes: int | None = None,
        max_output: Size | None = None,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Submit ``code`` and iterate over its snapshots and output until its terminal snapshot,
        as :meth:`watch` does; the first snapshot is the queued evaluation, with its id.

        One RunEvaluation stream queues and follows. If it fails before its first event,
        CreateEvaluation with the same request_id (idempotent, retried) and a watch take over;
        if it drops after, a watch from the offsets received. Retries never duplicate.
        """
        spec = Spec(
            code=code,
            stdin=stdin,
            runtime=runtime,
            priority=priority,
            timeout=timeout,
            memory=memory,
            max_processes=max_processes,
            max_output=max_output,
            labels=labels,
            request_id=request_id,
        )
        create = create_request(spec)
        call = self._evaluations.RunEvaluation(
            run_request(create), metadata=self._metadata, timeout=self.watch_timeout
        )
        cursor: WatchCursor | None = None
        try:
            async for response in call:
                if cursor is None:  # the first event: the queued evaluation
                    cursor = WatchCursor(response.evaluation.id)
                event = cursor.accept(response)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as exc:
            logger.info("run stream ended early (%s); going on with a watch", error_from_rpc(exc))
        except WatchGapError as exc:
            logger.warning("run stream: %s; going on with a watch", exc)
        finally:
            call.cancel()
        if cursor is None:
            created = await self._call(self._evaluations.CreateEvaluation, create)
            cursor = WatchCursor(created.evaluation.id)
        if not cursor.finished():
            stdout, stderr = cursor.offsets[Stream.STDOUT], cursor.offsets[Stream.STDERR]
            async for event in self.watch(
                cursor.evaluation_id, stdout_offset=stdout, stderr_offset=stderr
            ):
                yield event

    async def submit(
        self,
        code: str,
        *,
        stdin: bytes = b"",
        runtime: str | None = None,
        priority: Priority | str | None = None,
        timeout: Duration | None = None,  # noqa: ASYNC109 (the program's limit, not the call's)
        memory: Size | None = None,
        max_processes: int | None = None,
        max_output: Size | None = None,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> Evaluation:
        """Queue ``code`` and return the new evaluation without waiting; retries are safe."""
        spec = Spec(
            code=code,
            stdin=stdin,
            runtime=runtime,
            priority=priority,
            timeout=timeout,
            memory=memory,
            max_processes=max_processes,
            max_output=max_output,
            labels=labels,
            request_id=request_id,
        )
        reply = await self._call(self._evaluations.CreateEvaluation, create_request(spec))
        return Evaluation.from_proto(reply.evaluation)

    async def wait(
        self, evaluation_id: str, *, on_output: OutputCallback | None = None
    ) -> Evaluation:
        """Follow an evaluation until it ends; return it with its full output."""
        async for event in self.watch(evaluation_id):
            if on_output is not None and isinstance(event, Output):
                result = on_output(event)
                if result is not None:
                    await result
        return await self.get(evaluation_id)

    async def get(self, evaluation_id: str, *, full: bool = True) -> Evaluation:
        """Read one evaluation; ``full`` includes its code and output bytes."""
        view = evaluation_pb2.EVALUATION_VIEW_FULL if full else evaluation_pb2.EVALUATION_VIEW_BASIC
        request = _svc.GetEvaluationRequest(id=evaluation_id, view=view)
        reply = await self._call(self._evaluations.GetEvaluation, request)
        return Evaluation.from_proto(reply.evaluation)

    async def list(
        self,
        *,
        state: State | str | Iterable[State | str] | None = None,
        priority: Priority | str | Iterable[Priority | str] | None = None,
        labels: Mapping[str, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 100,
        full: bool = False,
    ) -> AsyncIterator[Evaluation]:
        """Iterate over this tenant's evaluations, newest first, fetching pages as needed."""
        request = list_request(
            state=state,
            priority=priority,
            labels=labels,
            created_after=created_after,
            created_before=created_before,
            page_size=page_size,
            full=full,
        )
        while True:
            reply = await self._call(self._evaluations.ListEvaluations, request)
            for item in reply.evaluations:
                yield Evaluation.from_proto(item)
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    async def cancel(self, evaluation_id: str, reason: str = "") -> Evaluation:
        """Cancel in any state: queued ends at once, running within a second. Idempotent."""
        request = _svc.CancelEvaluationRequest(id=evaluation_id, reason=reason)
        reply = await self._call(self._evaluations.CancelEvaluation, request)
        return Evaluation.from_proto(reply.evaluation)

    async def watch(
        self, evaluation_id: str, *, stdout_offset: int = 0, stderr_offset: int = 0
    ) -> AsyncIterator[WatchEvent]:
        """Iterate over snapshots and output until the terminal snapshot, reopening a dropped
        stream from the last byte received (no gap, no duplicate)."""
        cursor = WatchCursor(evaluation_id, stdout_offset, stderr_offset)
        failures = 0
        while not cursor.finished():
            error: EvalmeshError | None = None
            cause: BaseException | None = None
            call = self._evaluations.WatchEvaluation(
                cursor.request(), metadata=self._metadata, timeout=self.watch_timeout
            )
            try:
                async for response in call:
                    event = cursor.accept(response)
                    if event is not None:
                        failures = 0
                        yield event
            except grpc.aio.AioRpcError as exc:
                error, cause = error_from_rpc(exc), exc
            except WatchGapError as exc:
                logger.warning("watch of %s: %s; reopening", evaluation_id, exc)
                cause = exc
            finally:
                call.cancel()
            if cursor.finished():
                return
            failures += 1
            delay = self.retry.reconnect_delay(error, failures)
            if delay is None:
                raise (error or EvalmeshError("the watch stream kept ending early")) from cause
            logger.info("watch of %s dropped (%s); reopening in %.2fs", evaluation_id, error, delay)
            await asyncio.sleep(delay)
            cursor.reopening()

    async def submit_batch(
        self,
        specs: Iterable[Spec | str],
        *,
        concurrency: int = 4,
        on_progress: Callable[[BatchProgress], None] | None = None,
    ) -> builtins.list[Evaluation]:
        """Queue many evaluations in calls of at most 1000, ``concurrency`` calls at a time;
        return them in the order given. ``on_progress`` runs after each call."""
        plan = BatchPlan.of(specs)
        gate = asyncio.Semaphore(max(1, concurrency))

        async def submit(index: int) -> int:
            async with gate:
                request = plan.request(index)
                try:
                    reply = await self._call(self._evaluations.BatchCreateEvaluations, request)
                except EvalmeshError as error:
                    raise plan.locate(index, error) from error
                return plan.store(index, reply)

        tasks = [asyncio.ensure_future(submit(index)) for index in plan.indexes()]
        done = 0
        try:
            for next_done in asyncio.as_completed(tasks):
                done += await next_done
                if on_progress is not None:
                    on_progress(BatchProgress(done, plan.total))
        finally:
            for task in tasks:
                task.cancel()
        return plan.results()

    # Cluster and API keys

    async def queue_stats(self) -> QueueStats:
        """Queue depth per priority, running work and throughput (admin)."""
        return admin.queue_stats(await self._call(self._cluster.GetQueueStats, admin.QUEUE_STATS))

    async def executors(self) -> builtins.list[Executor]:
        """The live executor instances with their slots and health (admin)."""
        return admin.executors(await self._call(self._cluster.ListExecutors, admin.EXECUTORS))

    async def runtimes(self) -> builtins.list[Runtime]:
        """The runtimes that healthy executors offer."""
        return admin.runtimes(await self._call(self._cluster.ListRuntimes, admin.RUNTIMES))

    async def dead_letters(
        self, *, page_size: int = admin.DEAD_LETTER_PAGE_SIZE
    ) -> AsyncIterator[DeadLetter]:
        """Iterate over the dead letters, oldest first, fetching pages as needed (admin)."""
        request = admin.dead_letters_request(page_size)
        while True:
            reply = await self._call(self._cluster.ListDeadLetters, request)
            for item in reply.dead_letters:
                yield DeadLetter.from_proto(item)
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    async def dead_letter(self, sequence: int) -> DeadLetter:
        """One dead letter, with the evaluation it was for (admin)."""
        request = cluster_service_pb2.GetDeadLetterRequest(sequence=sequence)
        return admin.dead_letter(await self._call(self._cluster.GetDeadLetter, request))

    async def redrive_dead_letter(self, sequence: int) -> Evaluation:
        """Queue a dead letter's spec again as a new evaluation and remove the letter (admin).

        A retry after a lost reply returns the same new evaluation while the letter is still
        there; once it is gone, NotFoundError (reason DEAD_LETTER_NOT_FOUND).
        """
        request = cluster_service_pb2.RedriveDeadLetterRequest(sequence=sequence)
        reply = await self._call(self._cluster.RedriveDeadLetter, request)
        return Evaluation.from_proto(reply.evaluation)

    async def drain_executor(self, executor_id: str, *, grace: Duration | None = None) -> Executor:
        """Make one executor instance stop taking work (admin): its running evaluations get
        ``grace`` (default: its own setting) to finish, the rest go back to the queue, and it
        stays drained until restarted. Returns the instance as it answered, already draining;
        :meth:`executors` shows the drain's progress."""
        request = admin.drain_request(executor_id, grace)
        reply = await self._call(self._cluster.DrainExecutor, request)
        return Executor.from_proto(reply.executor)

    async def purge_evaluations(self, older_than: Duration) -> PurgeResult:
        """Delete every tenant's terminal evaluations that ended more than ``older_than`` ago
        (seconds, a timedelta or e.g. ``"30d"``), with their output (admin). The server deletes
        in bounded calls; this repeats them until nothing selected is left."""
        request = admin.purge_request(older_than)
        total: PurgeResult | None = None
        while True:
            reply = await self._call(self._cluster.PurgeEvaluations, request)
            total = PurgeResult.add(total, reply)
            if reply.complete:
                return total

    async def queue_activity(self, window: Duration | None = None) -> QueueActivity:
        """Throughput and queue waits over the last ``window`` (default one hour), computed by
        the server from the stored timestamps of every tenant's evaluations (admin)."""
        request = admin.activity_request(window)
        return admin.queue_activity(await self._call(self._cluster.GetQueueActivity, request))

    async def create_api_key(
        self, tenant: str, role: Role | str = Role.USER, name: str = ""
    ) -> CreatedApiKey:
        """Make a key for ``tenant`` and return it with its secret (admin). Not retried."""
        request = admin.create_key_request(tenant, role, name)
        return admin.created_key(await self._call(self._keys.CreateApiKey, request, retry=False))

    async def list_api_keys(
        self, *, tenant: str = "", include_revoked: bool = False
    ) -> AsyncIterator[ApiKey]:
        """Iterate over API keys, newest first (admin)."""
        request = admin.list_keys_request(tenant, include_revoked)
        while True:
            reply = await self._call(self._keys.ListApiKeys, request)
            for key in reply.api_keys:
                yield ApiKey.from_proto(key)
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revoke a key at once; idempotent (admin)."""
        reply = await self._call(self._keys.RevokeApiKey, admin.revoke_key_request(key_id))
        return ApiKey.from_proto(reply.api_key)

    async def _call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Request, Response],
        request: Request,
        *,
        retry: bool = True,
    ) -> Response:
        retries = CallRetries(self.retry)
        while True:
            try:
                response: Any = await method(request, metadata=self._metadata, timeout=self.timeout)
                return response  # type: ignore[no-any-return]
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc)
                delay = retries.after(error) if retry else None
                if delay is None:
                    raise error from exc
            logger.info("call failed (%r); retry %d in %.3fs", error, retries.attempt, delay)
            await asyncio.sleep(delay)
