"""``operation: remove_profiles``: take profiles (by Klaviyo profile id) out of a list.

A list removal is not a consent change: the profiles keep their subscriptions. Klaviyo answers
204 with nothing to follow, so a sent row is ``accepted``. Repeating a removal is harmless.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from .. import validate as v
from ..batching import Endpoint
from ..payloads import Payloads
from .base import Operation, Prepared, dumps, finish, identity_of, take_py, valid_only_duplicates


class RemoveFromList(Operation):
    name = "remove_profiles"
    endpoint = Endpoint("remove_profiles_from_list", 1_000)
    needs_list = True
    sent_outcome = "accepted"

    def required_columns(self) -> tuple[tuple[str, ...], bool]:
        return ("profile_id",), False

    def prepare(self, table: pa.Table, seen: v.SeenValues, now: datetime | None = None) -> Prepared:
        chk = v.check_required_text(table.column("profile_id"), "profile_id")
        reasons = valid_only_duplicates(seen, chk.values, "profile_id", chk.reasons)

        def build(index: np.ndarray) -> tuple[Payloads, list[tuple[int, int]]]:
            return Payloads.of([dumps({"type": "profile", "id": pid}) for pid in take_py(chk.values, index)]), []

        return finish(reasons, build, [], identity_of(table, ("profile_id",)))

    def envelope(self, items: orjson.Fragment, list_id: str | None) -> Any:
        return {"data": items}

    def path_params(self, list_id: str | None) -> dict[str, str] | None:
        return {"id": list_id} if list_id else None
