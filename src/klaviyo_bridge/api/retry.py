"""When to try a request again, and how long to wait first.

The exception type is the decision: ``RetryableApiError`` (429, 500/502/503/504/524,
connection errors, timeouts, cut-off bodies) is retried; every ``FatalApiError``
(400/401/403/404/409/...) is not. Waits grow exponentially from
``initial_retry_wait`` with jitter, capped at ``max_retry_wait``; a 429's
``Retry-After`` (or Klaviyo's "Expected available in N seconds" detail) is the
floor of the wait, because asking earlier only earns another 429.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from ..errors import RateLimited, RetryableApiError

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 524})
_EXPECTED_RE = re.compile(r"Expected available in (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)


def retry_after_seconds(header: str | None, detail: str | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds) or the 429 detail text."""
    if header:
        try:
            return max(0.0, float(header.strip()))
        except ValueError:
            try:
                when = parsedate_to_datetime(header)
                return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
            except (TypeError, ValueError):
                pass
    if detail:
        m = _EXPECTED_RE.search(detail)
        if m:
            return float(m.group(1))
    return None


@dataclass
class RetryPolicy:
    """``retry_limit`` retries after the first attempt, exponential backoff with jitter."""

    retry_limit: int = 5
    initial_wait: float = 1.0
    max_wait: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def should_retry(self, error: BaseException, retries_done: int) -> bool:
        return isinstance(error, RetryableApiError) and retries_done < self.retry_limit

    def backoff(self, retries_done: int) -> float:
        """Wait before retry number ``retries_done + 1``: half fixed, half jitter."""
        ceiling = min(self.max_wait, self.initial_wait * (2.0**retries_done))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def wait_for(self, error: BaseException, retries_done: int) -> float:
        """Seconds to sleep before the next attempt after ``error``."""
        wait = self.backoff(retries_done)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            # Honour the server's hint (plus a little jitter so waiters don't all return at once).
            wait = min(self.max_wait, error.retry_after + self.rng.uniform(0, 0.25))
        return wait

    def worst_case_total_wait(self) -> float:
        """Upper bound of all backoff sleeps of one call (documentation and tests)."""
        return sum(min(self.max_wait, self.initial_wait * 2.0**i) for i in range(self.retry_limit))
