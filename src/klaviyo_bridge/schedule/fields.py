"""Parse one field of a five-field cron expression into the set of values it allows.

Why hand-written and not croniter/cronsim: the seed's table gives ``*/n`` a meaning that
differs from classic cron for the fields that start at 1 (see ``_step_start``), and every
error has to name the field (number and name) and the bad token, so the console and the
CLI can point at it.  The grammar is small enough that owning it is cheaper than
post-processing another parser's output and its error strings.

Grammar (the seed's "Custom cron... Details" table)::

    field   := '*' | item (',' item)*          -- '*' only alone, never inside a list
    item    := value | value '-' value | '*/' n | value '-' value '/' n
    value   := integer | name                  -- names: sun..sat, jan..dec, any case

Value ranges are the seed's: minute 0-59, hour 0-23, day of month 1-31, month 1-12,
day of week 0-6 (Sunday=0).  Day of week also accepts 7 for Sunday, as classic cron
does, so crontabs copied from elsewhere keep working.
"""

from __future__ import annotations

from dataclasses import dataclass

from klaviyo_bridge.errors import ScheduleError


class CronSyntaxError(ScheduleError):
    """A cron expression is malformed; carries where, so a UI can point at it.

    Attributes: ``expression`` (the whole text), ``field`` ("cron", the setting it belongs to),
    ``field_number`` (1-5, or None when the problem is not inside one field), ``field_name`` ("day of month", ...), ``token``
    (the offending text) and ``column`` (0-based offset of ``token`` in the expression).
    """

    def __init__(
        self,
        message: str,
        *,
        expression: str,
        field: int | None = None,
        field_name: str | None = None,
        token: str | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message, field="cron")
        self.expression = expression
        self.field_number = field
        self.field_name = field_name
        self.token = token
        self.column = column


@dataclass(frozen=True)
class FieldSpec:
    """The limits and accepted names of one cron field."""

    number: int
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is the value low + i
    allow_seven_for_sunday: bool = False

    @property
    def full(self) -> frozenset[int]:
        return frozenset(range(self.low, self.high + 1))


DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(1, "minute", 0, 59),
    FieldSpec(2, "hour", 0, 23),
    FieldSpec(3, "day of month", 1, 31),
    FieldSpec(4, "month", 1, 12, MONTH_NAMES),
    FieldSpec(5, "day of week", 0, 6, DAY_NAMES, allow_seven_for_sunday=True),
)


def _step_start(spec: FieldSpec, step: int) -> int:
    """First value of ``*/step``: the smallest multiple of ``step`` inside the field.

    This is where the seed differs from classic cron.  The seed says ``0 0 */5 * *``
    runs "every 5 days starting on the 5th" and ``5,*/10,25`` (day of month) means the
    5th, 10th, 20th and 25th; classic cron (and croniter) start at the field's minimum,
    giving 1, 6, 11, ... and 1, 11, 21, 31.  So a step counts from 0: the values are the
    multiples of ``step`` within the field's range.  For minute, hour and day of week
    (which start at 0) this is the same as classic cron; for day of month and month it
    is not (month ``*/3`` is mar, jun, sep, dec here, jan, apr, jul, oct classically).
    The seed lists 5th/10th/20th/25th for ``5,*/10,25`` and is silent on the 30th; the
    rule above also selects the 30th (a multiple of 10), which we take to be an
    omission in the seed's prose rather than a rule of its own.
    """
    return -(-spec.low // step) * step  # ceil(low / step) * step


class _FieldParser:
    def __init__(self, spec: FieldSpec, text: str, expression: str, column: int) -> None:
        self.spec = spec
        self.text = text
        self.expression = expression
        self.column = column

    def fail(self, token: str, problem: str, offset: int = 0) -> CronSyntaxError:
        spec = self.spec
        return CronSyntaxError(
            f"cron field {spec.number} ({spec.name}) '{token}': {problem} in '{self.expression}'",
            expression=self.expression,
            field=spec.number,
            field_name=spec.name,
            token=token,
            column=self.column + offset,
        )

    def value(self, token: str, offset: int) -> int:
        spec = self.spec
        if not token:
            raise self.fail(self.text, "missing value", offset)
        if token.isdigit():
            number = int(token)
        elif token.lower() in spec.names:
            return spec.low + spec.names.index(token.lower())
        elif token.isalpha() and spec.names:
            raise self.fail(token, f"unknown name; names are {', '.join(spec.names)}", offset)
        else:
            raise self.fail(token, "not a number", offset)
        if spec.allow_seven_for_sunday and number == 7:
            return 0
        if not spec.low <= number <= spec.high:
            raise self.fail(token, f"out of range {spec.low}-{spec.high}", offset)
        return number

    def step(self, token: str, offset: int) -> int:
        if not token.isdigit():
            raise self.fail(token, "step must be a positive whole number", offset)
        step = int(token)
        if step < 1:
            raise self.fail(token, "step must be at least 1", offset)
        if step > self.spec.high:
            raise self.fail(token, f"step larger than the field's maximum {self.spec.high}", offset)
        return step

    def item(self, item: str, offset: int) -> set[int]:
        spec = self.spec
        base, slash, step_text = item.partition("/")
        step = self.step(step_text, offset + len(base) + 1) if slash else 1
        if base == "*":
            if not slash:  # a bare '*' inside a list
                raise self.fail(item, "'*' cannot be part of a list (the seed allows only '*/n' there)", offset)
            return set(range(_step_start(spec, step), spec.high + 1, step))
        low_text, dash, high_text = base.partition("-")
        low = self.value(low_text, offset)
        if not dash:
            if slash:
                raise self.fail(item, "a step needs '*' or a range before it, as in '*/5' or '1-20/5'", offset)
            return {low}
        high = self.value(high_text, offset + len(low_text) + 1)
        if spec.allow_seven_for_sunday and high == 0 and low > 0:
            high = 7  # 'fri-7', 'fri-sun': Sunday at the end of a range
        if high < low:
            raise self.fail(base, f"range goes backwards ({low_text} is after {high_text})", offset)
        return {v % 7 if spec.allow_seven_for_sunday else v for v in range(low, high + 1, step)}

    def parse(self) -> frozenset[int]:
        if self.text == "*":
            return self.spec.full
        values: set[int] = set()
        offset = 0
        for item in self.text.split(","):
            if not item:
                raise self.fail(self.text, "empty list item (stray comma)", offset)
            values |= self.item(item, offset)
            offset += len(item) + 1
        return frozenset(values)


def parse_field(spec: FieldSpec, text: str, *, expression: str, column: int) -> frozenset[int]:
    """Return the values ``text`` allows for the field ``spec`` (Sunday is always 0)."""
    return _FieldParser(spec, text, expression, column).parse()
