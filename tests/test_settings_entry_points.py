"""One settings layer: the same bad export result settings, given through each entry point (a
settings file to ``query``, a workflow's ``result_settings``, an export schedule, the console's
export form over real HTTP), is refused naming the same field with the same message.

The CLI shows ``field: message``; the console shows the message next to the field (its error
span ``error-<field>``), read from the error's data, never parsed back from text."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.console import ConsoleConfig, create_app
from klaviyo_bridge.home import Home
from klaviyo_emulator.server import running_emulator, serving
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

EMU = EmulatorSettings(seed=18, profiles=20, events=5, lists=1, segments=0, rate_limits=False)
SQL = "SELECT 'ann@example.com' AS email"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')

#: (settings, field, message): each is refused by the one settings layer.
BAD = {
    "list_missing": (
        {"operation": "add", "list_identify_type": "id"},
        "list_value",
        "operation add needs list_value (the list's id)",
    ),
    "removals_unreadable": (
        {"operation": "mirror", "list_identify_type": "name", "list_value": "Mirror", "max_removals": "lots"},
        "max_removals",
        "max_removals 'lots' is neither a count (500) nor a percentage (\"10%\")",
    ),
    "wait_too_short": (
        {"operation": "add", "list_identify_type": "name", "list_value": "People", "waiting_time_for_completion_millis": 1000},
        "waiting_time_for_completion_millis",
        "must be between 300000 and 86400000",
    ),
}


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with running_emulator(EMU) as url:
        yield url


@pytest.fixture
def world(tmp_path: Path, emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, Path]:
    monkeypatch.setenv("KLAVIYO_BASE_URL", emulator_url)
    return emulator_url, tmp_path / "wh.duckdb", tmp_path


def _cli(tmp: Path, wh_path: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(["--home", str(tmp / "home"), *args, "--warehouse", str(wh_path)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _settings_file(tmp: Path, settings: dict[str, object]) -> str:
    path = tmp / "result_settings.json"
    path.write_text(json.dumps({"type": "klaviyo", "api_token": DEFAULT_API_KEY, **settings}))
    path.chmod(0o600)
    return str(path)


def via_query_file(
    world: tuple[str, Path, Path], settings: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    _, wh_path, tmp = world
    code, err = _cli(tmp, wh_path, "query", "--result-settings", _settings_file(tmp, settings), SQL, capsys=capsys)
    assert code == 2, err
    return _cli_field_message(err)


def via_workflow(
    world: tuple[str, Path, Path], settings: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    _, wh_path, tmp = world
    (tmp / "people.sql").write_text(SQL + "\n")
    body = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in settings.items())
    (tmp / "wf.dig").write_text(
        f"+export_task:\n  td>: people.sql\n  result_settings:\n    type: klaviyo\n    api_token: {DEFAULT_API_KEY}\n{body}"
    )
    (tmp / "wf.dig").chmod(0o600)
    code, err = _cli(tmp, wh_path, "workflow", "run", str(tmp / "wf.dig"), capsys=capsys)
    assert code == 2, err
    return _cli_field_message(err)


def via_schedule(
    world: tuple[str, Path, Path], settings: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    _, wh_path, tmp = world
    code, err = _cli(
        tmp,
        wh_path,
        "sched:create",
        "nightly",
        "0 3 * * *",
        "-d",
        "main",
        "--result-settings",
        _settings_file(tmp, settings),
        SQL,
        capsys=capsys,
    )
    assert code == 2, err
    code, out = _cli(tmp, wh_path, "sched:list", capsys=capsys)
    assert "nightly" not in out  # refused before anything was saved
    return _cli_field_message(err)


def via_console(
    world: tuple[str, Path, Path], settings: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    url, wh_path, tmp = world
    app = create_app(ConsoleConfig(home=Home(tmp / "console-home"), base_url=url, warehouse_url=str(wh_path)))
    with serving(app, lifespan="on", name="console") as base, httpx.Client(base_url=base) as http:
        assert http.get("/login", params={"token": app.state.console.token}).status_code == 303
        csrf = CSRF_RE.search(http.get("/authentications").text)
        assert csrf is not None
        saved = http.post("/authentications", data={"csrf_token": csrf.group(1), "name": "emu", "api_key": DEFAULT_API_KEY})
        assert saved.status_code == 303, saved.text
        form = {
            "waiting_time_for_completion_millis": "300000",
            **{k: str(v) for k, v in settings.items()},
            "csrf_token": csrf.group(1),
            "connection": "emu",
            "sql": SQL,
            "action": "dry_run",
        }
        page = http.post("/exports", data=form)
    assert page.status_code == 400, page.text[-2000:]
    shown = re.findall(r'<span class="field-error" id="error-([\w-]+)">(.*?)</span>', page.text, re.S)
    assert len(shown) == 1, shown
    return shown[0][0], html.unescape(shown[0][1])


def _cli_field_message(err: str) -> tuple[str, str]:
    """The CLI's line: ``error: <origin>: invalid settings: <field>: <message>``."""
    line = next(line for line in err.splitlines() if line.startswith("error: "))
    found = re.search(r"invalid settings: ([\w.]+): (.*)$", line)
    assert found, line
    return found.group(1), found.group(2)


ENTRY_POINTS = {"query_file": via_query_file, "workflow": via_workflow, "schedule": via_schedule, "console": via_console}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_the_same_bad_settings_name_the_same_field_and_message_everywhere(world, capsys, entry, bad):
    settings, field, message = BAD[bad]
    assert ENTRY_POINTS[entry](world, settings, capsys) == (field, message)


#: Import configs: (the ``in:``/``out:`` changes, the field path, the console's field, the message).
BAD_IMPORTS = {
    "list_id_missing": (
        {"in": {"data_source": "profiles_in_list"}},
        "in.list_id",
        "list_id",
        "data_source profiles_in_list needs list_id",
    ),
    "lookback_unreadable": (
        {"in": {"data_source": "events", "lookback": "3x"}},
        "in.lookback",
        "lookback",
        "'3x' is not a duration: write hours or days, e.g. 3d, 12h or 0h",
    ),
    "zone_abbreviation": (
        {"out": {"timezone": "PST"}},
        "out.timezone",
        "timezone",
        "'PST' is not an IANA time zone name (use e.g. America/Los_Angeles or UTC)",
    ),
}


def _import_config(url: str, change: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {
        "in": {
            "type": "klaviyo",
            "api_token": DEFAULT_API_KEY,
            "base_url": url,
            "data_source": "profiles",
            **change.get("in", {}),
        },
        "out": {"mode": "append", **change.get("out", {})},
    }


def _config_file(tmp: Path, config: dict[str, dict[str, str]]) -> str:
    path = tmp / "config.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    path.chmod(0o600)
    return str(path)


def import_via_config_file(
    world: tuple[str, Path, Path], change: dict[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    url, wh_path, tmp = world
    code, err = _cli(
        tmp,
        wh_path,
        "connector:issue",
        _config_file(tmp, _import_config(url, change)),
        "-d",
        "klaviyo",
        "-t",
        "people",
        capsys=capsys,
    )
    assert code == 2, err
    return _cli_field_message(err)


def import_via_schedule(
    world: tuple[str, Path, Path], change: dict[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    url, wh_path, tmp = world
    code, err = _cli(
        tmp,
        wh_path,
        "connector:create",
        "daily",
        "@daily",
        "klaviyo",
        "people",
        _config_file(tmp, _import_config(url, change)),
        capsys=capsys,
    )
    assert code == 2, err
    return _cli_field_message(err)


def import_via_console(
    world: tuple[str, Path, Path], change: dict[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    url, wh_path, tmp = world
    app = create_app(ConsoleConfig(home=Home(tmp / "console-home"), base_url=url, warehouse_url=str(wh_path)))
    with serving(app, lifespan="on", name="console") as base, httpx.Client(base_url=base) as http:
        assert http.get("/login", params={"token": app.state.console.token}).status_code == 303
        csrf = CSRF_RE.search(http.get("/authentications").text)
        assert csrf is not None
        saved = http.post("/authentications", data={"csrf_token": csrf.group(1), "name": "emu", "api_key": DEFAULT_API_KEY})
        assert saved.status_code == 303, saved.text
        form = {
            "name": "people_src",
            "connection": "emu",
            "data_source": "profiles",
            "database": "klaviyo",
            "table": "people",
            "mode": "append",
            "timezone": "UTC",
            "preset": "",
            "schedule_timezone": "UTC",
            "delay": "0",
            **change.get("in", {}),
            **change.get("out", {}),
            "csrf_token": csrf.group(1),
            "action": "save",
        }
        page = http.post("/sources/new", data=form)
    assert page.status_code == 400, page.text[-2000:]
    shown = re.findall(r'<span class="field-error" id="error-([\w-]+)">(.*?)</span>', page.text, re.S)
    assert len(shown) == 1, shown
    return shown[0][0], html.unescape(shown[0][1])


IMPORT_ENTRY_POINTS = {"config_file": import_via_config_file, "schedule": import_via_schedule, "console": import_via_console}


@pytest.mark.parametrize("bad", list(BAD_IMPORTS))
@pytest.mark.parametrize("entry", list(IMPORT_ENTRY_POINTS))
def test_the_same_bad_import_config_names_the_same_field_and_message_everywhere(world, capsys, entry, bad):
    change, field, form_field, message = BAD_IMPORTS[bad]
    expected = (form_field if entry == "console" else field, message)  # the form's fields are unprefixed
    assert IMPORT_ENTRY_POINTS[entry](world, change, capsys) == expected


#: Schedule settings: (cron, zone, the field, the console's field, the message).
BAD_SCHEDULES = {
    "zone_abbreviation": (
        "0 3 * * *",
        "PST",
        "timezone",
        "schedule_timezone",
        "time zone 'PST': abbreviations are not supported (they are ambiguous and ignore daylight "
        "saving time); use America/Los_Angeles (IANA names only, as in Asia/Tokyo or "
        "America/Los_Angeles)",
    ),
    "minute_out_of_range": ("61 3 * * *", "UTC", "cron", "cron", "cron field 1 (minute) '61': out of range 0-59 in '61 3 * * *'"),
}


def schedule_via_connector_create(
    world: tuple[str, Path, Path], cron: str, zone: str, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    url, wh_path, tmp = world
    code, err = _cli(
        tmp,
        wh_path,
        "connector:create",
        "daily",
        cron,
        "klaviyo",
        "people",
        _config_file(tmp, _import_config(url, {})),
        "-t",
        zone,
        capsys=capsys,
    )
    assert code == 2, err
    return _cli_field_message(err)


def schedule_via_sched_create(
    world: tuple[str, Path, Path], cron: str, zone: str, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    _, wh_path, tmp = world
    settings = _settings_file(tmp, {"operation": "upsert"})
    code, err = _cli(
        tmp, wh_path, "sched:create", "nightly", cron, "-d", "main", "-t", zone, "--result-settings", settings, SQL, capsys=capsys
    )
    assert code == 2, err
    return _cli_field_message(err)


def schedule_via_console(
    world: tuple[str, Path, Path], cron: str, zone: str, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    url, wh_path, tmp = world
    app = create_app(ConsoleConfig(home=Home(tmp / "console-home"), base_url=url, warehouse_url=str(wh_path)))
    with serving(app, lifespan="on", name="console") as base, httpx.Client(base_url=base) as http:
        assert http.get("/login", params={"token": app.state.console.token}).status_code == 303
        csrf = CSRF_RE.search(http.get("/exports").text)
        assert csrf is not None
        page = http.post(
            "/exports",
            data={
                "csrf_token": csrf.group(1),
                "action": "runs",
                "preset": "custom",
                "cron": cron,
                "schedule_timezone": zone,
                "delay": "0",
            },
        )
    shown = re.findall(r'<span class="field-error" id="error-([\w-]+)">(.*?)</span>', page.text, re.S)
    assert len(shown) == 1, shown
    return shown[0][0], html.unescape(shown[0][1])


SCHEDULE_ENTRY_POINTS = {
    "connector_create": schedule_via_connector_create,
    "sched_create": schedule_via_sched_create,
    "console": schedule_via_console,
}


@pytest.mark.parametrize("bad", list(BAD_SCHEDULES))
@pytest.mark.parametrize("entry", list(SCHEDULE_ENTRY_POINTS))
def test_the_same_bad_schedule_names_the_same_field_and_message_everywhere(world, capsys, entry, bad):
    cron, zone, field, form_field, message = BAD_SCHEDULES[bad]
    expected = (form_field if entry == "console" else field, message)
    assert SCHEDULE_ENTRY_POINTS[entry](world, cron, zone, capsys) == expected
