"""Typed, read-only view of ``spec_data.json`` (derived from Klaviyo's OpenAPI spec).

Everything that Klaviyo publishes per operation (rate limits, page sizes, allowed
filters and sorts, sparse fieldsets, response schemas) is read from here, never
retyped by hand. Regenerate with ``python scripts/derive_spec.py``. Shared by the product (klaviyo_bridge)
and the emulator (klaviyo_emulator), which imports nothing else from the product.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

SPEC_DATA_PATH = Path(__file__).with_name("spec_data.json")


@dataclass(frozen=True)
class RateLimit:
    """Klaviyo's published limits for one operation (per account)."""

    burst_per_second: int
    steady_per_minute: int
    daily: int | None = None

    def windows(self) -> tuple[tuple[int, float], ...]:
        """(count, seconds) pairs, every one of which must hold."""
        out: list[tuple[int, float]] = [(self.burst_per_second, 1.0), (self.steady_per_minute, 60.0)]
        if self.daily:
            out.append((self.daily, 86400.0))
        return tuple(out)


@dataclass(frozen=True)
class RateTier:
    """A lower limit for the requests of an operation that pass ``parameter`` with ``value`` among
    its comma-separated values (``additional-fields[profile]=predictive_analytics``)."""

    parameter: str
    value: str
    ratelimit: RateLimit

    @property
    def name(self) -> str:
        return f"{self.parameter}={self.value}"

    def applies(self, params: list[tuple[str, str]]) -> bool:
        return any(k == self.parameter and self.value in (x.strip() for x in v.split(",")) for k, v in params)


@dataclass(frozen=True)
class FilterField:
    """One filterable field as ``x-klaviyo-filters`` types it.

    ``single``: operators taking one value; ``list``: operators taking a list; ``none``:
    operators taking no value (``has``). ``type``: string, number, integer or boolean;
    ``format``: date-time for datetimes; ``enum``: the only values allowed."""

    single: tuple[str, ...] = ()
    list: tuple[str, ...] = ()
    none: tuple[str, ...] = ()
    type: str | None = None
    format: str | None = None
    enum: tuple[Any, ...] = ()

    @property
    def is_datetime(self) -> bool:
        return self.format == "date-time"


@dataclass(frozen=True)
class Operation:
    """One API operation as the spec describes it."""

    operation_id: str
    method: str
    path: str
    ratelimit: RateLimit
    scopes: tuple[str, ...]
    path_params: tuple[str, ...]
    fields: dict[str, tuple[str, ...]]
    additional_fields: dict[str, tuple[str, ...]]
    include: tuple[str, ...]
    filters: dict[str, tuple[str, ...]]
    filter_required: bool
    sorts: tuple[str, ...]
    page_size_default: int | None
    page_size_max: int | None
    success_status: int | None
    response_schema: str | None
    request_schema: str | None
    #: ``x-klaviyo-filters``: every filterable field's operators and value type.
    filter_types: dict[str, FilterField] = field(default_factory=dict)
    #: Lower limits for some parameter values (the spec's per-parameter rate limit paragraphs).
    ratelimit_tiers: tuple[RateTier, ...] = ()

    def ratelimit_for(self, params: list[tuple[str, str]]) -> tuple[str, RateLimit]:
        """The tier a request with these query parameters is counted in: ("", the operation's
        limit), or the strictest lower tier whose parameter value it passes."""
        hits = [t for t in self.ratelimit_tiers if t.applies(params)]
        if not hits:
            return "", self.ratelimit
        tier = min(hits, key=lambda t: (t.ratelimit.burst_per_second, t.ratelimit.steady_per_minute))
        return tier.name, tier.ratelimit

    def url_path(self, **path_params: str) -> str:
        """Fill ``{id}``-style placeholders (values are URL-quoted)."""
        path = self.path
        for name in self.path_params:
            if name not in path_params:
                raise KeyError(f"{self.operation_id} needs path parameter {name!r}")
            path = path.replace("{" + name + "}", quote(str(path_params[name]), safe=""))
        return path

    @property
    def path_regex(self) -> re.Pattern[str]:
        pattern = re.sub(r"\{([^}]+)\}", r"(?P<\1>[^/]+)", self.path)
        return re.compile("^" + pattern + "/?$")


@cache
def _raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SPEC_DATA_PATH.read_text())
    return data


def _build(entry: dict[str, Any]) -> Operation:
    rl = entry["ratelimit"]
    page = entry.get("page_size") or {}
    status = entry.get("success_status")
    return Operation(
        operation_id=entry["operation_id"],
        method=entry["method"],
        path=entry["path"],
        ratelimit=RateLimit(rl["burst_per_second"], rl["steady_per_minute"], rl.get("daily")),
        scopes=tuple(entry.get("scopes", ())),
        path_params=tuple(entry.get("path_params", ())),
        fields={k: tuple(v) for k, v in entry.get("fields", {}).items()},
        additional_fields={k: tuple(v) for k, v in entry.get("additional_fields", {}).items()},
        include=tuple(entry.get("include", ())),
        filters={k: tuple(v) for k, v in entry.get("filters", {}).items()},
        filter_required=bool(entry.get("filter_required")),
        sorts=tuple(entry.get("sorts", ())),
        page_size_default=page.get("default"),
        page_size_max=page.get("maximum"),
        success_status=int(status) if status else None,
        response_schema=entry.get("response_schema"),
        request_schema=entry.get("request_schema"),
        filter_types={name: _filter_field(d) for name, d in entry.get("filter_types", {}).items()},
        ratelimit_tiers=tuple(
            RateTier(t["parameter"], t["value"], RateLimit(t["burst_per_second"], t["steady_per_minute"]))
            for t in entry.get("ratelimit_tiers", ())
        ),
    )


def _filter_field(d: dict[str, Any]) -> FilterField:
    return FilterField(
        tuple(d.get("single", ())),
        tuple(d.get("list", ())),
        tuple(d.get("none", ())),
        d.get("type"),
        d.get("format"),
        tuple(d.get("enum", ())),
    )


@cache
def operations() -> dict[str, Operation]:
    """All operations of the spec, by operationId."""
    return {op_id: _build(entry) for op_id, entry in _raw()["operations"].items()}


def operation(operation_id: str) -> Operation:
    try:
        return operations()[operation_id]
    except KeyError:
        raise KeyError(f"unknown Klaviyo operation {operation_id!r}") from None


def emulated_operations() -> tuple[str, ...]:
    return tuple(_raw()["emulated_operations"])


def spec_revision() -> str:
    """The API revision the derived data was taken from (e.g. '2026-07-15')."""
    return str(_raw()["revision"])


def default_base_url() -> str:
    return str(_raw()["base_url"])


def response_json_schema(operation_id: str) -> dict[str, Any]:
    """Self-contained JSON Schema (with $defs) of an emulated operation's success body."""
    name = operation(operation_id).response_schema
    if name is None or name not in _raw()["schemas"]:
        raise KeyError(f"no response schema derived for {operation_id!r}")
    return {"$ref": f"#/$defs/{name}", "$defs": _raw()["schemas"]}


def error_json_schema() -> dict[str, Any]:
    """JSON Schema of Klaviyo's JSON:API error document."""
    schema: dict[str, Any] = _raw()["error_schema"]
    return schema
