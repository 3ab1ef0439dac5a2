"""``operation: upsert`` and ``operation: track_events`` against the emulator: happy paths, every row
accounted, validation errors naming row and column, unique_id keeping re-runs from double-counting,
backfill for old events (and its refusal with a revision that lacks it), settings checks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.errors import ConfigError, ExportError, ExportFailed
from klaviyo_bridge.store.factory import open_warehouse

from .helpers import export, make_app, outcomes, settings

HEADERS = {"Authorization": "Klaviyo-API-Key pk_emulator_demo_key", "revision": "2026-07-15"}


@pytest.fixture
def wh(tmp_path):
    with open_warehouse(tmp_path / "wh.duckdb") as w:
        yield w


async def _get(app, path, **params):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e", headers=HEADERS) as c:
        return (await c.get(path, params=params)).json()


async def _events(app, metric):
    metrics = (await _get(app, "/api/metrics"))["data"]
    ids = [m["id"] for m in metrics if m["attributes"]["name"] == metric]
    if not ids:
        return []
    out, doc = [], await _get(app, "/api/events", **{"filter": f'equals(metric_id,"{ids[0]}")', "page[size]": "1000"})
    out += doc["data"]
    assert not doc["links"].get("next")
    return out


UPSERT_ROWS = pa.table(
    {
        "email": ["ann@example.com", "bad@", "bob@example.com", None],
        "first_name": ["Ann", "X", "Bob", "Nobody"],
        "plan": ["gold", None, "silver", None],
    }
)


@pytest.mark.parametrize("wait", [True, False])
async def test_upsert_creates_profiles_in_no_list(wh, wait):
    app = make_app()
    before = app.state.emulator.snapshot()["list_members"]
    s = settings(operation="upsert", skip_invalid_records=True, wait_for_completion=wait)
    result = await export(wh, UPSERT_ROWS, s, app)
    rows, outs, reasons = outcomes(wh, result.run_id)
    good = "accepted" if wait else "submitted"
    assert rows == [0, 1, 2, 3] and outs == [good, "skipped", good, "skipped"]
    assert "not a valid email" in reasons[1] and "no identifier" in reasons[3]
    assert result.list_id is None and result.status == "success" and result.exit_code == 0
    assert app.state.emulator.snapshot()["list_members"] == before, "upsert touches no list"
    doc = (await _get(app, "/api/profiles", filter="equals(email,'ann@example.com')"))["data"][0]
    assert doc["attributes"]["first_name"] == "Ann" and doc["attributes"]["properties"] == {"plan": "gold"}


async def test_upsert_strict_mode_names_the_row(wh):
    app = make_app()
    with pytest.raises(ExportError) as err:
        await export(wh, UPSERT_ROWS, settings(operation="upsert"), app)
    assert "row 2" in str(err.value) and "email" in str(err.value)


def test_upsert_and_events_take_no_list():
    for op in ("upsert", "track_events"):
        with pytest.raises(ConfigError, match="writes to no list"):
            settings(operation=op, list_value="abc")


#: A fixed instant for both sides: the exporter's wall clock (export(wall=)) and the emulator's account clock.
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def make_events_app():
    return make_app(clock="fixed:2026-12-01T12:00:00Z")


async def export_events(wh, table, s, app, **kw):
    return await export(wh, table, s, app, wall=lambda: NOW, **kw)


def _events_table(**extra):
    data = {
        "metric_name": ["Renewed Plan", "Renewed Plan", "", "Renewed Plan", "Renewed Plan", "Renewed Plan"],
        "email": ["ann@example.com", "bob@example.com", "cy@example.com", None, "dee@example.com", "eve@example.com"],
        "time": [
            (NOW - timedelta(hours=1)).isoformat(),
            (NOW - timedelta(days=400)).isoformat(),
            NOW.isoformat(),
            NOW.isoformat(),
            "yesterday",
            (NOW - timedelta(minutes=5)).isoformat(),
        ],
        "value": [9.5, 20, 1, 1, 1, float("nan")],
        "plan": ["gold", "silver", None, None, None, None],
    }
    data.update(extra)
    return pa.table(data)


async def test_track_events_happy_path_accounting_and_reasons(wh):
    app = make_events_app()
    s = settings(operation="track_events", skip_invalid_records=True)
    result = await export_events(wh, _events_table(), s, app)
    rows, outs, reasons = outcomes(wh, result.run_id)
    assert rows == list(range(6))
    assert outs == ["submitted", "submitted", "skipped", "skipped", "skipped", "skipped"]
    assert "metric_name is empty" in reasons[2]
    assert "no profile identifier" in reasons[3]
    assert "column 'time'" in reasons[4] and "'yesterday'" in reasons[4]
    assert "column 'value'" in reasons[5] and "NaN" in reasons[5]
    assert result.status == "success" and result.exit_code == 0
    events = await _events(app, "Renewed Plan")
    assert len(events) == 2
    by_plan = {e["attributes"]["event_properties"]["plan"]: e for e in events}
    assert by_plan["gold"]["attributes"]["event_properties"]["$value"] == 9.5
    # the 400-day-old event went as a backfill (no flows), the recent one did not
    assert app.state.emulator.account.events.written_backfill == [False, True]
    rows_by = {r: ident for r, ident in wh.state.export_identifiers(result.run_id).items()}
    assert rows_by[0] == "email:ann@example.com"


async def test_track_events_rerun_does_not_double_count(wh):
    app = make_events_app()
    table = _events_table().slice(0, 2)
    s = settings(operation="track_events")
    await export_events(wh, table, s, app)
    await export_events(wh, table, s, app)  # the same rows again: the row hash is the unique_id
    assert len(await _events(app, "Renewed Plan")) == 2
    changed = table.set_column(4, "plan", pa.array(["platinum", "silver"]))
    await export_events(wh, changed, s, app)  # a changed row is another event
    assert len(await _events(app, "Renewed Plan")) == 3


async def test_track_events_unique_id_column_and_duplicates_in_input(wh):
    app = make_events_app()
    t = pa.table(
        {
            "metric_name": ["Paid"] * 3,
            "profile_id": [None, None, None],
            "external_id": ["c-1", "c-1", "c-2"],
            "time": [NOW, NOW, NOW],
            "unique_id": ["o1", "o1", "o1"],
        }
    )
    result = await export_events(wh, t, settings(operation="track_events", skip_invalid_records=True), app)
    _, outs, reasons = outcomes(wh, result.run_id)
    assert outs == ["submitted", "skipped", "submitted"]
    assert "duplicate event" in reasons[1]
    assert len(await _events(app, "Paid")) == 2


async def test_track_events_refuses_backfill_with_an_older_revision(wh):
    app = make_events_app()
    s = settings(operation="track_events", revision="2025-10-15", skip_invalid_records=True)
    result = await export_events(wh, _events_table().slice(0, 2), s, app)
    _, outs, reasons = outcomes(wh, result.run_id)
    assert outs == ["submitted", "skipped"]
    assert "backfill" in reasons[1] and "2025-10-15" in reasons[1] and "2026-07-15" in reasons[1]
    never = settings(operation="track_events", revision="2025-10-15", backfill_older_than="never")
    result = await export_events(wh, _events_table().slice(0, 2), never, app)
    assert outcomes(wh, result.run_id)[1] == ["submitted", "submitted"]


async def test_track_events_missing_columns_fail_before_sending(wh):
    app = make_events_app()
    with pytest.raises(ExportError, match="needs a column time"):
        await export_events(wh, pa.table({"metric_name": ["x"], "email": ["a@b.co"]}), settings(operation="track_events"), app)
    with pytest.raises(ExportError, match="profile identifier"):
        await export_events(wh, pa.table({"metric_name": ["x"], "time": [NOW]}), settings(operation="track_events"), app)


async def test_track_events_all_rows_refused_by_klaviyo_is_an_error(wh):
    app = make_events_app()
    # a time past 2100: valid for us as ISO, but Klaviyo refuses more than a year ahead -> we refuse first
    t = pa.table({"metric_name": ["x"], "email": ["a@b.co"], "time": ["2199-01-01T00:00:00Z"]})
    with pytest.raises(ExportError, match="more than a year in the future"):
        await export_events(wh, t, settings(operation="track_events"), app)
    with pytest.raises(ExportFailed, match="none of the 1 row"):
        await export_events(wh, t, settings(operation="track_events", skip_invalid_records=True), app)


def test_backfill_setting_is_checked():
    with pytest.raises(ConfigError, match="backfill_older_than"):
        settings(operation="track_events", backfill_older_than="soon")
    assert settings(operation="track_events", backfill_older_than="7d").backfill_after_seconds == 7 * 86400
