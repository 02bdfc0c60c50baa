import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from router.catalog import Catalog, ModelSpec
from router.cli import main
from router.errors import DataError
from training.data import load_outcomes
from training.importers import (
    import_alpacaeval,
    import_benchmark,
    import_mtbench,
    import_routellm,
    import_routerbench,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "importers"


def by_key(table: pd.DataFrame, column: str) -> dict[tuple[str, str], object]:
    return {(p, m): v for p, m, v in zip(table["prompt_id"], table["model"], table[column],
                                         strict=True)}


# ------------------------------------------------------------------ RouteLLM


def test_routellm_folder_one_row_per_prompt_and_model_with_ids_of_shared_data():
    table = import_routellm(FIXTURES / "routellm_mmlu")
    assert len(table) == 8  # 4 prompts x 2 model columns
    assert set(table["model"]) == {"mixtral-8x7b-instruct-v0.1", "gpt-4-1106-preview"}
    assert set(table["task"]) == {"mmlu/anatomy", "mmlu/virology"}
    quality = table[table["model"] == "mixtral-8x7b-instruct-v0.1"]["quality"].tolist()
    assert quality == [1.0, 0.0, 0.0, 1.0]
    assert table["prompt_id"].str.fullmatch(r"mmlu-[0-9a-f]{12}").all()
    assert table["prompt"].iloc[0].endswith("D. Urethra\nAnswer:")


def test_routellm_gsm8k_responses_give_output_tokens_and_renames():
    table = import_routellm(FIXTURES / "gsm8k_responses.csv",
                            rename={"mixtral-8x7b-instruct-v0.1": "mistralai/Mixtral-8x7B"})
    quality = by_key(table, "quality")
    # Same id as ../shared/data/routellm_gsm8k.csv.gz for the same prompt.
    assert quality[("gsm8k-f028c427b051", "mistralai/Mixtral-8x7B")] == 1.0
    assert quality[("gsm8k-7a65c7f5038e", "mistralai/Mixtral-8x7B")] == 0.0
    assert quality[("gsm8k-7a65c7f5038e", "gpt-4-1106-preview")] == 1.0
    tokens = by_key(table, "output_tokens")
    # "3 x 60 = 180 meters per session.\n180 x 3 = 540.\n#### 540" is 53 chars -> 14 tokens.
    assert tokens[("gsm8k-f028c427b051", "mistralai/Mixtral-8x7B")] == 14.0
    assert "mixtral-8x7b-instruct-v0.1_response" not in set(table["model"])


def test_routellm_without_prompt_column_names_columns(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("question,gpt-4\nhi,True\n")
    with pytest.raises(DataError) as info:
        import_routellm(path)
    assert info.value.message == f"{path}: missing column(s) prompt; the file has question, gpt-4"


def test_routellm_without_model_columns_is_refused(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("prompt,notes\nhi,looks fine\n")
    with pytest.raises(DataError, match="no model columns"):
        import_routellm(path)


# ------------------------------------------------------------------ RouterBench


def test_routerbench_costs_tasks_and_stringified_list_prompts():
    table = import_routerbench(FIXTURES / "routerbench_0shot.csv")
    assert len(table) == 5  # claude-v2 has no outcome on the mt-bench row
    cost = by_key(table, "cost_usd")
    assert cost[("mmlu-anatomy.val.5", "gpt-3.5-turbo-1106")] == pytest.approx(0.000062)
    assert cost[("grade-school-math.dev.12", "claude-v2")] == pytest.approx(0.0012)
    quality = by_key(table, "quality")
    assert quality[("mt-bench.81", "gpt-3.5-turbo-1106")] == 0.8
    assert quality[("grade-school-math.dev.12", "gpt-3.5-turbo-1106")] == 0.0
    row = table.set_index(["prompt_id", "model"]).loc[("mmlu-anatomy.val.5", "claude-v2")]
    assert row["prompt"].startswith("Which cells in the blood do not have a nucleus?\nA.")
    assert row["task"] == "mmlu-anatomy"
    chat = table.set_index("prompt_id").loc["mt-bench.81", "messages"]
    assert [m["content"] for m in json.loads(chat)] == [
        "Compose a travel blog post about Hawaii.",
        "Rewrite your previous response. Start every sentence with the letter A."]


def test_routerbench_pickle_is_read(tmp_path: Path):
    wide = pd.read_csv(FIXTURES / "routerbench_0shot.csv")
    wide.to_pickle(tmp_path / "rb.pkl")
    table = import_routerbench(tmp_path / "rb.pkl")
    assert len(table) == 5


def test_routerbench_imported_table_loads_without_prices(tmp_path: Path):
    from training.data import write_outcomes

    out = write_outcomes(import_routerbench(FIXTURES / "routerbench_0shot.csv"),
                         tmp_path / "rb.parquet")
    loaded = load_outcomes(out, catalog=Catalog({}))  # costs come from the file
    assert loaded["cost_usd"].sum() == pytest.approx(0.000062 + 0.00015 + 0.0009 + 0.00048
                                                     + 0.0012)
    assert json.loads(loaded.set_index("prompt_id").loc["mt-bench.81", "messages"])[1][
        "content"].startswith("Rewrite")


def test_routerbench_missing_columns(tmp_path: Path):
    path = tmp_path / "rb.csv"
    path.write_text("sample_id,prompt,a|total_cost\nx,hi,0.1\n")
    with pytest.raises(DataError) as info:
        import_routerbench(path)
    assert info.value.message == (f"{path}: missing column(s) eval_name; the file has "
                                  f"sample_id, prompt, a|total_cost")
    path.write_text("sample_id,prompt,eval_name,a|total_cost\nx,hi,e,0.1\n")
    with pytest.raises(DataError, match="missing column"):
        import_routerbench(path)  # quality column `a` is missing


# ------------------------------------------------------------------ AlpacaEval


def test_alpacaeval_win_scores_averaged_per_instruction_and_generator(caplog):
    with caplog.at_level(logging.WARNING, logger="training.importers"):
        table = import_alpacaeval(FIXTURES / "alpacaeval_annotations.json")
    quality = {(t[:10], m): q for t, m, q in zip(table["prompt"], table["model"],
                                                  table["quality"], strict=True)}
    # Broadway: preference 2 (alpaca wins) then 1.5 (tie).
    assert quality[("What are t", "alpaca-7b")] == 0.75
    assert quality[("What are t", "gpt4_1106_preview")] == 0.25
    # Syrup: preference 1 (gpt4 wins); the null preference is skipped.
    assert quality[("How do I m", "gpt4_1106_preview")] == 1.0
    assert quality[("How do I m", "alpaca-7b")] == 0.0
    assert table["prompt_id"].str.fullmatch(r"alpacaeval-[0-9a-f]{12}").all()
    assert set(table["task"]) == {"helpful_base", "koala"}
    assert "skipped 1 annotation(s) without a preference" in caplog.text


def test_alpacaeval_bad_input(tmp_path: Path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"instruction": "x", "output_1": "a", "output_2": "b",
                                 "generator_1": "g1", "preference": 2}]))
    with pytest.raises(DataError) as info:
        import_alpacaeval(path)
    assert info.value.message == (f"{path}, annotation 1: missing key(s) generator_2; it has "
                                  f"instruction, output_1, output_2, generator_1, preference")
    path.write_text(json.dumps([{"instruction": "x", "output_1": "a", "output_2": "b",
                                 "generator_1": "g1", "generator_2": "g2", "preference": 3}]))
    with pytest.raises(DataError, match="annotation 1: preference is 3"):
        import_alpacaeval(path)


# ------------------------------------------------------------------ MT-Bench


def test_mtbench_scores_ids_turns_and_dropped_failures(caplog):
    with caplog.at_level(logging.WARNING, logger="training.importers"):
        table = import_mtbench(FIXTURES / "mtbench_gpt-4_single.jsonl")
    quality = by_key(table, "quality")
    assert quality == {
        ("mtbench-81", "vicuna-13b-v1.3"): pytest.approx(7 / 9),
        ("mtbench-81", "llama-13b"): pytest.approx(1 / 9),
        ("mtbench-111", "vicuna-13b-v1.3"): 1.0,
        ("mtbench-81-turn2", "vicuna-13b-v1.3"): pytest.approx(6 / 9),
    }
    assert "dropped 1 judgment(s) with score -1" in caplog.text
    prompts = dict(zip(table["prompt_id"], table["prompt"], strict=False))
    # The reference answer of a math judgment is not part of the question.
    assert prompts["mtbench-111"] == ("The vertices of a triangle are at points (0, 0), "
                                      "(-1, 1), and (3, 3). What is the area of the triangle?")
    turn2 = json.loads(table.set_index("prompt_id").loc["mtbench-81-turn2", "messages"])
    assert [m["role"] for m in turn2] == ["user", "user"]
    assert turn2[1]["content"].startswith("Rewrite your previous response.")
    assert set(table["task"]) == {"mt_bench"}


def test_mtbench_questions_file_gives_categories():
    table = import_mtbench(FIXTURES / "mtbench_gpt-4_single.jsonl",
                           questions=FIXTURES / "mtbench_question.jsonl")
    tasks = dict(zip(table["prompt_id"], table["task"], strict=False))
    assert tasks == {"mtbench-81": "mt_bench/writing", "mtbench-111": "mt_bench/math",
                     "mtbench-81-turn2": "mt_bench/writing"}


def test_mtbench_turn2_without_question_text_is_dropped(tmp_path: Path, caplog):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"question_id": 5, "model": "m", "score": 5, "turn": 2,
                                "user_prompt": "unrecognised template"}) + "\n"
                    + json.dumps({"question_id": 5, "model": "m", "score": 4, "turn": 1,
                                  "user_prompt": "[Question]\nHi?\n\n[The Start of Assistant's "
                                  "Answer]\nHello\n[The End of Assistant's Answer]"}) + "\n")
    with caplog.at_level(logging.WARNING, logger="training.importers"):
        table = import_mtbench(path)
    assert table["prompt_id"].tolist() == ["mtbench-5"]
    assert table["prompt"].tolist() == ["Hi?"]
    assert "dropped 1 judgment(s) whose question text is unknown" in caplog.text


def test_mtbench_missing_keys_names_line(tmp_path: Path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"question_id": 1, "model": "m", "turn": 1}) + "\n")
    with pytest.raises(DataError) as info:
        import_mtbench(path)
    assert info.value.message == (f"{path}, line 1: missing key(s) score; it has "
                                  f"question_id, model, turn")


def test_unknown_format():
    with pytest.raises(DataError, match="unknown import format 'helm'"):
        import_benchmark("helm", FIXTURES / "gsm8k_responses.csv")


# ------------------------------------------------------------------ CLI


def test_cli_import_writes_a_loadable_table(tmp_path: Path, capsys):
    out = tmp_path / "mt.jsonl"
    code = main(["import", "mtbench", str(FIXTURES / "mtbench_gpt-4_single.jsonl"),
                 "--questions", str(FIXTURES / "mtbench_question.jsonl"), "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().out.startswith("wrote 4 rows (3 prompts x 2 models")
    catalog = Catalog({m: ModelSpec(m, 1.0, 1.0) for m in ("vicuna-13b-v1.3", "llama-13b")})
    loaded = load_outcomes(out, catalog=catalog)
    assert len(loaded) == 4 and loaded["quality"].max() == 1.0


def test_cli_import_error_is_one_line_with_hint(tmp_path: Path, capsys):
    code = main(["import", "routellm", str(tmp_path / "missing.csv"), "--out",
                 str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: {tmp_path / 'missing.csv'}: file not found" in err
    assert not (tmp_path / "o.csv").exists()
