"""Exports under the issue's fault mix: every row accounted for, no accepted batch sent again,
and the emulator's final state (lists, members, consent, profiles) equal to a fault-free run's.

How: the real ``run_export`` (validate, batches, list resolution, job polling, the state schema)
sends to the emulator over a real socket (``reset`` is an aborted TCP connection, ``slow`` a real
read timeout of 0.25 s against a 1 s delay). The client is the real ``KlaviyoClient`` with
``retry_limit: 7`` and its own retry decisions; only its sleeps are compressed. Klaviyo's batch
sizes (10,000 / 1,000 / 1,000 / 100) are shrunk for the test (the operations' ``endpoint``) so a few
hundred rows make 10-30 batches and the faults land on writes, not only on reads.

``PostLedger`` (export_ledger.py) sits in front of the emulator and records, for every write,
the batch's identifiers, the fault decided and whether the emulator applied it. The rule checked
for every batch: it was applied and confirmed exactly once, and any other time it was applied is
a request whose answer was lost after the write (``slow``/``truncate`` on the POST). What the
engine does then: the client cannot tell "applied, answer lost" from "never arrived", so it sends
the same batch again. That is safe here and the final state proves it: list adds and consent
changes are idempotent at Klaviyo, and a second bulk import job with the same profiles upserts
the same values (no new profiles, the same members). With ``wait_for_completion`` the engine
polls the job whose answer it read, so the row outcomes come from one job.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pyarrow as pa
import pytest

from klaviyo_bridge.exports import batching, ops, runner
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from .export_ledger import PostLedger, check_accepted_once, check_applied_once, consent_of, normal_snapshot
from .helpers import FIGURES, fast_client_class, serve_app

MIX = "429=0.2,500=0.05,503=0.05,reset=0.02,slow=0.05:1s,truncate=0.01,seed={seed}"
EMU = dict(
    seed=51,
    profiles=400,
    events=0,
    lists=3,
    segments=1,
    campaigns=1,
    templates=1,
    flows=1,
    rate_limits=False,
    job_profiles_per_second=1e9,
)
SMALL = {"add": 30, "remove_profiles": 25, "subscribed": 25, "unsubscribed": 10}
OP_CLASSES = {
    "add": (ops.AddToList,),
    "remove_profiles": (ops.RemoveFromList,),
    "subscribed": (ops.Subscribe,),
    "unsubscribed": (ops.Unsubscribe, ops.UnsubscribeFromList),
}
OPS = ("add", "remove_profiles", "subscribe", "unsubscribe")


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def small_batches(monkeypatch):
    for name, size in SMALL.items():
        for cls in OP_CLASSES[name]:
            old = cls.endpoint
            monkeypatch.setattr(cls, "endpoint", batching.Endpoint(old.operation_id, size, old.max_bytes))
    monkeypatch.setattr(runner, "KlaviyoClient", fast_client_class(read_timeout=0.25))


def scenario(op: str, app, n: int = 600):
    """(settings, input table) for ``op`` against the emulator account of ``app``."""
    emu = app.state.emulator
    base = emu.state.base
    lists = [r.id for r in emu.account.records["list"]]
    members = emu.snapshot()["list_members"]
    existing = [base.email(r) for r in range(0, 2 * n // 3, 2)][: n // 3]
    new = [f"fault.{i}@example.org" for i in range(n - len(existing))]
    emails = sorted(existing + new)
    keys = {
        "type": "klaviyo",
        "api_token": DEFAULT_API_KEY,
        "base_url": "http://emulator.test",
        "retry_limit": 7,
        "concurrency": 1,
    }
    if op == "add":
        s = dict(
            operation="add",
            list_identify_type="id",
            list_value=lists[0],
            wait_for_completion=True,
            waiting_time_for_completion_millis=300_000,
        )
        table = pa.table({"email": emails, "first_name": [f"F{i}" for i in range(len(emails))]})
    elif op == "remove_profiles":
        ids = sorted(members[lists[1]])[: n // 2] + [base.profile_id(r) for r in range(n // 2)]
        s = dict(operation="remove_profiles", list_value=lists[1])
        table = pa.table({"profile_id": sorted(set(ids))})
    elif op == "subscribe":
        s = dict(
            operation="batch_consent", consent_type="subscribed", subscription_type="email_marketing_only", list_value=lists[2]
        )
        table = pa.table({"email": emails})
    else:  # unsubscribe (globally) or unsubscribe_from_list
        s = dict(
            operation="batch_consent",
            consent_type="unsubscribed",
            subscription_type="email_marketing_only",
            **({"list_value": lists[0]} if op == "unsubscribe_from_list" else {}),
        )
        table = pa.table({"email": [base.email(r) for r in range(0, 3 * (n // 3), 3)][: n // 3]})
    return parse_export_settings({**keys, **s}), table


def export_once(tmp_path, name, app, op, concurrency, n=600):
    with serve_app(app) as url:
        s, table = scenario(op, app, n)
        s = s.model_copy(update={"base_url": url, "concurrency": concurrency})
        with open_warehouse(tmp_path / f"{name}.duckdb") as wh:
            result = asyncio.run(runner.run_export(wh, table, s, sleep=_no_sleep, poll_initial=0.01))
            rows = wh.state.export_rows(run_id=result.run_id).sort_by("row_index")
            runs = wh.state.runs()
    return s, table, result, rows, runs


def _expected_keys(op, table, settings, sent=None):
    """The profiles of each batch the engine sends; ``sent`` (row numbers) leaves out rows that are
    never sent (a list unsubscribe skips non-members)."""
    column = table.column("profile_id" if op == "remove_profiles" else "email").to_pylist()
    size = ops.operation_for(settings).endpoint.max_items
    batches = [[(i, column[i]) for i in range(start, min(start + size, len(column)))] for start in range(0, len(column), size)]
    keys = [tuple(v for i, v in batch if sent is None or i in sent) for batch in batches]
    return [k for k in keys if k]


def check(tmp_path, op, seed, concurrency, n=600):
    clean = PostLedger(create_app(EmulatorSettings(**EMU)))
    _, table, clean_result, clean_rows, _ = export_once(tmp_path, "clean", clean, op, concurrency, n)
    sent = {
        i for i, o in zip(clean_rows.column("row_index").to_pylist(), clean_rows.column("outcome").to_pylist()) if o != "skipped"
    }
    faulty = PostLedger(create_app(EmulatorSettings(**EMU, faults=MIX.format(seed=seed))))
    s, table, result, rows, runs = export_once(tmp_path, "faulty", faulty, op, concurrency, n)
    n = table.num_rows
    # Every row accounted for, exactly once, and the counts add up to the input.
    assert rows.column("row_index").to_pylist() == list(range(n)), "a row is missing or recorded twice"
    assert sum(result.summary.counts.values()) == n == result.summary.total
    expected_outcome = {"add": "accepted", "remove_profiles": "accepted"}.get(op, "submitted")
    clean_counts, counts = clean_result.summary.counts, result.summary.counts
    if op in ("add", "remove_profiles"):
        assert counts == clean_counts == {expected_outcome: n}, counts
    else:  # a consent write whose answer was lost is confirmed by reading back: accepted, not resent
        # (a list unsubscribe skips non-members, in both runs alike)
        assert set(clean_counts) <= {"submitted", "skipped"} and set(counts) <= {"submitted", "accepted", "skipped"}
        assert counts.get("skipped", 0) == clean_counts.get("skipped", 0), (counts, clean_counts)
        assert counts.get("submitted", 0) + counts.get("accepted", 0) == clean_counts.get("submitted", 0)
        assert (op == "unsubscribe_from_list") == bool(clean_counts.get("skipped")), clean_counts
    consent = op not in ("add", "remove_profiles")
    assert result.failed_batches == 0 and [r.status for r in runs] == ["success"]
    # The emulator ends as after the fault-free run.
    after, expected = normal_snapshot(faulty), normal_snapshot(clean)
    touched = sorted(set(after.pop("subscriptions")) | set(expected.pop("subscriptions")))
    assert after == expected
    assert consent_of(faulty, touched) == consent_of(clean, touched)
    # No batch that Klaviyo accepted and confirmed was sent again.
    op_id = ops.operation_for(s).endpoint.operation_id
    rule = check_applied_once if consent else check_accepted_once
    figures = rule(faulty, op_id, _expected_keys(op, table, s, sent))
    assert rule(clean, op_id, _expected_keys(op, table, s, sent))["lost answers"] == 0
    if op == "add":
        jobs = [j for j in faulty.emulator.jobs.order if j.type == "profile-bulk-import-job"]
        assert len(jobs) == figures["posts"] - sum(1 for e in faulty.entries if e.op == op_id and not e.accepted)
        FIGURES["export: duplicate bulk import jobs (answer lost, same profiles, same final state)"] += figures[
            "accepted again after a lost answer"
        ]
    plan = faulty.state.faults
    FIGURES["export runs under faults"] += 1
    FIGURES["export requests under faults"] += plan.total_requests
    FIGURES["faults injected (exports)"] += plan.total_injected
    FIGURES["export write requests under faults"] += figures["posts"]
    FIGURES["export answers lost after the write was applied"] += figures["lost answers"]
    FIGURES["export batches resent after a lost answer (idempotent)"] += figures.get("accepted again after a lost answer", 0)
    FIGURES["consent batches settled by reading Klaviyo back (not resent)"] += figures.get("settled by reading back", 0)
    FIGURES["rows checked (exports under faults)"] += n
    return figures, faulty


@pytest.mark.parametrize("op", OPS)
def test_export_under_faults_equals_a_fault_free_run(tmp_path, small_batches, op):
    figures, faulty = check(tmp_path, op, seed=7, concurrency=1)
    assert faulty.kinds(), "the mix injected nothing on writes: the test proves nothing"


# Seeds 2 and 3 are left out on purpose: the mix is 38% faults, and with them one request meets 8
# retryable faults in a row and exhausts retry_limit 7 (seed 2: an add batch, whose 30 rows end
# 'rejected' with "bulk_import_profiles failed after 8 attempts"; seed 3: the list check, requests
# 0-7 of get_list, so the run ends 'error' before sending): accounted for, reported, but not the
# fault-free state.
@pytest.mark.parametrize("seed", [1, 4, 5, 11])
@pytest.mark.parametrize("op", OPS)
def test_export_under_faults_more_seeds_concurrent(tmp_path, small_batches, full, op, seed):
    if not full:
        pytest.skip("--full: four more seeds with 8 batches in flight")
    check(tmp_path, op, seed=seed, concurrency=8)


def test_unsubscribe_from_a_list_under_faults_never_unsubscribes_globally(tmp_path, small_batches):
    """Seed 7 loses answers of list-unsubscribe POSTs (some after the emulator applied them). The
    engine never resends such a write: it reads Klaviyo back after the settle time, counts what it
    shows done as accepted and leaves the rest 'unconfirmed' (still members). Nobody is unsubscribed
    from all marketing; a second, fault-free run finishes the job and the end state equals a
    fault-free run's."""
    op = "unsubscribe_from_list"
    clean = PostLedger(create_app(EmulatorSettings(**EMU)))
    _, table, clean_result, _, _ = export_once(tmp_path, "clean", clean, op, 1)
    faulty = PostLedger(create_app(EmulatorSettings(**EMU, faults=MIX.format(seed=7))))
    state = faulty.emulator.state
    by_email = {state.base.email(r): r for r in range(state.base.count)}
    # rows past the account's profiles name nobody: never members, always skipped
    idents = [state.profile_id(by_email[e]) if e in by_email else None for e in table.column("email").to_pylist()]
    existing = [i for i in idents if i is not None]
    before = consent_of(faulty, existing)
    s, table, result, out_rows, runs = export_once(tmp_path, "faulty", faulty, op, 1)
    counts = result.summary.counts
    assert sum(counts.values()) == table.num_rows and counts["skipped"] == clean_result.summary.counts["skipped"]
    after = consent_of(faulty, existing)
    wrongly = [i for i in existing if after[i]["email"] == "UNSUBSCRIBED" and before[i]["email"] != "UNSUBSCRIBED"]
    assert faulty.emulator.state.count == state.base.count, "a non-member was created by an unsubscribe"
    assert wrongly == [], "globally unsubscribed by a list unsubscribe"
    assert faulty.kinds(ops.operation_for(s).endpoint.operation_id), "no fault landed on a list unsubscribe"
    unconfirmed = [
        i for i, o in zip(out_rows.column("row_index").to_pylist(), out_rows.column("outcome").to_pylist()) if o == "unconfirmed"
    ]
    members = set(faulty.emulator.snapshot()["list_members"][s.list_value])
    assert all(idents[i] in members for i in unconfirmed), "an unconfirmed row left the list"
    FIGURES["list unsubscribe rows left unconfirmed under faults (then finished by a rerun)"] += len(unconfirmed)
    faulty.state.faults.decide = lambda *_args: None  # the faults pass; run the same export again
    export_once(tmp_path, "rerun", faulty, op, 1)
    after, expected = normal_snapshot(faulty), normal_snapshot(clean)
    touched = sorted(set(after.pop("subscriptions")) | set(expected.pop("subscriptions")))
    assert after == expected
    assert consent_of(faulty, touched) == consent_of(clean, touched)


def test_lost_answers_on_writes_are_exercised(tmp_path, small_batches, full):
    """A mix heavy on lost answers: every operation has writes applied whose answer was lost (by
    ``slow`` and by ``truncate``),
    and still every batch is confirmed once and the final state equals the fault-free run's."""
    if not full:
        pytest.skip("--full: a mix heavy on lost answers (seed 7 above already loses some)")
    global MIX
    saved = MIX
    MIX = "429=0.1,503=0.05,reset=0.05,slow=0.04:1s,truncate=0.2,seed={seed}"
    try:
        lost, kinds = 0, Counter()
        for op in OPS:
            figures, faulty = check(tmp_path / op, op, seed=12, concurrency=1, n=300)
            kinds += Counter(e.kind for e in faulty.entries if e.answer_lost)
            assert figures["lost answers"] > 0, op
            lost += figures["lost answers"]
    finally:
        MIX = saved
    assert kinds["slow"] and kinds["truncate"], kinds
