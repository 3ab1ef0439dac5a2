"""The emulator's ASGI app: ``create_app(settings)`` serves every emulated GET.

Request pipeline, in Klaviyo's order: route (404), auth (401), revision
header (400), rate limit (429 + Retry-After, one limiter per app = one
account), query validation (400), lookup (404), then the JSON:API document
serialised with orjson. No schema validation on the hot path; the contract
tests do that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

import klaviyo_spec as spec
from klaviyo_spec import Operation

from . import bulkimport
from .arrival import arrived_at
from .bodies import BodyError, validate_body
from .clock import parse_clock
from .collections import Orders
from .data import Account, build_account
from .faults import FaultyApp, with_faults
from .handlers import HANDLERS, Document, Handler, NotFound, Request
from .jobs import JobBook
from .jsontypes import JSON
from .limits import ServerLimits, WindowLog, overridden, parse_overrides
from .pages import encode_document
from .query import QueryError, parse_query
from .related import READS as RELATED_READS
from .selection import SelectionCache
from .settings import EmulatorSettings
from .state import AccountState, LiveProfiles
from .writes import PAYLOAD_LIMITS, READ_HANDLERS, WRITE_HANDLERS, Conflict

log = logging.getLogger("klaviyo_emulator")

ALL_READS: dict[str, Handler] = {**HANDLERS, **READ_HANDLERS, **RELATED_READS}

JSON_API = "application/vnd.api+json"
_REVISION_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(\.pre)?$")
_ERROR_TITLES = {
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "Method not allowed.",
    409: "Conflict.",
    413: "Request entity too large.",
    415: "Unsupported media type.",
    429: "Request was throttled.",
    501: "Not implemented.",
}


def error_response(
    status: int,
    code: str,
    detail: str,
    *,
    parameter: str | None = None,
    pointer: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON:API error document as Klaviyo sends it."""
    error = {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title or _ERROR_TITLES.get(status, "Error."),
        "detail": detail,
        "source": {"parameter": parameter} if parameter else ({"pointer": pointer} if pointer else {}),
    }
    return Response(orjson.dumps({"errors": [error]}), status_code=status, media_type=JSON_API, headers=headers)


def body_error_response(exc: BodyError) -> Response:
    """Every problem of a rejected body, each pointing at its field or row."""
    errors = [
        {
            "id": str(uuid.uuid4()),
            "status": exc.status,
            "code": "invalid",
            "title": _ERROR_TITLES[400],
            "detail": detail,
            "source": {"pointer": ptr},
        }
        for ptr, detail in exc.problems
    ]
    return Response(orjson.dumps({"errors": errors}), status_code=exc.status, media_type=JSON_API)


def _segment(path: str) -> str:
    """'/api/events/{id}/metric' -> 'events'."""
    parts = path.split("/", 3)
    return parts[2] if len(parts) > 2 else ""


def rate_headers(log: WindowLog, now: float) -> dict[str, str]:
    """Klaviyo's RateLimit-* headers: the state of the steady (one-minute) window of the tier the
    request was counted in."""
    limit, remaining, reset = log.steady_state(now)
    return {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(remaining), "RateLimit-Reset": str(reset)}


def _revision_date(text: str) -> date | None:
    m = _REVISION_RE.match(text)
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


#: Klaviyo supports a revision for two years after its release (stable one year, deprecated the next).
REVISION_LIFETIME_YEARS = 2


@functools.cache
def revision_window() -> tuple[date, date]:
    """(oldest revision still supported, the revision whose shapes are served): the spec's revision
    and the two years before it."""
    served = _revision_date(spec.spec_revision())
    if served is None:
        raise ValueError(f"the spec's revision {spec.spec_revision()!r} is not a date")
    return served.replace(year=served.year - REVISION_LIFETIME_YEARS), served


def revision_today(now_epoch: int) -> date:
    """The newest revision Klaviyo could have released by the account's ``now``: its date, but never
    before the spec's own revision (an account clock set earlier, for reproducible data, still
    serves the spec's revision)."""
    today = datetime.fromtimestamp(now_epoch, tz=timezone.utc).date()
    return max(today, revision_window()[1])


def revision_problem(text: str, strict: bool, today: date | None = None) -> str | None:
    """Why a revision header is refused (Klaviyo's 400), or None.

    Future-dated (after ``today``, the account clock's date): no such revision is released yet.
    Retired (older than two years before the spec's): refused when ``strict``. A revision between
    the spec's and today is one Klaviyo has released since the spec: served with the spec's shapes
    (see ``served_revision``)."""
    day = _revision_date(text)
    if day is None:
        return f"Invalid revision {text!r}: expected a date as YYYY-MM-DD."
    oldest, served = revision_window()
    today = today or served
    if day > today:
        return (
            f"Revision {text!r} is not a valid revision: it is later than today ({today.isoformat()}). "
            f"The newest revision is {today.isoformat()} or earlier."
        )
    if strict and day < oldest:
        return f"Revision {text!r} is retired: supported revisions are {oldest.isoformat()} to {served.isoformat()}."
    return None


#: Response header naming the revision whose shapes answered a request for a later revision.
SERVED_REVISION_HEADER = "X-Klaviyo-Emulator-Served-Revision"


def served_revision(text: str) -> str | None:
    """The spec's revision when ``text`` (an accepted revision) is later than it, else None: the
    emulator knows no shapes newer than its spec, so it answers with the spec's and says so."""
    day = _revision_date(text)
    served = revision_window()[1]
    return served.isoformat() if day is not None and day > served else None


class Emulator:
    """One account plus its limiter, caches and routing table."""

    def __init__(
        self,
        settings: EmulatorSettings,
        account: Account | None = None,
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._now_function: Callable[[], int] | None = None
        if settings.clock:
            account_clock = parse_clock(settings.clock)
            # The synthetic data spreads over the two years before the clock's start.
            settings = dataclasses.replace(settings, now=account_clock.start(wall))
            self._now_function = account_clock.now_function(wall)
        self.settings = settings
        self.account = account or build_account(settings)
        self.clock = clock or time.monotonic
        self._clock0 = self.clock()
        profiles = self.account.profiles
        if not isinstance(profiles, LiveProfiles):  # the account's writes go to one state, however many emulators serve it
            profiles = self.account.profiles = LiveProfiles(AccountState(self.account))
        self.state: AccountState = profiles.state
        self._seen_version = self.state.version
        self.jobs = JobBook(settings.seed, settings.now)
        self.limits = ServerLimits(enabled=settings.rate_limits, clock=self.clock)
        self.limit_overrides = parse_overrides(settings.rate_limit_overrides or "")
        self.orders = Orders(self.account)
        self.cache = SelectionCache()
        ops = [*spec.emulated_operations(), *spec._raw().get("emulated_bodyless_operations", ())]
        self.served = frozenset(ops)
        # Every operation of the spec, by the first segment after /api/ (a request tries a handful of
        # patterns, not hundreds); literal paths first, so /api/events/{id}/metric is not mistaken
        # for something shorter.
        self.routes: dict[str, list[tuple[re.Pattern[str], Operation]]] = {}
        for op in sorted(spec.operations().values(), key=lambda o: (-o.path.count("/"), o.path.count("{"))):
            self.routes.setdefault(_segment(op.path), []).append((op.path_regex, op))
        self._revisions_noted: set[str] = set()
        self._state_worker = ThreadPoolExecutor(1, thread_name_prefix="emulator-account")  # in order, one at a time

    # ----- time -------------------------------------------------------------------------
    def now(self) -> int:
        """The account's wall clock (epoch seconds): the settings' clock (real, fixed, offset), or
        settings.now plus the app clock's elapsed time."""
        if self._now_function is not None:
            return self._now_function()
        return int(self.settings.now + max(0.0, self.clock() - self._clock0))

    @staticmethod
    def real_now() -> float:
        return time.time()

    def consent_change(self, apply: Callable[[], None]) -> None:
        """Subscribe/unsubscribe have no job: apply after ``consent_delay_seconds``."""
        self.jobs.later(self.clock() + self.settings.consent_delay_seconds, apply)
        self.advance()

    def advance(self) -> None:
        """Apply due job completions and delayed changes; drop caches the writes made stale."""
        self.jobs.advance(self.clock())
        if self.state.version != self._seen_version:
            self._seen_version = self.state.version
            self.cache = SelectionCache()
            self.orders = Orders(self.account)

    def reevaluate_segment(self, segment_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> tuple[int, int]:
        """Klaviyo recomputes a segment from its definition; the emulator's segments change when
        told: profiles ``add`` (ids) join now (``joined_group_at``), profiles ``remove`` leave now.
        Done on the account's worker, in order with requests; returns (joined, left)."""
        if segment_id not in self.account.segment_members:
            raise KeyError(f"no segment {segment_id!r}")

        def rows(ids: Iterable[str]) -> np.ndarray:
            found = [self.state.row_for_id(i) for i in ids]
            if None in found:
                raise KeyError(f"no profile {list(ids)[found.index(None)]!r}")
            return np.array(found, dtype=np.int64)

        def apply() -> tuple[int, int]:
            now = self.now()
            left = self.state.remove_members(segment_id, rows(remove), now, segment=True) if remove else 0
            joined = self.state.add_members(segment_id, rows(add), now, segment=True) if add else 0
            self.advance()
            return joined, left

        return self._state_worker.submit(apply).result()

    def snapshot(self) -> JSON:
        """Introspection for tests: list members, consent and suppressions after due changes."""
        self.advance()
        return self.state.snapshot()

    def match(self, path: str, method: str = "GET") -> tuple[Operation | Literal[False] | None, dict[str, str]]:
        """(operation, path parameters) of the spec for this method and path; (False, {}) when the
        path is the spec's but not for this method (405), (None, {}) when no operation has it (404)."""
        found: Operation | None = None
        for regex, op in self.routes.get(_segment(path), ()):
            m = regex.match(path)
            if m:
                if op.method == method:
                    return op, m.groupdict()
                found = found or op
        return (False if found else None), {}

    async def handle(self, request: HttpRequest) -> Response:
        op, path_params = self.match(request.url.path, request.method)
        if op is None:
            return error_response(404, "not_found", f"No endpoint at {request.url.path}.")
        if op is not None and op is not False and op.operation_id not in self.served:
            return error_response(
                501,
                "not_emulated",
                f"{request.method} {request.url.path} is Klaviyo's {op.operation_id}, which the emulator does not serve.",
                title="Not implemented.",
            )
        if op is False:
            return error_response(405, "method_not_allowed", f"Method {request.method} is not allowed at {request.url.path}.")
        auth = request.headers.get("authorization")
        if not auth:
            return error_response(401, "not_authenticated", "Authentication credentials were not provided.")
        scheme, _, key = auth.partition(" ")
        if scheme != "Klaviyo-API-Key" or (
            key.strip() != self.settings.api_key and key.strip() not in self.settings.extra_api_keys
        ):
            return error_response(
                401,
                "authentication_failed",
                "Incorrect authentication credentials.",
                title="Incorrect authentication credentials.",
            )
        revision = request.headers.get("revision")
        if not revision:
            return error_response(400, "invalid", "Missing required header 'revision' (YYYY-MM-DD).", parameter="revision")
        problem = revision_problem(revision, self.settings.strict_revisions, revision_today(self.now()))
        if problem:
            return error_response(400, "invalid", problem, parameter="revision")
        shapes = served_revision(revision)
        if shapes is not None:
            self._note_served_revision(revision, shapes)
        # Count the request when it arrives (as Klaviyo's gateway does), then add the latency.
        stamp = arrived_at(request.scope)  # None in process (httpx.ASGITransport): no socket
        # A request is counted in its operation's tier: the operation's limits, or a lower tier for
        # some parameter values (get_profiles with additional-fields[profile]=predictive_analytics).
        tier, limit = op.ratelimit_for(request.query_params.multi_items()) if op.ratelimit_tiers else ("", op.ratelimit)
        limit = overridden(self.limit_overrides, op.operation_id, tier, limit)
        wait, window = self.limits.admit(
            op.operation_id, limit, tier=tier, arrived=stamp if self.clock is time.monotonic else None
        )
        if self.settings.latency_ms:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        headers = rate_headers(window, self.clock())
        if shapes is not None:
            headers[SERVED_REVISION_HEADER] = shapes
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            headers["Retry-After"] = str(seconds)
            return error_response(
                429, "throttled", f"Request was throttled. Expected available in {seconds} seconds.", headers=headers
            )
        raw = await request.body() if op.operation_id in WRITE_HANDLERS else None
        if stamp is None:
            response = self.respond(request, op, path_params, raw)
        else:
            # Over a socket, the account is read and changed in one worker thread, one request at a
            # time: a bulk import's decode and apply take tens of ms, and on the event loop they held
            # back the reading of requests arriving meanwhile (their arrival times: the rate limit).
            response = await asyncio.get_running_loop().run_in_executor(
                self._state_worker, self.respond, request, op, path_params, raw
            )
        response.headers.update(headers)
        return response

    def _note_served_revision(self, asked: str, shapes: str) -> None:
        """Log once per revision that a later revision than the spec's got the spec's shapes."""
        if asked not in self._revisions_noted:
            self._revisions_noted.add(asked)
            log.warning("revision %s requested: serving revision %s's shapes (the newest the emulator's spec has)", asked, shapes)

    def respond(self, request: HttpRequest, op: Operation, path_params: dict[str, str], raw: bytes | None) -> Response:
        """Everything after authentication and the rate limit, for one request (worker thread)."""
        params = request.query_params.multi_items()
        path_id = path_params.get("id") or path_params.get("job_id")
        self.advance()
        body: Any = None
        fast: bulkimport.Body | None = None
        if raw is not None:
            limit = PAYLOAD_LIMITS.get(op.operation_id)
            if limit and len(raw) > limit:
                return error_response(
                    413,
                    "payload_too_large",
                    f"The payload is {len(raw):,} bytes; the maximum is {limit:,} bytes.",
                    pointer="/data",
                )
            # A valid bulk import decodes straight into strict Structs; anything else takes the general path.
            fast = bulkimport.decode(raw) if op.operation_id == "bulk_import_profiles" else None
            if fast is None:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    return error_response(400, "invalid", f"The body is not valid JSON: {exc}.", pointer="/data")
        try:
            query = parse_query(op, params, scope=path_id or "")
            req = Request(
                self.account,
                self.orders,
                self.cache,
                query,
                str(request.base_url).rstrip("/"),
                request.url.path,
                params,
                path_id,
                body,
                self,
            )
            document: Document | None
            if raw is not None:
                result = bulkimport.accept(req, fast) if fast is not None else None
                if result is None:
                    if fast is not None:
                        req.body = body = orjson.loads(raw)
                    validate_body(op.operation_id, body)
                    written = WRITE_HANDLERS[op.operation_id](req)
                else:
                    written = result
                status, document = written
                self.advance()
            else:
                status, document = 200, ALL_READS[op.operation_id](req)
        except QueryError as exc:
            return error_response(400, exc.code, exc.detail, parameter=exc.parameter)
        except BodyError as exc:
            return body_error_response(exc)
        except NotFound as exc:
            return error_response(404, "not_found", f"A resource with id {path_id!r} does not exist ({exc}).")
        except Conflict as exc:
            error = {
                "id": str(uuid.uuid4()),
                "status": 409,
                "code": "duplicate_profile",
                "title": "Conflict.",
                "detail": "A profile already exists with one of these identifiers.",
                "source": {"pointer": "/data/attributes"},
                "meta": {"duplicate_profile_id": exc.profile_id},
            }
            return Response(orjson.dumps({"errors": [error]}), status_code=409, media_type=JSON_API)
        if document is None:
            return Response(status_code=status)
        return Response(encode_document(document), status_code=status, media_type=JSON_API)


class EmulatorApp:
    """The emulator as a bare ASGI app: every path goes to ``Emulator.handle``, which routes by the
    spec itself. No router or middleware stack: Starlette's per-request layers cost about as much as
    serving a small page. ``app.state.emulator`` is the ``Emulator``."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.state = SimpleNamespace(emulator=emulator)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self.emulator.handle(HttpRequest(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return


def create_app(
    settings: EmulatorSettings | None = None,
    *,
    account: Account | None = None,
    clock: Callable[[], float] | None = None,
    wall: Callable[[], float] = time.time,
) -> EmulatorApp | FaultyApp:
    """ASGI app serving one synthetic account (use with uvicorn or httpx.ASGITransport).

    ``clock``: the app's monotonic clock (rate limits, job progress); ``wall``: the real time
    a ``settings.clock`` of real or offset reads (both injectable, so tests never read the time)."""
    emulator = Emulator(settings or EmulatorSettings(), account, clock, wall)
    app = EmulatorApp(emulator)
    if emulator.settings.faults:
        return with_faults(app, emulator, emulator.settings.faults)
    return app
