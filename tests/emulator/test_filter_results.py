"""Every filter field/operator the spec allows for profiles, events, lists and group members,
checked against a brute-force evaluation over the emulator's own (unfiltered) data."""

from __future__ import annotations

from datetime import datetime

import pytest

import klaviyo_spec as spec

from .conftest import collect

CMP = {
    "greater-than": lambda a, b: a > b,
    "greater-or-equal": lambda a, b: a >= b,
    "less-than": lambda a, b: a < b,
    "less-or-equal": lambda a, b: a <= b,
}


def _ts(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


def _profile_values(item: dict, field: str, account) -> list:
    a = item["attributes"]
    marketing = (a.get("subscriptions") or {}).get("email", {}).get("marketing", {})
    if field in ("id", "profile_id"):
        return [item["id"]]
    if field == "_kx":
        return [account.profiles.exchange_id(account.profiles.row_for_id(item["id"]))]
    if field == "push_token":
        return []
    if field.startswith("subscriptions.email.marketing.list_suppressions."):
        return [s[field.rsplit(".", 1)[1]] for s in marketing.get("list_suppressions", [])]
    if field.startswith("subscriptions.email.marketing.suppression."):
        return [s[field.rsplit(".", 1)[1]] for s in marketing.get("suppression", [])]
    return [a.get(field)]


def _event_values(item: dict, field: str) -> list:
    a, rel = item["attributes"], item["relationships"]
    if field in ("datetime", "timestamp"):
        return [a["datetime"]]
    if field in ("metric", "profile"):
        return [True]
    return [rel[field[:-3]]["data"]["id"]]


def _operand(value, ft, is_time: bool) -> str:
    """One value written as Klaviyo types the field: datetimes bare, numbers bare (a time field
    typed number, like events' ``timestamp``, takes epoch seconds), booleans bare, strings quoted."""
    if is_time and ft.type in ("number", "integer"):
        return str(int(_ts(value)))
    if isinstance(value, bool):
        return str(value).lower()
    if ft.is_datetime:
        return str(value)
    return repr(value)


def _condition_text(field: str, op: str, value, ft, is_time: bool) -> str:
    if value is None:
        return f"{op}({field})"
    if isinstance(value, list):
        return f"{op}({field},[{','.join(_operand(v, ft, is_time) for v in value)}])"
    return f"{op}({field},{_operand(value, ft, is_time)})"


def _matches(values: list, op: str, value, is_time: bool) -> bool:
    present = [v for v in values if v is not None]
    if value is None:  # has(...)
        return bool(present)
    if isinstance(value, list):
        return any(_matches(values, "equals", v, is_time) for v in value)
    if is_time:
        if isinstance(value, str) and any(isinstance(v, (int, float)) for v in present):
            value = _ts(value)
        return any(CMP[op](_ts(v), _ts(value)) if op in CMP else _ts(v) == _ts(value) for v in present)
    return any(v == value for v in present)


def _sample(items: list[dict], getter, field: str) -> list:
    values = sorted({v for it in items for v in getter(it, field) if v is not None}, key=str)
    return values or ["nothing-matches"]


async def _check_all(client, path: str, op_id: str, getter, base_params: dict | None = None) -> None:
    """Every field of the operation's ``x-klaviyo-filters``, every operator in every form it takes
    (one value, a list, no value), written in the field's own type."""
    op = spec.operation(op_id)
    base_params = base_params or {}
    everything, _ = await collect(client, path, {**base_params, "page[size]": str(op.page_size_max or 10)})
    assert everything
    assert set(op.filter_types) == set(op.filters)
    for field, ft in op.filter_types.items():
        samples = _sample(everything, getter, field)
        is_time = ft.is_datetime or field in ("timestamp",)
        pick = samples[len(samples) // 2]
        for form, operators in (("single", ft.single), ("list", ft.list), ("none", ft.none)):
            for operator in operators:
                value = [samples[0], pick] if form == "list" else None if form == "none" else pick
                text = _condition_text(field, operator, value, ft, is_time)
                got, _ = await collect(client, path, {**base_params, "filter": text, "page[size]": str(op.page_size_max or 10)})
                expected = [it["id"] for it in everything if _matches(getter(it, field), operator, value, is_time)]
                assert sorted(i["id"] for i in got) == sorted(expected), f"{path} filter={text}"
                if form == "single" and operator != "equals" or field in ("id", "email"):
                    assert expected, f"sample for {text} should match something"


async def test_profile_filters(client, account):
    await _check_all(
        client,
        "/api/profiles",
        "get_profiles",
        lambda it, f: _profile_values(it, f, account),
        {"additional-fields[profile]": "subscriptions"},
    )


async def test_event_filters(client):
    await _check_all(client, "/api/events", "get_events", _event_values)


async def test_list_filters(client):
    await _check_all(client, "/api/lists", "get_lists", lambda it, f: [it["id"]] if f == "id" else [it["attributes"].get(f)])


async def test_group_member_filters(client, account):
    list_id = max(account.list_members, key=lambda k: len(account.list_members[k]))
    await _check_all(
        client, f"/api/lists/{list_id}/profiles", "get_profiles_for_list", lambda it, f: _profile_values(it, f, account)
    )
    segment_id = next(iter(account.segment_members))
    await _check_all(
        client, f"/api/segments/{segment_id}/profiles", "get_profiles_for_segment", lambda it, f: _profile_values(it, f, account)
    )


@pytest.mark.parametrize(
    "text",
    [
        "greater-than(updated,2025-01-01T00:00:00Z)",
        "greater-than(updated,2025-01-01T00:00:00.000+00:00)",
        "greater-than(updated,2025-01-01T00:00:00)",
        "and(greater-than(updated,2025-01-01T00:00:00Z),less-than(updated,2030-01-01T00:00:00Z))",
    ],
)
async def test_datetime_spellings_agree(client, text):
    baseline, _ = await collect(
        client, "/api/profiles", {"filter": "greater-than(updated,2025-01-01T00:00:00+00:00)", "page[size]": "100"}
    )
    got, _ = await collect(client, "/api/profiles", {"filter": text, "page[size]": "100"})
    assert [i["id"] for i in got] == [i["id"] for i in baseline] and baseline


async def test_several_top_level_conditions_are_anded(client, account):
    pid = account.profiles.profile_id(5)
    body = (
        await client.get(
            "/api/events", params={"filter": f"equals(profile_id,'{pid}'),greater-or-equal(datetime,2020-01-01T00:00:00Z)"}
        )
    ).json()
    assert body["data"] and all(e["relationships"]["profile"]["data"]["id"] == pid for e in body["data"])
