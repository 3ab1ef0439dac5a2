"""The shared rate budget in the PostgreSQL state: every process using one key books its
request slots here (``api/budget.py`` says why; this module owns the SQL).

One unlogged row per granted slot in ``_bridge.rate_slots`` (losing them in a crash only loses
the last minute's bookings), booked by ``_bridge.rate_reserve(bucket, counts, seconds,
not_before)``: under a transaction-scoped advisory lock on the bucket it finds, for each window,
the slot ``count`` back, books the earliest time that keeps them all (on the server's clock) and
returns the seconds to wait. Slots older than the longest window are deleted as it goes.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc_pg

from ..errors import ConfigError, StoreError
from ..secrets import redact_url
from .identifiers import STATE_SCHEMA
from .pgconn import libpq_url
from .postgres import _STATE_INIT_LOCK

S = STATE_SCHEMA

_SETUP = [
    f"CREATE SCHEMA IF NOT EXISTS {S}",
    f"CREATE UNLOGGED TABLE IF NOT EXISTS {S}.rate_slots (bucket TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS rate_slots_bucket_at ON {S}.rate_slots (bucket, at)",
    f"""CREATE OR REPLACE FUNCTION {S}.rate_reserve(p_bucket TEXT, p_counts INT[], p_seconds DOUBLE PRECISION[],
                                                     p_not_before DOUBLE PRECISION)
RETURNS DOUBLE PRECISION LANGUAGE plpgsql AS $fn$
DECLARE
  v_now DOUBLE PRECISION;
  v_at DOUBLE PRECISION;
  v_t DOUBLE PRECISION;
  v_longest DOUBLE PRECISION := 1;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('klaviyo-bridge:rate:' || p_bucket, 0));
  v_now := extract(epoch FROM clock_timestamp());
  v_at := v_now + p_not_before;
  SELECT max(at) INTO v_t FROM {S}.rate_slots WHERE bucket = p_bucket;
  IF v_t IS NOT NULL AND v_t > v_at THEN v_at := v_t; END IF;
  FOR i IN 1 .. array_length(p_counts, 1) LOOP
    IF p_seconds[i] > v_longest THEN v_longest := p_seconds[i]; END IF;
    SELECT at INTO v_t FROM {S}.rate_slots WHERE bucket = p_bucket
      ORDER BY at DESC OFFSET p_counts[i] - 1 LIMIT 1;
    IF FOUND AND v_t + p_seconds[i] > v_at THEN v_at := v_t + p_seconds[i]; END IF;
  END LOOP;
  INSERT INTO {S}.rate_slots (bucket, at) VALUES (p_bucket, v_at);
  IF random() < 0.02 THEN
    DELETE FROM {S}.rate_slots WHERE bucket = p_bucket AND at < v_now - v_longest - 1;
  END IF;
  RETURN v_at - v_now;
END
$fn$""",
]


class PostgresBudget:
    """Slots booked in the PostgreSQL state by one function call per request (autocommit)."""

    def __init__(self, url: str) -> None:
        self.name = redact_url(url)
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rate-budget")
        try:
            self._con = adbc_pg.connect(libpq_url(url), autocommit=True)
            self._cur = self._con.cursor()
            self._cur.execute("BEGIN")
            self._cur.execute(f"SELECT pg_advisory_xact_lock({_STATE_INIT_LOCK})")
            for sql in _SETUP:
                self._cur.execute(sql)
            self._cur.execute("COMMIT")
        except adbc_driver_manager.Error as exc:
            raise ConfigError(f"rate budget {self.name}: cannot use PostgreSQL ({exc})") from None

    def _reserve(self, bucket: str, windows: tuple[tuple[int, float], ...], not_before: float) -> float:
        counts = "{" + ",".join(str(int(n)) for n, _ in windows) + "}"
        seconds = "{" + ",".join(repr(float(t)) for _, t in windows) + "}"
        with self._lock:
            try:
                self._cur.execute(
                    f"SELECT {S}.rate_reserve($1, $2::int[], $3::float8[], $4)", [bucket, counts, seconds, float(not_before)]
                )
                return float(self._cur.fetchone()[0])
            except adbc_driver_manager.Error as exc:
                raise StoreError(f"rate budget {self.name}: {exc}") from None

    async def reserve(self, bucket: str, windows: tuple[tuple[int, float], ...], not_before: float) -> float:
        # A thread of its own: behind the default pool's warehouse writes a booking came back
        # late, and a request sent late lands among later bookings (a burst the server counts).
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._reserve, bucket, windows, not_before)

    def close(self) -> None:
        self._thread.shutdown(wait=False)
        with self._lock:
            try:
                self._cur.close()
                self._con.close()
            except adbc_driver_manager.Error:
                pass
