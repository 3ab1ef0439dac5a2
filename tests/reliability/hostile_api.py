"""A hostile Klaviyo: the emulator behind an ASGI wrapper that rewrites chosen answers.

The emulator's ``--faults`` produce what a network and a loaded API produce (429, 5xx, resets,
slow and cut-off answers). What a broken or hostile server produces (a page without ``data``,
records without ``id``, a ``next`` link to itself, HTML with status 200...) the emulator never
does on purpose; this wrapper makes it, per operation and per request number, over real HTTP.

``Spoil(op, how, nth=None)``: every answer of operation ``op`` (or only its ``nth``, counting
from 1) is passed to ``how(doc, request_url) -> doc | bytes | (status, headers, body)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Spoil:
    operation: str
    how: Callable[[Any, str], Any]
    nth: int | None = None


class HostileApp:
    def __init__(self, app, *spoils: Spoil) -> None:
        self.app = app
        self.emulator = app.state.emulator
        self.spoils = list(spoils)
        self.counts: Counter = Counter()
        self.state = app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        op, _ = self.emulator.match(scope["path"], scope["method"])
        if not op:
            return await self.app(scope, receive, send)
        self.counts[op.operation_id] += 1
        n = self.counts[op.operation_id]
        spoil = next((s for s in self.spoils if s.operation == op.operation_id and s.nth in (None, n)), None)
        if spoil is None:
            return await self.app(scope, receive, send)
        messages: list[dict] = []

        async def capture(message):
            messages.append(message)

        await self.app(scope, receive, capture)
        start = next(m for m in messages if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        query = scope.get("query_string", b"").decode()
        url = f"http://{dict(scope['headers']).get(b'host', b'').decode()}{scope['path']}" + (f"?{query}" if query else "")
        try:
            doc = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            doc = body
        out = spoil.how(doc, url)
        status, headers = start["status"], [(b"content-type", b"application/vnd.api+json")]
        if isinstance(out, tuple):
            status, extra, out = out
            headers = list(extra)
        data = out if isinstance(out, bytes) else orjson.dumps(out)
        headers = [h for h in headers if h[0].lower() != b"content-length"] + [(b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data, "more_body": False})


# --- ways to spoil a page ----------------------------------------------------------------------


def drop_data(doc, url):
    return {k: v for k, v in doc.items() if k != "data"}


def data_null(doc, url):
    return {**doc, "data": None}


def data_object(doc, url):
    return {**doc, "data": {"type": "profile", "id": "x"}}


def drop_id(index: int = 0):
    def how(doc, url):
        data = [dict(r) for r in doc["data"]]
        data[index].pop("id", None)
        return {**doc, "data": data}

    return how


def set_id(value):
    def how(doc, url):
        data = [dict(r) for r in doc["data"]]
        data[0]["id"] = value
        return {**doc, "data": data}

    return how


def next_to_itself(doc, url):
    return {**doc, "links": {**(doc.get("links") or {}), "next": url}}


def next_to(target: dict):
    """A next link to the URL recorded in ``target['url']`` (a cycle through earlier pages)."""

    def how(doc, url):
        target.setdefault("url", url)
        return {**doc, "links": {**(doc.get("links") or {}), "next": target["url"]}}

    return how


def next_not_a_string(doc, url):
    return {**doc, "links": {"next": {"href": url}}}


def next_to_other_host(doc, url):
    return {**doc, "links": {"next": "http://127.0.0.2:9/api/profiles?page[cursor]=x"}}


def html_200(doc, url):
    return 200, [(b"content-type", b"text/html")], b"<html><body>Service temporarily unavailable</body></html>"


def json_list(doc, url):
    return [doc]


def truncated(doc, url):
    return orjson.dumps(doc)[:37]


def empty_200(doc, url):
    return 200, [(b"content-type", b"application/vnd.api+json")], b""


def huge_string(doc, url):
    data = [dict(r) for r in doc["data"]]
    data[0] = {**data[0], "attributes": {**data[0].get("attributes", {}), "first_name": "x" * 2_000_000}}
    return {**doc, "data": data}


def copies(n: int):
    """A page of ``n`` records (the first record repeated with new ids)."""

    def how(doc, url):
        first = doc["data"][0]
        return {**doc, "data": [{**first, "id": f"{first['id']}-{i}"} for i in range(n)], "links": {"next": None}}

    return how
