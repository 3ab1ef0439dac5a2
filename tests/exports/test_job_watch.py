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


async def test_a_job_older_than_the_newest_page_is_found_on_the_next_pages_or_read_by_its_id():
    app = make_app()
    paths: list[str] = []

    async def recording(scope, receive, send):
        if scope["type"] == "http":
            paths.append(scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else ""))
        await app(scope, receive, send)

    client = KlaviyoClient(
        settings(operation="remove_profiles", list_identify_type="id", list_value="L").client_settings(),
        transport=httpx.ASGITransport(app=recording),
        limiter=RateLimiter(enabled=False),
    )
    try:
        ids = [
            (await client.request("bulk_import_profiles", json=_import_body(f"j{i}@example.com")))["data"]["id"]
            for i in range(103)
        ]
        one_page = JobWatcher(client, no_sleep, lambda: 0.0, 0.0, max_pages=1)
        newest = await one_page._newest_jobs()
        assert ids[0] not in newest and ids[-1] in newest and len(newest) == 100
        del paths[:]
        status, attrs = await one_page.wait(ids[0], deadline=1e9)
        assert status == "complete" and attrs["completed_count"] == 1
        assert [p.split("?")[0] for p in paths] == ["/api/profile-bulk-import-jobs", f"/api/profile-bulk-import-jobs/{ids[0]}"]
        del paths[:]
        status, attrs = await one_page.wait(ids[-1], deadline=1e9)
        assert status == "complete" and len(paths) == 1  # found on the page
        # by default a round reads on (up to three pages) before reading a job by its id
        del paths[:]
        status, attrs = await JobWatcher(client, no_sleep, lambda: 0.0, 0.0).wait(ids[0], deadline=1e9)
        assert status == "complete" and attrs["completed_count"] == 1
        assert len(paths) == 2 and all(p.startswith("/api/profile-bulk-import-jobs?") for p in paths)
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
    """A batch waiting for its bulk import job holds no sending slot, no payload and no place
    among the batches being sent: with one sending slot (three payloads held), all ten batches go
    out while every job is still queued. (The wait once held the slots: a second's burst of 10
    POSTs went out 8 at a time.) (Before: a batch held its place until its job ended, so slow jobs
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
            if len(posts) == 10:
                all_sent.set()
        await app(scope, receive, send)

    s = waiting_add(app, concurrency=1)
    table = pa.table({"email": [f"q{i}@example.com" for i in range(95_000)]})  # 10 jobs of at most 10,000
    result = await export(wh, table, s, recording, sleep=sleep, clock=lambda: now[0])
    assert len(posts) == 10 and max(posts) < 300  # all sent before the first wait could end
    _, outs, _ = outcomes(wh, result.run_id)
    assert outs == ["submitted"] * 95_000


class _JobErrors(httpx.AsyncBaseTransport):
    """The emulator, with Klaviyo's answers for a job some of whose profiles failed: each error
    carries the profile it rejected as it was sent (``original_payload``), and names its row
    (``source.pointer``) only where ``pointer`` says so."""

    def __init__(self, app, failing: dict[int, tuple[str, bool]]) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.failing = failing  # position in the job -> (detail, with a pointer)
        self.sent: list[dict] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.sent = json.loads(request.content)["data"]["attributes"]["profiles"]["data"]
        response = await self.inner.handle_async_request(request)
        path = request.url.path
        if request.method == "GET" and path.startswith("/api/profile-bulk-import-jobs"):
            body = json.loads(await response.aread())
            if path.rstrip("/").endswith("import-errors"):
                errors = []
                for pos, (detail, pointer) in self.failing.items():
                    source = {"pointer": f"/data/attributes/profiles/data/{pos}/attributes/email"} if pointer else {}
                    attrs = {"code": "invalid", "title": "Invalid input.", "detail": detail, "source": source}
                    errors.append(
                        {"type": "import-error", "id": f"e{pos}", "attributes": {**attrs, "original_payload": self.sent[pos]}}
                    )
                body = {"data": errors, "links": {}}
            else:
                for job in body["data"] if isinstance(body["data"], list) else [body["data"]]:
                    job["attributes"]["failed_count"] = len(self.failing)
            return httpx.Response(200, json=body, headers={"content-type": "application/vnd.api+json"})
        return response


async def test_job_errors_reach_their_rows_by_pointer_or_by_the_email_stored_with_the_run(wh):
    """An import error without a row pointer is matched to its row by email from the identifiers
    the run stored (the payloads are not kept while jobs run): the input's case and spaces, and
    letters Python and Arrow lower-case differently (the payloads' emails are Arrow's), still match."""
    app = make_app()
    emails = ["a0@example.com", "a1@example.com", " A2@Example.com", "a3@example.com", "\u0130vo@example.com"]
    failing = {0: ("first", True), 2: ("second", False), 4: ("third", False)}
    transport = _JobErrors(app, failing)
    result = await run_export(wh, pa.table({"email": emails}), waiting_add(app), transport=transport, sleep=no_sleep)
    assert transport.sent[4]["attributes"]["email"] != "\u0130vo@example.com".lower()  # Arrow's, not Python's
    _, outs, reasons = outcomes(wh, result.run_id)
    assert outs == ["rejected", "accepted", "rejected", "accepted", "rejected"]
    assert [reasons[i] for i in (0, 2, 4)] == [f"rejected by Klaviyo: {w}" for w in ("first", "second", "third")]
    assert result.exit_code == 3  # success with rows rejected


async def test_a_run_stopped_while_its_jobs_run_says_which_rows_were_sent(wh):
    """Stopped while every batch waits for its job, the run is ``killed`` and its message counts
    those rows as sent with their outcome not known yet, not as "not sent"; a resume then reads
    the jobs and sends nothing again."""
    emulator_now = [0.0]
    app = make_app(monotonic=lambda: emulator_now[0], job_queued_seconds=10_000)
    now = [0.0]
    posts: list[int] = []
    all_sent, stop = asyncio.Event(), asyncio.Event()

    async def sleep(seconds: float) -> None:
        if seconds >= 0.5:  # a pause between rounds of polling: time stands still until every batch is out
            with contextlib.suppress(TimeoutError):  # (a bound on real time only for the failure)
                await asyncio.wait_for(all_sent.wait(), 10)
            stop.set()
            await asyncio.Event().wait()  # cancelled with the run
        now[0] += seconds

    async def recording(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            posts.append(1)
        await app(scope, receive, send)
        if len(posts) == 3:
            all_sent.set()

    s = waiting_add(app)
    table = pa.table({"email": [f"k{i}@example.com" for i in range(25_000)]})  # 3 jobs
    task = asyncio.ensure_future(export(wh, table, s, recording, sleep=sleep, clock=lambda: now[0]))
    await stop.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [run] = wh.state.runs()
    assert run.status == "killed"
    said = run.error
    assert said.startswith("stopped before the end: of 25000 rows, 0 have an outcome (none); "), said
    # the third batch's answer may not have been recorded when the run stopped
    assert ("25000 were sent and their outcome is not known yet; the other 0 were not sent" in said) or (
        "20000 were sent and their outcome is not known yet; 5000 were being sent when it stopped; the other 0" in said
    ), said
    assert f"--resume {run.run_id} reads back" in said
    states = [b.status for b in wh.state.export_batches(run.run_id)]
    emulator_now[0] = 20_000.0  # the jobs sent have ended

    async def later(seconds: float) -> None:
        emulator_now[0] += seconds

    again = await export(wh, table, s, recording, sleep=later, clock=lambda: emulator_now[0], run_id=run.run_id, resume=True)
    assert len(posts) == 3 + states.count("sending")  # a batch recorded as sent is not sent again
    _, outs, _ = outcomes(wh, again.run_id)
    assert len(outs) == 25_000 and outs[: 10_000 * states.count("sent")] == ["accepted"] * 10_000 * states.count("sent")
