"""The bwrap sandbox runs programs and reports how they ended (real bwrap, real cgroups)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sandbox_helpers import SMALL, Runner, assert_gone, sha256_of_file

from evalmesh_executor.sandbox import (
    MAX_CHUNK_BYTES,
    OutputChunk,
    SandboxLimits,
    SandboxOutcome,
    SandboxRequest,
)
from evalmesh_executor.sandbox.bwrap import PYTHON, BwrapConfig, BwrapSandbox, Runtime
from evalmesh_executor.sandbox.core.canaries import CANARY_PROGRAM, canary_stdin, escaped_canaries


async def test_print_one_exits_zero_with_its_output(run: Runner) -> None:
    result = await run("print(1)")
    assert result.outcome is SandboxOutcome.EXITED
    assert (result.exit_code, result.signal) == (0, None)
    assert (result.stdout, result.stderr) == (b"1\n", b"")
    assert not result.stdout_truncated
    assert not result.stderr_truncated
    assert result.cpu_time_s > 0
    assert result.peak_memory_bytes > 0
    assert result.applied_limits == SMALL


@pytest.mark.parametrize("code", [0, 1, 3, 127, 128, 255])
async def test_exit_code_is_reported_as_the_program_chose_it(run: Runner, code: int) -> None:
    result = await run(f"import os; os._exit({code})")
    assert result.outcome is SandboxOutcome.EXITED
    assert (result.exit_code, result.signal) == (code, None)


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT, signal.SIGKILL, signal.SIGTERM])
async def test_death_by_signal_is_reported_as_that_signal(run: Runner, sig: int) -> None:
    result = await run(f"import os; os.kill(os.getpid(), {int(sig)})")
    assert result.outcome is SandboxOutcome.EXITED
    assert (result.exit_code, result.signal) == (None, sig)


async def test_uncaught_exception_is_a_user_failure_with_its_traceback(run: Runner) -> None:
    result = await run("raise ValueError('boom')")
    assert result.outcome is SandboxOutcome.EXITED
    assert result.exit_code == 1
    assert b"ValueError: boom" in result.stderr
    assert not result.outcome.platform_fault


# Programs whose way out shows what the interpreter does at exit, in its order: the uncaught
# exception or SystemExit, non-daemon threads, atexit, stdout and stderr flushed, the
# finalizers of the job's objects (cyclic garbage first, then __main__'s names in order).
ENDINGS = {
    "threads-atexit-finalizers": """
import atexit, sys, threading, time
class Noisy:
    def __init__(self, name):
        self.name = name
    def __del__(self):
        print("finalized", self.name)
kept = Noisy("global")
cycle = Noisy("cycle")
cycle.me = cycle
del cycle
out = open(1, "w", closefd=False)
out.write("buffered, never flushed\\n")
threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
atexit.register(print, "atexit")
print("main done")
sys.exit(3)
""",
    "uncaught-exception": "def f():\n    raise ValueError('boom')\nf()",
    "syntax-error": "print('unclosed'",
    "exit-message-unprintable": (
        "class Odd:\n    def __str__(self): raise RuntimeError\nraise SystemExit(Odd())"
    ),
    "exit-message": "import sys; sys.exit('bye')",
    "exit-code-past-a-byte": "import sys; sys.exit(2**32 + 5)",
    "exit-code-past-a-long": "import sys; sys.exit(2**70)",
    "keyboard-interrupt": "raise KeyboardInterrupt",
    "excepthook-exits": (
        "import sys\n"
        "def hook(kind, value, trace):\n"
        "    print('hooked', kind.__name__)\n"
        "    sys.exit(4)\n"
        "sys.excepthook = hook\n"
        "raise ValueError('x')"
    ),
    "excepthook-missing": "import sys\ndel sys.excepthook\n1/0",
    "excepthook-fails": "import sys\nsys.excepthook = lambda *_: 1/0\nraise ValueError('x')",
    "stdout-flush-fails": (
        "import sys\n"
        "class Out:\n"
        "    closed = False\n"
        "    def write(self, text): pass\n"
        "    def flush(self): raise OSError('nope')\n"
        "sys.stdout = Out()"
    ),
    "exit-function-rebound": "import os, sys\nos._exit = sys.exit = None\nprint('x')",
    "daemon-thread-left-running": (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "print('bye')"
    ),
    "cycle-with-gc-disabled": (
        "import gc\n"
        "gc.disable()\n"
        "class A:\n"
        "    def __del__(self): print('collected')\n"
        "a = A()\n"
        "a.me = a\n"
        "del a"
    ),
    "stdout-none": "import sys\nsys.stdout = None\nraise SystemExit(7)",
    "a-global-that-is-no-name": "globals()[1] = 'one'\nprint('ok')",
}


@pytest.mark.parametrize("code", ENDINGS.values(), ids=ENDINGS.keys())
async def test_a_program_ends_as_its_interpreter_ends_the_same_script(
    run: Runner, tmp_path: Path, code: str
) -> None:
    script = tmp_path / "main.py"
    script.write_text(code)
    argv = [*PYTHON.argv, str(script)]
    alone = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, cwd=tmp_path, env={}, timeout=30
    )
    result = await run(code)
    assert result.outcome is SandboxOutcome.EXITED
    status = result.exit_code if result.signal is None else -result.signal
    assert (result.stdout, status) == (alone.stdout, alone.returncode)
    expected = alone.stderr.replace(str(script).encode(), b"/job/main.py")
    assert _no_addresses(result.stderr) == _no_addresses(expected)


def _no_addresses(text: bytes) -> bytes:
    return re.sub(rb" at 0x[0-9a-f]+", b"", text)


async def test_stdin_is_delivered_byte_for_byte(run: Runner) -> None:
    data = bytes(range(256)) * 4000
    code = "import sys, hashlib; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"
    result = await run(code, stdin=data)
    assert result.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


async def test_stdin_cannot_be_modified_by_the_program(run: Runner) -> None:
    code = "import os\ntry:\n os.write(0, b'x')\nexcept OSError as e:\n print('refused', e.errno)"
    result = await run(code, stdin=b"abc")
    assert result.stdout.startswith(b"refused")


async def test_output_arrives_live_in_ordered_bounded_chunks(run: Runner) -> None:
    chunks: list[OutputChunk] = []
    first_seen: list[float] = []

    async def collect(chunk: OutputChunk) -> None:
        if not first_seen:
            first_seen.append(time.monotonic())
        chunks.append(chunk)

    code = (
        "import sys, time\n"
        "print('early', flush=True)\n"
        "time.sleep(1.0)\n"
        "sys.stdout.write('y' * 300000)\n"
        "sys.stderr.write('e' * 1000)\n"
    )
    result = await run(code, on_output=collect, max_output_bytes=1024 * 1024, wall_timeout=5)
    # Measured back from the end (the program sleeps 1 s after its first line), so the time
    # the sandbox takes to start on this host does not count.
    ended = time.monotonic()
    assert ended - first_seen[0] > 0.5, "the first line must arrive while the program runs"
    for stream, data in (("stdout", result.stdout), ("stderr", result.stderr)):
        mine = [c for c in chunks if c.stream == stream]
        assert [c.seq for c in mine] == list(range(len(mine)))
        assert all(len(c.data) <= MAX_CHUNK_BYTES for c in mine)
        assert [c.offset for c in mine] == [
            sum(len(p.data) for p in mine[:i]) for i in range(len(mine))
        ]
        assert b"".join(c.data for c in mine) == data
    assert len(result.stdout) == len(b"early\n") + 300000


async def test_the_runtime_identity_names_version_and_binary_digest(run: Runner) -> None:
    result = await run("print(1)")
    digest = sha256_of_file("/usr/bin/python3")
    assert result.runtime == "python"
    assert result.runtime_identity.startswith("python 3.")
    assert result.runtime_identity.endswith("sha256:" + digest)


async def test_an_unknown_runtime_is_a_platform_error_without_running(
    sandbox: BwrapSandbox,
) -> None:
    result = await sandbox.run(SandboxRequest(b"print(1)", runtime="cobol"))
    assert result.outcome is SandboxOutcome.PLATFORM_ERROR
    assert "cobol" in result.detail


async def test_a_sandbox_that_cannot_be_set_up_is_a_platform_error_with_bwraps_reason() -> None:
    broken = Runtime("python", PYTHON.argv, ro_binds=("/usr", "/nonexistent-evalmesh-runtime"))
    async with BwrapSandbox(BwrapConfig(runtimes={"python": broken})) as sandbox:
        result = await sandbox.run(SandboxRequest(b"print(1)", limits=SMALL))
        assert result.outcome is SandboxOutcome.PLATFORM_ERROR
        assert "nonexistent-evalmesh-runtime" in result.detail
        assert result.stdout == b""
        assert sandbox.live_jobs() == []


async def test_the_escape_canaries_do_detect_an_escape_when_run_unsandboxed() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        bare = await asyncio.create_subprocess_exec(
            "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
            "/usr/bin/python3", "-I", "-c", CANARY_PROGRAM.decode(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await bare.communicate(canary_stdin([port]))
    escaped = escaped_canaries(out)
    assert escaped is not None
    assert f"tcp:127.0.0.1:{port}" in escaped
    assert "proc:host-processes" in escaped


async def test_cancel_event_kills_within_a_second_and_keeps_partial_output(
    run: Runner,
) -> None:
    cancel = asyncio.Event()
    code = "import time\nprint('started', flush=True)\nwhile True: time.sleep(0.01)"

    seen = bytearray()
    cancelled: list[float] = []

    async def on_output(chunk: OutputChunk) -> None:
        seen.extend(chunk.data)
        if seen.endswith(b"\n") and not cancelled:
            cancelled.append(time.monotonic())
            cancel.set()

    result = await run(code, on_output=on_output, cancel=cancel, wall_timeout=30)
    returned = time.monotonic()
    assert result.outcome is SandboxOutcome.CANCELLED
    assert result.stdout == b"started\n"
    assert returned - cancelled[0] < 1.0  # from the cancel, not from the sandbox's start


async def test_task_cancellation_tears_the_sandbox_down_and_propagates(
    sandbox: BwrapSandbox,
) -> None:
    code = b"import time\nprint('started', flush=True)\ntime.sleep(60)"
    limits = SandboxLimits(wall_timeout=30)
    task = asyncio.ensure_future(sandbox.run(SandboxRequest(code, limits=limits)))
    await asyncio.sleep(0.5)
    running = sandbox.live_jobs()
    assert running, "the job should be running"
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10, "the wall timeout (30 s), not the cancel, ended it"
    await assert_gone(running)
    assert sandbox.live_jobs() == []


async def test_close_cancels_running_jobs(sandbox: BwrapSandbox) -> None:
    code = b"import time\ntime.sleep(60)"
    task = asyncio.ensure_future(sandbox.run(SandboxRequest(code, limits=SMALL)))
    await asyncio.sleep(0.3)
    await sandbox.close()
    assert (await task).outcome is SandboxOutcome.CANCELLED


async def test_self_check_finds_no_escape(sandbox: BwrapSandbox) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        escaped = await sandbox.self_check([server.getsockname()[1]])
    assert escaped == []
