"""``evalmesh top`` in a real terminal (tmux): it shows the queue depths and quits on q."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_mesh import evalmesh_command, wait_until

from evalmesh.client import Client, Spec, State

pytestmark = pytest.mark.slow

SLEEPER = "import time\ntime.sleep(60)\n"


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[str]]:
    """A private tmux server (its own socket), killed afterwards."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/setup installs it)")
    command = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    yield command
    subprocess.run([*command, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def backlog(client: Client) -> Iterator[int]:
    """Fill every executor slot with sleepers and queue more LOW ones behind them."""
    slots = sum(executor.slots for executor in client.executors())
    labels = {"top": uuid.uuid4().hex[:12]}
    running = [client.submit(SLEEPER, labels=labels, priority="high") for _ in range(slots)]
    for item in running:
        wait_until(client, item.id, lambda e: e.state is not State.QUEUED)
    queued = client.submit_batch([Spec(SLEEPER, labels=labels, priority="normal")] * 3)
    low = [client.submit(SLEEPER, labels=labels, priority="low") for _ in range(4)]
    yield len(low)
    for item in [*running, *queued, *low]:
        client.cancel(item.id, reason="test over")


def screen(tmux: list[str]) -> str:
    return subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True, check=True
    ).stdout


def queue_depths(text: str) -> dict[str, int]:
    """The DEPTH column of the queue table, by priority."""
    depths: dict[str, int] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("high", "normal", "low") and words[1].isdigit():
            depths[words[0]] = int(words[1])
    return depths


def test_top_shows_queue_depth_per_priority_and_quits_on_q(
    tmux: list[str], backlog: int, cli_env: dict[str, str]
) -> None:
    env = [f"{name}={cli_env[name]}" for name in ("EVALMESH_ADDRESS", "EVALMESH_API_KEY")]
    top = [*evalmesh_command(), "top", "--interval", "0.5"]
    session = [*tmux, "new-session", "-d", "-s", "top", "-x", "180", "-y", "60"]
    subprocess.run([*session, "env", *env, "TERM=xterm-256color", *top], check=True)
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        text = screen(tmux)
        if queue_depths(text).get("low", 0) >= backlog:
            break
        time.sleep(0.3)
    assert "evalmesh top" in text
    depths = queue_depths(text)
    assert depths.get("low", 0) >= backlog, text
    assert depths.get("normal", 0) >= 3, text
    assert "executors" in text
    assert "recent evaluations" in text
    subprocess.run([*tmux, "send-keys", "-t", "top", "q"], check=True)
    for _ in range(50):
        alive = subprocess.run([*tmux, "has-session", "-t", "top"], capture_output=True)
        if alive.returncode != 0:
            break
        time.sleep(0.1)
    assert alive.returncode != 0, "top did not quit on q"
