"""Import configs in the seed's shape: pasted examples run, mistakes name the key or line."""

import pytest

from klaviyo_bridge.config import load_import_config, load_yaml, parse_import_config
from klaviyo_bridge.errors import ConfigError

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
    cfg = load_import_config(path)
    assert cfg.source.data_source == "lists" and cfg.source.incremental
    assert cfg.source.revision == "2022-12-17"
    assert cfg.source.start_time.isoformat() == "2023-06-01T17:06:39.698883+00:00"
    assert cfg.target.mode == "append"
    assert "xxx" not in repr(cfg)


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
    "extra, fragment",
    [
        ({"data_source": "profile"}, "did you mean 'profiles'"),
        ({"incremental_field": "modified"}, "incremental_field 'modified' is not available"),
        ({"start_time": "yesterday"}, "ISO 8601"),
        ({"start_time": "2024-02-01", "end_time": "2024-01-01"}, "end_time must be after start_time"),
    ],
)
def test_source_errors_name_the_key(extra, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_import_config({"in": {"data_source": "profiles", "api_token": "x", **extra}})


@pytest.mark.parametrize(
    "source, fragment",
    [
        ({"data_source": "profiles_in_list"}, "needs list_id"),
        ({"data_source": "event_metrics"}, "needs event_ids"),
        ({"data_source": "metric_events"}, "needs metric"),
    ],
)
def test_sources_that_need_an_id(source, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_import_config({"in": {"api_token": "x", **source}})


@pytest.mark.parametrize("tz, ok", [("Asia/Tokyo", True), ("UTC", True), ("PST", False), ("CST", False), ("Mars/Base", False)])
def test_time_zones_are_iana_only(tz, ok):
    data = {"in": {"data_source": "lists", "api_token": "x"}, "out": {"timezone": tz}}
    if ok:
        assert parse_import_config(data).target.timezone == tz
    else:
        with pytest.raises(ConfigError, match="time zone"):
            parse_import_config(data)
