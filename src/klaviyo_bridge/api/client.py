"""The one async HTTP client every import and export goes through.

It adds auth and the ``revision`` header, waits for the operation's rate-limit
slot, sends, turns the answer into data or into one of our exceptions, and
retries what is worth retrying. Give it ``transport=httpx.ASGITransport(app)``
to talk to the emulator in-process, or a base URL to talk over real sockets.

The API key only ever travels in the Authorization header: it is not in URLs,
log lines, exception messages or reprs (messages are scrubbed as a last guard).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import parse_qsl, urlsplit

import httpx
import msgspec
import orjson

from klaviyo_spec import Operation, default_base_url, operation

from ..errors import (
    ApiError,
    AuthError,
    Conflict,
    ErrorItem,
    FatalApiError,
    InvalidRequest,
    MalformedResponse,
    NameResolutionError,
    NotFound,
    RateLimited,
    RetriesExhausted,
    ServerError,
    TransportError,
)
from .budget import account_id, open_budget
from .network import AsyncioTransport, environment_proxy
from .query import Query
from .ratelimit import Departure, RateLimiter, SharedBudget
from .retry import RETRYABLE_STATUSES, RetryPolicy, retry_after_seconds
from .settings import ClientSettings

log = logging.getLogger("klaviyo_bridge.api")

JSON_API = "application/vnd.api+json"
USER_AGENT = "klaviyo-bridge/0.1"
#: An answer's body as decoders get it: a page is the ``bytearray`` the socket was read into (``_body``).
Body = bytes | bytearray
Decode = Callable[[Body], Any]
#: Seconds added to every rate-limit window on the client side, so arrival jitter at the
#: server does not push a burst over the edge. Requests are counted when their headers go out
#: (``_WireTrace``), so only the network's jitter is left to absorb: on loopback 0 s drew 429s
#: and 0.01 s none (docs/benchmarks.md); a 429 widens the operation's windows by ``MARGIN_STEP``.
CLIENT_WINDOW_MARGIN = 0.03


@dataclass
class Page:
    """One page of a collection: its resources, included resources and the next link."""

    data: list[dict[str, Any]]
    included: list[dict[str, Any]]
    next_url: str | None
    number: int


@dataclass
class ClientStats:
    """Counters for progress output and benchmarks."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    rate_wait_seconds: float = 0.0
    by_status: dict[int, int] = field(default_factory=dict)


class KlaviyoClient:
    """Async Klaviyo API client for one account (one key, one shared rate limiter)."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        limits: AccountLimits | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._key = settings.api_key  # an ApiKey: masked everywhere but in the header below
        if limiter is None and limits is not None and sleep is asyncio.sleep:  # a fake sleep: a limiter of its own
            limiter = limits.limiter(settings.base_url, self._key)
        self.limiter = limiter or RateLimiter(sleep=sleep, margin=CLIENT_WINDOW_MARGIN, probe=True)
        self.retry = retry or RetryPolicy(
            retry_limit=settings.retry_limit,
            initial_wait=settings.initial_retry_wait,
            max_wait=settings.max_retry_wait,
        )
        self._sleep = sleep
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self.stats = ClientStats()
        self._origin = _origin(settings.base_url)
        http_limits = httpx.Limits(max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency)
        if transport is None and not environment_proxy(settings.base_url):
            transport = AsyncioTransport(limits=http_limits)  # reads a page straight into its buffer (network.py)
            if settings.base_url.lower().startswith("https:"):
                transport.ssl_context  # noqa: B018 - made now: a bad CA setting fails here, before any work
        #: What carries the requests: the one given, ours, or None (httpx's own, for a proxy).
        self.transport = transport
        self._http = httpx.AsyncClient(
            base_url=settings.base_url,
            transport=transport,
            headers={
                "Authorization": f"Klaviyo-API-Key {self._key.reveal()}",  # the one place it is revealed
                "revision": settings.revision,
                "Accept": JSON_API,
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(
                connect=settings.connection_timeout,
                read=settings.read_timeout,
                write=settings.write_timeout,
                pool=None,
            ),
            limits=http_limits,
        )

    def __repr__(self) -> str:
        return f"KlaviyoClient(base_url={self.settings.base_url!r}, revision={self.settings.revision!r})"

    async def __aenter__(self) -> "KlaviyoClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- public API ---------------------------------------------------------------------------

    async def request(
        self,
        operation_id: str,
        *,
        path_params: Mapping[str, str] | None = None,
        query: Query | None = None,
        params: list[tuple[str, str]] | None = None,
        json: Any = None,
        content: bytes | None = None,
        url: str | None = None,
        decode: Decode | None = None,
        retry_lost: bool = True,
    ) -> Any:
        """Send one operation (retrying as the policy allows); return the decoded body or None.

        ``decode(bytes)`` replaces the generic JSON parse (typed decoders for imports); a
        body it cannot parse counts as cut off and is retried like a dropped connection.
        ``content`` is a body already serialised as JSON (instead of ``json``).

        ``retry_lost=False`` is for writes that are not safe to repeat blindly: a failure after
        which Klaviyo may have applied the request (timeout, dropped or cut-off answer, 5xx) is
        raised at once, for the caller to check what happened; 429s are still retried.
        """
        op = operation(operation_id)
        if url is None:
            url = op.url_path(**(path_params or {}))
            if query is not None:
                query.validate(op)
                params = [*query.params(), *(params or [])]
        else:
            self._check_same_origin(url)
            params = None
        body = orjson.dumps(json) if json is not None else content
        return await self._send_with_retries(op, url, params, body, decode, retry_lost)

    async def get_resource(self, operation_id: str, resource_id: str, *, query: Query | None = None) -> dict[str, Any]:
        """GET one resource by id; returns the whole document (data + included)."""
        doc: dict[str, Any] | None = await self.request(operation_id, path_params={"id": resource_id}, query=query)
        assert doc is not None
        return doc

    async def pages(
        self,
        operation_id: str,
        *,
        query: Query | None = None,
        path_params: Mapping[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
        start_url: str | None = None,
    ) -> AsyncIterator[Page]:
        """Follow ``links.next`` until the collection is exhausted (or resume from ``start_url``).

        Every page must carry a ``data`` array whose resources all have an ``id``, and no
        ``next`` link may lead back to a page already read: otherwise ``MalformedResponse``."""
        number = 0
        async for doc, next_url in self._paginate(
            operation_id, split_page, query=query, path_params=path_params, params=params, start_url=start_url
        ):
            number += 1
            yield Page(doc["data"], doc.get("included") or [], next_url, number)

    async def decoded_pages(
        self,
        operation_id: str,
        decode: Callable[[Body], tuple[Any, str | None]],
        *,
        query: Query | None = None,
        path_params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Any]:
        """Like ``pages`` with a caller's decoder returning ``(payload, next_url)``; yields payloads.

        The decoder checks the page's shape (it may raise ``PageShapeError``); the loop guard is
        the same as ``pages``'."""
        async for payload, _ in self._paginate(operation_id, decode, query=query, path_params=path_params):
            yield payload

    async def first_page_if_only(
        self,
        operation_id: str,
        decode: Callable[[Body], tuple[Any, str | None]],
        *,
        query: Query | None = None,
        path_params: Mapping[str, str] | None = None,
    ) -> tuple[bool, Any]:
        """(True, the payload) when the first page (one request) is the collection's only page;
        (False, None) when it has a next link."""
        pages = self._paginate(operation_id, decode, query=query, path_params=path_params)
        try:
            payload, next_url = await anext(pages)
        finally:
            await pages.aclose()
        return (False, None) if next_url else (True, payload)

    async def records(
        self,
        operation_id: str,
        *,
        query: Query | None = None,
        path_params: Mapping[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every resource of a collection, page after page."""
        async for page in self.pages(operation_id, query=query, path_params=path_params, params=params):
            for item in page.data:
                yield item

    async def _paginate(
        self,
        operation_id: str,
        decode: Callable[[Body], tuple[Any, str | None]],
        *,
        query: Query | None = None,
        path_params: Mapping[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
        start_url: str | None = None,
    ) -> AsyncGenerator[tuple[Any, str | None], None]:
        """The one loop that follows ``links.next`` (every paginator above goes through it).

        A ``next`` link already followed (a page pointing at itself, or any longer cycle) stops
        the run with ``MalformedResponse`` instead of reading the same pages forever."""
        seen: set[str] = {_page_key(start_url or self._first_url(operation_id, path_params, query, params))}
        where = f"{operation_id}, page 1"
        reply = await self.request(
            operation_id, path_params=path_params, query=query, params=params, url=start_url, decode=_shape_checked(decode, where)
        )
        number = 1
        while True:
            payload, next_url = reply if reply is not None else (None, None)
            if reply is None:
                raise MalformedResponse(
                    f"{where}: the answer had no body (expected a page with a 'data' array)", operation=operation_id
                )
            yield payload, next_url
            if not next_url:
                return
            key = _page_key(next_url)
            if key in seen:
                raise MalformedResponse(
                    f"{operation_id}: the next link of page {number} leads back to a page already read "
                    f"({_redact_link(next_url)}); stopped instead of reading the same pages forever",
                    operation=operation_id,
                    url=_redact_link(next_url),
                )
            seen.add(key)
            number += 1
            where = f"{operation_id}, page {number}"
            reply = await self.request(operation_id, url=next_url, decode=_shape_checked(decode, where))

    # -- internals ----------------------------------------------------------------------------

    def _first_url(
        self, operation_id: str, path_params: Mapping[str, str] | None, query: Query | None, params: list[tuple[str, str]] | None
    ) -> str:
        """The URL ``request`` sends for a collection's first page (for the loop guard)."""
        op = operation(operation_id)
        all_params = [*(query.params() if query is not None else ()), *(params or [])]
        return str(self._http.build_request(op.method, op.url_path(**(path_params or {})), params=all_params).url)

    def _check_same_origin(self, url: str) -> None:
        if url.startswith("/"):
            return
        if _origin(url) != self._origin:
            # Never send the key to a host the user did not configure.
            raise InvalidRequest(f"refusing to follow a link to another host: {_origin(url)}")

    async def _send_with_retries(
        self,
        op: Operation,
        url: str,
        params: list[tuple[str, str]] | None,
        body: bytes | None,
        decode: Decode | None = None,
        retry_lost: bool = True,
    ) -> Any:
        retries = 0
        while True:
            try:
                return await self._send_once(op, url, params, body, decode)
            except (RateLimited, ServerError, TransportError) as err:
                if isinstance(err, NameResolutionError):
                    # Nothing was sent, so a write may be retried too; but only once, at once.
                    if retries >= NAME_RESOLUTION_RETRIES:
                        raise NameResolutionError(
                            f"{err} after {retries + 1} attempts: check base_url (or KLAVIYO_BASE_URL; "
                            f"without it the host is the real {default_base_url()}) and this machine's "
                            "network and DNS",
                            host=err.host,
                            method=err.method,
                            operation=err.operation,
                        ) from None
                    retries += 1
                    self.stats.retries += 1
                    log.warning("%s: %s; retrying once", op.operation_id, err)
                    continue
                if not retry_lost and not isinstance(err, RateLimited) and not getattr(err, "not_sent", False):
                    raise  # the write may have been applied: the caller decides what to resend
                if isinstance(err, RateLimited):
                    self.stats.throttled += 1
                    if err.retry_after:
                        self.limiter.penalise(op.operation_id, err.retry_after, _tier(op, url, params))
                if not self.retry.should_retry(err, retries):
                    raise RetriesExhausted(
                        f"{op.operation_id} failed after {retries + 1} attempts (retry_limit={self.retry.retry_limit}): {err}",
                        attempts=retries + 1,
                        last_error=err,
                    ) from err
                wait = self.retry.wait_for(err, retries)
                retries += 1
                self.stats.retries += 1
                log.warning("%s: %s; retry %d/%d in %.1fs", op.operation_id, err, retries, self.retry.retry_limit, wait)
                await self._sleep(wait)

    async def _send_once(
        self,
        op: Operation,
        url: str,
        params: list[tuple[str, str]] | None,
        body: bytes | None,
        decode: Decode | None = None,
    ) -> Any:
        tier = _tier(op, url, params)
        booking = await self.limiter.book(op, tier)
        self.stats.rate_wait_seconds += booking.waited
        headers = {"Content-Type": JSON_API} if body is not None else None
        started = time.perf_counter()
        try:
            async with self._slots:
                departure = await self.limiter.depart(op.operation_id, tier, booking)
                self.stats.rate_wait_seconds += departure.waited
                # A tuple: httpx's parameter type takes a list only of its wider value type.
                request = self._http.build_request(
                    op.method,
                    url,
                    params=tuple(params) if params is not None else None,
                    content=body,
                    headers=headers,
                    extensions={"trace": _WireTrace(self.limiter, op.operation_id, tier, departure)},
                )
                response = await self._http.send(request, stream=True)
                try:
                    content = await _body(response)
                finally:
                    await response.aclose()
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"{op.method} {op.path}: timed out ({type(exc).__name__})", method=op.method, operation=op.operation_id
            ) from None
        except httpx.DecodingError:
            # A compressed body that does not decompress: cut off or garbled on the way, like a body
            # that is not JSON (the request was answered, so a write may have been applied).
            raise TransportError(
                f"{op.method} {op.path}: the answer's compressed body could not be decoded",
                method=op.method,
                operation=op.operation_id,
            ) from None
        except httpx.TransportError as exc:
            if _is_name_resolution_failure(exc):
                host = urlsplit(self.settings.base_url).hostname or self.settings.base_url
                raise NameResolutionError(
                    f"{op.method} {op.path}: cannot resolve host {host!r} ({_root_cause(exc)})",
                    host=host,
                    method=op.method,
                    operation=op.operation_id,
                ) from None
            err = TransportError(
                f"{op.method} {op.path}: connection failed ({type(exc).__name__}: {self._scrub(str(exc))})",
                method=op.method,
                operation=op.operation_id,
            )
            # No connection was made: the request never left, so repeating it is safe for any write.
            err.not_sent = isinstance(exc, httpx.ConnectError)
            raise err from None
        _unbind(response)
        self.stats.requests += 1
        self.limiter.answered(op.operation_id, tier)
        _observe_rate_headers(self.limiter, op.operation_id, tier, response.headers)
        self.stats.by_status[response.status_code] = self.stats.by_status.get(response.status_code, 0) + 1
        log.debug("%s %s -> %d in %.0f ms", op.method, op.path, response.status_code, (time.perf_counter() - started) * 1000)
        if response.status_code < 300:
            if response.status_code == 204 or not content:
                return None
            try:
                return decode(content) if decode is not None else orjson.loads(content)
            except PageShapeError as exc:
                raise MalformedResponse(
                    f"{self._scrub(str(exc))} [{op.method} {_redact_link(str(response.url))}]",
                    status=response.status_code,
                    operation=op.operation_id,
                    method=op.method,
                    url=op.path,
                ) from None
            except (ValueError, msgspec.DecodeError):
                raise TransportError(
                    f"{op.method} {op.path}: response body was cut off or not JSON",
                    status=response.status_code,
                    operation=op.operation_id,
                ) from None
        raise self._error_for(op, response, content)

    def _error_for(self, op: Operation, response: httpx.Response, content: Body) -> ApiError:
        status = response.status_code
        items = _error_items(status, content)
        first = items[0] if items else ErrorItem(status=status)
        what = first.detail or first.title or response.reason_phrase
        where = f"{op.method} {op.path}"
        kw = _ErrorContext(status=status, errors=items, method=op.method, url=op.path, operation=op.operation_id)
        if first.pointer or first.parameter:
            what += f" (at {first.pointer or first.parameter})"
        what = self._scrub(what)
        if status == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"), first.detail)
            return RateLimited(f"{where}: throttled (429): {what}", retry_after=wait, **kw)
        if status in RETRYABLE_STATUSES:
            return ServerError(f"{where}: server error {status}: {what}", **kw)
        if status == 401:
            return AuthError(f"{where}: the API key was rejected (401): {what}", **kw)
        if status == 403:
            return AuthError(f"{where}: the API key is not allowed here (403): {what}", **kw)
        if status == 404:
            return NotFound(f"{where}: not found (404): {what}", **kw)
        if status == 409:
            return Conflict(f"{where}: conflict (409): {what}", **kw)
        if status >= 500:
            return FatalApiError(f"{where}: server error {status}: {what}", **kw)
        return InvalidRequest(f"{where}: invalid request ({status}): {what}", **kw)

    def _scrub(self, text: str) -> str:
        return self._key.scrub(text)


#: What an answered response's stream becomes (see ``_unbind``).
_READ = httpx.ByteStream(b"")


class _WireTrace:
    """The ``trace`` request extension (httpcore's; ``AsyncioTransport`` calls it the same way):
    tells the limiter when the request's headers start to go out, which is when the server will
    count it (see ``RateLimiter.on_wire``)."""

    __slots__ = ("limiter", "operation_id", "tier", "departure")

    def __init__(self, limiter: RateLimiter, operation_id: str, tier: str, departure: Departure) -> None:
        self.limiter, self.operation_id, self.tier, self.departure = limiter, operation_id, tier, departure

    async def __call__(self, name: str, info: Mapping[str, Any]) -> None:
        if name.endswith("send_request_headers.started"):
            self.limiter.on_wire(self.operation_id, self.tier, self.departure)


async def _body(response: httpx.Response) -> Body:
    """The answer's body as the transport read it: a page arrives as one piece (a ``bytearray``
    the socket was read into, which every decoder here reads like bytes), so it is decoded where
    it landed instead of being copied once more into ``response.content``."""
    pieces = [piece async for piece in response.aiter_bytes()]
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _unbind(response: httpx.Response) -> None:
    """Break httpx's reference cycle ``Response -> stream -> Response`` once the body is read
    (``request`` reads and closes it): left in place, every answered page (2 MB) and every sent
    request body (a bulk import's few MB, through ``response.request``) outlived its use until
    the garbage collector's next full pass: 43 event pages at once in a 16-window import."""
    response.stream = _READ


class _ErrorContext(TypedDict):
    """The keyword arguments every ``ApiError`` built from a response carries."""

    status: int
    errors: tuple[ErrorItem, ...]
    method: str
    url: str
    operation: str


class PageShapeError(Exception):
    """Raised by a page decoder: the page parsed but its shape is wrong (no ``data``, no ``id``).

    Not a ValueError on purpose: a body that does not parse is retried as cut off; a body that
    parses into the wrong shape would come back the same, so it is reported at once."""


def split_page(body: Body) -> tuple[dict[str, Any], str | None]:
    """The generic page decoder: the document (shape checked) and its next link."""
    doc = orjson.loads(body)
    if not isinstance(doc, dict):
        raise PageShapeError(f"the answer is a JSON {type(doc).__name__}, not a JSON:API document")
    check_page_records(doc.get("data", _MISSING))
    links = doc.get("links")
    next_url = links.get("next") if isinstance(links, dict) else None
    if next_url is not None and not isinstance(next_url, str):
        raise PageShapeError(f"links.next is a JSON {type(next_url).__name__}, not a URL")
    return doc, next_url


_MISSING = object()


def check_page_records(data: Any) -> None:
    """A page's ``data`` must be a list of resources, each with a non-empty string ``id``."""
    if data is _MISSING:
        raise PageShapeError("the page has no 'data' array (a page without it would be counted as empty)")
    if not isinstance(data, list):
        raise PageShapeError(
            f"the page's 'data' is a JSON {type(data).__name__ if data is not None else 'null'}, not an array of resources"
        )
    for n, item in enumerate(data):
        ident = item.get("id") if isinstance(item, dict) else None
        if not isinstance(ident, str) or not ident:
            what = (
                "is not an object"
                if not isinstance(item, dict)
                else "has no 'id'"
                if ident is None
                else f"has an invalid id {str(ident)[:40]!r}"
            )
            raise PageShapeError(f"record {n + 1} of the page {what} (it would be stored with a NULL id)")


def _shape_checked(decode: Decode, where: str) -> Decode:
    def run(body: Body) -> Any:
        try:
            return decode(body)
        except PageShapeError as exc:
            raise PageShapeError(f"{where}: {exc}") from None

    return run


def _page_key(url: str) -> str:
    """A link as compared by the loop guard: origin dropped (relative and absolute links match)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _redact_link(url: str, limit: int = 200) -> str:
    """A link for a message: never a key (Klaviyo keeps it in a header, but a hostile link may
    carry one in its query), and never longer than ``limit``."""
    parts = urlsplit(url)
    query = "&".join(
        p if not any(s in p.lower() for s in ("key", "token", "secret", "pk_")) else p.split("=", 1)[0] + "=[redacted]"
        for p in parts.query.split("&")
        if p
    )
    text = f"{parts.path}?{query}" if query else parts.path
    return text if len(text) <= limit else text[:limit] + "..."


class AccountLimits:
    """The rate limiters of the accounts one command talks to, shared by every client given this
    object (``KlaviyoClient(limits=...)``, ``run_import(limits=...)``, ``run_export(limits=...)``):
    Klaviyo counts requests per account, so a command that reads with one client and then imports
    with another must not start the second with a fresh budget (the demo drew 429s that way), and
    streams run at once (on one or several threads) book from one budget per rate tier.
    ``budget``: a shared budget (``api/budget.py``: Redis, or the PostgreSQL state) that every
    process using the key books from. An explicit object, not process state: two commands in one
    process (tests, the console) share nothing unless they are handed the same one."""

    def __init__(self, budget: SharedBudget | None = None) -> None:
        self.budget = budget
        self._limiters: dict[tuple[str, Any], RateLimiter] = {}
        self._lock = threading.Lock()

    @classmethod
    def at(cls, budget_url: str | None) -> "AccountLimits":
        """With the shared budget at ``budget_url`` (``budget.budget_url()``), opened now: it fails
        here, before any run, when it cannot be reached."""
        return cls(open_budget(budget_url) if budget_url else None)

    def limiter(self, base_url: str, key: Any) -> RateLimiter:
        """The one limiter of the account (origin and key; an ApiKey hashes and compares by value)."""
        origin = _origin(base_url)
        with self._lock:
            found = self._limiters.get((origin, key))
            if found is None:
                found = self._limiters[(origin, key)] = RateLimiter(
                    margin=CLIENT_WINDOW_MARGIN, budget=self.budget, account=account_id(origin, key), probe=True
                )
            return found


def _tier(op: Operation, url: str, params: list[tuple[str, str]] | None) -> str:
    """The rate tier Klaviyo counts this request in ("" but for a few parameter values)."""
    if not op.ratelimit_tiers:
        return ""
    items = list(params or [])
    query = urlsplit(url).query
    if query:
        items += parse_qsl(query, keep_blank_values=True)
    return op.ratelimit_for(items)[0]


def _header_count(value: str | None) -> float | None:
    """A ``RateLimit-*`` value: a number, or the IETF draft's list ``10, 10;w=1, 50;w=60`` (the
    steady, 60-second, item then)."""
    if not value:
        return None
    first = None
    for item in value.split(","):
        number, _, rest = item.strip().partition(";")
        try:
            n = float(number)
        except ValueError:
            continue
        first = n if first is None else first
        if rest.replace(" ", "") == "w=60":
            return n
    return first


def _observe_rate_headers(limiter: RateLimiter, operation_id: str, tier: str, headers: httpx.Headers) -> None:
    limit = _header_count(headers.get("ratelimit-limit"))
    remaining = _header_count(headers.get("ratelimit-remaining"))
    if limit is None or remaining is None:
        return
    reset = _header_count(headers.get("ratelimit-reset")) or 0.0
    limiter.observe(operation_id, tier, int(limit), int(remaining), reset)


#: Retries of a request whose host name did not resolve (immediately, no backoff).
NAME_RESOLUTION_RETRIES = 1


def _is_name_resolution_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, socket.gaierror):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _root_cause(exc: BaseException) -> str:
    cur = exc
    below = cur.__cause__ or cur.__context__
    while below is not None and not isinstance(cur, socket.gaierror):
        cur = below
        below = cur.__cause__ or cur.__context__
    return str(cur) or type(cur).__name__


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _error_items(status: int, content: Body) -> tuple[ErrorItem, ...]:
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return ()
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ()
    return tuple(ErrorItem.from_json(status, e) for e in errors if isinstance(e, dict))
