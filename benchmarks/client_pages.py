#!/usr/bin/env python3
"""CPU the API client spends per page it reads, against a bare asyncio reader of the same bytes.

    python benchmarks/client_pages.py [--events 1000] [--pages 800] [--concurrency 16] [--rounds 3]

A server process (a bare asyncio protocol, so its work does not count here) answers every
``GET`` with the same page: an events page of ``--events`` events with their metric and
profile included, as the emulator renders it (~2 MB for 1,000). In this process, one after
the other and ``--rounds`` times, ``--pages`` pages are read with ``--concurrency``
keep-alive connections by:

- **client**: ``KlaviyoClient.request("get_events")``, rate limits off: the client's whole
  path (limiter, retries, httpx, its HTTP/1.1 transport ``api/network.py``), the body not
  decoded (a decoder that only takes its length);
- **httpx default**: ``httpx.AsyncClient`` with httpx's own transport (httpcore and h11: what
  the client used before issue 21's third session), ``response.content``;
- **bound: bare asyncio**: ``asyncio.open_connection``, ``readuntil`` the head and
  ``readexactly`` the body: the least a Python reader of the same bytes does.

Each is run on uvloop (what ``klaviyo-bridge`` runs on). Printed: CPU milliseconds of this
process per page (best of the rounds, and all of them), the ratio to the bound, and pages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import socket
import time
from collections.abc import Awaitable, Callable

import klaviyo_bridge  # noqa: F401  # first, as in the klaviyo-bridge command: httpx then loads without its CLI

# isort: split
import httpx
import uvloop

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.api.settings import ClientSettings
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

PATH = "/api/events?page[size]=1000&include=metric,profile&fields[metric]=name&fields[profile]=email,phone_number,external_id"


def _page(events: int) -> bytes:
    """One events page as the emulator renders it (its first page of a generated account)."""
    app = create_app(EmulatorSettings(events=events, profiles=max(1000, events // 10), rate_limits=False))
    headers = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15"}

    async def get() -> bytes:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://emulator") as client:
            response = await client.get(PATH.replace("page[size]=1000", f"page[size]={min(events, 1000)}"), headers=headers)
            response.raise_for_status()
            return response.content

    return asyncio.run(get())


def _serve(sock: socket.socket, body: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.api+json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.pending = b""

        def data_received(self, data: bytes) -> None:
            self.pending += data
            while b"\r\n\r\n" in self.pending:
                _, _, self.pending = self.pending.partition(b"\r\n\r\n")
                self.transport.write(answer)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Answer, sock=sock)
        await server.serve_forever()

    uvloop.run(main())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _spread(pages: int, concurrency: int, read: Callable[[int], Awaitable[None]]) -> None:
    counts = [pages // concurrency + (1 if i < pages % concurrency else 0) for i in range(concurrency)]
    await asyncio.gather(*(read(n) for n in counts))


async def client_side(base: str, pages: int, concurrency: int, size: int) -> None:
    settings = ClientSettings(api_key=DEFAULT_API_KEY, base_url=base, max_concurrency=concurrency)
    async with KlaviyoClient(settings, limiter=RateLimiter(enabled=False)) as client:

        async def read(n: int) -> None:
            for _ in range(n):
                assert await client.request("get_events", url=base + PATH, decode=len) == size

        await _spread(pages, concurrency, read)


async def httpx_side(base: str, pages: int, concurrency: int, size: int) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits) as http:

        async def read(n: int) -> None:
            for _ in range(n):
                assert len((await http.get(PATH)).content) == size

        await _spread(pages, concurrency, read)


async def bare_side(base: str, pages: int, concurrency: int, size: int) -> None:
    host, port = base.removeprefix("http://").split(":")
    request = f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    async def read(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
        for _ in range(n):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            assert len(await reader.readexactly(length)) == size
        writer.close()

    await _spread(pages, concurrency, read)


SIDES = {"client": client_side, "httpx default": httpx_side, "bound: bare asyncio": bare_side}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--pages", type=int, default=800)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    body = _page(args.events)
    sock = socket.create_server(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock, body), daemon=True)
    server.start()
    try:
        print(
            f"page: {len(body):,} bytes ({args.events:,} events); {args.pages:,} pages a round, {args.concurrency} connections, uvloop"
        )
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in SIDES}
        for _ in range(args.rounds):
            for name, side in SIDES.items():
                cpu0, t0 = _cpu(), time.perf_counter()
                uvloop.run(side(base, args.pages, args.concurrency, len(body)))
                figures[name].append(((_cpu() - cpu0) * 1000 / args.pages, args.pages / (time.perf_counter() - t0)))
        bound = min(ms for ms, _ in figures["bound: bare asyncio"])
        print(f"{'reader':<20} {'CPU ms/page (best)':>18} {'ratio':>6} {'pages/s':>8}  all rounds (CPU ms/page)")
        for name, runs in figures.items():
            best = min(ms for ms, _ in runs)
            rate = max(r for _, r in runs)
            print(f"{name:<20} {best:>18.2f} {best / bound:>6.2f} {rate:>8,.0f}  {', '.join(f'{ms:.2f}' for ms, _ in runs)}")
        print("ratio = CPU per page / the bare asyncio reader's (the bound, measured in the same run)")
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
