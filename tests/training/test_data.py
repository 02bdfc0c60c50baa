import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router.catalog import Catalog, ModelSpec, load_prices_csv
from router.conversation import parse_conversation
from router.errors import DataError
from training.data import (
    CANONICAL_COLUMNS,
    conversations,
    load_outcomes,
    load_priced_outcomes,
    table_fingerprint,
    write_outcomes,
)
from training.pricing import learn_price

# Prices in USD per 1M tokens: cheap 1/2, strong 10/30.
CATALOG = Catalog({
    "cheap": ModelSpec("cheap", 1.0, 2.0),
    "strong": ModelSpec("strong", 10.0, 30.0),
})


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def basic(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "basic.csv", (
        "prompt_id,prompt,model,quality,input_tokens,output_tokens,task\n"
        "p1,What is 2+2?,cheap,1,100,50,math\n"
        "p1,What is 2+2?,strong,1,100,80,math\n"
        "p2,\"Write a poem\nabout the sea\",cheap,0.25,200,,writing\n"
        "p2,\"Write a poem\nabout the sea\",strong,0.75,200,400,writing\n"
    ))


def test_prompt_becomes_one_user_message_and_cost_is_priced(basic: Path):
    table = load_outcomes(basic, catalog=CATALOG)
    assert list(table.columns) == [*CANONICAL_COLUMNS, "task"]
    assert json.loads(table.loc[2, "messages"]) == [
        {"role": "user", "content": "Write a poem\nabout the sea"}]
    # 100 in x $1 + 50 out x $2 per 1M tokens.
    assert table.loc[0, "cost_usd"] == pytest.approx((100 * 1 + 50 * 2) / 1e6)
    assert table.loc[1, "cost_usd"] == pytest.approx((100 * 10 + 80 * 30) / 1e6)
    assert table["weight"].tolist() == [1.0] * 4
    assert table["task"].tolist() == ["math", "math", "writing", "writing"]


def test_missing_output_tokens_priced_with_the_models_median_and_kept_nan(basic: Path):
    table = load_outcomes(basic, catalog=CATALOG)
    row = table.iloc[2]
    assert np.isnan(row["output_tokens"])
    # cheap's known output tokens in this file: [50] -> median 50.
    assert row["cost_usd"] == pytest.approx((200 * 1 + 50 * 2) / 1e6)


def test_model_without_any_output_tokens_pays_input_only(tmp_path: Path):
    path = write_csv(tmp_path / "t.csv", "prompt_id,prompt,model,quality,input_tokens\n"
                                         "p1,hi,strong,1,1000\n")
    table = load_outcomes(path, catalog=CATALOG)
    assert table.loc[0, "cost_usd"] == pytest.approx(1000 * 10 / 1e6)


def test_input_tokens_estimated_from_text_when_absent(tmp_path: Path):
    path = write_csv(tmp_path / "t.csv", "prompt_id,prompt,model,quality,cost_usd\n"
                                         f"p1,{'x' * 40},cheap,1,0.5\n")
    table = load_outcomes(path, catalog=CATALOG)
    assert table.loc[0, "input_tokens"] == parse_conversation("x" * 40).input_tokens == 14
    assert table.loc[0, "cost_usd"] == 0.5  # from the file, not recomputed


def test_prices_override_catalog(basic: Path):
    table = load_outcomes(basic, catalog=CATALOG, prices={"cheap": (0.0, 0.0, None)})
    assert table.loc[0, "cost_usd"] == 0.0
    assert table.loc[1, "cost_usd"] > 0


def test_propensity_becomes_clipped_inverse_weight(tmp_path: Path):
    path = write_csv(tmp_path / "t.csv", "prompt_id,prompt,model,quality,cost_usd,propensity\n"
                                         "p1,a,cheap,1,0.1,0.5\n"
                                         "p2,b,cheap,1,0.1,0.001\n"
                                         "p3,c,cheap,1,0.1,\n")
    table = load_outcomes(path, catalog=CATALOG)
    assert table["weight"].tolist() == pytest.approx([2.0, 100.0, 1.0])
    assert "propensity" in table.columns


@pytest.mark.parametrize("suffix", [".csv.gz", ".parquet", ".jsonl", ".jsonl.gz"])
def test_every_format_round_trips_to_the_same_table(basic: Path, tmp_path: Path, suffix: str):
    reference = load_outcomes(basic, catalog=CATALOG)
    raw = pd.read_csv(basic)
    other = write_outcomes(raw, tmp_path / f"copy{suffix}")
    table = load_outcomes(other, catalog=CATALOG)
    assert table_fingerprint(table) == table_fingerprint(reference)
    pd.testing.assert_frame_equal(table[list(CANONICAL_COLUMNS)],
                                  reference[list(CANONICAL_COLUMNS)])


def test_messages_column_as_json_text_and_as_parquet_list(tmp_path: Path):
    chat = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    frame = pd.DataFrame({"prompt_id": ["p1"], "messages": [chat], "model": ["cheap"],
                          "quality": [1.0], "cost_usd": [0.1]})
    write_outcomes(frame, tmp_path / "m.parquet")
    frame.assign(messages=[json.dumps(chat)]).to_csv(tmp_path / "m.csv", index=False)
    for name in ("m.parquet", "m.csv"):
        table = load_outcomes(tmp_path / name, catalog=CATALOG)
        assert json.loads(table.loc[0, "messages"]) == chat


def test_several_files_are_concatenated_and_conversations_in_first_seen_order(
        basic: Path, tmp_path: Path):
    more = write_csv(tmp_path / "more.csv", "prompt_id,prompt,model,quality,cost_usd\n"
                                            "p3,\"[1, 2, 3] sorted?\",cheap,1,0.1\n")
    table = load_outcomes([more, basic], catalog=CATALOG)
    assert len(table) == 5
    ids, convs = conversations(table)
    assert ids == ["p3", "p1", "p2"]
    # A plain prompt that looks like a list is still the user's text.
    assert convs[0].last_user == "[1, 2, 3] sorted?"
    assert convs[2].last_user == "Write a poem\nabout the sea"


def test_directory_reads_every_outcome_file(basic: Path):
    assert len(load_outcomes(basic.parent, catalog=CATALOG)) == 4


def test_duplicates_are_averaged_with_a_warning(tmp_path: Path, caplog):
    path = write_csv(tmp_path / "d.csv", "prompt_id,prompt,model,quality,cost_usd\n"
                                         "p1,a,cheap,1,0.1\n"
                                         "p1,a,cheap,0,0.3\n"
                                         "p1,a,strong,1,1.0\n")
    with caplog.at_level(logging.WARNING, logger="training.data"):
        table = load_outcomes(path, catalog=CATALOG)
    assert table[["model", "quality", "cost_usd"]].values.tolist() == [
        ["cheap", 0.5, pytest.approx(0.2)], ["strong", 1.0, 1.0]]
    assert "merged 2 duplicate (prompt_id, model) rows into 1" in caplog.text


def test_duplicates_error_names_both_rows(tmp_path: Path):
    path = write_csv(tmp_path / "d.csv", "prompt_id,prompt,model,quality,cost_usd\n"
                                         "p1,a,cheap,1,0.1\n"
                                         "p2,b,cheap,1,0.1\n"
                                         "p1,a,cheap,0,0.3\n")
    with pytest.raises(DataError) as info:
        load_outcomes(path, catalog=CATALOG, duplicates="error")
    assert info.value.message == (f"duplicate outcome for prompt_id 'p1' and model 'cheap': "
                                  f"{path}, row 1; {path}, row 3")


def test_fingerprint_ignores_row_order_and_extras_but_sees_values(basic: Path):
    table = load_outcomes(basic, catalog=CATALOG)
    shuffled = table.sample(frac=1.0, random_state=3).assign(extra=1).reset_index(drop=True)
    assert table_fingerprint(shuffled) == table_fingerprint(table)
    changed = table.copy()
    changed.loc[0, "quality"] = 0.0
    assert table_fingerprint(changed) != table_fingerprint(table)
    assert len(table_fingerprint(table)) == 64


# ------------------------------------------------------------------ bad input


def load_error(tmp_path: Path, text: str, name: str = "bad.csv", **kwargs) -> DataError:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_outcomes(path, catalog=CATALOG, **kwargs)
    return info.value


def test_missing_column_lists_what_is_there(tmp_path: Path):
    err = load_error(tmp_path, "id,prompt,model,score\nx,a,cheap,1\n")
    assert err.message == (f"{tmp_path / 'bad.csv'}: missing required column(s) prompt_id, "
                           f"quality; the file has id, prompt, model, score")
    assert "router import" in err.hint


@pytest.mark.parametrize("value, shown", [("1.5", "1.5, outside [0, 1]"),
                                          ("-0.1", "-0.1, outside [0, 1]"),
                                          ("", "missing")])
def test_quality_out_of_range_or_missing_names_row(tmp_path: Path, value: str, shown: str):
    err = load_error(tmp_path, "prompt_id,prompt,model,quality,cost_usd\n"
                               "p1,a,cheap,1,0.1\n"
                               f"p2,b,cheap,{value},0.1\n")
    assert err.message == f"{tmp_path / 'bad.csv'}, row 2: quality is {shown}"
    assert "[0, 1]" in err.hint


def test_non_numeric_quality_names_value(tmp_path: Path):
    err = load_error(tmp_path, "prompt_id,prompt,model,quality,cost_usd\np1,a,cheap,good,0.1\n")
    assert err.message == f"{tmp_path / 'bad.csv'}, row 1: quality must be a number, got 'good'"


def test_empty_file_and_header_only(tmp_path: Path):
    err = load_error(tmp_path, "")
    assert err.message == f"{tmp_path / 'bad.csv'}: file is empty"
    err = load_error(tmp_path, "prompt_id,prompt,model,quality\n")
    assert err.message == f"{tmp_path / 'bad.csv'}: file has a header but no rows"


def test_unparseable_messages_names_row(tmp_path: Path):
    err = load_error(tmp_path, "prompt_id,messages,model,quality,cost_usd\n"
                               "p1,\"[{\"\"role\"\": \"\"user\"\", \"\"content\"\": \"\"hi\"\"}]\","
                               "cheap,1,0.1\n"
                               "p2,\"[{\"\"role\"\": \"\"user\"\"\",cheap,1,0.1\n")
    assert err.message.startswith(f"{tmp_path / 'bad.csv'}, row 2: messages is not valid JSON")
    err = load_error(tmp_path, "prompt_id,messages,model,quality,cost_usd\n"
                               "p1,\"[{\"\"role\"\": \"\"robot\"\", \"\"content\"\": \"\"x\"\"}]\","
                               "cheap,1,0.1\n")
    assert err.message == (f"{tmp_path / 'bad.csv'}, row 1: messages: message 0 has role "
                           f"'robot'")


def test_model_without_price_or_cost_names_model_and_fix(tmp_path: Path):
    err = load_error(tmp_path, "prompt_id,prompt,model,quality,cost_usd\n"
                               "p1,a,cheap,1,0.1\n"
                               "p1,a,mystery-7b,1,\n")
    assert err.message == (f"{tmp_path / 'bad.csv'}, row 2: model 'mystery-7b' has no price: it "
                           f"is not in the catalog and none of its rows has a cost_usd")
    assert "add a cost_usd column" in err.hint
    assert "--prices FILE" in err.hint and "models/catalog.toml" in err.hint
    with pytest.raises(DataError) as info:
        load_priced_outcomes(tmp_path / "bad.csv", catalog=CATALOG)
    assert info.value.message == err.message


def test_unpriced_model_is_fine_when_cost_is_given(tmp_path: Path):
    path = write_csv(tmp_path / "t.csv", "prompt_id,prompt,model,quality,cost_usd\n"
                                         "p1,a,mystery-7b,1,0.25\n")
    assert load_outcomes(path, catalog=CATALOG).loc[0, "cost_usd"] == 0.25


# ------------------------------------------------------------- learned prices

# The unknown model's true prices, USD per 1M tokens.
TRUE_IN, TRUE_OUT = 0.6, 2.4


def logged_rows(n: int, seed: int = 0, *, noise: float = 0.0) -> pd.DataFrame:
    """Rows of a catalog-less model costed at TRUE_IN / TRUE_OUT (times 1 +- noise)."""
    rng = np.random.default_rng(seed)
    tok_in = rng.integers(20, 3000, n).astype(float)
    tok_out = rng.integers(5, 1500, n).astype(float)
    cost = (tok_in * TRUE_IN + tok_out * TRUE_OUT) / 1e6 * rng.uniform(1 - noise, 1 + noise, n)
    return pd.DataFrame({"prompt_id": [f"q{i}" for i in range(n)],
                         "prompt": [f"question {i}" for i in range(n)],
                         "model": "house-llm", "quality": rng.uniform(0, 1, n).round(2),
                         "input_tokens": tok_in, "output_tokens": tok_out, "cost_usd": cost})


def test_prices_of_a_catalog_less_model_are_learned_from_its_costs(tmp_path: Path):
    rows = logged_rows(200, noise=0.05)
    rows.loc[:9, "cost_usd"] = np.nan  # e.g. failed cost lookups in the log
    path = write_outcomes(rows, tmp_path / "log.csv")
    priced = load_priced_outcomes(path, catalog=CATALOG)
    learned = priced.learned["house-llm"]
    assert learned.input_usd_per_mtok == pytest.approx(TRUE_IN, rel=0.03)
    assert learned.output_usd_per_mtok == pytest.approx(TRUE_OUT, rel=0.03)
    assert (learned.rows, learned.method) == (190, "least squares")
    spec = priced.catalog["house-llm"]
    assert (spec.input_usd_per_mtok, spec.output_usd_per_mtok) == (
        learned.input_usd_per_mtok, learned.output_usd_per_mtok)
    assert set(priced.catalog.names) == {"cheap", "strong", "house-llm"}
    # Rows without a cost get the learned price; rows with one keep their own.
    table = priced.table
    assert table.loc[:9, "cost_usd"].to_numpy() == pytest.approx(
        spec.cost_usd(rows.loc[:9, "input_tokens"], rows.loc[:9, "output_tokens"]))
    assert table.loc[10:, "cost_usd"].to_numpy() == pytest.approx(rows.loc[10:, "cost_usd"])
    # load_outcomes prices the same way, learning only what it needs.
    assert load_outcomes(path, catalog=CATALOG)["cost_usd"].equals(table["cost_usd"])


def test_exact_costs_give_the_exact_prices(tmp_path: Path):
    path = write_outcomes(logged_rows(50), tmp_path / "log.csv")
    learned = load_priced_outcomes(path, catalog=CATALOG).learned["house-llm"]
    assert learned.input_usd_per_mtok == pytest.approx(TRUE_IN, rel=1e-6)
    assert learned.output_usd_per_mtok == pytest.approx(TRUE_OUT, rel=1e-6)


def test_without_output_tokens_one_input_price_is_learned(tmp_path: Path):
    path = write_csv(tmp_path / "log.csv", "prompt_id,prompt,model,quality,input_tokens,cost_usd\n"
                                           "p1,a,house-llm,1,100,0.0002\n"
                                           "p2,b,house-llm,0,300,0.0006\n"
                                           "p3,c,house-llm,1,200,\n")
    priced = load_priced_outcomes(path, catalog=CATALOG)
    learned = priced.learned["house-llm"]
    # sum(cost) / sum(input tokens): 0.0008 / 400 tokens = $2 per 1M, nothing for output.
    assert (learned.input_usd_per_mtok, learned.output_usd_per_mtok) == pytest.approx((2.0, 0.0))
    assert (learned.rows, learned.method) == (2, "input only")
    assert priced.table.loc[2, "cost_usd"] == pytest.approx(200 * 2.0 / 1e6)


def test_a_models_costs_in_one_file_price_its_rows_in_another(tmp_path: Path):
    rows = logged_rows(30)
    with_cost = write_outcomes(rows.iloc[:20], tmp_path / "a.csv")
    without = write_outcomes(rows.iloc[20:].drop(columns="cost_usd"), tmp_path / "b.csv")
    priced = load_priced_outcomes([with_cost, without], catalog=CATALOG)
    assert priced.learned["house-llm"].rows == 20
    assert priced.table.loc[20:, "cost_usd"].to_numpy() == pytest.approx(
        rows.loc[20:, "cost_usd"].to_numpy(), rel=1e-6)


def test_catalog_models_keep_catalog_prices_and_their_own_costs(basic: Path, tmp_path: Path):
    path = write_csv(tmp_path / "t.csv", "prompt_id,prompt,model,quality,input_tokens,"
                                         "output_tokens,cost_usd\n"
                                         "p1,a,cheap,1,100,50,0.5\n"
                                         "p2,b,cheap,1,100,50,\n")
    priced = load_priced_outcomes(path, catalog=CATALOG)
    assert priced.learned == {}
    assert priced.catalog["cheap"] == CATALOG["cheap"]
    assert priced.table["cost_usd"].tolist() == pytest.approx([0.5, (100 * 1 + 50 * 2) / 1e6])
    # A model given by --prices is priced, not learned.
    rows = write_outcomes(logged_rows(5), tmp_path / "log.csv")
    priced = load_priced_outcomes(rows, catalog=CATALOG, prices={"house-llm": (1.0, 1.0, None)})
    assert priced.learned == {} and priced.catalog["house-llm"].input_usd_per_mtok == 1.0


def test_learn_price_guards_degenerate_token_counts():
    # Output always twice the input: the split is unknowable, one input price is fitted.
    tok_in = np.array([100.0, 200.0, 300.0])
    learned = learn_price("m", (tok_in * 1.0 + 2 * tok_in * 3.0) / 1e6, tok_in, 2 * tok_in)
    assert learned is not None and learned.method == "input only"
    assert (learned.input_usd_per_mtok, learned.output_usd_per_mtok) == pytest.approx((7.0, 0.0))
    assert learn_price("m", [np.nan, np.nan], [1.0, 2.0], [1.0, 2.0]) is None
    with pytest.raises(DataError, match="'m': cannot learn its price"):
        learn_price("m", [0.1], [0.0], [np.nan])


def test_unknown_extension_and_missing_file(tmp_path: Path):
    err = load_error(tmp_path, "x", name="table.xlsx")
    assert err.message == f"{tmp_path / 'table.xlsx'}: unknown file type"
    assert ".parquet" in err.hint
    with pytest.raises(DataError, match="nope.csv: file not found"):
        load_outcomes(tmp_path / "nope.csv", catalog=CATALOG)


def test_bad_jsonl_line_is_named(tmp_path: Path):
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"prompt_id": "p1", "prompt": "a", "model": "cheap", "quality": 1}\n')
        handle.write('{"prompt_id": "p2", "prompt": \n')
    with pytest.raises(DataError) as info:
        load_outcomes(path, catalog=CATALOG)
    assert info.value.message.startswith(f"{path}, line 2: not valid JSON")


def test_same_prompt_id_with_different_text_is_refused(tmp_path: Path):
    err = load_error(tmp_path, "prompt_id,prompt,model,quality,cost_usd\n"
                               "p1,a,cheap,1,0.1\n"
                               "p1,b,strong,1,0.1\n")
    assert err.message == (f"prompt_id 'p1' has different prompt text in different rows: "
                           f"{tmp_path / 'bad.csv'}, row 1; {tmp_path / 'bad.csv'}, row 2")


def test_unquoted_comma_is_refused_not_shifted(tmp_path: Path):
    err = load_error(tmp_path, "prompt_id,prompt,model,quality,cost_usd\n"
                               "p3,[1, 2, 3] sorted?,cheap,1,0.1\n")
    assert err.message == f"{tmp_path / 'bad.csv'}: a row has more fields than the header"


def test_bad_propensity_is_refused(tmp_path: Path):
    err = load_error(tmp_path, "prompt_id,prompt,model,quality,cost_usd,propensity\n"
                               "p1,a,cheap,1,0.1,1.5\n")
    assert err.message == f"{tmp_path / 'bad.csv'}, row 1: propensity is 1.5, outside [0, 1]"


# ------------------------------------------------------------------ real data


@pytest.mark.shared_data
def test_bundled_data_loads_priced_from_prices_csv(shared_data: Path):
    prices = load_prices_csv(shared_data / "prices.csv")
    files = sorted(shared_data.glob("*.csv.gz"))
    table = load_outcomes(files, prices=prices)
    assert table["prompt_id"].nunique() == 300 + 1307 + 13932 + 80
    assert (table["cost_usd"] > 0).all()
    assert table["quality"].between(0, 1).all()
    gsm = table[table["prompt_id"] == "gsm8k-f028c427b051"].set_index("model")
    # 30.2 input and 75.2 output tokens at GPT-4-1106's $10 / $30 per 1M.
    assert gsm.loc["gpt-4-1106-preview", "cost_usd"] == pytest.approx(
        (30.2 * 10 + 75.2 * 30) / 1e6)
    ids, convs = conversations(table)
    assert len(ids) == len(convs) == table["prompt_id"].nunique()


@pytest.mark.parametrize("suffix", [".csv.gz", ".jsonl.gz"])
def test_writing_the_same_table_twice_gives_the_same_bytes(basic: Path, tmp_path: Path,
                                                           suffix: str):
    raw = pd.read_csv(basic)
    # Same file name in two folders (gzip records the name, not the time).
    first = write_outcomes(raw, tmp_path / "1" / f"t{suffix}").read_bytes()
    second = write_outcomes(raw, tmp_path / "2" / f"t{suffix}").read_bytes()
    assert first == second


def test_collect_output_skips_failed_and_ungraded_pairs_and_says_so(tmp_path: Path, caplog):
    rows = [
        {"prompt_id": "p1", "prompt": "2+2?", "model": "cheap", "quality": 1.0, "status": "ok",
         "grade_error": None, "cost_usd": 0.001},
        {"prompt_id": "p1", "prompt": "2+2?", "model": "strong", "quality": None, "status": "error",
         "grade_error": None, "cost_usd": None},
        {"prompt_id": "p2", "prompt": "3+3?", "model": "cheap", "quality": None, "status": "ok",
         "grade_error": "judge gave no score", "cost_usd": 0.001},
        {"prompt_id": "p2", "prompt": "3+3?", "model": "strong", "quality": 0.0, "status": "ok",
         "grade_error": None, "cost_usd": 0.002},
    ]
    path = tmp_path / "collected.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="training.data"):
        table = load_outcomes(path, catalog=CATALOG)
    assert sorted(zip(table["prompt_id"], table["model"], strict=True)) == [("p1", "cheap"),
                                                                            ("p2", "strong")]
    assert "skipped 1 row(s) whose call failed (status=error)" in caplog.text
    assert "skipped 1 row(s) the grader could not score" in caplog.text


def test_errors_after_skipped_rows_name_the_files_own_row(tmp_path: Path):
    rows = [
        {"prompt_id": "p1", "prompt": "2+2?", "model": "cheap", "quality": None,
         "status": "error", "cost_usd": None},
        {"prompt_id": "p1", "prompt": "2+2?", "model": "strong", "quality": None,
         "status": "error", "cost_usd": None},
        {"prompt_id": "p2", "prompt": "3+3?", "model": "cheap", "quality": 1.0,
         "status": "ok", "cost_usd": 0.001},
        {"prompt_id": "p2", "prompt": "3+3?", "model": "strong", "quality": 1.0,
         "status": "ok", "cost_usd": -1.0},
    ]
    path = tmp_path / "collected.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The bad cost is on the file's 4th row, not the 2nd of the rows that remain.
    with pytest.raises(DataError, match=r"collected\.jsonl, row 4: cost_usd is negative"):
        load_outcomes(path, catalog=CATALOG)


def test_collect_output_with_no_outcome_at_all_is_refused(tmp_path: Path):
    path = tmp_path / "collected.jsonl"
    path.write_text(json.dumps({"prompt_id": "p1", "prompt": "x", "model": "cheap",
                                "quality": None, "status": "error"}) + "\n")
    with pytest.raises(DataError, match="no row has an outcome \\(1 failed or ungraded\\)"):
        load_outcomes(path, catalog=CATALOG)


def test_latency_and_ttft_are_read_as_milliseconds_empty_meaning_unknown(tmp_path: Path):
    path = write_csv(tmp_path / "t.csv", "prompt_id,prompt,model,quality,cost_usd,latency_ms,"
                                         "ttft_ms\n"
                                         "p1,a,cheap,1,0.1,1200,300\n"
                                         "p1,a,strong,1,1.0,,\n")
    table = load_outcomes(path, catalog=CATALOG)
    assert table["latency_ms"].dtype == np.float64
    assert table["latency_ms"].tolist()[0] == 1200.0 and np.isnan(table["latency_ms"][1])
    assert table["ttft_ms"].tolist()[0] == 300.0
    # A table without them has no such columns (nothing to predict latency from).
    assert "latency_ms" not in load_outcomes(write_csv(
        tmp_path / "u.csv", "prompt_id,prompt,model,quality,cost_usd\np1,a,cheap,1,0.1\n"),
        catalog=CATALOG)


@pytest.mark.parametrize("column, value, shown", [
    ("latency_ms", "-5", "latency_ms is -5.0, not a finite number >= 0"),
    ("latency_ms", "inf", "latency_ms is inf, not a finite number >= 0"),
    ("ttft_ms", "slow", "ttft_ms must be a number, got 'slow'"),
])
def test_bad_latency_names_file_row_and_value(tmp_path: Path, column: str, value: str,
                                              shown: str):
    err = load_error(tmp_path, f"prompt_id,prompt,model,quality,cost_usd,{column}\n"
                               "p1,a,cheap,1,0.1,900\n"
                               f"p2,b,cheap,1,0.1,{value}\n")
    assert err.message == f"{tmp_path / 'bad.csv'}, row 2: {shown}"
    assert "milliseconds" in err.hint


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_latency_round_trips_through_every_format(tmp_path: Path, suffix: str):
    path = write_csv(tmp_path / "t.csv", "prompt_id,prompt,model,quality,cost_usd,latency_ms\n"
                                         "p1,a,cheap,1,0.1,1200.5\n"
                                         "p1,a,strong,1,1.0,\n")
    table = load_outcomes(path, catalog=CATALOG)
    again = load_outcomes(write_outcomes(table, tmp_path / f"t{suffix}"), catalog=CATALOG)
    pd.testing.assert_series_equal(again["latency_ms"], table["latency_ms"])


def test_duplicates_average_latency_too(tmp_path: Path):
    path = write_csv(tmp_path / "d.csv", "prompt_id,prompt,model,quality,cost_usd,latency_ms\n"
                                         "p1,a,cheap,1,0.1,1000\n"
                                         "p1,a,cheap,0,0.3,3000\n")
    assert load_outcomes(path, catalog=CATALOG)["latency_ms"].tolist() == [2000.0]
