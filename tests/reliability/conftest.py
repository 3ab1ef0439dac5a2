"""Reliability suite: ``pytest tests/reliability`` (CI, under ~90 s) or ``pytest tests/reliability --full``
(every kill point and the slow cases). ``RELIABILITY_FULL=1`` does the same as ``--full``."""

from __future__ import annotations

import json
import os

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--full", action="store_true", default=False, help="reliability: run the whole set (20+ kill points, every slow case)"
    )


@pytest.fixture(scope="session")
def full(request) -> bool:
    try:
        flag = request.config.getoption("--full")
    except ValueError:
        flag = False
    return bool(flag) or os.environ.get("RELIABILITY_FULL") == "1"


def pytest_sessionfinish(session):
    """Under pytest-xdist each test process counts its own figures: hand them to the controller."""
    from .helpers import FIGURES

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["reliability_figures"] = json.dumps(dict(FIGURES))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """(pytest-xdist, in the controller) add a finished test process's figures to the summary's."""
    from .helpers import FIGURES

    FIGURES.update(json.loads(getattr(node, "workeroutput", {}).get("reliability_figures", "{}")))


def pytest_terminal_summary(terminalreporter):
    from .helpers import FIGURES

    if FIGURES:
        terminalreporter.write_sep("-", "reliability figures")
        for key in sorted(FIGURES):
            terminalreporter.write_line(f"{key}: {FIGURES[key]}")
