"""Program output made text: escaped for a terminal, and never a character cut in two."""

from __future__ import annotations

import pytest

from evalmesh.cli.terminal import escape_output
from evalmesh.client import OutputDecoder, decode_output
from evalmesh.client._text import incomplete_tail

EURO = "€".encode()  # three bytes


def test_ordinary_text_newlines_and_tabs_are_left_alone() -> None:
    assert escape_output("hello\n\tworld ✓ 日本\n") == "hello\n\tworld ✓ 日本\n"


def test_terminal_escape_sequences_are_shown_instead_of_obeyed() -> None:
    shown = escape_output("\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b0m")
    assert shown == "\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\x9b0m"


def test_crlf_reads_as_a_newline_but_a_lone_carriage_return_is_shown() -> None:
    assert escape_output("a\r\nb\rc") == "a\nb\\rc"


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\u202e", "\\u202e"),
        ("\u2066", "\\u2066"),
        ("\u061c", "\\u061c"),
        ("\u200b", "\\u200b"),
        ("\u200f", "\\u200f"),
        ("\u2028", "\\u2028"),
        ("\ufeff", "\\ufeff"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
    ],
)
def test_bidi_invisible_and_control_characters_are_drawn_as_escapes(char: str, shown: str) -> None:
    assert escape_output(f"a{char}b") == f"a{shown}b"


def test_no_byte_value_survives_as_a_control_character() -> None:
    shown = escape_output(decode_output(bytes(range(256)), cut=False))
    assert not [c for c in shown if (ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F]
    assert " !\"#$%&'()*+,-./0123456789" in shown


def test_a_character_split_between_chunks_is_decoded_whole() -> None:
    decoder = OutputDecoder()
    assert [decoder.decode(EURO[:1]), decoder.decode(EURO[1:2])] == ["", ""]
    assert decoder.pending == 2
    assert decoder.decode(EURO[2:] + b"!") == "€!"
    assert decoder.end(cut=False) == ""


def test_a_character_cut_off_when_the_stream_ends_is_invalid_unless_the_cap_cut_it() -> None:
    decoder = OutputDecoder()
    decoder.decode(b"a" + EURO[:2])
    assert decoder.end(cut=False) == "\ufffd"
    decoder.decode(b"a" + EURO[:2])
    assert decoder.end(cut=True) == ""


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_output_cut_by_its_cap_loses_only_the_split_character(keep: int) -> None:
    stored = ("€" * 3).encode()[: 3 + keep]
    tail = keep % 3
    assert incomplete_tail(stored) == tail
    assert decode_output(stored, cut=True) == "€" * (1 + keep // 3)
    assert decode_output(stored, cut=False) == "€" + "\ufffd" * bool(tail) + "€" * (keep // 3)


def test_bytes_that_are_not_utf8_stay_marked_even_at_a_cut() -> None:
    assert decode_output(b"ok\xff\xfe", cut=True) == "ok\ufffd\ufffd"
    assert decode_output(b"\xf0\x9f\x98\x80" + b"\xf0\x9f\x98", cut=True) == "😀"
    assert decode_output(b"\x80\x80\x80", cut=True) == "\ufffd" * 3
