"""Hostile programs against the network: H10, H13, H14, H15, H16, H55."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from textwrap import dedent

import pytest
from sandbox_helpers import Runner

from evalmesh_executor.sandbox import SandboxOutcome

TIMED_CONNECT = """
import socket, time
started = time.monotonic()
try:
    socket.create_connection(({host!r}, {port}), timeout=5).close()
    print("CONNECTED")
except OSError as e:
    print("refused", e.errno, time.monotonic() - started)
"""


def _host_address() -> str | None:
    """This host's primary non-loopback IPv4 address, if it has a route out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture(params=["loopback", "host-address"])
def listener(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """A real TCP server of the test process, as a platform service would be."""
    host = "127.0.0.1" if request.param == "loopback" else _host_address()
    if host is None:
        pytest.skip("this host has no non-loopback address")
    with socket.create_server((host, 0)) as server:
        server.setblocking(False)
        yield server


def _assert_refused_fast(stdout: bytes, within_s: float) -> None:
    word, _, elapsed = stdout.split()
    assert word == b"refused", stdout
    assert float(elapsed) < within_s


async def test_h13_the_job_cannot_connect_to_host_ports_and_fails_fast(
    run: Runner, listener: socket.socket
) -> None:
    host, port = listener.getsockname()[:2]
    result = await run(TIMED_CONNECT.format(host=host, port=port))
    _assert_refused_fast(result.stdout, 0.1)
    with pytest.raises(BlockingIOError):
        listener.accept()


async def test_h14_the_metadata_address_is_unreachable(run: Runner) -> None:
    result = await run(TIMED_CONNECT.format(host="169.254.169.254", port=80))
    _assert_refused_fast(result.stdout, 0.1)


async def test_h15_dns_lookups_fail_at_once(run: Runner) -> None:
    code = dedent("""
        import socket, time
        started = time.monotonic()
        try:
            socket.getaddrinfo("example.com", 443)
            print("RESOLVED")
        except OSError as e:
            print("failed", e.errno, time.monotonic() - started)
    """)
    result = await run(code)
    word, _, elapsed = result.stdout.split()
    assert word == b"failed"
    assert float(elapsed) < 0.1


@pytest.mark.parametrize(
    "path", ["/var/run/docker.sock", "/run/containerd/containerd.sock", "/run/nats.sock"]
)
async def test_h10_platform_unix_sockets_are_not_reachable(run: Runner, path: str) -> None:
    code = dedent(f"""
        import os, socket
        print("exists" if os.path.exists({path!r}) else "absent")
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect({path!r})
            print("CONNECTED")
        except OSError as e:
            print("refused", e.errno)
    """)
    result = await run(code)
    assert result.stdout.splitlines()[0] == b"absent"
    assert result.stdout.splitlines()[1].startswith(b"refused")


async def test_h10_abstract_unix_sockets_of_the_host_are_not_reachable(run: Runner) -> None:
    name = "\0evalmesh-test-" + uuid.uuid4().hex
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(name)
        server.listen()
        server.setblocking(False)
        code = dedent(f"""
            import socket
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect({name!r})
                print("CONNECTED")
            except OSError as e:
                print("refused", e.errno)
        """)
        result = await run(code)
        assert result.stdout.startswith(b"refused")
        with pytest.raises(BlockingIOError):
            server.accept()


@pytest.mark.parametrize(
    ("family", "kind", "proto"),
    [
        ("AF_INET", "SOCK_RAW", 1),  # raw ICMP
        ("AF_INET6", "SOCK_RAW", 58),  # raw ICMPv6
        ("AF_PACKET", "SOCK_RAW", 3),  # packet, ETH_P_ALL
        ("AF_NETLINK", "SOCK_RAW", 0),  # netlink route
        ("AF_NETLINK", "SOCK_DGRAM", 9),  # netlink audit
    ],
)
async def test_h16_raw_packet_and_netlink_sockets_are_refused(
    run: Runner, family: str, kind: str, proto: int
) -> None:
    code = dedent(f"""
        import socket
        try:
            socket.socket(socket.{family}, socket.{kind}, {proto})
            print("CREATED")
        except OSError as e:
            print("refused", e.errno)
    """)
    result = await run(code)
    assert result.stdout.startswith(b"refused"), result.stdout


# Reports, at exit, how long the program ran from its first line: what comes before it (on
# docker the interpreter's start-up, inside the wall time) is the host's speed, not a wait
# for the network.
TIMED_FROM_THE_FIRST_LINE = (
    "import atexit, sys, time\n"
    "_started = time.monotonic()\n"
    "atexit.register(lambda: print('ran', time.monotonic() - _started, file=sys.stderr))\n"
)


@pytest.mark.parametrize(
    "code",
    [
        "import requests",
        "import subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-m', 'pip', 'install', 'requests'])\n"
        "raise SystemExit(r.returncode or 1)",
        "import urllib.request\nurllib.request.urlopen('https://example.com/', timeout=30)",
    ],
    ids=["import-requests", "pip-install", "urlopen"],
)
async def test_h55_installing_or_fetching_packages_fails_fast(run: Runner, code: str) -> None:
    result = await run(TIMED_FROM_THE_FIRST_LINE + code, wall_timeout=10)
    assert result.outcome is SandboxOutcome.EXITED
    assert result.exit_code not in (None, 0)
    word, ran = result.stderr.splitlines()[-1].split()
    assert word == b"ran", result.stderr
    assert float(ran) < 1.0
