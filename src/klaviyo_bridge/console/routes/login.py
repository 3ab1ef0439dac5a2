"""Login and logout: the access token (printed at start as a URL that logs in, or typed in the
form) opens a session; failed attempts are rate-limited per client address."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..app import SESSION_COOKIE, client_of, cookie_header, too_many_message
from ..web import checked_form, console_of, render


def _safe_next(value: str | None) -> str:
    """Only a path on this site (never ``//other.example`` or a URL) to go to after login."""
    if value and value.startswith("/") and not value.startswith("//") and not any(c in value for c in "\r\n\\"):
        return value
    return "/"


def _signed_in(request: Request, target: str) -> RedirectResponse:
    console = console_of(request)
    response = RedirectResponse(_safe_next(target), status_code=303)  # the token leaves the address bar
    response.raw_headers.append((b"set-cookie", cookie_header(SESSION_COOKIE, console.new_session(), request.scope)))
    return response


def _attempt(request: Request, supplied: str, target: str) -> Response:
    console = console_of(request)
    client = client_of(request.scope)
    wait = console.limiter.blocked(client)
    if wait:
        return render(
            request,
            "login.html",
            active="login",
            error=too_many_message(wait),
            status=429,
            next=target,
            headers={"retry-after": str(int(wait + 0.999))},
        )
    if console.token_ok(supplied):
        console.limiter.succeeded(client)
        return _signed_in(request, target)
    console.limiter.failed(client)
    return render(request, "login.html", active="login", error="wrong token", status=403, next=target)


async def login(request: Request) -> Response:
    target = request.query_params.get("next", "/")
    if request.method == "POST":
        form = await checked_form(request)
        return _attempt(request, str(form.get("token") or ""), str(form.get("next") or "/"))
    token = request.query_params.get("token")
    if token is not None:
        return _attempt(request, token, target)
    if console_of(request).session_ok(request.cookies.get(SESSION_COOKIE)):
        return RedirectResponse(_safe_next(target), status_code=303)
    return render(request, "login.html", active="login", error=None, next=target)


async def logout(request: Request) -> Response:
    await checked_form(request)
    console_of(request).end_session(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.raw_headers.append((b"set-cookie", cookie_header(SESSION_COOKIE, "", request.scope, max_age=0)))
    return response


ROUTES = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
