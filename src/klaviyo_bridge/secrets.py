"""Saved authentications: Klaviyo private keys kept outside the warehouse, in a file only you can read.

The seed's "Create Authentication" step, self-hosted: ``auth:create NAME`` stores a key under a
name in ``HOME/credentials.json`` (mode 0600, enforced at every write; a file that group or others
can read is refused, like ssh does with private keys). Config files then say::

    in:
      type: klaviyo
      connection: my_account      # instead of api_token: ...
      data_source: profiles

and ``resolve_connection`` fills ``api_token`` in just before the config is validated and run, so a
config with an inline key still pastes and runs unchanged. Keys are never printed: ``hint`` shows
a masked form (``pk_…a1b2``) and nothing here puts a key in an exception message.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
FILE_MODE = 0o600
#: Keys of a config section that hold a saved authentication's name.
CONNECTION_KEYS = ("connection", "result_connection")
TOKEN_KEYS = ("api_token", "api_key")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"authentication name {name!r} is invalid: use letters, digits and _ . : @ -"
                          " (up to 128 characters, starting with a letter or digit)", key="name")
    return name


def hint(key: str) -> str:
    """A masked form that identifies a key without revealing it: ``pk_…a1b2``."""
    prefix = key.split("_", 1)[0] + "_" if key.startswith("pk_") else ""
    tail = key[-4:] if len(key) >= 16 else ""
    return f"{prefix}…{tail}"


class CredentialStore:
    """name -> Klaviyo private key, in one JSON file of mode 0600."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # --- file ---------------------------------------------------------------------------
    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        if st.st_mode & 0o077:
            raise ConfigError(
                f"credentials file {self.path} can be read by other users (mode {stat.S_IMODE(st.st_mode):04o});"
                f" refusing to use it: run 'chmod 600 {self.path}' (and consider rotating the keys in it)",
                key="credentials")
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read credentials file {self.path}: {type(exc).__name__}",
                              key="credentials") from None
        entries = data.get("credentials") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise ConfigError(f"credentials file {self.path} is not in the expected format", key="credentials")
        return entries

    def _write(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Atomic replace; the new file is created 0600 before any byte is written."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".credentials.", dir=self.path.parent)
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": 1, "credentials": dict(entries)}, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            os.chmod(self.path, FILE_MODE)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    # --- API ----------------------------------------------------------------------------
    def save(self, name: str, key: str, *, replace: bool = False) -> None:
        check_name(name)
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("the API key is empty", key="api_token")
        key = key.strip()
        if any(c.isspace() for c in key):
            raise ConfigError("the API key contains whitespace; paste only the key", key="api_token")
        entries = self._read()
        if name in entries and not replace:
            raise ConfigError(f"authentication {name!r} already exists (delete it first, or use --replace)",
                              key="name")
        entries[name] = {"api_token": key, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._write(entries)

    def get(self, name: str) -> str:
        entries = self._read()
        entry = entries.get(name)
        if entry is None:
            known = ", ".join(sorted(entries)) or "none saved yet (auth:create NAME)"
            raise ConfigError(f"no saved authentication named {name!r} (known: {known})", key="connection")
        return str(entry["api_token"])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._read()

    def delete(self, name: str, *, missing_ok: bool = False) -> bool:
        entries = self._read()
        if name not in entries:
            if missing_ok:
                return False
            raise ConfigError(f"no saved authentication named {name!r}", key="name")
        del entries[name]
        self._write(entries)
        return True

    def list(self) -> list[dict[str, str]]:
        """Names, masked hints and creation times; never the keys."""
        return [{"name": name, "hint": hint(str(e.get("api_token", ""))), "created_at": str(e.get("created_at", ""))}
                for name, e in sorted(self._read().items())]


def _fill(section: dict[str, Any], store: CredentialStore, where: str) -> None:
    names = [k for k in CONNECTION_KEYS if k in section]
    if not names:
        return
    if len(names) > 1:
        raise ConfigError(f"give one of {where}{names[0]} / {where}{names[1]}, not both", key=names[1])
    name = section.pop(names[0])
    if not isinstance(name, str):
        raise ConfigError(f"{where}{names[0]} must be the name of a saved authentication", key=names[0])
    present = [k for k in TOKEN_KEYS if section.get(k) not in (None, "")]
    if present:
        raise ConfigError(f"give either {where}{present[0]} or {where}{names[0]}, not both", key=names[0])
    for k in TOKEN_KEYS:
        section.pop(k, None)
    section["api_token"] = store.get(name)


def resolve_connection(config: Mapping[str, Any], store: CredentialStore) -> dict[str, Any]:
    """Return a copy of ``config`` with a saved authentication's key filled in as ``api_token``.

    Looks at ``in: connection`` (import configs) and at a top-level ``connection`` /
    ``result_connection`` (flat result settings). Configs with an inline ``api_token`` and no
    connection name come back unchanged.
    """
    out = copy.deepcopy(dict(config))
    section = out.get("in")
    if isinstance(section, dict):
        _fill(section, store, "in.")
    _fill(out, store, "")
    return out


def has_saved_connection(config: Mapping[str, Any]) -> str | None:
    """The saved authentication a config names, if any."""
    section = config.get("in")
    for part in (section if isinstance(section, Mapping) else {}, config):
        for key in CONNECTION_KEYS:
            if isinstance(part.get(key), str):
                return part[key]
    return None


def redact(text: str | None, secrets: "list[str] | tuple[str, ...]") -> str | None:
    """Replace every occurrence of each secret in ``text`` (defence in depth for error messages)."""
    if text is None:
        return None
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "**********")
    return text


REDACTED = "**********"
SECRET_KEYS = ("api_token", "api_key")


def redact_config(config: Any) -> Any:
    """A copy of a settings mapping with every key value replaced by ``REDACTED`` (for show/console)."""
    if isinstance(config, dict):
        return {k: (REDACTED if k in SECRET_KEYS else redact_config(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [redact_config(v) for v in config]
    return config
