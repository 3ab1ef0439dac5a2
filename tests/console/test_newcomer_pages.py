"""Console rendering a newcomer meets (issue 20): JSON as written (no ``\\u0027``), friendly column
types, and a job page that puts the summary first and pages its row results."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.server import running_emulator

from .conftest import EMULATOR
from .test_pages import _auth, _run_id, _wait_job


@pytest.fixture(scope="module")
def emulator_url():
    """An emulator of this module's own: these exports add profiles, which the other console
    tests, sharing the session's emulator, would count."""
    with running_emulator(EMULATOR) as url:
        yield url


ROWS = 121  # 120 valid emails and one that is not: three pages of 50 row results


def _people(home) -> None:
    emails = [f"person{i:03d}@example.com" for i in range(ROWS - 1)] + ["not an email"]
    names = ["O'Brien"] + [f"P{i}" for i in range(1, ROWS)]
    with open_warehouse(home.ensure().warehouse) as wh:
        wh.write("crm", "people", pa.table({"email": emails, "first_name": names}))


EXPORT = {
    "connection": "emu",
    "database": "crm",
    "operation": "add",
    "list_identify_type": "name",
    "list_value": "Bob's picks",
    "skip_invalid_records": "on",
    "wait_for_completion": "on",
    "waiting_time_for_completion_millis": "300000",
    "sql": "SELECT email, first_name, 1.5 AS score, TIMESTAMPTZ '2024-01-02 03:04:05+00' AS seen FROM people ORDER BY email",
}


async def test_query_preview_names_types_in_a_users_words(client, home):
    _people(home)
    await client.page("/exports")
    await _auth(client)
    r = await client.submit("/exports", {**EXPORT, "action": "query"})
    assert r.status_code == 200 and 'id="query-result"' in r.text, r.text
    heads = re.findall(r"<th>(\w+)<small>([^<]*)</small></th>", r.text)
    assert heads == [("email", "text"), ("first_name", "text"), ("score", "number"), ("seen", "time")]


async def test_json_is_shown_as_written_not_with_script_escapes(client, home):
    _people(home)
    await client.page("/exports")
    await _auth(client)
    r = await client.submit("/exports", {**EXPORT, "action": "dry_run"})
    assert r.status_code == 200, r.text
    assert "Sample payloads" in r.text and "O&#39;Brien" in r.text  # the page shows O'Brien
    assert "\\u0027" not in r.text
    r = await client.submit(
        "/exports",
        {**EXPORT, "action": "schedule", "name": "picks", "preset": "@daily", "schedule_timezone": "UTC", "delay": "0"},
    )
    assert r.status_code == 303, r.text
    page = await client.get("/schedules/picks")
    config = re.search(r'<pre class="card" id="schedule-config">(.*?)</pre>', page.text, re.S).group(1)
    assert "&#34;list_value&#34;: &#34;Bob&#39;s picks&#34;" in config or "Bob&#39;s picks" in config
    assert "\\u0027" not in page.text


async def test_job_page_summary_first_and_rows_fifty_a_page(client, home):
    _people(home)
    await client.page("/exports")
    await _auth(client)
    run_id = _run_id(await client.submit("/exports", {**EXPORT, "action": "run"}))
    assert (await _wait_job(client, run_id))["status"] == "success"
    page = (await client.get(f"/jobs/{run_id}")).text
    summary, facts, rows = (page.index(f'id="{i}"') for i in ("export-summary", "job-facts", "row-results"))
    assert summary < facts < rows
    assert "121 rows: 120 accepted, 1 skipped" in page
    assert page.count('<tr class="outcome-') == 50 and "1–50 shown (page 1 of 3" in page
    assert 'id="page-next"' in page and 'id="page-prev"' not in page
    last = (await client.get(f"/jobs/{run_id}?page=3")).text
    assert last.count('<tr class="outcome-') == 21 and "101–121 shown (page 3 of 3" in last
    assert 'id="page-next"' not in last and 'id="page-prev"' in last
    # a filter keeps its place across pages, and a page past the end shows the last one
    skipped = (await client.get(f"/jobs/{run_id}?outcome=skipped&page=9")).text
    assert skipped.count('<tr class="outcome-skipped"') == 1 and 'id="row-pages"' not in skipped
