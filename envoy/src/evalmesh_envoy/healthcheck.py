"""``python -m evalmesh_envoy.healthcheck URL``: the edge container's health check.

It calls ``grpc.health.v1.Health/Check`` as a browser would, over gRPC-web through the edge's own
listener (TLS when the URL is https), so it passes only while Envoy serves and the gateway behind
it reports SERVING. Standard library only: the edge image carries no gRPC runtime.
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

__all__ = ["check", "main"]

_SERVING = 1
# An empty HealthCheckRequest (the server's overall health) as one gRPC-web data frame.
_EMPTY_REQUEST = b"\x00\x00\x00\x00\x00"


def _context() -> ssl.SSLContext:
    # The check dials its own container on loopback, where the certificate's names (public
    # ones, when the operator brings a certificate) cannot match: it tests the listener, not
    # who it is.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check(url: str, timeout: float = 3.0) -> str:
    """The gateway's serving status through the edge at ``url``, or why it is unknown."""
    request = urllib.request.Request(  # noqa: S310 - the URL is the container's own listener
        f"{url.rstrip('/')}/grpc.health.v1.Health/Check",
        data=_EMPTY_REQUEST,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=_context()) as reply:  # noqa: S310
            body = reply.read()
    except (urllib.error.URLError, OSError) as error:
        return f"unreachable: {error}"
    # A data frame (flag 0, 4-byte length) holding field 1 (status) as a varint.
    if len(body) >= 7 and body[0] == 0 and body[5] == 0x08:
        return "SERVING" if body[6] == _SERVING else f"status {body[6]}"
    return "no status in the reply"


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the gateway behind the edge is SERVING."""
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else "https://127.0.0.1:8443"
    status = check(url)
    print(f"edge {url}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
