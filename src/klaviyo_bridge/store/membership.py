"""Membership history: one run's snapshot of group members -> the history and current tables.

Klaviyo says who is in a list or segment now (with ``joined_group_at``), never who left. The
history table (``GROUP``, ``profile_id``, ``joined_at``, ``left_at``) is kept by comparing each
run's complete snapshot with the rows still open (``left_at IS NULL``):

* open row, member with the same ``joined_at``: unchanged;
* open row, member with another ``joined_at``: left and came back between runs, so the old row
  closes at the new ``joined_at`` (the latest it can have ended) and a new row opens;
* open row, not a member: closes with ``left_at`` = this run's snapshot time (the profile left
  between the previous run and this one);
* member without an open row: a new row (a first join, or a return after a ``left_at``).

The ``TABLE_current`` table holds the snapshot itself. Snapshot, history, current table and the
cursor change in ONE transaction: a run stopped anywhere (kill -9 included) leaves all of them
as the last successful run left them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from ..errors import StoreError
from .columns import Kind
from .engine import Session
from .identifiers import check_object_name, qualified, quote
from .warehouse import Warehouse, WriteSession

CURRENT_SUFFIX = "_current"


@dataclass
class MembershipChanges:
    members: int = 0  # in this run's snapshot
    joined: int = 0  # rows opened
    left: int = 0  # rows closed


class MembershipWriter(WriteSession):
    """One run's snapshot of some groups' members, applied at ``commit``."""

    def __init__(self, warehouse: Warehouse, database: str, table: str, group_column: str, *, lock_timeout: float = 0.0) -> None:
        super().__init__(warehouse, database, table, lock_timeout=lock_timeout)
        check_object_name(table + CURRENT_SUFFIX, "table")
        self.group = group_column
        self.history = qualified(database, table)
        self.current = qualified(database, table + CURRENT_SUFFIX)
        self.history_columns = {
            group_column: Kind.TEXT,
            "profile_id": Kind.TEXT,
            "joined_at": Kind.TIMESTAMP,
            "left_at": Kind.TIMESTAMP,
        }
        self.current_columns = {group_column: Kind.TEXT, "profile_id": Kind.TEXT, "joined_at": Kind.TIMESTAMP}
        self._stage = ""
        self.rows = 0

    def _prepare(self, s: Session) -> None:
        for name, target, columns in (
            (self.table, self.history, self.history_columns),
            (self.table + CURRENT_SUFFIX, self.current, self.current_columns),
        ):
            existing = s.table_columns(self.database, name)
            if existing is None:
                s.create_table(target, columns)
                continue
            folded = {c.casefold() for c in existing}
            missing = [c for c in columns if c.casefold() not in folded]
            if missing:
                raise StoreError(
                    f"{self.database}.{name} exists without the membership columns "
                    f"{', '.join(missing)}: choose another table for the membership history"
                )
        s.lookup_index(self.database, self.table, [self.group, "profile_id"])
        self._stage = s.create_stage("_bridge_members", self.current_columns, False)

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Rows of (group column, ``profile_id``, ``joined_at``)."""
        if not batch.num_rows:
            return
        names = {n: n for n in batch.schema.names}
        self.session.insert_batch(self._stage, batch, names, self.current_columns)
        self.rows += batch.num_rows

    def commit(
        self, groups: Sequence[str], observed_at: datetime, *, every_group: bool, cursors: Mapping[str, str] | None = None
    ) -> MembershipChanges:
        """Apply the snapshot of ``groups`` (complete for each of them) taken at ``observed_at``.
        ``every_group``: the snapshot covers every group of the account, so open rows of groups
        that no longer exist close too."""
        g, h, c = quote(self.group), self.history, self.current
        at = self.session.cast("'" + observed_at.astimezone(timezone.utc).isoformat() + "'", Kind.TIMESTAMP)
        changes = MembershipChanges()
        with self._committing(cursors) as s:
            # One row per (group, profile): a profile paged twice (the list changed while it was
            # read) counts once, with its latest join.
            snap = s.create_stage("_bridge_snapshot", self.current_columns, False)
            s.execute(f"INSERT INTO {snap} SELECT {g}, profile_id, max(joined_at) FROM {self._stage} GROUP BY {g}, profile_id")
            chosen = s.create_stage("_bridge_groups", {self.group: Kind.TEXT}, False)
            for group in groups:
                s.execute(f"INSERT INTO {chosen} VALUES ($1)", [group])
            in_scope = "TRUE" if every_group else f"h.{g} IN (SELECT {g} FROM {chosen})"
            changes.members = int(s.fetch(f"SELECT count(*) FROM {snap}")[0][0])
            # left and came back between runs: the old row ends at the new join
            changes.left += int(
                s.fetch(
                    f"SELECT count(*) FROM {h} AS h JOIN {snap} AS m ON m.{g} = h.{g} AND m.profile_id = h.profile_id "
                    f"WHERE h.left_at IS NULL AND h.joined_at IS DISTINCT FROM m.joined_at"
                )[0][0]
            )
            s.execute(
                f"UPDATE {h} SET left_at = m.joined_at FROM {snap} AS m WHERE m.{g} = {h}.{g} "
                f"AND m.profile_id = {h}.profile_id AND {h}.left_at IS NULL "
                f"AND {h}.joined_at IS DISTINCT FROM m.joined_at"
            )
            # gone: ends at this snapshot
            gone = (
                f"h.left_at IS NULL AND {in_scope} AND NOT EXISTS (SELECT 1 FROM {snap} AS m "
                f"WHERE m.{g} = h.{g} AND m.profile_id = h.profile_id)"
            )
            changes.left += int(s.fetch(f"SELECT count(*) FROM {h} AS h WHERE {gone}")[0][0])
            s.execute(f"UPDATE {h} AS h SET left_at = {at} WHERE {gone}")
            # joined (first time, or again)
            new = (
                f"FROM {snap} AS m WHERE NOT EXISTS (SELECT 1 FROM {h} AS h WHERE h.{g} = m.{g} "
                f"AND h.profile_id = m.profile_id AND h.left_at IS NULL)"
            )
            changes.joined = int(s.fetch(f"SELECT count(*) {new}")[0][0])
            s.execute(
                f"INSERT INTO {h} ({g}, profile_id, joined_at, left_at) SELECT m.{g}, m.profile_id, m.joined_at, NULL {new}"
            )
            if every_group:
                s.clear_table(c)
            else:
                s.execute(f"DELETE FROM {c} WHERE {g} IN (SELECT {g} FROM {chosen})")
            s.execute(f"INSERT INTO {c} ({g}, profile_id, joined_at) SELECT {g}, profile_id, joined_at FROM {snap}")
        return changes
