"""The console's application object: configuration, security layers, shared services.

Security model (docs/console.md):

* A login always, also on loopback (as Jupyter does): an access token is generated at start
  (or chosen: ``KLAVIYO_BRIDGE_CONSOLE_TOKEN``, ``--token-file``, ``--token``) and printed once
  as a URL that logs in (``/login?token=...`` sets a session cookie and redirects, so the token
  does not stay in the address bar). Every other request needs the session cookie (HttpOnly,
  SameSite=Strict, ``Secure`` when the request came over https) or ``Authorization: Bearer``.
  Failed logins are rate-limited per client (``LOGIN_FAILURES`` a minute, then 429) and the
  token is compared in constant time.
* Binds 127.0.0.1 by default. ``check_bind`` refuses any other address unless the user chose
  the token. Bound to loopback (and not behind ``--proxy-headers``), only loopback ``Host``
  headers are served (a DNS-rebinding page cannot reach the console through the victim's browser).
* With ``proxy_headers``, ``X-Forwarded-For`` / ``X-Forwarded-Proto`` from ``trusted_proxies``
  set the client address and scheme (uvicorn's ProxyHeadersMiddleware, applied in ``create_app``).
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
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pyarrow as pa
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ConfigError, StoreError
from ..home import Home
from ..jobs import JobSpec, cancel_local, execute_job
from ..secrets import CredentialStore
from ..store.factory import open_warehouse
from ..store.sandbox import read_duckdb, read_postgres
from ..store.warehouse import Warehouse
from ..typenames import friendly_type

TOKEN_ENV = "KLAVIYO_BRIDGE_CONSOLE_TOKEN"
MIN_TOKEN_LENGTH = 16
CSRF_COOKIE = "kb_csrf"
SESSION_COOKIE = "kb_session"
#: Failed logins (wrong token, by form, URL or Bearer header) allowed per client per window.
LOGIN_FAILURES = 5
LOGIN_WINDOW_SECONDS = 60.0
MAX_SESSIONS = 1000
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
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
    """Refuse a non-loopback bind without a token the user chose, and a token too short to resist guessing."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"the console token must be at least {MIN_TOKEN_LENGTH} characters", key="token")
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to bind the console to {host}: anything but 127.0.0.1 needs an access token "
            f"(set {TOKEN_ENV} or --token-file; at least {MIN_TOKEN_LENGTH} characters)",
            key="host",
        )


@dataclass
class ConsoleConfig:
    home: Home
    warehouse_url: str | None = None  # default: HOME/warehouse.duckdb
    base_url: str | None = None  # Klaviyo API base URL put into the configs the console builds (an emulator)
    token: str | None = field(default=None, repr=False)  # None: a random one is generated (``Console.token``)
    host: str = "127.0.0.1"
    port: int = 8787
    lock_timeout: float = 30.0
    tls_cert: str | None = None
    tls_key: str | None = None
    proxy_headers: bool = False
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    #: PostgreSQL statement_timeout for queries typed in the console (seconds).
    query_timeout: float = 60.0


class LoginLimiter:
    """At most ``LOGIN_FAILURES`` failed logins per client address per ``LOGIN_WINDOW_SECONDS``."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, failures: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW_SECONDS
    ) -> None:
        self.clock = clock
        self.failures = failures
        self.window = window
        self._seen: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str) -> list[float]:
        cutoff = self.clock() - self.window
        times = [t for t in self._seen.get(client, []) if t > cutoff]
        if times:
            self._seen[client] = times
        else:
            self._seen.pop(client, None)
        return times

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: it may try now)."""
        with self._lock:
            times = self._recent(client)
            if len(times) < self.failures:
                return 0.0
            return max(1.0, times[-self.failures] + self.window - self.clock())

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._recent(client)
            self._seen.setdefault(client, []).append(self.clock())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._seen.pop(client, None)


class WarehouseHolder:
    """One warehouse object shared by requests and job threads, closed when nobody uses it.

    An embedded DuckDB file can be open in one process at a time: holding it only while a
    request or a job needs it lets ``klaviyo-bridge scheduler`` and other commands use it too.
    ``read_query`` runs a console user's SQL in the sandbox (``store.sandbox``); with DuckDB that
    is a read-only instance of its own, so it waits until nothing here holds the file.
    """

    def __init__(self, target: str | Path, lock_timeout: float, query_timeout: float = 60.0) -> None:
        self.target = target
        self.lock_timeout = lock_timeout
        self.query_timeout = query_timeout
        self._wh: Warehouse | None = None
        self._users = 0
        self._exclusive = False
        self._lock = threading.Condition()
        self._duckdb_path: Path | None = None  # known after the first open of a DuckDB warehouse

    @contextmanager
    def use(self) -> Iterator[Warehouse]:
        with self._lock:
            if not self._lock.wait_for(lambda: not self._exclusive, self.lock_timeout + self.query_timeout):
                raise StoreError("the warehouse is busy with a console query; try again")
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
                self._lock.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Nothing in this process holds the warehouse while inside (for DuckDB's sandbox instance)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._users == 0 and not self._exclusive, self.lock_timeout):
                raise StoreError(
                    "the warehouse is busy with a running job: console queries run on a read-only copy of the "
                    "DuckDB connection, which DuckDB opens only while no job holds the file; try again when the "
                    "job ends (or use PostgreSQL to query while jobs run)"
                )
            self._exclusive = True
        try:
            yield
        finally:
            with self._lock:
                self._exclusive = False
                self._lock.notify_all()

    def read_query(self, sql: str, database: str | None = None, *, max_rows: int | None = None) -> pa.Table:
        """The console user's query, run sandboxed (read-only, no files, no extensions, time-limited)."""
        path = self._duckdb_path
        if path is None:
            with self.use() as wh:
                dsn = getattr(wh, "_dsn", None)
                if dsn is not None:
                    return read_postgres(dsn, wh.url, sql, database, max_rows=max_rows, timeout=self.query_timeout)
                path = self._duckdb_path = wh.path  # type: ignore[attr-defined]
        with self.exclusive():
            return read_duckdb(path, sql, database, max_rows=max_rows, lock_timeout=self.lock_timeout, timeout=self.query_timeout)


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
            nonlocal spec
            try:
                if spec.kind == "export" and spec.result is None and isinstance(spec.config.get("query"), str):
                    # the user's SQL runs in the console's sandbox; the export then writes state as usual
                    spec = replace(spec, result=self.holder.read_query(spec.config["query"], spec.database))
                with self.holder.use() as wh:
                    execute_job(spec, wh, self.credentials, triggered_by="console", control_dir=self.control_dir, run_id=run_id)
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
    #: The access token: the one the user chose, or a random one made at start.
    token: str = field(default_factory=lambda: pysecrets.token_urlsafe(32), repr=False)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    sessions: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.config.token:
            self.token = self.config.token

    @property
    def login_url(self) -> str:
        """The URL that logs in (printed once at start)."""
        scheme = "https" if self.config.tls_cert else "http"
        host = self.config.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{scheme}://{host}:{self.config.port}/login?token={urllib.parse.quote(self.token)}"

    def token_ok(self, supplied: str) -> bool:
        return hmac.compare_digest(supplied.encode(), self.token.encode())

    def new_session(self) -> str:
        if len(self.sessions) >= MAX_SESSIONS:  # drop the oldest half
            for sid, _ in sorted(self.sessions.items(), key=lambda kv: kv[1])[: MAX_SESSIONS // 2]:
                self.sessions.pop(sid, None)
        sid = pysecrets.token_urlsafe(32)
        self.sessions[sid] = time.time()
        return sid

    def session_ok(self, sid: str | None) -> bool:
        return bool(sid) and sid in self.sessions  # a hash lookup: no per-character timing

    def end_session(self, sid: str | None) -> None:
        if sid:
            self.sessions.pop(sid, None)

    @property
    def host_check(self) -> bool:
        """Bound to loopback and not behind a proxy: only loopback Host names are answered."""
        return is_loopback(self.config.host) and not self.config.proxy_headers

    @property
    def control_dir(self) -> Path:
        return self.jobs.control_dir

    def csrf_for(self, seed: str) -> str:
        return hmac.new(self.secret, b"csrf:" + seed.encode(), hashlib.sha256).hexdigest()

    def flash(self, message: str, kind: str = "ok") -> str:
        key = pysecrets.token_urlsafe(8)
        if len(self.flashes) > 500:
            self.flashes.clear()
        self.flashes[key] = (kind, message)
        return key


def _cookies(scope: Scope) -> dict[str, str]:
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


def _header(scope: Scope, name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def client_of(scope: Scope) -> str:
    """The client's address (after ``--proxy-headers`` rewrote it from a trusted proxy)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def is_https(scope: Scope) -> bool:
    return scope.get("scheme") in ("https", "wss")


def cookie_header(name: str, value: str, scope: Scope, *, max_age: int | None = None) -> bytes:
    """``Set-Cookie``: HttpOnly, SameSite=Strict, Path=/, and Secure when the request came over https."""
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if is_https(scope):
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


def _host_name(value: str) -> str:
    """The host part of a Host header ('127.0.0.1:8787' -> '127.0.0.1', '[::1]:80' -> '[::1]')."""
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0]


class SecurityMiddleware:
    """Host check, login gate, CSRF cookie and security headers, for every response."""

    #: Served without a session: the login page, and the CSS/JS/icon it needs (package code, no data).
    OPEN_PATHS = ("/static/", "/login")

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                if new_seed:
                    headers.append((b"set-cookie", cookie_header(CSRF_COOKIE, new_seed, scope)))
                if is_https(scope) and b"strict-transport-security" not in present:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        host = _host_name(_header(scope, b"host") or "")
        if console.host_check and host and host not in LOOPBACK_NAMES and not is_loopback(host):
            await PlainTextResponse("unknown host (the console answers on 127.0.0.1 only)", 421)(
                scope, receive, send_with_headers
            )
            return
        path = scope.get("path", "")
        signed_in = console.session_ok(cookies.get(SESSION_COOKIE))
        if not path.startswith(self.OPEN_PATHS) and not signed_in:
            response: Response | None = None
            bearer = _header(scope, b"authorization") or ""
            if bearer.startswith("Bearer "):
                client = client_of(scope)
                wait = console.limiter.blocked(client)
                if wait:
                    response = PlainTextResponse(too_many_message(wait), 429, headers={"retry-after": str(int(wait + 0.999))})
                elif console.token_ok(bearer[7:].strip()):
                    console.limiter.succeeded(client)
                    signed_in = True
                else:
                    console.limiter.failed(client)
                    response = PlainTextResponse("wrong access token", 401)
            else:
                method = scope.get("method", "GET")
                if path.endswith((".json", ".csv")) or path.startswith("/api/") or method != "GET":
                    response = PlainTextResponse(
                        "login required: open the URL the console printed at start, or send Authorization: Bearer TOKEN", 401
                    )
                elif path == "/":
                    response = RedirectResponse("/login", 303)
                else:  # back to this page after signing in
                    response = RedirectResponse("/login?" + urllib.parse.urlencode({"next": path}), 303)
            if response is not None:
                await response(scope, receive, send_with_headers)
                return
        scope["state"]["signed_in"] = signed_in
        await self.app(scope, receive, send_with_headers)


def too_many_message(wait: float) -> str:
    return f"too many failed logins from this address ({LOGIN_FAILURES} a minute): wait {int(wait + 0.999)} seconds and try again"


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("klaviyo_bridge.console", "templates"),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json_text"] = _json_text
    env.filters["friendly_type"] = friendly_type
    return env


def _json_text(value: Any, indent: int | None = None) -> str:
    """JSON to read on a page (inside <pre>, escaped by autoescape like any text): quotes and
    non-ASCII as written, not Jinja's ``tojson`` escapes (``\u0027``), which are for <script>."""
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


def token_from_env() -> str | None:
    return os.environ.get(TOKEN_ENV) or None
