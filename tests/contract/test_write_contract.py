"""Write operations and the job reads: success bodies (202/201/200) validate against the
spec's response schemas (derived and official), bodyless successes are empty, error
bodies validate against the error schema, and the requests we send are valid per the
spec's request schemas (so the emulator's own validation is not the only judge)."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

import klaviyo_spec as spec
from klaviyo_emulator.bodies import request_json_schema
from klaviyo_spec.derive import to_json_schema

from ..emulator.writes_helpers import (
    FakeClock,
    client_for,
    consent_profile,
    ids_body,
    import_body,
    list_body,
    make_app,
    profile,
    subscribe_body,
    suppression_body,
    unsubscribe_body,
)
from .test_emulator_contract import FORMATS, OpenApiValidator, check, official_components


def check_request(op_id: str, body: dict) -> None:
    errors = list(OpenApiValidator(request_json_schema(op_id), format_checker=FORMATS).iter_errors(body))
    assert not errors, f"{op_id} request: " + "; ".join(e.message[:200] for e in errors[:3])


def check_error(body: dict) -> None:
    assert not list(Draft202012Validator(spec.error_json_schema(), format_checker=FORMATS).iter_errors(body))
    if official_components() is not None:
        raw, _ = official_components()
        media = next(iter(raw["components"]["responses"]["ClientError"]["content"].values()))
        assert not list(
            Draft202012Validator(to_json_schema(copy.deepcopy(media["schema"])), format_checker=FORMATS).iter_errors(body)
        )


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def client(clock):
    async with client_for(make_app(clock, job_queued_seconds=1, job_profiles_per_second=20)) as c:
        yield c


async def _post(client, op_id: str, path: str, body: dict, status: int, method: str = "POST"):
    check_request(op_id, body)
    r = await client.request(method, path, json=body)
    assert r.status_code == status, r.text
    if r.content:
        assert r.headers["content-type"].startswith("application/vnd.api+json")
        check(op_id, r.json())
        return r.json()
    return None


async def test_every_write_and_job_read_matches_the_spec(client, clock):
    lst = await _post(client, "create_list", "/api/lists", list_body("Contract"), 201)
    list_id = lst["data"]["id"]
    profiles = [profile(f"c{i}@example.com", first_name="C", location={"city": "Oslo", "latitude": 59.9}) for i in range(30)]
    profiles[5]["attributes"]["email"] = "broken"
    job = await _post(client, "bulk_import_profiles", "/api/profile-bulk-import-jobs", import_body(profiles, list_id), 202)
    job_id = job["data"]["id"]
    base = f"/api/profile-bulk-import-jobs/{job_id}"
    reads = {
        "get_bulk_import_profiles_job": (base, {"include": "lists"}),
        "get_bulk_import_profiles_jobs": ("/api/profile-bulk-import-jobs", {"sort": "-created_at", "page[size]": "5"}),
        "get_errors_for_bulk_import_profiles_job": (f"{base}/import-errors", {"page[size]": "1"}),
        "get_profiles_for_bulk_import_profiles_job": (
            f"{base}/profiles",
            {"additional-fields[profile]": "subscriptions", "page[size]": "7"},
        ),
        "get_profile_ids_for_bulk_import_profiles_job": (f"{base}/relationships/profiles", {"page[size]": "7"}),
        "get_list_for_bulk_import_profiles_job": (f"{base}/lists", {}),
        "get_list_ids_for_bulk_import_profiles_job": (f"{base}/relationships/lists", {}),
    }
    for moment in (0.0, 1.5, 1.0):  # queued, processing, complete
        clock.advance(moment)
        for op_id, (path, params) in reads.items():
            r = await client.get(path, params=params)
            assert r.status_code == 200, (op_id, r.text)
            check(op_id, r.json())
            nxt = r.json()["links"].get("next")
            if nxt:
                check(op_id, (await client.get(nxt)).json())
    done = (await client.get(base)).json()["data"]["attributes"]
    assert done["status"] == "complete" and done["failed_count"] == 1

    ids = [p["id"] for p in (await client.get(f"{base}/relationships/profiles", params={"page[size]": "100"})).json()["data"]]
    assert (
        await _post(
            client, "remove_profiles_from_list", f"/api/lists/{list_id}/relationships/profiles", ids_body(ids[:3]), 204, "DELETE"
        )
        is None
    )
    assert (
        await _post(client, "add_profiles_to_list", f"/api/lists/{list_id}/relationships/profiles", ids_body(ids[:3]), 204)
        is None
    )
    sub = subscribe_body(
        [
            consent_profile(
                "c1@example.com",
                "+15005550006",
                channels=("email", "sms", "sms_transactional"),
                consented_at="2025-01-02T03:04:05Z",
            )
        ],
        list_id,
        historical=True,
    )
    assert await _post(client, "bulk_subscribe_profiles", "/api/profile-subscription-bulk-create-jobs", sub, 202) is None
    unsub = unsubscribe_body([consent_profile("c2@example.com", consent="UNSUBSCRIBED")], list_id)
    assert await _post(client, "bulk_unsubscribe_profiles", "/api/profile-subscription-bulk-delete-jobs", unsub, 202) is None
    await _post(
        client, "bulk_suppress_profiles", "/api/profile-suppression-bulk-create-jobs", suppression_body(["c3@example.com"]), 202
    )
    await _post(
        client, "bulk_suppress_profiles", "/api/profile-suppression-bulk-create-jobs", suppression_body(list_id=list_id), 202
    )
    await _post(
        client,
        "bulk_unsuppress_profiles",
        "/api/profile-suppression-bulk-delete-jobs",
        suppression_body(["c3@example.com"], delete=True),
        202,
    )
    upsert = {"data": {"type": "profile", "attributes": {"email": "c4@example.com", "properties": {"vip": True}}}}
    await _post(client, "create_or_update_profile", "/api/profile-import", upsert, 200)
    upsert["data"]["attributes"]["email"] = "brand-new@example.com"
    await _post(client, "create_or_update_profile", "/api/profile-import", upsert, 201)

    # a data-privacy deletion: 202 without a body, by email and by id; the profiles then 404
    gone = {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": {"type": "profile", "attributes": {"email": "c4@example.com"}}}},
        }
    }
    assert await _post(client, "request_profile_deletion", "/api/data-privacy-deletion-jobs", gone, 202) is None
    by_id = {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": {"type": "profile", "id": ids[5], "attributes": {}}}},
        }
    }
    assert await _post(client, "request_profile_deletion", "/api/data-privacy-deletion-jobs", by_id, 202) is None
    assert (await client.get(f"/api/profiles/{ids[5]}")).status_code == 404

    clock.advance(5)
    # Every profile the writes touched still renders valid with subscriptions (and in list member pages).
    for path in ("/api/profiles", f"/api/lists/{list_id}/profiles"):
        r = await client.get(path, params={"additional-fields[profile]": "subscriptions", "page[size]": "100"})
        check("get_profiles" if path == "/api/profiles" else "get_profiles_for_list", r.json())
    touched = (
        await client.get(
            "/api/profiles",
            params={
                "filter": "equals(email,'c1@example.com')",
                "additional-fields[profile]": "subscriptions,predictive_analytics",
            },
        )
    ).json()
    check("get_profiles", touched)
    assert touched["data"][0]["attributes"]["subscriptions"]["sms"]["transactional"]["consent"] == "SUBSCRIBED"
    check("get_list", (await client.get(f"/api/lists/{list_id}", params={"additional-fields[list]": "profile_count"})).json())
    check("get_lists", (await client.get("/api/lists")).json())


@pytest.mark.parametrize(
    "method,path,body,status",
    [
        ("POST", "/api/profile-bulk-import-jobs", import_body([profile(f"e{i}@e.com") for i in range(10_001)]), 400),
        ("POST", "/api/profile-bulk-import-jobs", {"data": {"type": "nope"}}, 400),
        ("POST", "/api/lists", {"data": {"type": "list", "attributes": {"name": 5}}}, 400),
        ("POST", "/api/lists/NOPE/relationships/profiles", ids_body(["x"]), 404),
        (
            "POST",
            "/api/profile-subscription-bulk-create-jobs",
            subscribe_body([consent_profile("a@e.com")], historical=True),
            400,
        ),
        (
            "POST",
            "/api/profile-subscription-bulk-delete-jobs",
            unsubscribe_body([consent_profile("bad", consent="UNSUBSCRIBED")]),
            400,
        ),
        ("POST", "/api/profile-suppression-bulk-create-jobs", suppression_body(), 400),
        ("POST", "/api/profile-import", {"data": {"type": "profile", "attributes": {"phone_number": "12"}}}, 400),
        ("PATCH", "/api/lists", {}, 405),
        ("GET", "/api/profile-bulk-import-jobs/NOPE/import-errors", None, 404),
    ],
)
async def test_write_errors_match_error_schema(client, method, path, body, status):
    r = await client.request(method, path, json=body)
    assert r.status_code == status, r.text
    body = r.json()
    check_error(body)
    if status == 400:
        assert all(e["source"].get("pointer", "").startswith("/data") for e in body["errors"])
