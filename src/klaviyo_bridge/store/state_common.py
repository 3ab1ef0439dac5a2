"""Names shared by the state modules: the schema, run kinds and statuses, row outcomes, a run row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .identifiers import STATE_SCHEMA, quote

S = quote(STATE_SCHEMA)
RUN_KINDS = ("import", "export", "workflow")  # workflow: a pushed .dig run by the scheduler
RUN_STATUSES = ("running", "succeeded", "failed")
ROW_OUTCOMES = ("accepted", "rejected", "skipped", "submitted")  # submitted = sent, no confirmation to read


def _opt_int(value: int | None) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class RunRecord:
    """A row of ``_bridge.runs``: one import, export or workflow run."""

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
