"""TLS on a service's listener (and mutual TLS), the plaintext internal listener beside it, the
container health check over both, and secrets read from files."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from evalmesh_common import ConfigError, Secret, env_field, load_config
from evalmesh_common.server import ServiceApp
from evalmesh_common.server.healthcheck import HealthcheckConfig, check
from evalmesh_common.server.tls import ServerTls, UpstreamTls
from evalmesh_deploy.certs import TlsFiles, ensure_server_certificate, local_tls

HEALTHCHECK = str(Path(sys.executable).parent / "evalmesh-healthcheck")
# What the start_app fixture (conftest.py beside this file) serves and starts.
TEST_SERVICE = "evalmesh.test.v1.TestService"
StartApp = Callable[..., Awaitable[ServiceApp]]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return local_tls(tmp_path_factory.mktemp("tls"))


async def _status(channel: grpc.aio.Channel) -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=TEST_SERVICE), timeout=3)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _server_tls(tls: TlsFiles, **extra: str | None) -> ServerTls:
    return ServerTls(cert_file=str(tls.cert), key_file=str(tls.key), **extra)


async def test_a_server_with_a_certificate_serves_tls_and_refuses_plaintext(
    start_app: StartApp, tls: TlsFiles
) -> None:
    app = await start_app(tls=_server_tls(tls))
    upstream = UpstreamTls(ca_file=str(tls.ca))
    async with upstream.channel(f"localhost:{app.port}") as channel:
        assert await _status(channel) == "SERVING"
    async with grpc.aio.insecure_channel(app.address) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await _status(plaintext)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_plaintext_listener_serves_the_same_server_beside_tls(
    start_app: StartApp, tls: TlsFiles, tmp_path: Path
) -> None:
    port_file = tmp_path / "plaintext.port"
    app = await start_app(
        tls=_server_tls(
            tls, plaintext_listen_address="127.0.0.1:0", plaintext_port_file=str(port_file)
        )
    )
    assert app.plaintext_port is not None
    assert port_file.read_text().strip() == str(app.plaintext_port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.plaintext_port}") as channel:
        assert await _status(channel) == "SERVING"


async def test_mutual_tls_refuses_a_client_without_a_certificate_from_the_ca(
    start_app: StartApp, tls: TlsFiles, tmp_path: Path
) -> None:
    app = await start_app(tls=_server_tls(tls, client_ca_file=str(tls.ca)))
    target = f"localhost:{app.port}"
    without = UpstreamTls(ca_file=str(tls.ca))
    async with without.channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await _status(channel)
    client = ensure_server_certificate(tls.ca.parent, tmp_path / "client", ["executor-pool"])
    signed = UpstreamTls(ca_file=str(tls.ca), cert_file=str(client.cert), key_file=str(client.key))
    async with signed.channel(target) as channel:
        assert await _status(channel) == "SERVING"
    stranger = local_tls(tmp_path / "other")  # a certificate from another CA
    foreign = UpstreamTls(
        ca_file=str(tls.ca), cert_file=str(stranger.cert), key_file=str(stranger.key)
    )
    async with foreign.channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await _status(channel)


def test_half_configured_tls_is_refused_at_start(tls: TlsFiles) -> None:
    with pytest.raises(ValueError, match="go together"):
        ServerTls(cert_file=str(tls.cert))
    with pytest.raises(ValueError, match="needs EVALMESH_TLS_CERT_FILE"):
        ServerTls(client_ca_file=str(tls.ca))
    with pytest.raises(ValueError, match="for servers with TLS"):
        ServerTls(plaintext_listen_address="0.0.0.0:50050")
    with pytest.raises(ValueError, match="need EVALMESH_UPSTREAM_TLS_CA_FILE"):
        UpstreamTls(server_name="gateway")


async def test_the_health_check_asks_over_tls_or_over_the_plaintext_listener(
    start_app: StartApp, tls: TlsFiles
) -> None:
    app = await start_app(tls=_server_tls(tls, plaintext_listen_address="127.0.0.1:0"))
    over_tls = {
        "EVALMESH_LISTEN_ADDRESS": f"0.0.0.0:{app.port}",
        "EVALMESH_TLS_CERT_FILE": str(tls.cert),
        "EVALMESH_TLS_KEY_FILE": str(tls.key),
        "EVALMESH_HEALTHCHECK_TLS_CA_FILE": str(tls.ca),
    }
    config = load_config(HealthcheckConfig, over_tls)
    assert config.target() == (f"127.0.0.1:{app.port}", True)
    assert await asyncio.to_thread(check, config, TEST_SERVICE) == "SERVING"
    plaintext = {**over_tls, "EVALMESH_PLAINTEXT_LISTEN_ADDRESS": f"0.0.0.0:{app.plaintext_port}"}
    config = load_config(HealthcheckConfig, plaintext)
    assert config.target() == (f"127.0.0.1:{app.plaintext_port}", False)
    assert await asyncio.to_thread(check, config, TEST_SERVICE) == "SERVING"


async def test_the_health_check_command_exits_zero_only_while_serving(
    start_app: StartApp,
) -> None:
    app = await start_app()
    env = {**os.environ, "EVALMESH_LISTEN_ADDRESS": f"0.0.0.0:{app.port}"}

    def run(service: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HEALTHCHECK, service], env=env, capture_output=True, text=True, timeout=30
        )

    assert (await asyncio.to_thread(run, TEST_SERVICE)).returncode == 0
    missing = await asyncio.to_thread(run, "evalmesh.nothing.v1.Nothing")
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stdout
    await app.shutdown()
    assert (await asyncio.to_thread(run, TEST_SERVICE)).returncode == 1


def test_a_secret_can_come_from_the_file_its_FILE_variable_names(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Settings:
        token: Secret = env_field("EVALMESH_TEST_TOKEN")

    path = tmp_path / "token"
    path.write_text("from-a-file\n")
    settings = load_config(Settings, {"EVALMESH_TEST_TOKEN_FILE": str(path)})
    assert settings.token.reveal() == "from-a-file"
    direct = load_config(
        Settings, {"EVALMESH_TEST_TOKEN": "direct", "EVALMESH_TEST_TOKEN_FILE": str(path)}
    )
    assert direct.token.reveal() == "direct"
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(Settings, {"EVALMESH_TEST_TOKEN_FILE": str(tmp_path / "missing")})
