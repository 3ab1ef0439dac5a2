"""Qlik-style replication: one table per event metric plus campaigns, lists and exclusions.

Table names are Qlik's; each is an incremental, merge-on-id import so reruns only
fetch what is new and never duplicate rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..config import ImportConfig, parse_import_config
from ..errors import ConfigError

#: Qlik table name -> Klaviyo metric name (None: a non-event data source of the same name).
QLIK_TABLES: dict[str, str | None] = {
    "bounce": "Bounced Email",
    "campaigns": None,
    "click": "Clicked Email",
    "clicked_sms": "Clicked SMS",
    "consented_to_receive": "Consented to Receive SMS",
    "dropped_email": "Dropped Email",
    "failed_to_deliver": "Failed to Deliver SMS",
    "failed_to_deliver_automated_response": "Failed to Deliver Automated Response SMS",
    "global_exclusions": None,
    "lists": None,
    "mark_as_spam": "Marked Email as Spam",
    "open": "Opened Email",
    "receive": "Received Email",
    "received_automated_response": "Received Automated Response SMS",
    "received_sms": "Received SMS",
    "sent_sms": "Sent SMS",
    "subscribe_list": "Subscribed to List",
    "unsub_list": "Unsubscribed from List",
    "unsubscribe": "Unsubscribed",
    "unsubscribed_from_sms": "Unsubscribed from SMS",
    "update_email_preferences": "Updated Email Preferences",
}


def replicate_configs(connection: dict[str, Any], start: datetime, tables: list[str]) -> dict[str, ImportConfig]:
    """One validated import config per requested table, in Qlik's order."""
    unknown = [t for t in tables if t not in QLIK_TABLES]
    if unknown:
        raise ConfigError(f"unknown replication tables {unknown}; choose from: {', '.join(QLIK_TABLES)}", key="tables")
    configs = {}
    for name in QLIK_TABLES:
        if name not in tables:
            continue
        metric = QLIK_TABLES[name]
        source: dict[str, Any] = {**connection, "type": "klaviyo", "incremental": True, "start_time": start.isoformat()}
        if metric:
            source.update(data_source="metric_events", metric=metric)
        else:
            source["data_source"] = name
        configs[name] = parse_import_config({"in": source, "out": {"mode": "merge"}}, f"replicate {name}")
    return configs
