"""A steady load through the edge of a replicated mesh, and what it takes to prove that nothing
was lost, doubled, invented or corrupted while its members were killed.

Every request has its own request id and a program whose right output is known in advance (the
SHA-256 of its request id, after a short sleep, so evaluations are in flight when a member dies).
A request is submitted again, with the same id, until the platform accepts it, whatever it
answered meanwhile; every third accepted evaluation is followed by a watcher (through the edge,
resuming across failures) that keeps what the last attempt printed. ``verify`` then reads every
evaluation of the load's tenant back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from evalmesh.client import (
    AsyncClient,
    EvalmeshError,
    Evaluation,
    Output,
    Snapshot,
    State,
    Stream,
)

__all__ = ["Ledger", "Load", "Request", "verify"]

logger = logging.getLogger(__name__)

PROGRAM = """\
import hashlib, time
time.sleep({sleep})
print(hashlib.sha256({request_id!r}.encode()).hexdigest())
"""


def expected_output(request_id: str) -> bytes:
    """What the program of ``request_id`` prints."""
    return hashlib.sha256(request_id.encode()).hexdigest().encode() + b"\n"


@dataclasses.dataclass
class Request:
    """One request of the load and everything seen of it."""

    request_id: str
    code: str
    priority: str = "normal"
    watched: bool = False
    submitted_at: float = 0.0
    accepted_at: float | None = None
    evaluation_id: str = ""
    refusals: list[str] = dataclasses.field(default_factory=list)
    # What the watcher saw: the last attempt's stdout, the final state, when it ended.
    watch_stdout: bytearray = dataclasses.field(default_factory=bytearray)
    watch_state: State | None = None
    watch_attempt: int = 0
    watch_reopened: int = 0
    watch_misplaced: int = 0
    ended_at: float | None = None

    @property
    def expected(self) -> bytes:
        return expected_output(self.request_id)


class Ledger:
    """Every request sent, by request id."""

    def __init__(self) -> None:
        self.requests: dict[str, Request] = {}

    def new(self, sleep: float, *, priority: str = "normal", watched: bool = False) -> Request:
        request_id = f"load-{uuid.uuid4()}"
        code = PROGRAM.format(sleep=sleep, request_id=request_id)
        request = Request(request_id, code, priority=priority, watched=watched)
        self.requests[request_id] = request
        return request

    def accepted(self) -> list[Request]:
        return [r for r in self.requests.values() if r.accepted_at is not None]


class Load:
    """Submits ``rate`` evaluations a second until stopped, each retried until accepted."""

    def __init__(self, client: AsyncClient, ledger: Ledger, rate: float, sleep: float) -> None:
        self.client = client
        self.ledger = ledger
        self.rate = rate
        self.sleep = sleep
        self.tasks: set[asyncio.Task[Any]] = set()
        self._count = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Start a request every 1/rate seconds until ``stop`` is set."""
        while not stop.is_set():
            self._count += 1
            request = self.ledger.new(self.sleep, watched=self._count % 3 == 0)
            self.spawn(self.submit(request))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / self.rate)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def submit(self, request: Request) -> Evaluation:
        """Submit until accepted (the same request id every time), then watch if asked to."""
        request.submitted_at = time.monotonic()
        while True:
            try:
                evaluation = await self.client.submit(
                    request.code, request_id=request.request_id, priority=request.priority
                )
            except EvalmeshError as error:
                request.refusals.append(error.code.name if error.code else "UNKNOWN")
                await asyncio.sleep(0.1)
                continue
            break
        request.accepted_at = time.monotonic()
        request.evaluation_id = evaluation.id
        if request.watched:
            self.spawn(self.watch(request))
        return evaluation

    async def watch(self, request: Request) -> None:
        """Follow the evaluation to its end, keeping the last attempt's stdout."""
        while True:
            try:
                async for event in self.client.watch(request.evaluation_id):
                    self._take(request, event)
                return
            except EvalmeshError as error:  # the client gave up reconnecting: start over
                logger.info("watch of %s restarted: %s", request.evaluation_id, error)
                request.watch_reopened += 1
                request.watch_stdout.clear()
                await asyncio.sleep(0.5)

    def _take(self, request: Request, event: Snapshot | Output) -> None:
        if isinstance(event, Snapshot):
            if event.evaluation.attempt > request.watch_attempt:
                request.watch_attempt = event.evaluation.attempt
                request.watch_stdout.clear()  # a new attempt's output starts over
            request.watch_state = event.state
            if event.evaluation.terminal:
                request.ended_at = time.monotonic()
        elif event.stream is Stream.STDOUT:
            # The client's cursor promises no gap and no repeat; a piece elsewhere is a fault.
            request.watch_misplaced += event.offset != len(request.watch_stdout)
            del request.watch_stdout[event.offset :]
            request.watch_stdout += event.data

    async def finish(self, within: float) -> None:
        """Wait for every submit and watcher, at most ``within`` seconds."""
        deadline = time.monotonic() + within
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self.tasks), timeout=deadline - time.monotonic())


async def _until_ended(client: AsyncClient, evaluation_ids: list[str], within: float) -> None:
    deadline = time.monotonic() + within
    pending = [evaluation_id for evaluation_id in evaluation_ids if evaluation_id]
    while pending and time.monotonic() < deadline:
        ended = [(await client.get(e, full=False)).terminal for e in pending]
        pending = [e for e, done in zip(pending, ended, strict=True) if not done]
        if pending:
            await asyncio.sleep(0.5)


@dataclasses.dataclass
class Verdict:
    """What ``verify`` found; every list should be empty."""

    accepted: int = 0
    lost: list[str] = dataclasses.field(default_factory=list)
    duplicated: list[str] = dataclasses.field(default_factory=list)
    phantom: list[str] = dataclasses.field(default_factory=list)
    wrong: list[str] = dataclasses.field(default_factory=list)
    watch_wrong: list[str] = dataclasses.field(default_factory=list)
    retried: int = 0

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.phantom or self.wrong or self.watch_wrong)


async def verify(client: AsyncClient, ledger: Ledger, within: float = 120.0) -> Verdict:
    """Read every evaluation of the tenant and hold it to the ledger, once every accepted one
    has ended or ``within`` seconds have passed (the load stops submitting, not running: the
    last evaluations submitted are still queued or running when it returns)."""
    verdict = Verdict(accepted=len(ledger.accepted()))
    await _until_ended(client, [r.evaluation_id for r in ledger.accepted()], within)
    stored: dict[str, list[Evaluation]] = {}
    async for evaluation in client.list(page_size=500):
        stored.setdefault(evaluation.request_id, []).append(evaluation)
    for request_id, evaluations in stored.items():
        if request_id not in ledger.requests:
            verdict.phantom.append(request_id)
        elif len(evaluations) > 1:
            verdict.duplicated.append(request_id)
    for request in ledger.accepted():
        found = stored.get(request.request_id, [])
        if not found:
            verdict.lost.append(request.request_id)
            continue
        full = await client.get(found[0].id)
        if not full.terminal:
            verdict.lost.append(request.request_id)  # accepted and never ended
        elif full.state is not State.SUCCEEDED or full.stdout != request.expected:
            verdict.wrong.append(f"{request.request_id}: {full.state} {full.stdout!r}")
        elif full.stderr:
            verdict.wrong.append(f"{request.request_id}: stderr {full.stderr!r}")
        verdict.retried += full.attempt > 1
        if request.watched and (
            request.watch_state is not State.SUCCEEDED
            or bytes(request.watch_stdout) != request.expected
            or request.watch_misplaced
        ):
            verdict.watch_wrong.append(
                f"{request.request_id}: {request.watch_state} {bytes(request.watch_stdout)!r}"
            )
    return verdict
