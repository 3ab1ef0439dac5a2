"""``operation: upsert``: create or update profiles and their properties, in no list.

The same bulk import job as ``add`` (10,000 profiles / 5 MB a request), sent without a list
relationship: rows are matched to profiles on email, phone_number or external_id, and the other
columns become profile attributes, location fields or custom properties. Validation and row
accounting are ``add``'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from .. import validate as v
from ..batching import Endpoint
from .add import ADD_IDENTIFIERS, prepare_add
from .base import Operation, Prepared


class Upsert(Operation):
    name = "upsert"
    endpoint = Endpoint("bulk_import_profiles", 10_000)

    def required_columns(self) -> tuple[tuple[str, ...], bool]:
        return ADD_IDENTIFIERS, True

    def prepare(self, table: pa.Table, seen: v.SeenValues, now: datetime | None = None) -> Prepared:
        return prepare_add(table, self.settings, seen)

    def envelope(self, items: orjson.Fragment, list_id: str | None) -> Any:
        return {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": items}}}}
