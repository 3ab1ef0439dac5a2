"""What every export operation declares, and the pieces they share.

An operation is one small class (``add.py``, ``remove.py``, ``consent.py``): its endpoint and
batch limits, the columns it needs, validation and payload building (``prepare``), the request
body, a check before each batch is sent (``presend``: list membership for a list unsubscribe),
how an unclear answer is settled by reading Klaviyo back (``confirm``), and how a sent batch's
rows get their outcome (``outcomes``). The runner (``runner.py``) drives any of them and names
none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import ExportError
from .. import validate as v
from ..batching import Endpoint
from ..payloads import Payloads
from ..settings import ExportSettings

if TYPE_CHECKING:
    from ...api.client import KlaviyoClient

#: Klaviyo's per-profile payload maximum is 100 KB; stay a little under it.
MAX_PROFILE_BYTES = 100_000


@dataclass
class Prepared:
    """Valid rows (input index + JSON item) and invalid rows (input index + reason).

    ``identity`` names every input row of the chunk (``email:ann@example.com``, ``profile_id:01H..``;
    null when the row has no identifier), so a stored outcome says which person it is about.
    """

    row_index: np.ndarray
    items: Payloads
    skipped_index: np.ndarray
    skipped_reason: list[str]
    warnings: list[str] = field(default_factory=list)
    identity: pa.Array | None = None
    #: What an operation keeps of the chunk for itself (``observe``), by name.
    extra: dict[str, Any] = field(default_factory=dict)
    #: Valid rows the operation decided not to send (``hold_back``: a mirror's members), with the reason.
    held_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    held_reason: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.row_index) + len(self.skipped_index) + len(self.held_index)


@dataclass
class Outcomes:
    """Per-row outcomes of one batch, positions relative to the batch's items."""

    outcome: list[str]
    reason: list[str | None]


@dataclass
class BatchContext:
    """What an operation may use while one batch is on its way."""

    client: "KlaviyoClient"
    list_id: str | None
    sleep: Callable[[float], Awaitable[None]]
    clock: Callable[[], float]
    #: Input positions of the items being checked (``presend``), when the runner knows them.
    rows: np.ndarray | None = None

    def the_list(self) -> str:
        """The export's list id, for a step that reads the list (its operation needs one, or
        checks that the run has one first)."""
        if self.list_id is None:
            raise ExportError("internal error: a step that reads the export's list ran without a list")
        return self.list_id


@dataclass
class RunContext(BatchContext):
    """What an operation may use before the first batch (``begin``) and after the last (``end``)."""

    state: Any = None  # the warehouse's state store (``store/state.py``): every SQL statement lives there
    run_id: str | None = None
    resume: bool = False
    dry_run: bool = False
    #: Rows of the input (``end``: per phase, counts per outcome: the input, then each follow-up).
    phase_counts: list[dict[str, int]] = field(default_factory=list)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Operation:
    """One export operation. Subclasses set the class attributes and override what differs."""

    #: The wall clock ``prepare`` judges times by (event ages); ``run_export(wall=)`` gives a test a fixed one.
    wall: Callable[[], datetime] = staticmethod(_utc_now)

    #: The seed's name of the operation (what ``operation:`` says), for messages.
    name: ClassVar[str]
    #: Where batches go and how large they may be (count and bytes).
    endpoint: ClassVar[Endpoint]
    #: A consent write: an unclear answer is settled by reading Klaviyo back, never by resending blind.
    consent: ClassVar[bool] = False
    #: Needs a list (list_value); may create it by name when missing.
    needs_list: ClassVar[bool] = False
    creates_list: ClassVar[bool] = False
    #: Rows checked together by ``presend`` (None: a batch is one request). A list unsubscribe
    #: reads membership 100 profiles a read and sends members only: checking 1,000 rows at a time
    #: lets the members fill whole requests instead of half-empty ones.
    check_items: ClassVar[int | None] = None
    #: Outcome of a batch Klaviyo answered with success and no job to follow.
    sent_outcome: ClassVar[str] = "submitted"
    sent_reason: ClassVar[str | None] = None

    def __init__(self, settings: ExportSettings) -> None:
        self.settings = settings

    @property
    def plan_endpoint(self) -> Endpoint:
        """How the input is cut into batches (the unit of state and resume)."""
        e = self.endpoint
        if not self.check_items:
            return e
        return Endpoint(e.operation_id, self.check_items, e.max_bytes * -(-self.check_items // e.max_items))

    # --- before anything is sent -------------------------------------------------------
    def required_columns(self) -> tuple[tuple[str, ...], bool]:
        """(columns, any_of) the operation needs."""
        raise NotImplementedError

    def check_columns(self, schema: pa.Schema) -> None:
        columns, any_of = self.required_columns()
        v.require_columns(schema, columns, self.settings.operation, any_of=any_of)

    def prepare(self, table: pa.Table, seen: v.SeenValues, now: datetime | None = None) -> Prepared:
        raise NotImplementedError

    def warnings(self) -> list[str]:
        return []

    # --- one batch ---------------------------------------------------------------------
    def body(self, items: Payloads, list_id: str | None) -> bytes:
        """The request body: the envelope serialised around a marker, the items spliced in as they are."""
        head, tail = orjson.dumps(self.envelope(orjson.Fragment(_ITEMS), list_id)).split(_ITEMS, 1)
        return b"".join((head, b"[", items.joined(), b"]", tail))

    def envelope(self, items: orjson.Fragment, list_id: str | None) -> Any:
        raise NotImplementedError

    def path_params(self, list_id: str | None) -> dict[str, str] | None:
        return None

    async def presend(self, ctx: BatchContext, items: Payloads) -> Outcomes | None:
        """Rows not to send (outcome and reason per item; None = send everything)."""
        return None

    async def confirm(self, ctx: BatchContext, items: Payloads) -> np.ndarray:
        """After an unclear answer: per item, True when Klaviyo shows the change applied."""
        return np.zeros(len(items), dtype=bool)

    def may_resend_unapplied(self) -> bool:
        """Whether rows that ``confirm`` shows not applied may be sent again after an unclear answer."""
        return True

    # --- the whole run (operations that decide from the whole input: mirror) ---------------
    #: The runner reads the whole input once before anything is sent (as strict mode does) and
    #: shows each prepared chunk to ``observe``.
    reads_input_first: ClassVar[bool] = False
    #: ``--dry-run`` resolves the destination and calls ``begin`` (read-only) to report what it would do.
    dry_run_reads_klaviyo: ClassVar[bool] = False

    def hold_back(self, prepared: Prepared) -> Prepared:
        """Valid rows not to send, decided before batches are cut (so the rest fill whole requests):
        moved from ``row_index``/``items`` to ``held_index``/``held_reason``. Must decide the same
        on a ``--resume`` (batches are matched by content): keep the decision in the run's plan."""
        return prepared

    async def restore(self, ctx: RunContext) -> None:
        """On ``--resume``, before the input is read: reload what the first attempt decided."""

    def observe(self, offset: int, prepared: Prepared) -> None:
        """One chunk of the input (input-wide row indexes) during the pass before sending; may be
        called again for the same chunk (a later pass): keyed by ``offset``."""

    async def begin(self, ctx: RunContext) -> None:
        """After the destination is resolved and locked and the input read, before the first batch.
        Raise ``ExportError`` to stop the run with nothing sent (with ``ctx.dry_run``: read only)."""

    def followups(self) -> list[tuple["Operation", pa.Table]]:
        """More rows to send after the input, each with the operation that sends them (numbered
        after the input rows, accounted like them, batched and resumed by fingerprint)."""
        return []

    async def end(self, ctx: RunContext) -> None:
        """After a run that ended ``success`` (``ctx.phase_counts`` filled)."""

    def report(self, ctx: RunContext | None = None) -> list[str]:
        """Lines for the user: what a dry run would do, or what the run did."""
        return []


#: Stands for the items in a request envelope; replaced by the joined items without parsing them again.
_ITEMS = b'"\x00items\x00"'


# --- shared helpers ------------------------------------------------------------------------------


def reasons_to_numpy(reasons: pa.Array) -> np.ndarray:
    valid: np.ndarray = pc.is_valid(reasons).to_numpy(zero_copy_only=False)
    return valid


def finish(reasons: pa.Array, build: Any, warnings: list[str], identity: pa.Array | None) -> Prepared:
    """Split rows by ``reasons`` (null = valid), build the valid rows' items, move oversize ones out."""
    bad = reasons_to_numpy(reasons)
    good_index = np.flatnonzero(~bad)
    bad_index = np.flatnonzero(bad)
    items, oversize = build(good_index)
    skipped_reason = pc.take(reasons, pa.array(bad_index)).to_pylist() if len(bad_index) else []
    if oversize:
        keep = np.ones(len(good_index), dtype=bool)
        extra_index, extra_reason = [], []
        for pos, size in oversize:
            keep[pos] = False
            extra_index.append(good_index[pos])
            extra_reason.append(f"profile is {size:,} bytes as JSON; Klaviyo accepts at most 100 KB per profile")
        items = items.filter(keep)
        good_index = good_index[keep]
        order = np.argsort(np.concatenate([bad_index, np.array(extra_index, dtype=np.int64)]), kind="stable")
        bad_index = np.concatenate([bad_index, np.array(extra_index, dtype=np.int64)])[order]
        skipped_reason = [(skipped_reason + extra_reason)[i] for i in order]
    return Prepared(good_index.astype(np.int64), items, bad_index.astype(np.int64), skipped_reason, warnings, identity)


def utc_time(value: Any, label: str) -> tuple[datetime | None, str | None]:
    """A cell as an aware time (no zone: UTC; a date: its midnight), or the reason it is not one,
    LABEL naming the column."""
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, date):
        stamp = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None, f"{label} {text!r} is not an ISO 8601 time"
    return (stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp), None


def take_py(column: pa.Array, index: np.ndarray) -> list[Any]:
    values: list[Any] = pc.take(column, pa.array(index, pa.int64())).to_pylist()
    return values


def default(value: Any) -> Any:
    return str(value)


def dumps(obj: Any) -> bytes:
    # orjson's result keeps its (>= 4 KB) output buffer; an exact-size copy makes a 150-byte
    # profile cost ~180 bytes instead of ~4 KB (50k payloads: 9 MB instead of 195 MB).
    return bytes(memoryview(orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS)))


def identity_of(table: pa.Table, columns: tuple[str, ...]) -> pa.Array:
    """``column:value`` of the first of ``columns`` that has a value in each row (raw input text)."""
    pieces = []
    for name in columns:
        if name not in table.schema.names:
            continue
        col = table.column(name)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = col.cast(pa.string())
        text = pc.utf8_trim_whitespace(col.cast(pa.string()))
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        pieces.append(pc.binary_join_element_wise(name + ":", text, ""))
    if not pieces:
        return pa.nulls(table.num_rows, pa.string())
    return pieces[0] if len(pieces) == 1 else pc.coalesce(*pieces)


def valid_only_duplicates(seen: v.SeenValues, values: pa.Array, name: str, reasons: pa.Array) -> pa.Array:
    """Duplicate reasons for ``values`` among rows that are otherwise valid (``reasons`` null):
    a valid row is never dropped as a repeat of an earlier invalid one."""
    masked = pc.if_else(pc.is_valid(reasons), pa.scalar(None, values.type), values)
    return seen.check(masked, name, reasons)


def value_problems(table: pa.Table, columns: list[str]) -> pa.Array:
    """Reasons for values that cannot be sent as the user meant them: NaN / infinity in a number
    column (JSON has no such numbers; they would arrive as null) and binary (BLOB) columns."""
    n = table.num_rows
    reasons = pa.nulls(n, pa.string())
    for name in columns:
        col = table.column(name)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        t = col.type
        if pa.types.is_floating(t):
            finite = pc.is_finite(col)
            bad = pc.and_(pc.is_valid(col), pc.invert(finite))
            if pc.any(bad).as_py():
                reasons = v._reason_where(
                    bad, f"column {name!r} is NaN or infinite, which Klaviyo cannot store (use NULL for no value)", reasons
                )
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            bad = pc.is_valid(col)
            if pc.any(bad).as_py():
                reasons = v._reason_where(
                    bad,
                    f"column {name!r} is binary (BLOB); Klaviyo takes text, numbers, "
                    f"booleans and times: convert it in the query (e.g. hex({name}))",
                    reasons,
                )
    return reasons


def refuse(message: str, column: str | None = None) -> ExportError:
    return ExportError(message, column=column)
