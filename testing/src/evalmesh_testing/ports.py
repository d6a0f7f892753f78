"""Free loopback ports, for servers that must be started on a port known in advance (to be
restarted on it, or to be named in another server's settings before it runs)."""

from __future__ import annotations

import socket

__all__ = ["free_port"]

# Ports already handed out by this process. The kernel may offer a port again as soon as its probe
# socket is closed, so two servers planned one after the other could otherwise get the same one.
_handed_out: set[int] = set()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago and that this process has not
    handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
