"""The pool: free slots pull jobs from the priority consumers, by the weighted policy.

A slot is taken before a pull and a pull asks for one message, so the instance never holds more
jobs than it has free slots. The class comes from the shared smooth weighted round-robin
(``evalmesh_common.priority``) over the classes that have work: the chosen class's durable
consumer is asked for one message with ``no_wait``, which answers at once either with a job or
with "no messages", and an empty class is dropped from this round (its share goes to the
others). ``fetch(1)`` of nats-py cannot probe like that: an empty class costs its whole expiry,
and the late 408 it leaves behind costs another. A class that answered "no messages" is not
asked again until a job of its class is stored (the publisher's core NATS hint, sent once
JetStream acknowledged the job, which every executor receives), an executor's nak makes one
deliverable again (hinted the same way when its delay ends), or ``recheck_interval`` passes
(how redeliveries after ack_wait are found), so a steady stream of one class's jobs costs one
pull per job, not one per class. When every class is empty the loop sleeps until such a hint or
the recheck interval.

A hint can come before its job is pullable: JetStream acknowledges a publication once it is
stored, but a consumer learns of the new message a moment later, and a ``no_wait`` pull sent
right after the acknowledgement answers "no messages" about once in 170 (3 of 500 here, each
found by a pull 1 ms later). Taken for an empty class, that hinted job waited for the
recheck, 0.5 s: the p99 of one evaluation at a time. So a class that was empty and has been
hinted since, and answers "no messages", is asked once more with a pull that waits for a job
(``_HINTED_WAIT`` at most). Where several executors share a class, those that lose a hinted
job to another wait that long before taking the class for empty.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.errors import Error as JetStreamError

from evalmesh_common.priority import WeightedPriority
from evalmesh_common.subjects import JOBS_STREAM, PRIORITY_NAMES, job_consumer, job_hint_subject
from evalmesh_executor.config import PullConfig
from evalmesh_executor.runs import RunRegistry, Stop
from evalmesh_executor.worker import JobRunner

__all__ = ["Pool", "Wakeup"]

logger = logging.getLogger(__name__)

_NATS_ERRORS = (nats.errors.Error, JetStreamError, OSError)
_GATE_POLL = 0.05
_STEP_RETRY = 1.0
_GIVE_BACK_TIMEOUT = 2.5
_PULL_ONE = json.dumps({"batch": 1, "no_wait": True}).encode()
_HINTED_WAIT = 0.1
_PULL_ONE_WAITING = json.dumps({"batch": 1, "expires": round(_HINTED_WAIT * 1e9)}).encode()
_NO_MESSAGES = frozenset({"404", "408"})


def _status(msg: Msg) -> str:
    """The JetStream status of a pull's answer ("404": no messages), or "" for a job."""
    return str((msg.headers or {}).get("Status", ""))


class Wakeup:
    """What an idle pool waits for: a new-job hint, or the recheck interval."""

    def __init__(self, recheck_interval: float) -> None:
        self.recheck_interval = recheck_interval
        self._hint = asyncio.Event()

    def hint(self) -> None:
        """A job was just published."""
        self._hint.set()

    async def wait(self) -> None:
        """Sleep until a hint arrives (or arrived since the last wait) or the interval passes."""
        with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
            async with asyncio.timeout(self.recheck_interval):
                await self._hint.wait()
        self._hint.clear()


@dataclass
class _Source:
    """One priority class: its consumer's pull API subject, the inbox its jobs are delivered
    to, and the consumer's ack_wait."""

    name: str
    next_subject: str
    inbox: Subscription
    ack_wait: float


class Pool:
    """Slots, the fetch loop and drain for one executor instance."""

    def __init__(
        self,
        client: Client,
        runner: JobRunner,
        runs: RunRegistry,
        *,
        slots: int,
        pull: PullConfig,
        can_pull: Callable[[], bool],
        policy: WeightedPriority | None = None,
    ) -> None:
        self._client = client
        self._runner = runner
        self._runs = runs
        self.slots = slots
        self._pull = pull
        self._can_pull = can_pull
        self._policy = policy or WeightedPriority()
        self._free = asyncio.Semaphore(slots)
        self._wakeup = Wakeup(pull.recheck_interval)
        self._sources: dict[str, _Source] = {}
        self._hints: list[Subscription] = []
        self._hinted: collections.Counter[str] = collections.Counter()  # hints per class
        # Classes that answered "no messages": the hint count when that pull went out, and when.
        self._empty: dict[str, tuple[int, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Clear while a pull is out, until what it brought is handed on.
        self._between_pulls = asyncio.Event()
        self._between_pulls.set()
        self.draining = False

    @property
    def bound(self) -> bool:
        """True once every priority consumer is bound."""
        return len(self._sources) == len(PRIORITY_NAMES)

    async def bind(self) -> None:
        """Bind to the scheduler's durable consumers (NotFoundError while they do not exist)
        and subscribe to the new-job hints."""
        js = self._client.jetstream()
        for name in PRIORITY_NAMES:
            if name in self._sources:
                continue
            consumer = job_consumer(name)
            info = await js.consumer_info(JOBS_STREAM, consumer)
            subject = f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{JOBS_STREAM}.{consumer}"
            inbox = await self._client.subscribe(self._client.new_inbox())
            ack_wait = float(info.config.ack_wait or 30)
            self._sources[name] = _Source(name, subject, inbox, ack_wait)
        for name in PRIORITY_NAMES:
            hints = await self._client.subscribe(job_hint_subject(name), cb=self._on_hint)
            self._hints.append(hints)

    async def run(self) -> None:
        """Pull and start jobs until cancelled or drained."""
        while not self.draining:
            try:
                await self._step()
            except Exception:  # a bug or an odd answer must not stop the pool for good
                logger.exception("pull loop step failed")
                await asyncio.sleep(_STEP_RETRY)

    async def _step(self) -> None:
        if not self._can_pull():
            await asyncio.sleep(_GATE_POLL)
            return
        await self._free.acquire()
        if self._draining_now():  # began while every slot was busy
            self._free.release()
            return
        self._between_pulls.clear()
        try:
            taken = await self._take()
        except BaseException:
            self._free.release()
            self._between_pulls.set()
            raise
        if taken is None:
            self._free.release()
            self._between_pulls.set()
            await self._wakeup.wait()
            return
        msg, ack_wait = taken
        if self._draining_now():  # the drain began while this pull was in flight
            self._free.release()
            work = self._runner.requeue(msg, 0)  # unclaimed: at once, to whoever pulls
        else:
            work = self._process(msg, ack_wait)
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._between_pulls.set()

    def _draining_now(self) -> bool:
        # A call, not the attribute: the drain can begin at any await in between.
        return self.draining

    async def _process(self, msg: Msg, ack_wait: float) -> None:
        released = False

        def release() -> None:
            # The slot is the sandbox's: it frees once the sandbox is torn down, so the next
            # job is pulled and claimed while this one's result is still being written.
            nonlocal released
            if not released:
                released = True
                self._free.release()

        try:
            await self._runner.process(msg, ack_wait, release)
        finally:
            release()

    async def _take(self) -> tuple[Msg, float] | None:
        ready = {name for name in self._sources if self._may_have_work(name)}
        while (choice := self._policy.choose(ready)) is not None:
            hinted = self._hinted[choice]
            msg = await self._pull_one(self._sources[choice])
            if msg is None and self._hinted_since_empty(choice):
                msg = await self._pull_one(self._sources[choice], _PULL_ONE_WAITING)
            if msg is None:  # that class is empty: its share goes to the others
                self._empty[choice] = (hinted, time.monotonic())
                ready.discard(choice)
                continue
            self._empty.pop(choice, None)
            self._policy.started(choice, ready)
            return msg, self._sources[choice].ack_wait
        return None

    def _hinted_since_empty(self, name: str) -> bool:
        """True if ``name`` answered "no messages" before and a job was published since."""
        empty = self._empty.get(name)
        return empty is not None and self._hinted[name] > empty[0]

    def _may_have_work(self, name: str) -> bool:
        """False for a class that was empty, unless a job was published since or it is time
        to look again (for redeliveries, which send no hint)."""
        empty = self._empty.get(name)
        if empty is None or self._hinted_since_empty(name):
            return True
        return time.monotonic() - empty[1] >= self._pull.recheck_interval

    async def _pull_one(self, source: _Source, request: bytes = _PULL_ONE) -> Msg | None:
        """One message from the class's consumer, or None at once if it has none (or none
        within the request's expiry)."""
        inbox = source.inbox
        try:
            while inbox.pending_msgs > 0:  # a late answer to an earlier pull
                msg = await inbox.next_msg(timeout=self._pull.fetch_timeout)
                if not _status(msg):
                    return msg
            await self._client.publish(source.next_subject, request, reply=inbox.subject)
            msg = await inbox.next_msg(timeout=self._pull.fetch_timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return None
        except _NATS_ERRORS as exc:
            logger.warning("pull from %s failed: %s", source.name, exc)
            return None
        status = _status(msg)
        if not status:
            return msg
        if status not in _NO_MESSAGES:
            description = (msg.headers or {}).get("Description", "")
            logger.warning("pull from %s answered %s %s", source.name, status, description)
        return None

    async def _on_hint(self, msg: Msg) -> None:
        self._hinted[msg.subject.rpartition(".")[2]] += 1  # evalmesh.control.queued.<class>
        self._wakeup.hint()

    async def drain(self, grace: float) -> tuple[int, int]:
        """Stop pulling; let running jobs finish within ``grace``; give the rest back.

        Returns (finished within the grace, given back).
        """
        self.draining = True
        running = {task for task in self._tasks if not task.done()}
        if not running:
            return 0, 0
        done, pending = await asyncio.wait(running, timeout=grace)
        if pending:
            self._runs.stop_all(Stop.GIVE_BACK, "the executor is draining")
            await asyncio.wait(pending, timeout=_GIVE_BACK_TIMEOUT)
        logger.info("drained: %d finished, %d given back", len(done), len(pending))
        return len(done), len(pending)

    async def close(self) -> None:
        """Stop pulling and unsubscribe from the hints (before the connection drains).

        Every subscription is closed first: one left open holds up the connection's drain. A
        pull that is out (a waiting one lasts up to ``_HINTED_WAIT``) is waited for first: a
        job delivered to a closed inbox would wait for its ack_wait before anyone got it.
        """
        self.draining = True
        with contextlib.suppress(TimeoutError):
            limit = self._pull.fetch_timeout + _HINTED_WAIT
            await asyncio.wait_for(self._between_pulls.wait(), limit)
        inboxes = [source.inbox for source in self._sources.values()]
        hints, self._hints = self._hints, []
        for subscription in [*hints, *inboxes]:
            with contextlib.suppress(*_NATS_ERRORS):
                await subscription.unsubscribe()
