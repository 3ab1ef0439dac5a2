"""One exception root for everything klaviyo-bridge raises on purpose.

The branches are named for what the caller should do about them::

    BridgeError                      anything we raise deliberately (CLI: one line, exit 1)
    ├── ConfigError                  fix the settings / command line, then rerun
    ├── ApiError                     Klaviyo (or the emulator) answered badly
    │   ├── RetryableApiError        worth trying again later
    │   │   ├── RateLimited          429; carries retry_after (seconds)
    │   │   ├── ServerError          500/502/503/504/524
    │   │   └── TransportError       connection refused/reset, timeouts, cut-off bodies
    │   │       └── NameResolutionError  the host name does not resolve (retried once only)
    │   └── FatalApiError            retrying cannot help
    │       ├── AuthError            401/403: the API key was rejected
    │       ├── NotFound             404
    │       ├── Conflict             409
    │       └── InvalidRequest       other 4xx (bad filter, bad field, ...)
    ├── RetriesExhausted             a retryable error persisted past retry_limit
    ├── StoreError                   the warehouse or state store failed
    ├── ExportError                  an export cannot go on (missing column, ...)
    └── ScheduleError                bad cron, unknown time zone, ...

Errors carry their context as attributes (status, code, detail, pointer, ...),
and the message never contains an API key: the client redacts before raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BridgeError(Exception):
    """Root of all deliberate klaviyo-bridge errors."""

    exit_code = 1


class ConfigError(BridgeError):
    """Settings are invalid; carries the offending key when known."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class ErrorItem:
    """One entry of a JSON:API ``errors`` array."""

    status: int
    code: str = ""
    title: str = ""
    detail: str = ""
    pointer: str | None = None
    parameter: str | None = None

    @classmethod
    def from_json(cls, status: int, item: dict[str, Any]) -> "ErrorItem":
        source = item.get("source") or {}
        return cls(
            status=status,
            code=str(item.get("code") or ""),
            title=str(item.get("title") or ""),
            detail=str(item.get("detail") or ""),
            pointer=source.get("pointer"),
            parameter=source.get("parameter"),
        )


class ApiError(BridgeError):
    """An HTTP exchange with Klaviyo failed; ``errors`` holds the JSON:API items."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: tuple[ErrorItem, ...] = (),
        method: str | None = None,
        url: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors
        self.method = method
        self.url = url
        self.operation = operation

    @property
    def code(self) -> str:
        return self.errors[0].code if self.errors else ""

    @property
    def detail(self) -> str:
        return self.errors[0].detail if self.errors else ""

    @property
    def pointer(self) -> str | None:
        return self.errors[0].pointer if self.errors else None


class RetryableApiError(ApiError):
    """Transient: the retry policy may try again."""


class RateLimited(RetryableApiError):
    """HTTP 429. ``retry_after`` is the server's hint in seconds (None if absent)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(RetryableApiError):
    """HTTP 5xx that Klaviyo documents as transient."""


class TransportError(RetryableApiError):
    """No usable HTTP response: connection error, timeout, truncated body.

    ``not_sent`` is true when no connection was made, so the request cannot have been applied.
    """

    not_sent: bool = False


class NameResolutionError(TransportError):
    """The host name could not be resolved (DNS): a typo in base_url, or no network. Retried
    once, at once, not with the full backoff: waiting 26 s for a name that will not resolve
    helps nobody."""

    def __init__(self, message: str, *, host: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.host = host


class FatalApiError(ApiError):
    """Retrying the same request cannot succeed."""


class AuthError(FatalApiError):
    """401/403: the API key was rejected or lacks a scope."""


class NotFound(FatalApiError):
    """404."""


class Conflict(FatalApiError):
    """409."""


class InvalidRequest(FatalApiError):
    """Any other 4xx: the request itself is wrong (bad filter, sort, field...)."""


class MalformedResponse(ApiError):
    """A 2xx answer whose shape cannot be trusted: a page without its ``data`` array, a record
    without an ``id``, a ``next`` link leading back to a page already read. Importing on would
    lose or corrupt rows quietly, so the run stops here (and retrying gets the same answer)."""


class RetriesExhausted(BridgeError):
    """A retryable failure persisted through every allowed attempt."""

    def __init__(self, message: str, *, attempts: int, last_error: BaseException) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class StoreError(BridgeError):
    """The warehouse or the state store failed."""


#: What operating systems and DuckDB say when a write does not fit (errno 28, 122 and 27).
DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "File too large")


def disk_full_reason(text: str) -> str | None:
    """The words of a disk-full error in ``text`` (None when it is some other error)."""
    return next((w for w in DISK_FULL_WORDS if w in text), None)


def disk_full_message(where: object, reason: str) -> str:
    return (f"the disk holding {where} is full ({reason}): this command's changes were rolled back, so the "
            "tables, cursors, schedules and job history are as they were before it; free some space and run it again")


class ExportError(BridgeError):
    """An export cannot proceed (missing column, ambiguous list name, ...)."""

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.row = row
        self.column = column


class ExportFailed(ExportError):
    """The export ran and its outcome is a failure (status ``error``): nothing sent was accepted,
    ``stop_on_batch_failure`` tripped, the key was rejected... ``result`` holds what was recorded."""

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class ExportBusy(ExportError):
    """Another export holds the list this one writes to, for longer than ``list_lock_timeout_seconds``."""


class ScheduleError(BridgeError):
    """Invalid cron expression, time zone or schedule state."""
