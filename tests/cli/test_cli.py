"""The CLI: help on every command, one-line errors, the home folder."""

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

import klaviyo_bridge.cli as cli_package
from klaviyo_bridge.cli import VERBS, cli, help_line, main, verb_commands
from klaviyo_bridge.home import Home


def all_commands(group: click.Group, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, f"{(*prefix, name)} is listed but does not load"
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in all_commands(cli)] + [()])
def test_every_command_has_help(path, capsys):
    try:
        main([*path, "--help"])
    except SystemExit as exc:  # pragma: no cover - only on failure
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "Usage:" in out
    if path:
        assert cli.get_command(click.Context(cli), path[0]).help, f"{path} has no help text"


def test_every_verb_module_is_in_the_table_and_every_verb_in_its_module():
    """VERBS names each verb's module; each module's COMMANDS holds exactly the verbs named there."""
    by_module: dict[str, set[str]] = {}
    for verb, (module, _) in VERBS.items():
        by_module.setdefault(module, set()).add(verb)
    for module, verbs in by_module.items():
        assert set(verb_commands(module)) == verbs, module
    modules = {p.stem for p in Path(cli_package.__file__).parent.glob("*_cmd.py")}
    assert modules == set(by_module), "a *_cmd.py module whose verbs are not in VERBS (or the reverse)"


@pytest.mark.parametrize("limit", [20, 45, 80, 10_000])
def test_the_tables_help_lines_are_the_commands_own(limit):
    """``--help`` lists the verbs from VERBS without loading them: each line as click would make it
    from the command itself, at any terminal width."""
    for verb, (module, summary) in VERBS.items():
        command = verb_commands(module)[verb]
        assert not command.hidden
        assert help_line(summary, limit) == command.get_short_help_str(limit), verb


@pytest.mark.parametrize(
    "argv, absent",
    [
        (["--version"], ("pyarrow", "duckdb", "httpx", "procrastinate")),
        (["--help"], ("pyarrow", "duckdb", "httpx", "procrastinate", "rich", "yaml")),
        (["auth:list"], ("pyarrow", "duckdb", "httpx", "procrastinate")),
        (["connector:issue", "--help"], ("procrastinate", "starlette")),
        # listing and showing runs and schedules: the state, not the engines (nor their HTTP client)
        (["job:list"], ("httpx", "procrastinate", "starlette")),
        (["connector:list"], ("httpx", "procrastinate", "starlette")),
        (["sched:list"], ("httpx", "procrastinate", "starlette")),
    ],
)
def test_a_verb_loads_only_what_it_needs(argv, absent, tmp_path):
    """Start-up: the verbs' modules load on use, so a light verb starts in a fraction of a second."""
    code = (
        "import sys\nfrom klaviyo_bridge.cli import main\n"
        f"try:\n    main({['--home', str(tmp_path / 'home'), *argv]!r})\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(' '.join(sorted(m for m in sys.modules if '.' not in m)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split("\n")[-2].split())
    assert "click" in loaded and not loaded & set(absent), sorted(loaded & set(absent))


def test_our_errors_print_one_line_and_exit_nonzero(monkeypatch, capsys):
    monkeypatch.delenv("KLAVIYO_API_KEY", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["api", "get_lists"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: set KLAVIYO_API_KEY") and err.count("\n") == 1
    assert "Traceback" not in err


def test_unknown_operation_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("KLAVIYO_API_KEY", "k")
    with pytest.raises(SystemExit) as info:
        main(["api", "get_listz"])
    assert info.value.code == 2
    assert "unknown Klaviyo operation 'get_listz'" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "klaviyo_bridge", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "klaviyo-bridge" in done.stdout


def test_home_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("KLAVIYO_BRIDGE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Home.resolve().root == tmp_path / "xdg" / "klaviyo-bridge"  # never the current directory
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert Home.resolve().root == tmp_path / "user" / ".local" / "share" / "klaviyo-bridge"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/xdg")  # ignored, as the XDG rule says
    assert Home.resolve().root == tmp_path / "user" / ".local" / "share" / "klaviyo-bridge"
    monkeypatch.setenv("KLAVIYO_BRIDGE_HOME", str(tmp_path / "env"))
    assert Home.resolve().root == tmp_path / "env"
    home = Home.resolve(tmp_path / "flag").ensure()
    assert home.root == tmp_path / "flag" and (home.root.stat().st_mode & 0o777) == 0o700
    assert home.warehouse.name == "warehouse.duckdb"


def test_unexpected_errors_are_one_line_too(monkeypatch, capsys):
    import klaviyo_bridge.cli.api_cmd as api_cmd

    def boom(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setenv("KLAVIYO_API_KEY", "k")
    monkeypatch.setattr(api_cmd, "operation", boom)
    with pytest.raises(SystemExit) as info:
        main(["api", "get_lists"])
    assert info.value.code == 70
    err = capsys.readouterr().err
    assert err == "internal error: RuntimeError: something broke (run with -vv for the traceback)\n"


def test_default_home_is_the_same_from_any_folder(monkeypatch, tmp_path, capsys):
    """Run from two folders without --home: one warehouse in the user's data folder, none in either."""
    from klaviyo_bridge.cli import main

    monkeypatch.delenv("KLAVIYO_BRIDGE_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        try:
            main(["sql", "CREATE TABLE IF NOT EXISTS main.t AS SELECT 1 AS x"])
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr().err
        assert not (tmp_path / folder / ".klaviyo-bridge").exists()
    assert (tmp_path / "xdg" / "klaviyo-bridge" / "warehouse.duckdb").exists()
    assert ((tmp_path / "xdg" / "klaviyo-bridge").stat().st_mode & 0o777) == 0o700


def test_a_legacy_home_in_the_current_folder_is_named_not_used(monkeypatch, tmp_path, capsys):
    from klaviyo_bridge.cli import main

    monkeypatch.delenv("KLAVIYO_BRIDGE_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".klaviyo-bridge").mkdir()
    (tmp_path / ".klaviyo-bridge" / "warehouse.duckdb").write_bytes(b"")
    try:
        main(["tables"])
    except SystemExit:
        pass
    err = capsys.readouterr().err
    assert "./.klaviyo-bridge here is not used" in err and f"KLAVIYO_BRIDGE_HOME={tmp_path / '.klaviyo-bridge'}" in err


def test_a_mistyped_verb_gets_suggestions(capsys):
    with pytest.raises(SystemExit) as info:
        main(["job:lis"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "No such command 'job:lis'. Did you mean 'job:list'" in err and "'job:kill'?" in err


@pytest.mark.parametrize("verbose", [[], ["-vv"]])
def test_a_verb_that_cannot_load_is_one_line_or_a_traceback_under_vv(verbose, tmp_path):
    """A verb's module loads before the group's options take effect: -vv still shows the traceback."""
    code = (
        "import sys\nsys.modules['procrastinate'] = None  # a broken install\n"
        f"from klaviyo_bridge.cli import main\nmain({['--home', str(tmp_path), *verbose, 'worker', 'status']!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if verbose:
        assert done.returncode == 1 and "Traceback" in done.stderr and "procrastinate" in done.stderr, done.stderr
    else:
        assert done.returncode == 70 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("internal error: ModuleNotFoundError") and "-vv" in done.stderr, done.stderr


def test_a_verb_that_uses_arrow_runs_on_the_lean_pool(tmp_path):
    """The process chooses Arrow's allocator (memory.py) once a verb that uses Arrow has loaded it."""
    code = (
        "from klaviyo_bridge.cli import main\n"
        f"try:\n    main({['--home', str(tmp_path), 'sql', 'SELECT 1 AS x']!r})\nexcept SystemExit as exc:\n    assert not exc.code\n"
        "import pyarrow as pa\nfrom klaviyo_bridge.memory import lean_arrow_pool\n"
        "lean = lean_arrow_pool()\nprint('POOL', pa.default_memory_pool().backend_name, lean.backend_name if lean else '-')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    used, lean = done.stdout.split("POOL ", 1)[1].split()
    assert lean == "-" or used == lean, done.stdout
