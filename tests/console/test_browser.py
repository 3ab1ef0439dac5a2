"""End to end in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against
the console on 127.0.0.1 with the emulator behind it: create an authentication, build an import
source with a live preview and run it, build an export from a query (dry run, run), schedule it,
and find both jobs in the history. Screenshots of each page go to artifacts/console/ (not committed).

Without Chromium these tests are skipped with a one-line notice (`apt-get install -y chromium` to run
them), except where ``KLAVIYO_BRIDGE_REQUIRE_BROWSER=1`` says they must run: CI (.ci/run) installs
Chromium and sets it, so there a missing browser fails instead.
Playwright only drives it: `playwright install` (a downloaded browser) is never used.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest

from klaviyo_bridge.console import ConsoleConfig, create_app
from klaviyo_bridge.home import Home
from klaviyo_emulator.server import serving

from .conftest import API_KEY

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"


@contextmanager
def running_console(config: ConsoleConfig):
    """The console over real HTTP on 127.0.0.1: (its URL, its access token)."""
    app = create_app(config)
    with serving(app, lifespan="on", name="console") as url:
        yield url, app.state.console.token


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        notice = f"{CHROMIUM} is missing: browser tests skipped (apt-get install -y chromium to run them; CI installs it)"
        if os.environ.get("KLAVIYO_BRIDGE_REQUIRE_BROWSER") == "1":
            pytest.fail(notice.replace("skipped", "required here"), pytrace=False)
        pytest.skip(notice)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is not installed: pip install -e '.[test]' (it drives /usr/bin/chromium; never run `playwright install`)",
            pytrace=False,
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _wait_for_job_end(page, timeout_ms: int = 30_000) -> str:
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f]{32}"))
    page.wait_for_function(
        "() => { const s = document.querySelector('#job-status');"
        " return s && !document.querySelector('#job-live') && s.textContent.trim() !== 'running'; }",
        timeout=timeout_ms,
    )
    return page.inner_text("#job-status").strip()


def test_console_flows_in_a_real_browser(browser, emulator_url, tmp_path):
    home = Home(tmp_path / "home")
    problems: list[str] = []
    with running_console(ConsoleConfig(home=home, base_url=emulator_url)) as (base, token):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.set_default_timeout(15_000)

        # 0. Log in with the URL the console prints; the token leaves the address bar.
        page.goto(f"{base}/login?token={token}")
        page.wait_for_selector("#nav-sources")
        assert "token" not in page.url

        # 1. Create an authentication; the key is shown masked only; test the connection.
        page.goto(f"{base}/authentications")
        page.fill("#f-name", "emulator")
        page.fill("#f-api_key", API_KEY)
        page.click("#auth-form button[type=submit]")
        page.wait_for_selector("#flash")
        assert "Saved authentication" in page.inner_text("#flash")
        page.click("tr[data-name=emulator] button:has-text('Test connection')")
        page.wait_for_selector("#flash")
        assert "succeeded" in page.inner_text("#flash"), page.inner_text("#flash")
        assert API_KEY not in page.content()
        _shot(page, "01-authentications")

        # 2. New Source: parameters, Generate Preview (live from the API), placement, schedule, run.
        page.click("#nav-sources")
        page.click("#new-source")
        page.fill("#f-name", "profiles_daily")
        page.select_option("#f-connection", "emulator")
        page.select_option("#f-data_source", "profiles_in_list")
        assert page.is_visible("#f-list_id")  # the parameter the chosen source needs appears
        page.select_option("#f-data_source", "profiles")
        assert not page.is_visible("#f-list_id")
        page.check("#f-incremental")
        page.fill("#f-incremental_field", "updated")
        page.fill("#f-database", "klaviyo")
        page.fill("#f-table", "profiles")
        page.select_option("#f-mode", "merge")
        page.click("#generate-preview")
        page.wait_for_selector("#preview tbody tr")
        assert page.locator("#preview tbody tr").count() == 10
        page.select_option("#f-preset", "custom")
        page.fill("#f-cron", "30 6 * * 1-5")
        page.fill("#f-schedule_timezone", "Asia/Tokyo")
        page.wait_for_function(
            "() => document.querySelector('#cron-describe').textContent.length > 0"
            " && document.querySelectorAll('#next-runs li').length === 5"
            " && document.querySelector('#next-runs li').textContent.includes('JST')"
        )
        _shot(page, "02-source-wizard")
        page.click("#save-run-source")
        assert _wait_for_job_end(page) == "success"
        assert page.inner_text("#rows-written").strip() == "300"
        _shot(page, "03-import-job")

        # 3. Exports: query editor, export parameters, dry run with invalid rows, run.
        page.click("#nav-exports")
        page.fill("#f-database", "klaviyo")
        page.fill(
            "#f-sql",
            "SELECT 'not-an-email' AS email, 'x' AS first_name UNION ALL "
            "(SELECT email, first_name FROM profiles ORDER BY email LIMIT 40)",
        )
        page.click("#run-query")
        page.wait_for_selector("#query-result tbody tr")
        page.select_option("#f-connection", "emulator")
        page.select_option("#f-operation", "add")
        page.select_option("#f-list_identify_type", "name")
        page.fill("#f-list_value", "Browser export")
        page.click("#dry-run")
        page.wait_for_selector("#dry-result")
        assert page.inner_text("#dry-total") == "41" and int(page.inner_text("#dry-invalid")) >= 1
        assert page.is_visible("#dry-invalid-rows")
        _shot(page, "04-export-dry-run")
        page.click("#run-export")
        assert _wait_for_job_end(page) == "success"
        page.wait_for_selector("#row-results tbody tr")
        assert "accepted" in page.inner_text("#export-summary")
        page.select_option("#f-outcome", "skipped")
        page.click("#row-filter button[type=submit]")
        page.wait_for_selector("#row-results tr.outcome-skipped")
        assert page.locator("#row-results tr.outcome-accepted").count() == 0
        with page.expect_download() as download:
            page.click("#download-csv")
        assert download.value.suggested_filename.endswith(".csv")
        _shot(page, "05-export-job")

        # 4. Schedule the export; run it from the schedule page; next 5 run times in its zone.
        page.click("#nav-exports")
        page.select_option("#f-connection", "emulator")
        page.fill("#f-list_value", "Browser export")
        page.fill("#f-sql", "SELECT email FROM profiles ORDER BY email LIMIT 25")
        page.fill("#f-name", "daily_export")
        page.select_option("#f-preset", "@daily")
        page.fill("#f-schedule_timezone", "Europe/Paris")
        page.click("#save-schedule")
        page.wait_for_url(re.compile(r"/schedules/daily_export"))
        assert page.locator("#schedule-next-runs li").count() == 5
        page.click("#run-now")
        assert _wait_for_job_end(page) == "success"
        page.click("#nav-schedules")
        page.wait_for_selector("tr[data-name=daily_export]")
        page.click("tr[data-name=daily_export] button:has-text('Disable')")
        page.wait_for_selector("tr[data-name=daily_export] button:has-text('Enable')")
        _shot(page, "06-schedules")
        page.click("a:has-text('daily_export')")
        page.wait_for_selector("#runs-chart rect")
        _shot(page, "07-schedule-detail")

        # 5. The job history has the import and both exports.
        page.click("#nav-jobs")
        page.wait_for_selector("#job-list")
        kinds = page.eval_on_selector_all("#job-list tbody tr", "rows => rows.map(r => r.dataset.kind)")
        assert kinds.count("import") == 1 and kinds.count("export") == 2, kinds
        statuses = page.eval_on_selector_all("#job-list .status", "els => els.map(e => e.textContent.trim())")
        assert set(statuses) == {"success"}, statuses
        _shot(page, "08-jobs")
        assert API_KEY not in page.content()
        context.close()
    csp = [p for p in problems if "Content Security Policy" in p or "Refused" in p]
    assert not csp, csp
    assert not problems, problems


def test_login_required_on_loopback_in_a_real_browser(browser, emulator_url, tmp_path):
    with running_console(ConsoleConfig(home=Home(tmp_path / "home"), base_url=emulator_url)) as (base, token):
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{base}/exports")  # on 127.0.0.1 too: the login page, not the console
        assert "/login?next=" in page.url and page.is_visible("#login-form")
        assert page.locator("#nav-exports").count() == 0 and page.locator("#f-sql").count() == 0
        page.fill("#f-token", "not-the-token")
        page.click("#sign-in")
        page.wait_for_selector("#error-token")
        assert "wrong token" in page.inner_text("#error-token")
        _shot(page, "00-login")
        page.fill("#f-token", token)
        page.click("#sign-in")
        page.wait_for_selector("#nav-exports")
        assert page.url.endswith("/exports") and page.is_visible("#f-sql")  # where the user was going
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["kb_session"]["httpOnly"] and cookies["kb_session"]["sameSite"] == "Strict"
        assert token not in page.content() and token not in page.url
        page.click("#sign-out")
        page.wait_for_selector("#login-form")
        page.goto(f"{base}/jobs")
        assert "/login" in page.url and page.is_visible("#login-form")
        context.close()


def test_sandboxed_query_refused_with_its_message_in_a_real_browser(browser, emulator_url, tmp_path):
    home = Home(tmp_path / "home")
    with running_console(ConsoleConfig(home=home, base_url=emulator_url)) as (base, token):
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{base}/login?token={token}")
        page.wait_for_selector("#nav-exports")
        page.goto(f"{base}/authentications")
        page.fill("#f-name", "emulator")
        page.fill("#f-api_key", API_KEY)
        page.click("#auth-form button[type=submit]")
        page.wait_for_selector("#flash")
        page.click("#nav-exports")
        page.fill("#f-database", "")  # a new warehouse has no database yet
        for sql, why in [
            (f"SELECT * FROM read_text('{home.credentials}')", "reading or writing files is not allowed"),
            (f"ATTACH '{tmp_path / 'other.duckdb'}' AS other", "ATTACH is not allowed"),
            ("DROP TABLE profiles", "DROP is not allowed"),
        ]:
            page.fill("#f-sql", sql)
            page.click("#run-query")
            page.wait_for_selector("#query-error")
            message = page.inner_text("#query-error")
            assert message.startswith("the console runs read-only queries") and why in message, message
            assert "use the CLI" in message
            assert API_KEY not in page.content()
        _shot(page, "09-sandbox-refusal")
        assert not (tmp_path / "other.duckdb").exists()
        context.close()
