"""Traces are off unless an OTLP endpoint is configured: then nothing is installed or loaded.

The traces themselves, across the real mesh, are tested in ``tests/test_traces.py``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from evalmesh_common.config import load_config
from evalmesh_common.server import configure_logging
from evalmesh_common.server.logging import set_trace_ids
from evalmesh_common.server.tracing import (
    TracingConfig,
    client_interceptors,
    server_interceptors,
    setup_tracing,
    span,
    tracer,
    tracing_enabled,
)

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}


def test_without_an_endpoint_no_provider_and_no_interceptors_are_installed() -> None:
    assert setup_tracing("storage", load_config(TracingConfig, {})) is False
    assert not tracing_enabled()
    assert tuple(server_interceptors()) == ()
    assert tuple(client_interceptors()) == ()
    assert tracer("evalmesh_executor") is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with span(None, "executor.claim") as current:
        assert current is None


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        (ENDPOINT, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_only_an_endpoint_turns_traces_on_and_the_standard_switches_turn_them_off(
    environ: dict[str, str], enabled: bool
) -> None:
    assert load_config(TracingConfig, environ).enabled is enabled


def test_an_exporter_other_than_otlp_is_refused() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        TracingConfig(exporter="zipkin")


# Everything a service loads and starts, in a fresh interpreter with no OTEL_* set.
_SERVICE_WITHOUT_TRACES = """
import asyncio, sys
from evalmesh_common.config import load_config
from evalmesh_common.messaging import NatsConnection
from evalmesh_common.server import ServerConfig, ServiceApp
from evalmesh_common.server.channels import plaintext_channel
from evalmesh_common.server.tracing import setup_tracing

async def main():
    config = load_config(ServerConfig, {})
    assert not setup_tracing("storage", config.tracing)
    async with ServiceApp("storage", config) as app:
        channel = plaintext_channel(app.address)
        await channel.close()
    print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))

asyncio.run(main())
"""


def test_a_service_without_an_endpoint_never_loads_opentelemetry() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", _SERVICE_WITHOUT_TRACES],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.usefixtures("restore_logging")
def test_log_lines_written_inside_a_span_carry_its_trace_and_span_ids() -> None:
    from evalmesh_common.server.tracing import _trace_ids

    stream = io.StringIO()
    configure_logging("executor-pool", stream=stream)
    logger = logging.getLogger("evalmesh_executor.worker")
    source = TracerProvider().get_tracer("test")  # not the global provider: nothing is exported
    set_trace_ids(_trace_ids())
    try:
        with source.start_as_current_span("executor.job") as current:
            logger.info("running")
        logger.info("outside")
    finally:
        set_trace_ids(None)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    context = current.get_span_context()
    assert inside["trace_id"] == trace.format_trace_id(context.trace_id)
    assert inside["span_id"] == trace.format_span_id(context.span_id)
    assert "trace_id" not in outside
