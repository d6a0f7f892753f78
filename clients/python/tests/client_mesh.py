"""Start the real local mesh for the client's integration tests, and wait on it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from evalmesh.client import Client, Evaluation
from evalmesh_deploy.local import LocalMesh
from evalmesh_testing.mesh import mesh_for_tests

__all__ = ["Cli", "Mesh", "evalmesh_command", "start_mesh", "wait_until"]


@dataclasses.dataclass
class Mesh:
    """The running mesh: the launcher (for its processes) and what clients need."""

    local: LocalMesh
    address: str
    admin_key: str
    state_dir: Path


def start_mesh(state_dir: Path) -> Mesh | str:
    """Start the mesh; return it, or the reason it cannot start here (the launcher's error)."""
    local = mesh_for_tests(state_dir)
    try:
        endpoints = local.start(timeout=120)
    except Exception as error:  # StartupError, or a service that does not exist yet
        local.stop()
        return f"the local mesh cannot start: {_first_lines(str(error))}"
    return Mesh(local, endpoints.services["gateway"], endpoints.admin_api_key, state_dir)


def _first_lines(text: str, count: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-count:])


def wait_until(
    client: Client,
    evaluation_id: str,
    done: Callable[[Evaluation], bool],
    timeout: float = 60.0,
) -> Evaluation:
    """Poll until ``done`` holds for the evaluation, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        evaluation = client.get(evaluation_id, full=False)
        if done(evaluation):
            return evaluation
        if time.monotonic() > deadline:
            raise AssertionError(f"{evaluation_id} is still {evaluation.state} after {timeout}s")
        time.sleep(0.2)


def evalmesh_command() -> list[str]:
    """The installed ``evalmesh`` console script (or the module, in an odd install)."""
    script = Path(sys.executable).parent / "evalmesh"
    return [str(script)] if script.exists() else [sys.executable, "-m", "evalmesh.cli"]


class Cli:
    """Runs the CLI as a subprocess and returns its exit code and raw output."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def __call__(
        self, *args: str, stdin: bytes = b"", timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the command to its end."""
        return subprocess.run(
            [*evalmesh_command(), *args],
            input=stdin,
            capture_output=True,
            env={**self.env, **env},
            cwd=self.cwd,
            timeout=timeout,
            check=False,
        )
