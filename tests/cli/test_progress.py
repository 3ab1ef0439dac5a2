"""Progress of the import and export commands: a rich display on a terminal (cleared before the
summary, also on errors and Ctrl-C), plain log lines without control characters otherwise.

The displays are unit-tested on a rich Console forced to terminal mode; the commands run as
subprocesses against an emulator on 127.0.0.1, with stderr a pipe, or a pseudo-terminal.
"""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import subprocess
import sys
import threading

import pyarrow as pa
import pytest
from rich.console import Console

from klaviyo_bridge.cli.progress import ExportProgress, ImportProgress
from klaviyo_bridge.jobs import JobCancelled
from klaviyo_bridge.jobs.kinds import _stopper
from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.server import running_emulator
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from ..fakes import FakeClock

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n: \r, ESC, ...
CLEAR_LINE = "\x1b[2K"
SHOW_CURSOR = "\x1b[?25h"


def Clock() -> FakeClock:  # noqa: N802 - the tests' name for the shared fake clock at 100 s
    return FakeClock(100.0)


@pytest.fixture
def terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")  # a dumb TERM (some CI) gets no live display
    return Console(file=io.StringIO(), force_terminal=True, width=100)


def only_hints_after_the_bar(tty: str) -> bool:
    """The bar was erased, and after it came at most the ``next:`` lines (what to do next)."""
    _, cleared, after = tty.rpartition(CLEAR_LINE)
    lines = [line for line in after.replace("\r", "").splitlines() if line.strip()]
    return bool(cleared) and all(line.startswith("next: ") for line in lines)


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


# --- the displays on a terminal -----------------------------------------------------------
def test_import_bar_shows_records_pages_rate_and_elapsed(terminal):
    clock = Clock()
    with ImportProgress("events -> klaviyo.events", console=terminal, clock=clock) as p:
        clock.now += 1
        p(500, 2)
        clock.now += 2
        p(1000, 5)
        assert p.bar is not None
    out = terminal.file.getvalue()
    shown = plain(out)
    assert "events -> klaviyo.events" in shown
    assert "1,500 records, 5 pages, 500 records/s" in shown
    assert "0:00:03" in shown  # elapsed
    assert SHOW_CURSOR in out and out.endswith(CLEAR_LINE)  # erased at the end
    assert p.bar is None


def test_export_bar_shows_validated_sent_and_completed_and_ignores_unknown_kinds(terminal):
    clock = Clock()
    with ExportProgress("export (add)", console=terminal, clock=clock) as p:
        p("validated", 50_000)
        for _ in range(3):
            p("sent", 10_000)
        clock.now += 1
        p("done", 10_000)
        clock.now += 1
        p("done", 10_000)
        p("some_new_kind", 7)  # ignored
        p.bar.refresh()
        shown = plain(terminal.file.getvalue())
    assert "validated" in shown and "50,000 rows" in shown
    assert "3 batches, 30,000 rows, 15,000 rows/s" in shown
    assert "2/3 batches, 20,000 rows" in shown
    assert "ETA 0:01" in shown  # one batch a second, one to go
    assert "some_new_kind" not in shown
    assert (p.validated, p.sent_batches, p.done_batches) == (50_000, 3, 2)


def test_resumed_export_completes_batches_it_does_not_send_again(terminal):
    with ExportProgress(console=terminal, clock=Clock()) as p:
        p("done", 10)  # sent before the crash: completed now, not sent again
        p("sent", 10)
        p("done", 10)
    assert "2/2 batches" in plain(terminal.file.getvalue())


def test_ctrl_c_clears_the_bar(terminal):
    with pytest.raises(KeyboardInterrupt):
        with ImportProgress("x", console=terminal, clock=Clock()) as p:
            p(10, 1)
            raise KeyboardInterrupt
    out = terminal.file.getvalue()
    assert p.bar is None
    assert SHOW_CURSOR in out and out.endswith(CLEAR_LINE)
    p.close()  # twice is harmless


# --- not a terminal ------------------------------------------------------------------------
def test_not_a_terminal_prints_a_plain_line_at_most_every_10_s_never_as_a_warning(monkeypatch, caplog):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich would draw on a pipe with it; we do not
    clock = Clock()
    caplog.set_level(logging.DEBUG)
    with ImportProgress("lists -> k.lists", clock=clock) as imp, ExportProgress("export (add)", clock=clock) as exp:
        assert imp.bar is None and exp.bar is None
        for _ in range(5):  # 5 s
            clock.now += 1
            imp(100, 1)
            exp("sent", 100)
        assert stderr.getvalue() == ""
        clock.now += 5
        imp(100, 6)
        exp("validated", 1000)
        exp("done", 100)
        clock.now += 1
        imp(100, 7)
        exp("done", 100)
    assert stderr.getvalue().splitlines() == [
        "progress: lists -> k.lists: 600 records, 6 pages, 60 records/s, 0:10 elapsed",
        "progress: export (add): 1,000 rows validated; 5 batches sent (500 rows, 50 rows/s); 0/5 batches completed, 0:10 elapsed",
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_import_windows_give_the_bar_a_total_and_an_eta(terminal):
    clock = Clock()
    with ImportProgress("events -> klaviyo.events", console=terminal, clock=clock) as p:
        for done in range(1, 5):  # 4 of 8 windows in 20 s: 20 s to go
            clock.now += 5
            p(1000, done * 2, (done, 8))
        p.bar.refresh()
        shown = plain(terminal.file.getvalue())
        task = p.bar.tasks[0]
        assert (task.completed, task.total) == (4, 8)
    assert "4,000 records, 8 pages" in shown and "4/8 windows" in shown
    assert re.search(r"ETA\s+0:(1\d|2\d)", shown), shown[-300:]  # the line may wrap at 100 columns


def test_import_plain_lines_give_windows_and_eta_only_when_known(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    clock = Clock()
    with ImportProgress("events -> k.events", clock=clock) as windowed, ImportProgress("lists -> k.lists", clock=clock) as single:
        clock.now += 10
        windowed(600, 6, (16, 64))  # a quarter in 10 s: 30 s to go
        single(600, 6, (0, 1))  # one window: no share to extrapolate from
        clock.now += 10
        windowed(600, 12, (64, 64))  # all fetched: nothing left to estimate
    assert stderr.getvalue().splitlines() == [
        "progress: events -> k.events: 600 records, 6 pages, 60 records/s, 16/64 windows, ETA 0:30, 0:10 elapsed",
        "progress: lists -> k.lists: 600 records, 6 pages, 60 records/s, 0:10 elapsed",
        "progress: events -> k.events: 1,200 records, 12 pages, 60 records/s, 64/64 windows, 0:20 elapsed",
    ]


def test_job_kill_callback_ignores_kinds_it_does_not_know():
    stop = threading.Event()
    cb = _stopper(stop)
    cb("sent", 1)
    stop.set()
    cb("validated", 50_000)
    cb("a_future_kind", 1)
    with pytest.raises(JobCancelled):
        cb("sent", 1)
    with pytest.raises(JobCancelled):
        cb("done", 1)


# --- the commands, end to end -----------------------------------------------------------------
EMU = EmulatorSettings(seed=5, profiles=200, events=2000, lists=2, rate_limits=False, job_profiles_per_second=1e9)

IMPORT_CONFIG = """\
in:
  type: klaviyo
  data_source: events
  api_token: {key}
  base_url: {base}
  incremental: true
  start_time: "2020-01-01T00:00:00"
  incremental_field: created
out:
  mode: append
"""

#: The CLI with progress lines due at every event (not every 10 s), so a short run shows them.
EVERY_EVENT = (
    "import sys; from klaviyo_bridge.cli import progress, main; progress.LOG_EVERY = 0; "
    "sys.argv[0] = 'klaviyo-bridge'; main(sys.argv[1:])"
)


@pytest.fixture(scope="module")
def emulator_url():
    with running_emulator(EMU) as url:
        yield url


@pytest.fixture
def project(tmp_path, emulator_url):
    wh_path = tmp_path / "wh.duckdb"
    with open_warehouse(wh_path) as wh:
        wh.write(
            "crm",
            "customers",
            pa.table({"email": [f"p{i}@example.com" for i in range(300)] + ["bad"], "first_name": [f"P{i}" for i in range(301)]}),
        )
    export_conf = tmp_path / "export.yml"
    export_conf.write_text(
        f"type: klaviyo\napi_token: {DEFAULT_API_KEY}\nbase_url: {emulator_url}\noperation: add\n"
        "list_identify_type: name\nlist_value: Progress Test\nskip_invalid_records: true\n"
        "wait_for_completion: true\n"
    )
    import_conf = tmp_path / "events.yml"
    import_conf.write_text(IMPORT_CONFIG.format(key=EMU.api_key, base=emulator_url))
    base = ["--home", str(tmp_path / "home")]
    return {
        "import": [
            *base,
            "connector:issue",
            str(import_conf),
            "-d",
            "klaviyo",
            "-t",
            "events",
            "--warehouse",
            str(tmp_path / "imported.duckdb"),
        ],
        "export": [
            *base,
            "query",
            "-d",
            "crm",
            "--warehouse",
            str(wh_path),
            "--result-settings",
            str(export_conf),
            "SELECT email, first_name FROM customers ORDER BY email",
        ],
        "failing export": [
            *base,
            "query",
            "-d",
            "crm",
            "--warehouse",
            str(wh_path),
            "--result-settings",
            str(export_conf).replace("export.yml", "bad.yml"),
            "SELECT email FROM customers",
        ],
        "bad settings": export_conf.read_text().replace("operation: add", "operation: remove_profiles"),
    }


def cli_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR", "COLUMNS")
    }
    env.update(extra)
    return env


def run_piped(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", EVERY_EVENT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=cli_env(FORCE_COLOR="1"),
    )


def run_on_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; (exit code, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "klaviyo_bridge", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=cli_env(TERM="xterm-256color", COLUMNS="120"),
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_import_not_on_a_terminal_prints_plain_lines_and_the_summary(project):
    done = run_piped(project["import"])
    assert done.returncode == 0, done.stderr
    assert re.search(r"^events -> klaviyo\.events \(append\): \d+ rows", done.stdout, re.M)
    assert "progress: events -> klaviyo.events: " in done.stderr and "WARNING" not in done.stderr
    assert re.search(
        r"[\d,]+ records, \d+ pages, ([\d,]+|-) records/s, [\d,]+/[\d,]+ windows(, ETA \d+:\d\d)?, "
        r"\d+:\d\d elapsed",
        done.stderr,
    )
    last = re.findall(r"([\d,]+)/([\d,]+) windows", done.stderr)[-1]
    assert int(last[0].replace(",", "")) <= int(last[1].replace(",", "")) and int(last[1].replace(",", "")) > 1
    assert not CONTROL.search(done.stderr + done.stdout), repr(done.stderr[:300])


def test_export_not_on_a_terminal_prints_plain_lines_and_one_summary(project):
    done = run_piped(project["export"])
    assert done.returncode == 0, done.stderr
    summary = [line for line in done.stdout.splitlines() if line.startswith("success: run ")]
    assert len(summary) == 1 and "301 rows: 300 accepted, 1 skipped" in summary[0]
    assert re.search(
        r"progress: export \(add\): 301 rows validated; 1 batches sent \(300 rows, ([\d,]+|-) rows/s\); "
        r"1/1 batches completed",
        done.stderr,
    )
    assert "WARNING" not in done.stderr
    assert not CONTROL.search(done.stderr + done.stdout), repr(done.stderr[:300])


def test_import_on_a_terminal_draws_a_bar_and_clears_it(project):
    code, out, tty = run_on_terminal(project["import"])
    assert code == 0, tty
    rows = int(re.search(r"\(append\): (\d+) rows", out).group(1))
    shown = plain(tty)
    assert "events -> klaviyo.events" in shown and f"{rows:,} records" in shown and "records/s" in shown
    assert "\x1b[?25l" in tty and only_hints_after_the_bar(tty)  # drawn, then erased: the summary stands alone
    assert not CONTROL.search(out)


def test_export_on_a_terminal_draws_counters_and_clears_them_before_the_summary(project):
    code, out, tty = run_on_terminal(project["export"])
    assert code == 0, tty
    shown = plain(tty)
    assert "validated" in shown and "301 rows" in shown
    assert "1 batches, 300 rows" in shown and "1/1 batches, 300 rows" in shown
    assert only_hints_after_the_bar(tty)
    assert "301 rows: 300 accepted, 1 skipped" in out and not CONTROL.search(out)


def test_failed_export_on_a_terminal_clears_the_bar_before_the_error(project, tmp_path):
    (tmp_path / "bad.yml").write_text(project["bad settings"])
    code, out, tty = run_on_terminal(project["failing export"])
    assert code != 0
    cleared, _, after = tty.rpartition(CLEAR_LINE)
    assert SHOW_CURSOR in cleared
    assert after.strip().startswith("error: ") and "profile_id" in after  # the query has no profile_id column
    assert out == ""
