"""Qlik-style replication: one table per event metric plus campaigns, lists and exclusions.

Table names are Qlik's; each is an incremental, merge-on-id import so reruns only
fetch what is new and never duplicate rows.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any

from ..config import ImportConfig, metric_choice, parse_import_config
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
    """One validated import config per requested table, in Qlik's order.

    ``connection`` may carry ``metrics`` (only the per-metric tables of those metrics; a
    ``"Name (Integration)"`` entry also picks that integration's metric) and ``lookback`` (for
    the per-metric tables)."""
    unknown = [t for t in tables if t not in QLIK_TABLES]
    if unknown:
        raise ConfigError(f"unknown replication tables {unknown}; choose from: {', '.join(QLIK_TABLES)}", key="tables")
    connection = dict(connection)
    wanted = _wanted_metrics(connection.pop("metrics", None))
    lookback = connection.pop("lookback", None)
    configs = {}
    for name in QLIK_TABLES:
        if name not in tables:
            continue
        metric = QLIK_TABLES[name]
        source: dict[str, Any] = {**connection, "type": "klaviyo", "incremental": True, "start_time": start.isoformat()}
        if metric:
            if wanted is not None and metric not in wanted:
                continue
            source.update(data_source="metric_events", metric=(wanted or {}).get(metric) or metric)
            if lookback is not None:
                source["lookback"] = lookback
        else:
            source["data_source"] = name
        configs[name] = parse_import_config({"in": source, "out": {"mode": "merge"}}, f"replicate {name}")
    return configs


def _wanted_metrics(value: Any) -> dict[str, Any] | None:
    """``metrics`` -> {Qlik metric name: the entry to resolve it with}; None: every table."""
    if value is None:
        return None

    entries = value if isinstance(value, list) else [value]
    known = {m for m in QLIK_TABLES.values() if m}
    out: dict[str, Any] = {}
    for entry in entries:
        try:
            choice = metric_choice(entry)
        except ValueError as exc:
            raise ConfigError(f"metrics: {exc}", key="metrics") from None
        if choice.name not in known:
            close = difflib.get_close_matches(choice.name or choice.id or "", sorted(known), n=2, cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise ConfigError(
                f"metrics: {choice.label()!r} has no replication table{hint}; the tables' metrics are: "
                f"{', '.join(sorted(known))}",
                key="metrics",
            )
        out[choice.name] = choice.label()  # "Name (Integration)" when one was given
    return out
