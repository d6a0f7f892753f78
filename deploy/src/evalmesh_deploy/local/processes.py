"""Start and stop local server processes by pid, with their output in log files."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ManagedProcess", "StartupError", "read_port_file"]

logger = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """StartupError means a process exited or did not become ready in time."""


def _die_with_parent(argv: Sequence[str]) -> list[str]:
    # setpriv sets the parent-death signal and execs the server: if the launcher dies, even by
    # SIGKILL, the kernel sends the server SIGTERM, so nothing outlives the launcher. (Doing it in a
    # preexec_fn instead is unsafe in a process with threads, such as a test runner using gRPC.)
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else list(argv)


class ManagedProcess:
    """ManagedProcess is one child server: started with argv (never a shell), stopped by its pid."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        # When the process was started (monotonic clock), so a supervisor can tell a crash at
        # start from an exit after a long run.
        self.started_at = 0.0
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The child's pid; the process must have been started."""
        return self._require().pid

    def start(self) -> None:
        """Start the process in its own session so a terminal's Ctrl-C reaches only the launcher."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                _die_with_parent(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        logger.info("started %s (pid %d)", self.name, self._popen.pid)

    def poll(self) -> int | None:
        """The exit status if the process has ended, else None."""
        return self._require().poll()

    def ensure_running(self) -> None:
        """Raise StartupError with the log's tail if the process has already exited."""
        status = self.poll()
        if status is not None:
            raise StartupError(f"{self.name} exited with status {status}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the process wrote, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process if it still runs."""
        popen = self._require()
        if popen.poll() is None:
            popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the process to end by itself; return its status.

        Raises subprocess.TimeoutExpired if it still runs.
        """
        return self._require().wait(timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; return the exit status."""
        popen = self._require()
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, timeout)
                popen.kill()
                popen.wait()
        return popen.returncode

    def _require(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen


def read_port_file(path: Path, process: ManagedProcess, timeout: float = 30.0) -> int:
    """Wait until ``process`` writes its bound port to ``path`` and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.ensure_running()
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text().strip())
        time.sleep(0.02)
    raise StartupError(f"{process.name} did not report its port within {timeout:.0f} s")
