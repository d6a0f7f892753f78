"""The heartbeat of a running attempt: lease renewals in storage, in_progress() on the message."""

from __future__ import annotations

import asyncio

from evalmesh_common import FailedPrecondition
from evalmesh_executor.heartbeat import Heartbeat
from evalmesh_executor.runs import RunHandle, Stop


async def test_a_stalled_nats_link_does_not_hold_back_lease_renewals() -> None:
    renewals: list[float] = []
    stalled = asyncio.Event()

    async def renew(evaluation_id: str, attempt: int, lease: float) -> bool:
        renewals.append(asyncio.get_running_loop().time())
        return False

    async def in_progress() -> None:
        stalled.set()
        await asyncio.Event().wait()  # a partitioned socket: neither fails nor returns

    handle = RunHandle("ev_1", attempt=1)
    heartbeat = Heartbeat(handle, renew, in_progress, lease=0.3, ack_wait=0.3)
    heartbeat.start()
    await asyncio.sleep(0.75)
    await heartbeat.stop()

    assert stalled.is_set()
    assert len(renewals) >= 4
    assert handle.stopped is None


async def test_a_refused_renewal_stops_the_run_as_lost() -> None:
    async def renew(evaluation_id: str, attempt: int, lease: float) -> bool:
        raise FailedPrecondition("another attempt owns it", reason="STALE_ATTEMPT")

    async def in_progress() -> None:
        return None

    handle = RunHandle("ev_1", attempt=1)
    heartbeat = Heartbeat(handle, renew, in_progress, lease=0.15, ack_wait=30)
    heartbeat.start()
    await asyncio.sleep(0.2)
    await heartbeat.stop()

    assert handle.stopped is Stop.LOST


async def test_a_cancel_requested_in_the_renewal_reply_stops_the_run() -> None:
    async def renew(evaluation_id: str, attempt: int, lease: float) -> bool:
        return True

    async def in_progress() -> None:
        return None

    handle = RunHandle("ev_1", attempt=1)
    heartbeat = Heartbeat(handle, renew, in_progress, lease=0.15, ack_wait=30)
    heartbeat.start()
    await asyncio.sleep(0.2)
    await heartbeat.stop()

    assert handle.stopped is Stop.CANCEL


async def test_stopping_ends_the_beat_even_when_a_touch_is_answered_as_it_stops() -> None:
    touching = asyncio.Event()
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def renew(evaluation_id: str, attempt: int, lease: float) -> bool:
        return False

    async def in_progress() -> None:
        touching.set()
        await answer

    heartbeat = Heartbeat(RunHandle("ev_1", attempt=1), renew, in_progress, lease=30, ack_wait=0.03)
    heartbeat.start()
    await asyncio.wait_for(touching.wait(), 5)
    answer.set_result(None)  # the reply lands in the same turn of the loop as the stop
    stopping = asyncio.ensure_future(heartbeat.stop())
    await asyncio.wait({stopping}, timeout=5)
    assert stopping.done(), "the touch loop swallowed the stop and beats on"
    beating = [task for task in asyncio.all_tasks() if task.get_name().startswith("heartbeat")]
    assert beating == []
