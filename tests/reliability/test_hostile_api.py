"""Hostile API answers (part of the hostile corpus): pages without ``data``, records without
``id``, ``next`` links that loop, HTML or lists with status 200, cut-off bodies, huge pages,
5xx and 429 storms.

Each case runs the real import (``run_import``) or export (``run_export``) against the emulator
(in-process HTTP, ``httpx.ASGITransport``) behind ``HostileApp`` or the emulator's own
``faults``, inside ``asyncio.wait_for`` (a loop that never ends fails the case instead of hanging
the suite), and checks: a clear error naming the operation and page (or the correct rows), the
run recorded as ``error`` with nothing committed, and every table and cursor written before the
run still as it was. Exports also check that nothing was sent."""

from __future__ import annotations

import asyncio

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.config import parse_import_config
from klaviyo_bridge.errors import ApiError, BridgeError, ExportError, MalformedResponse, RetriesExhausted
from klaviyo_bridge.exports.runner import run_export
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.imports import runner
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from . import hostile_api as h
from .helpers import FIGURES, fast_client_class, rows_of

BASE = "http://emulator.test"
DATA = dict(
    seed=5,
    profiles=250,
    events=300,
    lists=4,
    segments=1,
    campaigns=0,
    templates=1,
    flows=1,
    rate_limits=False,
    job_profiles_per_second=1e9,
)
#: Every case ends within this many seconds or fails (retries are compressed, nothing waits for real).
CASE_TIMEOUT = 30


def remember(target: dict):
    def how(doc, url):
        target["url"] = url
        return doc

    return how


def _cycle():
    target: dict = {}
    return [h.Spoil("get_profiles", remember(target), 1), h.Spoil("get_profiles", h.next_to(target), 3)]


MALFORMED = MalformedResponse
# id -> (data_source, spoils or a faults spec, expected exception, fragments of its message)
IMPORT_CASES = {
    "page1_without_data": (
        "profiles",
        [h.Spoil("get_profiles", h.drop_data, 1)],
        MALFORMED,
        ["get_profiles, page 1", "no 'data' array", "/api/profiles"],
    ),
    "page2_without_data": (
        "profiles",
        [h.Spoil("get_profiles", h.drop_data, 2)],
        MALFORMED,
        ["get_profiles, page 2", "no 'data' array", "page%5Bcursor%5D"],
    ),
    "data_null": ("profiles", [h.Spoil("get_profiles", h.data_null, 3)], MALFORMED, ["page 3", "'data' is a JSON null"]),
    "data_object": ("profiles", [h.Spoil("get_profiles", h.data_object, 1)], MALFORMED, ["'data' is a JSON dict"]),
    "record_without_id": (
        "profiles",
        [h.Spoil("get_profiles", h.drop_id(0), 1)],
        MALFORMED,
        ["page 1", "record 1 of the page has no 'id'"],
    ),
    "record_6_without_id_page2": (
        "profiles",
        [h.Spoil("get_profiles", h.drop_id(5), 2)],
        MALFORMED,
        ["page 2", "record 6 of the page has no 'id'"],
    ),
    "empty_id": ("profiles", [h.Spoil("get_profiles", h.set_id(""), 1)], MALFORMED, ["record 1", "invalid id ''"]),
    "numeric_id": ("profiles", [h.Spoil("get_profiles", h.set_id(12345), 1)], MALFORMED, ["invalid id '12345'"]),
    "null_id": ("profiles", [h.Spoil("get_profiles", h.set_id(None), 2)], MALFORMED, ["page 2", "has no 'id'"]),
    "next_to_itself_page1": (
        "profiles",
        [h.Spoil("get_profiles", h.next_to_itself, 1)],
        MALFORMED,
        ["next link of page", "leads back to a page already read"],
    ),
    "next_to_itself_page3": (
        "profiles",
        [h.Spoil("get_profiles", h.next_to_itself, 3)],
        MALFORMED,
        ["leads back to a page already read"],
    ),
    "cycle_page3_to_page1": ("profiles", _cycle(), MALFORMED, ["next link of page 3", "leads back"]),
    "next_not_a_string": (
        "profiles",
        [h.Spoil("get_profiles", h.next_not_a_string, 1)],
        MALFORMED,
        ["links.next is a JSON dict"],
    ),
    "next_to_another_host": (
        "profiles",
        [h.Spoil("get_profiles", h.next_to_other_host, 1)],
        ApiError,
        ["refusing to follow a link to another host"],
    ),
    "html_with_200": (
        "profiles",
        [h.Spoil("get_profiles", h.html_200)],
        RetriesExhausted,
        ["get_profiles failed after", "not JSON"],
    ),
    "json_list_document": (
        "profiles",
        [h.Spoil("get_profiles", h.json_list, 2)],
        MALFORMED,
        ["page 2", "JSON list, not a JSON:API document"],
    ),
    "truncated_always": ("profiles", [h.Spoil("get_profiles", h.truncated)], RetriesExhausted, ["cut off"]),
    "empty_body_200": ("profiles", [h.Spoil("get_profiles", h.empty_200, 2)], MALFORMED, ["page 2", "no body"]),
    "events_without_data": (
        "events",
        [h.Spoil("get_events", h.drop_data, 1)],
        MALFORMED,
        ["get_events, page 1", "no 'data' array"],
    ),
    "events_record_without_id": (
        "events",
        [h.Spoil("get_events", h.drop_id(3), 1)],
        MALFORMED,
        ["get_events, page 1", "record 4 of the page has no 'id'"],
    ),
    "events_next_to_itself": ("events", [h.Spoil("get_events", h.next_to_itself, 1)], MALFORMED, ["leads back"]),
    "lists_without_data": ("lists", [h.Spoil("get_lists", h.drop_data, 1)], MALFORMED, ["get_lists, page 1"]),
    "lists_next_to_itself": ("lists", [h.Spoil("get_lists", h.next_to_itself, 1)], MALFORMED, ["leads back"]),
    "metrics_record_without_id": ("metrics", [h.Spoil("get_metrics", h.drop_id(0), 1)], MALFORMED, ["get_metrics"]),
    "storm_503_forever": ("profiles", "storm=get_profiles:503:forever", RetriesExhausted, ["get_profiles failed after", "503"]),
    "storm_429_forever": ("profiles", "storm=get_profiles:429:forever", RetriesExhausted, ["get_profiles failed after", "429"]),
    "storm_reset_forever": ("profiles", "storm=get_profiles:reset:forever", RetriesExhausted, ["get_profiles failed after"]),
}

#: Hostile answers that must still import correctly: (data_source, spoils or faults, check(rows table)).
GOOD_CASES = {
    "huge_page_5000_records": (
        "profiles",
        [h.Spoil("get_profiles", h.copies(5000), 1)],
        lambda t: t.num_rows == 5000 and len(set(t.column("id").to_pylist())) == 5000,
    ),
    "two_megabyte_string": (
        "profiles",
        [h.Spoil("get_profiles", h.huge_string, 1)],
        lambda t: max(len(v or "") for v in t.column("first_name").to_pylist()) == 2_000_000,
    ),
    "5xx_and_429_mix": ("profiles", "429=0.3,500=0.1,503=0.1,seed=4", None),
    "truncate_and_reset_mix": ("profiles", "truncate=0.2,reset=0.1,seed=2", None),
}


def _config(source: str):
    # A start time: no extra one-record request for the oldest record, so page N is request N.
    since = {"start_time": "2000-01-01T00:00:00"} if source in ("profiles", "events") else {}
    return parse_import_config(
        {
            "in": {
                "type": "klaviyo",
                "data_source": source,
                "api_token": DEFAULT_API_KEY,
                "base_url": BASE,
                "retry_limit": 3,
                **since,
            },
            "out": {"mode": "merge"},
        }
    )


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(runner, "KlaviyoClient", fast_client_class())


def _app(spoils):
    if isinstance(spoils, str):
        return create_app(EmulatorSettings(**DATA, faults=spoils))
    return h.HostileApp(create_app(EmulatorSettings(**DATA)), *spoils)


def _import(wh, source, app, table=None):
    coro = runner.run_import(
        _config(source), wh, "klaviyo", table or source, transport=httpx.ASGITransport(app=app), concurrency=1, windows=1
    )
    return asyncio.run(asyncio.wait_for(coro, CASE_TIMEOUT))


def _committed(wh, source):
    """What was committed before the hostile run: the table of a clean run, another table, a cursor."""
    return rows_of(wh, "klaviyo", source), rows_of(wh, "klaviyo", "keep"), wh.state.cursor("keep-job")


@pytest.mark.parametrize("case", sorted(IMPORT_CASES))
def test_hostile_answer_fails_the_import_clearly(case, tmp_path, fast):
    source, spoils, expected, fragments = IMPORT_CASES[case]
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        wh.write("klaviyo", "keep", pa.table({"id": ["a", "b"], "v": [1, 2]}), "append", cursors={"keep-job": "2025-01-01"})
        _import(wh, source, create_app(EmulatorSettings(**DATA)))  # a clean run first: committed data
        before = _committed(wh, source)
        with pytest.raises(BridgeError) as info:
            _import(wh, source, _app(spoils))
        err = info.value
        assert isinstance(err, expected), f"{type(err).__name__}: {err}"
        for fragment in fragments:
            assert fragment in str(err), f"{fragment!r} not in {str(err)!r}"
        assert DEFAULT_API_KEY not in str(err) and len(str(err)) < 2000
        assert _committed(wh, source) == before, "committed data changed"
        last = wh.state.runs(f"klaviyo.{source}")[0]
        assert last.status == "error" and "nothing was committed" in last.error and last.rows_written == 0
    FIGURES["hostile API answers"] += 1


@pytest.mark.parametrize("case", sorted(GOOD_CASES))
def test_hostile_answer_still_imports_correctly(case, tmp_path, fast):
    source, spoils, check = GOOD_CASES[case]
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        _import(wh, source, create_app(EmulatorSettings(**DATA)), table="clean")
        result = _import(wh, source, _app(spoils))
        got = wh.table_arrow("klaviyo", source)
        if check is None:
            assert rows_of(wh, "klaviyo", source) == rows_of(wh, "klaviyo", "clean")
        else:
            assert check(got)
        assert result.rows == got.num_rows and wh.state.runs(f"klaviyo.{source}")[0].status == "success"
    FIGURES["hostile API answers"] += 1


# --- exports: the destination and membership reads -------------------------------------------


def _list_of(app, index=0):
    return app.state.emulator.account.records["list"][index]


def _members_and_others(app, list_id, n=5):
    emu = app.state.emulator
    state = emu.state
    member_rows = {state.row_for_id(pid) for pid in emu.snapshot()["list_members"][list_id]}
    members = [state.base.email(r) for r in sorted(member_rows)[:n]]
    others = [state.base.email(r) for r in range(state.base.count) if r not in member_rows][:n]
    return members, others


class Writes(httpx.AsyncBaseTransport):
    def __init__(self, app):
        self.inner, self.writes = httpx.ASGITransport(app=app), 0

    async def handle_async_request(self, request):
        if request.method != "GET":
            self.writes += 1
        return await self.inner.handle_async_request(request)


async def _no_sleep(_):
    await asyncio.sleep(0)


def _by_name(app):
    return {"operation": "add", "list_identify_type": "name", "list_value": _list_of(app).attributes["name"]}


def _unsubscribe(app):
    return {
        "operation": "batch_consent",
        "consent_type": "unsubscribed",
        "subscription_type": "email_marketing_only",
        "list_value": _list_of(app).id,
        "skip_invalid_records": True,
    }


EXPORT_CASES = {
    "list_by_name_page_without_data": (_by_name, [h.Spoil("get_lists", h.drop_data, 1)], ["get_lists, page 1", "no 'data'"]),
    "list_by_name_next_to_itself": (_by_name, [h.Spoil("get_lists", h.next_to_itself, 1)], ["leads back"]),
    "list_by_name_record_without_id": (_by_name, [h.Spoil("get_lists", h.drop_id(0), 1)], ["has no 'id'"]),
    "membership_read_next_to_itself": (
        _unsubscribe,
        [h.Spoil("get_profiles_for_list", h.next_to_itself, 1)],
        ["get_profiles_for_list", "leads back"],
    ),
    "membership_read_without_data": (
        _unsubscribe,
        [h.Spoil("get_profiles_for_list", h.drop_data, 1)],
        ["get_profiles_for_list, page 1", "no 'data'"],
    ),
    "membership_record_without_id": (
        _unsubscribe,
        [h.Spoil("get_profiles_for_list", h.drop_id(0), 1)],
        ["get_profiles_for_list", "has no 'id'"],
    ),
}


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_hostile_answer_stops_the_export_before_anything_is_sent(case, tmp_path):
    make_settings, spoils, fragments = EXPORT_CASES[case]
    inner = create_app(EmulatorSettings(**DATA))
    app = h.HostileApp(inner, *spoils)
    members, others = _members_and_others(inner, _list_of(inner).id)
    table = pa.table({"email": members + others})
    settings = parse_export_settings(
        {"type": "klaviyo", "api_token": DEFAULT_API_KEY, "base_url": BASE, "retry_limit": 1, **make_settings(inner)}
    )
    before = inner.state.emulator.snapshot()
    transport = Writes(app)
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        wh.write("klaviyo", "keep", pa.table({"id": ["a"]}), "append")
        message = None
        try:
            result = asyncio.run(
                asyncio.wait_for(run_export(wh, table, settings, transport=transport, sleep=_no_sleep), CASE_TIMEOUT)
            )
        except (ExportError, ApiError) as exc:
            message = str(exc)
        else:  # a failed check before sending: every row ends not sent, the reason recorded per row
            rows = wh.state.export_rows(run_id=result.run_id).to_pylist()
            assert len(rows) == 10 and all(r["outcome"] not in ("submitted", "accepted") for r in rows)
            assert all("check before sending failed" in r["reason"] for r in rows)
            message = " | ".join(sorted({r["reason"] or "" for r in rows}))
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message[:500]!r}"
        assert rows_of(wh, "klaviyo", "keep") == [("'a'",)]
    assert transport.writes == 0, "something was sent"
    assert inner.state.emulator.snapshot() == before
    FIGURES["hostile API answers"] += 1


def test_the_api_corpus_is_large_enough():
    assert len(IMPORT_CASES) + len(GOOD_CASES) + len(EXPORT_CASES) >= 35
