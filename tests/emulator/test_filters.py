"""The filter grammar: values, datetimes, nesting, and syntax errors."""

from datetime import datetime

import pytest

from klaviyo_emulator.filters import Bare, Condition, FilterSyntaxError, parse_filter
from klaviyo_emulator.timefmt import parse_datetime


def test_values_and_nesting():
    got = parse_filter(
        "equals(email,'a@b.com'),any(id,[\"x\",'y']),and(greater-than(updated,2023-06-01T17:06:39+00:00),has(metric))"
    )
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


@pytest.mark.parametrize(
    "text",
    ["", "equals(email)", "equals(email,'x'", "nope(email,'x')", "equals(email,'x') junk", "or(equals(a,'b'),equals(a,'c'))"],
)
def test_syntax_errors(text):
    with pytest.raises(FilterSyntaxError):
        parse_filter(text)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2023-06-01T17:06:39+00:00", 1685639199.0),
        ("2023-06-01T17:06:39Z", 1685639199.0),
        ("2023-06-01T17:06:39", 1685639199.0),
        ("2023-06-01T17:06:39.250Z", 1685639199.25),
        ("2023-06-01T19:06:39+02:00", 1685639199.0),
        ("2023-06-01", 1685577600.0),
    ],
)
def test_datetimes(text, expected):
    assert parse_datetime(text) == expected


def test_bad_datetime():
    assert parse_datetime("yesterday") is None and parse_datetime("2023-13-01T00:00:00Z") is None


# ----- typed by the spec's x-klaviyo-filters, over HTTP ---------------------------------------------

from jsonschema import Draft202012Validator  # noqa: E402

from klaviyo_spec import error_json_schema  # noqa: E402


def _klaviyo_400(response, needle: str) -> dict:
    assert response.status_code == 400, response.text
    body = response.json()
    Draft202012Validator(error_json_schema()).validate(body)
    err = body["errors"][0]
    assert err["code"] == "invalid" and err["status"] == 400 and err["source"] == {"parameter": "filter"}
    assert needle in err["detail"], err["detail"]
    return err


async def test_event_timestamp_takes_epoch_seconds_as_the_spec_types_it(client):
    """singer-io tap-klaviyo filters events with greater-than(timestamp,<integer>)."""
    everything = (await client.get("/api/events", params={"page[size]": "1000", "sort": "datetime"})).json()["data"]
    middle = datetime.fromisoformat(everything[len(everything) // 2]["attributes"]["datetime"])
    epoch = int(middle.timestamp())
    by_number = (
        await client.get(
            "/api/events", params={"filter": f"greater-than(timestamp,{epoch})", "page[size]": "1000", "sort": "datetime"}
        )
    ).json()["data"]
    by_datetime = (
        await client.get(
            "/api/events",
            params={"filter": f"greater-than(datetime,{middle.isoformat()})", "page[size]": "1000", "sort": "datetime"},
        )
    ).json()["data"]
    assert by_number and [e["id"] for e in by_number] == [e["id"] for e in by_datetime]
    assert all(e["attributes"]["timestamp"] > epoch for e in by_number)
    _klaviyo_400(
        await client.get("/api/events", params={"filter": "greater-than(timestamp,2024-01-01T00:00:00Z)"}), "takes a number"
    )


async def test_equals_with_a_list_where_the_spec_allows_it(client, account):
    ids = [account.profiles.profile_id(i) for i in (3, 8, 13)]
    text = "[" + ",".join(f"'{i}'" for i in ids) + "]"
    got = (await client.get("/api/profiles", params={"filter": f"equals(id,{text})"})).json()["data"]
    assert sorted(p["id"] for p in got) == sorted(ids)
    same = (await client.get("/api/profiles", params={"filter": f"any(id,{text})"})).json()["data"]
    assert [p["id"] for p in same] == [p["id"] for p in got]
    # events' profile_id takes one value only
    _klaviyo_400(await client.get("/api/events", params={"filter": f"equals(profile_id,{text})"}), "single value")


@pytest.mark.parametrize(
    "url,flt,needle",
    [
        ("/api/profiles", "equals(email,ava@example.com)", "quoted"),  # strings are quoted
        ("/api/profiles", "greater-than(updated,'2025-01-01T00:00:00+00:00')", "without quotes"),  # datetimes are not
        ("/api/profiles", "any(id,'abc')", "takes a list"),
        ("/api/profiles", "equals(id,[])", "at least one"),
        ("/api/profiles", "equals(shoe_size,'9')", "shoe_size"),
        ("/api/profiles", "contains(email,'ava')", "contains"),
        ("/api/campaigns", "equals(messages.channel,'fax')", "'fax' is not a valid value"),
        ("/api/campaigns", "and(equals(messages.channel,'email'),equals(archived,'true'))", "true or false"),
        ("/api/segments", "equals(is_active,1)", "true or false"),
        ("/api/events", "equals(metric_id,42)", "takes a string"),
        ("/api/profiles", "equals(email,null)", "takes a string"),
    ],
)
async def test_values_must_have_the_spec_type(client, url, flt, needle):
    _klaviyo_400(await client.get(url, params={"filter": flt}), needle)


async def test_enum_and_boolean_values_of_the_spec_are_accepted(client):
    ok = await client.get("/api/campaigns", params={"filter": "and(equals(messages.channel,'sms'),equals(archived,false))"})
    assert ok.status_code == 200, ok.text
    ok = await client.get("/api/segments", params={"filter": "equals(is_active,[true,false])"})
    assert ok.status_code == 200, ok.text
