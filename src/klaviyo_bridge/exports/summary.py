"""What happened to an export run, from the state schema: counts per outcome, rows, one line.

``export_summary(wh, run_id)`` is what ``query`` prints at the end and what ``job:show`` can
show; ``export_row_results(wh, run_id)`` lists every input row with its outcome and reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from ..store.identifiers import STATE_SCHEMA, quote
from ..store.state import ROW_OUTCOMES
from ..store.warehouse import Warehouse

S = quote(STATE_SCHEMA)


@dataclass
class ExportSummary:
    run_id: str
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)
    top_reasons: list[tuple[str, str, int]] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"{self.counts.get(o, 0):,} {o}" for o in ROW_OUTCOMES if self.counts.get(o)]
        extra = [f"{n:,} {k}" for k, n in self.counts.items() if k not in ROW_OUTCOMES and n]
        return f"run {self.run_id}: {self.total:,} rows: " + (", ".join(parts + extra) or "nothing")


def export_summary(wh: Warehouse, run_id: str, *, reasons: int = 5) -> ExportSummary:
    counts = {o: 0 for o in ROW_OUTCOMES}
    for batch in wh.query_arrow(f"SELECT outcome, sum(row_count) AS n FROM {S}.export_row_ranges WHERE run_id = $1 "
                                "GROUP BY outcome", [run_id]):
        for o, n in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            counts[o] = int(n)
    batches: dict[str, int] = {}
    for batch in wh.query_arrow(f"SELECT status, count(*) FROM {S}.export_batches WHERE run_id = $1 "
                                "GROUP BY status", [run_id]):
        for s, n in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            batches[s] = int(n)
    top: list[tuple[str, str, int]] = []
    for batch in wh.query_arrow(
            f"SELECT outcome, reason, sum(row_count) AS n FROM {S}.export_row_ranges WHERE run_id = $1 "
            "AND reason IS NOT NULL "
            f"AND outcome IN ('rejected', 'skipped', 'unconfirmed') GROUP BY outcome, reason ORDER BY n DESC, reason LIMIT {int(reasons)}",
            [run_id]):
        top += [(o, r, int(n)) for o, r, n in zip(*(c.to_pylist() for c in batch.columns))]
    return ExportSummary(run_id, sum(counts.values()), {k: v for k, v in counts.items() if v}, batches, top)


def export_row_results(wh: Warehouse, run_id: str) -> pa.Table:
    """Every row of the run (row_index is the 0-based position in the query result), in input order."""
    return wh.state.export_rows(run_id=run_id).sort_by("row_index")
