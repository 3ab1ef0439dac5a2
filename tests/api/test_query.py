"""Query parameters are encoded the way Klaviyo parses them, and checked against the spec."""

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from klaviyo_bridge.api import query as q
from klaviyo_bridge.errors import ConfigError
from klaviyo_spec import operation


def test_datetimes_are_unquoted_iso_with_offset():
    naive = datetime(2023, 6, 1, 17, 6, 39, 698883)
    assert q.greater_than("updated", naive).render() == "greater-than(updated,2023-06-01T17:06:39.698883+00:00)"
    tokyo = datetime(2023, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=9)))
    assert q.less_than("datetime", tokyo).render() == "less-than(datetime,2023-06-01T09:00:00+09:00)"


def test_strings_lists_and_booleans():
    assert q.equals("email", "a@b.com").render() == "equals(email,'a@b.com')"
    assert q.any_of("id", ["A", "o'B"]).render() == r"any(id,['A','o\'B'])"
    assert q.equals("archived", True).render() == "equals(archived,true)"
    assert q.Condition("has", "profile").render() == "has(profile)"


def test_plus_signs_survive_url_encoding():
    params = q.Query(filters=(q.greater_than("updated", datetime(2024, 1, 1, tzinfo=timezone.utc)),)).params()
    url = httpx.URL("https://x/api/profiles", params=params)
    assert "%2B00%3A00" in str(url)
    assert url.params["filter"] == "greater-than(updated,2024-01-01T00:00:00+00:00)"


def test_params_cover_sort_fields_include_and_page_size():
    query = q.Query(
        sort="-updated",
        page_size=100,
        fields={"profile": ["email", "id"]},
        additional_fields={"profile": ["subscriptions"]},
        include=["lists"],
    )
    assert query.params() == [
        ("sort", "-updated"),
        ("page[size]", "100"),
        ("fields[profile]", "email,id"),
        ("additional-fields[profile]", "subscriptions"),
        ("include", "lists"),
    ]


@pytest.mark.parametrize(
    "query, message",
    [
        (q.Query(filters=(q.equals("nickname", "x"),)), "cannot filter on 'nickname'"),
        (q.Query(filters=(q.contains("email", "x"),)), "does not support 'contains'"),
        (q.Query(sort="first_name"), "cannot sort by 'first_name'"),
        (q.Query(page_size=101), "page size must be 1..100"),
        (q.Query(fields={"profile": ["shoe_size"]}), "unknown fields[profile]"),
        (q.Query(include=["metric"]), "cannot include"),
    ],
)
def test_invalid_queries_fail_before_sending(query, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        query.validate(operation("get_profiles"))


def test_campaigns_need_a_filter():
    with pytest.raises(ConfigError, match="filter is required"):
        q.Query().validate(operation("get_campaigns"))
    q.Query(filters=(q.equals("messages.channel", "email"),)).validate(operation("get_campaigns"))
