"""Fixtures for the console tests: an emulator on 127.0.0.1, a console app on a temporary home,
and an httpx client (in-process, ASGI), signed in with the app's token, that knows the page's CSRF token."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from klaviyo_bridge.console import ConsoleConfig, create_app
from klaviyo_bridge.home import Home
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import EmulatorSettings

EMULATOR = EmulatorSettings(profiles=300, events=2000, rate_limits=False)
API_KEY = EmulatorSettings().api_key
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def emulator_url():
    with running_emulator(EMULATOR) as url:
        yield url


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def app(home, emulator_url):
    return create_app(ConsoleConfig(home=home, base_url=emulator_url))


class ConsoleClient(httpx.AsyncClient):
    """An httpx client whose ``submit`` posts a form with the CSRF token of the last page it saw."""

    csrf: str | None = None

    async def page(self, path: str, **kw) -> httpx.Response:
        response = await self.get(path, **kw)
        found = CSRF_RE.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def submit(self, path: str, data: dict | None = None, **kw) -> httpx.Response:
        if self.csrf is None:
            await self.page("/authentications")
        return await self.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kw)

    async def sign_in(self, token: str) -> httpx.Response:
        """The login URL the console prints: a session cookie, then a redirect without the token."""
        response = await self.get("/login", params={"token": token})
        assert response.status_code == 303 and "token" not in response.headers["location"], response.text
        return response


class SignedIn:
    """``async with SignedIn(app) as c``: a ConsoleClient on ``app``, signed in with its token."""

    def __init__(self, app, base_url: str = "http://127.0.0.1") -> None:
        self.client = ConsoleClient(transport=httpx.ASGITransport(app=app), base_url=base_url)
        self.app = app

    async def __aenter__(self) -> ConsoleClient:
        await self.client.__aenter__()
        await self.client.sign_in(self.app.state.console.token)
        return self.client

    async def __aexit__(self, *exc) -> None:
        await self.client.__aexit__(*exc)


@pytest.fixture
async def client(app):
    async with app.router.lifespan_context(app):
        async with SignedIn(app) as c:
            yield c
