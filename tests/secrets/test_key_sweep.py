"""Issue 17's check: run every verb with a distinctive key, each as a user runs it (a process of its
own, against the emulator over HTTP), then search for the key in everything the product wrote or
showed: every file under HOME (the DuckDB warehouse and state as bytes, and every table dumped as
text; job files; logs), stdout and stderr of every command, the command lines of the processes
started (what ``ps`` shows) and every console page fetched over HTTP. Zero hits; the credentials
file, the one place the key belongs, is 0600 and does hold it (else the search would prove little)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time

import duckdb
import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings

KEY = "pk_SWEEP17xKEYxqz0123456789abcdefXYZ"
OTHER = "pk_another_accounts_key_0000"
EMU = dict(seed=17, profiles=60, events=120, lists=2, rate_limits=False, job_profiles_per_second=1e9)
CONSOLE_TOKEN = "sweep-console-token-0123456789"
JOB_ID = re.compile(r"\b[0-9a-f]{32}\b")


class Sweep:
    """Runs the CLI and keeps every argv, stdout and stderr it produced."""

    def __init__(self, home) -> None:
        self.home = home
        self.argv: list[list[str]] = []
        self.outputs: list[tuple[str, str]] = []

    def env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("KLAVIYO_API_KEY", "KLAVIYO_BASE_URL")}
        return {**env, **(extra or {})}

    def __call__(self, *args, ok: bool = True, stdin: str | None = None, env: dict | None = None):
        argv = [sys.executable, "-m", "klaviyo_bridge", "--home", str(self.home), "-vv", *map(str, args)]
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180, input=stdin, env=self.env(env))
        if os.environ.get("SWEEP_TRACE"):
            print(f"{time.monotonic() - started:6.1f}s rc={done.returncode} {' '.join(map(str, args[:3]))}")
        self.argv.append(argv)
        self.outputs.append((" ".join(map(str, args[:2])), done.stdout + done.stderr))
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done


def console_pages(cli: Sweep, base_url: str, paths: list[str]) -> tuple[list[str], str, int]:
    """Start ``klaviyo-bridge console`` as a process, fetch ``paths`` (and the pages they link to
    under /schedules/ and /jobs/), return (pages' HTML, the process's command line, page count)."""
    argv = [sys.executable, "-m", "klaviyo_bridge", "--home", str(cli.home), "console", "--port", "0"]
    cli.argv.append(argv)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli.env({"KLAVIYO_BASE_URL": base_url, "KLAVIYO_BRIDGE_CONSOLE_TOKEN": CONSOLE_TOKEN}),
    )
    pages: list[str] = []
    first = ""
    try:
        with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ").decode()
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "klaviyo-bridge console on http://127.0.0.1:PORT/ ...": the port it chose
        found = re.search(r"console on (http://127\.0\.0\.1:\d+)/", first)
        assert found, first
        url = found.group(1)
        with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as http:
            for _ in range(600):  # wait until it listens (bounded; no timing is asserted)
                try:
                    http.get("/login")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            signed_in = http.get("/login", params={"token": CONSOLE_TOKEN})  # the URL it prints, as a user opens it
            assert signed_in.status_code == 200 and http.cookies, signed_in.text[:300]
            seen: set[str] = set()
            queue = list(paths)
            while queue:
                path = queue.pop(0)
                if path in seen:
                    continue
                seen.add(path)
                response = http.get(path)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
                pages.append(response.text)
                queue += [p for p in re.findall(r'href="(/(?:schedules|jobs)/[^"?#]+)"', response.text) if p not in seen]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        cli.outputs.append(("console", first + out))
    return pages, cmdline, len(seen)


def dump_tables(path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    try:
        parts = []
        for schema, table in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall():
            parts.append(repr(con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()))
        return "\n".join(parts)
    finally:
        con.close()


@pytest.mark.timeout(900)  # some 50 CLI processes, each a Python start-up
def test_every_verb_leaves_the_key_nowhere(tmp_path):
    home = tmp_path / "home"
    work = tmp_path / "work"  # the user's own files (they may hold the key: the user put it there)
    work.mkdir()
    cli = Sweep(home)
    with (
        running_emulator(EmulatorSettings(**EMU, api_key=KEY)) as url,
        running_emulator(EmulatorSettings(**EMU, api_key=OTHER)) as other_url,
    ):
        with open_warehouse(home / "warehouse.duckdb") as wh:  # created by the product: HOME made 0700
            wh.write(
                "crm",
                "customers",
                pa.table({"email": [f"s{i}@example.com" for i in range(8)] + ["bad"], "first_name": [f"S{i}" for i in range(9)]}),
            )

        # --- authentications ---------------------------------------------------------------------
        cli("auth:create", "sweep", "--stdin", stdin=KEY + "\n")
        cli("auth:create", "env_saved", "--from-env", "SWEEP_KEY", env={"SWEEP_KEY": KEY})
        cli("auth:list")

        # --- imports: one-off and scheduled ---------------------------------------------------------
        (work / "saved.yml").write_text(
            f"in:\n  type: klaviyo\n  data_source: lists\n  connection: sweep\n  base_url: {url}\nout:\n  mode: replace\n"
        )
        (work / "inline.yml").write_text(
            f"in:\n  type: klaviyo\n  data_source: profiles\n  api_token: {KEY}\n  base_url: {url}\nout:\n  mode: replace\n"
        )
        (work / "wrong.yml").write_text(
            f"in:\n  type: klaviyo\n  data_source: lists\n  connection: sweep\n"
            f"  base_url: {other_url}\n  retry_limit: 1\nout:\n  mode: replace\n"
        )
        cli("connector:preview", work / "saved.yml")
        cli("connector:preview", work / "inline.yml")
        cli("connector:issue", work / "saved.yml", "-d", "klaviyo", "-t", "lists")
        assert cli("connector:issue", work / "wrong.yml", "-d", "klaviyo", "-t", "nope", ok=False).returncode == 1
        cli("connector:create", "nightly", "", "klaviyo", "profiles", work / "inline.yml")
        cli("connector:run", "nightly")
        cli("connector:update", "nightly", "--cron", "0 3 * * *")
        cli("connector:create", "broken", "", "klaviyo", "x", work / "wrong.yml")
        cli("connector:run", "broken", ok=False)
        for verb in ("connector:show", "connector:history"):
            cli(verb, "nightly")
        cli("connector:list")

        # --- exports: dry run, real, resume, from env ------------------------------------------------
        (work / "export_saved.yml").write_text(
            f"type: klaviyo\nresult_connection: sweep\nbase_url: {url}\n"
            "operation: add\nlist_identify_type: name\nlist_value: Sweep\n"
            "skip_invalid_records: true\n"
        )
        (work / "export_inline.yml").write_text(
            f"type: klaviyo\napi_token:{KEY}\nbase_url: {url}\n"  # no space
            "operation: add\nlist_identify_type: name\nlist_value: Sweep2\n"
            "skip_invalid_records: true\nwait_for_completion: true\n"
            "waiting_time_for_completion_millis: 300000\n"
        )
        sql = "SELECT email, first_name FROM customers ORDER BY email"
        cli("query", "-d", "crm", "--result-settings", work / "export_saved.yml", "--dry-run", sql)
        sent = cli("query", "-d", "crm", "--result-settings", work / "export_inline.yml", sql)
        run_id = JOB_ID.search(sent.stdout).group(0)
        cli("query", "-d", "crm", "--result-settings", work / "export_inline.yml", "--resume", run_id, sql, ok=False)
        keyless = json.dumps(
            {"base_url": url, "operation": "add", "list_identify_type": "name", "list_value": "Env", "skip_invalid_records": True}
        )
        cli("query", "-d", "crm", "--result-settings", keyless, sql, env={"KLAVIYO_API_KEY": KEY})
        bad = json.dumps({"base_url": other_url, "operation": "add", "list_value": "nope", "retry_limit": 1})
        assert (
            cli("query", "-d", "crm", "--result-connection", "sweep", "--result-settings", bad, sql, ok=False).returncode == 1
        )  # the other account rejects the key (401): the error names no key

        # --- export schedules --------------------------------------------------------------------------
        cli("sched:create", "exp", "", "-d", "crm", "--result-settings", work / "export_inline.yml", sql)
        cli("sched:run", "exp")
        cli("sched:update", "exp", "--result-settings", work / "export_inline.yml", "--cron", "0 4 * * *")
        cli("sched:run", "exp")
        for verb in ("sched:show", "sched:history"):
            cli(verb, "exp")
        cli("sched:list")

        # --- workflows: a key in _export, pushed and run; a file run as is -------------------------------
        (work / "q.sql").write_text("SELECT email FROM customers WHERE email LIKE '%@%'")
        (work / "wf.dig").write_text(
            f"_export:\n  td:\n    database: crm\n  klaviyo:\n    key: {KEY}\n    base: {url}\n"
            "+send:\n  td>: q.sql\n  database: ${td.database}\n  result_settings:\n    type: klaviyo\n"
            "    api_token: ${klaviyo.key}\n    base_url: ${klaviyo.base}\n    operation: add\n"
            "    list_identify_type: name\n    list_value: Workflow\n"
        )
        cli("workflow", "push", work / "wf.dig")
        cli("workflow", "run", "wf")
        cli("workflow", "run", work / "wf.dig", "--dry-run")
        cli("workflow", "run", work / "wf.dig")
        cli("workflow", "list")

        # --- the scheduler, jobs, api, warehouse verbs ------------------------------------------------
        cli("scheduler", "--once", "--poll", "0.1")
        jobs = cli("job:list", "-n", "100").stdout
        job_ids = sorted(set(JOB_ID.findall(jobs)))
        assert len(job_ids) >= 8, jobs
        for job_id in job_ids[::2]:  # every other one: imports, exports, workflows, failures alike
            cli("job:show", job_id)
        cli("job:show", run_id, "--rows")
        cli("api", "get_lists", "--auth", "sweep", "--base-url", url)
        cli("api", "get_profiles", "--limit", "3", "--base-url", url, env={"KLAVIYO_API_KEY": KEY})
        assert cli("api", "get_lists", "--auth", "sweep", "--base-url", other_url, ok=False).returncode == 1
        cli("tables")
        cli("sql", "SELECT * FROM _bridge.schedules")
        cli("sql", "SELECT * FROM _bridge.runs")

        # --- the console, over HTTP -----------------------------------------------------------------------
        pages, console_cmdline, fetched = console_pages(
            cli, url, ["/", "/authentications", "/sources", "/exports", "/schedules", "/jobs"]
        )
    assert fetched >= 12  # the index pages plus each schedule's and job's page

    # --- the search -------------------------------------------------------------------------------------------
    files = [p for p in home.rglob("*") if p.is_file() and p.name != "credentials.json"]
    assert any(p.name.endswith(".duckdb") for p in files)
    needle = KEY.encode()
    hits = [str(p) for p in files if needle in p.read_bytes()]
    hits += ["tables of " + str(p) for p in files if p.name.endswith(".duckdb") and KEY in dump_tables(p)]
    hits += [f"output of {what}" for what, text in cli.outputs if KEY in text or KEY[3:] in text]
    hits += [f"argv {' '.join(argv[4:7])}" for argv in cli.argv if any(KEY in a for a in argv)]
    hits += ["console process command line"] if KEY in console_cmdline else []
    hits += [f"console page {i}" for i, page in enumerate(pages) if KEY in page or KEY[3:] in page]
    assert hits == []
    creds = home / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600 and needle in creds.read_bytes()
    saved = json.loads(creds.read_text())["credentials"]
    assert {"sweep", "env_saved", "connector:nightly", "sched:exp", "workflow:wf"} <= set(saved)
    print(f"key sweep: {len(cli.argv)} commands, {len(files)} files, {len(pages)} console pages searched: 0 hits")
