"""Schedule and job commands end to end: a real emulator on 127.0.0.1, the CLI, a DuckDB file in tmp_path.

The API key must never show up: not in any command's output, not in connector:show, not in
the warehouse file (its bytes are searched), and the saved-keys file is 0600.
"""

from __future__ import annotations

import os
import stat
from datetime import datetime, timezone

import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.home import Home
from klaviyo_bridge.schedule.scheduler import Scheduler
from klaviyo_bridge.secrets import CredentialStore
from klaviyo_bridge.store import open_warehouse
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings

KEY = EmulatorSettings().api_key
UTC = timezone.utc


@pytest.fixture(scope="module")
def base_url():
    with running_emulator(EmulatorSettings(profiles=200, events=1000, rate_limits=False)) as url:
        yield url


class Cli:
    def __init__(self, home, capsys):
        self.home, self.capsys, self.seen = home, capsys, []

    def __call__(self, *args, code=0):
        try:
            main(["--home", str(self.home), *args])
            got = 0
        except SystemExit as exc:
            got = exc.code or 0
        out, err = self.capsys.readouterr()
        self.seen.append(out + err)
        assert got == code, f"{args}: exit {got}\n{out}\n{err}"
        return out, err


@pytest.fixture
def cli(tmp_path, capsys):
    return Cli(tmp_path / "home", capsys)


def write_config(tmp_path, base_url, **in_keys):
    lines = ["in:", "  type: klaviyo", "  data_source: profiles", f"  base_url: {base_url}", "  incremental: true"]
    lines += [f"  {k}: {v}" for k, v in in_keys.items()]
    path = tmp_path / "config.yml"
    path.write_text("\n".join(lines + ["out:", "  mode: merge", ""]))
    return str(path)


def test_an_import_schedule_resumes_from_a_cursor_stored_under_its_old_name(tmp_path, base_url, cli):
    """Before issue 18 a schedule's cursor key (and run label) was the CLI verb's namespace:
    ``connector:NAME``. New records say ``import:NAME``; a warehouse with an old-shaped cursor
    must resume from it, not import everything again."""
    config = write_config(tmp_path, base_url, api_token=KEY)
    for name, table in (("nightly", "resumed"), ("fresh", "everything")):
        cli("connector:create", name, "10 0 * * *", "db", table, config)
    home = Home(tmp_path / "home")
    old_cursor = "2024-05-31T15:10:00+00:00"
    with open_warehouse(home.warehouse) as wh:  # what connector:run NAME 2024-06-01T00:10+09:00 left before
        wh.state.save_cursor("connector:nightly", old_cursor)

    counts = {}
    for name in ("nightly", "fresh"):
        out, _ = cli("connector:run", name, "2026-01-02T00:00:00+00:00")
        assert " success: " in out, out
        counts[name] = int(out.split(" success: ")[1].split()[0])
    assert 0 < counts["nightly"] < counts["fresh"]  # only the profiles updated after the old cursor

    with open_warehouse(home.warehouse) as wh:
        assert wh.state.cursor("import:nightly") > old_cursor  # the new record, in the library's words
        assert wh.state.cursor("connector:nightly") == old_cursor  # the old one is left as it was
        assert "connector:fresh" not in wh.state.cursors()
        assert {r.job for r in wh.state.runs()} == {"import:nightly", "import:fresh"}


def test_import_schedule_runs_by_hand_and_by_the_scheduler(tmp_path, base_url, cli):
    config = write_config(tmp_path, base_url, api_token=KEY)
    out, _ = cli(
        "connector:create",
        "daily_klaviyo_import",
        "10 0 * * *",
        "sample_db",
        "sample_table",
        config,
        "--timezone",
        "Asia/Tokyo",
        "--delay",
        "30",
    )
    assert "at 00:10 every day (Asia/Tokyo)" in out and "connector:daily_klaviyo_import" in out

    out, _ = cli("connector:list")
    header = [c.strip() for c in out.splitlines()[1].strip("┃").split("┃")]
    assert header == ["Name", "Cron", "Timezone", "Delay", "Database", "Table", "Status"]
    assert "daily_klaviyo_import" in out and "10 0 * * *" in out and "Asia/Tokyo" in out and "enabled" in out

    out, _ = cli("connector:show", "daily_klaviyo_import")
    assert "Cron     : 10 0 * * *" in out and "connection: connector:daily_klaviyo_import" in out

    out, _ = cli("connector:run", "daily_klaviyo_import", "2024-06-01T00:10:00+09:00")
    assert " success: " in out and "records into sample_db.sample_table" in out
    first = int(out.split(" success: ")[1].split()[0])  # profiles updated before that TIME

    home = Home(tmp_path / "home")
    with open_warehouse(home.warehouse) as wh:  # one scheduler tick on a fake clock: the slot of 2026-01-02
        scheduler = Scheduler(
            wh,
            CredentialStore(home.credentials),
            control_dir=home.root / "jobs",
            clock=lambda: datetime(2026, 1, 2, 0, 11, tzinfo=UTC),
        )
        wh.state.update_schedule("daily_klaviyo_import", last_scheduled_for=datetime(2026, 1, 1, tzinfo=UTC))
        assert len(scheduler.tick()) == 1
        scheduler.wait()
        [result] = scheduler.results
        assert result.status == "success", result.error
        assert first > 0 and result.rows > 0  # incremental: the second run starts where the first ended
        assert wh.table_arrow("sample_db", "sample_table").num_rows == first + result.rows

    out, _ = cli("connector:history", "daily_klaviyo_import")
    rows = [line for line in out.splitlines() if "success" in line]
    assert len(rows) == 2
    assert "2026-01-01 15:10:00 +0000" in rows[0]  # newest first: the scheduled run (00:10 Tokyo)
    job_id = rows[0].split("│")[1].strip()

    out, _ = cli("job:show", job_id[:8])
    assert "Status         : success" in out and "Triggered by   : schedule" in out
    out, _ = cli("job:list")
    assert out.count("import:daily_klaviyo_import") == 2  # the job label: kind and name, never a CLI verb

    out, _ = cli("connector:update", "daily_klaviyo_import", "--cron", "@hourly")
    assert "updated (enabled)" in out
    cli("connector:update", "daily_klaviyo_import", "--cron", "0 25 * * *", code=2)
    cli("connector:create", "bad", "0 0 * * *", "db", "t", config, "--timezone", "PST", code=2)

    cli("connector:delete", "daily_klaviyo_import")
    out, _ = cli("auth:list")
    assert "connector:daily_klaviyo_import" not in out

    _assert_key_never_leaked(cli, home)


def test_saved_authentication_and_failures_keep_the_key_secret(tmp_path, base_url, cli, monkeypatch):
    monkeypatch.setenv("MY_KEY", KEY)
    cli("auth:create", "main", "--from-env", "MY_KEY")
    out, _ = cli("auth:list")
    assert "main" in out and "pk_…_key" in out
    config = write_config(tmp_path, base_url, connection="main")
    cli("connector:create", "hourly", "@hourly", "db", "profiles", config)
    out, _ = cli("connector:run", "hourly")
    assert "success" in out

    # A wrong key (saved under the same name) fails with a message, never the key.
    monkeypatch.setenv("MY_KEY", "pk_wrong_key_0123456789")
    cli("auth:create", "main", "--from-env", "MY_KEY", "--replace")
    _, err = cli("connector:run", "hourly", code=1)
    assert "\nerror: job " in err and "AuthError" in err and "pk_wrong_key_0123456789" not in err
    out, _ = cli("connector:history", "hourly")
    assert "error" in out and "pk_wrong" not in out
    home = Home(tmp_path / "home")
    with open_warehouse(home.warehouse):
        assert b"pk_wrong_key_0123456789" not in home.warehouse.read_bytes()
    _assert_key_never_leaked(cli, home)


def test_cron_next_prints_iso_times_with_offsets(cli):
    out, _ = cli("cron:next", "0 0 */5 * *", "--timezone", "Europe/Paris", "--from", "2024-03-01T00:00:00Z", "-n", "3")
    assert out.split() == ["2024-03-05T00:00:00+01:00", "2024-03-10T00:00:00+01:00", "2024-03-15T00:00:00+01:00"]
    out, _ = cli("cron:next", "30 2 * * *", "-t", "America/New_York", "--from", "2024-03-09T12:00:00Z", "-n", "2")
    assert out.split() == ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"]
    _, err = cli("cron:next", "0 0 1 * PST", code=1)
    assert "field 5 (day of week)" in err
    _, err = cli("cron:next", "@daily", "-t", "PST", code=1)
    assert "abbreviations are not supported" in err


def _assert_key_never_leaked(cli, home):
    assert stat.S_IMODE(os.stat(home.credentials).st_mode) == 0o600
    for text in cli.seen:
        assert KEY not in text
    assert KEY.encode() not in home.warehouse.read_bytes()
    wal = home.warehouse.with_name(home.warehouse.name + ".wal")
    if wal.exists():
        assert KEY.encode() not in wal.read_bytes()
