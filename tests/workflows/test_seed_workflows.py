"""Every workflow example of the seed (stored verbatim under seed/), run as written through the CLI
against a real emulator socket and a DuckDB warehouse: ``_export`` + ``${td.database}``, ``td>:``,
``result_connection``, ``result_settings`` (including the seed's ``key:value`` line)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.errors import ConfigError
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_bridge.workflows.document import interpolate
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings

SEED = Path(__file__).parent / "seed"
#: The seed's examples carry ``api_token: api_token``; this emulator accepts exactly that key.
EMU = EmulatorSettings(
    seed=11, profiles=150, events=10, lists=2, segments=1, rate_limits=False, api_key="api_token", job_profiles_per_second=1e9
)
ADD_SQL = "SELECT email, col_a, col_b, col_c\nFROM your_table;\n"  # the seed's example query
REMOVE_SQL = "SELECT profile_id FROM your_table;\n"
CONSENT_SQL = "SELECT email, phone_number FROM your_table;\n"


@pytest.fixture(scope="module")
def emulator():
    with running_emulator(EMU) as url:
        yield url


@pytest.fixture
def project(tmp_path, emulator, monkeypatch):
    monkeypatch.setenv("KLAVIYO_BASE_URL", emulator)
    wh_path = tmp_path / "wh.duckdb"
    with open_warehouse(wh_path) as wh:
        with wh.transaction() as s:
            s.execute("CREATE SCHEMA klaviyo_db")
            s.execute(
                "CREATE TABLE klaviyo_db.your_table (profile_id VARCHAR, email VARCHAR, phone_number VARCHAR, "
                "col_a VARCHAR, col_b INTEGER, col_c VARCHAR)"
            )
            s.execute(
                "INSERT INTO klaviyo_db.your_table VALUES "
                "(NULL, 'wf1@example.com', '+15005550010', 'a', 1, NULL), "
                "(NULL, 'wf2@example.com', '+15005550011', 'b', 2, 'x'), "
                "(NULL, 'wf3@example.com', NULL, 'c', 3, NULL)"
            )
    return tmp_path, wh_path


def _run(project, name, sql, capsys, *extra):
    folder, wh_path = project
    if not (folder / f"{name}.dig").exists():  # a test may have written its own variant there
        shutil.copy(SEED / f"{name}.dig", folder / f"{name}.dig")
    (folder / "export_data.sql").write_text(sql)
    try:
        main(
            ["--home", str(folder / "home"), "workflow", "run", str(folder / f"{name}.dig"), "--warehouse", str(wh_path), *extra]
        )
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _last_run(wh_path):
    with open_warehouse(wh_path) as wh:
        run = wh.state.runs()[0]
        rows = wh.state.export_rows(run_id=run.run_id)
        return run, rows.column("outcome").to_pylist(), rows.column("reason").to_pylist()


def test_every_seed_workflow_is_stored():
    assert sorted(p.stem for p in SEED.glob("*.dig")) == [
        "adding_profiles_by_list_id",
        "adding_profiles_by_list_name",
        "removing_profiles_by_list_id",
        "removing_profiles_by_list_name",
        "subscribing_profiles_by_list_name",
        "unsubscribing_profiles_by_list_id",
    ]


def test_add_by_name_then_remove_by_name(project, capsys):
    code, out, err = _run(project, "adding_profiles_by_list_name", ADD_SQL, capsys)
    assert code == 0, err
    run, outcomes, _ = _last_run(project[1])
    assert run.job == "adding_profiles_by_list_name+klaviyo_export_task"
    assert outcomes == ["accepted", "accepted", "accepted"]
    assert "3 accepted" in out and "created list 'name_value'" in out
    # the profile ids Klaviyo gave them, written back into the table, as a user would import them
    folder, wh_path = project
    from urllib.parse import quote

    import httpx

    base = __import__("os").environ["KLAVIYO_BASE_URL"]
    headers = {"Authorization": "Klaviyo-API-Key api_token", "revision": "2026-07-15"}
    with httpx.Client(base_url=base, headers=headers) as c:
        ids = {}
        for email in ("wf1@example.com", "wf2@example.com"):
            ids[email] = c.get(f"/api/profiles?filter={quote(f'equals(email,{chr(39)}{email}{chr(39)})')}").json()["data"][0][
                "id"
            ]
    with open_warehouse(wh_path) as wh:
        with wh.transaction() as s:
            for email, pid in ids.items():
                s.execute("UPDATE klaviyo_db.your_table SET profile_id = $1 WHERE email = $2", [pid, email])
    code, out, err = _run(project, "removing_profiles_by_list_name", REMOVE_SQL, capsys)
    run, outcomes, reasons = _last_run(wh_path)
    # the third row has no profile_id and skip_invalid_records defaults to false: nothing is sent
    assert code != 0 and "skip_invalid_records is false" in err
    assert "; hint: fix those rows in the query, or set skip_invalid_records: true" in err  # from the error's data
    assert outcomes.count("skipped") == 3
    code, out, err = _run(
        project, "removing_profiles_by_list_name", "SELECT profile_id FROM your_table WHERE profile_id IS NOT NULL;\n", capsys
    )
    assert code == 0, err
    assert _last_run(wh_path)[1] == ["accepted", "accepted"]


@pytest.mark.parametrize(
    "name,sql",
    [
        ("adding_profiles_by_list_id", "SELECT email, col_a, col_b, col_c FROM your_table WHERE email LIKE '%@%';\n"),
        ("removing_profiles_by_list_id", "SELECT 'no-such-profile' AS profile_id;\n"),
        ("unsubscribing_profiles_by_list_id", CONSENT_SQL),
    ],
)
def test_examples_naming_list_id_value_run_and_report_the_missing_list(project, capsys, name, sql):
    code, out, err = _run(project, name, sql, capsys)
    # the seed's placeholder list id does not exist: checked with one read before any row is read,
    # the run is an error (exit 1) and nothing is sent
    assert code == 1, err
    assert "list 'id_value' does not exist" in err
    with open_warehouse(project[1]) as wh:
        run = wh.state.runs()[0]
        assert run.status == "error" and "id_value" in run.error
        assert wh.state.export_batches(run.run_id) == []
    if name.startswith("adding"):
        assert "waiting_time_for_completion_millis:3600000" in err and "no space after the colon" in err


def test_examples_with_a_real_list_id(project, capsys):
    folder, _ = project
    list_id = None
    import httpx

    base = __import__("os").environ["KLAVIYO_BASE_URL"]
    with httpx.Client(base_url=base, headers={"Authorization": "Klaviyo-API-Key api_token", "revision": "2026-07-15"}) as c:
        list_id = c.get("/api/lists").json()["data"][0]["id"]
    text = (SEED / "adding_profiles_by_list_id.dig").read_text().replace("id_value", list_id)
    (folder / "_real_id.dig").write_text(text)  # in the test's own folder, never beside the seeds
    code, out, err = _run(project, "_real_id", "SELECT email, col_a FROM your_table WHERE email LIKE '%@%';\n", capsys)
    assert code == 0, err
    assert _last_run(project[1])[1] == ["accepted", "accepted", "accepted"]


def test_subscribe_by_list_name(project, capsys):
    code, out, err = _run(project, "subscribing_profiles_by_list_name", CONSENT_SQL, capsys)
    assert code == 0, err
    run, outcomes, reasons = _last_run(project[1])
    assert outcomes == ["submitted", "submitted", "submitted"]
    assert "no job to poll" in out


def test_seed_batch_consent_query_as_written(project, capsys):
    sql = """SELECT profile_id, email, phone_number, birth_day, consent_at
FROM (
  values ('profile id', 'example1@email.com', '+234243241', '2010-08-15', '2010-08-15T01:05:20'),
         ('profile id', 'example2@email.com', '+234243242', '2010-01-15', '2010-08-15T01:05:20')
) tbl (profile_id, email, phone_number, birth_day, consent_at)
"""
    code, out, err = _run(project, "subscribing_profiles_by_list_name", sql, capsys)
    # the seed's sample phone numbers are not valid numbers: both rows are skipped with that reason,
    # and a run that could send nothing is an error, not a success
    assert code == 1 and "none of the 2 row(s) is valid" in err, err
    run, outcomes, reasons = _last_run(project[1])
    assert outcomes == ["skipped", "skipped"] and all("phone_number" in r for r in reasons)


def test_dry_run_and_params(project, capsys):
    code, out, err = _run(project, "adding_profiles_by_list_name", ADD_SQL, capsys, "--dry-run", "-p", "td.database=klaviyo_db")
    assert code == 0, err
    assert "would be sent" in out and "nothing was sent" in out


def test_interpolation_errors_name_the_variable():
    assert interpolate({"d": "${td.database}", "x": "db=${td.database}"}, {"td": {"database": "k"}}, "t") == {
        "d": "k",
        "x": "db=k",
    }
    with pytest.raises(ConfigError, match=r"\$\{td.nope\} is not defined"):
        interpolate("${td.nope}", {"td": {}}, "t")
