"""Import commands end to end: a real emulator on 127.0.0.1, the CLI, a DuckDB file."""

import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.emulator.server import running_emulator
from klaviyo_bridge.emulator.settings import EmulatorSettings
from klaviyo_bridge.store.warehouse import open_warehouse

EMU = EmulatorSettings(seed=3, profiles=400, events=3000, lists=4, rate_limits=False)

SEED_CONFIG = """\
in:
  type: klaviyo
  data_source: {source}
  api_token: {key}
  base_url: {base}
  revision_time: "2023-02-22"
  incremental: true
  start_time: "2023-06-01T17:06:39.698883"
  incremental_field: {field}
out:
  mode: {mode}
"""


@pytest.fixture(scope="module")
def base_url():
    with running_emulator(EMU) as url:
        yield url


def write_config(tmp_path, base_url, source="lists", field="updated", mode="append"):
    path = tmp_path / f"{source}.yml"
    path.write_text(SEED_CONFIG.format(source=source, key=EMU.api_key, base=base_url, field=field, mode=mode))
    return path


def run(*args):
    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code
    return 0


def test_preview_prints_typed_headers_like_the_seed(tmp_path, base_url, capsys):
    assert run("connector:preview", str(write_config(tmp_path, base_url))) == 0
    out = capsys.readouterr().out
    for header in ("id:string", "name:string", "created:timestamp", "updated:timestamp"):
        assert header in out
    assert not (tmp_path / ".klaviyo-bridge").exists()


def test_issue_imports_into_the_home_warehouse_and_resumes(tmp_path, base_url, capsys):
    home = tmp_path / "home"
    cfg = write_config(tmp_path, base_url, source="events", field="created")
    assert run("--home", str(home), "connector:issue", str(cfg), "-d", "klaviyo", "-t", "events") == 0
    summary = capsys.readouterr().out
    assert "events -> klaviyo.events (append)" in summary and "rows" in summary
    with open_warehouse(home / "warehouse.duckdb") as wh:
        table = wh.table_arrow("klaviyo", "events")
        assert table.num_rows > 0
        assert wh.state.cursor("klaviyo.events") is not None
        assert EMU.api_key not in str(wh.state.runs())


def test_replicate_creates_the_qlik_tables(tmp_path, base_url, monkeypatch, capsys):
    monkeypatch.setenv("KLAVIYO_API_KEY", EMU.api_key)
    monkeypatch.setenv("KLAVIYO_BASE_URL", base_url)
    home = tmp_path / "home"
    assert run("--home", str(home), "replicate", "-d", "qlik", "--start-date", "2024-01-01",
               "--tables", "open,click,lists,campaigns,global_exclusions") == 0
    assert "replicated 5 tables" in capsys.readouterr().out
    with open_warehouse(home / "warehouse.duckdb") as wh:
        opens = wh.table_arrow("qlik", "open").to_pylist()
        assert opens and {r["metric_name"] for r in opens} == {"Opened Email"}
        assert wh.table_arrow("qlik", "lists").num_rows >= 1
    # a second run merges: no duplicate ids
    assert run("--home", str(home), "replicate", "-d", "qlik", "--start-date", "2024-01-01", "--tables", "open") == 0
    with open_warehouse(home / "warehouse.duckdb") as wh:
        ids = wh.table_arrow("qlik", "open").column("id").to_pylist()
        assert len(ids) == len(set(ids)) == len(opens)


def test_bad_config_is_one_line_naming_the_key(tmp_path, base_url, capsys):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("in:\n  data_source: profiles\n  api_token: x\n  retry_limit: 9\n")
    assert run("connector:preview", str(cfg)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "in.retry_limit: must be between 1 and 7" in err


def test_replicate_skips_a_metric_the_account_does_not_have(tmp_path, base_url, monkeypatch, capsys):
    """An account that never sent, say, SMS lacks those metrics: their tables are skipped and
    named, the others still sync, and the run succeeds."""
    from klaviyo_bridge.imports.replicate import QLIK_TABLES

    monkeypatch.setitem(QLIK_TABLES, "viewed_widget", "Viewed Widget")
    monkeypatch.setenv("KLAVIYO_API_KEY", EMU.api_key)
    monkeypatch.setenv("KLAVIYO_BASE_URL", base_url)
    home = tmp_path / "home"
    assert run("--home", str(home), "replicate", "-d", "qlik", "--start-date", "2024-01-01",
               "--tables", "viewed_widget,open") == 0
    out = capsys.readouterr().out
    assert "viewed_widget: skipped, the account has no 'Viewed Widget' metric" in out
    assert "replicated 1 tables" in out and "skipped 1: viewed_widget" in out
    with open_warehouse(home / "warehouse.duckdb") as wh:
        assert wh.table_arrow("qlik", "open").num_rows > 0
        assert wh.table_columns("qlik", "viewed_widget") is None
