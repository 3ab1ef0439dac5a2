"""Every PostgreSQL connection of ours probes a silent server after 30 s idle and gives up on it in
about a minute (libpq leaves it to the system: 2 hours before the first keepalive), unless the URL
says otherwise. Read from the connections' own sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from urllib.parse import urlsplit

import pytest

from klaviyo_bridge.store import open_warehouse
from klaviyo_bridge.store.pgconn import libpq_url
from klaviyo_bridge.store.rate_budget import PostgresBudget
from klaviyo_bridge.store.workers import connect
from klaviyo_bridge.workers import make_app

from .conftest import PG_URL

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads socket options through /proc")

DEFAULT = (1, 30, 10, 3, 0)  # no TCP_USER_TIMEOUT: a write to a slow reader is not cut off


def pg_sockets() -> dict[int, tuple[int, ...]]:
    """This process's TCP sockets to the test server, by local port: (SO_KEEPALIVE, TCP_KEEPIDLE,
    TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT) of each."""
    server_port = urlsplit(PG_URL).port or 5432
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getpeername()[1] == server_port:
                found[sock.getsockname()[1]] = (
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                )
        except OSError:  # not connected
            pass
        finally:
            sock.close()
    return found


def warehouse_settings(url: str) -> tuple[int, ...]:
    with open_warehouse(url) as wh, wh.transaction() as s:
        port = int(s.fetch("SELECT inet_client_port()")[0][0])
        return pg_sockets()[port]


def test_state_and_warehouse_connections_give_up_on_a_silent_server():
    assert warehouse_settings(PG_URL) == DEFAULT


def test_settings_in_the_url_win():
    sep = "&" if "?" in PG_URL else "?"
    assert warehouse_settings(f"{PG_URL}{sep}keepalives_idle=7&tcp_user_timeout=5000") == (1, 7, 10, 3, 5000)
    assert warehouse_settings(f"{PG_URL}{sep}keepalives=0")[0] == 0


def test_worker_and_rate_budget_connections_too():
    with connect(PG_URL) as con:
        port = con.execute("SELECT inet_client_port()").fetchone()[0]
        assert pg_sockets()[port] == DEFAULT
    before = pg_sockets()
    budget = PostgresBudget(PG_URL)
    try:
        opened = {port: got for port, got in pg_sockets().items() if port not in before}
        assert list(opened.values()) == [DEFAULT]
    finally:
        budget.close()


def test_the_url_keeps_what_it_had():
    """Appended, never re-encoded: values with escapes, a URL without a host, an empty query."""
    url = libpq_url("postgres://u:p%40ss@db.example:6543/klaviyo?options=-c%20statement_timeout%3D5000&keepalives_count=9")
    assert url == (
        "postgresql://u:p%40ss@db.example:6543/klaviyo?options=-c%20statement_timeout%3D5000&keepalives_count=9"
        "&keepalives=1&keepalives_idle=30&keepalives_interval=10"
    )
    assert libpq_url("postgresql:///test?host=/var/run/postgresql") == (
        "postgresql:///test?host=/var/run/postgresql&keepalives=1&keepalives_idle=30&keepalives_interval=10&keepalives_count=3"
    )
    assert libpq_url("postgresql://") == "postgresql://?keepalives=1&keepalives_idle=30&keepalives_interval=10&keepalives_count=3"
    assert (
        libpq_url("postgresql://h/db?")
        == "postgresql://h/db?keepalives=1&keepalives_idle=30&keepalives_interval=10&keepalives_count=3"
    )
    assert libpq_url("postgresql://h/db?keepalives=0") == "postgresql://h/db?keepalives=0"


def test_a_statement_option_in_the_url_still_reaches_the_server():
    sep = "&" if "?" in PG_URL else "?"
    with open_warehouse(f"{PG_URL}{sep}options=-c%20statement_timeout%3D4321") as wh, wh.transaction() as s:
        assert s.fetch("SELECT current_setting('statement_timeout')")[0][0] == "4321ms"


def test_the_task_engines_connections_too():
    async def opened_by_the_engine() -> dict[int, tuple[int, ...]]:
        before = pg_sockets()
        async with make_app(PG_URL).open_async() as app:
            await app.connector.execute_query_async("SELECT 1")
            return {port: got for port, got in pg_sockets().items() if port not in before}

    opened = asyncio.run(opened_by_the_engine())
    assert opened and set(opened.values()) == {DEFAULT}
