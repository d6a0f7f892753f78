"""Program output as text: decoded whole characters, never a character cut in two.

Output is bytes, and the stored bytes stay exact. Text is made from them only for people and JSON,
where invalid UTF-8 becomes U+FFFD, but a character split by a cut never shows as invalid bytes:
split by a chunk boundary of a live stream, it is decoded whole once the rest arrives; split by
the output cap, it is dropped from the text (its bytes stay in the stored output). A U+FFFD
therefore always means the program itself wrote bytes that are not UTF-8.
"""

from __future__ import annotations

import codecs

__all__ = ["OutputDecoder", "decode_output", "incomplete_tail"]

# The longest UTF-8 sequence is 4 bytes, so a character cut off at the end leaves at most 3.
_MAX_TAIL = 3


def _decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` start a UTF-8 character that is cut off (0 to 3)."""
    decoder = _decoder()
    decoder.decode(data[-_MAX_TAIL:])
    pending: bytes = decoder.getstate()[0]
    return len(pending)


def decode_output(data: bytes, cut: bool) -> str:
    """``data`` as text. ``cut`` says the stream was cut short (its cap was reached), so a
    character split at the end is dropped instead of being shown as an invalid byte."""
    end = len(data) - incomplete_tail(data) if cut else len(data)
    return data[:end].decode("utf-8", errors="replace")


class OutputDecoder:
    """One stream's text as its chunks arrive: a character split between chunks comes out whole."""

    def __init__(self) -> None:
        self._decoder = _decoder()

    @property
    def pending(self) -> int:
        """How many received bytes wait for the rest of their character."""
        return len(self._decoder.getstate()[0])

    def decode(self, data: bytes) -> str:
        """The text of the whole characters that ``data`` completes."""
        return self._decoder.decode(data)

    def end(self, cut: bool) -> str:
        """The stream is over: drop a split character when ``cut``, else show it as U+FFFD."""
        tail = "" if cut else self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return tail
