"""Import configs in the seed's shape: pasted examples run, mistakes name the key or line."""

import pytest

from klaviyo_bridge.config import load_import_config, load_yaml, parse_import_config
from klaviyo_bridge.errors import ConfigError

#: Shaped like a real Klaviyo private key (pk_ + 34 hex), built so no scanner mistakes it for one.
KEY = "pk_" + "0123456789abcdef" * 2 + "00"

SEED_EXAMPLE = """\
in:
  type: klaviyo
  data_source: lists
  api_token: xxx
  revision_time: "2022-12-17"
  incremental: true
  start_time: "2023-06-01T17:06:39.698883"
  incremental_field: updated
out:
  mode: append
"""


def test_the_seed_example_parses(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(SEED_EXAMPLE)
    with pytest.raises(ConfigError, match=r"in.api_token: pk_…|in.api_key: …") as info:
        load_import_config(path)  # the seed's placeholder is not a Klaviyo key: said without echoing it
    assert "xxx" not in str(info.value) and "not a Klaviyo private API key" in str(info.value)
    path.write_text(SEED_EXAMPLE.replace("xxx", KEY))
    cfg = load_import_config(path)
    assert cfg.source.data_source == "lists" and cfg.source.incremental
    assert cfg.source.revision == "2022-12-17"
    assert cfg.source.start_time.isoformat() == "2023-06-01T17:06:39.698883+00:00"
    assert cfg.target.mode == "append"
    assert KEY not in repr(cfg) and KEY not in str(cfg.model_dump())


def test_key_value_without_space_names_the_line():
    with pytest.raises(ConfigError, match=r"line 3: 'data_source:lists' needs a space after the colon"):
        load_yaml("in:\n  type: klaviyo\n  data_source:lists\n  api_token: x\n")


def test_every_error_at_once_with_did_you_mean():
    data = load_yaml("in:\n  data_source: profiles\n  api_token: x\n  retry_limt: 3\n  read_timeout: 5\nout:\n  mode: upsert\n")
    with pytest.raises(ConfigError) as info:
        parse_import_config(data)
    text = str(info.value)
    assert "in.retry_limt: unknown key (did you mean 'retry_limit'?)" in text
    assert "in.read_timeout" in text and "out.mode" in text


@pytest.mark.parametrize(
    "extra, key, fragment",
    [
        ({"data_source": "profile"}, "data_source", "did you mean 'profiles'"),
        ({"incremental_field": "modified"}, "in.incremental_field", "in.incremental_field: 'modified' is not available"),
        ({"start_time": "yesterday"}, "in.start_time", "in.start_time: .*ISO 8601"),
        ({"start_time": "2024-02-01", "end_time": "2024-01-01"}, "in.end_time", "in.end_time: must be after start_time"),
        ({"retry_limit": 9}, "in.retry_limit", r"in.retry_limit: must be between 1 and 7"),
        ({"initial_retry_wait": 0}, "in.initial_retry_wait", r"in.initial_retry_wait: must be between 1 and 10"),
        ({"read_timeout": 10}, "in.read_timeout", r"in.read_timeout: must be between 30 and 1800"),
    ],
)
def test_source_errors_name_the_key(extra, key, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_import_config({"in": {"data_source": "profiles", "api_token": KEY, **extra}})
    assert info.value.key == key


@pytest.mark.parametrize(
    "source, fragment",
    [
        ({"data_source": "profiles_in_list"}, "needs list_id"),
        ({"data_source": "event_metrics"}, "needs event_ids"),
        ({"data_source": "metric_events"}, "needs metric"),
    ],
)
def test_sources_that_need_an_id(source, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_import_config({"in": {"api_token": KEY, **source}})
    assert info.value.key == "in." + fragment.split()[-1]


@pytest.mark.parametrize(
    "tz, ok",
    [
        ("Asia/Tokyo", True),
        ("UTC", True),
        ("GMT", True),
        ("Etc/GMT+5", True),
        ("EST", False),
        ("PST", False),
        ("CST", False),
        ("Mars/Base", False),
    ],
)
def test_time_zones_are_iana_only(tz, ok):
    data = {"in": {"data_source": "lists", "api_token": KEY}, "out": {"timezone": tz}}
    if ok:
        assert parse_import_config(data).target.timezone == tz
    else:
        with pytest.raises(ConfigError, match="time zone"):
            parse_import_config(data)


@pytest.mark.parametrize(
    "written, tz, utc",
    [
        ("2023-06-01T17:06:39", "Asia/Tokyo", "2023-06-01T08:06:39+00:00"),
        ("2023-06-01", "America/Los_Angeles", "2023-06-01T07:00:00+00:00"),
        ("2023-06-01T17:06:39Z", "Asia/Tokyo", "2023-06-01T17:06:39+00:00"),
        ("2023-06-01T17:06:39+02:00", "Asia/Tokyo", "2023-06-01T15:06:39+00:00"),
        ("2023-06-01T17:06:39", "UTC", "2023-06-01T17:06:39+00:00"),
    ],
)
def test_times_without_offset_are_read_in_the_storage_time_zone(written, tz, utc):
    from datetime import timezone

    data = {"in": {"data_source": "lists", "api_token": KEY, "start_time": written}, "out": {"timezone": tz}}
    assert parse_import_config(data).source.start_time.astimezone(timezone.utc).isoformat() == utc
