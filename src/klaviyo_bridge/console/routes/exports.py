"""Exports: the Data Workbench's query editor over the warehouse, the seed's export parameters
(Export Results › Use Existing Integration), dry run with counts and invalid rows, run now, or
save as an export schedule (what ``sched:create`` saves)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import BridgeError, ConfigError
from ...exports.job import export_query
from ...exports.runner import ExportResult
from ...exports.settings import OPERATIONS, SUBSCRIPTION_TYPES, ExportSettings, load_result_settings
from ...jobs import JobSpec
from ...schedule.scheduler import spec_for
from ...store.identifiers import check_object_name
from ...store.sandbox import QueryRefused
from ..forms import COMMON_ZONES, PRESETS, ScheduleInput, name_error, text, without_empty
from ..web import as_bool, blocking, console_of, field_errors, redirect, render, save_new_schedule, schedule_form, validate_form

PREVIEW_ROWS = 100
DEFAULT_SQL = "SELECT email, first_name, last_name FROM profiles LIMIT 100"
SETTING_FIELDS = (
    "operation",
    "list_identify_type",
    "list_value",
    "consent_type",
    "subscription_type",
    "waiting_time_for_completion_millis",
    "default_phone_region",
    "max_removals",
    "backfill_older_than",
)
FLAGS = ("historical_consent", "skip_invalid_records", "stop_on_batch_failure", "wait_for_completion", "allow_empty")
#: Fields that belong to one operation only: sent when that operation is chosen.
ONLY_FOR = {
    "max_removals": "mirror",
    "allow_empty": "mirror",
    "backfill_older_than": "track_events",
    "consent_type": "batch_consent",
    "subscription_type": "batch_consent",
    "historical_consent": "batch_consent",
}
NO_LIST = ("upsert", "track_events")


def _values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {n: text(form, n) for n in ("connection", "database", "name", *SETTING_FIELDS)}
    values["sql"] = str(form.get("sql") or "")
    for flag in FLAGS:
        values[flag] = as_bool(form, flag)
    return values


def result_settings(values: dict[str, Any], base_url: str | None) -> dict[str, Any]:
    """The seed's result_settings mapping from the form (names a saved authentication, no key)."""
    data = {"type": "klaviyo", "result_connection": values.get("connection") or None}
    operation = values.get("operation")
    for key in (*SETTING_FIELDS, *FLAGS):
        if ONLY_FOR.get(key, operation) != operation:
            continue  # another operation's field (the form shows them all)
        if operation in NO_LIST and key in ("list_identify_type", "list_value"):
            continue
        data[key] = values.get(key)
    wait = str(data.get("waiting_time_for_completion_millis") or "")
    if wait.isdigit():
        data["waiting_time_for_completion_millis"] = int(wait)
    if base_url:
        data["base_url"] = base_url
    return without_empty(data)


_FIELD_OF = {"result_connection": "connection", "api_token": "connection"}  # the form field of a settings key


def validate(request: Request, values: dict[str, Any]) -> tuple[dict[str, Any], ExportSettings | None, dict[str, str]]:
    data, settings, errors = validate_form(
        request,
        values,
        result_settings,
        lambda console, data: load_result_settings(dict(data), credentials_path=console.credentials.path),
        lambda exc: {_FIELD_OF.get(key, key): message for key, message in field_errors(exc).items()},
    )
    if not values["sql"].strip():
        errors["sql"] = "the query is empty"
    if values.get("database"):
        try:
            check_object_name(values["database"], "database")
        except ConfigError as exc:
            errors["database"] = str(exc)
    return data, settings, errors


def _page(
    request: Request, values: dict[str, Any], schedule: ScheduleInput, errors: dict[str, str], *, status: int = 200, **extra: Any
) -> Response:
    console = console_of(request)
    try:
        with console.holder.use() as wh:
            tables = wh.table_names()
    except BridgeError:
        tables = []
    return render(
        request,
        "exports.html",
        active="exports",
        v=values,
        s=schedule,
        errors={**schedule.errors, **errors},
        connections=[e["name"] for e in console.credentials.list()],
        operations=OPERATIONS,
        subscription_types=SUBSCRIPTION_TYPES,
        presets=PRESETS,
        zones=COMMON_ZONES,
        tables=tables,
        status=status,
        **extra,
    )


async def index(request: Request) -> Response:
    values = {
        "sql": DEFAULT_SQL,
        "database": "klaviyo",
        "operation": "add",
        "list_identify_type": "name",
        "list_value": "",
        "skip_invalid_records": True,
        "wait_for_completion": True,
        "waiting_time_for_completion_millis": "300000",
    }
    schedule = ScheduleInput()
    schedule.check()
    return await blocking(_page, request, values, schedule, {})


def _preview(request: Request, sql: str, database: str | None) -> pa.Table:
    """The first rows of the user's query, run in the console's sandbox (read-only, no files)."""
    return console_of(request).holder.read_query(sql, database or None, max_rows=PREVIEW_ROWS)


def _read(request: Request, sql: str, database: str | None) -> pa.Table:
    """The whole result of the user's query, read in the sandbox (then exported the normal way)."""
    return console_of(request).holder.read_query(sql, database or None)


def _dry_run(request: Request, sql: str, settings: ExportSettings, database: str | None) -> ExportResult:
    table = _read(request, sql, database)
    with console_of(request).holder.use() as wh:
        return export_query(wh, sql, settings, database=database or None, job="console:dry-run", dry_run=True, table=table)


async def submit(request: Request) -> Response:
    form, action, values, schedule = await schedule_form(request, "query", _values)
    console = console_of(request)
    if action == "query":
        errors = {"sql": "the query is empty"} if not values["sql"].strip() else {}
        result = error = None
        if not errors:
            try:
                result = await blocking(_preview, request, values["sql"], values["database"])
            except BridgeError as exc:
                error = str(exc)
        return await blocking(
            _page, request, values, schedule, errors, query_result=result, query_error=error, status=400 if errors else 200
        )
    if action == "runs":
        return await blocking(_page, request, values, schedule, {})
    data, settings, errors = await blocking(validate, request, values)
    if errors or settings is None:  # (settings are missing only with an error that says why)
        return await blocking(_page, request, values, schedule, errors, status=400)
    if action == "dry_run":
        status = 200
        try:
            dry = await blocking(_dry_run, request, values["sql"], settings, values["database"])
            error = None
        except BridgeError as exc:
            dry, error = None, str(exc)
            status = 400 if isinstance(exc, QueryRefused) else 200
        return await blocking(
            _page,
            request,
            values,
            schedule,
            {},
            dry=dry,
            dry_error=error,
            status=status,
            invalid_rows=list(getattr(dry, "invalid_rows", []) or [])[:50],
        )
    config = {"query": values["sql"].strip(), "result_settings": data}
    if action in ("run", "schedule"):
        # The query runs in the sandbox first: a refused one is shown here, never run or saved.
        try:
            result = await blocking(_read if action == "run" else _preview, request, values["sql"], values["database"])
        except BridgeError as exc:
            return await blocking(_page, request, values, schedule, {}, query_error=str(exc), status=400)
    if action == "run":
        run_id = console.jobs.start(JobSpec("export", "console:export", config, values["database"] or None, result=result))
        return redirect(request, f"/jobs/{run_id}", "Export started.")
    # action == "schedule"
    problem = name_error(values["name"])
    if problem or schedule.errors:
        return await blocking(_page, request, values, schedule, {"name": problem} if problem else {}, status=400)
    record, refused = await save_new_schedule(
        request, values["name"], "export", schedule, values["database"] or None, None, config
    )
    if refused:
        return await blocking(_page, request, values, schedule, {"name": refused}, status=400)
    if as_bool(form, "run_after_save"):
        run_id = console.jobs.start(spec_for(record))
        return redirect(request, f"/jobs/{run_id}", f"Export schedule {record.name!r} saved; first run started.")
    return redirect(request, f"/schedules/{record.name}", f"Export schedule {record.name!r} saved.")


ROUTES = [
    Route("/exports", index, methods=["GET"]),
    Route("/exports", submit, methods=["POST"]),
]
