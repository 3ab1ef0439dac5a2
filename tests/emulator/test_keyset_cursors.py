"""Keyset cursors: a page cursor stays correct when records are added, updated or removed
between pages (no skips, no repeats of unchanged records), as Klaviyo's cursors are."""

from __future__ import annotations

import pytest

from .writes_helpers import FakeClock, client_for, ids_body, list_body, make_app


async def _page(c, url: str, params: dict | None = None) -> tuple[list[dict], str | None]:
    r = await c.get(url, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["data"], body["links"].get("next")


async def _upsert(c, email: str, **attributes) -> str:
    r = await c.post("/api/profile-import", json={"data": {"type": "profile", "attributes": {"email": email, **attributes}}})
    assert r.status_code in (200, 201), r.text
    return r.json()["data"]["id"]


@pytest.mark.parametrize("sort", [None, "id", "-id", "created", "-created", "email", "-email"])
async def test_profiles_created_between_pages_are_neither_skipped_nor_repeated(sort):
    clock = FakeClock()
    app = make_app(clock)
    async with client_for(app) as c:
        params = {"page[size]": "40", **({"sort": sort} if sort else {})}
        everything, nxt = [], None
        before = [p["id"] for p in (await _page(c, "/api/profiles", {**params, "page[size]": "100"}))[0]]
        data, nxt = await _page(c, "/api/profiles", params)
        everything += data
        clock.advance(5)
        new = [await _upsert(c, f"new{i}@example.com") for i in range(3)]  # sort after every base profile by id/created
        while nxt:
            data, nxt = await _page(c, nxt)
            everything += data
        seen = [p["id"] for p in everything]
        assert len(seen) == len(set(seen)), "a profile was served twice"
        assert set(before) <= set(seen) and len(set(seen)) >= 300
        if sort in (None, "id", "created"):
            assert seen[-3:] == new  # created after the first page: they come at the end


async def test_a_profile_updated_between_pages_moves_to_its_new_place_others_stay_put():
    clock = FakeClock()
    app = make_app(clock)
    async with client_for(app) as c:
        params = {"page[size]": "50", "sort": "updated"}
        first, nxt = await _page(c, "/api/profiles", params)
        # update one profile already served and one not served yet
        rest_before = []
        peek, peek_next = await _page(c, nxt)
        served, pending = first[10], peek[20]
        clock.advance(10)
        for p in (served, pending):
            r = await c.post(
                "/api/profile-import", json={"data": {"type": "profile", "id": p["id"], "attributes": {"first_name": "Moved"}}}
            )
            assert r.status_code == 200, r.text
        rest = []
        while nxt:
            data, nxt = await _page(c, nxt)
            rest += data
        ids = [p["id"] for p in first + rest]
        assert len(ids) == len(set(ids)) + 1  # only the served-then-updated profile comes again
        assert ids.count(served["id"]) == 2 and ids.count(pending["id"]) == 1
        assert [p["id"] for p in rest[-2:]] == [served["id"], pending["id"]]  # newest updated last
        assert len(set(ids)) == 300
        del rest_before, peek_next


async def test_list_members_removed_and_added_between_pages():
    app = make_app()
    emu = app.state.emulator
    async with client_for(app) as c:
        r = await c.post("/api/lists", json=list_body("Keyset"))
        list_id = r.json()["data"]["id"]
        ids = emu.state.profile_ids(range(100))
        url = f"/api/lists/{list_id}/relationships/profiles"
        assert (await c.post(url, json=ids_body(ids[:80]))).status_code == 204
        first, nxt = await _page(c, f"/api/lists/{list_id}/profiles", {"page[size]": "20"})
        served = {p["id"] for p in first}
        unserved = sorted(set(ids[:80]) - served)
        # remove two members already served and two not yet served; add 20 more
        gone = sorted(served)[:2] + unserved[:2]
        assert (await c.request("DELETE", url, json=ids_body(gone))).status_code == 204
        assert (await c.post(url, json=ids_body(ids[80:]))).status_code == 204
        rest = []
        while nxt:
            data, nxt = await _page(c, nxt)
            rest += data
        got = [p["id"] for p in first + rest]
        assert len(got) == len(set(got))
        assert set(unserved[2:]) <= set(got) and not set(unserved[:2]) & set(got)
        # members come in profile-id order: every one added after the cursor's member is served
        last_first = max(p["id"] for p in first)
        assert {i for i in ids[80:] if i > last_first} <= set(got)


async def test_lists_created_between_pages():
    app = make_app(lists=25)
    async with client_for(app) as c:
        first, nxt = await _page(c, "/api/lists", {"sort": "name"})
        assert nxt, "get_lists pages by 10"
        made = []
        for name in ("AAA first by name", "zzz last by name"):
            r = await c.post("/api/lists", json=list_body(name))
            made.append(r.json()["data"]["id"])
        rest = []
        while nxt:
            data, nxt = await _page(c, nxt)
            rest += data
        got = [x["id"] for x in first + rest]
        assert len(got) == len(set(got)) and len(got) == 26  # the 'AAA' one sorts before the cursor
        assert made[1] in got and made[0] not in got


async def test_events_pages_are_unchanged_by_profile_writes():
    clock = FakeClock()
    app = make_app(clock)
    async with client_for(app) as c:
        baseline, nxt = [], "/api/events?page[size]=50"
        while nxt:
            data, nxt = await _page(c, nxt)
            baseline += data
        first, nxt = await _page(c, "/api/events", {"page[size]": "50"})
        await _upsert(c, "writer@example.com")
        rest = []
        while nxt:
            data, nxt = await _page(c, nxt)
            rest += data
        assert [e["id"] for e in first + rest] == [e["id"] for e in baseline]


async def test_a_tampered_cursor_is_a_400():
    app = make_app()
    async with client_for(app) as c:
        _, nxt = await _page(c, "/api/profiles", {"page[size]": "10"})
        r = await c.get(nxt.replace("page%5Bcursor%5D=", "page%5Bcursor%5D=x"))
        assert r.status_code == 400 and r.json()["errors"][0]["source"] == {"parameter": "page[cursor]"}
