"""Graders: what quality a user gets for an answer, and what happens when grading fails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest

from router.catalog import Catalog, ModelSpec
from router.errors import ConfigError, DataError
from router.upstream import UpstreamClient
from training.graders import (
    JUDGE_RUBRIC,
    ExactGrader,
    GradeInput,
    JudgeGrader,
    LabelsGrader,
    RegexGrader,
    normalise,
    parse_grader,
    parse_judge_score,
)

MESSAGES = ({"role": "user", "content": "What is the capital of France?"},)


def item(answer: str, reference: str | None = None, *, prompt_id: str = "p1",
         model: str = "m") -> GradeInput:
    return GradeInput(prompt_id, model, MESSAGES, answer, reference)


def test_normalise_ignores_case_whitespace_and_trailing_punctuation():
    assert normalise("  The  Eiffel\nTower. ") == "the eiffel tower"
    assert normalise("Paris!?") == "paris"
    assert normalise("e.g") == "e.g"  # inner punctuation is kept


@pytest.mark.parametrize(("answer", "quality"), [
    ("Paris", 1.0), ("  paris. ", 1.0), ("PARIS!", 1.0), ("Paris, France", 0.0), ("", 0.0),
])
async def test_exact_grader(answer, quality):
    grade = await ExactGrader().grade(item(answer, "Paris"))
    assert grade.quality == quality
    assert grade.error is None


@pytest.mark.parametrize(("answer", "reference", "quality", "extracted"), [
    ("2 + 2 = 4.", "4", 1.0, "4"),
    ("First 3, then the total is 1,000.0", "1000", 1.0, "1,000.0"),
    ("it is -7", "-7", 1.0, "-7"),
    ("I used gpt-4o and got 12", "4", 0.0, "12"),  # the 4 of gpt-4o is not a number
    ("no idea", "4", 0.0, None),
])
async def test_regex_grader_compares_the_last_number(answer, reference, quality, extracted):
    grade = await RegexGrader().grade(item(answer, reference))
    assert (grade.quality, grade.columns["extracted"]) == (quality, extracted)
    assert grade.error is None  # no number is a wrong answer, not a grading failure


async def test_regex_grader_with_a_group_extracts_the_group():
    grader = parse_grader(r"regex:answer is (\w+)")
    assert grader.spec == r"regex:answer is (\w+)"
    grade = await grader.grade(item("The answer is B. Final answer is C.", "c"))
    assert (grade.quality, grade.columns["extracted"]) == (1.0, "C")


def test_regex_grader_rejects_a_bad_pattern():
    with pytest.raises(ConfigError, match=r"regex:\(unclosed: not a valid regular expression"):
        parse_grader("regex:(unclosed")


@pytest.mark.parametrize(("reply", "score"), [
    ("Rating: [[4]]", 4),
    ("The answer is right but terse.\nRating: [[5]]", 5),
    ("Format: [[N]]. Considering everything... Rating: [[2]]", 2),  # the last one counts
    ("rating: 3", 3),
    ("Rating: [[ 1 ]]", 1),
])
def test_parse_judge_score(reply, score):
    assert parse_judge_score(reply) == (score, None)


@pytest.mark.parametrize(("reply", "error"), [
    ("I think it's good.", "judge reply has no 'Rating: [[N]]' score: \"I think it's good.\""),
    ("Rating: [[7]]", "judge score 7 is outside the 1-5 scale"),
    ("Rating: [[0]]", "judge score 0 is outside the 1-5 scale"),
    ("Rating: [[3.5]]", "judge score 3.5 is outside the 1-5 scale"),
    ("Rating: [[N]]", "judge score 'N' is not a number"),
])
def test_parse_judge_score_failures_say_why(reply, error):
    assert parse_judge_score(reply) == (None, error)


def judge_client(replies: list[object]) -> tuple[UpstreamClient, list[dict]]:
    """An UpstreamClient whose provider answers with `replies` in turn (MockTransport)."""
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        reply = replies[min(len(seen), len(replies)) - 1]
        if isinstance(reply, int):
            return httpx.Response(reply, json={"error": {"message": "boom"}})
        return httpx.Response(200, json={
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 10}})

    catalog = Catalog({"judge": ModelSpec("judge", 2.0, 8.0, base_url="http://judge.test/v1"),
                       "other": ModelSpec("other", 0.1, 0.1, base_url="http://other.test/v1")})
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))

    async def no_sleep(_: float) -> None:
        return None

    return UpstreamClient(catalog, http=http, sleep=no_sleep, max_retries=1), seen


@pytest.mark.parametrize(("score", "quality"), [(1, 0.0), (2, 0.25), (3, 0.5), (5, 1.0)])
async def test_judge_maps_1_to_5_onto_0_to_1_and_keeps_the_raw_reply(score, quality):
    client, seen = judge_client([f"Correct.\nRating: [[{score}]]"])
    grade = await JudgeGrader("judge", client).grade(item("Paris.", "Paris"))
    assert grade.quality == quality
    assert grade.error is None
    assert grade.columns["judge_raw"] == f"Correct.\nRating: [[{score}]]"
    # 1000 in x $2/M + 10 out x $8/M
    assert grade.cost_usd == pytest.approx(0.00208)
    assert grade.columns["judge_cost_usd"] == pytest.approx(0.00208)
    body = seen[0]
    assert body["model"] == "judge" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": JUDGE_RUBRIC}
    user = body["messages"][1]["content"]
    assert "[user] What is the capital of France?" in user
    assert "## Reference answer\nParis" in user
    assert user.endswith("## Answer to grade\nParis.")


async def test_judge_reply_that_does_not_parse_is_nan_with_the_reason_never_zero():
    client, _ = judge_client(["The answer looks fine to me."])
    grade = await JudgeGrader("judge", client).grade(item("Paris"))
    assert math.isnan(grade.quality)
    assert grade.error == ("judge reply has no 'Rating: [[N]]' score: "
                           "'The answer looks fine to me.'")
    assert grade.columns["judge_raw"] == "The answer looks fine to me."
    assert grade.cost_usd > 0  # the call was paid for all the same


async def test_a_failing_judge_is_not_replaced_by_another_model():
    client, seen = judge_client([503, 503, 503])
    grade = await JudgeGrader("judge", client).grade(item("Paris"))
    assert math.isnan(grade.quality)
    assert grade.error.startswith("judge call failed: upstream judge")
    assert {body["model"] for body in seen} == {"judge"}
    assert len(seen) == 2  # one try + max_retries=1


def test_judge_must_be_a_catalog_model():
    client, _ = judge_client([])
    with pytest.raises(ConfigError, match="unknown model 'gpt-9'"):
        parse_grader("judge:gpt-9", client=client)
    with pytest.raises(ConfigError, match="names no judge model"):
        parse_grader("judge:", client=client)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def test_labels_are_joined_by_prompt_and_model(tmp_path):
    labels = write(tmp_path / "labels.csv",
                   "prompt_id,model,quality\np1,cheap,0.25\np1,strong,1\np2,cheap,0\n")
    grader = parse_grader(f"labels:{labels}")
    assert isinstance(grader, LabelsGrader)
    assert (await grader.grade(item("x", model="strong"))).quality == 1.0
    assert (await grader.grade(item("x", model="cheap"))).quality == 0.25
    missing = await grader.grade(item("x", prompt_id="p2", model="strong"))
    assert math.isnan(missing.quality)
    assert missing.error == f"no label for prompt_id 'p2' and model 'strong' in {labels}"


@pytest.mark.parametrize(("text", "message"), [
    ("prompt_id,model,score\np1,a,1\n", "labels file is missing column(s) quality"),
    ("prompt_id,model,quality\np1,a,0.5\np1,a,1.5\n",
     "row 2: quality 1.5 is outside [0, 1]"),
    ("prompt_id,model,quality\np1,a,good\n", "row 1: quality must be a number, got 'good'"),
    ("prompt_id,model,quality\np1,a,1\np1,a,0\n",
     "row 2: a second label for prompt_id 'p1' and model 'a'"),
])
def test_bad_labels_file_names_file_row_and_value(tmp_path, text, message):
    labels = write(tmp_path / "labels.csv", text)
    with pytest.raises(DataError) as err:
        LabelsGrader(labels)
    assert err.value.message.startswith(str(labels))
    assert message in err.value.message
    assert err.value.hint


def test_unknown_grader_lists_the_valid_forms():
    with pytest.raises(ConfigError) as err:
        parse_grader("fuzzy")
    assert err.value.message == "unknown grader 'fuzzy'"
    assert err.value.hint == "use one of: exact, regex, regex:PATTERN, judge:MODEL, labels:FILE"
