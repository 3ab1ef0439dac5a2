"""Import commands end to end: a real emulator on 127.0.0.1, the CLI, a DuckDB file."""

import asyncio
import re
from collections import Counter
from datetime import datetime, timezone

import pytest

from klaviyo_bridge.api import query as q
from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_bridge.api.ratelimit import RateLimiter
from klaviyo_bridge.cli import main
from klaviyo_bridge.config import parse_import_config
from klaviyo_bridge.imports import runner
from klaviyo_bridge.imports.replicate import QLIK_TABLES
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings

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


SUMMARY = re.compile(
    r"^(\S+) -> (\w+)\.(\w+) \((\w+)\): (\d+) rows, (\d+) pages, (\d+) requests, (\d+) retries, "
    r"(\d+) throttled, ([\d.]+)s \(",
    re.M,
)


def summaries(out: str) -> dict[str, dict]:
    """table -> the numbers of its summary line."""
    found = {}
    for m in SUMMARY.finditer(out):
        rows, pages, requests, retries, throttled = map(int, m.group(5, 6, 7, 8, 9))
        found[m.group(3)] = dict(
            source=m.group(1),
            database=m.group(2),
            mode=m.group(4),
            rows=rows,
            pages=pages,
            requests=requests,
            retries=retries,
            throttled=throttled,
            seconds=float(m.group(10)),
        )
    return found


def assert_plausible(line: dict, rows: int, page_size: int) -> None:
    """The summary's numbers agree with the table and with each other (no faults, no rate limits here)."""
    assert line["rows"] == rows
    assert -(-rows // page_size) <= line["pages"] <= line["requests"] <= line["pages"] + 2
    assert line["retries"] == line["throttled"] == 0
    assert 0 <= line["seconds"] < 600  # a duration of this run, not a timestamp or a negative


async def api_expected_counts(base_url: str, start: datetime) -> dict[str, int]:
    """What each Qlik table should hold: the account's records stamped at or after ``start``, from the API."""
    settings = parse_import_config(
        {"in": {"type": "klaviyo", "data_source": "lists", "api_token": EMU.api_key, "base_url": base_url}}
    ).source.client_settings()
    since = lambda text: text is not None and datetime.fromisoformat(text) >= start  # noqa: E731
    async with KlaviyoClient(settings, limiter=RateLimiter(enabled=False)) as c:
        names = {m["id"]: m["attributes"]["name"] async for m in c.records("get_metrics")}
        by_metric = Counter(
            [
                names[e["relationships"]["metric"]["data"]["id"]]
                async for e in c.records("get_events", query=q.Query(page_size=1000))
                if since(e["attributes"]["datetime"])
            ]
        )
        counts = {table: by_metric[metric] for table, metric in QLIK_TABLES.items() if metric}
        counts["lists"] = len([x async for x in c.records("get_lists") if since(x["attributes"]["updated"])])
        counts["campaigns"] = 0
        for channel in ("email", "sms"):
            for archived in (False, True):
                counts["campaigns"] += len(
                    [
                        x
                        async for x in c.records(
                            "get_campaigns",
                            query=q.Query(filters=(q.equals("messages.channel", channel), q.equals("archived", archived))),
                        )
                        if since(x["attributes"]["updated_at"])
                    ]
                )
        counts["global_exclusions"] = len(
            [
                p
                async for p in c.records(
                    "get_profiles", query=q.Query(page_size=100, additional_fields={"profile": ["subscriptions"]})
                )
                if any(
                    since(s["timestamp"]) for s in p["attributes"]["subscriptions"]["email"]["marketing"].get("suppression") or []
                )
            ]
        )
    return counts


def test_replicate_creates_all_qlik_tables_with_the_emulator_counts(tmp_path, base_url, monkeypatch, capsys):
    """All 21 tables, each holding what the API has since --start-date, each with its summary line."""
    monkeypatch.setenv("KLAVIYO_API_KEY", EMU.api_key)
    monkeypatch.setenv("KLAVIYO_BASE_URL", base_url)
    # 16 windows a table instead of 64: 21 tables of 3000 events need no more, and the test stays fast
    monkeypatch.setattr(runner, "WINDOWS_PER_WORKER", 1)
    home = tmp_path / "home"
    assert run("--home", str(home), "replicate", "-d", "qlik", "--start-date", "2024-01-01") == 0
    out = capsys.readouterr().out
    expected = asyncio.run(api_expected_counts(base_url, datetime(2024, 1, 1, tzinfo=timezone.utc)))
    assert len(expected) == len(QLIK_TABLES) == 21
    lines = summaries(out)
    assert sorted(lines) == sorted(QLIK_TABLES)
    assert f"replicated 21 tables, {sum(expected.values())} rows" in out
    with open_warehouse(home / "warehouse.duckdb") as wh:
        for table, metric in QLIK_TABLES.items():
            assert wh.table_columns("qlik", table) is not None, f"qlik.{table} was not created"
            rows = wh.table_arrow("qlik", table).to_pylist()
            assert len(rows) == expected[table], table
            assert len({r["id"] for r in rows}) == len(rows)
            if metric:
                assert {r["metric_name"] for r in rows} <= {metric}
            page_size = {"lists": 10, "campaigns": 100, "global_exclusions": 100}.get(table, 1000)
            assert lines[table]["mode"] == "merge" and lines[table]["database"] == "qlik"
            assert_plausible(lines[table], len(rows), page_size)
        opens = wh.table_arrow("qlik", "open").num_rows
    # a second run merges: no duplicate ids
    assert run("--home", str(home), "replicate", "-d", "qlik", "--start-date", "2024-01-01", "--tables", "open") == 0
    with open_warehouse(home / "warehouse.duckdb") as wh:
        ids = wh.table_arrow("qlik", "open").column("id").to_pylist()
        assert len(ids) == len(set(ids)) == opens


def test_issue_summary_names_rows_pages_requests_retries_and_seconds(tmp_path, base_url, capsys):
    home = tmp_path / "home"
    cfg = write_config(tmp_path, base_url, source="events", field="created")
    assert run("--home", str(home), "connector:issue", str(cfg), "-d", "klaviyo", "-t", "events") == 0
    out = capsys.readouterr().out
    lines = summaries(out)
    assert list(lines) == ["events"] and len(out.strip().splitlines()) == 1
    with open_warehouse(home / "warehouse.duckdb") as wh:
        rows = wh.table_arrow("klaviyo", "events").num_rows
    assert rows > 1000  # more than one page, so the page count means something
    assert lines["events"]["source"] == "events" and lines["events"]["mode"] == "append"
    assert_plausible(lines["events"], rows, 1000)
    rate = int(re.search(r"s \(([\d,]+) rows/s\)", out).group(1).replace(",", ""))
    shown = lines["events"]["seconds"]  # rounded to 0.1 s
    assert rows / (shown + 0.05) <= rate <= rows / max(shown - 0.05, 1e-9)


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
    assert (
        run("--home", str(home), "replicate", "-d", "qlik", "--start-date", "2024-01-01", "--tables", "viewed_widget,open") == 0
    )
    out = capsys.readouterr().out
    assert "viewed_widget: skipped, the account has no 'Viewed Widget' metric" in out
    assert "replicated 1 tables" in out and "skipped 1: viewed_widget" in out
    with open_warehouse(home / "warehouse.duckdb") as wh:
        assert wh.table_arrow("qlik", "open").num_rows > 0
        assert wh.table_columns("qlik", "viewed_widget") is None


def test_replicate_metrics_limits_the_per_metric_tables(tmp_path, base_url, monkeypatch, capsys):
    """--metrics: only those metrics' tables (and the non-metric ones asked for); a name no table
    has fails at once with a did-you-mean, before any request."""
    monkeypatch.setenv("KLAVIYO_API_KEY", EMU.api_key)
    monkeypatch.setenv("KLAVIYO_BASE_URL", base_url)
    home = tmp_path / "home"
    assert (
        run(
            "--home",
            str(home),
            "replicate",
            "-d",
            "qlik",
            "--start-date",
            "2024-01-01",
            "--tables",
            "open,click,bounce,lists",
            "--metrics",
            "Opened Email,Clicked Email (Klaviyo)",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert sorted(summaries(out)) == ["click", "lists", "open"] and "replicated 3 tables" in out
    with open_warehouse(home / "warehouse.duckdb") as wh:
        assert wh.table_columns("qlik", "bounce") is None
        assert {r["metric_name"] for r in wh.table_arrow("qlik", "click").to_pylist()} == {"Clicked Email"}
    assert run("--home", str(home), "replicate", "-d", "qlik", "--start-date", "2024-01-01", "--metrics", "Opened Emial") == 2
    assert "did you mean 'Opened Email'" in capsys.readouterr().err
