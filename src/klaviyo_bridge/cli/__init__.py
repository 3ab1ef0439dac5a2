"""Command line: parses arguments, calls the library, prints. No logic of its own.

One handler maps any ``BridgeError`` to a one-line message on stderr and a
non-zero exit code (2 for configuration errors), never a traceback; anything
else (a bug) is one line too, exit 70, with the traceback only under ``-vv``.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from .. import __version__
from ..errors import BridgeError, disk_full_message, disk_full_reason
from ..home import HOME_ENV, LEGACY_HOME, Home
from ..memory import use_lean_arrow_pool, use_lean_malloc
from .hints import error_lines

#: Each verb's module in this package (its ``COMMANDS``). A verb's module, and what it needs,
#: loads when the verb runs, not at every start: ``auth:list`` loads neither Arrow, DuckDB nor
#: the worker engine (docs/cli.md, "Start-up"). ``--help`` loads them all for their help lines.
VERBS: dict[str, str] = {
    "api": "api_cmd",
    "auth:create": "auth_cmd",
    "auth:delete": "auth_cmd",
    "auth:list": "auth_cmd",
    "connector:create": "schedule_cmd",
    "connector:delete": "schedule_cmd",
    "connector:history": "schedule_cmd",
    "connector:issue": "imports_cmd",
    "connector:list": "schedule_cmd",
    "connector:preview": "imports_cmd",
    "connector:run": "schedule_cmd",
    "connector:show": "schedule_cmd",
    "connector:update": "schedule_cmd",
    "console": "console_cmd",
    "cron:next": "schedule_cmd",
    "demo": "demo_cmd",
    "emulator": "emulator_cmd",
    "job:kill": "jobs_cmd",
    "job:list": "jobs_cmd",
    "job:show": "jobs_cmd",
    "query": "export_cmd",
    "replicate": "imports_cmd",
    "sched:create": "sched_cmd",
    "sched:delete": "sched_cmd",
    "sched:history": "sched_cmd",
    "sched:list": "sched_cmd",
    "sched:run": "sched_cmd",
    "sched:show": "sched_cmd",
    "sched:update": "sched_cmd",
    "scheduler": "scheduler_cmd",
    "sql": "warehouse_cmd",
    "tables": "warehouse_cmd",
    "worker": "worker_cmd",
    "workflow": "workflow_cmd",
}


def verb_commands(module: str) -> dict[str, click.Command]:
    """The commands a verb module declares (its ``COMMANDS``), by name; loads the module."""
    loaded = importlib.import_module(f"{__name__}.{module}")
    return {command.name or "": command for command in loaded.COMMANDS}


class _Verbs(click.Group):
    """A group whose verbs load on first use (``VERBS``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*VERBS, *self.commands})

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name in VERBS:  # loaded once, here (click's resolve_command would look it up again)
            return name, self.get_command(ctx, name), args[1:]
        if name and not name.startswith("-") and not ctx.resilient_parsing and self.get_command(ctx, name) is None:
            # click's own suggestions come from ``self.commands``, which holds no lazy verb
            close = difflib.get_close_matches(name, self.list_commands(ctx))
            hint = (
                f" Did you mean {', '.join(map(repr, close[:-1]))}{' or ' if len(close) > 1 else ''}{close[-1]!r}?"
                if close
                else ""
            )
            raise click.UsageError(f"No such command {name!r}.{hint}", ctx)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = VERBS.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name)
        command = verb_commands(module).get(cmd_name)
        if "pyarrow" in sys.modules:  # this verb works with Arrow: its allocator, chosen before it does
            use_lean_arrow_pool()
        return command


@click.group(cls=_Verbs, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="klaviyo-bridge")
@click.option(
    "--home",
    "home",
    envvar=HOME_ENV,
    type=click.Path(file_okay=False),
    default=None,
    help=f"Folder for state, saved keys and the embedded DuckDB warehouse (env {HOME_ENV}; default "
    "$XDG_DATA_HOME/klaviyo-bridge, i.e. ~/.local/share/klaviyo-bridge).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, home: str | None, verbose: int) -> None:
    """klaviyo-bridge: move data between your tables and Klaviyo, both ways."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose < 2:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx.obj = Home.resolve(home)
    legacy = Path(LEGACY_HOME).resolve()
    if home is None and legacy != ctx.obj.root and (legacy / "warehouse.duckdb").exists():
        click.echo(
            f"warning: ./{LEGACY_HOME} here is not used (the default home is {ctx.obj.root}); "
            f"to keep using it: export {HOME_ENV}={legacy}",
            err=True,
        )


_terminated = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops a command as Ctrl-C does (the running import or export ends ``killed`` and
    says what was committed), instead of ending the process with its job left ``running``.
    Commands with their own SIGTERM handling (sched:run, connector:run, scheduler) replace this."""
    global _terminated
    _terminated = True
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # asyncio's: cancel the main task (then KeyboardInterrupt)
    else:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point with the single error handler."""
    global _terminated
    use_lean_malloc()  # the process's allocators: chosen here, never by an engine (memory.py); Arrow's
    # pool once a verb that uses Arrow has loaded it (_Verbs.get_command)
    _terminated = False
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _debugging(argv: list[str] | None) -> bool:
    """-vv (given before the verb) or debug logging already on: show tracebacks. Read from the
    arguments too, since a verb's module loads before the group's callback sets up logging."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        return True
    args, count = iter(sys.argv[1:] if argv is None else argv), 0
    for arg in args:
        if arg == "--home":
            next(args, None)  # its value
        elif not arg.startswith("-"):
            break  # the verb
        elif arg == "--verbose" or (not arg.startswith("--") and set(arg[1:]) == {"v"}):
            count += 1 if arg == "--verbose" else len(arg) - 1
    return count >= 2


def _main(argv: list[str] | None) -> None:
    try:
        code = cli.main(args=argv, prog_name="klaviyo-bridge", standalone_mode=False)
    except click.exceptions.Abort:
        if _terminated:
            click.echo("Terminated.", err=True)
            sys.exit(143)
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BridgeError as exc:
        for line in error_lines(exc.to_dict()):
            click.echo(line, err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if _terminated:
            click.echo("Terminated.", err=True)
            sys.exit(143)
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except OSError as exc:
        reason = disk_full_reason(f"{exc.strerror}") if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else None
        if reason is None:
            if _debugging(argv):
                raise
            click.echo(f"error: {exc.filename or 'a file'}: {exc.strerror or exc}", err=True)
            sys.exit(1)
        # Files are written whole (a temporary file replaced at the end) and DuckDB rolls back.
        where = Path(exc.filename).parent if exc.filename else "a file this command writes"
        click.echo(f"error: {disk_full_message(where, reason)}", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug or an unconverted foreign error: still one line, no traceback
        if isinstance(exc, RuntimeError) and "query interrupted" in str(exc).lower():
            # DuckDB's answer to a Ctrl-C that landed inside it: the user's Ctrl-C, not a bug
            click.echo("Terminated." if _terminated else "Interrupted.", err=True)
            sys.exit(143 if _terminated else 130)
        if _debugging(argv):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (run with -vv for the traceback)", err=True)
        sys.exit(70)
    if isinstance(code, int) and code:
        sys.exit(code)
