"""Import config files in the seed's shape (``in:`` / ``out:``), as one validated object.

A user pastes the vendor document's example and it runs::

    in:
      type: klaviyo
      data_source: lists
      api_token: xxx
      revision_time: "2023-02-22"
      incremental: true
      start_time: "2023-06-01T17:06:39.698883"
      incremental_field: updated
    out:
      mode: append

Every problem is reported at once, naming the key (and the line for YAML
syntax errors); unknown keys get a did-you-mean; the key is never echoed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .api.settings import ClientSettings

# The document readers moved to documents.py (a leaf every layer may use); re-exported here.
from .documents import (
    MAX_DOCUMENT_BYTES as MAX_DOCUMENT_BYTES,
)
from .documents import (
    MAX_DOCUMENT_DEPTH as MAX_DOCUMENT_DEPTH,
)
from .documents import (
    MAX_DOCUMENT_VALUES as MAX_DOCUMENT_VALUES,
)
from .documents import (
    check_document_size as check_document_size,
)
from .documents import (
    load_json_document as load_json_document,
)
from .documents import (
    load_yaml as load_yaml,
)
from .documents import (
    missing_space_line as missing_space_line,
)
from .documents import (
    read_text_bounded as read_text_bounded,
)
from .errors import ConfigError
from .imports.streams import stream
from .validation import KeyedValueError, config_error_from

WRITE_MODES = ("append", "replace", "replace_on_new_data", "merge")
#: Incremental event imports re-read this much before the cursor (late events, see docs/imports.md).
DEFAULT_LOOKBACK = "3d"
MAX_LOOKBACK = timedelta(days=90)
_LOOKBACK_RE = re.compile(r"^\s*(\d+)\s*([hd])\s*$")


def parse_lookback(value: Any) -> timedelta:
    """``3d`` / ``12h`` / ``0h`` -> a timedelta; anything else is refused, saying what is accepted."""
    m = _LOOKBACK_RE.match(str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if not m:
        raise ValueError(f"{value!r} is not a duration: write hours or days, e.g. 3d, 12h or 0h")
    span = timedelta(hours=int(m.group(1))) if m.group(2) == "h" else timedelta(days=int(m.group(1)))
    if span > MAX_LOOKBACK:
        raise ValueError(f"{value!r} is longer than the longest lookback, {MAX_LOOKBACK.days}d")
    return span


class MetricChoice(BaseModel):
    """One entry of ``metrics:``: a metric id, a name, or a name with its integration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    id: str | None = None
    integration: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "MetricChoice":
        if not (self.name or self.id):
            raise ValueError("a metric entry needs name (and optionally integration) or id")
        if self.id and (self.name or self.integration):
            raise ValueError("a metric entry gives either id, or name with an optional integration")
        return self

    def label(self) -> str:
        if self.id:
            return self.id
        return f"{self.name} ({self.integration})" if self.integration else str(self.name)


_WITH_INTEGRATION = re.compile(r"^(.*\S)\s*\(([^()]+)\)\s*$")


def metric_choice(value: Any) -> MetricChoice:
    """``"Placed Order"``, ``"Placed Order (Shopify)"``, ``"RESQ6t"`` or ``{name:, integration:}``."""
    if isinstance(value, MetricChoice):
        return value
    if isinstance(value, dict):
        return MetricChoice.model_validate(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a metric name or id")
    text = value.strip()
    m = _WITH_INTEGRATION.match(text)
    if m:
        return MetricChoice(name=m.group(1), integration=m.group(2).strip())
    return MetricChoice(name=text)


def parse_time(value: Any) -> datetime | None:
    """ISO 8601; a time without offset is UTC (the seed's examples have none)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        stamp = value
    else:
        try:
            stamp = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be ISO 8601, e.g. 2023-06-01T17:06:39") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _first_message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    return str(exc)


def check_timezone(name: str) -> str:
    """IANA names only: 'PST' or 'CST' are ambiguous abbreviations and are refused."""
    if not name or "/" not in name and name not in ("UTC", "GMT"):
        raise ValueError(f"{name!r} is not an IANA time zone name (use e.g. America/Los_Angeles or UTC)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None
    return name


class ImportSource(ClientSettings):
    """The ``in:`` section: connection settings plus what to read."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, validate_default=True)

    type: Literal["klaviyo"] = "klaviyo"
    data_source: str
    incremental: bool = False
    incremental_field: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    skip_related_object: bool = False
    list_id: str | None = None
    segment_id: str | None = None
    event_ids: list[str] = Field(default_factory=list)
    metric: str | None = None
    #: event sources: only these metrics (names, "Name (Integration)", ids or {name, integration})
    metrics: list[MetricChoice] = Field(default_factory=list)
    #: incremental event sources: how far before the cursor each run re-reads (late events)
    lookback: str | None = None
    predictive_analytics: bool = False
    #: profiles: also find profiles deleted in Klaviyo (a sweep of every id; see docs/imports.md)
    detect_deleted: bool = False

    @field_validator("start_time", "end_time", mode="before")
    @classmethod
    def _times(cls, value: Any) -> datetime | None:
        return parse_time(value)

    @field_validator("event_ids", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value or []

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics(cls, value: Any) -> list[MetricChoice]:
        if value is None:
            return []
        if isinstance(value, (str, dict)):
            value = [value]
        if not isinstance(value, list):
            raise ValueError('must be a list of metric names or ids, e.g. ["Placed Order", "Opened Email"]')
        out = []
        for i, item in enumerate(value):
            try:
                out.append(metric_choice(item))
            except (ValueError, ValidationError) as exc:
                raise ValueError(f"entry {i + 1}: {_first_message(exc)}") from None
        return out

    @field_validator("lookback", mode="before")
    @classmethod
    def _lookback(cls, value: Any) -> str | None:
        if value is None:
            return None
        parse_lookback(value)
        return str(value).strip()

    def lookback_span(self) -> timedelta:
        """The lookback of an event source (3d unless set); other sources have none."""
        if not stream(self.data_source).events:
            return timedelta(0)
        return parse_lookback(self.lookback or DEFAULT_LOOKBACK)

    def metric_choices(self) -> list[MetricChoice]:
        """``metric`` (one) and ``metrics`` (several), as one list."""
        return ([metric_choice(self.metric)] if self.metric else []) + list(self.metrics)

    @model_validator(mode="after")
    def _consistent(self) -> "ImportSource":
        s = stream(self.data_source)
        bad = KeyedValueError  # names its key inside ``in``, and is reported with the other errors
        if self.start_time and self.end_time and self.end_time <= self.start_time:
            raise bad("end_time", "must be after start_time")
        if s.membership and self.incremental_field is not None:
            raise bad(
                "incremental_field",
                f"{s.name} reads every member each run (departures show only as absences); it takes no incremental_field",
            )
        if self.incremental_field is not None and self.incremental_field not in s.time_fields:
            allowed = ", ".join(s.time_fields) or "none (this source has no time filter)"
            raise bad("incremental_field", f"{self.incremental_field!r} is not available for {s.name}; allowed: {allowed}")
        if s.id_setting and not getattr(self, s.id_setting):
            raise bad(s.id_setting, f"data_source {s.name} needs {s.id_setting}")
        if s.per_event_id and not self.event_ids:
            raise bad("event_ids", f"data_source {s.name} needs event_ids")
        if s.name == "metric_events" and not (self.metric or self.metrics):
            raise bad("metric", 'data_source metric_events needs metric (e.g. metric: "Opened Email") or metrics')
        if self.metrics and not s.events:
            raise bad("metrics", f"metrics limits event sources (events, metric_events); {s.name} has no metrics")
        if self.lookback is not None and not s.events:
            raise bad("lookback", f"lookback applies to event sources (events, metric_events), not {s.name}")
        if self.detect_deleted and s.name != "profiles":
            raise bad("detect_deleted", f"detect_deleted applies to data_source profiles, not {s.name}")
        return self

    def client_settings(self) -> ClientSettings:
        return ClientSettings.model_validate({name: getattr(self, name) for name in ClientSettings.model_fields})


class ImportTarget(BaseModel):
    """The ``out:`` section: how rows land in the table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["append", "replace", "replace_on_new_data", "merge"] = "append"
    primary_key: list[str] | None = None
    partition_key: str | None = None
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("primary_key", mode="before")
    @classmethod
    def _pk(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",")] if isinstance(value, str) else value


class ImportConfig(BaseModel):
    """A whole config.yml."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: ImportSource = Field(alias="in")
    target: ImportTarget = Field(default_factory=ImportTarget, alias="out")

    @model_validator(mode="after")
    def _history_kept(self) -> "ImportConfig":
        s = stream(self.source.data_source)
        bad = KeyedValueError  # reported with the path of the key across sections
        if s.membership and self.target.mode not in ("append", "merge"):
            raise bad(
                "out.mode",
                f"{s.name} keeps a history (joined_at, left_at) that out.mode "
                f"{self.target.mode} would erase; use append or merge (they mean the same here)",
            )
        if self.source.detect_deleted and self.target.mode != "merge":
            raise bad(
                "in.detect_deleted",
                "detect_deleted marks the rows of deleted profiles, which needs out.mode: merge (one row per profile)",
            )
        if s.membership and (self.target.primary_key or self.target.partition_key):
            raise bad(
                "out.primary_key",
                f"{s.name} has fixed columns ({s.membership}, profile_id, joined_at, "
                "left_at); primary_key and partition_key do not apply",
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _local_times(cls, data: Any) -> Any:
        """``out.timezone`` (the seed's "Data Storage Timezone") is the zone of the user's own
        clock: a ``start_time``/``end_time`` written without an offset is read in it. Stored
        timestamps are instants (UTC), whatever the zone."""
        if not isinstance(data, dict):
            return data
        source, target = data.get("in"), data.get("out")
        name = target.get("timezone") if isinstance(target, dict) else None
        if not isinstance(source, dict) or not isinstance(name, str):
            return data
        try:
            zone = ZoneInfo(check_timezone(name))
        except (ValueError, ZoneInfoNotFoundError):
            return data  # the field's own validator reports it
        local = {}
        for key in ("start_time", "end_time"):
            try:
                stamp = parse_time(source.get(key)) if not isinstance(source.get(key), datetime) else source[key]
            except ValueError:
                continue  # reported by the field
            if stamp is not None and _written_without_offset(source.get(key)):
                local[key] = stamp.replace(tzinfo=zone)
        return {**data, "in": {**source, **local}} if local else data


def _written_without_offset(value: Any) -> bool:
    if isinstance(value, datetime):
        return value.tzinfo is None
    text = str(value).strip()
    return not (text.endswith(("Z", "z")) or re.search(r"[+-]\d\d:?\d\d$", text))


def parse_import_config(data: dict[str, Any], origin: str = "config") -> ImportConfig:
    """Validate; keys in messages are prefixed with their section (in./out.)."""
    try:
        return ImportConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc, ImportSource, origin) from None
    except ConfigError as exc:
        raise exc.within(origin) from None


def load_import_config(path: str | Path) -> ImportConfig:
    p = Path(path)
    try:
        text = read_text_bounded(p, "config")
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
    return parse_import_config(load_yaml(text, str(p)), str(p))
