"""Run one import: config -> time range -> concurrent fetch -> warehouse, cursor with the data.

Time ranges are half-open, ``[start, end)``: a record stamped exactly at ``end``
belongs to the next run, which starts at ``end``, so consecutive incremental
runs neither skip nor repeat a record.

Incremental semantics (the seed's): a missing ``start_time`` means "where the
last successful run of this job ended", a missing ``end_time`` means "now"
(never later than now), and that end is saved as the job's cursor in the same
transaction as the rows, so a crash can never move the cursor past unwritten data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from ..api.client import AccountLimits, KlaviyoClient
from ..api.query import Query, equals
from ..config import ImportConfig, parse_time
from ..errors import ConfigError, error_dict
from ..store.warehouse import Warehouse
from .columns import Column
from .fetch import Fetcher, Task, fetch_per_id, plan_tasks
from .membership import group_ids, run_membership
from .metrics import resolve_ids
from .partition import Window, split
from .streams import PROFILE_ID_COLUMNS, PROFILE_IDS, Stream
from .streams import stream as stream_named

log = logging.getLogger("klaviyo_bridge.imports")

#: Request sequences in flight for a windowed stream. With ~150 ms per round trip, 8 kept
#: 1M events at 29k records/s; 16 reached 43k (32 gained nothing on 2 cores).
DEFAULT_CONCURRENCY = 16
#: Windows per concurrent worker: more windows than workers evens out skewed time ranges.
WINDOWS_PER_WORKER = 4
#: The default split never makes windows shorter than this: each window costs at least one
#: request, so an hourly incremental run of a quiet account sent 64 requests for one page.
MIN_WINDOW = timedelta(minutes=5)
#: Pages are written to the warehouse in inserts of whole multiples of this many rows, the last
#: insert taking the rest. Each insert has a fixed cost (measured on DuckDB: 1M rows took 3.9 s
#: in 1,000-row inserts, 1.4 s in 10,000-row ones), and every row waiting for an insert, or in
#: one, is held in memory. DuckDB 1.x left a part-filled row group per insert that was not a
#: whole row group (122,880 rows), which the next checkpoint rewrote; DuckDB 2.0 appends into
#: the open row group: on 300k events, quarter row groups made a 41 MB file where whole ones
#: made 57 MB, used less CPU, and peaked ~50 MB lower (benchmarks/import_vs_read_json.py).
#: An eighth of a row group: 1M events of ~2 KB (30 MB waiting per 15,360 rows) made the same
#: 147 MB file with the same CPU as a quarter, and peaked ~10 MB lower.
WRITE_ROWS = 15_360
#: An event import's range ends this long before "now" (and its cursor with it): Klaviyo may
#: return records stamped in the future (a sender's clock), and writes stamped a moment ago may
#: not be readable yet. The next run starts there anyway, minus the lookback.
SAFETY_MARGIN = timedelta(minutes=1)


@dataclass
class ImportResult:
    """What one run did; printed by the CLI and kept in the run history."""

    job: str
    database: str
    table: str
    data_source: str
    mode: str
    rows: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    seconds: float = 0.0
    start: datetime | None = None
    end: datetime | None = None
    run_id: str | None = None
    committed: bool = False  # the rows and the cursor are in the warehouse
    fetched: int = 0  # records received, also those not yet handed to the writer when a run stops
    joined: int | None = None  # membership history: rows opened and closed by this run
    left: int | None = None
    deleted: int | None = None  # detect_deleted: profiles newly found deleted in Klaviyo

    def summary(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        span = f", {self.start:%Y-%m-%d %H:%M:%S} .. {self.end:%Y-%m-%d %H:%M:%S} UTC" if self.start and self.end else ""
        return (
            f"{self.data_source} -> {self.database}.{self.table} ({self.mode}): {self.rows} rows, {self.pages} pages, "
            f"{self.requests} requests, {self.retries} retries, {self.throttled} throttled, "
            f"{self.seconds:.1f}s ({rate:,.0f} rows/s){span}"
            + (f"; {self.joined} joined, {self.left} left since the last run" if self.joined is not None else "")
            + (f"; {self.deleted} newly deleted in Klaviyo" if self.deleted is not None else "")
        )


def stopped_message(exc: BaseException, result: ImportResult) -> str:
    """The error to record for a run that did not end well, saying what was committed: the rows
    and the cursor go in one transaction at the end, so a run stopped before it wrote nothing."""
    interrupted = isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
    what = "stopped (Ctrl-C or a kill)" if interrupted else (str(exc) or type(exc).__name__)
    if result.committed:
        return f"{what}, after the commit: all {result.rows} records were written"
    return (
        f"{what}; nothing was committed: the {max(result.rows, result.fetched)} records fetched were discarded "
        "and the cursor did not move, so the next run starts where the last successful one ended"
    )


def effective_stream(config: ImportConfig) -> Stream:
    """The declared stream adjusted by settings (related objects, predictive analytics)."""
    source = config.source
    s = stream_named(source.data_source)
    if source.skip_related_object and s.include:
        s = dataclasses.replace(s, include=(), fields={})
    if source.predictive_analytics and s.operation_id in ("get_profiles", "get_profiles_for_list", "get_profiles_for_segment"):
        extra = tuple(sorted({*s.additional_fields.get("profile", ()), "predictive_analytics"}))
        s = dataclasses.replace(s, additional_fields={**s.additional_fields, "profile": extra})
    return s


PARTITION_COLUMN = "time"


def partition_column(columns: list[Column], key: str | None) -> str | None:
    """Check ``out.partition_key`` names a timestamp column; rows then get a ``time`` column
    (epoch seconds of that column), the seed platform's partitioning column."""
    if key is None:
        return None
    stamps = [c.name for c in columns if pa.types.is_timestamp(c.type)]
    if key not in stamps:
        raise ConfigError(
            f"out.partition_key {key!r} is not a timestamp column of this source; choose one of: {', '.join(stamps)}",
            key="partition_key",
        )
    return key


def with_partition(batch: pa.RecordBatch, key: str | None) -> pa.RecordBatch:
    if key is None:
        return batch
    seconds = pc.divide(pc.cast(pc.cast(batch.column(key), pa.timestamp("us", tz="UTC")), pa.int64()), 1_000_000)
    return batch.append_column(PARTITION_COLUMN, seconds)


def _time_column(columns: list[Column], api_field: str) -> str | None:
    for col in columns:
        if col.path == ("attributes", api_field):
            return col.name
    return None


async def _earliest(
    client: KlaviyoClient, s: Stream, api_field: str, path_params: dict[str, str]
) -> tuple[datetime | None, bool]:
    """Oldest value of the time field, to bound a full load, from one request sorted ascending;
    and whether that request's page held every record (a stream of one request sequence whose
    first page has no next link): then one window fetches it all, not one request per window."""
    if api_field not in s.op.sorts:
        return None, False
    for variant in s.variants[:1]:
        query = Query(
            filters=(*s.fixed_filters, *variant),
            sort=api_field,
            page_size=s.page_size(),
            # the few attributes the run reads (a membership's joined_group_at), not whole profiles
            fields={k: list(v) for k, v in s.fields.items()} if s.membership or s.sparse else {},
        )
        doc = await client.request(s.operation_id, query=query, path_params=path_params)
        data = (doc or {}).get("data") or []
        whole = len(s.variants) == 1 and not ((doc or {}).get("links") or {}).get("next")
        if data:
            value = (data[0].get("attributes") or {}).get(api_field)
            if value:
                return parse_time(value), whole
    return None, False


async def with_metrics(client: KlaviyoClient, s: Stream, config: ImportConfig) -> Stream:
    """An event stream limited to the configured metrics (``metric`` / ``metrics``): one request
    sequence per metric (Klaviyo's events filter takes one ``metric_id`` at a time)."""
    source = config.source
    choices = source.metric_choices()
    if not s.events or not choices:
        return s
    found = await resolve_ids(client, choices, key="metrics" if source.metrics else "metric")
    return dataclasses.replace(s, variants=tuple((equals("metric_id", m.id),) for m in found))


async def run_import(
    config: ImportConfig,
    warehouse: Warehouse,
    database: str,
    table: str,
    *,
    job: str | None = None,
    now: datetime | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    windows: int | None = None,
    on_batch: Callable[..., None] | None = None,
    run_id: str | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    limits: AccountLimits | None = None,
) -> ImportResult:
    """Fetch the configured source and write it to ``database.table`` with the configured mode.

    ``run_id``: a run ``StateStore.begin_job`` already recorded (a job run by ``jobs.execute_job``);
    the import records on it. Without it the import records a run of its own. The other
    dependencies are parameters too: the warehouse, ``now`` (the clock's reading), ``transport``
    (the client's HTTP transport), ``sleep`` (the client's waits: rate limits, retries) and
    ``limits`` (rate limiters shared with the command's other clients, ``api.client.AccountLimits``)."""
    target = config.target
    s = effective_stream(config)
    job = job or f"{database}.{table}"
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    result = ImportResult(job, database, table, s.name, target.mode)
    state = warehouse.state
    result.run_id = state.start_run(job, "import", run_id=run_id, begun=run_id is not None)
    started = time.perf_counter()
    try:
        await _run(
            config, s, warehouse, database, table, job, now, transport, concurrency, on_batch, result, windows, sleep, limits
        )
    except BaseException as exc:
        result.seconds = time.perf_counter() - started
        stopped = isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
        message = stopped_message(exc, result)[:2000]
        state.finish_run(
            result.run_id,
            "killed" if stopped else "error",
            rows_read=max(result.rows, result.fetched),
            rows_written=result.rows if result.committed else 0,
            error=message,
            error_detail=None if stopped else {**error_dict(exc), "message": message},
        )
        raise
    result.seconds = time.perf_counter() - started
    state.finish_run(result.run_id, "success", rows_read=result.rows, rows_written=result.rows)
    return result


async def _run(
    config: ImportConfig,
    s: Stream,
    warehouse: Warehouse,
    database: str,
    table: str,
    job: str,
    now: datetime,
    transport: httpx.AsyncBaseTransport | None,
    concurrency: int,
    on_batch: Callable[..., None] | None,
    result: ImportResult,
    window_count: int | None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    limits: AccountLimits | None = None,
) -> None:
    source, target = config.source, config.target
    columns = s.columns(related=not source.skip_related_object)
    path_params: dict[str, str] = {}
    marks: dict[str, str] = {}
    if s.id_setting:
        path_params["id"] = marks["_parent_id"] = getattr(source, s.id_setting)
    primary_key = target.primary_key or list(s.primary_key)
    partition_key = partition_column(columns, target.partition_key)

    async with KlaviyoClient(source.client_settings(), transport=transport, sleep=sleep, limits=limits) as client:
        if s.membership:
            result.end = now

            async def windows_for(
                client: KlaviyoClient,
                s: Stream,
                api_field: str | None,
                lo: datetime | None,
                hi: datetime | None,
                now: datetime,
                count: int,
                path: dict[str, str],
            ) -> list[Window]:
                return await _windows(
                    client, s, api_field, lo, hi, now, count, path, shortest=None if window_count else MIN_WINDOW
                )

            await run_membership(
                client,
                s,
                config,
                warehouse,
                database,
                table,
                job,
                now,
                concurrency,
                window_count or concurrency * WINDOWS_PER_WORKER,
                on_batch,
                result,
                windows_for,
            )
            st = client.stats
            result.requests, result.retries, result.throttled = st.requests, st.retries, st.throttled
            return
        s = await with_metrics(client, s, config)
        # Event imports re-read a lookback window: in append mode an event already stored is not
        # added again (merge mode updates it).
        writer_cm = warehouse.writer(database, table, target.mode, primary_key=primary_key, skip_existing=s.events)
        with writer_cm as writer:
            if s.per_event_id:
                batch = with_partition(await fetch_per_id(client, s, columns, source.event_ids, concurrency), partition_key)
                await asyncio.to_thread(writer.write, batch)
                result.rows, result.pages = batch.num_rows, len(source.event_ids)
                await asyncio.to_thread(writer.commit)
                result.committed = True
            else:
                extra = ()
                field_name = source.incremental_field or s.default_time_field
                api_field = s.time_fields.get(field_name) if field_name else None
                lo, hi = _bounds(config, job, warehouse, now)
                result.start, result.end = lo, hi
                whole: Task | None = None
                if lo is not None and hi is not None and lo >= hi:
                    tasks = []  # nothing new since the last run: no request at all
                else:
                    count = window_count or concurrency * WINDOWS_PER_WORKER
                    windows = await _windows(
                        client, s, api_field, lo, hi, now, count, path_params, shortest=None if window_count else MIN_WINDOW
                    )
                    tasks = plan_tasks(s, time_field=api_field if windows else None, windows=windows, extra_conditions=extra)
                    if lo is not None and not window_count and len(windows) > 1 and len(tasks) == len(windows):
                        # Tried first: a quiet account's run is its first page (docs/imports.md).
                        # Without a start, the oldest-record page has already shown there is more;
                        # windows the caller counted are all read, as asked.
                        (whole,) = plan_tasks(
                            s, time_field=api_field, windows=[Window(windows[0].start, windows[-1].end)], extra_conditions=extra
                        )
                time_col = _time_column(columns, api_field) if api_field else None
                fetcher = Fetcher(
                    client, s, columns, time_column=time_col, path_params=path_params, concurrency=concurrency, marks=marks
                )
                pending: list[pa.RecordBatch] = []
                pending_rows = 0
                writing: asyncio.Future[None] | None = None  # at most one insert in flight, in a thread

                async def drain() -> None:
                    nonlocal writing
                    if writing is not None:
                        done, writing = writing, None
                        await done  # raises the insert's error

                async def flush(last: bool = False) -> None:
                    """Hand the pending rows to the warehouse without stalling the fetch: the
                    previous insert must end first (one connection), but pages keep arriving
                    while this one runs (awaiting each insert cost 1M events 4 s of 20).
                    Until the last, only whole multiples of WRITE_ROWS go; the rest waits."""
                    nonlocal writing, pending, pending_rows
                    await drain()
                    cut = pending_rows if last else pending_rows - pending_rows % WRITE_ROWS
                    if cut:
                        rows = _as_table(pending)
                        rest = rows.slice(cut)
                        pending, pending_rows = rest.to_batches(), rest.num_rows
                        writing = asyncio.ensure_future(asyncio.to_thread(writer.write, rows.slice(0, cut)))

                try:
                    async for batch in _counted(fetcher.batches(tasks, whole=whole), fetcher, result):
                        if source.detect_deleted:
                            batch = not_deleted(batch)
                        pending.append(with_partition(batch, partition_key))
                        pending_rows += batch.num_rows
                        result.rows += batch.num_rows
                        if pending_rows >= WRITE_ROWS:
                            await flush()
                        if on_batch:
                            on_batch(batch.num_rows, fetcher.stats.pages, (fetcher.stats.tasks_done, fetcher.stats.tasks))
                    await flush(last=True)
                    await drain()
                finally:
                    if writing is not None:
                        # A failure elsewhere: the insert thread cannot be cancelled, so let it end
                        # before the writer rolls back on the same connection.
                        await asyncio.wait({writing})
                result.pages = fetcher.stats.pages
                if source.detect_deleted:
                    present = await sweep_profile_ids(client, now, concurrency, window_count)
                    writer.mark_absent("id", present, "deleted", "deleted_at", now)
                cursor = {job: hi.isoformat()} if source.incremental and hi else None
                await asyncio.to_thread(writer.commit, cursor)
                result.committed = True
                if source.detect_deleted:
                    result.deleted = writer.marked_absent
        st = client.stats
        result.requests, result.retries, result.throttled = st.requests, st.retries, st.throttled


def not_deleted(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A fetched profile exists: ``deleted`` false, ``deleted_at`` NULL (a merge resets them)."""
    n = batch.num_rows
    return batch.append_column("deleted", pa.array([False] * n, pa.bool_())).append_column(
        "deleted_at", pa.nulls(n, pa.timestamp("us", tz="UTC"))
    )


async def sweep_profile_ids(client: KlaviyoClient, now: datetime, concurrency: int, window_count: int | None) -> pa.Array:
    """Every profile id the account has now (Klaviyo lists no deleted profiles: a deletion is
    an id that stopped appearing). One request per 100 profiles, windows fetched side by side."""
    s = PROFILE_IDS
    count = window_count or concurrency * WINDOWS_PER_WORKER
    windows = await _windows(client, s, "created", None, None, now, count, {}, shortest=None if window_count else MIN_WINDOW)
    tasks = plan_tasks(s, time_field="created" if windows else None, windows=windows)
    fetcher = Fetcher(client, s, PROFILE_ID_COLUMNS, time_column="created", concurrency=concurrency)
    ids = [batch.column("id") async for batch in fetcher.batches(tasks)]
    return pa.concat_arrays(ids) if ids else pa.array([], pa.string())


async def _counted(
    batches: AsyncIterator[pa.RecordBatch], fetcher: Fetcher, result: ImportResult
) -> AsyncIterator[pa.RecordBatch]:
    """The fetcher's batches; ``result.fetched`` follows every record received (pages still queued
    for the writer included), so a stopped run reports what it had really fetched."""
    try:
        async for batch in batches:
            result.fetched = fetcher.stats.records
            yield batch
    finally:
        result.fetched = fetcher.stats.records


def _as_table(batches: list[pa.RecordBatch]) -> pa.Table:
    """One table of the pending pages; a page with ``extra_attributes`` (attributes the spec
    does not declare) adds that column, NULL for the other pages."""
    schema = batches[0].schema
    if all(b.schema.equals(schema) for b in batches):
        return pa.Table.from_batches(batches)
    return pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="default")


def _bounds(config: ImportConfig, job: str, warehouse: Warehouse, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The run's ``[lo, hi)``, with the seed's incremental rule.

    "If start time and/or end time is missing, the connector uses the end time from the
    previous run as new start time, and current system time as end time": so ``start_time``
    alone (the seed's own example) only bounds the first run, later runs resume at the cursor.
    Both given: that fixed window every time. Not incremental: the given times, if any.

    Event sources re-read ``lookback`` before the cursor (late events; never before
    ``start_time``) and end ``SAFETY_MARGIN`` before now, so neither a future-dated event nor
    one written a moment ago can move the cursor past events not yet readable.
    """
    source = config.source
    lo, hi = source.start_time, source.end_time
    if source.incremental:
        saved = warehouse.state.cursor(job)
        # (parse_time gives None only for no cursor: a saved one parses or raises)
        if (lo is None or hi is None) and (cursor_time := parse_time(saved)) is not None:
            resumed = cursor_time - source.lookback_span()
            lo, hi = (max(resumed, lo) if lo is not None else resumed), None
        limit = now - SAFETY_MARGIN if stream_named(source.data_source).events else now
        hi = min(hi or limit, limit)  # a cursor never points into the future
    return _utc(lo), _utc(hi)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(timezone.utc) if moment is not None else None


async def _windows(
    client: KlaviyoClient,
    s: Stream,
    api_field: str | None,
    lo: datetime | None,
    hi: datetime | None,
    now: datetime,
    count: int,
    path_params: dict[str, str],
    shortest: timedelta | None = None,
) -> list[Window]:
    """Up to ``count`` time windows to fetch side by side, none shorter than ``shortest``;
    [] means no time filter at all."""
    if api_field is None:
        return []
    ops = s.time_filter_ops(api_field)
    windowable = "less-than" in ops and ("greater-or-equal" in ops or "greater-than" in ops)
    if not (windowable and s.partition) or count <= 1:  # one window: where the records start does not matter
        return [Window(lo, hi)] if (lo or hi) else []
    a, whole = (lo, False) if lo else await _earliest(client, s, api_field, path_params)
    b = hi or now
    if a is None or a >= b:
        return [Window(lo, hi)] if (lo or hi) else []
    if shortest is not None:
        count = max(1, min(count, (b - a) // shortest))
        if whole:
            count = 1  # a quiet account's first run: everything came in one page
    return split(a, b, count, open_start=lo is None, open_end=hi is None)


async def preview_rows(config: ImportConfig, rows: int = 10, *, transport: httpx.AsyncBaseTransport | None = None) -> pa.Table:
    """The first ``rows`` rows the import would write (one page, no windows, nothing stored)."""
    source = config.source
    s = effective_stream(config)
    columns = s.columns(related=not source.skip_related_object)
    async with KlaviyoClient(source.client_settings(), transport=transport) as client:
        if s.per_event_id:
            return pa.Table.from_batches([await fetch_per_id(client, s, columns, source.event_ids[:rows])])
        path_params: dict[str, str] = {}
        marks: dict[str, str] = {}
        if s.id_setting:
            path_params["id"] = marks["_parent_id"] = getattr(source, s.id_setting)
        if s.membership:  # the members of the first group, as the current table would hold them
            groups, _ = await group_ids(client, s, config)
            if not groups:
                return pa.Table.from_batches([], schema=pa.schema([c.field() for c in columns]))
            path_params["id"] = marks["_parent_id"] = groups[0]
        extra = ()
        s = await with_metrics(client, s, config)
        # in.start_time / in.end_time bound the preview as they bound the import
        field_name = source.incremental_field or s.default_time_field
        api_field = s.time_fields.get(field_name) if field_name else None
        lo, hi = (t.astimezone(timezone.utc) if t is not None else None for t in (source.start_time, source.end_time))
        windows = [Window(lo, hi)] if api_field and (lo or hi) else []
        fetcher = Fetcher(
            client,
            s,
            columns,
            path_params=path_params,
            concurrency=1,
            marks=marks,
            time_column=_time_column(columns, api_field) if windows and api_field else None,
        )
        task = plan_tasks(s, time_field=api_field if windows else None, windows=windows, extra_conditions=extra)[0]
        batch, _ = await client.request(
            s.operation_id, query=fetcher._query(task), path_params=path_params, decode=fetcher.decoder_for(task)
        )
        return pa.Table.from_batches([fetcher.trim(batch, task)]).slice(0, rows)
