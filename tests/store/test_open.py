"""Choosing the engine from a path or URL."""

from __future__ import annotations

import pytest

from klaviyo_bridge.errors import ConfigError, StoreError
from klaviyo_bridge.secrets import redact_url
from klaviyo_bridge.store import open_warehouse
from klaviyo_bridge.store.duckdb import DuckDBWarehouse


def test_paths_and_duckdb_urls_open_duckdb(tmp_path, monkeypatch):
    with open_warehouse(tmp_path / "a" / "w.duckdb") as wh:
        assert isinstance(wh, DuckDBWarehouse) and wh.path == tmp_path / "a" / "w.duckdb"
    with open_warehouse(f"duckdb:///{tmp_path}/b.duckdb") as wh:  # duckdb:////abs/path
        assert wh.path == tmp_path / "b.duckdb"
    monkeypatch.chdir(tmp_path)
    with open_warehouse("duckdb:///rel.duckdb") as wh:
        assert wh.path == tmp_path / "rel.duckdb"


def test_duckdb_urls_follow_sqlalchemy_and_refuse_ambiguity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_warehouse("duckdb:////" + str(tmp_path / "abs.duckdb").lstrip("/")) as wh:  # four slashes: absolute
        assert wh.path == tmp_path / "abs.duckdb"
    with pytest.raises(ConfigError) as info:  # /tmp exists: duckdb:///tmp/x means tmp/x here, not /tmp/x
        open_warehouse("duckdb:///tmp/x.duckdb")
    message = str(info.value)
    assert "ambiguous" in message and "duckdb:////tmp/x.duckdb" in message and "duckdb:///./tmp/x.duckdb" in message
    assert not (tmp_path / "tmp").exists() and not __import__("os").path.exists("/tmp/x.duckdb")
    with open_warehouse("duckdb:///./tmp/x.duckdb") as wh:  # the relative one, said explicitly
        assert wh.path == tmp_path / "tmp" / "x.duckdb"
    with open_warehouse("duckdb:///data/w.duckdb") as wh:  # no /data at the root: plainly relative
        assert wh.path == tmp_path / "data" / "w.duckdb"
    for bad in ("duckdb://", "duckdb:///", "duckdb:////", "duckdb://host/x.duckdb"):
        with pytest.raises(ConfigError):
            open_warehouse(bad)


def test_cli_warehouse_url_ambiguity_is_one_clear_line(tmp_path, capsys):
    from klaviyo_bridge.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--home", str(tmp_path / "home"), "tables", "--warehouse", "duckdb:///tmp/x.duckdb"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and "ambiguous" in err


def test_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="mysql"):
        open_warehouse("mysql://localhost/x")


def test_unreachable_postgres_is_a_store_error_without_password():
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as info:
        open_warehouse("postgresql://u:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(info.value)
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_database_named_like_the_duckdb_file(tmp_path):
    """A schema called like the file's stem (klaviyo in klaviyo.duckdb) must not be ambiguous."""
    import pyarrow as pa

    from klaviyo_bridge.store.factory import open_warehouse

    with open_warehouse(tmp_path / "klaviyo.duckdb") as wh:
        wh.write("klaviyo", "lists", pa.table({"id": ["a", "b"]}))
        assert wh.table_arrow("klaviyo", "lists").num_rows == 2


def _memory_limit_mib(session) -> float:
    (text,) = session.fetch("SELECT current_setting('memory_limit')")[0]
    number, unit = text.split()
    return float(number) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]


def test_duckdb_holds_a_smaller_pool_only_while_every_open_session_appends(tmp_path, monkeypatch):
    """An import in append mode need not keep every page it wrote cached (~150 MB of a 1M-event
    import's peak): the pool shrinks while only appending sessions are open, and anything else
    (a merge beside it, a query, the commit's check for deleted profiles) gets the whole limit."""
    import pyarrow as pa

    monkeypatch.delenv("KLAVIYO_BRIDGE_DUCKDB_MEMORY", raising=False)
    with open_warehouse(tmp_path / "w.duckdb") as wh:
        with wh.transaction() as s:
            full = _memory_limit_mib(s)
        assert full > 400  # DEFAULT_MEMORY_LIMIT, 512 MB
        with wh.writer("raw", "events", "append") as appender:
            appender.write(pa.table({"id": ["e1", "e2"]}))
            lean = _memory_limit_mib(appender.session)
            assert 60 <= lean < full / 2
            with wh.writer("raw", "profiles", "merge", primary_key="id") as merger:  # opened beside it
                assert _memory_limit_mib(merger.session) == full
                merger.write(pa.table({"id": ["p1"]}))
                merger.commit()
            assert _memory_limit_mib(appender.session) == lean  # the merge closed: lean again
            with wh.writer("raw", "clicks", "append") as second:  # two appends: a share each
                second.write(pa.table({"id": ["c1"]}))
                assert _memory_limit_mib(second.session) == 2 * lean
                second.commit()
            with wh.transaction() as s:  # a query: the whole pool while it is open
                assert _memory_limit_mib(s) == full
            appender.commit()
        with wh.transaction() as s:
            assert _memory_limit_mib(s) == full and s.fetch("SELECT count(*) FROM raw.events")[0][0] == 2
        with wh.writer("raw", "profiles", "append") as appender:
            appender.write(pa.table({"id": ["p2"]}))
            appender.mark_absent("id", pa.array(["p2"]), "deleted", "deleted_at", __import__("datetime").datetime.now())
            assert _memory_limit_mib(appender.session) == full  # the commit compares the whole table
            appender.commit()


def test_a_memory_limit_the_user_set_is_kept_while_appending(tmp_path, monkeypatch):
    import pyarrow as pa

    monkeypatch.setenv("KLAVIYO_BRIDGE_DUCKDB_MEMORY", "300MB")
    with open_warehouse(tmp_path / "w.duckdb") as wh, wh.writer("raw", "events", "append") as appender:
        appender.write(pa.table({"id": ["e1"]}))
        assert 280 < _memory_limit_mib(appender.session) < 290  # 300 MB = 286.1 MiB
        appender.commit()
