"""OpenTelemetry traces: off unless an OTLP endpoint is configured, then end to end.

Configured by the standard ``OTEL_*`` variables only. While neither
``OTEL_EXPORTER_OTLP_ENDPOINT`` nor ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (or
``OTEL_SDK_DISABLED=true``, or ``OTEL_TRACES_EXPORTER=none``) nothing is set up: the SDK is not
even imported, no provider is installed, servers and channels get no interceptors, jobs carry no
trace headers and log lines no ids. Speed comes first; a mesh that exports traces nowhere pays
nothing for them.

When it is on, :func:`setup_tracing` (called once by the runner, before the app is built)
installs an SDK ``TracerProvider`` whose spans go in batches over OTLP/gRPC (``OTEL_BSP_*`` tune
the batches, ``OTEL_TRACES_SAMPLER`` samples, ``service.name`` is ``OTEL_SERVICE_NAME`` or the
service's own name), and from then on every ``ServiceApp`` server and every channel made by
``channels``/``tls`` carry the gRPC instrumentation's grpc.aio interceptors, JSON log lines
written inside a span carry its ``trace_id`` and ``span_id``, and :func:`tracer` gives a service
a tracer for its own spans. Health checks and reflection are not traced: probes run every second
in every service and would bury the evaluations' traces. :func:`shutdown_tracing` exports what
is still buffered when the service stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalmesh_common.config import env_field
from evalmesh_common.server.logging import set_trace_ids

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, SpanKind, Tracer

__all__ = [
    "TracingConfig",
    "client_interceptors",
    "server_interceptors",
    "setup_tracing",
    "shutdown_tracing",
    "span",
    "tracer",
    "tracing_enabled",
]

logger = logging.getLogger(__name__)

# Not traced: health checks and reflection (the probes' calls, every second, in every service).
_UNTRACED_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
_EXPORTERS = ("otlp", "none")
_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


@dataclass(frozen=True)
class TracingConfig:
    """The standard OpenTelemetry variables that decide whether traces are on, and where they go.

    The SDK reads the rest itself (``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_SCHEDULE_DELAY``,
    ``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``, ...).
    """

    endpoint: str | None = env_field("OTEL_EXPORTER_OTLP_ENDPOINT", default=None)
    traces_endpoint: str | None = env_field("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", default=None)
    # Default: the service's own name (gateway, scheduler, storage, executor-pool).
    service_name: str | None = env_field("OTEL_SERVICE_NAME", default=None)
    sdk_disabled: bool = env_field("OTEL_SDK_DISABLED", default=False)
    exporter: str = env_field("OTEL_TRACES_EXPORTER", default="otlp")

    def __post_init__(self) -> None:
        if self.exporter not in _EXPORTERS:
            raise ValueError(f"OTEL_TRACES_EXPORTER must be one of {', '.join(_EXPORTERS)}")

    @property
    def enabled(self) -> bool:
        """True when traces are to be exported: an endpoint is set and nothing turns them off."""
        configured = bool(self.traces_endpoint or self.endpoint)
        return configured and not self.sdk_disabled and self.exporter != "none"


@dataclass(frozen=True)
class _Tracing:
    provider: TracerProvider
    server_interceptors: tuple[Any, ...]
    client_interceptors: tuple[Any, ...]


_active: _Tracing | None = None


def tracing_enabled() -> bool:
    """True once :func:`setup_tracing` turned traces on in this process."""
    return _active is not None


def setup_tracing(service: str, config: TracingConfig) -> bool:
    """Install the SDK provider and the interceptors when ``config`` turns traces on.

    Returns whether traces are on. A second call changes nothing (OpenTelemetry's provider is
    global, set once per process).
    """
    global _active  # process-global, like OpenTelemetry's own provider
    if _active is not None or not config.enabled:
        return _active is not None
    name = config.service_name or service
    provider = _provider(name, config.traces_endpoint or config.endpoint)
    _active = _Tracing(provider, *_interceptors(provider))
    set_trace_ids(_trace_ids())
    logger.info("traces on: exporting over OTLP/gRPC", extra={"service_name": name})
    return True


def _interceptors(provider: TracerProvider) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The gRPC instrumentation's server and client interceptors, health and reflection left out."""
    from opentelemetry.instrumentation.grpc import (
        aio_client_interceptors,
        aio_server_interceptor,
        filters,
    )

    untraced = (filters.service_name(name) for name in _UNTRACED_SERVICES)
    traced = filters.negate(filters.any_of(*untraced))
    server = aio_server_interceptor(tracer_provider=provider, filter_=traced)  # type: ignore[no-untyped-call]
    clients = aio_client_interceptors(tracer_provider=provider, filter_=traced)  # type: ignore[no-untyped-call]
    return (server,), tuple(clients)


def _provider(service_name: str, endpoint: str | None) -> TracerProvider:
    """The SDK's provider, set as OpenTelemetry's global one; imported only here, so a process
    with traces off never loads the SDK, the exporter or the instrumentation."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing() -> None:
    """Export the spans still buffered and stop the exporter; nothing when traces are off."""
    global _active
    tracing, _active = _active, None
    if tracing is None:
        return
    set_trace_ids(None)
    tracing.provider.shutdown()


def server_interceptors() -> Sequence[Any]:
    """The grpc.aio server interceptors tracing adds (none while it is off)."""
    return () if _active is None else _active.server_interceptors


def client_interceptors() -> Sequence[Any]:
    """The grpc.aio channel interceptors tracing adds (none while it is off)."""
    return () if _active is None else _active.client_interceptors


def tracer(name: str) -> Tracer | None:
    """A tracer for a service's own spans, or None while traces are off."""
    return None if _active is None else _active.provider.get_tracer(name)


def span(
    source: Tracer | None,
    name: str,
    *,
    context: Context | None = None,
    kind: SpanKind | None = None,
    attributes: dict[str, str | int] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span named ``name``, current for the block, or nothing at all when ``source`` is None
    (traces off): the hot path then pays one comparison."""
    if source is None:
        return _NO_SPAN
    if kind is None:
        return source.start_as_current_span(name, context=context, attributes=attributes)
    return source.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def _trace_ids() -> Callable[[], tuple[str, str] | None]:
    from opentelemetry import trace

    def current() -> tuple[str, str] | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)

    return current
