"""Run the emulator over real sockets: ``serve`` (blocking) and ``running_emulator``
(a background uvicorn thread on a free port, for end-to-end tests and the demo).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from .app import create_app
from .arrival import ArrivalStampingProtocol
from .settings import EmulatorSettings

#: How long an idle keep-alive connection stays open. uvicorn's default (5 s) closed connections a
#: busy client (an import inserting into its warehouse) still held, and its next request on one
#: met "Server disconnected without sending a response" (a retry). Klaviyo keeps them longer.
KEEP_ALIVE_SECONDS = 75
#: With rate limits on, the event loop stamps each request's arrival (``arrival.py``) while the
#: state worker thread decodes and applies bulk imports: at Python's default switch interval
#: (5 ms) a loop waiting for the GIL stamped requests up to 64 ms late on a loaded 2-core machine,
#: so two bulk imports sent 1.043 s apart counted as 1.002 s apart, and a client keeping Klaviyo's
#: windows with a 30 ms margin drew 429s Klaviyo's gateway would not send. At 1 ms: 11-29 ms at
#: most (docs/benchmarks.md). It costs page throughput (more hand-overs of the GIL), so not with
#: limits off, where no stamp is read. Set by ``serve``, which owns its process.
LIMITS_SWITCH_INTERVAL_SECONDS = 0.001


def serve(settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted (the CLI's ``klaviyo-bridge emulator``), in this process."""
    if settings.rate_limits:
        sys.setswitchinterval(LIMITS_SWITCH_INTERVAL_SECONDS)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=ArrivalStampingProtocol,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


@contextmanager
def serving(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    lifespan: Literal["auto", "on", "off"] = "off",
    name: str = "asgi-server",
    log_level: str = "warning",
    http: type[ArrivalStampingProtocol] = ArrivalStampingProtocol,
) -> Iterator[str]:
    """Serve any ASGI app with uvicorn in a thread; yield its base URL, stop it on exit.

    Shared by the emulator, the demo, the console's browser tests and the reliability tests.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan=lifespan,
        timeout_graceful_shutdown=2,
        http=http,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def running_emulator(settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Start the emulator in a thread, yield its base URL ('http://127.0.0.1:54321'), stop it on exit."""
    with serving(create_app(settings), host, port, name="klaviyo-emulator") as url:
        yield url
