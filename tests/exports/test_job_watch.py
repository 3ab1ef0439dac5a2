"""Bulk import jobs are waited for by listing the newest jobs, with a per-job read as fallback."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.exports.jobwatch import JobWatcher
from klaviyo_bridge.exports.runner import run_export
from klaviyo_bridge.store.factory import open_warehouse

from .helpers import export, make_app, no_sleep, outcomes, settings


@pytest.fixture
def wh(tmp_path):
    with open_warehouse(tmp_path / "wh.duckdb") as w:
        yield w


def waiting_add(app, **keys):
    """``add`` to the emulator's first list, waiting up to 300 s for each bulk import job."""
    return settings(
        operation="add",
        list_identify_type="id",
        list_value=app.state.emulator.account.records["list"][0].id,
        skip_invalid_records=True,
        wait_for_completion=True,
        waiting_time_for_completion_millis=300_000,
        **keys,
    )


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

    s = waiting_add(app)
    table = pa.table({"email": [f"w{i}@example.com" for i in range(5)]})
    result = await export(wh, table, s, app, sleep=sleep, clock=lambda: now[0])
    _, outs, reasons = outcomes(wh, result.run_id)
    assert outs == ["submitted"] * 5
    assert "still queued when the waiting time (300000 ms) ended" in reasons[0]
    assert 300 <= now[0] < 320  # it gave up at the deadline, not a long backoff later


async def test_waiting_for_a_job_does_not_hold_a_sending_slot(wh):
    """With one sending slot, the next batches go out while the first job is still running:
    the wait for a bulk import job happens outside the slots (it held them before: 10 POSTs a
    second's burst went out 8 at a time)."""
    app = make_app(job_queued_seconds=10_000)  # no job finishes while we wait
    now = [0.0]
    posts: list[float] = []

    all_sent = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if seconds >= 0.5 and not all_sent.is_set():
            # a wait for the jobs: time stands still until the other batches are out (a bound
            # on real time only for the failure, where they would never go while this waits)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_sent.wait(), 20)
        now[0] += max(seconds, 1.0)

    async def recording(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            posts.append(now[0])
            if len(posts) == 3:
                all_sent.set()
        await app(scope, receive, send)

    s = waiting_add(app, concurrency=1)
    table = pa.table({"email": [f"s{i}@example.com" for i in range(25_000)]})  # 3 jobs of at most 10,000
    result = await export(wh, table, s, recording, sleep=sleep, clock=lambda: now[0])
    assert len(posts) == 3 and max(posts) < 300  # all sent before the first wait could end
    _, outs, _ = outcomes(wh, result.run_id)
    assert outs == ["submitted"] * 25_000


async def test_the_last_jobs_are_polled_once_every_batch_is_answered_not_a_pause_later(wh):
    """Rounds of polling pause between them (here 50 s, as if jobs had been slow); once every
    batch has its answer, a round that leaves after the last job came is not waited for."""
    app = make_app()  # the emulator's jobs finish at once
    now = [0.0]
    never = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if seconds >= 50:  # a pause between rounds: time passes only if it is waited out
            # (a bound on real time only for the failure, where nothing cuts the pause short)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(never.wait(), 20)
        now[0] += seconds
        await asyncio.sleep(0)

    s = waiting_add(app, concurrency=2)
    table = pa.table({"email": [f"p{i}@example.com" for i in range(25_000)]})  # 3 jobs of at most 10,000
    result = await export(wh, table, s, app, sleep=sleep, clock=lambda: now[0], poll_initial=50.0)
    _, outs, _ = outcomes(wh, result.run_id)
    assert set(outs) == {"accepted"} and len(outs) == 25_000
    assert result.status == "success" and result.exit_code == 0
    assert now[0] < 50  # no pause waited out


async def test_batches_waiting_for_slow_jobs_leave_the_next_ones_free_to_go(wh):
    """A batch waiting for its bulk import job holds no payload and no place among the batches
    being sent: with one sending slot (three payloads held), all eight batches go out while
    every job is still queued. (Before: a batch held its place until its job ended, so slow jobs
    capped sending at 16 batches per job's duration: 48 s instead of 15.6 s for 1M rows with 5 s jobs.)"""
    app = make_app(job_queued_seconds=10_000)  # no job finishes while we wait
    now = [0.0]
    posts: list[float] = []
    all_sent = asyncio.Event()
    gave_up = []

    async def sleep(seconds: float) -> None:
        if seconds >= 0.5 and not all_sent.is_set() and not gave_up:
            # a wait for the jobs: time stands still until every batch is out (a bound on real
            # time only for the failure, where the later batches wait for the jobs to end)
            try:
                await asyncio.wait_for(all_sent.wait(), 10)
            except TimeoutError:
                gave_up.append(True)
        now[0] += max(seconds, 1.0)

    async def recording(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            posts.append(now[0])
            if len(posts) == 8:
                all_sent.set()
        await app(scope, receive, send)

    s = waiting_add(app, concurrency=1)
    table = pa.table({"email": [f"q{i}@example.com" for i in range(75_000)]})  # 8 jobs of at most 10,000
    result = await export(wh, table, s, recording, sleep=sleep, clock=lambda: now[0])
    assert len(posts) == 8 and max(posts) < 300  # all sent before the first wait could end
    _, outs, _ = outcomes(wh, result.run_id)
    assert outs == ["submitted"] * 75_000


class _JobErrors(httpx.AsyncBaseTransport):
    """The emulator, with Klaviyo's answers for a job two of whose profiles failed: one error
    names its row (``source.pointer``), the other only carries the payload it rejected."""

    def __init__(self, app, errors: list[dict]) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.errors = errors

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        path = request.url.path
        if request.method == "GET" and path.startswith("/api/profile-bulk-import-jobs"):
            body = json.loads(await response.aread())
            if path.rstrip("/").endswith("import-errors"):
                body = {
                    "data": [{"type": "import-error", "id": f"e{i}", "attributes": a} for i, a in enumerate(self.errors)],
                    "links": {},
                }
            else:
                items = body["data"] if isinstance(body["data"], list) else [body["data"]]
                for job in items:
                    job["attributes"]["failed_count"] = len(self.errors)
            return httpx.Response(200, json=body, headers={"content-type": "application/vnd.api+json"})
        return response


async def test_job_errors_reach_their_rows_by_pointer_or_by_the_email_stored_with_the_run(wh):
    """An import error without a row pointer is matched to its row by email (any case, spaces
    around) from the identifiers the run stored: the payloads are not kept while jobs run."""
    app = make_app()
    emails = ["a0@example.com", "a1@example.com", "A2@Example.com", "a3@example.com"]
    errors = [
        {
            "code": "invalid",
            "title": "Invalid input.",
            "detail": "first",
            "source": {"pointer": "/data/attributes/profiles/data/0/attributes/email"},
        },
        {
            "code": "invalid",
            "title": "Invalid input.",
            "detail": "second",
            "source": {},
            "original_payload": {"type": "profile", "attributes": {"email": " a2@example.COM"}},
        },
    ]
    s = waiting_add(app)
    result = await run_export(wh, pa.table({"email": emails}), s, transport=_JobErrors(app, errors), sleep=no_sleep)
    _, outs, reasons = outcomes(wh, result.run_id)
    assert outs == ["rejected", "accepted", "rejected", "accepted"]
    assert reasons[0] == "rejected by Klaviyo: first" and reasons[2] == "rejected by Klaviyo: second"
    assert result.exit_code == 3  # success with rows rejected
