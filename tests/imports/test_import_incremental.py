"""Incremental second runs of non-event sources: records changed or added in the account after
the first run are the only ones the second run fetches, and merge leaves the table equal to the API.

Each test has its own small emulator on a fake clock (``account`` in conftest; the shared one
must not change): the account's "now" is its settings' ``now`` plus the clock's elapsed seconds,
so a write made after advancing the clock is stamped after the first run's cursor.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from klaviyo_bridge.api import query as q
from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.imports.runner import effective_stream, run_import

from .conftest import SMALL, make_config
from .test_import_values import actual_row, expected_row

NOW = datetime.fromtimestamp(SMALL.now, timezone.utc)
LATER = NOW + timedelta(hours=1)


def client(transport) -> KlaviyoClient:
    cfg = make_config("profiles")
    return KlaviyoClient(cfg.source.client_settings(), transport=transport, limiter=RateLimiter(enabled=False))


async def change_profiles(transport, existing_ids: list[str], new_emails: list[str]) -> None:
    async with client(transport) as c:
        for pid in existing_ids:
            await c.request(
                "create_or_update_profile",
                json={"data": {"type": "profile", "id": pid, "attributes": {"first_name": "Changed", "title": "Second run"}}},
            )
        for email in new_emails:
            await c.request(
                "create_or_update_profile",
                json={"data": {"type": "profile", "attributes": {"email": email, "first_name": "New"}}},
            )


async def api_profiles(transport) -> list[dict]:
    async with client(transport) as c:
        return [
            r
            async for r in c.records(
                "get_profiles", query=q.Query(page_size=100, additional_fields={"profile": ["subscriptions"]})
            )
        ]


@pytest.mark.parametrize("field, changed", [("updated", 5), ("created", 2)])
async def test_profiles_second_run_fetches_only_changed_records(account, warehouse, field, changed):
    """3 updated + 2 created after the first run: `updated` fetches all 5, `created` only the 2 new."""
    clock, transport = account
    cfg = make_config("profiles", mode="merge", incremental=True, incremental_field=field)
    first = await run_import(cfg, warehouse, "klaviyo", "profiles", transport=transport, now=NOW)
    before = await api_profiles(transport)
    assert first.rows == len(before) == SMALL.profiles

    clock.t += 60
    touched = [before[7]["id"], before[150]["id"], before[-1]["id"]]
    await change_profiles(transport, touched, ["second.run.a@example.com", "second.run.b@example.com"])
    second = await run_import(cfg, warehouse, "klaviyo", "profiles", transport=transport, now=LATER)
    assert second.start == NOW and second.end == LATER
    assert second.rows == changed

    after = await api_profiles(transport)
    columns = effective_stream(cfg).columns()
    stored = {r["id"]: actual_row(columns, r) for r in warehouse.table_arrow("klaviyo", "profiles").to_pylist()}
    new_ids = {r["id"] for r in after} - {r["id"] for r in before}
    assert len(new_ids) == 2
    assert stored.keys() == {r["id"] for r in after}  # merge: the new ones added, nothing doubled
    for record in after:
        if record["id"] in new_ids or (field == "updated" and record["id"] in touched):
            assert stored[record["id"]] == expected_row(columns, record, [], {})
    changed_rows = [stored[i] for i in touched]
    if field == "updated":
        assert all(r["first_name"] == "Changed" and r["title"] == "Second run" for r in changed_rows)
    else:  # not re-fetched: the first run's values stay
        assert not any(r["first_name"] == "Changed" for r in changed_rows)


async def test_lists_created_second_run_fetches_only_the_new_list(account, warehouse):
    """Lists' `created` has only greater-than: the run's range is cut out of the answer afterwards."""
    clock, transport = account
    cfg = make_config("lists", mode="merge", incremental=True, incremental_field="created")
    first = await run_import(cfg, warehouse, "klaviyo", "lists", transport=transport, now=NOW)
    assert first.rows == SMALL.lists
    clock.t += 60
    async with client(transport) as c:
        doc = await c.request("create_list", json={"data": {"type": "list", "attributes": {"name": "Second run"}}})
        lists = [r async for r in c.records("get_lists")]
    second = await run_import(cfg, warehouse, "klaviyo", "lists", transport=transport, now=LATER)
    assert second.rows == 1
    columns = effective_stream(cfg).columns()
    stored = {r["id"]: actual_row(columns, r) for r in warehouse.table_arrow("klaviyo", "lists").to_pylist()}
    assert stored == {r["id"]: expected_row(columns, r, [], {}) for r in lists}
    assert stored[doc["data"]["id"]]["name"] == "Second run"


async def test_global_exclusions_second_run_fetches_only_the_newly_suppressed(account, warehouse):
    """The time field is the suppression's timestamp: profiles suppressed after the first run, and only they."""
    clock, transport = account
    cfg = make_config("global_exclusions", mode="merge", incremental=True)
    first = await run_import(cfg, warehouse, "klaviyo", "excl", transport=transport, now=NOW)
    before = await suppressed_profiles(transport)
    assert first.rows == len(before) > 0
    clock.t += 60
    async with client(transport) as c:
        everyone = [r async for r in c.records("get_profiles", query=q.Query(page_size=100))]
        emails = [r["attributes"]["email"] for r in everyone if r["id"] not in before][:2] + ["second.run@example.com"]
        await c.request(
            "bulk_suppress_profiles",
            json={
                "data": {
                    "type": "profile-suppression-bulk-create-job",
                    "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": e}} for e in emails]}},
                }
            },
        )
    clock.t += 1  # the job completes
    after = await suppressed_profiles(transport)
    assert len(after) == len(before) + 3
    second = await run_import(cfg, warehouse, "klaviyo", "excl", transport=transport, now=LATER)
    assert second.rows == 3
    columns = effective_stream(cfg).columns()
    stored = {r["id"]: actual_row(columns, r) for r in warehouse.table_arrow("klaviyo", "excl").to_pylist()}
    assert stored.keys() == after.keys()
    for pid in after.keys() - before.keys():
        assert stored[pid] == expected_row(columns, after[pid], [], {})


async def suppressed_profiles(transport) -> dict[str, dict]:
    async with client(transport) as c:
        return {
            r["id"]: r
            async for r in c.records(
                "get_profiles", query=q.Query(page_size=100, additional_fields={"profile": ["subscriptions"]})
            )
            if r["attributes"]["subscriptions"]["email"]["marketing"].get("suppression")
        }
