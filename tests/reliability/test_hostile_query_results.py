"""Hostile query results (part of the hostile corpus), through ``klaviyo-bridge query --dry-run``:
duplicate columns, NaN, wrong types, huge strings, NULL identifiers, control characters, a query
that fails. Each names the column or row in one line (no internal error, no traceback), or is
the correct dry-run result; nothing is sent (a dry run never sends, and the base URL is a port
where nothing listens) and the warehouse's committed table stays."""

from __future__ import annotations

import pyarrow as pa
import pytest

from klaviyo_bridge.cli import main
from klaviyo_bridge.store.factory import open_warehouse

from .helpers import FIGURES, rows_of

SETTINGS = "type: klaviyo\napi_token: pk_corpus_key\nbase_url: http://127.0.0.1:9\noperation: add\nlist_identify_type: id\nlist_value: abc\n"

CASES = {
    # id: (SQL, fragments expected in stderr+stdout)
    "duplicate_email_column": ("SELECT 'a@example.com' AS email, 'b@example.com' AS email", ["column 'email' 2 times"]),
    "duplicate_other_column": (
        "SELECT 'a@example.com' AS email, 'x' AS first_name, 'y' AS first_name",
        ["column 'first_name' 2 times"],
    ),
    "nan_phone_number": (
        "SELECT 'a@example.com' AS email, 'nan'::DOUBLE AS phone_number",
        ["column 'phone_number' must be a string"],
    ),
    "email_is_a_list": ("SELECT [1, 2] AS email", ["column 'email' must be a string"]),
    "email_is_a_struct": ("SELECT {'a': 1} AS email", ["column 'email' must be a string"]),
    "email_is_an_integer": ("SELECT 42 AS email", ["column 'email' must be a string"]),
    "upper_case_column": ("SELECT 'a@example.com' AS \"EMAIL\"", ["found 'EMAIL': column names are case-sensitive"]),
    "no_identifier_column": ("SELECT 1 AS x", ["needs a string column email or phone_number"]),
    "null_identifier": ("SELECT NULL::VARCHAR AS email", ["invalid row 1", "email"]),
    "five_megabyte_value": ("SELECT 'a@example.com' AS email, repeat('x', 5000000) AS first_name", ["invalid row 1", "100 KB"]),
    "nul_in_email": ("SELECT 'ada' || chr(0) || '@example.com' AS email", ["invalid row 1", "control or invisible"]),
    "crlf_in_email": ("SELECT 'ada@example.com' || chr(13) || chr(10) || 'Bcc: x@example.com' AS email", ["invalid row 1"]),
    "invalid_and_valid_mixed": (
        "SELECT * FROM (VALUES ('ok@example.com'), ('not-an-email'), (NULL)) t(email)",
        ["invalid row 2", "not a valid email", "invalid row 3"],
    ),
    "sql_syntax_error": ("SELEC email FROM nowhere", ["syntax error"]),
    "unknown_table": ("SELECT email FROM no_such_table", ["no_such_table"]),
    "zero_rows": ("SELECT 'a@example.com' AS email WHERE false", ["nothing was sent"]),
    "three_thousand_columns": (
        "SELECT 'a@example.com' AS email, " + ", ".join(f"{i} AS c{i}" for i in range(3000)),
        ["nothing was sent"],
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_query_result_is_named_and_nothing_is_lost(case, tmp_path, capsys):
    sql, fragments = CASES[case]
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    with open_warehouse(home / "warehouse.duckdb") as wh:
        wh.write("klaviyo", "keep", pa.table({"id": ["a"]}), "append", cursors={"keep-job": "2025-01-01"})
    settings = tmp_path / "s.yml"
    settings.write_text(SETTINGS)
    try:
        main(["--home", str(home), "query", "-d", "klaviyo", "--result-settings", str(settings), "--dry-run", sql])
    except SystemExit as exc:
        assert exc.code in (0, 1, 2, 3), exc.code
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "Traceback" not in said and "internal error" not in said, said[-2000:]
    assert "pk_corpus_key" not in said and len(captured.err) < 5000
    for fragment in fragments:
        assert fragment in said, f"{fragment!r} not in {said[-1500:]!r}"
    with open_warehouse(home / "warehouse.duckdb") as wh:
        assert rows_of(wh, "klaviyo", "keep") == [("'a'",)] and wh.state.cursor("keep-job") == "2025-01-01"
        assert [r for r in wh.state.runs() if r.kind == "export"] == []  # a dry run records nothing
    FIGURES["hostile query results"] += 1
