"""Run one export: query -> validate -> batches -> Klaviyo -> every row accounted for.

The flow of ``run_export``:

1. the query result is read whole (columnar) and checked: missing columns fail before anything
   is sent; invalid rows are skipped with their reason (``skip_invalid_records: true``) or fail
   the job with nothing sent (``false``);
2. the list is resolved (by id, or by name: looked up with a filter, created when missing);
3. valid rows are cut into batches by count and bytes and sent, several in flight at once; the
   client's shared limiter paces them to the operation's rate limits;
4. each batch's state is stored before and after sending (``sending`` -> ``sent`` -> ``done`` /
   ``failed``), so ``--resume RUN_ID`` never resends a batch Klaviyo accepted;
5. with ``wait_for_completion`` bulk import jobs are polled (backoff, their own rate limit) and
   their import errors read page by page and mapped back to input rows;
6. every input row gets one outcome in the state schema: accepted, rejected (Klaviyo's message),
   skipped (the reason), or submitted (sent, no confirmation to read).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..api.client import KlaviyoClient
from ..api.query import Query, any_of, format_value
from ..errors import ApiError, BridgeError, ExportError, InvalidRequest, RetriesExhausted, ServerError, TransportError
from ..memory import use_lean_arrow_pool
from ..store.identifiers import STATE_SCHEMA, quote
from ..store.warehouse import Warehouse
from .batching import Endpoint, endpoint_for, plan_batches
from .jobwatch import JobWatcher
from .operations import Prepared, check_columns, prepare
from .payloads import Payloads
from .settings import ExportSettings
from .summary import ExportSummary, export_summary
from .validate import SeenValues

log = logging.getLogger("klaviyo_bridge.exports")

FINAL_BATCH_STATES = ("done", "failed", "not_sent")
_ROW_POINTER = re.compile(r"^/data/(?:attributes/profiles/data/)?(\d+)(?:/|$)")
NO_JOB_REASON = "Klaviyo's subscription endpoints return no job to poll; submitted (202) without confirmation"


@dataclass
class ExportResult:
    run_id: str
    summary: ExportSummary
    list_id: str | None = None
    batches: int = 0
    failed_batches: int = 0
    resent: int = 0
    skipped_on_resume: int = 0
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    samples: list[Any] = field(default_factory=list)
    would_send: int = 0
    invalid: int = 0
    seconds: float = 0.0
    requests: int = 0


def _rows_table(index: np.ndarray, outcome: str, reasons: list[str | None] | str | None) -> pa.Table:
    n = len(index)
    if reasons is None or isinstance(reasons, str):
        reason_arr = pa.repeat(pa.scalar(reasons, pa.string()), n)
    else:
        reason_arr = pa.array(reasons, pa.string())
    return pa.table({"row_index": pa.array(index, pa.int64()), "outcome": pa.repeat(pa.scalar(outcome, pa.string()), n),
                     "reason": reason_arr})


def _profile_key(item: bytes) -> tuple[str, str | None]:
    """How a consent payload names its profile: ("email", x), else ("phone_number", y)."""
    attrs = orjson.loads(item).get("attributes") or {}
    return ("email", attrs["email"]) if attrs.get("email") else ("phone_number", attrs.get("phone_number"))


#: Stands for the items in a request envelope; replaced by the joined items without parsing them again.
_ITEMS = b'"\x00items\x00"'


def _body(settings: ExportSettings, endpoint: Endpoint, items: Payloads, list_id: str | None) -> bytes:
    """The request body: the envelope serialised around a marker, the items spliced in as they are."""
    head, tail = orjson.dumps(_envelope(settings, endpoint, orjson.Fragment(_ITEMS), list_id)).split(_ITEMS, 1)
    return b"".join((head, b"[", items.joined(), b"]", tail))


def _envelope(settings: ExportSettings, endpoint: Endpoint, fragment: orjson.Fragment, list_id: str | None) -> Any:
    if endpoint.operation_id == "bulk_import_profiles":
        data: dict[str, Any] = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": fragment}}}
        if list_id:
            data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
        return {"data": data}
    if endpoint.operation_id == "remove_profiles_from_list":
        return {"data": fragment}
    subscribe = endpoint.operation_id == "bulk_subscribe_profiles"
    attrs: dict[str, Any] = {"profiles": {"data": fragment}}
    if subscribe and settings.historical_consent:
        attrs["historical_import"] = True
    data = {"type": "profile-subscription-bulk-create-job" if subscribe else "profile-subscription-bulk-delete-job",
            "attributes": attrs}
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def _forget_rows(wh: Warehouse, batch_id: str) -> None:
    """Drop the row outcomes a killed run stored for a batch it never marked final: on resume they are
    recorded again, and each input row must have exactly one outcome (a kill -9 can land between
    storing a batch's rows and storing its final status, two separate transactions)."""
    with wh.transaction() as s:
        s.execute(f"DELETE FROM {quote(STATE_SCHEMA)}.export_row_ranges WHERE batch_id = $1", [batch_id])


def _row_positions(err: ApiError) -> dict[int, str] | None:
    """Positions in the batch that a 400 names, with Klaviyo's message; None if not all name rows."""
    if not err.errors:
        return None
    found: dict[int, str] = {}
    for item in err.errors:
        m = _ROW_POINTER.match(item.pointer or "")
        if not m:
            return None
        found.setdefault(int(m.group(1)), item.detail or item.title or item.code)
    return found


class _Export:
    def __init__(self, wh: Warehouse, settings: ExportSettings, run_id: str, client: KlaviyoClient,
                 sleep: Callable[[float], Awaitable[None]], clock: Callable[[], float],
                 poll_initial: float, progress: Callable[[str, int], None] | None) -> None:
        self.wh, self.settings, self.run_id, self.client = wh, settings, run_id, client
        self.sleep, self.clock = sleep, clock
        self.jobs = JobWatcher(client, sleep, clock, poll_initial)
        self.progress = progress or (lambda what, n: None)
        self.endpoint = endpoint_for(settings.operation, settings.consent_type)
        self.stop = False
        self.failed = 0
        self.resent = 0
        self.skipped_on_resume = 0
        self.list_id: str | None = None
        #: State writes (a DuckDB transaction each, a few ms) run here, one at a time and in order,
        #: instead of blocking the event loop while other batches' requests are in flight.
        self._recorder = ThreadPoolExecutor(1, thread_name_prefix="export-state")

    async def record(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._recorder, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.jobs.close()
        self._recorder.shutdown(wait=True)

    # --- list ----------------------------------------------------------------------------
    async def resolve_list(self, warnings: list[str]) -> str | None:
        s = self.settings
        if not s.list_value:
            return None
        if s.list_identify_type == "id":
            return s.list_value
        params = [("filter", f"equals(name,{format_value(s.list_value)})")]
        found = []
        async for item in _lists(self.client, params):
            found.append(item["id"])
        if len(found) > 1:
            raise ExportError(f"list name {s.list_value!r} is ambiguous: {len(found)} lists have it "
                              f"({', '.join(found[:5])}); use list_identify_type: id")
        if found:
            return found[0]
        if s.operation == "remove_profiles" or (s.operation == "batch_consent" and s.consent_type == "unsubscribed"):
            raise ExportError(f"no list named {s.list_value!r} in this Klaviyo account")
        doc = await self.client.request("create_list", json={"data": {"type": "list", "attributes": {"name": s.list_value}}})
        list_id = (doc or {}).get("data", {}).get("id")
        if not list_id:
            raise ExportError(f"creating list {s.list_value!r} returned no id")
        warnings.append(f"created list {s.list_value!r} ({list_id}); Klaviyo allows 150 list creations a day")
        return list_id

    # --- one batch -----------------------------------------------------------------------
    async def post(self, items: Payloads) -> str | None:
        op = self.endpoint.operation_id
        if op == "bulk_unsubscribe_profiles" and self.list_id:
            await self.unsubscribe_from_list(items)
            return None
        body = _body(self.settings, self.endpoint, items, self.list_id)
        path = {"id": self.list_id} if op == "remove_profiles_from_list" else None
        doc = await self.client.request(op, path_params=path, content=body)
        return (doc or {}).get("data", {}).get("id") if doc else None

    async def unsubscribe_from_list(self, items: Payloads) -> None:
        """Unsubscribe with a list, never resending blindly.

        Klaviyo unsubscribes a profile that is NOT in the given list from marketing globally. If
        an answer is lost after Klaviyo applied the request, its members have already left the
        list, and a plain retry would unsubscribe them everywhere. So membership is read before
        sending, and after a lost answer the profiles that were members and are gone now (the
        request reached them) are not sent again; the rest are, as the user asked.
        """
        op, retry = self.endpoint.operation_id, self.client.retry
        members_before = await self.member_keys(items)
        pending, attempts = items, 0
        while pending:
            try:
                await self.client.request(op, content=_body(self.settings, self.endpoint, pending, self.list_id),
                                          retry_lost=False)
                return
            except (ServerError, TransportError) as err:
                if attempts >= retry.retry_limit:
                    raise RetriesExhausted(f"{op} failed after {attempts + 1} attempts: {err}",
                                           attempts=attempts + 1, last_error=err) from err
                await self.sleep(retry.wait_for(err, attempts))
                attempts += 1
                members_now = await self.member_keys(pending)
                pending = pending.filter(np.array(
                    [not (_profile_key(it) in members_before and _profile_key(it) not in members_now) for it in pending],
                    dtype=bool))

    async def member_keys(self, items: Payloads) -> set[tuple[str, str]]:
        """(field, value) of the items' profiles (by email, else phone number) now in the list."""
        wanted: dict[str, set[str]] = {}
        for item in items:
            field, value = _profile_key(item)
            if value:
                wanted.setdefault(field, set()).add(value)
        found: set[tuple[str, str]] = set()
        for field, values in wanted.items():
            query = Query(filters=(any_of(field, sorted(values)),), page_size=100, fields={"profile": [field]})
            async for profile in self.client.records("get_profiles_for_list", path_params={"id": self.list_id},
                                                     query=query):
                found.add((field, (profile.get("attributes") or {}).get(field)))
        return found

    async def send(self, batch_id: str, index: np.ndarray, items: Payloads, sem: asyncio.Semaphore,
                   state: dict[str, Any] | None) -> None:
        st = self.wh.state
        op = self.endpoint.operation_id
        if state and state["status"] in FINAL_BATCH_STATES:
            self.skipped_on_resume += 1
            return
        job_id = state.get("job") if state else None
        if state:
            await self.record(_forget_rows, self.wh, batch_id)  # not final: whatever rows it stored are stored again below
        dropped_index: list[int] = []
        dropped_reason: list[str] = []
        keep = np.ones(len(index), dtype=bool)
        if not (state and state["status"] == "sent"):
            async with sem:
                if self.stop:
                    await self._not_sent(batch_id, index, "not sent: an earlier batch failed and stop_on_batch_failure is true")
                    return
                if state:
                    self.resent += 1  # it was 'sending' when the run died: Klaviyo may or may not have it
                await self.record(st.record_export_batch, batch_id, self.run_id, op, "sending", row_count=len(index))
                try:
                    try:
                        job_id = await self.post(items)
                    except InvalidRequest as err:
                        named = _row_positions(err)
                        if not named or len(named) >= len(items):
                            raise
                        for pos, why in sorted(named.items()):
                            keep[pos] = False
                            dropped_index.append(int(index[pos]))
                            dropped_reason.append(f"rejected by Klaviyo before sending: {why}")
                        items = items.filter(keep)
                        job_id = await self.post(items)  # the rest, once
                except (ApiError, RetriesExhausted) as err:
                    await self._fail(batch_id, index, str(err))
                    return
            await self.record(st.record_export_batch, batch_id, self.run_id, op, "sent", klaviyo_job_id=job_id)
            self.progress("sent", len(index))
        sent_index = index[keep]
        if dropped_index:
            await self.record(st.record_export_rows, batch_id, self.run_id,
                              _rows_table(np.array(dropped_index), "skipped", dropped_reason))
        if op == "bulk_import_profiles":
            if self.settings.wait_for_completion and job_id:
                table = await self.outcomes_of_job(job_id, sent_index, items if state is None else None)
            else:
                table = _rows_table(sent_index, "submitted",
                                    f"bulk import job {job_id} submitted; not waited for (wait_for_completion: false)")
        elif op == "remove_profiles_from_list":
            table = _rows_table(sent_index, "accepted", None)
        else:
            table = _rows_table(sent_index, "submitted", NO_JOB_REASON)
        failed_job = op == "bulk_import_profiles" and table.num_rows > 0 and \
            pc.sum(pc.equal(table.column("outcome"), "rejected")).as_py() == table.num_rows
        await self.record(st.finish_export_batch, batch_id, self.run_id, op, "failed" if failed_job else "done",
                          table, klaviyo_job_id=job_id)
        if failed_job:
            self.failed += 1
            if self.settings.stop_on_batch_failure:
                self.stop = True
        self.progress("done", len(index))

    async def _fail(self, batch_id: str, index: np.ndarray, message: str) -> None:
        self.failed += 1
        st = self.wh.state
        await self.record(st.finish_export_batch, batch_id, self.run_id, self.endpoint.operation_id, "failed",
                          _rows_table(index, "rejected", message), error=message[:2000])
        if self.settings.stop_on_batch_failure:
            self.stop = True

    async def _not_sent(self, batch_id: str, index: np.ndarray, reason: str) -> None:
        st = self.wh.state
        await self.record(st.record_export_rows, batch_id, self.run_id, _rows_table(index, "skipped", reason))
        await self.record(st.record_export_batch, batch_id, self.run_id, self.endpoint.operation_id, "not_sent",
                          row_count=len(index))

    # --- bulk import jobs ----------------------------------------------------------------
    async def outcomes_of_job(self, job_id: str, index: np.ndarray, items: Payloads | None) -> pa.Table:
        status, attrs = await self.jobs.wait(job_id, self.clock() + self.settings.wait_seconds)
        if attrs is None:
            return _rows_table(index, "submitted", f"bulk import job {job_id} still {status} when the waiting "
                               f"time ({self.settings.waiting_time_for_completion_millis} ms) ended")
        if status != "complete":
            return _rows_table(index, "rejected", f"bulk import job {job_id} ended {status}")
        if attrs.get("failed_count") == 0:
            # Nothing failed: no import-errors pages to read (they share the same 150/min limit).
            return _rows_table(index, "accepted", None)
        reasons: list[str | None] = [None] * len(index)
        by_email: dict[str, int] | None = None
        async for page in self.client.pages("get_errors_for_bulk_import_profiles_job", path_params={"id": job_id}):
            for err in page.data:
                a = err.get("attributes") or {}
                message = a.get("detail") or a.get("title") or a.get("code") or "rejected"
                m = _ROW_POINTER.match(((a.get("source") or {}).get("pointer")) or "")
                pos = int(m.group(1)) if m else None
                if pos is None or pos >= len(index):
                    email = ((a.get("original_payload") or {}).get("attributes") or {}).get("email")
                    if by_email is None and items is not None:
                        by_email = {}
                        for i, it in enumerate(items):
                            e = orjson.loads(it).get("attributes", {}).get("email")
                            if e:
                                by_email[e] = i
                    pos = (by_email or {}).get(email)
                if pos is not None and reasons[pos] is None:
                    reasons[pos] = f"rejected by Klaviyo: {message}"
        outcomes = ["accepted" if r is None else "rejected" for r in reasons]
        return pa.table({"row_index": pa.array(index, pa.int64()), "outcome": pa.array(outcomes, pa.string()),
                         "reason": pa.array(reasons, pa.string())})


async def _lists(client: KlaviyoClient, params: list[tuple[str, str]]):
    doc = await client.request("get_lists", params=params)
    while doc is not None:
        for item in doc.get("data") or []:
            yield item
        nxt = (doc.get("links") or {}).get("next")
        if not nxt:
            return
        doc = await client.request("get_lists", url=nxt)


def _invalid_message(counts: "_Counts", limit: int = 5) -> str:
    shown = "; ".join(f"row {int(i) + 1}: {r}" for i, r in counts.invalid_rows[:limit])
    more = counts.invalid - limit
    return (f"{counts.invalid} invalid row(s) and skip_invalid_records is false; nothing was sent. "
            f"{shown}{f'; and {more} more' if more > 0 else ''}")


def sample_payloads(prepared: Prepared, settings: ExportSettings, n: int = 3) -> list[Any]:
    return [orjson.loads(item) for item in prepared.items[:n]]


#: Rows validated and turned into payloads at a time (a few request batches' worth).
CHUNK_ROWS = 20_000
#: Source: an Arrow table, or a callable that opens the query and returns (schema, record batches);
#: called once more for the sending pass when invalid rows must fail the job before anything is sent.
Source = pa.Table | Callable[[], tuple[pa.Schema, Iterator[pa.RecordBatch]]]


def _open(source: Source) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if isinstance(source, pa.Table):
        return source.schema, iter(source.to_batches(max_chunksize=CHUNK_ROWS))
    return source()


#: The first chunk is smaller: the first request leaves as soon as one batch's rows are ready.
FIRST_CHUNK_ROWS = 10_000


def _chunks(batches: Iterator[pa.RecordBatch], schema: pa.Schema, rows: int = CHUNK_ROWS,
            first: int = FIRST_CHUNK_ROWS) -> Iterator[pa.Table]:
    """Chunks of fixed sizes whatever the reader's batch sizes (so batch ids are the same on resume)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    size = min(first, rows)
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= size:
            table = pa.Table.from_batches(pending, schema=schema)
            yield table.slice(0, size).combine_chunks()
            rest = table.slice(size)
            pending = rest.to_batches() if rest.num_rows else []
            count = rest.num_rows
            size = rows
    if count:
        yield pa.Table.from_batches(pending, schema=schema).combine_chunks()


def _prepared_chunks(source: Source, settings: ExportSettings,
                     opened: tuple[pa.Schema, Iterator[pa.RecordBatch]] | None = None) -> Iterator[tuple[int, Prepared]]:
    """(offset of the chunk in the input, the chunk prepared with input-wide row indexes)."""
    schema, batches = opened or _open(source)
    check_columns(schema, settings)  # before anything: missing column -> no run, nothing sent
    seen = SeenValues()
    offset = 0
    for chunk in _chunks(batches, schema):
        p = prepare(chunk, settings, seen=seen)
        p.row_index = p.row_index + offset
        p.skipped_index = p.skipped_index + offset
        yield offset, p
        offset += chunk.num_rows
    if offset == 0:
        empty = schema.empty_table()
        yield 0, prepare(empty, settings, seen=seen)


class _Counts:
    def __init__(self) -> None:
        self.rows = self.valid = self.invalid = self.batches = 0
        self.invalid_rows: list[tuple[int, str]] = []
        self.warnings: list[str] = []


async def _validate_all(source: Source, settings: ExportSettings,
                        opened: tuple[pa.Schema, Iterator[pa.RecordBatch]] | None = None) -> tuple[_Counts, list[Any]]:
    """A validation pass over the whole input (dry run; skip_invalid_records false), nothing kept but counts."""
    counts, samples = _Counts(), []
    endpoint = endpoint_for(settings.operation, settings.consent_type)
    it = _prepared_chunks(source, settings, opened)
    while True:
        got = await asyncio.to_thread(next, it, None)
        if got is None:
            break
        _, p = got
        if not counts.warnings:
            counts.warnings = list(p.warnings)
        counts.rows += p.total
        counts.valid += len(p.items)
        counts.invalid += len(p.skipped_index)
        counts.invalid_rows += list(zip(p.skipped_index.tolist(), p.skipped_reason))[: max(0, 20 - len(counts.invalid_rows))]
        counts.batches += len(plan_batches(_sizes(p.items), endpoint))
        if len(samples) < 3:
            samples += sample_payloads(p, settings, 3 - len(samples))
    return counts, samples


def _sizes(items: Payloads) -> np.ndarray:
    return items.sizes()


async def run_export(
    wh: Warehouse,
    table: Source,
    settings: ExportSettings,
    *,
    job: str = "query",
    run_id: str | None = None,
    resume: bool = False,
    dry_run: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    poll_initial: float = 0.1,
    progress: Callable[[str, int], None] | None = None,
) -> ExportResult:
    """Export ``table`` (a query result, or a source streaming it) and record every row's outcome.

    The input is read, validated and turned into payloads a chunk at a time; a bounded number of
    batches is in flight, and a batch's payloads are dropped once its outcome is recorded.
    """
    started = time.perf_counter()
    use_lean_arrow_pool()
    endpoint = endpoint_for(settings.operation, settings.consent_type)
    opened: tuple[pa.Schema, Iterator[pa.RecordBatch]] | None = await asyncio.to_thread(_open, table)
    try:
        check_columns(opened[0], settings)  # before anything: missing column -> no run, nothing sent
    except BaseException:
        close = getattr(opened[1], "close", None)
        if close is not None:
            close()  # release the query's session now, not when the garbage collector gets to it
        raise
    if dry_run:
        counts, samples = await _validate_all(table, settings, opened)
        summary = ExportSummary(run_id="(dry run)", total=counts.rows,
                                counts={"would_send": counts.valid, "invalid": counts.invalid})
        result = ExportResult("(dry run)", summary, batches=counts.batches, warnings=counts.warnings, dry_run=True,
                              samples=samples, would_send=counts.valid, invalid=counts.invalid,
                              seconds=time.perf_counter() - started)
        result.invalid_rows = counts.invalid_rows  # type: ignore[attr-defined]
        return result
    if not settings.skip_invalid_records:
        # Invalid rows fail the job with nothing sent: validate everything first (a pass that keeps
        # only counts), then read the input again to send it.
        pre, _ = await _validate_all(table, settings, opened)
        opened = None  # read again to send
    else:
        pre = None

    st = wh.state
    states: dict[str, dict[str, Any]] = {}
    if resume:
        if not run_id:
            raise ExportError("--resume needs the run id")
        st.reopen_run(run_id)
        for b in st.export_batches(run_id):
            states[b.batch_id] = {"status": b.status, "job": b.klaviyo_job_id, "rows": b.row_count}
    else:
        run_id = st.start_run(job, "export", run_id=run_id or uuid.uuid4().hex)
    assert run_id is not None
    client = KlaviyoClient(settings.client_settings(), transport=transport, sleep=sleep)
    ex = _Export(wh, settings, run_id, client, sleep, clock, poll_initial, progress)
    warnings: list[str] = list(pre.warnings) if pre else []
    rows_read = valid = invalid = seq = 0
    try:
        invalid_id = f"{run_id}-invalid"
        if pre is not None and pre.invalid:
            if invalid_id not in states:
                if resume:
                    _forget_rows(wh, invalid_id)
                    _forget_rows(wh, f"{run_id}-unsent")
                async for _, p in _aiter(_prepared_chunks(table, settings)):
                    st.record_export_rows(invalid_id, run_id, _rows_table(p.skipped_index, "skipped", p.skipped_reason))
                    st.record_export_rows(f"{run_id}-unsent", run_id, _rows_table(
                        p.row_index, "skipped", "not sent: other rows are invalid and skip_invalid_records is false"))
                st.record_export_batch(invalid_id, run_id, "validation", "not_sent", row_count=pre.invalid)
            raise ExportError(_invalid_message(pre))
        sem = asyncio.Semaphore(settings.concurrency)
        #: Batches whose payloads are held (being sent, or waiting for their job): bounds memory.
        held = asyncio.Semaphore(max(2 * settings.concurrency, 8))
        tasks: set[asyncio.Task] = set()
        errors: list[BaseException] = []

        async def one(batch_id: str, index: np.ndarray, items: Payloads, state: dict[str, Any] | None) -> None:
            try:
                await ex.send(batch_id, index, items, sem, state)
            except BaseException as exc:  # noqa: BLE001 - re-raised after the others finish
                errors.append(exc)
            finally:
                held.release()

        listed = False
        invalid_seq = 0
        async for offset, p in _aiter(_prepared_chunks(table, settings, opened)):
            if not warnings and p.warnings:
                warnings = list(p.warnings)
            rows_read += p.total
            valid += len(p.items)
            invalid += len(p.skipped_index)
            ex.progress("validated", p.total)
            if len(p.skipped_index):
                bid = invalid_id if invalid_seq == 0 else f"{invalid_id}-{invalid_seq:05d}"
                invalid_seq += 1
                if bid not in states:
                    if resume:
                        await ex.record(_forget_rows, wh, bid)
                    await ex.record(st.record_export_rows, bid, run_id, _rows_table(
                        p.skipped_index, "skipped", [f"invalid: {r}" for r in p.skipped_reason]))
                    await ex.record(st.record_export_batch, bid, run_id, "validation", "done",
                                    row_count=len(p.skipped_index))
            slices = plan_batches(_sizes(p.items), endpoint)
            if slices and not listed:
                ex.list_id = await ex.resolve_list(warnings)
                listed = True
            for a, b in slices:
                batch_id = f"{run_id}-b{seq:05d}"
                seq += 1
                state = states.get(batch_id)
                if state and state.get("rows") not in (None, b - a):
                    warnings.append(f"batch {batch_id} had {state['rows']} rows, now {b - a}: the query result "
                                    "changed since the first attempt (give the query an ORDER BY to resume safely)")
                await held.acquire()
                task = asyncio.ensure_future(one(batch_id, p.row_index[a:b], p.items[a:b], state))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            del p
        if tasks:
            await asyncio.gather(*list(tasks))
        if errors:
            raise errors[0]
        summary = export_summary(wh, run_id)
        status = "failed" if ex.failed and settings.stop_on_batch_failure else "succeeded"
        st.finish_run(run_id, status, rows_read=rows_read,
                      rows_written=summary.counts.get("accepted", 0) + summary.counts.get("submitted", 0),
                      counts=summary.counts, error=f"{ex.failed} batch(es) failed" if ex.failed else None)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, BridgeError) else f"{type(exc).__name__}: {exc}"
        try:
            st.finish_run(run_id, "failed", rows_read=rows_read or (pre.rows if pre else 0), error=message[:2000])
        except Exception:  # pragma: no cover - keep the original error
            log.exception("could not record the failed run")
        raise
    finally:
        await client.aclose()
        ex.close()
    if settings.operation == "batch_consent":
        warnings.append("subscription changes: " + NO_JOB_REASON)
    return ExportResult(run_id, summary, list_id=ex.list_id, batches=seq, failed_batches=ex.failed,
                        resent=ex.resent, skipped_on_resume=ex.skipped_on_resume, warnings=warnings,
                        would_send=valid, invalid=invalid,
                        seconds=time.perf_counter() - started, requests=client.stats.requests)


async def _aiter(it: Iterator[Any]):
    """Iterate a CPU-bound generator in a worker thread, so requests in flight keep moving."""
    while True:
        got = await asyncio.to_thread(next, it, _END)
        if got is _END:
            return
        yield got


_END = object()
