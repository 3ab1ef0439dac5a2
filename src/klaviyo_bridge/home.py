"""Where klaviyo-bridge keeps its state: the embedded warehouse, state tables and saved keys.

Resolved from ``--home``, else ``$KLAVIYO_BRIDGE_HOME``, else the user's data folder:
``$XDG_DATA_HOME/klaviyo-bridge`` (``~/.local/share/klaviyo-bridge`` without it). Never the
current directory: the same command run from two folders must see the same keys and state.
The folder is created private (0700) because saved API keys and the warehouse live in it; an
existing one that others can enter is tightened, with a logged notice (``make_private``).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger("klaviyo_bridge.home")
_UMASK_LOCK = threading.Lock()


def make_private(path: Path, what: str, *, notice: bool = True) -> bool:
    """Take group/other permissions off ``path`` (0644 -> 0600, 0755 -> 0700), never widening any.

    Returns True when it had to tighten (and logged a notice naming the old and new mode, unless
    ``notice`` is False: a file this process just made)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return False
    if not mode & 0o077:
        return False
    new = mode & 0o700
    try:
        os.chmod(path, new)
    except OSError as exc:
        log.warning(
            "%s %s can be read by other users (mode %04o) and could not be made private: %s", what, path, mode, exc.strerror
        )
        return False
    (log.warning if notice else log.debug)(
        "%s %s could be read by other users (mode %04o); made it private (%04o)", what, path, mode, new
    )
    return True


@contextmanager
def private_files() -> Iterator[None]:
    """Files created inside (by this process, e.g. by DuckDB) are private to the user (umask 077).

    The umask is per process: serialised here, and at worst another thread's file made meanwhile
    is private too."""
    with _UMASK_LOCK:
        old = os.umask(0o077)
        try:
            yield
        finally:
            os.umask(old)


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
        make_private(self.root, "home folder")
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
