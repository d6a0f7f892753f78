"""The local mesh with TLS (`scripts/up --tls`): HTTPS at the edge with the security headers, a
TLS gateway port, and the CLI's and client's --tls / CA-bundle settings end to end."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from evalmesh.client import Client
from evalmesh_deploy.local import LocalMesh, MeshEndpoints
from evalmesh_testing.mesh import running_mesh

EVALMESH = str(Path(sys.executable).parent / "evalmesh")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMesh, MeshEndpoints]]:
    with running_mesh(tmp_path_factory.mktemp("tls-mesh"), tls=True) as local:
        yield local, local.endpoints


def _cli(endpoints: MeshEndpoints, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EVALMESH, "--address", endpoints.gateway_tls, "--api-key", endpoints.admin_api_key, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_state_file_names_the_https_edge_the_tls_port_and_the_ca(
    mesh: tuple[LocalMesh, MeshEndpoints],
) -> None:
    local, endpoints = mesh
    state = json.loads(local.state_file.read_text())
    assert state["url"].startswith("https://127.0.0.1:")
    assert state["gateway_tls"] == endpoints.gateway_tls != state["gateway"]
    assert Path(state["ca_file"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_the_cli_runs_over_tls_with_a_ca_bundle_and_fails_without_one(
    mesh: tuple[LocalMesh, MeshEndpoints],
) -> None:
    _, endpoints = mesh
    code = "import sys; print('over TLS'); sys.exit(3)"
    done = _cli(endpoints, "--tls", "--root-certificates", endpoints.ca_file, "run", "-c", code)
    assert (done.returncode, done.stdout) == (3, "over TLS\n"), done.stderr
    # A CA bundle alone implies TLS.
    implied = _cli(endpoints, "--root-certificates", endpoints.ca_file, "run", "-c", "print(1)")
    assert (implied.returncode, implied.stdout) == (0, "1\n"), implied.stderr
    # The system roots do not trust the local CA, and plaintext is no TLS handshake.
    assert _cli(endpoints, "--tls", "run", "-c", "print(1)").returncode == 69
    assert _cli(endpoints, "--no-tls", "run", "-c", "print(1)").returncode == 69


def test_the_client_library_connects_with_root_certificates_as_bytes_or_a_path(
    mesh: tuple[LocalMesh, MeshEndpoints],
) -> None:
    _, endpoints = mesh
    pem = Path(endpoints.ca_file).read_bytes()
    for roots in (pem, endpoints.ca_file):
        with Client(endpoints.gateway_tls, endpoints.admin_api_key, root_certificates=roots) as c:
            assert c.run("print(6 * 7)", timeout="10s").stdout == b"42\n"


def test_the_tls_port_refuses_plaintext(mesh: tuple[LocalMesh, MeshEndpoints]) -> None:
    _, endpoints = mesh
    with (
        grpc.insecure_channel(endpoints.gateway_tls) as channel,
        pytest.raises(grpc.FutureTimeoutError),
    ):
        grpc.channel_ready_future(channel).result(timeout=2)


def _https(
    endpoints: MeshEndpoints, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"} if body else {}
    request = urllib.request.Request(f"{endpoints.url}{path}", data=body, headers=headers)
    context = ssl.create_default_context(cafile=endpoints.ca_file)
    with urllib.request.urlopen(request, context=context, timeout=10) as reply:
        return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()


def test_the_edge_speaks_https_with_hsts_and_the_security_headers(
    mesh: tuple[LocalMesh, MeshEndpoints],
) -> None:
    _, endpoints = mesh
    status, headers, body = _https(endpoints, "/grpc.health.v1.Health/Check", b"\0\0\0\0\0")
    assert status == 200
    assert body.startswith(b"\x00\x00\x00\x00\x02\x08\x01")  # SERVING through gRPC-web
    assert headers["strict-transport-security"].startswith("max-age=63072000")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
