"""Profiles, stored as columns and rendered one page at a time.

Only what filters and sorts need at scale is stored (timestamps, suppression
codes, per-profile last event); names, emails, phones and locations are
recomputed from (seed, row) when a page is rendered. Emails, phone numbers,
external ids and profile ids are invertible, so an ``equals(email, ...)`` filter
finds its row without an index. Rows are in creation order, and some profiles
deliberately share identical ``created``/``updated`` seconds (bulk imports), the
edge case incremental syncs get wrong.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import orjson

from . import ids
from . import vocabulary as V
from .blockcache import BlockColumn
from .jsontypes import JSON
from .timefmt import iso, iso_date, iso_many

TWO_YEARS = 2 * 365 * 86400
#: ``draw(stream, size)``: one code in [0, size) per row of the page, from the stream's hash
Draw = Callable[[int, int], list[int]]
S_ID, S_NAME, S_LAST, S_DOMAIN, S_PHONE, S_EXT, S_CITY, S_ORG, S_TITLE, S_LOCALE = range(100, 110)
S_PROPS, S_TIE, S_UPD, S_BULK, S_SUPP, S_LSUPP, S_CONSENT, S_GAP, S_PRED = range(110, 119)
PHONE_MODULUS, PHONE_MULT = 8_000_000_000, 7_919_003
EXT_MODULUS, EXT_MULT = 1_000_000_000, 3_571_001
CONSENTS = ("NEVER_SUBSCRIBED", "SUBSCRIBED", "UNSUBSCRIBED")
_EMAIL_RE = re.compile(r"^[a-z]+\.[a-z]+(\d+)@[a-z.]+$")
#: In every text _EMAIL_RE matches: a batch of email keys without it (joined) holds no synthetic email.
_EMAIL_HINT = re.compile(r"\.[a-z]+\d")
#: Top-level profile attributes in Klaviyo's order (subscriptions/predictive_analytics follow on request).
ATTRIBUTES = (
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
    "created",
    "updated",
    "last_event_date",
    "location",
    "properties",
)
_LOWER = {n: n.lower() for n in (*V.FIRST_NAMES, *V.LAST_NAMES)}
#: Codes past the vocabulary mean "not set" (about half the profiles have no organization/title).
_ORGS = (*V.ORGANIZATIONS, *[None] * len(V.ORGANIZATIONS))
_TITLES = (*V.TITLES, *[None] * len(V.TITLES))
#: The 12000 possible birthdays, formatted once (``iso`` per profile was measurable).
_BIRTHDAYS = [iso_date(3_000 * 86400 + d * 86400) for d in range(12000)]


def _tied(values: np.ndarray, tie_mask: np.ndarray) -> np.ndarray:
    """Copy each tied row's value from the nearest untied row before it (keeps order)."""
    anchor = np.where(tie_mask, 0, np.arange(len(values)))
    return values[np.maximum.accumulate(anchor)] if len(values) else values


class Profiles(Protocol):
    """What the read path sees of the account's profiles: the synthetic ``ProfileTable``, or the same
    seen through the write overlay (``state.LiveProfiles``)."""

    @property
    def seed(self) -> int: ...
    @property
    def now(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def list_ids(self) -> list[str]: ...
    @property
    def id_sort_order(self) -> np.ndarray: ...
    @property
    def email_sort_key(self) -> np.ndarray: ...
    @property
    def created(self) -> np.ndarray: ...
    @property
    def updated(self) -> np.ndarray: ...
    @property
    def suppression_reason(self) -> np.ndarray: ...
    @property
    def suppression_ts(self) -> np.ndarray: ...
    @property
    def list_suppression_list(self) -> np.ndarray: ...
    @property
    def list_suppression_ts(self) -> np.ndarray: ...
    @property
    def last_event(self) -> np.ndarray: ...
    def profile_id(self, row: int) -> str: ...
    def ids_for(self, rows: np.ndarray) -> list[str]: ...
    def row_for_id(self, text: str) -> int | None: ...
    def row_for_email(self, text: str) -> int | None: ...
    def row_for_phone(self, text: str) -> int | None: ...
    def row_for_external_id(self, text: str) -> int | None: ...
    def row_for_exchange_id(self, text: str) -> int | None: ...
    def attributes(self, rows: np.ndarray, subscriptions: bool = False, predictive: bool = False) -> list[JSON]: ...


class ProfileTable:
    """All profiles of the account; row ``i`` is the i-th profile created."""

    def __init__(self, seed: int, count: int, now: int, list_ids: list[str]) -> None:
        self.seed, self.count, self.now = seed, count, now
        self._block_columns: dict[str, BlockColumn] = {}
        self.list_ids = list_ids
        rows = np.arange(count, dtype=np.int64)
        start = now - TWO_YEARS
        gaps = -np.log1p(-ids.unit(seed, S_GAP, rows))
        created = start + (np.cumsum(gaps) / max(gaps.sum(), 1.0) * (TWO_YEARS * 0.97)).astype(np.int64)
        self.created = _tied(created, ids.unit(seed, S_TIE, rows) < 0.15)
        span = (now - self.created).astype(np.float64)
        updated = self.created + (ids.unit(seed, S_UPD, rows) ** 3 * span).astype(np.int64)
        bulk_moments = start + (ids.unit(seed, S_BULK, np.arange(40)) * TWO_YEARS).astype(np.int64)
        in_bulk = ids.unit(seed, S_BULK + 50, rows) < 0.12
        bulk = np.maximum(self.created, bulk_moments[ids.choice(seed, S_BULK + 51, rows, 40)])
        self.updated = np.where(in_bulk, bulk, updated)
        # Global suppressions (~4%) and list suppressions (~3%).
        supp = ids.unit(seed, S_SUPP, rows) < 0.04
        self.suppression_reason = np.where(supp, ids.choice(seed, S_SUPP + 1, rows, len(V.SUPPRESSION_REASONS)), -1).astype(
            np.int8
        )
        self.suppression_ts = np.where(supp, np.minimum(self.updated, self.created + (span * 0.5).astype(np.int64)), -1)
        lsupp = (ids.unit(seed, S_LSUPP, rows) < 0.03) & (len(list_ids) > 0)
        self.list_suppression_list = np.where(lsupp, ids.choice(seed, S_LSUPP + 1, rows, max(len(list_ids), 1)), -1).astype(
            np.int16
        )
        self.list_suppression_ts = np.where(lsupp, self.created + (span * 0.3).astype(np.int64), -1)
        self.last_event = np.full(count, -1, dtype=np.int64)
        self.phone_offset = int(ids.mix(seed, S_PHONE + 1, 0)) % PHONE_MODULUS
        self.ext_offset = int(ids.mix(seed, S_EXT + 1, 0)) % EXT_MODULUS
        self.id_key = ids.index_key(seed, S_ID)

    # ----- identity ---------------------------------------------------------------
    def _id_parts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ms = self.created[rows] * 1000 + (ids.mix(self.seed, S_ID, rows) % np.uint64(1000)).astype(np.int64)
        tag = (ids.mix(self.seed, S_ID + 50, rows) >> np.uint64(24)).astype(np.int64)
        return ms, tag

    def profile_id(self, row: int) -> str:
        ms, tag = self._id_parts(np.array([row]))
        return ids.ulid(int(ms[0]), int(tag[0]), row, self.id_key)

    def ids_for(self, rows: np.ndarray) -> list[str]:
        ids_text: list[str] = self.id_bytes(rows).astype("U26").tolist()
        return ids_text

    def id_bytes(self, rows: np.ndarray) -> np.ndarray:
        """Profile ids of ``rows`` as ``S26`` (vectorised; the page renderers use the bytes; kept per block)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows.min() >= 0 and rows.max() < self.count:
            return self._block_column("id", self._compute_id_bytes).take(rows)
        return self._compute_id_bytes(rows)

    def _compute_id_bytes(self, rows: np.ndarray) -> np.ndarray:
        ms, tag = self._id_parts(rows)
        return ids.ulids(ms, tag, rows, self.id_key)

    def _block_column(self, name: str, compute: Callable[[np.ndarray], np.ndarray]) -> BlockColumn:
        """The kept column ``name`` (see ``blockcache.py``): the table's values never change."""
        column = self._block_columns.get(name)
        if column is None:
            column = self._block_columns[name] = BlockColumn(self.count, compute)
        return column

    def row_for_id(self, text: str) -> int | None:
        row = ids.ulid_index(text, self.id_key)
        if row is None or not 0 <= row < self.count or self.profile_id(row) != text:
            return None
        return row

    @cached_property
    def id_sort_order(self) -> np.ndarray:
        """Rows in profile-id order (ULIDs sort by time, then their random bits)."""
        rows = np.arange(self.count, dtype=np.int64)
        ms, tag = self._id_parts(rows)
        low = rows ^ self.id_key
        return np.lexsort((low, tag, ms)).astype(np.int64)

    @cached_property
    def email_sort_key(self) -> np.ndarray:
        rows = np.arange(self.count, dtype=np.int64)
        first = np.array([n.lower() for n in V.FIRST_NAMES])[ids.choice(self.seed, S_NAME, rows, len(V.FIRST_NAMES))]
        last = np.array([n.lower() for n in V.LAST_NAMES])[ids.choice(self.seed, S_LAST, rows, len(V.LAST_NAMES))]
        domain = np.array(V.EMAIL_DOMAINS)[ids.choice(self.seed, S_DOMAIN, rows, len(V.EMAIL_DOMAINS))]
        out = np.char.add(np.char.add(np.char.add(first, "."), last), rows.astype(str))
        return np.char.add(np.char.add(out, "@"), domain)

    # ----- invertible contact fields ------------------------------------------------
    def email(self, row: int) -> str:
        r = np.array([row])
        first = V.FIRST_NAMES[int(ids.choice(self.seed, S_NAME, r, len(V.FIRST_NAMES))[0])]
        last = V.LAST_NAMES[int(ids.choice(self.seed, S_LAST, r, len(V.LAST_NAMES))[0])]
        domain = V.EMAIL_DOMAINS[int(ids.choice(self.seed, S_DOMAIN, r, len(V.EMAIL_DOMAINS))[0])]
        return f"{first.lower()}.{last.lower()}{row}@{domain}"

    def row_for_email(self, text: str) -> int | None:
        m = _EMAIL_RE.match(text.strip().lower())
        if not m or len(m.group(1)) > 12:
            return None
        row = int(m.group(1))
        return row if row < self.count and self.email(row) == text.strip().lower() else None

    def rows_for_identifiers(self, email_keys: list[str], phones: list[str], external_ids: list[str]) -> list[tuple[str, int]]:
        """Every ``(field, row)`` that ``row_for_email``/``row_for_phone``/``row_for_external_id`` find for
        these values (email keys already ``strip().lower()``-ed); a cheap pre-filter per value, so a batch
        of foreign identifiers costs little (one search over the joined emails rules most batches out)."""
        found = []
        if _EMAIL_HINT.search("\n".join(email_keys)):
            found += [("email", self.row_for_email(k)) for k, m in zip(email_keys, map(_EMAIL_RE.match, email_keys)) if m]
        found += [("phone_number", self.row_for_phone(p)) for p in phones if len(p) == 12 and p.startswith("+1")]
        found += [("external_id", self.row_for_external_id(x)) for x in external_ids if len(x) == 14 and x.startswith("cust_")]
        return [(f, row) for f, row in found if row is not None]

    def has_phone(self, rows: np.ndarray) -> np.ndarray:
        return ids.unit(self.seed, S_PHONE, rows) < 0.7

    def phone(self, row: int) -> str | None:
        if not self.has_phone(np.array([row]))[0]:
            return None
        return f"+1{2_000_000_000 + (row * PHONE_MULT + self.phone_offset) % PHONE_MODULUS}"

    def row_for_phone(self, text: str) -> int | None:
        if not re.fullmatch(r"\+1\d{10}", text):
            return None
        k = int(text[2:]) - 2_000_000_000
        if not 0 <= k < PHONE_MODULUS:
            return None
        row = (k - self.phone_offset) * pow(PHONE_MULT, -1, PHONE_MODULUS) % PHONE_MODULUS
        return row if row < self.count and self.phone(row) == text else None

    def external_id(self, row: int) -> str | None:
        if ids.unit(self.seed, S_EXT, np.array([row]))[0] >= 0.6:
            return None
        return f"cust_{(row * EXT_MULT + self.ext_offset) % EXT_MODULUS:09d}"

    def row_for_external_id(self, text: str) -> int | None:
        if not re.fullmatch(r"cust_\d{9}", text):
            return None
        row = (int(text[5:]) - self.ext_offset) * pow(EXT_MULT, -1, EXT_MODULUS) % EXT_MODULUS
        return row if row < self.count and self.external_id(row) == text else None

    def exchange_id(self, row: int) -> str:
        """The ``_kx`` token Klaviyo puts in tracked links (here: opaque, reversible)."""
        return base64.urlsafe_b64encode(f"kx:{self.seed}:{self.profile_id(row)}".encode()).decode().rstrip("=")

    def row_for_exchange_id(self, text: str) -> int | None:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        prefix = f"kx:{self.seed}:"
        return self.row_for_id(raw[len(prefix) :]) if raw.startswith(prefix) else None

    # ----- rendering -----------------------------------------------------------------
    def attributes(self, rows: np.ndarray, subscriptions: bool = False, predictive: bool = False) -> list[JSON]:
        """JSON:API attributes of ``rows`` (vectorised columns, then one dict per row)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = self.columns(rows, ATTRIBUTES)
        out = [dict(zip(ATTRIBUTES, values)) for values in zip(*(cols[name] for name in ATTRIBUTES))]
        if subscriptions or predictive:
            consent = ids.choice(self.seed, S_CONSENT, rows, 10).tolist()
            for k, (row, attrs) in enumerate(zip(rows.tolist(), out)):
                if subscriptions:
                    attrs["subscriptions"] = self._subscriptions(row, consent[k], attrs["phone_number"] is not None)
                if predictive:
                    attrs["predictive_analytics"] = self._predictive(row)
        return out

    def columns(self, rows: np.ndarray, names: Iterable[str]) -> dict[str, list[Any]]:
        """Values of the top-level attributes ``names`` for ``rows``, one list per attribute.

        Only what is asked for is drawn: an events page including profiles with
        ``fields[profile]=email,phone_number,external_id`` must not pay for
        locations, properties and three timestamps it then prunes away.
        """
        seed, names, n = self.seed, set(names), len(rows)
        cols: dict[str, list[Any]] = {}
        row_list = rows.tolist()

        def draw(stream: int, size: int) -> list[int]:
            codes: list[int] = ids.choice(seed, stream, rows, size).tolist()
            return codes

        if names & {"email", "first_name", "last_name"}:
            first = [V.FIRST_NAMES[c] for c in draw(S_NAME, len(V.FIRST_NAMES))]
            last = [V.LAST_NAMES[c] for c in draw(S_LAST, len(V.LAST_NAMES))]
            cols["first_name"], cols["last_name"] = first, last
            if "email" in names:
                cols["email"] = [
                    f"{_LOWER[f]}.{_LOWER[la]}{r}@{V.EMAIL_DOMAINS[d]}"
                    for f, la, r, d in zip(first, last, row_list, draw(S_DOMAIN, len(V.EMAIL_DOMAINS)))
                ]
        if "phone_number" in names:
            numbers = (2_000_000_000 + (rows * PHONE_MULT + self.phone_offset) % PHONE_MODULUS).tolist()
            cols["phone_number"] = [f"+1{v}" if h else None for v, h in zip(numbers, self.has_phone(rows).tolist())]
        if "external_id" in names:
            numbers = ((rows * EXT_MULT + self.ext_offset) % EXT_MODULUS).tolist()
            has = (ids.unit(seed, S_EXT, rows) < 0.6).tolist()
            cols["external_id"] = [f"cust_{v:09d}" if h else None for v, h in zip(numbers, has)]
        if "organization" in names:
            cols["organization"] = [_ORGS[c] for c in draw(S_ORG, len(V.ORGANIZATIONS) * 2)]
        if "locale" in names:
            cols["locale"] = [V.LOCALES[c] for c in draw(S_LOCALE, len(V.LOCALES))]
        if "title" in names:
            cols["title"] = [_TITLES[c] for c in draw(S_TITLE, len(V.TITLES) * 2)]
        if "image" in names:
            cols["image"] = [None] * n
        for name, column in (("created", self.created), ("updated", self.updated), ("last_event_date", self.last_event)):
            if name in names:
                cols[name] = iso_many(column[rows])
        if "location" in names:
            cols["location"] = self._locations(rows, row_list, draw)
        if "properties" in names:
            cols["properties"] = self._properties(row_list, draw)
        return cols

    def json_columns(self, rows: np.ndarray, names: Sequence[str]) -> dict[str, list[bytes]]:
        """``columns`` with every value already JSON (``orjson.dumps`` of it), for page templates.

        The identifiers an events page includes (email, phone number, external id)
        are assembled as byte columns in numpy, not formatted per profile.
        """
        rows = np.asarray(rows, dtype=np.int64)
        fast = (
            {n: self._block_column(n, f.__get__(self)).take(rows) for n, f in _JSON_COLUMNS.items() if n in names}
            if _SAFE_VOCABULARY and len(rows)
            else {}
        )
        rest = self.columns(rows, [n for n in names if n not in fast])
        return {n: fast[n].tolist() if n in fast else list(map(orjson.dumps, rest[n])) for n in names}

    def _email_json(self, rows: np.ndarray) -> np.ndarray:
        first = _LOWER_FIRST[ids.choice(self.seed, S_NAME, rows, len(V.FIRST_NAMES))]
        last = _LOWER_LAST[ids.choice(self.seed, S_LAST, rows, len(V.LAST_NAMES))]
        domain = _DOMAINS[ids.choice(self.seed, S_DOMAIN, rows, len(V.EMAIL_DOMAINS))]
        add = np.strings.add
        return add(add(add(add(add(add(b'"', first), b"."), last), rows.astype("S20")), b"@"), add(domain, b'"'))

    def _phone_json(self, rows: np.ndarray) -> np.ndarray:
        numbers = (2_000_000_000 + (rows * PHONE_MULT + self.phone_offset) % PHONE_MODULUS).astype("S20")
        return np.where(self.has_phone(rows), np.strings.add(np.strings.add(b'"+1', numbers), b'"'), b"null")

    def _external_id_json(self, rows: np.ndarray) -> np.ndarray:
        numbers = np.strings.zfill(((rows * EXT_MULT + self.ext_offset) % EXT_MODULUS).astype("S20"), 9)
        has = ids.unit(self.seed, S_EXT, rows) < 0.6
        return np.where(has, np.strings.add(np.strings.add(b'"cust_', numbers), b'"'), b"null")

    def _locations(self, rows: np.ndarray, row_list: list[int], draw: Draw) -> list[JSON]:
        jitter = ((ids.unit(self.seed, S_CITY + 52, rows) - 0.5) * 0.2).tolist()
        out = []
        for row, c, street, number, j in zip(
            row_list, draw(S_CITY, len(V.CITIES)), draw(S_CITY + 50, len(V.STREETS)), draw(S_CITY + 51, 990), jitter
        ):
            city = V.CITIES[c]
            out.append(
                {
                    "address1": f"{number + 10} {V.STREETS[street]}",
                    "address2": None,
                    "city": city[0],
                    "country": city[2],
                    "latitude": round(city[5] + j, 4),
                    "longitude": round(city[6] + j, 4),
                    "region": city[1],
                    "zip": city[3],
                    "timezone": city[4],
                    "ip": f"203.0.113.{row % 254 + 1}",
                }
            )
        return out

    def _properties(self, row_list: list[int], draw: Draw) -> list[JSON]:
        out = []
        for row, source, orders, tier, birthday, consent in zip(
            row_list,
            draw(S_PROPS, len(V.SIGNUP_SOURCES)),
            draw(S_PROPS + 2, 25),
            draw(S_PROPS + 1, len(V.LOYALTY_TIERS)),
            draw(S_PROPS + 3, 12000),
            draw(S_CONSENT, 10),
        ):
            props: JSON = {"signup_source": V.SIGNUP_SOURCES[source], "lifetime_orders": orders}
            if row % 3 == 0:
                props["loyalty_tier"] = V.LOYALTY_TIERS[tier]
            if row % 4 == 1:
                props["birthday"] = _BIRTHDAYS[birthday]
            if row % 5 == 2:
                props["accepts_marketing"] = consent < 7
            out.append(props)
        return out

    def _subscriptions(self, row: int, consent_code: int, has_phone: bool) -> JSON:
        reason = int(self.suppression_reason[row])
        consent = 1 if consent_code < 6 else (2 if consent_code < 8 else 0)
        if reason >= 0 and V.SUPPRESSION_REASONS[reason] == "UNSUBSCRIBE":
            consent = 2
        since = iso(self.created[row]) if consent else None
        suppression = (
            [{"reason": V.SUPPRESSION_REASONS[reason], "timestamp": iso(self.suppression_ts[row])}] if reason >= 0 else []
        )
        lsupp = int(self.list_suppression_list[row])
        list_suppressions = (
            [{"list_id": self.list_ids[lsupp], "reason": "USER_SUPPRESSED", "timestamp": iso(self.list_suppression_ts[row])}]
            if lsupp >= 0
            else []
        )
        sms_consent = "SUBSCRIBED" if has_phone and consent_code < 5 else "NEVER_SUBSCRIBED"
        return {
            "email": {
                "marketing": {
                    "can_receive_email_marketing": consent == 1 and reason < 0,
                    "consent": CONSENTS[consent],
                    "consent_timestamp": since,
                    "last_updated": iso(self.updated[row]),
                    "method": "FORM" if consent else None,
                    "method_detail": "",
                    "custom_method_detail": None,
                    "double_optin": None,
                    "suppression": suppression,
                    "list_suppressions": list_suppressions,
                }
            },
            "sms": {
                "marketing": {
                    "can_receive_sms_marketing": sms_consent == "SUBSCRIBED",
                    "consent": sms_consent,
                    "consent_timestamp": since if sms_consent == "SUBSCRIBED" else None,
                    "method": "TEXT" if sms_consent == "SUBSCRIBED" else None,
                    "method_detail": "",
                    "last_updated": iso(self.updated[row]),
                },
                "transactional": None,
            },
            "mobile_push": {
                "marketing": {"can_receive_push_marketing": False, "consent": "NEVER_SUBSCRIBED", "consent_timestamp": None}
            },
        }

    def _predictive(self, row: int) -> JSON:
        u = ids.unit(self.seed, S_PRED, np.arange(row * 4, row * 4 + 4))
        orders = int(u[0] * 8)
        aov = round(20 + float(u[1]) * 180, 2)
        return {
            "historic_clv": round(orders * aov, 2),
            "predicted_clv": round(float(u[2]) * 300, 2),
            "total_clv": round(orders * aov + float(u[2]) * 300, 2),
            "historic_number_of_orders": orders,
            "predicted_number_of_orders": round(float(u[3]) * 3, 2),
            "average_days_between_orders": round(30 + float(u[3]) * 90, 1) if orders > 1 else None,
            "average_order_value": aov if orders else None,
            "churn_probability": round(float(u[1]), 2),
            "expected_date_of_next_order": iso(self.now + int(u[2] * 90 * 86400)) if orders else None,
            "ranked_channel_affinity": ["email", "sms", "push"] if u[0] < 0.5 else ["sms", "email", "push"],
        }


def _json_strings(values: Iterable[str]) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=bytes)


_LOWER_FIRST = _json_strings(n.lower() for n in V.FIRST_NAMES)
_LOWER_LAST = _json_strings(n.lower() for n in V.LAST_NAMES)
_DOMAINS = _json_strings(V.EMAIL_DOMAINS)
#: The byte-built columns are only right if no vocabulary word needs JSON escaping (checked once).
_SAFE_VOCABULARY = all(orjson.dumps(w) == b'"' + w.encode() + b'"' for w in (*_LOWER.values(), *V.EMAIL_DOMAINS))
_JSON_COLUMNS = {
    "email": ProfileTable._email_json,
    "phone_number": ProfileTable._phone_json,
    "external_id": ProfileTable._external_id_json,
}
