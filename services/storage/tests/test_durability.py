"""What a power cut may take: every write a client was answered about is flushed before the
answer, except the ones the platform repairs by itself (see evalmesh_storage.db)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import text

from evalmesh_storage.db import Database, Tx


def flush_setting(tx: Tx) -> str:
    """How this transaction's commit reaches the disk, as the database reports it."""
    if tx.postgres:
        return str(tx.conn.scalar(text("SHOW synchronous_commit")))
    return {2: "on", 1: "off"}[int(tx.conn.scalar(text("PRAGMA synchronous")) or 0)]


async def durable_setting(db: Database) -> str:
    """What a durable commit uses: "on" for SQLite; the server's own setting for PostgreSQL
    (the tests' throwaway cluster turns it off for speed)."""
    return await db.read(flush_setting) if db.postgres else "on"


async def test_a_durable_write_is_flushed_before_it_answers_and_a_relaxed_one_is_not(
    db: Database,
) -> None:
    durable = await durable_setting(db)
    assert await db.write(flush_setting) == durable
    assert await db.write(flush_setting, durable=False) == "off"
    assert await db.write(flush_setting) == durable, "the relaxed setting does not stick"


async def test_one_durable_write_in_a_group_commit_flushes_the_whole_group(db: Database) -> None:
    relaxed = [db.write(flush_setting, durable=False) for _ in range(20)]
    together = await asyncio.gather(*relaxed, db.write(flush_setting))
    # SQLite runs them in one commit: flushed, since one of them is durable.
    assert together[-1] == await durable_setting(db)


async def test_a_write_that_fails_in_a_group_commit_rolls_back_alone(db: Database) -> None:
    await db.write(lambda tx: tx.conn.execute(text("CREATE TABLE probe (n INTEGER PRIMARY KEY)")))

    def insert(n: int) -> Callable[[Tx], int]:
        def unit(tx: Tx) -> int:
            tx.conn.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": n})
            if n % 5 == 0:
                raise ValueError(f"unit {n} fails after its insert")
            if n % 7 == 0:  # the database refuses this one's second row
                tx.conn.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": n})
            return n

        return unit

    # SQLite runs these together, in one commit; each failure must take only its own rows.
    outcomes = await asyncio.gather(
        *(db.write(insert(n), durable=False) for n in range(1, 31)), return_exceptions=True
    )
    failed = {n for n, outcome in zip(range(1, 31), outcomes, strict=True) if n % 5 == 0}
    refused = {n for n in range(1, 31) if n % 7 == 0} - failed
    assert all(isinstance(outcomes[n - 1], ValueError) for n in failed)
    assert all(isinstance(outcomes[n - 1], Exception) for n in refused)
    kept = set(range(1, 31)) - failed - refused
    assert [outcomes[n - 1] for n in sorted(kept)] == list(sorted(kept))
    rows = await db.read(lambda tx: set(tx.conn.scalars(text("SELECT n FROM probe"))))
    assert rows == kept
    assert await db.write(insert(31)) == 31, "the writer goes on after the failures"
