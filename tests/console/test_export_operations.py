"""The console's export form with the operations of issue 19: mirror (its fields, a dry run that
shows counts and samples), upsert and track_events (no list), another operation's field ignored."""

from __future__ import annotations

import re

import pytest

from klaviyo_emulator.server import running_emulator

from .conftest import EMULATOR
from .test_pages import _auth, _run_id, _wait_job


@pytest.fixture(scope="module")
def emulator_url():
    """An emulator of this module's own: the profiles and events these exports write must not
    change the account the other console tests count."""
    with running_emulator(EMULATOR) as url:
        yield url


SQL_PEOPLE = "SELECT 'ann.c@example.com' AS email UNION ALL SELECT 'bob.c@example.com'"


async def test_mirror_dry_run_and_run_from_the_form(client):
    await client.page("/exports")
    await _auth(client)
    page = await client.get("/exports")
    for op in ("mirror", "upsert", "track_events"):
        assert f'<option value="{op}"' in page.text
    assert 'name="max_removals"' in page.text and 'name="allow_empty"' in page.text
    base = {
        "connection": "emu",
        "database": "",
        "operation": "mirror",
        "list_identify_type": "name",
        "list_value": "Console mirror",
        "skip_invalid_records": "on",
        "wait_for_completion": "on",
        "waiting_time_for_completion_millis": "300000",
        "sql": SQL_PEOPLE,
        "backfill_older_than": "7d",
    }
    r = await client.submit("/exports", {**base, "action": "dry_run"})
    assert r.status_code == 200, r.text
    assert 'id="dry-error"' not in r.text, re.search(r'id="dry-error">(.*?)<', r.text).group(1)
    details = re.search(r'id="dry-details">(.*?)</pre>', r.text, re.S).group(1)
    assert "would add 2, 0 already members, would remove 0" in details
    assert "would add: email:ann.c@example.com" in details
    r = await client.submit("/exports", {**base, "max_removals": "lots", "action": "dry_run"})
    assert r.status_code == 400 and "max_removals" in r.text
    r = await client.submit("/exports", {**base, "action": "run"})
    p = await _wait_job(client, _run_id(r))
    assert p["status"] == "success", p


async def test_upsert_and_track_events_from_the_form_take_no_list(client):
    await client.page("/exports")
    await _auth(client)
    base = {
        "connection": "emu",
        "database": "",
        "list_identify_type": "name",
        "list_value": "ignored",
        "skip_invalid_records": "on",
        "waiting_time_for_completion_millis": "300000",
        "max_removals": "5",
    }
    r = await client.submit("/exports", {**base, "operation": "upsert", "sql": SQL_PEOPLE, "action": "run"})
    assert (await _wait_job(client, _run_id(r)))["status"] == "success"
    sql = (
        "SELECT 'ann.c@example.com' AS email, 'Console Event' AS metric_name, "
        "TIMESTAMP '2025-01-01 10:00:00' AS time, 3.5 AS value"
    )
    r = await client.submit("/exports", {**base, "operation": "track_events", "sql": sql, "action": "dry_run"})
    assert r.status_code == 200 and 'id="dry-send">1<' in r.text, r.text[-2000:]
    r = await client.submit("/exports", {**base, "operation": "track_events", "sql": sql, "action": "run"})
    assert (await _wait_job(client, _run_id(r)))["status"] == "success"


async def test_a_failed_export_job_shows_its_error_fields(client):
    """The job page and progress.json read the job record's error as data (the column it names)."""
    await client.page("/exports")
    await _auth(client)
    sql = "SELECT 'ann.c@example.com' AS email, 'Console Event' AS metric_name"  # no column time
    r = await client.submit(
        "/exports",
        {
            "connection": "emu",
            "database": "",
            "operation": "track_events",
            "waiting_time_for_completion_millis": "300000",
            "sql": sql,
            "action": "run",
        },
    )
    run_id = _run_id(r)
    p = await _wait_job(client, run_id)
    assert p["status"] == "error", p
    assert (p["error_detail"]["code"], p["error_detail"]["field"]) == ("export", "time")
    page = await client.get(f"/jobs/{run_id}")
    assert re.search(r'id="job-error-field">time<', page.text), page.text[-3000:]
