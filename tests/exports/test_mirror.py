"""``operation: mirror`` against the emulator: the list ends equal to the query result, every row
accounted (added / already member / removed / rejected), removals are list removals (consent
unchanged), safety (max_removals as a count and a share, empty result, dry run), changes made in
Klaviyo between runs seen (with and without the snapshot's shortcut), a crash then --resume."""

from __future__ import annotations

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.errors import ConfigError, ExportError
from klaviyo_bridge.exports.job import report_lines
from klaviyo_bridge.exports.runner import run_export
from klaviyo_bridge.store.factory import open_warehouse

from .helpers import export, make_app, no_sleep, outcomes, settings

HEADERS = {
    "Authorization": "Klaviyo-API-Key pk_emulator_demo_key",
    "revision": "2026-07-15",
    "content-type": "application/vnd.api+json",
}


@pytest.fixture
def wh(tmp_path):
    with open_warehouse(tmp_path / "wh.duckdb") as w:
        yield w


def _setup(n_members=40, **emu):
    """An app and a fresh list (by id) holding ``n_members`` of the account's profiles."""
    app = make_app(**emu)
    e = app.state.emulator
    rec = e.account.records["list"][1]
    list_id = rec.id
    state = e.state
    current = e.snapshot()["list_members"].get(list_id, [])
    import numpy as np

    state.remove_members(list_id, np.array([state.row_for_id(p) for p in current], dtype=np.int64), e.now())
    state.add_members(list_id, np.arange(n_members, dtype=np.int64), e.now())
    return app, list_id


def _members(app, list_id):
    return set(app.state.emulator.snapshot()["list_members"].get(list_id, []))


def _email(app, pid):
    state = app.state.emulator.state
    return state.current_identifiers(state.row_for_id(pid))["email"]


def _member_emails(app, list_id):
    return {_email(app, pid) for pid in _members(app, list_id)}


def _consent(app):
    return app.state.emulator.snapshot().get("consent")


def _mirror(list_id, **keys):
    return settings(operation="mirror", list_value=list_id, skip_invalid_records=True, wait_for_completion=True, **keys)


async def test_mirror_makes_the_list_equal_the_result_and_accounts_every_row(wh):
    app, list_id = _setup(40)
    emails = sorted(_member_emails(app, list_id))
    stay, leave = emails[:37], emails[37:]
    new = ["new1@example.com", "new2@example.com"]
    rows = pa.table({"email": stay + new + ["broken@"], "first_name": ["x"] * 37 + ["N1", "N2", "B"]})
    consent_before = _consent(app)
    result = await export(wh, rows, _mirror(list_id), app)
    assert _member_emails(app, list_id) == set(stay + new)
    idx, outs, reasons = outcomes(wh, result.run_id)
    assert idx == list(range(40 + 3)), "input rows, then the departed members, each with one outcome"
    assert outs[:37] == ["skipped"] * 37 and all("already a member" in r for r in reasons[:37])
    assert outs[37:39] == ["accepted", "accepted"]
    assert outs[39] == "skipped" and "email" in reasons[39]
    assert outs[40:] == ["accepted"] * 3 and all("removed from the list" in r for r in reasons[40:])
    ids = wh.state.export_identifiers(result.run_id)
    assert {ids[i] for i in range(40, 43)} == {f"email:{e}" for e in leave}
    assert _consent(app) == consent_before, "a list removal never changes consent"
    assert result.status == "success" and result.exit_code == 0
    text = "\n".join(report_lines(result, _mirror(list_id)))
    assert "2 added, 37 already members, 3 removed, 0 rejected" in text


async def test_max_removals_count_and_share_stop_before_anything_is_sent(wh):
    app, list_id = _setup(40)
    emails = sorted(_member_emails(app, list_id))
    rows = pa.table({"email": emails[:30] + ["fresh@example.com"]})  # 10 of 40 would go (25%)
    before = _members(app, list_id)
    for limit in (9, "20%"):
        with pytest.raises(ExportError) as err:
            await export(wh, rows, _mirror(list_id, max_removals=limit), app)
        msg = str(err.value)
        assert "remove 10 of the 40 members" in msg and "25.0%" in msg and "nothing was sent" in msg
        assert _members(app, list_id) == before
    assert wh.state.runs()[0].status == "error"
    with pytest.raises(ExportError, match=r"more than max_removals 10% \(4\)"):
        await export(wh, rows, _mirror(list_id), app)  # the default: 10% of the list
    result = await export(wh, rows, _mirror(list_id, max_removals="25%"), app)
    assert len(_members(app, list_id)) == 31 and result.status == "success"


def test_max_removals_form_is_checked():
    for bad in ("ten", "150%", -1):
        with pytest.raises(ConfigError, match="max_removals"):
            settings(operation="mirror", list_value="X", max_removals=bad)


async def test_an_empty_result_never_empties_a_list_unless_allowed(wh):
    app, list_id = _setup(12)
    empty = pa.table({"email": pa.array([], pa.string())})
    with pytest.raises(ExportError, match="returned no rows: mirror would remove all 12 members"):
        await export(wh, empty, _mirror(list_id), app)
    assert len(_members(app, list_id)) == 12
    await export(wh, empty, _mirror(list_id, allow_empty=True), app)
    assert _members(app, list_id) == set()


async def test_dry_run_prints_counts_and_samples_and_changes_nothing(wh):
    app, list_id = _setup(20)
    emails = sorted(_member_emails(app, list_id))
    rows = pa.table({"email": emails[:18] + ["dry@example.com"]})
    before = _members(app, list_id)
    result = await export(wh, rows, _mirror(list_id), app, dry_run=True)
    text = "\n".join(report_lines(result, _mirror(list_id)))
    assert "20 members now" in text and "would add 1, 18 already members, would remove 2" in text
    assert "would add: email:dry@example.com" in text
    assert f"would remove: {emails[18]}" in text and f"would remove: {emails[19]}" in text
    assert "would stop" not in text
    assert _members(app, list_id) == before and wh.state.runs() == []
    rows = pa.table({"email": emails[:2]})
    result = await export(wh, rows, _mirror(list_id), app, dry_run=True)
    assert "mirror would stop: mirror would remove 18 of the 20 members" in "\n".join(result.details)


async def _remove_in_klaviyo(app, list_id, pid):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e", headers=HEADERS) as c:
        r = await c.request(
            "DELETE", f"/api/lists/{list_id}/relationships/profiles", json={"data": [{"type": "profile", "id": pid}]}
        )
        assert r.status_code == 204


async def _add_in_klaviyo(app, list_id, pid):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e", headers=HEADERS) as c:
        r = await c.post(f"/api/lists/{list_id}/relationships/profiles", json={"data": [{"type": "profile", "id": pid}]})
        assert r.status_code == 204


async def test_changes_made_in_klaviyo_between_runs_are_seen(wh):
    app, list_id = _setup(30)
    emails = sorted(_member_emails(app, list_id))
    rows = pa.table({"email": emails[:28] + ["n1@example.com"]})
    s = _mirror(list_id)
    first = await export(wh, rows, s, app)
    assert _member_emails(app, list_id) == set(emails[:28] + ["n1@example.com"])
    assert "every member (no snapshot" in "\n".join(first.details)
    # nothing changed in Klaviyo: the snapshot plus new joins is the list (count agrees)
    second = await export(wh, rows, s, app)
    assert "snapshot of run" in "\n".join(second.details)
    assert second.summary.counts == {"skipped": 29}
    # in Klaviyo: a result member leaves, an outsider joins
    by_email = {_email(app, p): p for p in _members(app, list_id)}
    await _remove_in_klaviyo(app, list_id, by_email[emails[0]])
    outsider = app.state.emulator.state.profile_id(150)
    await _add_in_klaviyo(app, list_id, outsider)
    third = await export(wh, rows, s, app)
    assert "every member (the snapshot plus new joins" in "\n".join(third.details)
    assert _member_emails(app, list_id) == set(emails[:28] + ["n1@example.com"])
    _, outs, _ = outcomes(wh, third.run_id)
    assert outs.count("accepted") == 2  # the one who left is added back, the outsider removed
    # only an outsider joins: the snapshot shortcut still sees it (it joined after the snapshot)
    await _add_in_klaviyo(app, list_id, app.state.emulator.state.profile_id(151))
    fourth = await export(wh, rows, s, app)
    assert "snapshot of run" in "\n".join(fourth.details)
    assert _member_emails(app, list_id) == set(emails[:28] + ["n1@example.com"])


class Killed(BaseException):
    """Stands in for kill -9: nothing after it runs."""


class DieOnRemoval(httpx.AsyncBaseTransport):
    def __init__(self, app, die_on: int | None) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.removals = 0
        self.die_on = die_on

    async def handle_async_request(self, request):
        if request.method == "DELETE" and request.url.path.endswith("/relationships/profiles"):
            self.removals += 1
            if self.removals == self.die_on:
                await self.inner.handle_async_request(request)  # applied, answer lost
                raise Killed()
        return await self.inner.handle_async_request(request)


async def test_crash_during_removals_then_resume_removes_no_one_who_stays(wh):
    app, list_id = _setup(3000, profiles=3500)
    emails = sorted(_member_emails(app, list_id))
    keep = emails[:1800]
    rows = pa.table({"email": keep + [f"n{i}@example.com" for i in range(50)]})
    s = _mirror(list_id, max_removals=1200, concurrency=1)
    crashing = DieOnRemoval(app, die_on=2)  # the second removal request (of 1,000 + 200) applied, answer lost
    with pytest.raises(Killed):
        await run_export(wh, rows, s, transport=crashing, sleep=no_sleep, run_id="m-1")
    assert len(_members(app, list_id)) == 1850
    again = DieOnRemoval(app, die_on=None)
    result = await run_export(wh, rows, s, transport=again, sleep=no_sleep, run_id="m-1", resume=True)
    assert _member_emails(app, list_id) == set(keep) | {f"n{i}@example.com" for i in range(50)}
    idx, outs, _ = outcomes(wh, "m-1")
    assert idx == list(range(1850 + 1200)), "every row once, the removals as planned by the first attempt"
    assert result.status == "success"
    assert again.removals == 1, "only the removal batch that was in flight is sent again"


class CountingPosts(httpx.AsyncBaseTransport):
    def __init__(self, app) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.imports = 0

    async def handle_async_request(self, request):
        if request.method == "POST" and request.url.path.endswith("/profile-bulk-import-jobs"):
            self.imports += 1
        return await self.inner.handle_async_request(request)


async def test_new_rows_spread_over_the_input_fill_whole_requests(wh):
    app, list_id = _setup(24_000, profiles=25_000)
    emails = sorted(_member_emails(app, list_id))
    rows = []
    for i, e in enumerate(emails):  # 240 new rows spread over 3 input chunks
        rows.append(e)
        if i % 100 == 0:
            rows.append(f"spread{i}@example.com")
    transport = CountingPosts(app)
    result = await run_export(wh, pa.table({"email": rows}), _mirror(list_id), transport=transport, sleep=no_sleep)
    assert transport.imports == 1, "the 240 new rows went in one bulk import, not one per chunk"
    assert result.summary.counts == {"accepted": 240, "skipped": 24_000}
    assert len(_members(app, list_id)) == 24_240
