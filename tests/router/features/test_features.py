"""Features: deterministic, identical at fit and serve time, and meaningful."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from router.conversation import parse_conversation
from router.errors import DataError, NotFittedError
from router.features import FEATURE_SCHEMA_VERSION, KEYWORD_GROUPS, FeatureExtractor

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


# -- text in any language ----------------------------------------------------------
# Chinese coding requests, Chinese poems, Japanese math questions and Chinese small
# talk, each kind with its own templates and topics and no Latin words, so only the
# CJK text tells the kinds apart.
ZH_CODE = (["请用{}写一个函数，代码要有注释。", "我的程序在{}时报错了，帮我调试这段代码。",
            "如何用代码实现{}的算法？写出函数。", "这个{}函数的代码有错误，请修改程序。"],
           ["快速排序", "二叉树遍历", "读取文件", "链表反转", "字符串匹配", "哈希表", "递归",
            "正则表达式"])
ZH_POEM = (["写一首关于{}的诗，要有古典的风格。", "请以{}为题作一首七言诗，意境优美。",
            "为{}写一首抒情的现代诗歌。", "用{}的意象写一首短诗，表达思念。"],
           ["秋天的落叶", "明月", "江南春雨", "故乡", "大海", "梅花", "黄昏", "山水"])
JA_MATH = (["次の方程式を解きなさい：{}の値はいくつですか？",
            "{}の面積を計算してください。答えは整数です。",
            "確率の問題：{}となる確率を求めなさい。", "{}の平均を計算して、答えを求めなさい。"],
           ["三角形", "円", "正方形", "サイコロの目の和", "五つの数", "二次関数", "台形",
            "平行四辺形"])
ZH_CHAT = (["你好，今天{}，你心情怎么样？", "周末想去{}玩，你觉得好不好？",
            "我最近在看{}，你喜欢吗？", "跟我聊聊{}吧，我有点无聊。"],
           ["天气很好", "海边", "一本小说", "电影", "猫和狗", "下雨了", "公园", "音乐"])


def _kind(kind: tuple[list[str], list[str]], n: int) -> list[str]:
    templates, topics = kind
    return [templates[i % 4].format(topics[(i // 4 + i) % len(topics)]) for i in range(n)]


CJK_CORPUS = _kind(ZH_CODE, 24) + _kind(ZH_POEM, 24) + _kind(JA_MATH, 24) + _kind(ZH_CHAT, 24)


@pytest.fixture(scope="module")
def cjk_fitted() -> FeatureExtractor:
    return FeatureExtractor(n_components=16).fit(CORPUS + CJK_CORPUS)


def test_cjk_prompts_of_different_kinds_embed_apart(cjk_fitted: FeatureExtractor) -> None:
    # New sentences: as one `\w\w+` token each, none would share anything with training.
    code_a, code_b, poem, math_a, math_b = cjk_fitted.embed([
        "请用代码实现合并数组的函数，写出注释。",
        "我的程序报错了，这个排序函数的代码有错误。",
        "写一首关于冬天雪景的诗，意境要优美。",
        "次の方程式を解きなさい：xの値を求めなさい。",
        "長方形の面積を計算してください。"])
    assert code_a @ code_b > code_a @ poem + 0.2
    assert math_a @ math_b > max(math_a @ code_a, math_a @ poem) + 0.2


def test_a_cjk_prompt_is_many_tokens_not_one(cjk_fitted: FeatureExtractor) -> None:
    new = "请用代码实现合并数组的函数，写出注释。"
    _, (row,) = cjk_fitted.transform_with_tfidf([new])
    assert len(row[0]) > 20  # its character 1-2-grams seen in training
    thai = FeatureExtractor(n_components=2).fit(["ภาษาไทยง่าย", "ภาษาอังกฤษ", "ไม่มีช่องว่าง"])
    _, (thai_row,) = thai.transform_with_tfidf(["ภาษาไทยไม่มีช่องว่างระหว่างคำ"])
    assert len(thai_row[0]) > 5


def test_words_beside_cjk_text_are_still_words(cjk_fitted: FeatureExtractor) -> None:
    mixed = _row(cjk_fitted, "用python写一个函数，处理json数据")
    assert mixed["kw_coding"] == 3  # python, json and 函数
    assert mixed["kw_math"] == 1  # 函数, as "function" is both


def test_cjk_keywords_count_toward_their_groups(cjk_fitted: FeatureExtractor) -> None:
    code = _row(cjk_fitted, "这个快速排序函数的代码有错误，请修改程序。")
    poem = _row(cjk_fitted, "写一首关于明月的诗，要有古典的风格。")
    math = _row(cjk_fitted, "次の方程式を解きなさい：答えはいくつですか？")
    assert code["kw_coding"] == 3 and code["kw_writing"] == 0
    assert poem["kw_writing"] == 2 and poem["kw_coding"] == 0
    assert math["kw_math"] == 2 and math["kw_coding"] == 0  # 方程, いくつ
    # Every CJK phrase of every group is counted when it stands alone.
    for group, (_, phrases) in KEYWORD_GROUPS.items():
        cjk = [p for p in phrases if not p.isascii()]
        column = cjk_fitted.feature_names_.index(f"kw_{group}")
        counts = cjk_fitted.transform(cjk)[:, column]
        assert [p for p, n in zip(cjk, counts, strict=True) if n < 1] == []


def test_cjk_batches_equal_singles(cjk_fitted: FeatureExtractor) -> None:
    batch = [*CORPUS[:9], *CJK_CORPUS[::12], "한국어 텍스트 분류", "mixed 中文 text", "café"]
    singles = np.vstack([cjk_fitted.transform([c]) for c in batch])
    assert np.array_equal(cjk_fitted.transform(batch), singles)
    assert np.isfinite(singles).all()


def test_quality_model_tells_cjk_prompt_kinds_apart() -> None:
    """Chinese coding requests fail on the cheap model, Chinese small talk does not."""
    import json

    import pandas as pd

    from router.catalog import Catalog, ModelSpec
    from router.predictor import QualityModel

    catalog = Catalog({"cheap": ModelSpec("cheap", 0.1, 0.4, 16_000),
                       "strong": ModelSpec("strong", 5.0, 15.0, 128_000)})
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(_kind(ZH_CODE, 250) + _kind(ZH_CHAT, 250)):
        hard = i < 250
        messages = json.dumps([{"role": "user", "content": f"{text}（{i}）"}],
                              ensure_ascii=False)
        for model, p_success in (("cheap", 0.1 if hard else 0.9), ("strong", 0.95)):
            rows.append({"prompt_id": f"p{i}", "messages": messages, "model": model,
                         "quality": float(rng.random() < p_success), "input_tokens": 30.0,
                         "output_tokens": 100.0, "cost_usd": np.nan, "weight": 1.0})
    model = QualityModel(n_components=16).fit(pd.DataFrame(rows), catalog=catalog)
    cheap = model.predict(["请用代码实现合并数组的函数，写出注释。",
                           "我的程序报错了，这个排序函数的代码有错误。",
                           "你好，今天下雪了，你心情怎么样？",
                           "我最近在看一部纪录片，你喜欢吗？"]).quality[:, 0]
    # Margins hold for table seeds 0-5 (hard at most 0.39, easy at least 0.76).
    assert max(cheap[:2]) < 0.45 < 0.7 < min(cheap[2:])
