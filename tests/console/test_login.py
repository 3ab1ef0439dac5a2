"""The console's login (issue 17): always required, also on loopback; a generated token printed once
as a URL that logs in; rate-limited failures; session cookie flags over TLS and behind a proxy."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from klaviyo_bridge.cli import main as cli_main
from klaviyo_bridge.console import ConsoleConfig, create_app

from ..fakes import FakeClock
from .conftest import ConsoleClient


def _client(app, base_url: str = "http://127.0.0.1", client=("127.0.0.1", 50000)) -> ConsoleClient:
    return ConsoleClient(transport=httpx.ASGITransport(app=app, client=client), base_url=base_url)


def _session_cookie(response: httpx.Response) -> str:
    found = [v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("kb_session=")]
    assert found, response.headers
    return found[0]


async def test_every_route_needs_a_login_also_on_loopback(app):
    paths = []
    for route in app.routes:
        if isinstance(route, Route) and route.path not in ("/login",):
            path = route.path.replace("{name}", "x").replace("{run_id}", "0" * 32)
            paths += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    assert len(paths) >= 20
    async with _client(app) as c:
        for method, path in paths:
            r = await c.request(method, path, data={"csrf_token": "x"} if method == "POST" else None)
            if method == "GET" and not path.endswith((".json", ".csv")) and not path.startswith("/api/"):
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path)
            else:
                assert r.status_code == 401 and "login required" in r.text, (method, path, r.status_code)
        # the JSON and CSV endpoints answer 401, never data
        assert (await c.get(f"/jobs/{'0' * 32}/rows.csv")).status_code == 401
        assert (await c.get("/api/cron/next?cron=@daily")).status_code == 401
        login = await c.get("/login")
        assert login.status_code == 200 and 'id="login-form"' in login.text and 'id="nav-jobs"' not in login.text
        # the login page's own CSS/JS stay reachable (package code, no data in them)
        assert (await c.get("/static/console.css")).status_code == 200


async def test_token_url_logs_in_and_leaves_the_address_bar(app):
    token = app.state.console.token
    assert len(token) >= 32
    async with _client(app) as c:
        r = await c.get("/login", params={"token": token, "next": "/jobs"})
        assert r.status_code == 303 and r.headers["location"] == "/jobs"
        cookie = _session_cookie(r)
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie  # plain http
        assert token not in cookie
        page = await c.get("/jobs")
        assert page.status_code == 200 and 'id="nav-jobs"' in page.text and token not in page.text
        followed = await c.get("/login", params={"token": token}, follow_redirects=True)
        assert "token" not in str(followed.url) and followed.status_code == 200
        # only paths on this site after login
        r = await c.get("/login", params={"token": token, "next": "//evil.example/x"})
        assert r.headers["location"] == "/"
        # sign out: the session is gone
        await c.page("/jobs")
        r = await c.submit("/logout", {})
        assert r.status_code == 303 and (await c.get("/jobs")).status_code == 303


async def test_each_console_has_its_own_random_token_unless_one_is_chosen(home, emulator_url):
    a = create_app(ConsoleConfig(home=home, base_url=emulator_url))
    b = create_app(ConsoleConfig(home=home, base_url=emulator_url))
    assert a.state.console.token != b.state.console.token
    chosen = create_app(ConsoleConfig(home=home, token="a-token-i-chose-myself"))
    assert chosen.state.console.token == "a-token-i-chose-myself"
    async with _client(a) as c:
        r = await c.get("/login", params={"token": b.state.console.token})
        assert r.status_code == 403 and "wrong token" in r.text and "kb_session" not in r.headers.get("set-cookie", "")


async def test_wrong_tokens_are_rate_limited_per_client(home, emulator_url):
    clock = FakeClock()
    app = create_app(ConsoleConfig(home=home, base_url=emulator_url), clock=clock)
    token = app.state.console.token
    async with _client(app, client=("10.1.1.1", 4000)) as c:
        await c.page("/login")
        attempts = [
            c.get("/login", params={"token": "guess-1"}),
            c.submit("/login", {"token": "guess-2"}),
            c.get("/jobs", headers={"authorization": "Bearer guess-3"}),
            c.submit("/login", {"token": "guess-4"}),
            c.get("/login", params={"token": "guess-5"}),
        ]
        codes = [(await a).status_code for a in attempts]
        assert codes == [403, 403, 401, 403, 403]
        blocked = await c.get("/login", params={"token": token})  # even the right token, for a minute
        assert blocked.status_code == 429 and "too many failed logins" in blocked.text
        assert int(blocked.headers["retry-after"]) > 0
        assert (await c.get("/jobs", headers={"authorization": f"Bearer {token}"})).status_code == 429
        async with _client(app, client=("10.1.1.2", 4000)) as other:  # another address is not blocked
            assert (await other.get("/login", params={"token": token})).status_code == 303
        clock.advance(61)
        assert (await c.get("/login", params={"token": token})).status_code == 303
        assert (await c.get("/jobs")).status_code == 200


async def test_cookie_is_secure_over_https_and_behind_a_trusted_proxy(home, emulator_url):
    app = create_app(ConsoleConfig(home=home, base_url=emulator_url))
    token = app.state.console.token
    async with _client(app, base_url="https://127.0.0.1") as c:
        r = await c.get("/login", params={"token": token})
        assert "Secure" in _session_cookie(r)
        assert "Secure" in r.headers["set-cookie"]  # the CSRF cookie too
        assert "strict-transport-security" in r.headers
    proxied = create_app(
        ConsoleConfig(home=home, base_url=emulator_url, host="127.0.0.1", proxy_headers=True, trusted_proxies=("127.0.0.1",))
    )
    token = proxied.state.console.token
    https = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9", "host": "console.example.com"}
    async with _client(proxied) as c:
        r = await c.get("/login", params={"token": token}, headers=https)
        assert r.status_code == 303 and "Secure" in _session_cookie(r)
        plain = await c.get("/login", params={"token": token}, headers={**https, "x-forwarded-proto": "http"})
        assert "Secure" not in _session_cookie(plain)
    # forwarded headers from an address that is not a trusted proxy are ignored
    async with _client(proxied, client=("198.51.100.7", 5000)) as c:
        r = await c.get("/login", params={"token": token}, headers=https)
        assert "Secure" not in _session_cookie(r)
    # failures count against the original client, not the proxy
    limited = create_app(ConsoleConfig(home=home, proxy_headers=True, trusted_proxies=("127.0.0.1",)), clock=FakeClock())
    async with _client(limited) as c:
        for _ in range(5):
            await c.get("/login", params={"token": "nope"}, headers={"x-forwarded-for": "203.0.113.1"})
        assert (await c.get("/login", params={"token": "nope"}, headers={"x-forwarded-for": "203.0.113.1"})).status_code == 429
        good = await c.get("/login", params={"token": limited.state.console.token}, headers={"x-forwarded-for": "203.0.113.2"})
        assert good.status_code == 303


def test_token_file_must_be_private(home, tmp_path, monkeypatch):
    monkeypatch.delenv("KLAVIYO_BRIDGE_CONSOLE_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("a-long-enough-console-token\n")
    token_file.chmod(0o644)
    with pytest.raises(SystemExit) as exc:
        cli_main(["--home", str(home.root), "console", "--token-file", str(token_file), "--port", "0"])
    assert exc.value.code == 2


def _port_of(url: str) -> int:
    return int(re.match(r"https?://127\.0\.0\.1:(\d+)/", url).group(1))


def _start_console(home: Path, *args: str) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if k != "KLAVIYO_BRIDGE_CONSOLE_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), "console", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        found = re.search(r"open this URL to sign in: (\S+)", line)
        if found:
            return proc, found.group(1)
    proc.wait(10)
    raise AssertionError("".join(lines))


def _wait_up(url: str, **kw) -> None:
    for _ in range(200):
        try:
            httpx.get(url, timeout=5, **kw)
            return
        except httpx.TransportError:
            import time

            time.sleep(0.05)  # the server's socket is not up yet (polling, not timing an assertion)
    raise AssertionError(f"{url} did not come up")


def test_cli_prints_a_login_url_once_and_the_token_is_not_in_ps(tmp_path):
    proc, url = _start_console(tmp_path / "home", "--port", "0")
    port = _port_of(url)  # the one the system chose, in the URL it printed
    try:
        assert url.startswith(f"http://127.0.0.1:{port}/login?token=") and port > 0
        token = url.split("token=", 1)[1]
        assert token not in Path(f"/proc/{proc.pid}/cmdline").read_text()
        _wait_up(f"http://127.0.0.1:{port}/static/console.css")
        with httpx.Client() as c:
            assert c.get(f"http://127.0.0.1:{port}/jobs").status_code == 303
            r = c.get(url)
            assert r.status_code == 303 and r.headers["location"] == "/"
            assert c.get(f"http://127.0.0.1:{port}/jobs").status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


def test_cli_serves_tls_with_a_secure_cookie(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    proc, url = _start_console(tmp_path / "home", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key))
    port = _port_of(url)
    try:
        assert url.startswith(f"https://127.0.0.1:{port}/login?token=")
        _wait_up(f"https://127.0.0.1:{port}/static/console.css", verify=False)
        with httpx.Client(verify=False) as c:
            r = c.get(url)
            assert r.status_code == 303 and "Secure" in _session_cookie(r)
            assert c.get(f"https://127.0.0.1:{port}/jobs").status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_port_in_use_is_a_one_line_error_before_any_url_is_printed(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "KLAVIYO_BRIDGE_CONSOLE_TOKEN"}
        done = subprocess.run(
            [sys.executable, "-m", "klaviyo_bridge", "--home", str(tmp_path / "home"), "console", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
