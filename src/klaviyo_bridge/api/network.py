"""An httpcore network backend on plain asyncio streams, for cheaper reads of large pages.

httpx's default backend goes through anyio, which costs an ``anyio.fail_after`` cancel
scope and a separate socket receive per 64 KiB read: an events page of ~2 MB is ~30
reads, and that per-read overhead was the largest part of the bridge's CPU on an import.
Here a read takes everything already received, up to ``READ_BYTES`` (h11 accepts any
amount), under one asyncio timer instead of a cancel scope. Connect, TLS, timeouts and the
httpcore exceptions the rest of httpx maps are the same as with the default backend.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

#: Most bytes one read returns (and how much the stream buffers before it pauses the socket).
READ_BYTES = 1 << 20

SocketOption = tuple[int, int, Any]


#: httpcore's extra-info names -> asyncio's
_EXTRA_INFO = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}


class AsyncioStream(AsyncNetworkStream):
    """One connection as an asyncio StreamReader/StreamWriter pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Everything received so far (up to READ_BYTES, even if ``max_bytes`` is smaller)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(READ_BYTES)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass  # closing a connection the peer already dropped

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError) as exc:
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks before reusing an idle keep-alive connection: readable means the
            # server closed it (or sent something unexpected), so it must not be reused.
            return self._reader.at_eof() or self._writer.transport.is_closing() or _readable(self._extra("socket"))
        name = _EXTRA_INFO.get(info)
        return self._extra(name) if name else None

    def _extra(self, name: str) -> Any:
        try:
            return self._writer.get_extra_info(name)
        except AttributeError:  # a closed TLS transport has no protocol left to ask
            return None


class AsyncioBackend(AsyncNetworkBackend):
    """Opens ``AsyncioStream`` connections (TCP; TLS is added by ``start_tls``)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local, limit=READ_BYTES)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=READ_BYTES)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _readable(sock: socket.socket | None) -> bool:
    """Whether the kernel holds data (or EOF) the event loop has not picked up yet."""
    fd = sock.fileno() if sock is not None else -1
    if fd < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def use_asyncio_backend(client: Any) -> bool:
    """Give an httpx.AsyncClient's default connection pool the asyncio backend.

    Only the default transport is changed (proxy mounts from the environment keep theirs).
    Returns False, changing nothing, if httpx/httpcore no longer have the expected shape.
    """
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        return False
    pool._network_backend = AsyncioBackend()
    return True

