"""HTTP/1.1 for the API client on plain asyncio transports: a page is read straight into its buffer.

httpx's default stack (httpcore's pool, h11's parser, anyio's streams) copied an events page
of ~2 MB four times on its way to ``response.content`` and spent ~3 ms of CPU a page doing
it, against ~1 ms for a bare asyncio reader: for a million events, ~2 s of the import's one
busy thread. Here the socket is read (``asyncio.BufferedProtocol``) straight into one
``bytearray`` sized from the answer's ``Content-Length``, and httpx's join of the body is the
only copy left.

What it speaks: requests with their body in memory (what ``KlaviyoClient`` sends), answers
framed by ``Content-Length``, by the chunked transfer coding or by the connection's end;
interim (1xx) answers skipped; keep-alive connections reused only when nothing unexpected
was received on them; TLS with the process's shared context (``shared_ssl_context``). Not
HTTP/2, upgrades or proxies: when the environment names a proxy (``environment_proxy``),
httpx's own transport carries the requests. Failures are httpx's exceptions, as its own
transport raises them (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``, ...).
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import httpx

#: Received bytes a connection buffers (a chunked or close-delimited body) before it stops
#: reading the socket until they are consumed.
READ_BYTES = 1 << 20
#: The largest single buffer a ``Content-Length`` body is read into (a longer one arrives in pieces).
PIECE_BYTES = 16 << 20
#: The status line and headers of an answer may take at most this much.
HEAD_BYTES = 64 << 10
#: The largest body buffer kept for reuse (``BodyBuffers``): an events page of 1,000 is ~2 MB.
KEEP_BYTES = 4 << 20
_SMALL_BYTES = 256 << 10
#: Each read of a head, a chunk's size line or a small body goes through a buffer of this size.
_SCRATCH_BYTES = 64 << 10
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUSES = (204, 304)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class BodyBuffers:
    """Buffers for answers' bodies, used again once nothing refers to them any more.

    A page's buffer is done with once its decoder is (the client decodes a page where it
    landed); a fresh 2 MB ``bytearray`` cost ~0.3 ms of zeroing and page faults a page, the
    copy into a warm one 0.05 ms. CPython's reference count tells when the last reader let go
    (a ``memoryview`` or a ``msgspec.Raw`` of it counts too), so a buffer still read is never
    filled again. At most ``keep`` buffers of at most ``KEEP_BYTES`` are kept (a few pages' worth
    of memory; a larger body has a buffer of its own each time, and so has a small one, which
    costs little and would shrink a page's buffer). Where the count cannot be read that way
    (``_UNUSED_REFS`` is None), none is kept."""

    def __init__(self, keep: int = 4) -> None:
        self._kept: list[bytearray] = []
        self._keep = keep if _UNUSED_REFS is not None else 0

    def get(self, size: int) -> bytearray:
        if not _SMALL_BYTES <= size <= KEEP_BYTES:
            return bytearray(size)
        for buffer in self._kept:
            if _refs(buffer) == _UNUSED_REFS:
                have = len(buffer)
                if size < have:
                    del buffer[size:]
                elif size > have:
                    buffer.extend(bytes(size - have))  # usually within its allocation
                return buffer
        buffer = bytearray(size)
        if len(self._kept) < self._keep:
            self._kept.append(buffer)
        return buffer


def _refs(buffer: bytearray) -> int:
    return sys.getrefcount(buffer)


def _unused_refs() -> int | None:
    """What ``_refs`` says of a kept buffer nobody else holds, measured the way ``get`` asks
    (Python 3.11-3.13 count the call's argument, 3.14 borrows it); None unless one more holder
    shows as exactly one more reference, or on a Python without reference counts."""
    if not hasattr(sys, "getrefcount"):
        return None
    kept = [bytearray(1)]
    for buffer in kept:
        unused = _refs(buffer)
        held = kept[0]
        with_holder = _refs(buffer)
        del held
        return unused if with_holder == unused + 1 else None
    return None


#: References to a kept buffer nobody reads (the list's and the loop's, and on older Pythons the call's).
_UNUSED_REFS = _unused_refs()


class Answer(NamedTuple):
    """An answer's status line and headers, and how its body is framed."""

    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    framing: str  # "none" | "length" | "chunked" | "close"
    length: int  # for "length"


class Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection. Received bytes land in ``_scratch`` and are appended to
    ``buffer`` (heads, chunked bodies), or, while a ``Content-Length`` body is read, straight
    into that body's buffer.

    The answer's head is parsed here, as its bytes arrive, not by the task waiting for it: an
    event loop reads a socket many times before that task runs (uvloop up to 32 reads of 64 KiB
    a turn), and those reads must already go to the body's own buffer."""

    def __init__(self, buffers: BodyBuffers | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffers = buffers or BodyBuffers(keep=0)
        self.buffer = bytearray()
        self.start = 0  # bytes of ``buffer`` already consumed
        self.eof = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        # A memoryview, not the bytearray: asyncio's TLS reader fills one buffer with several
        # records through ``buf[offset:]``, which for a bytearray is a copy (CPython gh-156275)
        self._scratch = memoryview(bytearray(_SCRATCH_BYTES))
        self._piece: memoryview | None = None  # the body buffer being filled, if any
        self._filled = 0
        self._armed: bytearray | None = None  # the body buffer ``take`` returns
        self._progress_at = 0.0  # when the last bytes of it arrived
        self._method = ""
        self._awaiting = False  # a request was sent and its answer's head is not parsed yet
        self._received = False  # some byte arrived since the request was sent
        self._answer: Answer | httpx.RemoteProtocolError | None = None
        self._searched = 0  # ``buffer`` holds no head terminator before this offset
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- transport callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio types the argument as BaseTransport; create_connection gives a Transport
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._piece is not None:
            return self._piece[self._filled :]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._piece is not None:
            self._filled += nbytes
            self._progress_at = time.monotonic()
            if self._filled == len(self._piece):
                self._piece = None  # full: later bytes go to the scratch buffer again
                _wake(self._waiter)
            return
        self.buffer += self._scratch[:nbytes]
        self._received = True
        if self._awaiting:
            self._parse_answer()
        if len(self.buffer) - self.start >= READ_BYTES and not self._reading_paused and self.transport is not None:
            self._reading_paused = True  # a slow reader must not buffer a whole body
            self.transport.pause_reading()
        _wake(self._waiter)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self._waiter)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._writing_paused = False
        _wake(self._waiter)
        _wake(self._drain_waiter)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        _wake(self._drain_waiter)

    # -- for the transport --------------------------------------------------------------------

    def reusable(self) -> bool:
        """Open, idle and quiet: nothing received since its last answer, not even the end."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.eof or self.start < len(self.buffer):
            return False
        return not _readable(transport.get_extra_info("socket"))

    def close(self, abort: bool = False) -> None:
        """Close (``abort``: at once, without TLS's goodbye: for a connection dropped mid-answer)."""
        self._piece = self._armed = None
        _wake(self._waiter)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    async def send(self, method: str, head: bytes, body: bytes, timeout: float | None) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.eof:
            raise httpx.WriteError("the connection was closed before the request was sent")
        self._method, self._awaiting, self._received, self._answer = method, True, False, None
        try:
            async with asyncio.timeout(timeout):
                transport.write(head)
                if body:
                    transport.write(body)
                while self._writing_paused:
                    self._drain_waiter = asyncio.get_running_loop().create_future()
                    try:
                        await self._drain_waiter
                    finally:
                        self._drain_waiter = None
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request") from None
        if self.error is not None:
            raise httpx.WriteError(f"the connection failed while sending: {self.error}") from self.error

    async def read_answer(self, timeout: float | None) -> Answer:
        """The head of the answer to the request sent (interim 1xx answers skipped); a
        ``Content-Length`` body is then already being read into its buffer (``take``)."""
        while self._answer is None:
            if self.eof:
                self._raise_if_failed()
                if not self._received:
                    raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
                raise httpx.RemoteProtocolError("the server closed the connection in the middle of the answer's headers")
            await self._wait(timeout)
        answer, self._answer = self._answer, None
        if isinstance(answer, httpx.RemoteProtocolError):
            raise answer
        return answer

    def arm(self, size: int) -> None:
        """Read the next ``size`` bytes into a buffer of their own: what is buffered now, the
        rest straight from the socket (``take`` waits for them)."""
        piece = self._armed = self.buffers.get(size)
        have = min(len(self.buffer) - self.start, size)
        if have:
            piece[:have] = memoryview(self.buffer)[self.start : self.start + have]
            self._consumed(self.start + have)
        if have < size:
            self._piece, self._filled = memoryview(piece), have
            self._progress_at = time.monotonic()
            self._resume_reading()

    @property
    def armed(self) -> bool:
        return self._armed is not None

    async def take(self, timeout: float | None) -> bytearray:
        """The buffer ``arm`` prepared, once full."""
        try:
            while self._piece is not None:
                if self.eof:
                    self._raise_if_failed()
                    raise httpx.RemoteProtocolError(
                        f"peer closed connection without sending complete message body: received {self._filled} "
                        f"of {len(self._piece)} bytes"
                    )
                # the read timeout counts from the last bytes received (a body arriving slowly is not late)
                left = None if timeout is None else self._progress_at + timeout - time.monotonic()
                if left is not None and left <= 0:
                    raise httpx.ReadTimeout("timed out waiting for the rest of the server's answer")
                try:
                    await self._wait(left)
                except httpx.ReadTimeout:
                    pass  # some bytes may have arrived meanwhile: measured again above
        finally:
            self._piece = None
        piece, self._armed = self._armed, None
        if piece is None:  # the connection was closed meanwhile (the pool closing)
            self._raise_if_failed()
            raise httpx.ReadError("the connection was closed while the answer's body was read")
        return piece

    async def read_exact(self, size: int, timeout: float | None) -> bytearray:
        """The next ``size`` bytes."""
        self.arm(size)
        return await self.take(timeout)

    async def read_line(self, timeout: float | None, limit: int = 4096) -> bytes:
        """The next line (without its CRLF)."""
        searched = self.start
        while True:
            end = self.buffer.find(b"\r\n", searched)
            if end >= 0:
                line = bytes(self.buffer[self.start : end])
                self._consumed(end + 2)
                return line
            if len(self.buffer) - self.start > limit:
                raise httpx.RemoteProtocolError(f"a line of the chunked body exceeds {limit} bytes")
            searched = max(self.start, len(self.buffer) - 1)
            if self.eof:
                self._raise_if_failed()
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
            await self._wait(timeout)

    async def read_available(self, timeout: float | None) -> bytes:
        """Whatever is buffered, waiting for some; b"" once the server closed the connection."""
        while self.start == len(self.buffer):
            if self.eof:
                self._raise_if_failed()
                return b""
            await self._wait(timeout)
        data = bytes(memoryview(self.buffer)[self.start :])  # one copy (a slice would be two)
        self._consumed(len(self.buffer))
        return data

    # -- internals ----------------------------------------------------------------------------

    def _parse_answer(self) -> None:
        """Parse the awaited answer's head once it is all buffered (from a transport callback:
        a malformed head is kept for ``read_answer`` to raise)."""
        while self._awaiting:
            end = self.buffer.find(b"\r\n\r\n", max(self.start, self._searched))
            if end < 0 or end - self.start > HEAD_BYTES:
                if end >= 0 or len(self.buffer) - self.start > HEAD_BYTES:
                    self._awaiting = False
                    self._answer = httpx.RemoteProtocolError(f"the answer's status line and headers exceed {HEAD_BYTES} bytes")
                self._searched = len(self.buffer) - 3  # a head arriving in pieces is searched once
                return
            head = bytes(self.buffer[self.start : end])
            self._consumed(end + 4)
            try:
                version, status, reason, headers = _parse_head(head)
                if 100 <= status < 200:
                    if status == 101:
                        raise httpx.RemoteProtocolError("the server switched protocols (101), which this client does not speak")
                    continue  # an interim answer: the final one follows
                framing, length = _framing(self._method, status, headers)
            except httpx.RemoteProtocolError as exc:
                self._awaiting, self._answer = False, exc
                return
            self._awaiting = False
            self._answer = Answer(version, status, reason, headers, framing, length)
            if framing == "length" and length:
                self.arm(min(length, PIECE_BYTES))

    async def _wait(self, timeout: float | None) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError:
            raise httpx.ReadTimeout("timed out waiting for the server's answer") from None
        finally:
            self._waiter = None

    def _consumed(self, upto: int) -> None:
        self._searched = 0
        if upto >= len(self.buffer):
            self.buffer.clear()
            self.start = 0
        elif upto > READ_BYTES:
            del self.buffer[:upto]
            self.start = 0
        else:
            self.start = upto
        self._resume_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and len(self.buffer) - self.start < READ_BYTES:
            self._reading_paused = False
            self.transport.resume_reading()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise httpx.ReadError(f"the connection failed: {self.error}") from self.error


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _parse_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"the answer does not start with an HTTP/1.x status line: {lines[0][:100]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise httpx.RemoteProtocolError(f"the answer has a malformed header line: {line[:100]!r}")
        headers.append((name, value.strip(b" \t")))
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b"", headers


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    """The request line and headers; a body httpx would stream (chunked) is sent whole, with its length."""
    out = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    streamed = False
    for name, value in request.headers.raw:
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name or b":" in name:
            raise httpx.LocalProtocolError(f"header {name[:100]!r} holds a line break or a colon")
        if name.lower() == b"transfer-encoding":
            streamed = True
            continue
        out += (name, b": ", value, b"\r\n")
    if streamed:
        out.append(b"Content-Length: %d\r\n" % len(body))
    out.append(b"\r\n")
    return b"".join(out)


def _framing(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[str, int]:
    """("none" | "length" | "chunked" | "close", the length for "length")."""
    if method == "HEAD" or status in _NO_BODY_STATUSES:
        return "none", 0
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":  # several lines make one list (RFC 9110 5.3)
            codings += (c.strip(b" \t") for c in value.lower().split(b","))
        elif lower == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
    if codings:  # over any Content-Length (RFC 9112 6.3)
        return ("chunked", 0) if codings[-1] == b"chunked" else ("close", 0)
    if not lengths:
        return "close", 0
    if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
        raise httpx.RemoteProtocolError(f"the answer's Content-Length is not one number: {sorted(lengths)!r}")
    return "length", int(lengths.pop())


def _keeps_alive(version: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    if version != b"HTTP/1.1":
        return False
    names = {n.lower() for n, _ in headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        return False  # framed by the first, but a sign of a confused server or proxy (RFC 9112 6.3)
    return not any(n.lower() == b"connection" and b"close" in v.lower() for n, v in headers)


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


Origin = tuple[str, str, int]


class _Body(httpx.AsyncByteStream):
    """An answer's body, read from its connection as httpx asks; the connection goes back to
    the pool once the body was read to its end, and is closed otherwise."""

    def __init__(
        self,
        transport: AsyncioTransport,
        origin: Origin,
        conn: Connection,
        framing: str,
        length: int,
        keep: bool,
        timeout: float | None,
    ) -> None:
        self._transport, self._origin, self._conn = transport, origin, conn
        self._framing, self._length, self._keep, self._timeout = framing, length, keep, timeout
        self._done = framing == "none"
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn, timeout = self._conn, self._timeout
        if self._framing == "length":
            remaining = self._length
            while remaining:
                if not conn.armed:  # the first piece was armed with the head
                    conn.arm(min(remaining, PIECE_BYTES))
                piece = await conn.take(timeout)
                remaining -= len(piece)
                # a bytearray: httpx joins the pieces into the response's bytes (the one copy)
                yield piece  # type: ignore[misc]
        elif self._framing == "chunked":
            while True:
                size_line = await conn.read_line(timeout)
                digits = size_line.split(b";", 1)[0].strip(b" \t")
                if not _CHUNK_SIZE.fullmatch(digits):
                    raise httpx.RemoteProtocolError(f"malformed chunk size line: {size_line[:100]!r}")
                size = int(digits, 16)
                if size == 0:
                    while await conn.read_line(timeout):  # trailers, up to the empty line
                        pass
                    break
                while size:
                    piece = await conn.read_exact(min(size, PIECE_BYTES), timeout)
                    size -= len(piece)
                    yield piece  # type: ignore[misc]
                if await conn.read_line(timeout):
                    raise httpx.RemoteProtocolError("a chunk of the body is longer than its size line says")
        elif self._framing == "close":
            self._keep = False
            while data := await conn.read_available(timeout):
                yield data
        self._done = True

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport._release(self._origin, self._conn, self._done and self._keep, midway=not self._done)


#: A host's address for ``happy_eyeballs``: (family, sockaddr) as getaddrinfo gives them.
Address = tuple[int, tuple[object, ...]]
HAPPY_EYEBALLS_DELAY = 0.25


def _interleaved(addresses: list[Address]) -> list[Address]:
    """The resolver's order, families alternating from its first (RFC 8305 section 4): a host whose
    IPv6 addresses do not answer reaches an IPv4 one next, not after every IPv6 one."""
    unique = list(dict.fromkeys(addresses))
    if not unique:
        return []
    first = unique[0][0]
    mine = [a for a in unique if a[0] == first]
    others = [a for a in unique if a[0] != first]
    out: list[Address] = []
    for i in range(max(len(mine), len(others))):
        out.extend(a[i] for a in (mine, others) if i < len(a))
    return out


async def _connected(address: Address) -> socket.socket:
    """A socket connected to ``address``: a non-blocking connect, then a wait for the socket to
    be writable (as asyncio's ``sock_connect`` does; uvloop's drops an IPv6 address's scope id)."""
    family, sockaddr = address
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if family in (socket.AF_INET, socket.AF_INET6):  # as create_connection's own sockets: no Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect(sockaddr)
        except (BlockingIOError, InterruptedError):
            writable: asyncio.Future[None] = loop.create_future()
            fd = sock.fileno()

            def ready() -> None:
                if not writable.done():
                    writable.set_result(None)

            loop.add_writer(fd, ready)
            try:
                await writable
            finally:
                loop.remove_writer(fd)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, f"Connect call failed {sockaddr} ({os.strerror(error)})")
    except BaseException:
        sock.close()
        raise
    return sock


async def happy_eyeballs(addresses: list[Address], delay: float) -> socket.socket:
    """A connected socket to the first of ``addresses`` that answers (RFC 8305): the next address
    is tried when one fails, or after ``delay`` seconds while the earlier ones still connect; the
    first to connect wins and the others are closed. create_connection's own attempts go one by
    one (uvloop has no happy-eyeballs delay): an address that never answers took the whole
    connect timeout, and the addresses after it were never tried."""
    order = _interleaved(addresses)
    if not order:
        raise OSError("the host name resolved to no address")
    if len(order) == 1:
        return await _connected(order[0])
    pending: set[asyncio.Task[socket.socket]] = set()
    errors: list[OSError] = []
    waiting = iter(order)
    try:
        while True:
            nxt = next(waiting, None)
            if nxt is not None:
                pending.add(asyncio.ensure_future(_connected(nxt)))
            if not pending:
                break
            done, pending = await asyncio.wait(
                pending, timeout=delay if nxt is not None else None, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                exc = task.exception()
                if exc is None:
                    winner = task.result()
                    done.discard(task)
                    _close_all(pending | done)
                    pending = set()
                    return winner
                if not isinstance(exc, OSError):
                    _close_all(done)
                    raise exc
                errors.append(exc)
    finally:
        _close_all(pending)
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"no address of the host answered: {'; '.join(dict.fromkeys(str(e) for e in errors))}")


def _close_all(tasks: set[asyncio.Task[socket.socket]]) -> None:
    """Cancel ``tasks`` and close what any of them connected, now or when it ends (never awaited
    here: the caller's own cancellation must not be taken for theirs)."""
    for task in tasks:
        if task.done():
            _close_result(task)
        else:
            task.cancel()
            task.add_done_callback(_close_result)


def _close_result(task: asyncio.Task[socket.socket]) -> None:
    if not task.cancelled() and task.exception() is None:  # (a failure's socket is closed already)
        task.result().close()


def _ip_literal(host: str, port: int) -> Address | None:
    """``host`` as an IPv4 or (scope-less) IPv6 address, or None when it is a name to resolve."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return (family, (host, port)) if family == socket.AF_INET else (family, (host, port, 0, 0))
    return None


def _getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


class AsyncioTransport(httpx.AsyncBaseTransport):
    """A pool of HTTP/1.1 ``Connection``s for an ``httpx.AsyncClient`` (``transport=``;
    ``KlaviyoClient`` uses one when it is given none). ``limits`` as httpx's; ``verify``: True
    (the system's CAs, honouring ``SSL_CERT_FILE``), False, or an SSLContext."""

    def __init__(self, *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._verify = verify
        self._ssl_context = verify if isinstance(verify, ssl.SSLContext) else None
        self._slots = asyncio.Semaphore(limits.max_connections) if limits.max_connections else None
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._buffers = BodyBuffers()
        #: Seconds before the next address is tried while one is still connecting (RFC 8305's 250 ms).
        self.happy_eyeballs_delay = HAPPY_EYEBALLS_DELAY

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context its connections use: ``verify``'s, else (by default one per process and CA
        setting: ``shared_ssl_context``) made at the first use, so a transport that only speaks plain
        HTTP (the emulator) never loads the CAs: 20-35 ms before a run's first request.
        ``KlaviyoClient`` asks for it when it is built for an https base URL, so a bad CA setting
        fails there, before any work."""
        if self._ssl_context is None:
            verify = self._verify
            assert not isinstance(verify, ssl.SSLContext)  # (that one is kept from the start)
            self._ssl_context = shared_ssl_context(verify)
        return self._ssl_context

    async def connect(self, origin: Origin, timeout: float | None) -> Connection:
        """A new connection to ``origin`` (scheme, host, port): its addresses tried as RFC 8305
        says (``happy_eyeballs``), then TLS on the first socket that connected."""
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self.ssl_context if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                sock = await happy_eyeballs(await self.resolve(host, port), self.happy_eyeballs_delay)
                try:
                    _, conn = await loop.create_connection(
                        lambda: Connection(self._buffers), sock=sock, ssl=tls, server_hostname=host if tls is not None else None
                    )
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:  # ssl.SSLError and socket.gaierror are OSErrors
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    async def resolve(self, host: str, port: int) -> list[Address]:
        """``host``'s addresses for a TCP connection, in the resolver's order."""
        literal = _ip_literal(host, port)
        if literal is not None:  # an address already (a local emulator's 127.0.0.1): no lookup, no thread
            return [literal]
        loop = asyncio.get_running_loop()
        if "%" in host:  # a scoped IPv6 address (fe80::1%eth0): uvloop's resolver drops the scope
            infos = await loop.run_in_executor(None, _getaddrinfo, host, port)
        else:  # the loop's own resolver, as create_connection used (uvloop: libuv's threads, no Python thread)
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(family, sockaddr) for family, _, _, _, sockaddr in infos]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"the URL's scheme is not http or https: {url.scheme!r}")
        origin: Origin = (url.scheme, url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[url.scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        body = await request.aread()
        head = _request_head(request, body)
        await self._acquire(timeouts.get("pool"))
        conn: Connection | None = None
        try:
            conn = self._reuse(origin) or await self._connect(origin, timeouts.get("connect"))
            trace = request.extensions.get("trace")
            if trace is not None:
                await trace("http11.send_request_headers.started", {"request": request})
            await conn.send(request.method, head, body, timeouts.get("write"))
            answer = await conn.read_answer(read_timeout)
        except BaseException:
            self._release(origin, conn, False, midway=True)
            raise
        keep = _keeps_alive(answer.version, answer.headers)
        stream = _Body(self, origin, conn, answer.framing, answer.length, keep, read_timeout)
        if answer.framing == "none":
            await stream.aclose()
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=stream,
            extensions={"http_version": answer.version, "reason_phrase": answer.reason, "network_stream": conn},
        )

    async def aclose(self) -> None:
        for conn in self._open:
            conn.close()
        self._open.clear()
        self._idle.clear()

    # -- the pool -----------------------------------------------------------------------------

    async def _acquire(self, timeout: float | None) -> None:
        if self._slots is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("timed out waiting for a free connection") from None

    async def _connect(self, origin: Origin, timeout: float | None) -> Connection:
        conn = await self.connect(origin, timeout)
        self._open.add(conn)
        return conn

    def _reuse(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if (self._expiry is None or now - conn.idle_since < self._expiry) and conn.reusable():
                return conn
            self._forget(conn)
        return None

    def _release(self, origin: Origin, conn: Connection | None, keep: bool, midway: bool = False) -> None:
        """A request is done with ``conn``: back to the pool if ``keep`` and it is quiet, else
        closed (``midway``: in the middle of an answer, so at once)."""
        if self._slots is not None:
            self._slots.release()
        if conn is None:
            return
        idle = self._idle.setdefault(origin, [])
        if keep and conn.reusable() and (self._max_idle is None or len(idle) < self._max_idle):
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            self._forget(conn, midway)

    def _forget(self, conn: Connection, midway: bool = False) -> None:
        conn.close(abort=midway)
        self._open.discard(conn)


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
    scheduler paid for every run's client. Nothing loads certificates into it afterwards nor sets
    anything on it per connection, so clients can share it."""
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
