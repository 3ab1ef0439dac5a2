"""Shared pieces of the reliability suite: serving an app on a real socket, fast clients,
table fingerprints, and the figures printed at the end of the run."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import contextmanager

from klaviyo_bridge.api.client import KlaviyoClient
from klaviyo_emulator.server import serving

#: Figures for the closing report (printed by conftest's terminal summary).
FIGURES: Counter = Counter()


@contextmanager
def serve_app(app, host: str = "127.0.0.1"):
    """The app on a real socket, quiet (injected resets would otherwise log tracebacks)."""
    with serving(app, host, name="faulty-emulator", log_level="critical") as url:
        yield url


def fast_client_class(read_timeout: float | None = None, waits: list | None = None):
    """A KlaviyoClient whose sleeps (backoff, Retry-After, rate-limit slots) are compressed to
    ~nothing and, optionally, with a read timeout below the settings' 30 s minimum. The retry
    *decisions* (which errors, how many retries, the wait schedule) are the client's own;
    the requested waits are recorded in ``waits``."""

    async def fast_sleep(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)
        await asyncio.sleep(0)

    class FastClient(KlaviyoClient):
        def __init__(self, settings, **kw):
            if read_timeout is not None:
                settings = settings.model_copy(update={"read_timeout": read_timeout})
            if kw.get("sleep") in (None, asyncio.sleep):  # the engines hand on their default, the real sleep
                kw["sleep"] = fast_sleep
            super().__init__(settings, **kw)

    return FastClient


def rows_of(warehouse, database: str, table: str) -> list[tuple]:
    """Every row as a tuple of reprs, sorted: equal lists mean equal tables (ids, values, multiplicity)."""
    t = warehouse.table_arrow(database, table)
    names = sorted(t.column_names)
    cols = [t.column(n).to_pylist() for n in names]
    return sorted(tuple(repr(c[i]) for c in cols) for i in range(t.num_rows))
