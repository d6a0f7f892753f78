"""Program output through the ``evalmesh`` command on a terminal (a pty) and into pipes.

On a terminal, output cannot drive it: control, bidi and invisible characters show as escapes.
Pipes and ``--raw`` get the exact bytes. Shown as text, a cut never splits a character.
"""

from __future__ import annotations

import json
import os
import pty
import selectors
import subprocess
import tty

import pytest
from client_mesh import Cli, evalmesh_command

pytestmark = pytest.mark.slow

HOSTILE_STDOUT = b"\x1b]0;owned\x07\x1b[2Jtitle \xe2\x80\xae gnp.exe\r\nok\xff\n"
HOSTILE_STDERR = b"err\x1b[31m\xe2\x80\x8b\n"
HOSTILE = (
    f"import sys\nsys.stdout.buffer.write({HOSTILE_STDOUT!r})\n"
    f"sys.stderr.buffer.write({HOSTILE_STDERR!r})\n"
)
SHOWN_STDOUT = "\\x1b]0;owned\\x07\\x1b[2Jtitle \\u202e gnp.exe\nok\ufffd\n".encode()
SHOWN_STDERR = b"err\\x1b[31m\\u200b\n"
# Each byte of "€", and a "\r\n", written in separate chunks that the watch delivers apart.
SPLIT = (
    "import sys, time\n"
    "for piece in (b'\\xe2', b'\\x82', b'\\xac', b'\\r', b'\\n'):\n"
    "    sys.stdout.buffer.write(piece)\n"
    "    sys.stdout.flush()\n"
    "    time.sleep(0.3)\n"
)
# 2000 euro signs (6000 bytes) under a 1 KiB cap: the stored 1024 bytes end inside a character.
CAPPED = "import sys\nsys.stdout.write('€' * 2000)\n"
CAPPED_BYTES = ("€" * 342).encode()[:1024]


def on_terminal(evalmesh: Cli, *args: str) -> tuple[int, bytes, bytes]:
    """Run ``evalmesh ARGS`` with stdout and stderr on pseudo-terminals; return what they showed."""
    masters, slaves = zip(*(pty.openpty() for _ in range(2)), strict=True)
    for slave in slaves:
        tty.setraw(slave)  # no newline translation: the test sees the bytes the CLI wrote
    process = subprocess.Popen(
        [*evalmesh_command(), *args],
        stdin=subprocess.DEVNULL,
        stdout=slaves[0],
        stderr=slaves[1],
        env=evalmesh.env,
        cwd=evalmesh.cwd,
    )
    for slave in slaves:
        os.close(slave)
    shown = _read_until_closed(masters)
    return process.wait(timeout=60), shown[masters[0]], shown[masters[1]]


def _read_until_closed(masters: tuple[int, ...]) -> dict[int, bytes]:
    shown = dict.fromkeys(masters, b"")
    with selectors.DefaultSelector() as selector:
        for master in masters:
            selector.register(master, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select(timeout=60):
                try:
                    data = os.read(key.fd, 65536)
                except OSError:  # EIO: every slave end is closed
                    data = b""
                if not data:
                    selector.unregister(key.fd)
                    os.close(key.fd)
                shown[key.fd] += data
    return shown


def submitted(evalmesh: Cli, code: str, *args: str) -> str:
    """The id of a finished evaluation of ``code``."""
    result = evalmesh("run", *args, "--json", "-c", code)
    return str(json.loads(result.stdout)["id"])


def test_logs_on_a_terminal_shows_control_bidi_and_invisible_characters_as_escapes(
    evalmesh: Cli,
) -> None:
    evaluation_id = submitted(evalmesh, HOSTILE)
    code, stdout, stderr = on_terminal(evalmesh, "logs", evaluation_id)
    assert code == 0
    assert (stdout, stderr) == (SHOWN_STDOUT, SHOWN_STDERR)
    followed = on_terminal(evalmesh, "logs", "--follow", evaluation_id)
    assert followed == (0, SHOWN_STDOUT, SHOWN_STDERR)


def test_run_on_a_terminal_escapes_its_live_output(evalmesh: Cli) -> None:
    code, stdout, stderr = on_terminal(evalmesh, "run", "-c", HOSTILE)
    assert code == 0
    assert stdout == SHOWN_STDOUT
    assert stderr == SHOWN_STDERR


def test_logs_and_run_into_pipes_and_with_raw_on_a_terminal_keep_the_exact_bytes(
    evalmesh: Cli,
) -> None:
    evaluation_id = submitted(evalmesh, HOSTILE)
    for args in (
        ("logs", evaluation_id),
        ("logs", "--follow", evaluation_id),
        ("run", "-c", HOSTILE),
    ):
        piped = evalmesh(*args)
        assert (piped.returncode, piped.stdout, piped.stderr) == (0, HOSTILE_STDOUT, HOSTILE_STDERR)
        code, stdout, stderr = on_terminal(evalmesh, *args[:1], "--raw", *args[1:])
        assert (code, stdout, stderr) == (0, HOSTILE_STDOUT, HOSTILE_STDERR)


def test_a_character_split_between_live_chunks_is_shown_whole_on_a_terminal(
    evalmesh: Cli,
) -> None:
    code, stdout, _ = on_terminal(evalmesh, "run", "-c", SPLIT)
    assert code == 0
    assert stdout == "€\n".encode()


def test_live_json_output_events_hold_whole_characters_at_their_byte_offsets(
    evalmesh: Cli,
) -> None:
    evaluation_id = evalmesh("submit", "-c", SPLIT).stdout.decode().strip()
    lines = evalmesh("logs", "--follow", "--json", evaluation_id).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    output = [(event["offset"], event["data"]) for event in events if "stream" in event]
    assert "".join(data for _, data in output) == "€\r\n"
    assert output[0] == (0, "€") or output[0][1].startswith("€")
    assert all(len(data.encode()) + offset <= 5 for offset, data in output)


def test_a_character_cut_by_the_output_cap_is_left_out_of_text_but_kept_in_bytes(
    evalmesh: Cli,
) -> None:
    evaluation_id = submitted(evalmesh, CAPPED, "--max-output", "1K")
    piped = evalmesh("logs", evaluation_id)
    assert piped.stdout == CAPPED_BYTES
    for args in (("logs", evaluation_id), ("logs", "--follow", evaluation_id)):
        _, shown, _ = on_terminal(evalmesh, *args)
        assert shown == ("€" * 341).encode()
    _, live, _ = on_terminal(evalmesh, "run", "--max-output", "1K", "-c", CAPPED)
    assert live == ("€" * 341).encode()
    as_json = json.loads(evalmesh("logs", evaluation_id, "--json").stdout)
    assert as_json["stdout"] == "€" * 341
    events = [
        json.loads(line)
        for line in evalmesh("logs", "-f", "--json", evaluation_id).stdout.splitlines()
    ]
    text = "".join(event["data"] for event in events if event.get("stream") == "stdout")
    assert text == "€" * 341
    final = json.loads(evalmesh("run", "--json", "--max-output", "1K", "-c", CAPPED).stdout)
    assert (final["stdout"], final["stdout_truncated"]) == ("€" * 341, True)
