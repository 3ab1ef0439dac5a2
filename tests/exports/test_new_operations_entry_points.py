"""mirror, upsert and track_events through every entry point, on a real emulator socket: ``query
--result-settings`` (dry run, run, exit codes), a workflow with ``_export`` / ``td>:`` /
``result_settings``, an export schedule (``sched:create`` + ``sched:run``)."""

from __future__ import annotations

import json

import httpx
import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

EMU = EmulatorSettings(seed=19, profiles=100, events=20, lists=2, segments=1, rate_limits=False, job_profiles_per_second=1e9)


@pytest.fixture
def world(tmp_path):
    with running_emulator(EMU) as url:
        wh_path = tmp_path / "wh.duckdb"
        with open_warehouse(wh_path) as wh:
            with wh.transaction() as s:
                s.execute("CREATE SCHEMA crm")
                s.execute("CREATE TABLE crm.people (email VARCHAR, first_name VARCHAR)")
                s.execute("INSERT INTO crm.people SELECT 'p' || i || '@example.com', 'P' || i FROM range(30) t(i)")
                s.execute(
                    "CREATE TABLE crm.orders (email VARCHAR, metric_name VARCHAR, time TIMESTAMP, value DOUBLE, order_id VARCHAR)"
                )
                s.execute(
                    "INSERT INTO crm.orders SELECT 'p' || i || '@example.com', 'Placed Offline Order', "
                    "TIMESTAMP '2025-03-01 10:00:00' + i * INTERVAL 1 HOUR, i * 1.5, 'o' || i FROM range(12) t(i)"
                )
        yield url, wh_path, tmp_path


def _cli(tmp_path, wh_path, *args, capsys):
    try:
        main(["--home", str(tmp_path / "home"), *args, "--warehouse", str(wh_path)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _file(tmp_path, name, data) -> str:
    """Settings with a key go in a file only the user can read (never on a command line)."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return str(path)


def _members(url, list_id):
    headers = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15"}
    out, link = set(), f"{url}/api/lists/{list_id}/profiles?fields[profile]=email&page[size]=100"
    with httpx.Client(headers=headers) as c:
        while link:
            doc = c.get(link).json()
            out |= {p["attributes"]["email"] for p in doc["data"]}
            link = doc["links"].get("next")
    return out


def test_query_mirror_dry_run_run_and_refusal(world, capsys):
    url, wh_path, tmp = world
    conf = tmp / "mirror.yml"
    conf.write_text(
        f"type: klaviyo\napi_token: {DEFAULT_API_KEY}\nbase_url: {url}\noperation: mirror\n"
        "list_identify_type: name\nlist_value: Mirrored\nskip_invalid_records: true\n"
        "wait_for_completion: true\nwaiting_time_for_completion_millis: 300000\n"
    )
    sql = "SELECT email, first_name FROM people ORDER BY email"
    code, out, err = _cli(tmp, wh_path, "query", "-d", "crm", "--result-settings", str(conf), "--dry-run", sql, capsys=capsys)
    assert code == 0, err
    assert "would add 30, 0 already members, would remove 0" in out and "nothing was sent" in out
    code, out, err = _cli(tmp, wh_path, "query", "-d", "crm", "--result-settings", str(conf), sql, capsys=capsys)
    assert code == 0, err
    assert "mirror of list" in out and "30 added, 0 already members, 0 removed" in out
    list_id = [line for line in out.splitlines() if line.startswith("success:")][0].split("list ")[1].split(";")[0]
    assert _members(url, list_id) == {f"p{i}@example.com" for i in range(30)}
    # 18 of 30 would leave (p0, p1, p10..p19 stay): more than the default 10%
    code, out, err = _cli(
        tmp,
        wh_path,
        "query",
        "-d",
        "crm",
        "--result-settings",
        str(conf),
        "SELECT email FROM people WHERE email < 'p2' ORDER BY email",
        capsys=capsys,
    )
    assert code == 1
    assert "remove 18 of the 30 members" in err and "max_removals 10% (3)" in err
    assert len(_members(url, list_id)) == 30
    code, out, err = _cli(
        tmp, wh_path, "query", "-d", "crm", "--result-settings", str(conf), "SELECT email FROM people WHERE false", capsys=capsys
    )
    assert code == 1 and "returned no rows" in err and "allow_empty" in err


def test_query_upsert_and_track_events(world, capsys):
    url, wh_path, tmp = world
    up = _file(
        tmp,
        "up",
        {"type": "klaviyo", "api_token": DEFAULT_API_KEY, "base_url": url, "operation": "upsert", "wait_for_completion": True},
    )
    code, out, err = _cli(
        tmp, wh_path, "query", "-d", "crm", "--result-settings", up, "SELECT email, first_name FROM people", capsys=capsys
    )
    assert code == 0, err
    assert "30 accepted" in out
    ev = _file(tmp, "ev", {"type": "klaviyo", "api_token": DEFAULT_API_KEY, "base_url": url, "operation": "track_events"})
    sql = "SELECT email, metric_name, time, value, order_id FROM orders"
    code, out, err = _cli(tmp, wh_path, "query", "-d", "crm", "--result-settings", ev, sql, capsys=capsys)
    assert code == 0, err
    assert "12 submitted" in out
    code, out, err = _cli(tmp, wh_path, "query", "-d", "crm", "--result-settings", ev, sql, capsys=capsys)
    assert code == 0  # again: the same 12 unique_ids, Klaviyo records nothing twice
    headers = {"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2026-07-15"}
    with httpx.Client(base_url=url, headers=headers) as c:
        metric = [m["id"] for m in c.get("/api/metrics").json()["data"] if m["attributes"]["name"] == "Placed Offline Order"][0]
        events = c.get("/api/events", params={"filter": f'equals(metric_id,"{metric}")', "page[size]": "100"}).json()
    assert len(events["data"]) == 12
    assert {e["attributes"]["event_properties"]["order_id"] for e in events["data"]} == {f"o{i}" for i in range(12)}
    bad = _file(
        tmp,
        "bad",
        {"type": "klaviyo", "api_token": DEFAULT_API_KEY, "base_url": url, "operation": "track_events", "max_removals": 5},
    )
    code, out, err = _cli(tmp, wh_path, "query", "-d", "crm", "--result-settings", bad, sql, capsys=capsys)
    assert code == 2 and "max_removals and allow_empty apply to operation mirror only" in err


DIG = """_export:
  td:
    database: crm

+mirror_task:
  td>: export_data.sql
  database: ${td.database}
  result_settings:
    type: klaviyo
    api_token: API_KEY
    operation: mirror
    list_identify_type: name
    list_value: Workflow mirror
    skip_invalid_records: true
    max_removals: 50%

+events_task:
  td>: events.sql
  database: ${td.database}
  result_settings:
    type: klaviyo
    api_token: API_KEY
    operation: track_events
    backfill_older_than: 7d
"""


def test_workflow_and_schedule_shapes(world, capsys, monkeypatch):
    url, wh_path, tmp = world
    monkeypatch.setenv("KLAVIYO_BASE_URL", url)
    (tmp / "wf.dig").write_text(DIG.replace("API_KEY", DEFAULT_API_KEY))
    (tmp / "export_data.sql").write_text("SELECT email FROM people WHERE email < 'p3'\n")
    (tmp / "events.sql").write_text("SELECT email, metric_name, time FROM orders\n")
    code, out, err = _cli(tmp, wh_path, "workflow", "run", str(tmp / "wf.dig"), capsys=capsys)
    assert code == 0, err
    with open_warehouse(wh_path) as wh:
        runs = {r.job: r for r in wh.state.runs()}
    assert runs["wf+mirror_task"].status == "success" and runs["wf+events_task"].status == "success"
    assert runs["wf+events_task"].counts.get("submitted") == 12
    settings = _file(
        tmp,
        "sched",
        {
            "type": "klaviyo",
            "api_token": DEFAULT_API_KEY,
            "base_url": url,
            "operation": "mirror",
            "list_identify_type": "name",
            "list_value": "Workflow mirror",
            "max_removals": "100%",
            "skip_invalid_records": True,
        },
    )
    code, out, err = _cli(
        tmp,
        wh_path,
        "sched:create",
        "nightly_mirror",
        "0 3 * * *",
        "-d",
        "crm",
        "--result-settings",
        settings,
        "SELECT email FROM people WHERE email < 'p2'",
        capsys=capsys,
    )
    assert code == 0, err
    code, out, err = _cli(tmp, wh_path, "sched:run", "nightly_mirror", capsys=capsys)
    assert code == 0, err
    assert "success" in out
    with open_warehouse(wh_path) as wh:
        run = wh.state.runs()[0]
    assert run.status == "success" and run.counts.get("accepted", 0) >= 1
