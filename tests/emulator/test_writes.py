"""Write endpoints over HTTP: happy paths, validation errors with pointers, limits,
job progression on a fake clock, and state that later reads show."""

from __future__ import annotations

import orjson

from .writes_helpers import (
    FakeClock,
    client_for,
    consent_profile,
    ids_body,
    import_body,
    list_body,
    make_app,
    pointers,
    profile,
    subscribe_body,
    suppression_body,
    unsubscribe_body,
)

JOBS = "/api/profile-bulk-import-jobs"
SUBSCRIBE = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"


async def _new_list(c, name="Exported") -> str:
    r = await c.post("/api/lists", json=list_body(name))
    assert r.status_code == 201, r.text
    return r.json()["data"]["id"]


async def _profile_by_email(c, email: str) -> dict:
    r = await c.get("/api/profiles", params={"filter": f"equals(email,'{email}')", "additional-fields[profile]": "subscriptions"})
    data = r.json()["data"]
    assert len(data) == 1, (email, r.text)
    return data[0]


async def test_bulk_import_job_progresses_and_lands_in_the_list():
    clock = FakeClock()
    app = make_app(clock, job_queued_seconds=2, job_profiles_per_second=10)
    existing = app.state.emulator.account.profiles.base.email(7)
    async with client_for(app) as c:
        list_id = await _new_list(c)
        profiles = [profile(f"new{i}@example.com", first_name="Ann", properties={"tier": "gold"}) for i in range(25)]
        profiles[4]["attributes"]["email"] = "not-an-email"
        profiles[9]["attributes"]["phone_number"] = "555-1234"
        profiles.append(profile(existing, last_name="Updated"))
        r = await c.post(JOBS, json=import_body(profiles, list_id))
        assert r.status_code == 202, r.text
        job = r.json()["data"]
        assert job["type"] == "profile-bulk-import-job" and job["attributes"]["status"] == "queued"
        assert job["attributes"]["total_count"] == 26 and job["relationships"]["lists"]["data"] == [
            {"type": "list", "id": list_id}
        ]
        url = f"{JOBS}/{job['id']}"

        clock.advance(3)  # 1 s of processing at 10/s
        attrs = (await c.get(url)).json()["data"]["attributes"]
        assert attrs["status"] == "processing" and attrs["completed_count"] == 8 and attrs["failed_count"] == 2
        assert (await c.get(f"/api/lists/{list_id}/profiles")).json()["data"] == []  # nothing applied yet

        clock.advance(2)
        attrs = (await c.get(url)).json()["data"]["attributes"]
        assert attrs["status"] == "complete" and attrs["completed_count"] == 24 and attrs["failed_count"] == 2
        assert attrs["completed_at"] and attrs["started_at"]

        count = (await c.get(f"/api/lists/{list_id}", params={"additional-fields[list]": "profile_count"})).json()
        assert count["data"]["attributes"]["profile_count"] == 24
        new = await _profile_by_email(c, "new12@example.com")
        assert new["attributes"]["first_name"] == "Ann" and new["attributes"]["properties"] == {"tier": "gold"}
        updated = await _profile_by_email(c, existing)
        assert updated["attributes"]["last_name"] == "Updated" and updated["attributes"]["first_name"]  # merged, not replaced
        assert app.state.emulator.snapshot()["new_profiles"] == 23  # the existing email matched its profile

        ids = (await c.get(f"{url}/relationships/profiles", params={"page[size]": "100"})).json()["data"]
        assert len(ids) == 24 and updated["id"] in {i["id"] for i in ids}
        listed = (await c.get(f"{url}/lists")).json()["data"]
        assert [x["id"] for x in listed] == [list_id]
        jobs = (await c.get(JOBS, params={"filter": "equals(status,'complete')"})).json()["data"]
        assert [j["id"] for j in jobs] == [job["id"]]


async def test_import_errors_are_paged_and_point_at_their_rows():
    clock = FakeClock()
    app = make_app(clock)
    bad = {3, 8, 11, 20, 21}
    async with client_for(app) as c:
        profiles = [profile(f"p{i}@example.com" if i not in bad else f"p{i}-at-example.com") for i in range(30)]
        job_id = (await c.post(JOBS, json=import_body(profiles))).json()["data"]["id"]
        clock.advance(1)
        url = f"{JOBS}/{job_id}/import-errors"
        r = await c.get(url, params={"page[size]": "2"})
        seen = []
        while True:
            body = r.json()
            seen += body["data"]
            if not body["links"].get("next"):
                break
            r = await c.get(body["links"]["next"])
        assert len(seen) == 5 and len({e["id"] for e in seen}) == 5
        rows = [int(e["attributes"]["source"]["pointer"].split("/")[5]) for e in seen]
        assert rows == sorted(bad)
        for e, row in zip(seen, rows):
            assert e["attributes"]["source"]["pointer"] == f"/data/attributes/profiles/data/{row}/attributes/email"
            assert e["attributes"]["original_payload"] == profiles[row]


async def test_bulk_import_limits_and_schema_errors():
    app = make_app()
    async with client_for(app) as c:
        r = await c.post(JOBS, json=import_body([profile(f"x{i}@e.com") for i in range(10_001)]))
        assert pointers(r) == ["/data/attributes/profiles/data"] and "10,000" in r.json()["errors"][0]["detail"]

        big = [profile(f"y{i}@e.com", properties={"blob": "x" * 600}) for i in range(9_000)]
        r = await c.post(JOBS, content=orjson.dumps(import_body(big)))
        assert r.status_code == 413 and r.json()["errors"][0]["code"] == "payload_too_large"

        fat = [profile(f"z{i}@e.com") for i in range(5)]
        fat[2]["attributes"]["properties"] = {"notes": "x" * 110_000}
        assert pointers(await c.post(JOBS, json=import_body(fat))) == ["/data/attributes/profiles/data/2"]

        typed = [profile(f"w{i}@e.com") for i in range(5)]
        typed[3]["attributes"]["email"] = 42
        typed[4]["type"] = "person"
        assert pointers(await c.post(JOBS, json=import_body(typed))) == [
            "/data/attributes/profiles/data/3/attributes/email",
            "/data/attributes/profiles/data/4/type",
        ]
        assert pointers(await c.post(JOBS, json={"data": {"attributes": {}}})) == ["/data/type", "/data/attributes/profiles"]
        assert pointers(await c.post(JOBS, json=import_body([profile("a@e.com")], "NOLIST"))) == [
            "/data/relationships/lists/data/0/id"
        ]
        r = await c.post(JOBS, content=b"{not json")
        assert r.status_code == 400
        assert (await c.get(f"{JOBS}/NOPE")).status_code == 404
        assert (await c.put(JOBS, json={})).status_code == 405


async def test_create_list_is_found_by_name_and_daily_limit_applies():
    clock = FakeClock()
    app = make_app(clock, rate_limits=True)
    async with client_for(app) as c:
        list_id = await _new_list(c, "Spring Export")
        found = (await c.get("/api/lists", params={"filter": "equals(name,'Spring Export')"})).json()["data"]
        assert [x["id"] for x in found] == [list_id]
        assert pointers(await c.post("/api/lists", json={"data": {"type": "list", "attributes": {}}})) == [
            "/data/attributes/name"
        ]
        for i in range(148):  # 150 requests in all: the rejected one counts too, as at Klaviyo's gateway
            clock.advance(1)
            r = await c.post("/api/lists", json=list_body(f"L{i}"))
            assert r.status_code == 201, (i, r.text)
        clock.advance(1)
        r = await c.post("/api/lists", json=list_body("one too many"))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 3600
        clock.advance(86_400)
        assert (await c.post("/api/lists", json=list_body("next day"))).status_code == 201


async def test_list_relationships_add_remove_and_limits():
    app = make_app()
    emu = app.state.emulator
    async with client_for(app) as c:
        list_id = await _new_list(c)
        ids = emu.state.profile_ids(range(40))
        url = f"/api/lists/{list_id}/relationships/profiles"
        r = await c.post(url, json=ids_body(ids))
        assert r.status_code == 204 and r.content == b""
        assert (await c.post(url, json=ids_body(ids[:5]))).status_code == 204  # idempotent
        lst = (await c.get(f"/api/lists/{list_id}", params={"additional-fields[list]": "profile_count"})).json()
        assert lst["data"]["attributes"]["profile_count"] == 40
        members = (await c.get(f"/api/lists/{list_id}/profiles", params={"page[size]": "100"})).json()["data"]
        assert sorted(m["id"] for m in members) == sorted(ids)

        r = await c.request("DELETE", url, json=ids_body(ids[:15]))
        assert r.status_code == 204
        assert len(emu.snapshot()["list_members"][list_id]) == 25

        assert pointers(await c.post(url, json=ids_body(ids[:1] * 1_001))) == ["/data"]
        assert pointers(await c.request("DELETE", url, json=ids_body(ids[:1] * 1_001))) == ["/data"]
        unknown = ids[:3] + ["01ZZZZZZZZZZZZZZZZZZZZZZZZ"]
        assert pointers(await c.post(url, json=ids_body(unknown))) == ["/data/3/id"]
        assert (await c.post("/api/lists/NOPE/relationships/profiles", json=ids_body(ids[:1]))).status_code == 404
        assert pointers(await c.post(url, json={"data": [{"type": "list", "id": ids[0]}]})) == ["/data/0/type"]


async def test_subscribe_changes_consent_and_adds_to_list():
    app = make_app()
    async with client_for(app) as c:
        list_id = await _new_list(c)
        body = subscribe_body(
            [
                consent_profile("sub1@example.com"),
                consent_profile(phone="+15005550006", channels=("sms", "sms_transactional")),
                consent_profile(
                    "both@example.com", "+15005550007", channels=("email", "sms"), consented_at="2024-03-01T10:00:00Z"
                ),
            ],
            list_id,
            historical=True,
        )
        body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]["email"]["marketing"]["consented_at"] = (
            "2024-01-01T00:00:00Z"
        )
        body["data"]["attributes"]["profiles"]["data"][1]["attributes"]["subscriptions"]["sms"]["marketing"]["consented_at"] = (
            "2024-01-01T00:00:00Z"
        )
        body["data"]["attributes"]["profiles"]["data"][1]["attributes"]["subscriptions"]["sms"]["transactional"][
            "consented_at"
        ] = "2024-01-01T00:00:00Z"
        r = await c.post(SUBSCRIBE, json=body)
        assert r.status_code == 202 and r.content == b""
        one = (await _profile_by_email(c, "both@example.com"))["attributes"]["subscriptions"]
        assert one["email"]["marketing"]["consent"] == "SUBSCRIBED" and one["email"]["marketing"]["can_receive_email_marketing"]
        assert one["email"]["marketing"]["consent_timestamp"] == "2024-03-01T10:00:00+00:00"
        assert one["sms"]["marketing"]["consent"] == "SUBSCRIBED"
        sms = (
            await c.get(
                "/api/profiles",
                params={"filter": "equals(phone_number,'+15005550006')", "additional-fields[profile]": "subscriptions"},
            )
        ).json()
        subs = sms["data"][0]["attributes"]["subscriptions"]["sms"]
        assert subs["marketing"]["consent"] == "SUBSCRIBED" and subs["transactional"]["consent"] == "SUBSCRIBED"
        assert len(app.state.emulator.snapshot()["list_members"][list_id]) == 3


async def test_subscribe_validation():
    app = make_app()
    async with client_for(app) as c:
        r = await c.post(SUBSCRIBE, json=subscribe_body([consent_profile(f"s{i}@e.com") for i in range(1_001)]))
        assert pointers(r) == ["/data/attributes/profiles/data"]
        base = "/data/attributes/profiles/data"
        r = await c.post(
            SUBSCRIBE, json=subscribe_body([consent_profile("a@e.com"), consent_profile("b@e.com")], historical=True)
        )
        assert pointers(r) == [
            f"{base}/0/attributes/subscriptions/email/marketing/consented_at",
            f"{base}/1/attributes/subscriptions/email/marketing/consented_at",
        ]
        r = await c.post(
            SUBSCRIBE, json=subscribe_body([consent_profile("a@e.com", consented_at="2999-01-01T00:00:00Z")], historical=True)
        )
        assert pointers(r) == [f"{base}/0/attributes/subscriptions/email/marketing/consented_at"]
        r = await c.post(SUBSCRIBE, json=subscribe_body([consent_profile("a@e.com", channels=("sms",))]))
        assert pointers(r) == [f"{base}/0/attributes/phone_number"]
        r = await c.post(
            SUBSCRIBE, json=subscribe_body([consent_profile("a@e.com"), consent_profile(phone="12345", channels=("sms",))])
        )
        assert pointers(r) == [f"{base}/1/attributes/phone_number"]
        r = await c.post(SUBSCRIBE, json=subscribe_body([consent_profile("a@e.com", consent="UNSUBSCRIBED")]))
        assert pointers(r) == [f"{base}/0/attributes/subscriptions/email/marketing/consent"]
        assert pointers(await c.post(SUBSCRIBE, json=subscribe_body([consent_profile("a@e.com")], "NOLIST"))) == [
            "/data/relationships/list/data/id"
        ]
        assert app.state.emulator.snapshot()["subscriptions"] == {}  # nothing applied


async def test_unsubscribe_with_list_removes_members_and_unsubscribes_others_globally():
    app = make_app()
    emu = app.state.emulator
    acc = emu.account
    list_id = next(iter(acc.list_members))
    member = int(acc.list_members[list_id].profiles[0])
    outsider = next(r for r in range(acc.profiles.count) if not acc.list_members[list_id].contains(r))
    m_email, o_email = acc.profiles.base.email(member), acc.profiles.base.email(outsider)
    async with client_for(app) as c:
        r = await c.post(
            UNSUBSCRIBE,
            json=unsubscribe_body(
                [consent_profile(m_email, consent="UNSUBSCRIBED"), consent_profile(o_email, consent="UNSUBSCRIBED")], list_id
            ),
        )
        assert r.status_code == 202, r.text
        m = (await _profile_by_email(c, m_email))["attributes"]["subscriptions"]["email"]["marketing"]
        o = (await _profile_by_email(c, o_email))["attributes"]["subscriptions"]["email"]["marketing"]
        assert list_id in [s["list_id"] for s in m["list_suppressions"]]
        assert not acc.list_members[list_id].contains(member)
        assert o["consent"] == "UNSUBSCRIBED" and not o["can_receive_email_marketing"]
        assert "UNSUBSCRIBE" in [s["reason"] for s in o["suppression"]]
        r = await c.post(
            UNSUBSCRIBE, json=unsubscribe_body([consent_profile(f"u{i}@e.com", consent="UNSUBSCRIBED") for i in range(101)])
        )
        assert pointers(r) == ["/data/attributes/profiles/data"]


async def test_consent_changes_can_lag_behind_the_202():
    clock = FakeClock()
    app = make_app(clock, consent_delay_seconds=5)
    async with client_for(app) as c:
        assert (await c.post(SUBSCRIBE, json=subscribe_body([consent_profile("late@example.com")]))).status_code == 202
        r = await c.get("/api/profiles", params={"filter": "equals(email,'late@example.com')"})
        assert r.json()["data"] == []
        clock.advance(5)
        sub = (await _profile_by_email(c, "late@example.com"))["attributes"]["subscriptions"]
        assert sub["email"]["marketing"]["consent"] == "SUBSCRIBED"


async def test_suppress_and_unsuppress():
    clock = FakeClock()
    app = make_app(clock)
    emu = app.state.emulator
    email = emu.account.profiles.base.email(11)
    async with client_for(app) as c:
        r = await c.post("/api/profile-suppression-bulk-create-jobs", json=suppression_body([email, "fresh@example.com"]))
        assert r.status_code == 202 and r.json()["data"]["attributes"]["total_count"] == 2
        clock.advance(1)
        found = (
            await c.get(
                "/api/profiles",
                params={
                    "filter": "equals(subscriptions.email.marketing.suppression.reason,'USER_SUPPRESSED')",
                    "page[size]": "100",
                },
            )
        ).json()["data"]
        assert {email, "fresh@example.com"} <= {p["attributes"]["email"] for p in found}
        r = await c.post(
            "/api/profile-suppression-bulk-delete-jobs", json=suppression_body([email, "nobody@example.com"], delete=True)
        )
        assert r.status_code == 202
        clock.advance(1)
        marketing = (await _profile_by_email(c, email))["attributes"]["subscriptions"]["email"]["marketing"]
        assert "USER_SUPPRESSED" not in [s["reason"] for s in marketing["suppression"]]
        assert pointers(
            await c.post("/api/profile-suppression-bulk-create-jobs", json=suppression_body([f"s{i}@e.com" for i in range(101)]))
        ) == ["/data/attributes/profiles/data"]
        assert pointers(await c.post("/api/profile-suppression-bulk-create-jobs", json=suppression_body(["bad"]))) == [
            "/data/attributes/profiles/data/0/attributes/email"
        ]


async def test_create_or_update_profile():
    app = make_app()
    async with client_for(app) as c:
        body = {"data": {"type": "profile", "attributes": {"email": "one@example.com", "first_name": "One"}}}
        r = await c.post("/api/profile-import", json=body)
        assert r.status_code == 201 and r.json()["data"]["attributes"]["first_name"] == "One"
        pid = r.json()["data"]["id"]
        body["data"]["attributes"] = {"email": "one@example.com", "last_name": "Two"}
        r = await c.post("/api/profile-import", json=body)
        assert r.status_code == 200 and r.json()["data"]["id"] == pid
        assert r.json()["data"]["attributes"]["first_name"] == "One" and r.json()["data"]["attributes"]["last_name"] == "Two"
        assert (await c.get(f"/api/profiles/{pid}")).json()["data"]["attributes"]["last_name"] == "Two"
        bad = {"data": {"type": "profile", "attributes": {"email": "nope"}}}
        assert pointers(await c.post("/api/profile-import", json=bad)) == ["/data/attributes/email"]
        big = {"data": {"type": "profile", "attributes": {"email": "x@example.com", "properties": {"n": "x" * 110_000}}}}
        assert (await c.post("/api/profile-import", json=big)).status_code == 413


async def _script(app) -> tuple[dict, list]:
    clock = app.state.emulator.clock
    seen = []
    async with client_for(app) as c:
        list_id = await _new_list(c, "Det")
        r = await c.post(JOBS, json=import_body([profile(f"d{i}@example.com") for i in range(50)] + [profile("bad")], list_id))
        seen.append(r.json()["data"]["id"])
        clock.advance(1)
        await c.post(
            SUBSCRIBE, json=subscribe_body([consent_profile("d3@example.com"), consent_profile("e@example.com")], list_id)
        )
        ids = [p["id"] for p in (await c.get(f"/api/lists/{list_id}/profiles", params={"page[size]": "100"})).json()["data"]]
        await c.request("DELETE", f"/api/lists/{list_id}/relationships/profiles", json=ids_body(ids[:7]))
        seen.append(ids)
        seen.append((await c.get(f"{JOBS}/{seen[0]}/import-errors")).json()["data"][0]["id"])
    return app.state.emulator.snapshot(), seen


async def test_same_seed_and_writes_give_the_same_state_and_ids():
    first = await _script(make_app(FakeClock()))
    second = await _script(make_app(FakeClock()))
    assert first == second
    other = await _script(make_app(FakeClock(), seed=6))
    assert other[0]["list_members"] != first[0]["list_members"]


async def test_reads_before_writes_are_untouched_and_fast_path_shares_columns():
    app = make_app()
    emu = app.state.emulator
    p = emu.account.profiles
    assert p.updated is p.base.updated and p.count == p.base.count  # no copy before the first write
    async with client_for(app) as c:
        await c.post("/api/profile-import", json={"data": {"type": "profile", "attributes": {"email": "n@example.com"}}})
        body = (await c.get("/api/profiles", params={"sort": "-created", "page[size]": "1"})).json()
        assert body["data"][0]["attributes"]["email"] == "n@example.com"
        recent = (await c.get("/api/profiles", params={"filter": "greater-than(updated,2025-12-31T23:59:59Z)"})).json()["data"]
        assert "n@example.com" in [x["attributes"]["email"] for x in recent]
    assert p.base.count == 300 and p.count == 301
