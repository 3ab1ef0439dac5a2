"""Run one export: query -> validate -> batches -> Klaviyo -> every row accounted for.

The runner drives any operation (``ops/``) and names none. The flow of ``run_export``:

1. the destination is checked before the query runs: a list given by id is read once (a
   missing list, a rejected key or an unreachable host fail the run here, with status
   ``error``); a list given by name is looked up (and created later, when rows are sent);
2. the export takes the list's lock (one writer per list, across processes: ``store/locks.py``),
   waiting for another export on the same list, or failing after ``list_lock_timeout_seconds``;
3. the query result is read a chunk at a time (by rows and bytes) and checked: missing columns
   fail before anything is sent; invalid rows are skipped with their reason
   (``skip_invalid_records: true``) or fail the job with nothing sent (``false``); every row's
   identifier is stored beside its position;
4. valid rows are cut into batches by count and bytes and sent, several in flight at once. Each
   batch first passes its operation's ``presend`` check (list membership for a list unsubscribe);
   its state is stored before and after sending (``sending`` -> ``sent`` -> ``done``/``failed``),
   with a fingerprint of its rows, so ``--resume`` matches batches by content and refuses a
   changed input;
5. a consent write whose answer is unclear is never resent blind: Klaviyo is given
   ``consent_settle_seconds``, its state is read back, rows that show the change are
   ``accepted``, the rest go through ``presend`` again before any resend, and rows still unclear
   after the retry limit end ``unconfirmed``;
6. with ``wait_for_completion`` bulk import jobs are polled and their errors mapped back to rows;
7. the run's status is honest: ``error`` when nothing sent was accepted, no row was valid,
   ``stop_on_batch_failure`` tripped, the destination or key failed; ``success`` otherwise, with
   exit code 3 (``ExportResult.exit_code``) when rows were rejected or unconfirmed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeAlias, TypeGuard, TypeVar

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..api.client import AccountLimits, KlaviyoClient
from ..api.query import format_value
from ..errors import (
    ApiError,
    AuthError,
    BridgeError,
    ExportBusy,
    ExportError,
    ExportFailed,
    InvalidRequest,
    NotFound,
    Problem,
    RetriesExhausted,
    ServerError,
    TransportError,
    error_dict,
)
from ..memory import release_free_memory
from ..store.locks import NamedLock
from ..store.warehouse import Warehouse
from .batching import plan_batches
from .jobwatch import JobWatcher
from .ops import BatchContext, Operation, Prepared, RunContext, operation_for
from .payloads import Payloads
from .settings import ExportSettings
from .summary import ExportSummary, export_summary
from .validate import SeenValues

log = logging.getLogger("klaviyo_bridge.exports")

FINAL_BATCH_STATES = ("done", "failed", "not_sent")
#: The ``operation`` of a batch of rows an operation held back (``Operation.hold_back``).
HELD = "held"
#: A batch sent whose answer was unclear, or that was being sent when the run died.
UNCLEAR_BATCH_STATES = ("sending", "unclear")
#: A pointer into a batch's items: /data/3, /data/attributes/profiles/data/3/..., or
#: /data/attributes/events-bulk-create/data/3/...
_ROW_POINTER = re.compile(r"^/data/(?:attributes/[^/]+/data/)?(\d+)(?:/|$)")
#: Exit code of a run that ended ``success`` with rows rejected or unconfirmed.
EXIT_PARTIAL = 3
CONFIRMED_REASON = "confirmed by reading Klaviyo back after an unclear answer"
#: A row the check before sending held back when its batch was sent, that the check would send now
#: (a resume records that batch's outcomes; it sends nothing).
HELD_BACK_BEFORE = "not sent: the check before sending held it back when its batch was sent; run the export again to send it"


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
    status: str = "success"
    error: str | None = None
    invalid_rows: list[tuple[int, str]] = field(default_factory=list)
    #: What the operation reports (a mirror's counts and samples), one line each.
    details: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0; 3 when the run succeeded with rows rejected or unconfirmed; 1 for ``error``."""
        if self.status != "success":
            return 1
        c = self.summary.counts
        return EXIT_PARTIAL if (c.get("rejected") or c.get("unconfirmed")) else 0

    def partial_warning(self) -> str | None:
        c = self.summary.counts
        if self.status != "success" or not (c.get("rejected") or c.get("unconfirmed")):
            return None
        parts = [f"{c[k]:,} {k}" for k in ("rejected", "unconfirmed") if c.get(k)]
        return f"{' and '.join(parts)} row(s): see job:show {self.run_id} --rows (exit code {EXIT_PARTIAL})"


def _rows_table(index: np.ndarray, outcome: str | list[str], reasons: Sequence[str | None] | str | None) -> pa.Table:
    n = len(index)
    if reasons is None or isinstance(reasons, str):
        reason_arr = pa.repeat(pa.scalar(reasons, pa.string()), n)
    else:
        reason_arr = pa.array(reasons, pa.string())
    outcome_arr = pa.repeat(pa.scalar(outcome, pa.string()), n) if isinstance(outcome, str) else pa.array(outcome, pa.string())
    return pa.table({"row_index": pa.array(index, pa.int64()), "outcome": outcome_arr, "reason": reason_arr})


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else _rows_table(np.zeros(0, np.int64), "accepted", None)


def _forget_rows(wh: Warehouse, batch_id: str) -> None:
    """Drop the row outcomes a killed run stored for a batch it never marked final: on resume they are
    recorded again, and each input row must have exactly one outcome (a kill -9 can land between
    storing a batch's rows and storing its final status, two separate transactions)."""
    wh.state.forget_export_rows(batch_id)


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


def batch_fingerprint(identity: list[str | None], index: np.ndarray) -> str:
    """What a batch holds: its rows' positions and identifiers (resume matches batches on it)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(index, dtype=np.int64).tobytes())
    for ident in identity:
        h.update(b"\x00" if ident is None else ident.encode() + b"\x01")
    return h.hexdigest()


def run_fingerprint(settings: ExportSettings, query: str | None, schema: pa.Schema | None) -> dict[str, Any]:
    """What a ``--resume`` must find unchanged: query text, operation, destination, settings (keys aside)."""
    data = settings.model_dump(mode="json")
    data.pop("api_token", None)
    data.pop("api_key", None)
    text = query.strip() if query is not None else None
    return {
        "query": hashlib.sha256(text.encode()).hexdigest() if text is not None else None,
        "columns": list(schema.names) if schema is not None else None,
        "operation": settings.operation,
        "destination": f"{settings.list_identify_type}:{settings.list_value}" if settings.list_value else None,
        "settings": data,
    }


def fingerprint_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    if before.get("query") != now.get("query"):
        out.append("the query text")
    if before.get("columns") != now.get("columns"):
        out.append(f"the query's columns ({', '.join(before.get('columns') or [])} -> {', '.join(now.get('columns') or [])})")
    if before.get("operation") != now.get("operation"):
        out.append(f"the operation ({before.get('operation')} -> {now.get('operation')})")
    if before.get("destination") != now.get("destination"):
        out.append(f"the destination ({before.get('destination')} -> {now.get('destination')})")
    a, b = before.get("settings") or {}, now.get("settings") or {}
    for key in sorted(set(a) | set(b)):
        if key in ("operation", "list_value", "list_identify_type"):
            continue
        if a.get(key) != b.get(key):
            out.append(f"setting {key} ({json.dumps(a.get(key))} -> {json.dumps(b.get(key))})")
    return out


@dataclass
class _Batch:
    batch_id: str
    index: np.ndarray
    items: Payloads
    fingerprint: str
    state: dict[str, Any] | None


_T = TypeVar("_T")

#: A bulk import job to wait for: (job id, its rows' input indexes). The payloads are not kept:
#: an error that names no row is matched to one by the email stored with the run's identifiers.
_JobWait: TypeAlias = tuple[str, np.ndarray]
#: Batches out at once, from being handed to ``send`` to their rows' last outcome (most of them
#: waiting for their bulk import jobs, holding only their rows' indexes: ~80 KB each). Two pages of
#: the newest jobs show them (``JobWatcher`` reads up to three): with jobs that take T seconds, up
#: to 200/T batches a second go out (10/s, the endpoint's burst, up to T = 20 s).
BATCHES_OUT = 200
_NO_PAYLOADS = Payloads(pa.array([], pa.binary()))


class _Sender:
    """Sends batches of one operation and records every row's outcome."""

    def __init__(
        self,
        wh: Warehouse,
        op: Operation,
        run_id: str,
        client: KlaviyoClient,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        poll_initial: float,
        progress: Callable[[str, int], None] | None,
    ) -> None:
        self.wh, self.op, self.settings, self.run_id, self.client = wh, op, op.settings, run_id, client
        self.sleep, self.clock = sleep, clock
        self.jobs = JobWatcher(client, sleep, clock, poll_initial)
        self.progress = progress or (lambda what, n: None)
        self.stop = False
        self.failed = 0
        self.resent = 0
        self.skipped_on_resume = 0
        self.attempted = 0  # rows that went out in a request (after presend)
        self.check_failed = 0  # rows not sent because the check before sending could not be made
        self.list_id: str | None = None
        self.fatal: BaseException | None = None
        #: Batches handed to ``send`` whose request has not been answered yet (or that were not sent).
        self.posting = 0
        #: Input rows read so far, over every phase (what a stopped run says it had read).
        self.rows_seen = 0
        self._input_done = False
        #: State writes (a DuckDB transaction each, a few ms) run here, one at a time and in order,
        #: instead of blocking the event loop while other batches' requests are in flight.
        self._recorder = ThreadPoolExecutor(1, thread_name_prefix="export-state")

    @property
    def ctx(self) -> BatchContext:
        return BatchContext(self.client, self.list_id, self.sleep, self.clock)

    async def record(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._recorder, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.jobs.close()
        self._recorder.shutdown(wait=True)

    # --- one batch -----------------------------------------------------------------------
    async def post(self, items: Payloads) -> str | None:
        op = self.op
        doc = await self.client.request(
            op.endpoint.operation_id,
            path_params=op.path_params(self.list_id),
            content=op.body(items, self.list_id),
            retry_lost=not op.consent,
        )
        return (doc or {}).get("data", {}).get("id") if doc else None

    def input_open(self) -> None:
        """Batches are being read and handed to ``send`` (a phase begins)."""
        self._input_done = False
        self.jobs.more_coming()

    def input_done(self) -> None:
        """Every batch of the phase has been handed to ``send`` (``posting`` counted each one)."""
        self._input_done = True
        self._maybe_all_added()

    def _maybe_all_added(self) -> None:
        if self._input_done and self.posting == 0:
            self.jobs.all_added()

    async def send(self, batch: _Batch, sem: asyncio.Semaphore, payload_done: Callable[[], None]) -> None:
        """Send one batch (counted in ``posting`` by the caller) and record its rows' outcomes;
        ``payload_done`` is called once its payloads are no longer needed (before any job wait)."""
        try:
            sent = await self._send_request(batch, sem)
        finally:
            self.posting -= 1
            self._maybe_all_added()
            batch.items = _NO_PAYLOADS
            payload_done()
        if sent is None:
            return
        table, job_id, jobs = sent
        if jobs:
            # Outside the sending slots: waiting for a bulk import job must not keep the next
            # batches from going out (it held 8 slots of 10 per second's POSTs).
            waited = await self._or_failed(batch, self._job_outcomes(jobs))
            if waited is None:
                return
            table = _concat([table, *waited])
        await self._finish(batch, table, job_id)

    async def _send_request(self, batch: _Batch, sem: asyncio.Semaphore) -> tuple[pa.Table, str | None, list[_JobWait]] | None:
        """The batch's request: (outcomes so far, job id, jobs to wait for), or None when the batch
        was settled without one (final on resume, not sent, failed)."""
        state = batch.state
        if state and state["status"] in FINAL_BATCH_STATES:
            self.skipped_on_resume += 1
            return None
        if state:
            await self.record(_forget_rows, self.wh, batch.batch_id)  # not final: its rows are stored again below
        if self.stop:
            await self._not_sent(batch, "not sent: an earlier batch failed and stop_on_batch_failure is true")
            return None
        if state and state["status"] == "sent":
            job_id = state.get("job")
            if self._waits_for_job(job_id) and not self.op.consent:
                return _concat([]), job_id, [(job_id, batch.index)]  # waited for once its payloads are let go
            await self._finish(batch, await self._sent_before(batch, job_id), job_id)
            return None
        jobs: list[_JobWait] = []
        async with sem:
            if self.stop:
                await self._not_sent(batch, "not sent: an earlier batch failed and stop_on_batch_failure is true")
                return None
            unclear = bool(state and state["status"] in UNCLEAR_BATCH_STATES)
            delivered = await self._or_failed(batch, self._deliver(batch, unclear=unclear, jobs=jobs))
            if delivered is None:
                return None
            table, job_id = delivered
        return table, job_id, jobs

    async def _sent_before(self, batch: _Batch, job_id: str | None) -> pa.Table:
        """The outcomes of a batch an earlier attempt sent and did not record (it was stopped in
        between). For a consent write only the rows saved with the batch went out; the check before
        sending held the others back, and is asked again for their reasons. Nothing is sent here."""
        index = batch.index
        went = np.ones(len(index), dtype=bool)
        if self.op.consent:
            sent_rows = await self.record(self.wh.state.export_plan, self.run_id, f"sent:{batch.batch_id}")
            if sent_rows is not None:
                went = np.isin(index, np.asarray(sent_rows, dtype=index.dtype))
        done = [await self.sent_outcomes(job_id, index[went], None)]
        if not went.all():
            kept, _ = await self._presend(index[~went], batch.items.filter(~went), done)
            if len(kept):  # a member now, not when the batch was sent: not sent by a resume
                done.append(_rows_table(kept, "skipped", HELD_BACK_BEFORE))
        return _concat(done)

    async def _or_failed(self, batch: _Batch, work: Awaitable[_T]) -> _T | None:
        """``work``'s result; None once its failure is the batch's (a rejected key stops the run)."""
        try:
            return await work
        except AuthError as err:
            self.fatal = err
            self.stop = True
            await self._fail(batch, batch.index, str(err))
        except (ApiError, RetriesExhausted) as err:
            await self._fail(batch, batch.index, str(err))
        return None

    async def _job_outcomes(self, jobs: list[_JobWait]) -> list[pa.Table]:
        return [await self.outcomes_of_job(job_id, index) for job_id, index in jobs]

    async def _deliver(self, batch: _Batch, *, unclear: bool, jobs: list[_JobWait]) -> tuple[pa.Table, str | None]:
        """Send one batch as its operation allows; the row outcomes and the Klaviyo job id.
        Bulk import jobs to wait for go to ``jobs`` (their rows' outcomes come from the job).

        A batch is checked (``presend``) as a whole, then sent in requests within the endpoint's
        limits: an operation that checks membership plans larger batches (``check_items``) so
        that the members of several reads fill whole requests."""
        st, op, op_id = self.wh.state, self.op, self.op.endpoint.operation_id
        index, items = batch.index, batch.items
        done: list[pa.Table] = []
        if unclear:
            # The run died (or the answer was lost) while this batch was being sent: Klaviyo may
            # have it. A consent write is read back after the settle time, never resent blind.
            self.resent += 1
            if op.consent:
                # Only the rows that went out (kept by the check before sending, saved with the
                # batch) can have been applied; the others were never sent and are checked afresh.
                sent_rows = await self.record(st.export_plan, self.run_id, f"sent:{batch.batch_id}")
                went = (
                    np.isin(index, np.asarray(sent_rows, dtype=index.dtype))
                    if sent_rows is not None
                    else np.ones(len(index), dtype=bool)
                )
                s_index, s_items, confirmed = await self._settle(index[went], items.filter(went))
                done.append(confirmed)
                if len(s_items) and not op.may_resend_unapplied():
                    s_index, s_items = await self._presend(s_index, s_items, done)  # non-members now: skipped
                    done.append(_rows_table(s_index, "unconfirmed", self._unconfirmed_reason(1, None)))
                    keep = ~went
                else:
                    keep = ~went | np.isin(index, s_index)
                index, items = index[keep], items.filter(keep)
        if len(items):
            index, items = await self._presend(index, items, done)
        job_id = None
        if len(items):
            if op.consent:  # which rows go out, for a resume that finds this batch's answer unclear
                await self.record(st.save_export_plan, self.run_id, f"sent:{batch.batch_id}", index.tolist())
            await self.record(
                st.record_export_batch,
                batch.batch_id,
                self.run_id,
                op_id,
                "sending",
                row_count=len(batch.index),
                fingerprint=batch.fingerprint,
            )
            self.attempted += len(items)
            for a, b in plan_batches(items.sizes(), op.endpoint):
                table, job = await self._post(batch, index[a:b], items[a:b], jobs)
                done.append(table)
                job_id = job or job_id
            await self.record(st.record_export_batch, batch.batch_id, self.run_id, op_id, "sent", klaviyo_job_id=job_id)
            self.progress("sent", len(index))
        return _concat(done), job_id

    async def _presend(self, index: np.ndarray, items: Payloads, done: list[pa.Table]) -> tuple[np.ndarray, Payloads]:
        """The operation's check before sending: rows it keeps back get their outcome in ``done``."""
        try:
            ctx = self.ctx
            ctx.rows = index
            pre = await self.op.presend(ctx, items)
        except (ApiError, RetriesExhausted) as err:
            if isinstance(err, AuthError):
                raise
            done.append(_rows_table(index, "skipped", f"not sent: the check before sending failed ({err})"))
            self.check_failed += len(index)
            return index[:0], items[:0]
        if pre is None:
            return index, items
        keep = np.array([o == "send" for o in pre.outcome], dtype=bool)
        done.append(
            _rows_table(
                index[~keep], [o for o, k in zip(pre.outcome, keep) if not k], [r for r, k in zip(pre.reason, keep) if not k]
            )
        )
        return index[keep], items.filter(keep)

    async def _post(self, batch: _Batch, index: np.ndarray, items: Payloads, jobs: list[_JobWait]) -> tuple[pa.Table, str | None]:
        """One request (and, for a consent write, what an unclear answer to it leads to); a bulk
        import job to wait for goes to ``jobs``."""
        op, st, op_id = self.op, self.wh.state, self.op.endpoint.operation_id
        done: list[pa.Table] = []
        attempts = 0
        job_id = None
        while len(items):
            try:
                try:
                    job_id = await self.post(items)
                except InvalidRequest as err:
                    named = _row_positions(err)
                    if not named or len(named) >= len(items):
                        raise
                    keep = np.ones(len(items), dtype=bool)
                    reasons = []
                    for pos, why in sorted(named.items()):
                        keep[pos] = False
                        reasons.append(f"rejected by Klaviyo before sending: {why}")
                    done.append(_rows_table(index[~keep], "skipped", reasons))
                    index, items = index[keep], items.filter(keep)
                    job_id = await self.post(items)  # the rest, once
            except (ServerError, TransportError) as err:
                if not op.consent:
                    raise
                # Unclear: Klaviyo may have applied it. Read back after the settle time.
                await self.record(st.record_export_batch, batch.batch_id, self.run_id, op_id, "unclear", error=str(err)[:2000])
                log.warning(
                    "%s: unclear answer (%s); reading Klaviyo back in %.0f s before anything is resent",
                    batch.batch_id,
                    err,
                    self.settings.consent_settle_seconds,
                )
                index, items, confirmed = await self._settle(index, items)
                done.append(confirmed)
                attempts += 1
                if len(items) and not op.may_resend_unapplied():
                    index, items = await self._presend(index, items, done)  # left the list meanwhile: skipped
                if len(items) and (attempts > self.client.retry.retry_limit or not op.may_resend_unapplied()):
                    done.append(_rows_table(index, "unconfirmed", self._unconfirmed_reason(attempts, err)))
                    index, items = index[:0], items[:0]
                continue
            if self._waits_for_job(job_id):
                jobs.append((job_id, index))
            else:
                done.append(await self.sent_outcomes(job_id, index, items))
            break
        return _concat(done), job_id

    def _unconfirmed_reason(self, attempts: int, err: BaseException | None) -> str:
        why = f" ({err})" if err is not None else ""
        if not self.op.may_resend_unapplied():
            return (
                f"Klaviyo's answer was unclear{why} and, {self.settings.consent_settle_seconds:g} s later, "
                "reading it back does not show the change; not sent again (a late first request plus a resend "
                "could unsubscribe it from all marketing): run the export again to retry"
            )
        return (
            f"Klaviyo's answer was unclear {attempts} time(s){why} and reading it back does not show the change; not sent again"
        )

    async def _settle(self, index: np.ndarray, items: Payloads) -> tuple[np.ndarray, Payloads, pa.Table]:
        """Wait the settle time, read Klaviyo back: (rows still to send, their items, confirmed rows)."""
        await self.sleep(self.settings.consent_settle_seconds)
        try:
            applied = await self.op.confirm(self.ctx, items)
        except (ApiError, RetriesExhausted) as err:
            table = _rows_table(
                index, "unconfirmed", f"Klaviyo's answer was unclear and reading it back failed ({err}); not sent again"
            )
            return index[:0], items[:0], table
        table = _rows_table(index[applied], "accepted", CONFIRMED_REASON)
        return index[~applied], items.filter(~applied), table

    def _waits_for_job(self, job_id: str | None) -> TypeGuard[str]:
        """The rows' outcomes come from a bulk import job this run waits for."""
        return self.op.endpoint.operation_id == "bulk_import_profiles" and self.settings.wait_for_completion and bool(job_id)

    async def sent_outcomes(self, job_id: str | None, index: np.ndarray, items: Payloads | None) -> pa.Table:
        op = self.op
        if self._waits_for_job(job_id):
            return await self.outcomes_of_job(job_id, index)
        if op.endpoint.operation_id == "bulk_import_profiles":
            return _rows_table(
                index, "submitted", f"bulk import job {job_id} submitted; not waited for (wait_for_completion: false)"
            )
        return _rows_table(index, op.sent_outcome, op.sent_reason)

    async def _finish(self, batch: _Batch, table: pa.Table, job_id: str | None) -> None:
        outcome = table.column("outcome")
        rejected = pc.sum(pc.equal(outcome, "rejected")).as_py() or 0
        failed_job = table.num_rows > 0 and rejected == table.num_rows
        await self.record(
            self.wh.state.finish_export_batch,
            batch.batch_id,
            self.run_id,
            self.op.endpoint.operation_id,
            "failed" if failed_job else "done",
            table,
            klaviyo_job_id=job_id,
            fingerprint=batch.fingerprint,
            row_count=len(batch.index),
        )
        try:
            self._recorder.submit(release_free_memory)  # after the batch is recorded (memory.py)
        except RuntimeError:  # the run has closed its recorder (a batch finishing after a stop)
            pass
        if failed_job:
            self.failed += 1
            if self.settings.stop_on_batch_failure:
                self.stop = True
        self.progress("done", len(batch.index))

    async def _fail(self, batch: _Batch, index: np.ndarray, message: str) -> None:
        self.failed += 1
        await self.record(
            self.wh.state.finish_export_batch,
            batch.batch_id,
            self.run_id,
            self.op.endpoint.operation_id,
            "failed",
            _rows_table(index, "rejected", message),
            error=message[:2000],
            fingerprint=batch.fingerprint,
            row_count=len(batch.index),
        )
        if self.settings.stop_on_batch_failure:
            self.stop = True

    async def finish_held(self, batch_id: str, table: pa.Table) -> None:
        """Rows the operation held back: their outcome and a ``done`` batch in one transaction."""
        await self.record(self.wh.state.finish_export_batch, batch_id, self.run_id, HELD, "done", table, row_count=table.num_rows)

    async def _not_sent(self, batch: _Batch, reason: str) -> None:
        st = self.wh.state
        await self.record(
            st.finish_export_batch,
            batch.batch_id,
            self.run_id,
            self.op.endpoint.operation_id,
            "not_sent",
            _rows_table(batch.index, "skipped", reason),
            row_count=len(batch.index),
            fingerprint=batch.fingerprint,
        )  # rows and status in one transaction

    # --- bulk import jobs ----------------------------------------------------------------
    async def outcomes_of_job(self, job_id: str, index: np.ndarray) -> pa.Table:
        status, attrs = await self.jobs.wait(job_id, self.clock() + self.settings.wait_seconds)
        if attrs is None:
            return _rows_table(
                index,
                "submitted",
                f"bulk import job {job_id} still {status} when the waiting "
                f"time ({self.settings.waiting_time_for_completion_millis} ms) ended",
            )
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
                    if by_email is None and isinstance(email, str):
                        by_email = await self.record(_positions_by_email, self.wh.state, self.run_id, index)
                    pos = (by_email or {}).get(_email_keys([email])[0]) if isinstance(email, str) else None
                if pos is not None and reasons[pos] is None:
                    reasons[pos] = f"rejected by Klaviyo: {message}"
        outcomes = ["accepted" if r is None else "rejected" for r in reasons]
        return pa.table(
            {
                "row_index": pa.array(index, pa.int64()),
                "outcome": pa.array(outcomes, pa.string()),
                "reason": pa.array(reasons, pa.string()),
            }
        )


# --- the destination -------------------------------------------------------------------------


async def _lists(client: KlaviyoClient, params: list[tuple[str, str]]) -> AsyncIterator[dict[str, Any]]:
    async for item in client.records("get_lists", params=params):
        yield item


async def find_list(client: KlaviyoClient, settings: ExportSettings) -> str | None:
    """The list's id, checked with one read (by id) or found by name (None when no list has it).

    A list id Klaviyo does not know, a rejected key or an unreachable host fail here, before the
    query runs and before anything is sent."""
    if not settings.list_value:
        return None
    if settings.list_identify_type == "id":
        try:
            await client.request("get_list", path_params={"id": settings.list_value})
        except NotFound:
            raise ExportError(
                f"list {settings.list_value!r} does not exist in this Klaviyo account (list_identify_type: id); check list_value"
            ) from None
        return settings.list_value
    found = [item["id"] async for item in _lists(client, [("filter", f"equals(name,{format_value(settings.list_value)})")])]
    if len(found) > 1:
        raise ExportError(
            f"list name {settings.list_value!r} is ambiguous: {len(found)} lists have it "
            f"({', '.join(found[:5])}); use list_identify_type: id"
        )
    return found[0] if found else None


async def create_list(client: KlaviyoClient, op: Operation, warnings: list[str]) -> str:
    name = op.settings.list_value
    if not op.creates_list:
        raise ExportError(f"no list named {name!r} in this Klaviyo account")
    doc = await client.request("create_list", json={"data": {"type": "list", "attributes": {"name": name}}})
    list_id = (doc or {}).get("data", {}).get("id")
    if not list_id or not isinstance(list_id, str):
        raise ExportError(f"creating list {name!r} returned no id")
    warnings.append(f"created list {name!r} ({list_id}); Klaviyo allows 150 list creations a day")
    return list_id


class _ListLock:
    """One writer per list: held from before the first batch until the run ends."""

    def __init__(
        self,
        wh: Warehouse,
        settings: ExportSettings,
        run_id: str,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self.wh, self.settings, self.run_id, self.sleep, self.clock = wh, settings, run_id, sleep, clock
        self.lock: NamedLock | None = None

    async def acquire(self, list_id: str) -> None:
        name = f"list:{self.settings.base_url}:{list_id}"
        lock = await asyncio.to_thread(self.wh.named_lock, name)
        me = {"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname()}
        deadline = self.clock() + self.settings.list_lock_timeout_seconds
        said = False
        while not await asyncio.to_thread(lock.try_acquire, me):
            holder = await asyncio.to_thread(lock.holder) or {}
            who = ", ".join(f"{k} {v}" for k, v in holder.items()) or "another process"
            if self.clock() >= deadline:
                raise ExportBusy(
                    f"list {list_id} is being written by another export ({who}) and stayed busy for "
                    f"list_lock_timeout_seconds ({self.settings.list_lock_timeout_seconds:g} s); "
                    "nothing was sent"
                )
            if not said:
                log.warning(
                    "waiting for another export writing to list %s (%s); giving up after %g s",
                    list_id,
                    who,
                    self.settings.list_lock_timeout_seconds,
                )
                said = True
            await self.sleep(0.5)
        self.lock = lock

    def release(self) -> None:
        if self.lock is not None:
            lock, self.lock = self.lock, None
            lock.release()


# --- the input -------------------------------------------------------------------------------


def _invalid_message(counts: "_Counts", limit: int = 5) -> str:
    shown = "; ".join(f"row {int(i) + 1}: {r}" for i, r in counts.invalid_rows[:limit])
    more = counts.invalid - limit
    return (
        f"{counts.invalid} invalid row(s) and skip_invalid_records is false; nothing was sent. "
        f"{shown}{f'; and {more} more' if more > 0 else ''}"
    )


def sample_payloads(prepared: Prepared, n: int = 3) -> list[Any]:
    return [orjson.loads(item) for item in prepared.items[:n]]


#: Rows validated and turned into payloads at a time (a few request batches' worth) ...
CHUNK_ROWS = 20_000
#: ... and at most this many bytes of input, so wide rows stream in bounded memory.
CHUNK_BYTES = 32 * 1024 * 1024
#: The first chunk is smaller: the first request leaves as soon as one batch's rows are ready.
FIRST_CHUNK_ROWS = 10_000
#: Chunks prepared at once by a pass over the whole input before anything is sent (strict
#: mode, the default; dry runs; resume): 1M rows took 3.0-3.2 s on two threads, 4.7-6.8 s on one
#: (two cores). The sending pass prepares its first ``RAMP_CHUNKS`` chunks so too, from before the
#: list is looked up, then one chunk at a time: once the first window's requests are out it stays
#: ahead of Klaviyo's limits on one thread, and a second thread all along cost 25 MB.
PREPARE_THREADS = 2
#: The first window of a 10-a-second tier (bulk imports): 10,000 + 5 x 20,000 rows. A sliding
#: window repeats the spacing of its first requests: a first window spread over 0.8 s while its
#: rows were prepared one chunk at a time put every later window's last request 0.6 s later.
RAMP_CHUNKS = 6
#: Source: an Arrow table, or a callable that opens the query and returns (schema, record batches);
#: called once more for the sending pass when invalid rows must fail the job before anything is sent.
Source: TypeAlias = "pa.Table | Callable[[], tuple[pa.Schema, Iterator[pa.RecordBatch]]]"


def _open(source: Source) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if isinstance(source, pa.Table):
        return source.schema, iter(source.to_batches(max_chunksize=2048))
    return source()


def _row_bytes(batch: pa.RecordBatch) -> np.ndarray:
    """Each row's size in bytes (fixed widths plus string/binary lengths): the same for the same
    rows however the reader batches them, so chunk (and batch) boundaries are too."""
    n = batch.num_rows
    sizes = np.zeros(n, dtype=np.int64)
    for col in batch.columns:
        t = col.type
        if pa.types.is_string(t) or pa.types.is_binary(t):
            offsets: np.ndarray = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
            sizes += np.diff(offsets)
        elif pa.types.is_large_string(t) or pa.types.is_large_binary(t):
            offsets = np.frombuffer(col.buffers()[1], dtype=np.int64)[col.offset : col.offset + n + 1]
            sizes += np.diff(offsets)
        else:
            try:
                sizes += max(1, t.bit_width // 8)
            except ValueError:  # nested or other variable-width: an even share of its buffers
                sizes += col.nbytes // max(1, n)
    return sizes


def _chunks(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    rows: int = CHUNK_ROWS,
    first: int = FIRST_CHUNK_ROWS,
    max_bytes: int = CHUNK_BYTES,
) -> Iterator[pa.Table]:
    """Chunks of at most ``rows`` rows and ``max_bytes`` bytes, cut at the same rows whatever the
    reader's batch sizes (so batch fingerprints are the same on resume)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    used = 0
    size = min(first, rows)
    for batch in batches:
        if not batch.num_rows:
            continue
        sizes = _row_bytes(batch)
        start = 0
        while start < batch.num_rows:
            room = size - count
            cum = np.cumsum(sizes[start : start + room])
            fit = int(np.searchsorted(cum, max_bytes - used, side="right"))
            if fit == 0 and count == 0:
                fit = 1  # one row larger than a chunk: a chunk of its own
            take = min(room, fit, batch.num_rows - start)
            if take:
                pending.append(batch.slice(start, take))
                count += take
                used += int(cum[take - 1])
                start += take
            if count >= size or (take < room and start < batch.num_rows):
                yield pa.Table.from_batches(pending, schema=schema).combine_chunks()
                pending, count, used, size = [], 0, 0, rows
    if count:
        yield pa.Table.from_batches(pending, schema=schema).combine_chunks()


def _ahead(source: Source, op: Operation, opened: tuple[pa.Schema, Iterator[pa.RecordBatch]]) -> _Ahead:
    """The sending pass's prepared chunks, the first ones on ``PREPARE_THREADS`` threads, started now."""
    stop = threading.Event()
    chunks = _Ahead(_prepared_chunks(source, op, opened, threads=PREPARE_THREADS, ramp=RAMP_CHUNKS, stop=stop), stop)
    chunks.start()
    return chunks


def _prepared_chunks(
    source: Source,
    op: Operation,
    opened: tuple[pa.Schema, Iterator[pa.RecordBatch]] | None = None,
    first_row: int = 0,
    threads: int = 1,
    ramp: int | None = None,
    stop: threading.Event | None = None,
) -> Iterator[tuple[int, Prepared]]:
    """(offset of the chunk in the input, the chunk prepared with input-wide row indexes), in input order.

    With ``threads`` > 1, that many chunks are prepared at once (Arrow's kernels release the
    GIL) and one more waits read; only the duplicate check takes the chunks in turn
    (``SeenValues.in_order``), so every row gets the outcome it gets on one thread. With
    ``ramp``, only the first ``ramp`` chunks are: the later ones are prepared when asked for.
    Once ``stop`` is set, no further chunk is read."""
    schema, batches = opened or _open(source)
    op.check_columns(schema)  # before anything: missing column -> no run, nothing sent
    seen = SeenValues()

    def prepare(k: int, offset: int, chunk: pa.Table) -> tuple[int, Prepared]:
        try:
            p = op.prepare(chunk, seen.in_order(k))
        finally:
            seen.finish(k)
        p.row_index = p.row_index + offset
        p.skipped_index = p.skipped_index + offset
        return offset, p

    offset = first_row
    if threads <= 1:
        for k, chunk in enumerate(_chunks(batches, schema)):
            yield prepare(k, offset, chunk)
            offset += chunk.num_rows
    else:
        pending: deque[tuple[int, Future[tuple[int, Prepared]]]] = deque()
        with ThreadPoolExecutor(threads, thread_name_prefix="klaviyo-bridge-prepare") as pool:
            try:
                for k, chunk in enumerate(_chunks(batches, schema)):
                    if stop is not None and stop.is_set():
                        return
                    pending.append((k, pool.submit(prepare, k, offset, chunk)))
                    offset += chunk.num_rows
                    while len(pending) > (threads if ramp is None or k + 1 < ramp else 0):
                        yield pending.popleft()[1].result()
                while pending:
                    yield pending.popleft()[1].result()
            finally:
                for k, future in pending:
                    if future.cancel():
                        seen.finish(k)  # the chunks after it are not kept waiting for its turn
    if offset == first_row:
        yield first_row, op.prepare(schema.empty_table(), seen)


class _Counts:
    def __init__(self) -> None:
        self.rows = self.valid = self.invalid = self.batches = 0
        self.invalid_rows: list[tuple[int, str]] = []
        self.warnings: list[str] = []
        self.fingerprints: list[str] = []


class _Planner:
    """Cuts valid rows into request batches across chunks: a batch that is not full waits for the
    next chunk's rows, so rows an operation held back (``hold_back``) leave no half-empty requests.
    The same rows give the same batches (and fingerprints) however often the input is read."""

    def __init__(self, op: Operation) -> None:
        self.endpoint = op.plan_endpoint
        self.index = np.zeros(0, dtype=np.int64)
        self.items: Payloads | None = None
        self.ids: list[str | None] = []

    def add(self, offset: int, p: Prepared) -> list[tuple[np.ndarray, Payloads, str]]:
        if len(p.row_index):
            ids = (
                p.identity.take(pa.array(p.row_index - offset, pa.int64())).to_pylist()
                if p.identity is not None
                else [None] * len(p.row_index)
            )
            self.index = np.concatenate([self.index, p.row_index])
            self.items = (
                p.items
                if self.items is None or not len(self.items)
                else Payloads(pa.concat_arrays([self.items.array, p.items.array]))
            )
            self.ids += ids
        return self._cut(final=False)

    def flush(self) -> list[tuple[np.ndarray, Payloads, str]]:
        return self._cut(final=True)

    def _cut(self, final: bool) -> list[tuple[np.ndarray, Payloads, str]]:
        if self.items is None or not len(self.items):
            return []
        slices = plan_batches(self.items.sizes(), self.endpoint)
        if not final and slices and slices[-1][1] - slices[-1][0] < self.endpoint.max_items:
            slices = slices[:-1]  # not full: wait for more rows
        out = [(self.index[a:b], self.items[a:b], batch_fingerprint(self.ids[a:b], self.index[a:b])) for a, b in slices]
        done = slices[-1][1] if slices else 0
        self.index, self.items, self.ids = self.index[done:], self.items[done:], self.ids[done:]
        return out


async def _validate_all(
    source: Source, op: Operation, opened: tuple[pa.Schema, Iterator[pa.RecordBatch]] | None = None
) -> tuple[_Counts, list[Any]]:
    """A pass over the whole input (dry run; strict mode; resume): counts, samples, batch fingerprints."""
    samples: list[Any] = []
    counts = _Counts()
    it = _prepared_chunks(source, op, opened, threads=PREPARE_THREADS)
    planner = _Planner(op)
    while True:
        got = await asyncio.to_thread(next, it, None)
        if got is None:
            break
        offset, p = got
        op.observe(offset, p)
        p = op.hold_back(p)
        if not counts.warnings:
            counts.warnings = list(p.warnings)
        counts.rows += p.total
        counts.valid += len(p.items) + len(p.held_index)
        counts.invalid += len(p.skipped_index)
        counts.invalid_rows += list(zip(p.skipped_index.tolist(), p.skipped_reason))[: max(0, 20 - len(counts.invalid_rows))]
        plan = planner.add(offset, p)
        counts.batches += len(plan)
        counts.fingerprints += [fp for _, _, fp in plan]
        if len(samples) < 3:
            samples += sample_payloads(p, 3 - len(samples))
    plan = planner.flush()
    counts.batches += len(plan)
    counts.fingerprints += [fp for _, _, fp in plan]
    return counts, samples


def _close(opened: tuple[pa.Schema, Iterator[pa.RecordBatch]] | None) -> None:
    close = getattr(opened[1], "close", None) if opened else None
    if close is not None:
        close()  # release the query's session now, not when the garbage collector gets to it


# --- the run ---------------------------------------------------------------------------------


async def run_export(
    wh: Warehouse,
    table: Source,
    settings: ExportSettings,
    *,
    job: str = "query",
    run_id: str | None = None,
    resume: bool = False,
    begun: bool = False,
    dry_run: bool = False,
    query: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    poll_initial: float = 0.1,
    progress: Callable[[str, int], None] | None = None,
    limits: AccountLimits | None = None,
    wall: Callable[[], datetime] | None = None,
) -> ExportResult:
    """Export ``table`` (a query result, or a source streaming it) and record every row's outcome.

    Returns the result of a run that ended ``success``; raises ``ExportFailed`` (status ``error``,
    recorded, with ``.result``) when it did not, and other ``BridgeError``s when it could not start.
    ``query`` is the SQL text, kept (as a hash) so ``--resume`` can refuse a changed query.
    ``begun``: ``run_id`` is a run ``StateStore.begin_job`` already recorded (a job run by
    ``jobs.execute_job``); the export records on it. ``wall``: the clock event ages are judged by
    (default the real UTC time; a test gives a fixed one, with the emulator's ``clock``).
    """
    started = time.perf_counter()
    op = operation_for(settings)
    if wall is not None:
        op.wall = wall
    if dry_run and not op.dry_run_reads_klaviyo:
        return await _dry_run(table, op, started)
    client = KlaviyoClient(settings.client_settings(), transport=transport, sleep=sleep, limits=limits)
    if dry_run:
        try:
            return await _dry_run(table, op, started, client, sleep, clock)
        finally:
            await client.aclose()
    opened: tuple[pa.Schema, Iterator[pa.RecordBatch]] | None = None
    chunks: _Ahead | None = None
    run_started = False
    lock = _ListLock(wh, settings, run_id or "", sleep, clock)
    ex: _Sender | None = None
    rows_read = valid = invalid = 0
    pre: _Counts | None = None
    st = wh.state
    if not resume:
        run_id = st.start_run(job, "export", run_id=run_id or uuid.uuid4().hex, begun=begun)
        run_started = True
    try:
        opened = await asyncio.to_thread(_open, table)
        op.check_columns(opened[0])  # missing column -> nothing sent, no request made
        schema = opened[0]
        if settings.skip_invalid_records and not resume and not op.reads_input_first:
            # Sent as read: the first chunks are prepared while the list is looked up (nothing
            # is sent before it is found).
            chunks = _ahead(table, op, opened)
        list_id = await find_list(client, settings)
        fingerprint = run_fingerprint(settings, query, schema)
        if resume:
            await op.restore(RunContext(client, list_id, sleep, clock, state=st, run_id=run_id, resume=True))
        if not settings.skip_invalid_records or resume or op.reads_input_first:
            # Strict mode: invalid rows fail the job with nothing sent; resume: the batches'
            # fingerprints are compared with the first attempt's before anything is sent.
            pre, _ = await _validate_all(table, op, opened)
            _close(opened)
            opened = None  # read again to send
        if resume:
            states, run_id = _resume(st, run_id, fingerprint, pre, op)
            run_started = True
        else:
            assert run_id is not None  # recorded by start_run above
            states = {}
            st.save_export_fingerprint(run_id, fingerprint)
        lock.run_id = run_id
        if list_id is not None:
            await lock.acquire(list_id)
        ex = _Sender(wh, op, run_id, client, sleep, clock, poll_initial, progress)
        ex.list_id = list_id
        warnings: list[str] = list(pre.warnings) if pre else []
        if pre is not None and pre.invalid and not settings.skip_invalid_records:
            await _refuse_invalid(wh, op, table, run_id, pre, states, resume)
        run_ctx = RunContext(client, list_id, sleep, clock, state=st, run_id=run_id, resume=resume)
        await op.begin(run_ctx)  # may stop the run here, nothing sent
        rows_read, valid, invalid, seq, warnings = await _pipeline(
            wh, op, ex, table, opened, run_id, states, resume, lock, warnings, chunks=chunks
        )
        phases = [(0, rows_read)]
        for k, (follow, follow_rows) in enumerate(op.followups()):
            if ex.fatal is not None or ex.stop:
                break
            ex.op = follow
            first = rows_read
            r, vd, inv, sq, warnings = await _pipeline(
                wh,
                follow,
                ex,
                follow_rows,
                None,
                run_id,
                states,
                resume,
                lock,
                warnings,
                first_row=first,
                prefix=f"{run_id}-f{k + 1}",
            )
            rows_read, valid, invalid, seq = rows_read + r, valid + vd, invalid + inv, seq + sq
            phases.append((first, rows_read))
        ex.op = op
        if ex.fatal is not None:
            raise ex.fatal
        summary = export_summary(wh, run_id)
        status, error = _status(summary, ex, rows_read, valid)
        c = summary.counts
        run_ctx.list_id = ex.list_id
        run_ctx.phase_counts = [st.export_outcome_counts(run_id, a, b) for a, b in phases]
        if status == "success":
            await op.end(run_ctx)
        st.finish_run(
            run_id, status, rows_read=rows_read, rows_written=c.get("accepted", 0) + c.get("submitted", 0), counts=c, error=error
        )
        result = ExportResult(
            run_id,
            summary,
            list_id=ex.list_id,
            batches=seq,
            failed_batches=ex.failed,
            resent=ex.resent,
            skipped_on_resume=ex.skipped_on_resume,
            warnings=warnings,
            would_send=valid,
            invalid=invalid,
            seconds=time.perf_counter() - started,
            requests=client.stats.requests,
            status=status,
            error=error,
            details=op.report(run_ctx),
        )
        if status != "success":
            raise ExportFailed(f"export run {run_id} failed: {error}", result=result)
        if op.consent:
            warnings.append(
                "subscription changes: Klaviyo's subscription endpoints return no job to poll; "
                "sent rows are 'submitted' (202) without confirmation"
            )
        return result
    except ExportFailed:
        raise
    except BaseException as exc:
        message = str(exc) if isinstance(exc, BridgeError) else f"{type(exc).__name__}: {exc}"
        if run_started and run_id is not None:  # (a started run has its id)
            try:
                summary = export_summary(wh, run_id)
                killed = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)) or type(exc).__name__ == "JobCancelled"
                total = rows_read or (pre.rows if pre else 0) or (ex.rows_seen if ex is not None else 0)
                if killed:
                    message = killed_message(summary.counts, total, run_id, wh.state.export_batches(run_id))
                wh.state.finish_run(
                    run_id,
                    "killed" if killed else "error",
                    rows_read=total,
                    counts=summary.counts,
                    error=message[:2000],
                    error_detail=None if killed else {**error_dict(exc), "message": message[:2000]},
                )
            except Exception:  # pragma: no cover - keep the original error
                log.exception("could not record the failed run")
        raise
    finally:
        try:
            if chunks is not None:
                await chunks.aclose()  # (the thread is out of the source even when this is cancelled)
        finally:
            _close(opened)
            lock.release()
            await client.aclose()
            if ex is not None:
                ex.close()


def killed_message(counts: Mapping[str, int], total: int, run_id: str, batches: Sequence[Any] = ()) -> str:
    """What a stopped export had done: the rows with an outcome (sent or not); the rows sent whose
    outcome was not known yet (their batch ``sent``: a bulk import job running); the rows whose
    request was out or unclear (``sending``, ``unclear``); the rows never sent. ``batches``: the
    run's batch records (``StateStore.export_batches``)."""
    done = {k: v for k, v in counts.items() if v}
    settled = sum(done.values())
    said = ", ".join(f"{v} {k}" for k, v in done.items()) or "none"
    left = max(total - settled, 0)
    awaiting = min(sum(b.row_count or 0 for b in batches if b.status == "sent"), left)
    doubt = min(sum(b.row_count or 0 for b in batches if b.status in UNCLEAR_BATCH_STATES), left - awaiting)
    rest = left - awaiting - doubt
    parts = [f"stopped before the end: of {total} rows, {settled} have an outcome ({said})"]
    if awaiting:
        parts.append(f"{awaiting} were sent and their outcome is not known yet")
    if doubt:
        parts.append(f"{doubt} were being sent when it stopped")
    if not (awaiting or doubt):
        return f"{parts[0]}; the other {rest} were not sent (klaviyo-bridge query ... --resume {run_id} sends only those)"
    parts.append(f"the other {rest} were not sent")
    return "; ".join(parts) + (
        f" (klaviyo-bridge query ... --resume {run_id} reads back what may have been sent before sending anything again,"
        " and sends only what was not)"
    )


async def _dry_run(
    table: Source,
    op: Operation,
    started: float,
    client: KlaviyoClient | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ExportResult:
    """Validate and count; with ``client`` (an operation that decides from Klaviyo's state, such as
    mirror) the destination is resolved and the operation's ``begin`` reads it, changing nothing."""
    opened = await asyncio.to_thread(_open, table)
    try:
        op.check_columns(opened[0])
    except BaseException:
        _close(opened)
        raise
    list_id = await find_list(client, op.settings) if client is not None else None
    counts, samples = await _validate_all(table, op, opened)
    details: list[str] = []
    if client is not None:
        ctx = RunContext(client, list_id, sleep, clock, dry_run=True)
        await op.begin(ctx)
        details = op.report(ctx)
    summary = ExportSummary(run_id="(dry run)", total=counts.rows, counts={"would_send": counts.valid, "invalid": counts.invalid})
    return ExportResult(
        "(dry run)",
        summary,
        list_id=list_id,
        batches=counts.batches,
        warnings=counts.warnings,
        dry_run=True,
        samples=samples,
        would_send=counts.valid,
        invalid=counts.invalid,
        seconds=time.perf_counter() - started,
        invalid_rows=counts.invalid_rows,
        requests=client.stats.requests if client is not None else 0,
        details=details,
    )


def _resume(
    st: Any, run_id: str | None, fingerprint: dict[str, Any], pre: _Counts | None, op: Operation
) -> tuple[dict[str, dict[str, Any]], str]:
    """Reopen a run for ``--resume``, refusing a changed query, settings or input.

    Returns the earlier attempt's batch states, keyed by batch fingerprint."""
    if not run_id:
        raise ExportError("--resume needs the run id")
    before = st.export_fingerprint(run_id)
    batches = st.export_batches(run_id)
    if before is None and not batches and st.has_run(run_id):
        # it died before it recorded what it exports (so before anything was sent): start it over
        st.save_export_fingerprint(run_id, fingerprint)
        before = fingerprint
    if before is None:
        raise ExportError(
            f"run {run_id} cannot be resumed: it has no export fingerprint (it was not an export, "
            "or an older version started it); start a new run"
        )
    changed = fingerprint_changes(before, fingerprint)
    if changed:
        raise ExportError(
            f"run {run_id} cannot be resumed: {'; '.join(changed)} changed since it started. "
            "Resume with the same query and settings, or start a new run"
        )
    planned = set(pre.fingerprints if pre else [])
    states: dict[str, dict[str, Any]] = {}
    for b in batches:
        if b.operation in ("validation", HELD) or b.fingerprint is None:
            states[b.batch_id] = {"status": b.status, "job": b.klaviyo_job_id, "rows": b.row_count, "batch_id": b.batch_id}
            continue
        if b.fingerprint not in planned and b.operation == op.endpoint.operation_id:
            # (batches of a follow-up, such as a mirror's removals, come from the run's stored plan)
            raise ExportError(
                f"run {run_id} cannot be resumed: the query's rows differ from the first attempt "
                f"(batch {b.batch_id}, {b.row_count} rows, status {b.status}, is not in the result "
                "any more; give the query an ORDER BY and unchanged data, or start a new run)"
            )
        states[b.fingerprint] = {"status": b.status, "job": b.klaviyo_job_id, "rows": b.row_count, "batch_id": b.batch_id}
    st.reopen_run(run_id)
    return states, run_id


async def _refuse_invalid(
    wh: Warehouse, op: Operation, table: Source, run_id: str, pre: _Counts, states: dict[str, dict[str, Any]], resume: bool
) -> None:
    st = wh.state
    invalid_id = f"{run_id}-invalid"
    if invalid_id not in states:
        if resume:
            _forget_rows(wh, invalid_id)
            _forget_rows(wh, f"{run_id}-unsent")
        async for offset, p in _aiter(_prepared_chunks(table, op, threads=PREPARE_THREADS)):
            _store_identifiers(st, run_id, offset, p)
            st.record_export_rows(invalid_id, run_id, _rows_table(p.skipped_index, "skipped", p.skipped_reason))
            st.record_export_rows(
                f"{run_id}-unsent",
                run_id,
                _rows_table(p.row_index, "skipped", "not sent: other rows are invalid and skip_invalid_records is false"),
            )
        st.record_export_batch(invalid_id, run_id, "validation", "not_sent", row_count=pre.invalid)
    raise ExportError(
        _invalid_message(pre),
        row=int(pre.invalid_rows[0][0]) + 1 if pre.invalid_rows else None,
        hint="fix those rows in the query, or set skip_invalid_records: true to send the others",
        problems=[Problem(str(reason), row=int(i) + 1) for i, reason in pre.invalid_rows[:100]],
    )


def _email_keys(emails: list[str]) -> list[str]:
    """Emails as the payloads carry them: trimmed, lower-cased by Arrow (``validate.check_emails``;
    Python's ``str.lower`` differs for a few non-ASCII letters)."""
    return [str(k) for k in pc.utf8_lower(pc.utf8_trim_whitespace(pa.array(emails, pa.string()))).to_pylist()]


def _positions_by_email(st: Any, run_id: str, index: np.ndarray) -> dict[str, int]:
    """Email (as ``_email_keys`` makes it) -> position in ``index`` of the rows identified by their
    email, from the identifiers stored with the run (``_store_identifiers``)."""
    if not len(index):
        return {}
    stored = st.export_identifiers(run_id, int(index.min()), int(index.max()) + 1)
    positions, emails = [], []
    for pos, row in enumerate(index.tolist()):
        ident = stored.get(row)
        if ident and ident.startswith("email:"):
            positions.append(pos)
            emails.append(ident[len("email:") :])
    out: dict[str, int] = {}
    for pos, key in zip(positions, _email_keys(emails)):
        out.setdefault(key, pos)
    return out


def _store_identifiers(st: Any, run_id: str, offset: int, p: Prepared) -> None:
    if p.identity is not None and len(p.identity):
        st.record_export_identifiers(run_id, offset, p.identity.to_pylist())


async def _pipeline(
    wh: Warehouse,
    op: Operation,
    ex: _Sender,
    table: Source,
    opened: tuple[pa.Schema, Iterator[pa.RecordBatch]] | None,
    run_id: str,
    states: dict[str, dict[str, Any]],
    resume: bool,
    lock: _ListLock,
    warnings: list[str],
    *,
    first_row: int = 0,
    prefix: str | None = None,
    chunks: _Ahead | None = None,
) -> tuple[int, int, int, int, list[str]]:
    """Read, validate and send chunk by chunk; a bounded number of batches is held at a time.

    ``first_row``: the input's first row number (a follow-up's rows come after the input's);
    ``prefix``: of its batch ids (default: the run id); ``chunks``: the input's prepared chunks,
    already started (``_ahead``)."""
    prefix = prefix or run_id
    st, settings = wh.state, op.settings
    sem = asyncio.Semaphore(settings.concurrency)
    #: Batches whose payloads are held (until their request is answered): bounds memory. A bulk
    #: import's batches are large (up to 10,000 profiles) and leave at most 10 a second: two ready
    #: beyond those in flight keep up (measured: 314-322 MB for 1M rows instead of 329-335 MB with
    #: 16, the same wall); smaller, faster batches keep more ready while the next chunk is prepared.
    big = op.endpoint.operation_id == "bulk_import_profiles"
    held = asyncio.Semaphore(settings.concurrency + 2 if big else max(2 * settings.concurrency, 8))
    out = asyncio.Semaphore(BATCHES_OUT)
    tasks: set[asyncio.Future[None]] = set()
    errors: list[BaseException] = []
    used_ids = {s["batch_id"] for s in states.values()}

    async def one(batch: _Batch) -> None:
        payload_done = _Once(held.release)
        try:
            await ex.send(batch, sem, payload_done)
        except BaseException as exc:  # noqa: BLE001 - re-raised after the others finish
            errors.append(exc)
        finally:
            payload_done()
            out.release()

    rows_read = valid = invalid = seq = 0
    invalid_seq = 0
    invalid_id = f"{prefix}-invalid"
    held_seq = 0
    planner = _Planner(op)

    async def dispatch(plan: list[tuple[np.ndarray, Payloads, str]]) -> None:
        nonlocal seq
        if plan and ex.list_id is None and settings.list_value:
            ex.list_id = await create_list(ex.client, op, warnings)
            await lock.acquire(ex.list_id)
        for index, items, fp in plan:
            state = states.get(fp)
            if state is not None:
                batch_id = state["batch_id"]
            else:
                batch_id = f"{prefix}-b{seq:05d}"
                while batch_id in used_ids:
                    batch_id += "r"
                used_ids.add(batch_id)
            seq += 1
            if errors:
                break
            await out.acquire()
            await held.acquire()
            ex.posting += 1
            task = asyncio.ensure_future(one(_Batch(batch_id, index, items, fp, state)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    ex.input_open()
    try:
        async for offset, p in chunks or _aiter(_prepared_chunks(table, op, opened, first_row)):
            p = op.hold_back(p)
            if not warnings and p.warnings:
                warnings = list(p.warnings)
            rows_read += p.total
            ex.rows_seen += p.total
            valid += len(p.items) + len(p.held_index)
            invalid += len(p.skipped_index)
            ex.progress("validated", p.total)
            await ex.record(_store_identifiers, st, run_id, offset, p)
            if len(p.held_index):
                bid = f"{prefix}-held-{held_seq:05d}"
                held_seq += 1
                if bid not in states:
                    if resume:
                        await ex.record(_forget_rows, wh, bid)
                    await ex.finish_held(bid, _rows_table(p.held_index, "skipped", p.held_reason))
            if len(p.skipped_index):
                bid = invalid_id if invalid_seq == 0 else f"{invalid_id}-{invalid_seq:05d}"
                invalid_seq += 1
                if bid not in states:
                    if resume:
                        await ex.record(_forget_rows, wh, bid)
                    await ex.record(
                        st.record_export_rows,
                        bid,
                        run_id,
                        _rows_table(p.skipped_index, "skipped", [f"invalid: {r}" for r in p.skipped_reason]),
                    )
                    await ex.record(st.record_export_batch, bid, run_id, "validation", "done", row_count=len(p.skipped_index))
            plan = planner.add(offset, p)
            del p
            await dispatch(plan)
            if errors:
                break
        if not errors:
            await dispatch(planner.flush())
        ex.input_done()
    except Exception:
        # (an error here, not a batch's: reading, preparing, the list) the batches already out
        # finish and record their rows' outcomes before the run is marked failed
        ex.input_done()
        if tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
        raise
    if tasks:
        await asyncio.gather(*list(tasks))
    if errors:
        raise errors[0]
    return rows_read, valid, invalid, seq, warnings


def _status(summary: ExportSummary, ex: _Sender, rows_read: int, valid: int) -> tuple[str, str | None]:
    """``success`` or ``error`` with the reason, from what was recorded."""
    c = summary.counts
    ok = c.get("accepted", 0) + c.get("submitted", 0)
    if ex.stop and ex.failed:
        return "error", (f"{ex.failed} batch(es) failed and stop_on_batch_failure is true (see job:show --rows)")
    if rows_read and not valid:
        return "error", f"none of the {rows_read:,} row(s) is valid: nothing was sent (see job:show --rows)"
    if ex.attempted and not ok:
        top = summary.top_reasons[0][1] if summary.top_reasons else "see job:show --rows"
        return "error", f"none of the {ex.attempted:,} row(s) sent was accepted ({top})"
    if ex.check_failed and not ok:
        top = summary.top_reasons[0][1] if summary.top_reasons else "see job:show --rows"
        return "error", f"{ex.check_failed:,} row(s) were not sent and none was accepted ({top})"
    return "success", f"{ex.failed} batch(es) failed" if ex.failed else None


class _Once:
    """Calls ``fn`` the first time it is called, never again."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Callable[[], None] | None = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()


class _Ahead:
    """A CPU-bound generator iterated in a worker thread, its first item asked for at ``start()``
    (before the run's first request: the list lookup's round trip and the preparation of the first
    chunks overlap). ``stop`` is set at ``aclose()``, which the generator checks between chunks;
    ``aclose()`` returns (or passes a cancellation on) only once the thread has left the
    generator, so its source can be closed after it."""

    def __init__(self, it: Iterator[Any], stop: threading.Event) -> None:
        self._it = it
        self._stop = stop
        self._next: asyncio.Future[Any] | None = None

    def start(self) -> None:
        if self._next is None:
            # A plain future (not a Task): cancelling the tasks at shutdown leaves it to say when the thread is done.
            self._next = asyncio.get_running_loop().run_in_executor(None, next, self._it, _END)

    def __aiter__(self) -> "_Ahead":
        return self

    async def __anext__(self) -> Any:
        self.start()
        assert self._next is not None
        # Shielded: a cancelled run leaves the thread's step to ``aclose``, which waits for it.
        got = await asyncio.shield(self._next)
        self._next = None
        if got is _END:
            raise StopAsyncIteration
        return got

    async def aclose(self) -> None:
        self._stop.set()
        step, self._next = self._next, None
        interrupted: BaseException | None = None
        while step is not None and not step.done():
            try:
                await asyncio.shield(step)
            except asyncio.CancelledError as exc:  # the thread must be out before the source closes
                interrupted = exc
            except Exception:  # noqa: BLE001 - a failed step's error is nobody's now
                pass
        if step is not None and not step.cancelled():
            step.exception()  # (retrieved: no "never retrieved" warning)
        close = getattr(self._it, "close", None)
        if close is not None:
            close()  # (the generator stops its pool, whose running chunks end first)
        if interrupted is not None:
            raise interrupted


async def _aiter(it: Iterator[Any]) -> AsyncIterator[Any]:
    """Iterate a CPU-bound generator in a worker thread, so requests in flight keep moving."""
    while True:
        got = await asyncio.to_thread(next, it, _END)
        if got is _END:
            return
        yield got


_END = object()
