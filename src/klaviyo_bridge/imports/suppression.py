"""Suppressed profiles, as two columns a warehouse can filter on.

A profile's ``subscriptions.email.marketing.suppression`` lists why Klaviyo will not email it
(``HARD_BOUNCE``, ``SPAM_COMPLAINT``, ``UNSUBSCRIBE``, ``USER_SUPPRESSED``...), each with a
time; Klaviyo bumps the profile's ``updated`` when it changes, so an incremental import by
``updated`` sees suppressions and un-suppressions. Each profile row gets ``suppressed``
(true while any suppression is in place) and ``suppressed_at`` (the earliest of them).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa

from .columns import TIMESTAMP, Column

SOURCE_COLUMN = "subscriptions_email_marketing"
DERIVED = (pa.field("suppressed", pa.bool_()), pa.field("suppressed_at", TIMESTAMP))
#: The columns a stream with ``suppression`` declares after its own (path head ``_derived``: not
#: read from the page, computed from it).
DERIVED_COLUMNS = tuple(Column(f.name, ("_derived", f.name), f.type) for f in DERIVED)


def is_derived(column: Column) -> bool:
    return column.path[0] == "_derived"


def with_suppression(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` plus ``suppressed`` and ``suppressed_at`` (from the email marketing JSON)."""
    if SOURCE_COLUMN not in batch.schema.names:
        return batch
    column = batch.column(SOURCE_COLUMN)
    texts = (column.storage if isinstance(column, pa.ExtensionArray) else column).to_pylist()
    flags, times = [], []
    for text in texts:
        marketing = json.loads(text) if text else None
        entries = ((marketing or {}).get("suppression") or []) if isinstance(marketing, dict) else []
        found = [_instant(e.get("timestamp")) for e in entries if isinstance(e, dict)]
        stamps = [t for t in found if t is not None]
        flags.append(None if marketing is None else bool(entries))
        times.append(min(stamps) if stamps else None)
    for field, values in zip(DERIVED, (pa.array(flags, pa.bool_()), pa.array(times, TIMESTAMP))):
        batch = batch.append_column(field, values)
    return batch


def _instant(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
