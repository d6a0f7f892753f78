"""Keep the local mesh running: restart a component that exits, with backoff, like a supervisor.

One thread watches each component (nats-server, the four services, Envoy). When its process
exits, the supervisor reports it (on the terminal, in the component's log file, and as a restart
count in the state file), waits, and starts it again where it was: same port, same store, same
log, same identity (the executor keeps its instance id, so it ends its predecessor's leases at
once). The rest of the mesh keeps serving meanwhile; their clients reconnect by themselves.

The wait doubles with each crash in a row (``RestartPolicy``): 0.5 s, 1 s, 2 s, ... up to 30 s.
A run that lasted ``stable_after`` seconds was not a crash loop, so the count starts again. After
``max_fast_crashes`` crashes in a row, each within ``stable_after`` of its start, restarting is
pointless (a broken config, a port taken, a corrupt store): the supervisor gives up with the
component's last log lines, and ``evalmesh up`` stops the mesh and exits non-zero, since the mesh
cannot work without any of its components.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from evalmesh_common.server.health_client import wait_for_serving
from evalmesh_deploy.catalog import SERVICES
from evalmesh_deploy.local.mesh import LocalMesh
from evalmesh_deploy.local.processes import ManagedProcess, StartupError

__all__ = ["RestartPolicy", "Supervisor", "describe_exit"]

logger = logging.getLogger(__name__)

_POLL = 0.1
_SERVING_TIMEOUT = 120.0
_LOG_LINES = 20
_HEALTH = {spec.name: spec.health_service for spec in SERVICES}


@dataclass(frozen=True)
class RestartPolicy:
    """When to start an exited component again, and when to stop trying."""

    base_delay: float = 0.5
    max_delay: float = 30.0
    # A run at least this long was not a crash at start: the crash count begins again.
    stable_after: float = 30.0
    # Crashes in a row, each within stable_after of its start, before giving up.
    max_fast_crashes: int = 5

    def delay(self, crashes: int) -> float:
        """Seconds to wait before the restart that follows the ``crashes``-th crash in a row."""
        return float(min(self.max_delay, self.base_delay * 2 ** max(crashes - 1, 0)))


def describe_exit(status: int) -> str:
    """``exited with status 3`` or ``killed by SIGKILL``, from a Popen return code."""
    if status >= 0:
        return f"exited with status {status}"
    with contextlib.suppress(ValueError):
        return f"killed by {signal.Signals(-status).name}"
    return f"killed by signal {-status}"


class Supervisor:
    """Restarts the mesh's components as they exit, until stopped or given up."""

    def __init__(
        self,
        mesh: LocalMesh,
        report: Callable[[str], None],
        policy: RestartPolicy | None = None,
        on_give_up: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.mesh = mesh
        self.report = report
        self.policy = policy or RestartPolicy()
        self.on_give_up = on_give_up
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Watch every component of the mesh, each in its own thread."""
        for process in list(self.mesh.processes):
            thread = threading.Thread(
                target=self._watch, args=(process.name,), name=f"supervise-{process.name}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def stop(self, join_timeout: float = 5.0) -> None:
        """Stop watching (before the mesh is stopped, so nothing is restarted); idempotent.

        A thread still starting a component after ``join_timeout`` is left behind: the mesh's
        own stop refuses the process it starts (``LocalMesh.respawn``).
        """
        self._stopping.set()
        deadline = time.monotonic() + join_timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def _watch(self, name: str) -> None:
        crashes = 0
        while not self._stopping.is_set():
            process = self.mesh.process(name)
            status = self._wait_for_exit(process)
            if status is None:
                return  # stopping
            lived = time.monotonic() - process.started_at
            crashes = crashes + 1 if lived < self.policy.stable_after else 1
            if crashes >= self.policy.max_fast_crashes:
                self._give_up(name, process, status, crashes)
                return
            delay = self.policy.delay(crashes)
            self._say(
                name,
                f"{name} {describe_exit(status)} after {lived:.1f} s; "
                f"restarting it in {delay:.1f} s",
            )
            if self._stopping.wait(delay):
                return
            self._restart(name)

    def _wait_for_exit(self, process: ManagedProcess) -> int | None:
        while not self._stopping.is_set():
            status = process.poll()
            if status is not None:
                return status
            time.sleep(_POLL)
        return None

    def _restart(self, name: str) -> None:
        try:
            process = self.mesh.respawn(name)
        except StartupError as error:  # its exit is seen next round, as another crash
            if not self._stopping.is_set():
                why = str(error).splitlines()[0].rstrip(":")
                self._say(name, f"{name} did not start again ({why})")
            return
        self._say(name, f"{name} restarted (pid {process.pid})")
        health = _HEALTH.get(name)
        if health is None:
            return  # nats-server and Envoy are ready once they listen
        address = self.mesh.endpoints.services[name]
        deadline = time.monotonic() + _SERVING_TIMEOUT
        while not self._stopping.is_set() and process.poll() is None:
            with contextlib.suppress(TimeoutError):
                asyncio.run(wait_for_serving(address, health, timeout=1.0))
                self._say(name, f"{name} is SERVING again")
                return
            if time.monotonic() > deadline:
                self._say(name, f"{name} is running but not SERVING yet (its dependencies?)")
                return

    def _give_up(self, name: str, process: ManagedProcess, status: int, crashes: int) -> None:
        message = (
            f"{name} {describe_exit(status)} {crashes} times in a row, each within "
            f"{self.policy.stable_after:.0f} s of starting; giving up on it. "
            f"Its last log lines ({process.log_path}):\n{process.log_tail(_LOG_LINES)}"
        )
        self._say(name, message.splitlines()[0])
        self.on_give_up(message)

    def _say(self, name: str, line: str) -> None:
        logger.info("%s", line)  # the report is what the user sees; this is for embedders
        self.mesh.note(name, line)
        self.report(line)
