"""Where klaviyo-bridge keeps its state: the embedded warehouse, state tables and saved keys.

Resolved from ``--home``, else ``$KLAVIYO_BRIDGE_HOME``, else ``./.klaviyo-bridge``.
The folder is created private (0700) because saved API keys will live in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "KLAVIYO_BRIDGE_HOME"
DEFAULT_HOME = ".klaviyo-bridge"


@dataclass(frozen=True)
class Home:
    """Paths inside the home folder."""

    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None) -> "Home":
        chosen = explicit or os.environ.get(HOME_ENV) or DEFAULT_HOME
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
