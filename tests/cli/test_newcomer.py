"""The newcomer's path (issue 20): each rough edge, walked through the CLI against a real emulator."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_bridge.store.identifiers import quote
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings

EMU = EmulatorSettings(seed=5, profiles=200, events=1500, lists=8, rate_limits=False)


@pytest.fixture(scope="module")
def base_url():
    with running_emulator(EMU) as url:
        yield url


def run(*args) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code or 0
    return 0


def cli_process(*args, **env) -> subprocess.CompletedProcess:
    """The CLI in a process of its own (logging configured as for a user), stdin closed."""
    return subprocess.run(
        [sys.executable, "-m", "klaviyo_bridge", *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A clean home with the emulator's key saved as authentication 'acme'."""
    path = tmp_path / "home"
    monkeypatch.setenv("ACME_KEY", EMU.api_key)
    assert run("--home", path, "auth:create", "acme", "--from-env", "ACME_KEY") == 0
    monkeypatch.delenv("ACME_KEY")
    return path


def lists_from_api(base_url, capsys, monkeypatch) -> list[dict]:
    monkeypatch.setenv("KLAVIYO_API_KEY", EMU.api_key)
    capsys.readouterr()
    assert run("api", "get_lists", "--base-url", base_url) == 0
    monkeypatch.delenv("KLAVIYO_API_KEY")
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def connection_config(tmp_path, base_url, source="lists", extra="") -> str:
    path = tmp_path / f"{source}-conn.yml"
    path.write_text(
        f"in:\n  type: klaviyo\n  connection: acme\n  base_url: {base_url}\n  data_source: {source}\n"
        f"{extra}out:\n  mode: append\n"
    )
    return str(path)


# --- connection: NAME in every verb that reads a config ---------------------------------------
def test_saved_connection_works_for_preview_issue_and_replicate(tmp_path, base_url, home, capsys, monkeypatch):
    n = len(lists_from_api(base_url, capsys, monkeypatch))  # other tests add lists to this account
    config = connection_config(tmp_path, base_url)
    capsys.readouterr()
    assert run("--home", home, "connector:preview", config) == 0
    out = capsys.readouterr()
    assert "id:string" in out.out and "name:string" in out.out, out.err
    assert run("--home", home, "connector:issue", config, "-d", "klaviyo", "-t", "lists") == 0
    assert f"lists -> klaviyo.lists (append): {n} rows" in capsys.readouterr().out
    assert (
        run("--home", home, "replicate", "-d", "qlik", "--start-date", "2024-01-01", "--config", config, "--tables", "lists") == 0
    )
    assert f"replicated 1 tables, {n} rows" in capsys.readouterr().out
    assert run("--home", home, "connector:create", "nightly", "@daily", "klaviyo", "lists2", config) == 0
    capsys.readouterr()


def test_an_unknown_saved_connection_is_named(tmp_path, base_url, home, capsys):
    config = tmp_path / "bad.yml"
    config.write_text(f"in:\n  type: klaviyo\n  connection: acme_typo\n  base_url: {base_url}\n  data_source: lists\n")
    for verb in (["connector:preview", config], ["connector:issue", config, "-d", "k", "-t", "l"]):
        assert run("--home", home, *verb) == 2
        assert "no saved authentication named 'acme_typo' (known: acme)" in capsys.readouterr().err


# --- connector:preview takes start_time / end_time --------------------------------------------
def test_preview_shows_only_rows_inside_start_and_end_time(tmp_path, base_url, home, capsys, monkeypatch):
    lists = lists_from_api(base_url, capsys, monkeypatch)
    stamps = sorted(datetime.fromisoformat(item["attributes"]["updated"]) for item in lists)
    lo, hi = stamps[2], stamps[6]  # four of the eight lists
    config = connection_config(
        tmp_path,
        base_url,
        extra=(f"  incremental_field: updated\n  start_time: '{lo.isoformat()}'\n  end_time: '{hi.isoformat()}'\n"),
    )
    assert run("--home", home, "connector:preview", config) == 0
    out = capsys.readouterr().out
    inside = {i["id"] for i in lists if lo <= datetime.fromisoformat(i["attributes"]["updated"]) < hi}
    assert len(inside) == 4
    for item in lists:
        assert (item["id"] in out) == (item["id"] in inside), item["id"]


# --- sched:update --result-settings with only a new key ------------------------------------------
def export_settings(tmp_path, base_url, key, name="export.yml") -> str:
    path = tmp_path / name
    path.write_text(
        f"type: klaviyo\napi_token: {key}\nbase_url: {base_url}\noperation: add\n"
        "list_identify_type: name\nlist_value: Newcomers\nwait_for_completion: true\n"
    )
    return str(path)


def test_sched_update_with_only_a_new_key_saves_it(tmp_path, base_url, home, capsys):
    assert run("--home", home, "connector:issue", connection_config(tmp_path, base_url), "-d", "klaviyo", "-t", "lists") == 0
    old = export_settings(tmp_path, base_url, "pk_revoked_key_of_last_week_0000", "old.yml")
    assert (
        run(
            "--home",
            home,
            "sched:create",
            "weekly",
            "",
            "-d",
            "klaviyo",
            "--result-settings",
            old,
            "SELECT 'new.comer@example.com' AS email",
        )
        == 0
    )
    assert run("--home", home, "sched:run", "weekly") != 0
    assert "the API key was rejected (401)" in capsys.readouterr().err
    new = export_settings(tmp_path, base_url, EMU.api_key, "new.yml")
    assert run("--home", home, "sched:update", "weekly", "--result-settings", new) == 0
    out = capsys.readouterr().out
    assert "saved as authentication 'sched:weekly'" in out and "updated" in out
    assert run("--home", home, "auth:list") == 0
    listing = capsys.readouterr().out
    assert "sched:weekly" in listing and "0000" not in listing
    assert run("--home", home, "sched:run", "weekly") == 0
    assert "1 records exported" in capsys.readouterr().out


# --- api --auth NAME ------------------------------------------------------------------------------
def test_api_uses_a_saved_authentication(base_url, home, capsys, monkeypatch):
    monkeypatch.delenv("KLAVIYO_API_KEY", raising=False)
    assert run("--home", home, "api", "get_lists", "--base-url", base_url, "--auth", "acme", "--limit", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(json.loads(line)["type"] == "list" for line in lines)
    assert run("--home", home, "api", "get_lists", "--base-url", base_url, "--auth", "nope") == 2
    assert "no saved authentication named 'nope'" in capsys.readouterr().err
    assert run("--home", home, "api", "get_lists", "--base-url", base_url) == 2
    assert "--auth NAME" in capsys.readouterr().err


# --- tables / sql: look at the warehouse from the CLI, on DuckDB and PostgreSQL -------------------
PG_URL = os.environ.get("KLAVIYO_BRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["duckdb", "postgres"])
def target(request, tmp_path):
    """(warehouse url, a fresh database name); the PostgreSQL schema is dropped afterwards."""
    database = f"nc_{uuid.uuid4().hex[:10]}"
    url = str(tmp_path / "wh.duckdb") if request.param == "duckdb" else PG_URL
    yield url, database
    if request.param == "postgres":
        with open_warehouse(url) as wh:
            with wh.transaction() as session:
                session.execute(f"DROP SCHEMA IF EXISTS {quote(database)} CASCADE")


def test_tables_and_sql_print_the_warehouse(tmp_path, base_url, home, capsys, monkeypatch, target):
    url, db = target
    n = len(lists_from_api(base_url, capsys, monkeypatch))  # other tests add lists to this account
    config = connection_config(tmp_path, base_url)
    assert run("--home", home, "connector:issue", config, "-d", db, "-t", "lists", "--warehouse", url) == 0
    capsys.readouterr()

    assert run("--home", home, "tables", "--warehouse", url, "-d", db, "--format", "json") == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"database": db, "table": "lists", "columns": 5, "rows": n}
    ]
    assert run("--home", home, "tables", "--warehouse", url, "-d", db) == 0
    shown = capsys.readouterr()
    assert "lists" in shown.out and f'klaviyo-bridge sql "SELECT * FROM {db}.lists LIMIT 10"' in shown.err

    assert (
        run("--home", home, "sql", "--warehouse", url, f"SELECT id, name, created FROM {db}.lists ORDER BY id", "--format", "csv")
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "id,name,created" and len(lines) == n + 1
    assert (
        run(
            "--home",
            home,
            "sql",
            "--warehouse",
            url,
            "-d",
            db,
            "SELECT count(*) AS n, max(updated) AS last FROM lists",
            "--format",
            "json",
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    assert row["n"] == n and row["last"].startswith("20")
    # the screen table names each column's type in a user's words
    assert run("--home", home, "sql", "--warehouse", url, "-d", db, "SELECT name, created, 1 AS one FROM lists") == 0
    shown = capsys.readouterr()
    assert all(word in shown.out for word in ("text", "time", "number")) and f"({n} rows)" in shown.err
    assert "timestamp[" not in shown.out and "int32" not in shown.out

    assert run("--home", home, "sql", "--warehouse", url, f"SELECT * FROM {db}.nope") != 0
    assert "nope" in capsys.readouterr().err


def test_tables_on_a_new_home_says_what_to_do_next(tmp_path, capsys):
    assert run("--home", tmp_path / "fresh", "tables") == 0
    assert "No tables yet: import some with connector:issue" in capsys.readouterr().err


# --- the scheduler says one line per job start and end, without -v --------------------------------
def test_scheduler_reports_each_job_start_and_end_at_the_default_level(tmp_path, base_url, home, capsys):
    config = connection_config(tmp_path, base_url)
    assert run("--home", home, "connector:create", "hourly_lists", "@hourly", "klaviyo", "lists", config) == 0
    with open_warehouse(home / "warehouse.duckdb") as wh:  # the last slot an hour and more ago: one is due
        wh.state.update_schedule("hourly_lists", last_scheduled_for=datetime.now(timezone.utc) - timedelta(hours=2))
    done = cli_process("--home", home, "scheduler", "--once")  # its own process: logging as a user sees it
    assert done.returncode == 0, done.stderr
    err = done.stderr
    started = [line for line in err.splitlines() if "started import:hourly_lists (job " in line]
    ended = [line for line in err.splitlines() if "ended import:hourly_lists (job " in line]
    assert len(started) == 1 and len(ended) == 1, err
    assert re.search(r"success, \d+ records in", ended[0]), ended[0]
    assert "WARNING" not in err


# --- waiting for a DuckDB file held by another process is not silent ------------------------------
HOLD = (
    "import sys\nfrom klaviyo_bridge.store.factory import open_warehouse\nwh = open_warehouse(sys.argv[1])\n"
    "print('held', flush=True)\nsys.stdin.readline()\nwh.close()\n"
)


@pytest.fixture
def short_tmp():
    folder = Path(tempfile.mkdtemp(prefix="kb-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_waiting_for_the_duckdb_file_says_for_what_and_which_process(short_tmp):
    # a short folder: the message cuts the holder's command line at 200 characters, and pytest's
    # own temporary paths (longer under pytest-xdist) would push --pretend-scheduler past that
    tmp_path = short_tmp
    home = tmp_path / "home"
    home.mkdir(mode=0o700)  # a wider folder gets tightened, with a notice on the first line
    (tmp_path / "hold.py").write_text(HOLD)
    holder = subprocess.Popen(
        [sys.executable, str(tmp_path / "hold.py"), str(home / "warehouse.duckdb"), "--pretend-scheduler"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    waiter = None
    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = subprocess.Popen(
            [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), "tables"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = waiter.stderr.readline()
        assert "waiting for the DuckDB warehouse" in first and f"in use by another run (pid {holder.pid})" in first
        assert "--pretend-scheduler" in first and "giving up after 30s" in first
        holder.stdin.write("\n")
        holder.stdin.flush()
        out, err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, err
        assert "is free now, after" in err and "No tables yet" in err
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


# --- a dry run with no invalid row does not say the job would fail --------------------------------
def test_dry_run_wording_follows_the_invalid_rows(tmp_path, base_url, home, capsys):
    assert run("--home", home, "connector:issue", connection_config(tmp_path, base_url), "-d", "klaviyo", "-t", "lists") == 0
    settings = tmp_path / "strict.yml"
    settings.write_text(
        f"type: klaviyo\nresult_connection: acme\nbase_url: {base_url}\noperation: add\n"
        "list_identify_type: name\nlist_value: Dry\nskip_invalid_records: false\n"
    )
    capsys.readouterr()
    good = "SELECT * FROM (VALUES ('a@example.com'), ('b@example.com')) AS t(email)"
    assert run("--home", home, "query", "-d", "klaviyo", "--result-settings", settings, "--dry-run", good) == 0
    out = capsys.readouterr().out
    assert "2 would be sent" in out and "0 invalid\n" in out and "would fail" not in out
    bad = "SELECT * FROM (VALUES ('a@example.com'), ('b@example.com'), ('not an email')) AS t(email)"
    assert run("--home", home, "query", "-d", "klaviyo", "--result-settings", settings, "--dry-run", bad) == 0
    out = capsys.readouterr().out
    assert "1 invalid (the job would fail: skip_invalid_records is false)" in out and "invalid row 3" in out


# --- a host name that does not resolve fails fast, naming the host ---------------------------------
@pytest.fixture
def no_dns(monkeypatch):
    """This machine's resolver knows only loopback names (nothing leaves 127.0.0.1); counts the asks."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kw):
        if host in ("127.0.0.1", "localhost", "::1", None):
            return real(host, *args, **kw)
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # uvloop resolves names in C, past this stand-in: run as a minimal install does, on asyncio's loop
    monkeypatch.setitem(sys.modules, "uvloop", None)
    return asked


def test_the_default_host_unresolvable_fails_after_one_retry(no_dns, capsys, monkeypatch):
    monkeypatch.delenv("KLAVIYO_BASE_URL", raising=False)
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_" + "0123456789abcdef" * 2 + "00")  # Klaviyo's shape
    assert run("api", "get_lists") == 1
    err = capsys.readouterr().err
    assert "cannot resolve host 'a.klaviyo.com'" in err and "after 2 attempts" in err
    assert "without it the host is the real https://a.klaviyo.com" in err
    assert no_dns == ["a.klaviyo.com", "a.klaviyo.com"]


def test_a_mistyped_base_url_fails_fast_in_an_import(tmp_path, home, no_dns, capsys):
    config = connection_config(tmp_path, "http://emulatr.local:8765")
    assert run("--home", home, "connector:issue", config, "-d", "klaviyo", "-t", "lists") == 1
    err = capsys.readouterr().err
    assert "cannot resolve host 'emulatr.local'" in err and "check base_url" in err
    assert len(no_dns) == 2


# --- the demo runs inside the limits it shows ---------------------------------------------------------
def test_the_demo_as_the_readme_runs_it_draws_no_429(tmp_path):
    done = cli_process("--home", tmp_path / "home", "demo")  # the README's command, default sizes
    assert done.returncode == 0, done.stderr
    throttled = re.findall(r"(\d+) throttled", done.stdout)
    assert len(throttled) == 3 and set(throttled) == {"0"}, done.stdout
    assert "throttled (429)" not in done.stderr and "retry" not in done.stderr, done.stderr
    assert "2000 rows" in done.stdout and "20000 rows" in done.stdout


# --- an import stopped with Ctrl-C says what was committed -------------------------------------------
SLOW = EmulatorSettings(seed=6, profiles=100, events=6000, lists=1, rate_limits=False, latency_ms=250)
#: The CLI with a progress line at every batch, so the test knows the import is under way.
EVERY_BATCH = (
    "import sys; from klaviyo_bridge.cli import progress, main; progress.LOG_EVERY = 0; "
    "sys.argv[0] = 'klaviyo-bridge'; main(sys.argv[1:])"
)


def test_ctrl_c_during_an_import_says_nothing_was_committed(tmp_path, home):
    with running_emulator(SLOW) as slow_url:
        config = connection_config(
            tmp_path, slow_url, source="events", extra="  incremental: true\n  start_time: '2020-01-01T00:00:00'\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", EVERY_BATCH, "--home", str(home), "connector:issue", config, "-d", "klaviyo", "-t", "events"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            first = proc.stderr.readline()
            assert first.startswith("progress: events -> klaviyo.events: "), first
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    assert out == ""  # no success summary
    said = [line for line in err.splitlines() if line.startswith("klaviyo.events: job ")]
    assert len(said) == 1, err
    fetched = int(re.search(r"(\d+) records fetched, 0 written", said[0]).group(1))
    assert fetched > 0
    assert f"nothing was committed: the {fetched} records fetched were discarded and the cursor did not move" in said[0]
    run_id = re.search(r"job (\w+) ", said[0]).group(1)
    done = cli_process("--home", home, "job:show", run_id)
    assert re.search(r"Records written\s*:\s*0\n", done.stdout), done.stdout
    assert re.search(r"Status\s*:\s*killed\n", done.stdout), done.stdout  # the user's Ctrl-C, not a failure
    assert re.search(r"Error\s*:\s*stopped \(Ctrl-C or a kill\); nothing was committed", done.stdout), done.stdout
    assert "No tables yet" in cli_process("--home", home, "tables").stderr


def test_ctrl_c_during_connector_run_says_nothing_was_committed(tmp_path, home):
    with running_emulator(SLOW) as slow_url:
        config = connection_config(
            tmp_path, slow_url, source="events", extra="  incremental: true\n  start_time: '2020-01-01T00:00:00'\n"
        )
        assert cli_process("--home", home, "connector:create", "slow_events", "", "klaviyo", "events", config).returncode == 0
        proc = subprocess.Popen(
            [sys.executable, "-c", EVERY_BATCH, "--home", str(home), "connector:run", "slow_events"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            first = proc.stderr.readline()
            assert first.startswith("job ") and "started (import:slow_events" in first, first
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, err
    # however far it got (the signal may come before the job's record is written), nothing was committed
    assert re.search(
        r"job \w+ (killed: \d+ records fetched, 0 written; nothing was committed, the cursor did not "
        r"move|stopped before it began: nothing was committed)",
        err,
    ), err
    assert "No tables yet" in cli_process("--home", home, "tables").stderr


# --- issue 19's import settings through the CLI verbs: preview, issue, create + run --------------
def test_membership_history_lookback_and_metrics_through_the_cli(tmp_path, base_url, home, capsys):
    members = connection_config(tmp_path, base_url, "list_memberships")
    assert run("--home", home, "connector:preview", members) == 0
    shown = capsys.readouterr()
    assert "profile_id:string" in shown.out and "joined_at:timestamp" in shown.out
    assert run("--home", home, "connector:issue", members, "-d", "klaviyo", "-t", "lm") == 0
    assert "joined, 0 left since the last run" in capsys.readouterr().out
    events = connection_config(
        tmp_path, base_url, "events", extra="  incremental: true\n  lookback: 12h\n  metrics: [Opened Email, Placed Order]\n"
    )
    assert run("--home", home, "connector:create", "ev", "@daily", "klaviyo", "ev", events) == 0
    assert run("--home", home, "connector:run", "ev") == 0
    with open_warehouse(home / "warehouse.duckdb") as wh:
        names = set(wh.table_arrow("klaviyo", "ev").column("metric_name").to_pylist())
        assert names == {"Opened Email", "Placed Order"}
        assert wh.table_arrow("klaviyo", "lm_current").num_rows == wh.table_arrow("klaviyo", "lm").num_rows > 0
    bad = connection_config(tmp_path, base_url, "events", extra="  lookback: 2 weeks\n")
    assert run("--home", home, "connector:create", "bad", "@daily", "klaviyo", "ev2", bad) == 2
    assert "in.lookback" in capsys.readouterr().err
