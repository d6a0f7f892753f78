"""Channel options and credentials shared by the sync and asyncio clients."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

__all__ = ["ChannelOption", "channel_options", "credentials", "metadata"]

ChannelOption = tuple[str, Any]

USER_AGENT = "evalmesh-python/0.1.0"
MIB = 1024 * 1024

# A watch may sit quiet for minutes while its evaluation queues: keepalive pings find a dead peer
# (the gateway allows one every 10 s), and a short reconnect backoff lets a restarted gateway be
# found again in about a second instead of gRPC's default of up to two minutes.
_DEFAULTS: tuple[ChannelOption, ...] = (
    ("grpc.primary_user_agent", USER_AGENT),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    # A full evaluation carries code, stdin and both outputs: more than gRPC's 4 MiB default.
    ("grpc.max_receive_message_length", 64 * MIB),
    # The library retries itself, with request_ids; gRPC's own retries would not know them.
    ("grpc.enable_retries", 0),
)


def channel_options(extra: Sequence[ChannelOption]) -> list[ChannelOption]:
    """The default options, with any of the same name replaced by ``extra``."""
    names = {name for name, _ in extra}
    return [option for option in _DEFAULTS if option[0] not in names] + list(extra)


def credentials(
    root_certificates: bytes | str | os.PathLike[str] | None,
) -> grpc.ChannelCredentials:
    """TLS credentials: the system roots, or PEM bytes, a PEM string, or a PEM file's path."""
    if root_certificates is None:
        return grpc.ssl_channel_credentials()
    if isinstance(root_certificates, bytes):
        pem = root_certificates
    elif isinstance(root_certificates, str) and root_certificates.lstrip().startswith("-----"):
        pem = root_certificates.encode()
    else:
        pem = Path(root_certificates).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=pem)


def metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates every RPC."""
    return (("authorization", f"Bearer {api_key}"),)
