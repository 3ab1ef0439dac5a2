"""``next:`` lines: after a step, the command a user most likely wants next.

On stderr, so stdout stays what scripts parse (summaries, tables, CSV, JSON lines).
"""

from __future__ import annotations

import click


def next_step(*commands: str) -> None:
    for command in commands:
        click.echo(f"next: {command}", err=True)
