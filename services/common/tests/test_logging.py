"""configure_logging writes one parseable JSON object per line, once, with the useful fields."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

import pytest

from evalmesh_common.server import configure_logging

pytestmark = pytest.mark.usefixtures("restore_logging")


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_log_lines_are_parseable_with_service_and_severity() -> None:
    stream = io.StringIO()
    configure_logging("storage", "debug", stream=stream)
    logger = logging.getLogger("evalmesh.storage.repository")
    logger.debug("claimed %s", "ev_1", extra={"trace_id": "ab" * 16, "span_id": "cd" * 8})
    logger.warning("slow query", extra={"elapsed_ms": 1200, "query": {"table": "evaluations"}})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("write failed")

    first, second, third = _lines(stream)
    assert (first["service"], first["severity"]) == ("storage", "DEBUG")
    assert first["logger"] == "evalmesh.storage.repository"
    assert first["message"] == "claimed ev_1"
    assert (first["trace_id"], first["span_id"]) == ("ab" * 16, "cd" * 8)
    assert str(first["timestamp"]).endswith("Z")
    assert datetime.fromisoformat(str(first["timestamp"])).utcoffset() is not None
    assert (second["severity"], second["elapsed_ms"]) == ("WARNING", 1200)
    assert second["query"] == {"table": "evaluations"}
    assert third["severity"] == "ERROR"
    assert str(third["exception"]).startswith("Traceback")
    assert str(third["exception"]).endswith("ValueError: boom")


def test_configure_logging_twice_leaves_one_handler_at_the_new_level() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("gateway", "INFO", stream=first)
    configure_logging("gateway", "WARNING", stream=second)
    logging.getLogger("x").warning("once")
    logging.getLogger("x").info("filtered")
    assert first.getvalue() == ""
    assert [line["message"] for line in _lines(second)] == ["once"]


def test_values_json_cannot_encode_are_logged_as_text() -> None:
    stream = io.StringIO()
    configure_logging("scheduler", stream=stream)
    logging.getLogger("x").info("odd", extra={"payload": b"\xff"})
    (line,) = _lines(stream)
    assert line["payload"] == "b'\\xff'"


def test_an_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("scheduler", "chatty")
