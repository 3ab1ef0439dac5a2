"""What happened to an export run, from the state schema: counts per outcome, rows, one line.

``export_summary(wh, run_id)`` is what ``query`` prints at the end and what ``job:show`` can
show; ``export_row_results(wh, run_id)`` lists every input row with its outcome and reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from ..store.state_common import ROW_OUTCOMES
from ..store.warehouse import Warehouse


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
    st = wh.state
    counts = {o: 0 for o in ROW_OUTCOMES}
    counts.update(st.export_outcome_counts(run_id))
    return ExportSummary(
        run_id,
        sum(counts.values()),
        {k: v for k, v in counts.items() if v},
        st.export_batch_counts(run_id),
        st.export_top_reasons(run_id, reasons),
    )


def export_row_results(wh: Warehouse, run_id: str) -> pa.Table:
    """Every row of the run (row_index is the 0-based position in the query result), in input order."""
    return wh.state.export_rows(run_id=run_id).sort_by("row_index")
