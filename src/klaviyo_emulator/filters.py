"""Klaviyo's ``filter`` grammar, parsed into a flat list of AND-ed conditions.

    filter   := expr ("," expr)*                 (top-level commas mean AND)
    expr     := "and(" expr ("," expr)* ")" | op "(" field ["," value] ")"
    value    := 'single' | "double" | number | true | false | null
              | bare ISO-8601 datetime | "[" value ("," value)* "]"

Datetimes may be unquoted (``greater-than(updated,2023-06-01T17:06:39+00:00)``),
with fractional seconds, ``Z`` or no offset (UTC). Which fields and operators
are allowed, and whether each takes one value or a list of what type, is checked
against the spec's ``x-klaviyo-filters`` (``query.typed_condition``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

OPERATORS = (
    "equals",
    "any",
    "greater-than",
    "greater-or-equal",
    "less-than",
    "less-or-equal",
    "contains",
    "starts-with",
    "ends-with",
    "has",
)
_NAME_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.\-]*")
_BARE_RE = re.compile(r"[^,()\[\]\s'\"]+")
_NUMBER_RE = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")


class FilterSyntaxError(ValueError):
    """The filter text does not follow the grammar."""


@dataclass(frozen=True)
class Bare:
    """An unquoted token that is not a number/bool/null: Klaviyo's bare datetimes."""

    text: str


@dataclass(frozen=True)
class Condition:
    operator: str
    field: str
    value: Any = None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, message: str) -> FilterSyntaxError:
        return FilterSyntaxError(f"{message} at position {self.pos} of filter {self.text!r}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}")
        self.pos += 1

    def name(self) -> str:
        self.skip()
        m = _NAME_RE.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a name")
        self.pos = m.end()
        return m.group(0)

    def expressions(self) -> list[Condition]:
        out = self.expression()
        while self.peek() == ",":
            self.pos += 1
            out += self.expression()
        return out

    def expression(self) -> list[Condition]:
        op = self.name()
        self.expect("(")
        if op == "and":
            out = self.expressions()
            self.expect(")")
            return out
        if op not in OPERATORS:
            raise FilterSyntaxError(f"unsupported filter operator {op!r}")
        field = self.name()
        value = None
        if op != "has":
            self.expect(",")
            value = self.value()
        self.expect(")")
        return [Condition(op, field, value)]

    def value(self) -> Any:
        c = self.peek()
        if c == "[":
            self.pos += 1
            items = [] if self.peek() == "]" else [self.value()]
            while self.peek() == ",":
                self.pos += 1
                items.append(self.value())
            self.expect("]")
            return items
        if c in ("'", '"'):
            return self.quoted(c)
        m = _BARE_RE.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a value")
        self.pos = m.end()
        token = m.group(0)
        if token in ("true", "false"):
            return token == "true"
        if token == "null":
            return None
        if _NUMBER_RE.fullmatch(token):
            return float(token) if any(ch in token for ch in ".eE") else int(token)
        return Bare(token)

    def quoted(self, quote: str) -> str:
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if ch == quote:
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise self.fail("unterminated string")


def parse_filter(text: str) -> list[Condition]:
    """Filter text -> AND-ed conditions (raises FilterSyntaxError)."""
    parser = _Parser(text)
    if not text.strip():
        raise FilterSyntaxError("empty filter")
    out = parser.expressions()
    if parser.peek():
        raise parser.fail("unexpected text")
    return out
