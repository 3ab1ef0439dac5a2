"""Export schedules (sched:*) and pushed workflows end to end: the CLI, a DuckDB file in tmp_path,
and an in-process emulator whose state the tests read (list members). Each schedule runs twice,
once by hand and once by a scheduler tick on a fake clock; the key never lands in the warehouse."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import uvicorn

from klaviyo_bridge.home import Home
from klaviyo_bridge.schedule.scheduler import Scheduler
from klaviyo_bridge.secrets import CredentialStore
from klaviyo_bridge.store import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings

from .test_schedule_cli import Cli, write_config

KEY = EmulatorSettings().api_key
UTC = timezone.utc


@pytest.fixture(scope="module")
def emulator():
    """(base URL, app): like ``running_emulator``, keeping the app to read its state."""
    app = create_app(EmulatorSettings(profiles=200, events=1000, rate_limits=False))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the emulator did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def members(app, list_name: str) -> int:
    snap = app.state.emulator.snapshot()
    ids = [lid for lid, name in snap["new_lists"].items() if name == list_name]
    assert len(ids) == 1, snap["new_lists"]
    return len(snap["list_members"][ids[0]])


@pytest.fixture
def cli(tmp_path, capsys):
    return Cli(tmp_path / "home", capsys)


@pytest.fixture
def home(tmp_path):
    home = Home(tmp_path / "home").ensure()
    with open_warehouse(home.warehouse) as wh:
        with wh.transaction() as s:
            s.execute("CREATE SCHEMA klaviyo_db")
            s.execute("CREATE TABLE klaviyo_db.customers (email VARCHAR, first_name VARCHAR)")
            s.execute(
                "INSERT INTO klaviyo_db.customers VALUES ('s1@example.com', 'Ann'), ('s2@example.com', 'Bob'), "
                "('s3@example.com', 'Cy')"
            )
    return home


def write_settings(tmp_path, base_url, list_name, **extra):
    lines = [
        "type: klaviyo",
        f"api_token: {KEY}",
        f"base_url: {base_url}",
        "operation: add",
        "list_identify_type: name",
        f"list_value: {list_name}",
        "skip_invalid_records: true",
        "wait_for_completion: true",
        "waiting_time_for_completion_millis: 300000",
    ]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path = tmp_path / f"{list_name.replace(' ', '_')}.yml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def scheduler_for(home, now, **kw):
    wh = open_warehouse(home.warehouse)
    return wh, Scheduler(wh, CredentialStore(home.credentials), control_dir=home.root / "jobs", clock=lambda: now, **kw)


def assert_key_never_leaked(cli, home):
    assert all(KEY not in text for text in cli.seen)
    assert KEY.encode() not in home.warehouse.read_bytes()


def test_import_and_export_schedules_each_run_twice(tmp_path, emulator, cli, home):
    base_url, app = emulator
    settings = write_settings(tmp_path, base_url, "Scheduled export")
    out, _ = cli(
        "sched:create",
        "nightly_export",
        "0 7 * * *",
        "-d",
        "klaviyo_db",
        "--result-settings",
        settings,
        "SELECT email, first_name FROM customers ORDER BY email",
        "--timezone",
        "Asia/Tokyo",
        "--delay",
        "30",
    )
    assert "at 07:00 every day (Asia/Tokyo)" in out and "'sched:nightly_export'" in out
    cli(
        "connector:create",
        "daily_import",
        "10 0 * * *",
        "klaviyo_db",
        "profiles",
        write_config(tmp_path, base_url, api_token=KEY),
        "--timezone",
        "Asia/Tokyo",
    )

    out, _ = cli("sched:list")
    header = [c.strip() for c in out.splitlines()[1].strip("┃").split("┃")]
    assert header == ["Name", "Cron", "Timezone", "Delay", "Database", "Query", "Status"]
    assert "nightly_export" in out and "SELECT email, first_name FROM" in out and "enabled" in out
    assert "daily_import" not in out  # import schedules are connector:list's
    out, _ = cli("sched:show", "nightly_export")
    assert "Cron     : 0 7 * * *" in out and "result_connection: sched:nightly_export" in out
    assert "operation: add" in out and KEY not in out

    # run 1: by hand
    out, _ = cli("sched:run", "nightly_export")
    assert " success: 3 records exported" in out, out
    assert members(app, "Scheduled export") == 3
    out, _ = cli("connector:run", "daily_import", "2024-06-01T00:10:00+09:00")
    assert " success: " in out

    # run 2: one scheduler tick on a fake clock runs both (07:00 and 00:10 Tokyo of 2 January)
    with open_warehouse(home.warehouse) as wh:
        with wh.transaction() as s:
            s.execute("INSERT INTO klaviyo_db.customers VALUES ('s4@example.com', 'Di'), ('s5@example.com', 'Ed')")
        for name in ("nightly_export", "daily_import"):
            wh.state.update_schedule(name, last_scheduled_for=datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    wh, scheduler = scheduler_for(home, datetime(2026, 1, 2, 0, 0, tzinfo=UTC))
    with wh:
        assert len(scheduler.tick()) == 2
        scheduler.wait()
        assert not scheduler.tick()  # no double run of the same slot
        by_name = {r.schedule: r for r in scheduler.results}
        assert {r.status for r in by_name.values()} == {"success"}, [r.error for r in by_name.values()]
        assert by_name["nightly_export"].rows == 5 and by_name["daily_import"].rows > 0
    assert members(app, "Scheduled export") == 5  # the list now holds every exported profile

    out, _ = cli("sched:history", "nightly_export")
    rows = [line for line in out.splitlines() if "success" in line]
    assert len(rows) == 2
    assert "2026-01-01 22:00:00 +0000" in rows[0]  # newest first: the scheduled run (07:00 Tokyo)
    job_id = rows[0].split("│")[1].strip()
    out, _ = cli("job:show", job_id[:8])
    assert "Triggered by   : schedule" in out and "Kind           : export" in out
    assert "Records read   : 5" in out and "accepted=5" in out
    out, _ = cli("connector:history", "daily_import")
    assert len([line for line in out.splitlines() if "success" in line]) == 2

    out, _ = cli("sched:update", "nightly_export", "--cron", "@hourly", "--query", "SELECT email FROM customers")
    assert "updated (enabled)" in out
    cli("sched:update", "nightly_export", "--cron", "0 25 * * *", code=2)
    cli("sched:show", "daily_import", code=2)  # an import schedule is not an export schedule
    cli(
        "sched:create",
        "bad",
        "0 0 * * *",
        "-d",
        "klaviyo_db",
        "--result-settings",
        settings,
        "SELECT 1",
        "--timezone",
        "PST",
        code=2,
    )
    cli("sched:delete", "nightly_export")
    out, _ = cli("auth:list")
    assert "sched:nightly_export" not in out
    assert_key_never_leaked(cli, home)


def test_export_schedule_is_disabled_after_three_missing_column_failures(tmp_path, emulator, cli, home):
    base_url, _ = emulator
    settings = write_settings(tmp_path, base_url, "Never filled")
    cli(
        "sched:create",
        "broken",
        "0 * * * *",
        "-d",
        "klaviyo_db",
        "--result-settings",
        settings,
        "SELECT first_name FROM customers",
    )
    start = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    with open_warehouse(home.warehouse) as wh:
        wh.state.update_schedule("broken", last_scheduled_for=start)
    clock = [start]
    wh, scheduler = scheduler_for(home, None, max_failures=3)
    scheduler.clock = lambda: clock[0]
    with wh:
        for hour in (1, 2, 3, 4):
            clock[0] = start + timedelta(hours=hour, minutes=1)
            started = scheduler.tick()
            scheduler.wait()
            assert len(started) == (1 if hour < 4 else 0)  # disabled after the third
        assert [r.status for r in scheduler.results] == ["error"] * 3
        assert all(r.error_class == "config" and "ExportError" in r.error and "email" in r.error for r in scheduler.results)
        assert [r.disabled for r in scheduler.results] == [False, False, True]
    out, _ = cli("sched:list")
    assert "disabled: 3 configuration failures in a row" in out
    out, _ = cli("sched:history", "broken")
    assert out.count("error") >= 3 and "sched:update broken --enable" in out
    out, _ = cli("sched:update", "broken", "--enable")
    assert "updated (enabled)" in out
    assert_key_never_leaked(cli, home)


DIG = """\
timezone: Asia/Tokyo
schedule:
  daily>: 07:00:00

_export:
  td:
    database: klaviyo_db

+klaviyo_export_task:
  td>: export_data.sql
  database: ${{td.database}}
  result_settings:
    type: klaviyo
    api_token: {key}
    base_url: {base_url}
    operation: add
    list_identify_type: name
    list_value: Workflow list
    wait_for_completion: true
    waiting_time_for_completion_millis:300000
"""


def test_pushed_workflow_runs_on_its_schedule_from_the_stored_copy(tmp_path, emulator, cli, home):
    base_url, app = emulator
    dig = tmp_path / "nightly.dig"
    dig.write_text(DIG.format(key=KEY, base_url=base_url))
    (tmp_path / "export_data.sql").write_text("SELECT email, first_name FROM customers;\n")
    out, _ = cli("workflow", "push", str(dig))
    assert "Workflow 'nightly' pushed with 1 SQL file(s): at 07:00 every day (Asia/Tokyo)" in out
    assert "'workflow:nightly'" in out
    out, _ = cli("workflow", "list")
    assert "nightly" in out and "0 7 * * *" in out and "Asia/Tokyo" in out

    # Edits after the push change nothing until the next push.
    (tmp_path / "export_data.sql").write_text("SELECT no_such_column FROM customers;\n")
    dig.write_text("this: is not a workflow anymore\n")
    with open_warehouse(home.warehouse) as wh:
        wh.state.update_schedule("nightly", last_scheduled_for=datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    wh, scheduler = scheduler_for(home, datetime(2026, 1, 2, 0, 0, tzinfo=UTC))
    with wh:
        assert len(scheduler.tick()) == 1
        scheduler.wait()
        [result] = scheduler.results
        assert result.status == "success", result.error
        assert result.kind == "workflow" and result.job == "workflow:nightly"
        assert result.rows == 3
        export_runs = [r for r in wh.state.runs() if r.kind == "export"]
        assert [r.job for r in export_runs] == ["nightly+klaviyo_export_task"]
    assert members(app, "Workflow list") == 3
    out, _ = cli("job:list", "--schedule", "nightly")
    assert "workflow:nightly" in out and "success" in out

    # `workflow run` ignores the schedule: it runs the file once, now.
    dig.write_text(DIG.format(key=KEY, base_url=base_url))
    (tmp_path / "export_data.sql").write_text("SELECT email FROM customers WHERE email = 's1@example.com';\n")
    out, _ = cli("workflow", "run", str(dig), "--warehouse", str(home.warehouse))
    assert "1 accepted" in out
    with open_warehouse(home.warehouse) as wh:
        assert len(wh.state.jobs(schedule="nightly")) == 1
    cli("workflow", "delete", "nightly")
    out, _ = cli("auth:list")
    assert "workflow:nightly" not in out
    assert KEY.encode() not in home.warehouse.read_bytes()


def test_a_refused_schedule_leaves_no_key_behind(tmp_path):
    """create_schedule stores the schedule and its key together, or neither."""
    from klaviyo_bridge.errors import ConfigError, StoreError
    from klaviyo_bridge.schedule.saving import create_schedule
    from klaviyo_bridge.secrets import CredentialStore
    from klaviyo_bridge.store.factory import open_warehouse
    from klaviyo_bridge.store.state import ScheduleRecord

    credentials = CredentialStore(tmp_path / "credentials.json")
    now = datetime(2026, 1, 1, 7, 0, tzinfo=UTC)  # a fixed instant: nothing here depends on the real time
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        record = ScheduleRecord(
            "daily", "export", "0 7 * * *", "UTC", 0, "db", None, {"query": "SELECT 1"}, last_scheduled_for=now
        )
        create_schedule(wh, credentials, record, {"sched:daily": "pk_testonly_first"})
        with pytest.raises(ConfigError, match="already exists"):
            create_schedule(wh, credentials, record, {"sched:other": "pk_testonly_second"})
        broken = ScheduleRecord("broken", "export", "0 7 * * *", "UTC", 0, "db", None, {"query": "SELECT 1"})
        with pytest.raises(StoreError):  # the state refuses it after the key was saved: the key goes again
            create_schedule(wh, credentials, broken, {"sched:broken": "pk_testonly_third"})
    assert credentials.get("sched:daily").reveal() == "pk_testonly_first"
    assert "sched:other" not in credentials and "sched:broken" not in credentials
