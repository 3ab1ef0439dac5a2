"""Schedules: every saved schedule (imports, exports, workflows) with enable/disable, run now,
the next 5 run times in the schedule's own time zone, history and a records-per-run chart."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...errors import ScheduleError, StoreError
from ...schedule.cron import CronSchedule
from ...schedule.scheduler import job_label, spec_for
from ...secrets import redact_config as _redacted
from ...store.state import JobRecord, ScheduleRecord
from ..forms import COMMON_ZONES, PRESETS, ScheduleInput, schedule_errors
from ..web import blocking, checked_form, console_of, redirect, render


def next_runs(record: ScheduleRecord, n: int = 5, now: datetime | None = None) -> list[datetime]:
    """The schedule's next run times (slot + delay) in its own zone; [] when disabled or by hand."""
    if not record.enabled:
        return []
    try:
        schedule = CronSchedule.parse(record.cron, record.timezone, record.delay_seconds)
    except ScheduleError:
        return []
    now = now or datetime.now(timezone.utc)
    after = max(now, record.last_scheduled_for) if record.last_scheduled_for else now
    zone = ZoneInfo(record.timezone)
    return [t.astimezone(zone) for t in schedule.next_runs(after, n)]


def chart(jobs: list[JobRecord], width: int = 560, height: int = 140) -> dict[str, Any]:
    """Geometry of a small bar chart of records per run, oldest left (drawn as inline SVG)."""
    runs = list(reversed(jobs[:30]))
    values = [(j.rows_written if j.rows_written is not None else j.rows_read) or 0 for j in runs]
    top = max(values, default=0) or 1
    pad, base = 30, height - 20
    slot = (width - pad - 10) / max(len(runs), 1)
    bars = []
    for i, (job, value) in enumerate(zip(runs, values)):
        h = (base - 10) * value / top
        bars.append(
            {
                "x": round(pad + i * slot + 2, 1),
                "y": round(base - h, 1),
                "w": round(min(max(slot - 4, 2), 40), 1),
                "h": round(h, 1),
                "value": value,
                "status": job.status,
                "run_id": job.run_id,
                "label": job.started_at.strftime("%m-%d %H:%M"),
            }
        )
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "max": top,
        "base": base,
        "pad": pad,
        "first": bars[0]["label"] if bars else "",
        "last": bars[-1]["label"] if bars else "",
    }


async def index(request: Request) -> Response:
    def load() -> list[ScheduleRecord]:
        with console_of(request).holder.use() as wh:
            return wh.state.schedules()

    records = await blocking(load)
    rows = [{"r": r, "label": job_label(r), "runs": next_runs(r)} for r in records]
    return render(request, "schedules.html", active="schedules", rows=rows)


async def detail(request: Request, schedule_input: ScheduleInput | None = None, status: int = 200) -> Response:
    name = request.path_params["name"]

    def load() -> tuple[ScheduleRecord | None, list[JobRecord]]:
        with console_of(request).holder.use() as wh:
            return wh.state.schedule(name), wh.state.jobs(schedule=name, limit=30)

    record, jobs = await blocking(load)
    if record is None:
        return render(request, "not_found.html", what=f"schedule {name!r}", status=404)
    if schedule_input is None:
        preset = record.cron if record.cron in ("", "@hourly", "@daily", "@monthly") else "custom"
        schedule_input = ScheduleInput(
            preset=preset,
            cron=record.cron if preset == "custom" else "",
            timezone=record.timezone,
            delay=str(record.delay_seconds),
        )
        schedule_input.check()
    return render(
        request,
        "schedule.html",
        active="schedules",
        r=record,
        label=job_label(record),
        shown_config=_redacted(record.config),
        runs=next_runs(record),
        jobs=jobs,
        chart=chart(jobs),
        s=schedule_input,
        errors=schedule_input.errors,
        presets=PRESETS,
        zones=COMMON_ZONES,
        status=status,
    )


def _change(request: Request, name: str, **changes: Any) -> ScheduleRecord | None:
    with console_of(request).holder.use() as wh:
        if wh.state.schedule(name) is None:
            return None
        return wh.state.update_schedule(name, **changes)


async def enable(request: Request) -> Response:
    await checked_form(request)
    name = request.path_params["name"]
    now = datetime.now(timezone.utc)  # as connector:update --enable: slots count from now on
    done = await blocking(
        _change,
        request,
        name,
        enabled=True,
        disabled_reason=None,
        disabled_at=None,
        consecutive_failures=0,
        last_scheduled_for=now,
    )
    back = request.query_params.get("back") == "detail"
    url = f"/schedules/{name}" if back else "/schedules"
    return redirect(request, url, f"Schedule {name!r} enabled." if done else f"No schedule {name!r}.", "ok" if done else "error")


async def disable(request: Request) -> Response:
    await checked_form(request)
    name = request.path_params["name"]
    done = await blocking(
        _change, request, name, enabled=False, disabled_reason="disabled by hand", disabled_at=datetime.now(timezone.utc)
    )
    url = f"/schedules/{name}" if request.query_params.get("back") == "detail" else "/schedules"
    return redirect(request, url, f"Schedule {name!r} disabled." if done else f"No schedule {name!r}.", "ok" if done else "error")


async def update(request: Request) -> Response:
    form = await checked_form(request)
    name = request.path_params["name"]
    s = ScheduleInput.from_form(form)
    if not s.check() or form.get("action") == "runs":
        return await detail(request, s, status=400 if s.errors else 200)
    done = await blocking(
        _change,
        request,
        name,
        cron=s.expression,
        timezone=s.timezone,
        delay_seconds=s.delay_seconds,
        last_scheduled_for=datetime.now(timezone.utc),
    )
    return redirect(
        request,
        f"/schedules/{name}",
        f"Schedule {name!r} updated." if done else f"No schedule {name!r}.",
        "ok" if done else "error",
    )


async def run_now(request: Request) -> Response:
    await checked_form(request)
    name = request.path_params["name"]
    console = console_of(request)

    def load() -> ScheduleRecord | None:
        with console.holder.use() as wh:
            return wh.state.schedule(name)

    record = await blocking(load)
    if record is None:
        return redirect(request, "/schedules", f"No schedule {name!r}.", "error")
    run_id = console.jobs.start(spec_for(record))
    return redirect(request, f"/jobs/{run_id}", f"Job started for schedule {name!r}.")


async def delete(request: Request) -> Response:
    await checked_form(request)
    name = request.path_params["name"]

    def drop() -> bool:
        with console_of(request).holder.use() as wh:
            return wh.state.delete_schedule(name)

    try:
        done = await blocking(drop)
    except StoreError as exc:
        return redirect(request, f"/schedules/{name}", str(exc), "error")
    return redirect(
        request,
        "/schedules",
        f"Deleted schedule {name!r} (its job history stays)." if done else f"No schedule {name!r}.",
        "ok" if done else "error",
    )


async def cron_next(request: Request) -> Response:
    """JSON: the next 5 run times of ?cron=&timezone=&delay= (for the live preview in the forms)."""
    q = request.query_params
    expression, tz, delay = q.get("cron", ""), q.get("timezone", "UTC") or "UTC", q.get("delay", "0") or "0"
    errors = schedule_errors(expression, tz, delay)
    if errors:
        return JSONResponse({"error": "; ".join(errors.values()), "fields": errors, "runs": []})
    schedule = CronSchedule.parse(expression, tz, int(delay))
    zone = ZoneInfo(tz)
    runs = [t.astimezone(zone) for t in schedule.next_runs(datetime.now(timezone.utc), 5)]
    return JSONResponse(
        {
            "runs": [t.strftime("%Y-%m-%d %H:%M:%S %Z (%z)") for t in runs],
            "iso": [t.isoformat() for t in runs],
            "describe": schedule.describe(),
        }
    )


ROUTES = [
    Route("/schedules", index, methods=["GET"]),
    Route("/schedules/{name}", detail, methods=["GET"]),
    Route("/schedules/{name}/enable", enable, methods=["POST"]),
    Route("/schedules/{name}/disable", disable, methods=["POST"]),
    Route("/schedules/{name}/update", update, methods=["POST"]),
    Route("/schedules/{name}/run", run_now, methods=["POST"]),
    Route("/schedules/{name}/delete", delete, methods=["POST"]),
    Route("/api/cron/next", cron_next, methods=["GET"]),
]
