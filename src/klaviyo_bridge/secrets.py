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
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from pydantic_core import core_schema

from .errors import ConfigError

# --- the key itself -----------------------------------------------------------------------------
#: Shape of a real Klaviyo private key: ``pk_`` and 32 to 40 hex digits (Klaviyo's own keys are
#: ``pk_`` + 34 lowercase hex today; the range leaves room without accepting anything else).
KLAVIYO_KEY_RE = re.compile(r"^pk_[0-9a-fA-F]{32,40}$")
#: What any key may be made of, for every host (the emulator's and test keys are not hex): visible
#: ASCII letters, digits and ``_ - .``, at most 256 characters. No whitespace, no control characters.
ANY_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
#: Hosts where the strict Klaviyo shape applies (base_url's host is one of these or under them).
KLAVIYO_HOSTS = ("klaviyo.com",)
MASK = "**********"


def _describe_bad(raw: str) -> str:
    """Why a key is refused, without a single character of it (positions and classes only)."""
    for i, c in enumerate(raw):
        if c in "\r\n":
            return f"contains a line break ({'CR' if c == chr(13) else 'LF'}) at character {i + 1}"
        if ord(c) < 32 or ord(c) == 127:
            return f"contains a control character (code {ord(c)}) at character {i + 1}"
        if c.isspace():
            return f"contains whitespace at character {i + 1}"
        if ord(c) > 126:
            return f"contains a non-ASCII character at character {i + 1}"
    if len(raw) > 256:
        return f"is {len(raw)} characters long (at most 256)"
    return "contains a character other than letters, digits, _ - ."


def is_klaviyo_host(base_url: str | None) -> bool:
    host = (urlsplit(base_url).hostname or "") if base_url else ""
    return any(host == h or host.endswith("." + h) for h in KLAVIYO_HOSTS)


class ApiKey:
    """A Klaviyo private API key that cannot be printed by accident.

    ``str``, ``repr`` and ``format`` give a masked hint (``pk_…a1b2``: the prefix and, for keys of
    16+ characters, the last 4); ``json.dumps`` and YAML refuse it; pickling is refused. The value
    comes out only through :meth:`reveal`, which the API client calls where it builds the
    ``Authorization`` header. Make one with :meth:`parse`, the one place a key is read and checked.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ApiKey is immutable")

    @classmethod
    def parse(cls, raw: Any, *, field: str = "api_token", base_url: str | None = None) -> "ApiKey":
        """Check a key's shape and wrap it; ConfigError (naming ``field``, never echoing it) if bad.

        Every key: non-empty, visible ASCII letters/digits/``_-.`` only (no whitespace, CR/LF or
        other control characters), at most 256 characters. With a ``base_url`` on Klaviyo's host
        (``*.klaviyo.com``) it must also be a real private key: ``pk_`` + 32-40 hex digits.
        """
        key, problem = cls._check(raw, base_url)
        if problem or key is None:
            raise ConfigError(f"{field}: {problem}", key=field)
        return key

    @classmethod
    def _check(cls, raw: Any, base_url: str | None) -> "tuple[ApiKey | None, str | None]":
        if isinstance(raw, ApiKey):
            key = raw
        else:
            if not isinstance(raw, str):
                return None, "the API key must be a string"
            if not raw.strip():
                return None, "the API key is empty"
            if not ANY_KEY_RE.match(raw):
                return None, f"the API key {_describe_bad(raw)}; paste only the key (it is not shown here)"
            key = cls(raw)
        if base_url is not None and is_klaviyo_host(base_url) and not KLAVIYO_KEY_RE.match(key._value):
            return None, (
                f"{key} is not a Klaviyo private API key (expected pk_ followed by 32-40 hex digits,"
                " as shown in Klaviyo's Settings > API keys)"
            )
        return key, None

    def check_for(self, base_url: str | None) -> str | None:
        """Why this key cannot be sent to ``base_url`` (the strict Klaviyo shape), or None."""
        return self._check(self, base_url)[1]

    def reveal(self) -> str:
        """The raw key, for the HTTP header only."""
        return self._value

    def fingerprint(self, purpose: str) -> str:
        """A one-way name for this key (sha256 of ``purpose`` and the key): the same key gets the
        same name, e.g. for a rate budget shared between processes, and the key cannot be read back."""
        return hashlib.sha256(f"{purpose}:{self._value}".encode()).hexdigest()

    def occurs_in(self, text: str) -> bool:
        """Whether ``text`` contains this key (to refuse storing it)."""
        return self._value in text

    def scrub(self, text: str) -> str:
        """``text`` with this key (and its escaped forms) replaced by the mask."""
        for form in {self._value, repr(self._value)[1:-1], json.dumps(self._value)[1:-1]}:
            if form and len(form) >= 4:
                text = text.replace(form, MASK)
        return text

    @property
    def hint(self) -> str:
        return hint(self._value)

    def __str__(self) -> str:
        return self.hint

    def __repr__(self) -> str:
        return f"ApiKey({self.hint!r})"

    def __format__(self, spec: str) -> str:
        return format(self.hint, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("ApiKey", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:  # no pickle, no copy.deepcopy to a str
        raise TypeError("an ApiKey cannot be pickled")

    def __deepcopy__(self, memo: Any) -> "ApiKey":
        return self

    def __copy__(self) -> "ApiKey":
        return self

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        def validate(value: Any) -> "ApiKey":
            key, problem = cls._check(value, None)
            if problem or key is None:
                raise ValueError(problem)
            return key

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda v: str(v))
        )


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
FILE_MODE = 0o600
#: Keys of a config section that hold a saved authentication's name.
CONNECTION_KEYS = ("connection", "result_connection")
TOKEN_KEYS = ("api_token", "api_key")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(
            f"authentication name {name!r} is invalid: use letters, digits and _ . : @ -"
            " (up to 128 characters, starting with a letter or digit)",
            key="name",
        )
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
                key="credentials",
            )
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read credentials file {self.path}: {type(exc).__name__}", key="credentials") from None
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
    def save(self, name: str, key: "str | ApiKey", *, replace: bool = False) -> None:
        check_name(name)
        key = ApiKey.parse(key).reveal()  # shape checked before anything is written
        entries = self._read()
        if name in entries and not replace:
            raise ConfigError(f"authentication {name!r} already exists (delete it first, or use --replace)", key="name")
        entries[name] = {"api_token": key, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._write(entries)

    def get(self, name: str) -> ApiKey:
        entries = self._read()
        entry = entries.get(name)
        if entry is None:
            known = ", ".join(sorted(entries)) or "none saved yet (auth:create NAME)"
            raise ConfigError(f"no saved authentication named {name!r} (known: {known})", key="connection")
        return ApiKey.parse(entry.get("api_token"), field=f"saved authentication {name!r}")

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
        return [
            {"name": name, "hint": hint(str(e.get("api_token", ""))), "created_at": str(e.get("created_at", ""))}
            for name, e in sorted(self._read().items())
        ]


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
            name = part.get(key)
            if isinstance(name, str):
                return name
    return None


def redact_url(url: str) -> str:
    """The URL without its password (a database's, a Redis server's), for messages and names."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def redact(text: str | None, secrets: "list[Any] | tuple[Any, ...]") -> str | None:
    """Replace every occurrence of each secret in ``text`` (defence in depth for error messages)."""
    if text is None:
        return None
    for secret in secrets:
        if isinstance(secret, ApiKey):
            text = secret.scrub(text)
        elif secret and len(secret) >= 4:
            text = ApiKey(secret).scrub(text)
    return text


REDACTED = "**********"
SECRET_KEYS = ("api_token", "api_key")


_SECRET_NAME = re.compile(r"key|token|secret|password", re.I)


def redact_config(config: Any, _secret_name: bool = False) -> Any:
    """A copy of a settings mapping for show/console, every key masked on read: the values of
    ``api_token``/``api_key``, any ``ApiKey``, any string shaped like a Klaviyo private key, and
    ``pk_...`` strings under a key/token/secret name (an ``_export`` variable stored by an older
    version). Settings stored today hold no key; this is what keeps older records from showing one."""
    if isinstance(config, dict):
        return {
            k: (
                REDACTED
                if k in SECRET_KEYS and config[k] not in (None, "")
                else redact_config(v, bool(_SECRET_NAME.search(str(k))))
            )
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [redact_config(v, _secret_name) for v in config]
    if isinstance(config, ApiKey):
        return REDACTED
    if isinstance(config, str):
        if _secret_name and config.strip().startswith("pk_"):
            return REDACTED
        return _KLAVIYO_KEY_ANYWHERE.sub(REDACTED, config)
    return config


_KLAVIYO_KEY_ANYWHERE = re.compile(r"(?<![A-Za-z0-9_])pk_[0-9a-fA-F]{32,40}(?![0-9a-zA-Z_])")
