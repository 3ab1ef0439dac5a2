"""Progress of the import and export commands, on stderr.

On a terminal: a live ``rich`` display (spinner or bar, counters, rate, elapsed time, and an ETA
where a total is known), cleared when the command ends, also after an error or Ctrl-C (use it as a
context manager, or call ``close()`` in a ``finally``), so the summary printed after it stands
alone. Elsewhere (a pipe, a file, cron, CI): no control characters, only a plain ``progress:`` line
on stderr at most every ``LOG_EVERY`` seconds. Progress is not a warning: it never goes through
the log at WARNING level (a log filter for problems stays quiet on a healthy run).

The callbacks, as the engines call them:

* import, ``ImportProgress(rows, pages, (windows_done, windows))`` (``run_import(on_batch=...)``):
  after each fetched batch, the rows in that batch, the pages fetched so far and how many of the
  planned windows (time slices fetched concurrently) are fetched to their last page;
* export, ``ExportProgress(kind, rows)`` (``run_export(progress=...)``): ``validated`` (a chunk of
  input rows validated), ``sent`` (a batch POSTed), ``done`` (a batch's outcome recorded, after its
  bulk import job completed when waiting for it); any other kind is ignored.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Self

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

#: Seconds between two plain progress lines when stderr is not a terminal.
LOG_EVERY = 10.0


def _plain_line(text: str) -> None:
    """One progress line on stderr (looked up when called, so a redirected stderr is honoured)."""
    print(f"progress: {text}", file=sys.stderr, flush=True)


class EtaColumn(ProgressColumn):
    """``ETA m:ss`` for a task with a known total once its speed is known; nothing otherwise."""

    def render(self, task: Task) -> Text:
        remaining = task.time_remaining if task.total else None
        if remaining is None or task.finished:
            return Text("")
        minutes, seconds = divmod(int(remaining + 0.5), 60)
        return Text(f"ETA {minutes}:{seconds:02d}", style="progress.remaining")


def _live_console(console: Console | None) -> Console | None:
    """The console to draw a live display on, or None for plain log lines."""
    if console is None:
        if not sys.stderr.isatty():  # FORCE_COLOR & co. do not make a pipe a terminal here
            return None
        console = Console(stderr=True)
    return console if console.is_terminal and not console.is_dumb_terminal else None


class _Display:
    """A transient rich Progress on a terminal, or plain log lines; stopped once by ``close()``."""

    def __init__(
        self,
        logger: logging.Logger,
        console: Console | None,
        clock: Callable[[], float],
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.log = logger
        self.emit = emit or _plain_line
        self.clock = clock
        self.started = self.last_log = clock()
        self.console = _live_console(console)
        self.bar: Progress | None = None
        self._rerouted: list[tuple[logging.StreamHandler[Any], Any]] = []
        if self.console is not None:
            own_stderr = console is None
            self.bar = Progress(
                *self.columns(),
                console=self.console,
                transient=True,
                get_time=clock,
                redirect_stdout=own_stderr,
                redirect_stderr=own_stderr,
            )
            self.add_tasks(self.bar)
            real_stderr = sys.stderr
            self.bar.start()
            if own_stderr and sys.stderr is not real_stderr:
                # Log lines (retry warnings, -v) print above the bar instead of through it.
                for handler in logging.getLogger().handlers:
                    if isinstance(handler, logging.StreamHandler) and handler.stream is real_stderr:
                        self._rerouted.append((handler, handler.setStream(sys.stderr)))

    def columns(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def add_tasks(self, bar: Progress) -> None:
        raise NotImplementedError

    def rate(self, count: int) -> str:
        """``count`` per second since the start; a dash in the first half second (too noisy yet)."""
        elapsed = self.clock() - self.started
        return f"{count / elapsed:,.0f}" if elapsed >= 0.5 else "-"

    def maybe_log(self, text: Callable[[], str]) -> None:
        """A plain line when not on a terminal and ``LOG_EVERY`` seconds have passed since the last."""
        if self.bar is None:
            now = self.clock()
            if now - self.last_log >= LOG_EVERY:
                self.last_log = now
                self.emit(f"{text()}, {self.elapsed_text(now)} elapsed")

    def elapsed_text(self, now: float) -> str:
        minutes, seconds = divmod(int(now - self.started), 60)
        return f"{minutes}:{seconds:02d}"

    def close(self) -> None:
        """Clear the live display (idempotent); plain mode prints nothing more."""
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._rerouted = []
        if self.bar is not None:
            bar, self.bar = self.bar, None
            bar.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImportProgress(_Display):
    """Records, pages, rate and elapsed time of one import; the windows fetched out of those planned
    (an import's only total known up front) drive the bar and its ETA."""

    def __init__(self, label: str, *, console: Console | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.label = label
        self.rows = self.pages = 0
        self.windows_done = self.windows = 0
        super().__init__(logging.getLogger("klaviyo_bridge.imports"), console, clock)

    def columns(self) -> tuple[Any, ...]:
        return (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            EtaColumn(),
        )

    def add_tasks(self, bar: Progress) -> None:
        self.task = bar.add_task(self.label, total=None, counts=self.counts())

    def counts(self) -> str:
        text = f"{self.rows:,} records, {self.pages:,} pages, {self.rate(self.rows)} records/s"
        if self.windows > 1:
            text += f", {self.windows_done:,}/{self.windows:,} windows"
        return text

    def eta_text(self) -> str:
        """``, ETA m:ss`` from the share of windows fetched so far (plain lines); empty before one is."""
        if self.windows <= 1 or not self.windows_done or self.windows_done >= self.windows:
            return ""
        elapsed = self.clock() - self.started
        remaining = elapsed / self.windows_done * (self.windows - self.windows_done)
        minutes, seconds = divmod(int(remaining + 0.5), 60)
        return f", ETA {minutes}:{seconds:02d}"

    def __call__(self, rows: int, pages: int = 0, windows: tuple[int, int] | None = None) -> None:
        self.rows += rows
        self.pages = max(self.pages, pages)
        if windows is not None:
            self.windows_done, self.windows = max(self.windows_done, windows[0]), windows[1]
        if self.bar is not None:
            known = self.windows > 1
            self.bar.update(
                self.task,
                completed=self.windows_done if known else self.rows,
                total=self.windows if known else None,
                counts=self.counts(),
            )
        else:
            self.maybe_log(lambda: f"{self.label}: {self.counts()}{self.eta_text()}")


class ExportProgress(_Display):
    """Rows validated, batches and rows sent, batches completed (out of those sent) of one export."""

    def __init__(
        self, label: str = "export", *, console: Console | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.label = label
        self.validated = self.sent_rows = self.sent_batches = self.done_rows = self.done_batches = 0
        super().__init__(logging.getLogger("klaviyo_bridge.exports"), console, clock)

    def columns(self) -> tuple[Any, ...]:
        return (
            SpinnerColumn(),
            TextColumn("{task.description:<10}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            EtaColumn(),
        )

    def add_tasks(self, bar: Progress) -> None:
        self.t_validated = bar.add_task("validated", total=None, counts=self.validated_text())
        self.t_sent = bar.add_task("sent", total=None, counts=self.sent_text())
        # batches sent are the known total of batches to complete (Klaviyo's jobs, when waited for)
        self.t_done = bar.add_task("completed", total=None, counts=self.done_text())

    def validated_text(self) -> str:
        return f"{self.validated:,} rows"

    def sent_text(self) -> str:
        return f"{self.sent_batches:,} batches, {self.sent_rows:,} rows, {self.rate(self.sent_rows)} rows/s"

    def to_complete(self) -> int:
        """Batches sent, or more on a resume (a batch sent before the crash is completed, not sent again)."""
        return max(self.sent_batches, self.done_batches)

    def done_text(self) -> str:
        return f"{self.done_batches:,}/{self.to_complete():,} batches, {self.done_rows:,} rows"

    def line(self) -> str:
        return (
            f"{self.label}: {self.validated:,} rows validated; {self.sent_batches:,} batches sent "
            f"({self.sent_rows:,} rows, {self.rate(self.sent_rows)} rows/s); "
            f"{self.done_batches:,}/{self.to_complete():,} batches completed"
        )

    def __call__(self, what: str, rows: int) -> None:
        if what == "validated":
            self.validated += rows
        elif what == "sent":
            self.sent_batches += 1
            self.sent_rows += rows
        elif what == "done":
            self.done_batches += 1
            self.done_rows += rows
        else:
            return  # a kind this display does not know
        if self.bar is not None:
            self.bar.update(self.t_validated, completed=self.validated, counts=self.validated_text())
            self.bar.update(self.t_sent, completed=self.sent_rows, counts=self.sent_text())
            self.bar.update(self.t_done, completed=self.done_batches, total=self.to_complete() or None, counts=self.done_text())
        else:
            self.maybe_log(self.line)
