"""Helpers shared by the pages: rendering, CSRF-checked forms, field errors, flashes."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from ..errors import BridgeError
from .forms import field_messages
from .app import CSRF_FIELD, CSRF_HEADER, Console, _host_name

_P = ParamSpec("_P")
_T = TypeVar("_T")

NAV = (("auth", "/authentications", "Authentications"), ("sources", "/sources", "Sources"),
       ("exports", "/exports", "Exports"), ("schedules", "/schedules", "Schedules"), ("jobs", "/jobs", "Jobs"))


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console  # set by create_app
    return console


def csrf_token(request: Request) -> str:
    return console_of(request).csrf_for(request.scope["state"]["csrf_seed"])


def render(request: Request, template: str, *, status: int = 200, headers: dict[str, str] | None = None,
           **context: Any) -> HTMLResponse:
    console = console_of(request)
    flash = None
    key = request.query_params.get("flash")
    if key:
        flash = console.flashes.pop(key, None)
    html = console.templates.get_template(template).render(
        request=request, csrf_token=csrf_token(request), csrf_field=CSRF_FIELD, nav=NAV, flash=flash,
        config=console.config, signed_in=request.scope["state"].get("signed_in", False), **context)
    return HTMLResponse(html, status_code=status, headers=headers)


def check_csrf(request: Request, supplied: str | None) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        origin_host = _host_name(re.sub(r"^[a-z]+://", "", origin))
        if origin_host != _host_name(request.headers.get("host", "")):
            raise HTTPException(403, "cross-site request refused")
    if not supplied or not hmac.compare_digest(supplied, csrf_token(request)):
        raise HTTPException(403, "missing or invalid CSRF token: reload the page and try again")


async def checked_form(request: Request) -> FormData:
    """The POSTed form, after the CSRF check (403 otherwise)."""
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
