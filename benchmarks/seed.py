"""A SQLite database already holding many finished evaluations, made fast and kept in a cache.

Rows are not invented from a schema we would have to keep in step with storage's: a mesh
first runs a few real evaluations into a fresh file (the storage service creates the schema
through its own migrations), then every row of those evaluations, in ``evaluations`` and in
each table that refers to it (output, labels), is copied with a new id and request_id and its
timestamps moved back in time, until the file holds the number asked for. The result is
cached under a key made of the storage migrations' text, so a schema change makes a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import sqlite3
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import evalmesh_storage
from benchmarks.mesh import ClientPool, run_mesh_round, running_mesh

__all__ = ["seeded_database"]

RECIPE = "1"  # bump when the way rows are made changes
SPREAD_US = 30 * 24 * 3600 * 1_000_000  # the copies' create times spread over 30 days
_BATCH = 20_000
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
Row = tuple[Any, ...]


def seeded_database(cache_dir: Path, work_dir: Path, rows: int, templates: int) -> Path:
    """The cached database holding ``rows`` finished evaluations, made first if needed."""
    cached = cache_dir / f"seed-{_key(rows, templates)}.db"
    if cached.is_file():
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    state = work_dir / "seed"
    state.mkdir(parents=True, exist_ok=True)
    database = state / "seed.db"
    with running_mesh(state, database_url=f"sqlite+aiosqlite:///{database}") as mesh:
        pool_size = min(templates, 50)

        async def make() -> None:
            async with ClientPool(mesh, pool_size) as pool:
                for start in range(0, templates, pool_size):
                    count = min(pool_size, templates - start)
                    await run_mesh_round(pool, ["print(1)"] * count)

        asyncio.run(make())
    _multiply(database, rows)
    for old in cache_dir.glob("seed-*.db"):
        old.unlink()  # one cached file at a time: they are large
    partial = cached.with_suffix(".partial")
    shutil.copyfile(database, partial)
    partial.replace(cached)
    return cached


def _key(rows: int, templates: int) -> str:
    digest = hashlib.sha256(f"{RECIPE}:{rows}:{templates}".encode())
    package = Path(evalmesh_storage.__file__).parent
    for path in sorted((package / "migrations" / "versions").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _multiply(database: Path, total: int) -> None:
    """Copy the evaluations in ``database`` (and their rows elsewhere) up to ``total``."""
    con = sqlite3.connect(database, isolation_level=None)
    try:
        con.execute("PRAGMA synchronous = OFF")
        columns = [row[1] for row in con.execute("PRAGMA table_info(evaluations)")]
        templates = con.execute("SELECT * FROM evaluations").fetchall()
        if not templates:
            raise RuntimeError("the seed mesh stored no evaluations to copy")
        children = _children(con)
        con.execute("BEGIN")
        copies = _copies(columns, templates, children, total - len(templates))
        for table, rows in _batched(copies):
            marks = ",".join("?" * len(rows[0]))
            con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)  # noqa: S608
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def _children(con: sqlite3.Connection) -> dict[str, tuple[int, dict[Any, list[Row]]]]:
    """Per table that refers to evaluations.id: the referring column and the rows by id."""
    found: dict[str, tuple[int, dict[Any, list[Row]]]] = {}
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for fk in con.execute(f"PRAGMA foreign_key_list({table})"):
            if fk[2] == "evaluations" and fk[4] == "id":
                names = [row[1] for row in con.execute(f"PRAGMA table_info({table})")]
                index = names.index(fk[3])
                by_id: dict[Any, list[Row]] = defaultdict(list)
                for row in con.execute(f"SELECT * FROM {table}"):  # noqa: S608
                    by_id[row[index]].append(row)
                found[table] = (index, by_id)
    return found


def _copies(
    columns: Sequence[str],
    templates: Sequence[Row],
    children: dict[str, tuple[int, dict[Any, list[Row]]]],
    count: int,
) -> Iterator[tuple[str, Row]]:
    """(table, row) for ``count`` copies of the templates, oldest first."""
    id_at, request_at = columns.index("id"), columns.index("request_id")
    times = [i for i, name in enumerate(columns) if name.endswith(("_time", "_at"))]
    create_at = columns.index("create_time")
    for number in range(count):
        template = templates[number % len(templates)]
        age = SPREAD_US * (count - number) // max(1, count)
        row = list(template)
        for i in times:
            if isinstance(row[i], int):
                row[i] -= age
        old_id = str(template[id_at])
        row[id_at] = old_id[: old_id.rfind("_") + 1] + _ulid(int(row[create_at]) // 1000)
        row[request_at] = f"{template[request_at]}-seed-{number}"
        yield "evaluations", tuple(row)
        for table, (index, by_id) in children.items():
            for child in by_id.get(template[id_at], ()):
                copy = list(child)
                copy[index] = row[id_at]
                yield table, tuple(copy)


def _batched(rows: Iterator[tuple[str, Row]]) -> Iterator[tuple[str, list[Row]]]:
    pending: dict[str, list[Row]] = defaultdict(list)
    for table, row in rows:
        pending[table].append(row)
        if len(pending["evaluations"]) >= _BATCH:
            yield from _drain(pending)
    yield from _drain(pending)


def _drain(pending: dict[str, list[Row]]) -> Iterator[tuple[str, list[Row]]]:
    # Parents first: the children's foreign keys refer to them.
    for table in sorted(pending, key=lambda name: name != "evaluations"):
        if pending[table]:
            yield table, pending[table]
    pending.clear()


def _ulid(ms: int) -> str:
    value = (ms & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))
