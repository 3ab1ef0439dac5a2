"""Run imports, an export, failures and the show/history commands with a recognisable key, then
search everything written (stdout, stderr, every file under HOME incl. the warehouse bytes and
state tables; the credentials file aside) for the key: zero hits. The credentials file is 0600."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import EmulatorSettings

from .helpers import FIGURES, serve_app

KEY = "pk_SWEEPxSECRETx0123456789abcdef0123456789"
DATA = dict(seed=41, profiles=80, events=300, lists=2, rate_limits=False, api_key=KEY)


def test_the_key_is_written_nowhere(tmp_path):
    home = tmp_path / "home"
    written: list[str] = []

    def cli(*args, stdin=None, ok=True):
        done = subprocess.run(
            [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), "-vv", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "KLAVIYO_API_KEY": ""},
        )
        written.extend([done.stdout, done.stderr])
        if ok:
            assert done.returncode == 0, (args, done.stderr)
        return done

    storm = create_app(EmulatorSettings(**DATA, faults="storm=get_lists:503:forever"))
    with serve_app(create_app(EmulatorSettings(**DATA))) as url, serve_app(storm) as bad_url:
        cli("auth:create", "sweep", "--stdin", stdin=KEY + "\n")
        for name, base, source in (("ok", url, "events"), ("lists", url, "lists"), ("fail", bad_url, "lists")):
            (tmp_path / f"{name}.yml").write_text(
                f"in:\n  type: klaviyo\n  data_source: {source}\n  api_token: {KEY}\n  base_url: {base}\n"
                f"  retry_limit: 1\n  incremental: true\nout:\n  mode: merge\n"
            )
        cli("connector:issue", str(tmp_path / "ok.yml"), "-d", "klaviyo", "-t", "events")
        cli("connector:issue", str(tmp_path / "lists.yml"), "-d", "klaviyo", "-t", "lists")
        failed = cli("connector:issue", str(tmp_path / "fail.yml"), "-d", "klaviyo", "-t", "bad", ok=False)
        assert failed.returncode != 0 and "503" in failed.stderr
        cli("connector:create", "nightly", "", "klaviyo", "events2", str(tmp_path / "ok.yml"))
        cli("connector:run", "nightly", ok=False)
        cli("connector:create", "broken", "", "klaviyo", "bad2", str(tmp_path / "fail.yml"))
        cli("connector:run", "broken", ok=False)
        settings = json.dumps(
            {
                "operation": "add",
                "list_identify_type": "name",
                "list_value": "sweep list",
                "base_url": url,
                "skip_invalid_records": True,
            }
        )
        cli(
            "query",
            "-d",
            "klaviyo",
            "--result-connection",
            "sweep",
            "--result-settings",
            settings,
            "SELECT profile_email AS email FROM events WHERE profile_email IS NOT NULL LIMIT 20",
            ok=False,
        )
        for name in ("nightly", "broken"):
            cli("connector:show", name, ok=False)
            cli("connector:history", name, ok=False)
        jobs = cli("job:list", ok=False).stdout
        for job_id in sorted(set(re.findall(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b|\b[0-9a-f]{12,}\b", jobs)))[:10]:
            cli("job:show", job_id, ok=False)
    files = [p for p in home.rglob("*") if p.is_file() and p.name != "credentials.json"]
    assert any(p.suffix == ".duckdb" for p in files)
    needle = KEY.encode()
    hits = [p for p in files if needle in p.read_bytes()]
    hits += [f"output {i}" for i, text in enumerate(written) if KEY in text]
    assert hits == []
    creds = home / "credentials.json"
    assert creds.exists() and stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert needle in creds.read_bytes()  # the one place it belongs (else the search above proves little)
    FIGURES["secrets sweep: files searched"] += len(files)
    FIGURES["secrets sweep: outputs searched"] += len(written)


def test_exports_that_send_and_their_show_commands_write_the_key_nowhere(tmp_path):
    """An export that really sends (rows accepted), an export schedule with the key inline in its
    result settings, sched:run / sched:show / sched:history / job:list / job:show all succeeding,
    and a failing export (wrong list id): still zero hits of the key in everything written."""
    home = tmp_path / "home"
    written: list[str] = []

    def cli(*args, ok=True):  # inline settings carry no key (refused on a command line): KLAVIYO_API_KEY does
        done = subprocess.run(
            [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), "-vv", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "KLAVIYO_API_KEY": KEY},
        )
        written.extend([done.stdout, done.stderr])
        if ok:
            assert done.returncode == 0, (args, done.stderr)
        return done

    app = create_app(EmulatorSettings(**DATA, job_profiles_per_second=1e9))
    sql = "SELECT 'sweep' || i || '@example.org' AS email, 'S' || i AS first_name FROM range(20) t(i) ORDER BY i"
    with serve_app(app) as url:
        list_id = app.state.emulator.account.records["list"][0].id
        settings = {
            "type": "klaviyo",
            "api_token": KEY,
            "base_url": url,
            "operation": "add",
            "list_identify_type": "id",
            "list_value": list_id,
            "wait_for_completion": True,
            "waiting_time_for_completion_millis": 300000,
        }
        inline = {k: v for k, v in settings.items() if k != "api_token"}
        sent = cli("query", "--result-settings", json.dumps(inline), sql)
        assert "20 rows: 20 accepted" in sent.stdout, sent.stdout
        (tmp_path / "export.yml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
        cli("sched:create", "sweep_export", "", "-d", "main", "--result-settings", str(tmp_path / "export.yml"), sql)
        ran = cli("sched:run", "sweep_export")
        consent = {**settings, "operation": "batch_consent", "subscription_type": "email_marketing_only"}
        consent.pop("list_identify_type")
        consent.pop("api_token")
        cli("query", "--result-settings", json.dumps(consent), sql)
        bad = cli("query", "--result-settings", json.dumps({**inline, "list_value": "NoSuchList"}), sql, ok=False)
        refused = cli("query", "--result-settings", json.dumps(settings), sql, ok=False)  # a key on the command line
        assert refused.returncode == 2 and "auth:create" in refused.stderr
        shown = cli("sched:show", "sweep_export")
        history = cli("sched:history", "sweep_export")
        jobs = cli("job:list").stdout
        job_ids = sorted(set(re.findall(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{8}-[0-9a-f-]{27}\b", jobs + history.stdout)))
        assert job_ids, jobs + history.stdout
        for job_id in job_ids[:4]:
            cli("job:show", job_id)
    members = app.state.emulator.snapshot()["list_members"][list_id]
    assert len(members) >= 20  # the exports did send
    assert "sweep_export" in shown.stdout and ran.returncode == 0
    assert "20" in history.stdout
    assert "rejected" in bad.stdout or bad.returncode != 0
    files = [p for p in home.rglob("*") if p.is_file() and p.name != "credentials.json"]
    needle = KEY.encode()
    hits = [str(p) for p in files if needle in p.read_bytes()]
    hits += [f"output {i}" for i, text in enumerate(written) if KEY in text]
    assert hits == []
    creds = home / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600 and needle in creds.read_bytes()  # sched:sweep_export
    FIGURES["secrets sweep: files searched"] += len(files)
    FIGURES["secrets sweep: outputs searched"] += len(written)
    FIGURES["secrets sweep: rows exported and accepted"] += 20
