"""Every operation against the in-process emulator: list id/name, subscription types, historical
consent, skip-invalid, stop-on-failure; row accounting that adds up; the emulator's final state."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.errors import ConfigError, ExportError, ExportFailed
from klaviyo_bridge.exports.runner import run_export
from klaviyo_bridge.exports.settings import parse_settings_text
from klaviyo_bridge.exports.source import query_source
from klaviyo_bridge.store.factory import open_warehouse

from .helpers import export, make_app, no_sleep, outcomes, settings


@pytest.fixture
def wh(tmp_path):
    with open_warehouse(tmp_path / "wh.duckdb") as w:
        yield w


def _list(app, index=0):
    rec = app.state.emulator.account.records["list"][index]
    return rec.id, rec.attributes["name"]


def _members(app, list_id):
    return set(app.state.emulator.snapshot()["list_members"].get(list_id, []))


def _adds_up(wh, result, total):
    rows, _, _ = outcomes(wh, result.run_id)
    assert sorted(rows) == list(range(total)), "every input row has exactly one outcome"
    assert sum(result.summary.counts.values()) == total


ADD_ROWS = pa.table(
    {
        "email": ["ann@example.com", "not-an-email", "bob@example.com", None, "ANN@example.com", "cy@example.com"],
        "first_name": ["Ann", "X", None, "Nobody", "Dup", "Cy"],
        "city": ["Oslo", None, None, None, None, "Rome"],
        "tier": ["gold", None, "silver", None, None, None],
    }
)


@pytest.mark.parametrize("by", ["id", "name"])
@pytest.mark.parametrize("wait", [True, False])
async def test_add_skips_invalid_and_lands_in_the_list(wh, by, wait):
    app = make_app()
    list_id, name = _list(app)
    before = _members(app, list_id)
    s = settings(
        operation="add",
        list_identify_type=by,
        list_value=list_id if by == "id" else name,
        skip_invalid_records=True,
        wait_for_completion=wait,
    )
    result = await export(wh, ADD_ROWS, s, app)
    _adds_up(wh, result, 6)
    rows, outs, reasons = outcomes(wh, result.run_id)
    good = "accepted" if wait else "submitted"
    assert outs == [good, "skipped", good, "skipped", "skipped", good]
    assert "not a valid email" in reasons[1] and "no identifier" in reasons[3] and "duplicate email" in reasons[4]
    assert result.list_id == list_id
    added = _members(app, list_id) - before
    assert len(added) == 3
    async with __import__("httpx").AsyncClient(
        transport=__import__("httpx").ASGITransport(app=app),
        base_url="http://e",
        headers={"Authorization": "Klaviyo-API-Key pk_emulator_demo_key", "revision": "2026-07-15"},
    ) as c:
        doc = (await c.get("/api/profiles", params={"filter": "equals(email,'ann@example.com')"})).json()["data"][0]
    attrs = doc["attributes"]
    assert attrs["first_name"] == "Ann" and attrs["location"]["city"] == "Oslo" and attrs["properties"] == {"tier": "gold"}


async def test_strict_mode_finds_duplicates_across_chunks_prepared_on_two_threads(wh):
    # 45,000 rows are three chunks (10k, 20k, 15k) validated on two threads before anything is
    # sent; rows 41,000.. repeat the emails of rows 0.. (the first chunk): the later row is the
    # duplicate, whichever thread got there first
    emails = [f"u{i % 41_000}@example.com" for i in range(45_000)]
    app = make_app()
    list_id, _ = _list(app)
    before = _members(app, list_id)
    s = settings(operation="add", list_identify_type="id", list_value=list_id)
    with pytest.raises(ExportError) as err:
        await export(wh, pa.table({"email": emails}), s, app)
    assert err.value.row == 41_001
    assert [p.row for p in err.value.problems] == list(range(41_001, 41_001 + len(err.value.problems)))
    assert all("duplicate email" in p.message for p in err.value.problems)
    assert str(err.value).startswith("4000 invalid row(s)")
    assert _members(app, list_id) == before  # strict: nothing sent


async def test_add_by_new_name_creates_the_list_once(wh):
    app = make_app()
    s = settings(operation="add", list_identify_type="name", list_value="Brand New", skip_invalid_records=True)
    first = await export(wh, ADD_ROWS, s, app)
    second = await export(wh, ADD_ROWS, s, app)
    assert first.list_id == second.list_id
    assert any("created list" in w for w in first.warnings) and not any("created list" in w for w in second.warnings)


async def test_ambiguous_list_name_fails_clearly(wh):
    app = make_app()
    s = settings(operation="add", list_identify_type="name", list_value="Twice", skip_invalid_records=True)
    await export(wh, ADD_ROWS, s, app)
    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://e",
        headers={"Authorization": "Klaviyo-API-Key pk_emulator_demo_key", "revision": "2026-07-15"},
    ) as c:
        assert (await c.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "Twice"}}})).status_code == 201
    with pytest.raises(ExportError, match="ambiguous"):
        await export(wh, ADD_ROWS, s, app)


async def test_invalid_rows_fail_the_job_before_anything_is_sent(wh):
    app = make_app()
    list_id, _ = _list(app)
    before = app.state.emulator.snapshot()
    s = settings(operation="add", list_value=list_id, skip_invalid_records=False)
    with pytest.raises(ExportError, match=r"3 invalid row\(s\).*row 2: email is not a valid email address"):
        await export(wh, ADD_ROWS, s, app)
    assert app.state.emulator.snapshot() == before
    run = wh.state.runs()[0]
    assert run.status == "error"
    _, outs, _ = outcomes(wh, run.run_id)
    assert len(outs) == 6 and set(outs) == {"skipped"}


@pytest.mark.parametrize("by", ["id", "name"])
@pytest.mark.parametrize("skip_invalid", [True, False])
async def test_remove_profiles(wh, by, skip_invalid):
    app = make_app()
    list_id, name = _list(app)
    members = sorted(_members(app, list_id))
    ids = members[:30] + ([None, members[0]] if skip_invalid else [])
    s = settings(
        operation="remove_profiles",
        list_identify_type=by,
        list_value=list_id if by == "id" else name,
        skip_invalid_records=skip_invalid,
    )
    result = await export(wh, pa.table({"profile_id": pa.array(ids, pa.string())}), s, app)
    _adds_up(wh, result, len(ids))
    assert result.summary.counts["accepted"] == 30
    assert _members(app, list_id) == set(members[30:])


async def test_remove_in_chunks_of_1000_and_unknown_ids_are_dropped_and_retried(wh):
    app = make_app(profiles=2500)
    emu = app.state.emulator
    list_id, _ = _list(app)
    ids = emu.state.profile_ids(range(2300))
    ids[5] = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"  # unknown to Klaviyo: the 400 names it, the rest is retried once
    s = settings(operation="remove_profiles", list_value=list_id)
    result = await export(wh, pa.table({"profile_id": ids}), s, app)
    assert result.batches == 3
    _adds_up(wh, result, 2300)
    _, outs, reasons = outcomes(wh, result.run_id)
    assert outs[5] == "skipped" and "rejected by Klaviyo" in reasons[5]
    assert result.summary.counts["accepted"] == 2299
    assert not (_members(app, list_id) & set(ids))


CONSENT_ROWS = pa.table(
    {
        "email": ["s1@example.com", "s2@example.com", "bad@", "s4@example.com"],
        "phone_number": ["+15005550006", "(500) 555-0007", "+15005550008", "12"],
        "consent_at": ["2024-01-01T00:00:00", "2023-05-05T10:00:00Z", "2024-01-01T00:00:00", "2999-01-01T00:00:00"],
    }
)
EXPECTED_CHANNELS = {
    "all_marketing": ("email", "sms"),
    "email_marketing_only": ("email",),
    "sms_marketing_only": ("sms",),
    "sms_marketing_transactional": ("sms", "sms_transactional"),
}


@pytest.mark.parametrize("subscription_type", list(EXPECTED_CHANNELS))
@pytest.mark.parametrize("consent_type,historical", [("subscribed", False), ("subscribed", True), ("unsubscribed", False)])
@pytest.mark.parametrize("by", ["id", "name"])
async def test_batch_consent(wh, subscription_type, consent_type, historical, by):
    app = make_app()
    list_id, name = _list(app)
    s = settings(
        operation="batch_consent",
        list_identify_type=by,
        list_value=list_id if by == "id" else name,
        consent_type=consent_type,
        subscription_type=subscription_type,
        historical_consent=historical,
        skip_invalid_records=True,
        default_phone_region="US",
    )
    if consent_type == "unsubscribed":  # a list unsubscribe reaches members only: make the rows members first
        join = settings(
            operation="batch_consent",
            list_identify_type=by,
            list_value=s.list_value,
            consent_type="subscribed",
            subscription_type=subscription_type,
            skip_invalid_records=True,
            default_phone_region="US",
        )
        await export(wh, CONSENT_ROWS, join, app)
        members_before = _members(app, list_id)
    result = await export(wh, CONSENT_ROWS, s, app)
    _adds_up(wh, result, 4)
    _, outs, reasons = outcomes(wh, result.run_id)
    channels = EXPECTED_CHANNELS[subscription_type]
    submitted = [i for i, o in enumerate(outs) if o == "submitted"]
    assert all(o in ("submitted", "skipped") for o in outs)
    # row 0 is valid for every type; row 1 has a national-format phone (normalised with the region)
    assert 0 in submitted and 1 in submitted
    if historical:
        assert outs[3] == "skipped" and ("future" in reasons[3] or "past" in reasons[3] or "phone" in reasons[3])
    if consent_type == "unsubscribed":
        assert any("only the list's current members are sent" in w for w in result.warnings)
        # members leave the list; nobody is unsubscribed from all marketing
        assert len(members_before - _members(app, list_id)) >= 2
        snap = app.state.emulator.snapshot()["subscriptions"]
        assert not any(t[ch] == "UNSUBSCRIBED" for t in snap.values() for ch in channels), snap
        return
    snap = app.state.emulator.snapshot()["subscriptions"]
    want = "SUBSCRIBED" if consent_type == "subscribed" else "UNSUBSCRIBED"
    touched = list(snap.values())
    assert len(touched) >= 2
    for ch in channels:
        assert sum(1 for t in touched if t[ch] == want) >= 2, (ch, touched)
    if consent_type == "subscribed":
        assert len(_members(app, list_id)) >= 2


async def test_stop_on_batch_failure_stops_and_accounts_for_unsent_rows(wh):
    app = make_app(profiles=10)
    list_id, _ = _list(app)
    table = pa.table({"profile_id": [f"NOPROFILE{i:05d}" for i in range(2500)]})  # Klaviyo rejects every batch
    stop = settings(operation="remove_profiles", list_value=list_id, stop_on_batch_failure=True, concurrency=1)
    with pytest.raises(ExportFailed, match="stop_on_batch_failure") as failed:
        await export(wh, table, stop, app)
    result = failed.value.result
    _adds_up(wh, result, 2500)
    assert result.failed_batches == 1 and result.status == "error"
    assert result.summary.counts == {"rejected": 1000, "skipped": 1500}
    assert wh.state.runs()[0].status == "error"
    go_on = settings(operation="remove_profiles", list_value=list_id, stop_on_batch_failure=False)
    with pytest.raises(ExportFailed, match="none of the 2,500 row"):
        await export(wh, table, go_on, app)
    run = wh.state.runs()[0]
    assert run.status == "error" and run.counts == {"rejected": 2500}
    _, _, reasons = outcomes(wh, run.run_id)
    assert "does not exist" in reasons[0]


async def test_unknown_list_id_fails_before_the_query_and_is_recorded_as_error(wh):
    app = make_app()
    s = settings(operation="add", list_value="NOLIST", skip_invalid_records=True)
    with pytest.raises(ExportError, match="list 'NOLIST' does not exist"):
        await export(wh, ADD_ROWS, s, app)
    run = wh.state.runs()[0]
    assert run.status == "error" and "does not exist" in run.error
    assert wh.state.export_batches(run.run_id) == []  # nothing sent


def _preparing() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("klaviyo-bridge-prepare")]


class _ListLookupAfterPreparing(httpx.AsyncBaseTransport):
    """The emulator, with the list lookup answered only once chunks are being prepared on the pool
    (what a lookup's round trip to Klaviyo overlaps); ``looking_up`` is set while it waits."""

    def __init__(self, app) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.looking_up = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/api/lists/"):
            self.looking_up.set()
            while not _preparing():
                await asyncio.sleep(0)
        return await self.inner.handle_async_request(request)


def _many(wh, rows: int = 90_000) -> None:
    with wh.transaction() as session:
        session.execute("CREATE SCHEMA IF NOT EXISTS crm")
        session.execute(
            f"CREATE OR REPLACE TABLE crm.many AS SELECT 'p' || i || '@example.com' AS email, 'N' || i AS first_name "
            f"FROM range({rows}) t(i)"
        )


async def test_rows_prepared_while_the_list_is_looked_up_are_never_sent_to_a_missing_list(wh):
    """The first chunks are prepared during the list lookup, on two threads, from the query's
    stream: when the list is missing, the run fails on it, no job is made, and the preparing
    threads are gone (out of the stream) before the run returns."""
    app = make_app()
    _many(wh)
    s = settings(operation="add", list_value="NOLIST", skip_invalid_records=True)
    transport = _ListLookupAfterPreparing(app)
    with pytest.raises(ExportError, match="list 'NOLIST' does not exist"):
        await run_export(wh, query_source(wh, "SELECT * FROM crm.many"), s, transport=transport, sleep=no_sleep)
    assert _preparing() == []
    assert app.state.emulator.jobs.order == []
    run = wh.state.runs()[0]
    assert run.status == "error" and wh.state.export_batches(run.run_id) == []


class _WatchedStream:
    """A query's stream that tells whether it was closed, and whether while a batch was being read."""

    def __init__(self, stream) -> None:
        self.stream, self.reading, self.closed, self.closed_while_reading = stream, 0, False, False

    def __iter__(self):
        return self

    def __next__(self):
        self.reading += 1
        try:
            return next(self.stream)
        finally:
            self.reading -= 1

    def close(self) -> None:
        self.closed, self.closed_while_reading = True, self.reading > 0
        self.stream.close()


@pytest.mark.parametrize("cancels", [1, 2])
async def test_a_run_stopped_during_the_list_lookup_leaves_no_thread_lock_or_stream(wh, cancels):
    """Stopped (Ctrl-C, a worker's cancel) while the first chunks are being prepared, even when
    stopped again while it waits for the preparing thread: the thread leaves the query's stream
    before it is closed, the list's lock is released and nothing was sent."""
    app = make_app()
    _many(wh)
    list_id, _ = _list(app)
    s = settings(operation="add", list_value=list_id, skip_invalid_records=True, list_lock_timeout_seconds=0)
    transport = _ListLookupAfterPreparing(app)
    streams = []

    def source():
        schema, stream = query_source(wh, "SELECT * FROM crm.many")()
        streams.append(_WatchedStream(stream))
        return schema, streams[-1]

    run = asyncio.ensure_future(run_export(wh, source, s, transport=transport, sleep=no_sleep))
    await transport.looking_up.wait()
    run.cancel()
    for _ in range(cancels - 1):
        await asyncio.sleep(0)
        run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert _preparing() == []
    assert streams[0].closed and not streams[0].closed_while_reading
    assert app.state.emulator.jobs.order == []
    assert wh.state.runs()[0].status == "killed"
    before = len(_members(app, list_id))
    result = await export(wh, "SELECT * FROM crm.many", s, app)  # the lock is free: no wait, no timeout
    assert result.summary.counts == {"submitted": 90_000} and len(_members(app, list_id)) == before + 90_000


class _AnswersOnceFailed(httpx.AsyncBaseTransport):
    """The emulator, whose answers to POSTs (the jobs made) after the first come back only once
    ``fail()`` was called (from the thread reading the query). The first is answered at once: the
    client's first request to a rate tier is its probe, which the others wait for."""

    def __init__(self, app) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.failed = threading.Event()
        self._held: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()
        self.posts = 0

    def fail(self) -> None:
        with self._lock:
            self.failed.set()
            for loop, future in self._held:
                loop.call_soon_threadsafe(lambda f=future: f.done() or f.set_result(None))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST":
            self.posts += 1
            if self.posts == 1:
                return response
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            with self._lock:
                if self.failed.is_set():
                    return response
                self._held.append((loop, future))
            await future
        return response


async def test_a_query_failing_midway_fails_the_run_after_the_batches_already_out_are_recorded(wh):
    """The warehouse's stream fails at row 150,000 while batches are out (their answers come
    after the failure): they finish, and every row Klaviyo got a job for has its outcome before
    the run is recorded as failed. (Before: the run ended at once, and the batches out went on
    without their rows being recorded.) The failure is raised by the stream itself, after the rows
    before it: DuckDB may compute a failing CAST ahead of the rows read, which raced the first POST."""
    app = make_app()
    list_id, _ = _list(app)
    sql = "SELECT 'q' || i || '@example.com' AS email, i AS points FROM range(200000) t(i)"
    transport = _AnswersOnceFailed(app)

    def source():
        schema, batches = query_source(wh, sql)()

        def read():
            rows = 0
            try:
                for batch in batches:
                    if rows + batch.num_rows > 150_000:
                        raise RuntimeError("Conversion Error: Could not convert string 'not a number' to INT32")
                    rows += batch.num_rows
                    yield batch
            except Exception:
                transport.fail()
                raise
            finally:
                batches.close()

        return schema, read()

    # 16 in flight: up to 18 batches' payloads (180,000 rows) go out before any answer comes back
    s = settings(operation="add", list_value=list_id, skip_invalid_records=True, concurrency=16)
    with pytest.raises(Exception, match="not a number"):
        await run_export(wh, source, s, transport=transport, sleep=no_sleep)
    run = wh.state.runs()[0]
    assert run.status == "error"
    jobs = app.state.emulator.jobs.order
    assert jobs, "batches were out when the query failed"
    rows, outcome, _ = outcomes(wh, run.run_id)
    assert outcome.count("submitted") == sum(job.total for job in jobs) and len(rows) == len(set(rows))


@pytest.mark.parametrize(
    "settings_keys,columns,needle",
    [
        (
            {"operation": "add", "list_value": "x"},
            {"Email": ["a@b.co"]},
            "'add' needs a string column email or phone_number or external_id (found 'Email'",
        ),
        (
            {"operation": "remove_profiles", "list_value": "x"},
            {"id": ["1"]},
            "'remove_profiles' needs a string column profile_id",
        ),
        (
            {"operation": "batch_consent", "subscription_type": "sms_marketing_only"},
            {"email": ["a@b.co"]},
            "'batch_consent' needs a string column phone_number",
        ),
        (
            {"operation": "batch_consent", "subscription_type": "email_marketing_only", "historical_consent": True},
            {"email": ["a@b.co"]},
            "needs a column consent_at",
        ),
    ],
)
async def test_missing_columns_fail_before_sending(wh, settings_keys, columns, needle):
    app = make_app()
    if settings_keys.get("list_value"):
        settings_keys = {**settings_keys, "list_value": _list(app)[0]}
    with pytest.raises(ExportError) as info:
        await export(wh, pa.table(columns), settings(**settings_keys), app)
    assert needle in str(info.value)
    assert app.state.emulator.snapshot()["subscriptions"] == {}


async def test_dry_run_sends_nothing(wh):
    app = make_app()
    before = app.state.emulator.snapshot()
    s = settings(operation="add", list_identify_type="name", list_value="Never Created", skip_invalid_records=True)
    result = await export(wh, ADD_ROWS, s, app, dry_run=True)
    assert result.dry_run and result.would_send == 3 and result.invalid == 3 and result.batches == 1
    assert result.samples[0]["attributes"]["email"] == "ann@example.com"
    assert app.state.emulator.snapshot() == before
    assert wh.state.runs() == []


async def test_batches_by_bytes_and_oversize_rows(wh):
    app = make_app()
    list_id, _ = _list(app)
    n = 2100
    notes = ["x" * 2500] * n
    notes[7] = "y" * 120_000
    table = pa.table({"email": [f"big{i}@example.com" for i in range(n)], "notes": notes})
    result = await export(
        wh, table, settings(operation="add", list_value=list_id, skip_invalid_records=True, wait_for_completion=True), app
    )
    assert result.batches == 2  # 2,099 x ~2.6 KB > 5 MB: split by bytes although far under 10,000
    _, outs, reasons = outcomes(wh, result.run_id)
    assert outs[7] == "skipped" and "100 KB" in reasons[7]
    assert result.summary.counts == {"accepted": n - 1, "skipped": 1}


def test_seed_line_without_space_is_read_with_a_warning():
    data, warnings = parse_settings_text("operation: add\nwaiting_time_for_completion_millis:3600000\n", "x.yml")
    assert data["waiting_time_for_completion_millis"] == 3600000
    assert warnings and "line 2" in warnings[0]
    with pytest.raises(ConfigError, match="line 2"):
        parse_settings_text("operation: add\nwaiting_tme:3600000\n", "x.yml")
    with pytest.raises(ConfigError, match="300000"):
        settings(operation="add", list_value="x", waiting_time_for_completion_millis=1000)


async def test_an_export_leaves_the_process_arrow_allocator_alone(wh):
    """Arrow's default pool is process-wide: a process's entry point chooses it (memory.py), an
    export run inside someone else's process never switches it."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        s = settings(operation="add", list_identify_type="name", list_value="Never Created", skip_invalid_records=True)
        await export(wh, ADD_ROWS, s, make_app(), dry_run=True)
        assert pa.default_memory_pool().backend_name == "system"
    finally:
        pa.set_memory_pool(previous)
