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

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .api.settings import ClientSettings
from .errors import ConfigError
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
            raise ValueError("must be a list of metric names or ids, e.g. [\"Placed Order\", \"Opened Email\"]")
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
        from .imports.streams import stream

        if not stream(self.data_source).events:
            return timedelta(0)
        return parse_lookback(self.lookback or DEFAULT_LOOKBACK)

    def metric_choices(self) -> list[MetricChoice]:
        """``metric`` (one) and ``metrics`` (several), as one list."""
        return ([metric_choice(self.metric)] if self.metric else []) + list(self.metrics)

    @model_validator(mode="after")
    def _consistent(self) -> "ImportSource":
        from .imports.streams import stream

        s = stream(self.data_source)
        bad = KeyedValueError  # names its key inside ``in``, and is reported with the other errors
        if self.start_time and self.end_time and self.end_time <= self.start_time:
            raise bad("end_time", "must be after start_time")
        if s.membership and self.incremental_field is not None:
            raise bad("incremental_field", f"{s.name} reads every member each run (departures show only as "
                      "absences); it takes no incremental_field")
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
        return ClientSettings.model_validate(
            {name: getattr(self, name) for name in ClientSettings.model_fields}
        )


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
        from .imports.streams import stream

        s = stream(self.source.data_source)
        bad = KeyedValueError  # reported with the path of the key across sections
        if s.membership and self.target.mode not in ("append", "merge"):
            raise bad("out.mode", f"{s.name} keeps a history (joined_at, left_at) that out.mode "
                      f"{self.target.mode} would erase; use append or merge (they mean the same here)")
        if self.source.detect_deleted and self.target.mode != "merge":
            raise bad("in.detect_deleted", "detect_deleted marks the rows of deleted profiles, which needs "
                      "out.mode: merge (one row per profile)")
        if s.membership and (self.target.primary_key or self.target.partition_key):
            raise bad("out.primary_key", f"{s.name} has fixed columns ({s.membership}, profile_id, joined_at, "
                      "left_at); primary_key and partition_key do not apply")
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


_MISSING_SPACE = re.compile(r"^\s*([A-Za-z_][\w-]*):(?![\s/]|$)(\S.*)$")


def missing_space_line(text: str) -> tuple[int, str] | None:
    """First ``key:value`` line (no space after the colon), as (line number, line)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if _MISSING_SPACE.match(line):
            return number, line.strip()
    return None


def _yaml_error(exc: yaml.YAMLError, origin: str, text: str) -> ConfigError:
    culprit = missing_space_line(text)
    if culprit:
        number, line = culprit
        return ConfigError(f"{origin}, line {number}: {line!r} needs a space after the colon ('key: value')")
    if isinstance(exc, yaml.reader.ReaderError):
        line_number = text.count("\n", 0, exc.position) + 1
        what = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        return ConfigError(f"{origin}, line {line_number}: invalid YAML: the control character {what} is not allowed "
                           "(remove it; write it as an escape in a double-quoted string if it is meant)")
    mark = getattr(exc, "problem_mark", None)
    where = f"{origin}, line {mark.line + 1}, column {mark.column + 1}" if mark else origin
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigError(f"{where}: invalid YAML: {problem}")


#: Limits of every YAML or JSON document the product reads (configs, result settings, workflows):
#: far above any real one, far below what hangs or exhausts the machine.
MAX_DOCUMENT_BYTES = 1 << 20
MAX_DOCUMENT_DEPTH = 64
#: Values after expanding YAML aliases: a "billion laughs" document is a few hundred bytes with
#: a handful of aliases that expand to 10^9 values, and whatever walks it (validation, storing
#: it as JSON) never ends.
MAX_DOCUMENT_VALUES = 100_000


def read_text_bounded(path: str | Path, what: str = "file") -> str:
    """A config-like file's text, read at most ``MAX_DOCUMENT_BYTES`` (+1) bytes: a huge file or
    ``/dev/zero`` is refused, not read whole. Raises OSError as ``read_text`` does (the callers
    word it), ConfigError when too large or not UTF-8."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{path}: the {what} is larger than {MAX_DOCUMENT_BYTES // 1024} KiB; "
                          "a config, result settings or workflow file is a few KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the {what} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that measures what it composed before constructing it: depth, and the number
    of values once aliases are expanded (aliases keep sharing nodes, so the walk is linear)."""


def check_document_size(text: str, origin: str) -> None:
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{origin}: larger than {MAX_DOCUMENT_BYTES // 1024} KiB; "
                          "a config, result settings or workflow document is a few KiB")


def _measure(root: yaml.Node, origin: str) -> None:
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DOCUMENT_DEPTH:
            mark = node.start_mark
            raise ConfigError(f"{origin}, line {mark.line + 1}: nested more than {MAX_DOCUMENT_DEPTH} levels deep")
        if key in busy:
            mark = node.start_mark
            raise ConfigError(f"{origin}, line {mark.line + 1}: a YAML alias refers to a value that contains it "
                              "(a recursive document)")
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    if k.value in seen:
                        raise ConfigError(f"{origin}, line {k.start_mark.line + 1}: {k.value[:80]!r} is given twice "
                                          "in the same mapping (YAML would keep only the last one)")
                    seen.add(k.value)
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            busy.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [c for pair in node.value for c in pair]
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_DOCUMENT_VALUES:
                    break
            busy.discard(key)
        sizes[key] = total
        return total

    if size(root, 0) > MAX_DOCUMENT_VALUES:
        raise ConfigError(f"{origin}: more than {MAX_DOCUMENT_VALUES:,} values once YAML aliases are expanded "
                          "(an alias bomb?); write the settings out instead of nesting aliases")


def load_yaml(text: str, origin: str = "config") -> dict[str, Any]:
    """Parse one YAML document, bounded in size, depth and alias expansion (clear errors)."""
    check_document_size(text, origin)
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters at once
        node = loader.get_single_node()
        if node is not None:
            _measure(node, origin)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, origin, text) from None
    except RecursionError:
        raise ConfigError(f"{origin}: nested too deeply (more than {MAX_DOCUMENT_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()
    culprit = missing_space_line(text)
    if culprit:  # YAML may accept 'key:value' as a plain string; it is never what the user meant
        number, line = culprit
        raise ConfigError(f"{origin}, line {number}: {line!r} needs a space after the colon ('key: value')")
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of settings at the top level")
    return data


def load_json_document(text: str, origin: str) -> Any:
    """Parse JSON with the same bounds as ``load_yaml`` (size, depth)."""
    import json

    check_document_size(text, origin)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: nested too deeply (more than {MAX_DOCUMENT_DEPTH} levels)") from None
    if _json_depth(data) > MAX_DOCUMENT_DEPTH:
        raise ConfigError(f"{origin}: nested more than {MAX_DOCUMENT_DEPTH} levels deep")
    return data


def _json_depth(value: Any, depth: int = 0) -> int:
    if depth > MAX_DOCUMENT_DEPTH:
        return depth
    if isinstance(value, dict):
        return max((_json_depth(v, depth + 1) for v in value.values()), default=depth)
    if isinstance(value, list):
        return max((_json_depth(v, depth + 1) for v in value), default=depth)
    return depth


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
