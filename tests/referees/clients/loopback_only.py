"""Imported by the referee wrappers: every HTTP request a client makes must go to 127.0.0.1.

The clients hard-code https://a.klaviyo.com; a wrapper changes only that base URL, and this guard
turns any address it missed into an error instead of a request that leaves the machine."""

import ipaddress
import socket

_connect = socket.socket.connect


def _guarded(self, address):
    if isinstance(address, tuple):
        try:
            loopback = ipaddress.ip_address(address[0]).is_loopback
        except ValueError:
            loopback = address[0] == "localhost"
        if not loopback:
            raise ConnectionRefusedError(f"referee client tried to leave 127.0.0.1: {address!r}")
    return _connect(self, address)


socket.socket.connect = _guarded
