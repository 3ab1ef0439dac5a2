"""Events, stored as three columns (metric, profile, datetime) in datetime order.

Row order *is* the default order: datetime ascending, ties (about a fifth of
all events share their second with the previous one, as campaign sends do)
broken by row. ``event_properties`` differ per metric (Placed Order carries
``$value`` and ``Items``; email metrics carry the campaign and subject) and are
derived from (seed, row) when a page is rendered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from . import ids
from . import vocabulary as V
from .blockcache import BlockColumn
from .jsontypes import JSON
from .profiles import TWO_YEARS, ProfileTable
from .timefmt import iso_array, iso_many

S_EVENT_ID, S_METRIC, S_PROFILE, S_GAP, S_TIE, S_PROPS = range(400, 406)
S_LATE, S_DELAY, S_STORE = 420, 421, 422
EMAIL_METRICS = {
    "Received Email",
    "Opened Email",
    "Clicked Email",
    "Bounced Email",
    "Marked Email as Spam",
    "Dropped Email",
    "Unsubscribed",
}
ATTRIBUTES = ("timestamp", "event_properties", "datetime", "uuid")
SMS_METRICS = {
    "Received SMS",
    "Sent SMS",
    "Clicked SMS",
    "Failed to Deliver SMS",
    "Failed to Deliver Automated Response SMS",
    "Received Automated Response SMS",
    "Consented to Receive SMS",
    "Unsubscribed from SMS",
}


class EventTable:
    """All events; row i is the i-th event by datetime."""

    def __init__(
        self, seed: int, count: int, profiles: ProfileTable, campaigns: list[tuple[str, str]], list_ids: list[str]
    ) -> None:
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
        #: when each late event becomes visible (epoch seconds); None: every event is visible at once
        self.arrival: np.ndarray | None = None
        self.late_rows: np.ndarray | None = None  # rows of late events, by arrival
        self._formats: dict[int | tuple[int, ...], bytes] = {}
        self._block_columns: dict[str, BlockColumn] = {}
        #: event_properties formats by shape number (the ``shape`` block column's values)
        self._shape_list: list[bytes] = []
        self._shape_number: dict[int, int] = {}
        if count:
            np.maximum.at(profiles.last_event, self.profile, self.datetime)
        #: Rows from ``base`` on were written through the API (``tracked.py``), in arrival order,
        #: with their own ids, uuids and properties; their datetimes may be in the past.
        self.base = count
        self.written_ids = np.zeros(0, dtype="S26")
        self.written_uuids = np.zeros(0, dtype="S36")
        self.written_properties: list[bytes] = []
        self.written_backfill: list[bool] = []
        self._buffers: dict[str, np.ndarray] = {}
        self.written_row: dict[str, int] = {}

    # ----- events written through the API -------------------------------------------------
    def append(
        self,
        metric: np.ndarray,
        profile: np.ndarray,
        when: np.ndarray,
        event_ids: list[str],
        uuids: list[str],
        properties: list[bytes],
    ) -> None:
        """Record written events (after the synthetic ones; ``datetime`` order is kept by ``Orders``)."""
        first, k = self.count, len(event_ids)
        # columns grow into buffers of doubling capacity (a million events in 1,000-event requests
        # would otherwise copy every column a thousand times); the public arrays are views
        for name, values in (
            ("metric", metric),
            ("profile", profile),
            ("datetime", when),
            ("written_ids", np.array(event_ids, dtype="S26")),
            ("written_uuids", np.array(uuids, dtype="S36")),
        ):
            current = getattr(self, name)
            used = len(current)
            buf = self._buffers.get(name)
            if buf is None or len(buf) < used + k:
                buf = np.empty(max(2 * (used + k), 1024), dtype=current.dtype)
                buf[:used] = current
                self._buffers[name] = buf
            buf[used : used + k] = values
            setattr(self, name, buf[: used + k])
        self.written_properties += properties
        for i, eid in enumerate(event_ids):
            self.written_row[eid] = first + i
        self.count = len(self.datetime)

    @property
    def sorted_by_row(self) -> bool:
        """Whether row order is datetime order (no written event came before a later row's time)."""
        return self.count == self.base or bool(np.all(np.diff(self.datetime[self.base - 1 if self.base else 0 :]) >= 0))

    def _split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        written = rows >= self.base
        return ~written, written

    def second_store(self) -> None:
        """About 40% of Placed Order events move to the second store's Placed Order metric."""
        first = next(i for i, m in enumerate(V.METRICS) if m[0] == "Placed Order")
        second = len(V.METRICS) + next(i for i, m in enumerate(V.SECOND_STORE_METRICS) if m[0] == "Placed Order")
        rows = np.arange(self.count, dtype=np.int64)
        moved = (self.metric == first) & (ids.unit(self.seed, S_STORE, rows) < 0.4)
        self.metric[moved] = second

    def arrive_late(self, fraction: float, max_delay: float) -> None:
        """``fraction`` of the events become visible up to ``max_delay`` seconds after their
        ``datetime`` (the rest at once): Klaviyo's events are eventually consistent."""
        if not fraction or not self.count:
            return
        rows = np.arange(self.count, dtype=np.int64)
        late = ids.unit(self.seed, S_LATE, rows) < fraction
        delay = (ids.unit(self.seed, S_DELAY, rows) * max_delay).astype(np.int64)
        self.arrival = np.where(late, self.datetime + delay, self.datetime)
        late_rows = rows[late]
        order = np.argsort(self.arrival[late_rows], kind="stable")
        self.late_rows = late_rows[order]
        self._late_arrivals = self.arrival[self.late_rows]

    def arrived(self, now: int) -> int:
        """How many late events are visible at ``now`` (a cache key: it changes when one arrives)."""
        if self.late_rows is None:
            return 0
        return int(np.searchsorted(self._late_arrivals, now, side="right"))

    def visible_mask(self, now: int) -> np.ndarray | None:
        """Events visible at ``now``; None when every event is."""
        if self.arrival is None:
            return None
        visible = self.arrival <= now
        if len(visible) < self.count:  # events written through the API are visible at once
            visible = np.concatenate([visible, np.ones(self.count - len(visible), dtype=bool)])
        return visible

    def visible(self, row: int, now: int) -> bool:
        return self.arrival is None or row >= len(self.arrival) or int(self.arrival[row]) <= now

    def event_id(self, row: int) -> str:
        if row >= self.base:
            return str(self.written_ids[row - self.base].decode())
        tag = int(ids.mix(self.seed, S_EVENT_ID, row)) >> 24
        return ids.ulid(int(self.datetime[row]) * 1000, tag, row, self.id_key)

    def event_ids(self, rows: np.ndarray) -> list[str]:
        ids_text: list[str] = self.id_bytes(rows).astype("U26").tolist()
        return ids_text

    def id_bytes(self, rows: np.ndarray) -> np.ndarray:
        """Event ids of ``rows`` as ``S26`` (vectorised ``event_id``; synthetic rows' kept per block)."""
        return self._kept("id", self._compute_id_bytes, self.written_ids, rows)

    def _compute_id_bytes(self, rows: np.ndarray) -> np.ndarray:
        tags = ids.mix(self.seed, S_EVENT_ID, rows) >> np.uint64(24)
        return ids.ulids(self.datetime[rows] * 1000, tags, rows, self.id_key)

    def _kept(
        self, name: str, compute: Callable[[np.ndarray], np.ndarray], written_values: np.ndarray, rows: np.ndarray
    ) -> np.ndarray:
        """Column NAME of ``rows``: computed (and kept per block) for synthetic rows, from
        WRITTEN_VALUES for written ones."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.count > self.base and len(rows) and rows.max() >= self.base:
            synthetic, written = self._split(rows)
            out = np.empty(len(rows), dtype=written_values.dtype)
            out[synthetic] = self._column(name, compute, rows[synthetic])
            out[written] = written_values[rows[written] - self.base]
            return out
        return self._column(name, compute, rows)

    def _column(self, name: str, compute: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
        """``compute(rows)``, taken from the kept block column ``name`` (see ``blockcache.py``).

        Only the synthetic rows (before ``base``) are kept: their values never change."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows) or rows.min() < 0 or rows.max() >= self.base:
            return compute(rows)  # written events (rows from ``base`` on) are not kept per block
        column = self._block_columns.get(name)
        if column is None:
            column = self._block_columns[name] = BlockColumn(self.base, compute)
        return column.take(rows)

    def datetime_text(self, rows: np.ndarray) -> np.ndarray:
        """``datetime`` of ``rows`` as Klaviyo's text, ``S25`` (kept per block)."""
        return self._column("datetime", lambda r: iso_array(self.datetime[r]), rows)

    def timestamp_text(self, rows: np.ndarray) -> np.ndarray:
        """``timestamp`` (epoch seconds) of ``rows`` as digits, as wide as the longest (kept per block)."""
        return _narrow(self._column("timestamp", lambda r: _narrow(self.datetime[r].astype("S20")), rows))

    def row_for_id(self, text: str) -> int | None:
        if text in self.written_row:
            return self.written_row[text]
        row = ids.ulid_index(text, self.id_key)
        if row is None or not 0 <= row < self.count or self.event_id(row) != text:
            return None
        return row

    def uuid(self, row: int) -> str:
        if row >= self.base:
            return str(self.written_uuids[row - self.base].decode())
        return ids.uuid_text(self.seed, S_EVENT_ID + 7, row)

    def attributes(self, row: int) -> JSON:
        return self.attributes_for(np.array([row], dtype=np.int64))[0]

    def attributes_for(self, rows: np.ndarray, wanted: tuple[str, ...] | None = None) -> list[JSON]:
        """``attributes`` for many rows, with every random draw vectorised.

        With a sparse fieldset (``wanted``) the attributes it leaves out are not
        computed at all; key order stays Klaviyo's (the renderer prunes after).
        """
        names = [n for n in ATTRIBUTES if not wanted or n in wanted]
        rows = np.asarray(rows, dtype=np.int64)
        if self.count > self.base and len(rows) and rows.max() >= self.base:
            out: list[JSON] = []
            for row in rows.tolist():
                if row < self.base:
                    out += self.attributes_for(np.array([row], dtype=np.int64), wanted)
                    continue
                values = {
                    "timestamp": int(self.datetime[row]),
                    "event_properties": orjson.loads(self.written_properties[row - self.base]),
                    "datetime": iso_many(self.datetime[row : row + 1])[0],
                    "uuid": self.written_uuids[row - self.base].decode(),
                }
                out.append({n: values[n] for n in names})
            return out
        cols: dict[str, list[Any]] = {}
        if "timestamp" in names:
            cols["timestamp"] = self.datetime[rows].tolist()
        if "event_properties" in names:
            choices = self.choices(rows).tolist()
            numbers = self.numbers(rows).tolist()
            cols["event_properties"] = [
                self._scalar_properties(row, c, number) for row, c, number in zip(rows.tolist(), choices, numbers)
            ]
        if "datetime" in names:
            cols["datetime"] = iso_many(self.datetime[rows])
        if "uuid" in names:
            cols["uuid"] = self.uuid_bytes(rows).astype("U36").tolist()
        return [dict(zip(names, values)) for values in zip(*(cols[n] for n in names))] if names else [{} for _ in rows.tolist()]

    def uuid_bytes(self, rows: np.ndarray) -> np.ndarray:
        """Event uuids of ``rows`` as ``S36`` (vectorised ``uuid``; synthetic rows' kept per block)."""
        return self._kept(
            "uuid",
            lambda r: ids.uuids(ids.mix(self.seed, S_EVENT_ID + 7, r), ids.mix(self.seed, S_EVENT_ID + 8, r)),
            self.written_uuids,
            rows,
        )

    def numbers(self, rows: np.ndarray) -> np.ndarray:
        """The number behind each event's ``$event_id`` (and ``$message``)."""
        return ids.mix(self.seed, S_PROPS + 1, rows) % np.uint64(10**12)

    def choices(self, rows: np.ndarray) -> np.ndarray:
        """The discrete choices ``event_properties`` makes from each row's four draws, (n, 5) ints.

        Every value event_properties takes from its random draws is one of a few:
        a campaign, a product, a domain... Drawing them here, vectorised, leaves
        ``_properties`` a function of (metric, choices, number, row), so rows with
        equal (metric, choices) share one JSON template (``properties_json``).
        """
        rows = np.asarray(rows, dtype=np.int64)
        u = ids.unit(self.seed, S_PROPS, (rows[:, None] * 4 + np.arange(4)).ravel()).reshape(-1, 4)
        kind = _KIND[self.metric[rows]]
        c = np.zeros((len(rows), 5), dtype=np.int64)

        def put(mask: np.ndarray, col: int, values: np.ndarray) -> None:
            c[mask, col] = values[mask]

        n_campaigns = len(self.campaigns)
        email, sms = np.isin(kind, (K_EMAIL, K_CLICKED, K_BOUNCED)), kind == K_SMS
        put(email | sms, 0, (u[:, 0] * n_campaigns).astype(np.int64))
        put(email, 1, (u[:, 1] * len(V.EMAIL_DOMAINS)).astype(np.int64))
        put(kind == K_CLICKED, 2, (u[:, 2] * 10).astype(np.int64))
        put(kind == K_BOUNCED, 2, (u[:, 2] < 0.3).astype(np.int64))
        put(sms, 1, (u[:, 1] * 3).astype(np.int64))
        if self.list_ids:
            put(kind == K_LIST, 0, (u[:, 0] * len(self.list_ids)).astype(np.int64))
        put(kind == K_PREFS, 0, (u[:, 0] < 0.5).astype(np.int64))
        order = kind == K_ORDER
        n_items = 1 + (u[:, 0] * 3).astype(np.int64)
        put(order, 0, n_items)
        for i in range(3):
            pick = ((u[:, 1] * 7 + i * 3) * 10).astype(np.int64) % len(V.PRODUCTS)
            put(order & (i < n_items), 1 + i, pick)
        put(order, 4, (u[:, 2] < 0.2).astype(np.int64))
        product = (kind == K_PRODUCT) | (kind == K_ORDERED_PRODUCT)
        put(product, 0, (u[:, 0] * len(V.PRODUCTS)).astype(np.int64))
        put(kind == K_ORDERED_PRODUCT, 1, (u[:, 1] * 2).astype(np.int64))
        put(kind == K_ACTIVE, 0, (u[:, 0] * 4).astype(np.int64))
        return c

    def properties(self, row: int) -> JSON:
        if row >= self.base:
            props: JSON = orjson.loads(self.written_properties[row - self.base])
            return props
        rows = np.array([row], dtype=np.int64)
        return self._scalar_properties(row, self.choices(rows)[0].tolist(), int(self.numbers(rows)[0]))

    def _scalar_properties(self, row: int, c: list[int], number: int) -> JSON:
        event_id = str(number)
        return self._properties(int(self.metric[row]), c, event_id, f"01J{event_id:0>12}"[:15], f"#{1000 + row}")

    def _properties(self, metric: int, c: list[int], event_id: str, message: str, order_id: str) -> JSON:
        """``event_properties`` of a ``metric`` event from its ``choices`` and its per-row strings."""
        name = V.ALL_METRICS[metric][0]
        if name in EMAIL_METRICS:
            campaign, subject = self.campaigns[c[0]]
            props: JSON = {
                "Campaign Name": campaign,
                "Subject": subject,
                "Email Domain": V.EMAIL_DOMAINS[c[1]],
                "$message": message,
                "$event_id": event_id,
            }
            if name == "Clicked Email":
                props["URL"] = f"https://shop.example.com/products/{c[2]}"
            if name == "Bounced Email":
                props["Bounce Type"] = "hard" if c[2] else "soft"
            return props
        if name in SMS_METRICS:
            campaign, _ = self.campaigns[c[0]]
            return {
                "Campaign Name": campaign,
                "Message Body": f"{campaign}: reply STOP to opt out",
                "Carrier": ("Verizon", "AT&T", "T-Mobile")[c[1]],
                "$event_id": event_id,
            }
        if name in ("Subscribed to List", "Unsubscribed from List"):
            list_id = self.list_ids[c[0]] if self.list_ids else None
            return {"List": list_id, "$event_id": event_id}
        if name == "Updated Email Preferences":
            return {"Preferences": ["Newsletter"] if c[0] else ["Newsletter", "Promotions"], "$event_id": event_id}
        if name in ("Placed Order", "Started Checkout"):
            n_items = c[0]
            picks = [V.PRODUCTS[p] for p in c[1 : 1 + n_items]]
            value = round(sum(p[1] for p in picks), 2)
            return {
                "$value": value,
                "OrderId": order_id,
                "Items": [p[0] for p in picks],
                "ItemCount": n_items,
                "Discount Codes": ["WELCOME10"] if c[4] else [],
                "$event_id": event_id,
            }
        if name in ("Ordered Product", "Viewed Product"):
            product = V.PRODUCTS[c[0]]
            props = {"ProductName": product[0], "ProductID": str(1000 + c[0]), "Price": product[1], "$event_id": event_id}
            if name == "Ordered Product":
                props["$value"] = product[1]
                props["Quantity"] = 1 + c[1]
            return props
        if name == "Active on Site":
            return {"page": f"https://shop.example.com/{('', 'collections', 'cart', 'blog')[c[0]]}", "$event_id": event_id}
        return {"$event_id": event_id}

    # ----- event_properties as JSON, for pages ---------------------------------------------
    def properties_json(self, rows: np.ndarray) -> list[bytes]:
        """``orjson.dumps(properties(row))`` for many rows, without building a dict per row.

        A page's 1000 events fall into a few hundred (metric, choices) shapes; each
        shape's JSON is rendered once (with placeholders for the per-row ids) and
        kept, and a row is then one ``bytes %`` with its message, order and event id.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return []
        if self.count > self.base and rows.max() >= self.base:
            synthetic, written = self._split(rows)
            parts = iter(self.properties_json(rows[synthetic]))
            return [self.written_properties[row - self.base] if row >= self.base else next(parts) for row in rows.tolist()]
        if rows.min() >= 0 and rows.max() < self.count:
            shapes = self._column("shape", self._shapes, rows)
            if shapes is not None and (shapes >= 0).all():
                formats = itemgetter(*shapes.tolist())(self._shape_list) if len(rows) > 1 else [self._shape_list[int(shapes[0])]]
                numbers = self._column("number", lambda r: _narrow(self.numbers(r).astype("S12")), rows)
                messages = np.strings.add(b"01J", np.strings.zfill(numbers, 12))
                args = zip(messages.tolist(), self._order_ids(rows).tolist(), numbers.tolist())
                return [fmt % a for fmt, a in zip(formats, args)]
        return self._properties_json(rows)

    @staticmethod
    def _order_ids(rows: np.ndarray) -> np.ndarray:
        return np.strings.add(b"#", (rows + 1000).astype("S21"))

    def _shapes(self, rows: np.ndarray) -> np.ndarray:
        """Each row's event_properties format, as a number into ``_shape_list`` (-1: not packable)."""
        keys = np.column_stack([self.metric[rows], self.choices(rows)])
        if not len(rows) or not _packable(keys):
            return np.full(len(rows), -1, dtype=np.int32)
        packed = (keys << _SHIFTS).sum(axis=1)
        distinct, inverse = np.unique(packed, return_inverse=True)
        numbers = []
        for key in distinct.tolist():
            number = self._shape_number.get(key)
            if number is None:
                number = self._shape_number[key] = len(self._shape_list)
                self._shape_list.append(self._formats.get(key) or self._format(key))
            numbers.append(number)
        return np.array(numbers, dtype=np.int32)[inverse.ravel()]

    def _properties_json(self, rows: np.ndarray) -> list[bytes]:
        keys = np.column_stack([self.metric[rows], self.choices(rows)])
        # unpacked keys as tuples: a list is no dict key (the formats cache)
        shape_keys: list[int] | list[tuple[int, ...]] = (
            (keys << _SHIFTS).sum(axis=1).tolist() if _packable(keys) else [tuple(k) for k in keys.tolist()]
        )
        known, shape = self._formats.get, self._format
        formats = [known(k) or shape(k) for k in shape_keys]
        numbers = self.numbers(rows).astype("S12")
        messages = np.strings.add(b"01J", np.strings.zfill(numbers, 12)).tolist()
        order_ids = np.strings.add(b"#", (rows + 1000).astype("S21")).tolist()
        return [fmt % args for fmt, args in zip(formats, zip(messages, order_ids, numbers.tolist()))]

    def _format(self, key: int | tuple[int, ...]) -> bytes:
        """The ``bytes %`` format of one shape, taking (message, order id, event id).

        ``key`` is (metric, *choices), packed into one int when they fit ``_SHIFTS``.
        """
        metric, *c = [(key >> int(s)) & m for s, m in zip(_SHIFTS, _MASKS)] if isinstance(key, int) else key
        raw = orjson.dumps(self._properties(metric, c, EVENT_ID, MESSAGE, ORDER_ID))
        fmt = self._formats[key] = _percent_format(raw, [s.encode() for s in (MESSAGE, ORDER_ID, EVENT_ID)])
        return fmt


#: Bit offsets packing (metric, *choices) into one int: the first choice gets 20 bits, the rest 8.
_SHIFTS = np.array([56, 36, 28, 20, 12, 4], dtype=np.int64)


def _packable(keys: np.ndarray) -> bool:
    """Every (metric, *choices) row fits ``_SHIFTS`` (a million campaigns would not)."""
    return bool(keys[:, 1].max() < 1 << 20 and keys[:, 2:].max() < 1 << 8)


_MASKS = (0xFF, 0xFFFFF, 0xFF, 0xFF, 0xFF, 0xFF)
#: Placeholders for the per-row strings of event_properties (private-use characters).
MESSAGE, ORDER_ID, EVENT_ID = "\ue010", "\ue011", "\ue012"
K_OTHER, K_EMAIL, K_CLICKED, K_BOUNCED, K_SMS, K_LIST, K_PREFS, K_ORDER, K_PRODUCT, K_ORDERED_PRODUCT, K_ACTIVE = range(11)


def _kind(name: str) -> int:
    """Which of ``choices``' rules a metric follows."""
    if name == "Clicked Email":
        return K_CLICKED
    if name == "Bounced Email":
        return K_BOUNCED
    if name in EMAIL_METRICS:
        return K_EMAIL
    if name in SMS_METRICS:
        return K_SMS
    return {
        "Subscribed to List": K_LIST,
        "Unsubscribed from List": K_LIST,
        "Updated Email Preferences": K_PREFS,
        "Placed Order": K_ORDER,
        "Started Checkout": K_ORDER,
        "Viewed Product": K_PRODUCT,
        "Ordered Product": K_ORDERED_PRODUCT,
        "Active on Site": K_ACTIVE,
    }.get(name, K_OTHER)


_KIND = np.array([_kind(m[0]) for m in V.ALL_METRICS], dtype=np.int8)


def _narrow(col: np.ndarray) -> np.ndarray:
    """An ``S`` column cast to its longest value's width."""
    return col.astype(f"S{max(int(np.strings.str_len(col).max()), 1)}") if len(col) else col


def _percent_format(raw: bytes, slots: list[bytes]) -> bytes:
    """``raw`` as a ``bytes %`` format taking one argument per slot, in ``slots`` order.

    Each placeholder found becomes ``%s``; arguments for placeholders the text
    lacks are consumed by ``%.0s`` (prints nothing), so every shape takes the same tuple.
    """
    raw = raw.replace(b"%", b"%%")
    out, consumed, last = [], 0, 0
    for m in re.finditer(b"|".join(re.escape(s) for s in slots), raw):
        k = slots.index(m.group(0))
        if k < consumed:
            raise ValueError("event_properties placeholders out of order")
        out += [raw[last : m.start()], b"%.0s" * (k - consumed), b"%s"]
        consumed, last = k + 1, m.end()
    out += [raw[last:], b"%.0s" * (len(slots) - consumed)]
    return b"".join(out)
