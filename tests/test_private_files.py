"""Files private to the user (issue 17): the home folder 0700, the warehouse and its write-ahead log,
the state, the credentials and job files 0600; older files with wider modes are tightened, with a notice."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pyarrow as pa

from klaviyo_bridge.cli import main as cli_main
from klaviyo_bridge.secrets import CredentialStore
from klaviyo_bridge.store.factory import open_warehouse


def _run(*argv: str) -> None:
    try:
        cli_main(list(argv))
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code


def _wider(root: Path) -> list[str]:
    """Every path under ``root`` (and root) that group or others can use."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {mode:04o}")
    return found


def test_a_new_home_and_warehouse_are_private(tmp_path):
    old_umask = os.umask(0o022)  # the usual umask: files would be 0644 without care
    try:
        home = tmp_path / "home"
        _run("--home", str(home), "sql", "CREATE TABLE main.t AS SELECT 42 AS x")
        CredentialStore(home / "credentials.json").save("acct", "pk_" + "0123456789abcdef" * 2)
        wh_path = home / "warehouse.duckdb"
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE(wh_path.stat().st_mode) == 0o600
        with open_warehouse(wh_path) as wh:  # a write leaves a write-ahead log until the checkpoint
            wh.write("crm", "people", pa.table({"email": ["a@example.com"]}))
        assert _wider(home) == []
        assert os.umask(0o022) == 0o022  # the process umask is as it was
    finally:
        os.umask(old_umask)


def test_existing_wider_files_are_tightened_with_a_notice(tmp_path, caplog):
    home = tmp_path / "home"
    _run("--home", str(home), "sql", "SELECT 1")
    wh_path = home / "warehouse.duckdb"
    home.chmod(0o755)
    wh_path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        _run("--home", str(home), "sql", "SELECT 1")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(wh_path.stat().st_mode) == 0o600
    notices = [r.getMessage() for r in caplog.records]
    assert any("warehouse" in m and "0644" in m and "0600" in m for m in notices), notices
    assert any("home folder" in m and "0755" in m and "0700" in m for m in notices), notices
    # never widened: a stricter mode stays as it is
    wh_path.chmod(0o400)
    _run("--home", str(home), "sql", "SELECT 1")
    assert stat.S_IMODE(wh_path.stat().st_mode) == 0o400
    wh_path.chmod(0o600)
