"""Reads that follow relationships, so every ``self`` and ``related`` link the emulator returns
can be followed: ``/api/{type}/{id}/{name}`` (the related resources) and
``/api/{type}/{id}/relationships/{name}`` (their identifiers), plus the small collections they
lead to (tags, tag groups, campaign messages, flow actions) and campaign recipient estimates.

Relationships the synthetic account has no data for (push tokens, conversations, metric
properties, flow messages, attributions) answer empty, as Klaviyo does for an account without them.
"""

from __future__ import annotations

import numpy as np

from .catalog import Record
from .collections import record_mask
from .handlers import Document, Handler, NotFound, Request, _document, _event_row, _group_profiles, _page, _profile_row, _url
from .jsontypes import JSON
from .keyset import by_row
from .resources import PLURAL
from .selection import select


def _owner(req: Request, type_: str) -> Record:
    rec = req.account.record(type_, req.item_id)
    if rec is None:
        raise NotFound(f"{type_} {req.id!r}")
    return rec


def _records(req: Request, targets: list[tuple[str, str]]) -> list[Record]:
    return [r for r in (req.account.record(t, i) for t, i in targets) if r is not None]


def _paged(req: Request, key: str, records: list[Record]) -> tuple[list[Record], dict[str, str]]:
    q = req.query
    page, links = _page(
        req,
        f"{key}:{len(records)}",
        lambda: select(len(records), None, [record_mask(records, c) for c in q.conditions]),
        by_row(),
    )
    return [records[i] for i in page.tolist()], links


def _identifier(rec: Record) -> JSON:
    return {"type": rec.type, "id": rec.id}


def _targets_of(req: Request, owner_type: str, name: str) -> list[tuple[str, str]]:
    if owner_type == "profile":
        return _profile_targets(req, name)
    rec = _owner(req, owner_type)
    return rec.to_many_or_none(name)


def _profile_targets(req: Request, name: str) -> list[tuple[str, str]]:
    row = _profile_row(req, req.item_id)
    if name in ("lists", "segments"):
        type_ = name[:-1]
        groups = req.account.list_members if name == "lists" else req.account.segment_members
        return [(type_, gid) for gid, m in groups.items() if m.contains(row)]
    return []  # push-tokens, conversations: the synthetic profiles have none


def related_records(owner_type: str, name: str) -> Handler:
    """``/api/{owner}/{id}/{name}``: the related resources, paged and filtered as the spec allows."""

    def handler(req: Request) -> Document:
        targets = _targets_of(req, owner_type, name)
        chosen, links = _paged(req, f"rel:{owner_type}:{req.id}:{name}", _records(req, targets))
        include = req.query.include
        data = [req.renderer.record(rec, include) for rec in chosen]
        return _document(data, links, req.renderer.included_records(chosen, include), bool(include))

    handler.__name__ = f"get_{name}_for_{owner_type}"
    return handler


def related_ids(owner_type: str, name: str) -> Handler:
    """``/api/{owner}/{id}/relationships/{name}``: identifiers of the related resources."""

    def handler(req: Request) -> Document:
        targets = _targets_of(req, owner_type, name)
        chosen, links = _paged(req, f"ids:{owner_type}:{req.id}:{name}", _records(req, targets))
        return {"data": [_identifier(r) for r in chosen], "links": links}

    handler.__name__ = f"get_{name}_ids_for_{owner_type}"
    return handler


def empty_collection(owner_type: str) -> Handler:
    def handler(req: Request) -> Document:
        if owner_type == "profile":
            _profile_row(req, req.item_id)
        else:
            _owner(req, owner_type)
        return {"data": [], "links": {"self": _url(req, None)}}

    return handler


def related_record(owner_type: str, name: str) -> Handler:
    """To-one: ``/api/{owner}/{id}/{name}``."""

    def handler(req: Request) -> Document:
        target = _owner(req, owner_type).related.get(name)
        rec = req.account.record(*target) if isinstance(target, tuple) else None
        if rec is None:
            raise NotFound(f"{name} of {owner_type} {req.id!r}")
        return {"data": req.renderer.record(rec), "links": {"self": _url(req, None)}}

    return handler


def related_id(owner_type: str, name: str) -> Handler:
    """To-one: ``/api/{owner}/{id}/relationships/{name}``."""

    def handler(req: Request) -> Document:
        target = _owner(req, owner_type).related.get(name)
        data = {"type": target[0], "id": target[1]} if isinstance(target, tuple) else None
        return {"data": data, "links": {"self": _url(req, None), "related": _url(req, None).replace("/relationships/", "/")}}

    return handler


def record_collection(type_: str) -> Handler:
    """A small collection with no synthetic generator of its own (tags, tag groups)."""

    def handler(req: Request) -> Document:
        records = req.account.records.get(type_, [])
        chosen, links = _paged(req, f"all:{type_}", records)
        include = req.query.include
        data = [req.renderer.record(rec, include) for rec in chosen]
        return _document(data, links, req.renderer.included_records(chosen, include), bool(include))

    return handler


def record_single(type_: str) -> Handler:
    def handler(req: Request) -> Document:
        rec = _owner(req, type_)
        include = req.query.include
        return _document(
            req.renderer.record(rec, include),
            {"self": _url(req, None)},
            req.renderer.included_records([rec], include),
            bool(include),
        )

    return handler


# ----- members, events ------------------------------------------------------------------------
def get_profile_ids_for_list(req: Request) -> Document:
    return _group_profiles(req, req.account.list_members, "list", ids_only=True)


def get_profile_ids_for_segment(req: Request) -> Document:
    return _group_profiles(req, req.account.segment_members, "segment", ids_only=True)


def _event_link(req: Request) -> dict[str, str]:
    return {"self": _url(req, None), "related": _url(req, None).replace("/relationships/", "/")}


def get_metric_id_for_event(req: Request) -> Document:
    metric = req.account.records["metric"][int(req.account.events.metric[_event_row(req)])]
    return {"data": {"type": "metric", "id": metric.id}, "links": _event_link(req)}


def get_profile_id_for_event(req: Request) -> Document:
    row = int(req.account.events.profile[_event_row(req)])
    return {"data": {"type": "profile", "id": req.account.profiles.profile_id(row)}, "links": _event_link(req)}


# ----- campaigns --------------------------------------------------------------------------------
def get_campaign_recipient_estimation(req: Request) -> Document:
    """Estimated recipients of a campaign: the distinct members of its included lists and segments."""
    campaign = _owner(req, "campaign")
    acc = req.account
    rows = [
        m.profiles
        for gid in campaign.attributes["audiences"]["included"]
        for m in (acc.list_members.get(gid) or acc.segment_members.get(gid),)
        if m is not None
    ]
    count = int(len(np.unique(np.concatenate(rows)))) if rows else 0
    own = f"{req.base}/api/campaign-recipient-estimations/{campaign.id}/"
    return {
        "data": {
            "type": "campaign-recipient-estimation",
            "id": campaign.id,
            "attributes": {"estimated_recipient_count": count},
            "links": {"self": own},
        },
        "links": {"self": _url(req, None)},
    }


READS: dict[str, Handler] = {
    # profiles
    "get_lists_for_profile": related_records("profile", "lists"),
    "get_list_ids_for_profile": related_ids("profile", "lists"),
    "get_segments_for_profile": related_records("profile", "segments"),
    "get_segment_ids_for_profile": related_ids("profile", "segments"),
    "get_push_tokens_for_profile": empty_collection("profile"),
    "get_push_token_ids_for_profile": empty_collection("profile"),
    "get_conversations_for_profile": empty_collection("profile"),
    "get_conversation_ids_for_profile": empty_collection("profile"),
    # events
    "get_metric_id_for_event": get_metric_id_for_event,
    "get_profile_id_for_event": get_profile_id_for_event,
    # lists and segments
    "get_profile_ids_for_list": get_profile_ids_for_list,
    "get_profile_ids_for_segment": get_profile_ids_for_segment,
    "get_tags_for_list": related_records("list", "tags"),
    "get_tag_ids_for_list": related_ids("list", "tags"),
    "get_tags_for_segment": related_records("segment", "tags"),
    "get_tag_ids_for_segment": related_ids("segment", "tags"),
    "get_flows_triggered_by_list": related_records("list", "flow-triggers"),
    "get_ids_for_flows_triggered_by_list": related_ids("list", "flow-triggers"),
    "get_flows_triggered_by_segment": related_records("segment", "flow-triggers"),
    "get_ids_for_flows_triggered_by_segment": related_ids("segment", "flow-triggers"),
    # metrics
    "get_flows_triggered_by_metric": related_records("metric", "flow-triggers"),
    "get_ids_for_flows_triggered_by_metric": related_ids("metric", "flow-triggers"),
    "get_properties_for_metric": empty_collection("metric"),
    "get_property_ids_for_metric": empty_collection("metric"),
    # campaigns and their messages
    "get_messages_for_campaign": related_records("campaign", "campaign-messages"),
    "get_message_ids_for_campaign": related_ids("campaign", "campaign-messages"),
    "get_tags_for_campaign": related_records("campaign", "tags"),
    "get_tag_ids_for_campaign": related_ids("campaign", "tags"),
    "get_campaign_message": record_single("campaign-message"),
    "get_campaign_for_campaign_message": related_record("campaign-message", "campaign"),
    "get_campaign_id_for_campaign_message": related_id("campaign-message", "campaign"),
    "get_template_for_campaign_message": related_record("campaign-message", "template"),
    "get_template_id_for_campaign_message": related_id("campaign-message", "template"),
    "get_campaign_recipient_estimation": get_campaign_recipient_estimation,
    # flows and their actions
    "get_actions_for_flow": related_records("flow", "flow-actions"),
    "get_action_ids_for_flow": related_ids("flow", "flow-actions"),
    "get_tags_for_flow": related_records("flow", "tags"),
    "get_tag_ids_for_flow": related_ids("flow", "tags"),
    "get_flow_action": record_single("flow-action"),
    "get_flow_for_flow_action": related_record("flow-action", "flow"),
    "get_flow_id_for_flow_action": related_id("flow-action", "flow"),
    "get_flow_action_messages": empty_collection("flow-action"),
    "get_message_ids_for_flow_action": empty_collection("flow-action"),
    # tags and tag groups
    "get_tags": record_collection("tag"),
    "get_tag": record_single("tag"),
    "get_tag_group_for_tag": related_record("tag", "tag-group"),
    "get_tag_group_id_for_tag": related_id("tag", "tag-group"),
    "get_campaign_ids_for_tag": related_ids("tag", "campaigns"),
    "get_flow_ids_for_tag": related_ids("tag", "flows"),
    "get_list_ids_for_tag": related_ids("tag", "lists"),
    "get_segment_ids_for_tag": related_ids("tag", "segments"),
    "get_tag_groups": record_collection("tag-group"),
    "get_tag_group": record_single("tag-group"),
    "get_tags_for_tag_group": related_records("tag-group", "tags"),
    "get_tag_ids_for_tag_group": related_ids("tag-group", "tags"),
}

assert all(t in PLURAL for t in ("tag", "tag-group", "campaign-message", "flow-action"))
