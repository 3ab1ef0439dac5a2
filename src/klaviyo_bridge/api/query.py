"""Build Klaviyo query strings: filter expressions, sort, sparse fieldsets, paging.

Klaviyo's filter grammar is ``op(field,value)`` joined by commas (AND). Strings
are single-quoted, lists are ``['a','b']``, booleans ``true``/``false``, and
datetimes go *unquoted* in ISO 8601 (a quoted datetime is compared as a string).
``Query`` checks names against the spec before a request is sent, so a typo fails
locally with the list of what the endpoint allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from klaviyo_spec import Operation

from ..errors import ConfigError


def format_value(value: Any) -> str:
    """One filter operand in Klaviyo's syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, datetime):
        moment: datetime = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return moment.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Condition:
    """One ``op(field,value)`` term."""

    op: str
    field: str
    value: Any = None

    def render(self) -> str:
        if self.op == "has":
            return f"has({self.field})"
        return f"{self.op}({self.field},{format_value(self.value)})"


def equals(field_: str, value: Any) -> Condition:
    return Condition("equals", field_, value)


def any_of(field_: str, values: Iterable[Any]) -> Condition:
    return Condition("any", field_, list(values))


def greater_than(field_: str, value: Any) -> Condition:
    return Condition("greater-than", field_, value)


def greater_or_equal(field_: str, value: Any) -> Condition:
    return Condition("greater-or-equal", field_, value)


def less_than(field_: str, value: Any) -> Condition:
    return Condition("less-than", field_, value)


def less_or_equal(field_: str, value: Any) -> Condition:
    return Condition("less-or-equal", field_, value)


def contains(field_: str, value: Any) -> Condition:
    return Condition("contains", field_, value)


def render_filter(conditions: Sequence[Condition]) -> str:
    """Comma-joined terms (Klaviyo ANDs top-level terms)."""
    return ",".join(c.render() for c in conditions)


@dataclass(frozen=True)
class Query:
    """The query parameters of one list request, validated against its operation."""

    filters: tuple[Condition, ...] = ()
    sort: str | None = None
    page_size: int | None = None
    fields: Mapping[str, Sequence[str]] = field(default_factory=dict)
    additional_fields: Mapping[str, Sequence[str]] = field(default_factory=dict)
    include: Sequence[str] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def validate(self, op: Operation) -> None:
        """Raise ConfigError naming the offending filter/sort/field and what is allowed."""
        where = op.operation_id
        for cond in self.filters:
            ops = op.filters.get(cond.field)
            if ops is None:
                raise ConfigError(
                    f"{where}: cannot filter on {cond.field!r}; allowed: {', '.join(sorted(op.filters)) or 'none'}",
                    key="filter",
                )
            if cond.op not in ops:
                raise ConfigError(
                    f"{where}: {cond.field!r} does not support {cond.op!r}; allowed: {', '.join(ops)}",
                    key="filter",
                )
        if op.filter_required and not self.filters:
            raise ConfigError(f"{where}: a filter is required", key="filter")
        if self.sort is not None and self.sort not in op.sorts:
            raise ConfigError(f"{where}: cannot sort by {self.sort!r}; allowed: {', '.join(op.sorts) or 'none'}", key="sort")
        if self.page_size is not None:
            top = op.page_size_max
            if top is None:
                raise ConfigError(f"{where}: page size cannot be set for this endpoint", key="page_size")
            if not 1 <= self.page_size <= top:
                raise ConfigError(f"{where}: page size must be 1..{top}, got {self.page_size}", key="page_size")
        for label, requested, allowed in (
            ("fields", self.fields, op.fields),
            ("additional-fields", self.additional_fields, op.additional_fields),
        ):
            for rtype, names in requested.items():
                if rtype not in allowed:
                    raise ConfigError(f"{where}: no {label}[{rtype}]; allowed types: {', '.join(allowed)}", key=label)
                bad = [n for n in names if n not in allowed[rtype]]
                if bad:
                    raise ConfigError(f"{where}: unknown {label}[{rtype}] {bad}", key=label)
        bad_inc = [i for i in self.include if i not in op.include]
        if bad_inc:
            raise ConfigError(f"{where}: cannot include {bad_inc}; allowed: {', '.join(op.include)}", key="include")

    def params(self) -> list[tuple[str, str]]:
        """Query-string pairs; httpx percent-encodes them."""
        out: list[tuple[str, str]] = []
        if self.filters:
            out.append(("filter", render_filter(self.filters)))
        if self.sort:
            out.append(("sort", self.sort))
        if self.page_size is not None:
            out.append(("page[size]", str(self.page_size)))
        for rtype, names in self.fields.items():
            out.append((f"fields[{rtype}]", ",".join(names)))
        for rtype, names in self.additional_fields.items():
            out.append((f"additional-fields[{rtype}]", ",".join(names)))
        if self.include:
            out.append(("include", ",".join(self.include)))
        out.extend(self.extra.items())
        return out
