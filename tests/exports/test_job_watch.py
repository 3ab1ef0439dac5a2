"""Bulk import jobs are waited for by listing the newest jobs, with a per-job read as fallback."""

from __future__ import annotations

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.exports.jobwatch import JobWatcher
from klaviyo_bridge.store.factory import open_warehouse

from .helpers import export, make_app, no_sleep, outcomes, settings


@pytest.fixture
def wh(tmp_path):
    with open_warehouse(tmp_path / "wh.duckdb") as w:
        yield w


def _import_body(email: str) -> dict:
    profile = {"type": "profile", "attributes": {"email": email}}
    return {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [profile]}}}}


async def test_a_job_older_than_the_newest_page_is_read_by_its_id():
    app = make_app()
    client = KlaviyoClient(
        settings(operation="remove_profiles", list_identify_type="id", list_value="L").client_settings(),
        transport=httpx.ASGITransport(app=app),
        limiter=RateLimiter(enabled=False),
    )
    try:
        ids = [
            (await client.request("bulk_import_profiles", json=_import_body(f"j{i}@example.com")))["data"]["id"]
            for i in range(103)
        ]
        watcher = JobWatcher(client, no_sleep, lambda: 0.0, 0.0)
        newest = await watcher._newest_jobs()
        assert ids[0] not in newest and ids[-1] in newest and len(newest) == 100
        before = client.stats.requests
        status, attrs = await watcher.wait(ids[0], deadline=1e9)
        assert status == "complete" and attrs["completed_count"] == 1
        assert client.stats.requests == before + 2  # the newest page, then the job by its id
        status, attrs = await watcher.wait(ids[-1], deadline=1e9)
        assert status == "complete" and client.stats.requests == before + 3  # found on the page
    finally:
        await client.aclose()


async def test_jobs_still_running_when_the_waiting_time_ends_are_reported_as_submitted(wh):
    app = make_app(job_queued_seconds=10_000)  # the emulator's jobs stay queued far longer than we wait
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += max(seconds, 1.0)

    s = settings(
        operation="add",
        list_identify_type="id",
        list_value=app.state.emulator.account.records["list"][0].id,
        skip_invalid_records=True,
        wait_for_completion=True,
        waiting_time_for_completion_millis=300_000,
    )
    table = pa.table({"email": [f"w{i}@example.com" for i in range(5)]})
    result = await export(wh, table, s, app, sleep=sleep, clock=lambda: now[0])
    _, outs, reasons = outcomes(wh, result.run_id)
    assert outs == ["submitted"] * 5
    assert "still queued when the waiting time (300000 ms) ended" in reasons[0]
    assert 300 <= now[0] < 320  # it gave up at the deadline, not a long backoff later
