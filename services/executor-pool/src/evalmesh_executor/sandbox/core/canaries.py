"""Escape canaries: a program run inside the sandbox that tries the ways out that matter.

Each canary prints `ESCAPED <name>` only if its attempt succeeded. The loopback ports to
probe arrive on stdin as JSON, so the program text is constant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .models import SandboxError, SandboxLimits, SandboxOutcome, SandboxRequest, SandboxResult

__all__ = [
    "CANARY_PROGRAM",
    "SELF_CHECK_LIMITS",
    "canary_request",
    "canary_stdin",
    "escaped_canaries",
    "self_check_escapes",
]

CANARY_PROGRAM = b"""
import json, os, socket, sys

def tcp(host, port):
    socket.create_connection((host, port), timeout=1.0).close()

def unix(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        s.connect(path)

def open_for_write(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))

def see_host_processes():
    own = {1, os.getpid()}
    others = {int(p) for p in os.listdir("/proc") if p.isdigit()} - own
    if not others:
        raise LookupError("only the job's own processes are visible")

def attempt(name, action, *args):
    try:
        action(*args)
    except Exception:
        return
    print("ESCAPED", name, flush=True)

for port in json.loads(sys.stdin.read() or "[]"):
    attempt(f"tcp:127.0.0.1:{port}", tcp, "127.0.0.1", port)
attempt("tcp:169.254.169.254:80", tcp, "169.254.169.254", 80)
for path in ("/var/run/docker.sock", "/run/containerd/containerd.sock"):
    attempt("unix:" + path, unix, path)
for path in ("/escape", "/usr/escape", "/etc/escape", "/job/escape", "/proc/sysrq-trigger",
             "/proc/sys/kernel/printk_ratelimit", "/sys/kernel/uevent_helper"):
    attempt("write:" + path, open_for_write, path)
attempt("read:/etc/shadow", lambda: open("/etc/shadow", "rb").read())
attempt("proc:host-processes", see_host_processes)
print("CANARIES DONE", flush=True)
"""

_DONE = b"CANARIES DONE"


def canary_stdin(tcp_ports: Sequence[int]) -> bytes:
    """The stdin for CANARY_PROGRAM."""
    return json.dumps([int(port) for port in tcp_ports]).encode()


def escaped_canaries(stdout: bytes) -> list[str] | None:
    """Names of the canaries that escaped, or None if the program did not finish."""
    lines = stdout.splitlines()
    if _DONE not in lines:
        return None
    prefix = b"ESCAPED "
    return [line[len(prefix) :].decode() for line in lines if line.startswith(prefix)]


#: The limits the self-check's canaries run under, on every backend.
SELF_CHECK_LIMITS = SandboxLimits(
    wall_timeout=20.0, memory_bytes=128 * 1024 * 1024, max_processes=16, max_output_bytes=65536
)


def canary_request(runtime: str, tcp_ports: Sequence[int]) -> SandboxRequest:
    """The self-check's run: the canaries, aimed at ``tcp_ports``, in ``runtime``."""
    return SandboxRequest(CANARY_PROGRAM, canary_stdin(tcp_ports), runtime, SELF_CHECK_LIMITS)


def self_check_escapes(result: SandboxResult) -> list[str]:
    """The canaries that got out of the self-check's run; SandboxError if it did not finish."""
    escaped = escaped_canaries(result.stdout)
    if result.outcome is not SandboxOutcome.EXITED or escaped is None:
        raise SandboxError(f"self-check did not complete: {result.outcome} {result.detail}")
    return escaped
