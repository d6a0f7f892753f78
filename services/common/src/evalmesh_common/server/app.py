"""``ServiceApp``: one grpc.aio server with health, reflection, probes, signals and shutdown.

Shutdown always runs in this order, once, however often it is requested:

1. health: every service name and ``""`` go NOT_SERVING for good; the probe loop stops;
   then ``shutdown_delay`` passes so load balancers route away;
2. ``STOP_WORK`` hooks: stop pulling jobs, end live streams;
3. ``server.stop(shutdown_grace)``: no new RPCs; in-flight ones get the grace to finish;
4. ``DRAIN`` hooks: e.g. drain the NATS connection;
5. ``DISPOSE`` hooks: e.g. dispose the database engine;
6. the metrics listener closes (it answers until here, so a drain can be watched); finally
   the port files are removed.

Each hook has ``hook_timeout`` seconds; a failing hook is logged and the sequence goes on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from evalmesh_common.server.config import ServerConfig
from evalmesh_common.server.health import HEALTH_SERVICE, Probe, ProbeLoop, ServerHealth
from evalmesh_common.server.interceptor import ErrorInterceptor
from evalmesh_common.server.metrics import MetricsListener, service_registry
from evalmesh_common.server.portfile import remove_port_file, write_port_file
from evalmesh_common.server.rpc_metrics import RpcMetricsInterceptor
from evalmesh_common.server.shutdown import Hook, Phase, ShutdownHooks
from evalmesh_common.server.tracing import server_interceptors

__all__ = ["AddServicers", "ServiceApp"]

logger = logging.getLogger(__name__)

AddServicers = Callable[[grpc.aio.Server], None]
"""Registers a service's servicers, e.g. ``lambda s: add_FooServicer_to_server(foo, s)``."""

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WILDCARD_HOSTS = {"", "0.0.0.0", "[::]", "::"}  # noqa: S104 - recognising, not binding


class ServiceApp:
    """A service's gRPC server, from bind to an orderly exit."""

    def __init__(
        self,
        name: str,
        config: ServerConfig | None = None,
        *,
        services: Sequence[str] = (),
        add_servicers: AddServicers | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        """``services`` are the full names (``evalmesh.storage.v1.StorageService``) the server
        exposes in health and reflection. ``interceptors`` run inside the error interceptor,
        so a ``DomainError`` they raise is answered like one from a handler; the outermost one
        counts every call by method and final code into ``metrics``."""
        self.name = name
        self.config = config or ServerConfig()
        self.services = tuple(services)
        self._add_servicers = add_servicers
        self._interceptors = tuple(interceptors)
        self._credentials = credentials
        self.health = ServerHealth(self.services)
        # Register the service's collectors here; served when ``config.metrics_port`` is set.
        self.metrics: CollectorRegistry = service_registry()
        self._metrics_listener = MetricsListener(self.metrics)
        self._rpc_metrics = RpcMetricsInterceptor(self.metrics)
        self._probes: dict[str, Probe] = {}
        self._hooks = ShutdownHooks(self.config.hook_timeout)
        self._server: grpc.aio.Server | None = None
        self._port: int | None = None
        self._plaintext_port: int | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None

    def add_probe(self, name: str, probe: Probe) -> None:
        """Make ``probe`` a dependency: health is SERVING only while every probe passes."""
        self._probes[name] = probe

    def on_stop_work(self, name: str, hook: Hook) -> None:
        """Run ``hook`` after health goes NOT_SERVING, before the server stops."""
        self._hooks.add(Phase.STOP_WORK, name, hook)

    def on_drain(self, name: str, hook: Hook) -> None:
        """Run ``hook`` after in-flight RPCs finished (or the grace ran out)."""
        self._hooks.add(Phase.DRAIN, name, hook)

    def on_dispose(self, name: str, hook: Hook) -> None:
        """Run ``hook`` last, after every drain hook."""
        self._hooks.add(Phase.DISPOSE, name, hook)

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0)."""
        if self._port is None:
            raise RuntimeError(f"{self.name} has not started")
        return self._port

    @property
    def plaintext_port(self) -> int | None:
        """The internal plaintext listener's port, when TLS is on and one was asked for."""
        return self._plaintext_port

    @property
    def address(self) -> str:
        """A ``host:port`` clients on this machine can dial (wildcards become loopback)."""
        return f"{self._dial_host()}:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics`` is served on; None while no metrics listener runs."""
        return self._metrics_listener.port

    @property
    def metrics_address(self) -> str | None:
        """A ``host:port`` to scrape from this machine; None while no metrics listener runs."""
        port = self.metrics_port
        return None if port is None else f"{self._dial_host()}:{port}"

    def _listen_host(self) -> str:
        return self.config.listen_address.rpartition(":")[0]

    def _dial_host(self) -> str:
        host = self._listen_host()
        return "127.0.0.1" if host in _WILDCARD_HOSTS else host

    async def start(self) -> int:
        """Bind, start serving (health NOT_SERVING), write the port file, start probing."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} was already started")
        # Tracing's interceptor (none while traces are off) sits outside the error interceptor,
        # so a failed call's span ends with the status the caller got, and the incident lines
        # the error interceptor logs carry the trace id.
        server = grpc.aio.server(
            interceptors=[
                self._rpc_metrics,
                *server_interceptors(),
                ErrorInterceptor(),
                *self._interceptors,
            ],
            options=self.config.grpc_options(),
            maximum_concurrent_rpcs=self.config.maximum_concurrent_rpcs,
        )
        self._server = server
        await self._register(server)
        port = self._bind(server)
        self._start_metrics()  # before the gRPC port is known: whoever sees that sees both
        self._port = port
        await server.start()
        self._write_port_files(port)
        self._probe_task = asyncio.create_task(self._probe_loop().run(), name="health-probes")
        extra = {
            "port": port,
            "tls": self._credentials is not None or self.config.tls.enabled,
            "plaintext_port": self._plaintext_port,
            "metrics_port": self.metrics_port,
        }
        logger.info("%s listening on %s", self.name, self.address, extra=extra)
        return port

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Start, wait for SIGTERM/SIGINT (or :meth:`request_shutdown`), then shut down."""
        loop = asyncio.get_running_loop()
        if handle_signals:  # before anything can block, so an early SIGTERM is not lost
            for sig in _SIGNALS:
                loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.start()
            await self._stop_requested.wait()
        finally:
            await self.shutdown()
            if handle_signals:
                for sig in _SIGNALS:
                    loop.remove_signal_handler(sig)

    def request_shutdown(self) -> None:
        """Ask :meth:`serve` to shut down; safe to call from a signal handler."""
        self._stop_requested.set()

    async def shutdown(self) -> None:
        """Run the documented shutdown sequence once; later calls wait for the same run."""
        self._stop_requested.set()
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self._shutdown(), name="shutdown")
        await asyncio.shield(self._shutdown_task)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    async def _register(self, server: grpc.aio.Server) -> None:
        await self.health.initialize()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self._add_servicers is not None:
            self._add_servicers(server)
        names = [*self.services, HEALTH_SERVICE, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, server)

    def _bind(self, server: grpc.aio.Server) -> int:
        address = self.config.listen_address
        tls = self.config.tls
        credentials = self._credentials
        if credentials is None and tls.enabled:
            credentials = tls.credentials()
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
        if not port:  # older grpc versions return 0 instead of raising
            raise OSError(f"{self.name} could not bind {address}")
        if tls.plaintext_listen_address is not None:
            self._plaintext_port = server.add_insecure_port(tls.plaintext_listen_address)
            if not self._plaintext_port:
                raise OSError(f"{self.name} could not bind {tls.plaintext_listen_address}")
        return port

    def _start_metrics(self) -> None:
        if self.config.metrics_port is None:
            return
        # The gRPC listener's host without IPv6 brackets; an empty host means every interface.
        host = self._listen_host().strip("[]") or "0.0.0.0"  # noqa: S104 - as gRPC binds it
        self._metrics_listener.start(host, self.config.metrics_port)
        logger.info("%s serves metrics at http://%s/metrics", self.name, self.metrics_address)

    def _write_port_files(self, port: int) -> None:
        # The metrics file first, so a reader that found the gRPC port file finds both.
        metrics_port = self.metrics_port
        if self.config.metrics_port_file and metrics_port is not None:
            write_port_file(self.config.metrics_port_file, metrics_port)
        tls = self.config.tls
        if tls.plaintext_port_file and self._plaintext_port is not None:
            write_port_file(tls.plaintext_port_file, self._plaintext_port)
        if self.config.port_file:
            write_port_file(self.config.port_file, port)

    def _remove_port_files(self) -> None:
        if self._port is None:  # never started, so nothing was written
            return
        if self.config.port_file:
            remove_port_file(self.config.port_file)
        if self.config.tls.plaintext_port_file and self._plaintext_port is not None:
            remove_port_file(self.config.tls.plaintext_port_file)
        if self.config.metrics_port_file and self.config.metrics_port is not None:
            remove_port_file(self.config.metrics_port_file)

    def _probe_loop(self) -> ProbeLoop:
        return ProbeLoop(
            self.health, self._probes, self.config.probe_interval, self.config.probe_timeout
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop_requested.is_set():
            logger.info("received %s again; shutdown is already under way", sig.name)
            return
        logger.info("received %s; shutting down", sig.name, extra={"signal": sig.name})
        self.request_shutdown()

    async def _shutdown(self) -> None:
        logger.info("%s shutting down", self.name)
        await self.health.shut_down()
        await self._stop_probing()
        if self.config.shutdown_delay > 0:
            await asyncio.sleep(self.config.shutdown_delay)
        await self._hooks.run(Phase.STOP_WORK)
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace)
        await self._hooks.run(Phase.DRAIN)
        await self._hooks.run(Phase.DISPOSE)
        await self._metrics_listener.stop()
        self._remove_port_files()
        logger.info("%s stopped", self.name)

    async def _stop_probing(self) -> None:
        if self._probe_task is None:
            return
        self._probe_task.cancel()
        try:
            await self._probe_task
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug in the loop must not stop the rest of the shutdown
            logger.exception("health probe loop failed")
