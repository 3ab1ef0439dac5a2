"""Auth, revision, validation errors, 404s, rate limits, includes and additional fields."""

from __future__ import annotations

import httpx
import pytest

from klaviyo_emulator.app import create_app
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings

from .conftest import HEADERS


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/vnd.api+json")
    err = response.json()["errors"][0]
    assert err["status"] == status and err["id"] and err["title"] and err["detail"]
    if code:
        assert err["code"] == code
    return err


async def test_auth_and_revision(client):
    _error(await client.get("/api/profiles", headers={"Authorization": ""}), 401, "not_authenticated")
    _error(await client.get("/api/profiles", headers={"Authorization": "Klaviyo-API-Key pk_wrong"}), 401, "authentication_failed")
    _error(
        await client.get("/api/profiles", headers={"Authorization": "Bearer pk_emulator_demo_key"}), 401, "authentication_failed"
    )
    no_revision = {k: v for k, v in HEADERS.items() if k != "revision"}
    async with httpx.AsyncClient(transport=client._transport, base_url="http://e.test", headers=no_revision) as bare:
        assert _error(await bare.get("/api/profiles"), 400)["source"] == {"parameter": "revision"}
    _error(await client.get("/api/profiles", headers={"revision": "July 2026"}), 400)
    _error(await client.get("/api/profiles", headers={"revision": "2026-13-45"}), 400)
    assert (await client.get("/api/profiles", headers={"revision": "2024-10-15"})).status_code == 200


@pytest.mark.parametrize(
    "url,parameter,needle",
    [
        ("/api/profiles?filter=equals(first_name,'Ava')", "filter", "first_name"),
        ("/api/profiles?filter=contains(email,'ava')", "filter", "contains"),
        ("/api/profiles?filter=greater-than(updated,not-a-date)", "filter", "not-a-date"),
        ("/api/events?filter=equals(metric_id,42)", "filter", "metric_id"),
        ("/api/profiles?sort=first_name", "sort", "first_name"),
        ("/api/profiles?page[size]=101", "page[size]", "100"),
        ("/api/profiles?page[size]=abc", "page[size]", "between"),
        ("/api/events?page[size]=1001", "page[size]", "1000"),
        ("/api/profiles?fields[profile]=email,shoe_size", "fields[profile]", "shoe_size"),
        ("/api/profiles?additional-fields[profile]=secrets", "additional-fields[profile]", "secrets"),
        ("/api/events?include=campaign", "include", "campaign"),
        ("/api/profiles?colour=blue", "colour", "colour"),
        ("/api/campaigns?page[size]=5", "filter", "channel"),
        ("/api/campaigns?filter=equals(status,'Sent')", "filter", "channel"),
    ],
)
async def test_invalid_queries_are_400_naming_the_parameter(client, url, parameter, needle):
    err = _error(await client.get(url), 400, "invalid")
    assert err["source"] == {"parameter": parameter} and needle in err["detail"]


async def test_unknown_ids_are_404(client, account):
    for path in (
        "/api/profiles/01GDDKASAP8TKDDA2GRZDSVP4H",
        "/api/lists/NOPE42",
        "/api/lists/NOPE42/profiles",
        "/api/events/01GDDKASAP8TKDDA2GRZDSVP4H/metric",
        "/api/metrics/zzzzzz",
        "/api/flows/x",
        "/api/nowhere",
    ):
        _error(await client.get(path), 404, "not_found")


async def test_includes_and_additional_fields(client, account):
    body = (await client.get("/api/events", params={"page[size]": "50", "include": "metric,profile"})).json()
    included = {(i["type"], i["id"]) for i in body["included"]}
    for event in body["data"]:
        for rel in ("metric", "profile"):
            data = event["relationships"][rel]["data"]
            assert (data["type"], data["id"]) in included
    assert len(included) == len(body["included"])  # no duplicates
    assert "included" not in (await client.get("/api/events", params={"page[size]": "5"})).json()

    list_id = max(account.list_members, key=lambda k: len(account.list_members[k]))
    lst = (await client.get(f"/api/lists/{list_id}", params={"additional-fields[list]": "profile_count"})).json()
    assert lst["data"]["attributes"]["profile_count"] == len(account.list_members[list_id])
    assert "profile_count" not in (await client.get(f"/api/lists/{list_id}")).json()["data"]["attributes"]

    plain = (await client.get("/api/profiles", params={"page[size]": "3"})).json()["data"][0]["attributes"]
    assert "subscriptions" not in plain and "predictive_analytics" not in plain
    extra = (
        await client.get(
            "/api/profiles", params={"page[size]": "3", "additional-fields[profile]": "subscriptions,predictive_analytics"}
        )
    ).json()
    attrs = extra["data"][0]["attributes"]
    assert attrs["subscriptions"]["email"]["marketing"]["consent"] in ("SUBSCRIBED", "UNSUBSCRIBED", "NEVER_SUBSCRIBED")
    assert "predictive_analytics" in attrs

    row = int(account.list_members[list_id].profiles[0])
    profile = (await client.get(f"/api/profiles/{account.profiles.profile_id(row)}", params={"include": "lists,segments"})).json()
    assert {"type": "list", "id": list_id} in profile["data"]["relationships"]["lists"]["data"]
    assert any(i["type"] == "list" and i["id"] == list_id for i in profile["included"])

    campaigns = (
        await client.get(
            "/api/campaigns", params={"filter": "equals(messages.channel,'sms')", "include": "campaign-messages,tags"}
        )
    ).json()
    assert campaigns["data"] and {i["type"] for i in campaigns["included"]} == {"campaign-message", "tag"}
    assert all(
        i["attributes"]["definition"]["channel"] == "sms" for i in campaigns["included"] if i["type"] == "campaign-message"
    )


async def test_suppressed_profiles_are_findable(client):
    body = (
        await client.get(
            "/api/profiles",
            params={
                "filter": "greater-than(subscriptions.email.marketing.suppression.timestamp,2000-01-01T00:00:00Z)",
                "additional-fields[profile]": "subscriptions",
                "page[size]": "100",
            },
        )
    ).json()
    assert body["data"]
    for p in body["data"]:
        marketing = p["attributes"]["subscriptions"]["email"]["marketing"]
        assert marketing["suppression"] and marketing["can_receive_email_marketing"] is False


async def test_rate_limit_answers_429_with_retry_after():
    clock = [1000.0]
    app = create_app(EmulatorSettings(profiles=20, events=20, rate_limits=True), clock=lambda: clock[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e.test", headers=HEADERS) as c:
        assert (await c.get("/api/accounts")).status_code == 200  # burst is 1/s
        r = await c.get("/api/accounts")
        err = _error(r, 429, "throttled")
        assert int(r.headers["Retry-After"]) >= 1
        assert err["detail"] == f"Request was throttled. Expected available in {r.headers['Retry-After']} seconds."
        clock[0] += 1.01
        assert (await c.get("/api/accounts")).status_code == 200
        statuses = [(await c.get("/api/metrics")).status_code for _ in range(11)]  # burst 10/s
        assert statuses.count(200) == 10 and statuses[-1] == 429


def test_real_sockets_on_loopback_and_clean_shutdown():
    settings = EmulatorSettings(profiles=30, events=50, rate_limits=False, latency_ms=5)
    with running_emulator(settings) as base:
        assert base.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base, headers=HEADERS) as c:
            body = c.get("/api/profiles", params={"page[size]": "7"}).json()
            assert len(body["data"]) == 7 and body["links"]["next"].startswith(base + "/api/profiles?")
            assert len(c.get(body["links"]["next"]).json()["data"]) == 7
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/api/profiles", headers=HEADERS, timeout=1)


async def test_revisions_later_than_the_spec_s_are_refused_retired_ones_when_strict(client):
    import klaviyo_spec

    served = klaviyo_spec.spec_revision()
    year = int(served[:4])
    later = f"{year}-12-31" if served < f"{year}-12-31" else f"{year + 1}-01-15"
    err = _error(await client.get("/api/profiles", headers={"revision": later}), 400)
    assert err["source"] == {"parameter": "revision"} and served in err["detail"]
    assert (await client.get("/api/profiles", headers={"revision": served})).status_code == 200
    retired = f"{year - 3}-01-15"
    assert (await client.get("/api/profiles", headers={"revision": retired})).status_code == 200  # lenient by default
    strict = create_app(EmulatorSettings(profiles=5, events=5, lists=1, rate_limits=False, strict_revisions=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=strict), base_url="http://e.test", headers=HEADERS) as c:
        err = _error(await c.get("/api/profiles", headers={"revision": retired}), 400)
        assert "retired" in err["detail"]
        assert (await c.get("/api/profiles", headers={"revision": f"{year - 1}-10-15"})).status_code == 200


async def test_revisions_released_after_the_spec_are_served_with_its_shapes_future_ones_refused(caplog):
    """Klaviyo serves every revision released up to today. One newer than the spec but not in the
    future (the SDK 25.0.0's 2026-10-15 on 2026-12-05) gets the spec's shapes and a header naming
    them; one after the account clock's today is Klaviyo's 400."""
    import klaviyo_spec
    from klaviyo_emulator.app import SERVED_REVISION_HEADER

    served = klaviyo_spec.spec_revision()
    app = create_app(EmulatorSettings(profiles=5, events=5, lists=1, rate_limits=False, clock="fixed:2026-12-05T12:00:00Z"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e.test", headers=HEADERS) as c:
        own = await c.get("/api/profiles", headers={"revision": served})
        assert own.status_code == 200 and SERVED_REVISION_HEADER not in own.headers
        with caplog.at_level("WARNING", logger="klaviyo_emulator"):
            for revision in ("2026-10-15", "2026-12-05"):
                later = await c.get("/api/profiles", headers={"revision": revision})
                assert later.status_code == 200, later.text
                assert later.headers[SERVED_REVISION_HEADER] == served
                assert later.json() == own.json()
        assert any("2026-10-15" in r.getMessage() and served in r.getMessage() for r in caplog.records)
        for future in ("2026-12-06", "2027-01-15"):
            err = _error(await c.get("/api/profiles", headers={"revision": future}), 400, "invalid")
            assert err["source"] == {"parameter": "revision"} and "2026-12-05" in err["detail"]
        refused = await c.get("/api/profiles", headers={"revision": "2026-12-06"})
        assert SERVED_REVISION_HEADER not in refused.headers


async def test_archived_flows_are_listed_only_when_filtered_for(client, account):
    """Klaviyo's get_flows leaves archived flows out unless the filter asks about ``archived``."""
    flows = account.records["flow"]
    archived = {f.id for f in flows if f.values["archived"]}
    assert archived and len(archived) < len(flows)

    async def ids(params: dict) -> list[str]:
        response = await client.get("/api/flows", params=params)
        assert response.status_code == 200, response.text
        return [f["id"] for f in response.json()["data"]]

    default = await ids({})
    assert set(default) == {f.id for f in flows} - archived
    assert set(await ids({"filter": "equals(archived,true)"})) == archived
    assert await ids({"filter": "equals(archived,false)"}) == default
    both = await ids({"filter": "equals(archived,true)", "sort": "-created"}) + await ids({"filter": "equals(archived,false)"})
    assert sorted(both) == sorted(f.id for f in flows)
    one = (await client.get(f"/api/flows/{next(iter(archived))}")).json()["data"]  # a single GET still finds it
    assert one["attributes"]["archived"] is True
    first_live = default[0]
    only = await ids({"filter": f"any(id,['{first_live}','{next(iter(archived))}'])"})
    assert only == [first_live]
