"""PostgreSQL state calls and writers reuse a connection an earlier one committed on (ADBC's connect
costs ~30 ms), reset first if it held more than a transaction (temporary tables, settings); a
connection that failed, held a lock or a query stream's search path, sat idle too long, or that the
server closed is not handed on."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from klaviyo_bridge.errors import StoreError
from klaviyo_bridge.store import open_warehouse
from klaviyo_bridge.store import postgres as pg
from klaviyo_bridge.store.identifiers import quote

from .conftest import PG_URL


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(pg.PostgresWarehouse, "clock", fake)
    return fake


@pytest.fixture
def pgwh(clock):
    wh = open_warehouse(PG_URL)
    yield wh
    wh.close()


@pytest.fixture
def pgdb(pgwh):
    """A schema of this test's own, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    with pgwh.transaction() as s:
        s.execute(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE")


def backend(wh) -> int:
    with wh.transaction() as s:
        return int(s.fetch("SELECT pg_backend_pid()")[0][0])


def still_on_server(pids) -> int:
    """How many of ``pids`` the server still lists; a closed connection's backend leaves a moment
    after the client closed it, so ask again (a bounded number of queries, no sleeping) until none."""
    with open_warehouse(PG_URL) as other, other.transaction() as s:
        for _ in range(2000):
            n = int(
                s.fetch(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", ["{" + ",".join(map(str, pids)) + "}"]
                )[0][0]
            )
            if n == 0:
                break
    return n


def test_state_calls_share_one_connection_until_the_warehouse_closes(pgwh):
    first = backend(pgwh)
    assert backend(pgwh) == first and backend(pgwh) == first
    pgwh.close()
    assert still_on_server([first]) == 0  # the closed warehouse's connection is gone from the server
    assert backend(pgwh) != first  # a closed warehouse still works: on a new connection


def test_a_failed_transaction_is_never_reused(pgwh):
    first = backend(pgwh)
    with pytest.raises(Exception):
        with pgwh.transaction() as s:
            assert int(s.fetch("SELECT pg_backend_pid()")[0][0]) == first
            s.execute("SELECT * FROM no_such_table_here")
    assert backend(pgwh) != first


def test_an_idle_connection_is_reused_only_while_fresh(pgwh, clock):
    first = backend(pgwh)
    clock.now += pg.IDLE_SECONDS - 1
    assert backend(pgwh) == first
    clock.now += pg.IDLE_SECONDS + 1
    assert backend(pgwh) != first


def test_concurrent_state_calls_get_connections_of_their_own(pgwh):
    with pgwh.transaction() as a, pgwh.transaction() as b:
        pa_, pb = (int(s.fetch("SELECT pg_backend_pid()")[0][0]) for s in (a, b))
    assert pa_ != pb
    kept = {backend(pgwh) for _ in range(3)}
    assert kept <= {pa_, pb}  # both went back for the next calls


def test_a_writers_connection_is_handed_on_without_its_stages(pgwh, pgdb):
    """A merge stages its rows in a temporary table on the writer's connection; once the run has
    committed, the connection goes to the next state call or writer with its stages dropped."""
    writers = []
    for n in (1, 2):  # the same stage name again: it would exist still if it had not been dropped
        with pgwh.writer(pgdb, "people", "merge") as w:
            writers.append(int(w.session.fetch("SELECT pg_backend_pid()")[0][0]))
            w.write(pa.table({"id": ["a", "b"], "n": [n, n]}))
            w.commit()
    assert writers[0] == writers[1]
    with pgwh.transaction() as s:
        assert int(s.fetch("SELECT pg_backend_pid()")[0][0]) == writers[0]
        temp = s.fetch("SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND pg_table_is_visible(oid)")[0][0]
        assert temp == 0
        assert int(s.fetch(f"SELECT sum(n) FROM {quote(pgdb)}.people")[0][0]) == 4


def test_a_writer_that_did_not_commit_gives_its_connection_to_no_one(pgwh, pgdb):
    with pgwh.writer(pgdb, "people", "merge") as w:
        writer_pid = int(w.session.fetch("SELECT pg_backend_pid()")[0][0])
        w.write(pa.table({"id": ["a"], "n": [1]}))  # and no commit: rolled back at the end
    assert writer_pid not in {backend(pgwh) for _ in range(3)}
    assert pgwh.table_columns(pgdb, "people") is None


def test_a_query_streams_search_path_stays_with_its_connection(pgwh, pgdb):
    pgwh.write(pgdb, "people", pa.table({"id": ["a"], "n": [1]}))
    stream = pgwh.stream_query("SELECT * FROM people", pgdb)
    assert [b.num_rows for b in stream] == [1]
    for _ in range(3):
        with pgwh.transaction() as s:
            assert s.fetch("SELECT current_setting('search_path')")[0][0] == '"$user", public'


def test_a_released_named_lock_is_free_for_everyone(pgwh):
    """Locks hold their own connection and close it on release: never kept with the lock held."""
    lock = pgwh.named_lock(f"list:test:{uuid.uuid4().hex}")
    assert lock.try_acquire({"run_id": "r1"})
    lock.release()
    for _ in range(3):
        backend(pgwh)
    with open_warehouse(PG_URL) as other:
        again = other.named_lock(lock.name.removeprefix("klaviyo-bridge:lock:"))
        assert again.try_acquire({"run_id": "r2"})
        again.release()


def temp_tables(session) -> int:
    return int(session.fetch("SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND pg_table_is_visible(oid)")[0][0])


def test_a_state_calls_landing_table_is_gone_before_the_connection_is_handed_on(pgwh):
    """Rows reach PostgreSQL through a temporary landing table: the next user of the connection (a
    user's query, another schedule's run) must not find the last rows there."""
    destination = f"list:test:{uuid.uuid4().hex}"
    members = pa.table({"profile_id": ["p1"], "email": ["secret@example.com"], "phone_number": [None], "external_id": [None]})
    first = backend(pgwh)
    try:
        pgwh.state.save_list_snapshot(destination, members, None, None)
        with pgwh.transaction() as s:
            assert int(s.fetch("SELECT pg_backend_pid()")[0][0]) == first
            assert temp_tables(s) == 0
            assert s.fetch("SELECT current_setting('TimeZone')")[0][0] == "UTC"
    finally:
        with pgwh.transaction() as s:
            s.execute("DELETE FROM _bridge.list_snapshots WHERE destination = $1", [destination])
            s.execute("DELETE FROM _bridge.list_snapshot_meta WHERE destination = $1", [destination])


def terminate(*pids: int) -> None:
    with open_warehouse(PG_URL) as other, other.transaction() as s:
        for pid in pids:
            s.fetch("SELECT pg_terminate_backend($1::int, 10000)", [pid])  # waits until it has ended


def test_connections_the_server_closed_are_not_handed_on(pgwh, clock):
    """A restart, a failover or idle_session_timeout closes kept connections: one unused for a
    while is asked first; and the first failure on one drops the others kept with it."""
    with pgwh.transaction() as a, pgwh.transaction() as b:
        pids = [int(s.fetch("SELECT pg_backend_pid()")[0][0]) for s in (a, b)]
    terminate(*pids)
    clock.now += pg.CHECK_AFTER_SECONDS + 0.5
    assert backend(pgwh) not in pids  # asked, found closed: a new connection, no error
    with pgwh.transaction() as a, pgwh.transaction() as b:
        pids = [int(s.fetch("SELECT pg_backend_pid()")[0][0]) for s in (a, b)]
    terminate(*pids)  # and used again at once, before the check is due
    with pytest.raises(StoreError):
        backend(pgwh)
    assert backend(pgwh) not in pids  # the other one was dropped with it


def test_connections_unused_too_long_are_closed_not_only_skipped(pgwh, clock):
    with pgwh.transaction() as a, pgwh.transaction() as b, pgwh.transaction() as c:
        old = [int(s.fetch("SELECT pg_backend_pid()")[0][0]) for s in (a, b, c)]
    for _ in range(3):  # a busy process: one call at a time keeps one connection warm
        clock.now += pg.IDLE_SECONDS / 2 + 1
        warm = backend(pgwh)
    assert warm in old
    assert still_on_server([pid for pid in old if pid != warm]) == 0  # the two left unused: closed


def test_after_close_connections_are_closed_after_use(pgwh):
    pgwh.close()
    first = backend(pgwh)
    assert backend(pgwh) != first


def test_a_failed_statement_keeps_the_other_connections(pgwh):
    """Bad SQL in a user's query fails that query; the connections kept beside it still answer and
    stay kept (only a connection the server closed drops them)."""
    with pgwh.transaction() as a, pgwh.transaction() as b:
        kept = {int(s.fetch("SELECT pg_backend_pid()")[0][0]) for s in (a, b)}
    with pytest.raises(StoreError):
        list(pgwh.stream_query("SELECT * FROM no_such_table_here"))
    assert backend(pgwh) in kept


def test_a_held_named_lock_waits_idle_not_in_a_transaction(pgwh):
    """A server's idle_in_transaction_session_timeout ends connections idle in a transaction, and
    with it the one-writer-per-list lock: the lock's connection must wait outside one."""
    lock = pgwh.named_lock(f"list:test:{uuid.uuid4().hex}")
    assert lock.try_acquire({"run_id": "r1"})
    try:
        pid = lock.holder()["postgres_pid"]
        with pgwh.transaction() as s:
            assert s.fetch("SELECT state FROM pg_stat_activity WHERE pid = $1", [pid])[0][0] == "idle"
    finally:
        lock.release()
