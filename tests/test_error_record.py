"""The job record carries the error as data (code, message, field, row, hint):
a scheduled export that fails on a missing column records that column as the field (the
store half, on both engines, is tests/store/test_error_detail.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

EMU = EmulatorSettings(seed=18, profiles=10, events=5, lists=1, segments=0, rate_limits=False)


def _cli(tmp: Path, wh: str, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["--home", str(tmp / "home"), *args, "--warehouse", wh])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_failed_scheduled_export_records_its_error_as_data(tmp_path, capsys, monkeypatch):
    wh = str(tmp_path / "wh.duckdb")
    with running_emulator(EMU) as url:
        monkeypatch.setenv("KLAVIYO_BASE_URL", url)
        settings = tmp_path / "events.json"
        settings.write_text(json.dumps({"type": "klaviyo", "api_token": DEFAULT_API_KEY, "operation": "track_events"}))
        settings.chmod(0o600)
        sql = "SELECT 'ann@example.com' AS email, 'Placed Order' AS metric_name"  # no column time
        code, _, err = _cli(
            tmp_path, wh, "sched:create", "events", "@daily", "-d", "main", "--result-settings", str(settings), sql, capsys=capsys
        )
        assert code == 0, err
        code, _, err = _cli(tmp_path, wh, "sched:run", "events", capsys=capsys)
    assert code == 1 and "needs a column time" in err
    with open_warehouse(wh) as w:
        job = w.state.jobs(schedule="events")[0]
    assert job.status == "error" and job.error_detail is not None
    assert (job.error_detail["code"], job.error_detail["field"]) == ("export", "time")
    assert "operation 'track_events' needs a column time" in job.error_detail["message"]
    assert DEFAULT_API_KEY not in json.dumps(job.error_detail)
    code, out, _ = _cli(tmp_path, wh, "job:show", job.run_id, capsys=capsys)
    assert code == 0 and "Error code     : export" in out and "Error field    : time" in out
