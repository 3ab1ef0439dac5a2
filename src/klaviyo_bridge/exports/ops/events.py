"""``operation: track_events``: rows become Klaviyo events (bulk create events, 1,000 a request).

Columns (case-sensitive):

- ``metric_name`` (required): the metric, created by Klaviyo when the account has none of that name;
- a profile identifier (at least one per row): ``email``, ``phone_number``, ``external_id`` or
  ``profile_id`` (Klaviyo creates or updates the profile);
- ``time`` (required): a timestamp column or ISO 8601 text; after 1990, at most a year ahead;
- ``value`` (optional, a number) and ``value_currency`` (optional, ISO 4217);
- ``unique_id`` (optional): Klaviyo records one event per (profile, metric, unique_id). When the
  column is absent or empty, a stable hash of the row is used, so running the same export again
  (or a ``--resume``, or a resend after a lost answer) never counts an event twice;
- every other column becomes an event property.

Events older than ``backfill_older_than`` (default 24 hours) are sent with Klaviyo's ``backfill``
flag (recorded, but existing flows do not fire on them). The flag is in the API from revision
``BACKFILL_REVISION``; with an older ``revision`` such rows are refused, naming the revision, and
``backfill_older_than: never`` sends them without it.

Klaviyo answers 202 with nothing to follow: a sent row is ``submitted``.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import ExportError
from .. import validate as v
from ..batching import Endpoint
from ..payloads import Payloads
from .base import Operation, Prepared, finish, identity_of, utc_time, valid_only_duplicates, value_problems

EVENT_IDENTIFIERS = ("email", "phone_number", "external_id", "profile_id")
#: Columns the operation reads for itself; the others become event properties.
RESERVED = ("metric_name", "time", "value", "value_currency", "unique_id") + EVENT_IDENTIFIERS
#: The first revision whose spec has ``backfill`` on events (the spec shipped here, 2026-07-15, has it;
#: earlier revisions are not known to).
BACKFILL_REVISION = "2026-07-15"
#: Klaviyo: "The time must be after the year 1990 and can only be up to 1 year in the future."
EARLIEST = datetime(1990, 1, 1, tzinfo=timezone.utc).timestamp()
ONE_YEAR = 365 * 86400
#: Klaviyo: "each string cannot be larger than 100 KB"; at most 400 properties per event.
MAX_STRING_BYTES = 100 * 1024
MAX_PROPERTIES = 400
SUBMITTED_REASON = "Klaviyo's bulk create events answers 202 with no job to follow: submitted, not confirmed"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _parse_time(value: Any) -> tuple[float | None, str | None]:
    stamp, reason = utc_time(value, "column 'time':")
    return (None, reason) if stamp is None else (stamp.timestamp(), None)


def _times(column: pa.Array) -> tuple[list[float | None], list[str | None]]:
    """Epoch seconds and reasons per row (parsed once per distinct value)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.to_pylist()
    cache: dict[Any, tuple[float | None, str | None]] = {}
    seconds: list[float | None] = []
    reasons: list[str | None] = []
    for value in values:
        if value is None or (isinstance(value, str) and not value.strip()):
            seconds.append(None)
            reasons.append("column 'time' is empty (an event needs the time it happened)")
            continue
        got = cache.get(value)
        if got is None:
            got = cache[value] = _parse_time(value)
        seconds.append(got[0])
        reasons.append(got[1])
    return seconds, reasons


def _text(column: pa.Array) -> pa.Array:
    """Trimmed text, empty as null."""
    text = pc.utf8_trim_whitespace(v._as_text(column))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _row_hash(row: tuple[Any, ...]) -> str:
    return hashlib.blake2b(orjson.dumps(row, default=_default, option=orjson.OPT_NON_STR_KEYS), digest_size=16).hexdigest()


class TrackEvents(Operation):
    name = "track_events"
    endpoint = Endpoint("bulk_create_events", 1_000)
    sent_reason = SUBMITTED_REASON

    def required_columns(self) -> tuple[tuple[str, ...], bool]:
        return EVENT_IDENTIFIERS, True

    def check_columns(self, schema: pa.Schema) -> None:
        names = schema.names
        for col in ("metric_name", "time"):
            if col not in names:
                near = [n for n in names if n.lower() == col]
                hint = f" (found {near[0]!r}: column names are case-sensitive)" if near else ""
                raise ExportError(
                    f"operation 'track_events' needs a column {col}{hint}; the query returned: {', '.join(names)}", column=col
                )
        if not any(c in names for c in EVENT_IDENTIFIERS):
            raise ExportError(
                "operation 'track_events' needs a profile identifier column: email, phone_number, "
                f"external_id or profile_id; the query returned: {', '.join(names)}",
                column="email",
            )
        t = schema.field("time").type
        if not (
            pa.types.is_timestamp(t)
            or pa.types.is_date(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
            or pa.types.is_null(t)
        ):
            raise ExportError(
                f"operation 'track_events': column 'time' must be a timestamp or ISO 8601 text, the query returned {t}",
                column="time",
            )
        if "value" in names:
            t = schema.field("value").type
            if not (
                pa.types.is_integer(t)
                or pa.types.is_floating(t)
                or pa.types.is_decimal(t)
                or pa.types.is_null(t)
                or pa.types.is_string(t)
            ):
                raise ExportError(
                    f"operation 'track_events': column 'value' must be a number, the query returned {t}", column="value"
                )

    def warnings(self) -> list[str]:
        after = self.settings.backfill_after_seconds
        if after is None:
            return ["backfill_older_than is never: old events are sent without Klaviyo's backfill flag and may trigger flows"]
        return []

    def prepare(self, table: pa.Table, seen: v.SeenValues, now: datetime | None = None) -> Prepared:
        settings = self.settings
        now_s = (now or self.wall()).timestamp()
        names = table.schema.names
        n = table.num_rows
        own: list[pa.Array] = []
        ident: dict[str, pa.Array] = {}
        if "email" in names:
            chk = v.check_emails(table.column("email"), required=False)
            ident["email"] = chk.values
            own.append(chk.reasons)
        if "phone_number" in names:
            chk = v.check_phones(table.column("phone_number"), required=False, default_region=settings.default_phone_region)
            ident["phone_number"] = chk.values
            own.append(chk.reasons)
        for col in ("external_id", "profile_id"):
            if col in names:
                ident[col] = _text(table.column(col))
        present = list(ident)
        nothing = pc.and_(*[pc.is_null(ident[c]) for c in present]) if len(present) > 1 else pc.is_null(ident[present[0]])
        own.append(v._reason_where(nothing, f"no profile identifier: {' / '.join(present)} all empty", pa.nulls(n, pa.string())))
        metric = v.check_required_text(table.column("metric_name"), "metric_name")
        own.append(metric.reasons)
        seconds, time_reasons = _times(table.column("time"))
        after = settings.backfill_after_seconds
        lacks_backfill = settings.revision < BACKFILL_REVISION
        backfill = [False] * n
        for i, s in enumerate(seconds):
            if s is None or time_reasons[i]:
                continue
            if s <= EARLIEST:
                time_reasons[i] = f"column 'time': {_iso(s)} is not after 1990 (Klaviyo refuses it)"
            elif s > now_s + ONE_YEAR:
                time_reasons[i] = f"column 'time': {_iso(s)} is more than a year in the future (Klaviyo refuses it)"
            elif after is not None and now_s - s > after:
                if lacks_backfill:
                    time_reasons[i] = (
                        f"column 'time': {_iso(s)} is older than backfill_older_than "
                        f"({settings.backfill_older_than}) and needs Klaviyo's backfill flag, which "
                        f"revision {settings.revision} lacks (it is in {BACKFILL_REVISION}): set "
                        f"revision: {BACKFILL_REVISION}, or backfill_older_than: never to send it "
                        "without the flag (flows may then fire on it)"
                    )
                else:
                    backfill[i] = True
        own.append(pa.array(time_reasons, pa.string()))
        values: list[Any] = [None] * n
        if "value" in names:
            col = table.column("value")
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            reasons_v: list[str | None] = [None] * n
            for i, x in enumerate(col.to_pylist()):
                if x is None or (isinstance(x, str) and not x.strip()):
                    continue
                try:
                    f = float(x)
                except (TypeError, ValueError):
                    reasons_v[i] = f"column 'value': {x!r} is not a number"
                    continue
                if not math.isfinite(f):
                    reasons_v[i] = "column 'value' is NaN or infinite, which Klaviyo cannot store (use NULL for no value)"
                    continue
                values[i] = int(f) if isinstance(x, int) else f
            own.append(pa.array(reasons_v, pa.string()))
        props = [c for c in names if c not in RESERVED]
        if len(props) > MAX_PROPERTIES:
            raise ExportError(
                f"operation 'track_events': {len(props)} property columns; Klaviyo takes at most "
                f"{MAX_PROPERTIES} properties per event"
            )
        own.append(value_problems(table, props + (["value_currency"] if "value_currency" in names else [])))
        for c in props:
            col = table.column(c)
            t = col.type
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                big = pc.greater(pc.binary_length(col), MAX_STRING_BYTES)
                if pc.any(big).as_py():
                    own.append(
                        v._reason_where(
                            big,
                            f"column {c!r} holds more than 100 KB, the most Klaviyo accepts in one string",
                            pa.nulls(n, pa.string()),
                        )
                    )
        reasons = v.combine(*own)
        # unique_id: the column's value, else a stable hash of the whole row
        given = _text(table.column("unique_id")).to_pylist() if "unique_id" in names else [None] * n
        rows = list(zip(*(table.column(c).to_pylist() for c in names))) if n else []
        unique = [u if u is not None else _row_hash(r) for u, r in zip(given, rows)]
        identity = identity_of(table, EVENT_IDENTIFIERS)
        key = pc.binary_join_element_wise(pc.fill_null(identity, ""), metric.values, pa.array(unique, pa.string()), "\x00")
        reasons = valid_only_duplicates(seen, key, "event (same profile, metric_name and unique_id)", reasons)
        metrics = metric.values.to_pylist()
        idents = {c: a.to_pylist() for c, a in ident.items()}
        currency = _text(table.column("value_currency")).to_pylist() if "value_currency" in names else None
        prop_cols = [(c, table.column(c).to_pylist()) for c in props]

        def build(index: np.ndarray) -> tuple[Payloads, list[tuple[int, int]]]:
            items = []
            for i in index.tolist():
                profile: dict[str, Any] = {"type": "profile", "attributes": {}}
                for c in ("email", "phone_number", "external_id"):
                    if c in idents and idents[c][i] is not None:
                        profile["attributes"][c] = idents[c][i]
                if "profile_id" in idents and idents["profile_id"][i] is not None:
                    profile["id"] = idents["profile_id"][i]
                properties = {c: col[i] for c, col in prop_cols if col[i] is not None}
                attrs: dict[str, Any] = {
                    "properties": properties,
                    "time": _iso(seconds[i]),
                    "unique_id": unique[i],
                    "metric": {"data": {"type": "metric", "attributes": {"name": metrics[i]}}},
                }
                if values[i] is not None:
                    attrs["value"] = values[i]
                if currency is not None and currency[i] is not None:
                    attrs["value_currency"] = currency[i]
                if backfill[i]:
                    attrs["backfill"] = True
                items.append(
                    orjson.dumps(
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": profile},
                                "events": {"data": [{"type": "event", "attributes": attrs}]},
                            },
                        },
                        default=_default,
                        option=orjson.OPT_NON_STR_KEYS,
                    )
                )
            return Payloads.of(items), []

        return finish(reasons, build, self.warnings(), identity)

    def envelope(self, items: orjson.Fragment, list_id: str | None) -> Any:
        return {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": items}}}}
