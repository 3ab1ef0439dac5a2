"""One export job as the CLI and workflows run it: settings in, query run, result reported.

``load_result_settings`` (from ``settings``, where the verbs that only read or save settings take
it without the engine) takes a YAML/JSON file, inline JSON or an already-parsed mapping (a
workflow's ``result_settings``), resolves ``result_connection`` against saved authentications,
and validates. ``export_query`` runs the SQL on the warehouse and exports the result.
``report_lines`` renders what to print: warnings, dry-run counts and samples, the summary.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from ..errors import ConfigError
from ..store.warehouse import Warehouse
from .runner import ExportResult, run_export
from .settings import ExportSettings
from .source import query_source


def export_query(
    wh: Warehouse,
    sql: str,
    settings: ExportSettings,
    *,
    database: str | None = None,
    job: str = "query",
    dry_run: bool = False,
    resume: str | None = None,
    run_id: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    table: Any = None,
    **kw: Any,
) -> ExportResult:
    """Run ``sql`` on the warehouse (``database`` as default schema) and export the result.

    ``table``: the query's result already read (an Arrow table; the console reads it in its sandbox),
    exported as the result of ``sql``. ``run_id``: the job run ``StateStore.begin_job`` already
    recorded (``jobs.execute_job``), which the export records on."""
    if resume is not None and run_id is not None:
        raise ConfigError("resume a run, or record on a begun one: not both", key="run_id")
    source = table if table is not None else query_source(wh, sql, database)
    return asyncio.run(
        run_export(
            wh,
            source,
            settings,
            job=job,
            dry_run=dry_run,
            run_id=resume or run_id,
            resume=resume is not None,
            begun=run_id is not None,
            query=sql,
            transport=transport,
            **kw,
        )
    )


def report_lines(result: ExportResult, settings: ExportSettings) -> list[str]:
    lines = [f"warning: {w}" for w in result.warnings]
    if result.dry_run:
        lines.append(
            f"dry run: {result.summary.total:,} rows: {result.would_send:,} would be sent in "
            f"{result.batches} batch(es) ({settings.operation}), {result.invalid:,} invalid"
            + (
                ""
                if not result.invalid
                else " (skipped)"
                if settings.skip_invalid_records
                else " (the job would fail: skip_invalid_records is false)"
            )
        )
        for row, reason in getattr(result, "invalid_rows", [])[:10]:
            lines.append(f"  invalid row {row + 1}: {reason}")
        for sample in result.samples:
            lines.append("  sample: " + json.dumps(sample, ensure_ascii=False))
        lines += result.details
        lines.append("dry run: nothing was sent")
        return lines
    s = result.summary
    lines += result.details
    for outcome, reason, n in s.top_reasons:
        lines.append(f"  {n:,} {outcome}: {reason}")
    extra = []
    if result.list_id:
        extra.append(f"list {result.list_id}")
    if result.failed_batches:
        extra.append(f"{result.failed_batches} failed batch(es)")
    if result.skipped_on_resume:
        extra.append(f"{result.skipped_on_resume} batch(es) already done before resume")
    extra.append(f"{result.batches} batch(es), {result.requests} request(s), {result.seconds:.1f}s")
    lines.append(f"{result.status}: " + s.line() + " (" + "; ".join(extra) + ")")
    partial = result.partial_warning()
    if partial:
        lines.append(f"warning: {partial}")
    return lines
