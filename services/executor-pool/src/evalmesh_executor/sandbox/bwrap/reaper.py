"""The executor as the reaper of every process its sandboxes leave.

bwrap's outer process (the monitor, the executor's child) and the sandbox's pid 1 (its child,
inside the new pid namespace) can end in either order. When the monitor goes first, pid 1 and,
once pid 1 is gone, whatever was still in the namespace, lose their parent: without a subreaper
they become children of the host's init and linger as zombies until it reaps them. The executor
makes itself the subreaper of everything it starts (``PR_SET_CHILD_SUBREAPER``), so they become
its children, and reaps them: only zombies from a nested pid namespace, so it never takes the
exit status of a child asyncio waits for (the monitors live in the executor's own namespace).
A run counts as finished only once its sandbox's pid 1 is gone, reaped by whoever's child it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .cgroups import read_text

__all__ = [
    "StrandedSweeper",
    "become_subreaper",
    "kill_stranded",
    "reap_orphans",
    "wait_gone",
    "watch_children_by_pidfd",
]

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_PROC = Path("/proc")
_REAP_AFTER_KILL_S = 0.5


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans; False if the kernel refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("could not become a child subreaper: errno %d", ctypes.get_errno())
        return False
    return True


def watch_children_by_pidfd() -> bool:
    """Have asyncio learn of its children's exits from pidfds on the running loop.

    Python 3.11's default watcher starts a thread per child process to wait for it: a thread
    created and joined per sandbox. A pidfd watcher waits on the loop itself; it cut the
    executor's CPU per ``print(1)`` evaluation by about a tenth. Python 3.12 picks it by
    itself. Installed once per process, from the main thread (where the event loop policy
    attaches it to every loop set later); False where it is not used.
    """
    if sys.version_info >= (3, 12) or threading.current_thread() is not threading.main_thread():
        return False
    loop = asyncio.get_running_loop()
    watcher = asyncio.get_child_watcher()
    if isinstance(watcher, asyncio.PidfdChildWatcher):
        if not watcher.is_active():  # a loop started without set_event_loop()
            watcher.attach_loop(loop)
        return True
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):  # a kernel before 5.3
        return False
    watcher = asyncio.PidfdChildWatcher()
    asyncio.set_child_watcher(watcher)
    watcher.attach_loop(loop)
    return True


def reap_orphans() -> int:
    """Reap every zombie child of this process that came from a sandbox; return how many."""
    own_depth = _own_namespace_depth()
    reaped = 0
    for pid in _children():
        status = _status(pid)
        if status.get("State", "").startswith("Z") and len(status.get("NSpid", "").split()) > (
            own_depth
        ):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
    return reaped


async def wait_gone(pids: list[int], within_s: float, poll_s: float = 0.002) -> bool:
    """Reap orphans until none of ``pids`` exists any more; False if some outlive ``within_s``."""
    deadline = time.monotonic() + within_s
    # Usually they are gone already (bwrap's monitor reaps the sandbox's pid 1 before it
    # exits): then there is nothing to look for among this process's children.
    while _any_exists(pids):
        reap_orphans()
        if not _any_exists(pids):
            break
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


def _any_exists(pids: list[int]) -> bool:
    return any(os.path.exists(f"/proc/{pid}") for pid in pids)


def kill_stranded(marker: bytes, uid: int, min_age_s: float = 10.0) -> int:
    """SIGKILL every sandbox left waiting for a bwrap monitor that is gone; return how many.

    bwrap's monitor reports the sandbox's pid on the status pipe before it releases the
    sandbox (through an eventfd) to set itself up. An executor killed in between takes the
    monitor with it (by SIGPIPE on that report, or --die-with-parent), and the sandbox, not yet
    bound to anyone's life, waits on the eventfd for good: the pid 1 of its own pid namespace,
    so nothing inside can kill it. A sandbox's pid 1 lives under its monitor for as long as it
    lives, so such a process is one with: ``uid``; pid 1 of a nested pid namespace; a parent
    that is not bwrap; an age of at least ``min_age_s``; and ``marker`` (the boot program) in
    its command line, read last, as it is the one read that can wait on the process.
    """
    killed = 0
    for name in os.listdir(_PROC):  # listed at once: /proc is not held open while it is read
        if not name.isdigit():
            continue
        entry = _PROC / name
        status = _status(int(name))
        nspid = status.get("NSpid", "").split()
        if status.get("Uid", "").split()[:1] != [str(uid)] or len(nspid) < 2 or nspid[-1] != "1":
            continue
        if _comm(status.get("PPid", "0")) == "bwrap" or _age_s(entry) < min_age_s:
            continue
        try:
            if marker not in (entry / "cmdline").read_bytes():
                continue
        except OSError:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(name), signal.SIGKILL)
            killed += 1
    if killed:
        log.warning("killed %d sandbox(es) a killed executor left waiting for good", killed)
    return killed


class StrandedSweeper:
    """Runs kill_stranded at once and then every ``every_s``, on a daemon thread of its own:
    reading other processes' /proc entries can wait, and must hold up neither the event loop
    nor the executor's exit. It reaps what it killed, too: a stranded sandbox lost its monitor,
    so its parent is now this process (their subreaper), and no run waits for it."""

    def __init__(self, marker: bytes, uid: int, every_s: float, min_age_s: float = 10.0) -> None:
        self._marker, self._uid, self._every_s = marker, uid, every_s
        self._min_age_s = min_age_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stranded-sandboxes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if kill_stranded(self._marker, self._uid, self._min_age_s):
                    self._stop.wait(_REAP_AFTER_KILL_S)  # until the SIGKILLs have landed
                reap_orphans()
            except OSError as exc:  # /proc unreadable: nothing to sweep here
                log.warning("looking for stranded sandboxes failed: %s", exc)
            self._stop.wait(self._every_s)


def _comm(pid: str) -> str:
    try:
        return (_PROC / pid / "comm").read_text().strip()
    except OSError:
        return ""


def _age_s(proc_dir: Path) -> float:
    try:
        started = int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float((_PROC / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - started / os.sysconf("SC_CLK_TCK")


def _children() -> list[int]:
    found: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            found += [int(pid) for pid in read_text(f"/proc/self/task/{task}/children").split()]
    return found


def _status(pid: int) -> dict[str, str]:
    try:
        lines = read_text(f"/proc/{pid}/status").splitlines()
    except OSError:
        return {}
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


@functools.cache
def _own_namespace_depth() -> int:
    """How many pid namespaces this process is seen from (1: the host's only)."""
    return max(1, len(_status(os.getpid()).get("NSpid", "").split()))
