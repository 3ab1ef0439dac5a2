"""Sources: the seed's New Source wizard (name, data source and its parameters, data settings,
Generate Preview live from the API, placement, schedule with presets or custom cron, delay).

A source is saved as an import schedule, exactly what ``connector:create`` saves (kind
``import``, ``connection: NAME`` instead of a key); a schedule of "None" only runs by hand.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...config import WRITE_MODES, ImportConfig, parse_import_config
from ...errors import BridgeError, ConfigError
from ...imports.runner import preview_rows
from ...imports.streams import STREAMS
from ...schedule.scheduler import spec_for
from ...secrets import redact, resolve_connection
from ...store.identifiers import check_object_name
from ...store.state import ScheduleRecord
from ..forms import COMMON_ZONES, PRESETS, ScheduleInput, name_error, text, without_empty
from ..web import as_bool, blocking, console_of, field_errors, redirect, render, save_new_schedule, schedule_form, validate_form

#: Which data-source parameter each source uses (the wizard shows only those).
PARAMETERS: dict[str, list[str]] = {
    name: [
        s
        for s in ("list_id", "segment_id", "event_ids")
        if (STREAMS[name].id_setting == s or (s == "event_ids" and STREAMS[name].per_event_id))
    ]
    for name in STREAMS
}
for _name in STREAMS:
    _group = STREAMS[_name].membership
    if _group:  # optional: none reads every list / segment
        PARAMETERS[_name].append(_group)
    if _name == "metric_events":
        PARAMETERS[_name].append("metric")
    if STREAMS[_name].events:
        PARAMETERS[_name] += ["metrics", "lookback"]
    if _name == "profiles":
        PARAMETERS[_name].append("detect_deleted")
    if STREAMS[_name].include:
        PARAMETERS[_name].append("skip_related_object")
    if STREAMS[_name].operation_id in ("get_profiles", "get_profiles_for_list", "get_profiles_for_segment"):
        PARAMETERS[_name].append("predictive_analytics")
SOURCES_FOR = {
    p: " ".join(n for n, ps in PARAMETERS.items() if p in ps)
    for p in (
        "list_id",
        "segment_id",
        "event_ids",
        "metric",
        "skip_related_object",
        "predictive_analytics",
        "metrics",
        "lookback",
        "detect_deleted",
    )
}
TIME_FIELDS = {name: list(s.time_fields) for name, s in STREAMS.items()}

#: Library error keys -> the wizard's field names.
KEY_MAP = {
    "in.api_token": "connection",
    "in.api_key": "connection",
    "api_token": "connection",
    "connection": "connection",
    "in": "data_source",
    "out": "mode",
    "out.mode": "mode",
    "out.primary_key": "primary_key",
    "out.partition_key": "partition_key",
    "partition_key": "partition_key",
    "out.timezone": "timezone",
    "metric": "metric",
    "data_source": "data_source",
    "metrics": "metrics",
    "in.metrics": "metrics",
    "lookback": "lookback",
    "in.lookback": "lookback",
    "detect_deleted": "detect_deleted",
    "in.detect_deleted": "detect_deleted",
}


def _values(form: FormData) -> dict[str, Any]:
    names = (
        "name",
        "connection",
        "data_source",
        "list_id",
        "segment_id",
        "metric",
        "event_ids",
        "incremental_field",
        "start_time",
        "end_time",
        "database",
        "table",
        "mode",
        "primary_key",
        "partition_key",
        "timezone",
        "metrics",
        "lookback",
    )
    values: dict[str, Any] = {n: text(form, n) for n in names}
    for flag in ("incremental", "skip_related_object", "predictive_analytics", "detect_deleted"):
        values[flag] = as_bool(form, flag)
    return values


def build_config(values: dict[str, Any], base_url: str | None) -> dict[str, Any]:
    """The seed's ``in:``/``out:`` config from the wizard's fields (names a saved authentication)."""
    params = set(PARAMETERS.get(values.get("data_source") or "", []))
    source = {"type": "klaviyo", "connection": values.get("connection") or None, "data_source": values.get("data_source")}
    for key in (
        "list_id",
        "segment_id",
        "metric",
        "event_ids",
        "skip_related_object",
        "predictive_analytics",
        "lookback",
        "detect_deleted",
    ):
        if key in params:
            source[key] = values.get(key)
    if "metrics" in params and values.get("metrics"):  # comma-separated names, ids or "Name (Integration)"
        source["metrics"] = [m.strip() for m in str(values["metrics"]).split(",") if m.strip()]
    source.update(
        {
            "incremental": values.get("incremental"),
            "incremental_field": values.get("incremental_field"),
            "start_time": values.get("start_time"),
            "end_time": values.get("end_time"),
        }
    )
    if base_url:
        source["base_url"] = base_url
    target = {
        "mode": values.get("mode") or "append",
        "primary_key": values.get("primary_key"),
        "partition_key": values.get("partition_key"),
        "timezone": values.get("timezone") or "UTC",
    }
    return {"in": without_empty(source), "out": without_empty(target)}


def _map_errors(exc: ConfigError) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, message in field_errors(exc).items():
        short = key[3:] if key.startswith("in.") and key not in KEY_MAP else key
        short = short[4:] if short.startswith("out.") and short not in KEY_MAP else short
        name = KEY_MAP.get(key, KEY_MAP.get(short, short))
        out[name] = f"{out[name]}; {message}" if name in out else message
    return out


def validate_source(request: Request, values: dict[str, Any]) -> tuple[dict[str, Any], ImportConfig | None, dict[str, str]]:
    """Parse with the library (every problem at once); returns (config, parsed, errors)."""
    return validate_form(
        request,
        values,
        build_config,
        lambda console, config: parse_import_config(resolve_connection(config, console.credentials), "source"),
        _map_errors,
    )


async def index(request: Request) -> Response:
    def load() -> list[ScheduleRecord]:
        with console_of(request).holder.use() as wh:
            return wh.state.schedules("import")

    return render(request, "sources.html", active="sources", sources=await blocking(load))


def _form_page(
    request: Request,
    values: dict[str, Any],
    schedule: ScheduleInput,
    errors: dict[str, str],
    *,
    preview: pa.Table | None = None,
    preview_error: str | None = None,
    status: int = 200,
) -> Response:
    connections = [e["name"] for e in console_of(request).credentials.list()]
    return render(
        request,
        "source_new.html",
        active="sources",
        v=values,
        s=schedule,
        errors={**schedule.errors, **errors},
        connections=connections,
        streams=list(STREAMS),
        modes=WRITE_MODES,
        presets=PRESETS,
        zones=COMMON_ZONES,
        sources_for=SOURCES_FOR,
        time_fields=TIME_FIELDS,
        preview=preview,
        preview_error=preview_error,
        status=status,
    )


async def new(request: Request) -> Response:
    values = {"data_source": "profiles", "mode": "append", "timezone": "UTC", "database": "klaviyo", "incremental": False}
    schedule = ScheduleInput()
    schedule.check()
    return await blocking(_form_page, request, values, schedule, {})


async def submit(request: Request) -> Response:
    form, action, values, schedule = await schedule_form(request, "preview", _values)
    config, parsed, errors = await blocking(validate_source, request, values)
    preview = preview_error = None
    if action == "preview":
        if parsed is not None:
            key = parsed.source.api_key
            try:
                preview = await preview_rows(parsed, rows=10)
            except BridgeError as exc:
                preview_error = redact(f"{type(exc).__name__}: {exc}", [key])
        return await blocking(
            _form_page,
            request,
            values,
            schedule,
            errors,
            preview=preview,
            preview_error=preview_error,
            status=200 if not errors else 400,
        )
    if action == "runs":
        return await blocking(_form_page, request, values, schedule, errors)
    # save / save_run: everything must be valid
    problem = name_error(values["name"])
    if problem:
        errors["name"] = problem
    for what in ("database", "table"):
        try:
            check_object_name(values[what], what)
        except ConfigError as exc:
            errors[what] = str(exc)
    if errors or schedule.errors:
        return await blocking(_form_page, request, values, schedule, errors, status=400)

    record, refused = await save_new_schedule(
        request, values["name"], "import", schedule, values["database"], values["table"], config
    )
    if refused:
        return await blocking(_form_page, request, values, schedule, {"name": refused}, status=400)
    console = console_of(request)
    if action == "save_run":
        run_id = console.jobs.start(spec_for(record))
        return redirect(request, f"/jobs/{run_id}", f"Source {record.name!r} saved; import started.")
    return redirect(request, "/sources", f"Source {record.name!r} saved.")


ROUTES = [
    Route("/sources", index, methods=["GET"]),
    Route("/sources/new", new, methods=["GET"]),
    Route("/sources/new", submit, methods=["POST"]),
]
