"""``operation: add``: create or update profiles and add them to a list (bulk import jobs).

Rows are matched to profiles on email, phone_number or external_id; the other columns become
profile attributes, location fields or custom properties. Klaviyo answers with a job: with
``wait_for_completion`` the job is followed and its import errors are mapped back to rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .. import validate as v
from ..batching import Endpoint
from ..payloads import Payloads, build_profiles
from .base import MAX_PROFILE_BYTES, Operation, Prepared, default, finish, identity_of, valid_only_duplicates, value_problems

#: Profile attributes Klaviyo knows (ProfileUpsertQueryResourceObject); anything else is a custom property.
PROFILE_FIELDS = ("email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title", "image")
LOCATION_FIELDS = ("address1", "address2", "city", "country", "latitude", "longitude", "region", "zip", "timezone", "ip")
ADD_IDENTIFIERS = ("email", "phone_number", "external_id")
#: Columns the add operation reads for itself and does not send as properties.
ADD_NOT_SENT = ("profile_id",)


class AddToList(Operation):
    name = "add"
    endpoint = Endpoint("bulk_import_profiles", 10_000)
    needs_list = True
    creates_list = True

    def required_columns(self) -> tuple[tuple[str, ...], bool]:
        return ADD_IDENTIFIERS, True

    def prepare(self, table: pa.Table, seen: v.SeenValues, now: datetime | None = None) -> Prepared:
        return prepare_add(table, self.settings, seen)

    def envelope(self, items: orjson.Fragment, list_id: str | None) -> Any:
        data: dict[str, Any] = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": items}}}
        if list_id:
            data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
        return {"data": data}


def prepare_add(table: pa.Table, settings: Any, seen: v.SeenValues | None = None) -> Prepared:
    seen = seen if seen is not None else v.SeenValues()
    names = table.schema.names
    n = table.num_rows
    cleaned: dict[str, pa.Array] = {}
    own: list[pa.Array] = []  # reasons that are the row's own (not "duplicate of an earlier row")
    if "email" in names:
        chk = v.check_emails(table.column("email"), required=False)
        cleaned["email"] = chk.values
        own.append(chk.reasons)
    if "phone_number" in names:
        chk = v.check_phones(table.column("phone_number"), required=False, default_region=settings.default_phone_region)
        cleaned["phone_number"] = chk.values
        own.append(chk.reasons)
    if "external_id" in names:
        chk = v.check_required_text(table.column("external_id"), "external_id")
        cleaned["external_id"] = pc.if_else(pc.is_valid(chk.reasons), pa.scalar(None, pa.string()), chk.values)
    present = [c for c in ADD_IDENTIFIERS if c in cleaned]
    nothing = pc.and_(*[pc.is_null(cleaned[c]) for c in present]) if len(present) > 1 else pc.is_null(cleaned[present[0]])
    own.append(v._reason_where(nothing, f"no identifier: {' / '.join(present)} all empty", pa.nulls(n, pa.string())))
    columns = [c for c in names if c not in ADD_NOT_SENT]
    own.append(value_problems(table, columns))
    reasons = v.combine(*own)
    # a phone number identifies one Klaviyo profile, as an email does: a repeat is a duplicate
    for name in present:
        reasons = valid_only_duplicates(seen, cleaned[name], name, reasons)
    warnings = []
    skipped_cols = [c for c in ADD_NOT_SENT if c in names]
    if skipped_cols:
        warnings.append(
            f"column(s) {', '.join(skipped_cols)} are not sent by 'add' "
            "(Klaviyo matches profiles on email, phone_number or external_id)"
        )

    def build(index: np.ndarray) -> tuple[Payloads, list[tuple[int, int]]]:
        take = pa.array(index, pa.int64())
        groups: dict[str, list[tuple[str, pa.Array]]] = {"attrs": [], "location": [], "props": []}
        for c in columns:
            col = pc.take(cleaned.get(c, table.column(c)), take)
            group = "attrs" if c in PROFILE_FIELDS else "location" if c in LOCATION_FIELDS else "props"
            groups[group].append((c, col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col))
        items = Payloads(build_profiles(groups["attrs"], groups["location"], groups["props"], default))
        sizes = items.sizes()
        oversize = [(int(pos), int(sizes[pos])) for pos in np.flatnonzero(sizes > MAX_PROFILE_BYTES)]
        return items, oversize

    return finish(reasons, build, warnings, identity_of(table, ADD_IDENTIFIERS))
