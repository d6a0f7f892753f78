"""Per-job overhead of the bwrap sandbox: `print(1)` sandboxed vs bare /usr/bin/python3.

Runs both 20 times, interleaved, and prints the two medians and their ratio. The sandboxed
time is the whole `BwrapSandbox.run()` call: cgroups created and removed, bwrap started,
output read, teardown verified. Needs root (cgroups) and bwrap.

    .venv/bin/python services/executor-pool/benchmarks/sandbox_overhead.py [runs]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from evalmesh_executor.sandbox import SandboxOutcome, SandboxRequest
from evalmesh_executor.sandbox.bwrap import BwrapSandbox

BARE = ("/usr/bin/python3", "-c", "print(1)")


async def bare_run() -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *BARE, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    elapsed = time.perf_counter() - started
    assert out == b"1\n", out
    return elapsed


async def sandboxed_run(sandbox: BwrapSandbox) -> float:
    started = time.perf_counter()
    result = await sandbox.run(SandboxRequest(b"print(1)"))
    elapsed = time.perf_counter() - started
    assert result.outcome is SandboxOutcome.EXITED, result
    assert result.stdout == b"1\n", result
    return elapsed


async def main(runs: int) -> None:
    async with BwrapSandbox() as sandbox:
        await sandboxed_run(sandbox)  # warm the page cache for both
        await bare_run()
        bare, boxed = [], []
        for _ in range(runs):
            bare.append(await bare_run())
            boxed.append(await sandboxed_run(sandbox))
    bare_ms = statistics.median(bare) * 1000
    boxed_ms = statistics.median(boxed) * 1000
    print(f"runs: {runs} each, interleaved")
    print(f"bare /usr/bin/python3 -c 'print(1)': median {bare_ms:.1f} ms")
    print(f"bwrap sandbox print(1):              median {boxed_ms:.1f} ms")
    print(f"ratio: {boxed_ms / bare_ms:.2f}x  (overhead {boxed_ms - bare_ms:.1f} ms per job)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
