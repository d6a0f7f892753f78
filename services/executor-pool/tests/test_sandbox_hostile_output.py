"""Hostile programs against the output path: H45, H46, H47, H48."""

from __future__ import annotations

import gc
import time
from textwrap import dedent

import pytest
from sandbox_helpers import MiB, Runner, rss_bytes

from evalmesh_executor.sandbox import OutputChunk, SandboxOutcome


async def test_h45_print_flood_is_capped_exactly_and_flagged(run: Runner) -> None:
    cap = 64 * 1024
    flooding: list[float] = []

    async def note_the_first_line(chunk: OutputChunk) -> None:
        if not flooding:
            flooding.append(time.monotonic())

    # A wall limit the flood never meets on any host, so the cap alone ends it; how soon is
    # timed from the first line, since the start before it is the host's speed.
    result = await run(
        'while True: print("x")',
        max_output_bytes=cap, on_output=note_the_first_line, wall_timeout=10,
    )  # fmt: skip
    stopped_after = time.monotonic() - flooding[0]
    assert result.outcome is SandboxOutcome.OUTPUT_LIMIT
    assert result.stdout == b"x\n" * (cap // 2)
    assert result.stdout_truncated
    assert not result.stderr_truncated
    assert stopped_after < 1.0


async def test_h45_executor_memory_stays_flat_under_a_flood_with_a_slow_consumer(
    run: Runner,
) -> None:
    seen = 0

    async def slow_consumer(chunk: OutputChunk) -> None:
        nonlocal seen
        seen += len(chunk.data)

    cap = 16 * MiB
    code = "import os\nblock = b'y' * 65536\nwhile True:\n    os.write(1, block)"
    await run(code, max_output_bytes=1024)  # warm up allocations of the first run
    gc.collect()
    before = rss_bytes()
    result = await run(code, max_output_bytes=cap, on_output=slow_consumer, wall_timeout=10)
    gc.collect()
    grown = rss_bytes() - before
    assert result.outcome is SandboxOutcome.OUTPUT_LIMIT
    assert len(result.stdout) == cap
    assert seen == cap
    # The kept output (cap, held once as chunks and once joined: the allocator keeps that peak in
    # RSS) plus pipe-sized read buffers; never the flood, which is far larger than what is kept.
    assert grown < 2 * cap + 16 * MiB
    del result


async def test_h46_one_gigantic_write_without_newline_is_capped(run: Runner) -> None:
    cap = 1 * MiB
    code = 'import sys\nsys.stdout.write("x" * 2**30)'
    # Building and encoding the 1 GiB string takes seconds of CPU before the first byte.
    result = await run(
        code, max_output_bytes=cap, memory_bytes=3 * 1024 * MiB, cpu_quota=2.0, wall_timeout=30
    )
    assert result.outcome is SandboxOutcome.OUTPUT_LIMIT
    assert result.stdout == b"x" * cap
    assert result.stdout_truncated


async def test_h47_interleaved_floods_on_both_streams_do_not_deadlock_and_are_capped(
    run: Runner,
) -> None:
    code = dedent("""
        import os
        block = b"e" * 65536
        for _ in range(160):
            os.write(2, block)
            os.write(1, block.replace(b"e", b"o"))
    """)
    result = await run(code, max_output_bytes=1 * MiB, wall_timeout=5)
    assert result.outcome is SandboxOutcome.OUTPUT_LIMIT
    assert len(result.stdout) <= MiB
    assert len(result.stderr) <= MiB
    assert result.stdout_truncated or result.stderr_truncated
    assert set(result.stdout) <= {ord("o")}
    assert set(result.stderr) <= {ord("e")}


async def test_h47_10_mb_on_stderr_then_10_mb_on_stdout_arrive_whole(run: Runner) -> None:
    code = dedent("""
        import sys
        sys.stderr.buffer.write(b"e" * 10_000_000)
        sys.stderr.flush()
        sys.stdout.buffer.write(b"o" * 10_000_000)
    """)
    # The wall limit only ends a deadlock: how fast 20 MB pass is the host's speed.
    result = await run(code, max_output_bytes=16 * MiB, wall_timeout=20)
    assert result.outcome is SandboxOutcome.EXITED
    assert result.exit_code == 0
    assert result.stderr == b"e" * 10_000_000
    assert result.stdout == b"o" * 10_000_000


@pytest.mark.parametrize(
    "payload", [b"\xff\xfe\x00\xc3\x28", bytes(range(256)), b"\r\n\r\x00\x1b[2J"]
)
async def test_h48_arbitrary_bytes_are_returned_exactly(run: Runner, payload: bytes) -> None:
    code = f"import sys\nsys.stdout.buffer.write({payload!r})\nsys.stderr.buffer.write({payload!r})"
    result = await run(code)
    assert result.stdout == payload
    assert result.stderr == payload
