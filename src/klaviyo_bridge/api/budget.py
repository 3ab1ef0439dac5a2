"""Rate budgets shared by every process that uses one key: Redis, or the PostgreSQL state.

Klaviyo counts requests per account. Processes of one machine or of many (two importers, N
workers) that use one key book their slots from one log per (account, operation, tier) instead
of a log each, so together they keep the published windows as one client would:

* ``redis://`` URL (``KLAVIYO_BRIDGE_RATE_BUDGET``): a list per bucket, booked by a Lua script
  (atomic on the server, times from the server's ``TIME``, so machines need not agree on the
  time); the list is trimmed to the largest window count and expires when idle;
* ``postgresql://`` URL (the state's, when the state lives in PostgreSQL): the same booking in a
  PL/pgSQL function under a transaction-scoped advisory lock per bucket (``store/rate_budget.py``).

``open_budget(url)`` gives the right one; a budget that cannot be reached fails the run with a
message naming it (never silently falls back to a per-process budget).
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import os
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ConfigError, TransportError
from ..secrets import redact_url
from .ratelimit import SharedBudget

#: Environment variable naming a shared rate budget: redis://HOST:PORT[/DB], postgresql://..., or
#: "local" (one budget per process even when the state is PostgreSQL).
BUDGET_ENV = "KLAVIYO_BRIDGE_RATE_BUDGET"

_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local at = now + tonumber(ARGV[1])
local len = redis.call('LLEN', KEYS[1])
if len > 0 then
  local last = tonumber(redis.call('LINDEX', KEYS[1], -1))
  if last > at then at = last end
end
local maxn, longest = 1, 1
for i = 0, tonumber(ARGV[2]) - 1 do
  local count, secs = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  if count > maxn then maxn = count end
  if secs > longest then longest = secs end
  if len >= count then
    local oldest = tonumber(redis.call('LINDEX', KEYS[1], -count))
    if oldest + secs > at then at = oldest + secs end
  end
end
redis.call('RPUSH', KEYS[1], string.format('%.6f', at))
redis.call('LTRIM', KEYS[1], -maxn, -1)
redis.call('EXPIRE', KEYS[1], math.ceil(at - now + longest) + 60)
return string.format('%.6f', at - now)
"""


def account_id(origin: str, key: Any) -> str:
    """A name for the account in shared budgets: a hash, never the key (an ``ApiKey`` or a str)."""
    secret = key.fingerprint("klaviyo-bridge-rate") if hasattr(key, "fingerprint") else str(key)
    return hashlib.sha256(f"klaviyo-bridge-rate:{origin}:{secret}".encode()).hexdigest()[:24]


class RedisBudget:
    """Slots booked in Redis by one Lua script call per request."""

    def __init__(self, url: str) -> None:
        try:  # deferred (tests/test_layers.py ALLOWED): only a redis:// budget needs it
            import redis
        except ImportError:  # pragma: no cover - redis is a dependency
            raise ConfigError(f"{BUDGET_ENV}={redact_url(url)} needs the redis package (pip install redis)") from None
        self.name = redact_url(url)
        self._errors = (redis.RedisError, OSError)
        try:
            self._redis = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
            self._redis.ping()
        except self._errors as exc:
            raise ConfigError(f"rate budget {self.name}: cannot reach Redis ({exc})", key=BUDGET_ENV) from None
        self._script = self._redis.register_script(_RESERVE_LUA)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rate-budget")

    def _reserve(self, bucket: str, windows: tuple[tuple[int, float], ...], not_before: float) -> float:
        args: list[float | int] = [not_before, len(windows)]
        for count, seconds in windows:
            args += [count, seconds]
        try:
            return float(self._script(keys=[f"klaviyo-bridge:rate:{bucket}"], args=args))
        except self._errors as exc:
            raise TransportError(f"rate budget {self.name}: {exc}") from None

    async def reserve(self, bucket: str, windows: tuple[tuple[int, float], ...], not_before: float) -> float:
        # A thread of its own: behind the default pool's warehouse writes a booking came back
        # late, and a request sent late lands among later bookings (a burst the server counts).
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._reserve, bucket, windows, not_before)

    def close(self) -> None:
        self._thread.shutdown(wait=False)
        self._redis.close()


_budgets: dict[str, SharedBudget] = {}
_budgets_lock = threading.Lock()


def open_budget(url: str) -> SharedBudget | None:
    """The shared budget at ``url`` (one per URL and process), or None for "local"."""
    if not url or url == "local":
        return None
    scheme = urllib.parse.urlsplit(url).scheme
    with _budgets_lock:
        found: SharedBudget | None = _budgets.get(url)
        if found is None:
            if scheme in ("redis", "rediss", "unix"):
                found = RedisBudget(url)
            elif scheme in ("postgresql", "postgres"):
                # deferred (tests/test_layers.py ALLOWED): the PostgreSQL driver, for this budget only
                from ..store.rate_budget import PostgresBudget

                found = PostgresBudget(url)
            else:
                raise ConfigError(
                    f"{BUDGET_ENV} must be a redis:// or postgresql:// URL, or local (got a {scheme or 'bare'} value)",
                    key=BUDGET_ENV,
                )
            if not _budgets:
                atexit.register(close_budgets)
            _budgets[url] = found
        return found


def budget_url(state_url: str | None = None) -> str | None:
    """Where this process's rate budgets live: ``KLAVIYO_BRIDGE_RATE_BUDGET`` when set, else the
    state's PostgreSQL when the state lives there, else None (one budget in this process)."""
    chosen = os.environ.get(BUDGET_ENV, "").strip()
    if chosen:
        return None if chosen == "local" else chosen
    if state_url and urllib.parse.urlsplit(str(state_url)).scheme in ("postgresql", "postgres"):
        return str(state_url)
    return None


def close_budgets() -> None:
    with _budgets_lock:
        for budget in _budgets.values():
            budget.close()
        _budgets.clear()
