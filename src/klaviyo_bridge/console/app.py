"""The console's application object: configuration, security layers, shared services.

Security model (docs/console.md):

* Binds 127.0.0.1 by default. ``check_bind`` refuses any other address unless the user set an
  access token (``--token`` / ``KLAVIYO_BRIDGE_CONSOLE_TOKEN``); with a token every request
  needs it (a login form sets an HttpOnly cookie derived from it; ``Authorization: Bearer``
  works for scripts).
* Without a token, only loopback ``Host`` headers are served (a DNS-rebinding page cannot
  reach the console through the victim's browser).
* Every form carries a CSRF token: an HMAC (process secret) of a random per-browser cookie;
  POSTs whose ``Origin`` is another site are refused too.
* API keys are accepted once (the Authentications form) and go straight into the
  ``CredentialStore``; pages only ever show ``secrets.hint`` (``pk_…a1b2``).
* Every response carries a strict Content-Security-Policy (scripts and styles from
  ``/static`` only, nothing inline), ``X-Frame-Options: DENY``, ``nosniff``, no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets as pysecrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ..errors import ConfigError, StoreError
from ..home import Home
from ..jobs import JobSpec, cancel_local, execute_job
from ..secrets import CredentialStore
from ..store.warehouse import Warehouse, open_warehouse
from ..typenames import friendly_type

TOKEN_ENV = "KLAVIYO_BRIDGE_CONSOLE_TOKEN"
MIN_TOKEN_LENGTH = 16
CSRF_COOKIE = "kb_csrf"
AUTH_COOKIE = "kb_auth"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token, and a token too short to resist guessing."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"the console token must be at least {MIN_TOKEN_LENGTH} characters", key="token")
    if not is_loopback(host) and not token:
        raise ConfigError(f"refusing to bind the console to {host}: anything but 127.0.0.1 needs an access token "
                          f"(set {TOKEN_ENV} or --token; at least {MIN_TOKEN_LENGTH} characters)", key="host")


@dataclass
class ConsoleConfig:
    home: Home
    warehouse_url: str | None = None  # default: HOME/warehouse.duckdb
    base_url: str | None = None  # Klaviyo API base URL put into the configs the console builds (an emulator)
    token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8787
    lock_timeout: float = 30.0


class WarehouseHolder:
    """One warehouse object shared by requests and job threads, closed when nobody uses it.

    An embedded DuckDB file can be open in one process at a time: holding it only while a
    request or a job needs it lets ``klaviyo-bridge scheduler`` and other commands use it too.
    """

    def __init__(self, target: str | Path, lock_timeout: float) -> None:
        self.target = target
        self.lock_timeout = lock_timeout
        self._wh: Warehouse | None = None
        self._users = 0
        self._lock = threading.Lock()

    @contextmanager
    def use(self) -> Iterator[Warehouse]:
        with self._lock:
            if self._wh is None:
                self._wh = open_warehouse(self.target, lock_timeout=self.lock_timeout)
            self._users += 1
            wh = self._wh
        try:
            yield wh
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._wh is not None:
                    self._wh.close()
                    self._wh = None


class ConsoleJobs:
    """Jobs started from the console: ``jobs.execute_job`` in a worker thread, like the scheduler."""

    def __init__(self, holder: WarehouseHolder, credentials: CredentialStore, control_dir: Path) -> None:
        self.holder = holder
        self.credentials = credentials
        self.control_dir = control_dir
        self.threads: dict[str, threading.Thread] = {}
        self.start_errors: dict[str, str] = {}

    def start(self, spec: JobSpec) -> str:
        run_id = uuid.uuid4().hex

        def work() -> None:
            try:
                with self.holder.use() as wh:
                    execute_job(spec, wh, self.credentials, triggered_by="console", control_dir=self.control_dir,
                                run_id=run_id)
            except (StoreError, ConfigError) as exc:  # e.g. the schedule is already running
                self.start_errors[run_id] = str(exc)
            except BaseException as exc:  # noqa: BLE001 - reported on the job page
                self.start_errors[run_id] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=work, name=f"console-job-{run_id[:8]}", daemon=True)
        self.threads[run_id] = thread
        thread.start()
        return run_id

    def alive(self, run_id: str) -> bool:
        thread = self.threads.get(run_id)
        return bool(thread and thread.is_alive())

    def wait(self, run_id: str, timeout: float | None = None) -> None:
        thread = self.threads.get(run_id)
        if thread is not None:
            thread.join(timeout)

    def shutdown(self, timeout: float = 30) -> None:
        for run_id, thread in list(self.threads.items()):
            if thread.is_alive():
                cancel_local(run_id)
        for thread in list(self.threads.values()):
            thread.join(timeout)


@dataclass
class Console:
    """What route handlers reach through ``request.app.state.console``."""

    config: ConsoleConfig
    credentials: CredentialStore
    holder: WarehouseHolder
    jobs: ConsoleJobs
    templates: Environment
    secret: bytes = field(default_factory=lambda: pysecrets.token_bytes(32))
    flashes: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def control_dir(self) -> Path:
        return self.jobs.control_dir

    def csrf_for(self, seed: str) -> str:
        return hmac.new(self.secret, b"csrf:" + seed.encode(), hashlib.sha256).hexdigest()

    def auth_cookie_value(self) -> str | None:
        token = self.config.token
        if not token:
            return None
        return hmac.new(token.encode(), b"klaviyo-bridge-console", hashlib.sha256).hexdigest()

    def flash(self, message: str, kind: str = "ok") -> str:
        key = pysecrets.token_urlsafe(8)
        if len(self.flashes) > 500:
            self.flashes.clear()
        self.flashes[key] = (kind, message)
        return key


def _cookies(scope: dict[str, Any]) -> dict[str, str]:
    jar: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            parsed = SimpleCookie()
            try:
                parsed.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header is ignored
                continue
            jar.update({k: m.value for k, m in parsed.items()})
    return jar


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _host_name(value: str) -> str:
    """The host part of a Host header ('127.0.0.1:8787' -> '127.0.0.1', '[::1]:80' -> '[::1]')."""
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0]


class SecurityMiddleware:
    """Host check, token gate, CSRF cookie and security headers, for every response."""

    OPEN_PATHS = ("/static/", "/login")

    def __init__(self, app: Any, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        console = self.console
        cookies = _cookies(scope)
        seed = cookies.get(CSRF_COOKIE)
        new_seed = None
        if not seed or len(seed) < 20:
            seed = new_seed = pysecrets.token_urlsafe(24)
        scope.setdefault("state", {})["csrf_seed"] = seed

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                if new_seed:
                    headers.append((b"set-cookie", f"{CSRF_COOKIE}={new_seed}; Path=/; HttpOnly; SameSite=Strict"
                                    .encode()))
                message = {**message, "headers": headers}
            await send(message)

        host = _host_name(_header(scope, b"host") or "")
        if not console.config.token and host and host not in LOOPBACK_NAMES and not is_loopback(host):
            await PlainTextResponse("unknown host (the console answers on 127.0.0.1 only)", 421)(
                scope, receive, send_with_headers)
            return
        path = scope.get("path", "")
        expected = console.auth_cookie_value()
        if expected is not None and not path.startswith(self.OPEN_PATHS):
            bearer = _header(scope, b"authorization") or ""
            ok = hmac.compare_digest(cookies.get(AUTH_COOKIE, ""), expected) or (
                bearer.startswith("Bearer ") and hmac.compare_digest(bearer[7:].strip(), console.config.token or ""))
            if not ok:
                if path.endswith(".json") or path.startswith("/api/"):
                    response = PlainTextResponse("access token required", 401)
                else:
                    response = RedirectResponse("/login", 303)
                await response(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)


def _templates() -> Environment:
    env = Environment(loader=PackageLoader("klaviyo_bridge.console", "templates"),
                      autoescape=select_autoescape(["html", "svg"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["json_text"] = _json_text
    env.filters["friendly_type"] = friendly_type
    return env


def _json_text(value, indent: int | None = None) -> str:
    """JSON to read on a page (inside <pre>, escaped by autoescape like any text): quotes and
    non-ASCII as written, not Jinja's ``tojson`` escapes (``\u0027``), which are for <script>."""
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


def create_app(config: ConsoleConfig) -> Starlette:
    from .routes import ROUTES

    check_bind(config.host, config.token)
    home = config.home.ensure()
    credentials = CredentialStore(home.credentials)
    holder = WarehouseHolder(config.warehouse_url or home.warehouse, config.lock_timeout)
    jobs = ConsoleJobs(holder, credentials, home.root / "jobs")
    console = Console(config, credentials, holder, jobs, _templates())

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        jobs.shutdown()

    routes = [*ROUTES, Mount("/static", app=StaticFiles(packages=[("klaviyo_bridge.console", "static")]),
                             name="static")]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = console
    app.add_middleware(SecurityMiddleware, console=console)
    return app


def serve(config: ConsoleConfig) -> None:
    """Serve until interrupted (``klaviyo-bridge console``)."""
    import uvicorn

    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                server_header=False, proxy_headers=False)


def token_from_env() -> str | None:
    return os.environ.get(TOKEN_ENV) or None
