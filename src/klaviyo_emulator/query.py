"""Validate a request's query string against the operation's spec data.

Everything allowed (page sizes, filter fields and their operators, sorts,
sparse fieldsets, additional fields, includes) comes from ``api.spec``; any
other parameter or value is a 400 with a JSON:API error naming the parameter,
as Klaviyo answers.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from klaviyo_spec import FilterField, Operation

from .filters import Bare, Condition, FilterSyntaxError, parse_filter
from .timefmt import parse_datetime

#: Page size for collections the spec gives no page[size] for (accounts, metrics).
UNSIZED_PAGE = 200


class QueryError(Exception):
    """A 400 the client caused: ``detail`` and the offending query ``parameter``."""

    def __init__(self, detail: str, parameter: str, code: str = "invalid") -> None:
        super().__init__(detail)
        self.detail, self.parameter, self.code = detail, parameter, code


@dataclass
class Query:
    """A validated request: what to select, in which order, and what to render."""

    conditions: list[Condition] = field(default_factory=list)
    sort: str | None = None
    page_size: int = UNSIZED_PAGE
    cursor: Cursor | None = None
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    additional: dict[str, frozenset[str]] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    fingerprint: str = ""

    def wants(self, type_: str, extra: str) -> bool:
        return extra in self.additional.get(type_, ())


def is_collection(op: Operation) -> bool:
    return bool(op.response_schema and "Collection" in op.response_schema)


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after the item whose sort key and tie are ``key``/``tie``
    (Klaviyo's cursors are keysets). ``position`` and ``version`` are a shortcut: while the
    account's data version is the one the cursor was made at, the position is exact."""

    position: int
    version: int
    key: Any = None
    tie: Any = None


def encode_cursor(cursor: Cursor, fingerprint: str) -> str:
    raw = orjson.dumps([cursor.position, cursor.version, cursor.key, cursor.tie, fingerprint])
    return base64.urlsafe_b64encode(zlib.compress(raw, 1)).decode().rstrip("=")


def decode_cursor(text: str, fingerprint: str) -> Cursor:
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        position, version, key, tie, fp = orjson.loads(raw)
        position, version = int(position), int(version)
    except (ValueError, TypeError, UnicodeDecodeError, binascii.Error, zlib.error, orjson.JSONDecodeError):
        raise QueryError(f"Invalid page cursor {text!r}.", "page[cursor]") from None
    if fp != fingerprint or position < 0:
        raise QueryError("The page cursor does not belong to this query (filter or sort changed).", "page[cursor]")
    return Cursor(position, version, tuple(key) if isinstance(key, list) else key, tie)


def _shown(value: object) -> str:
    if isinstance(value, Bare):
        return value.text
    if isinstance(value, str):
        return repr(value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _typed_item(field_name: str, spec: FilterField, value: object) -> object:
    """One operand checked against the field's type (``x-klaviyo-filters``) and made comparable:
    datetimes become epoch seconds, numbers stay numbers, strings must be quoted."""
    if spec.is_datetime:
        if isinstance(value, Bare):
            parsed = parse_datetime(value.text)
            if parsed is not None:
                return parsed
            raise QueryError(
                f"Invalid datetime {value.text!r} for field '{field_name}': expected ISO 8601, e.g. 2023-06-01T17:06:39+00:00.",
                "filter",
            )
        hint = " (datetimes are written without quotes)" if isinstance(value, str) else ""
        raise QueryError(f"Field '{field_name}' takes a datetime, not {_shown(value)}{hint}.", "filter")
    kind = spec.type
    if kind in ("number", "integer"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and kind == "integer" and isinstance(value, float):
            ok = False
        if not ok:
            raise QueryError(
                f"Field '{field_name}' takes {'an integer' if kind == 'integer' else 'a number'}, not {_shown(value)}.", "filter"
            )
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise QueryError(f"Field '{field_name}' takes true or false, not {_shown(value)}.", "filter")
        return value
    # strings (and untyped fields): quoted
    if not isinstance(value, str):
        hint = " (strings are quoted, e.g. 'text')" if isinstance(value, Bare) else ""
        raise QueryError(f"Field '{field_name}' takes a string, not {_shown(value)}{hint}.", "filter")
    if spec.enum and value not in spec.enum:
        raise QueryError(
            f"{value!r} is not a valid value for field '{field_name}'; allowed: {', '.join(map(str, spec.enum))}.", "filter"
        )
    return value


def typed_condition(op: Operation, cond: Condition) -> Condition:
    """Check a parsed condition against the operation's ``x-klaviyo-filters`` entry for its field:
    the operator in the form used (one value, a list, or none) and every operand's type. A list
    given to ``equals`` means "any of" (Klaviyo's ``equals(field,[...])``)."""
    spec = op.filter_types.get(cond.field)
    if spec is None:
        allowed = sorted(op.filter_types or op.filters)
        raise QueryError(f"'{cond.field}' is not a valid field for filtering; allowed: {', '.join(allowed)}.", "filter")
    every = tuple(dict.fromkeys((*spec.single, *spec.list, *spec.none)))
    if cond.operator not in every:
        raise QueryError(
            f"Operator '{cond.operator}' is not allowed for field '{cond.field}'; allowed: {', '.join(sorted(every))}.", "filter"
        )
    if cond.operator in spec.none and cond.value is None:
        return cond
    if isinstance(cond.value, list):
        if cond.operator not in spec.list:
            raise QueryError(f"Operator '{cond.operator}' on field '{cond.field}' takes a single value, not a list.", "filter")
        if not cond.value:
            raise QueryError(f"Operator '{cond.operator}' on field '{cond.field}' needs at least one value.", "filter")
        values = [_typed_item(cond.field, spec, v) for v in cond.value]
        return Condition("any", cond.field, values)
    if cond.operator not in spec.single and cond.operator == "equals":
        # Fields typed list-only for equals (lists' and segments' name, members' email) still
        # answer a single value at Klaviyo, as the one-item list (the product sends equals(name,'X')).
        return Condition("any", cond.field, [_typed_item(cond.field, spec, cond.value)])
    if cond.operator not in spec.single:
        raise QueryError(
            f"Operator '{cond.operator}' on field '{cond.field}' takes a list, e.g. {cond.operator}({cond.field},['a','b']).",
            "filter",
        )
    return Condition(cond.operator, cond.field, _typed_item(cond.field, spec, cond.value))


def _names(text: str, parameter: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise QueryError(f"Empty name in {parameter}.", parameter)
    return names


def parse_query(op: Operation, params: list[tuple[str, str]], scope: str = "") -> Query:
    """Validate ``params`` (the raw multi-items of the query string) for ``op``."""
    q = Query()
    seen: set[str] = set()
    collection = is_collection(op)
    cursor_text = None
    for name, value in params:
        if name in seen:
            raise QueryError(f"Query parameter '{name}' given more than once.", name)
        seen.add(name)
        if name == "filter" and op.filters:
            try:
                conditions = parse_filter(value)
            except FilterSyntaxError as exc:
                raise QueryError(f"Invalid filter: {exc}.", "filter") from None
            q.conditions += [typed_condition(op, cond) for cond in conditions]
        elif name == "sort" and op.sorts:
            if value not in op.sorts:
                raise QueryError(f"'{value}' is not a valid sort; allowed: {', '.join(op.sorts)}.", "sort")
            q.sort = value
        elif name == "page[size]" and op.page_size_max:
            if not value.isdigit() or not 1 <= int(value) <= op.page_size_max:
                raise QueryError(f"page[size] must be an integer between 1 and {op.page_size_max}.", "page[size]")
            q.page_size = int(value)
        elif name == "page[cursor]" and collection:
            cursor_text = value
        elif name == "include" and op.include:
            for inc in _names(value, "include"):
                if inc not in op.include:
                    raise QueryError(f"'{inc}' is not a valid include; allowed: {', '.join(op.include)}.", "include")
            q.include = tuple(dict.fromkeys(_names(value, "include")))
        elif name.startswith("fields[") and name.endswith("]") and name[7:-1] in op.fields:
            type_ = name[7:-1]
            for f in _names(value, name):
                if f not in op.fields[type_]:
                    raise QueryError(f"'{f}' is not a valid field for the resource '{type_}'.", name)
            q.fields[type_] = tuple(dict.fromkeys(_names(value, name)))
        elif name.startswith("additional-fields[") and name.endswith("]") and name[18:-1] in op.additional_fields:
            type_ = name[18:-1]
            for f in _names(value, name):
                if f not in op.additional_fields[type_]:
                    raise QueryError(f"'{f}' is not a valid additional field for '{type_}'.", name)
            q.additional[type_] = frozenset(_names(value, name))
        else:
            raise QueryError(f"'{name}' is not a valid query parameter for this endpoint.", name)
    if op.filter_required and "messages.channel" in op.filters and not any(c.field == "messages.channel" for c in q.conditions):
        raise QueryError("A channel filter is required, e.g. filter=equals(messages.channel,'email').", "filter")
    if collection:
        if not op.page_size_max:
            q.page_size = UNSIZED_PAGE
        elif "page[size]" not in seen:
            q.page_size = op.page_size_default or op.page_size_max
    basis = f"{op.operation_id}|{scope}|{q.conditions!r}|{q.sort}"
    q.fingerprint = f"{zlib.crc32(basis.encode()):08x}"
    if cursor_text is not None:
        q.cursor = decode_cursor(cursor_text, q.fingerprint)
    return q
