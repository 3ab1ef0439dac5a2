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

Every error is also data: ``error_code``, ``field`` (a dotted path such as ``in.list_id``),
``row``, ``hint`` and ``problems`` (one ``Problem`` per bad field, when several are reported at
once). ``to_dict()`` is what every surface reads (the CLI's message, the console's field errors,
the job record, the notify payload), so none of them parses the message text back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Problem:
    """One thing wrong, as data: what (``message``), where (``field`` path, ``row``), what to do
    (``hint``). A ``ConfigError`` holds one per bad setting."""

    message: str
    field: str | None = None
    row: int | None = None
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "field": self.field, "row": self.row, "hint": self.hint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Problem":
        row = data.get("row")
        return cls(
            message=str(data.get("message") or ""),
            field=_text_or_none(data.get("field")),
            row=row if isinstance(row, int) and not isinstance(row, bool) else None,
            hint=_text_or_none(data.get("hint")),
        )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _snake(name: str) -> str:
    out = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
    return out.removesuffix("_error") or out


class BridgeError(Exception):
    """Root of all deliberate klaviyo-bridge errors.

    ``error_code`` names the branch ("config", "auth", "rate_limited", ...; the class name in
    snake case unless a class sets it); ``field``, ``row`` and ``hint`` are None unless known.
    """

    exit_code: ClassVar[int] = 1
    error_code: ClassVar[str] = "bridge"
    field: str | None = None
    row: int | None = None
    hint: str | None = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "error_code" not in cls.__dict__:
            cls.error_code = _snake(cls.__name__)

    _problems: tuple[Problem, ...] = ()

    def __init__(
        self,
        message: str = "",
        *args: Any,
        field: str | None = None,
        row: int | None = None,
        hint: str | None = None,
        problems: tuple[Problem, ...] | list[Problem] = (),
    ) -> None:
        super().__init__(message, *args)
        if field is not None:
            self.field = field
        if row is not None:
            self.row = row
        if hint is not None:
            self.hint = hint
        if problems:
            self._problems = tuple(problems)

    @property
    def message(self) -> str:
        return str(self)

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Every problem this error reports: several when several settings or rows were wrong at
        once, else the error itself as one problem."""
        return self._problems or (Problem(self.message, self.field, self.row, self.hint),)

    def to_dict(self) -> dict[str, Any]:
        """The error as data: code, message, field, row, hint and the list of problems."""
        return {
            "code": self.error_code,
            "message": self.message,
            "field": self.field,
            "row": self.row,
            "hint": self.hint,
            "problems": [p.to_dict() for p in self.problems],
        }


def error_dict(exc: BaseException) -> dict[str, Any]:
    """``to_dict()`` of a bridge error; any other exception as code "internal" with its class name."""
    if isinstance(exc, BridgeError):
        return exc.to_dict()
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return {
        "code": "internal",
        "message": message,
        "field": None,
        "row": None,
        "hint": None,
        "problems": [Problem(message).to_dict()],
    }


def error_from_text(text: str, *, status: str = "error") -> dict[str, Any]:
    """An error known only as text, as data: a job record written before errors were data (its
    ``error`` column), or a run ended with a sentence and no exception behind it. The code is the
    error class the text starts with when it is one of ours ("ConfigError: ..." -> "config"),
    else "killed" for a killed run, else "error"; field, row and hint are unknown."""
    code = "killed" if status == "killed" else "error"
    name, sep, _ = text.partition(": ")
    cls = globals().get(name) if sep and name.isidentifier() else None
    if isinstance(cls, type) and issubclass(cls, BridgeError) and status != "killed":
        code = cls.error_code
    return {"code": code, "message": text, "field": None, "row": None, "hint": None, "problems": [Problem(text).to_dict()]}


class ConfigError(BridgeError):
    """Settings are invalid; carries the offending key when known (``key`` is ``field``), and
    every bad setting as ``problems`` when several were found at once."""

    exit_code = 2
    error_code = "config"

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        field: str | None = None,
        row: int | None = None,
        hint: str | None = None,
        problems: tuple[Problem, ...] | list[Problem] = (),
    ) -> None:
        super().__init__(message, field=field or key, row=row, hint=hint, problems=problems)
        self.key = field or key

    def within(self, origin: str) -> "ConfigError":
        """The same error, its message prefixed with where the settings came from."""
        return ConfigError(f"{origin}: {self}", field=self.field, row=self.row, hint=self.hint, problems=self._problems)


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
        first = errors[0] if errors else None
        super().__init__(message, field=(first.pointer or first.parameter) if first else None)
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

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "status": self.status, "api_code": self.code or None}


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
    return (
        f"the disk holding {where} is full ({reason}): this command's changes were rolled back, so the "
        "tables, cursors, schedules and job history are as they were before it; free some space and run it again"
    )


class ExportError(BridgeError):
    """An export cannot proceed (missing column, ambiguous list name, ...)."""

    def __init__(
        self,
        message: str,
        *,
        row: int | None = None,
        column: str | None = None,
        hint: str | None = None,
        problems: tuple[Problem, ...] | list[Problem] = (),
    ) -> None:
        super().__init__(message, field=column, row=row, hint=hint, problems=problems)
        self.column = column


class ExportFailed(ExportError):
    """The export ran and its outcome is a failure (status ``error``): nothing sent was accepted,
    ``stop_on_batch_failure`` tripped, the key was rejected... ``result`` holds what was recorded."""

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class ExportBusy(ExportError):
    """Another export holds the list this one writes to, for longer than ``list_lock_timeout_seconds``."""


class JobFailed(BridgeError):
    """A job ran (a schedule, a pushed workflow) and did not succeed. ``error`` is the job's
    recorded error as data (``to_dict()`` of what stopped it, redacted): its field, row, hint and
    problems are this error's, so the CLI shows them as it would the original error's."""

    def __init__(self, message: str, *, run_id: str | None = None, error: dict[str, Any] | None = None) -> None:
        detail = dict(error or {})
        row = detail.get("row")
        super().__init__(
            message,
            field=_text_or_none(detail.get("field")),
            row=row if isinstance(row, int) and not isinstance(row, bool) else None,
            hint=_text_or_none(detail.get("hint")),
        )
        self.run_id = run_id
        self.error = detail

    @property
    def problems(self) -> tuple[Problem, ...]:
        recorded = [Problem.from_dict(p) for p in self.error.get("problems") or [] if isinstance(p, dict)]
        return tuple(recorded) or super().problems

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "run_id": self.run_id, "cause": self.error.get("code")}


class ScheduleError(BridgeError):
    """Invalid cron expression, time zone or schedule state."""
