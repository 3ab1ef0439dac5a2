"""Helpers shared by the pages: rendering, CSRF-checked forms, field errors, flashes."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from ..errors import BridgeError, ConfigError
from ..schedule.saving import create_schedule
from ..store.state import ScheduleRecord
from .app import CSRF_FIELD, CSRF_HEADER, Console, _host_name
from .forms import ScheduleInput, field_messages, text

_P = ParamSpec("_P")
_T = TypeVar("_T")

NAV = (
    ("auth", "/authentications", "Authentications"),
    ("sources", "/sources", "Sources"),
    ("exports", "/exports", "Exports"),
    ("schedules", "/schedules", "Schedules"),
    ("jobs", "/jobs", "Jobs"),
)


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console  # set by create_app
    return console


def csrf_token(request: Request) -> str:
    return console_of(request).csrf_for(request.scope["state"]["csrf_seed"])


def render(
    request: Request, template: str, *, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    console = console_of(request)
    flash = None
    key = request.query_params.get("flash")
    if key:
        flash = console.flashes.pop(key, None)
    html = console.templates.get_template(template).render(
        request=request,
        csrf_token=csrf_token(request),
        csrf_field=CSRF_FIELD,
        nav=NAV,
        flash=flash,
        config=console.config,
        signed_in=request.scope["state"].get("signed_in", False),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=headers)


#: The largest form body the console reads: its forms hold a query or a workflow at most. A larger
#: one is refused (413) after no more than this much of it was read.
MAX_FORM_BYTES = 4 * 1024 * 1024


def check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        origin_host = _host_name(re.sub(r"^[a-z]+://", "", origin))
        if origin_host != _host_name(request.headers.get("host", "")):
            raise HTTPException(403, "cross-site request refused")


def check_csrf(request: Request, supplied: str | None) -> None:
    if not supplied or not hmac.compare_digest(supplied, csrf_token(request)):
        raise HTTPException(403, "missing or invalid CSRF token: reload the page and try again")


async def _read_body(request: Request, limit: int) -> None:
    """Read the request's body, refusing (413) one larger than ``limit`` bytes as soon as that shows
    (a declared ``Content-Length``, or the bytes received), so no body is held whole before it is judged."""
    too_large = HTTPException(413, f"form too large: a form of the console holds at most {limit // (1 << 20)} MB")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    request._body = b"".join(chunks)  # what ``request.form()`` parses (Starlette keeps a read body there)


async def checked_form(request: Request) -> FormData:
    """The POSTed form, after the CSRF check (403 otherwise). A cross-site request is refused
    before its body is read, and a body over ``MAX_FORM_BYTES`` (413) before it is read whole."""
    check_origin(request)
    await _read_body(request, MAX_FORM_BYTES)
    form = await request.form()
    field = form.get(CSRF_FIELD)  # a str, or an UploadFile if a client sent a file under that name
    check_csrf(request, field if isinstance(field, str) and field else request.headers.get(CSRF_HEADER))
    return form


def redirect(request: Request, url: str, message: str | None = None, kind: str = "ok") -> RedirectResponse:
    if message:
        key = console_of(request).flash(message, kind)
        url += ("&" if "?" in url else "?") + f"flash={key}"
    return RedirectResponse(url, status_code=303)


def field_errors(exc: BridgeError) -> dict[str, str]:
    """The library's error as {field: message}, read from its problems (``field`` paths such as
    ``in.list_id``); a problem without a field goes to "_form"."""
    return field_messages(exc)


async def blocking(func: Callable[_P, _T], *args: _P.args, **kw: _P.kwargs) -> _T:
    return await run_in_threadpool(func, *args, **kw)


def as_bool(form: FormData, name: str) -> bool:
    return form.get(name) in ("on", "true", "1", "yes")


async def save_new_schedule(
    request: Request,
    name: str,
    kind: str,
    schedule: ScheduleInput,
    database: str | None,
    table: str | None,
    config: dict[str, Any],
) -> tuple[ScheduleRecord, str | None]:
    """Save a new schedule from a form; (the record, why it was not saved or None)."""
    record = ScheduleRecord(
        name,
        kind,
        schedule.expression,
        schedule.timezone,
        schedule.delay_seconds,
        database,
        table,
        config,
        last_scheduled_for=datetime.now(timezone.utc),
    )

    def save() -> None:
        with console_of(request).holder.use() as wh:
            create_schedule(wh, None, record, hint="pick another name")

    try:
        await blocking(save)
    except ConfigError as exc:
        return record, str(exc)
    return record, None


async def schedule_form(
    request: Request, default_action: str, values_of: Callable[[FormData], dict[str, Any]]
) -> tuple[FormData, str, dict[str, Any], ScheduleInput]:
    """A POSTed schedule form (CSRF-checked): (form, its action, its values, its checked schedule)."""
    form = await checked_form(request)
    schedule = ScheduleInput.from_form(form)
    schedule.check()
    return form, text(form, "action", default_action), values_of(form), schedule


_Parsed = TypeVar("_Parsed")


def validate_form(
    request: Request,
    values: dict[str, Any],
    build: Callable[[dict[str, Any], str | None], dict[str, Any]],
    parse: Callable[[Console, dict[str, Any]], _Parsed],
    map_errors: Callable[[ConfigError], dict[str, str]],
) -> tuple[dict[str, Any], _Parsed | None, dict[str, str]]:
    """BUILD the settings from the form's VALUES and PARSE them with the library if the form names a saved
    authentication; (settings, parsed or None, field errors)."""
    console = console_of(request)
    config = build(values, console.config.base_url)
    if not values.get("connection"):
        return config, None, {"connection": "choose a saved authentication (create one on the Authentications page)"}
    try:
        return config, parse(console, config), {}
    except ConfigError as exc:
        return config, None, map_errors(exc)
