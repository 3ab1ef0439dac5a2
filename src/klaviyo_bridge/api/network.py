"""An httpcore network backend on plain asyncio transports, for cheaper reads of large pages.

httpx's default backend goes through anyio, which costs an ``anyio.fail_after`` cancel
scope and a separate socket receive per 64 KiB read: an events page of ~2 MB is ~30
reads, and that per-read overhead was the largest part of the bridge's CPU on an import.
Here a read takes everything already received, as the transport delivered it (h11
accepts any amount), under one asyncio timer instead of a cancel scope. Connect, TLS, timeouts and the
httpcore exceptions the rest of httpx maps are the same as with the default backend.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx
from httpcore import AsyncNetworkBackend, AsyncNetworkStream

#: Received bytes a connection holds before it stops reading the socket (until the next read).
READ_BYTES = 1 << 20

#: httpcore's socket option shapes (``socket.setsockopt`` arguments)
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


#: httpcore's extra-info names -> asyncio's
_EXTRA_INFO = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}


class _Receiver(asyncio.Protocol):
    """Keeps received chunks as the transport delivers them (asyncio's StreamReader copies
    each into one growing bytearray and copies again on read: two passes over every page)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.eof = False
        self.error: BaseException | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- transport callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio types the argument as BaseTransport; create_connection and start_tls give a Transport
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= READ_BYTES and not self._reading_paused and self.transport is not None:
            self._reading_paused = True  # a slow reader must not buffer a whole page twice
            self.transport.pause_reading()
        _wake(self._read_waiter)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self._read_waiter)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._writing_paused = False
        _wake(self._read_waiter)
        _wake(self._drain_waiter)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        _wake(self._drain_waiter)

    # -- for the stream -----------------------------------------------------------------------

    async def receive(self) -> bytes:
        """The chunks received so far, joined (b"" at EOF); waits for at least one."""
        while not self.chunks:
            if self.eof:
                if self.error is not None:
                    raise self.error
                return b""
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.size = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self._writing_paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self.error is not None:
            raise self.error
        if self.eof and (self.transport is None or self.transport.is_closing()):
            raise ConnectionResetError("connection closed while writing")


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class AsyncioStream(AsyncNetworkStream):
    """One connection: an asyncio transport with a ``_Receiver`` protocol."""

    def __init__(self, transport: asyncio.Transport, receiver: _Receiver) -> None:
        self._transport = transport
        self._receiver = receiver

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Everything received so far (about READ_BYTES at most, even if ``max_bytes`` is smaller)."""
        try:
            async with asyncio.timeout(timeout):
                return await self._receiver.receive()
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                if self._transport.is_closing():
                    raise ConnectionResetError("connection closed")
                self._transport.write(buffer)
                await self._receiver.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(self._transport, self._receiver, ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:  # ssl.SSLError is an OSError
            await self.aclose()
            raise httpcore.ConnectError(str(exc)) from exc
        if tls is None:
            raise httpcore.ConnectError("TLS handshake did not complete")
        self._receiver.transport = tls
        return AsyncioStream(tls, self._receiver)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks before reusing an idle keep-alive connection: readable means the
            # server closed it (or sent something unexpected), so it must not be reused.
            receiver = self._receiver
            return bool(receiver.chunks) or receiver.eof or self._transport.is_closing() or _readable(self._extra("socket"))
        name = _EXTRA_INFO.get(info)
        return self._extra(name) if name else None

    def _extra(self, name: str) -> Any:
        try:
            return self._transport.get_extra_info(name)
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
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, receiver = await loop.create_connection(_Receiver, host, port, local_addr=local)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, receiver)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, receiver = await loop.create_unix_connection(_Receiver, path)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(transport, receiver)

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


#: httpcore's exceptions -> httpx's, as httpx's own transport maps them (most specific first).
_HTTPX_ERRORS: dict[type[Exception], type[httpx.HTTPError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for kind in type(exc).__mro__:
            mapped = _HTTPX_ERRORS.get(kind)
            if mapped is not None:
                raise mapped(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class AsyncioTransport(httpx.AsyncBaseTransport):
    """httpx's default transport (a pool of HTTP/1.1 connections, TLS) with reads on
    ``AsyncioBackend``, built from httpcore's public API: give it to an ``httpx.AsyncClient`` as
    ``transport=`` (``KlaviyoClient`` does when it is given none). ``limits`` as httpx's;
    ``verify``: True (the system's CAs, honouring ``SSL_CERT_FILE``), False, or an SSLContext."""

    def __init__(
        self,
        *,
        limits: httpx.Limits | None = None,
        verify: ssl.SSLContext | bool = True,
        backend: AsyncNetworkBackend | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        #: the TLS context its connections use (by default one per process and CA setting: ``shared_ssl_context``)
        self.ssl_context = context = verify if isinstance(verify, ssl.SSLContext) else shared_ssl_context(verify)
        self.backend = backend or AsyncioBackend()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


_CONTEXTS: dict[tuple[bool, tuple[str, int] | None, tuple[str, int] | None], ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def _ca_source(variable: str) -> tuple[str, int] | None:
    """The CA file or folder the environment names, with its modification time (a bundle
    rewritten in place is read again)."""
    path = os.environ.get(variable)
    if not path:
        return None
    try:
        return path, os.stat(path).st_mtime_ns
    except OSError:
        return path, 0


def shared_ssl_context(verify: bool) -> ssl.SSLContext:
    """httpx's TLS context for ``verify``, made once per process and CA setting (``SSL_CERT_FILE``,
    ``SSL_CERT_DIR`` and their modification times): loading the CAs takes ~20 ms, which a worker or
    scheduler paid for every run's client. Nothing loads certificates into it afterwards (httpcore
    sets the same ALPN protocol on each connect), so clients can share it."""
    key = (verify, _ca_source("SSL_CERT_FILE"), _ca_source("SSL_CERT_DIR"))
    with _CONTEXTS_LOCK:
        context = _CONTEXTS.get(key)
        if context is None:
            context = _CONTEXTS[key] = httpx.create_ssl_context(verify=verify)
        return context


def environment_proxy(url: str) -> bool:
    """Whether the environment names a proxy for ``url``'s scheme (``HTTPS_PROXY``, ``ALL_PROXY``,
    ...): httpx's own transport then carries the requests, with its proxy and ``NO_PROXY`` rules."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(urllib.parse.urlsplit(url).scheme) or proxies.get("all"))
