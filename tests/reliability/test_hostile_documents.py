"""Hostile documents (part of the hostile corpus): every YAML or JSON the product reads (import
configs, result settings files and inline JSON, workflows) is bounded in size, depth and alias
expansion. Through the CLI: a clear one-line error, exit code 2, within the case's timeout, and
the warehouse (a table, a cursor, the schedules) exactly as it was before."""

from __future__ import annotations

import pyarrow as pa
import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.store.factory import open_warehouse

from .helpers import FIGURES, rows_of

BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""
SETTINGS = "type: klaviyo\napi_token: pk_corpus_key\nbase_url: http://127.0.0.1:9\noperation: add\nlist_value: x\n"
CONFIG = "in:\n  type: klaviyo\n  data_source: lists\n  api_token: pk_corpus_key\n  base_url: http://127.0.0.1:9\n"


def _files(tmp):
    """name -> path of each hostile file (made here: some are too large to keep in the repository)."""
    made = {}

    def put(name, text):
        path = tmp / name
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        made[name] = str(path)

    put("bomb_config.yml", BOMB + CONFIG + "  event_ids: *g\n")
    put("huge_config.yml", CONFIG + "# " + "x" * (2 << 20) + "\n")
    put("bomb_settings.yml", BOMB + SETTINGS + "list_id: *g\n")
    put("deep_settings.yml", SETTINGS + "extra: " + "[" * 500 + "]" * 500 + "\n")
    put("huge_settings.yml", SETTINGS + "note: '" + "y" * (2 << 20) + "'\n")
    put("binary_settings.yml", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    put("bomb.dig", BOMB + "+task:\n  td>: q.sql\n  database: klaviyo\n  result_settings: *g\n")
    put("deep.dig", "+task:\n  td>: q.sql\n  x: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n")
    put("q.sql", "SELECT 'a@example.com' AS email\n")
    made["a_directory"] = str(tmp)
    return made


CASES = {
    # id: (argv after --home, with {file} names, expected fragments)
    "config_alias_bomb": (["connector:issue", "{bomb_config.yml}", "-d", "klaviyo", "-t", "t"], ["alias bomb"]),
    "config_2mb": (["connector:issue", "{huge_config.yml}", "-d", "klaviyo", "-t", "t"], ["larger than 1024 KiB"]),
    "config_dev_zero": (["connector:issue", "/dev/zero", "-d", "klaviyo", "-t", "t"], ["/dev/zero", "larger than"]),
    "config_is_a_directory": (["connector:issue", "{a_directory}", "-d", "klaviyo", "-t", "t"], ["is a directory"]),
    "config_preview_bomb": (["connector:preview", "{bomb_config.yml}"], ["alias bomb"]),
    "connector_create_bomb": (["connector:create", "c1", "0 0 * * *", "klaviyo", "t", "{bomb_config.yml}"], ["alias bomb"]),
    "connector_create_dev_zero": (["connector:create", "c2", "0 0 * * *", "klaviyo", "t", "/dev/zero"], ["larger than"]),
    "settings_alias_bomb": (
        ["query", "-d", "klaviyo", "--result-settings", "{bomb_settings.yml}", "SELECT 1 AS email"],
        ["alias bomb"],
    ),
    "settings_nested_500": (
        ["query", "-d", "klaviyo", "--result-settings", "{deep_settings.yml}", "SELECT 1 AS email"],
        ["more than 64 levels"],
    ),
    "settings_2mb": (
        ["query", "-d", "klaviyo", "--result-settings", "{huge_settings.yml}", "SELECT 1 AS email"],
        ["larger than 1024 KiB"],
    ),
    "settings_binary": (
        ["query", "-d", "klaviyo", "--result-settings", "{binary_settings.yml}", "SELECT 1 AS email"],
        ["not UTF-8 text"],
    ),
    "settings_inline_json_nested_100000": (
        ["query", "-d", "klaviyo", "--result-settings", '{"a": ' + "[" * 100000 + "]" * 100000 + "}", "SELECT 1 AS email"],
        ["nested"],
    ),
    "settings_inline_json_truncated": (
        ["query", "-d", "klaviyo", "--result-settings", '{"operation": "add", ', "SELECT 1 AS email"],
        ["invalid JSON"],
    ),
    "sched_create_bomb": (
        ["sched:create", "s1", "0 7 * * 1", "-d", "klaviyo", "--result-settings", "{bomb_settings.yml}", "SELECT 1 AS email"],
        ["alias bomb"],
    ),
    "sched_create_dev_zero": (
        ["sched:create", "s2", "0 7 * * 1", "-d", "klaviyo", "--result-settings", "/dev/zero", "SELECT 1 AS email"],
        ["larger than"],
    ),
    "workflow_alias_bomb": (["workflow", "run", "{bomb.dig}"], ["alias bomb"]),
    "workflow_nested_2000": (["workflow", "run", "{deep.dig}"], ["nested"]),
    "workflow_push_bomb": (["workflow", "push", "{bomb.dig}"], ["alias bomb"]),
}


@pytest.mark.timeout(30)  # an alias bomb or an endless read fails the case instead of stalling the suite
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_document_is_refused_and_nothing_is_lost(case, tmp_path, capsys):
    argv, fragments = CASES[case]
    files = _files(tmp_path)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    with open_warehouse(home / "warehouse.duckdb") as wh:
        wh.write("klaviyo", "keep", pa.table({"id": ["a", "b"]}), "append", cursors={"keep-job": "2025-01-01"})
    args = [files[a[1:-1]] if a.startswith("{") and a.endswith("}") and a[1:-1] in files else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main(["--home", str(home), *args])
    err = capsys.readouterr().err
    assert info.value.code == 2, err[-2000:]
    assert (err.startswith("error: ") or "\nError: Invalid value" in err) and "Traceback" not in err and len(err) < 3000
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err[:800]!r}"
    assert "pk_corpus_key" not in err
    with open_warehouse(home / "warehouse.duckdb") as wh:
        assert rows_of(wh, "klaviyo", "keep") == [("'a'",), ("'b'",)]
        assert wh.state.cursor("keep-job") == "2025-01-01"
        assert wh.state.schedules() == []
    FIGURES["hostile documents"] += 1
