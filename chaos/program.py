"""The self-identifying program every evaluation of a campaign runs, and how to read its output.

Each program knows its own request id and host tag. It first renames its process to the tag
(``/proc/self/comm``, which the host sees: that is how runs are counted from outside the
platform), prints ``begin <request id> <nonce> <start>`` with a nonce drawn inside the sandbox
(a new one per run, so two runs of one evaluation are told apart in its output) and the time it
started (Unix milliseconds: the sandbox shares the host's clock), sleeps, hashes its request id
``rounds`` times and prints ``end <request id> <nonce> <digest>``. A stored result is right only
if it holds exactly those two lines, with its own request id, one nonce and the digest the
checker computes on its side. The start time tells which attempt a stored result came from: a
run that started before the last attempt was claimed belongs to an older attempt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

__all__ = ["ParsedOutput", "begin_nonces", "expected_digest", "parse_output", "program"]

_TEMPLATE = """\
import hashlib, os, time
RID = {rid!r}
try:
    with open("/proc/self/comm", "w") as comm:
        comm.write({tag!r})
except OSError:
    pass
nonce = os.urandom(6).hex()
print("begin", RID, nonce, int(time.time() * 1000), flush=True)
time.sleep({seconds!r})
digest = RID.encode()
for _ in range({rounds!r}):
    digest = hashlib.sha256(digest).digest()
print("end", RID, nonce, digest.hex(), flush=True)
"""

_BEGIN = re.compile(rb"^begin (\S+) ([0-9a-f]{12}) ([0-9]{13})$", re.MULTILINE)
_END = re.compile(rb"^end (\S+) ([0-9a-f]{12}) ([0-9a-f]{64})$")


def program(rid: str, tag: str, seconds: float, rounds: int) -> str:
    """The Python source of one evaluation (``tag`` at most 15 bytes: a process name)."""
    if len(tag.encode()) > 15:
        raise ValueError(f"tag {tag!r} is longer than a process name")
    return _TEMPLATE.format(rid=rid, tag=tag, seconds=round(seconds, 3), rounds=rounds)


def expected_digest(rid: str, rounds: int) -> str:
    """The digest a run of ``program(rid, ..., rounds)`` prints last."""
    digest = rid.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@dataclasses.dataclass(frozen=True)
class ParsedOutput:
    """What one stored stdout says: the run's nonce, or why it is not a right output."""

    nonce: str
    problem: str
    # When the run began (Unix seconds), if the output says.
    started: float | None = None

    @property
    def ok(self) -> bool:
        """True when the output is exactly one whole run of the right program."""
        return not self.problem


def parse_output(stdout: bytes, rid: str, rounds: int) -> ParsedOutput:
    """Check ``stdout`` against the program of ``rid``: two lines, one nonce, the digest."""
    lines = stdout.split(b"\n")
    if len(lines) != 3 or lines[2] != b"":
        return ParsedOutput("", f"{len(stdout)} bytes in {len(lines) - 1} lines, not 2 lines")
    begin = _BEGIN.match(lines[0])
    end = _END.match(lines[1])
    if begin is None or end is None:
        return ParsedOutput("", f"malformed output {stdout[:120]!r}")
    nonce = begin.group(2).decode()
    started = int(begin.group(3)) / 1000
    if begin.group(1).decode() != rid or end.group(1).decode() != rid:
        return ParsedOutput(nonce, f"output of another request: {stdout[:120]!r}")
    if end.group(2).decode() != nonce:
        return ParsedOutput(nonce, "begin and end lines from two different runs")
    if end.group(3).decode() != expected_digest(rid, rounds):
        return ParsedOutput(nonce, "wrong digest", started)
    return ParsedOutput(nonce, "", started)


def begin_nonces(stdout: bytes, rid: str) -> set[str]:
    """The nonces of every ``begin`` line of ``rid`` in ``stdout`` (live output of one attempt)."""
    return {m.group(2).decode() for m in _BEGIN.finditer(stdout) if m.group(1).decode() == rid}
