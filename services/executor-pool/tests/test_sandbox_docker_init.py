"""The docker backend's pid 1 (``sandbox.docker.init``) on its own, without a container.

Its helpers are tested as functions; the program itself runs here as pid 1 of a fresh pid
namespace (util-linux ``unshare``, as root), exactly as the container runs it: the same argv,
the hand-over on stdin, frames on stdout. A pid namespace of its own matters: pid 1 kills
"every other process" with ``kill(-1)``, which outside one would mean the host's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import dedent

import pytest

from evalmesh_executor.sandbox.bwrap import boot
from evalmesh_executor.sandbox.core.inside import CODE_FILENAME
from evalmesh_executor.sandbox.docker import init
from evalmesh_executor.sandbox.docker.protocol import (
    HANDOVER,
    HEADER,
    INIT_SOURCE,
    ExitFrame,
    FrameParser,
    handover,
    init_argv,
)
from evalmesh_executor.sandbox.docker.run import RunStats

# ------------------------------------------------------------------ the helpers, as functions


def test_the_executor_and_pid_1_speak_one_wire_format() -> None:
    assert HEADER is init.FRAME
    assert HANDOVER is init.HANDOVER
    sent = handover(b"print(1)", b"in", 12.5)
    assert HANDOVER.unpack(sent[: HANDOVER.size]) == (8, 2, 12.5)
    assert sent[HANDOVER.size :] == b"print(1)in"


def test_the_container_runs_this_modules_own_source_as_the_code_path() -> None:
    argv = init_argv(1.5)
    assert argv[:5] == ["/usr/bin/python3", "-I", "-B", "-u", "-c"]
    assert argv[5] == INIT_SOURCE == Path(init.__file__).read_text(encoding="utf-8")
    assert argv[6:] == ["1.500", CODE_FILENAME]
    assert boot.CODE_FILENAME == CODE_FILENAME  # the bwrap backend's first program, likewise


def test_counters_are_read_from_a_cgroup_v2_tree(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (tmp_path / "memory.peak").write_text("4096\n")
    (tmp_path / "memory.events").write_text("low 0\noom 1\noom_kill 2\n")
    assert init.counters(str(tmp_path)) == (1_500_000, 4096, 2)


def test_counters_are_read_from_a_cgroup_v1_tree(tmp_path: Path) -> None:
    for name, text in {
        "cpuacct/cpuacct.usage": "123456789\n",
        "memory/memory.max_usage_in_bytes": "8192\n",
        "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    }.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert init.counters(str(tmp_path)) == (123456789, 8192, 0)


def test_counters_that_cannot_be_read_are_unknown_and_so_reported(tmp_path: Path) -> None:
    assert init.counters(str(tmp_path)) == (-1, -1, -1)
    report = init.accounting(cpu_before=5, root=str(tmp_path))
    frame = ExitFrame.parse(b"exit 0 " + report)
    assert (frame.cpu_ns, frame.peak_bytes, frame.oom_kills) == (None, None, None)
    assert RunStats.from_exit(frame) is None  # the executor then asks the stats API


def test_cpu_time_is_counted_from_the_hand_over(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("usage_usec 3000\n")
    (tmp_path / "memory.peak").write_text("100\n")
    report = init.accounting(cpu_before=1_000_000, root=str(tmp_path))
    assert report == b"cpu_ns=2000000 peak=100 oom_kills=-1"


@pytest.mark.parametrize(
    ("status", "killed", "said", "code"),
    [
        (3 << 8, False, b"exit 3", 3),
        (137 << 8, False, b"exit 137", 137),  # exit(137) is an exit code, not a signal
        (signal.SIGSEGV, False, b"signal 11", 139),
        (signal.SIGKILL, True, b"killed 9", 137),  # pid 1 killed it on request
        (0, True, b"exit 0", 0),  # it exited by itself before the kill reached it
    ],
)
def test_the_exit_report_says_how_the_main_process_ended(
    status: int, killed: bool, said: bytes, code: int
) -> None:
    assert init.exit_report(status, killed) == (said, code)
    parsed = ExitFrame.parse(said + b" cpu_ns=1 peak=2 oom_kills=0")  # as the executor reads it
    assert parsed.killed is said.startswith(b"killed")


def test_the_program_refuses_to_run_unless_it_is_pid_1() -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-c", INIT_SOURCE, "1.0", CODE_FILENAME],
        input=handover(b"print('ran')", b"", 5.0),
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (init.NOT_PID_1_EXIT, b"", b"")


# ------------------------------------------------------------------ the program, as pid 1


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a pid namespace of its own needs root"
    if shutil.which("unshare") is None:
        return "util-linux unshare is missing"
    if not os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3 is missing"
    return None


@dataclass
class Pid1:
    """The init running as pid 1 of its own pid namespace; frames read from its stdout."""

    proc: asyncio.subprocess.Process
    parser: FrameParser = field(default_factory=FrameParser)
    frames: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def until(self, kind: bytes, within_s: float = 10.0) -> bytes:
        """Read frames until one of ``kind`` arrives; return all output so far of that kind."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(within_s):
            while not any(k == kind for k, _ in self.frames):
                data = await self.proc.stdout.read(65536)
                assert data, f"pid 1 ended without a {kind!r} frame: {self.frames}"
                self.frames += self.parser.feed(data)
        return b"".join(payload for k, payload in self.frames if k == kind)

    def output(self, kind: bytes) -> bytes:
        return b"".join(payload for k, payload in self.frames if k == kind)

    async def exit_code(self, within_s: float = 10.0) -> int:
        async with asyncio.timeout(within_s):
            return await self.proc.wait()


async def _start_pid1(idle_s: float) -> asyncio.subprocess.Process:
    """The container's command, as pid 1 of a new pid namespace (skips where there is none)."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    return await asyncio.create_subprocess_exec(
        "unshare", "--pid", "--fork", "--kill-child", "--", *init_argv(idle_s),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"HOSTNAME": "set-by-the-engine"},
    )  # fmt: skip


@pytest.fixture
async def pid1() -> AsyncIterator[Pid1]:
    proc = await _start_pid1(idle_s=5.0)
    started = Pid1(proc)
    try:
        yield started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _hand_over(pid1: Pid1, code: str, stdin: bytes = b"", backstop_s: float = 20.0) -> None:
    assert pid1.proc.stdin is not None
    pid1.proc.stdin.write(handover(dedent(code).encode(), stdin, backstop_s))


def _plain_script_globals() -> bytes:
    """What a ``python3 -I -c`` script sees in its namespace, for comparison."""
    code = "print(sorted(globals()), __doc__, __name__)"
    return subprocess.run(
        ["/usr/bin/python3", "-I", "-c", code], capture_output=True, check=True
    ).stdout


async def test_the_job_runs_as_a_plain_script_and_its_exit_is_reported(pid1: Pid1) -> None:
    _hand_over(
        pid1,
        """
        print(sorted(globals()), __doc__, __name__)
        import os, sys
        print(sys.argv, repr(sys.stdin.read()), os.environ.get("HOSTNAME"))
        print("to stderr", file=sys.stderr)
        sys.exit(3)
        """,
        stdin=b"the job's stdin",
    )
    report = await pid1.until(b"X")
    assert ExitFrame.parse(report).exit_code == 3
    lines = pid1.output(b"O").splitlines(keepends=True)
    assert lines[0] == _plain_script_globals()  # nothing of pid 1 left in its namespace
    assert lines[1] == f"['{CODE_FILENAME}'] \"the job's stdin\" None\n".encode()
    assert pid1.output(b"E") == b"to stderr\n"
    assert pid1.proc.stdin is not None
    pid1.proc.stdin.close()  # the executor detaches: pid 1 stops holding the container
    assert await pid1.exit_code() == 3


async def test_k_kills_the_job_and_the_report_says_killed(pid1: Pid1) -> None:
    _hand_over(pid1, "import time\nprint('started', flush=True)\ntime.sleep(60)")
    await pid1.until(b"O")
    assert pid1.proc.stdin is not None
    pid1.proc.stdin.write(b"K")
    report = ExitFrame.parse(await pid1.until(b"X", within_s=2.0))
    assert report.killed
    pid1.proc.stdin.close()
    assert await pid1.exit_code() == 137


async def test_when_the_main_process_ends_every_other_process_of_the_job_dies(
    pid1: Pid1,
) -> None:
    _hand_over(
        pid1,
        """
        import os, subprocess
        if os.fork() == 0:  # a daemon of its own session, holding nothing of the job's
            os.setsid()
            subprocess.Popen(["/usr/bin/python3", "-c", "import time; time.sleep(1000)"])
            os._exit(0)
        os.wait()
        print("left a daemon", flush=True)
        """,
    )
    report = ExitFrame.parse(await pid1.until(b"X", within_s=5.0))
    assert report.exit_code == 0
    assert pid1.output(b"O") == b"left a daemon\n"


async def test_the_lifeline_closing_ends_the_job_at_once(pid1: Pid1) -> None:
    _hand_over(pid1, "import time\nprint('started', flush=True)\ntime.sleep(60)")
    await pid1.until(b"O")
    assert pid1.proc.stdin is not None
    pid1.proc.stdin.close()  # the executor died
    assert await pid1.exit_code(within_s=2.0) == init.GONE_EXIT
    assert all(kind != b"X" for kind, _ in pid1.frames)


async def test_the_backstop_ends_a_job_the_executor_never_stops(pid1: Pid1) -> None:
    _hand_over(pid1, "import time\ntime.sleep(60)", backstop_s=0.5)
    assert await pid1.exit_code(within_s=5.0) == init.GONE_EXIT


async def test_a_syntax_error_is_the_jobs_own_failure(pid1: Pid1) -> None:
    _hand_over(pid1, "print(")
    report = ExitFrame.parse(await pid1.until(b"X"))
    assert report.exit_code == 1
    assert b"SyntaxError" in pid1.output(b"E")
    assert f'File "{CODE_FILENAME}", line 1'.encode() in pid1.output(b"E")


async def test_with_no_hand_over_within_the_idle_limit_pid_1_exits() -> None:
    waiting = Pid1(await _start_pid1(idle_s=0.2))
    assert await waiting.exit_code(within_s=5.0) == init.IDLE_EXIT
    assert waiting.frames == []
    assert waiting.proc.stdin is not None
    waiting.proc.stdin.close()
