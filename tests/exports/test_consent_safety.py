"""Consent-safe, honest exports (issue 15), against the emulator: who ends up unsubscribed.

Every test reads the emulator's consent state afterwards and counts the profiles a list
unsubscribe took out of ALL marketing: that count must be 0 unless the user asked for it. The
emulator and the export share one fake clock, so Klaviyo's processing delay
(``consent_delay_seconds``) and the export's settle time are played out without real waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.errors import AuthError, ExportBusy, ExportError, ExportFailed, RetriesExhausted
from klaviyo_bridge.exports.job import export_query
from klaviyo_bridge.exports.runner import CONFIRMED_REASON, EXIT_PARTIAL, HELD_BACK_BEFORE, run_export
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from ..fakes import FakeClock

BASE = "http://emulator.test"
UNSUBSCRIBE = "bulk_unsubscribe_profiles"


@pytest.fixture
def wh(tmp_path):
    with open_warehouse(tmp_path / "wh.duckdb") as w:
        yield w


def make(clock, **overrides):
    settings = dict(
        seed=7,
        profiles=200,
        events=10,
        lists=2,
        segments=1,
        campaigns=1,
        templates=1,
        flows=1,
        rate_limits=False,
        job_profiles_per_second=1e9,
    )
    settings.update(overrides)
    return create_app(EmulatorSettings(**settings), clock=clock)


def settings(**keys):
    data = {"type": "klaviyo", "api_token": DEFAULT_API_KEY, "base_url": BASE, "retry_limit": 2}
    data.update(keys)
    return parse_export_settings(data)


def unsubscribe(list_id, **keys):
    return settings(
        operation="batch_consent",
        consent_type="unsubscribed",
        subscription_type="email_marketing_only",
        list_value=list_id,
        skip_invalid_records=True,
        **keys,
    )


async def export(wh, table, s, app, clock, **kw):
    return await run_export(
        wh, table, s, transport=httpx.ASGITransport(app=app), sleep=clock.sleep, clock=clock, poll_initial=0.01, **kw
    )


def people(app, n_members=5, n_others=5, index=0):
    """(list id, member emails, non-member emails) from the emulator's own account."""
    emu = app.state.emulator
    list_id = emu.account.records["list"][index].id
    state = emu.state
    member_ids = emu.snapshot()["list_members"][list_id]
    member_rows = {state.row_for_id(pid) for pid in member_ids}
    members = [state.base.email(r) for r in sorted(member_rows)[:n_members]]
    others = [state.base.email(r) for r in range(state.base.count) if r not in member_rows][:n_others]
    assert len(members) == n_members and len(others) == n_others
    return list_id, members, others


def email_consent(app, emails) -> dict[str, str]:
    """Each email's marketing consent as Klaviyo would show it now (touched by a write or not)."""
    import numpy as np

    emu = app.state.emulator
    emu.advance()
    state = emu.state
    by_email = {state.base.email(r): r for r in range(state.base.count)}
    known = [e for e in emails if e in by_email]
    attrs = state.profile_attributes(np.array([by_email[e] for e in known], dtype=np.int64), True, False)
    return {e: a["subscriptions"]["email"]["marketing"]["consent"] for e, a in zip(known, attrs)}


class Consent:
    """Who a run took out of all marketing: ``after()`` lists emails UNSUBSCRIBED now and not before."""

    def __init__(self, app, emails):
        self.app, self.emails = app, list(emails)
        self.before = email_consent(app, self.emails)

    def globally_unsubscribed(self) -> list[str]:
        now = email_consent(self.app, self.emails)
        return [e for e in self.emails if now.get(e) == "UNSUBSCRIBED" and self.before.get(e) != "UNSUBSCRIBED"]


def outcomes_by_email(wh, run_id):
    rows = wh.state.export_rows(run_id=run_id)
    return {r["identifier"].split(":", 1)[1]: (r["outcome"], r["reason"]) for r in rows.to_pylist()}


def members_now(app, list_id) -> set[str]:
    emu = app.state.emulator
    state = emu.state
    return {state.base.email(state.row_for_id(p)) for p in emu.snapshot()["list_members"][list_id]}


def posts(app, op=UNSUBSCRIBE) -> int:
    return app.state.faults.counters[op]


# --- 1. a list unsubscribe touches members only -------------------------------------------------


async def test_list_unsubscribe_sends_members_only_and_a_rerun_harms_nobody(wh):
    clock = FakeClock()
    app = make(clock)
    list_id, members, others = people(app)
    table = pa.table({"email": members + others})
    watch = Consent(app, members + others)
    result = await export(wh, table, unsubscribe(list_id), app, clock)
    got = outcomes_by_email(wh, result.run_id)
    assert [got[e][0] for e in members] == ["submitted"] * 5
    assert all(
        got[e][0] == "skipped" and f"not a member of list {list_id}" in got[e][1] and "all marketing" in got[e][1] for e in others
    )
    assert watch.globally_unsubscribed() == []
    left = set(app.state.emulator.snapshot()["list_members"][list_id])
    assert not {app.state.emulator.state.profile_id(app.state.emulator.state.row_for_id(p)) for p in left} & set(members)
    again = await export(wh, table, unsubscribe(list_id), app, clock)  # the members are non-members now
    assert again.summary.counts == {"skipped": 10} and again.status == "success"
    assert watch.globally_unsubscribed() == []


async def test_unsubscribe_non_members_globally_is_explicit_and_loud(wh):
    clock = FakeClock()
    app = make(clock)
    list_id, members, others = people(app)
    watch = Consent(app, members + others)
    s = unsubscribe(list_id, unsubscribe_non_members_globally=True)
    result = await export(wh, pa.table({"email": members + others}), s, app, clock)
    assert any("ALL email/SMS marketing" in w for w in result.warnings)
    assert sorted(watch.globally_unsubscribed()) == sorted(others)
    with pytest.raises(Exception, match="applies to batch_consent with consent_type unsubscribed and a list"):
        settings(operation="add", list_value=list_id, unsubscribe_non_members_globally=True)


# --- 2. no blind resend of a consent write -----------------------------------------------------


async def test_lost_answer_while_klaviyo_is_still_processing_is_read_back_not_resent(wh):
    clock = FakeClock()
    app = make(clock, consent_delay_seconds=5, faults=f"storm={UNSUBSCRIBE}:truncate:1s")
    list_id, members, others = people(app)
    watch = Consent(app, members + others)
    s = unsubscribe(list_id, consent_settle_seconds=30)
    result = await export(wh, pa.table({"email": members + others}), s, app, clock)
    got = outcomes_by_email(wh, result.run_id)
    assert [got[e] for e in members] == [("accepted", CONFIRMED_REASON)] * 5
    assert posts(app) == 1, "the write whose answer was lost was sent again"
    assert watch.globally_unsubscribed() == []
    assert 30 in clock.sleeps and result.exit_code == 0


async def test_settle_time_shorter_than_klaviyo_leaves_rows_unconfirmed_never_resent(wh, capsys):
    clock = FakeClock()
    app = make(clock, consent_delay_seconds=20, faults=f"storm={UNSUBSCRIBE}:truncate:1s")
    list_id, members, others = people(app, n_members=4, n_others=2)
    watch = Consent(app, members + others)
    table = pa.table({"email": members + others + ["first.ok@example.com"]})
    s = unsubscribe(list_id, consent_settle_seconds=5)
    # every row sent is unconfirmed: nothing sent was accepted, so the run is an error, not a success
    with pytest.raises(ExportFailed, match="none of the 4 row.*unclear") as failed:
        await export(wh, table, s, app, clock)
    got = outcomes_by_email(wh, failed.value.result.run_id)
    assert {got[e][0] for e in members} == {"unconfirmed"} and "run the export again" in got[members[0]][1]
    assert posts(app) == 1
    clock.advance(60)  # Klaviyo gets round to the first request
    assert watch.globally_unsubscribed() == []


async def test_some_rows_unconfirmed_is_success_with_exit_code_3(wh, monkeypatch):
    from klaviyo_bridge.exports.batching import Endpoint
    from klaviyo_bridge.exports.ops import UnsubscribeFromList

    monkeypatch.setattr(UnsubscribeFromList, "endpoint", Endpoint(UNSUBSCRIBE, 3))
    clock = FakeClock()
    app = make(clock, consent_delay_seconds=20, faults=f"storm={UNSUBSCRIBE}:truncate:1s")
    list_id, members, others = people(app, n_members=6, n_others=0)
    watch = Consent(app, members)
    result = await export(
        wh, pa.table({"email": members}), unsubscribe(list_id, consent_settle_seconds=5, concurrency=1), app, clock
    )
    assert result.status == "success" and result.exit_code == EXIT_PARTIAL
    assert result.summary.counts == {"unconfirmed": 3, "submitted": 3}
    assert "3 unconfirmed row(s)" in result.partial_warning()
    clock.advance(60)
    assert watch.globally_unsubscribed() == []


async def test_server_error_before_applying_leaves_members_unconfirmed_then_a_rerun_finishes(wh):
    clock = FakeClock()
    app = make(clock, faults=f"storm={UNSUBSCRIBE}:503:1s")
    list_id, members, others = people(app)
    watch = Consent(app, members + others)
    table = pa.table({"email": members + others})
    with pytest.raises(ExportFailed, match="none of the 5 row"):
        await export(wh, table, unsubscribe(list_id, consent_settle_seconds=10), app, clock)
    run = wh.state.runs()[0]
    assert run.status == "error" and run.counts == {"unconfirmed": 5, "skipped": 5}
    assert posts(app) == 1
    again = await export(wh, table, unsubscribe(list_id, consent_settle_seconds=10), app, clock)
    assert again.summary.counts == {"submitted": 5, "skipped": 5}
    assert watch.globally_unsubscribed() == []


async def test_subscribe_after_an_unclear_answer_is_read_back_and_resent_once_counted_once(wh):
    clock = FakeClock()
    app = make(clock, faults="storm=bulk_subscribe_profiles:503:1s")
    list_id, _, others = people(app, n_members=1, n_others=6)
    s = settings(
        operation="batch_consent",
        consent_type="subscribed",
        subscription_type="email_marketing_only",
        list_value=list_id,
        consent_settle_seconds=10,
    )
    result = await export(wh, pa.table({"email": others}), s, app, clock)
    assert result.summary.counts == {"submitted": 6} and result.summary.total == 6
    assert posts(app, "bulk_subscribe_profiles") == 2 and 10 in clock.sleeps


# --- a property: random members, faults, delays and reruns -------------------------------------


@pytest.mark.parametrize("seed", range(6))
async def test_random_mixes_never_unsubscribe_a_non_member_and_always_add_up(wh, seed):
    rnd = random.Random(seed)
    clock = FakeClock()
    fault = rnd.choice(["503", "truncate", "reset", "500"])
    app = make(clock, consent_delay_seconds=rnd.choice([0, 3, 30]), faults=f"{fault}=0.4,seed={seed}")
    list_id, members, others = people(app, n_members=rnd.randint(1, 12), n_others=rnd.randint(0, 12))
    watch = Consent(app, members + others)
    emails = members + others
    rnd.shuffle(emails)
    s = unsubscribe(list_id, consent_settle_seconds=rnd.choice([1, 10, 60]), concurrency=rnd.choice([1, 4]), read_timeout=30)
    for attempt in range(3):  # a run, and reruns as a user would after unconfirmed rows
        try:
            result = await export(wh, pa.table({"email": emails}), s, app, clock)
            total = result.summary.total
        except (ExportFailed, RetriesExhausted, ExportError):
            total = sum(wh.state.runs()[0].counts.values())  # 0 when it failed before reading a row
        assert total in (0, len(emails)), "every row has exactly one outcome"
        clock.advance(120)
        assert watch.globally_unsubscribed() == [], (seed, attempt)


# --- 3. one writer per list --------------------------------------------------------------------


async def test_two_exports_on_one_list_do_not_interleave(wh, caplog):
    clock = FakeClock()
    app = make(clock)
    list_id, members, others = people(app)
    lock = wh.named_lock(f"list:{BASE}:{list_id}")
    assert lock.try_acquire({"run_id": "someone-else"})
    try:
        with pytest.raises(ExportBusy, match=r"being written by another export \(run_id someone-else\)"):
            await export(wh, pa.table({"email": members}), unsubscribe(list_id, list_lock_timeout_seconds=0), app, clock)
        caplog.set_level(logging.WARNING, logger="klaviyo_bridge.exports")
        waiting = asyncio.ensure_future(export(wh, pa.table({"email": members}), unsubscribe(list_id), app, clock))
        for _ in range(1_000_000):  # until it has waited once (lock attempts run in a worker thread)
            if 0.5 in clock.sleeps or waiting.done():
                break
            await asyncio.sleep(0)
        assert not waiting.done()
        assert set(members) <= members_now(app, list_id), "sent while another export held the list"
        assert "waiting for another export writing to list" in caplog.text
    finally:
        lock.release()
    result = await waiting
    assert result.summary.counts == {"submitted": 5}
    assert wh.state.runs()[1].status == "error" and "being written by another export" in wh.state.runs()[1].error


async def test_concurrent_runs_on_one_list_take_turns(wh):
    clock = FakeClock()
    app = make(clock)
    list_id, members, others = people(app)
    watch = Consent(app, members + others)
    table = pa.table({"email": members + others})
    a, b = await asyncio.gather(
        export(wh, table, unsubscribe(list_id), app, clock), export(wh, table, unsubscribe(list_id), app, clock)
    )
    counts = sorted([a.summary.counts, b.summary.counts], key=len)
    assert counts == [{"skipped": 10}, {"submitted": 5, "skipped": 5}]  # the second saw the first's result
    assert watch.globally_unsubscribed() == []


def test_the_list_lock_is_a_postgresql_advisory_lock_there():
    from ..store.conftest import PG_URL

    with open_warehouse(PG_URL) as first, open_warehouse(PG_URL) as second:
        name = f"list:{BASE}:pg-{random.random()}"
        held = first.named_lock(name)
        assert held.try_acquire({})
        try:
            other = second.named_lock(name)
            assert not other.try_acquire({})
            assert (other.holder() or {}).get("postgres_pid")
        finally:
            held.release()
        assert other.try_acquire({})
        other.release()


# --- 4. resume that cannot skip rows -----------------------------------------------------------

ADD = pa.table({"email": [f"r{i}@example.com" for i in range(30)], "first_name": [f"R{i}" for i in range(30)]})


async def test_resume_refuses_changed_settings_rows_or_query(wh, monkeypatch):
    from klaviyo_bridge.exports.batching import Endpoint
    from klaviyo_bridge.exports.ops import AddToList

    monkeypatch.setattr(AddToList, "endpoint", Endpoint("bulk_import_profiles", 10))
    clock = FakeClock()
    app = make(clock)
    list_id = app.state.emulator.account.records["list"][0].id
    s = settings(operation="add", list_value=list_id)
    first = await export(wh, ADD, s, app, clock, run_id="run-a")
    assert first.batches == 3
    with pytest.raises(ExportError, match=r"setting skip_invalid_records \(false -> true\) changed"):
        await export(wh, ADD, s.model_copy(update={"skip_invalid_records": True}), app, clock, run_id="run-a", resume=True)
    changed = ADD.set_column(0, "email", pa.array([f"x{i}@example.com" for i in range(30)]))
    with pytest.raises(ExportError, match=r"rows differ from the first attempt \(batch run-a-b0000\d"):
        await export(wh, changed, s, app, clock, run_id="run-a", resume=True)
    same = await export(wh, ADD, s, app, clock, run_id="run-a", resume=True)
    assert same.skipped_on_resume == 3 and same.summary.counts == {"submitted": 30}


def test_resume_refuses_a_changed_query(wh):
    clock = FakeClock()
    app = make(clock)
    s = settings(operation="add", list_value=app.state.emulator.account.records["list"][0].id)
    wh.write("crm", "people", ADD)
    run = export_query(
        wh,
        "SELECT * FROM people ORDER BY email",
        s,
        database="crm",
        transport=httpx.ASGITransport(app=app),
        sleep=clock.sleep,
        clock=clock,
    )
    with pytest.raises(ExportError, match="the query text"):
        export_query(
            wh,
            "SELECT email, first_name FROM people ORDER BY email DESC",
            s,
            database="crm",
            resume=run.run_id,
            transport=httpx.ASGITransport(app=app),
            sleep=clock.sleep,
            clock=clock,
        )
    again = export_query(
        wh,
        "SELECT * FROM people ORDER BY email",
        s,
        database="crm",
        resume=run.run_id,
        transport=httpx.ASGITransport(app=app),
        sleep=clock.sleep,
        clock=clock,
    )
    assert again.skipped_on_resume == again.batches == 1


# --- 5. honest status --------------------------------------------------------------------------


async def test_rejected_key_unreachable_host_and_all_rejected_are_errors(wh):
    clock = FakeClock()
    app = make(clock)
    list_id = app.state.emulator.account.records["list"][0].id
    bad_key = settings(operation="add", list_value=list_id).model_copy(update={"api_key": "pk_wrong"})
    with pytest.raises(AuthError):
        await export(wh, ADD, bad_key, app, clock)
    assert wh.state.runs()[0].status == "error" and "pk_wrong" not in (wh.state.runs()[0].error or "")
    nowhere = settings(
        operation="batch_consent",
        consent_type="subscribed",
        subscription_type="email_marketing_only",
        base_url="http://127.0.0.1:9",
        retry_limit=1,
    )
    with pytest.raises(ExportFailed, match="none of the 30 row"):
        await run_export(wh, ADD, nowhere, sleep=clock.sleep, clock=clock)
    run = wh.state.runs()[0]
    assert run.status == "error" and run.counts == {"rejected": 30}


# --- 6. per-row outcomes name the row ----------------------------------------------------------


def test_job_show_rows_names_each_row(tmp_path):
    from klaviyo_bridge.cli import main
    from klaviyo_emulator.server import running_emulator

    emu = EmulatorSettings(seed=4, profiles=50, events=10, lists=2, rate_limits=False, job_profiles_per_second=1e9)
    wh_path = tmp_path / "wh.duckdb"
    with open_warehouse(wh_path) as wh:
        wh.write("crm", "c", pa.table({"email": ["ok@example.com", "not-an-email"]}))
    with running_emulator(emu) as url:
        import json
        import subprocess
        import sys

        conf = json.dumps(
            {
                "base_url": url,
                "operation": "add",  # the key from the environment, not argv
                "list_identify_type": "name",
                "list_value": "Named rows",
                "skip_invalid_records": True,
            }
        )
        home = ["--home", str(tmp_path / "home"), "--warehouse", str(wh_path)]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "klaviyo_bridge",
                "--home",
                str(tmp_path / "home"),
                "query",
                "-d",
                "crm",
                "--warehouse",
                str(wh_path),
                "--result-settings",
                conf,
                "SELECT email FROM c ORDER BY email DESC",
            ],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "KLAVIYO_API_KEY": DEFAULT_API_KEY},
        )
        assert done.returncode == 0, done.stderr
        with open_warehouse(wh_path) as wh:
            run_id = wh.state.runs()[0].run_id
        shown = subprocess.run(
            [sys.executable, "-m", "klaviyo_bridge", home[0], home[1], "job:show", run_id, "--rows", home[2], home[3]],
            capture_output=True,
            text=True,
        )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert lines[0] == "row_number,identifier,outcome,reason"
    assert lines[1].startswith("1,email:ok@example.com,submitted,")
    assert lines[2].startswith("2,email:not-an-email,skipped,invalid: email is not a valid email")
    assert DEFAULT_API_KEY not in shown.stdout
    del main


# --- 7 and 8. wide rows, values sent as meant --------------------------------------------------


async def test_nan_blob_and_duplicates_of_invalid_rows(wh):
    clock = FakeClock()
    app = make(clock)
    list_id = app.state.emulator.account.records["list"][0].id
    table = pa.table(
        {
            "email": ["a@example.com", "b@example.com", "c@example.com", "c@example.com", "d@example.com"],
            "phone_number": [None, None, "not a phone", None, None],
            "score": [1.5, float("nan"), 2.0, 3.0, float("inf")],
            "avatar": pa.array([None, None, None, None, b"\x00\x01"], pa.binary()),
        }
    )
    s = settings(
        operation="add",
        list_value=list_id,
        skip_invalid_records=True,
        wait_for_completion=True,
        waiting_time_for_completion_millis=300_000,
    )
    result = await export(wh, table, s, app, clock)
    got = [(r["outcome"], r["reason"]) for r in wh.state.export_rows(run_id=result.run_id).sort_by("row_index").to_pylist()]
    assert got[0] == ("accepted", None)
    assert got[1][0] == "skipped" and "'score' is NaN or infinite" in got[1][1]
    assert got[2][0] == "skipped" and "phone" in got[2][1]
    assert got[3] == ("accepted", None), "a valid row dropped as a duplicate of an earlier invalid one"
    assert got[4][0] == "skipped" and ("'avatar' is binary" in got[4][1] or "infinite" in got[4][1])


def test_wide_rows_stream_in_byte_bounded_chunks_and_oversize_rows_name_their_size(wh):
    from klaviyo_bridge.exports import runner

    clock = FakeClock()
    app = make(clock)
    list_id = app.state.emulator.account.records["list"][0].id
    wh.write("crm", "wide", pa.table({"email": [f"w{i}@example.com" for i in range(1200)]}))
    sql = "SELECT email, repeat('x', CASE WHEN email = 'w7@example.com' THEN 120000 ELSE 40000 END) AS note FROM wide"
    chunks = []
    real = runner._chunks

    def spy(*args, **kw):
        for chunk in real(*args, **kw):
            chunks.append(chunk.nbytes)
            yield chunk

    runner._chunks = spy
    try:
        result = export_query(
            wh, sql, settings(operation="add", list_value=list_id, skip_invalid_records=True), database="crm", dry_run=True
        )
    finally:
        runner._chunks = real
    assert result.would_send == 1199 and result.invalid == 1
    assert "120,0" in result.invalid_rows[0][1] and "100 KB" in result.invalid_rows[0][1]
    assert len(chunks) >= 2 and max(chunks) <= runner.CHUNK_BYTES + 200_000


@pytest.mark.parametrize("joined_meanwhile", [False, True])
async def test_a_batch_sent_before_a_kill_reports_the_rows_it_held_back_as_skipped_not_submitted(wh, joined_meanwhile):
    """Killed after a list unsubscribe went out and before its outcomes were stored: the resume
    reports the members sent as submitted and the non-members the check held back as skipped
    (they were never sent), sends nothing again and unsubscribes nobody from all marketing; a
    non-member that joined the list since is not sent by the resume either (a rerun does that)."""
    clock = FakeClock()
    app = make(clock, faults="storm=get_accounts:503:1s")  # (faults on: the emulator counts requests)
    list_id, members, others = people(app)
    table = pa.table({"email": members + others})
    watch = Consent(app, members + others)
    first = await export(wh, table, unsubscribe(list_id), app, clock, run_id="run-k")
    sent = posts(app)
    with wh.transaction() as s:  # as a kill between "sent" and the outcomes leaves it
        s.execute("DELETE FROM _bridge.export_row_ranges WHERE run_id = 'run-k'")
        s.execute("UPDATE _bridge.export_batches SET status = 'sent' WHERE run_id = 'run-k'")
    if joined_meanwhile:
        state = app.state.emulator.state
        joiner = state.profile_id(next(r for r in range(state.base.count) if state.base.email(r) == others[0]))
        async with KlaviyoClient(
            unsubscribe(list_id).client_settings(), transport=httpx.ASGITransport(app=app), limiter=RateLimiter(enabled=False)
        ) as c:
            await c.request(
                "add_profiles_to_list", path_params={"id": list_id}, json={"data": [{"type": "profile", "id": joiner}]}
            )
        assert others[0] in members_now(app, list_id)
    again = await export(wh, table, unsubscribe(list_id), app, clock, run_id="run-k", resume=True)
    got = outcomes_by_email(wh, again.run_id)
    assert first.run_id == again.run_id and posts(app) == sent
    assert [got[e][0] for e in members] == ["submitted"] * 5
    held = others[1:] if joined_meanwhile else others
    assert all(got[e][0] == "skipped" and f"not a member of list {list_id}" in got[e][1] for e in held), got
    if joined_meanwhile:
        assert got[others[0]] == ("skipped", HELD_BACK_BEFORE) and others[0] in members_now(app, list_id)
    assert watch.globally_unsubscribed() == []
