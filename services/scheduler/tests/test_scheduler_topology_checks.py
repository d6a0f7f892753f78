"""The periodic topology check: its whole interval while it passes, a second while it fails."""

from __future__ import annotations

import asyncio

import pytest

from evalmesh_scheduler.background import keep_checking


async def test_a_failed_check_is_tried_again_after_the_retry_not_the_interval() -> None:
    results = iter([True, False, False, True, True])
    waits: list[float] = []

    async def check() -> bool:
        return next(results)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) > 5:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await keep_checking(check, interval=30.0, retry=1.0, sleep=sleep)
    # passed, failed, failed, passed, passed: each wait follows the check before it.
    assert waits == [30.0, 30.0, 1.0, 1.0, 30.0, 30.0]
