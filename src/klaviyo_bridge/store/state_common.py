"""Names shared by the state modules: the schema, run kinds and statuses, row outcomes."""

from __future__ import annotations

from .identifiers import STATE_SCHEMA, quote

S = quote(STATE_SCHEMA)
RUN_KINDS = ("import", "export", "workflow")  # workflow: a pushed .dig run by the scheduler
RUN_STATUSES = ("running", "succeeded", "failed")
ROW_OUTCOMES = ("accepted", "rejected", "skipped", "submitted")  # submitted = sent, no confirmation to read


def _opt_int(value: int | None) -> int | None:
    return None if value is None else int(value)
