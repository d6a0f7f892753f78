"""``evalmesh up`` starts the whole mesh, which the other commands then find on their own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from client_mesh import evalmesh_command

pytestmark = pytest.mark.slow


def test_up_starts_a_mesh_that_run_finds_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    env = {**os.environ, "EVALMESH_ADDRESS": "", "EVALMESH_API_KEY": "", "HOME": str(tmp_path)}
    env.pop("EVALMESH_HOME", None)
    state = tmp_path / ".evalmesh"
    up = subprocess.Popen(
        [*evalmesh_command(), "up", "--state-dir", str(state), "--edge-port", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (state / "mesh.json").exists() and up.poll() is None:
            assert time.monotonic() < deadline, "evalmesh up did not start in time"
            time.sleep(0.2)
        if up.poll() is not None:
            _, stderr = up.communicate()
            pytest.skip(f"the local mesh cannot start: {stderr.decode()[-500:]}")
        project = tmp_path / "work" / "deep"
        project.mkdir(parents=True)
        result = subprocess.run(
            [*evalmesh_command(), "run", "-c", "print('via the state file')"],
            env=env,
            cwd=project,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stdout) == (0, b"via the state file\n"), result.stderr
    finally:
        up.send_signal(signal.SIGINT)
        stdout, stderr = up.communicate(timeout=60)
    assert b"evalmesh is up." in stdout
    assert b"admin API key:" in stdout
    assert up.returncode == 0
    assert b"nothing left running" in stderr
    assert not (state / "mesh.json").exists()
