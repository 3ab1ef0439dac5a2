"""The account's mutable side: an overlay over the immutable synthetic columns.

Writes never touch the base ``ProfileTable`` columns. Instead:

* new profiles are rows ``base.count + k`` whose attributes live here (one orjson
  blob each, plus identifier indexes); their ids are ULIDs that sort after every
  base profile, so "rows in creation order" and "new ids last" stay true;
* changed base profiles keep only their overridden attributes;
* consent and suppression changes are a small per-row ``Consent`` record;
* list memberships are replaced by new ``Membership`` arrays (still in id order);
* new lists are appended to the catalog.

``LiveProfiles`` wraps the base table with the same interface the read path
uses. Until the first write it hands out the base columns themselves (no cost
for the 1M-profile read path); after writes it builds patched columns once per
state version. Ids depend only on the seed and the sequence of writes, so the
same writes give the same state and ids.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson

from . import ids
from . import vocabulary as V
from .catalog import Record
from .data import Account
from .jsontypes import JSON
from .members import Membership
from .pendingkeys import PendingKeys, sorted_hashes
from .profiles import ProfileTable
from .timefmt import iso

S_NEW_PROFILE, S_NEW_LIST = 900, 901
IDENTIFIERS = ("email", "phone_number", "external_id")
PROFILE_FIELDS = ("email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title", "image")
LOCATION_FIELDS = ("address1", "address2", "city", "country", "latitude", "longitude", "region", "zip", "timezone", "ip")
REASON_CODE = {r: i for i, r in enumerate(V.SUPPRESSION_REASONS)}


#: (consent, timestamp, method) of one channel
ChannelConsent = tuple[str, int, str]


@dataclass
class Consent:
    """Changed consent of one profile; ``None`` fields keep the synthetic value."""

    email: ChannelConsent | None = None
    sms: ChannelConsent | None = None
    sms_transactional: ChannelConsent | None = None
    suppression: list[tuple[str, int]] = field(default_factory=list)  # [(reason, ts)]
    list_suppressions: list[tuple[str, int]] = field(default_factory=list)  # [(list_id, ts)]


def _pack(attributes: JSON) -> bytes:
    """orjson's bytes keep a 4 KB buffer; copy to the exact size (x25 less memory per profile)."""
    return bytes(memoryview(orjson.dumps(attributes)))


def _present(values: Sequence[str | None]) -> list[str]:
    """The identifiers given in a column (None: not given); when all are, without a scan in Python."""
    return list(cast("Sequence[str]", values)) if all(values) else [v for v in values if v]


def _key(field_name: str, value: str) -> str:
    return value.strip().lower() if field_name == "email" else value


class AccountState:
    """Everything writes changed, and the operations that change it."""

    def __init__(self, account: Account) -> None:
        self.account = account
        base = account.profiles
        if not isinstance(base, ProfileTable):
            raise TypeError("the account's profiles are seen through writes already: it has its AccountState")
        self.base = base
        self.version = 0
        self.new_blobs: list[bytes] = []
        self.new_created: list[int] = []
        self.new_updated: dict[int, int] = {}  # rows updated after creation (a new row's is its created until then)
        self.changes: dict[int, JSON] = {}
        self._index: dict[str, dict[str, int]] = {f: {} for f in IDENTIFIERS}
        self._pending: dict[str, PendingKeys] = {f: PendingKeys() for f in IDENTIFIERS}
        self._unindexed = False
        self._member_room: dict[tuple[str, str], tuple[Membership, np.ndarray, np.ndarray]] = {}  # see _appended
        self.consent: dict[int, Consent] = {}
        self.new_list_ids: list[str] = []
        self.list_creations = 0
        self._id_rank: np.ndarray | None = None
        #: rows a completed data-privacy deletion removed: gone from every read (profiles, members, events)
        self.deleted: set[int] = set()
        self._deleted_mask: tuple[tuple[int, int], np.ndarray] | None = None
        #: (profile row, metric index, unique_id) of every event written: a repeat is not recorded again
        self.event_keys: set[tuple[int, int, str | None]] = set()
        #: metric name -> index in the account's metrics (built on the first event written)
        self.metric_by_name: dict[str, int] | None = None

    # ----- identity -----------------------------------------------------------------
    @property
    def index(self) -> dict[str, dict[str, int]]:
        """Identifier field -> key -> row, exact; bulk-created keys are added on first use (see pendingkeys)."""
        if self._unindexed:
            for f, pending in self._pending.items():
                pending.flush_into(self._index[f])
            self._unindexed = False
        return self._index

    @property
    def count(self) -> int:
        return self.base.count + len(self.new_blobs)

    @property
    def touched(self) -> bool:
        return self.version > 0

    def new_id(self, row: int) -> str:
        k = row - self.base.count
        return ids.ulid(self.base.now * 1000 + 1, k, row, self.base.id_key)

    def row_for_id(self, text: str) -> int | None:
        row = self.base.row_for_id(text)
        if row is not None:
            return None if row in self.deleted else row
        index = ids.ulid_index(text, self.base.id_key)
        if index is not None and self.base.count <= index < self.count and self.new_id(index) == text:
            return None if index in self.deleted else index
        return None

    def row_for(self, field_name: str, value: str) -> int | None:
        """Row holding identifier ``value`` now (overlay first, then the synthetic inverse)."""
        if not isinstance(value, str):
            return None
        key = _key(field_name, value)
        row = self.index[field_name].get(key)
        if row is not None:
            return row
        if self.deleted and field_name in ("email", "phone_number", "external_id"):
            lookup = {
                "email": self.base.row_for_email,
                "phone_number": self.base.row_for_phone,
                "external_id": self.base.row_for_external_id,
            }[field_name]
            found = lookup(value)
            if found is not None and found in self.deleted:
                return None
        lookup = {
            "email": self.base.row_for_email,
            "phone_number": self.base.row_for_phone,
            "external_id": self.base.row_for_external_id,
        }[field_name]
        row = lookup(value)
        if row is not None and field_name in self.changes.get(row, {}):
            return None  # the profile's identifier was changed by a write
        return row

    def id_rank(self, rows: np.ndarray) -> np.ndarray:
        """Position of each row in profile-id order (new rows after all base rows)."""
        if self._id_rank is None:
            order = self.base.id_sort_order
            rank = np.empty(self.base.count, dtype=np.int64)
            rank[order] = np.arange(self.base.count, dtype=np.int64)
            self._id_rank = rank
        rows = np.asarray(rows, dtype=np.int64)
        base = rows < self.base.count
        return np.where(base, self._id_rank[np.where(base, rows, 0)] if self.base.count else 0, rows)

    # ----- profiles -------------------------------------------------------------------
    def current_identifiers(self, row: int) -> JSON:
        if row >= self.base.count:
            attrs: JSON = orjson.loads(self.new_blobs[row - self.base.count])
            return {f: attrs.get(f) for f in IDENTIFIERS}
        changed = self.changes.get(row, {})
        base = {"email": self.base.email(row), "phone_number": self.base.phone(row), "external_id": self.base.external_id(row)}
        return {f: changed.get(f, base[f]) for f in IDENTIFIERS}

    def match(self, attributes: JSON, profile_id: str | None = None) -> int | None:
        """Klaviyo's matching: by id, else email, else phone number, else external id."""
        if profile_id:
            row = self.row_for_id(profile_id)
            if row is not None:
                return row
        for f in IDENTIFIERS:
            value = attributes.get(f)
            if value:
                row = self.row_for(f, value)
                if row is not None:
                    return row
        return None

    def upsert(self, attributes: JSON, now: int, profile_id: str | None = None) -> tuple[int, bool]:
        """Create or update one profile; returns (row, created)."""
        row = self.match(attributes, profile_id)
        created = row is None
        if row is None:
            row = self._create(_pack({k: v for k, v in attributes.items() if k != "_kx"}), now)
        else:
            self._update(row, attributes, now)
        for f in IDENTIFIERS:
            if attributes.get(f):
                self.index[f][_key(f, attributes[f])] = row
        self.version += 1
        return row, created

    def _create(self, blob: bytes, now: int) -> int:
        row = self.count
        self.new_blobs.append(blob)
        self.new_created.append(now)
        return row

    def _update(self, row: int, attributes: JSON, now: int) -> None:
        old = self.current_identifiers(row)
        if row >= self.base.count:
            attrs = _merge(orjson.loads(self.new_blobs[row - self.base.count]), attributes)
            self.new_blobs[row - self.base.count] = _pack(attrs)
        else:
            self.changes[row] = _merge(self.changes.get(row, {}), attributes)
        self.new_updated[row] = now
        for f in IDENTIFIERS:
            if f in attributes and old.get(f) and old[f] != attributes[f]:
                self.index[f].pop(_key(f, old[f]), None)

    def upsert_many(
        self,
        pids: Sequence[str | None],
        emails: Sequence[str | None],
        phones: Sequence[str | None],
        external_ids: Sequence[str | None],
        attributes: Sequence[Any],
        blobs: Sequence[bytes | None] | None,
        now: int,
        attributes_of: Callable[[Any], JSON] | None = None,
    ) -> list[int]:
        """``upsert`` of a batch, in order (a later item matches what an earlier one created or changed).

        Columns, one entry per item: the profile id, the attributes' email, phone_number and
        external_id (None if absent), the attributes, and ``blobs``: the packed attributes without
        ``_kx`` to store if the item creates a profile (None, or a None entry: pack ``attributes``).
        ``attributes_of(attributes)`` gives the attribute dict when an item updates a profile
        (default: ``attributes`` holds dicts). Same state, rows and version as one ``upsert`` per
        item; returns the rows.
        """
        if blobs is None:
            blobs = [None] * len(pids)
        if not len(pids):
            return []
        created = self._create_all(pids, emails, phones, external_ids, attributes, blobs, now)
        if created is not None:
            return created
        base = self.base
        base_n = base.count
        ix_email, ix_phone, ix_ext = (self.index[f] for f in IDENTIFIERS)
        changes = self.changes
        new_blobs, new_created = self.new_blobs, self.new_created
        rows: list[int] = []
        for pid, email, phone, ext, item, blob in zip(pids, emails, phones, external_ids, attributes, blobs):
            row = self.row_for_id(pid) if pid else None
            if row is None and email and email.__class__ is str:
                key = email.strip().lower()
                row = ix_email.get(key)
                if row is None:
                    row = base.row_for_email(email)
                    if row is not None and "email" in changes.get(row, ()):
                        row = None
            if row is None and phone and phone.__class__ is str:
                row = ix_phone.get(phone)
                if row is None and phone.startswith("+1"):  # the synthetic profiles' numbers are +1 + 10 digits
                    row = base.row_for_phone(phone)
                    if row is not None and "phone_number" in changes.get(row, ()):
                        row = None
            if row is None and ext and ext.__class__ is str:
                row = ix_ext.get(ext)
                if row is None:
                    row = base.row_for_external_id(ext)
                    if row is not None and "external_id" in changes.get(row, ()):
                        row = None
            if row is None:
                if blob is None:
                    blob = _pack({k: v for k, v in item.items() if k != "_kx"})
                row = base_n + len(new_blobs)
                new_blobs.append(blob)
                new_created.append(now)
            else:
                self._update(row, item if attributes_of is None else attributes_of(item), now)
            if email:
                ix_email[email.strip().lower()] = row
            if phone:
                ix_phone[phone] = row
            if ext:
                ix_ext[ext] = row
            rows.append(row)
        self.version += len(rows)
        return rows

    def _create_all(
        self,
        pids: Sequence[str | None],
        all_emails: Sequence[str | None],
        all_phones: Sequence[str | None],
        all_exts: Sequence[str | None],
        attributes: Sequence[Any],
        blobs: Sequence[bytes | None],
        now: int,
    ) -> list[int] | None:
        """The common batch, done in bulk: no item names a profile id and no identifier matches an
        existing profile or an earlier item, so every item creates a profile. None: not so."""
        if any(pids):
            return None
        emails, phones, exts = (_present(values) for values in (all_emails, all_phones, all_exts))
        if not set(map(type, emails)).union(map(type, phones), map(type, exts)) <= {str}:
            return None
        email_keys = list(map(str.lower, map(str.strip, emails)))
        hashes: dict[str, np.ndarray] = {}
        for field_name, keys in (("email", email_keys), ("phone_number", phones), ("external_id", exts)):
            h = sorted_hashes(keys)  # also: no key twice in the batch
            index = self._index[field_name]
            if h is None or (index and not index.keys().isdisjoint(keys)) or self._pending[field_name].may_hold(h):
                return None
            hashes[field_name] = h
        for field_name, row in self.base.rows_for_identifiers(email_keys, phones, exts):
            if field_name not in self.changes.get(row, ()):
                return None
        rows = range(self.count, self.count + len(pids))
        if all(blobs):  # no None among them (packed bytes are never empty)
            self.new_blobs.extend(cast("Sequence[bytes]", blobs))
        else:
            self.new_blobs.extend(
                [
                    blob if blob is not None else _pack({k: v for k, v in attrs.items() if k != "_kx"})
                    for attrs, blob in zip(attributes, blobs)
                ]
            )
        self.new_created.extend([now] * len(rows))
        for field_name, keys, present in (
            ("email", email_keys, all_emails),
            ("phone_number", phones, all_phones),
            ("external_id", exts, all_exts),
        ):
            keyed: Sequence[int] = (
                rows if len(keys) == len(rows) else list(compress(rows, present))
            )  # a range holds no row objects
            self._pending[field_name].add(keys, keyed, hashes[field_name])
        self._unindexed = True
        self.version += len(rows)
        return list(rows)

    def profile_attributes(self, rows: np.ndarray, subscriptions: bool, predictive: bool) -> list[JSON]:
        """Attributes of ``rows`` as they are now (base rendering + overrides, or overlay rows)."""
        base_n = self.base.count
        rows = np.asarray(rows, dtype=np.int64)
        is_base = rows < base_n
        base_attrs = iter(self.base.attributes(rows[is_base], subscriptions, predictive))
        out: list[JSON] = []
        for row in rows.tolist():
            if row < base_n:
                attrs = next(base_attrs)
                changed = self.changes.get(row)
                if changed:
                    attrs = _merge(attrs, changed)
                if row in self.new_updated:
                    attrs["updated"] = iso(self.new_updated[row])
            else:
                attrs = self._new_attributes(row, subscriptions, predictive)
            if subscriptions and row in self.consent:
                attrs["subscriptions"] = self._apply_consent(attrs["subscriptions"], self.consent[row])
            out.append(attrs)
        return out

    def _new_attributes(self, row: int, subscriptions: bool, predictive: bool) -> JSON:
        k = row - self.base.count
        stored = orjson.loads(self.new_blobs[k])
        attrs: JSON = {f: None for f in PROFILE_FIELDS}
        attrs.update(
            {
                "created": iso(self.new_created[k]),
                "updated": iso(self.new_updated.get(row, self.new_created[k])),
                "last_event_date": None,
                "location": {f: None for f in LOCATION_FIELDS},
                "properties": {},
            }
        )
        attrs = _merge(attrs, stored)
        if subscriptions:
            attrs["subscriptions"] = _never_subscribed()
        if predictive:
            attrs["predictive_analytics"] = {
                name: None
                for name in (
                    "historic_clv",
                    "predicted_clv",
                    "total_clv",
                    "historic_number_of_orders",
                    "predicted_number_of_orders",
                    "average_days_between_orders",
                    "average_order_value",
                    "churn_probability",
                    "expected_date_of_next_order",
                )
            }
            attrs["predictive_analytics"]["ranked_channel_affinity"] = []
        return attrs

    # ----- consent --------------------------------------------------------------------
    def consent_for(self, row: int) -> Consent:
        c = self.consent.get(row)
        if c is None:
            c = Consent()
            if row < self.base.count:
                reason = int(self.base.suppression_reason[row])
                if reason >= 0:
                    c.suppression = [(V.SUPPRESSION_REASONS[reason], int(self.base.suppression_ts[row]))]
                lsupp = int(self.base.list_suppression_list[row])
                if lsupp >= 0:
                    c.list_suppressions = [(self.base.list_ids[lsupp], int(self.base.list_suppression_ts[row]))]
            self.consent[row] = c
        return c

    def subscribe(self, row: int, channels: dict[str, bool], now: int, consented_at: dict[str, int]) -> None:
        """channels: {'email': bool, 'sms': bool, 'sms_transactional': bool}; removes opt-out suppressions."""
        c = self.consent_for(row)
        if channels.get("email"):
            c.email = ("SUBSCRIBED", consented_at.get("email") or now, "API")
            c.suppression = [s for s in c.suppression if s[0] not in ("UNSUBSCRIBE", "SPAM_COMPLAINT", "USER_SUPPRESSED")]
        if channels.get("sms"):
            c.sms = ("SUBSCRIBED", consented_at.get("sms") or now, "API")
        if channels.get("sms_transactional"):
            c.sms_transactional = ("SUBSCRIBED", consented_at.get("sms_transactional") or now, "API")
        self._touch(row, now)

    def unsubscribe(self, row: int, channels: dict[str, bool], now: int, list_id: str | None) -> None:
        """Unsubscribe; with a list the profile is removed from it (and list-suppressed) if a member,
        otherwise unsubscribed globally, as the spec warns."""
        c = self.consent_for(row)
        members = self.account.list_members.get(list_id) if list_id else None
        if list_id and members is not None and members.contains(row):
            self.remove_members(list_id, np.array([row]))
            if channels.get("email"):
                c.list_suppressions = [s for s in c.list_suppressions if s[0] != list_id] + [(list_id, now)]
        else:
            if channels.get("email"):
                c.email = ("UNSUBSCRIBED", now, "API")
                if not any(s[0] == "UNSUBSCRIBE" for s in c.suppression):
                    c.suppression = c.suppression + [("UNSUBSCRIBE", now)]
            if channels.get("sms"):
                c.sms = ("UNSUBSCRIBED", now, "API")
            if channels.get("sms_transactional"):
                c.sms_transactional = ("UNSUBSCRIBED", now, "API")
        self._touch(row, now)

    def delete_profile(self, row: int, now: int) -> None:
        """A data-privacy deletion: the profile leaves every list and segment and, with its events,
        disappears from every read; its identifiers no longer match it."""
        if row in self.deleted:
            return
        for groups, segment in ((self.account.list_members, False), (self.account.segment_members, True)):
            for group_id, m in list(groups.items()):
                if m.contains(row):
                    self.remove_members(group_id, np.array([row]), now, segment=segment)
        for field_name, key in self.current_identifiers(row).items():
            if key:
                self.index[field_name].pop(_key(field_name, key), None)
        self.deleted.add(row)
        self.version += 1

    def deleted_rows(self, count: int) -> np.ndarray | None:
        """Mask of deleted profile rows (``count`` long), None when none was deleted."""
        if not self.deleted:
            return None
        if self._deleted_mask is None or self._deleted_mask[0] != (self.version, count):
            mask = np.zeros(count, dtype=bool)
            mask[np.fromiter(self.deleted, dtype=np.int64)] = True
            self._deleted_mask = ((self.version, count), mask)
        return self._deleted_mask[1]

    def suppress(self, row: int, now: int) -> None:
        c = self.consent_for(row)
        if not any(s[0] == "USER_SUPPRESSED" for s in c.suppression):
            c.suppression = c.suppression + [("USER_SUPPRESSED", now)]
        self._touch(row, now)

    def unsuppress(self, row: int, now: int) -> bool:
        """Removes USER_SUPPRESSED only (unsubscribes, bounces and invalid emails stay)."""
        c = self.consent_for(row)
        before = len(c.suppression)
        c.suppression = [s for s in c.suppression if s[0] != "USER_SUPPRESSED"]
        self._touch(row, now)
        return len(c.suppression) < before

    def _touch(self, row: int, now: int) -> None:
        self.new_updated[row] = now
        self.version += 1

    def _apply_consent(self, subs: JSON, c: Consent) -> JSON:
        subs = copy.deepcopy(subs)
        email = subs["email"]["marketing"]
        if c.email:
            email.update(consent=c.email[0], consent_timestamp=iso(c.email[1]), last_updated=iso(c.email[1]), method=c.email[2])
        email["suppression"] = [{"reason": r, "timestamp": iso(ts)} for r, ts in c.suppression]
        email["list_suppressions"] = [
            {"list_id": lid, "reason": "USER_SUPPRESSED", "timestamp": iso(ts)} for lid, ts in c.list_suppressions
        ]
        email["can_receive_email_marketing"] = email["consent"] == "SUBSCRIBED" and not c.suppression
        sms = subs["sms"]
        if c.sms:
            sms["marketing"].update(
                consent=c.sms[0],
                consent_timestamp=iso(c.sms[1]),
                last_updated=iso(c.sms[1]),
                method=c.sms[2],
                can_receive_sms_marketing=c.sms[0] == "SUBSCRIBED",
            )
        if c.sms_transactional:
            consent, ts, method = c.sms_transactional
            sms["transactional"] = {
                "can_receive_sms_transactional": consent == "SUBSCRIBED",
                "consent": consent,
                "consent_timestamp": iso(ts),
                "last_updated": iso(ts),
                "method": method,
                "method_detail": "",
            }
        return subs

    # ----- lists ----------------------------------------------------------------------
    def create_list(self, name: str, opt_in: str | None, now: int) -> Record:
        k = len(self.new_list_ids)
        list_id = ids.short_id(self.base.seed, S_NEW_LIST, k)
        tags = self.account.records.get("tag") or []
        rec = Record(
            "list",
            list_id,
            {"name": name, "created": iso(now), "updated": iso(now), "opt_in_process": opt_in or "single_opt_in"},
            {"id": list_id, "name": name, "created": now, "updated": now},
            {"tags": [], "flow-triggers": []} if tags is not None else {},
        )
        self.account.add_record(rec)
        self.account.list_members[list_id] = Membership(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
        self.new_list_ids.append(list_id)
        self.version += 1
        return rec

    def add_members(self, list_id: str, rows: np.ndarray, now: int, segment: bool = False) -> int:
        """Add rows (kept in id order, joined now); returns how many were new members.
        ``segment``: ``list_id`` is a segment's (Klaviyo re-evaluating it), not a list's."""
        groups = self._groups(segment)
        m = groups[list_id]
        rows = np.asarray(rows, dtype=np.int64)
        if self._append_members(list_id, m, rows, now, segment):
            return len(rows)
        rows = np.unique(rows)
        rows = rows[~np.isin(rows, m.profiles)]
        if not len(rows):
            return 0
        ranks = self.id_rank(rows)
        order = np.argsort(ranks, kind="stable")
        rows, ranks = rows[order], ranks[order]
        at = np.searchsorted(self.id_rank(m.profiles), ranks)
        groups[list_id] = Membership(
            np.insert(m.profiles, at, rows), np.insert(m.joined, at, np.full(len(rows), now, dtype=np.int64))
        )
        self._touch_group(list_id, now, segment)
        return len(rows)

    def _append_members(self, list_id: str, m: Membership, rows: np.ndarray, now: int, segment: bool = False) -> bool:
        """The common case of a bulk import: ``rows`` already in strictly increasing id order, all after
        the last member (new profiles). Appending then gives what ``add_members``' unique, isin and
        sorted inserts give, without their O(members) work per call. False: not so, nothing done."""
        if not len(rows):
            return False
        ranks = self.id_rank(rows)
        if len(rows) > 1 and not (ranks[1:] > ranks[:-1]).all():
            return False
        if len(m.profiles) and ranks[0] <= self.id_rank(m.profiles[-1:])[0]:
            return False
        self._groups(segment)[list_id] = self._appended(("segment" if segment else "list", list_id), m, rows, now)
        self._touch_group(list_id, now, segment)
        return True

    def _appended(self, key: tuple[str, str], m: Membership, rows: np.ndarray, now: int) -> Membership:
        """``m`` plus ``rows`` joined ``now``, as views of buffers with room to spare (amortised O(rows),
        not a copy of every member per job). Only the tail past ``m`` is written, which no earlier
        Membership of the buffers can see; a membership replaced since (remove_members, the sorted
        insert) gets new buffers."""
        n, k = len(m.profiles), len(rows)
        room = self._member_room.get(key)
        if room is not None and room[0] is m and n + k <= len(room[1]):
            profiles, joined = room[1], room[2]
        else:
            capacity = max(2 * (n + k), 1024)
            profiles, joined = np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.int64)
            profiles[:n], joined[:n] = m.profiles, m.joined
        profiles[n : n + k], joined[n : n + k] = rows, now
        out = Membership(profiles[: n + k], joined[: n + k])
        self._member_room[key] = (out, profiles, joined)
        return out

    def remove_members(self, list_id: str, rows: np.ndarray, now: int | None = None, segment: bool = False) -> int:
        groups = self._groups(segment)
        m = groups[list_id]
        keep = ~np.isin(m.profiles, np.asarray(rows, dtype=np.int64))
        removed = int((~keep).sum())
        if removed:
            groups[list_id] = Membership(m.profiles[keep], m.joined[keep])
            self._touch_group(list_id, now, segment)
        return removed

    def _groups(self, segment: bool) -> dict[str, Membership]:
        return self.account.segment_members if segment else self.account.list_members

    def _touch_group(self, group_id: str, now: int | None, segment: bool) -> None:
        if segment:
            self.version += 1  # a segment's own record does not change when its members do
        else:
            self._touch_list(group_id, now)

    def _touch_list(self, list_id: str, now: int | None) -> None:
        if now is not None:
            rec = self._list(list_id)
            rec.values["updated"] = now
            rec.attributes["updated"] = iso(now)
        self.version += 1

    # ----- columns for the read path ------------------------------------------------------
    def column(self, name: str) -> np.ndarray:
        base_col = getattr(self.base, name)
        extra = len(self.new_blobs)
        if name in ("created", "updated"):
            tail = np.array(self.new_created, dtype=np.int64)
        else:
            tail = np.full(extra, -1, dtype=base_col.dtype)
        col = np.concatenate([base_col, tail]) if extra else base_col.copy()
        if name == "updated" and self.new_updated:
            keys = np.fromiter(self.new_updated.keys(), dtype=np.int64, count=len(self.new_updated))
            col[keys] = np.fromiter(self.new_updated.values(), dtype=np.int64, count=len(self.new_updated))
        elif name in ("suppression_reason", "suppression_ts", "list_suppression_list", "list_suppression_ts") and self.consent:
            list_ids = list(self.base.list_ids) + self.new_list_ids
            for row, c in self.consent.items():
                if name == "suppression_reason":
                    col[row] = REASON_CODE[c.suppression[0][0]] if c.suppression else -1
                elif name == "suppression_ts":
                    col[row] = c.suppression[0][1] if c.suppression else -1
                elif name == "list_suppression_list":
                    col[row] = list_ids.index(c.list_suppressions[0][0]) if c.list_suppressions else -1
                else:
                    col[row] = c.list_suppressions[0][1] if c.list_suppressions else -1
        return col

    # ----- introspection --------------------------------------------------------------------
    def snapshot(self) -> JSON:
        """Final state for tests: list members (profile ids, id order), consent and suppressions
        of every profile a write touched, new lists and profile count."""
        lists: dict[str, list[str]] = {}
        for rec in self.account.records["list"]:
            m = self.account.list_members[rec.id]
            lists[rec.id] = self.profile_ids(m.profiles)
        touched = sorted(self.consent)
        subs: dict[str, JSON] = {}
        for row, attrs in zip(touched, self.profile_attributes(np.array(touched, dtype=np.int64), True, False)):
            s = attrs["subscriptions"]
            subs[self.profile_id(row)] = {
                "email": s["email"]["marketing"]["consent"],
                "sms": s["sms"]["marketing"]["consent"],
                "sms_transactional": (s["sms"]["transactional"] or {}).get("consent"),
                "suppressions": [x["reason"] for x in s["email"]["marketing"]["suppression"]],
                "list_suppressions": [x["list_id"] for x in s["email"]["marketing"]["list_suppressions"]],
            }
        return {
            "profiles": self.count,
            "new_profiles": len(self.new_blobs),
            "new_lists": {lid: self._list(lid).attributes["name"] for lid in self.new_list_ids},
            "list_members": lists,
            "subscriptions": subs,
        }

    def _list(self, list_id: str) -> Record:
        rec = self.account.record("list", list_id)
        if rec is None:
            raise KeyError(f"no list {list_id!r}")
        return rec

    def profile_id(self, row: int) -> str:
        return self.base.profile_id(row) if row < self.base.count else self.new_id(row)

    def profile_ids(self, rows: npt.ArrayLike) -> list[str]:
        rows = np.asarray(rows, dtype=np.int64)
        base = rows < self.base.count
        if base.all():
            return self.base.ids_for(rows)
        out = self.base.ids_for(rows[base])
        it = iter(out)
        return [next(it) if r < self.base.count else self.new_id(r) for r in rows.tolist()]


def _merge(target: JSON, changes: JSON) -> JSON:
    """Profile update semantics: given keys replace, ``location``/``properties`` merge by key."""
    out = dict(target)
    for k, v in changes.items():
        if k in ("location", "properties") and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _never_subscribed() -> JSON:
    return {
        "email": {
            "marketing": {
                "can_receive_email_marketing": False,
                "consent": "NEVER_SUBSCRIBED",
                "consent_timestamp": None,
                "last_updated": None,
                "method": None,
                "method_detail": "",
                "custom_method_detail": None,
                "double_optin": None,
                "suppression": [],
                "list_suppressions": [],
            }
        },
        "sms": {
            "marketing": {
                "can_receive_sms_marketing": False,
                "consent": "NEVER_SUBSCRIBED",
                "consent_timestamp": None,
                "method": None,
                "method_detail": "",
                "last_updated": None,
            },
            "transactional": None,
        },
        "mobile_push": {
            "marketing": {"can_receive_push_marketing": False, "consent": "NEVER_SUBSCRIBED", "consent_timestamp": None}
        },
    }


class LiveProfiles:
    """The base ProfileTable's interface (``profiles.Profiles``), seen through the write overlay."""

    COLUMNS = (
        "created",
        "updated",
        "suppression_reason",
        "suppression_ts",
        "list_suppression_list",
        "list_suppression_ts",
        "last_event",
    )

    def __init__(self, state: AccountState) -> None:
        self.state = state
        self.base = state.base
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def _column(self, name: str) -> np.ndarray:
        """One of ``COLUMNS``: the base table's until the first write, then patched once per state version."""
        if not self.state.touched:
            column: np.ndarray = getattr(self.base, name)
            return column
        return self._cached((name, self.state.version), lambda: self.state.column(name))

    @property
    def created(self) -> np.ndarray:
        return self._column("created")

    @property
    def updated(self) -> np.ndarray:
        return self._column("updated")

    @property
    def suppression_reason(self) -> np.ndarray:
        return self._column("suppression_reason")

    @property
    def suppression_ts(self) -> np.ndarray:
        return self._column("suppression_ts")

    @property
    def list_suppression_list(self) -> np.ndarray:
        return self._column("list_suppression_list")

    @property
    def list_suppression_ts(self) -> np.ndarray:
        return self._column("list_suppression_ts")

    @property
    def last_event(self) -> np.ndarray:
        return self._column("last_event")

    @property
    def seed(self) -> int:
        return self.base.seed

    @property
    def now(self) -> int:
        return self.base.now

    def _cached(self, key: tuple[str, int], compute: Callable[[], np.ndarray]) -> np.ndarray:
        value = self._cache.get(key)
        if value is None:
            if len(self._cache) > 16:
                self._cache.clear()
            value = self._cache[key] = compute()
        return value

    @property
    def count(self) -> int:
        return self.state.count

    @property
    def list_ids(self) -> list[str]:
        return list(self.base.list_ids) + self.state.new_list_ids if self.state.new_list_ids else self.base.list_ids

    @property
    def id_sort_order(self) -> np.ndarray:
        extra = len(self.state.new_blobs)
        if not extra:
            return self.base.id_sort_order
        return self._cached(
            ("id_order", extra),
            lambda: np.concatenate(
                [self.base.id_sort_order, np.arange(self.base.count, self.base.count + extra, dtype=np.int64)]
            ),
        )

    @property
    def email_sort_key(self) -> np.ndarray:
        if not self.state.touched:
            return self.base.email_sort_key

        def compute() -> np.ndarray:
            keys = self.base.email_sort_key.astype(object)
            extra = [self.state.current_identifiers(r)["email"] or "" for r in range(self.base.count, self.state.count)]
            keys = np.concatenate([keys, np.array(extra, dtype=object)]) if extra else keys.copy()
            for row, changed in self.state.changes.items():
                if "email" in changed:
                    keys[row] = (changed["email"] or "").lower()
            return keys.astype(str)

        return self._cached(("email", self.state.version), compute)

    def profile_id(self, row: int) -> str:
        return self.state.profile_id(row)

    def ids_for(self, rows: np.ndarray) -> list[str]:
        return self.state.profile_ids(rows)

    def row_for_id(self, text: str) -> int | None:
        return self.state.row_for_id(text)

    def row_for_email(self, text: str) -> int | None:
        return self.state.row_for("email", text)

    def row_for_phone(self, text: str) -> int | None:
        return self.state.row_for("phone_number", text)

    def row_for_external_id(self, text: str) -> int | None:
        return self.state.row_for("external_id", text)

    def exchange_id(self, row: int) -> str:
        return self.base.exchange_id(row)

    def row_for_exchange_id(self, text: str) -> int | None:
        return self.base.row_for_exchange_id(text)

    def attributes(self, rows: np.ndarray, subscriptions: bool = False, predictive: bool = False) -> list[JSON]:
        if not self.state.touched:
            return self.base.attributes(rows, subscriptions, predictive)
        return self.state.profile_attributes(rows, subscriptions, predictive)
