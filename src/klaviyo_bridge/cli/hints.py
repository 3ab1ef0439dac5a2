"""``next:`` lines: after a step, the command a user most likely wants next.

On stderr, so stdout stays what scripts parse (summaries, tables, CSV, JSON lines).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click


def next_step(*commands: str) -> None:
    for command in commands:
        click.echo(f"next: {command}", err=True)


def error_lines(error: Mapping[str, Any]) -> list[str]:
    """How the CLI shows an error (``BridgeError.to_dict()``): one line, its message, then its
    hint when the message does not already say it."""
    message = str(error.get("message") or error.get("code") or "error")
    hint = error.get("hint")
    if hint and str(hint) not in message:
        message = f"{message.rstrip()}; hint: {hint}"
    return [f"error: {message}"]
