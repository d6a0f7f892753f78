"""The campaign's clients: a steady load, bursts fired just before a fault, and probes.

Every request gets a fresh request_id and is retried with that same id until the platform
accepts it, however it fails meanwhile (each failure is recorded with its code), as a careful
client would: a submit whose answer was lost to a crash must come back with the evaluation it
created. Each accepted evaluation is then watched to its end by a watcher that outlives
gateway restarts; what the watcher sees of each attempt's output is the run's side channel.
Every other evaluation is queued and followed in one call instead (``AsyncClient.stream``, one
RunEvaluation stream, what ``run`` does), retried the same way until its first event, then
watched as the others are if the stream ends early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

import grpc

from chaos.ledger import Ledger, Submission
from chaos.program import program
from evalmesh.client import (
    AsyncClient,
    EvalmeshError,
    Output,
    Priority,
    RetryPolicy,
    Snapshot,
    State,
    Stream,
)

__all__ = ["Load", "client_pool"]

log = logging.getLogger(__name__)

# Answers that mean the request itself is wrong: retrying cannot help, and the campaign's
# requests are all valid, so any of these is a finding of its own.
_FINAL = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_RETRY_DELAY = (0.05, 0.15)
# The campaign retries on its own (recording each answer); the client library does not.
_NO_RETRY = RetryPolicy(max_attempts=1, max_reconnects=3, initial_backoff=0.1, max_backoff=0.5)


def client_pool(address: str, api_key: str, size: int) -> list[AsyncClient]:
    """Clients on separate connections (gRPC would share one per target otherwise)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [
        AsyncClient(address, api_key, channel_options=options, timeout=10.0, retry=_NO_RETRY)
        for _ in range(size)
    ]


class Load:
    """Sends self-identifying evaluations and follows each to its end, into ``ledger``."""

    def __init__(
        self,
        clients: Sequence[AsyncClient],
        ledger: Ledger,
        tag_prefix: str,
        seconds: tuple[float, float],
        rounds: int,
        rng: random.Random,
    ) -> None:
        self.clients = list(clients)
        self.ledger = ledger
        self.tag_prefix = tag_prefix
        self.seconds = seconds
        self.rounds = rounds
        self.rng = rng
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self._serial = 0
        self._ended: dict[str, asyncio.Event] = {}

    def fire(
        self, kind: str, *, seconds: float | None = None, priority: Priority = Priority.NORMAL
    ) -> Submission:
        """Start submitting one new evaluation now; return its ledger entry at once."""
        self._serial += 1
        rid = f"chaos-{kind}-{self._serial:05d}-{uuid.uuid4().hex[:8]}"
        tag = f"{self.tag_prefix}{self._serial:05d}"
        run_for = self.rng.uniform(*self.seconds) if seconds is None else seconds
        sub = Submission(
            rid=rid,
            tag=tag,
            kind=kind,
            code=program(rid, tag, run_for, self.rounds),
            rounds=self.rounds,
            first_sent=time.time(),
            priority=priority.value,
        )
        self.ledger.submissions[rid] = sub
        self._ended[rid] = asyncio.Event()
        client = self.clients[self._serial % len(self.clients)]
        task = asyncio.ensure_future(self._follow(client, sub, one_call=self._serial % 2 == 0))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return sub

    async def steady(self, rate: float, stop: asyncio.Event) -> None:
        """Fire ``rate`` evaluations a second (exponential gaps) until ``stop`` is set."""
        while not stop.is_set():
            self.fire("load")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.expovariate(rate))

    async def resubmit(self, sub: Submission) -> None:
        """Submit ``sub`` once more with its request_id; the answer's id joins its ids."""
        evaluation = await self.clients[0].submit(sub.code, **_options(sub))
        sub.evaluation_ids.add(evaluation.id)

    async def ended(self, sub: Submission, within: float) -> bool:
        """Wait up to ``within`` seconds for a watcher to see ``sub`` end."""
        try:
            await asyncio.wait_for(self._ended[sub.rid].wait(), within)
        except TimeoutError:
            return False
        return True

    async def all_ended(self, within: float) -> list[Submission]:
        """Wait up to ``within`` seconds for every accepted submission to end; return the
        ones that did not."""
        waits = [self._ended[s.rid].wait() for s in self.pending()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), within)
        return self.pending()

    def pending(self) -> list[Submission]:
        """Accepted submissions whose watcher has not seen them end."""
        return [
            s
            for s in self.ledger.submissions.values()
            if s.watched_terminal_at is None and (s.accepted_at or not s.evaluation_ids)
        ]

    async def close(self) -> None:
        """Stop retrying and watching."""
        self.closing = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _follow(self, client: AsyncClient, sub: Submission, *, one_call: bool) -> None:
        try:
            accepted = await (self._run(client, sub) if one_call else self._submit(client, sub))
            if accepted:
                await self._watch(client, sub)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("following %s failed", sub.rid)

    async def _submit(self, client: AsyncClient, sub: Submission) -> bool:
        while not self.closing:
            sub.tries += 1
            try:
                evaluation = await client.submit(sub.code, **_options(sub))
            except EvalmeshError as error:
                if not await self._refused(sub, error):
                    return False
                continue
            self._accepted(sub, evaluation.id)
            return True
        return False

    async def _run(self, client: AsyncClient, sub: Submission) -> bool:
        """Queue and follow in one stream until its first event; True once accepted (the
        watcher then takes over if the stream ended before the end)."""
        while not self.closing and sub.accepted_at is None:
            sub.tries += 1
            attempt = 0
            try:
                async for event in client.stream(sub.code, **_options(sub)):
                    if isinstance(event, Snapshot) and sub.accepted_at is None:
                        self._accepted(sub, event.evaluation.id)
                    attempt = self._seen(sub, event, attempt)
            except EvalmeshError as error:
                if sub.accepted_at is None and not await self._refused(sub, error):
                    return False
        return sub.accepted_at is not None

    def _accepted(self, sub: Submission, evaluation_id: str) -> None:
        sub.evaluation_ids.add(evaluation_id)
        sub.accepted_at = sub.accepted_at or time.time()

    async def _refused(self, sub: Submission, error: EvalmeshError) -> bool:
        """Record a failed submit; False if retrying cannot help, else True after a pause."""
        code = error.code.name if error.code else "CLIENT"
        answer = code if error.reason in ("", code) else f"{code} {error.reason}"
        sub.errors.append((time.time(), answer))
        if error.code in _FINAL:
            log.warning("submit %s refused for good: %s", sub.rid, error)
            return False
        await asyncio.sleep(self.rng.uniform(*_RETRY_DELAY))
        return True

    async def _watch(self, client: AsyncClient, sub: Submission) -> None:
        attempt = 0
        while not self.closing and sub.watched_terminal_at is None:
            try:
                async for event in client.watch(sub.evaluation_id):
                    attempt = self._seen(sub, event, attempt)
            except EvalmeshError as error:
                log.debug("watch of %s: %s; watching again", sub.rid, error)
                await asyncio.sleep(0.2)

    def _seen(self, sub: Submission, event: Snapshot | Output, attempt: int) -> int:
        """Take one watched event into the ledger; return the attempt it belongs to."""
        if isinstance(event, Snapshot):
            self._snapshot(sub, event.state)
            return event.evaluation.attempt
        if event.stream is Stream.STDOUT:
            live = sub.live_stdout.setdefault(attempt, bytearray())
            end = event.offset + len(event.data)
            if len(live) < end:
                live.extend(b"\0" * (end - len(live)))
            live[event.offset : end] = event.data
        return attempt

    def _snapshot(self, sub: Submission, state: State) -> None:
        if state.terminal and sub.watched_terminal_at is None:
            sub.watched_terminal_at = time.time()
            sub.watched_state = state.value
            self._ended[sub.rid].set()


def _options(sub: Submission) -> dict[str, Any]:
    """Everything but the code of ``sub``'s submit: the same on every try."""
    return {"request_id": sub.rid, "priority": sub.priority, "labels": {"chaos-kind": sub.kind}}
