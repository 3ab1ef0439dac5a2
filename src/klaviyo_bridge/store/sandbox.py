"""Queries typed into the web console run sandboxed (docs/console.md, "Queries run sandboxed").

The console is reachable by whoever holds its token, which is less than a shell: so the SQL a
console user types (the export form's preview, dry run and run, a schedule saved there) reads the
warehouse and nothing else.

* DuckDB: a connection of its own (a separate DuckDB instance) that attaches the warehouse file
  ``READ_ONLY``, then turns ``enable_external_access`` off (no file functions, ``COPY``,
  ``ATTACH``, ``INSTALL``/``LOAD`` of extensions from disk, Python replacement scans), switches
  extension autoload/autoinstall off and locks the configuration, so the query cannot turn any of
  it back on. Only a single SELECT-like statement is accepted.
* PostgreSQL: a connection of its own, the query in a ``READ ONLY`` transaction with a
  ``statement_timeout``, always rolled back; only SELECT / WITH / VALUES / TABLE statements
  (``COPY ... TO PROGRAM`` would otherwise run for a superuser even in a read-only transaction).
  What the query may read is the connecting role's privileges: docs/console.md has a
  least-privilege role recipe (never a superuser).

The result is read into Arrow here (up to ``max_rows``); the caller exports it through the normal,
writable warehouse path, so only the user's SQL runs sandboxed. The CLI keeps full power: it runs
as the user.

A DuckDB file can be attached by one DuckDB instance at a time in a process, so the caller must not
hold the warehouse open while ``read_duckdb`` runs (the console's ``WarehouseHolder.sandboxed``
waits for that); another process holding the file is waited for up to ``lock_timeout``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import adbc_driver_manager
import duckdb
import pyarrow as pa

from ..errors import ConfigError, StoreError
from .duckdb import CATALOG, memory_limit
from .identifiers import check_object_name, quote
from .postgres import PostgresSession

READ_ONLY = "the console runs read-only queries"
USE_CLI = "use the CLI (klaviyo-bridge export / sql), which runs with your own rights"
#: First words of the statements a console query may be (PostgreSQL).
PG_ALLOWED = ("SELECT", "WITH", "VALUES", "TABLE")


class QueryRefused(ConfigError):
    """The console's sandbox refused the query (a write, a file, another database, an extension...)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{READ_ONLY}: {what}; {USE_CLI}", key="sql")


class QueryTimeout(StoreError):
    """The query ran longer than the console allows."""


def _strip_comments(sql: str) -> str:
    """The SQL without leading comments, whitespace and opening parentheses."""
    text = sql
    while True:
        text = text.lstrip()
        if text.startswith("--"):
            text = text.split("\n", 1)[1] if "\n" in text else ""
        elif text.startswith("/*"):
            end = text.find("*/")
            text = text[end + 2 :] if end >= 0 else ""
        elif text.startswith("("):
            text = text[1:]
        else:
            return text


def first_word(sql: str) -> str:
    found = re.match(r"[A-Za-z_]+", _strip_comments(sql))
    return found.group(0).upper() if found else ""


def _clean(sql: str) -> str:
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise ConfigError("the query is empty", key="sql")
    return sql


def _first_rows(reader: pa.RecordBatchReader, max_rows: int | None) -> pa.Table:
    """The reader's first ``max_rows`` rows (all of them for None); reads no batch past them."""
    batches: list[pa.RecordBatch] = []
    rows = 0
    while max_rows is None or rows < max_rows:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        batches.append(batch)
        rows += batch.num_rows
    table = pa.Table.from_batches(batches, schema=reader.schema) if batches else reader.schema.empty_table()
    return table.slice(0, max_rows) if max_rows is not None else table


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


# --- DuckDB --------------------------------------------------------------------------------
def _duckdb_refusal(statements: Sequence[Any]) -> None:
    if len(statements) != 1:
        raise QueryRefused(f"one statement at a time ({len(statements)} given)")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        word = first_word(statement.query)
        name = word if word and word not in ("WITH",) else statement.type.name
        raise QueryRefused(f"{name} is not allowed")


def _duckdb_error(exc: BaseException, path: Path) -> Exception:
    message = _first_line(str(exc))
    if isinstance(exc, duckdb.PermissionException):
        return QueryRefused(f"reading or writing files is not allowed ({message})")
    if "read-only" in message.lower() or "read only" in message.lower():
        return QueryRefused(f"writing is not allowed ({message})")
    return StoreError(f"DuckDB {path}: {message}")


def read_duckdb(
    path: Path,
    sql: str,
    database: str | None = None,
    *,
    max_rows: int | None = None,
    lock_timeout: float = 0.0,
    timeout: float = 60.0,
    batch_size: int = 4096,
) -> pa.Table:
    """Run ``sql`` on the DuckDB file at ``path`` in the sandbox; its first ``max_rows`` rows as Arrow."""
    sql = _clean(sql)
    if database:
        check_object_name(database, "database")
    con = duckdb.connect(
        ":memory:",
        config={"memory_limit": memory_limit(), "autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    timer = None
    try:
        try:  # refused before anything is opened: the answer does not depend on the warehouse
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise StoreError(f"DuckDB {path}: {_first_line(str(exc))}") from None
        _duckdb_refusal(statements)
        deadline = time.monotonic() + lock_timeout
        literal = str(path).replace("'", "''")
        while True:
            try:
                con.execute(f"ATTACH '{literal}' AS {CATALOG} (READ_ONLY)")
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise StoreError(f"cannot open DuckDB warehouse {path} read-only: {_first_line(str(exc))}") from None
                time.sleep(0.1)
        con.execute(f"USE {CATALOG}")
        con.execute("SET TimeZone = 'UTC'")
        if database:
            found = con.execute(
                "SELECT count(*) FROM duckdb_schemas() WHERE database_name = $1 AND schema_name = $2", [CATALOG, database]
            ).fetchone()
            if not found or not found[0]:
                raise ConfigError(f"database {database!r} does not exist in the warehouse", key="database")
            con.execute(f"USE {CATALOG}.{quote(database)}")
        # From here on the connection cannot reach anything but the attached file, read-only.
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        if timeout:
            timer = threading.Timer(timeout, con.interrupt)
            timer.daemon = True
            timer.start()
        started = time.monotonic()
        try:
            table = _first_rows(con.sql(sql).to_arrow_reader(batch_size), max_rows)
        except (duckdb.InterruptException, RuntimeError) as exc:
            if isinstance(exc, duckdb.InterruptException) or "interrupt" in str(exc).lower():
                if timeout and time.monotonic() - started >= timeout * 0.9:
                    raise QueryTimeout(
                        f"the query ran longer than {timeout:g}s, the console's limit (--query-timeout); {USE_CLI}"
                    ) from None
                raise KeyboardInterrupt from None
            raise
        except duckdb.Error as exc:
            raise _duckdb_error(exc, path) from None
    except duckdb.Error as exc:
        raise _duckdb_error(exc, path) from None
    finally:
        if timer is not None:
            timer.cancel()
        con.close()
    return table


# --- PostgreSQL ----------------------------------------------------------------------------
def check_postgres_sql(sql: str) -> str:
    sql = _clean(sql)
    word = first_word(sql)
    if word not in PG_ALLOWED:
        raise QueryRefused(f"{word or 'this statement'} is not allowed")
    return sql


def read_postgres(
    dsn: str, where: str, sql: str, database: str | None = None, *, max_rows: int | None = None, timeout: float = 60.0
) -> pa.Table:
    """Run ``sql`` on PostgreSQL in a READ ONLY transaction with a statement timeout, rolled back."""
    sql = check_postgres_sql(sql)
    if database:
        check_object_name(database, "database")
    session = PostgresSession(dsn, where)
    try:
        session.execute("SET TRANSACTION READ ONLY")  # first statement of the (implicit) transaction
        session.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
        if database:
            found = session.fetch("SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", [database])
            if not found[0][0]:
                raise ConfigError(f"database {database!r} does not exist in the warehouse", key="database")
            session.execute(f"SET LOCAL search_path TO {quote(database)}, public")
        try:
            table = _first_rows(session.stream(sql, (), 4096), max_rows)
        except (adbc_driver_manager.Error, StoreError, OSError) as exc:  # pyarrow raises OSError mid-stream
            raise _postgres_error(exc, where, timeout) from None
    finally:
        session.rollback()
        session.close()
    return table


def _postgres_error(exc: BaseException, where: str, timeout: float) -> Exception:
    text = str(exc)
    detail = re.search(r"ERROR:\s*(.*?)(?:\s*\.?\s*SQLSTATE|\n|$)", text)
    message = detail.group(1).strip() if detail else _first_line(text)
    if "read-only transaction" in message:
        return QueryRefused(f"writing is not allowed ({message})")
    if "statement timeout" in message:
        return QueryTimeout(f"the query ran longer than {timeout:g}s, the console's limit (--query-timeout); {USE_CLI}")
    return StoreError(f"PostgreSQL {where}: {message}")
