"""``operation: batch_consent``: subscribe, unsubscribe, and unsubscribe from a list.

Klaviyo's subscription endpoints answer 202 and return no job: a sent row is ``submitted``.
They are consent writes, so an unclear answer (timeout, lost or cut-off answer, 5xx) is never
followed by a blind resend: the runner waits ``consent_settle_seconds``, reads the profiles
back (``confirm``), counts those that show the change as ``accepted`` and sends the rest again
only as the operation allows.

An unsubscribe with a list is special. Klaviyo's spec: "Profiles not in the specified list will
be globally unsubscribed. Always verify profile list membership before calling this endpoint."
So before each batch (and before any resend) the batch's profiles are looked up in the list, and
only members are sent; the others are ``skipped`` with the reason, unless the user set
``unsubscribe_non_members_globally: true``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ...api.query import Query, any_of
from ...errors import ExportError
from .. import validate as v
from ..batching import Endpoint
from ..payloads import Payloads
from ..settings import CHANNELS
from .base import (
    BatchContext,
    Operation,
    Outcomes,
    Prepared,
    dumps,
    finish,
    identity_of,
    take_py,
    utc_time,
    valid_only_duplicates,
)

NO_JOB_REASON = "Klaviyo's subscription endpoints return no job to poll; submitted (202) without confirmation"
#: Values one ``any(field, [...])`` filter carries at most.
FILTER_VALUES = 100


def _parse_consent_time(value: Any, now: datetime) -> tuple[str | None, str | None]:
    stamp, reason = utc_time(value, "consent_at")
    if stamp is None:
        return None, reason
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
    reasons = v._reason_where(
        pc.invert(valid), "consent_at is empty (historical consent needs it)", reasons if n else pa.nulls(0, pa.string())
    )
    return v.Checked(values, reasons)


#: How a consent payload names its profile: (field, value), e.g. ("email", "a@example.com").
ProfileKey = tuple[str, str | None]


def profile_key(item: bytes) -> ProfileKey:
    """How a consent payload names its profile: ("email", x), else ("phone_number", y)."""
    attrs = orjson.loads(item).get("attributes") or {}
    return ("email", attrs["email"]) if attrs.get("email") else ("phone_number", attrs.get("phone_number"))


class _Consent(Operation):
    consent = True
    consent_word: str

    @property
    def channels(self) -> tuple[tuple[str, str], ...]:
        kind = self.settings.subscription_type
        if kind is None:  # the settings refuse batch_consent without one
            raise ExportError("operation batch_consent needs subscription_type", column="subscription_type")
        return CHANNELS[kind]

    def required_columns(self) -> tuple[tuple[str, ...], bool]:
        st = self.settings.subscription_type
        if st == "email_marketing_only":
            return ("email",), False
        if st in ("sms_marketing_only", "sms_marketing_transactional"):
            return ("phone_number",), False
        return ("email", "phone_number"), True

    def check_columns(self, schema: pa.Schema) -> None:
        super().check_columns(schema)
        if self.settings.historical_consent and "consent_at" not in schema.names:
            near = [n for n in schema.names if n.lower() == "consent_at"]
            hint = f" (found {near[0]!r}: column names are case-sensitive)" if near else ""
            raise ExportError(
                f"operation 'batch_consent' with historical_consent needs a column consent_at{hint}; "
                f"the query returned: {', '.join(schema.names)}",
                column="consent_at",
            )

    def prepare(self, table: pa.Table, seen: v.SeenValues, now: datetime | None = None) -> Prepared:
        settings = self.settings
        now = now or datetime.now(timezone.utc)
        names = table.schema.names
        n = table.num_rows
        wants_email = any(ch == "email" for ch, _ in self.channels)
        wants_sms = any(ch == "sms" for ch, _ in self.channels)
        own: list[pa.Array] = []
        email = phone = None
        if wants_email and "email" in names:
            chk = v.check_emails(table.column("email"), required=not wants_sms)
            email = chk.values
            own.append(chk.reasons)
        if wants_sms and "phone_number" in names:
            chk = v.check_phones(
                table.column("phone_number"), required=not wants_email, default_region=settings.default_phone_region
            )
            phone = chk.values
            own.append(chk.reasons)
        if email is not None and phone is not None:
            both_empty = pc.and_(pc.is_null(email), pc.is_null(phone))
            own.append(v._reason_where(both_empty, "email and phone_number are both empty", pa.nulls(n, pa.string())))
        consent_at = None
        if settings.historical_consent:
            chk = check_consent_times(table.column("consent_at"), now)
            consent_at = chk.values
            own.append(chk.reasons)
        reasons = v.combine(*own) if own else pa.nulls(n, pa.string())
        for name, values in (("email", email), ("phone_number", phone)):
            if values is not None:
                reasons = valid_only_duplicates(seen, values, name, reasons)
        consent = self.consent_word
        channels = self.channels

        def build(index: np.ndarray) -> tuple[Payloads, list[tuple[int, int]]]:
            emails = take_py(email, index) if email is not None else [None] * len(index)
            phones = take_py(phone, index) if phone is not None else [None] * len(index)
            times = take_py(consent_at, index) if consent_at is not None else [None] * len(index)
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
                items.append(dumps({"type": "profile", "attributes": attrs}))
            return Payloads.of(items), []

        idents = tuple(c for c, wanted in (("email", wants_email), ("phone_number", wants_sms)) if wanted)
        return finish(reasons, build, self.warnings(), identity_of(table, idents))

    def warnings(self) -> list[str]:
        out = []
        if any(ch == "sms" for ch, _ in self.channels):
            out.append("SMS consent is only processed for countries with a provisioned sending number")
        return out

    def envelope(self, items: orjson.Fragment, list_id: str | None) -> Any:
        subscribe = self.consent_word == "SUBSCRIBED"
        attrs: dict[str, Any] = {"profiles": {"data": items}}
        if subscribe and self.settings.historical_consent:
            attrs["historical_import"] = True
        data = {
            "type": "profile-subscription-bulk-create-job" if subscribe else "profile-subscription-bulk-delete-job",
            "attributes": attrs,
        }
        if list_id:
            data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
        return {"data": data}

    # --- reading Klaviyo back --------------------------------------------------------------
    async def profiles(
        self, ctx: BatchContext, keys: list[ProfileKey], *, in_list: bool = False, subscriptions: bool = False
    ) -> dict[ProfileKey, dict[str, Any]]:
        """The profiles named by ``keys`` (in the list only, with ``in_list``), by (field, value)."""
        wanted: dict[str, list[str]] = {}
        for field, value in keys:
            if value:
                wanted.setdefault(field, []).append(value)
        found: dict[ProfileKey, dict[str, Any]] = {}
        for field, values in wanted.items():
            values = sorted(set(values))
            for start in range(0, len(values), FILTER_VALUES):
                part = values[start : start + FILTER_VALUES]
                fields = [field] if not subscriptions else [field, "subscriptions"]
                extra: dict[str, list[str]] = {"profile": ["subscriptions"]} if subscriptions else {}
                query = Query(filters=(any_of(field, part),), page_size=100, fields={"profile": fields}, additional_fields=extra)
                if in_list:
                    records = ctx.client.records("get_profiles_for_list", path_params={"id": ctx.the_list()}, query=query)
                else:
                    records = ctx.client.records("get_profiles", query=query)
                async for profile in records:
                    attrs = profile.get("attributes") or {}
                    if attrs.get(field) is not None:
                        found[(field, attrs[field])] = attrs
        return found

    def shows(self, attrs: dict[str, Any] | None, want: str) -> bool:
        """Whether a profile's subscriptions show ``want`` on every channel this export changes."""
        if not attrs:
            return False
        subs = attrs.get("subscriptions") or {}
        for ch, kind in self.channels:
            consent = (((subs.get(ch) or {}).get(kind)) or {}).get("consent")
            if ch == "email" and attrs.get("email") is None:
                continue
            if ch == "sms" and attrs.get("phone_number") is None:
                continue
            if consent != want:
                return False
        return True

    async def confirm(self, ctx: BatchContext, items: Payloads) -> np.ndarray:
        keys = [profile_key(it) for it in items]
        found = await self.profiles(ctx, keys, subscriptions=True)
        return np.array([self.shows(found.get(k), self.consent_word) for k in keys], dtype=bool)


class Subscribe(_Consent):
    name = "batch_consent (subscribed)"
    endpoint = Endpoint("bulk_subscribe_profiles", 1_000)
    creates_list = True
    consent_word = "SUBSCRIBED"
    sent_reason = NO_JOB_REASON

    async def confirm(self, ctx: BatchContext, items: Payloads) -> np.ndarray:
        """Applied = subscribed on every channel asked and, with a list, a member of it."""
        applied = await super().confirm(ctx, items)
        if ctx.list_id and applied.any():
            keys = [profile_key(it) for it in items]
            members = await self.profiles(ctx, keys, in_list=True)
            applied &= np.array([k in members for k in keys], dtype=bool)
        return applied


class Unsubscribe(_Consent):
    """A global unsubscribe (no list): what the user asked for, on every profile given."""

    name = "batch_consent (unsubscribed)"
    endpoint = Endpoint("bulk_unsubscribe_profiles", 100)
    consent_word = "UNSUBSCRIBED"
    sent_reason = NO_JOB_REASON

    def shows(self, attrs: dict[str, Any] | None, want: str) -> bool:
        """Unsubscribed, and for email also suppressed as unsubscribed (what Klaviyo's unsubscribe does)."""
        if not super().shows(attrs, want):
            return False
        if any(ch == "email" for ch, _ in self.channels) and attrs and attrs.get("email") is not None:
            supp = (((attrs.get("subscriptions") or {}).get("email") or {}).get("marketing") or {}).get("suppression") or []
            return any(s.get("reason") == "UNSUBSCRIBE" for s in supp)
        return True


class UnsubscribeFromList(Unsubscribe):
    """Unsubscribe members of a list from it; non-members are never sent (Klaviyo would unsubscribe
    them from all marketing) unless ``unsubscribe_non_members_globally`` is true."""

    name = "batch_consent (unsubscribed, with a list)"
    needs_list = True
    check_items = 1_000

    def warnings(self) -> list[str]:
        out = super().warnings()
        if self.settings.unsubscribe_non_members_globally:
            out.append(
                "unsubscribe_non_members_globally is true: profiles NOT in the list will be unsubscribed "
                "from ALL email/SMS marketing by Klaviyo, not only from this list"
            )
        else:
            out.append(
                "unsubscribing with a list: only the list's current members are sent; the others are "
                "skipped (Klaviyo would unsubscribe them from all marketing)"
            )
        return out

    async def presend(self, ctx: BatchContext, items: Payloads) -> Outcomes | None:
        if self.settings.unsubscribe_non_members_globally:
            return None
        keys = [profile_key(it) for it in items]
        members = await self.profiles(ctx, keys, in_list=True)
        outcome: list[str] = []
        reason: list[str | None] = []
        skipped = 0
        for k in keys:
            if k in members:
                outcome.append("send")
                reason.append(None)
            else:
                skipped += 1
                outcome.append("skipped")
                reason.append(
                    f"not a member of list {ctx.list_id}: Klaviyo would unsubscribe it from all marketing "
                    "(set unsubscribe_non_members_globally: true to send it anyway)"
                )
        return Outcomes(outcome, reason) if skipped else None

    def may_resend_unapplied(self) -> bool:
        """Never: a first request still queued at Klaviyo would take the member out of the list, and a
        resend would then find a non-member and unsubscribe it globally. Rows that reading back does
        not show done end ``unconfirmed``; the next run (members only) finishes them."""
        return False

    async def confirm(self, ctx: BatchContext, items: Payloads) -> np.ndarray:
        """Applied = no longer in the list and, for email, list-suppressed for it (what Klaviyo does
        to a member it unsubscribes from a list)."""
        keys = [profile_key(it) for it in items]
        members = await self.profiles(ctx, keys, in_list=True)
        found = await self.profiles(ctx, keys, subscriptions=True)
        out = np.zeros(len(keys), dtype=bool)
        wants_email = any(ch == "email" for ch, _ in self.channels)
        for i, k in enumerate(keys):
            if k in members:
                continue
            attrs = found.get(k)
            if attrs is None:
                continue
            if wants_email and k[0] == "email":
                supp = (((attrs.get("subscriptions") or {}).get("email") or {}).get("marketing") or {}).get(
                    "list_suppressions"
                ) or []
                out[i] = any(s.get("list_id") == ctx.list_id for s in supp)
            else:
                out[i] = True
        return out
