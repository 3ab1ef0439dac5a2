"""Client settings use the seed's keys, defaults and ranges."""

import pytest

from klaviyo_bridge.api.settings import ClientSettings
from klaviyo_bridge.errors import ConfigError

KEY = "pk_" + "0123456789abcdef" * 2 + "00"  # Klaviyo's shape, built so no scanner mistakes it


def test_defaults_follow_the_seed():
    s = ClientSettings(api_key=KEY)
    assert (s.retry_limit, s.initial_retry_wait, s.max_retry_wait) == (5, 1, 300)
    assert (s.connection_timeout, s.read_timeout, s.write_timeout) == (300, 300, 300)
    assert s.revision == "2026-07-15"
    assert s.base_url == "https://a.klaviyo.com"


def test_seed_aliases_and_env_base_url(monkeypatch):
    monkeypatch.setenv("KLAVIYO_BASE_URL", "http://127.0.0.1:9/")
    s = ClientSettings.from_mapping({"api_token": "k", "revision_time": "2023-02-22"})
    assert s.revision == "2023-02-22"
    assert s.base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("retry_limit", 0, "must be between 1 and 7"),
        ("retry_limit", 8, "must be between 1 and 7"),
        ("initial_retry_wait", 11, "must be between 1 and 10"),
        ("max_retry_wait", 29, "must be between 30 and 1800"),
        ("connection_timeout", 1801, "must be between 30 and 1800"),
        ("read_timeout", 10, "must be between 30 and 1800"),
        ("write_timeout", 2000, "must be between 30 and 1800"),
        ("revision", "2023/02/22", "YYYY-MM-DD"),
        ("base_url", "a.klaviyo.com", "http"),
    ],
)
def test_out_of_range_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        ClientSettings.from_mapping({"api_key": KEY, key: value})
    assert key in str(info.value) and fragment in str(info.value)


def test_typo_gets_did_you_mean_and_all_errors_at_once():
    with pytest.raises(ConfigError) as info:
        ClientSettings.from_mapping({"api_key": KEY, "retry_limt": 3, "read_timeout": 1})
    text = str(info.value)
    assert "did you mean 'retry_limit'" in text and "read_timeout" in text


def test_key_is_hidden_in_repr_and_errors():
    secret = "pk_settings_secret_value"
    assert secret not in repr(ClientSettings(api_key=secret, base_url="http://127.0.0.1:9"))
    with pytest.raises(ConfigError) as info:
        ClientSettings.from_mapping({"api_key": secret, "retry_limit": 99})
    assert secret not in str(info.value)
