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
import logging
import os
import sys
import threading
import time
from pathlib import Path

__all__ = ["become_subreaper", "reap_orphans", "wait_gone", "watch_children_by_pidfd"]

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_PROC = Path("/proc")


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
    own_depth = _namespace_depth(_PROC / "self")
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
    while True:
        reap_orphans()
        if not any((_PROC / str(pid)).exists() for pid in pids):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll_s)


def _children() -> list[int]:
    found: list[int] = []
    for task in (_PROC / "self" / "task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


def _status(pid: int) -> dict[str, str]:
    try:
        lines = (_PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return {}
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _namespace_depth(proc_dir: Path) -> int:
    for line in (proc_dir / "status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return len(line.split()) - 1
    return 1
