"""Sortable, unique identifiers: a prefix plus a ULID (48-bit milliseconds, 80 random bits).

The Crockford base32 text sorts like the number it encodes, so ids made later sort after ids
made earlier. Within one process the sequence is strictly increasing even inside one
millisecond (the random part is incremented, as in the ULID spec's monotonic mode), so
listings that break create-time ties by id keep creation order.
"""

from __future__ import annotations

import re
import secrets
import threading
import time

__all__ = ["is_evaluation_id", "new_api_key_id", "new_evaluation_id", "ulid"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_EVALUATION_ID = re.compile(f"ev_[{_ALPHABET}]{{26}}")
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = 0


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid(now_ms: int | None = None) -> str:
    """Return a 26-character ULID, greater than every one this process returned before."""
    global _last
    stamp = (int(time.time() * 1000) if now_ms is None else now_ms) & ((1 << 48) - 1)
    with _lock:
        value = stamp << _RANDOM_BITS | secrets.randbits(_RANDOM_BITS)
        if value <= _last:
            value = _last + 1
        _last = value
    return _encode(value)


def new_evaluation_id() -> str:
    """Return a new evaluation id, ``ev_`` + ULID."""
    return f"ev_{ulid()}"


def is_evaluation_id(text: str) -> bool:
    """Whether ``text`` has the form new_evaluation_id() gives."""
    return _EVALUATION_ID.fullmatch(text) is not None


def new_api_key_id() -> str:
    """Return a new API key id, ``key_`` + ULID."""
    return f"key_{ulid()}"
