"""`router collect` against a real fake upstream on a loopback socket.

The fake answers from `tests/fixtures/collect/outcomes.csv` (recorded quality and
output tokens per (prompt, model)) and `claude-3-sonnet` acts as a 1-5 judge that
rates a quoted fake answer by its recorded quality, so every number is known.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from router.catalog import load_catalog
from router.cli import main
from router.conversation import Conversation
from router.errors import ConfigError, DataError
from router.fake import FakeUpstreamState
from router.upstream import UpstreamClient
from tests.router.conftest import run_fake_upstream
from training.collect import (
    collect,
    comparison_table,
    format_comparison,
    graded_rows,
    load_prompts,
    read_results,
)
from training.data import load_outcomes
from training.graders import parse_grader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "collect"
PROMPTS = FIXTURES / "prompts.csv"
OUTCOMES = pd.read_csv(FIXTURES / "outcomes.csv")
MODELS = ["glm-4-plus", "deepseek-v4-flash", "gpt-4o"]
JUDGE = "claude-3-sonnet"
CATALOG = load_catalog()


@pytest.fixture(scope="module")
def _server() -> Iterator[tuple[str, FakeUpstreamState]]:
    with run_fake_upstream(catalog=CATALOG, outcomes=FIXTURES / "outcomes.csv",
                           judge_models=[JUDGE], judge_scale=5) as server:
        yield server


@pytest.fixture
def fake(_server) -> tuple[str, FakeUpstreamState]:
    base_url, control = _server
    control.reset()
    return base_url, control


async def run(base_url: str, out: Path, grader: str = "exact", *, models=MODELS,
              prompts=None, **options):
    async with httpx.AsyncClient(timeout=10) as http:
        client = UpstreamClient(CATALOG, http=http, base_url_override=base_url,
                                backoff_s=0.0)
        return await collect(prompts or load_prompts(PROMPTS), models,
                             parse_grader(grader, client=client), out, client=client,
                             catalog=CATALOG, **options)


def recorded(pid: str, model: str) -> pd.Series:
    return OUTCOMES[(OUTCOMES.prompt_id == pid) & (OUTCOMES.model == model)].iloc[0]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def candidate_calls(control: FakeUpstreamState) -> int:
    return sum(r["model"] != JUDGE for r in control.requests)


async def test_every_pair_once_with_real_tokens_catalog_cost_and_latency(fake, tmp_path):
    base_url, control = fake
    out = tmp_path / "out.jsonl"
    result = await run(base_url, out, concurrency=3)
    assert (result.pairs_total, result.completed, result.skipped, result.remaining) == (
        12, 12, 0, 0)
    assert candidate_calls(control) == 12
    table = result.table
    assert sorted(zip(table.prompt_id, table.model, strict=True)) == sorted(
        (p, m) for p in ("p1", "p2", "p3", "p4") for m in MODELS)
    for row in table.itertuples():
        rec = recorded(row.prompt_id, row.model)
        prompt = json.loads(row.messages)[0]["content"]
        assert row.input_tokens == Conversation.from_prompt(prompt).input_tokens
        assert row.output_tokens == rec.output_tokens  # from the provider's usage
        spec = CATALOG[row.model]
        assert row.cost_usd == pytest.approx(spec.cost_usd(row.input_tokens, row.output_tokens))
        assert row.latency_ms > 0 and row.status == "ok" and row.error is None
        assert row.grader == "exact" and row.tokens_estimated is False
    assert result.spent_usd == pytest.approx(table.cost_usd.sum())


async def test_exact_grader_normalises_against_the_reference(fake, tmp_path):
    base_url, _ = fake
    # The fake's answer to (p2, gpt-4o), shouted and punctuated, is the reference for p2.
    async with httpx.AsyncClient() as http:
        answer = (await http.post(f"{base_url}/chat/completions", json={
            "model": "gpt-4o", "messages": [{"role": "user",
                                             "content": "Name the capital of France."}]}
                                  )).json()["choices"][0]["message"]["content"]
    prompts = [p if p.prompt_id != "p2" else type(p)(p.prompt_id, p.messages,
                                                      f"  {answer.upper()} !", p.input_tokens)
               for p in load_prompts(PROMPTS)]
    result = await run(base_url, tmp_path / "out.jsonl", "exact", prompts=prompts)
    quality = {(r.prompt_id, r.model): r.quality for r in result.table.itertuples()}
    assert quality.pop(("p2", "gpt-4o")) == 1.0
    assert set(quality.values()) == {0.0}


async def test_regex_grader_extracts_the_answer(fake, tmp_path):
    base_url, _ = fake
    # Fake answers start with "<model>:"; extract that and compare with the reference.
    prompts = [type(p)(p.prompt_id, p.messages, "deepseek-v4-flash", p.input_tokens)
               for p in load_prompts(PROMPTS)]
    result = await run(base_url, tmp_path / "out.jsonl", r"regex:^([\w.-]+):", prompts=prompts)
    by_model = result.table.groupby("model")["quality"].mean().to_dict()
    assert by_model == {"deepseek-v4-flash": 1.0, "glm-4-plus": 0.0, "gpt-4o": 0.0}
    assert set(result.table.extracted) == set(MODELS)
    # The default pattern wants a number; fake answers have none: wrong, not ungraded.
    plain = await run(base_url, tmp_path / "plain.jsonl", "regex")
    assert set(plain.table.quality) == {0.0}
    assert plain.table.grade_error.isna().all()


async def test_judge_grades_recover_the_recorded_quality_and_cost_counts(fake, tmp_path):
    base_url, control = fake
    result = await run(base_url, tmp_path / "out.jsonl", f"judge:{JUDGE}", concurrency=2)
    assert result.grade_errors == 0
    for row in result.table.itertuples():
        rec = recorded(row.prompt_id, row.model)
        assert row.quality == rec.quality  # (s - 1) / 4 of a judge that saw the answer
        assert row.judge_raw == f"Rating: [[{1 + round(4 * rec.quality)}]]"
        assert row.judge_model == JUDGE and row.judge_cost_usd > 0
    assert sum(r["model"] == JUDGE for r in control.requests) == 12
    assert result.spent_usd == pytest.approx(
        result.table.cost_usd.sum() + result.table.judge_cost_usd.sum())


async def test_judge_that_does_not_parse_gives_nan_counted_and_reported(fake, tmp_path):
    base_url, _ = fake
    # claude-3-haiku is no judge on this fake: it answers prose without a rating.
    out = tmp_path / "out.jsonl"
    result = await run(base_url, out, "judge:claude-3-haiku", models=["glm-4-plus"])
    assert result.grade_errors == 4
    assert result.table.quality.isna().all()
    assert all(e.startswith("judge reply has no 'Rating: [[N]]' score: 'claude-3-haiku:")
               for e in result.table.grade_error)
    assert all(raw.startswith("claude-3-haiku:") for raw in result.table.judge_raw)
    assert [row["quality"] for row in lines(out)] == [None] * 4  # null, never 0
    [stats] = comparison_table(result.table)
    assert (stats["graded"], stats["mean_quality"], stats["grade_errors"]) == (0, None, 4)
    assert graded_rows(result.table).empty


async def test_labels_grader_joins_human_scores(fake, tmp_path):
    base_url, _ = fake
    labels = tmp_path / "labels.csv"
    labels.write_text("prompt_id,model,quality\np1,gpt-4o,0.9\np2,gpt-4o,0.1\n"
                      "p3,gpt-4o,1\n")
    result = await run(base_url, tmp_path / "out.jsonl", f"labels:{labels}",
                       models=["gpt-4o"])
    quality = dict(zip(result.table.prompt_id, result.table.quality, strict=True))
    assert quality["p1"] == 0.9 and quality["p2"] == 0.1 and quality["p3"] == 1.0
    assert math.isnan(quality["p4"])
    assert result.grade_errors == 1
    assert result.table.set_index("prompt_id").grade_error["p4"] == (
        f"no label for prompt_id 'p4' and model 'gpt-4o' in {labels}")


async def test_resume_after_cancel_never_repeats_a_finished_pair(fake, tmp_path):
    base_url, control = fake
    control.configure(None, latency_ms=30)
    out = tmp_path / "out.jsonl"
    enough = asyncio.Event()
    task = asyncio.create_task(run(base_url, out, concurrency=2,
                                   on_row=lambda row: len(lines(out)) >= 4 and enough.set()))
    await asyncio.wait_for(enough.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    finished = out.read_bytes()
    done = {(r["prompt_id"], r["model"]) for r in lines(out)}
    assert 4 <= len(done) < 12
    control.reset()
    result = await run(base_url, out, concurrency=2)
    assert result.skipped == len(done)
    assert candidate_calls(control) == 12 - len(done)  # only unfinished pairs are called
    assert out.read_bytes().startswith(finished)  # finished rows are untouched
    keys = [(r["prompt_id"], r["model"]) for r in lines(out)]
    assert len(keys) == len(set(keys)) == 12


async def test_resume_after_kill_of_the_cli_process(fake, tmp_path):
    base_url, control = fake
    control.configure(None, latency_ms=150)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "router.cli", "collect", "--prompts", str(PROMPTS),
           "--models", ",".join(MODELS), "--grader", "exact", "--out", str(out),
           "--upstream-base-url", base_url, "--concurrency", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and len(lines(out)) >= 3):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "collect wrote nothing in 30 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
        proc.stderr.close()
    done = {(r["prompt_id"], r["model"]) for r in lines(out)}
    assert 3 <= len(done) < 12
    control.reset()
    result = await run(base_url, out)
    assert candidate_calls(control) == 12 - len(done)
    assert result.completed == 12 - len(done) and len(lines(out)) == 12


async def test_a_torn_last_line_is_dropped_and_that_pair_rerun(fake, tmp_path):
    base_url, control = fake
    out = tmp_path / "out.jsonl"
    await run(base_url, out, models=["glm-4-plus"])
    rows = out.read_text().splitlines(keepends=True)
    out.write_text("".join(rows[:3]) + rows[3][:40])  # killed while writing the 4th row
    control.reset()
    result = await run(base_url, out, models=["glm-4-plus"])
    assert candidate_calls(control) == 1 and result.skipped == 3
    assert sorted(r["prompt_id"] for r in lines(out)) == ["p1", "p2", "p3", "p4"]


async def test_cost_cap_stops_cleanly_and_says_what_remains(fake, tmp_path):
    base_url, control = fake
    out = tmp_path / "out.jsonl"
    prompts = load_prompts(PROMPTS)
    # Pairs run prompt by prompt; each one's actual cost is known from the fixture.
    costs = [CATALOG[m].cost_usd(p.input_tokens, recorded(p.prompt_id, m).output_tokens)
             for p in prompts for m in MODELS]
    cap = sum(costs[:7]) + costs[7] / 2  # room for 7 pairs and half of the 8th
    # max_tokens bounds the estimate of a model's first call (later ones use the most
    # it has answered with); 30 is gpt-4o's answer length, so nothing stops early.
    result = await run(base_url, out, max_cost_usd=cap, concurrency=1, max_tokens=30)
    assert result.stopped_at_cap
    assert (result.completed, result.remaining) == (7, 5)
    assert candidate_calls(control) == 7
    assert result.spent_usd == pytest.approx(sum(costs[:7])) and result.spent_usd <= cap
    # The cap is on the total in --out: the same cap again spends nothing.
    control.reset()
    again = await run(base_url, out, max_cost_usd=cap, max_tokens=30)
    assert (again.completed, again.remaining, again.stopped_at_cap) == (0, 5, True)
    assert candidate_calls(control) == 0
    more = await run(base_url, out, max_cost_usd=sum(costs) * 1.01, concurrency=3,
                     max_tokens=30)
    assert (more.completed, more.remaining, more.stopped_at_cap) == (5, 0, False)
    assert more.spent_usd == pytest.approx(sum(costs))


async def test_failed_calls_are_error_rows_retried_only_when_asked(fake, tmp_path):
    base_url, control = fake
    control.configure("gpt-4o", fail_status=503, retry_after_s=0)
    out = tmp_path / "out.jsonl"
    result = await run(base_url, out)
    assert result.errors == 4
    failed = result.table[result.table.model == "gpt-4o"]
    assert set(failed.status) == {"error"} and failed.quality.isna().all()
    assert failed.error.str.contains("answered 503").all()
    assert (failed.cost_usd == 0).all()
    stats = {s["model"]: s for s in comparison_table(result.table, MODELS)}
    assert stats["gpt-4o"]["error_rate"] == 1.0 and stats["glm-4-plus"]["error_rate"] == 0.0
    assert stats["gpt-4o"]["p50_latency_ms"] is None
    control.reset()
    assert (await run(base_url, out)).completed == 0  # errors count as finished...
    retried = await run(base_url, out, retry_errors=True)  # ...unless asked
    assert retried.completed == 4 and candidate_calls(control) == 4
    assert set(retried.table.status) == {"ok"}
    assert len(lines(out)) == 12  # compacted: the newest row per pair
    # What `router train` reads: the table loads as the canonical outcome table.
    loaded = load_outcomes(out)
    assert len(loaded) == 12 and loaded.quality.between(0, 1).all()


async def test_bad_input_stops_before_any_call(fake, tmp_path):
    base_url, control = fake
    no_ref = tmp_path / "noref.csv"
    no_ref.write_text("prompt_id,prompt,reference\na,hi,yes\nb,hello,\n")
    with pytest.raises(DataError) as err:
        await run(base_url, tmp_path / "o.jsonl", "exact", prompts=load_prompts(no_ref))
    assert err.value.message == ("grader 'exact' needs a reference answer, but prompt(s) "
                                 "'b' have none")
    with pytest.raises(ConfigError, match="unknown model 'gpt-5'"):
        await run(base_url, tmp_path / "o.jsonl", models=["gpt-5"])
    with pytest.raises(ConfigError, match="the output must be a .jsonl file"):
        await run(base_url, tmp_path / "o.csv")
    assert control.requests == []
    assert not (tmp_path / "o.jsonl").exists()


async def test_resume_refuses_another_grader_or_changed_prompts(fake, tmp_path):
    base_url, _ = fake
    out = tmp_path / "out.jsonl"
    await run(base_url, out, models=["glm-4-plus"])
    before = out.read_bytes()
    with pytest.raises(ConfigError, match=f"{out} was graded with 'exact'; this run uses "
                                          "'regex'"):
        await run(base_url, out, "regex", models=["glm-4-plus"])
    changed = tmp_path / "changed.csv"
    changed.write_text("prompt_id,prompt,reference\np1,What is 7 times 6?,42\n")
    with pytest.raises(DataError, match="prompt_id 'p1' has different messages"):
        await run(base_url, out, prompts=load_prompts(changed), models=["glm-4-plus"])
    assert out.read_bytes() == before


@pytest.mark.parametrize(("text", "message"), [
    ("id,prompt\n1,hi\n", "missing column(s) prompt_id"),
    ("prompt_id,text\n1,hi\n", "missing column(s) prompt (or messages)"),
    ("prompt_id,prompt\n1,hi\n1,ho\n", "row 2: prompt_id '1' already used in row 1"),
    ("prompt_id,prompt\n1,\n", "row 1: prompt is empty"),
    ("prompt_id,messages\n1,[{\"role\": \"user\"\n", "row 1: messages is not valid JSON"),
])
def test_bad_prompts_file_names_file_and_row(tmp_path, text, message):
    path = tmp_path / "prompts.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_prompts(path)
    assert err.value.message.startswith(str(path))
    assert message in err.value.message


def test_prompts_from_jsonl_messages_with_a_shared_system_prompt(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"prompt_id": "a", "messages": [{"role": "user", "content": "hi"}]}) + "\n"
        + json.dumps({"prompt_id": "b", "messages": [
            {"role": "system", "content": "be terse"}, {"role": "user", "content": "yo"}]})
        + "\n")
    a, b = load_prompts(path, system_prompt="You are helpful.")
    assert a.messages == ({"role": "system", "content": "You are helpful."},
                          {"role": "user", "content": "hi"})
    assert b.messages[0] == {"role": "system", "content": "be terse"}  # its own is kept
    assert a.reference is None


def test_comparison_table_numbers():
    table = pd.DataFrame({
        "model": ["a"] * 4 + ["b"] * 2,
        "status": ["ok", "ok", "ok", "error", "ok", "ok"],
        "quality": [1.0, 0.0, 0.5, None, 1.0, None],
        "cost_usd": [0.01, 0.02, 0.03, 0.0, 0.5, 0.5],
        "latency_ms": [100.0, 200.0, 300.0, 5.0, 1000.0, 3000.0],
        "ttfb_ms": [50.0, 60.0, None, None, 900.0, 2000.0],
        "input_tokens": [10, 20, 30, None, 5, 5],
        "output_tokens": [1, 2, 3, None, 7, 9],
        "grade_error": [None, None, None, None, None, "judge score 9 is outside the 1-5 scale"],
    })
    a, b = comparison_table(table)
    assert a == {"model": "a", "pairs": 4, "graded": 3, "mean_quality": pytest.approx(0.5),
                 "cost_per_request_usd": pytest.approx(0.02),
                 "total_cost_usd": pytest.approx(0.06), "p50_latency_ms": 200.0,
                 "p99_latency_ms": pytest.approx(298.0), "p50_ttft_ms": 55.0,
                 "p99_ttft_ms": pytest.approx(59.9), "mean_input_tokens": 20.0,
                 "mean_output_tokens": 2.0, "error_rate": 0.25, "grade_errors": 0}
    assert (b["mean_quality"], b["graded"], b["grade_errors"], b["p50_latency_ms"]) == (
        1.0, 1, 1, 2000.0)
    text = format_comparison([a, b]).splitlines()
    assert text[0].split() == ["model", "pairs", "quality", "cost/req", "$", "p50", "ms",
                               "p99", "ms", "ttfb", "p50", "ttfb", "p99", "tok", "in", "tok",
                               "out", "errors", "ungraded"]
    assert text[1].split() == ["a", "4", "0.500", "0.020000", "200", "298", "55", "60", "20",
                               "2", "25.0%", "0"]


def test_cli_prints_the_comparison_as_json(fake, tmp_path, capsys):
    base_url, _ = fake
    out = tmp_path / "out.jsonl"
    code = main(["collect", "--prompts", str(PROMPTS), "--models", "glm-4-plus,gpt-4o",
                 "--grader", f"judge:{JUDGE}", "--out", str(out), "--upstream-base-url",
                 base_url, "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["completed"], report["remaining"], report["grader"]) == (
        8, 0, f"judge:{JUDGE}")
    stats = {m["model"]: m for m in report["models"]}
    assert stats["glm-4-plus"]["mean_quality"] == pytest.approx(0.25)  # (0+.25+.5+.25)/4
    assert stats["gpt-4o"]["mean_quality"] == pytest.approx(0.9375)
    assert stats["gpt-4o"]["mean_output_tokens"] == 30.0
    # And the text table, on a rerun that has nothing left to do.
    assert main(["collect", "--prompts", str(PROMPTS), "--models", "glm-4-plus,gpt-4o",
                 "--grader", f"judge:{JUDGE}", "--out", str(out), "--upstream-base-url",
                 base_url, "--max-cost-usd", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].split()[:3] == ["glm-4-plus", "4", "0.250"]
    assert f"0 pairs run, 8 already in {out}" in printed


def test_cli_error_for_a_model_without_base_url(tmp_path, capsys):
    code = main(["collect", "--prompts", str(PROMPTS), "--models", "glm-4-plus",
                 "--grader", "exact", "--out", str(tmp_path / "o.jsonl"),
                 "--catalog", str(write_catalog(tmp_path))])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: model 'glm-4-plus' has no base_url in" in err
    assert "hint: pass --upstream-base-url URL" in err


def write_catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text('[models.glm-4-plus]\ninput_usd_per_mtok = 0.2\n'
                    'output_usd_per_mtok = 0.8\n')
    return path


def test_read_results_of_a_missing_file_is_empty(tmp_path):
    assert read_results(tmp_path / "none.jsonl").empty
