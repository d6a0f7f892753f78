"""Output chunks: idempotent, any order, exact bytes by offset, capped with truncation flagged."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from storage_test_helpers import claim, create, exited, running

from evalmesh_storage.domain import Chunk, State, Stream, View
from evalmesh_storage.errors import (
    AlreadyTerminal,
    EvaluationNotFound,
    InvalidArgument,
    StaleAttempt,
)
from evalmesh_storage.storage import Storage

HOSTILE = b"\xff\xfe\x00\xc3\x28" * 7 + b"\x00\x00tail\xe2\x82"


def split(data: bytes, sizes: list[int], stream: Stream = Stream.STDOUT) -> list[Chunk]:
    """Cut ``data`` into chunks of the given sizes (the last takes the rest)."""
    chunks, offset = [], 0
    for seq, size in enumerate([*sizes, len(data)]):
        piece = data[offset : offset + size]
        if not piece:
            break
        chunks.append(Chunk(stream, seq, offset, piece))
        offset += len(piece)
    return chunks


async def read_all(storage: Storage, evaluation_id: str, stream: Stream, offset: int = 0) -> bytes:
    chunks, _ = await storage.read_output("acme", evaluation_id, stream, offset, 0)
    return b"".join(c.data for c in chunks)


async def test_out_of_order_and_duplicated_appends_are_stored_once_in_order(
    storage: Storage,
) -> None:
    evaluation = await running(storage)
    chunks = split(HOSTILE, [3, 5, 1, 7, 2, 9])
    shuffled = chunks * 3
    random.Random(7).shuffle(shuffled)
    for start in range(0, len(shuffled), 4):
        await storage.append_output(evaluation.id, 1, shuffled[start : start + 4])
    assert await read_all(storage, evaluation.id, Stream.STDOUT) == HOSTILE
    full = await storage.get_evaluation(evaluation.id, "acme", View.FULL)
    assert full.stdout == HOSTILE
    assert full.stderr == b""
    assert full.progress.stdout_bytes == len(HOSTILE)


async def test_a_gap_holds_back_progress_until_it_is_filled(storage: Storage) -> None:
    evaluation = await running(storage)
    chunks = split(b"abcdefghij", [2, 3, 5])
    progress = await storage.append_output(evaluation.id, 1, [chunks[0], chunks[2]])
    assert progress.stdout_bytes == 2
    assert await read_all(storage, evaluation.id, Stream.STDOUT) == b"ab"
    progress = await storage.append_output(evaluation.id, 1, [chunks[1]])
    assert progress.stdout_bytes == 10


async def test_reads_by_offset_return_exact_bytes_including_invalid_utf8_and_nul(
    storage: Storage,
) -> None:
    evaluation = await running(storage)
    await storage.append_output(evaluation.id, 1, split(HOSTILE, [4, 4, 4, 4]))
    for offset in range(len(HOSTILE) + 2):
        assert await read_all(storage, evaluation.id, Stream.STDOUT, offset) == HOSTILE[offset:]
    chunks, _ = await storage.read_output("acme", evaluation.id, Stream.STDOUT, 5, 6)
    assert b"".join(c.data for c in chunks) == HOSTILE[5:11]
    assert chunks[0].offset == 5
    assert all(a.offset + len(a.data) == b.offset for a, b in itertools.pairwise(chunks))


async def test_streams_are_stored_separately(storage: Storage) -> None:
    evaluation = await running(storage)
    await storage.append_output(
        evaluation.id,
        1,
        [*split(b"to stdout", [3]), *split(b"to stderr!", [4], Stream.STDERR)],
    )
    assert await read_all(storage, evaluation.id, Stream.STDOUT) == b"to stdout"
    assert await read_all(storage, evaluation.id, Stream.STDERR) == b"to stderr!"


async def test_output_beyond_the_cap_is_cut_at_the_cap_and_flagged(storage: Storage) -> None:
    evaluation = await running(storage, cap=10)
    progress = await storage.append_output(evaluation.id, 1, split(b"0123456789abcdef", [4, 4, 4]))
    assert progress.stdout_bytes == 10
    assert progress.stdout_truncated
    assert not progress.stderr_truncated
    assert await read_all(storage, evaluation.id, Stream.STDOUT) == b"0123456789"
    more = await storage.append_output(evaluation.id, 1, [Chunk(Stream.STDOUT, 4, 16, b"xyz")])
    assert more.stdout_bytes == 10
    done = await storage.complete(evaluation.id, 1, State.OUTPUT_LIMIT_EXCEEDED, exited(1))
    assert done.result is not None
    assert done.result.stdout_truncated
    assert done.progress.stdout_bytes == 10


async def test_a_chunk_that_does_not_continue_its_neighbour_is_refused(storage: Storage) -> None:
    evaluation = await running(storage)
    await storage.append_output(evaluation.id, 1, [Chunk(Stream.STDOUT, 0, 0, b"abc")])
    with pytest.raises(InvalidArgument):
        await storage.append_output(evaluation.id, 1, [Chunk(Stream.STDOUT, 1, 5, b"def")])
    await storage.append_output(evaluation.id, 1, [Chunk(Stream.STDOUT, 3, 10, b"!")])
    with pytest.raises(InvalidArgument):
        await storage.append_output(evaluation.id, 1, [Chunk(Stream.STDOUT, 2, 6, b"ghi")])
    assert await read_all(storage, evaluation.id, Stream.STDOUT) == b"abc"


async def test_appends_from_a_stale_attempt_are_refused(storage: Storage) -> None:
    evaluation = await create(storage)
    await storage.claim(evaluation.id, claim(lease_us=1))
    await storage.append_output(evaluation.id, 1, [Chunk(Stream.STDOUT, 0, 0, b"first try")])
    await asyncio.sleep(0.01)
    await storage.requeue(evaluation.id, 1, "lost")
    await storage.claim(evaluation.id, claim())
    with pytest.raises(StaleAttempt):
        await storage.append_output(evaluation.id, 1, [Chunk(Stream.STDOUT, 1, 9, b"late")])
    assert await read_all(storage, evaluation.id, Stream.STDOUT) == b""
    await storage.append_output(evaluation.id, 2, [Chunk(Stream.STDOUT, 0, 0, b"second")])
    assert await read_all(storage, evaluation.id, Stream.STDOUT) == b"second"


async def test_appends_after_completion_are_refused(storage: Storage) -> None:
    evaluation = await running(storage)
    await storage.complete(evaluation.id, 1, State.SUCCEEDED, exited(0))
    with pytest.raises(AlreadyTerminal):
        await storage.append_output(evaluation.id, 1, [Chunk(Stream.STDOUT, 0, 0, b"x")])


async def test_reading_output_of_another_tenant_is_not_found(storage: Storage) -> None:
    evaluation = await running(storage)
    with pytest.raises(EvaluationNotFound):
        await storage.read_output("globex", evaluation.id, Stream.STDOUT, 0, 0)


async def test_a_large_output_is_read_back_in_bounded_pieces(storage: Storage) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    evaluation = await running(storage, cap=len(data))
    await storage.append_output(evaluation.id, 1, split(data, [64 * 1024] * 15))
    chunks, progress = await storage.read_output("acme", evaluation.id, Stream.STDOUT, 100, 1000)
    assert b"".join(c.data for c in chunks) == data[100:1100]
    assert progress.stdout_bytes == len(data)
    assert not progress.stdout_truncated
