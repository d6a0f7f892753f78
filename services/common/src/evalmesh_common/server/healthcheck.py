"""``evalmesh-healthcheck SERVICE``: a container's health check, through grpc.health.v1.

It asks the server in its own container, on loopback, whether ``SERVICE`` is SERVING (every
server reports NOT_SERVING until its dependencies answer, and again while it shuts down), and
exits 0 if so, 1 if not. It reads the server's own settings: the port of
``EVALMESH_LISTEN_ADDRESS``, or of the plaintext internal listener when the server keeps one; TLS
when the server has it, trusting ``EVALMESH_HEALTHCHECK_TLS_CA_FILE`` (else the upstream CA, else
the server's own certificate) for the name ``EVALMESH_HEALTHCHECK_TLS_SERVER_NAME`` (localhost),
and presenting the upstream client certificate when one is set (mutual TLS).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from evalmesh_common.config import ConfigError, env_field, env_group, load_config
from evalmesh_common.server.config import ServerConfig
from evalmesh_common.server.tls import UpstreamTls

__all__ = ["HealthcheckConfig", "check", "main"]

_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class HealthcheckConfig:
    """The server's own settings, plus how the check trusts its certificate."""

    server: ServerConfig = env_group(ServerConfig)
    upstream: UpstreamTls = env_group(UpstreamTls)
    # Dial this instead of the server's own port on loopback.
    address: str | None = env_field("EVALMESH_HEALTHCHECK_ADDRESS", default=None)
    ca_file: str | None = env_field("EVALMESH_HEALTHCHECK_TLS_CA_FILE", default=None)
    server_name: str = env_field("EVALMESH_HEALTHCHECK_TLS_SERVER_NAME", default="localhost")

    def target(self) -> tuple[str, bool]:
        """The address to dial and whether it speaks TLS."""
        tls = self.server.tls
        if self.address is not None:
            return self.address, tls.enabled and tls.plaintext_listen_address is None
        if tls.plaintext_listen_address is not None:
            return _loopback(tls.plaintext_listen_address), False
        return _loopback(self.server.listen_address), tls.enabled

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials that trust the server's certificate."""
        roots = self.ca_file or self.upstream.ca_file or self.server.tls.cert_file
        return grpc.ssl_channel_credentials(
            root_certificates=Path(roots).read_bytes() if roots else None,
            private_key=_read(self.upstream.key_file),
            certificate_chain=_read(self.upstream.cert_file),
        )


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def _loopback(listen_address: str) -> str:
    return f"127.0.0.1:{listen_address.rpartition(':')[2]}"


def check(config: HealthcheckConfig, service: str) -> str:
    """The serving status of ``service`` as its enum name, or the error that prevented asking."""
    address, tls = config.target()
    if tls:
        options = [("grpc.ssl_target_name_override", config.server_name)]
        channel = grpc.secure_channel(address, config.credentials(), options)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            reply = stub.Check(request, timeout=_TIMEOUT_S)
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 when the service is SERVING."""
    args = sys.argv[1:] if argv is None else argv
    service = args[0] if args else ""
    try:
        config = load_config(HealthcheckConfig)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    status = check(config, service)
    print(f"{service or 'server'}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
