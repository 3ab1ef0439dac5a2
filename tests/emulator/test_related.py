"""Every link the emulator returns can be followed; relationship reads agree with the data;
404 / 405 / 501 as the spec's paths and methods say; profile create/update; suppression job reads."""

from __future__ import annotations

import re

import pytest

import klaviyo_spec as spec

from .writes_helpers import FakeClock, client_for, make_app, suppression_body

#: Links Klaviyo's schemas require (RelationshipLinks: self and related) for relationships the spec
#: has no endpoint for: events' attributions, and the resources a tag tags (only their ids are served).
UNSERVED_BY_THE_SPEC = re.compile(
    r"/api/(events/[^/]+/(relationships/)?attributions|tags/[^/]+/(campaigns|flows|lists|segments))/$"
)


def _links(node, out: set) -> set:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("self", "related") and isinstance(v, str):
                out.add(v)
            else:
                _links(v, out)
    elif isinstance(node, list):
        for v in node:
            _links(v, out)
    return out


async def test_every_link_returned_can_be_followed():
    app = make_app(profiles=60, events=80)
    async with client_for(app) as c:
        starts = [
            "/api/accounts",
            "/api/lists",
            "/api/segments",
            "/api/metrics",
            "/api/events?include=metric,profile",
            "/api/profiles",
            "/api/campaigns?filter=equals(messages.channel,'email')",
            "/api/templates",
            "/api/flows",
            "/api/tags",
            "/api/tag-groups",
        ]
        links: set = set()
        for path in starts:
            _links((await c.get(path)).json(), links)
        followed: set = set()
        frontier = links
        for _ in range(2):  # the links of what the links lead to, too
            found: set = set()
            for link in sorted(frontier - followed):
                followed.add(link)
                if UNSERVED_BY_THE_SPEC.search(link):
                    op, _ = app.state.emulator.match(link.split("emulator.test")[1])
                    assert op is None, f"{link} is {op.operation_id} of the spec: it must be served"
                    continue
                r = await c.get(link)
                assert r.status_code == 200, f"{link}: {r.status_code} {r.text[:200]}"
                _links(r.json(), found)
            frontier = found
        assert len(followed) > 500


async def test_relationships_agree_with_the_data():
    app = make_app()
    acc = app.state.emulator.account
    async with client_for(app) as c:
        list_id = max(acc.list_members, key=lambda k: len(acc.list_members[k]))
        members = acc.list_members[list_id]
        ids, nxt = [], f"/api/lists/{list_id}/relationships/profiles"
        while nxt:
            body = (await c.get(nxt)).json()
            assert all(d["type"] == "profile" for d in body["data"])
            ids += [d["id"] for d in body["data"]]
            nxt = body["links"].get("next")
        assert sorted(ids) == sorted(acc.profiles.ids_for(members.profiles))
        pid = ids[0]
        lists = (await c.get(f"/api/profiles/{pid}/lists")).json()["data"]
        expected = [g for g, m in acc.list_members.items() if m.contains(acc.profiles.row_for_id(pid))]
        assert sorted(x["id"] for x in lists) == sorted(expected) and list_id in expected
        rel = (await c.get(f"/api/profiles/{pid}/relationships/lists")).json()["data"]
        assert sorted(x["id"] for x in rel) == sorted(expected)
        # campaign -> message -> campaign, and the recipient estimate of its audience
        campaign = (await c.get("/api/campaigns", params={"filter": "equals(messages.channel,'email')"})).json()["data"][0]
        msg = (await c.get(f"/api/campaigns/{campaign['id']}/campaign-messages")).json()["data"][0]
        back = (await c.get(f"/api/campaign-messages/{msg['id']}/campaign")).json()["data"]
        assert back["id"] == campaign["id"]
        est = (await c.get(f"/api/campaign-recipient-estimations/{campaign['id']}")).json()["data"]
        audience = campaign["attributes"]["audiences"]["included"]
        assert est["attributes"]["estimated_recipient_count"] == sum(len(acc.list_members[a]) for a in audience)
        # tags know what they tag
        tag = (await c.get(f"/api/campaigns/{campaign['id']}/tags")).json()["data"][0]
        tagged = (await c.get(f"/api/tags/{tag['id']}/relationships/campaigns")).json()["data"]
        assert campaign["id"] in [t["id"] for t in tagged]
        event = (await c.get("/api/events", params={"page[size]": "1"})).json()["data"][0]
        assert (await c.get(f"/api/events/{event['id']}/relationships/metric")).json()["data"] == event["relationships"][
            "metric"
        ]["data"]


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/api/nowhere", 404),
        ("GET", "/api/profiles/abc/shoes", 404),
        ("DELETE", "/api/profiles/abc", 405),
        ("PUT", "/api/lists", 405),
        ("POST", "/api/events/abc", 405),
        ("GET", "/api/images", 501),  # Klaviyo's get_images: in the spec, not emulated
    ],
)
async def test_unknown_paths_wrong_methods_and_unemulated_operations(method, path, status):
    async with client_for(make_app()) as c:
        r = await c.request(method, path)
        assert r.status_code == status, r.text
        assert r.json()["errors"][0]["status"] == status


async def test_create_and_update_profile():
    app = make_app()
    async with client_for(app) as c:
        body = {"data": {"type": "profile", "attributes": {"email": "new.one@example.com", "first_name": "New"}}}
        r = await c.post("/api/profiles", json=body)
        assert r.status_code == 201, r.text
        pid = r.json()["data"]["id"]
        dup = await c.post("/api/profiles", json=body)
        assert dup.status_code == 409
        assert dup.json()["errors"][0]["meta"]["duplicate_profile_id"] == pid
        patch = {"data": {"type": "profile", "id": pid, "attributes": {"last_name": "Person"}}}
        r = await c.patch(f"/api/profiles/{pid}", json=patch)
        assert r.status_code == 200 and r.json()["data"]["attributes"]["last_name"] == "Person"
        assert (await c.get(f"/api/profiles/{pid}")).json()["data"]["attributes"]["first_name"] == "New"
        wrong = await c.patch(f"/api/profiles/{pid}", json={"data": {"type": "profile", "id": "other", "attributes": {}}})
        assert wrong.status_code == 400
        unknown = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
        r = await c.patch(f"/api/profiles/{unknown}", json={"data": {"type": "profile", "id": unknown, "attributes": {}}})
        assert r.status_code == 404


async def test_suppression_jobs_can_be_read_back():
    clock = FakeClock()
    app = make_app(clock, job_profiles_per_second=1.0)
    async with client_for(app) as c:
        r = await c.post("/api/profile-suppression-bulk-create-jobs", json=suppression_body(["a@example.com", "b@example.com"]))
        assert r.status_code == 202, r.text
        job_id = r.json()["data"]["id"]
        one = (await c.get(f"/api/profile-suppression-bulk-create-jobs/{job_id}")).json()["data"]
        assert one["id"] == job_id and one["attributes"]["status"] in ("queued", "processing")
        clock.advance(5)
        one = (await c.get(f"/api/profile-suppression-bulk-create-jobs/{job_id}")).json()["data"]
        assert one["attributes"]["status"] == "complete" and one["attributes"]["completed_count"] == 2
        listed = (await c.get("/api/profile-suppression-bulk-create-jobs", params={"filter": "equals(status,'complete')"})).json()
        assert [j["id"] for j in listed["data"]] == [job_id]
        assert (await c.get("/api/profile-suppression-bulk-delete-jobs")).json()["data"] == []
        assert (await c.get(f"/api/profile-suppression-bulk-delete-jobs/{job_id}")).status_code == 404


def test_the_served_operations_are_the_spec_s():
    served = set(spec.emulated_operations())
    assert {
        "get_profile_ids_for_list",
        "create_profile",
        "update_profile",
        "get_campaign_message",
        "get_campaign_recipient_estimation",
        "get_tags",
        "get_bulk_suppress_profiles_job",
    } <= served
