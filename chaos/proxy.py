"""A TCP proxy between one executor and NATS that can cut the link and restore it.

A cut is a partition, not a polite close: bytes stop flowing both ways on the connections
that exist (they stay open, as they would behind a dead switch), and new connections are
accepted but go nowhere. Nothing is reset, so each side learns of the cut only from its own
timeouts. ``restore`` lets everything flow again, bytes held meanwhile included.

The proxy runs its own event loop in a thread, so the campaign's work never delays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

__all__ = ["LinkProxy"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


class LinkProxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` (host:port), until cut."""

    def __init__(self) -> None:
        self.upstream = ""
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._open: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)

    @property
    def url(self) -> str:
        """The NATS URL that goes through the proxy."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen on a free loopback port (``port``)."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")

    def cut(self) -> None:
        """Stop every byte, both ways, on every connection."""
        self._loop.call_soon_threadsafe(self._set_open, False)

    def restore(self) -> None:
        """Let bytes flow again."""
        self._loop.call_soon_threadsafe(self._set_open, True)

    def stop(self) -> None:
        """Close the listener and every connection; stop the thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def _set_open(self, value: bool) -> None:
        assert self._open is not None
        if value:
            self._open.set()
        else:
            self._open.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _listen(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._open is not None
        self.connections += 1
        try:
            await self._open.wait()  # a connection made during a cut goes nowhere until restored
            host, _, port = self.upstream.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError as error:
            log.debug("proxy: upstream %s refused: %s", self.upstream, error)
            writer.close()
            return
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for end in (writer, up_writer):
                end.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._open is not None
        with contextlib.suppress(OSError):
            while True:
                await self._open.wait()
                data = await reader.read(_CHUNK)
                if not data:
                    return
                await self._open.wait()  # read just before a cut: held, like a lost packet
                writer.write(data)
                await writer.drain()
