"""Seeing exports from the emulator's side: every write request, its batch, its fault, its outcome.

``PostLedger(app)`` wraps an emulator app (with or without ``faults=``) as an ASGI app. For every
write (POST, DELETE) it records the operation, the batch's identity (the identifiers in its payload, in
order), the fault the plan decided (``None``, ``"429"``..., ``"reset"``, ``"slow"``, ``"truncate"``)
and the status the emulator's handler returned (``None`` when a fault stopped the request before
it was handled). From that:

* *accepted*: the handler ran and answered 2xx, so Klaviyo applied the write;
* *answer lost*: accepted, but ``slow``/``truncate`` kept the client from reading the answer;
* *confirmed*: accepted and the answer went back.

``normal_snapshot(app)`` is the emulator's ``snapshot()`` with profile ids of profiles created by
the writes replaced by their identifiers (their ids follow creation order, which concurrent
batches and retries may change; base profiles keep their fixed ids), so two runs compare equal
when they leave the same lists, members and consent.
"""

from __future__ import annotations

import contextvars
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import orjson

WRITE_OPS = (
    "bulk_import_profiles",
    "remove_profiles_from_list",
    "bulk_subscribe_profiles",
    "bulk_unsubscribe_profiles",
    "create_list",
)
LOST = ("slow", "truncate")
_current: contextvars.ContextVar = contextvars.ContextVar("ledger_entry", default=None)


@dataclass
class Entry:
    op: str
    key: tuple | None
    kind: str | None = None
    status: int | None = None

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def answer_lost(self) -> bool:
        return self.accepted and self.kind in LOST

    @property
    def confirmed(self) -> bool:
        return self.accepted and self.kind not in LOST


def batch_key(op: str, body: bytes) -> tuple | None:
    """The identifiers a write carries, in order (the batch's identity)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    data = doc.get("data")
    if op == "remove_profiles_from_list":
        return tuple(item.get("id") for item in data)
    if op == "create_list":
        return (data["attributes"]["name"],)
    profiles = data["attributes"]["profiles"]["data"]
    return tuple(
        (p.get("attributes") or {}).get("email") or (p.get("attributes") or {}).get("phone_number") or p.get("id")
        for p in profiles
    )


class PostLedger:
    """ASGI wrapper recording every write (see the module doc)."""

    def __init__(self, app) -> None:
        self.app = app
        self.entries: list[Entry] = []
        self.emulator = app.state.emulator
        plan = getattr(app.state, "faults", None)
        self.plan = plan
        if plan is not None:
            decide = plan.decide

            def recording_decide(operation_id, now):
                kind = decide(operation_id, now)
                entry = _current.get()
                if entry is not None:
                    entry.kind = kind
                return kind

            plan.decide = recording_decide
            inner = app.app  # FaultyApp -> the emulator's Starlette app
            app.app = self._handled(inner)
        else:
            self.app = self._handled(app)

    @property
    def state(self):
        return self.app.state

    def _handled(self, inner):
        async def handled(scope, receive, send):
            entry = _current.get()

            async def watch(message):
                if entry is not None and message["type"] == "http.response.start":
                    entry.status = message["status"]
                await send(message)

            await inner(scope, receive, watch)

        handled.state = inner.state
        return handled

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "DELETE"):
            return await self.app(scope, receive, send)
        op, _ = self.emulator.match(scope["path"], scope["method"])
        if not op or op.operation_id not in WRITE_OPS:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        entry = Entry(op.operation_id, batch_key(op.operation_id, body))
        self.entries.append(entry)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        token = _current.set(entry)
        try:
            await self.app(scope, replay, send)
        finally:
            _current.reset(token)

    # --- reading the ledger ----------------------------------------------------------------
    def by_batch(self, op: str) -> dict[tuple, list[Entry]]:
        out: dict[tuple, list[Entry]] = defaultdict(list)
        for e in self.entries:
            if e.op == op:
                out[e.key].append(e)
        return dict(out)

    def kinds(self, op: str | None = None) -> Counter:
        return Counter(e.kind for e in self.entries if e.kind and (op is None or e.op == op))


def check_accepted_once(ledger: PostLedger, op: str, expected_keys: list[tuple]) -> dict[str, int]:
    """Every batch accepted; each confirmed exactly once, by its last acceptance; every extra
    acceptance explained by an answer lost on the way back. Returns figures.

    A resend may carry only part of its batch (an unsubscribe from a list resends only the
    profiles the lost request had not reached): such a write counts toward the batch it is part of.
    """
    batches = ledger.by_batch(op)
    for key in [k for k in batches if k not in expected_keys and k is not None]:
        whole = next((e for e in expected_keys if set(key) < set(e)), None)
        if whole is not None and whole in batches:
            batches[whole] = batches[whole] + batches.pop(key)
    assert sorted(batches) == sorted(expected_keys), (
        f"{op}: the emulator saw {len(batches)} distinct batches, the input makes {len(expected_keys)}"
    )
    figures = Counter()
    for key, entries in batches.items():
        accepted = [e for e in entries if e.accepted]
        confirmed = [e for e in accepted if e.confirmed]
        where = f"{op} batch of {len(key)} starting {key[0]!r}: " + ", ".join(f"{e.kind or 'ok'}/{e.status}" for e in entries)
        assert len(confirmed) == 1, "accepted and confirmed more than once (resent after Klaviyo said yes): " + where
        assert accepted[-1] is confirmed[0], "sent again after a confirmed acceptance: " + where
        assert all(e.answer_lost for e in accepted[:-1]), where
        figures["posts"] += len(entries)
        figures["accepted again after a lost answer"] += len(accepted) - 1
        figures["lost answers"] += sum(e.answer_lost for e in entries)
    return dict(figures)


def check_applied_once(ledger: PostLedger, op: str, expected_keys: list[tuple]) -> dict[str, int]:
    """For consent writes, which are never resent blind: no profile is written twice, whether an
    answer arrived or was lost (a lost answer is settled by reading Klaviyo back, not by a resend);
    writes that were not applied (a fault before the emulator handled them) may be sent again."""
    batches = ledger.by_batch(op)
    for key in [k for k in batches if k not in expected_keys and k is not None]:
        whole = next((e for e in expected_keys if set(key) < set(e)), None)
        if whole is not None and whole in batches:
            batches[whole] = batches[whole] + batches.pop(key)
    assert sorted(batches) == sorted(expected_keys), (
        f"{op}: the emulator saw {len(batches)} distinct batches, the input makes {len(expected_keys)}"
    )
    figures = Counter()
    for key, entries in batches.items():
        applied: Counter = Counter()
        for e in entries:
            if e.accepted:
                applied.update(e.key)
        where = f"{op} batch of {len(key)} starting {key[0]!r}: " + ", ".join(f"{e.kind or 'ok'}/{e.status}" for e in entries)
        # a profile never written is one that reading back found already as asked (the final
        # state, compared with a fault-free run's by the caller, says whether that was right)
        assert set(applied) <= set(key) and max(applied.values(), default=1) == 1, "a profile written twice: " + where
        figures["posts"] += len(entries)
        figures["lost answers"] += sum(e.answer_lost for e in entries)
        figures["settled by reading back"] += sum(e.answer_lost and e.accepted for e in entries)
    return dict(figures)


def _identity(state, row: int) -> str:
    if row < state.base.count:
        return state.base.profile_id(row)
    ids = state.current_identifiers(row)
    return "new:" + (ids.get("email") or ids.get("phone_number") or ids.get("external_id") or "?")


def normal_snapshot(app) -> dict:
    emulator = app.state.emulator
    snap = emulator.snapshot()
    state = emulator.state

    def ident(profile_id: str) -> str:
        row = state.row_for_id(profile_id)
        assert row is not None, profile_id
        return _identity(state, row)

    lists = {lid: sorted(ident(p) for p in members) for lid, members in snap["list_members"].items()}
    subs = {ident(pid): value for pid, value in snap["subscriptions"].items()}
    new_rows = np.arange(state.base.count, state.count, dtype=np.int64)
    new_profiles = {}
    for row, attrs in zip(new_rows.tolist(), state.profile_attributes(new_rows, False, False)):
        new_profiles[_identity(state, row)] = {k: attrs.get(k) for k in ("email", "phone_number", "first_name", "last_name")}
    changed = {_identity(state, row): {k: v for k, v in attrs.items()} for row, attrs in sorted(state.changes.items())}
    return {
        "profiles": snap["profiles"],
        "new_profiles": new_profiles,
        "changed": changed,
        "new_lists": sorted(snap["new_lists"].values()),
        "list_members": lists,
        "subscriptions": subs,
    }


def consent_of(app, identities) -> dict:
    """The consent of each profile (``_identity`` names), touched by a write or not: two runs are
    compared on the same profiles even when one of them found nothing to change on some."""
    emulator = app.state.emulator
    emulator.advance()
    state = emulator.state
    rows = []
    for ident in identities:
        if ident.startswith("new:"):
            row = state.match({"email": ident[4:]}, None)
        else:
            row = state.row_for_id(ident)
        assert row is not None, ident
        rows.append(row)
    out = {}
    for ident, attrs in zip(identities, state.profile_attributes(np.array(rows, dtype=np.int64), True, False)):
        s = attrs["subscriptions"]
        out[ident] = {
            "email": s["email"]["marketing"]["consent"],
            "sms": s["sms"]["marketing"]["consent"],
            "suppressions": [x["reason"] for x in s["email"]["marketing"]["suppression"]],
            "list_suppressions": [x["list_id"] for x in s["email"]["marketing"]["list_suppressions"]],
        }
    return out
