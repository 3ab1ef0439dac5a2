"""A workflow saved with ``workflow push`` runs by hand: ``workflow run NAME`` or ``sched:run NAME``."""

from __future__ import annotations

import shutil

import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.server import running_emulator

from .test_seed_workflows import ADD_SQL, EMU, SEED


@pytest.fixture(scope="module")
def emulator():
    with running_emulator(EMU) as url:
        yield url


def run(*args) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code or 0
    return 0


def test_a_pushed_workflow_runs_now_by_name(tmp_path, emulator, monkeypatch, capsys):
    monkeypatch.setenv("KLAVIYO_BASE_URL", emulator)
    home = tmp_path / "home"
    with open_warehouse(home / "warehouse.duckdb") as wh:
        with wh.transaction() as s:
            s.execute("CREATE SCHEMA klaviyo_db")
            s.execute("CREATE TABLE klaviyo_db.your_table (email VARCHAR, col_a VARCHAR, col_b INTEGER, col_c VARCHAR)")
            s.execute(
                "INSERT INTO klaviyo_db.your_table VALUES ('p1@example.com', 'a', 1, NULL), ('p2@example.com', 'b', 2, 'x')"
            )
    shutil.copy(SEED / "adding_profiles_by_list_name.dig", tmp_path / "nightly.dig")
    (tmp_path / "export_data.sql").write_text(ADD_SQL)
    assert run("--home", home, "workflow", "push", tmp_path / "nightly.dig") == 0
    capsys.readouterr()

    assert run("--home", home, "workflow", "run", "nightly") == 0
    out = capsys.readouterr().out
    assert "success: 2 rows read, 2 records exported" in out
    assert "job:list --schedule nightly" in out
    assert run("--home", home, "sched:run", "nightly") == 0
    assert "2 records exported" in capsys.readouterr().out
    assert run("--home", home, "job:list", "--schedule", "nightly") == 0
    assert capsys.readouterr().out.count("workflow:nightly") == 2

    assert run("--home", home, "workflow", "run", "nightly_typo") == 2
    assert "no .dig file and no pushed workflow named 'nightly_typo' (see workflow list)" in capsys.readouterr().err
    assert run("--home", home, "workflow", "run", tmp_path / "gone.dig") == 2
    assert "no such file" in capsys.readouterr().err
