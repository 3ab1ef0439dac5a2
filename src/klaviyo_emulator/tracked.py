"""Events written through the API: ``create_event`` (POST /api/events) and ``bulk_create_events``
(POST /api/event-bulk-create-jobs).

What the spec says and this models:

- both answer 202 with no body; the profile is created or updated from the identifiers and
  attributes given (matched on id, else email, phone number, external id), the metric is found by
  name or created (it then shows in GET /api/metrics);
- ``time`` defaults to the time the request was received, is truncated to the second, must be
  after 1990 and at most one year in the future; an event with a past time is stored at that
  time (GET /api/events returns events in datetime order, so it lands among the older ones);
- ``unique_id`` defaults to the time to the second; an event whose (profile, metric, unique_id)
  was recorded before is not recorded again ("only the first processed event will be
  recorded"); in a bulk request a unique_id repeated for the same profile and metric fails the
  request ("the request will fail and no events will be processed");
- a bulk request carries at most 1,000 events and 5 MB; a string is at most 100 KB, an event at
  most 400 properties;
- ``backfill`` (per event, or for all events of a bulk entry) is kept beside the event
  (``EventTable.written_backfill``): it would keep flows from firing; it is not an event property.
"""

from __future__ import annotations

import numpy as np
import orjson

from . import ids
from .bodies import BodyError
from .catalog import Record
from .handlers import Request
from .identifiers import identifier_problems
from .jsontypes import JSON
from .timefmt import iso, parse_datetime

#: (pointer, message) of each problem found
Problems = list[tuple[str, str]]

MAX_BULK_EVENTS = 1_000
MAX_EVENT_PROPERTIES = 400
MAX_STRING_BYTES = 100 * 1024
#: 1990-01-01T00:00:00Z
EARLIEST = 631_152_000
ONE_YEAR = 365 * 86400
S_WRITTEN = 700
BULK_PTR = "/data/attributes/events-bulk-create/data"


def _metric_index(req: Request, name: str, service: str | None) -> int:
    """The metric's index in the catalog, created (as an API metric) when the account has none of that name."""
    acc, ctx = req.account, req.emulator
    metrics = acc.records["metric"]
    index = ctx.state.metric_by_name
    if index is None:
        index = ctx.state.metric_by_name = {}
        for i, rec in enumerate(metrics):
            index.setdefault(rec.attributes["name"], i)
    if name in index:
        return index[name]
    stamp = iso(ctx.now())
    key = (service or "api").lower()
    rec = Record(
        "metric",
        ids.short_id(acc.settings.seed, S_WRITTEN, len(metrics)),
        {
            "name": name,
            "created": stamp,
            "updated": stamp,
            "integration": {"object": "integration", "id": "0rG4eQ", "key": key, "name": service or "API", "category": "API"},
        },
        {"integration.name": service or "API", "integration.category": "API"},
        {"flow-triggers": []},
    )
    acc.add_record(rec)
    index[name] = len(metrics) - 1
    return index[name]


def _event_time(
    value: str | None, now: int, pointer: str, problems: Problems, cache: dict[str, float | None] | None = None
) -> int:
    if value is None:
        return now
    if cache is not None and value in cache:
        seconds = cache[value]
    else:
        seconds = parse_datetime(value)
        if cache is not None:
            cache[value] = seconds
    if seconds is None:
        problems.append((pointer, f"Invalid time {value!r}: expected an ISO 8601 date-time."))
        return now
    whole = int(seconds)  # truncated to the second
    if whole <= EARLIEST:
        problems.append((pointer, "The time must be after the year 1990."))
    elif whole > now + ONE_YEAR:
        problems.append((pointer, "The time can only be up to 1 year in the future."))
    return whole


def _string_problems(value: object, pointer: str, out: Problems) -> None:
    if isinstance(value, str):
        if len(value.encode()) > MAX_STRING_BYTES:
            out.append((pointer, f"A string cannot be larger than 100 KB (this one is {len(value.encode()):,} bytes)."))
    elif isinstance(value, dict):
        for k, v in value.items():
            _string_problems(v, f"{pointer}/{k}", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _string_problems(v, f"{pointer}/{i}", out)


def _check_event(
    attrs: JSON, base: str, now: int, problems: Problems, cache: dict[str, float | None] | None = None
) -> tuple[int, str]:
    """(time, metric name) of one event's attributes; its problems appended to ``problems``."""
    props = attrs.get("properties") or {}
    if len(props) > MAX_EVENT_PROPERTIES:
        problems.append((f"{base}/properties", f"An event has at most {MAX_EVENT_PROPERTIES} properties; got {len(props)}."))
    _string_problems(props, f"{base}/properties", problems)
    name = attrs["metric"]["data"]["attributes"]["name"]
    if not str(name).strip():
        problems.append((f"{base}/metric/data/attributes/name", "A metric name cannot be blank."))
    return _event_time(attrs.get("time"), now, f"{base}/time", problems, cache), str(name)


class _Batch:
    """Events of one request, checked whole before any is recorded."""

    def __init__(self, req: Request) -> None:
        self.req = req
        self.now = req.emulator.now()
        self.events: list[tuple[JSON, str | None, JSON, int, str]] = []  # (profile attrs, id, event attrs, time, metric)

    def add(self, profile: JSON, event: JSON, time: int, metric: str) -> None:
        attrs = {k: v for k, v in (profile.get("attributes") or {}).items() if k not in ("_kx", "anonymous_id")}
        self.events.append((attrs, profile.get("id"), event, time, metric))

    def record(self) -> int:
        """Upsert the profiles, then store every event not recorded before; the number stored."""
        req, acc = self.req, self.req.account
        state, table = req.emulator.state, acc.events
        seen = state.event_keys
        metric_rows: list[int] = []
        profile_rows: list[int] = []
        times: list[int] = []
        numbers: list[int] = []
        props: list[bytes] = []
        backfill: list[bool] = []
        for attrs, pid, event, time, metric in self.events:
            profile_attrs = {k: v for k, v in attrs.items() if k not in ("meta",)}
            row = None if profile_attrs else state.match(profile_attrs, pid)
            if row is None:
                row, _ = state.upsert(profile_attrs, self.now, pid)
            m = _metric_index(req, metric, (event["metric"]["data"]["attributes"] or {}).get("service"))
            unique = event.get("unique_id") or iso(time)
            key = (row, m, unique)
            if key in seen:
                continue  # "only the first processed event will be recorded"
            seen.add(key)
            properties = dict(event.get("properties") or {})
            if event.get("value") is not None:
                properties["$value"] = event["value"]
            if event.get("value_currency"):
                properties["$value_currency"] = event["value_currency"]
            properties["$event_id"] = unique
            metric_rows.append(m)
            profile_rows.append(row)
            times.append(time)
            numbers.append(table.count + len(numbers))
            # an exact-size copy: orjson's result keeps its >= 4 KB buffer (1M events: 4 GB instead of 150 MB)
            props.append(bytes(memoryview(orjson.dumps(properties))))
            backfill.append(bool(event.get("backfill")))
        if numbers:
            # ids and uuids of the whole request at once (vectorised, as the synthetic events')
            n = np.array(numbers, dtype=np.int64)
            seed = acc.settings.seed
            tags = ids.mix(seed, S_WRITTEN, n) >> np.uint64(24)
            event_ids: list[str] = (
                ids.ulids(np.array(times, dtype=np.int64) * 1000, tags, n, table.id_key ^ 0x5A5A5A5A5A).astype("U26").tolist()
            )
            uuids: list[str] = ids.uuids(ids.mix(seed, S_WRITTEN + 1, n), ids.mix(seed, S_WRITTEN + 2, n)).astype("U36").tolist()
            table.append(np.array(metric_rows), np.array(profile_rows), np.array(times, dtype=np.int64), event_ids, uuids, props)
            table.written_backfill += backfill
            state.version += 1  # new events: cached selections and orders are stale
        return len(numbers)


def create_event(req: Request) -> tuple[int, None]:
    data = req.body["data"]
    attrs = data["attributes"]
    base = "/data/attributes"
    problems: list[tuple[str, str]] = []
    profile = attrs["profile"]["data"]
    pattrs = profile.get("attributes") or {}
    problems += identifier_problems({**pattrs, "id": profile.get("id")}, f"{base}/profile/data/attributes")
    batch = _Batch(req)
    time, metric = _check_event(attrs, base, batch.now, problems)
    if problems:
        raise BodyError(problems)
    batch.add(profile, attrs, time, metric)
    batch.record()
    return 202, None


def bulk_create_events(req: Request) -> tuple[int, None]:
    entries = req.body["data"]["attributes"]["events-bulk-create"]["data"]
    total = sum(len(e["attributes"]["events"]["data"]) for e in entries)
    if total > MAX_BULK_EVENTS:
        raise BodyError([(BULK_PTR, f"At most {MAX_BULK_EVENTS:,} events are allowed per request; got {total:,}.")])
    if not total:
        raise BodyError([(BULK_PTR, "At least one event is required.")])
    batch = _Batch(req)
    problems: list[tuple[str, str]] = []
    repeats: dict[tuple[object, ...], str] = {}
    times: dict[str, float | None] = {}
    for i, entry in enumerate(entries):
        ea = entry["attributes"]
        profile = ea["profile"]["data"]
        pattrs = profile.get("attributes") or {}
        problems += identifier_problems({**pattrs, "id": profile.get("id")}, f"{BULK_PTR}/{i}/attributes/profile/data/attributes")
        who = (profile.get("id"), pattrs.get("email"), pattrs.get("phone_number"), pattrs.get("external_id"))
        for j, event in enumerate(ea["events"]["data"]):
            attrs = dict(event["attributes"])
            if attrs.get("backfill") is None and ea.get("backfill") is not None:
                attrs["backfill"] = ea["backfill"]
            base = f"{BULK_PTR}/{i}/attributes/events/data/{j}/attributes"
            time, metric = _check_event(attrs, base, batch.now, problems, times)
            if attrs.get("unique_id"):
                key = (who, metric, attrs["unique_id"])
                if key in repeats:
                    problems.append(
                        (
                            f"{base}/unique_id",
                            f"unique_id {attrs['unique_id']!r} is repeated for the same "
                            f"profile and metric (first at {repeats[key]}); no events were processed.",
                        )
                    )
                else:
                    repeats[key] = base
            batch.add(profile, attrs, time, metric)
    if problems:
        raise BodyError(problems)
    batch.record()
    return 202, None
