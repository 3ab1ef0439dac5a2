"""``operation: mirror``: make a list's membership equal the query result.

1. The whole result is read once before anything is sent (``observe``): each row's email,
   phone_number and external_id.
2. The list's members are read from Klaviyo (``begin``), so changes made in Klaviyo are seen:
   - with no snapshot from an earlier run, every member is read (``get_profiles_for_list``,
     100 a page, in 8 ``joined_group_at`` windows at once);
   - with one, only members who joined since the snapshot's newest ``joined_group_at`` (minus an
     hour) are read, and the list's ``profile_count`` is read once: the snapshot plus those is
     exactly the list when the counts agree (the list can only hold members of the snapshot or
     members who joined after it); otherwise (someone left in Klaviyo) every member is read.
3. The diff: a member is *in the result* when any of its identifiers is in a row (even an invalid
   row: a bad row never gets its person removed); a row is *already a member* when any of its
   identifiers is a member's.
4. Safety, before anything is sent: more removals than ``max_removals`` (a count or a share of the
   list, default 10%) stops the run naming the numbers; an empty result never empties a list
   unless ``allow_empty: true``.
5. New rows are added as ``add`` does (bulk import with the list; profile fields updated),
   already-members are ``skipped`` ("already a member") before batches are cut (``hold_back``,
   so 10,000 new rows are one request however they are spread), departed members are removed from the
   list (``remove_profiles_from_list``: a list removal, never an unsubscribe), accounted as rows
   numbered after the input.
6. The decisions (removals, rows already members) are stored with the run (``export_plans``):
   a ``--resume`` reloads them (``restore``) and sends the same batches. After a successful run the members (minus those removed) are stored as the list's
   snapshot (``list_snapshots``) for the next run.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ...api.query import Condition, Query, greater_or_equal, less_than
from ...errors import ExportError
from .. import validate as v
from ..batching import Endpoint
from ..payloads import Payloads
from .add import ADD_IDENTIFIERS, prepare_add
from .base import BatchContext, Operation, Prepared, RunContext, dumps, finish, identity_of, take_py
from .remove import RemoveFromList

log = logging.getLogger("klaviyo_bridge.exports")

MEMBER_FIELDS = ("email", "phone_number", "external_id")
#: Members who joined this long before the snapshot's newest join are read again (clock skew, ties).
JOIN_MARGIN = timedelta(hours=1)
SAMPLE = 5
#: A full read of a list goes in this many joined_group_at windows at once.
READ_WINDOWS = 8
PLAN = "mirror.departed"


def _norm(name: str, column: pa.Array) -> pa.Array:
    """How an identifier is compared: trimmed, empty as null, an email lower-cased."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    text = pc.utf8_trim_whitespace(v._as_text(column))
    if name == "email":
        text = pc.utf8_lower(text)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _in(values: pa.Array, value_set: pa.Array) -> np.ndarray:
    if not len(values):
        return np.zeros(0, dtype=bool)
    if not len(value_set):
        return np.zeros(len(values), dtype=bool)
    found: np.ndarray = pc.fill_null(pc.is_in(values, value_set=value_set, skip_nulls=True), False).to_numpy(zero_copy_only=False)
    return found


def _parse_joined(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class MirrorRemove(RemoveFromList):
    """The departed members: a list removal (their subscriptions are untouched)."""

    name = "mirror (removals)"
    sent_reason = "removed from the list: not in the query result any more (a list removal; consent unchanged)"

    def prepare(self, table: pa.Table, seen: v.SeenValues, now: datetime | None = None) -> Prepared:
        chk = v.check_required_text(table.column("profile_id"), "profile_id")

        def build(index: np.ndarray) -> tuple[Payloads, list[tuple[int, int]]]:
            return Payloads.of([dumps({"type": "profile", "id": pid}) for pid in take_py(chk.values, index)]), []

        return finish(chk.reasons, build, [], identity_of(table, ("email", "phone_number", "external_id", "profile_id")))


class Mirror(Operation):
    name = "mirror"
    endpoint = Endpoint("bulk_import_profiles", 10_000)
    needs_list = True
    creates_list = True
    reads_input_first = True
    dry_run_reads_klaviyo = True

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._chunks: dict[int, tuple[int, dict[str, pa.Array]]] = {}  # offset -> (rows, identifiers)
        self.member_rows = np.zeros(0, dtype=bool)  # per input row: already a member
        self.departed: pa.Table | None = None
        self.members: pa.Table | None = None
        self.newest_joined: str | None = None
        self.read_mode = ""
        self.refusal: str | None = None
        self.already = 0
        self.list_id: str | None = None
        self.input_rows = 0
        self.valid_rows = 0
        self.samples_add: list[str] = []
        self.planned: dict[str, Any] | None = None
        self.planned_members = np.zeros(0, dtype=bool)

    # --- the input ---------------------------------------------------------------------------
    def required_columns(self) -> tuple[tuple[str, ...], bool]:
        return ADD_IDENTIFIERS, True

    def prepare(self, table: pa.Table, seen: v.SeenValues, now: datetime | None = None) -> Prepared:
        p = prepare_add(table, self.settings, seen)
        ids = {c: _norm(c, table.column(c)) for c in MEMBER_FIELDS if c in table.schema.names}
        if "phone_number" in ids:  # also the E.164 form Klaviyo stores
            cleaned = v.check_phones(
                table.column("phone_number"), required=False, default_region=self.settings.default_phone_region
            ).values
            ids["phone_e164"] = cleaned
        p.extra["mirror_ids"] = ids
        return p

    def observe(self, offset: int, prepared: Prepared) -> None:
        valid = np.zeros(prepared.total, dtype=bool)
        valid[prepared.row_index - offset] = True
        self._chunks[offset] = (prepared.total, {**prepared.extra["mirror_ids"], "_valid": valid})

    def _result(self) -> tuple[dict[str, pa.Array], np.ndarray]:
        """Every input row's identifiers (input order) and which rows are valid."""
        cols: dict[str, list[pa.Array]] = {}
        valid: list[np.ndarray] = []
        for offset in sorted(self._chunks):
            n, ids = self._chunks[offset]
            valid.append(ids["_valid"])
            for c, arr in ids.items():
                if c != "_valid":
                    cols.setdefault(c, []).append(arr)
        joined = {c: pa.concat_arrays([a.cast(pa.string()) for a in arrs]) for c, arrs in cols.items()}
        return joined, (np.concatenate(valid) if valid else np.zeros(0, dtype=bool))

    # --- the members -------------------------------------------------------------------------
    async def _read(self, ctx: BatchContext, since: datetime | None) -> tuple[pa.Table, str | None]:
        """Members who joined at or after ``since`` (None: every member, read in ``READ_WINDOWS``
        joined_group_at windows at once, so a large list is read at the rate limit, not at one
        page per round trip)."""
        fields = {"profile": list(MEMBER_FIELDS) + ["joined_group_at"]}
        windows: list[tuple[Condition, ...]]
        if since is not None:
            windows = [(greater_or_equal("joined_group_at", since),)]
        else:
            windows = await self._windows(ctx, fields)
        parts = await asyncio.gather(*(self._read_window(ctx, Query(filters=f, page_size=100, fields=fields)) for f in windows))
        cols: dict[str, list[str | None]] = {"profile_id": [], **{c: [] for c in MEMBER_FIELDS}}
        newest = None
        for part, part_newest in parts:
            for c in cols:
                cols[c] += part[c]
            if part_newest and (newest is None or part_newest > newest):
                newest = part_newest
        table = pa.table({c: pa.array(vals, pa.string()) for c, vals in cols.items()})
        if since is None and table.num_rows:  # windows meet at their edges: a member read twice counts once
            table = (
                table.group_by("profile_id", use_threads=False)
                .aggregate([(c, "first") for c in MEMBER_FIELDS])
                .rename_columns(["profile_id", *MEMBER_FIELDS])
            )
        return table, newest

    async def _windows(self, ctx: BatchContext, fields: dict[str, list[str]]) -> list[tuple[Condition, ...]]:
        """joined_group_at windows covering the list: from its earliest to its newest member."""
        ends = []
        for sort in ("joined_group_at", "-joined_group_at"):
            doc = await ctx.client.request(
                "get_profiles_for_list", path_params={"id": ctx.the_list()}, query=Query(sort=sort, page_size=1, fields=fields)
            )
            data = (doc or {}).get("data") or []
            if not data:
                return [()]
            ends.append(_parse_joined((data[0].get("attributes") or {}).get("joined_group_at")))
        first, last = ends
        if first is None or last is None or last <= first:
            return [()]
        step = (last - first) / READ_WINDOWS
        cuts = [first + step * i for i in range(1, READ_WINDOWS)]
        out: list[tuple[Condition, ...]] = [(less_than("joined_group_at", cuts[0]),)]
        for a, b in zip(cuts, cuts[1:]):
            out.append((greater_or_equal("joined_group_at", a), less_than("joined_group_at", b)))
        out.append((greater_or_equal("joined_group_at", cuts[-1]),))
        return out

    async def _read_window(self, ctx: BatchContext, query: Query) -> tuple[dict[str, list[str | None]], str | None]:
        cols: dict[str, list[str | None]] = {"profile_id": [], **{c: [] for c in MEMBER_FIELDS}}
        newest = None
        async for page in ctx.client.pages("get_profiles_for_list", path_params={"id": ctx.the_list()}, query=query):
            for rec in page.data:
                attrs = rec.get("attributes") or {}
                cols["profile_id"].append(rec["id"])
                for c in MEMBER_FIELDS:
                    cols[c].append(attrs.get(c))
                joined = attrs.get("joined_group_at")
                if joined and (newest is None or joined > newest):
                    newest = joined
        return cols, newest

    async def _count(self, ctx: BatchContext) -> int | None:
        doc = await ctx.client.request(
            "get_list", path_params={"id": ctx.the_list()}, params=[("additional-fields[list]", "profile_count")]
        )
        return (((doc or {}).get("data") or {}).get("attributes") or {}).get("profile_count")

    def destination(self, ctx: BatchContext) -> str:
        return f"{self.settings.base_url}|{ctx.list_id}"

    async def read_members(self, ctx: RunContext) -> pa.Table:
        """The list's members now: from the snapshot plus who joined since, when the count agrees."""
        snap = ctx.state.list_snapshot(self.destination(ctx)) if ctx.state is not None else None
        since = _parse_joined(snap[0]["newest_joined"]) if snap else None
        if snap is not None and since is not None:
            fresh, newest = await self._read(ctx, since - JOIN_MARGIN)
            old = snap[1]
            keep = ~_in(old.column("profile_id"), fresh.column("profile_id"))
            union = pa.concat_tables([old.filter(pa.array(keep)), fresh.select(old.schema.names)])
            count = await self._count(ctx)
            if count == union.num_rows:
                self.read_mode = (
                    f"snapshot of run {snap[0]['run_id']} plus {fresh.num_rows:,} member(s) who joined "
                    f"since {snap[0]['newest_joined']}; profile_count {count:,} agrees"
                )
                self.newest_joined = max(filter(None, [newest, snap[0]["newest_joined"]]))
                return union
            self.read_mode = (
                f"every member (the snapshot plus new joins makes {union.num_rows:,}, the list's "
                f"profile_count is {count}: someone left or changed in Klaviyo)"
            )
        else:
            self.read_mode = "every member (no snapshot from an earlier run)"
        members, self.newest_joined = await self._read(ctx, None)
        return members

    # --- the run -----------------------------------------------------------------------------
    async def begin(self, ctx: RunContext) -> None:
        self.list_id = ctx.list_id
        ids, valid = self._result()
        n = len(valid)
        self.input_rows, self.valid_rows = n, int(valid.sum())
        if ctx.list_id is None:  # a list by name that does not exist yet: no members
            self.members = pa.table({c: pa.array([], pa.string()) for c in ("profile_id",) + MEMBER_FIELDS})
            self.read_mode = "the list does not exist yet (it is created with the first rows)"
        else:
            self.members = await self.read_members(ctx)
        m = self.members
        member_ids = {c: _norm(c, m.column(c)) for c in MEMBER_FIELDS}
        # rows already members: any identifier of the row is a member's
        is_member = np.zeros(n, dtype=bool)
        for c, col in ids.items():
            target = member_ids["phone_number" if c == "phone_e164" else c]
            is_member |= _in(col, target)
        self.member_rows = is_member
        # members in the result: any identifier of the member is in a row (valid or not)
        in_result = np.zeros(m.num_rows, dtype=bool)
        for c in MEMBER_FIELDS:
            for key in [k for k in ids if k == c or (c == "phone_number" and k == "phone_e164")]:
                in_result |= _in(member_ids[c], ids[key])
        planned = self.planned
        if planned is not None:  # a --resume: the first attempt's decisions (restore)
            self.member_rows = self.planned_members
            is_member = self.member_rows if len(self.member_rows) == n else np.zeros(n, dtype=bool)
            departed = self.departed
            assert departed is not None, "restore sets it with the plan"
        else:
            departed = self.departed = m.filter(pa.array(~in_result))
        adds = int((valid & ~is_member).sum())
        self.already = int((valid & is_member).sum())
        self.samples_add = [x for x in identity_sample(ids, valid & ~is_member)]
        self.refusal = self._check(m.num_rows, departed.num_rows, n) if planned is None else None
        if self.refusal:
            if ctx.dry_run:
                return
            raise ExportError(self.refusal)
        if not ctx.dry_run and ctx.state is not None and planned is None:
            plan = {c: departed.column(c).to_pylist() for c in ("profile_id",) + MEMBER_FIELDS}
            plan["member_runs"] = _runs(self.member_rows)
            plan["rows"] = n
            ctx.state.save_export_plan(ctx.run_id, PLAN, plan)
        log.info(
            "mirror of list %s: %s; %d to add, %d already members, %d to remove",
            ctx.list_id,
            self.read_mode,
            adds,
            int((valid & is_member).sum()),
            departed.num_rows,
        )

    def _check(self, members: int, removals: int, rows: int) -> str | None:
        s = self.settings
        if rows == 0 and members and not s.allow_empty:
            return (
                f"the query returned no rows: mirror would remove all {members:,} members of list {self.list_id}. "
                "Nothing was sent; set allow_empty: true to empty the list"
            )
        if rows == 0 and s.allow_empty:
            return None
        limit = s.removal_limit(members)
        if removals > limit:
            share = 100 * removals / members if members else 100.0
            return (
                f"mirror would remove {removals:,} of the {members:,} members of list {self.list_id} ({share:.1f}%), "
                f"more than max_removals {s.max_removals} ({limit:,}); nothing was sent. Check the query, or raise "
                'max_removals (a count, or a share like "25%")'
            )
        return None

    async def restore(self, ctx: RunContext) -> None:
        plan = ctx.state.export_plan(ctx.run_id, PLAN) if ctx.state is not None else None
        if plan is None:
            return  # the first attempt died before deciding: decide now
        self.planned = plan
        self.departed = pa.table({c: pa.array(plan[c], pa.string()) for c in ("profile_id",) + MEMBER_FIELDS})
        self.planned_members = _from_runs(plan["member_runs"], plan["rows"])
        self.member_rows = self.planned_members

    def hold_back(self, prepared: Prepared) -> Prepared:
        """Rows already members are not sent: the rest fill whole 10,000-profile requests."""
        if not len(self.member_rows) or not len(prepared.row_index):
            return prepared
        idx = prepared.row_index
        held = np.zeros(len(idx), dtype=bool)
        inside = idx < len(self.member_rows)
        held[inside] = self.member_rows[idx[inside]]
        if not held.any():
            return prepared
        reason = f"already a member of list {self.list_id or self.settings.list_value}: nothing to send"
        prepared.held_index = np.concatenate([prepared.held_index, idx[held]])
        prepared.held_reason = prepared.held_reason + [reason] * int(held.sum())
        prepared.row_index = idx[~held]
        prepared.items = prepared.items.filter(~held)
        return prepared

    def envelope(self, items: orjson.Fragment, list_id: str | None) -> Any:
        data: dict[str, Any] = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": items}}}
        if list_id:
            data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
        return {"data": data}

    def followups(self) -> list[tuple[Operation, pa.Table]]:
        if self.departed is None or not self.departed.num_rows:
            return []
        return [(MirrorRemove(self.settings), self.departed)]

    async def end(self, ctx: RunContext) -> None:
        """Store the members as the next run's snapshot: those read, minus those removed (when every
        removal was accepted; otherwise all read, a superset the next run's count check catches)."""
        if self.members is None or ctx.state is None or ctx.list_id is None:
            return
        members = self.members
        removals = ctx.phase_counts[1] if len(ctx.phase_counts) > 1 else {}
        if self.departed is not None and self.departed.num_rows and removals.get("accepted", 0) == self.departed.num_rows:
            members = members.filter(pa.array(~_in(members.column("profile_id"), self.departed.column("profile_id"))))
        ctx.state.save_list_snapshot(self.destination(ctx), members, self.newest_joined, ctx.run_id)

    def report(self, ctx: RunContext | None = None) -> list[str]:
        if self.members is None:
            return []
        m, d = self.members.num_rows, self.departed.num_rows if self.departed is not None else 0
        valid = self.valid_rows
        member_valid = int(self.member_rows.sum()) if len(self.member_rows) else 0
        lines = []
        if ctx is not None and ctx.dry_run:
            lines.append(
                f"mirror of list {self.list_id or self.settings.list_value}: {m:,} members now ({self.read_mode}); "
                f"{self.input_rows:,} rows: would add {max(0, valid - member_valid):,}, "
                f"{member_valid:,} already members, would remove {d:,}"
            )
            if self.refusal:
                lines.append(f"mirror would stop: {self.refusal}")
            for ident in self.samples_add[:SAMPLE]:
                lines.append(f"  would add: {ident}")
            if self.departed is not None:
                for row in self.departed.slice(0, SAMPLE).to_pylist():
                    who = row.get("email") or row.get("phone_number") or row.get("external_id") or ""
                    lines.append(f"  would remove: {who} (profile {row['profile_id']})".replace(":  (", ": ("))
            return lines
        counts = ctx.phase_counts if ctx is not None else []
        main = counts[0] if counts else {}
        rem = counts[1] if len(counts) > 1 else {}
        added = main.get("accepted", 0) + main.get("submitted", 0)
        lines.append(
            f"mirror of list {self.list_id}: {added:,} added, {self.already:,} already members, "
            f"{rem.get('accepted', 0):,} removed, {main.get('rejected', 0) + rem.get('rejected', 0):,} rejected "
            f"(members read: {self.read_mode})"
        )
        return lines


def _runs(mask: np.ndarray) -> list[list[int]]:
    """[start, end) runs of True in ``mask`` (a 1M-row result with 1% churn: ~10,000 runs)."""
    if not len(mask):
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges.reshape(-1, 2).tolist()


def _from_runs(runs: list[list[int]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for a, b in runs:
        mask[a:b] = True
    return mask


def identity_sample(ids: dict[str, pa.Array], mask: np.ndarray, n: int = SAMPLE) -> list[str]:
    rows = np.flatnonzero(mask)[:n]
    out = []
    for r in rows.tolist():
        for c in MEMBER_FIELDS:
            if c in ids and ids[c][r].is_valid:
                out.append(f"{c}:{ids[c][r].as_py()}")
                break
    return out
