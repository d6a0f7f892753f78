"""A Docker engine for tests, CI and benchmarks: the one that answers, or a private dockerd.

`engine_for_tests()` returns the base URL of an engine with the `python` runtime image built,
or the reason there is none. It uses DOCKER_HOST or /var/run/docker.sock when a daemon answers
there; otherwise, as root with Debian's docker.io installed, it starts a private dockerd
(no iptables, no bridge: sandboxes use network none) on a socket in a temporary directory.

The private daemon's data root, and so its images, is cached under
/var/tmp/evalmesh-docker/<recipe hash> (CACHE_ROOT): a later run (CI runs on a fresh clone
of the same machine) finds the runtime image already built, and a changed recipe gets a new
cache. A flock keeps two concurrent runs from sharing one data root (the second gets an
uncached one). The daemon is stopped by its pid at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUILD_SCRIPT",
    "CACHE_ROOT",
    "IMAGES",
    "ML_IMAGE",
    "PYTHON_IMAGE",
    "Engine",
    "build_runtime_image",
    "engine_for_tests",
    "recipe_hash",
]

# The executor's runtime images and their offline build. This package is installed editable from
# the checkout (scripts/setup) and never shipped, so the checkout is there.
IMAGES = Path(__file__).resolve().parents[3] / "services" / "executor-pool" / "images"
BUILD_SCRIPT = IMAGES / "build-offline"
CACHE_ROOT = Path("/var/tmp/evalmesh-docker")  # noqa: S108  (kept across runs on purpose)
PYTHON_IMAGE = "evalmesh-runtime-python:latest"
ML_IMAGE = "evalmesh-runtime-python-ml:latest"
SYSTEM_SOCKET = "/var/run/docker.sock"
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Engine:
    """An engine the tests may use: base_url for DockerConfig, DOCKER_HOST for the CLI."""

    base_url: str
    private: bool


def recipe_hash() -> str:
    """Hash of the image recipe (the build script and the ML requirements)."""
    digest = hashlib.sha256()
    for path in sorted([BUILD_SCRIPT, *IMAGES.rglob("requirements.txt")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _answers(base_url: str) -> bool:
    """True when GET /_ping on the engine's unix socket says OK."""
    path = base_url.removeprefix("unix://")
    if path == base_url:  # tcp:// and friends: trust the operator's DOCKER_HOST
        return True
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(2.0)
            client.connect(path)
            client.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"200 OK" in client.recv(4096)
    except OSError:
        return False


def _existing_engine() -> Engine | None:
    configured = os.environ.get("DOCKER_HOST")
    for url in ([configured] if configured else []) + [f"unix://{SYSTEM_SOCKET}"]:
        if _answers(url):
            return Engine(url, private=False)
    return None


def _lock_cache(directory: Path) -> int | None:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def _private_dockerd() -> Iterator[Engine]:
    """A dockerd of our own; raises RuntimeError with the reason if it cannot start."""
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if os.geteuid() != 0:
        raise RuntimeError("no Docker engine answers, and starting dockerd needs root")
    if not os.access(dockerd, os.X_OK):
        raise RuntimeError(
            "no Docker engine answers and dockerd is missing (apt-get install docker.io)"
        )
    run_dir = Path(tempfile.mkdtemp(prefix="emd-"))  # short: unix socket paths are limited
    cache = CACHE_ROOT / recipe_hash()
    lock = _lock_cache(cache)
    data_root = cache / "data" if lock is not None else run_dir / "data"
    sock = run_dir / "docker.sock"
    log = (run_dir / "dockerd.log").open("wb")
    argv = [
        dockerd, "--iptables=false", "--ip-masq=false", "--bridge=none",
        f"--host=unix://{sock}", f"--data-root={data_root}", f"--exec-root={run_dir / 'x'}",
        f"--pidfile={run_dir / 'docker.pid'}", "--log-level=warn",
    ]  # fmt: skip
    daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        _wait_until_answering(daemon, f"unix://{sock}", run_dir / "dockerd.log")
        yield Engine(f"unix://{sock}", private=True)
    finally:
        _stop(daemon)
        log.close()
        if lock is not None:
            os.close(lock)
        shutil.rmtree(run_dir, ignore_errors=True)


def _wait_until_answering(daemon: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not _answers(url):
        if daemon.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"dockerd did not start (exit {daemon.poll()}): {tail}")
        time.sleep(0.1)


def _stop(daemon: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid (dockerd stops its containers and containerd), then SIGKILL."""
    if daemon.poll() is not None:
        return
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def build_runtime_image(engine: Engine, target: str = "python") -> None:
    """images/build-offline TARGET against the engine (a no-op when the recipe is built)."""
    env = {**os.environ, "DOCKER_HOST": engine.base_url}
    done = subprocess.run(
        [str(BUILD_SCRIPT), target], env=env, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"build-offline {target} failed: {done.stderr[-1500:]}")


@contextlib.contextmanager
def engine_for_tests() -> Iterator[Engine | str]:
    """An engine with the python runtime image built, or the reason there is none."""
    if shutil.which("docker") is None:
        yield "the docker CLI is missing (apt-get install docker.io)"
        return
    existing = _existing_engine()
    stack = contextlib.ExitStack()
    with stack:
        try:
            engine = existing or stack.enter_context(_private_dockerd())
            build_runtime_image(engine)
        except RuntimeError as exc:
            yield str(exc)
            return
        yield engine
