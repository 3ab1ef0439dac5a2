"""Per-operation preparation: required columns, vectorised validation, one JSON payload per row.

``prepare(table, settings)`` checks the columns the operation needs (failing before anything is
sent), validates whole columns at once (``validate.py``), and turns every valid row into the
JSON item Klaviyo expects (a profile for ``add``, ``{"type":"profile","id":...}`` for
``remove_profiles``, a profile with ``subscriptions`` for ``batch_consent``). Rows that fail keep
their reason, so each input row ends either in a payload or in the skipped list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ExportError
from . import validate as v
from .payloads import Payloads, build_profiles
from .settings import CHANNELS, ExportSettings

#: Klaviyo's per-profile payload maximum is 100 KB; stay a little under it.
MAX_PROFILE_BYTES = 100_000
#: Profile attributes Klaviyo knows (ProfileUpsertQueryResourceObject); anything else is a custom property.
PROFILE_FIELDS = ("email", "phone_number", "external_id", "first_name", "last_name", "organization",
                  "locale", "title", "image")
LOCATION_FIELDS = ("address1", "address2", "city", "country", "latitude", "longitude", "region", "zip",
                   "timezone", "ip")
ADD_IDENTIFIERS = ("email", "phone_number", "external_id")
#: Columns the add operation reads for itself and does not send as properties.
ADD_NOT_SENT = ("profile_id",)


@dataclass
class Prepared:
    """Valid rows (input index + JSON item) and invalid rows (input index + reason)."""

    row_index: np.ndarray
    items: Payloads
    skipped_index: np.ndarray
    skipped_reason: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.row_index) + len(self.skipped_index)


def required_columns(settings: ExportSettings) -> tuple[tuple[str, ...], bool]:
    """(columns, any_of) the operation needs."""
    if settings.operation == "add":
        return ADD_IDENTIFIERS, True
    if settings.operation == "remove_profiles":
        return ("profile_id",), False
    st = settings.subscription_type
    if st == "email_marketing_only":
        return ("email",), False
    if st in ("sms_marketing_only", "sms_marketing_transactional"):
        return ("phone_number",), False
    return ("email", "phone_number"), True


def check_columns(schema: pa.Schema, settings: ExportSettings) -> None:
    """Fail before sending when a required column is missing (names are case-sensitive)."""
    columns, any_of = required_columns(settings)
    v.require_columns(schema, columns, settings.operation, any_of=any_of)
    if settings.operation == "batch_consent" and settings.historical_consent and "consent_at" not in schema.names:
        near = [n for n in schema.names if n.lower() == "consent_at"]
        hint = f" (found {near[0]!r}: column names are case-sensitive)" if near else ""
        raise ExportError(f"operation 'batch_consent' with historical_consent needs a column consent_at{hint}; "
                          f"the query returned: {', '.join(schema.names)}", column="consent_at")


def _reasons_to_numpy(reasons: pa.Array) -> np.ndarray:
    return pc.is_valid(reasons).to_numpy(zero_copy_only=False)


def _finish(table_len: int, reasons: pa.Array, build: Any, warnings: list[str]) -> Prepared:
    bad = _reasons_to_numpy(reasons)
    good_index = np.flatnonzero(~bad)
    bad_index = np.flatnonzero(bad)
    items, oversize = build(good_index)
    skipped_reason = pc.take(reasons, pa.array(bad_index)).to_pylist() if len(bad_index) else []
    if oversize:
        keep = np.ones(len(good_index), dtype=bool)
        extra_index, extra_reason = [], []
        for pos, size in oversize:
            keep[pos] = False
            extra_index.append(good_index[pos])
            extra_reason.append(f"profile is {size:,} bytes as JSON; Klaviyo accepts at most 100 KB per profile")
        items = items.filter(keep)
        good_index = good_index[keep]
        order = np.argsort(np.concatenate([bad_index, np.array(extra_index, dtype=np.int64)]), kind="stable")
        bad_index = np.concatenate([bad_index, np.array(extra_index, dtype=np.int64)])[order]
        skipped_reason = [(skipped_reason + extra_reason)[i] for i in order]
    return Prepared(good_index.astype(np.int64), items, bad_index.astype(np.int64), skipped_reason, warnings)


def _py(column: pa.Array, index: np.ndarray) -> list[Any]:
    return pc.take(column, pa.array(index, pa.int64())).to_pylist()


def _default(value: Any) -> Any:
    return str(value)


def _dumps(obj: Any) -> bytes:
    # orjson's result keeps its (>= 4 KB) output buffer; an exact-size copy makes a 150-byte
    # profile cost ~180 bytes instead of ~4 KB (50k payloads: 9 MB instead of 195 MB).
    return bytes(memoryview(orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)))


# --- add -------------------------------------------------------------------------------------


def prepare_add(table: pa.Table, settings: ExportSettings, seen: v.SeenValues | None = None) -> Prepared:
    names = table.schema.names
    n = table.num_rows
    reasons: list[pa.Array] = []
    cleaned: dict[str, pa.Array] = {}
    if "email" in names:
        chk = v.check_emails(table.column("email"), required=False)
        cleaned["email"] = chk.values
        reasons.append(_dups(seen, chk.values, "email", chk.reasons))
    if "phone_number" in names:
        chk = v.check_phones(table.column("phone_number"), required=False, default_region=settings.default_phone_region)
        cleaned["phone_number"] = chk.values
        # a phone number identifies one Klaviyo profile, as an email does: a repeat is a duplicate
        reasons.append(_dups(seen, chk.values, "phone_number", chk.reasons))
    if "external_id" in names:
        chk = v.check_required_text(table.column("external_id"), "external_id")
        ext = pc.if_else(pc.is_valid(chk.reasons), pa.scalar(None, pa.string()), chk.values)
        cleaned["external_id"] = ext
        reasons.append(_dups(seen, ext, "external_id", pa.nulls(n, pa.string())))
    present = [c for c in ADD_IDENTIFIERS if c in cleaned]
    nothing = pc.and_(*[pc.is_null(cleaned[c]) for c in present]) if len(present) > 1 else pc.is_null(cleaned[present[0]])
    none_reason = v._reason_where(nothing, f"no identifier: {' / '.join(present)} all empty",
                                  pa.nulls(n, pa.string()))
    all_reasons = v.combine(*reasons, none_reason) if reasons else none_reason
    warnings = []
    skipped_cols = [c for c in ADD_NOT_SENT if c in names]
    if skipped_cols:
        warnings.append(f"column(s) {', '.join(skipped_cols)} are not sent by 'add' "
                        "(Klaviyo matches profiles on email, phone_number or external_id)")
    columns = [c for c in names if c not in ADD_NOT_SENT]

    def build(index: np.ndarray) -> tuple[Payloads, list[tuple[int, int]]]:
        take = pa.array(index, pa.int64())
        groups: dict[str, list[tuple[str, pa.Array]]] = {"attrs": [], "location": [], "props": []}
        for c in columns:
            col = pc.take(cleaned.get(c, table.column(c)), take)
            group = "attrs" if c in PROFILE_FIELDS else "location" if c in LOCATION_FIELDS else "props"
            groups[group].append((c, col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col))
        items = Payloads(build_profiles(groups["attrs"], groups["location"], groups["props"], _default))
        sizes = items.sizes()
        oversize = [(int(pos), int(sizes[pos])) for pos in np.flatnonzero(sizes > MAX_PROFILE_BYTES)]
        return items, oversize

    return _finish(n, all_reasons, build, warnings)


# --- remove ----------------------------------------------------------------------------------


def prepare_remove(table: pa.Table, settings: ExportSettings, seen: v.SeenValues | None = None) -> Prepared:
    chk = v.check_required_text(table.column("profile_id"), "profile_id")
    reasons = _dups(seen, chk.values, "profile_id", chk.reasons)

    def build(index: np.ndarray) -> tuple[list[bytes], list[tuple[int, int]]]:
        return Payloads.of([_dumps({"type": "profile", "id": pid}) for pid in _py(chk.values, index)]), []

    return _finish(table.num_rows, reasons, build, [])


# --- consent ---------------------------------------------------------------------------------


def _parse_consent_time(value: Any, now: datetime) -> tuple[str | None, str | None]:
    if isinstance(value, datetime):
        stamp = value
    else:
        text = str(value).strip()
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None, f"consent_at {text!r} is not an ISO 8601 time"
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    if stamp >= now:
        return None, "consent_at must be in the past for historical consent"
    return stamp.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"), None


def check_consent_times(column: pa.Array, now: datetime) -> v.Checked:
    """Parse once per distinct value; reasons for empty, unparsable and future times."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    valid = pc.is_valid(column)
    distinct = pc.unique(pc.drop_null(column))
    parsed, why = [], []
    for value in distinct.to_pylist():
        p, r = _parse_consent_time(value, now)
        parsed.append(p)
        why.append(r)
    index = pc.index_in(column, value_set=distinct)
    values = pc.take(pa.array(parsed, pa.string()), index)
    reasons = pc.take(pa.array(why, pa.string()), index)
    reasons = v._reason_where(pc.invert(valid), "consent_at is empty (historical consent needs it)",
                              reasons if n else pa.nulls(0, pa.string()))
    return v.Checked(values, reasons)


def prepare_consent(table: pa.Table, settings: ExportSettings, now: datetime | None = None,
                    seen: v.SeenValues | None = None) -> Prepared:
    now = now or datetime.now(timezone.utc)
    names = table.schema.names
    n = table.num_rows
    channels = CHANNELS[settings.subscription_type]
    wants_email = any(ch == "email" for ch, _ in channels)
    wants_sms = any(ch == "sms" for ch, _ in channels)
    reasons = []
    email = phone = None
    if wants_email and "email" in names:
        chk = v.check_emails(table.column("email"), required=not wants_sms)
        email = chk.values
        reasons.append(_dups(seen, email, "email", chk.reasons))
    if wants_sms and "phone_number" in names:
        chk = v.check_phones(table.column("phone_number"), required=not wants_email,
                             default_region=settings.default_phone_region)
        phone = chk.values
        reasons.append(_dups(seen, phone, "phone_number", chk.reasons))
    if email is not None and phone is not None:
        both_empty = pc.and_(pc.is_null(email), pc.is_null(phone))
        reasons.append(v._reason_where(both_empty, "email and phone_number are both empty", pa.nulls(n, pa.string())))
    consent_at = None
    if settings.historical_consent:
        chk = check_consent_times(table.column("consent_at"), now)
        consent_at = chk.values
        reasons.append(chk.reasons)
    all_reasons = v.combine(*reasons) if reasons else pa.nulls(n, pa.string())
    subscribe = settings.consent_type == "subscribed"
    consent = "SUBSCRIBED" if subscribe else "UNSUBSCRIBED"

    def build(index: np.ndarray) -> tuple[list[bytes], list[tuple[int, int]]]:
        emails = _py(email, index) if email is not None else [None] * len(index)
        phones = _py(phone, index) if phone is not None else [None] * len(index)
        times = _py(consent_at, index) if consent_at is not None else [None] * len(index)
        items = []
        for e, p, t in zip(emails, phones, times):
            params: dict[str, Any] = {"consent": consent}
            if t is not None:
                params["consented_at"] = t
            subs: dict[str, Any] = {}
            for ch, kind in channels:
                if (ch == "email" and e is None) or (ch == "sms" and p is None):
                    continue
                subs.setdefault(ch, {})[kind] = dict(params)
            attrs: dict[str, Any] = {"subscriptions": subs}
            if e is not None:
                attrs["email"] = e
            if p is not None:
                attrs["phone_number"] = p
            items.append(_dumps({"type": "profile", "attributes": attrs}))
        return Payloads.of(items), []

    warnings = []
    if not subscribe and settings.list_value:
        warnings.append("unsubscribing with a list: Klaviyo unsubscribes profiles that are NOT in that list "
                        "globally (from all marketing on the channel), as its API documentation warns")
    if wants_sms:
        warnings.append("SMS consent is only processed for countries with a provisioned sending number")
    return _finish(n, all_reasons, build, warnings)


def _dups(seen: v.SeenValues | None, values: pa.Array, name: str, reasons: pa.Array) -> pa.Array:
    return v.duplicate_reasons(values, name, reasons) if seen is None else seen.check(values, name, reasons)


def prepare(table: pa.Table, settings: ExportSettings, now: datetime | None = None, *,
            seen: v.SeenValues | None = None) -> Prepared:
    """Validate ``table`` and build one JSON item per valid row.

    ``seen`` carries the identifiers of earlier chunks of the same input, so duplicates are
    found across chunks too.
    """
    check_columns(table.schema, settings)
    if settings.operation == "add":
        prepared = prepare_add(table, settings, seen)
    elif settings.operation == "remove_profiles":
        prepared = prepare_remove(table, settings, seen)
    else:
        prepared = prepare_consent(table, settings, now, seen)
    return prepared
