"""Cursor paging to exhaustion: exact counts, every record once, ties on timestamps, links."""

from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

import klaviyo_spec as spec
from klaviyo_emulator.query import UNSIZED_PAGE

from .conftest import SMALL, collect


@pytest.mark.parametrize(
    "path,params,expected",
    [
        ("/api/profiles", {"page[size]": "17"}, SMALL.profiles),
        ("/api/profiles", {"page[size]": "100", "sort": "-updated"}, SMALL.profiles),
        ("/api/profiles", {"page[size]": "33", "sort": "email"}, SMALL.profiles),
        ("/api/events", {"page[size]": "301"}, SMALL.events),
        ("/api/events", {"page[size]": "999", "sort": "-datetime"}, SMALL.events),
        ("/api/lists", {}, SMALL.lists),
        ("/api/segments", {}, SMALL.segments),
        ("/api/metrics", {}, 23),
        ("/api/campaigns", {"filter": "equals(messages.channel,'email')", "page[size]": "7"}, None),
        ("/api/templates", {"sort": "-name"}, SMALL.templates),
        ("/api/flows", {"page[size]": "3"}, SMALL.flows - 1),  # one flow is archived: listed only when asked for
        ("/api/flows", {"page[size]": "3", "filter": "equals(archived,true)"}, 1),
        ("/api/accounts", {}, 1),
    ],
)
async def test_exhaustive_paging(client, path, params, expected):
    items, pages = await collect(client, path, params)
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids))
    if expected is not None:
        assert len(ids) == expected
    op = next(spec.operation(o) for o in spec.emulated_operations() if spec.operation(o).path == path)
    size = int(params.get("page[size]", op.page_size_default or UNSIZED_PAGE))
    assert pages == max(1, -(-len(ids) // size))


async def test_group_members_page_exactly_with_joined_ties(client, account):
    biggest = max(account.list_members.values(), key=len)
    assert len(np.unique(biggest.joined)) < len(biggest)  # bulk imports share a join second
    for list_id, members in account.list_members.items():
        items, _ = await collect(client, f"/api/lists/{list_id}/profiles", {"page[size]": "7", "sort": "joined_group_at"})
        assert len(items) == len(members) == len({i["id"] for i in items})
        joined = [i["attributes"]["joined_group_at"] for i in items]
        assert joined == sorted(joined)
    seg_id, members = next(iter(account.segment_members.items()))
    items, _ = await collect(client, f"/api/segments/{seg_id}/profiles", {"page[size]": "13", "sort": "-joined_group_at"})
    assert len(items) == len(members)


async def test_sorted_by_updated_with_ties_gives_each_profile_once(client, account):
    assert len(np.unique(account.profiles.updated)) < account.profiles.count
    items, _ = await collect(client, "/api/profiles", {"page[size]": "9", "sort": "updated"})
    stamps = [i["attributes"]["updated"] for i in items]
    assert stamps == sorted(stamps) and len({i["id"] for i in items}) == account.profiles.count


async def test_links_are_absolute_and_keep_the_query(client):
    body = (
        await client.get(
            "/api/events",
            params={"page[size]": "10", "filter": "greater-than(datetime,2025-01-01T00:00:00Z)", "sort": "-datetime"},
        )
    ).json()
    nxt = urlsplit(body["links"]["next"])
    assert nxt.scheme == "http" and nxt.netloc == "emulator.test" and nxt.path == "/api/events"
    q = parse_qs(nxt.query)
    assert q["filter"] == ["greater-than(datetime,2025-01-01T00:00:00Z)"] and q["sort"] == ["-datetime"] and q["page[cursor]"]
    second = (await client.get(body["links"]["next"])).json()
    prev = (await client.get(second["links"]["prev"])).json()
    assert [d["id"] for d in prev["data"]] == [d["id"] for d in body["data"]]
    assert "prev" not in body["links"]


async def test_cursor_from_another_query_or_garbage_is_rejected(client):
    body = (await client.get("/api/profiles", params={"page[size]": "5"})).json()
    cursor = parse_qs(urlsplit(body["links"]["next"]).query)["page[cursor]"][0]
    r = await client.get("/api/profiles", params={"page[size]": "5", "sort": "-created", "page[cursor]": cursor})
    assert r.status_code == 400 and r.json()["errors"][0]["source"] == {"parameter": "page[cursor]"}
    r = await client.get("/api/profiles", params={"page[cursor]": "!!not-a-cursor"})
    assert r.status_code == 400


async def test_same_seed_same_bytes(small_app):
    import httpx

    from klaviyo_emulator.app import create_app

    from .conftest import HEADERS

    other = create_app(SMALL)
    urls = [
        "/api/profiles?page[size]=50&additional-fields[profile]=subscriptions,predictive_analytics",
        "/api/events?page[size]=200&include=metric,profile",
        "/api/campaigns?filter=equals(messages.channel,'sms')&include=campaign-messages",
    ]
    bodies = []
    for app in (small_app, other):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e.test", headers=HEADERS) as c:
            bodies.append([(await c.get(u)).content for u in urls])
    assert bodies[0] == bodies[1]
