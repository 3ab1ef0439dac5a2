"""Validate and quote the names users give us (seed "database" and "table", column names).

Database and table names come from config files and command lines, so they are held to a
strict, portable pattern and rejected early with a ConfigError. Column names come from the
data (Klaviyo property names such as ``$email`` or ``Campaign Name``), so they are only
rejected when no engine can store them; everything is quoted before it reaches SQL.
"""

from __future__ import annotations

import re

from ..errors import ConfigError

STATE_SCHEMA = "_bridge"
"""Reserved schema for cursors, runs and export results; user data may not go there."""

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's limit (NAMEDATALEN - 1); DuckDB has none.
_OBJECT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def check_object_name(name: str, what: str) -> str:
    """Return ``name`` if it is a safe database/table name, else raise ConfigError."""
    if not isinstance(name, str) or not _OBJECT_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid {what} name {name!r}: use letters, digits, '_' and '-', starting with a letter or '_'",
            key=what,
        )
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ConfigError(f"{what} name {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes", key=what)
    return name


def check_user_database(name: str) -> str:
    """Like check_object_name, and keeps users out of the reserved state schema."""
    check_object_name(name, "database")
    if name.casefold().startswith(STATE_SCHEMA):
        raise ConfigError(f"database names starting with {STATE_SCHEMA!r} are reserved for klaviyo-bridge", key="database")
    return name


def check_column_name(name: str) -> str:
    """Reject column names no engine can store (empty, control characters, too long)."""
    if not name or any(ord(ch) < 32 for ch in name) or "\x7f" in name:
        raise ConfigError(f"invalid column name {name!r}", key="column")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ConfigError(f"column name {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes", key="column")
    return name


def quote(name: str) -> str:
    """Quote one identifier for both DuckDB and PostgreSQL (double quotes, doubled inside)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(database: str, table: str) -> str:
    return f"{quote(database)}.{quote(table)}"


def quote_literal(value: str) -> str:
    """Quote a string literal (only for names we validated; values always go as parameters)."""
    return "'" + value.replace("'", "''") + "'"
