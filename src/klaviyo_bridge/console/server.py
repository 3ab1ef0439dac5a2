"""Assembling and serving the console: the Starlette app from ``app.py``'s parts and the
pages of ``routes/`` (which use those parts, so the assembly lives apart from them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

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

    app = create_app(config)
    serve_app(app, config)


def serve_app(app: Starlette, config: ConsoleConfig, announce: Callable[[str], None] | None = None) -> None:
    if announce:
        announce(app.state.console.login_url)
    uvicorn.run(
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
