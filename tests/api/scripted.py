"""A scripted Klaviyo stand-in for client tests: answers requests from a list of canned replies."""

from __future__ import annotations

import json

import httpx

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.api.settings import ClientSettings

KEY = "pk_scripted_test_key_do_not_log"
BASE = "https://a.klaviyo.test"


def error_body(status: int, code: str, detail: str, pointer: str | None = None) -> bytes:
    item = {"id": "e1", "status": status, "code": code, "title": code, "detail": detail}
    if pointer:
        item["source"] = {"pointer": pointer}
    return json.dumps({"errors": [item]}).encode()


class Script:
    """Each request pops the next reply: an httpx.Response, an exception to raise, or a callable."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply


def ok(doc=None) -> httpx.Response:
    return httpx.Response(200, json=doc or {"data": [], "links": {"self": BASE}})


def status(code: int, headers=None, detail="boom") -> httpx.Response:
    return httpx.Response(code, headers=headers, content=error_body(code, f"e{code}", detail))


class Sleeps:
    def __init__(self):
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client_for(script: Script, sleeps: Sleeps | None = None, **settings) -> KlaviyoClient:
    sleeps = sleeps or Sleeps()
    return KlaviyoClient(
        ClientSettings(api_key=KEY, base_url=BASE, **settings),
        transport=httpx.MockTransport(script),
        limiter=RateLimiter(enabled=False),
        sleep=sleeps,
    )
