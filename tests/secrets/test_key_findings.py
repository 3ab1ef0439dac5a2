"""Issue 17's key findings, each reproduced through the CLI (a process of its own, as a user runs it)
against the emulator over HTTP, and shown fixed: the key is refused or moved, never printed or stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import duckdb
import pytest

from klaviyo_bridge.errors import ConfigError
from klaviyo_bridge.home import Home
from klaviyo_bridge.secrets import ApiKey, CredentialStore, redact_config
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_bridge.store.state import ScheduleRecord
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings

KEY = "pk_FINDINGSxKEYx0123456789abcdef"
EMU = EmulatorSettings(seed=7, profiles=40, events=50, lists=2, rate_limits=False, api_key=KEY, job_profiles_per_second=1e9)
REAL = "pk_" + "0123456789abcdef" * 2 + "00"  # Klaviyo's shape (pk_ + 34 hex), built so no scanner flags it


@pytest.fixture(scope="module")
def url():
    with running_emulator(EMU) as base:
        yield base


def cli(home, *args, env=None, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), "-vv", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        env={**os.environ, "KLAVIYO_API_KEY": "", **(env or {})},
    )


def everything_under(home, *, database_files: bool = True) -> bytes:
    """Every file under HOME but the credentials file, and every state table dumped as text."""
    blob = b"".join(
        p.read_bytes()
        for p in home.rglob("*")
        if p.is_file() and p.name != "credentials.json" and (database_files or ".duckdb" not in p.name)
    )
    wh = home / "warehouse.duckdb"
    if wh.exists():
        con = duckdb.connect(str(wh), read_only=True)
        try:
            for schema, table in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall():
                blob += repr(con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()).encode()
        finally:
            con.close()
    return blob


def seed_table(home) -> None:
    with open_warehouse(Home(home).ensure().warehouse) as wh:
        import pyarrow as pa

        wh.write("crm", "customers", pa.table({"email": [f"f{i}@example.com" for i in range(5)]}))


def test_no_space_after_colon_warning_never_shows_the_key(tmp_path, url):
    """Finding: ``api_token:pk_...`` printed the key in the warning about the colon."""
    home = tmp_path / "home"
    seed_table(home)
    settings = tmp_path / "export.yml"
    settings.write_text(
        f"type: klaviyo\napi_token:{KEY}\nbase_url: {url}\noperation: add\nlist_identify_type: name\nlist_value: Colon\n"
    )
    done = cli(home, "query", "-d", "crm", "--result-settings", settings, "--dry-run", "SELECT email FROM customers")
    assert done.returncode == 0, done.stderr
    assert "line 2: api_token has no space after the colon" in done.stderr
    assert KEY not in done.stdout + done.stderr and KEY[3:] not in done.stdout + done.stderr
    assert KEY.encode() not in everything_under(home)


@pytest.mark.parametrize("bad", [KEY[:10] + "\r\n" + KEY[10:], KEY + "\r\n", KEY[:8] + "\x00" + KEY[8:], KEY[:8] + " " + KEY[8:]])
def test_a_key_with_control_characters_is_refused_before_anything_runs(tmp_path, url, bad):
    """Finding: a key with CR/LF was printed on retries and stored in export_row_ranges / batches."""
    home = tmp_path / "home"
    seed_table(home)
    settings = tmp_path / "export.yml"
    settings.write_text(
        json.dumps(
            {
                "type": "klaviyo",
                "api_token": bad,
                "base_url": url,
                "operation": "add",
                "list_identify_type": "name",
                "list_value": "CRLF",
            }
        )
    )
    done = cli(home, "query", "-d", "crm", "--result-settings", settings, "SELECT email FROM customers")
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "api_token: the API key contains" in out and "it is not shown here" in out
    assert "retry" not in out.lower() and "Traceback" not in out
    for part in (KEY[:10], KEY[10:], KEY[8:]):
        assert part not in out
    with open_warehouse(home / "warehouse.duckdb") as wh:  # no run was started, nothing recorded
        assert wh.state.jobs(limit=10) == []
    assert KEY[10:].encode() not in everything_under(home)
    # auth:create refuses it too (from the environment, or inside what stdin gives), writing no file
    if "\x00" not in bad:
        stored = cli(home, "auth:create", "crlf", "--from-env", "BAD_KEY", env={"BAD_KEY": bad})
        assert stored.returncode == 2 and "the API key contains" in stored.stderr
        assert KEY[10:] not in stored.stdout + stored.stderr and not (home / "credentials.json").exists()
    if bad.rstrip("\r\n") != KEY:  # a trailing newline from a pipe is dropped; one inside the key is not
        stored = cli(home, "auth:create", "crlf", "--stdin", stdin=bad + "\n")
        assert stored.returncode == 2 and "the API key contains" in stored.stderr, stored.stderr
        assert KEY[10:] not in stored.stdout + stored.stderr and not (home / "credentials.json").exists()


def test_a_crlf_key_saved_by_an_older_version_is_refused_on_use(tmp_path, url):
    home = Home(tmp_path / "home").ensure()
    path = home.credentials
    path.write_text(json.dumps({"version": 1, "credentials": {"old": {"api_token": KEY + "\r\n"}}}))
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match=r"saved authentication 'old': the API key contains a line break") as err:
        CredentialStore(path).get("old")
    assert KEY not in str(err.value)
    config = tmp_path / "c.yml"
    config.write_text(f"in:\n  type: klaviyo\n  data_source: lists\n  connection: old\n  base_url: {url}\n")
    done = cli(home.root, "connector:issue", config, "-d", "k", "-t", "lists")
    assert done.returncode == 2 and "line break" in done.stderr and KEY not in done.stdout + done.stderr


def test_inline_json_settings_with_a_key_are_refused_with_a_pointer(tmp_path, url):
    """Finding: an inline JSON result setting put the key on the command line (``ps`` shows it)."""
    home = tmp_path / "home"
    seed_table(home)
    inline = json.dumps(
        {"api_token": KEY, "base_url": url, "operation": "add", "list_identify_type": "name", "list_value": "Inline"}
    )
    for args in (
        ["query", "-d", "crm", "--result-settings", inline, "SELECT email FROM customers"],
        ["sched:create", "s", "", "-d", "crm", "--result-settings", inline, "SELECT email FROM customers"],
    ):
        done = cli(home, *args)
        out = done.stdout + done.stderr
        assert done.returncode == 2, out
        assert "may not carry api_token" in out and "auth:create" in out and "KLAVIYO_API_KEY" in out
        assert KEY not in out
    ran = cli(home, "workflow", "run", tmp_path / "none.dig", "-p", f"klaviyo.key={KEY}")
    assert ran.returncode == 2 and "may not be given on the command line" in ran.stderr and KEY not in ran.stderr
    # the ways that keep it off the command line work: the environment, and a saved authentication
    keyless = json.dumps({"base_url": url, "operation": "add", "list_identify_type": "name", "list_value": "Env"})
    sent = cli(
        home, "query", "-d", "crm", "--result-settings", keyless, "SELECT email FROM customers", env={"KLAVIYO_API_KEY": KEY}
    )
    assert sent.returncode == 0 and "5 rows: 5 submitted" in sent.stdout, sent.stderr
    assert cli(home, "auth:create", "acme", "--stdin", stdin=KEY + "\n").returncode == 0
    saved = cli(
        home,
        "sched:create",
        "s",
        "",
        "-d",
        "crm",
        "--result-connection",
        "acme",
        "--result-settings",
        keyless,
        "SELECT email FROM customers",
    )
    assert saved.returncode == 0, saved.stderr
    assert cli(home, "sched:run", "s").returncode == 0
    assert KEY.encode() not in everything_under(home)


def test_the_strict_klaviyo_shape_applies_on_klaviyos_host_only(tmp_path):
    with pytest.raises(ConfigError, match=r"pk_…TKEY is not a Klaviyo private API key") as err:
        ApiKey.parse("pk_NOTxHEXxBUTxLONGxENOUGHxTKEY", base_url="https://a.klaviyo.com")
    assert "NOTxHEX" not in str(err.value)
    assert ApiKey.parse(REAL, base_url="https://a.klaviyo.com").reveal() == REAL
    assert ApiKey.parse(KEY, base_url="http://127.0.0.1:8765").reveal() == KEY  # the emulator's keys
    key = ApiKey.parse(KEY)
    assert KEY not in f"{key} {key!r} {[key]} {dict(k=key)}" and str(key) == "pk_…cdef"
    with pytest.raises(TypeError):
        json.dumps({"api_token": key})
    with pytest.raises(TypeError):
        __import__("pickle").dumps(key)


def test_workflow_push_moves_a_key_in_export_variables_out_of_the_schedule(tmp_path, url):
    """Finding: ``workflow push`` stored keys found in ``_export`` variables in _bridge.schedules,
    and the console showed them."""
    home = tmp_path / "home"
    seed_table(home)
    (tmp_path / "q.sql").write_text("SELECT email FROM customers")
    dig = tmp_path / "wf.dig"
    dig.write_text(
        f"_export:\n  td:\n    database: crm\n  klaviyo:\n    key: {KEY}\n    base: {url}\n"
        "+send:\n  td>: q.sql\n  database: ${td.database}\n  result_settings:\n    type: klaviyo\n"
        "    api_token: ${klaviyo.key}\n    base_url: ${klaviyo.base}\n    operation: add\n"
        "    list_identify_type: name\n    list_value: Pushed\n"
    )
    pushed = cli(home, "workflow", "push", dig)
    assert pushed.returncode == 0, pushed.stderr
    assert "saved as authentication 'workflow:wf'" in pushed.stdout and KEY not in pushed.stdout + pushed.stderr
    ran = cli(home, "workflow", "run", "wf")  # the stored copy runs, with the key from the credentials file
    assert ran.returncode == 0, ran.stderr
    assert CredentialStore(Home(home).credentials).get("workflow:wf").reveal() == KEY
    blob = everything_under(home)
    assert KEY.encode() not in blob and b"workflow:wf" in blob


def test_a_schedule_stored_with_a_key_by_an_older_version_is_migrated_and_never_shown(tmp_path, url):
    home = Home(tmp_path / "home").ensure()
    seed_table(home.root)
    legacy_export = {
        "query": "SELECT email FROM customers",
        "result_settings": {
            "type": "klaviyo",
            "api_token": KEY,
            "base_url": url,
            "operation": "add",
            "list_identify_type": "name",
            "list_value": "Legacy",
        },
    }
    legacy_workflow = {
        "workflow": {
            "name": "old",
            "files": {"q.sql": "SELECT email FROM customers"},
            "document": {
                "_export": {"klaviyo": {"apikey": KEY}},
                "+a": {
                    "td>": "q.sql",
                    "database": "crm",
                    "result_settings": {
                        "api_token": "${klaviyo.apikey}",
                        "base_url": url,
                        "operation": "add",
                        "list_identify_type": "name",
                        "list_value": "LegacyWf",
                    },
                },
            },
        }
    }
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)  # a fixed instant: sched:run / workflow run run at once
    with open_warehouse(home.warehouse) as wh:  # written as an older version did
        wh.state.create_schedule(
            ScheduleRecord("legacy", "export", "", "UTC", 0, "crm", None, legacy_export, last_scheduled_for=now)
        )
        wh.state.create_schedule(
            ScheduleRecord("oldwf", "workflow", "", "UTC", 0, None, None, legacy_workflow, last_scheduled_for=now)
        )
    assert KEY not in json.dumps(redact_config(legacy_workflow)) and KEY not in json.dumps(redact_config(legacy_export))
    shown = cli(home.root, "sched:show", "legacy")
    assert shown.returncode == 0 and KEY not in shown.stdout + shown.stderr
    assert cli(home.root, "sched:run", "legacy").returncode == 0
    assert cli(home.root, "workflow", "run", "oldwf").returncode == 0
    store = CredentialStore(home.credentials)
    assert store.get("sched:legacy").reveal() == KEY and store.get("workflow:oldwf").reveal() == KEY
    with open_warehouse(home.warehouse) as wh:
        for name in ("legacy", "oldwf"):
            assert KEY not in json.dumps(wh.state.schedule(name).config)
    # every table, log and job file; not the DuckDB file's bytes: the old row version written by the older
    # version may stay in a freed block of the file until DuckDB reuses it (docs/configuration.md: rotate)
    assert KEY.encode() not in everything_under(home.root, database_files=False)
