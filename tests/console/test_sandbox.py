"""Queries typed into the console run sandboxed (issue 17): read-only on the warehouse, no files, no
other databases, no extensions, time-limited; each refusal says why. The CLI keeps full power."""

from __future__ import annotations

import os
import re
import uuid

import adbc_driver_postgresql.dbapi as adbc_pg
import pyarrow as pa
import pytest

from klaviyo_bridge.cli import main as cli_main
from klaviyo_bridge.console import ConsoleConfig, create_app
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.server import running_emulator

from .conftest import API_KEY, EMULATOR, SignedIn
from .test_pages import _auth, _wait_job


@pytest.fixture(scope="module")
def emulator_url():
    """An emulator of this module's own: these exports add profiles, which the other console
    tests, sharing the session's emulator, would count."""
    with running_emulator(EMULATOR) as url:
        yield url


PG_URL = os.environ.get("KLAVIYO_BRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
READ_ONLY = "the console runs read-only queries"


def _people(target, database: str = "crm") -> None:
    with open_warehouse(target) as wh:
        wh.write(
            database,
            "people",
            pa.table({"email": [f"p{i}@example.com" for i in range(20)], "first_name": [f"P{i}" for i in range(20)]}),
        )


def _count(target, database: str = "crm") -> int:
    with open_warehouse(target) as wh:
        with wh.transaction() as session:
            return session.fetch(f"SELECT count(*) FROM {database}.people")[0][0]


EXPORT = {
    "connection": "emu",
    "database": "crm",
    "operation": "add",
    "list_identify_type": "name",
    "list_value": "Sandbox",
    "skip_invalid_records": "on",
    "wait_for_completion": "on",
    "waiting_time_for_completion_millis": "300000",
}


def _error(page) -> str:
    import html
    import re

    found = re.search(r'id="(?:query|dry)-error">(.*?)</p>', page.text, re.S)
    assert found, page.text[:3000]
    return html.unescape(found.group(1))


async def _query(client, sql: str, action: str = "query", **extra):
    return await client.submit("/exports", {**EXPORT, "sql": sql, "action": action, **extra})


async def test_duckdb_console_queries_are_sandboxed(client, home, tmp_path):
    _people(home.ensure().warehouse)
    await client.page("/exports")
    await _auth(client)  # credentials.json now holds the key
    creds = home.credentials
    out, other = tmp_path / "out.csv", tmp_path / "other.duckdb"
    cases = {
        f"SELECT * FROM read_text('{creds}')": "reading or writing files is not allowed",
        f"SELECT content FROM read_blob('{creds}')": "reading or writing files is not allowed",
        f"SELECT * FROM '{creds}'": "reading or writing files is not allowed",
        f"SELECT * FROM read_csv('{creds}')": "reading or writing files is not allowed",
        f"COPY people TO '{out}'": "COPY is not allowed",
        f"COPY (SELECT * FROM people) TO '{out}' (FORMAT csv)": "COPY is not allowed",
        f"ATTACH '{other}' AS other": "ATTACH is not allowed",
        "INSTALL httpfs": "INSTALL is not allowed",
        "LOAD httpfs": "LOAD is not allowed",
        "DROP TABLE people": "DROP is not allowed",
        "DELETE FROM people": "DELETE is not allowed",
        "UPDATE people SET email = NULL": "UPDATE is not allowed",
        "CREATE TABLE stolen AS SELECT * FROM people": "CREATE is not allowed",
        "INSERT INTO people VALUES ('x@example.com', 'x')": "INSERT is not allowed",
        "SET enable_external_access = true": "SET is not allowed",
        "SELECT 1; DROP TABLE people": "one statement at a time",
        f"EXPORT DATABASE '{tmp_path / 'dump'}'": "EXPORT is not allowed",
        "CHECKPOINT": "CHECKPOINT is not allowed",
    }
    for sql, why in cases.items():
        r = await _query(client, sql)
        message = _error(r)
        assert message.startswith(READ_ONLY) and why in message and "use the CLI" in message, (sql, message)
        assert API_KEY not in r.text
    assert not out.exists() and not other.exists() and not (tmp_path / "dump").exists()
    assert _count(home.warehouse) == 20
    # an ordinary query still works, and the warehouse is writable again for the normal path
    r = await _query(client, "SELECT email, first_name FROM people ORDER BY email")
    assert 'id="query-result"' in r.text and r.text.count("@example.com") >= 20 and 'id="query-error"' not in r.text
    # the sandbox's own settings, as a query sees them
    r = await _query(
        client,
        "SELECT current_setting('enable_external_access') AS ext, "
        "current_setting('lock_configuration') AS locked, "
        "current_setting('autoload_known_extensions') AS autoload, "
        "current_setting('autoinstall_known_extensions') AS autoinstall, "
        "(SELECT bool_and(readonly) FROM duckdb_databases() WHERE NOT internal "
        "AND database_name <> 'memory') AS readonly",
    )
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", r.text.split('id="query-result"', 1)[1])[:5]
    assert cells == ["False", "True", "False", "False", "True"], cells


async def test_refused_queries_are_never_dry_run_run_or_saved(client, home):
    _people(home.ensure().warehouse)
    await client.page("/exports")
    await _auth(client)
    steal = f"SELECT content AS email FROM read_text('{home.credentials}')"
    for action in ("dry_run", "run", "schedule"):
        r = await _query(client, steal, action, name="stealer", preset="@daily", schedule_timezone="UTC", delay="0")
        assert r.status_code == 400, (action, r.status_code)
        assert READ_ONLY in _error(r) and API_KEY not in r.text
    assert "stealer" not in (await client.get("/schedules")).text
    jobs = await client.get("/jobs?kind=export")
    assert "console:export" not in jobs.text
    # an allowed export runs from the sandboxed read and records its rows through the normal path
    r = await _query(client, "SELECT email, first_name FROM people ORDER BY email", "run")
    assert r.status_code == 303, r.text
    run_id = r.headers["location"].split("/jobs/")[1].split("?")[0]
    p = await _wait_job(client, run_id)
    assert p["status"] == "success" and p["rows"] == 20, p


async def test_a_query_past_the_time_limit_is_stopped(home, emulator_url):
    _people(home.ensure().warehouse)
    app = create_app(ConsoleConfig(home=home, base_url=emulator_url, query_timeout=0.5))
    async with app.router.lifespan_context(app), SignedIn(app) as client:
        await client.page("/exports")
        r = await _query(client, "SELECT count(*) FROM range(100000000000) a")
        message = _error(r)
        assert "ran longer than 0.5s" in message and "--query-timeout" in message
        r = await _query(client, "SELECT count(*) AS n FROM people")
        assert 'id="query-result"' in r.text


def test_the_cli_keeps_full_power(home, tmp_path, capsys):
    _people(home.ensure().warehouse)
    out = tmp_path / "cli.csv"
    cli_main_ok(["--home", str(home.root), "sql", f"COPY (SELECT * FROM crm.people) TO '{out}' (FORMAT csv)"])
    assert out.exists() and "p0@example.com" in out.read_text()


def cli_main_ok(argv):
    try:
        cli_main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


# --- PostgreSQL ----------------------------------------------------------------------------------
def _pg(url: str, *statements: str) -> list:
    con = adbc_pg.connect(url, autocommit=True)  # CREATE/DROP DATABASE run outside a transaction
    try:
        cur = con.cursor()
        rows = []
        for statement in statements:
            cur.execute(statement)
            try:
                rows = cur.fetchall()
            except Exception:  # noqa: BLE001 - a statement without rows
                rows = []
        cur.close()
        return rows
    finally:
        con.close()


@pytest.fixture
def pg_schema():
    name = f"crm_{uuid.uuid4().hex[:8]}"
    _people(PG_URL, name)
    yield name
    _pg(PG_URL, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def test_postgres_console_queries_are_read_only_and_time_limited(home, emulator_url, pg_schema, tmp_path):
    app = create_app(ConsoleConfig(home=home, base_url=emulator_url, warehouse_url=PG_URL, query_timeout=1))
    marker = tmp_path / "pwned"
    async with app.router.lifespan_context(app), SignedIn(app) as client:
        await client.page("/exports")
        cases = {
            f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'": "COPY is not allowed",
            f"COPY people TO '{tmp_path / 'x.csv'}'": "COPY is not allowed",
            "DROP TABLE people": "DROP is not allowed",
            "DELETE FROM people": "DELETE is not allowed",
            "WITH gone AS (DELETE FROM people RETURNING *) SELECT * FROM gone": "read-only transaction",
            "SELECT * INTO stolen FROM people": "read-only transaction",
            "SELECT 1; DROP TABLE people": "",
            "SET default_transaction_read_only = off": "SET is not allowed",
        }
        for sql, why in cases.items():
            r = await _query(client, sql, database=pg_schema)
            message = _error(r)
            if why:
                assert message.startswith(READ_ONLY) and why in message, (sql, message)
            else:
                assert "multiple commands" in message or READ_ONLY in message, (sql, message)
        r = await _query(client, "SELECT pg_sleep(30)", database=pg_schema)
        assert "ran longer than 1s" in _error(r)
        r = await _query(client, "SELECT email FROM people ORDER BY email", database=pg_schema)
        assert 'id="query-result"' in r.text and "p0@example.com" in r.text
    assert not marker.exists()
    assert _count(PG_URL, pg_schema) == 20


async def test_postgres_least_privilege_role_from_the_docs(home, emulator_url, pg_schema):
    """The recipe in docs/console.md: a role that is no superuser runs the console, owns its state
    and import schemas, and reads only what it was granted; server files stay out of reach."""
    role, database = f"kb_console_{uuid.uuid4().hex[:6]}", f"kb_console_{uuid.uuid4().hex[:6]}"
    admin_db = PG_URL.rsplit("/", 1)[0] + f"/{database}"
    _pg(PG_URL, f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", f"CREATE DATABASE {database}")
    try:
        # the company's table, made by its owner (not through klaviyo-bridge: the role makes _bridge itself)
        _pg(
            admin_db,
            "CREATE SCHEMA crm",
            "CREATE TABLE crm.people (email TEXT, first_name TEXT)",
            "INSERT INTO crm.people SELECT 'p' || i || '@example.com', 'P' || i FROM generate_series(0, 19) i",
        )
        _pg(
            admin_db,
            f"GRANT CONNECT, CREATE ON DATABASE {database} TO {role}",
            f"GRANT USAGE ON SCHEMA crm TO {role}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA crm TO {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA crm GRANT SELECT ON TABLES TO {role}",
        )
        role_url = PG_URL.split("://", 1)[0] + f"://{role}@" + admin_db.split("@", 1)[1]
        assert _pg(role_url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(False,)]
        app = create_app(ConsoleConfig(home=home, base_url=emulator_url, warehouse_url=role_url))
        async with app.router.lifespan_context(app), SignedIn(app) as client:
            await client.page("/exports")
            await _auth(client)
            r = await _query(client, "SELECT pg_read_file('/etc/hostname') AS email")
            assert "permission denied" in _error(r)
            r = await _query(client, "SELECT email, first_name FROM people ORDER BY email")
            assert 'id="query-result"' in r.text and "p0@example.com" in r.text, _error(r)
            r = await _query(client, "SELECT email, first_name FROM people ORDER BY email", "run")
            assert r.status_code == 303, r.text
            run_id = r.headers["location"].split("/jobs/")[1].split("?")[0]
            p = await _wait_job(client, run_id)
            assert p["status"] == "success" and p["rows"] == 20, p  # state written by the role itself
    finally:
        _pg(PG_URL, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", f"DROP ROLE IF EXISTS {role}")


async def test_run_now_reads_an_export_schedule_in_the_sandbox(client, home):
    """A schedule made outside the console (full power) is still read sandboxed when the console runs it."""
    from datetime import datetime, timezone

    from klaviyo_bridge.schedule.saving import create_schedule
    from klaviyo_bridge.store.state import ScheduleRecord

    _people(home.ensure().warehouse)
    await client.page("/exports")
    await _auth(client)
    settings = {
        "type": "klaviyo",
        "result_connection": "emu",
        "operation": "add",
        "list_identify_type": "name",
        "list_value": "Sandbox",
        "base_url": client._transport.app.state.console.config.base_url,
    }
    steal = f"SELECT content AS email FROM read_text('{home.credentials}')"
    with open_warehouse(home.warehouse) as wh:
        for name, sql in (("cli_steal", steal), ("cli_ok", "SELECT email FROM people")):
            create_schedule(
                wh,
                None,
                ScheduleRecord(
                    name,
                    "export",
                    "",
                    "UTC",
                    0,
                    "crm",
                    None,
                    {"query": sql, "result_settings": settings},
                    last_scheduled_for=datetime.now(timezone.utc),
                ),
            )
    await client.page("/schedules")
    r = await client.submit("/schedules/cli_steal/run", {})
    run_id = r.headers["location"].split("/jobs/")[1].split("?")[0]
    p = await _wait_job(client, run_id)
    assert p["status"] == "failed to start" and READ_ONLY in p["error"] and API_KEY not in str(p)
    page = await client.get(f"/jobs/{run_id}")
    assert 'id="start-error"' in page.text and "reading or writing files is not allowed" in page.text
    r = await client.submit("/schedules/cli_ok/run", {})
    p = await _wait_job(client, r.headers["location"].split("/jobs/")[1].split("?")[0])
    assert p["status"] == "success" and p["rows"] == 20, p


async def test_a_console_query_waits_for_a_running_job_then_says_so(home):
    """DuckDB lets one connection of a process hold the file: the sandbox waits for the console's job."""
    import asyncio

    from klaviyo_emulator.server import running_emulator
    from klaviyo_emulator.settings import EmulatorSettings

    from .test_pages import SOURCE, _run_id

    _people(home.ensure().warehouse)
    with running_emulator(EmulatorSettings(profiles=300, events=2000, rate_limits=False, latency_ms=1500)) as slow:
        app = create_app(ConsoleConfig(home=home, base_url=slow, lock_timeout=0.3))
        async with app.router.lifespan_context(app), SignedIn(app) as client:
            await client.page("/sources/new")
            await _auth(client)
            r = await client.submit(
                "/sources/new",
                {
                    **SOURCE,
                    "name": "slow_events",
                    "data_source": "events",
                    "table": "events",
                    "mode": "append",
                    "action": "save_run",
                },
            )
            run_id = _run_id(r)
            for _ in range(200):
                p = (await client.get(f"/jobs/{run_id}/progress.json")).json()
                if p["status"] == "running":
                    break
                await asyncio.sleep(0.05)
            assert p["status"] == "running"
            r = await _query(client, "SELECT count(*) FROM people")
            assert "busy with a running job" in _error(r)
            await client.submit(f"/jobs/{run_id}/cancel", {})
            assert (await _wait_job(client, run_id, timeout=30))["status"] == "killed"
            r = await _query(client, "SELECT count(*) AS n FROM people")
            assert 'id="query-result"' in r.text
