import pytest

from router.catalog import Catalog, estimate_tokens, load_catalog, load_prices_csv
from router.errors import ConfigError


def write(tmp_path, text, name="catalog.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_catalog_has_the_brief_prices():
    catalog = load_catalog()
    assert catalog["deepseek-v4-flash"].input_usd_per_mtok == 0.27
    assert catalog["gpt-4o"].output_usd_per_mtok == 10.0
    assert catalog["qwen3-32b"].context_tokens == 32_000
    assert catalog["claude-3-opus"].context_tokens == 200_000
    assert len(catalog) == 8
    for spec in catalog.models.values():
        assert spec.base_url and spec.api_key_env and spec.fallbacks


def test_cost_is_tokens_times_price_per_million():
    spec = load_catalog()["gpt-4o"]
    assert spec.cost_usd(1000, 500) == pytest.approx((1000 * 2.5 + 500 * 10.0) / 1e6)


def test_by_price_orders_cheapest_first():
    order = load_catalog().by_price()
    assert order[0] == "glm-4-plus"
    assert order[-1] == "claude-3-opus"


def test_missing_price_is_named(tmp_path):
    path = write(tmp_path, '[models.a]\noutput_usd_per_mtok = 1.0\n')
    with pytest.raises(ConfigError, match=r"model 'a': missing input_usd_per_mtok"):
        load_catalog(path)


def test_negative_price_is_refused(tmp_path):
    path = write(tmp_path, '[models.a]\ninput_usd_per_mtok = -1\noutput_usd_per_mtok = 1\n')
    with pytest.raises(ConfigError, match="input_usd_per_mtok must be a non-negative number"):
        load_catalog(path)


def test_unknown_fallback_is_refused(tmp_path):
    path = write(tmp_path, '[models.a]\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 1\n'
                           'fallbacks = ["b"]\n')
    with pytest.raises(ConfigError, match="fallbacks not in the catalog: b"):
        load_catalog(path)


def test_typo_in_key_is_refused(tmp_path):
    path = write(tmp_path, '[models.a]\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 1\n'
                           'context_token = 5\n')
    with pytest.raises(ConfigError, match="unknown key\\(s\\) context_token"):
        load_catalog(path)


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, '[models.a\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_catalog(path)


def test_missing_file_gives_a_hint(tmp_path):
    with pytest.raises(ConfigError, match="catalog file not found") as info:
        load_catalog(tmp_path / "nope.toml")
    assert "--catalog" in info.value.hint


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'gpt-9'") as info:
        load_catalog()["gpt-9"]
    assert "gpt-4o" in info.value.hint


def test_prices_file_adds_and_overrides(tmp_path):
    path = write(tmp_path, "model,input_usd_per_mtok,output_usd_per_mtok,context_tokens\n"
                           "gpt-4o,1.0,2.0,\nnew-model,0.1,0.2,4096\n", name="prices.csv")
    catalog = load_catalog().with_prices(load_prices_csv(path))
    assert catalog["gpt-4o"].input_usd_per_mtok == 1.0
    assert catalog["gpt-4o"].context_tokens == 128_000
    assert catalog["new-model"].context_tokens == 4096
    assert catalog["new-model"].base_url is None


def test_prices_file_with_wrong_columns(tmp_path):
    path = write(tmp_path, "name,price\na,1\n", name="prices.csv")
    with pytest.raises(ConfigError, match="missing column\\(s\\) model"):
        load_prices_csv(path)


def test_prices_file_with_non_numeric_price(tmp_path):
    path = write(tmp_path, "model,input_usd_per_mtok,output_usd_per_mtok\na,cheap,1\n",
                 name="prices.csv")
    with pytest.raises(ConfigError, match="line 2: prices must be numbers"):
        load_prices_csv(path)


def test_shared_prices_load(shared_data):
    prices = load_prices_csv(shared_data / "prices.csv")
    assert prices["gpt-4-1106-preview"] == (10.0, 30.0, 128000)


def test_snapshot_round_trip():
    catalog = load_catalog()
    assert Catalog.from_dict(catalog.to_dict()).models == catalog.models


def test_subset_drops_outside_fallbacks():
    sub = load_catalog().subset(["gpt-4o", "claude-3-sonnet"])
    assert sub["gpt-4o"].fallbacks == ("claude-3-sonnet",)


def test_token_estimate_is_four_chars_per_token():
    assert estimate_tokens("a" * 400) == 100
    assert estimate_tokens("") == 1


def test_cjk_characters_count_about_a_token_each():
    # Four characters per token would make a Chinese request look 4x cheaper than it is.
    assert estimate_tokens("请写一个函数来排序列表") == 11
    assert estimate_tokens("こんにちは世界") == 7
    assert estimate_tokens("排序 list please") == 2 + 3  # 2 wide + ceil(12 / 4)
    assert estimate_tokens("café au lait") == 3  # accents are not wide
