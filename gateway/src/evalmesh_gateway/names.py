"""The syntax of every name-like field of the public API, exactly as the contract comments state it.

Names that select or identify something (tenants, label keys and values) are ASCII with a fixed
syntax, so they read the same in a shell, a URL, a log line and a SQL console; labels follow
Kubernetes, the syntax their users already know. Text written by people (a key's display name, a
cancel reason) may be any Unicode a person types, spaces included, but never a character that is
invisible or changes how the text around it reads or is laid out: Unicode general categories Cc
(controls: C0, DEL, C1, so no tab or newline), Cf (format: bidi overrides and isolates, zero-width
characters, the BOM), Zl and Zp (line and paragraph separators), Co, Cs and Cn (private use,
surrogates, unassigned). Lengths of free text are in UTF-8 bytes: the unit of the wire and storage.

Each check returns the rule that was broken, in words, or None; callers name the field.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "DISPLAY_NAME_MAX_BYTES",
    "REASON_MAX_BYTES",
    "label_key_problem",
    "label_value_problem",
    "tenant_problem",
    "text_problem",
]

DISPLAY_NAME_MAX_BYTES = 128
REASON_MAX_BYTES = 512

_TENANT = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?")
# A Kubernetes label name or value (at most 63 characters; the length is checked apart).
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
# A DNS subdomain: DNS labels joined by dots.
_PREFIX = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_NAME_MAX = 63
# Kubernetes allows a 253-character prefix; storage keeps keys of at most 128 characters.
_PREFIX_MAX = 63
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})

_TENANT_RULE = (
    "must be 1 to 64 of a-z, 0-9, '-' and '_', starting and ending with a letter or digit"
)
_LABEL_KEY_RULE = (
    "keys are a name of 1 to 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a "
    "letter or digit, optionally after a lowercase DNS subdomain prefix of at most 63 characters "
    "and '/' (Kubernetes label syntax)"
)
_LABEL_VALUE_RULE = (
    "values are empty or 1 to 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a "
    "letter or digit (Kubernetes label syntax)"
)


def tenant_problem(value: str) -> str | None:
    """The rule ``value`` breaks as a tenant name, or None."""
    return None if _TENANT.fullmatch(value) else _TENANT_RULE


def label_key_problem(key: str) -> str | None:
    """The rule ``key`` breaks as a label key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= _PREFIX_MAX and _PREFIX.fullmatch(prefix)):
        return _LABEL_KEY_RULE
    if len(name) > _NAME_MAX or not _LABEL_NAME.fullmatch(name):
        return _LABEL_KEY_RULE
    return None


def label_value_problem(value: str) -> str | None:
    """The rule ``value`` breaks as a label value, or None."""
    if value and (len(value) > _NAME_MAX or not _LABEL_NAME.fullmatch(value)):
        return _LABEL_VALUE_RULE
    return None


def text_problem(value: str, max_bytes: int) -> str | None:
    """The rule ``value`` breaks as free text of at most ``max_bytes`` UTF-8 bytes, or None."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return f"must be at most {max_bytes} bytes of UTF-8, got {size}"
    for char in value:
        if unicodedata.category(char) in _HIDDEN:
            return (
                "must be printable text without control, format (bidi, zero-width), line or "
                "paragraph separator, private-use or unassigned characters; "
                f"found U+{ord(char):04X}"
            )
    return None
