"""The built-in job kinds: ``import``, ``export`` and ``workflow``, each calling its engine.

Apart from ``jobs`` (the registry, the run records, killing) so that the verbs that only list or
kill jobs do not load the engines: ``job:list`` loaded the import and export engines, pyarrow and
httpx for a table of past runs (0.8 s, 147 MB). ``jobs`` loads this module when a job first runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..config import parse_import_config
from ..errors import ConfigError
from ..exports.job import export_query
from ..exports.settings import ExportSettings, load_result_settings
from ..imports.runner import run_import
from ..secrets import ApiKey, CredentialStore, resolve_connection
from ..store.state import StateStore
from ..workflows.dig import WorkflowRunner
from . import JobCancelled, JobContext, JobOutcome, JobSpec, Runner

log = logging.getLogger("klaviyo_bridge.jobs")


# --- the import kind -----------------------------------------------------------------------
def adopt_earlier_cursor(state: StateStore, spec: JobSpec) -> str | None:
    """A job stored under an earlier name (``spec.earlier_jobs``) keeps its place: when the job has
    no cursor yet, the first earlier name's cursor is copied to it (the old one stays, unread), so
    the import resumes where it was instead of starting over. Returns the name adopted from."""
    if not spec.earlier_jobs or state.cursor(spec.job) is not None:
        return None
    for earlier in spec.earlier_jobs:
        value = state.cursor(earlier)
        if value is not None:
            state.save_cursor(spec.job, value)
            log.info("job %s: resuming from the cursor stored as %s", spec.job, earlier)
            return earlier
    return None


async def run_import_job(ctx: JobContext) -> JobOutcome:
    spec = ctx.spec
    if not spec.database or not spec.table:
        raise ConfigError("an import job needs a database and a table")
    config = parse_import_config(ctx.resolved_config(), f"schedule {spec.schedule or spec.job}")
    adopt_earlier_cursor(ctx.warehouse.state, spec)
    result = await run_import(config, ctx.warehouse, spec.database, spec.table, job=spec.job, now=ctx.now, run_id=ctx.run_id)
    return JobOutcome(
        rows_read=result.rows,
        rows_written=result.rows,
        counts={
            "pages": result.pages,
            "requests": result.requests,
            "retries": result.retries,
            "throttled": result.throttled,
            "seconds": round(result.seconds, 3),
        },
    )


# --- the export kind -----------------------------------------------------------------------
def _stopper(stop: threading.Event) -> Callable[[str, int], None]:
    """An export ``progress`` callback that stops the export at its next batch once ``stop`` is set.

    Only batch events stop it (raised inside a batch, the export lets the batches in flight finish);
    other kinds (``validated``, any new one) are ignored."""

    def progress(what: str, rows: int) -> None:
        if what in ("sent", "done") and stop.is_set():
            raise JobCancelled("killed by job:kill")

    return progress


async def _in_thread(stop: threading.Event, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run a blocking engine call in a worker thread; a kill sets ``stop`` (the loop then waits for it)."""
    try:
        return await asyncio.to_thread(func, *args, **kw)
    except asyncio.CancelledError:
        stop.set()
        raise


def export_settings_of(
    config: Mapping[str, Any], credentials: CredentialStore, secrets: list[str] | None = None
) -> ExportSettings:
    """An export schedule's stored ``result_settings`` -> validated ExportSettings (saved key filled in)."""
    raw = config.get("result_settings")
    if not isinstance(raw, Mapping):
        raise ConfigError("an export job needs result_settings", key="result_settings")
    resolved = resolve_connection(raw, credentials)
    for key in ("api_token", "api_key"):
        if isinstance(resolved.get(key), (str, ApiKey)) and secrets is not None:
            secrets.append(resolved[key])
    return load_result_settings(resolved, credentials_path=credentials.path)


async def run_export_job(ctx: JobContext) -> JobOutcome:
    """Kind ``export``: ``config = {"query": SQL, "result_settings": {...}}`` into ``spec.database``.

    Calls the export engine's public entry point (``exports.job.export_query``) in a worker
    thread, on the run row ``begin_job`` wrote, so the export's row outcomes hang off this job.
    """
    spec = ctx.spec
    sql = spec.config.get("query")
    if not isinstance(sql, str) or not sql.strip():
        raise ConfigError("an export job needs a query", key="query")
    settings = export_settings_of(spec.config, ctx.credentials, ctx.secrets)
    stop = threading.Event()
    # The engine checks the destination (one read of a list given by id) before the query runs, and
    # raises ExportFailed (status error) when nothing sent was accepted or stop_on_batch_failure tripped.
    result = await _in_thread(
        stop,
        export_query,
        ctx.warehouse,
        sql,
        settings,
        database=spec.database,
        job=spec.job,
        run_id=ctx.run_id,
        progress=_stopper(stop),
        table=spec.result,
    )
    counts = dict(result.summary.counts)
    partial = result.partial_warning()
    if partial:
        log.warning("export %s: %s", ctx.run_id, partial)
    return JobOutcome(
        rows_read=result.summary.total,
        rows_written=counts.get("accepted", 0) + counts.get("submitted", 0),
        counts={
            **counts,
            "batches": result.batches,
            "failed_batches": result.failed_batches,
            "requests": result.requests,
            "seconds": round(result.seconds, 3),
        },
    )


# --- the workflow kind ---------------------------------------------------------------------
async def run_workflow_job(ctx: JobContext) -> JobOutcome:
    """Kind ``workflow``: the tasks of a pushed .dig, from the copy stored at push time.

    ``config = {"workflow": {"name", "document", "files", ...}}``: later edits of the file on disk
    do not change what runs. Each export task records its own export run (``job:list``).
    """
    stored = ctx.spec.config.get("workflow")
    if not isinstance(stored, Mapping) or not isinstance(stored.get("document"), Mapping):
        raise ConfigError("a workflow job needs a pushed workflow (workflow push FILE.dig)")
    stop = threading.Event()
    runner = WorkflowRunner(
        ctx.warehouse,
        credentials_path=ctx.credentials.path,
        files=dict(stored.get("files") or {}),
        export_options={"progress": _stopper(stop)},
    )
    results = await _in_thread(stop, runner.run_document, stored["document"], str(stored.get("name") or ctx.spec.job))
    rows = sum(r.rows or 0 for r in results)
    exported = [r.export for r in results if r.export is not None]
    written = sum(e.summary.counts.get("accepted", 0) + e.summary.counts.get("submitted", 0) for e in exported)
    return JobOutcome(
        rows_read=rows, rows_written=written, counts={"tasks": len(results), "export_runs": ",".join(e.run_id for e in exported)}
    )


#: What ``jobs`` registers for a kind nobody registered (a kind registered first stays: a test's
#: or a plugin's runner is never replaced by the built-in one).
BUILT_IN: dict[str, Runner] = {"import": run_import_job, "export": run_export_job, "workflow": run_workflow_job}
