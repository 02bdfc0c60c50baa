"""Features: deterministic, identical at fit and serve time, and meaningful."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from router.conversation import parse_conversation
from router.errors import DataError, NotFittedError
from router.features import FEATURE_SCHEMA_VERSION, FeatureExtractor

CORPUS = [
    "Write a python function that reverses a linked list.\n```python\ndef f(x):\n    "
    "return x\n```",
    "Summarize the following article in three bullet points: the economy grew.",
    "Translate into French: the cat sleeps on the mat.",
    "Prove that the square root of 2 is irrational, step by step.",
    "Which of the following is a mammal?\nA. shark\nB. dolphin\nC. trout\nD. eel",
    "Write a short poem about autumn leaves in the style of Basho.",
    "Solve for x: 3x + 7 = 22. How many solutions are there?",
    "Extract every email address from this text: bob@example.com, ann@example.org",
    [{"role": "system", "content": "You are a terse SQL expert."},
     {"role": "user", "content": "Select all users older than 30."},
     {"role": "assistant", "content": "SELECT * FROM users WHERE age > 30;"},
     {"role": "user", "content": "Now only those from Paris, at most 10 rows."}],
] * 3 + [f"Question number {i}: what is {i} + {i * 3}?" for i in range(30)]


@pytest.fixture(scope="module")
def fitted() -> FeatureExtractor:
    return FeatureExtractor(n_components=16).fit(CORPUS)


def _row(fe: FeatureExtractor, value: object) -> dict[str, float]:
    return dict(zip(fe.feature_names_, fe.transform([value])[0].tolist(), strict=True))


def test_batch_and_single_transform_are_bit_identical(fitted: FeatureExtractor) -> None:
    batch = fitted.transform(CORPUS)
    singles = np.vstack([fitted.transform([c]) for c in CORPUS])
    assert batch.dtype == np.float32
    assert batch.shape == (len(CORPUS), len(fitted.feature_names_))
    assert np.array_equal(batch, singles)


def test_fitting_twice_gives_the_same_features() -> None:
    a = FeatureExtractor(n_components=8).fit(CORPUS).transform(CORPUS)
    b = FeatureExtractor(n_components=8).fit(CORPUS).transform(CORPUS)
    assert np.array_equal(a, b)


def test_pickled_extractor_transforms_identically(fitted: FeatureExtractor) -> None:
    clone = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(clone.transform(CORPUS), fitted.transform(CORPUS))
    assert "_memo" not in pickle.loads(pickle.dumps(fitted)).__dict__


def test_unfitted_extractor_says_to_call_fit() -> None:
    with pytest.raises(NotFittedError, match="not fitted") as info:
        FeatureExtractor().transform(["hello"])
    assert "fit" in (info.value.hint or "")
    with pytest.raises(NotFittedError):
        FeatureExtractor().embed(["hello"])


def test_a_bare_string_is_refused_with_a_hint(fitted: FeatureExtractor) -> None:
    with pytest.raises(DataError, match="single str") as info:
        fitted.transform("hello there")
    assert "transform([" in (info.value.hint or "")


def test_text_statistics_and_keyword_groups(fitted: FeatureExtractor) -> None:
    code = _row(fitted, CORPUS[0])
    assert code["last_code_fences"] == 2
    assert code["kw_coding"] >= 2  # "python", "function"
    assert code["last_code_tokens"] >= 2
    mc = _row(fitted, CORPUS[4])
    assert mc["last_mc_options"] == 4 and mc["last_has_mc"] == 1
    assert mc["kw_extract_classify"] >= 1  # "which of the following"
    math = _row(fitted, CORPUS[6])
    assert math["last_numbers"] == 3 and math["last_math_symbols"] >= 2
    assert math["kw_math"] >= 2  # "solve", "how many"
    assert math["last_question_marks"] == 1
    chat = _row(fitted, CORPUS[8])
    assert chat["conv_has_system"] == 1 and chat["conv_n_turns"] == 2
    assert chat["conv_n_messages"] == 4 and chat["conv_assistant_chars"] > 0
    assert chat["kw_constraints"] >= 1  # "at most"
    assert chat["last_chars"] == len("Now only those from Paris, at most 10 rows.")
    plain = _row(fitted, "hello")
    assert plain["conv_has_system"] == 0 and plain["last_has_mc"] == 0
    non_ascii = _row(fitted, "日本語のテキスト")
    assert non_ascii["last_nonascii_ratio"] == 1.0


def test_embed_is_unit_length_and_puts_similar_prompts_close(
        fitted: FeatureExtractor) -> None:
    vectors = fitted.embed(["Question number 3: what is 3 + 9?",
                            "Question number 4: what is 4 + 12?",
                            "Write a short poem about autumn leaves in the style of Basho."])
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    # The representation inside transform is the same direction as embed.
    z = fitted.transform(["Question number 3: what is 3 + 9?"])[0, -16:]
    assert np.allclose(z / np.linalg.norm(z), vectors[0], atol=1e-5)


def test_unseen_words_and_empty_text_give_finite_features(fitted: FeatureExtractor) -> None:
    rows = fitted.transform(["zzqx wvvy", "", "?"])
    assert np.isfinite(rows).all()
    assert not fitted.embed(["zzqx wvvy"]).any()  # nothing known: a zero vector


def test_tiny_training_set_still_gives_full_width(fitted: FeatureExtractor) -> None:
    small = FeatureExtractor(n_components=16).fit(["one prompt", "another prompt"])
    assert small.transform(["x"]).shape == (1, len(fitted.feature_names_))


def test_conversation_objects_and_messages_agree(fitted: FeatureExtractor) -> None:
    conv = parse_conversation(CORPUS[8])
    assert np.array_equal(fitted.transform([conv]), fitted.transform([CORPUS[8]]))
    assert isinstance(FEATURE_SCHEMA_VERSION, int)


def test_tfidf_rows_match_sklearn_and_the_svd_input(fitted: FeatureExtractor) -> None:
    from sklearn.preprocessing import normalize

    x, rows = fitted.transform_with_tfidf(CORPUS[:9])
    assert np.array_equal(x, fitted.transform(CORPUS[:9]))  # same vector, one pass
    matrix = fitted.tfidf_matrix(rows)
    assert matrix.shape == (9, len(fitted.buckets_)) and matrix.dtype == np.float32
    # Every word of a training prompt was seen: each row is a unit TF-IDF vector ...
    assert np.allclose(np.sqrt(matrix.multiply(matrix).sum(axis=1)).A1, 1.0, atol=1e-5)
    # ... and the SVD text features are that vector times the components.
    components = fitted.projection_ / fitted.idf_[:, None]
    svd = x[:, -fitted.n_components:]
    assert np.allclose(matrix @ components, svd, atol=1e-5)
    assert np.allclose(normalize(matrix).toarray(), matrix.toarray(), atol=1e-6)


def test_tfidf_row_of_unseen_words_is_down_weighted(fitted: FeatureExtractor) -> None:
    _, rows = fitted.transform_with_tfidf(["python function zzqx wwpq vvkr", "", "zzqx"])
    pos, vals = rows[0]
    assert 0 < len(pos) < 9 and 0 < float(np.dot(vals, vals)) < 1.0  # unseen count in the norm
    assert len(rows[1][0]) == 0 and len(rows[2][0]) == 0
    single = fitted.transform_with_tfidf(["python function zzqx wwpq vvkr"])[1][0]
    assert np.array_equal(single[0], pos) and np.array_equal(single[1], vals)


@pytest.mark.parametrize(("text", "math", "latex", "urls"), [
    ("plain ascii prose, nothing special", 0, 0, 0),
    ("sum ∑ and ∫ over x ≤ y, café", 3, 0, 0),
    ("the value of $x^2$ is \\frac{a}{b}", 1, 2, 0),  # "^" is a math byte too
    ("price is $5 only", 0, 0, 0),
    # "/" is a math byte; "http://" with nothing after it is no URL.
    ("see https://example.com/a and www.example.org or http:// alone", 5, 0, 2),
    ("HTTPS://SHOUT.COM stays unmatched, as before", 2, 0, 0),
])
def test_math_latex_and_url_counts(fitted: FeatureExtractor, text: str, math: int,
                                   latex: int, urls: int) -> None:
    row = _row(fitted, text)
    assert (row["last_math_symbols"], row["last_latex"], row["last_urls"]) == (
        math, latex, urls)
