"""A program's output on this process's stdout and stderr: exact bytes, or escaped text for people.

Output is any bytes. Written raw to a terminal, its escape sequences would clear the screen,
retitle the window or rewrite lines, and bidi controls would reorder what the user reads. So a
stream that goes to a terminal (unless ``--raw``) is decoded as UTF-8 and every control, bidi and
invisible character is drawn as a visible escape such as ``\\x1b`` or ``\\u202e``, by the rules of
the browser UI's output view (clients/web/src/output/output-text.ts): newlines and tabs stay,
"\\r\\n" reads as a newline, a lone "\\r" is shown, and bytes that are not UTF-8 show as U+FFFD.
Pipes, files and ``--raw`` get the exact bytes.
"""

from __future__ import annotations

import re
import sys
from typing import BinaryIO, TextIO

from evalmesh.client import Evaluation, OutputDecoder, Stream

__all__ = ["ProgramOutput", "escape_output"]

# C0 controls except \t and \n, DEL, C1 controls, bidi and invisible formatting characters, line
# and paragraph separators, and the BOM: the output view's set, less U+FFFD, which it keeps as is.
_SPECIAL = re.compile(
    "\r\n|[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f"
    "\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]"
)


def _stand_in(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\r\n":
        return "\n"
    if char == "\r":
        return "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_output(text: str) -> str:
    """``text`` with each control, bidi and invisible character replaced by a visible escape."""
    return _SPECIAL.sub(_stand_in, text)


class _SafeText:
    """One stream turned into escaped text chunk by chunk, as if it had arrived in one piece."""

    def __init__(self) -> None:
        self._decoder = OutputDecoder()
        self._carriage_return = False

    def feed(self, data: bytes) -> str:
        return self._escape(self._decoder.decode(data), final=False)

    def end(self, cut: bool) -> str:
        return self._escape(self._decoder.end(cut), final=True)

    def _escape(self, text: str, final: bool) -> str:
        # A "\r" at the end may be the first half of a "\r\n" that the next chunk completes.
        if self._carriage_return:
            text = "\r" + text
        self._carriage_return = not final and text.endswith("\r")
        return escape_output(text[:-1] if self._carriage_return else text)


class _Destination:
    """One of this process's output files, written as bytes or as escaped text."""

    def __init__(self, file: TextIO, raw: bool) -> None:
        self._out: BinaryIO = file.buffer
        self._encoding = file.encoding or "utf-8"
        self.escaped = not raw and file.isatty()
        self._text = _SafeText()

    def write(self, data: bytes) -> None:
        self._send(self._encode(self._text.feed(data)) if self.escaped else data)

    def end(self, cut: bool) -> None:
        if self.escaped:
            self._send(self._encode(self._text.end(cut)))

    def restart(self) -> None:
        self._text = _SafeText()

    def _encode(self, text: str) -> bytes:
        # A terminal that is not UTF-8 gets escapes for what it cannot show, never stray bytes.
        return text.encode(self._encoding, errors="backslashreplace")

    def _send(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._out.flush()


class ProgramOutput:
    """Copies a program's stdout and stderr to this process's stdout and stderr."""

    def __init__(self, raw: bool = False) -> None:
        self._files = {
            Stream.STDOUT: _Destination(sys.stdout, raw),
            Stream.STDERR: _Destination(sys.stderr, raw),
        }

    def write(self, stream: Stream, data: bytes) -> None:
        """The next bytes of ``stream``."""
        self._files[stream].write(data)

    def restart(self) -> None:
        """A new attempt starts both streams over; what the old one left unfinished is dropped."""
        for file in self._files.values():
            file.restart()

    def end(self, evaluation: Evaluation) -> None:
        """Both streams are over; a character the output cap cut in two is left out."""
        self._files[Stream.STDOUT].end(evaluation.stdout_truncated)
        self._files[Stream.STDERR].end(evaluation.stderr_truncated)
