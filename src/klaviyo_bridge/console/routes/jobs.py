"""Jobs: history with status, counts and durations; a job page with live progress (polling a
JSON endpoint), cancel, per-row export results (filterable, downloadable as CSV) and the
records-per-run chart of its schedule."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...errors import StoreError
from ...exports.summary import export_row_results, export_summary
from ...jobs import request_kill
from ...store.state import JobRecord
from ..web import blocking, checked_form, console_of, redirect, render
from .schedules import chart

STATUSES = ("queued", "running", "success", "error", "killed")
KINDS = ("import", "export", "workflow")
OUTCOMES = ("accepted", "rejected", "skipped", "submitted", "unconfirmed")
#: Export row results per page of a job page (the CSV has them all).
ROWS_PER_PAGE = 50


async def index(request: Request) -> Response:
    q = request.query_params
    schedule = q.get("schedule") or None
    status = q.get("status") if q.get("status") in STATUSES else None
    kind = q.get("kind") if q.get("kind") in KINDS else None

    def load() -> tuple[list[JobRecord], list[str]]:
        with console_of(request).holder.use() as wh:
            jobs = wh.state.jobs(schedule=schedule, status=status, limit=200)
            names = [r.name for r in wh.state.schedules()]
        return [j for j in jobs if kind is None or j.kind == kind], names

    jobs, names = await blocking(load)
    return render(
        request,
        "jobs.html",
        active="jobs",
        jobs=jobs,
        schedules=names,
        statuses=STATUSES,
        kinds=KINDS,
        f={"schedule": schedule or "", "status": status or "", "kind": kind or ""},
    )


def filtered_rows(table: pa.Table, outcome: str | None, text: str | None) -> pa.Table:
    if outcome in OUTCOMES:
        table = table.filter(pc.equal(table["outcome"], outcome))
    if text:  # in the reason or the row's identifier (an email, a phone number ...)
        reasons = pc.utf8_lower(pc.fill_null(table["reason"], ""))
        idents = pc.utf8_lower(pc.fill_null(table["identifier"], ""))
        table = table.filter(pc.or_(pc.match_substring(reasons, text.lower()), pc.match_substring(idents, text.lower())))
    return table


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _load_job(request: Request, run_id: str) -> dict[str, Any]:
    console = console_of(request)
    out: dict[str, Any] = {"job": None, "summary": None, "rows": None, "total_rows": 0, "chart": None, "history": []}
    with console.holder.use() as wh:
        try:
            job: JobRecord | None = wh.state.job(run_id)
        except StoreError:
            job = None
        out["job"] = job
        if job is None:
            return out
        if job.kind == "export":
            out["summary"] = export_summary(wh, job.run_id)
            rows = filtered_rows(
                export_row_results(wh, job.run_id), request.query_params.get("outcome"), request.query_params.get("q")
            )
            out["total_rows"] = rows.num_rows
            pages = max(1, -(-rows.num_rows // ROWS_PER_PAGE))
            page = min(max(_int(request.query_params.get("page"), 1), 1), pages)
            out["page"], out["pages"] = page, pages
            out["first_row"] = (page - 1) * ROWS_PER_PAGE
            out["rows"] = (
                rows.slice(out["first_row"], ROWS_PER_PAGE)
                .select(["row_index", "identifier", "outcome", "reason", "batch_id"])
                .to_pylist()
            )
        if job.schedule:
            out["history"] = wh.state.jobs(schedule=job.schedule, limit=30)
            out["chart"] = chart(out["history"])
    return out


async def detail(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    console = console_of(request)
    data = await blocking(_load_job, request, run_id)
    job = data["job"]
    if job is None:
        error = console.jobs.start_errors.get(run_id)
        if console.jobs.alive(run_id) or error:
            return render(request, "job_starting.html", active="jobs", run_id=run_id, error=error)
        return render(request, "not_found.html", what=f"job {run_id!r}", status=404)
    live = job.status == "running" or console.jobs.alive(job.run_id)
    return render(
        request,
        "job.html",
        active="jobs",
        j=job,
        outcomes=OUTCOMES,
        per_page=ROWS_PER_PAGE,
        live=live,
        f={"outcome": request.query_params.get("outcome", ""), "q": request.query_params.get("q", "")},
        **data,
    )


async def progress(request: Request) -> Response:
    """JSON for the live view: status, elapsed seconds, rows so far (export rows are counted as
    their batches are recorded; an import's rows are known when it ends), done."""
    run_id = request.path_params["run_id"]
    console = console_of(request)

    def load() -> tuple[JobRecord | None, int | None]:
        with console.holder.use() as wh:
            job = wh.state.job(run_id)
            rows = None
            if job is not None and job.kind == "export" and job.status == "running":
                rows = wh.state.export_rows(run_id=job.run_id).num_rows
            return job, rows

    job, rows = await blocking(load)
    if job is None:
        error = console.jobs.start_errors.get(run_id)
        return JSONResponse(
            {
                "run_id": run_id,
                "status": "failed to start" if error else "starting",
                "done": bool(error),
                "elapsed_seconds": 0.0,
                "rows": None,
                "error": error,
            }
        )
    if rows is None:
        rows = job.rows_written if job.rows_written is not None else job.rows_read
    ended = job.ended_at.timestamp() if job.ended_at else time.time()
    # The engine may record its own end a moment before execute_job records the job's (a killed
    # import first says "error", then "killed"): a job started here is done when its thread is.
    finishing = console.jobs.alive(job.run_id)
    status = "running" if finishing and job.status != "running" else job.status
    return JSONResponse(
        {
            "run_id": job.run_id,
            "status": status,
            "done": status != "running",
            "elapsed_seconds": max(ended - job.started_at.timestamp(), 0.0),
            "rows": rows,
            "rows_read": job.rows_read,
            "rows_written": job.rows_written,
            "error": job.error,
            "error_detail": job.error_detail,
            "cancel_requested": job.cancel_requested,
        }
    )


async def cancel(request: Request) -> Response:
    await checked_form(request)
    run_id = request.path_params["run_id"]
    console = console_of(request)

    def kill() -> list[str] | None:
        with console.holder.use() as wh:
            job = wh.state.job(run_id)
            if job is None or job.status != "running":
                return None
            return request_kill(job.run_id, control_dir=console.control_dir, state=wh.state)

    done = await blocking(kill)
    if done is None:
        return redirect(request, f"/jobs/{run_id}", "The job is not running.", "error")
    return redirect(request, f"/jobs/{run_id}", f"Cancel requested: {', '.join(done)}.")


async def rows_csv(request: Request) -> Response:
    run_id = request.path_params["run_id"]

    def load() -> tuple[JobRecord | None, pa.Table | None]:
        with console_of(request).holder.use() as wh:
            job = wh.state.job(run_id)
            if job is None or job.kind != "export":
                return None, None
            return job, filtered_rows(
                export_row_results(wh, job.run_id), request.query_params.get("outcome"), request.query_params.get("q")
            )

    job, table = await blocking(load)
    if job is None or table is None:
        return Response("no export job with that id", 404, media_type="text/plain")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["row_number", "row_index", "identifier", "outcome", "reason", "batch_id"])
    for row in table.to_pylist():
        writer.writerow(
            [
                row["row_index"] + 1,
                row["row_index"],
                row["identifier"] or "",
                row["outcome"],
                row["reason"] or "",
                row["batch_id"],
            ]
        )
    return Response(
        buf.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="export-{job.run_id}.csv"'},
    )


ROUTES = [
    Route("/jobs", index, methods=["GET"]),
    Route("/jobs/{run_id}", detail, methods=["GET"]),
    Route("/jobs/{run_id}/progress.json", progress, methods=["GET"]),
    Route("/jobs/{run_id}/cancel", cancel, methods=["POST"]),
    Route("/jobs/{run_id}/rows.csv", rows_csv, methods=["GET"]),
]
