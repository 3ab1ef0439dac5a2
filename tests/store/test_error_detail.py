"""The job record's error as data, on DuckDB and PostgreSQL: ``error_detail`` as written, and a
record holding only text (written before ``error_detail`` existed, or ended with a sentence)
read back as data too."""

from __future__ import annotations

import uuid


def test_a_record_with_only_text_reads_back_as_data(wh):
    ids = [f"legacy-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for run_id in ids:
        wh.state.begin_job(run_id, "connector:old", "import")
    wh.state.end_job(ids[0], "error", error="ConfigError: in.list_id: data_source profiles_in_list needs list_id")
    wh.state.end_job(ids[1], "killed", error="killed by job:kill")
    detail = {"code": "interrupted", "message": "interrupted", "field": None, "row": None, "hint": "run it again"}
    wh.state.end_job(ids[2], "error", error="interrupted: the process running it stopped", error_detail=detail)
    old, killed, stored = (wh.state.job(r) for r in ids)
    assert old.error_detail["code"] == "config" and old.error_detail["message"].endswith("needs list_id")
    assert old.error_detail["field"] is None  # not guessed from the text
    assert killed.error_detail["code"] == "killed"
    assert stored.error_detail == detail
    assert [j.error_detail for j in wh.state.jobs(limit=1000) if j.run_id == ids[2]] == [detail]
