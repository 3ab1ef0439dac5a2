"""Names shared by the state modules: the schema, run kinds and statuses, row outcomes, the job record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .identifiers import STATE_SCHEMA, quote

S = quote(STATE_SCHEMA)
RUN_KINDS = ("import", "export", "workflow")  # workflow: a pushed .dig run by the scheduler
#: The status words of the seeds' job history (``queued`` is a run waiting for its turn).
RUN_STATUSES = ("running", "success", "error", "killed")
#: Words written by versions before the seeds' words were adopted, and what they mean now.
OLD_STATUS_WORDS = {"succeeded": "success", "failed": "error", "cancelled": "killed"}
#: submitted = sent, no confirmation to read; unconfirmed = Klaviyo's answer was unclear and reading
#: it back could not show whether the change happened (never resent blindly).
ROW_OUTCOMES = ("accepted", "rejected", "skipped", "submitted", "unconfirmed")


def _opt_int(value: int | None) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class JobRecord:
    """A row of ``_bridge.runs``: one import, export or workflow run, however it was started (a
    command, a schedule, the console). The scheduling fields are None for a run started by a
    command; ``error_detail`` is the failure as data (code, message, field, row, hint) where the
    run recorded one, ``error`` its one-line text."""

    run_id: str
    job: str
    kind: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    rows_read: int | None
    rows_written: int | None
    counts: dict[str, Any]
    error: str | None
    schedule: str | None = None
    scheduled_for: datetime | None = None
    pid: int | None = None
    host: str | None = None
    triggered_by: str | None = None
    database: str | None = None
    table: str | None = None
    cancel_requested: bool = False
    note: str | None = None
    error_detail: dict[str, Any] | None = None

    @property
    def duration(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None
