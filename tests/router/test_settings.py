"""Settings: precedence (flags > env > TOML > defaults) and loud, named errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from router.errors import ConfigError
from router.settings import check_key, key_digest, load_settings, options_table


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ROUTER_") and name != "ROUTER_SHARED_DATA":
            monkeypatch.delenv(name)


def test_defaults_are_safe_and_documented() -> None:
    s = load_settings()
    assert (s.exploration, s.log_url, s.cache_url, s.privacy_mode) == (
        0.02, "sqlite:///router_outcomes.db", None, False)
    assert not s.auth_enabled
    table = options_table()
    for name in type(s).model_fields:
        assert f"`ROUTER_{name.upper()}`" in table


def test_flags_beat_env_beat_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "router.toml"
    config.write_text('port = 9000\nexploration = 0.1\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("ROUTER_PORT", "9100")
    s = load_settings(config, host="10.0.0.1", log_url=None)
    assert (s.port, s.exploration, s.host) == (9100, 0.1, "10.0.0.1")
    monkeypatch.setenv("ROUTER_CONFIG", str(config))
    assert load_settings().exploration == 0.1


@pytest.mark.parametrize(("env", "value", "message"), [
    ("ROUTER_EXPLORATION", "0.9", "ROUTER_EXPLORATION: must be in [0, 0.5]"),
    ("ROUTER_DEFAULT_QUALITY_BAR", "1.5", "ROUTER_DEFAULT_QUALITY_BAR: must be in [0, 1]"),
    ("ROUTER_UPSTREAM_BASE_URL", "localhost:8100", "ROUTER_UPSTREAM_BASE_URL: must start "
                                                   "with http:// or https://"),
    ("ROUTER_CACHE_URL", "memcached://x", "ROUTER_CACHE_URL: must be a redis:// URL"),
    ("ROUTER_COOLDOWN_SYNC_URL", "http://x", "ROUTER_COOLDOWN_SYNC_URL: must be a redis:// URL"),
    ("ROUTER_PORT", "70000", "ROUTER_PORT: must be a TCP port"),
    ("ROUTER_MAX_BODY_BYTES", "0", "ROUTER_MAX_BODY_BYTES: must be a positive integer"),
    ("ROUTER_MODEL_DIR", "/no/such/dir", "ROUTER_MODEL_DIR: /no/such/dir is not a folder"),
    ("ROUTER_API_KEYS", "short", "ROUTER_API_KEYS: client keys must be at least 8"),
])
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: str, value: str,
                                      message: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in info.value.message


def test_unknown_toml_key_and_missing_file(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text("explorashun = 0.1\n")
    with pytest.raises(ConfigError, match="unknown option 'explorashun'"):
        load_settings(config)
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.toml")


def test_keys_are_kept_hashed_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = hashlib.sha256(b"second-key-456").hexdigest()
    monkeypatch.setenv("ROUTER_API_KEYS", f"first-key-123, sha256:{hashed}")
    s = load_settings()
    assert "first-key-123" not in repr(s) and "first-key-123" not in str(s.api_keys)
    assert s.api_key_digests == (key_digest("first-key-123"), bytes.fromhex(hashed))
    assert check_key("second-key-456", s.api_key_digests) == bytes.fromhex(hashed)
    assert check_key("wrong-key-000", s.api_key_digests) is None


@pytest.mark.parametrize("url", ["http://10.0.0.7:4000/v1", "http://gateway/v1",
                                 "http://router.example.com/v1"])
def test_plain_http_to_another_host_is_refused_unless_allowed(url: str) -> None:
    # Every prompt, answer and the gateway's key would cross the network in clear.
    with pytest.raises(ConfigError) as info:
        load_settings(upstream_base_url=url)
    assert "ROUTER_UPSTREAM_BASE_URL: " in info.value.message
    assert "ROUTER_UPSTREAM_ALLOW_HTTP=1" in info.value.message
    assert load_settings(upstream_base_url=url, upstream_allow_http=True).upstream_base_url == url


@pytest.mark.parametrize("url", ["https://gateway.example.com/v1", "http://127.0.0.1:8100/v1",
                                 "http://localhost:8100/v1", "http://[::1]:8100/v1"])
def test_https_and_loopback_upstreams_are_accepted(url: str) -> None:
    assert load_settings(upstream_base_url=url).upstream_base_url == url


def test_the_gateway_key_goes_with_a_base_url_and_is_never_shown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_UPSTREAM_API_KEY", "gw-secret-123456")
    with pytest.raises(ConfigError) as info:
        load_settings()  # a key with nowhere to go is a mistake, not a default
    assert "ROUTER_UPSTREAM_API_KEY: " in info.value.message
    assert "gw-secret-123456" not in str(info.value)
    s = load_settings(upstream_base_url="https://gateway.example.com/v1")
    assert s.upstream_api_key.get_secret_value() == "gw-secret-123456"
    assert "gw-secret-123456" not in repr(s)
