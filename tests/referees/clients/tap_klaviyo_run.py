"""Run singer-io tap-klaviyo against the emulator: ``python tap_klaviyo_run.py BASE_URL <tap args>``.

The tap hard-codes https://a.klaviyo.com in ``tap_klaviyo.ENDPOINTS``; only that base is changed."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import loopback_only  # noqa: E402,F401

BASE = sys.argv.pop(1).rstrip("/")

import tap_klaviyo  # noqa: E402

tap_klaviyo.ENDPOINTS = {name: url.replace("https://a.klaviyo.com", BASE) for name, url in tap_klaviyo.ENDPOINTS.items()}
tap_klaviyo.main()
