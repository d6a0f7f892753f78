"""Watch the host's processes: every run of a campaign program, and every orphaned sandbox process.

Sandboxes cannot write host files or reach the network, so the one channel a program has to
the host that does not go through the platform is its process: each program renames itself
to its tag (``/proc/self/comm``) and a thread here samples ``/proc`` ten times a second. A run
is one host pid that carried the tag; the program sleeps a few hundred milliseconds after
renaming itself, so no run slips between two samples.

The campaign makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``): a process the mesh
started that loses its parent (the executor, killed with -9) is re-parented to the campaign
rather than to the host's init. Such a process that is still alive a moment later is an
orphan: the platform promised that a sandbox dies with its executor. Dead ones are reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chaos.ledger import RunSighting

__all__ = ["HostWatch", "become_subreaper", "scan_processes"]

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_PROC = Path("/proc")
# A re-parented process alive this long after it was first seen is an orphan.
_ORPHAN_AFTER = 2.0


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans; False if the kernel refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def scan_processes() -> dict[int, tuple[str, int, str]]:
    """pid -> (name, parent pid, state letter) for every process on the host."""
    found: dict[int, tuple[str, int, str]] = {}
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                text = stat.read().decode(errors="replace")
        except OSError:
            continue
        # pid (name) state ppid ...: the name may hold spaces and parentheses.
        head, _, tail = text.rpartition(")")
        fields = tail.split()
        if len(fields) < 2:
            continue
        found[int(entry.name)] = (head.partition("(")[2], int(fields[1]), fields[0])
    return found


class HostWatch:
    """A sampling thread: runs of tagged programs below this process, and orphans."""

    def __init__(
        self, prefix: str, known_pids: Callable[[], set[int]], interval: float = 0.1
    ) -> None:
        self.prefix = prefix
        self.known_pids = known_pids
        self.interval = interval
        self.runs: dict[int, RunSighting] = {}
        self.orphans: dict[int, str] = {}
        self._reparented: dict[int, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-hostwatch", daemon=True)
        self._me = os.getpid()

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Take one last sample and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sample()

    def sightings(self) -> list[RunSighting]:
        """Every run seen so far."""
        with self._lock:
            return [RunSighting(**vars(run)) for run in self.runs.values()]

    def alive_tagged(self) -> list[RunSighting]:
        """Runs still alive (not a zombie) at the last sample."""
        with self._lock:
            return [RunSighting(**vars(r)) for r in self.runs.values() if r.gone_at is None]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a sampler that dies would silently blind the checker
                log.exception("host sample failed")

    def sample(self) -> None:
        """Look at every process once."""
        now = time.time()
        processes = scan_processes()
        known = self.known_pids()
        with self._lock:
            self._note_runs(processes, now)
            self._note_reparented(processes, known, now)

    def _note_runs(self, processes: dict[int, tuple[str, int, str]], now: float) -> None:
        for pid, (name, _, state) in processes.items():
            if not name.startswith(self.prefix) or not _descends_from(pid, self._me, processes):
                continue
            run = self.runs.get(pid)
            if run is None or run.tag != name:
                run = self.runs[pid] = RunSighting(name, pid, now, now)
            if state == "Z":
                run.gone_at = run.gone_at or now
            else:
                run.last_seen = now
        for pid, run in self.runs.items():
            if run.gone_at is None and pid not in processes:
                run.gone_at = now

    def _note_reparented(
        self, processes: dict[int, tuple[str, int, str]], known: set[int], now: float
    ) -> None:
        for pid, (name, ppid, state) in processes.items():
            if ppid != self._me or pid in known:
                continue
            if state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                continue
            first, _ = self._reparented.setdefault(pid, (now, name))
            if now - first >= _ORPHAN_AFTER and pid not in self.orphans:
                when = time.strftime("%H:%M:%S", time.localtime(first))
                alive = f"re-parented at {when}, alive {now - first:.1f} s later"
                self.orphans[pid] = f"{name} (pid {pid}, state {state}, {_cmdline(pid)}): {alive}"
                log.warning("orphan: %s", self.orphans[pid])
        for pid, (first, _) in list(self._reparented.items()):
            entry = processes.get(pid)
            if entry is None or entry[2] == "Z" or entry[1] != self._me:
                del self._reparented[pid]
                if pid in self.orphans:
                    self.orphans[pid] += f"; gone {now - first:.1f} s after re-parenting"


def _descends_from(pid: int, ancestor: int, processes: dict[int, tuple[str, int, str]]) -> bool:
    for _ in range(64):
        entry = processes.get(pid)
        if entry is None:
            return False
        pid = entry[1]
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


def _cmdline(pid: int) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "gone"
    program, _, args = raw.decode(errors="replace").partition("\0")
    # The program's name without its folder: the description goes into a committed report.
    words = f"{program.rpartition('/')[2]} {args.replace(chr(0), ' ')}"
    return words.strip()[:160]
