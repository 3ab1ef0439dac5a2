"""Fast in-process tests of every page and form (httpx.ASGITransport, emulator on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import csv
import io
import re

import pytest
from starlette.routing import Route

from klaviyo_bridge.cli import main as cli_main
from klaviyo_bridge.console import ConsoleConfig, check_bind, create_app
from klaviyo_bridge.errors import ConfigError

from .conftest import API_KEY, ConsoleClient, SignedIn

PAGES = ["/authentications", "/sources", "/sources/new", "/exports", "/schedules", "/jobs"]


async def _auth(client: ConsoleClient, name: str = "emu") -> None:
    r = await client.submit("/authentications", {"name": name, "api_key": API_KEY})
    assert r.status_code == 303, r.text


async def _wait_job(client: ConsoleClient, run_id: str, timeout: float = 30) -> dict:
    for _ in range(int(timeout / 0.1)):
        p = (await client.get(f"/jobs/{run_id}/progress.json")).json()
        if p["done"]:
            return p
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {run_id} did not end: {p}")


def _run_id(response) -> str:
    m = re.match(r"/jobs/([0-9a-f]{32})", response.headers["location"])
    assert m, response.headers.get("location")
    return m.group(1)


SOURCE = {
    "name": "profiles_src",
    "connection": "emu",
    "data_source": "profiles",
    "database": "klaviyo",
    "table": "profiles",
    "mode": "merge",
    "timezone": "UTC",
    "preset": "@daily",
    "schedule_timezone": "Asia/Tokyo",
    "delay": "60",
}


async def test_every_page_renders_with_security_headers(client):
    for path in [*PAGES, "/api/cron/next?cron=@daily"]:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        if path in PAGES:
            assert "<script>" not in r.text and " style=" not in r.text and "onclick" not in r.text
    assert (await client.get("/static/console.js")).status_code == 200
    assert (await client.get("/static/console.css")).status_code == 200


async def test_every_form_post_requires_the_csrf_token(app, client):
    await client.page("/authentications")
    posts = [
        r.path.replace("{name}", "x").replace("{run_id}", "0" * 32)
        for r in app.routes
        if isinstance(r, Route) and "POST" in (r.methods or ())
    ]
    assert len(posts) >= 12
    for path in posts:
        r = await client.post(path, data={"name": "x", "api_key": API_KEY})
        assert r.status_code == 403, path
        r = await client.post(path, data={"csrf_token": "forged" * 8})
        assert r.status_code == 403, path
    # the right token from another site is refused too
    r = await client.post(
        "/authentications",
        data={"csrf_token": client.csrf, "name": "a", "api_key": API_KEY},
        headers={"origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert "emu" not in (await client.get("/authentications")).text


async def test_key_entered_once_then_only_masked(client, home):
    await client.page("/authentications")
    await _auth(client)
    r = await client.get("/authentications", follow_redirects=True)
    assert "emu" in r.text and "pk_…" in r.text
    # a rejected form does not echo the key either
    bad = await client.submit("/authentications", {"name": "bad name!", "api_key": API_KEY})
    assert bad.status_code == 400 and "field-error" in bad.text
    test = await client.submit("/authentications/emu/test", {}, follow_redirects=True)
    assert "succeeded" in test.text
    pages = [bad, test] + [await client.get(p) for p in PAGES]
    for r in pages:
        assert API_KEY not in r.text
    assert home.credentials.stat().st_mode & 0o077 == 0


async def test_test_connection_reports_a_rejected_key_without_it(client):
    await client.page("/authentications")
    wrong = "pk_wrong_key_0123456789abcdef"
    assert (await client.submit("/authentications", {"name": "wrong", "api_key": wrong})).status_code == 303
    r = await client.submit("/authentications/wrong/test", {}, follow_redirects=True)
    assert "failed" in r.text and wrong not in r.text
    r = await client.submit("/authentications/wrong/delete", {}, follow_redirects=True)
    assert "Deleted" in r.text and 'data-name="wrong"' not in r.text


def test_non_loopback_bind_needs_a_token(home, monkeypatch):
    with pytest.raises(ConfigError):
        create_app(ConsoleConfig(home=home, host="0.0.0.0"))
    with pytest.raises(ConfigError):
        check_bind("192.168.1.10", "short")
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", "x" * 20)
    monkeypatch.delenv("KLAVIYO_BRIDGE_CONSOLE_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exc:
        cli_main(["--home", str(home.root), "console", "--host", "0.0.0.0", "--port", "0"])
    assert exc.value.code == 2


async def test_token_gate_and_host_check(home):
    import httpx

    token = "t0ken-for-the-console-tests"
    app = create_app(ConsoleConfig(home=home, host="0.0.0.0", token=token))
    async with ConsoleClient(transport=httpx.ASGITransport(app=app), base_url="http://10.0.0.5:8787") as c:
        r = await c.get("/jobs")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fjobs"
        assert (await c.get("/jobs/x/progress.json")).status_code == 401
        assert (await c.get("/jobs", headers={"authorization": f"Bearer {token}"})).status_code == 200
        await c.page("/login")
        assert (await c.submit("/login", {"token": "wrong"})).status_code == 403
        assert (await c.submit("/login", {"token": token})).status_code == 303
        assert (await c.get("/jobs")).status_code == 200
        assert (await c.get("/jobs", headers={"host": "console.example.com"})).status_code == 200  # not loopback-bound
    loopback = create_app(ConsoleConfig(home=home))
    async with SignedIn(loopback) as c:
        assert (await c.get("/jobs", headers={"host": "attacker.example"})).status_code == 421
        assert (await c.get("/jobs", headers={"host": "localhost:8787"})).status_code == 200


async def test_source_wizard_validation_messages_next_to_fields(client):
    await client.page("/sources/new")
    await _auth(client)
    r = await client.submit(
        "/sources/new",
        {
            **SOURCE,
            "data_source": "profiles_in_list",
            "timezone": "PST",
            "preset": "custom",
            "cron": "61 * * * *",
            "action": "save",
        },
    )
    assert r.status_code == 400
    for field in ("list_id", "timezone", "cron"):
        assert f'id="error-{field}"' in r.text, field
    assert "PST" in r.text and "minute" in r.text.lower()
    r = await client.submit("/sources/new", {**SOURCE, "connection": "", "name": "", "action": "save"})
    assert 'id="error-connection"' in r.text and 'id="error-name"' in r.text


async def test_source_preview_save_and_run(client):
    await client.page("/sources/new")
    await _auth(client)
    r = await client.submit("/sources/new", {**SOURCE, "action": "preview"})
    assert r.status_code == 200, r.text
    assert 'id="preview"' in r.text and r.text.count("<tr>") >= 10 and "email" in r.text
    r = await client.submit("/sources/new", {**SOURCE, "action": "runs"})
    assert r.text.count("<time ") == 5 and "JST" in r.text
    r = await client.submit("/sources/new", {**SOURCE, "action": "save_run"})
    assert r.status_code == 303
    run_id = _run_id(r)
    p = await _wait_job(client, run_id)
    assert p["status"] == "success" and p["rows"] == 300, p
    job = await client.get(f"/jobs/{run_id}")
    assert "success" in job.text and 'id="runs-chart"' in job.text
    assert "profiles_src" in (await client.get("/sources")).text
    jobs = await client.get("/jobs?kind=import")
    assert run_id[:10] in jobs.text


async def test_export_query_dry_run_run_and_rows(client):
    await client.page("/sources/new")
    await _auth(client)
    r = await client.submit("/sources/new", {**SOURCE, "action": "save_run"})
    await _wait_job(client, _run_id(r))
    base = {
        "connection": "emu",
        "database": "klaviyo",
        "operation": "add",
        "list_identify_type": "name",
        "list_value": "Console export",
        "skip_invalid_records": "on",
        "wait_for_completion": "on",
        "waiting_time_for_completion_millis": "300000",
        "sql": "SELECT 'not-an-email' AS email, 'x' AS first_name UNION ALL SELECT NULL, 'y' "
        "UNION ALL (SELECT email, first_name FROM profiles ORDER BY email LIMIT 48)",
    }
    r = await client.submit("/exports", {**base, "action": "query"})
    assert r.status_code == 200 and 'id="query-result"' in r.text
    r = await client.submit("/exports", {**base, "action": "dry_run"})
    assert r.status_code == 200, r.text
    total = int(re.search(r'id="dry-total">(\d+)<', r.text).group(1))
    invalid = int(re.search(r'id="dry-invalid">(\d+)<', r.text).group(1))
    assert total == 50 and invalid >= 1 and 'id="dry-invalid-rows"' in r.text
    r = await client.submit("/exports", {**base, "operation": "add", "list_value": "", "action": "dry_run"})
    assert r.status_code == 400 and "list_value" in r.text
    r = await client.submit("/exports", {**base, "action": "run"})
    run_id = _run_id(r)
    p = await _wait_job(client, run_id)
    assert p["status"] == "success", p
    page = await client.get(f"/jobs/{run_id}")
    assert 'id="row-results"' in page.text and "accepted" in page.text
    skipped = await client.get(f"/jobs/{run_id}?outcome=skipped")
    assert "outcome-skipped" in skipped.text and "outcome-accepted" not in skipped.text
    rows = list(csv.DictReader(io.StringIO((await client.get(f"/jobs/{run_id}/rows.csv")).text)))
    assert len(rows) == 50 and {r["outcome"] for r in rows} >= {"accepted", "skipped"}
    only = list(csv.DictReader(io.StringIO((await client.get(f"/jobs/{run_id}/rows.csv?outcome=skipped")).text)))
    assert only and all(r["outcome"] == "skipped" for r in only)


async def test_schedules_enable_disable_run_and_next_runs(client):
    await client.page("/sources/new")
    await _auth(client)
    assert (
        await client.submit(
            "/sources/new",
            {**SOURCE, "name": "lists_src", "data_source": "lists", "table": "lists", "mode": "replace", "action": "save"},
        )
    ).status_code == 303
    page = await client.get("/schedules/lists_src")
    assert page.text.count("<time ") >= 5 and "Asia/Tokyo" in page.text
    r = await client.submit("/schedules/lists_src/disable", {}, follow_redirects=True)
    assert "disabled: disabled by hand" in r.text
    r = await client.submit("/schedules/lists_src/enable", {}, follow_redirects=True)
    assert "enabled" in r.text
    r = await client.submit(
        "/schedules/lists_src/update",
        {"preset": "custom", "cron": "0 */5 * * *", "schedule_timezone": "Europe/Paris", "delay": "0"},
        follow_redirects=True,
    )
    assert "0 */5 * * *" in r.text and "Europe/Paris" in r.text
    r = await client.submit("/schedules/lists_src/run", {})
    run_id = _run_id(r)
    assert (await _wait_job(client, run_id))["status"] == "success"
    detail = await client.get("/schedules/lists_src")
    assert 'id="runs-chart"' in detail.text and run_id[:10] in detail.text
    data = (await client.get("/api/cron/next", params={"cron": "0 0 */5 * *", "timezone": "Europe/Paris"})).json()
    assert len(data["runs"]) == 5
    bad = (await client.get("/api/cron/next", params={"cron": "* *", "timezone": "PST"})).json()
    assert bad["error"] and "cron" in bad["fields"] and "schedule_timezone" in bad["fields"]


async def test_long_job_shows_progress_and_can_be_cancelled(home):

    from klaviyo_emulator.server import running_emulator
    from klaviyo_emulator.settings import EmulatorSettings

    with running_emulator(EmulatorSettings(profiles=300, events=2000, rate_limits=False, latency_ms=1500)) as slow:
        app = create_app(ConsoleConfig(home=home, base_url=slow))
        async with app.router.lifespan_context(app):
            async with SignedIn(app) as client:
                await client.page("/sources/new")
                await _auth(client)
                r = await client.submit(
                    "/sources/new",
                    {
                        **SOURCE,
                        "name": "slow_events",
                        "data_source": "events",
                        "table": "events",
                        "mode": "append",
                        "action": "save_run",
                    },
                )
                run_id = _run_id(r)
                for _ in range(100):
                    p = (await client.get(f"/jobs/{run_id}/progress.json")).json()
                    if p["status"] == "running":
                        break
                    await asyncio.sleep(0.05)
                assert p["status"] == "running" and not p["done"]
                page = await client.get(f"/jobs/{run_id}")
                assert 'id="job-live"' in page.text and 'id="cancel-job"' in page.text
                r = await client.submit(f"/jobs/{run_id}/cancel", {}, follow_redirects=True)
                assert "Cancel requested" in r.text
                p = await _wait_job(client, run_id, timeout=20)
                assert p["status"] == "killed", p["error"]


async def test_source_wizard_late_events_metrics_memberships_and_deletions(client):
    """The wizard shows and passes the new settings; the library's messages land next to them."""
    page = await client.page("/sources/new")
    for field in ("metrics", "lookback", "detect_deleted"):
        assert f'name="{field}"' in page.text, field
    await _auth(client)
    r = await client.submit(
        "/sources/new",
        {**SOURCE, "name": "ev", "data_source": "events", "lookback": "3 weeks", "metrics": "Placed Ordr", "action": "save"},
    )
    assert r.status_code == 400 and 'id="error-lookback"' in r.text and "12h" in r.text
    r = await client.submit(
        "/sources/new",
        {**SOURCE, "name": "ev", "data_source": "events", "lookback": "12h", "metrics": "Placed Ordr", "action": "preview"},
    )
    assert "did you mean" in r.text and "Placed Order" in r.text  # resolved against the account
    r = await client.submit(
        "/sources/new",
        {
            **SOURCE,
            "name": "ev",
            "data_source": "events",
            "lookback": "12h",
            "metrics": "Opened Email, Clicked Email",
            "action": "preview",
        },
    )
    assert r.status_code == 200 and 'id="preview"' in r.text and "Opened Email" in r.text
    r = await client.submit("/sources/new", {**SOURCE, "name": "pr", "mode": "append", "detect_deleted": "on", "action": "save"})
    assert r.status_code == 400 and "needs out.mode: merge" in r.text
    r = await client.submit(
        "/sources/new", {**SOURCE, "name": "lm", "data_source": "list_memberships", "mode": "append", "action": "preview"}
    )
    assert r.status_code == 200 and 'id="preview"' in r.text and "joined_at" in r.text
