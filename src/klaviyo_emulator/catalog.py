"""The account's small collections (account, lists, segments, metrics, campaigns,
templates, flows, tags) as ready-made records.

They number in the tens, so each is a plain ``Record``: rendered attributes,
relationships, and the raw values filters and sorts compare (times as epoch
seconds). Counts come from the settings; names from ``vocabulary``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ids
from . import vocabulary as V
from .jsontypes import JSON
from .settings import EmulatorSettings
from .timefmt import iso

S_ACCOUNT, S_LIST, S_SEGMENT, S_METRIC, S_CAMPAIGN, S_MESSAGE, S_TEMPLATE, S_FLOW, S_ACTION, S_TAG, S_TIME = range(500, 511)


#: a to-one relationship's (type, id), or a to-many one's list of them
Related = tuple[str, str] | list[tuple[str, str]]


@dataclass
class Record:
    """One small resource: what it renders and what filters/sorts see."""

    type: str
    id: str
    attributes: JSON
    #: what filters and sorts compare: numbers, strings, booleans, epoch seconds
    values: dict[str, Any] = field(default_factory=dict)
    #: relationship name -> list of (type, id) for to-many, or a (type, id) tuple for to-one
    related: dict[str, Related] = field(default_factory=dict)

    def to_many(self, name: str) -> list[tuple[str, str]]:
        """The to-many relationship ``name`` (a list to add to)."""
        targets = self.related[name]
        if not isinstance(targets, list):
            raise TypeError(f"{self.type} {name} is a to-one relationship")
        return targets

    def to_many_or_none(self, name: str) -> list[tuple[str, str]]:
        """``to_many``, or no targets when the record has no such relationship."""
        return self.to_many(name) if name in self.related else []


def _time(seed: int, stream: int, index: int, now: int, max_days: int = 700) -> int:
    return now - int(ids.unit(seed, stream, index) * max_days * 86400)


def build_catalog(settings: EmulatorSettings, list_sizes: list[int] | None = None) -> dict[str, list[Record]]:
    """All small collections, keyed by JSON:API type."""
    seed, now = settings.seed, settings.now
    tags = [Record("tag", ids.uuid_text(seed, S_TAG, i), {"name": name}) for i, name in enumerate(V.TAG_NAMES)]
    account = Record(
        "account",
        ids.short_id(seed, S_ACCOUNT, 0),
        {
            "test_account": False,
            "contact_information": {
                "default_sender_name": "Example Outfitters",
                "default_sender_email": "hello@example.com",
                "website_url": "https://shop.example.com",
                "organization_name": "Example Outfitters",
                "street_address": {
                    "address1": "125 Summer St",
                    "address2": "Floor 6",
                    "city": "Boston",
                    "region": "MA",
                    "country": "US",
                    "zip": "02110",
                },
            },
            "industry": "Apparel & Accessories",
            "timezone": "America/New_York",
            "preferred_currency": "USD",
            "public_api_key": ids.short_id(seed, S_ACCOUNT, 1),
            "locale": "en-US",
        },
    )
    lists = []
    for i in range(settings.lists):
        created = _time(seed, S_TIME, i, now)
        updated = min(now, created + int(ids.unit(seed, S_TIME + 100, i) * 200 * 86400))
        name = V.LIST_NAMES[i % len(V.LIST_NAMES)] + (f" {i // len(V.LIST_NAMES) + 1}" if i >= len(V.LIST_NAMES) else "")
        lists.append(
            Record(
                "list",
                ids.short_id(seed, S_LIST, i),
                {
                    "name": name,
                    "created": iso(created),
                    "updated": iso(updated),
                    "opt_in_process": "double_opt_in" if i % 3 == 1 else "single_opt_in",
                },
                {"id": None, "name": name, "created": created, "updated": updated},
                {"tags": [("tag", tags[i % len(tags)].id)], "flow-triggers": []},
            )
        )
    segments = []
    for i in range(settings.segments):
        created = _time(seed, S_TIME + 200, i, now)
        updated = min(now, created + int(ids.unit(seed, S_TIME + 201, i) * 100 * 86400))
        name = V.SEGMENT_NAMES[i % len(V.SEGMENT_NAMES)] + (
            f" {i // len(V.SEGMENT_NAMES) + 1}" if i >= len(V.SEGMENT_NAMES) else ""
        )
        active, starred = i % 5 != 4, i % 2 == 0
        segments.append(
            Record(
                "segment",
                ids.short_id(seed, S_SEGMENT, i),
                {
                    "name": name,
                    "definition": None,
                    "created": iso(created),
                    "updated": iso(updated),
                    "is_active": active,
                    "is_processing": False,
                    "is_starred": starred,
                },
                {"name": name, "created": created, "updated": updated, "is_active": active, "is_starred": starred},
                {"tags": [("tag", tags[(i + 2) % len(tags)].id)], "flow-triggers": []},
            )
        )
    metrics = []
    for i, (name, integration, category, _) in enumerate(
        V.METRICS + (V.SECOND_STORE_METRICS if getattr(settings, "second_store", False) else ())
    ):
        created = _time(seed, S_TIME + 300, i, now, 720)
        metrics.append(
            Record(
                "metric",
                ids.short_id(seed, S_METRIC, i),
                {
                    "name": name,
                    "created": iso(created),
                    "updated": iso(created),
                    "integration": {
                        "object": "integration",
                        "id": V.INTEGRATION_IDS[integration],
                        "key": integration.lower(),
                        "name": integration,
                        "category": category,
                    },
                },
                {"integration.name": integration, "integration.category": category},
                {"flow-triggers": []},
            )
        )
    templates = []
    for i in range(settings.templates):
        created = _time(seed, S_TIME + 400, i, now)
        updated = min(now, created + int(ids.unit(seed, S_TIME + 401, i) * 60 * 86400))
        theme = V.CAMPAIGN_THEMES[i % len(V.CAMPAIGN_THEMES)]
        name = f"{theme} Template {i + 1}"
        html = (
            f"<!DOCTYPE html><html><head><title>{theme}</title></head><body><h1>{theme}</h1>"
            f"<p>Hi {{{{ first_name|default:'there' }}}}, see what's new.</p>"
            f'<a href="https://shop.example.com">Shop now</a>{{% unsubscribe %}}</body></html>'
        )
        templates.append(
            Record(
                "template",
                ids.short_id(seed, S_TEMPLATE, i),
                {
                    "name": name,
                    "editor_type": "CODE",
                    "html": html,
                    "text": f"{theme}\nShop now: https://shop.example.com",
                    "amp": None,
                    "created": iso(created),
                    "updated": iso(updated),
                },
                {"name": name, "created": created, "updated": updated},
            )
        )
    campaigns, messages = [], []
    for i in range(settings.campaigns):
        channel = "sms" if i % 4 == 3 else "email"
        created = _time(seed, S_TIME + 500, i, now, 690)
        status = V.CAMPAIGN_STATUSES[int(ids.choice(seed, S_CAMPAIGN + 50, i, len(V.CAMPAIGN_STATUSES)))]
        scheduled = created + 3 * 86400 if status != "Draft" else None
        updated = min(now, (scheduled or created) + 3600)
        archived = status == "Sent" and i % 5 == 0
        theme = V.CAMPAIGN_THEMES[i % len(V.CAMPAIGN_THEMES)]
        name = f"{theme} {(iso(created) or '')[:7]} ({channel.upper()})"
        cid = ids.ulid(created * 1000, int(ids.mix(seed, S_CAMPAIGN, i)) >> 24, i, ids.index_key(seed, S_CAMPAIGN))
        mid = ids.ulid(created * 1000, int(ids.mix(seed, S_MESSAGE, i)) >> 24, i, ids.index_key(seed, S_MESSAGE))
        audience = [lists[i % len(lists)].id] if lists else []
        strategy = (
            {"method": "static", "datetime": iso(scheduled), "options": {"is_local": False}}
            if scheduled
            else {"method": "immediate"}
        )
        tracking = (
            {"add_tracking_params": False, "custom_tracking_params": None, "is_tracking_clicks": True, "is_tracking_opens": True}
            if channel == "email"
            else {"add_tracking_params": False, "custom_tracking_params": None}
        )
        campaigns.append(
            Record(
                "campaign",
                cid,
                {
                    "name": name,
                    "status": status,
                    "archived": archived,
                    "audiences": {"included": audience, "excluded": []},
                    "send_options": {"use_smart_sending": True},
                    "tracking_options": tracking,
                    "send_strategy": strategy,
                    "created_at": iso(created),
                    "scheduled_at": iso(scheduled),
                    "updated_at": iso(updated),
                    "send_time": iso(scheduled) if status in ("Sent", "Sending") else None,
                },
                {
                    "name": name,
                    "status": status,
                    "archived": archived,
                    "messages.channel": channel,
                    "created_at": created,
                    "scheduled_at": scheduled,
                    "updated_at": updated,
                },
                {"campaign-messages": [("campaign-message", mid)], "tags": [("tag", tags[i % len(tags)].id)]},
            )
        )
        subject = f"{theme}: picked for you"
        definition = (
            {
                "channel": "email",
                "label": f"{theme} email",
                "content": {
                    "subject": subject,
                    "preview_text": "Don't miss out",
                    "from_email": "hello@example.com",
                    "from_label": "Example Outfitters",
                    "reply_to_email": None,
                    "cc_email": None,
                    "bcc_email": None,
                },
            }
            if channel == "email"
            else {"channel": "sms", "content": {"body": f"{theme}! Shop: https://ex.co/s", "media_url": None}}
        )
        template_rel = ("template", templates[i % len(templates)].id) if templates and channel == "email" else None
        messages.append(
            Record(
                "campaign-message",
                mid,
                {
                    "definition": definition,
                    "send_times": [{"datetime": iso(scheduled), "is_local": False}] if scheduled else [],
                    "created_at": iso(created),
                    "updated_at": iso(updated),
                },
                {"subject": subject, "campaign_name": name},
                {"campaign": ("campaign", cid), **({"template": template_rel} if template_rel else {})},
            )
        )
    flows, actions = [], []
    for i in range(settings.flows):
        name, trigger = V.FLOW_NAMES[i % len(V.FLOW_NAMES)]
        created = _time(seed, S_TIME + 600, i, now)
        updated = min(now, created + int(ids.unit(seed, S_TIME + 601, i) * 90 * 86400))
        status = V.FLOW_STATUSES[i % len(V.FLOW_STATUSES)] if trigger != "Unconfigured" else "draft"
        archived = i % 7 == 6
        fid = ids.short_id(seed, S_FLOW, i)
        action_ids = [str(int(ids.mix(seed, S_ACTION, i * 3 + k)) % 10**8) for k in range(2)]
        for aid in action_ids:
            actions.append(
                Record(
                    "flow-action",
                    aid,
                    {"definition": None, "created": iso(created), "updated": iso(updated)},
                    {},
                    {"flow": ("flow", fid)},
                )
            )
        triggers: list[dict[str, str | None]] = []
        if trigger == "Added to List" and lists:
            lst = lists[i % len(lists)]
            lst.to_many("flow-triggers").append(("flow", fid))
            triggers = [{"type": "list", "id": lst.id}]
        elif trigger == "Metric":
            metric = metrics[(18, 21, 20, 18, 22)[i % 5]]
            metric.to_many("flow-triggers").append(("flow", fid))
            triggers = [{"type": "metric", "id": metric.id, "trigger_filter": None}]
        flows.append(
            Record(
                "flow",
                fid,
                {
                    "name": name,
                    "status": status,
                    "archived": archived,
                    "created": iso(created),
                    "updated": iso(updated),
                    "trigger_type": trigger,
                },
                {
                    "name": name,
                    "status": status,
                    "archived": archived,
                    "created": created,
                    "updated": updated,
                    "trigger_type": trigger,
                    "definition": {
                        "triggers": triggers,
                        "actions": [],
                        "entry_action_id": None,
                        "profile_filter": None,
                        "reentry_criteria": None,
                    },
                },
                {"flow-actions": [("flow-action", a) for a in action_ids], "tags": [("tag", tags[(i + 1) % len(tags)].id)]},
            )
        )
    # Tags belong to the account's one tag group, and know what they tag (the reverse relationships).
    group = Record(
        "tag-group",
        ids.uuid_text(seed, S_TAG, 1000),
        {"name": "Default", "exclusive": False, "default": True},
        {"name": "Default", "exclusive": False, "default": True},
        {"tags": [("tag", t.id) for t in tags]},
    )
    by_id = {t.id: t for t in tags}
    for t in tags:
        t.values.update(name=t.attributes["name"], id=t.id)
        t.related = {"tag-group": ("tag-group", group.id), "campaigns": [], "flows": [], "lists": [], "segments": []}
    for plural, records in (("campaigns", campaigns), ("flows", flows), ("lists", lists), ("segments", segments)):
        for r in records:
            for _, tag_id in r.to_many_or_none("tags"):
                by_id[tag_id].to_many(plural).append((r.type, r.id))
    for records in (lists, segments, templates, campaigns, flows, metrics):
        for r in records:
            r.values.setdefault("id", r.id)
            r.values["id"] = r.id
    return {
        "account": [account],
        "list": lists,
        "segment": segments,
        "metric": metrics,
        "template": templates,
        "campaign": campaigns,
        "campaign-message": messages,
        "flow": flows,
        "flow-action": actions,
        "tag": tags,
        "tag-group": [group],
    }


def ordered_records(records: list[Record], key: str | None) -> np.ndarray:
    """Positions of records in the order of ``key`` (ties by position); None keys last."""
    if key is None:
        return np.arange(len(records))
    return np.array(
        sorted(range(len(records)), key=lambda i: (records[i].values.get(key) is None, records[i].values.get(key) or 0, i)),
        dtype=np.int64,
    )
