"""Hostile programs against memory, CPU and time: H25, H26, H32, H36, H37, H38, H43."""

from __future__ import annotations

from textwrap import dedent

import pytest
from sandbox_helpers import MiB, Runner, assert_still_fast, run_until_printed, timed_run

from evalmesh_executor.sandbox import SandboxOutcome

CANARY = "print(sum(range(10)))"


@pytest.mark.parametrize("code", ["bytearray(10**11)", "' ' * 2**34"])
async def test_h25_impossible_allocations_fail_inside_the_job(run: Runner, code: str) -> None:
    result = await run(code)
    assert result.outcome in {SandboxOutcome.EXITED, SandboxOutcome.MEMORY_LIMIT}
    if result.outcome is SandboxOutcome.EXITED:
        assert b"MemoryError" in result.stderr


async def test_h25_touching_more_than_the_limit_is_a_memory_limit(run: Runner) -> None:
    result = await run("b = b'x' * (256 * 1024 * 1024)\nprint('survived')")
    assert result.outcome is SandboxOutcome.MEMORY_LIMIT
    assert result.stdout == b""
    assert result.peak_memory_bytes <= 64 * MiB


async def test_h26_a_slow_leak_hits_the_memory_limit_before_the_wall_limit(run: Runner) -> None:
    code = dedent("""
        import time
        kept = []
        while True:
            kept.append(b"x" * (1 << 20))
            time.sleep(0.01)
    """)
    result = await run(code, wall_timeout=5)
    assert result.outcome is SandboxOutcome.MEMORY_LIMIT
    assert result.wall_time_s < 5


async def test_h32_a_process_pool_is_held_to_its_cpu_share_and_a_neighbour_stays_fast(
    run: Runner,
) -> None:
    spinner = dedent("""
        import multiprocessing
        def spin(_):
            while True:
                pass
        with multiprocessing.Pool(16) as pool:
            print("spinning", flush=True)
            pool.map(spin, range(16))
    """)
    # The canary is timed alone first, on the same host, then beside the spinning pool.
    _, alone = await timed_run(run, CANARY)
    hog = await run_until_printed(
        run, spinner, b"spinning",
        cpu_quota=0.5, max_processes=64, memory_bytes=512 * MiB, wall_timeout=3,
    )  # fmt: skip
    canary, beside_the_hog = await timed_run(run, CANARY)
    result = await hog
    assert result.outcome is SandboxOutcome.TIMED_OUT
    assert result.cpu_time_s <= 0.5 * result.wall_time_s * 1.2 + 0.1
    assert canary.stdout == b"45\n"
    assert_still_fast(beside_the_hog, alone)


async def test_h36_sleeping_forever_times_out_at_the_wall_limit(run: Runner) -> None:
    result = await run("import time\ntime.sleep(10**9)", wall_timeout=2)
    assert result.outcome is SandboxOutcome.TIMED_OUT
    assert 2.0 <= result.wall_time_s < 2.5
    assert result.cpu_time_s < 0.5


async def test_h37_input_without_stdin_gets_eof_at_once(run: Runner) -> None:
    # Timed inside the job, around input() alone: the run's wall time holds more (on docker
    # the interpreter's start-up), and that part is the host's speed, not a wait for stdin.
    code = dedent("""
        import time
        started = time.monotonic()
        try:
            input()
        finally:
            print(time.monotonic() - started, flush=True)
    """)
    result = await run(code)
    assert result.outcome is SandboxOutcome.EXITED
    assert result.exit_code == 1
    assert b"EOFError" in result.stderr
    assert float(result.stdout) < 0.5, "input() waited for stdin"


async def test_h38_ignoring_termination_signals_still_times_out(run: Runner) -> None:
    code = dedent("""
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print("ignoring", flush=True)
        while True:
            pass
    """)
    result = await run(code, wall_timeout=1.5)
    assert result.outcome is SandboxOutcome.TIMED_OUT
    assert result.wall_time_s < 2.0
    assert result.stdout == b"ignoring\n"


async def test_h43_cpu_time_is_accounted_across_all_threads(run: Runner) -> None:
    # Each thread reports its own CPU time; the job's total must cover all of them, not
    # just the main thread's (which only waits).
    code = dedent("""
        import threading, time
        spent = []
        def spin():
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                pass
            spent.append(time.thread_time())
        threads = [threading.Thread(target=spin) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(sum(spent), max(spent), time.thread_time())
    """)
    result = await run(code, cpu_quota=4.0, wall_timeout=5)
    assert result.outcome is SandboxOutcome.EXITED
    threads_total, busiest, main_thread = map(float, result.stdout.split())
    assert threads_total > busiest * 1.5, "several threads used CPU"
    assert threads_total > 0.1
    assert result.cpu_time_s >= threads_total + main_thread - 0.02


@pytest.mark.parametrize("directory", ["/tmp", "/dev/shm"])
async def test_h27_empty_files_stop_at_the_scratch_file_cap_with_enospc(
    run: Runner, directory: str
) -> None:
    code = dedent(f"""
        import errno
        made = 0
        try:
            while True:
                open(f"{directory}/f{{made}}", "w").close()
                made += 1
        except OSError as e:
            print(made, errno.errorcode[e.errno])
    """)
    result = await run(code, scratch_inodes=3000, wall_timeout=20)
    # A clear limit of the job's own, as a full disk: not the memory limit or the wall clock.
    assert result.outcome is SandboxOutcome.EXITED, result
    made, name = result.stdout.split()
    assert name == b"ENOSPC"
    assert 2000 < int(made) < 3000
