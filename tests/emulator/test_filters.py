"""The filter grammar: values, datetimes, nesting, and syntax errors."""

import pytest

from klaviyo_emulator.filters import Bare, Condition, FilterSyntaxError, parse_filter
from klaviyo_emulator.timefmt import parse_datetime


def test_values_and_nesting():
    got = parse_filter("equals(email,'a@b.com'),any(id,[\"x\",'y']),and(greater-than(updated,2023-06-01T17:06:39+00:00),has(metric))")
    assert got == [
        Condition("equals", "email", "a@b.com"),
        Condition("any", "id", ["x", "y"]),
        Condition("greater-than", "updated", Bare("2023-06-01T17:06:39+00:00")),
        Condition("has", "metric", None),
    ]
    assert parse_filter("equals(archived,true)")[0].value is True
    assert parse_filter("equals(n,12.5)")[0].value == 12.5
    assert parse_filter("equals(x,null)")[0].value is None
    assert parse_filter(r"equals(name,'it\'s')")[0].value == "it's"


@pytest.mark.parametrize("text", ["", "equals(email)", "equals(email,'x'", "nope(email,'x')", "equals(email,'x') junk",
                                  "any(id,'x')", "equals(id,['x'])", "or(equals(a,'b'),equals(a,'c'))"])
def test_syntax_errors(text):
    with pytest.raises(FilterSyntaxError):
        parse_filter(text)


@pytest.mark.parametrize("text,expected", [
    ("2023-06-01T17:06:39+00:00", 1685639199.0), ("2023-06-01T17:06:39Z", 1685639199.0),
    ("2023-06-01T17:06:39", 1685639199.0), ("2023-06-01T17:06:39.250Z", 1685639199.25),
    ("2023-06-01T19:06:39+02:00", 1685639199.0), ("2023-06-01", 1685577600.0),
])
def test_datetimes(text, expected):
    assert parse_datetime(text) == expected


def test_bad_datetime():
    assert parse_datetime("yesterday") is None and parse_datetime("2023-13-01T00:00:00Z") is None
