"""Render rows and records as JSON:API resource objects, with links and sparse fieldsets.

Links are absolute, built from the request's base URL, shaped like Klaviyo's
(``{base}/api/profiles/{id}/``, relationship ``self``/``related``). To-one
relationships always carry ``data``; to-many ones carry it when included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .catalog import Record
from .data import Account
from .jsontypes import JSON
from .query import Query
from .timefmt import iso

PLURAL = {
    "profile": "profiles",
    "event": "events",
    "metric": "metrics",
    "list": "lists",
    "segment": "segments",
    "campaign": "campaigns",
    "campaign-message": "campaign-messages",
    "template": "templates",
    "flow": "flows",
    "flow-action": "flow-actions",
    "tag": "tags",
    "account": "accounts",
    "conversation": "conversations",
    "push-token": "push-tokens",
    "attribution": "attributions",
    "tag-group": "tag-groups",
    "flow-message": "flow-messages",
    "metric-property": "metric-properties",
}
PROFILE_RELATIONSHIPS = ("lists", "segments", "push-tokens")


def prune(attributes: JSON, wanted: tuple[str, ...]) -> JSON:
    """Keep only the (dotted) ``wanted`` attribute paths, Klaviyo's sparse fieldsets."""
    out: dict[str, Any] = {}
    for path in wanted:
        parts = path.split(".")
        src: Any = attributes
        dst = out
        for i, part in enumerate(parts):
            if not isinstance(src, dict) or part not in src:
                break
            if i == len(parts) - 1:
                dst[part] = src[part]
            else:
                src = src[part]
                if src is None:
                    dst[part] = None
                    break
                dst = dst.setdefault(part, {})
    return out


class Renderer:
    """Builds resource objects for one request (base URL + validated query)."""

    def __init__(self, account: Account, base: str, query: Query) -> None:
        self.account, self.base, self.query = account, base, query

    def self_link(self, type_: str, id_: str) -> str:
        return f"{self.base}/api/{PLURAL[type_]}/{id_}/"

    def relationship(self, type_: str, id_: str, name: str, data: Any = ..., with_data: bool = True) -> JSON:
        own = self.self_link(type_, id_)
        rel: dict[str, Any] = {}
        if data is not ... and with_data:
            rel["data"] = data
        rel["links"] = {"self": f"{own}relationships/{name}/", "related": f"{own}{name}/"}
        return rel

    def resource(self, type_: str, id_: str, attributes: JSON, relationships: JSON | None) -> JSON:
        wanted = self.query.fields.get(type_)
        out: dict[str, Any] = {"type": type_, "id": id_, "attributes": prune(attributes, wanted) if wanted else attributes}
        if relationships:
            out["relationships"] = relationships
        out["links"] = {"self": self.self_link(type_, id_)}
        return out

    # ----- profiles ---------------------------------------------------------------
    def profiles(
        self,
        rows: np.ndarray,
        joined: np.ndarray | None = None,
        relationships: tuple[str, ...] = PROFILE_RELATIONSHIPS,
        extras: bool = True,
        related_data: dict[str, list[JSON]] | None = None,
    ) -> list[JSON]:
        p = self.account.profiles
        subs = extras and self.query.wants("profile", "subscriptions")
        pred = extras and self.query.wants("profile", "predictive_analytics")
        attrs = p.attributes(rows, subs, pred)
        out = []
        for k, (row, pid) in enumerate(zip(rows.tolist(), p.ids_for(rows))):
            a = attrs[k]
            if joined is not None:
                a["joined_group_at"] = _iso(joined[k])
            rels = {}
            for name in relationships:
                data = (related_data or {}).get(name, ...)
                rels[name] = self.relationship("profile", pid, name, data)
            out.append(self.resource("profile", pid, a, rels))
        return out

    # ----- events -----------------------------------------------------------------
    def events(self, rows: np.ndarray) -> list[JSON]:
        e, p = self.account.events, self.account.profiles
        metrics = self.account.records["metric"]
        out = []
        profile_ids = p.ids_for(e.profile[rows].astype(np.int64))
        attributes = e.attributes_for(rows)
        for k, (row, eid) in enumerate(zip(rows.tolist(), e.event_ids(rows))):
            rels = {
                "attributions": self.relationship("event", eid, "attributions", [], "attributions" in self.query.include),
                "metric": self.relationship("event", eid, "metric", {"type": "metric", "id": metrics[int(e.metric[row])].id}),
                "profile": self.relationship("event", eid, "profile", {"type": "profile", "id": profile_ids[k]}),
            }
            out.append(self.resource("event", eid, attributes[k], rels))
        return out

    # ----- small records --------------------------------------------------------------
    def record(self, record: Record, included_names: tuple[str, ...] = (), extra_attributes: JSON | None = None) -> JSON:
        rels = {}
        for name, target in record.related.items():
            if isinstance(target, tuple):
                rels[name] = self.relationship(record.type, record.id, name, {"type": target[0], "id": target[1]})
            else:
                data = [{"type": t, "id": i} for t, i in target]
                rels[name] = self.relationship(record.type, record.id, name, data, name in included_names)
        if record.type in ("list", "segment"):
            rels = {"profiles": self.relationship(record.type, record.id, "profiles"), **rels}
        attributes = {**record.attributes, **(extra_attributes or {})}
        return self.resource(record.type, record.id, attributes, rels or None)

    def included_records(self, records: list[Record], names: tuple[str, ...]) -> list[JSON]:
        """Distinct related records of ``records`` through relationships ``names``, first-seen order."""
        seen: dict[tuple[str, str], JSON] = {}
        for record in records:
            for name in names:
                target = record.related.get(name, [])
                for type_, id_ in [target] if isinstance(target, tuple) else target:
                    related = self.account.record(type_, id_)
                    if related is not None and (type_, id_) not in seen:
                        seen[(type_, id_)] = self.record(related)
        return list(seen.values())


def _iso(seconds: int | np.integer[Any]) -> str | None:
    return iso(int(seconds))
