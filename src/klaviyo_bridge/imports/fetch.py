"""The one paging loop every stream goes through: tasks fetched concurrently, pages to batches.

A *task* is one cursor-paged request sequence: a filter variant (e.g. sms
campaigns) times a time window (or the whole range). Tasks run on a fixed pool
of workers sharing the client's per-operation rate limiter, so N windows keep
N requests in flight where one sequence would keep one. Finished pages become
Arrow batches immediately and wait in a bounded queue, so a slow warehouse
slows the fetch instead of filling memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..api.client import KlaviyoClient
from ..api.query import Condition, Query
from ..errors import MalformedResponse
from .columns import Column
from .decode import PageDecoder
from .flatten import attach_included, to_batch  # noqa: F401 (attach_included: re-exported)
from .partition import Window, keep_mask, window_filter
from .streams import Stream
from .suppression import is_derived, with_suppression


@dataclass(frozen=True)
class Task:
    """One request sequence: extra filter terms and, if trimming, the window to keep."""

    conditions: tuple[Condition, ...]
    trim_window: Window | None = None
    marks: dict[str, Any] = field(default_factory=dict)


@dataclass
class FetchStats:
    pages: int = 0
    records: int = 0
    trimmed: int = 0
    tasks: int = 0
    tasks_done: int = 0  # windows (or ids) fetched to their last page: the import's known total


def plan_tasks(
    stream: Stream,
    *,
    time_field: str | None,
    windows: Sequence[Window],
    extra_conditions: tuple[Condition, ...] = (),
) -> list[Task]:
    """Every (variant x window) combination; one task per variant when there is no time range."""
    tasks: list[Task] = []
    for variant in stream.variants:
        marks = {"_channel": next((c.value for c in variant if c.field == "messages.channel"), None)}
        base = (*stream.fixed_filters, *variant, *extra_conditions)
        if time_field is None or not windows:
            tasks.append(Task(base, None, marks))
            continue
        ops = stream.time_filter_ops(time_field)
        for window in windows:
            wf = window_filter(time_field, window, ops)
            tasks.append(Task((*base, *wf.conditions), window if wf.trim else None, marks))
    return tasks


class Fetcher:
    """Runs the tasks of one stream and yields typed batches."""

    def __init__(
        self,
        client: KlaviyoClient,
        stream: Stream,
        columns: Sequence[Column],
        *,
        time_column: str | None = None,
        path_params: dict[str, str] | None = None,
        concurrency: int = 8,
        marks: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.columns = list(columns)
        self.time_column = time_column
        self.path_params = path_params or {}
        self.concurrency = max(1, concurrency)
        self.marks = marks or {}
        self.stats = FetchStats()
        # derived columns are computed from the page afterwards (``trim``), not decoded
        self.decoder = PageDecoder([c for c in self.columns if not is_derived(c)], self.marks)

    def _query(self, task: Task) -> Query:
        s = self.stream
        return Query(
            filters=task.conditions,
            page_size=s.page_size(),
            fields={k: list(v) for k, v in s.fields.items()} if s.include or s.membership or s.sparse else {},
            additional_fields={k: list(v) for k, v in s.additional_fields.items()},
            include=s.include,
        )

    def decoder_for(self, task: Task) -> PageDecoder:
        return self.decoder.with_marks({k: v for k, v in task.marks.items() if v is not None})

    def trim(self, batch: pa.RecordBatch, task: Task) -> pa.RecordBatch:
        """Drop rows of a widened window that belong to its neighbours; add derived columns
        (profiles: ``suppressed``, ``suppressed_at``)."""
        batch = self._trim(batch, task)
        return with_suppression(batch) if self.stream.suppression else batch

    def _trim(self, batch: pa.RecordBatch, task: Task) -> pa.RecordBatch:
        if task.trim_window is None or not self.time_column or not batch.num_rows:
            return batch
        kept = batch.filter(keep_mask(batch.column(self.time_column), task.trim_window))
        self.stats.trimmed += batch.num_rows - kept.num_rows
        return kept

    async def _run_task(self, task: Task, out: asyncio.Queue[Any]) -> None:
        async for batch in self.client.decoded_pages(
            self.stream.operation_id, self.decoder_for(task), query=self._query(task), path_params=self.path_params
        ):
            self.stats.pages += 1
            batch = self.trim(batch, task)
            self.stats.records += batch.num_rows
            if batch.num_rows:
                await out.put(batch)

    async def batches(self, tasks: Sequence[Task], *, whole: Task | None = None) -> AsyncIterator[pa.RecordBatch]:
        """Yield batches as pages arrive; the first task error cancels the rest and is raised.

        ``whole``: one task over all of ``tasks``' range, tried first: when its first page is its
        only page, that page is the result and ``tasks`` are not run (a quiet account's run is one
        request, not one per window); otherwise the page is dropped and the tasks run."""
        if whole is not None:
            only, payload = await self.client.first_page_if_only(
                self.stream.operation_id, self.decoder_for(whole), query=self._query(whole), path_params=self.path_params
            )
            if only:  # (a page dropped is a request, not a page of the run's: as the oldest-record one)
                self.stats.pages += 1
                self.stats.tasks = self.stats.tasks_done = 1
                batch = self.trim(payload, whole)
                self.stats.records += batch.num_rows
                if batch.num_rows:
                    yield batch
                return
        self.stats.tasks = len(tasks)
        todo: asyncio.Queue[Task] = asyncio.Queue()
        for task in tasks:
            todo.put_nowait(task)
        # Decoded pages waiting for the writer, then the end marker. A worker that finds it full
        # holds its page and sends no request: pages decode faster than the writer inserts them on
        # a fast link (1M events: a few MB less at the peak than 2 pages per worker).
        out: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(2, self.concurrency // 2))
        done_marker = object()

        async def worker() -> None:
            while True:
                try:
                    task = todo.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await self._run_task(task, out)
                self.stats.tasks_done += 1

        async def run_all() -> None:
            try:
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(self.concurrency, len(tasks))):
                        group.create_task(worker())
            except BaseExceptionGroup as group_error:
                await out.put(done_marker)
                # Surface the first real failure (our error types), not the group wrapper.
                raise group_error.exceptions[0] from None
            # Cancelled (CancelledError passes through): the reader stopped and cancelled this;
            # nobody takes an end marker, and waiting for room for it in a full queue never ended.
            await out.put(done_marker)

        runner = asyncio.create_task(run_all())
        try:
            while True:
                item = await out.get()
                if item is done_marker:
                    break
                yield item
            await runner  # re-raises the first worker failure
        finally:
            if not runner.done():
                runner.cancel()
                try:
                    await runner
                except (asyncio.CancelledError, Exception):
                    pass


async def fetch_per_id(
    client: KlaviyoClient, stream: Stream, columns: Sequence[Column], ids: Sequence[str], concurrency: int = 8
) -> pa.RecordBatch:
    """event_metrics / event_profiles: one GET per event id, concurrently, as one batch."""
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(event_id: str) -> dict[str, Any]:
        async with slots:
            doc = await client.request(stream.operation_id, path_params={"id": event_id})
        data = doc.get("data", doc) if isinstance(doc, dict) else doc
        if data is not None and (not isinstance(data, dict) or not data.get("id")):
            raise MalformedResponse(
                f"{stream.operation_id} for event {event_id}: the answer has no resource "
                "with an id in 'data' (it would be stored as an empty row)",
                operation=stream.operation_id,
            )
        record = dict(data or {})
        record["_event_id"] = event_id
        return record

    records = await asyncio.gather(*(one(i) for i in ids))
    return to_batch(records, columns)
