"""create_event and bulk_create_events over HTTP: 202, events visible to GET /api/events (in datetime
order, also with a time in the past), new metrics in GET /api/metrics, unique_id dedupe as the spec
words it, limits and validation errors with pointers, backfill kept."""

from __future__ import annotations

import httpx
import pytest

EVENTS = "/api/events"
BULK = "/api/event-bulk-create-jobs"


def _event(metric, *, time=None, unique_id=None, value=None, props=None, backfill=None):
    attrs = {"properties": props or {}, "metric": {"data": {"type": "metric", "attributes": {"name": metric}}}}
    if time is not None:
        attrs["time"] = time
    if unique_id is not None:
        attrs["unique_id"] = unique_id
    if value is not None:
        attrs["value"] = value
    if backfill is not None:
        attrs["backfill"] = backfill
    return {"type": "event", "attributes": attrs}


def _bulk(entries):
    data = []
    for profile, events, *rest in entries:
        attrs = {"profile": {"data": {"type": "profile", "attributes": profile}}, "events": {"data": events}}
        if rest:
            attrs["backfill"] = rest[0]
        data.append({"type": "event-bulk-create", "attributes": attrs})
    return {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": data}}}}


def _single(profile, event):
    ev = dict(event["attributes"])
    ev["profile"] = {"data": {"type": "profile", "attributes": profile}}
    return {"data": {"type": "event", "attributes": ev}}


def _client(emu):
    return httpx.Client(base_url=emu.base_url, headers={**emu.headers, "content-type": "application/vnd.api+json"})


def _metric_id(c, name):
    for m in c.get("/api/metrics").json()["data"]:
        if m["attributes"]["name"] == name:
            return m["id"]
    return None


def _events_of(c, metric_id, **params):
    out, url = [], EVENTS
    query = {"filter": f'equals(metric_id,"{metric_id}")', "page[size]": "1000", **params}
    while url:
        doc = c.get(url, params=query if url == EVENTS else None).json()
        out += doc["data"]
        url = doc["links"].get("next")
    return out


@pytest.mark.klaviyo_emulator(profiles=20, events=50, lists=1, rate_limits=False)
def test_bulk_create_records_events_and_a_new_metric(klaviyo_emulator):
    with _client(klaviyo_emulator) as c:
        body = _bulk(
            [
                (
                    {"email": "ann@example.com"},
                    [_event("Renewed Plan", time="2025-03-01T10:00:00Z", value=12.5, unique_id="r-1", props={"plan": "gold"})],
                ),
                (
                    {"email": "bob@example.com"},
                    [
                        _event("Renewed Plan", time="2025-06-01T10:00:00.900Z", unique_id="r-2"),
                        _event("Renewed Plan", time="2025-07-01T10:00:00Z", unique_id="r-3"),
                    ],
                ),
            ]
        )
        r = c.post(BULK, content=httpx.Request("POST", "/", json=body).content)
        assert r.status_code == 202, r.text
        assert r.content == b""
        metric = _metric_id(c, "Renewed Plan")
        assert metric is not None, "a new metric shows in GET /api/metrics"
        events = _events_of(c, metric)
        assert [e["attributes"]["datetime"] for e in events] == [
            "2025-03-01T10:00:00+00:00",
            "2025-06-01T10:00:00+00:00",
            "2025-07-01T10:00:00+00:00",
        ]
        first = events[0]["attributes"]["event_properties"]
        assert first["plan"] == "gold" and first["$value"] == 12.5
        profile = c.get(f"/api/profiles/{events[0]['relationships']['profile']['data']['id']}").json()["data"]
        assert profile["attributes"]["email"] == "ann@example.com", "the profile was created from the identifier"
        # past events land among the synthetic ones, in datetime order
        everything = []
        url, params = EVENTS, {"page[size]": "1000"}
        while url:
            doc = c.get(url, params=params if url == EVENTS else None).json()
            everything += [e["attributes"]["datetime"] for e in doc["data"]]
            url = doc["links"].get("next")
        assert everything == sorted(everything) and len(everything) == 53
        newest = c.get(EVENTS, params={"sort": "-datetime", "page[size]": "1"}).json()["data"][0]
        assert newest["attributes"]["datetime"] == max(everything)
        one = c.get(f"{EVENTS}/{events[1]['id']}").json()["data"]
        assert one["id"] == events[1]["id"] and one["attributes"]["event_properties"]["$event_id"] == "r-2"


@pytest.mark.klaviyo_emulator(profiles=5, events=0, lists=0, rate_limits=False)
def test_unique_id_dedupe_across_requests_and_refusal_within_one(klaviyo_emulator):
    with _client(klaviyo_emulator) as c:
        body = _bulk([({"email": "ann@example.com"}, [_event("Paid", time="2025-01-02T00:00:00Z", unique_id="u1")])])
        assert c.post(BULK, json=body).status_code == 202
        assert c.post(BULK, json=body).status_code == 202  # a resend: accepted, not recorded again
        # without unique_id: the time to the second is the key
        t = _bulk([({"email": "ann@example.com"}, [_event("Paid", time="2025-01-03T00:00:00Z")])])
        assert c.post(BULK, json=t).status_code == 202 and c.post(BULK, json=t).status_code == 202
        # the same unique_id for another profile is another event
        other = _bulk([({"email": "bob@example.com"}, [_event("Paid", time="2025-01-02T00:00:00Z", unique_id="u1")])])
        assert c.post(BULK, json=other).status_code == 202
        assert len(_events_of(c, _metric_id(c, "Paid"))) == 3
        # repeated inside one request: the request fails, nothing is recorded
        twice = _bulk([({"email": "cy@example.com"}, [_event("Paid", unique_id="x"), _event("Paid", unique_id="x")])])
        r = c.post(BULK, json=twice)
        assert r.status_code == 400
        assert r.json()["errors"][0]["source"]["pointer"].endswith("/events/data/1/attributes/unique_id")
        assert len(_events_of(c, _metric_id(c, "Paid"))) == 3


@pytest.mark.klaviyo_emulator(profiles=5, events=0, lists=0, rate_limits=False)
def test_single_create_event_and_validation_pointers(klaviyo_emulator):
    with _client(klaviyo_emulator) as c:
        r = c.post(EVENTS, json=_single({"phone_number": "+15005550006"}, _event("Called", time="2024-05-05T05:05:05Z")))
        assert r.status_code == 202, r.text
        assert len(_events_of(c, _metric_id(c, "Called"))) == 1
        bad = _bulk(
            [
                ({"email": "not-an-email"}, [_event("X", time="1989-01-01T00:00:00Z")]),
                ({}, [_event("X", time="3099-01-01T00:00:00Z")]),
            ]
        )
        r = c.post(BULK, json=bad)
        assert r.status_code == 400
        pointers = [e["source"]["pointer"] for e in r.json()["errors"]]
        assert "/data/attributes/events-bulk-create/data/0/attributes/profile/data/attributes/email" in pointers
        assert "/data/attributes/events-bulk-create/data/0/attributes/events/data/0/attributes/time" in pointers
        assert "/data/attributes/events-bulk-create/data/1/attributes/events/data/0/attributes/time" in pointers
        assert _metric_id(c, "X") is None, "a refused request records nothing"
        too_many = _bulk([({"email": f"p{i}@example.com"}, [_event("Y")]) for i in range(1001)])
        r = c.post(BULK, json=too_many)
        assert r.status_code == 400 and "1,000" in r.json()["errors"][0]["detail"]
        missing_metric = {
            "data": {
                "type": "event-bulk-create-job",
                "attributes": {
                    "events-bulk-create": {
                        "data": [
                            {
                                "type": "event-bulk-create",
                                "attributes": {
                                    "profile": {"data": {"type": "profile", "attributes": {"email": "a@b.co"}}},
                                    "events": {"data": [{"type": "event", "attributes": {"properties": {}}}]},
                                },
                            }
                        ]
                    }
                },
            }
        }
        r = c.post(BULK, json=missing_metric)
        assert r.status_code == 400 and "metric" in r.text


@pytest.mark.klaviyo_emulator(profiles=5, events=0, lists=0, rate_limits=False)
def test_backfill_is_kept_per_event_and_per_entry(klaviyo_emulator):
    with _client(klaviyo_emulator) as c:
        body = _bulk(
            [
                (
                    {"email": "ann@example.com"},
                    [_event("Old", time="2020-01-01T00:00:00Z", backfill=True), _event("Old", time="2020-01-02T00:00:00Z")],
                ),
                ({"email": "bob@example.com"}, [_event("Old", time="2020-01-03T00:00:00Z")], True),
            ]
        )
        assert c.post(BULK, json=body).status_code == 202
    assert klaviyo_emulator.emulator.account.events.written_backfill == [True, False, True]
