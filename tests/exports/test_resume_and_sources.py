"""Resume after a crash never resends accepted batches; PostgreSQL as the query source; the CLI."""

from __future__ import annotations

import json

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.exports.runner import run_export
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from .helpers import export, make_app, no_sleep, outcomes, settings


class Killed(BaseException):
    """Stands in for kill -9: nothing after it runs, nothing is recorded."""


class CountingTransport(httpx.AsyncBaseTransport):
    def __init__(self, app, die_on_post: int | None = None) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.posts = 0
        self.die_on_post = die_on_post

    async def handle_async_request(self, request):
        if request.method == "POST" and "profile-bulk-import-jobs" in request.url.path:
            self.posts += 1
            if self.posts == self.die_on_post:
                raise Killed()
        return await self.inner.handle_async_request(request)


async def test_resume_does_not_resend_accepted_batches(tmp_path):
    app = make_app()
    list_id = app.state.emulator.account.records["list"][0].id
    table = pa.table({"email": [f"r{i}@example.com" for i in range(25_000)]})
    s = settings(operation="add", list_value=list_id, wait_for_completion=True, concurrency=1)
    with open_warehouse(tmp_path / "wh.duckdb") as wh:
        crashing = CountingTransport(app, die_on_post=3)
        with pytest.raises(Killed):
            await run_export(wh, table, s, transport=crashing, sleep=no_sleep, run_id="run-1")
        assert [b.status for b in wh.state.export_batches("run-1")] == ["done", "done", "sending"]
        again = CountingTransport(app)
        result = await run_export(wh, table, s, transport=again, sleep=no_sleep, run_id="run-1", resume=True)
        assert again.posts == 1  # only the batch that was in flight when the run died
        assert result.skipped_on_resume == 2 and result.resent == 1
        rows, outs, _ = outcomes(wh, "run-1")
        assert sorted(rows) == list(range(25_000)) and set(outs) == {"accepted"}
        assert wh.state.runs()[0].status == "success"
    assert len(app.state.emulator.snapshot()["list_members"][list_id]) >= 25_000


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


async def test_postgresql_source_query():
    """PostgreSQL is a first-class source: this fails (never skips) when the server is unreachable."""
    app = make_app()
    list_id = app.state.emulator.account.records["list"][1].id
    with open_warehouse(PG_URL) as wh:
        with wh.transaction() as s:
            s.execute("DROP SCHEMA IF EXISTS export_src CASCADE")
            s.execute("CREATE SCHEMA export_src")
            s.execute("CREATE TABLE export_src.people (email text, first_name text, score integer)")
            s.execute(
                "INSERT INTO export_src.people VALUES ('pg1@example.com', 'Pat', 3), ('pg2@example.com', NULL, NULL), "
                "('nope', 'X', 1)"
            )
        try:
            result = await export(
                wh,
                "SELECT email, first_name, score FROM people ORDER BY email",
                settings(operation="add", list_value=list_id, skip_invalid_records=True, wait_for_completion=True),
                app,
                database="export_src",
            )
            assert result.summary.counts == {"accepted": 2, "skipped": 1}
            assert sum(wh.state.export_rows(run_id=result.run_id).column("row_index").to_pylist()) == 3
        finally:
            with wh.transaction() as s:
                s.execute("DROP SCHEMA IF EXISTS export_src CASCADE")


def test_query_cli_end_to_end_on_a_real_socket(tmp_path, capsys, monkeypatch):
    emu = EmulatorSettings(seed=4, profiles=100, events=10, lists=2, rate_limits=False, job_profiles_per_second=1e9)
    wh_path = tmp_path / "wh.duckdb"
    with open_warehouse(wh_path) as wh:
        wh.write(
            "crm", "customers", pa.table({"email": ["c1@example.com", "c2@example.com", "bad"], "first_name": ["C1", "C2", "B"]})
        )
    with running_emulator(emu) as url:
        conf = tmp_path / "export.yml"
        conf.write_text(
            f"type: klaviyo\napi_token: {DEFAULT_API_KEY}\nbase_url: {url}\noperation: add\n"
            "list_identify_type: name\nlist_value: CLI Export\nskip_invalid_records: true\n"
            "wait_for_completion: true\nwaiting_time_for_completion_millis:300000\n"
        )
        args = [
            "--home",
            str(tmp_path / "home"),
            "query",
            "-d",
            "crm",
            "--warehouse",
            str(wh_path),
            "--result-settings",
            str(conf),
            "SELECT email, first_name FROM customers ORDER BY email",
        ]
        main([*args[:-1], "--dry-run", args[-1]])
        out = capsys.readouterr()
        assert "2 would be sent in 1 batch(es)" in out.out and "nothing was sent" in out.out
        main(args)
        out = capsys.readouterr()
        assert "3 rows: 2 accepted, 1 skipped" in out.out
        assert "line 9" in out.err and "no space after the colon" in out.err
        # inline settings (on the command line) carry no key: it comes from KLAVIYO_API_KEY
        monkeypatch.setenv("KLAVIYO_API_KEY", DEFAULT_API_KEY)
        inline = json.dumps({"base_url": url, "operation": "add", "list_value": "nope"})
        sql = tmp_path / "q.sql"
        sql.write_text("SELECT email FROM customers WHERE email LIKE '%@%'")
        with pytest.raises(SystemExit) as info:  # an unknown list id is an error, before any row is read
            main(
                [
                    "--home",
                    str(tmp_path / "home"),
                    "query",
                    "-d",
                    "crm",
                    "--warehouse",
                    str(wh_path),
                    "--result-settings",
                    inline,
                    "-f",
                    str(sql),
                ]
            )
        assert info.value.code == 1
        assert "list 'nope' does not exist" in capsys.readouterr().err
        with pytest.raises(SystemExit) as info:
            main(
                [
                    "--home",
                    str(tmp_path / "home"),
                    "query",
                    "-d",
                    "crm",
                    "--warehouse",
                    str(wh_path),
                    "--result-settings",
                    json.dumps({"operation": "remove_profiles", "list_value": "x", "base_url": url}),
                    "SELECT email FROM customers",
                ]
            )
        assert info.value.code == 1
        assert "'remove_profiles' needs a string column profile_id" in capsys.readouterr().err
