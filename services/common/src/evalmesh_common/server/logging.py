"""JSON log lines for every service: one object per line on stderr.

Each line carries ``timestamp`` (RFC 3339, UTC), ``severity``, ``service``, ``logger`` and
``message``; ``exception`` and ``stack`` when present; every ``extra=`` key the call passed; and,
while traces are on (``evalmesh_common.server.tracing``), the ``trace_id`` and ``span_id`` of the
span the line was written in. Only entry points call :func:`configure_logging`; libraries just
use ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["JsonFormatter", "TraceIds", "configure_logging", "set_trace_ids"]

TraceIds = Callable[[], tuple[str, str] | None]
"""The current span's (trace_id, span_id) in hex, or None outside a span."""

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_MARK = "_evalmesh_json_handler"
_trace_ids: TraceIds | None = None  # set by tracing while traces are on


def set_trace_ids(source: TraceIds | None) -> None:
    """Stamp every line with what ``source`` returns (None: no ids, the default)."""
    global _trace_ids  # one log pipeline per process, like the root logger
    _trace_ids = source


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object for ``service``."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a single-line JSON document."""
        entry: dict[str, Any] = {
            "timestamp": _rfc3339(record.created),
            "severity": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if _trace_ids is not None and "trace_id" not in entry:
            ids = _trace_ids()
            if ids is not None:
                entry["trace_id"], entry["span_id"] = ids
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Send every log record as JSON to ``stream`` (default stderr) at ``level`` and above.

    Calling it again replaces the handler it installed before instead of adding a second one;
    handlers that others attached to the root logger (e.g. pytest's) are left alone.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(numeric)


def _rfc3339(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
