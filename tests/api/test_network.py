"""The client's HTTP/1.1 transport over real sockets: split pages, cut-off bodies, framing, timeouts, reuse.

Every test runs on asyncio's event loop and on uvloop's, which ``klaviyo-bridge`` runs on (conftest.py)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.network import READ_BYTES, AsyncioTransport, Connection, _interleaved
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.api.settings import ClientSettings
from klaviyo_bridge.errors import RetriesExhausted, TransportError
from klaviyo_spec import RateLimit

from .scripted import KEY, Sleeps

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def head(length: int, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.api+json\r\nContent-Length: {length}\r\n{extra}\r\n").encode()


class Server:
    """A loopback HTTP/1.1 server whose connections each run the next scripted handler."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = list(handlers)
        self.connections = 0

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = self.handlers[min(self.connections, len(self.handlers) - 1)]
        self.connections += 1
        try:
            await handler(reader, writer)
        finally:
            writer.close()


def client_at(base: str, **settings) -> KlaviyoClient:
    return KlaviyoClient(
        ClientSettings(api_key=KEY, base_url=base, **settings), limiter=RateLimiter(enabled=False), sleep=Sleeps()
    )


def big_page(records: int) -> bytes:
    data = [{"type": "list", "id": f"L{i}", "attributes": {"name": "x" * 200}} for i in range(records)]
    return json.dumps({"data": data, "links": {"next": None}}).encode()


async def test_the_client_reads_through_its_own_transport():
    async with client_at("http://127.0.0.1:1") as client:
        assert isinstance(client.transport, AsyncioTransport)


async def test_a_proxy_from_the_environment_keeps_httpx_transport(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    real_shaped = "pk_" + "0123456789abcdef" * 2 + "01"
    async with KlaviyoClient(
        ClientSettings(api_key=real_shaped, base_url="https://a.klaviyo.com"), limiter=RateLimiter(enabled=False), sleep=Sleeps()
    ) as client:
        assert client.transport is None  # httpx's own, which routes through the proxy
    async with client_at("http://127.0.0.1:1") as client:  # no proxy named for http
        assert isinstance(client.transport, AsyncioTransport)


async def test_a_page_split_across_many_small_writes_arrives_whole():
    body = big_page(15_000)  # > 3 MB: several reads of READ_BYTES and many partial ones
    assert len(body) > 3 * READ_BYTES

    async def dribble(reader, writer):
        await read_request(reader)
        writer.write(head(len(body)))
        for i in range(0, len(body), 50_000):
            writer.write(body[i : i + 50_000])
            await writer.drain()
            if i % 500_000 == 0:
                await asyncio.sleep(0.01)  # let the client read a partial page

    async with Server(dribble) as base, client_at(base) as client:
        doc = await client.request("get_lists")
    assert len(doc["data"]) == 15_000 and doc["data"][-1]["id"] == "L14999"


async def test_a_cut_off_body_is_retried_on_a_new_connection():
    body = big_page(100)

    async def cut_off(reader, writer):
        await read_request(reader)
        writer.write(head(len(body)) + body[: len(body) // 2])
        await writer.drain()

    async def whole(reader, writer):
        await read_request(reader)
        writer.write(head(len(body)) + body)
        await writer.drain()

    server = Server(cut_off, whole)
    async with server as base, client_at(base) as client:
        doc = await client.request("get_lists")
    assert len(doc["data"]) == 100 and server.connections == 2


async def test_a_cut_off_body_gives_up_as_transport_error():
    body = big_page(100)

    async def cut_off(reader, writer):
        await read_request(reader)
        writer.write(head(len(body)) + body[:-10])
        await writer.drain()

    async with Server(cut_off) as base, client_at(base, retry_limit=1) as client:
        with pytest.raises(RetriesExhausted) as info:
            await client.request("get_lists")
    assert isinstance(info.value.last_error, TransportError)


async def test_a_refused_connection_is_a_transport_error():
    async with Server(read_request) as base:
        pass  # closed again: nothing listens on that port now
    async with client_at(base, retry_limit=1) as client:
        with pytest.raises(RetriesExhausted) as info:
            await client.request("get_lists")
    assert "connection failed" in str(info.value.last_error)


async def test_a_silent_server_times_out():
    async def silent(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    async with Server(silent) as base, httpx.AsyncClient(base_url=base, timeout=0.2, transport=AsyncioTransport()) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/")


async def test_requests_travel_on_asyncio_streams():
    body = big_page(3)

    async def answer(reader, writer):
        await read_request(reader)
        writer.write(head(len(body)) + body)
        await writer.drain()

    async with Server(answer) as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        response = await http.get("/")
    assert isinstance(response.extensions["network_stream"], Connection)
    assert response.content == body


async def test_a_connection_the_server_closed_is_not_reused():
    body = big_page(3)

    async def one_answer_then_close(reader, writer):
        await read_request(reader)
        writer.write(head(len(body)) + body)  # keep-alive by default, but closed right after
        await writer.drain()

    server = Server(one_answer_then_close)
    async with server as base, client_at(base) as client:
        await client.request("get_lists")
        await asyncio.sleep(0.05)  # the close reaches the client
        doc = await client.request("get_lists")
        retries = client.stats.retries
    assert len(doc["data"]) == 3 and server.connections == 2 and retries == 0


def answering(times: int, body: bytes) -> Handler:
    """A handler that answers ``times`` requests on its connection with ``body``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(times):
            await read_request(reader)
            writer.write(head(len(body)) + body)
            await writer.drain()

    return answer


async def test_keep_alive_connections_are_reused():
    server = Server(answering(3, big_page(3)))
    async with server as base, client_at(base) as client:
        for _ in range(3):
            await client.request("get_lists")
    assert server.connections == 1


async def test_a_large_upload_waits_for_a_slow_server():
    upload = b"x" * 8_000_000  # far above the transport's write buffer: the write must drain

    async def slow_reader(reader, writer):
        request = await read_request(reader)
        length = int(request.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        received = 0
        while received < length:
            received += len(await reader.read(65536))
            await asyncio.sleep(0)
        answer = json.dumps({"received": received}).encode()
        writer.write(head(len(answer)) + answer)
        await writer.drain()

    async with Server(slow_reader) as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        response = await http.post("/", content=upload)
    assert response.json() == {"received": len(upload)}


async def test_an_answered_page_is_freed_without_waiting_for_the_garbage_collector():
    """httpx's Response and its stream point at each other; unbroken, every page (2 MB for
    events) stayed in memory until the collector's next pass: 43 at once in a 1M-event import."""

    body = big_page(10)

    async def answer_each(reader, writer):
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(head(len(body)) + body)
            await writer.drain()

    def responses() -> int:
        return sum(isinstance(o, httpx.Response) for o in gc.get_objects())

    async with Server(answer_each) as base, client_at(base) as client:
        await client.request("get_lists")
        gc.collect()
        gc.disable()
        try:
            before = responses()
            for _ in range(5):
                assert len((await client.request("get_lists"))["data"]) == 10
            assert responses() == before
        finally:
            gc.enable()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class _SlowConnect(AsyncioTransport):
    """Each connection takes ``seconds`` of the limiter's clock (a slow handshake, a busy machine)."""

    def __init__(self, clock: _Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    async def connect(self, *args, **kwargs):
        self.clock.now += self.seconds
        return await super().connect(*args, **kwargs)


async def test_a_request_counts_from_when_its_headers_went_out():
    """One get_lists a second. The first request left the limiter at 0, but its connection took
    0.3 s: the server counts it at 0.3, so the second request waits until 1.3 (not 1.0)."""
    clock = _Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep, limits={"get_lists": RateLimit(1, 100)})
    transport = _SlowConnect(clock, 0.3)
    async with Server(answering(2, big_page(1))) as base:
        settings = ClientSettings(api_key=KEY, base_url=base)
        async with KlaviyoClient(settings, transport=transport, limiter=limiter, sleep=Sleeps()) as client:
            await client.request("get_lists")
            await client.request("get_lists")
    assert clock.slept == [pytest.approx(1.0)]
    assert clock.now == pytest.approx(1.3)


def _self_signed(folder: Path) -> tuple[str, str]:
    folder.mkdir(exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def test_clients_share_one_tls_context_per_ca_setting(tmp_path, monkeypatch):
    """Loading the CAs costs ~20 ms: every client of a process shares the context, and a changed
    SSL_CERT_FILE still takes effect (a server only that file trusts is reachable then, not before)."""
    cert, key = _self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            writer.write(head(2) + b"{}")
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=served)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with server:
        first, second = AsyncioTransport(), AsyncioTransport()
        assert first.ssl_context is second.ssl_context
        async with httpx.AsyncClient(transport=first) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(url)
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        trusting = AsyncioTransport()
        assert trusting.ssl_context is not first.ssl_context
        async with httpx.AsyncClient(transport=trusting) as client:
            assert (await client.get(url)).json() == {}
        assert AsyncioTransport().ssl_context is trusting.ssl_context
        other_cert, _ = _self_signed(tmp_path / "renewed")  # the same file rewritten in place: read again
        Path(cert).write_bytes(Path(other_cert).read_bytes())
        os.utime(cert, ns=(os.stat(cert).st_atime_ns, os.stat(cert).st_mtime_ns + 10**9))
        assert AsyncioTransport().ssl_context is not trusting.ssl_context


async def test_a_client_that_only_speaks_plain_http_never_loads_the_tls_certificates(tmp_path, monkeypatch):
    """Loading the CAs takes 20-35 ms, paid before a run's first request: a client of the emulator
    (http://) has no use for them."""

    def loading(*args: object, **kwargs: object) -> ssl.SSLContext:
        raise AssertionError("a TLS context was made for a plain HTTP client")

    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "new-ca-setting.pem"))  # not one made before
    monkeypatch.setattr(httpx, "create_ssl_context", loading)
    server = Server(answering(2, big_page(2)))
    async with server as base, client_at(base) as client:
        for _ in range(2):
            await client.request("get_lists")
    with pytest.raises(AssertionError, match="TLS context"):
        AsyncioTransport().ssl_context  # noqa: B018 - the property makes it, here on purpose
    with pytest.raises(AssertionError, match="TLS context"):
        client_at("https://a.klaviyo.example")  # for https it is made with the client: a bad CA setting fails before any work


def test_the_library_loads_httpx_without_its_command_line_client():
    """httpx imports its CLI (click, rich, pygments) when they are installed; the bridge never
    runs it, and a process that only uses the library does not carry it."""
    code = (
        "import sys\nimport klaviyo_bridge.api.client\n"
        "print(' '.join(sorted(m for m in ('click', 'rich', 'pygments', 'httpx') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["httpx"]


# -- framing and protocol edges, answered by scripted servers -----------------------------------


def scripted(*answers: bytes, close: bool = False) -> Handler:
    """Answer each request on the connection with the next bytes (closing after the last if ``close``)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(answer)
            await writer.drain()
        if not close:
            await reader.read()  # keep the connection open until the client closes it

    return serve


def chunked(body: bytes, size: int, trailers: bytes = b"") -> bytes:
    parts = [f"{len(body[i : i + size]):x};ext=1\r\n".encode() + body[i : i + size] + b"\r\n" for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n" + trailers + b"\r\n"


async def test_a_chunked_body_arrives_whole_and_the_connection_is_reused():
    body = big_page(2_000)
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 7_001, b"X-Trailer: yes\r\n")
    server = Server(scripted(answer, answer))
    async with server as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        first, second = await http.get("/"), await http.get("/")
    assert first.content == body and second.content == body and server.connections == 1


async def test_a_body_without_length_ends_with_the_connection():
    body = big_page(50)
    server = Server(scripted(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body, close=True))
    async with server as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        response = await http.get("/")
        assert response.content == body
        assert (await http.get("/")).content == body  # a new connection: the first ended with its body
    assert server.connections == 2


async def test_interim_answers_are_skipped_and_empty_answers_have_no_body():
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    server = Server(
        scripted(
            interim + head(2) + b"{}",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",  # a HEAD's answer: the length of a body not sent
            head(2) + b"[]",
        )
    )
    async with server as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        assert (await http.get("/")).json() == {}
        assert (await http.delete("/")).status_code == 204
        assert (await http.head("/")).headers["content-length"] == "1000"
        assert (await http.get("/")).json() == []
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_connection_the_answer_does_not_keep_alive_is_not_reused(answer):
    server = Server(scripted(answer, answer))
    async with server as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        assert (await http.get("/")).json() == {}
        assert (await http.get("/")).json() == {}
    assert server.connections == 2


async def test_bytes_after_an_answer_keep_its_connection_out_of_the_pool():
    server = Server(scripted(head(2) + b"{}" + b"HTTP/1.1 200 OK\r\n", head(2) + b"[]"), scripted(head(2) + b"[]"))
    async with server as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        assert (await http.get("/")).json() == {}
        await asyncio.sleep(0.05)  # the stray bytes reach the client
        assert (await http.get("/")).json() == []  # read on a new connection, not as the stray answer
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SPDY/3 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n{}", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 16 + b"\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}}\r\n0\r\n\r\n", "longer than its size"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n", "exceed"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "101"),
    ],
    ids=[
        "protocol",
        "status",
        "header",
        "folded",
        "two-lengths",
        "negative-length",
        "chunk-size",
        "negative-chunk",
        "0x-chunk",
        "underscore-chunk",
        "huge-chunk",
        "chunk-overrun",
        "huge-head",
        "upgrade",
    ],
)
async def test_a_malformed_answer_is_a_protocol_error_naming_what(answer, message):
    async with (
        Server(scripted(answer, close=True)) as base,
        httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http,
    ):
        with pytest.raises(httpx.RemoteProtocolError, match=message):
            await http.get("/")


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Le", head(10) + b"{}", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}"],
    ids=["nothing", "half-a-head", "short-body", "short-chunk"],
)
async def test_a_connection_closed_mid_answer_is_a_protocol_error(answer):
    async with (
        Server(scripted(answer, close=True)) as base,
        httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")


async def test_a_header_value_with_a_line_break_is_never_sent():
    server = Server(scripted(head(2) + b"{}"))
    async with server as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        with pytest.raises(httpx.LocalProtocolError, match="line break"):
            await http.get("/", headers={"X-Note": "a\r\nX-Injected: 1"})
    assert server.connections == 0


async def test_a_body_longer_than_one_piece_arrives_in_pieces(monkeypatch):
    from klaviyo_bridge.api import network

    monkeypatch.setattr(network, "PIECE_BYTES", 100_000)
    body = big_page(2_000)
    assert len(body) > 4 * network.PIECE_BYTES
    async with (
        Server(scripted(head(len(body)) + body)) as base,
        httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http,
    ):
        async with http.stream("GET", "/") as response:
            pieces = [piece async for piece in response.aiter_raw()]
    assert b"".join(pieces) == body and max(map(len, pieces)) == 100_000


async def test_a_server_that_stops_mid_body_times_out():
    body = big_page(100)

    async def stall(reader, writer):
        await read_request(reader)
        writer.write(head(len(body)) + body[:1000])
        await writer.drain()
        await reader.read()

    async with Server(stall) as base, httpx.AsyncClient(base_url=base, timeout=0.2, transport=AsyncioTransport()) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/")


async def test_the_pool_holds_at_most_the_connections_its_limits_allow():
    body = big_page(5)
    gate = asyncio.Event()
    served = connected = most = 0

    async def answer_after_gate(reader, writer):
        nonlocal served, connected, most
        connected += 1
        most = max(most, connected)
        try:
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                served += 1
                await gate.wait()
                writer.write(head(len(body)) + body)
                await writer.drain()
        finally:
            connected -= 1

    server = Server(answer_after_gate)
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=1)
    async with server as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport(limits=limits)) as http:
        requests = [asyncio.ensure_future(http.get("/")) for _ in range(5)]
        while served < 2:
            await asyncio.sleep(0)
        for _ in range(20):
            await asyncio.sleep(0)
        assert served == 2  # the other three wait for a connection
        gate.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(*requests))
    assert most == 2  # never more at once; one kept alive between answers, the other closed


async def test_transfer_codings_over_several_header_lines_make_one_list():
    body = big_page(300)
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 4096)
    async with Server(scripted(answer)) as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        assert (await http.get("/")).content == body


async def test_a_streamed_request_body_is_sent_whole_with_its_length():
    received: list[bytes] = []

    async def record(reader, writer):
        request = await read_request(reader)
        length = int(request.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        received.append(request)
        received.append(await reader.readexactly(length))
        writer.write(head(2) + b"{}")
        await writer.drain()

    async def pieces():
        for part in (b"hello ", b"world"):
            yield part

    async with Server(record) as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        assert (await http.post("/", content=pieces())).json() == {}
    assert b"transfer-encoding" not in received[0].lower() and received[1] == b"hello world"


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_large_bodies_arrive_whole_over_tls(tmp_path, framing):
    """TLS delivers a body in records of ~16 KB; each framing reads several records per socket
    read (asyncio's TLS reader once lost all but the first of them into a copy of the buffer)."""
    cert, key = _self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    body = big_page(3_000)
    answer = {
        "length": head(len(body)) + body,
        "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 100_000),
        "close": b"HTTP/1.1 200 OK\r\n\r\n" + body,
    }[framing]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(2):
                await read_request(reader)
                writer.write(answer)
                await writer.drain()
                if framing == "close":
                    break
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=served)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, httpx.AsyncClient(transport=AsyncioTransport(verify=ssl.create_default_context(cafile=cert))) as http:
        for _ in range(2):  # the second on a reused connection (or a new one after a close)
            assert (await http.get(url)).content == body


async def test_a_compressed_page_is_decoded_for_the_client():
    """Klaviyo compresses its answers: the transport hands httpx the bytes as sent, httpx
    decodes them, and the client reads the page (chunked or with a length)."""
    import gzip

    body = big_page(2_000)
    packed = gzip.compress(body)
    with_length = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(packed)}\r\n\r\n".encode() + packed
    in_chunks = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(packed, 8192)
    async with Server(scripted(with_length, in_chunks)) as base, client_at(base) as client:
        for _ in range(2):
            doc = await client.request("get_lists")
            assert len(doc["data"]) == 2_000 and doc["data"][-1]["id"] == "L1999"


async def test_a_body_buffer_is_filled_again_only_once_nobody_reads_it():
    pages = [big_page(2_000), json.dumps({"data": [{"type": "list", "id": "other"}] * 10_000}).encode(), big_page(1_900)]
    assert all(300_000 < len(p) < 1_000_000 for p in pages)  # page-sized buffers are the ones kept
    server = Server(scripted(*(head(len(p)) + p for p in pages)))

    async def body(http: httpx.AsyncClient) -> bytearray:
        async with http.stream("GET", "/") as response:
            (piece,) = [piece async for piece in response.aiter_raw()]
        return piece

    async with server as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        held = await body(http)
        assert held == pages[0]
        first_buffer, view = id(held), memoryview(held)[10:20]  # a view of it is a reader too
        del held
        second = await body(http)  # read while the first is still read: another buffer
        assert bytes(view) == pages[0][10:20] and second == pages[1] and id(second) != first_buffer
        view.release()
        del view, second
        third = await body(http)
        assert third == pages[2] and id(third) == first_buffer  # let go of: filled again


async def test_closing_the_transport_mid_body_is_a_read_error():
    body = big_page(200)
    started = asyncio.Event()

    async def stall(reader, writer):
        await read_request(reader)
        writer.write(head(len(body)) + body[:5000])
        await writer.drain()
        started.set()
        await reader.read()

    transport = AsyncioTransport()
    async with Server(stall) as base, httpx.AsyncClient(base_url=base, transport=transport) as http:
        request = asyncio.ensure_future(http.get("/"))
        await started.wait()
        for _ in range(20):  # the head and the first bytes reach the client
            await asyncio.sleep(0)
        await transport.aclose()
        with pytest.raises(httpx.ReadError, match="closed"):
            await request


async def test_a_compressed_body_that_does_not_decompress_is_a_transport_error():
    garbled = b"\x1f\x8b\x08\x00" + b"not gzip at all" * 10
    answer = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(garbled)}\r\n\r\n".encode() + garbled
    async with Server(scripted(answer, answer, close=True)) as base, client_at(base, retry_limit=1) as client:
        with pytest.raises(RetriesExhausted) as info:
            await client.request("get_lists")
    assert isinstance(info.value.last_error, TransportError) and "could not be decoded" in str(info.value.last_error)


async def test_a_head_arriving_a_few_bytes_at_a_time_is_read_whole():
    body = big_page(20)
    answer = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + head(len(body), "X-Long: " + "y" * 3000 + "\r\n") + body

    async def trickle(reader, writer):
        await read_request(reader)
        for i in range(0, 3200, 7):  # the heads in pieces of 7 bytes, each read on its own
            writer.write(answer[i : min(i + 7, 3200)])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(answer[3200:])
        await writer.drain()
        await reader.read()

    async with Server(trickle) as base, httpx.AsyncClient(base_url=base, transport=AsyncioTransport()) as http:
        response = await http.get("/")
    assert response.content == body and len(response.headers["x-long"]) == 3000


class _Resolving(AsyncioTransport):
    """A transport whose host names resolve to ``addresses`` (the system's resolver stands aside)."""

    def __init__(self, addresses: list, delay: float) -> None:
        super().__init__()
        self.addresses = addresses
        self.happy_eyeballs_delay = delay

    async def resolve(self, host: str, port: int) -> list:
        return self.addresses


def _unanswered() -> tuple[socket.socket, socket.socket]:
    """A loopback address whose connects are never answered: a listener whose one-place accept
    queue is already taken (the kernel drops further SYNs), and the connection taking it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.2", 0))
    listener.listen(0)
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.connect(listener.getsockname())
    return listener, taken


def _connecting_to(address: tuple[str, int]) -> int:
    """Sockets on this machine still connecting (SYN-SENT) to an IPv4 ``address`` (/proc/net/tcp)."""
    host, port = address
    remote = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as table:
        return sum(1 for line in list(table)[1:] if line.split()[2:4] == [remote, "02"])


async def _settled() -> None:
    for _ in range(10):
        await asyncio.sleep(0)  # cancelled attempts run their cleanup


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads the connecting sockets from /proc/net/tcp")
async def test_an_address_that_never_answers_does_not_keep_the_next_from_being_tried():
    """Before: the addresses went one by one, and one that never answered took the whole connect
    timeout (the next was never tried). Now the next starts after the delay (0 here) and the first
    to connect wins; the attempt left behind is closed, not left to the garbage collector."""
    listener, taken = _unanswered()
    try:
        async with Server(answering(1, big_page(2))) as base:
            port = int(base.rsplit(":", 1)[1])
            transport = _Resolving([(socket.AF_INET, listener.getsockname()), (socket.AF_INET, ("127.0.0.1", port))], 0.0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                async with httpx.AsyncClient(transport=transport, timeout=5) as http:
                    response = await http.get(f"http://api.example.test:{port}/")
                    await _settled()
                    assert _connecting_to(listener.getsockname()) == 0, "the attempt left behind is closed"
                gc.collect()
            assert response.status_code == 200 and len(response.json()["data"]) == 2
            assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == [], "closed, not collected"
    finally:
        taken.close()
        listener.close()


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads the connecting sockets from /proc/net/tcp")
async def test_a_connect_timeout_closes_every_attempt_still_out():
    first, taken_first = _unanswered()
    second, taken_second = _unanswered()
    try:
        transport = _Resolving([(socket.AF_INET, first.getsockname()), (socket.AF_INET, second.getsockname())], 0.0)
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, connect=0.2)) as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get("http://api.example.test/")
            await _settled()
            assert _connecting_to(first.getsockname()) == _connecting_to(second.getsockname()) == 0
    finally:
        for s in (taken_first, first, taken_second, second):
            s.close()


async def test_an_address_that_refuses_hands_over_at_once_whatever_the_delay():
    async with Server(read_request) as gone:
        pass  # nothing listens there now: refused
    refused = ("127.0.0.1", int(gone.rsplit(":", 1)[1]))
    async with Server(answering(1, big_page(1))) as base:
        port = int(base.rsplit(":", 1)[1])
        transport = _Resolving([(socket.AF_INET, refused), (socket.AF_INET, ("127.0.0.1", port))], 3600.0)
        async with httpx.AsyncClient(transport=transport, timeout=5) as http:
            response = await http.get(f"http://api.example.test:{port}/")
    assert response.status_code == 200


async def test_when_no_address_answers_the_error_names_them_all():
    ports = []
    for _ in range(2):
        async with Server(read_request) as gone:
            ports.append(int(gone.rsplit(":", 1)[1]))
    transport = _Resolving([(socket.AF_INET, ("127.0.0.1", p)) for p in ports], 0.0)
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        with pytest.raises(httpx.ConnectError, match="no address of the host answered"):
            await http.get("http://api.example.test/")


def test_address_families_alternate_from_the_resolvers_first():
    six = [(socket.AF_INET6, (f"::{i}", 443, 0, 0)) for i in (1, 2, 3)]
    four = [(socket.AF_INET, (f"127.0.0.{i}", 443)) for i in (1, 2)]
    assert _interleaved(six + four + six[:1]) == [six[0], four[0], six[1], four[1], six[2]]
    assert _interleaved(four + six) == [four[0], six[0], four[1], six[1], six[2]]
    assert _interleaved([]) == []


async def test_an_address_given_as_the_host_is_used_as_it_is():
    transport = AsyncioTransport()
    assert await transport.resolve("127.0.0.1", 8080) == [(socket.AF_INET, ("127.0.0.1", 8080))]
    assert await transport.resolve("::1", 443) == [(socket.AF_INET6, ("::1", 443, 0, 0))]
    named = await transport.resolve("localhost", 8080)  # /etc/hosts: no lookup leaves the machine
    assert (socket.AF_INET, ("127.0.0.1", 8080)) in named
