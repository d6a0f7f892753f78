"""TLS for the mesh's gRPC hops: a server's own certificate, and how a service dials upstreams.

Every server may serve TLS (``EVALMESH_TLS_CERT_FILE`` + ``EVALMESH_TLS_KEY_FILE``) and may then
require client certificates signed by ``EVALMESH_TLS_CLIENT_CA_FILE`` (mutual TLS). A server with
TLS may also keep a plaintext listener for its private network (``EVALMESH_PLAINTEXT_LISTEN_
ADDRESS``): the public gateway port is TLS while the edge and the container health check reach
the same server over the internal network, so an operator's public certificate needs no internal
names in it. Services dial their upstreams with TLS when ``EVALMESH_UPSTREAM_TLS_CA_FILE`` is
set, presenting ``EVALMESH_UPSTREAM_TLS_CERT_FILE``/``KEY_FILE`` when the upstream asks for them.
Files are read once, at start; a renewed certificate takes a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from evalmesh_common.config import env_field
from evalmesh_common.server.channels import channel_options, grpc_target
from evalmesh_common.server.tracing import client_interceptors

__all__ = ["ServerTls", "UpstreamTls"]


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


@dataclass(frozen=True)
class ServerTls:
    """ServerTls is a server's certificate, the client CA that turns on mutual TLS, and the
    optional plaintext listener kept for the private network."""

    cert_file: str | None = env_field("EVALMESH_TLS_CERT_FILE", default=None)
    key_file: str | None = env_field("EVALMESH_TLS_KEY_FILE", default=None)
    # Clients must present a certificate signed by this CA (mutual TLS); unset: any client.
    client_ca_file: str | None = env_field("EVALMESH_TLS_CLIENT_CA_FILE", default=None)
    # A second listener without TLS, for the internal network only (never publish it).
    plaintext_listen_address: str | None = env_field(
        "EVALMESH_PLAINTEXT_LISTEN_ADDRESS", default=None
    )
    # Where to write the plaintext listener's bound port (useful with port 0).
    plaintext_port_file: str | None = env_field("EVALMESH_PLAINTEXT_PORT_FILE", default=None)

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("EVALMESH_TLS_CERT_FILE and EVALMESH_TLS_KEY_FILE go together")
        if self.cert_file is None and self.client_ca_file is not None:
            raise ValueError("EVALMESH_TLS_CLIENT_CA_FILE needs EVALMESH_TLS_CERT_FILE")
        if self.cert_file is None and self.plaintext_listen_address is not None:
            raise ValueError("EVALMESH_PLAINTEXT_LISTEN_ADDRESS is for servers with TLS")

    @property
    def enabled(self) -> bool:
        """True when the main listener serves TLS."""
        return self.cert_file is not None

    def credentials(self) -> grpc.ServerCredentials:
        """The main listener's credentials (reads the files now)."""
        if self.cert_file is None or self.key_file is None:
            raise RuntimeError("TLS is not configured")
        pair = (Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())
        client_ca = _read(self.client_ca_file)
        return grpc.ssl_server_credentials(
            [pair],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


@dataclass(frozen=True)
class UpstreamTls:
    """UpstreamTls says how this service dials the mesh's other services."""

    ca_file: str | None = env_field("EVALMESH_UPSTREAM_TLS_CA_FILE", default=None)
    cert_file: str | None = env_field("EVALMESH_UPSTREAM_TLS_CERT_FILE", default=None)
    key_file: str | None = env_field("EVALMESH_UPSTREAM_TLS_KEY_FILE", default=None)
    # The name to check upstream certificates against, when it is not the dialled host's.
    server_name: str | None = env_field("EVALMESH_UPSTREAM_TLS_SERVER_NAME", default=None)

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "EVALMESH_UPSTREAM_TLS_CERT_FILE and EVALMESH_UPSTREAM_TLS_KEY_FILE go together"
            )
        if self.ca_file is None and (self.cert_file is not None or self.server_name is not None):
            raise ValueError("upstream TLS settings need EVALMESH_UPSTREAM_TLS_CA_FILE")

    @property
    def enabled(self) -> bool:
        """True when upstreams are dialled with TLS."""
        return self.ca_file is not None

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials: the CA, and this service's certificate for mutual TLS."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )

    def options(self) -> list[tuple[str, Any]]:
        """Channel options the TLS settings imply (the name override)."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """An asyncio channel to ``address`` (one or several replicas, see ``channels``),
        balanced over them: TLS when configured, else plaintext; traced when traces are on."""
        target, balanced = grpc_target(address), channel_options(options)
        traced = client_interceptors()
        if not self.enabled:
            return grpc.aio.insecure_channel(target, options=balanced, interceptors=traced)
        return grpc.aio.secure_channel(
            target,
            self.credentials(),
            options=[*balanced, *self.options()],
            interceptors=traced,
        )
