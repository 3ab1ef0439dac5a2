"""Every filter field/operator the spec allows for profiles, events, lists and group members,
checked against a brute-force evaluation over the emulator's own (unfiltered) data."""

from __future__ import annotations

from datetime import datetime

import pytest

import klaviyo_spec as spec

from .conftest import collect

CMP = {"greater-than": lambda a, b: a > b, "greater-or-equal": lambda a, b: a >= b,
       "less-than": lambda a, b: a < b, "less-or-equal": lambda a, b: a <= b}


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


def _condition_text(field: str, op: str, value, quoted_time: bool) -> str:
    if op == "has":
        return f"has({field})"
    if op == "any":
        return f"any({field},[{','.join(repr(v) for v in value)}])"
    if isinstance(value, bool):
        return f"{op}({field},{str(value).lower()})"
    return f"{op}({field},{value})" if quoted_time else f"{op}({field},{value!r})"


def _matches(values: list, op: str, value, is_time: bool) -> bool:
    present = [v for v in values if v is not None]
    if op == "has":
        return bool(present)
    if is_time:
        return any(CMP[op](_ts(v), _ts(value)) if op in CMP else _ts(v) == _ts(value) for v in present)
    if op == "any":
        return any(v in value for v in present)
    return any(v == value for v in present)


def _sample(items: list[dict], getter, field: str) -> list:
    values = sorted({v for it in items for v in getter(it, field) if v is not None}, key=str)
    return values or ["nothing-matches"]


async def _check_all(client, path: str, op_id: str, getter, base_params: dict | None = None) -> None:
    op = spec.operation(op_id)
    base_params = base_params or {}
    everything, _ = await collect(client, path, {**base_params, "page[size]": str(op.page_size_max or 10)})
    assert everything
    for field, operators in op.filters.items():
        samples = _sample(everything, getter, field)
        is_time = field in ("created", "updated", "datetime", "timestamp", "joined_group_at") or field.endswith(".timestamp")
        for operator in operators:
            pick = samples[len(samples) // 2]
            value = [samples[0], pick] if operator == "any" else pick
            text = _condition_text(field, operator, value, is_time)
            got, _ = await collect(client, path, {**base_params, "filter": text, "page[size]": str(op.page_size_max or 10)})
            expected = [it["id"] for it in everything if _matches(getter(it, field), operator, value, is_time)]
            assert sorted(i["id"] for i in got) == sorted(expected), f"{path} filter={text}"
            if operator not in ("has", "any", "equals") or field in ("id", "email"):
                assert expected, f"sample for {text} should match something"


async def test_profile_filters(client, account):
    await _check_all(client, "/api/profiles", "get_profiles",
                     lambda it, f: _profile_values(it, f, account),
                     {"additional-fields[profile]": "subscriptions"})


async def test_event_filters(client):
    await _check_all(client, "/api/events", "get_events", _event_values)


async def test_list_filters(client):
    await _check_all(client, "/api/lists", "get_lists",
                     lambda it, f: [it["id"]] if f == "id" else [it["attributes"].get(f)])


async def test_group_member_filters(client, account):
    list_id = max(account.list_members, key=lambda k: len(account.list_members[k]))
    await _check_all(client, f"/api/lists/{list_id}/profiles", "get_profiles_for_list",
                     lambda it, f: _profile_values(it, f, account))
    segment_id = next(iter(account.segment_members))
    await _check_all(client, f"/api/segments/{segment_id}/profiles", "get_profiles_for_segment",
                     lambda it, f: _profile_values(it, f, account))


@pytest.mark.parametrize("text", [
    "greater-than(updated,2025-01-01T00:00:00Z)", "greater-than(updated,2025-01-01T00:00:00.000+00:00)",
    "greater-than(updated,2025-01-01T00:00:00)", "greater-than(updated,'2025-01-01T00:00:00+00:00')",
    "and(greater-than(updated,2025-01-01T00:00:00Z),less-than(updated,2030-01-01T00:00:00Z))",
])
async def test_datetime_spellings_agree(client, text):
    baseline, _ = await collect(client, "/api/profiles", {"filter": "greater-than(updated,2025-01-01T00:00:00+00:00)", "page[size]": "100"})
    got, _ = await collect(client, "/api/profiles", {"filter": text, "page[size]": "100"})
    assert [i["id"] for i in got] == [i["id"] for i in baseline] and baseline


async def test_several_top_level_conditions_are_anded(client, account):
    pid = account.profiles.profile_id(5)
    body = (await client.get("/api/events", params={"filter": f"equals(profile_id,'{pid}'),greater-or-equal(datetime,2020-01-01T00:00:00Z)"})).json()
    assert body["data"] and all(e["relationships"]["profile"]["data"]["id"] == pid for e in body["data"])
