"""The import data sources, declared as data: which operation, which columns, which time field.

One base loop (``fetch.py``) owns paging, windows and concurrency; a stream only
says what differs. Names are the seed's ``data_source`` values plus ours
(segments, profiles_in_segment, flows, global_exclusions, metric_events).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypedDict

import pyarrow as pa

from klaviyo_spec import Operation, operation

from ..api.query import Condition, equals, greater_or_equal
from ..errors import ConfigError
from .columns import Column, operation_resource, resource_columns
from .suppression import DERIVED_COLUMNS

ADDITIONAL_PREFIXES = ("predictive_analytics", "subscriptions")


@dataclass(frozen=True)
class Stream:
    """One importable data source."""

    name: str
    operation_id: str
    #: user-facing incremental_field value -> API filter field ("updated" -> "updated_at" for campaigns)
    time_fields: dict[str, str] = field(default_factory=dict)
    default_time_field: str | None = None
    #: config key whose value fills the path's {id} (list_id, segment_id)
    id_setting: str | None = None
    #: every request carries these filter terms
    fixed_filters: tuple[Condition, ...] = ()
    #: the stream is the union of these filter variants (e.g. email and sms campaigns)
    variants: tuple[tuple[Condition, ...], ...] = ((),)
    include: tuple[str, ...] = ()
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    additional_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extra_columns: tuple[Column, ...] = ()
    primary_key: tuple[str, ...] = ("id",)
    #: one GET per id from the ``event_ids`` setting instead of a collection
    per_event_id: bool = False
    #: big collections are split into time windows fetched concurrently; small ones are not
    #: (a window costs at least one request, and campaigns/flows have low rate limits)
    partition: bool = False
    column_types: dict[str, pa.DataType] = field(default_factory=dict)
    #: an event source: incremental runs re-read ``lookback``, ``metrics`` limits it, and
    #: append mode adds only events whose id the table lacks
    events: bool = False
    #: a membership history source: the group column (list_id / segment_id); see membership.py
    membership: str | None = None
    #: profiles: ``suppressed`` / ``suppressed_at`` derived from the email suppressions
    suppression: bool = False
    #: send ``fields`` (sparse fieldsets) even without ``include``
    sparse: bool = False

    @property
    def op(self) -> Operation:
        return operation(self.operation_id)

    def page_size(self) -> int | None:
        """Always the largest page the endpoint allows: fewer requests under the same limits."""
        return self.op.page_size_max

    def columns(self, *, related: bool = True) -> list[Column]:
        if self.membership:
            return [
                _related(self.membership, "_parent_id"),
                _related("profile_id", "id"),
                _related("joined_at", "attributes", "joined_group_at", kind=pa.timestamp("us", tz="UTC")),
            ]
        keep_additional = set(self.additional_fields.get("profile", ()))
        omit = tuple(p for p in ADDITIONAL_PREFIXES if p not in keep_additional)
        cols = resource_columns(operation_resource(self.operation_id), omit=omit, types=self.column_types)
        extras = [c for c in self.extra_columns if related or c.path[0] == "relationships"]
        if self.suppression:
            extras += list(DERIVED_COLUMNS)
        return cols + extras

    def time_filter_ops(self, api_field: str) -> tuple[str, ...]:
        return self.op.filters.get(api_field, ())


def _related(name: str, *path: str, kind: pa.DataType = pa.string()) -> Column:
    return Column(name, tuple(path), kind)


EVENT_RELATED = (
    _related("metric_id", "relationships", "metric", "data", "id"),
    _related("profile_id", "relationships", "profile", "data", "id"),
    _related("metric_name", "_metric", "attributes", "name"),
    _related("profile_email", "_profile", "attributes", "email"),
    _related("profile_phone_number", "_profile", "attributes", "phone_number"),
    _related("profile_external_id", "_profile", "attributes", "external_id"),
)


class _EventStreamOptions(TypedDict):
    """The ``Stream`` fields every event source shares."""

    time_fields: dict[str, str]
    default_time_field: str
    partition: bool
    include: tuple[str, ...]
    fields: dict[str, tuple[str, ...]]
    extra_columns: tuple[Column, ...]
    events: bool


EVENT_STREAM_OPTIONS = _EventStreamOptions(
    time_fields={"created": "datetime", "datetime": "datetime", "timestamp": "datetime"},
    default_time_field="created",
    partition=True,
    include=("metric", "profile"),
    fields={"metric": ("name",), "profile": ("email", "phone_number", "external_id")},
    extra_columns=EVENT_RELATED,
    events=True,
)
CREATED_UPDATED = {"created": "created", "updated": "updated"}
SUPPRESSION_TIMESTAMP = "subscriptions.email.marketing.suppression.timestamp"
METRIC_TIME_TYPES = {"created": pa.timestamp("us", tz="UTC"), "updated": pa.timestamp("us", tz="UTC")}

STREAMS: dict[str, Stream] = {
    s.name: s
    for s in (
        Stream("metrics", "get_metrics", column_types=METRIC_TIME_TYPES),
        Stream("events", "get_events", **EVENT_STREAM_OPTIONS),
        Stream("metric_events", "get_events", **EVENT_STREAM_OPTIONS),
        Stream(
            "event_metrics",
            "get_metric_for_event",
            per_event_id=True,
            column_types=METRIC_TIME_TYPES,
            extra_columns=(_related("event_id", "_event_id"),),
            primary_key=("event_id",),
        ),
        Stream(
            "event_profiles",
            "get_profile_for_event",
            per_event_id=True,
            extra_columns=(_related("event_id", "_event_id"),),
            primary_key=("event_id",),
        ),
        Stream("templates", "get_templates", time_fields=CREATED_UPDATED, default_time_field="updated"),
        Stream(
            "campaigns",
            "get_campaigns",
            time_fields={"created": "created_at", "updated": "updated_at"},
            default_time_field="updated",
            variants=tuple(
                (equals("messages.channel", channel), equals("archived", archived))
                for channel in ("email", "sms")
                for archived in (False, True)
            ),
            extra_columns=(_related("channel", "_channel"),),
        ),
        Stream("lists", "get_lists", time_fields=CREATED_UPDATED, default_time_field="updated"),
        Stream(
            "profiles_in_list",
            "get_profiles_for_list",
            id_setting="list_id",
            extra_columns=(_related("list_id", "_parent_id"),),
            primary_key=("list_id", "id"),
        ),
        # Subscriptions come with every profile: suppressed / suppressed_at are derived from them
        Stream(
            "profiles",
            "get_profiles",
            time_fields=CREATED_UPDATED,
            default_time_field="updated",
            partition=True,
            additional_fields={"profile": ("subscriptions",)},
            suppression=True,
        ),
        Stream("segments", "get_segments", time_fields=CREATED_UPDATED, default_time_field="updated"),
        Stream(
            "profiles_in_segment",
            "get_profiles_for_segment",
            id_setting="segment_id",
            extra_columns=(_related("segment_id", "_parent_id"),),
            primary_key=("segment_id", "id"),
        ),
        # Klaviyo's get_flows leaves archived flows out unless filtered for: both, as for campaigns.
        Stream(
            "flows",
            "get_flows",
            time_fields=CREATED_UPDATED,
            default_time_field="updated",
            variants=((equals("archived", False),), (equals("archived", True),)),
        ),
        # Membership with history: every run reads the groups' members (only joined_group_at) and
        # records joins and departures; windows over joined_group_at fetch a big list concurrently.
        Stream(
            "list_memberships",
            "get_profiles_for_list",
            membership="list_id",
            partition=True,
            fields={"profile": ("joined_group_at",)},
            primary_key=("list_id", "profile_id", "joined_at"),
        ),
        Stream(
            "segment_memberships",
            "get_profiles_for_segment",
            membership="segment_id",
            partition=True,
            fields={"profile": ("joined_group_at",)},
            primary_key=("segment_id", "profile_id", "joined_at"),
        ),
        Stream(
            "global_exclusions",
            "get_profiles",
            time_fields={"suppressed": SUPPRESSION_TIMESTAMP},
            default_time_field="suppressed",
            # only suppressed profiles have a suppression timestamp: this filter is the selection
            fixed_filters=(greater_or_equal(SUPPRESSION_TIMESTAMP, datetime(2000, 1, 1, tzinfo=timezone.utc)),),
            partition=True,
            additional_fields={"profile": ("subscriptions",)},
            suppression=True,
        ),
    )
}

#: Every profile id, as cheaply as the API allows (100 a page, only ``created``), windows over
#: ``created`` fetched side by side: the sweep that finds deleted profiles (``detect_deleted``).
PROFILE_IDS = Stream(
    "profile_ids",
    "get_profiles",
    time_fields={"created": "created"},
    partition=True,
    fields={"profile": ("created",)},
    sparse=True,
)
PROFILE_ID_COLUMNS = [
    Column("id", ("id",), pa.string()),
    Column("created", ("attributes", "created"), pa.timestamp("us", tz="UTC")),
]


def stream(name: str) -> Stream:
    try:
        return STREAMS[name]
    except KeyError:
        close = difflib.get_close_matches(name, STREAMS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        shown = repr(name) if name.isascii() else ascii(name)  # a look-alike letter shows as \u0456
        raise ConfigError(
            f"data_source {shown} is not supported{hint}; choose one of: {', '.join(STREAMS)}", key="data_source"
        ) from None
