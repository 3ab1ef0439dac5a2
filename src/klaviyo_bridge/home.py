"""Where klaviyo-bridge keeps its state: the embedded warehouse, state tables and saved keys.

Resolved from ``--home``, else ``$KLAVIYO_BRIDGE_HOME``, else the user's data folder:
``$XDG_DATA_HOME/klaviyo-bridge`` (``~/.local/share/klaviyo-bridge`` without it). Never the
current directory: the same command run from two folders must see the same keys and state.
The folder is created private (0700) because saved API keys will live in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "KLAVIYO_BRIDGE_HOME"
#: The folder name inside the user's data directory.
APP_DIR = "klaviyo-bridge"
#: Where versions before 0.2 kept the home by default (relative to the current directory).
LEGACY_HOME = ".klaviyo-bridge"


def default_home() -> Path:
    """``$XDG_DATA_HOME/klaviyo-bridge``, else ``~/.local/share/klaviyo-bridge`` (the XDG base
    directory rule: a relative ``XDG_DATA_HOME`` is ignored)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_DIR
    try:
        return Path.home() / ".local" / "share" / APP_DIR
    except RuntimeError:
        from .errors import ConfigError

        raise ConfigError(f"no home directory to keep state in: set {HOME_ENV} or pass --home DIR") from None


@dataclass(frozen=True)
class Home:
    """Paths inside the home folder."""

    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None) -> "Home":
        chosen = explicit or os.environ.get(HOME_ENV) or default_home()
        return cls(Path(chosen).expanduser().resolve())

    def ensure(self) -> "Home":
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self

    @property
    def warehouse(self) -> Path:
        """Embedded DuckDB warehouse (data and the ``_bridge`` state schema)."""
        return self.root / "warehouse.duckdb"

    @property
    def credentials(self) -> Path:
        """Saved API keys, outside the warehouse, mode 0600."""
        return self.root / "credentials.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"
