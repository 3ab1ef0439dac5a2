"""Look at the warehouse: ``tables`` (what is there) and ``sql`` (run a query, print the rows).

Both work on the embedded DuckDB file and on PostgreSQL alike; output is a table on screen, or
CSV / JSON lines with ``--format`` for pipes and scripts. Only parses and prints.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import click
import orjson
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ..exports.source import query_source
from ..home import Home
from ..store.factory import open_warehouse
from ..typenames import friendly_type

WAREHOUSE_HELP = "Warehouse: a DuckDB path, duckdb:///path or postgresql://... (default: HOME/warehouse.duckdb)."
FORMATS = ("table", "csv", "json")
#: Rows a screen table shows at most (csv and json print every row).
SCREEN_ROWS = 200


def _console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


class _Printer:
    """Rows to stdout in one of FORMATS, batch by batch."""

    def __init__(self, fmt: str, schema: pa.Schema, max_rows: int | None) -> None:
        self.fmt, self.schema, self.max_rows = fmt, schema, max_rows
        self.rows = 0
        self.shown = 0
        if fmt == "table":
            self.table = Table(show_lines=False)
            for field in schema:
                self.table.add_column(f"{field.name}\n[dim]{friendly_type(field.type)}[/]", overflow="fold")
        elif fmt == "csv":
            self.writer = csv.writer(sys.stdout, lineterminator="\n")
            self.writer.writerow(schema.names)

    def add(self, batch: pa.RecordBatch) -> None:
        names = batch.schema.names
        for row in batch.to_pylist():
            self.rows += 1
            if self.fmt == "table":
                if self.max_rows is None or self.shown < self.max_rows:
                    self.table.add_row(*(_text(row[n]) for n in names))
                    self.shown += 1
            elif self.fmt == "csv":
                self.writer.writerow([_text(row[n]) for n in names])
            else:
                sys.stdout.buffer.write(orjson.dumps(row, default=_json_default, option=orjson.OPT_NON_STR_KEYS) + b"\n")

    def finish(self) -> None:
        if self.fmt == "table":
            _console().print(self.table)
            more = f", first {self.shown} shown (--format csv or json prints all)" if self.shown < self.rows else ""
            click.echo(f"({self.rows} row{'s' if self.rows != 1 else ''}{more})", err=True)
        else:
            sys.stdout.flush()


_Command = TypeVar("_Command", bound=Callable[..., Any])


def _format_option(f: _Command) -> _Command:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="table on screen, CSV (with a header), or JSON lines (one object per row).",
    )(f)


@click.command("tables")
@click.option("-d", "--database", help="Only this database (schema).")
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@_format_option
@click.pass_obj
def tables_command(home: Home, database: str | None, warehouse_url: str | None, fmt: str) -> None:
    """List the warehouse's tables: database, table, columns, rows.

    Look inside one with: klaviyo-bridge sql "SELECT * FROM DATABASE.TABLE LIMIT 10"
    """
    with open_warehouse(warehouse_url or home.ensure().warehouse, lock_timeout=30) as wh:
        found = [t for t in wh.user_tables() if database is None or t[0] == database]
    schema = pa.schema([("database", pa.string()), ("table", pa.string()), ("columns", pa.int64()), ("rows", pa.int64())])
    printer = _Printer(fmt, schema, None)
    printer.add(pa.RecordBatch.from_pylist([dict(zip(schema.names, t)) for t in found], schema=schema))
    if fmt == "table":
        _console().print(printer.table)
        if not found:
            where = f" in database {database!r}" if database else ""
            click.echo(f"No tables{where} yet: import some with connector:issue CONFIG -d DATABASE -t TABLE", err=True)
        else:
            first = found[0]
            click.echo(
                f"({len(found)} table{'s' if len(found) != 1 else ''}; look inside one with: klaviyo-bridge sql "
                f'"SELECT * FROM {first[0]}.{first[1]} LIMIT 10")',
                err=True,
            )
    else:
        printer.finish()


@click.command("sql")
@click.argument("query", required=False)
@click.option("-f", "--file", "query_file", type=click.Path(exists=True, dir_okay=False), help="Read the SQL from a file.")
@click.option("-d", "--database", help="Database (schema) that unqualified table names refer to.")
@click.option("--warehouse", "warehouse_url", help=WAREHOUSE_HELP)
@_format_option
@click.option(
    "--max-rows",
    default=SCREEN_ROWS,
    show_default=True,
    type=click.IntRange(1),
    help="Rows shown in the screen table (csv and json print every row).",
)
@click.pass_obj
def sql_command(
    home: Home,
    query: str | None,
    query_file: str | None,
    database: str | None,
    warehouse_url: str | None,
    fmt: str,
    max_rows: int,
) -> None:
    """Run QUERY (or -f FILE) on the warehouse and print the rows.

    \b
    klaviyo-bridge sql "SELECT count(*) FROM klaviyo.events"
    klaviyo-bridge sql -d klaviyo "SELECT email, first_name FROM profiles LIMIT 5" --format csv
    """
    if query and query_file:
        raise ConfigError("give the SQL as an argument or with -f FILE, not both", key="query")
    if query_file:
        with open(query_file) as fh:
            query = fh.read()
    if not query or not query.strip():
        raise ConfigError('give the SQL to run, e.g. klaviyo-bridge sql "SELECT * FROM klaviyo.lists LIMIT 10"', key="query")
    with open_warehouse(warehouse_url or home.ensure().warehouse, lock_timeout=30) as wh:
        schema, stream = query_source(wh, query, database)()
        printer = _Printer(fmt, schema, max_rows)
        try:
            for batch in stream:
                printer.add(batch)
        finally:
            getattr(stream, "close", lambda: None)()
    printer.finish()


COMMANDS = (tables_command, sql_command)
