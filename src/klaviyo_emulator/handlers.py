"""One function per emulated operation: select rows, render the JSON:API document.

Default orders (documented choice): profiles by id, list/segment members by
profile id, events by datetime (ties by event row), small collections in their
creation order. Cursors are keysets (``keyset.py``): exact positions in the cached
selection while the data is unchanged, the item after the last one served otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

import numpy as np
import orjson

from .catalog import Record
from .collections import Orders, event_mask, profile_mask, record_mask
from .data import Account
from .filters import Condition
from .jobs import JobBook
from .jsontypes import JSON
from .keyset import Keyset, by_row, cursor_after, locate
from .members import Membership
from .pages import RawArray, events_pieces, profiles_pieces
from .query import Query, encode_cursor
from .resources import Renderer
from .selection import SelectionCache, select
from .state import AccountState, LiveProfiles


class NotFound(Exception):
    """The path names a resource the account does not have."""


class Context(Protocol):
    """What writes and job reads use of the emulator serving them (``app.Emulator``)."""

    @property
    def state(self) -> AccountState: ...
    @property
    def jobs(self) -> JobBook: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    def now(self) -> int: ...
    def real_now(self) -> float: ...
    def consent_change(self, apply: Callable[[], None]) -> None: ...


#: a handler's answer: a JSON:API document (a dict, or ``pages.RawArray`` pieces inside one)
Document = JSON
#: a read: the request in, its document out
Handler = Callable[["Request"], Document]
#: extra attributes of one record (``additional-fields``)
Extra = Callable[["Request", Record], JSON]


@dataclass
class Request:
    """What a handler needs: the account, validated query, path id and URL pieces."""

    account: Account
    orders: Orders
    cache: SelectionCache
    query: Query
    base: str
    path: str
    params: list[tuple[str, str]]
    id: str | None = None
    #: the JSON body of a write (validated against the spec's request schema)
    body: Any = None
    #: the Emulator (clock, jobs, state) for writes and job reads
    ctx: Context | None = None
    #: (URL without query, query without the cursor), made on first use by ``_url``
    plain_url: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def renderer(self) -> Renderer:
        return Renderer(self.account, self.base, self.query)

    @property
    def item_id(self) -> str:
        """The id in the path, for the operations on one item (their routes always have one)."""
        if self.id is None:
            raise NotFound("no id in the path")
        return self.id

    @property
    def emulator(self) -> Context:
        """``ctx``, for the handlers only an emulator serves (writes, job reads)."""
        if self.ctx is None:
            raise RuntimeError("this handler needs the emulator (Request.ctx)")
        return self.ctx


def _url(req: Request, cursor: str | None) -> str:
    """The request's URL without its cursor, then with ``cursor`` (last, as before)."""
    plain = req.plain_url
    if plain is None:
        params = [(k, v) for k, v in req.params if k != "page[cursor]"]
        plain = req.plain_url = (f"{req.base}{req.path}", urlencode(params))
    where, query = plain
    if cursor is not None:
        query = f"{query}&{urlencode([('page[cursor]', cursor)])}" if query else urlencode([("page[cursor]", cursor)])
    return f"{where}?{query}" if query else where


def _version(req: Request) -> int:
    return req.ctx.state.version if req.ctx is not None else 0


def _page(
    req: Request, key: str, compute: Callable[[], np.ndarray], keyset: Keyset | None = None
) -> tuple[np.ndarray, dict[str, str]]:
    """The current page of a cached selection, and the collection links."""
    q = req.query
    keyset = keyset or by_row()
    rows = req.cache.get(f"{q.fingerprint}|{key}", compute)
    version = _version(req)
    start = locate(rows, q.cursor, version, keyset)
    page = rows[start : start + q.page_size]

    def link(position: int | None) -> str:
        if position is None:
            return _url(req, None)
        return _url(req, encode_cursor(cursor_after(rows, position, version, keyset), q.fingerprint))

    links = {"self": link(start if q.cursor is not None and start else None)}
    if start + q.page_size < len(rows):
        links["next"] = link(start + q.page_size)
    if start > 0:
        links["prev"] = link(max(0, start - q.page_size))
    return page, links


def _document(data: object, links: dict[str, str], included: list[JSON] | RawArray | None, include_requested: bool) -> Document:
    doc: Document = {"data": data, "links": links}
    if include_requested:
        doc["included"] = included or []
    return doc


# ----- profiles --------------------------------------------------------------------------
def get_profiles(req: Request) -> Document:
    acc, q = req.account, req.query
    gone = _deleted(req)
    page, links = _page(
        req,
        "profiles",
        lambda: select(
            acc.profiles.count,
            req.orders.profiles(q.sort),
            [profile_mask(acc, c, None) for c in q.conditions] + ([~gone] if gone is not None else []),
        ),
        req.orders.profile_keyset(q.sort),
    )
    empty: dict[str, list[JSON]] = {name: [] for name in q.include}
    data = profiles_pieces(
        req.renderer, page, relationships=("conversations", "lists", "push-tokens", "segments"), related_data=empty
    )
    return _document(RawArray(data), links, [], bool(q.include))


def _deleted(req: Request) -> np.ndarray | None:
    """Deleted profile rows (data-privacy deletions), None when there are none."""
    profiles = req.account.profiles
    return profiles.state.deleted_rows(profiles.count) if isinstance(profiles, LiveProfiles) else None


def _group_profiles(req: Request, groups: dict[str, Membership], kind: str, ids_only: bool = False) -> Document:
    group_id = req.item_id
    members = groups.get(group_id)
    if members is None:
        raise NotFound(f"{kind} {group_id!r}")
    acc, q = req.account, req.query
    page, links = _page(
        req,
        f"{kind}:{group_id}",
        lambda: select(
            len(members),
            req.orders.members(group_id, members, q.sort),
            [profile_mask(acc, c, members.profiles, members.joined) for c in q.conditions],
        ),
        req.orders.member_keyset(members, q.sort),
    )
    if ids_only:
        return {"data": [{"type": "profile", "id": i} for i in acc.profiles.ids_for(members.profiles[page])], "links": links}
    data = profiles_pieces(req.renderer, members.profiles[page], joined=members.joined[page])
    return {"data": RawArray(data), "links": links}


def get_profiles_for_list(req: Request) -> Document:
    return _group_profiles(req, req.account.list_members, "list")


def get_profiles_for_segment(req: Request) -> Document:
    return _group_profiles(req, req.account.segment_members, "segment")


def _profile_row(req: Request, pid: str) -> int:
    row = req.account.profiles.row_for_id(pid)
    if row is None:
        raise NotFound(f"profile {pid!r}")
    return row


def get_profile(req: Request) -> Document:
    acc, q = req.account, req.query
    row = _profile_row(req, req.item_id)
    related: dict[str, list[JSON]] = {}
    included: list[JSON] = []
    r = req.renderer
    for name, type_, groups in (("lists", "list", acc.list_members), ("segments", "segment", acc.segment_members)):
        if name in q.include:
            records = [rec for gid, m in groups.items() if m.contains(row) and (rec := acc.record(type_, gid)) is not None]
            related[name] = [{"type": type_, "id": rec.id} for rec in records]
            included += [r.record(rec) for rec in records]
    for name in ("push-tokens", "conversations"):
        if name in q.include:
            related[name] = []
    data = r.profiles(np.array([row]), relationships=("conversations", "lists", "push-tokens", "segments"), related_data=related)[
        0
    ]
    return _document(data, {"self": _url(req, None)}, included, bool(q.include))


# ----- events ------------------------------------------------------------------------------
def _now(req: Request) -> int:
    return req.ctx.now() if req.ctx is not None else req.account.settings.now


def get_events(req: Request) -> Document:
    acc, q = req.account, req.query
    now = _now(req)
    visible = acc.events.visible_mask(now)  # late events show once they have arrived
    gone = _deleted(req)  # a deleted profile's events are deleted with it
    if gone is not None:
        kept = ~gone[acc.events.profile]
        visible = kept if visible is None else visible & kept

    def masks() -> list[np.ndarray]:
        return [event_mask(acc, c) for c in q.conditions] + ([visible] if visible is not None else [])

    page, links = _page(
        req,
        f"events|arrived:{acc.events.arrived(now)}",
        lambda: select(acc.events.count, req.orders.events(q.sort), masks()),
        by_row(bool(q.sort and q.sort.startswith("-"))),
    )
    r = req.renderer
    return _document(RawArray(events_pieces(r, page)), links, _event_includes(req, r, page), bool(q.include))


def _event_includes(req: Request, r: Renderer, rows: np.ndarray) -> RawArray:
    """Distinct metrics, then distinct profiles, of ``rows`` in first-seen order (as JSON)."""
    acc, q = req.account, req.query
    metrics_json: list[bytes] = []
    profiles_json: list[bytes] = []
    if "metric" in q.include:
        metrics = acc.records["metric"]
        kept, shape = req.cache.rendered, (req.base, q.fields.get("metric"))
        if len(kept) > 4096:
            kept.clear()

        def metric_json(m: int) -> bytes:
            found = kept.get((*shape, m))
            if found is None:
                found = kept[(*shape, m)] = orjson.dumps(r.record(metrics[m]))
            return found

        metrics_json = [b",".join(map(metric_json, dict.fromkeys(acc.events.metric[rows].tolist())))]
    if "profile" in q.include:
        profiles = acc.events.profile[rows]
        _, first = np.unique(profiles, return_index=True)
        profiles_json = profiles_pieces(r, profiles[np.sort(first)].astype(np.int64), extras=False)
    return RawArray(metrics_json if metrics_json != [b""] else [], profiles_json)


def _event_row(req: Request) -> int:
    row = req.account.events.row_for_id(req.item_id)
    gone = _deleted(req)
    if (
        row is None
        or not req.account.events.visible(row, _now(req))
        or (gone is not None and gone[req.account.events.profile[row]])
    ):
        raise NotFound(f"event {req.id!r}")
    return row


def get_event(req: Request) -> Document:
    rows = np.array([_event_row(req)])
    r = req.renderer
    return _document(r.events(rows)[0], {"self": _url(req, None)}, _event_includes(req, r, rows), bool(req.query.include))


def get_metric_for_event(req: Request) -> Document:
    metric = req.account.records["metric"][int(req.account.events.metric[_event_row(req)])]
    return {"data": req.renderer.record(metric), "links": {"self": _url(req, None)}}


def get_profile_for_event(req: Request) -> Document:
    row = int(req.account.events.profile[_event_row(req)])
    return {"data": req.renderer.profiles(np.array([row]))[0], "links": {"self": _url(req, None)}}


# ----- small collections ----------------------------------------------------------------------
#: Conditions a collection applies unless the request filters that field itself: Klaviyo's
#: get_flows leaves archived flows out unless asked for them (``filter=equals(archived,true)``).
DEFAULT_CONDITIONS = {"flow": Condition("equals", "archived", False)}


def _conditions(type_: str, conditions: list[Condition]) -> list[Condition]:
    default = DEFAULT_CONDITIONS.get(type_)
    if default is None or any(c.field == default.field for c in conditions):
        return conditions
    return [*conditions, default]


def _record_collection(type_: str) -> Handler:
    def handler(req: Request) -> Document:
        records = req.account.records[type_]
        q = req.query
        conditions = _conditions(type_, q.conditions)
        page, links = _page(
            req,
            type_,
            lambda: select(len(records), Orders.records(records, q.sort), [record_mask(records, c) for c in conditions]),
            Orders.record_keyset(records, q.sort),
        )
        chosen = [records[i] for i in page.tolist()]
        data = [req.renderer.record(rec, q.include) for rec in chosen]
        return _document(data, links, req.renderer.included_records(chosen, q.include), bool(q.include))

    handler.__name__ = f"get_{type_}s"
    return handler


def _record_single(type_: str, extra: Extra | None = None) -> Handler:
    def handler(req: Request) -> Document:
        rec = req.account.record(type_, req.item_id)
        if rec is None:
            raise NotFound(f"{type_} {req.id!r}")
        extras = extra(req, rec) if extra else None
        data = req.renderer.record(rec, req.query.include, extras)
        return _document(
            data, {"self": _url(req, None)}, req.renderer.included_records([rec], req.query.include), bool(req.query.include)
        )

    handler.__name__ = f"get_{type_}"
    return handler


def _profile_count(groups_attr: str, type_: str) -> Extra:
    def extra(req: Request, rec: Record) -> JSON:
        if req.query.wants(type_, "profile_count"):
            return {"profile_count": len(getattr(req.account, groups_attr)[rec.id])}
        return {}

    return extra


def _definition(type_: str) -> Extra:
    def extra(req: Request, rec: Record) -> JSON:
        if req.query.wants(type_, "definition"):
            # Code-editor templates have no drag-and-drop definition; flows carry their triggers.
            return {"definition": rec.values.get("definition")}
        return {}

    return extra


HANDLERS: dict[str, Handler] = {
    "get_accounts": _record_collection("account"),
    "get_account": _record_single("account"),
    "get_lists": _record_collection("list"),
    "get_list": _record_single("list", _profile_count("list_members", "list")),
    "get_profiles_for_list": get_profiles_for_list,
    "get_profiles": get_profiles,
    "get_profile": get_profile,
    "get_segments": _record_collection("segment"),
    "get_segment": _record_single("segment", _profile_count("segment_members", "segment")),
    "get_profiles_for_segment": get_profiles_for_segment,
    "get_metrics": _record_collection("metric"),
    "get_metric": _record_single("metric"),
    "get_events": get_events,
    "get_event": get_event,
    "get_metric_for_event": get_metric_for_event,
    "get_profile_for_event": get_profile_for_event,
    "get_campaigns": _record_collection("campaign"),
    "get_campaign": _record_single("campaign"),
    "get_templates": _record_collection("template"),
    "get_template": _record_single("template", _definition("template")),
    "get_flows": _record_collection("flow"),
    "get_flow": _record_single("flow", _definition("flow")),
}
