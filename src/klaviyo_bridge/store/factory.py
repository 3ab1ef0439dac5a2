"""Open a warehouse by URL or path: the one place that knows the engines behind ``Warehouse``.

Kept apart from ``warehouse.py`` so the base class module imports none of its subclasses:
``duckdb.py`` and ``postgres.py`` import ``warehouse.py``, and this module imports all three.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .duckdb import DuckDBWarehouse
from .warehouse import Warehouse


def duckdb_url_path(url: str) -> str:
    """SQLAlchemy's rule: ``duckdb:///relative.duckdb``, ``duckdb:////absolute/path.duckdb``.

    ``duckdb:///tmp/x.duckdb`` reads as the relative ``tmp/x.duckdb`` by that rule, which is
    rarely what was meant when ``/tmp`` exists: such a URL is refused with both spellings."""
    if not url.startswith("duckdb:///"):
        raise ConfigError(
            f"{url!r}: a DuckDB URL has three slashes and a path (duckdb:///relative.duckdb or duckdb:////absolute/path.duckdb)",
            key="warehouse",
        )
    path = url[len("duckdb:///") :]
    if not path or path == "/":
        raise ConfigError("duckdb:/// URL has no file path", key="warehouse")
    if not path.startswith(("/", "./", "../", "~")):
        first = path.split("/", 1)[0]
        if "/" in path and Path("/", first).is_dir():
            raise ConfigError(
                f"{url!r} is ambiguous: by SQLAlchemy's rule three slashes make the relative path {path!r} "
                f"(in {Path.cwd()}), yet /{first} exists; write duckdb:////{path} for the absolute path "
                f"/{path}, or duckdb:///./{path} for the relative one",
                key="warehouse",
            )
    return path


def open_warehouse(url_or_path: str | Path, *, lock_timeout: float = 0.0) -> Warehouse:
    """``path`` / ``duckdb:///path`` -> DuckDB file; ``postgresql://...`` -> PostgreSQL."""
    target = str(url_or_path)
    if target.startswith(("postgresql://", "postgres://")):
        # deferred (tests/test_layers.py ALLOWED): the PostgreSQL driver, for a PostgreSQL warehouse only
        from .postgres import PostgresWarehouse

        return PostgresWarehouse(target)
    if "://" in target and not target.startswith("duckdb://"):
        scheme = target.split("://", 1)[0]
        raise ConfigError(
            f"unsupported warehouse URL scheme {scheme!r} (use a path, duckdb:/// or postgresql://)", key="warehouse"
        )
    if target.startswith("duckdb://"):
        target = duckdb_url_path(target)
    return DuckDBWarehouse(Path(target), lock_timeout=lock_timeout)
