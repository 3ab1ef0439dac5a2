"""Hostile input corpus (data files under corpus/): every case fails with a clear message naming
the key and line (configs) or the row and column (export query results), and nothing is sent:
configs never reach the network nor create a warehouse; exports leave the emulator's state
(list members, consent, suppressions) exactly as it was."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.errors import ConfigError, ExportError
from klaviyo_bridge.exports.runner import run_export
from klaviyo_bridge.exports.settings import parse_export_settings
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from .helpers import FIGURES

CORPUS = Path(__file__).parent / "corpus"
CONFIGS = sorted((CORPUS / "config").glob("*.yml"))
EXPORTS = sorted((CORPUS / "export").glob("*.json"))


def _export_param(path: Path):
    reason = json.loads(path.read_text()).get("xfail")
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(path, id=path.stem, marks=marks)


def test_the_corpus_has_at_least_50_cases():
    assert len(CONFIGS) + len(EXPORTS) >= 50
    FIGURES["corpus cases"] = len(CONFIGS) + len(EXPORTS)


@pytest.mark.timeout(30)  # a case that hangs (an alias bomb, a loop) fails instead of stalling the suite
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_case(path, tmp_path, capsys):
    text = path.read_bytes().decode("utf-8", "replace")
    expects = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("# expect:")]
    home = tmp_path / "home"
    with pytest.raises(SystemExit) as info:
        main(["--home", str(home), "connector:issue", str(path), "-d", "klaviyo", "-t", "t"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for expected in expects:
        assert expected in err, f"{path.name}: {expected!r} not in {err!r}"
    assert "pk_corpus_key" not in err
    assert not (home / "warehouse.duckdb").exists()


@pytest.fixture(scope="module")
def app():
    return create_app(EmulatorSettings(seed=9, profiles=50, events=10, lists=2, rate_limits=False))


@pytest.fixture(scope="module")
def list_id(app):
    async def first():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://e") as http:
            r = await http.get(
                "/api/lists", headers={"Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}", "revision": "2024-10-15"}
            )
            return r.json()["data"][0]["id"]

    return asyncio.run(first())


class Counting(httpx.AsyncBaseTransport):
    def __init__(self, inner):
        self.inner, self.writes = inner, 0

    async def handle_async_request(self, request):
        if request.method != "GET":
            self.writes += 1
        return await self.inner.handle_async_request(request)


async def _no_sleep(_):
    await asyncio.sleep(0)


@pytest.mark.parametrize("path", [_export_param(p) for p in EXPORTS])
def test_export_case(path, tmp_path, app, list_id):
    case = json.loads(path.read_text())
    keys = {
        "type": "klaviyo",
        "api_token": DEFAULT_API_KEY,
        "base_url": "http://e",
        "skip_invalid_records": False,
        **{k: (list_id if v == "LIST_ID" else v) for k, v in case["settings"].items()},
    }
    settings = parse_export_settings(keys)
    names = list(dict.fromkeys(k for row in case["rows"] for k in row))
    fields = [pa.field(n, getattr(pa, case["types"].get(n, "string"))()) for n in names]
    table = pa.Table.from_pylist(case["rows"], schema=pa.schema(fields))
    before = app.state.emulator.snapshot()
    transport = Counting(httpx.ASGITransport(app=app))
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        with pytest.raises((ExportError, ConfigError)) as info:
            asyncio.run(run_export(wh, table, settings, transport=transport, sleep=_no_sleep))
    message = str(info.value)
    for expected in case["expect"]:
        assert expected in message, f"{path.name}: {expected!r} not in {message[:500]!r}"
    assert len(message) < 5000  # a 1 MB value is never echoed whole
    assert transport.writes == 0, "something was sent"
    assert app.state.emulator.snapshot() == before
    FIGURES["rows checked (corpus)"] += len(case["rows"])
