"""Events, stored as three columns (metric, profile, datetime) in datetime order.

Row order *is* the default order: datetime ascending, ties (about a fifth of
all events share their second with the previous one, as campaign sends do)
broken by row. ``event_properties`` differ per metric (Placed Order carries
``$value`` and ``Items``; email metrics carry the campaign and subject) and are
derived from (seed, row) when a page is rendered.
"""

from __future__ import annotations

import numpy as np

from . import ids, vocabulary as V
from .profiles import TWO_YEARS, ProfileTable
from .timefmt import iso_many

S_EVENT_ID, S_METRIC, S_PROFILE, S_GAP, S_TIE, S_PROPS = range(400, 406)
EMAIL_METRICS = {"Received Email", "Opened Email", "Clicked Email", "Bounced Email", "Marked Email as Spam", "Dropped Email", "Unsubscribed"}
ATTRIBUTES = ("timestamp", "event_properties", "datetime", "uuid")
SMS_METRICS = {"Received SMS", "Sent SMS", "Clicked SMS", "Failed to Deliver SMS", "Failed to Deliver Automated Response SMS", "Received Automated Response SMS", "Consented to Receive SMS", "Unsubscribed from SMS"}


class EventTable:
    """All events; row i is the i-th event by datetime."""

    def __init__(self, seed: int, count: int, profiles: ProfileTable, campaigns: list[tuple[str, str]], list_ids: list[str]) -> None:
        self.seed, self.count = seed, count
        self.campaigns = campaigns or [("Weekly Digest", "This week's picks")]
        self.list_ids = list_ids
        rows = np.arange(count, dtype=np.int64)
        weights = np.array([m[3] for m in V.METRICS], dtype=np.float64)
        cumulative = np.cumsum(weights) / weights.sum()
        self.metric = np.searchsorted(cumulative, ids.unit(seed, S_METRIC, rows), side="right").astype(np.int16)
        self.profile = ids.choice(seed, S_PROFILE, rows, profiles.count).astype(np.int32) if count else np.zeros(0, np.int32)
        gaps = -np.log1p(-ids.unit(seed, S_GAP, rows))
        start = profiles.now - TWO_YEARS
        dt = start + (np.cumsum(gaps) / max(gaps.sum(), 1.0) * (TWO_YEARS - 3600)).astype(np.int64)
        tie = ids.unit(seed, S_TIE, rows) < 0.2
        anchor = np.maximum.accumulate(np.where(tie, 0, rows)) if count else rows
        self.datetime = dt[anchor] if count else dt
        self.id_key = ids.index_key(seed, S_EVENT_ID)
        if count:
            np.maximum.at(profiles.last_event, self.profile, self.datetime)

    def event_id(self, row: int) -> str:
        tag = int(ids.mix(self.seed, S_EVENT_ID, row)) >> 24
        return ids.ulid(int(self.datetime[row]) * 1000, tag, row, self.id_key)

    def event_ids(self, rows: np.ndarray) -> list[str]:
        return self.id_bytes(rows).astype("U26").tolist()

    def id_bytes(self, rows: np.ndarray) -> np.ndarray:
        """Event ids of ``rows`` as ``S26`` (vectorised ``event_id``)."""
        rows = np.asarray(rows, dtype=np.int64)
        tags = ids.mix(self.seed, S_EVENT_ID, rows) >> np.uint64(24)
        return ids.ulids(self.datetime[rows] * 1000, tags, rows, self.id_key)

    def row_for_id(self, text: str) -> int | None:
        row = ids.ulid_index(text, self.id_key)
        if row is None or not 0 <= row < self.count or self.event_id(row) != text:
            return None
        return row

    def uuid(self, row: int) -> str:
        return ids.uuid_text(self.seed, S_EVENT_ID + 7, row)

    def attributes(self, row: int) -> dict:
        return self.attributes_for(np.array([row], dtype=np.int64))[0]

    def attributes_for(self, rows: np.ndarray, wanted: tuple[str, ...] | None = None) -> list[dict]:
        """``attributes`` for many rows, with every random draw vectorised.

        With a sparse fieldset (``wanted``) the attributes it leaves out are not
        computed at all; key order stays Klaviyo's (the renderer prunes after).
        """
        names = [n for n in ATTRIBUTES if not wanted or n in wanted]
        cols: dict[str, list] = {}
        if "timestamp" in names:
            cols["timestamp"] = self.datetime[rows].tolist()
        if "event_properties" in names:
            draws = ids.unit(self.seed, S_PROPS, (rows[:, None] * 4 + np.arange(4)).ravel()).reshape(-1, 4).tolist()
            numbers = (ids.mix(self.seed, S_PROPS + 1, rows) % np.uint64(10**12)).tolist()
            cols["event_properties"] = [self.properties(row, u, number) for row, u, number in zip(rows.tolist(), draws, numbers)]
        if "datetime" in names:
            cols["datetime"] = iso_many(self.datetime[rows])
        if "uuid" in names:
            cols["uuid"] = ids.uuids(ids.mix(self.seed, S_EVENT_ID + 7, rows), ids.mix(self.seed, S_EVENT_ID + 8, rows)).astype("U36").tolist()
        return [dict(zip(names, values)) for values in zip(*(cols[n] for n in names))] if names else [{} for _ in rows.tolist()]

    def properties(self, row: int, u: list[float] | None = None, number: int | None = None) -> dict:
        name = V.METRICS[int(self.metric[row])][0]
        if u is None:
            u = ids.unit(self.seed, S_PROPS, np.arange(row * 4, row * 4 + 4)).tolist()
        if number is None:
            number = int(ids.mix(self.seed, S_PROPS + 1, row)) % 10**12
        event_id = str(number)
        if name in EMAIL_METRICS:
            campaign, subject = self.campaigns[int(u[0] * len(self.campaigns))]
            props = {"Campaign Name": campaign, "Subject": subject, "Email Domain": V.EMAIL_DOMAINS[int(u[1] * len(V.EMAIL_DOMAINS))], "$message": f"01J{event_id:0>12}"[:15], "$event_id": event_id}
            if name == "Clicked Email":
                props["URL"] = f"https://shop.example.com/products/{int(u[2] * 10)}"
            if name == "Bounced Email":
                props["Bounce Type"] = "hard" if u[2] < 0.3 else "soft"
            return props
        if name in SMS_METRICS:
            campaign, _ = self.campaigns[int(u[0] * len(self.campaigns))]
            return {"Campaign Name": campaign, "Message Body": f"{campaign}: reply STOP to opt out", "Carrier": ("Verizon", "AT&T", "T-Mobile")[int(u[1] * 3)], "$event_id": event_id}
        if name in ("Subscribed to List", "Unsubscribed from List"):
            list_id = self.list_ids[int(u[0] * len(self.list_ids))] if self.list_ids else None
            return {"List": list_id, "$event_id": event_id}
        if name == "Updated Email Preferences":
            return {"Preferences": ["Newsletter"] if u[0] < 0.5 else ["Newsletter", "Promotions"], "$event_id": event_id}
        if name in ("Placed Order", "Started Checkout"):
            n_items = 1 + int(u[0] * 3)
            picks = [V.PRODUCTS[int((u[1] * 7 + i * 3) * 10) % len(V.PRODUCTS)] for i in range(n_items)]
            value = round(sum(p[1] for p in picks), 2)
            return {"$value": value, "OrderId": f"#{1000 + row}", "Items": [p[0] for p in picks], "ItemCount": n_items, "Discount Codes": ["WELCOME10"] if u[2] < 0.2 else [], "$event_id": event_id}
        if name in ("Ordered Product", "Viewed Product"):
            product = V.PRODUCTS[int(u[0] * len(V.PRODUCTS))]
            props = {"ProductName": product[0], "ProductID": str(1000 + int(u[0] * len(V.PRODUCTS))), "Price": product[1], "$event_id": event_id}
            if name == "Ordered Product":
                props["$value"] = product[1]
                props["Quantity"] = 1 + int(u[1] * 2)
            return props
        if name == "Active on Site":
            return {"page": f"https://shop.example.com/{('', 'collections', 'cart', 'blog')[int(u[0] * 4)]}", "$event_id": event_id}
        return {"$event_id": event_id}
