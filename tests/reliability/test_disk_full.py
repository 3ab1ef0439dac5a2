"""A full disk: a clear one-line error (no native trace), and nothing half-written: after the
failure the warehouse opens, what was committed before is there, the failed command left no
part of its own changes, and the job history agrees with the data.

The home lives on a small tmpfs mounted for the test (root can mount one; CI runs as root). Where
mounting is refused, the import case runs with RLIMIT_FSIZE instead (a file may not grow past a
size: the write fails with "File too large", the same path as a full disk); only when neither is
possible are the cases skipped, saying why."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from klaviyo_bridge.store.factory import open_warehouse
from klaviyo_emulator.app import create_app
from klaviyo_emulator.settings import DEFAULT_API_KEY, EmulatorSettings

from .helpers import FIGURES, rows_of, serve_app

WAIT = 120
DATA = dict(seed=2, profiles=100, events=40000, lists=3, rate_limits=False, job_profiles_per_second=1e9)


@pytest.fixture(scope="module")
def emulator():
    app = create_app(EmulatorSettings(**DATA))
    with serve_app(app) as url:
        yield app, url


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """(folder on a 4 MB tmpfs, 'tmpfs') or (a plain folder, 'rlimit')."""
    where = tmp_path / "disk"
    if _mount_tmpfs(where, "4m"):
        try:
            yield where, "tmpfs"
        finally:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=WAIT)
    else:
        yield where, "rlimit"


def _fill(disk: Path) -> None:
    """Leave no free block on the tmpfs."""
    fh = open(disk / "filler", "wb", buffering=0)
    try:
        while True:
            fh.write(b"\0" * 65536)
    except OSError:
        pass
    finally:
        try:
            fh.close()
        except OSError:
            pass


def _file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def cli(home: Path, *args: str, stdin: str | None = None, limit: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    return subprocess.run(
        [sys.executable, "-m", "klaviyo_bridge", "--home", str(home), *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=WAIT,
        preexec_fn=_file_size_limit(limit) if limit else None,
    )


def config(path: Path, url: str, source: str) -> Path:
    path.write_text(
        f"in:\n  type: klaviyo\n  data_source: {source}\n  api_token: {DEFAULT_API_KEY}\n  base_url: {url}\n"
        "  incremental: true\nout:\n  mode: merge\n"
    )
    return path


def assert_clear_disk_full(done: subprocess.CompletedProcess) -> None:
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said and "internal error" not in said and "IO Error" not in said, said
    assert "is full (" in done.stderr and "changes were rolled back" in done.stderr, said
    assert len(done.stderr.splitlines()) <= 3, said


def test_an_import_that_does_not_fit_fails_clearly_and_leaves_state_and_data_agreeing(tmp_path, small_disk, emulator):
    disk, how = small_disk
    _, url = emulator
    home = disk / "home"
    first = cli(home, "connector:issue", str(config(tmp_path / "lists.yml", url, "lists")), "-d", "klaviyo", "-t", "lists")
    assert first.returncode == 0, first.stderr
    with open_warehouse(home / "warehouse.duckdb") as wh:
        lists_before, cursor_before = rows_of(wh, "klaviyo", "lists"), wh.state.cursor("klaviyo.lists")
    size = (home / "warehouse.duckdb").stat().st_size
    done = cli(
        home,
        "connector:issue",
        str(config(tmp_path / "events.yml", url, "events")),
        "-d",
        "klaviyo",
        "-t",
        "events",
        limit=None if how == "tmpfs" else size + 64 * 1024,
    )
    assert_clear_disk_full(done)
    with open_warehouse(home / "warehouse.duckdb") as wh:
        assert rows_of(wh, "klaviyo", "lists") == lists_before and wh.state.cursor("klaviyo.lists") == cursor_before
        assert not wh.table_columns("klaviyo", "events"), "part of the failed import is in the warehouse"
        assert wh.state.cursor("klaviyo.events") is None
        runs = wh.state.runs("klaviyo.events")
        # The run either never got recorded (its first write did not fit) or is recorded as failed with
        # nothing written: never success, never running, never rows the table does not have.
        assert all(r.status == "error" and not r.rows_written for r in runs), runs
    FIGURES["disk full cases"] += 1


def _needs_tmpfs(how: str) -> None:
    if how != "tmpfs":
        pytest.skip("cannot mount a tmpfs here (not root, or mounting refused): a whole-disk-full case needs one")


def test_saving_a_key_on_a_full_disk_keeps_the_old_file_whole(tmp_path, small_disk):
    disk, how = small_disk
    _needs_tmpfs(how)
    home = disk / "home"
    assert cli(home, "auth:create", "first", "--stdin", stdin="pk_" + "a" * 32 + "\n").returncode == 0
    before = (home / "credentials.json").read_bytes()
    _fill(disk)
    done = cli(home, "auth:create", "second", "--stdin", stdin="pk_" + "b" * 32 + "\n")
    assert_clear_disk_full(done)
    assert (home / "credentials.json").read_bytes() == before
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(".credentials")) == []  # no temporary left
    FIGURES["disk full cases"] += 1


def test_an_export_on_a_full_disk_sends_nothing(tmp_path, small_disk, emulator):
    disk, how = small_disk
    _needs_tmpfs(how)
    app, url = emulator
    home = disk / "home"
    assert cli(home, "sql", "CREATE SCHEMA klaviyo; CREATE TABLE klaviyo.keep AS SELECT 1 AS x").returncode == 0
    settings = tmp_path / "export.yml"
    settings.write_text(
        f"type: klaviyo\napi_token: {DEFAULT_API_KEY}\nbase_url: {url}\noperation: add\n"
        "list_identify_type: name\nlist_value: Disk full\n"
    )
    before = app.state.emulator.snapshot()
    _fill(disk)
    done = cli(
        home,
        "query",
        "-d",
        "klaviyo",
        "--result-settings",
        str(settings),
        "SELECT 'd' || i || '@example.com' AS email FROM range(500) t(i)",
    )
    assert_clear_disk_full(done)
    assert app.state.emulator.snapshot() == before, "something was sent although the run could not be recorded"
    (disk / "filler").unlink()
    with open_warehouse(home / "warehouse.duckdb") as wh:
        assert rows_of(wh, "klaviyo", "keep") == [("1",)]
        assert [r for r in wh.state.runs() if r.kind == "export"] == []
    FIGURES["disk full cases"] += 1


def test_a_schedule_on_a_full_disk_is_not_half_saved(tmp_path, small_disk, emulator):
    disk, how = small_disk
    _needs_tmpfs(how)
    _, url = emulator
    home = disk / "home"
    assert cli(home, "sql", "CREATE SCHEMA klaviyo").returncode == 0
    settings = tmp_path / "export.yml"
    settings.write_text(
        f"type: klaviyo\napi_token: {DEFAULT_API_KEY}\nbase_url: {url}\noperation: add\n"
        "list_identify_type: name\nlist_value: Disk full\n"
    )
    _fill(disk)
    done = cli(
        home,
        "sched:create",
        "weekly",
        "0 7 * * 1",
        "-d",
        "klaviyo",
        "--result-settings",
        str(settings),
        "SELECT 'a@example.com' AS email",
    )
    assert_clear_disk_full(done)
    (disk / "filler").unlink()
    with open_warehouse(home / "warehouse.duckdb") as wh:
        assert wh.state.schedules() == []
    credentials = home / "credentials.json"
    assert not credentials.exists() or "sched:weekly" not in credentials.read_text()
    FIGURES["disk full cases"] += 1
