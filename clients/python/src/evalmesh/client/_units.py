"""Human-friendly durations ("10s", "1m30s", "500ms") and sizes ("256M", "1GiB")."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["Duration", "Size", "format_bytes", "format_seconds", "parse_duration", "parse_size"]

Duration = float | int | timedelta | str
"""Seconds as a number, a ``timedelta``, or a string such as ``"10s"``, ``"1m30s"``, ``"500ms"``,
``"30d"``."""

Size = int | str
"""Bytes as an integer, or a string such as ``"256M"`` (K, M, G are powers of 1024)."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_UNIT_BYTES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(value: Duration) -> float:
    """Return ``value`` in seconds. Strings are a number (seconds) or parts like ``1m30s``."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float):
        return float(value)
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"{value!r} is not a duration: use e.g. 10s, 1m30s, 500ms, 30d or 2.5")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_size(value: Size) -> int:
    """Return ``value`` in bytes. K, M, G and T (with or without ``i``/``B``) are powers of 1024."""
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size: use e.g. 256M, 1G, 512KiB or 1048576")
    number, unit, _ = match.groups()
    return round(float(number) * _UNIT_BYTES[unit.lower()])


def format_bytes(count: int) -> str:
    """Render a byte count compactly: ``268435456`` is ``256MiB``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return f"{count}B"


def format_seconds(seconds: float) -> str:
    """Render seconds compactly: ``0.25`` is ``250ms``, ``75`` is ``1m15s``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
