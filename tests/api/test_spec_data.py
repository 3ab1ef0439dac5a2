"""The committed spec_data.json is what the official spec gives today."""

import json

import pytest

import klaviyo_spec as spec
from klaviyo_spec.derive import OUTPUT, find_spec, parse_filter_description, parse_ratelimit, render


def test_committed_file_is_current_when_the_spec_is_present():
    path = find_spec()
    if path is None:
        pytest.skip("official stable.json not present (clean clone): nothing to compare with")
    assert OUTPUT.read_text() == render(json.loads(path.read_text())), (
        "spec_data.json is stale: run python scripts/derive_spec.py"
    )


def test_limits_table_for_the_emulated_endpoints():
    # Spot checks against the published x-klaviyo-ratelimit values.
    assert spec.operation("get_events").ratelimit == spec.RateLimit(350, 3500)
    assert spec.operation("get_profiles").ratelimit == spec.RateLimit(75, 750)
    assert spec.operation("get_accounts").ratelimit == spec.RateLimit(1, 15)
    assert spec.operation("get_flows").ratelimit == spec.RateLimit(3, 60)
    assert spec.operation("create_list").ratelimit == spec.RateLimit(10, 150, 150)
    assert spec.operation("get_events").page_size_max == 1000
    assert spec.operation("get_lists").page_size_max == 10
    for op_id in spec.emulated_operations():
        op = spec.operation(op_id)
        assert op.ratelimit.burst_per_second > 0 and op.ratelimit.steady_per_minute > 0
        assert spec.response_json_schema(op_id)["$defs"][op.response_schema]


def test_rate_and_filter_parsers():
    assert parse_ratelimit({"burst": "10/s", "steady": "150/m", "daily": "150/d"}) == {
        "burst_per_second": 10,
        "steady_per_minute": 150,
        "daily": 150,
    }
    with pytest.raises(ValueError):
        parse_ratelimit({"burst": "10/m"})
    desc = "see docs<br>Allowed field(s)/operator(s):<br>`name`: `any`, `equals`<br>`created`: `greater-than`"
    assert parse_filter_description(desc) == {"name": ["any", "equals"], "created": ["greater-than"]}
