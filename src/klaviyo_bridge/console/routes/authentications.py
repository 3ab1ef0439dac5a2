"""Authentications: create (the key is entered once, then only shown masked), test, delete."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...api.client import KlaviyoClient
from ...api.settings import ClientSettings
from ...errors import BridgeError, ConfigError
from ...secrets import ApiKey, hint, redact
from ..web import blocking, checked_form, console_of, field_errors, redirect, render


def _entries(request: Request) -> list[dict[str, str]]:
    return console_of(request).credentials.list()


async def page(request: Request, errors: dict[str, str] | None = None, name: str = "", status: int = 200) -> Response:
    try:
        entries = await blocking(_entries, request)
        problem = None
    except ConfigError as exc:  # e.g. a credentials file others can read
        entries, problem = [], str(exc)
    return render(
        request,
        "authentications.html",
        active="auth",
        entries=entries,
        errors=errors or {},
        name=name,
        problem=problem,
        status=status,
    )


async def create(request: Request) -> Response:
    form = await checked_form(request)
    name = str(form.get("name") or "").strip()
    key = str(form.get("api_key") or "")
    store = console_of(request).credentials
    try:
        await blocking(store.save, name, key)
    except ConfigError as exc:
        errors = field_errors(exc)
        if "api_token" in errors:
            errors["api_key"] = errors.pop("api_token")
        return await page(request, errors, name=name, status=400)
    return redirect(request, "/authentications", f"Saved authentication {name!r} ({hint(key.strip())}).")


async def account_check(key: ApiKey | str, base_url: str | None) -> str:
    """One get_accounts call with the saved key; returns a line naming the account."""
    data: dict[str, Any] = {"api_key": key}
    if base_url:
        data["base_url"] = base_url
    settings = ClientSettings.from_mapping(data)
    async with KlaviyoClient(settings) as client:
        doc = await client.request("get_accounts")
    accounts = (doc or {}).get("data") or []
    if not accounts:
        return "connected, but the key sees no account"
    attrs = accounts[0].get("attributes") or {}
    org = (attrs.get("contact_information") or {}).get("organization_name")
    return f"account {accounts[0].get('id')}" + (f" ({org})" if org else "")


async def test(request: Request) -> Response:
    await checked_form(request)
    name = request.path_params["name"]
    console = console_of(request)
    key = None
    try:
        key = await blocking(console.credentials.get, name)
        line = await account_check(key, console.config.base_url)
    except BridgeError as exc:
        message = redact(f"{type(exc).__name__}: {exc}", [key] if key else []) or ""
        return redirect(request, "/authentications", f"Test of {name!r} failed: {message}", "error")
    return redirect(request, "/authentications", f"Test of {name!r} succeeded: {line}.")


async def delete(request: Request) -> Response:
    await checked_form(request)
    name = request.path_params["name"]
    try:
        await blocking(console_of(request).credentials.delete, name)
    except ConfigError as exc:
        return redirect(request, "/authentications", str(exc), "error")
    return redirect(request, "/authentications", f"Deleted authentication {name!r}.")


ROUTES = [
    Route("/authentications", page, methods=["GET"]),
    Route("/authentications", create, methods=["POST"]),
    Route("/authentications/{name}/test", test, methods=["POST"]),
    Route("/authentications/{name}/delete", delete, methods=["POST"]),
]
