"""A false stall: a worker judged dead (its heartbeat late beyond ``--stalled-after``) that had in
fact run its slot to the end. The attempt that takes the job over must not run the slot again;
an attempt whose worker really died (its record still ``running``) is still taken over.

The first attempt is played by the test on real procrastinate functions (a registered worker that
fetches the job, links and records its run, then sends no more heartbeats); a real worker process
with a tiny ``--stalled-after`` judges it stalled and runs the next attempt. No clock, no sleep:
the test waits on the queue's state.
"""

from __future__ import annotations

import socket
import uuid
from datetime import timedelta

import pytest

from klaviyo_bridge.home import Home
from klaviyo_bridge.schedule.scheduler import spec_for
from klaviyo_bridge.store import open_warehouse
from klaviyo_bridge.store import workers as sql
from klaviyo_bridge.workers import QUEUE

from .conftest import wait_for
from .test_pool import KEYS, T0, enqueue, fetch, queue_empty, setup_schedules

#: The test's own "worker" never heartbeats again: judged stalled after 0.5 s by the real one,
#: whose heartbeat (0.1 s) keeps it well inside that bound.
TINY = ["--no-schedules", "--poll", "0.1", "--heartbeat", "0.1", "--stalled-after", "0.5", "--concurrency", "1"]


@pytest.mark.klaviyo_emulator(extra_api_keys=KEYS, rate_limits=False, profiles=20, events=0, lists=1)
@pytest.mark.parametrize("first_attempt_ended", [True, False], ids=["finished-on-its-own", "really-died"])
def test_retried_attempt_skips_a_slot_an_earlier_attempt_finished(klaviyo_emulator, pool, first_attempt_ended):
    home = Home.resolve(pool.home)
    url = pool.url
    credentials = setup_schedules(home, url, klaviyo_emulator.base_url, n=1)
    (report,) = [enqueue(url, credentials, T0 + timedelta(minutes=1, seconds=30)).enqueued]
    assert [name for name, _, _ in report] == ["s00"]
    _, slot, job_id = report[0]

    # Attempt 1: a worker fetches the job and records its run (the way run_schedule does) ...
    conn = sql.connect(url)
    wh = open_warehouse(url)
    try:
        worker_id = conn.execute("SELECT worker_id FROM procrastinate_register_worker_v1()").fetchone()[0]
        fetched = conn.execute("SELECT id FROM procrastinate_fetch_job_v2(%s, %s)", [[QUEUE], worker_id]).fetchone()
        assert fetched[0] == job_id
        first_run = uuid.uuid4().hex
        record = wh.state.schedule("s00")
        spec = spec_for(record)
        sql.link_attempt(conn, first_run, job_id, worker_id, 0)
        wh.state.begin_job(
            first_run,
            spec.job,
            spec.kind,
            schedule="s00",
            scheduled_for=slot,
            triggered_by="schedule",
            pid=1,
            host=socket.gethostname(),
            database=record.database,
            table=record.table,
        )
        if first_attempt_ended:
            # ... and ran the slot to its end, but its heartbeat was late: judged stalled anyway.
            wh.state.end_job(first_run, "success", schedule="s00", rows_read=0, rows_written=0)
        # (otherwise its worker died mid-run: the record stays "running")
    finally:
        wh.close()
        conn.close()

    pool.start(1, *TINY)
    wait_for("the job taken over and ended", lambda: queue_empty(url), timeout=120)
    runs = fetch(
        url, "SELECT run_id, status, triggered_by, error FROM _bridge.runs WHERE schedule = 's00' AND scheduled_for = %s", [slot]
    )
    by_id = {r[0]: r[1:] for r in runs}
    assert fetch(url, "SELECT status::text FROM procrastinate_jobs WHERE id = %s", [job_id]) == [("succeeded",)]
    if first_attempt_ended:
        # The slot ran once: no second run record, the first one untouched.
        assert list(by_id) == [first_run] and by_id[first_run][0] == "success", runs
        assert "already done by attempt 1" in pool.log(0) and first_run in pool.log(0)
    else:
        # Really died: closed as interrupted, and the slot run by the taking-over attempt.
        assert by_id[first_run][0] == "error" and "interrupted" in by_id[first_run][2], runs
        (other,) = [v for k, v in by_id.items() if k != first_run]
        assert other[:2] == ("success", "recovery"), runs
        assert fetch(url, "SELECT closed_by_attempt FROM _bridge.worker_runs WHERE run_id = %s", [first_run]) == [(1,)]
