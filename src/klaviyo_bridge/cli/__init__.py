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
from typing import NamedTuple

import click

from .. import __version__
from ..errors import BridgeError, disk_full_message, disk_full_reason
from ..home import HOME_ENV, LEGACY_HOME, Home
from ..memory import use_lean_arrow_pool, use_lean_malloc
from .hints import error_lines


class Verb(NamedTuple):
    module: str  #: the module in this package that declares it (in its ``COMMANDS``)
    summary: str  #: its help line for ``--help`` (the command's first sentence)


#: Each verb: its module in this package (its ``COMMANDS``) and its help line. A verb's module, and
#: what it needs, loads when the verb runs, not at every start: ``auth:list`` loads neither Arrow,
#: DuckDB nor the worker engine, and ``--help`` lists the verbs from here without loading any
#: (docs/cli.md, "Start-up"; tests/cli/test_cli.py checks each line against the command's own help).
VERBS: dict[str, Verb] = {
    "api": Verb("api_cmd", "Print the records of OPERATION_ID (e.g. get_lists, get_profiles) as JSON lines."),
    "auth:create": Verb("auth_cmd", "Save a Klaviyo private API key under NAME (HOME/credentials.json, mode 0600)."),
    "auth:delete": Verb("auth_cmd", "Delete the saved authentication NAME."),
    "auth:list": Verb("auth_cmd", "List saved authentications: names and a masked hint of each key (never the key)."),
    "connector:create": Verb("schedule_cmd", "Save an import schedule: run CONFIG_FILE into DATABASE.TABLE at CRON times."),
    "connector:delete": Verb(
        "schedule_cmd", "Delete schedule NAME (its job history stays; its connector:NAME authentication goes)."
    ),
    "connector:history": Verb("schedule_cmd", "Jobs of schedule NAME, newest first (details: job:show JOB_ID)."),
    "connector:issue": Verb("imports_cmd", "Run the import in CONFIG_FILE once, now, into DATABASE.TABLE, and print a summary."),
    "connector:list": Verb("schedule_cmd", "List import schedules: Name, Cron, Timezone, Delay, Database, Table, Status."),
    "connector:preview": Verb("imports_cmd", "Show the first rows CONFIG_FILE would import, with name:type headers."),
    "connector:run": Verb("schedule_cmd", "Run schedule NAME now, as if it were TIME (ISO 8601; default: now)."),
    "connector:show": Verb("schedule_cmd", "Show the settings of schedule NAME (keys redacted) and its next run time."),
    "connector:update": Verb("schedule_cmd", "Change schedule NAME."),
    "console": Verb("console_cmd", "Serve the web console: authentications, import sources, exports, schedules and jobs."),
    "cron:next": Verb("schedule_cmd", "Print the next run times of EXPRESSION, one ISO 8601 time with offset per line."),
    "demo": Verb(
        "demo_cmd",
        "Start an emulator on 127.0.0.1, read its lists and profiles through the client, import profiles and events "
        "into the DuckDB warehouse, query them, and export a query result back to a Klaviyo list "
        "(emulator -> import -> DuckDB -> export back).",
    ),
    "emulator": Verb("emulator_cmd", "Run the Klaviyo emulator in the foreground (Ctrl-C stops it)."),
    "job:kill": Verb(
        "jobs_cmd", "Stop running job JOB_ID (cooperatively: it stops at its next await and is recorded as killed)."
    ),
    "job:list": Verb("jobs_cmd", "Recent jobs of every kind, newest first."),
    "job:show": Verb(
        "jobs_cmd", "Status, timings, counts and error of job JOB_ID (a unique prefix of at least 6 characters works)."
    ),
    "query": Verb(
        "export_cmd", "Run QUERY on the warehouse and export the result to Klaviyo (add / remove_profiles / batch_consent)."
    ),
    "replicate": Verb(
        "imports_cmd",
        "Sync every Qlik-style table (one per event metric, plus campaigns, lists and global exclusions) "
        "incrementally, merging on the primary key.",
    ),
    "sched:create": Verb(
        "sched_cmd", "Save an export schedule: run QUERY (or -f FILE) on DATABASE at CRON times and export the result."
    ),
    "sched:delete": Verb("sched_cmd", "Delete export schedule NAME (its job history stays; its sched:NAME authentication goes)."),
    "sched:history": Verb(
        "sched_cmd", "Jobs of export schedule NAME, newest first (Records = rows accepted or submitted; job:show JOB_ID)."
    ),
    "sched:list": Verb("sched_cmd", "List export schedules: Name, Cron, Timezone, Delay, Database, Query (shortened), Status."),
    "sched:run": Verb(
        "sched_cmd", "Run export schedule NAME now, as if it were TIME (ISO 8601; default: now; recorded with the job)."
    ),
    "sched:show": Verb("sched_cmd", "Show export schedule NAME: timing, query, result settings (keys redacted), next run."),
    "sched:update": Verb("sched_cmd", "Change export schedule NAME."),
    "scheduler": Verb("scheduler_cmd", "Run due schedules, in the foreground, until stopped (Ctrl-C / SIGTERM)."),
    "sql": Verb("warehouse_cmd", "Run QUERY (or -f FILE) on the warehouse and print the rows."),
    "tables": Verb("warehouse_cmd", "List the warehouse's tables: database, table, columns, rows."),
    "worker": Verb("worker_cmd", "Run one worker of a pool on the PostgreSQL state, until Ctrl-C / SIGTERM."),
    "workflow": Verb("workflow_cmd", "Run workflow (.dig) files: td> query tasks that export their results to Klaviyo."),
}


def help_line(summary: str, limit: int) -> str:
    """``summary`` shortened for ``--help`` as click shortens a command's own help text."""
    return click.Command(None, help=summary).get_short_help_str(limit)


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

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, with the verbs' help lines from ``VERBS``: ``--help`` loads no verb's module."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        rows: list[tuple[str, str]] = []
        for name in names:
            verb, command = VERBS.get(name), self.commands.get(name)
            if verb is not None:
                rows.append((name, help_line(verb.summary, limit)))
            elif command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        verb = VERBS.get(cmd_name)
        if verb is None:
            return super().get_command(ctx, cmd_name)
        command = verb_commands(verb.module).get(cmd_name)
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
