"""Suite-wide guard: the default test run never leaves 127.0.0.1.

Any attempt to connect a socket to a non-loopback address fails the test at
once. Tests marked ``live`` (opt-in, real Klaviyo) are exempt.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LeftLoopback(OSError):
    """Raised when a test tries to reach anything but this machine."""


def _guarded(real):
    def connect(self, address):
        if not _is_loopback(address):
            raise LeftLoopback(f"tests may not leave 127.0.0.1 (tried to connect to {address!r})")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def _private_data_home(tmp_path_factory, monkeypatch):
    """The default home is the user's data folder ($XDG_DATA_HOME/klaviyo-bridge): a test that runs
    the CLI without --home writes into a folder of its own, never into the real user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture(autouse=True)
def _loopback_only(request, monkeypatch):
    if request.node.get_closest_marker("live"):
        yield
        return
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))
    yield


def pytest_report_header(config):
    """The one-line notice when the console's browser tests cannot run here (see tests/console/test_browser.py)."""
    import os

    if not os.access("/usr/bin/chromium", os.X_OK):
        if os.environ.get("KLAVIYO_BRIDGE_REQUIRE_BROWSER") == "1":
            return "browser tests: /usr/bin/chromium is missing and KLAVIYO_BRIDGE_REQUIRE_BROWSER=1: they will fail"
        return "browser tests: /usr/bin/chromium is missing, they will be skipped (apt-get install -y chromium to run them)"
    return None
