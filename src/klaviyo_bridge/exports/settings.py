"""Result settings of an export, in the seed's keys, as one validated object.

A user pastes the vendor document's ``result_settings`` and it runs::

    type: klaviyo
    api_token: pk_...
    operation: add                 # add | remove_profiles | batch_consent | mirror | upsert | track_events
    list_identify_type: id         # id | name
    list_value: Xy12Ab
    wait_for_completion: true
    waiting_time_for_completion_millis: 3600000

The seed's own first workflow example writes ``waiting_time_for_completion_millis:3600000``
(no space after the colon). YAML reads that as a plain string, not a key. We accept such a
line when the key is a known setting, read it as ``key: value``, and warn naming the line;
an unknown key written that way stays an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from ..api.settings import API_KEY_ENV, ClientSettings
from ..documents import load_json_document, load_yaml, read_text_bounded
from ..errors import ConfigError
from ..secrets import ApiKey, CredentialStore
from ..validation import KeyedValueError, config_error_from, known_keys

OPERATIONS = ("add", "remove_profiles", "batch_consent", "mirror", "upsert", "track_events")
#: Operations that write to a list and need ``list_value``.
LIST_OPERATIONS = ("add", "remove_profiles", "mirror")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([hd])\s*$")
SUBSCRIPTION_TYPES = ("all_marketing", "email_marketing_only", "sms_marketing_only", "sms_marketing_transactional")
#: Channels each subscription type touches: (channel, message type).
CHANNELS = {
    "all_marketing": (("email", "marketing"), ("sms", "marketing")),
    "email_marketing_only": (("email", "marketing"),),
    "sms_marketing_only": (("sms", "marketing"),),
    "sms_marketing_transactional": (("sms", "marketing"), ("sms", "transactional")),
}
MIN_WAIT_MS, MAX_WAIT_MS = 300_000, 86_400_000


class ExportSettings(ClientSettings):
    """Connection settings plus what to do with the query result."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, validate_default=True)

    type: Literal["klaviyo"] = "klaviyo"
    operation: Literal["add", "remove_profiles", "batch_consent", "mirror", "upsert", "track_events"]
    list_identify_type: Literal["id", "name"] = "id"
    list_value: str | None = None
    consent_type: Literal["subscribed", "unsubscribed"] = "subscribed"
    subscription_type: (
        Literal["all_marketing", "email_marketing_only", "sms_marketing_only", "sms_marketing_transactional"] | None
    ) = None
    historical_consent: bool = False
    skip_invalid_records: bool = False
    stop_on_batch_failure: bool = False
    wait_for_completion: bool = False
    waiting_time_for_completion_millis: int = Field(3_600_000, ge=MIN_WAIT_MS, le=MAX_WAIT_MS)
    #: Region for phone numbers written without +country code (e.g. "US"); None = E.164 only.
    default_phone_region: str | None = None
    #: Batches in flight at once (the shared rate limiter still paces every request).
    concurrency: int = Field(8, ge=1, le=64)
    #: Unsubscribe with a list: also send profiles that are not in the list, which Klaviyo then
    #: unsubscribes from ALL marketing. Off by default: non-members are skipped with a reason.
    unsubscribe_non_members_globally: bool = False
    #: After an unclear answer to a consent write (timeout, lost answer, 5xx), how long Klaviyo is
    #: given to process it before its state is read back; nothing is resent before that.
    consent_settle_seconds: float = Field(60.0, ge=0, le=3600)
    #: How long to wait for another export writing to the same list before failing.
    list_lock_timeout_seconds: float = Field(3600.0, ge=0, le=86_400)
    #: mirror: the most members one run may remove, a count (500) or a share of the list ("10%").
    #: More than that aborts the run before anything is sent, naming the numbers.
    max_removals: int | str = "10%"
    #: mirror: an empty query result empties the list only when this is true.
    allow_empty: bool = False
    #: track_events: events whose time is older than this ("24h", "7d") are sent with Klaviyo's
    #: ``backfill`` flag (recorded, but they do not trigger flows); "never" sends no flag.
    backfill_older_than: str = "24h"

    @model_validator(mode="after")
    def _consistent(self) -> "ExportSettings":
        bad = KeyedValueError  # each check names the setting it is about
        if self.operation in LIST_OPERATIONS and not self.list_value:
            raise bad("list_value", f"operation {self.operation} needs list_value (the list's {self.list_identify_type})")
        if self.operation in ("upsert", "track_events") and self.list_value:
            raise bad(
                "list_value",
                f"operation {self.operation} writes to no list: remove list_value "
                "(to add the profiles to a list, use operation add)",
            )
        try:
            self.removal_limit(0)  # checks the form of max_removals
        except ValueError as exc:
            raise bad("max_removals", str(exc)) from None
        try:
            self.backfill_after_seconds  # checks the form of backfill_older_than
        except ValueError as exc:
            raise bad("backfill_older_than", str(exc)) from None
        if self.operation != "mirror" and (self.allow_empty or self.max_removals != "10%"):
            raise bad(
                "allow_empty" if self.allow_empty else "max_removals",
                "max_removals and allow_empty apply to operation mirror only",
            )
        if self.operation != "track_events" and self.backfill_older_than != "24h":
            raise bad("backfill_older_than", "backfill_older_than applies to operation track_events only")
        if self.operation == "batch_consent":
            if self.subscription_type is None:
                raise bad(
                    "subscription_type",
                    f"operation batch_consent needs subscription_type (one of {', '.join(SUBSCRIPTION_TYPES)})",
                )
            if self.historical_consent and self.consent_type != "subscribed":
                raise bad("historical_consent", "historical_consent applies to consent_type subscribed only")
        if self.unsubscribe_non_members_globally and not (
            self.operation == "batch_consent" and self.consent_type == "unsubscribed" and self.list_value
        ):
            raise bad(
                "unsubscribe_non_members_globally",
                "unsubscribe_non_members_globally applies to batch_consent with consent_type unsubscribed and a list only",
            )
        if self.list_value is not None and not str(self.list_value).strip():
            raise bad("list_value", "list_value is empty")
        return self

    def client_settings(self) -> ClientSettings:
        return ClientSettings.model_validate({name: getattr(self, name) for name in ClientSettings.model_fields})

    def removal_limit(self, members: int) -> int:
        """The most removals ``max_removals`` allows for a list of ``members`` (rounded down)."""
        value = self.max_removals
        if isinstance(value, bool):
            raise ValueError('max_removals is a count (500) or a percentage of the list ("10%")')
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"max_removals must be 0 or more, got {value}")
            return value
        text = str(value)
        m = _PERCENT.match(text)
        if m:
            share = float(m.group(1))
            if share > 100:
                raise ValueError(f"max_removals {text!r} is more than 100%")
            return int(members * share / 100)
        if text.strip().isdigit():
            return int(text.strip())
        raise ValueError(f'max_removals {text!r} is neither a count (500) nor a percentage ("10%")')

    @property
    def backfill_after_seconds(self) -> float | None:
        """Age after which an event is sent as a backfill (None: never)."""
        text = self.backfill_older_than.strip().lower()
        if text == "never":
            return None
        m = _DURATION.match(text)
        if not m:
            raise ValueError(
                f'backfill_older_than {self.backfill_older_than!r}: give hours or days, e.g. "24h" or "7d", or "never"'
            )
        return float(m.group(1)) * (3600 if m.group(2) == "h" else 86400)

    @property
    def wait_seconds(self) -> float:
        return self.waiting_time_for_completion_millis / 1000


# --- parsing -----------------------------------------------------------------------------------

SECRET_SETTING_KEYS = ("api_token", "api_key")
_KEY_NO_SPACE = re.compile(r"^(\s*)([A-Za-z_][\w-]*):(?![\s/]|$)(\S.*)$")


def lenient_yaml(text: str, origin: str, known: set[str]) -> tuple[str, list[str]]:
    """Rewrite ``known_key:value`` lines as ``known_key: value``; return the text and warnings.

    Lines whose key is not a known setting are left alone, so ``load_yaml`` reports them.
    """
    lines, warnings = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        m = _KEY_NO_SPACE.match(line)
        if m and m.group(2) in known:
            fixed = f"{m.group(1)}{m.group(2)}: {m.group(3)}"
            if m.group(2) in SECRET_SETTING_KEYS:  # the value is a key: name the line, never show it
                warnings.append(
                    f"{origin}, line {number}: {m.group(2)} has no space after the colon; read as '{m.group(2)}: <the key>'"
                )
            else:
                warnings.append(
                    f"{origin}, line {number}: {line.strip()!r} has no space after the colon; read as {fixed.strip()!r}"
                )
            line = fixed
        lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else ""), warnings


def setting_keys() -> set[str]:
    return set(known_keys(ExportSettings)) | {"result_connection", "connection"}


def parse_settings_text(
    text: str, origin: str = "result settings", *, command_line: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """YAML or inline JSON text -> (mapping, warnings). ``command_line``: the text is an argument
    (inline JSON), where a key is refused."""
    stripped = text.strip()
    if stripped.startswith("{"):
        data = load_json_document(stripped, origin)
        if not isinstance(data, dict):
            raise ConfigError(f"{origin}: expected a mapping of settings")
        if command_line:
            refuse_command_line_key(data, origin)
        return data, []
    fixed, warnings = lenient_yaml(text, origin, setting_keys())
    return load_yaml(fixed, origin), warnings


KEY_POINTER = (
    "save it once with 'klaviyo-bridge auth:create NAME' (it asks for the key, or reads "
    "--stdin / --from-env VAR) and give result_connection: NAME, set KLAVIYO_API_KEY, or put "
    "api_token in a settings file only you can read"
)


def refuse_command_line_key(data: dict[str, Any], origin: str) -> None:
    """Inline JSON settings come from the command line, where every user sees them in ``ps``:
    a key there is refused (not echoed), with where to put it instead."""
    present = [k for k in SECRET_SETTING_KEYS if k in data]
    if present:
        raise ConfigError(
            f"{origin}: inline settings on the command line may not carry {present[0]} (any user "
            f"on this machine can read a command line); {KEY_POINTER}",
            key=present[0],
        )


def parse_export_settings(data: dict[str, Any], origin: str = "result settings") -> ExportSettings:
    """Validate a mapping (every problem at once, did-you-mean for typos, the key never echoed)."""
    try:
        return ExportSettings.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc, ExportSettings, origin) from None


def resolve_result_connection(
    data: dict[str, Any], connection: str | None, credentials_path: Any, warn: Any = None
) -> dict[str, Any]:
    """Fill ``api_token`` from a saved authentication named by ``result_connection``.

    A saved authentication, when it exists, wins over an inline ``api_token`` (the seed's examples
    carry both: a connection name and a placeholder token); we say so in a warning. When the name
    is not saved (or no credential store is given), the inline key is used.
    """
    out = dict(data)
    name = connection or out.pop("result_connection", None) or out.pop("connection", None)
    out.pop("result_connection", None)
    out.pop("connection", None)
    if not name:
        return out
    key = None
    if credentials_path is not None:
        store = CredentialStore(credentials_path)
        try:
            if name in store:
                key = store.get(name)
        except ConfigError:
            raise
    if key is not None:
        if out.get("api_token") or out.get("api_key"):
            if warn:
                warn(f"result_connection {name!r} supplies the API key; the inline api_token is ignored")
        out.pop("api_key", None)
        out["api_token"] = key
        return out
    if not (out.get("api_token") or out.get("api_key")):
        raise ConfigError(
            f"result_connection {name!r} is not a saved authentication "
            "(create it with: klaviyo-bridge auth:create NAME) and no api_token is given",
            key="result_connection",
        )
    if warn:
        warn(f"result_connection {name!r} is not saved; using the inline api_token")
    return out


def load_result_settings(
    spec: str | Mapping[str, Any],
    *,
    connection: str | None = None,
    credentials_path: Path | None = None,
    warn: Callable[[str], None] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env_key: bool = False,
) -> ExportSettings:
    """A settings file path, inline JSON/YAML text, or a mapping -> validated ExportSettings.

    Inline JSON text (a command-line argument) may not carry a key. With ``env_key``, settings
    that name no key and no saved authentication take it from ``KLAVIYO_API_KEY``."""
    warnings: list[str] = []
    if isinstance(spec, Mapping):
        data, origin = dict(spec), "result_settings"
    else:
        text = spec
        origin = "--result-settings"
        if not spec.lstrip().startswith("{"):
            path = Path(spec)
            try:
                text = read_text_bounded(path, "result settings")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read result settings {spec}: {exc.strerror} "
                    '(give a YAML file or inline JSON like \'{"operation": "add", ...}\')'
                ) from None
            origin = str(path)
        data, warnings = parse_settings_text(text, origin, command_line=origin == "--result-settings")
    for w in warnings:
        if warn:
            warn(w)
    data.update(overrides or {})
    if env_key and not connection and not any(data.get(k) for k in ("api_token", "api_key", "result_connection", "connection")):
        if os.environ.get(API_KEY_ENV):
            data["api_token"] = ApiKey.parse(os.environ[API_KEY_ENV], field=API_KEY_ENV)
    data = resolve_result_connection(data, connection, credentials_path, warn)
    return parse_export_settings(data, origin)


def read_sql(query: str | None, query_file: str | None) -> str:
    if bool(query) == bool(query_file):
        raise ConfigError("give the SQL either as an argument or with -f FILE, not both (and not neither)", key="query")
    if query_file:
        try:
            return Path(query_file).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read query file {query_file}: {exc.strerror}", key="query") from None
    return query or ""
