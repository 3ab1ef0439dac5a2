"""``klaviyo-bridge emulator``: the emulator's own command (``klaviyo_emulator.cli``), under the product's CLI."""

from __future__ import annotations

from klaviyo_emulator.cli import emulator_command

__all__ = ["COMMANDS", "emulator_command"]

COMMANDS = (emulator_command,)
