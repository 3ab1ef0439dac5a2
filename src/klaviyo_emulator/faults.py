"""Fault injection for the emulator: the failures a real API and network produce, on demand.

``EmulatorSettings(faults="429=0.2,500=0.05,503=0.05,reset=0.02,slow=0.05:30s,truncate=0.01,seed=7")``
or ``klaviyo-bridge emulator --faults SPEC``. Items, comma-separated:

``429=P``                   a 429 with ``Retry-After`` (``retry_after=N`` seconds, default 1)
``500=P`` (502/503/504/524) that 5xx status, as a JSON:API error
``reset=P``                 the connection is dropped without a response (over real sockets the
                            TCP connection is aborted; in-process, the app raises an httpx
                            connection error that ``httpx.ASGITransport`` hands to the client)
``slow=P[:DURATION]``       the response is held back DURATION (default 30s, the client's
                            minimum read timeout) after the request was handled
``truncate=P``              the request is handled, then the body is cut off mid-JSON
``seed=N``                  the seed of every decision (default 0)
``storm=OP:KIND:DURATION``  every request of operation OP fails with KIND (a status above,
                            ``reset``, ``slow`` or ``truncate``) for DURATION from the first
                            request of OP (``forever`` never ends); repeatable

DURATION is a number with ``ms``, ``s`` or ``m`` (bare: seconds). Probabilities are per
request and add up to at most 1. Status faults and ``reset`` happen before the request is
handled (nothing is applied); ``slow`` and ``truncate`` after (a write is applied and its
answer lost, as when a real connection dies on the way back).

Deterministic: request number ``n`` of operation ``OP`` draws from ``Random(f"{seed}/{OP}/{n}")``,
so the same seed gives the same decision sequence per operation on every replay (with
concurrent requests of one operation, which request gets number n follows arrival order).
"""

from __future__ import annotations

import asyncio
import difflib
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal, Protocol, TypeVar

import orjson
from starlette.types import Message, Receive, Scope, Send

import klaviyo_spec
from klaviyo_spec import Operation

STATUSES = (429, 500, 502, 503, 504, 524)
#: Fixed order in which probabilities are stacked onto [0, 1): part of the determinism contract.
KINDS = ("429", "500", "502", "503", "504", "524", "reset", "slow", "truncate")
DEFAULT_SLOW_SECONDS = 30.0
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def parse_duration(text: str) -> float:
    """'10s' -> 10.0, '500ms' -> 0.5, '2m' -> 120.0, '3' -> 3.0, 'forever' -> inf."""
    text = text.strip().lower()
    if text in ("forever", "inf"):
        return float("inf")
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 10s, 500ms, 2m, forever)")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value * 60 if m.group(2) == "m" else value


@dataclass(frozen=True)
class Storm:
    """Every request of ``operation`` fails with ``kind`` for ``seconds`` from its first hit."""

    operation: str
    kind: str
    seconds: float


@dataclass(frozen=True)
class FaultSpec:
    rates: tuple[tuple[str, float], ...] = ()
    seed: int = 0
    slow_seconds: float = DEFAULT_SLOW_SECONDS
    retry_after: int = 1
    storms: tuple[Storm, ...] = ()

    @property
    def total_rate(self) -> float:
        return sum(p for _, p in self.rates)


def _known_operations() -> list[str]:
    return [*klaviyo_spec.emulated_operations(), *klaviyo_spec._raw().get("emulated_bodyless_operations", ())]


def parse_faults(text: str | None) -> FaultSpec:
    """Parse a SPEC; a ValueError names the offending item."""
    if text is None or not text.strip():
        return FaultSpec()
    rates: dict[str, float] = {}
    storms: list[Storm] = []
    seed, slow_seconds, retry_after = 0, DEFAULT_SLOW_SECONDS, 1
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue

        def bad(why: str, item: str = item) -> ValueError:
            return ValueError(f"faults: item {item!r}: {why}")

        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not value:
            raise bad("expected KEY=VALUE (e.g. 503=0.05, seed=7, storm=get_events:503:10s)")
        if key == "seed":
            try:
                seed = int(value)
            except ValueError:
                raise bad("the seed must be an integer") from None
            continue
        if key == "retry_after":
            try:
                retry_after = int(value)
            except ValueError:
                raise bad("retry_after must be whole seconds") from None
            if retry_after < 0:
                raise bad("retry_after must be >= 0")
            continue
        if key == "storm":
            parts = value.split(":")
            if len(parts) != 3:
                raise bad("expected storm=OPERATION:KIND:DURATION (e.g. storm=get_events:503:10s)")
            op, kind, duration = (p.strip() for p in parts)
            known = _known_operations()
            if op not in known:
                close = difflib.get_close_matches(op, known, n=1)
                raise bad(f"unknown operation {op!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            if kind.lower() not in KINDS:
                raise bad(f"unknown fault kind {kind!r}; one of: {', '.join(KINDS)}")
            try:
                seconds = parse_duration(duration)
            except ValueError as exc:
                raise bad(str(exc)) from None
            storms.append(Storm(op, kind.lower(), seconds))
            continue
        if key not in KINDS:
            close = difflib.get_close_matches(key, [*KINDS, "seed", "storm", "retry_after"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise bad(f"unknown fault {key!r}{hint}; known: {', '.join(KINDS)}, seed, retry_after, storm")
        prob_text = value
        if key == "slow" and ":" in value:
            prob_text, _, duration = value.partition(":")
            try:
                slow_seconds = parse_duration(duration)
            except ValueError as exc:
                raise bad(str(exc)) from None
            if slow_seconds == float("inf"):
                raise bad("a slow response needs a finite delay")
        try:
            prob = float(prob_text)
        except ValueError:
            raise bad(f"{prob_text!r} is not a probability (a number from 0 to 1)") from None
        if not 0.0 <= prob <= 1.0:
            raise bad(f"probability {prob_text} is outside 0..1")
        if key in rates:
            raise bad(f"{key} is given twice")
        rates[key] = prob
    ordered = tuple((k, rates[k]) for k in KINDS if rates.get(k))
    spec = FaultSpec(ordered, seed, slow_seconds, retry_after, tuple(storms))
    if spec.total_rate > 1.0 + 1e-9:
        raise ValueError(f"faults: the probabilities add up to {spec.total_rate:g}; at most 1 is possible")
    return spec


@dataclass
class FaultPlan:
    """Per-request decisions (``decide``) and what was injected (``injected``)."""

    spec: FaultSpec
    counters: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    storm_started: dict[int, float] = field(default_factory=dict)

    def decide(self, operation_id: str, now: float) -> str | None:
        n = self.counters[operation_id]
        self.counters[operation_id] = n + 1
        for index, storm in enumerate(self.spec.storms):
            if storm.operation != operation_id:
                continue
            first = self.storm_started.setdefault(index, now)
            if now - first < storm.seconds:
                return storm.kind
        if not self.spec.rates:
            return None
        draw = random.Random(f"{self.spec.seed}/{operation_id}/{n}").random()
        edge = 0.0
        for kind, prob in self.spec.rates:
            edge += prob
            if draw < edge:
                return kind
        return None

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())

    @property
    def total_requests(self) -> int:
        return sum(self.counters.values())


def _fault_response(kind: str, spec: FaultSpec) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status = int(kind)
    if status == 429:
        detail = f"Request was throttled. Expected available in {spec.retry_after} seconds."
        code, title = "throttled", "Request was throttled."
    else:
        detail, code, title = "A server error occurred (injected fault).", "server_error", "Server error."
    body = orjson.dumps(
        {"errors": [{"id": str(uuid.uuid4()), "status": status, "code": code, "title": title, "detail": detail, "source": {}}]}
    )
    headers = [(b"content-type", b"application/vnd.api+json"), (b"content-length", str(len(body)).encode())]
    if status == 429:
        headers.append((b"retry-after", str(spec.retry_after).encode()))
    return status, headers, body


class Routed(Protocol):
    """What the wrapper asks the emulator (``app.Emulator``): which operation a request is, and its clock."""

    def match(self, path: str, method: str = "GET") -> tuple[Operation | Literal[False] | None, dict[str, str]]: ...
    @property
    def clock(self) -> Callable[[], float]: ...


class StatefulApp(Protocol):
    """An ASGI app with a ``state`` namespace (``app.EmulatorApp``)."""

    @property
    def state(self) -> SimpleNamespace: ...
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


App = TypeVar("App", bound=StatefulApp)


class FaultyApp:
    """ASGI wrapper around the emulator's app, with the inner app's ``state``
    (``app.state.emulator`` still works, and ``app.state.faults`` is the plan)."""

    def __init__(self, app: StatefulApp, emulator: Routed, spec: FaultSpec) -> None:
        self.app = app
        self.emulator = emulator
        self.plan = FaultPlan(spec)
        self.state = app.state
        app.state.faults = self.plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        op, _ = self.emulator.match(scope["path"], scope["method"])
        if not op:
            await self.app(scope, receive, send)
            return
        kind = self.plan.decide(op.operation_id, self.emulator.clock())
        if kind is None:
            await self.app(scope, receive, send)
            return
        if kind == "reset":
            self.plan.injected[kind] += 1
            await _drop(send)
            return
        if kind not in ("slow", "truncate"):
            self.plan.injected[kind] += 1
            status, headers, body = _fault_response(kind, self.plan.spec)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        # Handle the request for real, then spoil the answer.
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, capture)
        start = next((m for m in messages if m["type"] == "http.response.start"), None)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        if kind == "slow":
            self.plan.injected[kind] += 1
            await _wait_or_disconnect(receive, self.plan.spec.slow_seconds)
            for message in messages:
                await send(message)
            return
        self.plan.injected[kind] += 1
        if start is None or len(body) < 2:
            await _drop(send)  # nothing to cut: the answer is lost instead
            return
        cut = random.Random(f"{self.plan.spec.seed}/cut/{len(body)}").randint(1, len(body) - 1)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(cut).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body[:cut], "more_body": False})


async def _drop(send: Send) -> None:
    """Close the connection without a response."""
    cycle: Any = getattr(send, "__self__", None)  # uvicorn's request-response cycle (its internals, untyped)
    transport = getattr(cycle, "transport", None)
    if transport is not None:  # uvicorn: abort the TCP connection, send nothing
        transport.abort()
        for _ in range(3):  # let connection_lost mark the cycle disconnected
            await asyncio.sleep(0)
        if hasattr(cycle, "disconnected"):
            cycle.disconnected = True
        return
    # In process (httpx.ASGITransport re-raises app exceptions to the client): only there is the
    # exception httpx's, and httpx is loaded already. Imported here so a served emulator, which
    # never gets here, does not load the HTTP client library (heavy, and not the server's).
    import httpx

    raise httpx.RemoteProtocolError("Server disconnected without sending a response (injected fault).")


async def _wait_or_disconnect(receive: Receive, seconds: float) -> None:
    """Sleep ``seconds`` but stop early when the client goes away (so a server can shut down)."""

    async def disconnected() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    try:
        await asyncio.wait_for(disconnected(), seconds)
    except asyncio.TimeoutError:
        pass


def with_faults(app: App, emulator: Routed, text: str | None) -> App | FaultyApp:
    """``app`` itself when SPEC injects nothing, else the faulty wrapper."""
    spec = parse_faults(text)
    if not spec.rates and not spec.storms:
        return app
    return FaultyApp(app, emulator, spec)
