"""Assembling and serving the console: the Starlette app from ``app.py``'s parts and the
pages of ``routes/`` (which use those parts, so the assembly lives apart from them)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ..errors import ConfigError
from ..secrets import CredentialStore
from .app import Console, ConsoleConfig, ConsoleJobs, SecurityMiddleware, WarehouseHolder, _templates, check_bind
from .routes import ROUTES


def create_app(config: ConsoleConfig, *, clock: Callable[[], float] | None = None) -> Starlette:
    """The app; ``app.state.console.token`` is the access token (generated unless ``config.token``)."""
    check_bind(config.host, config.token)
    home = config.home.ensure()
    credentials = CredentialStore(home.credentials)
    holder = WarehouseHolder(config.warehouse_url or home.warehouse, config.lock_timeout, config.query_timeout)
    jobs = ConsoleJobs(holder, credentials, home.root / "jobs")
    console = Console(config, credentials, holder, jobs, _templates())
    if clock is not None:
        console.limiter.clock = clock

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        jobs.shutdown()

    routes = [*ROUTES, Mount("/static", app=StaticFiles(packages=[("klaviyo_bridge.console", "static")]), name="static")]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = console
    app.add_middleware(SecurityMiddleware, console=console)
    if config.proxy_headers:
        # outermost: the client address and scheme are the original request's before anything checks them
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(config.trusted_proxies))
    return app


def serve(config: ConsoleConfig) -> None:
    """Serve until interrupted (``klaviyo-bridge console``)."""
    sock = listen(config)
    serve_app(create_app(config), config, sock)


def listen(config: ConsoleConfig) -> socket.socket:
    """The console's listening socket, bound before its address is printed: with port 0 the system
    picks a free port, and ``config.port`` (so the printed URL) becomes that port."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", key="port") from None
    config.port = sock.getsockname()[1]
    return sock


def serve_app(app: Starlette, config: ConsoleConfig, sock: socket.socket | None = None) -> None:
    """Serve ``app`` on ``sock`` (from ``listen``), or on the config's host and port."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,  # handled in create_app, for trusted proxies only
            ssl_certfile=config.tls_cert,
            ssl_keyfile=config.tls_key,
        )
    )
    server.run(sockets=[sock] if sock is not None else None)
