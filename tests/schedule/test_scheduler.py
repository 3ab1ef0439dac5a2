"""The scheduler on a fake clock, with a real DuckDB file in tmp_path and a fake "import" kind.

Only the job body is faked (it records its "now" and can fail or block); state, threads,
recovery, failure counting and notification are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from klaviyo_bridge import jobs
from klaviyo_bridge.errors import AuthError, ConfigError, RetriesExhausted, ServerError
from klaviyo_bridge.jobs import JobOutcome, request_kill
from klaviyo_bridge.schedule.cron import CronSchedule
from klaviyo_bridge.schedule.scheduler import Scheduler, latest_due
from klaviyo_bridge.secrets import CredentialStore
from klaviyo_bridge.store import open_warehouse
from klaviyo_bridge.store.state import ScheduleRecord

from ..fakes import FakeWallClock

UTC = timezone.utc


class FakeKind:
    """Stands in for run_import: records each run's "now"; may fail or block."""

    def __init__(self) -> None:
        self.calls: list[datetime] = []
        self.fail: list[BaseException] = []  # raised in order, one per run, then succeed
        self.gate: threading.Event | None = None
        self.started = threading.Event()

    async def __call__(self, ctx) -> JobOutcome:
        self.calls.append(ctx.now)
        self.started.set()
        if self.gate is not None:
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
        if self.fail:
            raise self.fail.pop(0)
        return JobOutcome(rows_read=10, rows_written=10)


@pytest.fixture
def kind(monkeypatch):
    fake = FakeKind()
    monkeypatch.setitem(jobs.KINDS, "import", fake)
    return fake


@pytest.fixture
def wh(tmp_path):
    warehouse = open_warehouse(tmp_path / "wh.duckdb")
    yield warehouse
    warehouse.close()


@pytest.fixture
def creds(tmp_path):
    return CredentialStore(tmp_path / "credentials.json")


def add(wh, name="s", cron="10 0 * * *", tz="UTC", delay=0, base=datetime(2024, 1, 30, 12, tzinfo=UTC)):
    wh.state.create_schedule(
        ScheduleRecord(
            name, "import", cron, tz, delay, "db", "t", {"in": {"type": "klaviyo", "connection": "x"}}, last_scheduled_for=base
        )
    )


def drive(scheduler: Scheduler, clock: FakeWallClock, until: datetime, step: timedelta) -> None:
    while clock.now < until:
        clock.now += step
        scheduler.tick()
        scheduler.wait()


def test_daily_across_days_and_a_month_end(wh, creds, kind):
    add(wh)
    clock = FakeWallClock(datetime(2024, 1, 30, 12, tzinfo=UTC))
    scheduler = Scheduler(wh, creds, clock=clock)
    drive(scheduler, clock, datetime(2024, 2, 3, 12, tzinfo=UTC), timedelta(minutes=47))
    assert kind.calls == [datetime(2024, d[0], d[1], 0, 10, tzinfo=UTC) for d in ((1, 31), (2, 1), (2, 2), (2, 3))]
    history = wh.state.jobs(schedule="s")
    assert [j.status for j in history] == ["success"] * 4
    assert [j.scheduled_for for j in history] == sorted(kind.calls, reverse=True)  # newest first
    assert wh.state.schedule("s").last_scheduled_for == kind.calls[-1]


def test_monthly_with_delay_uses_the_slot_as_now(wh, creds, kind):
    add(wh, cron="@monthly", delay=600)
    clock = FakeWallClock(datetime(2024, 1, 30, 12, tzinfo=UTC))
    scheduler = Scheduler(wh, creds, clock=clock)
    clock.now = datetime(2024, 2, 1, 0, 9, tzinfo=UTC)
    assert scheduler.tick() == []  # slot 00:00 is scheduled, but runs 10 minutes later
    clock.now = datetime(2024, 2, 1, 0, 10, tzinfo=UTC)
    assert len(scheduler.tick()) == 1
    scheduler.wait()
    drive(scheduler, clock, datetime(2024, 4, 15, tzinfo=UTC), timedelta(hours=19))
    assert kind.calls == [datetime(2024, m, 1, tzinfo=UTC) for m in (2, 3, 4)]


def test_dst_changes_in_new_york_run_once_a_day(wh, creds, kind):
    # 02:30 does not exist on 2024-03-10 (runs at the end of the gap, 03:00 EDT);
    # 01:30 happens twice on 2024-11-03 (runs once, at the first).
    add(wh, "spring", cron="30 2 * * *", tz="America/New_York", base=datetime(2024, 3, 8, tzinfo=UTC))
    add(wh, "fall", cron="30 1 * * *", tz="America/New_York", base=datetime(2024, 11, 1, tzinfo=UTC))
    clock = FakeWallClock(datetime(2024, 3, 8, tzinfo=UTC))
    sleeps = []

    def sleep(seconds):
        scheduler.wait()
        sleeps.append(seconds)
        clock.sleep(seconds)
        if clock.now >= datetime(2024, 3, 11, 12, tzinfo=UTC):
            scheduler.stop()

    scheduler = Scheduler(wh, creds, clock=clock, poll_seconds=86400, sleep=sleep)
    scheduler.run_forever()  # sleeps until each next run time (1 s steps while a job runs)
    assert len(sleeps) < 20
    spring = sorted(j.scheduled_for for j in wh.state.jobs(schedule="spring"))
    assert [t.astimezone(UTC) for t in spring[:4]] == [
        datetime(2024, 3, 8, 7, 30, tzinfo=UTC),
        datetime(2024, 3, 9, 7, 30, tzinfo=UTC),
        datetime(2024, 3, 10, 7, 0, tzinfo=UTC),  # 03:00 EDT, the end of the gap
        datetime(2024, 3, 11, 6, 30, tzinfo=UTC),
    ]  # 02:30 EDT
    clock.now = datetime(2024, 11, 1, 12, tzinfo=UTC)
    wh.state.update_schedule("spring", enabled=False)
    drive(scheduler, clock, datetime(2024, 11, 5, 12, tzinfo=UTC), timedelta(minutes=50))
    fall = sorted(j.scheduled_for for j in wh.state.jobs(schedule="fall"))
    assert [t.astimezone(UTC) for t in fall] == [
        datetime(2024, 11, 1, 5, 30, tzinfo=UTC),  # missed before the clock jumped: runs once at the jump
        datetime(2024, 11, 2, 5, 30, tzinfo=UTC),
        datetime(2024, 11, 3, 5, 30, tzinfo=UTC),  # EDT, once
        datetime(2024, 11, 4, 6, 30, tzinfo=UTC),
        datetime(2024, 11, 5, 6, 30, tzinfo=UTC),
    ]  # EST


def test_restart_runs_missed_slots_once_and_never_twice(tmp_path, creds, kind):
    path = tmp_path / "wh.duckdb"
    clock = FakeWallClock(datetime(2024, 1, 30, 12, tzinfo=UTC))
    with open_warehouse(path) as wh:
        add(wh)
        scheduler = Scheduler(wh, creds, clock=clock)
        drive(scheduler, clock, datetime(2024, 1, 31, 1, tzinfo=UTC), timedelta(minutes=30))
    assert len(kind.calls) == 1
    clock.now = datetime(2024, 2, 5, 9, tzinfo=UTC)  # down for five slots
    with open_warehouse(path) as wh:
        scheduler = Scheduler(lambda: wh, creds, clock=clock)  # a new process, same file
        scheduler.tick()
        scheduler.wait()
        scheduler.tick()
        scheduler.wait()
        assert kind.calls[1:] == [datetime(2024, 2, 5, 0, 10, tzinfo=UTC)]  # once, the latest slot
        assert len(wh.state.jobs(schedule="s")) == 2


CRASHING_SCHEDULER = textwrap.dedent("""
    import asyncio, sys, pathlib
    from datetime import datetime, timezone
    from klaviyo_bridge import jobs
    from klaviyo_bridge.schedule.scheduler import Scheduler
    from klaviyo_bridge.secrets import CredentialStore
    from klaviyo_bridge.store import open_warehouse

    async def slow(ctx):
        pathlib.Path(sys.argv[2]).write_text(ctx.run_id)
        await asyncio.sleep(120)

    jobs.register_kind("import", slow)
    wh = open_warehouse(sys.argv[1])
    s = Scheduler(wh, CredentialStore(sys.argv[3]), clock=lambda: datetime(2024, 2, 1, 1, tzinfo=timezone.utc))
    s.tick()
    s.wait()
""")


def test_restart_after_a_crash_mid_run_reruns_that_slot_once(tmp_path, creds, kind):
    path, started = tmp_path / "wh.duckdb", tmp_path / "started"
    with open_warehouse(path) as wh:
        add(wh)
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_SCHEDULER, str(path), str(started), str(creds.path)])
    try:
        deadline = time.monotonic() + 30
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "scheduler subprocess did not start the job"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    crashed = started.read_text()
    clock = FakeWallClock(datetime(2024, 2, 1, 1, 5, tzinfo=UTC))
    with open_warehouse(path) as wh:
        assert wh.state.job(crashed).status == "running"
        scheduler = Scheduler(wh, creds, clock=clock)
        scheduler.tick()
        scheduler.wait()
        scheduler.tick()
        scheduler.wait()
        history = wh.state.jobs(schedule="s")
        assert [(j.status, j.triggered_by) for j in history] == [("success", "recovery"), ("error", "schedule")]
        assert "interrupted" in history[1].error
        assert history[0].scheduled_for == history[1].scheduled_for == datetime(2024, 2, 1, 0, 10, tzinfo=UTC)
        assert kind.calls == [datetime(2024, 2, 1, 0, 10, tzinfo=UTC)]  # the slot ran once, here


def test_a_slow_job_is_not_started_twice(wh, creds, kind):
    add(wh, cron="*/10 * * * *", base=datetime(2024, 1, 1, tzinfo=UTC))
    kind.gate = threading.Event()
    clock = FakeWallClock(datetime(2024, 1, 1, 0, 10, tzinfo=UTC))
    scheduler = Scheduler(wh, creds, clock=clock)
    assert len(scheduler.tick()) == 1
    assert kind.started.wait(5)
    for minutes in (20, 30, 40):  # three more slots pass while it runs
        clock.now = datetime(2024, 1, 1, 0, minutes, tzinfo=UTC)
        assert scheduler.tick() == []
    kind.gate.set()
    scheduler.wait()
    scheduler.tick()
    scheduler.wait()
    assert kind.calls == [datetime(2024, 1, 1, 0, m, tzinfo=UTC) for m in (10, 40)]  # one catch-up run
    assert [j.status for j in wh.state.jobs(schedule="s")] == ["success", "success"]


def test_three_config_failures_disable_transient_ones_do_not(wh, creds, kind, tmp_path):
    add(wh, "bad", cron="0 * * * *", base=datetime(2024, 1, 1, tzinfo=UTC))
    add(wh, "flaky", cron="0 * * * *", base=datetime(2024, 1, 1, tzinfo=UTC))
    out = tmp_path / "notified"
    out.mkdir()
    clock = FakeWallClock(datetime(2024, 1, 1, tzinfo=UTC))
    scheduler = Scheduler(wh, creds, clock=clock, notify_command=f"cat > $(mktemp -p {out})")

    def body(ctx):
        if ctx.spec.schedule == "bad":
            raise (
                AuthError("the API key was rejected", status=401)
                if len(kind.calls) % 2
                else ConfigError("in.data_source: bad", key="in.data_source")
            )
        raise [RetriesExhausted("failed after 5 attempts", attempts=5, last_error=OSError()), ServerError("503", status=503)][
            len(kind.calls) % 2
        ]

    async def runner(ctx):
        kind.calls.append(ctx.now)
        body(ctx)

    jobs.KINDS["import"] = runner
    drive(scheduler, clock, datetime(2024, 1, 1, 5, 30, tzinfo=UTC), timedelta(minutes=30))
    bad, flaky = wh.state.schedule("bad"), wh.state.schedule("flaky")
    assert not bad.enabled and bad.status.startswith("disabled: 3 configuration failures in a row")
    assert [j.status for j in wh.state.jobs(schedule="bad")] == ["error"] * 3  # none after disabling
    assert "disabled after 3" in wh.state.jobs(schedule="bad")[0].note
    assert flaky.enabled and flaky.consecutive_failures == 0
    assert len(wh.state.jobs(schedule="flaky")) == 5
    events = [json.loads(p.read_text()) for p in out.iterdir()]
    assert sum(e["event"] == "schedule_disabled" for e in events) == 1
    assert sum(e["event"] == "job_error" for e in events) == 2 + 5
    disabled = next(e for e in events if e["event"] == "schedule_disabled")
    assert disabled["schedule"] == "bad" and disabled["error_class"] == "config" and disabled["consecutive_failures"] == 3
    # the notification carries the error as data: its code, and the field a config error names
    detail = {e["schedule"]: set() for e in events}
    for e in events:
        detail[e["schedule"]].add((e["error_detail"]["code"], e["error_detail"]["field"]))
    assert detail["bad"] and detail["bad"] <= {("config", "in.data_source"), ("auth", None)}
    assert detail["flaky"] == {("retries_exhausted", None), ("server", None)}
    # ... and so does the job record, the same data
    recorded = {j.schedule: set() for j in wh.state.jobs()}
    for j in wh.state.jobs():
        recorded[j.schedule].add((j.error_detail["code"], j.error_detail["field"]))
    assert recorded == detail


def test_success_resets_the_failure_count(wh, creds, kind):
    add(wh, cron="0 * * * *", base=datetime(2024, 1, 1, tzinfo=UTC))
    kind.fail = [ConfigError("x"), ConfigError("x"), None, ConfigError("x"), ConfigError("x")]

    async def runner(ctx):
        kind.calls.append(ctx.now)
        error = kind.fail.pop(0) if kind.fail else None
        if error:
            raise error

    jobs.KINDS["import"] = runner
    clock = FakeWallClock(datetime(2024, 1, 1, tzinfo=UTC))
    drive(Scheduler(wh, creds, clock=clock), clock, datetime(2024, 1, 1, 5, 30, tzinfo=UTC), timedelta(minutes=30))
    record = wh.state.schedule("s")
    assert record.enabled and record.consecutive_failures == 2 and len(kind.calls) == 5  # 2 + reset + 2: never 3


def test_job_kill_cancels_a_running_job(wh, creds, kind, tmp_path):
    add(wh, cron="0 * * * *", base=datetime(2024, 1, 1, tzinfo=UTC))
    kind.gate = threading.Event()  # never set: only the kill ends it
    clock = FakeWallClock(datetime(2024, 1, 1, 1, tzinfo=UTC))
    scheduler = Scheduler(wh, creds, clock=clock, control_dir=tmp_path / "jobs")
    [run_id] = scheduler.tick()
    assert kind.started.wait(5)
    assert wh.state.job(run_id).status == "running"
    request_kill(run_id, control_dir=tmp_path / "jobs", state=wh.state)
    scheduler.wait(10)
    job = wh.state.job(run_id)
    assert job.status == "killed" and job.error == "killed by job:kill" and job.ended_at is not None


class _Interrupted(Exception):
    pass


def test_wait_hears_a_signal_delivered_to_another_thread_while_a_job_runs(wh, creds, kind):
    """``scheduler --once`` waits for its jobs in the main thread; a SIGTERM the kernel gives to
    another thread is handled (by Python, in the main thread) while the job still runs."""
    add(wh, cron="0 * * * *", base=datetime(2024, 1, 1, tzinfo=UTC))
    kind.gate = threading.Event()
    clock = FakeWallClock(datetime(2024, 1, 1, 1, tzinfo=UTC))
    scheduler = Scheduler(wh, creds, clock=clock)
    handled = threading.Event()
    job_ran_when_handled: list[bool] = []

    def handler(signum, frame):
        job_ran_when_handled.append(not kind.gate.is_set())
        handled.set()
        raise _Interrupted

    main = threading.main_thread().ident

    def main_thread_in_scheduler_wait() -> bool:
        frame = sys._current_frames().get(main)
        while frame is not None:
            if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("scheduler.py"):
                return True
            frame = frame.f_back
        return False

    def signal_another_thread() -> None:
        for _ in range(1000):  # until the main thread is blocked in Scheduler.wait (at most 5 s)
            if main_thread_in_scheduler_wait():
                break
            handled.wait(0.005)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # this thread, not the main one
        handled.wait(5)  # without the sliced wait: heard only once the job ends (here: after 5 s)
        kind.gate.set()

    sender = threading.Thread(target=signal_another_thread)
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        [run_id] = scheduler.tick()
        assert kind.started.wait(5)
        sender.start()
        with pytest.raises(_Interrupted):
            scheduler.wait()
        assert job_ran_when_handled == [True]
    finally:
        kind.gate.set()
        signal.signal(signal.SIGUSR1, previous)
        if sender.ident is not None:
            sender.join()
        scheduler.wait()
    assert wh.state.job(run_id).status == "success"


def test_latest_due_finds_the_last_missed_slot_quickly(monkeypatch):
    every_minute = CronSchedule.parse("* * * * *")
    after = datetime(2023, 1, 1, tzinfo=UTC)
    now = datetime(2024, 1, 1, 12, 0, 30, tzinfo=UTC)
    asked: list[int] = []
    next_fires = CronSchedule.next_fires
    monkeypatch.setattr(CronSchedule, "next_fires", lambda self, start, n: asked.append(n) or next_fires(self, start, n))
    assert latest_due(every_minute, after, now).scheduled_at == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    # a year of missed minutes (525,600 slots) is not walked: it looks back from now, a few slots at a time
    assert sum(asked) <= 256, asked
    monkeypatch.undo()
    assert latest_due(every_minute, now, now) is None
    leap = CronSchedule.parse("0 0 29 2 *")
    assert latest_due(leap, datetime(2015, 1, 1, tzinfo=UTC), now).scheduled_at == datetime(2020, 2, 29, tzinfo=UTC)
