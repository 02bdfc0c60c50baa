"""Request features, one implementation for training and serving.

`FeatureExtractor` turns a `Conversation` into a fixed-width float32 vector:

* conversation shape: messages, user turns, system prompt present and its length,
  user / assistant text length, input tokens;
* fast statistics of the last user message (what the model must answer): length in
  characters, words, lines and tokens; digit / uppercase / punctuation / non-ASCII /
  whitespace ratios; mean word length; question marks; code fences and code-like
  tokens; math symbols and LaTeX; URLs; list items; multiple-choice options
  ("A. ... B. ... C. ...") and numbers;
* lexical signals over the system prompt and all user text: counts of keyword
  groups (coding, math, reasoning/proof, writing/creative, summarise, translate,
  extract/classify) and of constraint words ("must", "exactly", "at least", ...);
* a learned text representation: hashed word 1-2-grams, and character 1-2-grams
  of scripts written without spaces (below) -> TF-IDF (idf fitted) -> truncated SVD
  with `n_components` dimensions. `embed` returns it alone,
  L2-normalised (the kNN baseline uses it);
  `transform_with_tfidf` also returns each prompt's sparse TF-IDF row (the SVD's
  input, training-seen buckets only), which the linear quality head reads.

Why the hashing is done here rather than by sklearn's `HashingVectorizer`: serving
transforms one conversation per request and the sklearn pipeline costs about
0.4 ms of per-call overhead before any work (see `bench/features.py`). Words are
tokenised as sklearn does (lower case, `\\b\\w\\w+\\b`), each word is hashed with
murmurhash3 (as sklearn hashes, `alternate_sign=False`, so counts stay
non-negative) through a bounded per-process memo, and a bigram's bucket is mixed
from its two word hashes, so a request costs one dict lookup per word. The same
per-conversation code runs at fit time and at serve time, so the two can never
disagree: row i of `transform(batch)` equals `transform([batch[i]])` bit for bit.

Text in any language. `\\w\\w+` finds words where words are separated by spaces;
Chinese and Japanese have no spaces, so a whole sentence would be one "word" and
prompts of different kinds would share nothing. Characters of the scripts in
`_NO_SPACE_RANGES` (Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer, Myanmar)
are therefore taken one by one: each is a unigram and each two neighbours inside
one run of such characters a bigram (the CJK bigram scheme of search engines),
hashed into the same buckets as words. Words are then the `\\w\\w+` runs of the
other characters, so text without those scripts (English, French, Russian, ...)
tokenises exactly as before; ASCII text skips the check. The characters are
hashed vectorised (murmurhash3 of the code point): a 4,000-character Chinese
conversation costs ~0.45 ms against ~0.38 ms for an English one of the same length
(`bench/features_cjk.py`). The keyword groups also carry Chinese, Japanese and
Korean phrases (so the keyword counts a model learned from English traffic also
fire on those requests), matched vectorised (`_CjkPhrases`) and only when such
characters are present.

The SVD projection only touches the columns a request actually has
(`components[:, idx] @ values`, float32, idf folded in), and only the hash
buckets seen in training are stored: the SVD components are exactly zero for
buckets no training prompt used, so the artifact stays small.

Bump `FEATURE_SCHEMA_VERSION` whenever the vector for the same conversation
changes; artifacts and logged outcomes record it and loading refuses a mismatch.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from router.catalog import estimate_tokens
from router.conversation import Conversation, parse_conversation
from router.errors import DataError, NotFittedError

__all__ = ["FEATURE_SCHEMA_VERSION", "FeatureExtractor", "KEYWORD_GROUPS"]

# 2: characters of no-space scripts are 1-2-grams (not one word per run), and the
# keyword groups count CJK phrases.
FEATURE_SCHEMA_VERSION = 2

# Same tokens as sklearn's default `\b\w\w+\b` (greedy \w+ makes the \b redundant,
# and dropping them halves the time).
_TOKEN = re.compile(r"\w\w+")
# Scripts written without spaces between words (code point ranges, inclusive).
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),    # Thai, Lao
    (0x1000, 0x109F),    # Myanmar
    (0x1100, 0x11FF),    # Hangul Jamo
    (0x1780, 0x17FF),    # Khmer
    (0x3005, 0x3007),    # 々 〆 〇
    (0x3040, 0x30FF),    # Hiragana, Katakana
    (0x3130, 0x318F),    # Hangul compatibility Jamo
    (0x31F0, 0x31FF),    # Katakana phonetic extensions
    (0x3400, 0x4DBF),    # CJK extension A
    (0x4E00, 0x9FFF),    # CJK unified ideographs
    (0xAC00, 0xD7AF),    # Hangul syllables
    (0xF900, 0xFAFF),    # CJK compatibility ideographs
    (0xFF66, 0xFF9F),    # half-width Katakana
    (0x20000, 0x323AF),  # CJK extensions B-H
)
_NO_SPACE_CLASS = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _NO_SPACE_RANGES)
# Words of the other scripts: `\w\w+` minus the no-space characters.
_WORD = re.compile(rf"[^\W{_NO_SPACE_CLASS}]{{2,}}")
# Code-like substrings; counted with str.count, a regex alternation costs 10x more.
_CODE_MARKS = ("def ", "class ", "import ", "return ", "function ", "const ", "#include",
               "=>", "==", "!=", "++", "&&", "||", "()", "{\n", ";\n", "</", "self.", "this.")
_LATEX = re.compile(r"\\[a-zA-Z]+|\$[^$\n]+\$")
_MATH_UNICODE = re.compile(r"[∑∫√π≤≥≠±×÷∞∂∇∈∀∃≈→⇒]")
_URL = re.compile(r"https?://\S+|www\.\S+")
_LIST_ITEM = re.compile(r"(?m)^[ \t]*(?:[-*•]|\d{1,3}[.)])[ \t]+\S")
_MC_OPTION = re.compile(r"([A-H])[.):][ \t]+\S")

# Keyword groups: word forms (matched on lower-cased words, a trailing "s"
# tolerated) and phrases (substring counts). Counts, not flags: "prove ... then
# prove" asks for more than one proof. The phrases after the English ones are
# Chinese (simplified, and traditional where it differs), Japanese and Korean,
# made only of characters of the no-space scripts (`_NO_SPACE_RANGES`).
KEYWORD_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "coding": (
        ("code", "python", "function", "javascript", "java", "typescript", "sql", "bug",
         "debug", "compile", "compiler", "exception", "stacktrace", "script", "program",
         "programming", "implement", "implementation", "algorithm", "regex", "api", "json",
         "html", "css", "rust", "golang", "bash", "shell", "refactor", "unittest", "class",
         "method", "variable", "loop", "recursion", "database", "query", "library", "snippet"),
        ("c++", "unit test", "time complexity",
         "代码", "代碼", "编程", "編程", "程序", "程式碼", "函数", "函數", "算法", "演算法", "调试",
         "編譯", "编译", "报错", "异常", "脚本", "数据库", "接口", "正则", "变量", "循环", "递归",
         "时间复杂度", "单元测试", "コード", "プログラム", "関数", "実装", "デバッグ",
         "アルゴリズム", "スクリプト", "データベース", "変数", "エラー", "코드", "함수",
         "프로그램", "알고리즘", "구현", "디버그", "스크립트"),
    ),
    "math": (
        ("calculate", "compute", "solve", "equation", "integral", "derivative", "probability",
         "sum", "product", "percent", "percentage", "average", "mean", "total", "matrix",
         "theorem", "prime", "fraction", "ratio", "geometry", "algebra", "arithmetic",
         "polynomial", "function", "triangle", "circle", "area", "volume", "dollar", "cost",
         "price", "interest", "divide", "multiply", "remainder", "integer", "digit"),
        ("how many", "how much", "what is the value",
         "计算", "計算", "求解", "方程", "积分", "積分", "导数", "導數", "微分", "概率", "機率",
         "確率", "求和", "百分", "平均", "总共", "一共", "矩阵", "矩陣", "行列", "定理", "质数",
         "素数", "分数", "比例", "几何", "代数", "多项式", "三角形", "面积", "面積",
         "体积", "体積", "多少", "余数", "整数", "函数", "関数", "いくつ", "何個", "求めよ",
         "求めなさい", "계산", "방정식", "확률", "평균", "함수", "몇"),
    ),
    "reasoning": (
        ("prove", "proof", "why", "explain", "reason", "reasoning", "logic", "logical",
         "deduce", "infer", "argue", "argument", "justify", "analyze", "analyse", "analysis",
         "compare", "evaluate", "implication", "therefore", "hypothesis", "contradiction",
         "assume", "assumption", "puzzle", "riddle", "tradeoff", "pros", "cons"),
        ("step by step", "show that", "think carefully", "trade-off",
         "证明", "證明", "証明", "为什么", "為什麼", "解释", "解釋", "说明", "推理", "逻辑", "邏輯",
         "分析", "比较", "比較", "评估", "假设", "矛盾", "谜题", "优缺点", "一步一步", "逐步",
         "なぜ", "説明", "推論", "論理", "理由", "증명", "왜", "설명", "분석", "비교"),
    ),
    "writing": (
        ("write", "story", "poem", "essay", "creative", "letter", "email", "blog", "article",
         "draft", "compose", "rewrite", "tone", "style", "character", "narrative", "lyric",
         "song", "joke", "slogan", "script", "dialogue", "haiku", "limerick", "fiction",
         "speech", "paragraph", "headline", "tweet"),
        ("in the style of", "cover letter",
         "诗", "詩", "故事", "散文", "作文", "文章", "小说", "小說", "歌词", "歌詞", "笑话",
         "口号", "剧本", "演讲", "邮件", "博客", "俳句", "风格", "創作", "创作", "物語",
         "手紙", "書いて", "メール", "ブログ", "スタイル", "이야기", "소설", "에세이", "편지",
         "가사", "작성"),
    ),
    "summarise": (
        ("summarize", "summarise", "summary", "tldr", "condense", "shorten", "brief",
         "overview", "gist", "recap", "abstract"),
        ("key points", "main points", "tl;dr",
         "总结", "總結", "摘要", "概括", "概述", "归纳", "要点", "要點", "简述", "要約",
         "まとめ", "概要", "요약"),
    ),
    "translate": (
        ("translate", "translation", "french", "spanish", "german", "chinese", "japanese",
         "english", "italian", "portuguese", "russian", "korean", "arabic", "language"),
        ("into english",
         "翻译", "翻譯", "译成", "英文", "英语", "中文", "法语", "日语", "德语", "韩语",
         "翻訳", "訳して", "英語", "日本語", "中国語", "フランス語", "번역", "영어", "한국어"),
    ),
    "extract_classify": (
        ("extract", "classify", "classification", "categorize", "categorise", "label",
         "sentiment", "tag", "identify", "detect", "entity", "entities", "parse", "category",
         "choose", "select", "option", "answer", "correct", "true", "false"),
        ("which of the following", "list all", "find all", "yes or no",
         "提取", "抽取", "分类", "分類", "归类", "标签", "標籤", "情感分析", "识别", "識別", "实体",
         "解析", "选择", "選擇", "选项", "哪个", "哪個", "正确", "正確", "是否", "抽出", "ラベル",
         "感情分析", "選択", "選んで", "正しい", "次のうち", "추출", "분류", "선택", "정답"),
    ),
    "constraints": (
        ("must", "exactly", "only", "never", "always", "without", "should", "required",
         "require", "format", "limit", "maximum", "minimum", "strictly", "avoid",
         "include", "exclude", "words", "sentences", "bullet"),
        ("at least", "at most", "no more than", "do not", "don't", "less than", "more than",
         "必须", "必須", "只能", "不要", "不得", "至少", "最多", "不超过", "不超過", "少于", "格式",
         "限制", "以内", "严格", "嚴格", "避免", "必ず", "のみ", "しないで", "形式", "厳密",
         "반드시", "이내", "형식"),
    ),
}

_CONV_NAMES = ("conv_n_messages", "conv_n_turns", "conv_has_system", "conv_system_chars",
               "conv_user_chars", "conv_assistant_chars", "conv_input_tokens")
_STAT_NAMES = ("last_chars", "last_words", "last_lines", "last_tokens", "last_digit_ratio",
               "last_upper_ratio", "last_punct_ratio", "last_nonascii_ratio",
               "last_space_ratio", "last_avg_word_len", "last_question_marks",
               "last_code_fences", "last_code_tokens", "last_math_symbols", "last_latex",
               "last_urls", "last_list_items", "last_mc_options", "last_has_mc",
               "last_numbers")
_KW_NAMES = tuple(f"kw_{g}" for g in KEYWORD_GROUPS)

# Byte classes of the last user message, counted with one np.bincount.
_OTHER, _LOWER, _UPPER, _DIGIT, _SPACE, _NEWLINE, _PUNCT, _MATH, _NONASCII, _QMARK = range(10)
_N_CLASSES = 10


def _byte_classes() -> np.ndarray:
    table = np.full(256, _OTHER, dtype=np.intp)
    table[ord("a"):ord("z") + 1] = _LOWER
    table[ord("A"):ord("Z") + 1] = _UPPER
    table[ord("0"):ord("9") + 1] = _DIGIT
    table[[ord(" "), ord("\t"), ord("\r")]] = _SPACE
    table[ord("\n")] = _NEWLINE
    for ch in "!\"#$&'(),.:;@[\\]_`{}":
        table[ord(ch)] = _PUNCT
    for ch in "+-*/=^<>%|~":
        table[ord(ch)] = _MATH
    table[ord("?")] = _QMARK
    table[128:] = _NONASCII
    return table


def _keyword_index() -> tuple[dict[str, list[int]], list[tuple[str, int]], _CjkPhrases]:
    """Word forms -> groups, ASCII phrases (str.count), CJK phrases (vectorised)."""
    words: dict[str, list[int]] = {}
    phrases: list[tuple[str, int]] = []
    cjk: dict[str, list[int]] = {}
    for group_no, (forms, group_phrases) in enumerate(KEYWORD_GROUPS.values()):
        for form in forms:
            for variant in (form, form + "s"):
                if group_no not in words.setdefault(variant, []):
                    words[variant].append(group_no)
        for phrase in group_phrases:
            if phrase.isascii():
                phrases.append((phrase, group_no))
            elif group_no not in cjk.setdefault(phrase, []):
                cjk[phrase].append(group_no)
    return words, phrases, _CjkPhrases(cjk)


class _CjkPhrases:
    """Counts of the CJK keyword phrases in a text, per keyword group.

    On a 4,000-character CJK text a str.count per phrase costs ~1 ms for all of
    them and one regex alternation ~0.3 ms; vectorised it is ~0.06 ms. The matching
    is done over the code point array of `FeatureExtractor._tokenize`: up to three
    characters (18 bits each) pack exactly into one int64 key, looked up with
    `searchsorted` at the positions whose character starts some phrase; longer
    phrases are confirmed with `str.startswith` where their first three match.
    Counts are occurrence counts, as `str.count` gives for the ASCII phrases (except
    that a phrase overlapping itself, "哈哈" in "哈哈哈", counts twice).
    """

    _BITS = 18  # every no-space code point is below 2**18

    def __init__(self, phrases: dict[str, list[int]]) -> None:
        n_groups = len(KEYWORD_GROUPS)
        self.first = np.zeros(1 << self._BITS, dtype=bool)
        by_len: list[dict[int, np.ndarray]] = [{}, {}, {}]
        self.long: dict[int, list[tuple[str, np.ndarray]]] = {}
        for phrase, groups in phrases.items():
            codes = [ord(ch) for ch in phrase]
            self.first[codes[0]] = True
            row = np.bincount(groups, minlength=n_groups).astype(np.float64)
            key = self._key(codes[:3])
            if len(codes) <= 3:
                by_len[len(codes) - 1][key] = row
            else:
                self.long.setdefault(key, []).append((phrase, row))
        self.keys = [np.array(sorted(d), dtype=np.int64) for d in by_len]
        self.rows = [np.array([d[k] for k in sorted(d)]).reshape(len(d), n_groups)
                     for d in by_len]
        self.long_keys = np.array(sorted(self.long), dtype=np.int64)
        self.n_groups = n_groups

    @classmethod
    def _key(cls, codes: list[int]) -> int:
        key = 0
        for c in codes:
            key = (key << cls._BITS) | c
        return key

    def counts(self, text: str, chars: np.ndarray) -> np.ndarray:
        """float64 (n_groups,) phrase counts; `chars` as `_tokenize` returns them."""
        out = np.zeros(self.n_groups)
        starts = np.flatnonzero(self.first[chars])
        if not len(starts):
            return out
        padded = np.zeros(len(chars) + 2, dtype=np.int64)
        padded[:len(chars)] = chars
        key = padded[starts]
        for length in (1, 2, 3):
            if length > 1:
                key = (key << self._BITS) | padded[starts + length - 1]
            self._add(out, key, self.keys[length - 1], self.rows[length - 1])
        if len(self.long_keys):
            pos = np.minimum(np.searchsorted(self.long_keys, key), len(self.long_keys) - 1)
            hit = self.long_keys[pos] == key
            for start, k in zip(starts[hit].tolist(), key[hit].tolist(), strict=True):
                for phrase, row in self.long[k]:
                    if text.startswith(phrase, start):
                        out += row
        return out

    @staticmethod
    def _add(out: np.ndarray, key: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> None:
        if not len(keys):
            return
        pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        hit = keys[pos] == key
        if hit.any():
            out += np.bincount(pos[hit], minlength=len(keys)) @ rows


def _no_space_table() -> np.ndarray:
    """Bool per code point: True for characters of the no-space scripts. The last
    entry is False and stands for every code point beyond the table."""
    table = np.zeros(_NO_SPACE_RANGES[-1][1] + 2, dtype=bool)
    for lo, hi in _NO_SPACE_RANGES:
        table[lo:hi + 1] = True
    return table


class FeatureExtractor:
    """Conversation -> float32 feature vector, fitted once, stored in the artifact.

    Parameters are stored as given (sklearn convention); `fit` learns the idf and
    the SVD. `n_components` is the width of the text representation (it is
    zero-padded when a tiny training set cannot support that many); `max_chars`
    caps the text hashed per conversation (the tail of very long prompts adds
    cost, not signal); `svd_max_docs` caps the prompts the SVD is fitted on
    (idf always uses all of them).
    """

    def __init__(self, n_components: int = 64, n_hash_features: int = 2**18, *,
                 max_chars: int = 32_000, svd_max_docs: int = 100_000,
                 random_state: int = 0) -> None:
        self.n_components = n_components
        self.n_hash_features = n_hash_features
        self.max_chars = max_chars
        self.svd_max_docs = svd_max_docs
        self.random_state = random_state

    # -- state that is rebuilt, never pickled ------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_memo", "_bucket_pos", "_classes", "_kw_words", "_kw_phrases",
                    "_kw_cjk", "_no_space"):
            state.pop(key, None)
        return state

    def _runtime(self) -> None:
        if "_classes" not in self.__dict__:
            self._memo: dict[str, int] = {}
            self._classes = _byte_classes()
            self._no_space = _no_space_table()
            self._kw_words, self._kw_phrases, self._kw_cjk = _keyword_index()

    # -- public API ----------------------------------------------------------------
    @property
    def feature_names_(self) -> list[str]:
        self._check_fitted()
        return [*_CONV_NAMES, *_STAT_NAMES, *_KW_NAMES,
                *(f"svd_{i}" for i in range(self.n_components))]

    def fit(self, conversations: Iterable[Any]) -> FeatureExtractor:
        """Learn idf and the SVD from the training prompts; returns `self`."""
        from scipy import sparse
        from sklearn.decomposition import TruncatedSVD
        from sklearn.preprocessing import normalize

        if not isinstance(self.n_components, int) or self.n_components < 1:
            raise DataError(f"n_components must be a positive integer, got "
                            f"{self.n_components!r}")
        if not isinstance(self.n_hash_features, int) or self.n_hash_features < 16:
            raise DataError(f"n_hash_features must be an integer >= 16, got "
                            f"{self.n_hash_features!r}")
        self._runtime()
        convs = _as_conversations(conversations)
        if not convs:
            raise DataError("cannot fit features on zero conversations",
                            hint="the training table has no prompts")
        buckets = [self._hash_counts(*self._tokenize(self._rep_text(c))) for c in convs]
        n_docs = len(convs)
        indptr = np.zeros(n_docs + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(b[0]) for b in buckets])
        cols = np.concatenate([b[0] for b in buckets]) if n_docs else np.zeros(0, np.int64)
        tf = np.concatenate([b[1] for b in buckets]).astype(np.float64)
        seen, local = np.unique(cols, return_inverse=True)
        df = np.bincount(local, minlength=len(seen)).astype(np.float64)
        # Smoothed idf, as sklearn's TfidfTransformer(smooth_idf=True).
        idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
        values = (1.0 + np.log(tf)) * idf[local]
        matrix = normalize(sparse.csr_matrix((values, local, indptr),
                                             shape=(n_docs, len(seen))))

        k = min(self.n_components, n_docs - 1, len(seen) - 1)
        components = np.zeros((len(seen), self.n_components), dtype=np.float32)
        if k >= 1:
            rng = np.random.default_rng(self.random_state)
            rows = (np.sort(rng.choice(n_docs, self.svd_max_docs, replace=False))
                    if n_docs > self.svd_max_docs else slice(None))
            svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=5,
                               random_state=self.random_state)
            svd.fit(matrix[rows])
            components[:, :k] = svd.components_.T
        self.buckets_ = seen.astype(np.int64)
        self.idf_ = idf.astype(np.float32)
        self.unseen_idf_ = float(np.log((1.0 + n_docs) / 1.0) + 1.0)
        # idf folded into the components: a request needs one gather and one dot.
        self.projection_ = np.ascontiguousarray(components * self.idf_[:, None])
        self.n_components_fitted_ = int(max(k, 0))
        self.n_docs_ = n_docs
        self.__dict__.pop("_bucket_pos", None)
        return self

    def transform(self, conversations: Iterable[Any]) -> np.ndarray:
        """float32 matrix (n, len(feature_names_)); same rows whatever the batch."""
        return self._transform(conversations, None)

    def transform_with_tfidf(self, conversations: Iterable[Any]
                             ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """`transform` plus each prompt's sparse TF-IDF row, from one tokenisation.

        The rows are `(positions, values)`: positions index `buckets_` (only
        training-seen hash buckets), values are float32 `tf * idf / norm` (hashed
        word 1-2-grams, tf = 1 + log(count), smoothed idf, L2 norm counting unseen
        buckets too). This is the vector the linear quality head reads, at fit
        time (`tfidf_matrix`) and at serve time, so the two cannot disagree.
        """
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        return self._transform(conversations, rows), rows

    def tfidf_matrix(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> Any:
        """scipy CSR float32 matrix (len(rows), len(buckets_)) of `transform_with_tfidf` rows."""
        from scipy import sparse

        self._check_fitted()
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(p) for p, _ in rows])
        cols = (np.concatenate([p for p, _ in rows]) if rows else np.zeros(0, np.int32))
        vals = (np.concatenate([v for _, v in rows]) if rows else np.zeros(0, np.float32))
        return sparse.csr_matrix((vals, cols, indptr), shape=(len(rows), len(self.buckets_)))

    def _transform(self, conversations: Iterable[Any],
                   rows: list[tuple[np.ndarray, np.ndarray]] | None) -> np.ndarray:
        self._check_fitted()
        convs = _as_conversations(conversations)
        width = len(_CONV_NAMES) + len(_STAT_NAMES) + len(_KW_NAMES) + self.n_components
        out = np.empty((len(convs), width), dtype=np.float32)
        for i, conv in enumerate(convs):
            out[i] = self._one(conv, rows)
        return out

    def fit_transform(self, conversations: Iterable[Any]) -> np.ndarray:
        convs = _as_conversations(conversations)
        return self.fit(convs).transform(convs)

    def embed(self, conversations: Iterable[Any]) -> np.ndarray:
        """float32 (n, n_components), the L2-normalised text representation alone."""
        self._check_fitted()
        self._runtime()
        convs = _as_conversations(conversations)
        out = np.zeros((len(convs), self.n_components), dtype=np.float32)
        for i, conv in enumerate(convs):
            z = self._project(self._tfidf_row(*self._tokenize(self._rep_text(conv))))
            norm = float(np.sqrt(np.dot(z, z)))
            if norm > 0:
                out[i] = z / norm
        return out

    # -- internals ---------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "projection_"):
            raise NotFittedError("FeatureExtractor is not fitted",
                                 hint="call fit(conversations) first, or load a trained "
                                      "artifact with QualityModel.load(dir)")

    def _rep_text(self, conv: Conversation) -> str:
        """System prompt and all user text, lower-cased and capped: what is hashed."""
        parts = (conv.system, *conv.user_messages) if conv.system else conv.user_messages
        return "\n".join(parts)[: self.max_chars].lower()

    def _tokenize(self, text: str) -> tuple[list[str], np.ndarray | None]:
        """Words of `text` and, when it has any, its no-space-script characters.

        The characters come as an int32 code point array as long as `text`, 0
        where a character is not of a no-space script (a run boundary); words are
        then the `\\w\\w+` runs of the other characters. Text without such
        characters gives exactly the `\\w\\w+` words and None.
        """
        if text.isascii():
            return _TOKEN.findall(text), None
        table = self._no_space
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        inside = table[np.minimum(codes, len(table) - 1)]
        if not inside.any():
            return _TOKEN.findall(text), None
        chars = np.where(inside, codes, 0).astype(np.int32)
        return _WORD.findall(text), chars

    def _hash_counts(self, tokens: list[str], chars: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Hash buckets and counts of the word 1-2-grams of `tokens` and of the
        character 1-2-grams of `chars` (bigrams never cross a 0, a run boundary)."""
        from sklearn.utils import murmurhash3_32

        memo = self._memo
        if len(memo) > 500_000:
            memo.clear()  # bounded: a long-running server sees unbounded vocabularies
        hashes = list(map(memo.get, tokens))
        if None in hashes:
            for i, token in enumerate(tokens):
                if hashes[i] is None:
                    h = memo.get(token)
                    if h is None:
                        h = memo[token] = int(murmurhash3_32(token, positive=True))
                    hashes[i] = h
        uni = np.array(hashes, dtype=np.int64)
        parts = [uni, _mix(uni[:-1], uni[1:])]
        if chars is not None:
            inside = chars != 0
            h = np.zeros(len(chars), dtype=np.int64)
            h[inside] = murmurhash3_32(chars[inside], positive=True)
            both = inside[:-1] & inside[1:]
            parts += [h[inside], _mix(h[:-1][both], h[1:][both])]
        allh = np.concatenate(parts)
        if not len(allh):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        idx, counts = np.unique(allh % self.n_hash_features, return_counts=True)
        return idx, counts

    def _tfidf_row(self, tokens: list[str], chars: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, float]:
        """(positions among `buckets_`, tf of those buckets, norm) of one prompt.

        The TF-IDF row is `tf * idf_[pos] / norm`; unseen buckets carry the largest
        idf and count in the norm, as in sklearn's TfidfTransformer, so a prompt of
        mostly new words has small weights. norm 0 means an all-zero row.
        """
        idx, counts = self._hash_counts(tokens, chars)
        if len(idx) == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32), 0.0
        pos = self._positions()[idx]
        tf = (1.0 + np.log(counts)).astype(np.float32)
        known = pos >= 0
        seen_tf = tf[known]
        pos = pos[known]
        seen_w = seen_tf * self.idf_[pos]
        unseen_w = tf[~known] * np.float32(self.unseen_idf_)
        norm = float(np.sqrt(np.dot(seen_w, seen_w) + np.dot(unseen_w, unseen_w)))
        return pos, seen_tf, norm

    def _project(self, row: tuple[np.ndarray, np.ndarray, float]) -> np.ndarray:
        pos, tf, norm = row
        if len(pos) == 0 or norm == 0.0:
            return np.zeros(self.n_components, dtype=np.float32)
        return (tf @ self.projection_[pos]) / np.float32(norm)

    def _positions(self) -> np.ndarray:
        pos = self.__dict__.get("_bucket_pos")
        if pos is None:
            pos = np.full(self.n_hash_features, -1, dtype=np.int32)
            pos[self.buckets_] = np.arange(len(self.buckets_), dtype=np.int32)
            self._bucket_pos = pos
        return pos

    def _one(self, conv: Conversation,
             rows: list[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
        self._runtime()
        text = self._rep_text(conv)
        tokens, chars = self._tokenize(text)
        system = conv.system
        user_chars = sum(len(u) for u in conv.user_messages)
        assistant_chars = sum(len(m.content) for m in conv.messages if m.role == "assistant")
        head = [len(conv.messages), conv.n_turns, 1.0 if system else 0.0, len(system),
                user_chars, assistant_chars, conv.input_tokens]
        stats = self._stats(conv.last_user)
        keywords = self._keywords(tokens, text, chars)
        row = self._tfidf_row(tokens, chars)
        if rows is not None:
            rows.append(_sparse_row(row, self.idf_))
        z = self._project(row)
        return np.concatenate((np.asarray(head + stats + keywords, dtype=np.float32), z))

    def _stats(self, text: str) -> list[float]:
        raw = text.encode("utf-8", "replace")
        n_bytes = max(len(raw), 1)
        classes = self._classes[np.frombuffer(raw, dtype=np.uint8)]
        counts = np.bincount(classes, minlength=_N_CLASSES)
        n_words = len(text.split())
        non_space = len(raw) - counts[_SPACE] - counts[_NEWLINE]
        options = set()
        for match in _MC_OPTION.finditer(text):
            start = match.start()
            if start == 0 or text[start - 1] in " \t\n(":
                options.add(match.group(1))
        digits = classes == _DIGIT
        # Runs of digits: "3.14" is two, good enough to tell arithmetic from prose.
        numbers = (int(digits[0]) + int(np.count_nonzero(digits[1:] & ~digits[:-1]))
                   if len(digits) else 0)
        return [
            float(len(text)),
            float(n_words),
            float(text.count("\n") + 1 if text else 0),
            float(estimate_tokens(text) if text else 0),
            counts[_DIGIT] / n_bytes,
            counts[_UPPER] / n_bytes,
            (counts[_PUNCT] + counts[_MATH] + counts[_QMARK]) / n_bytes,
            counts[_NONASCII] / n_bytes,
            (counts[_SPACE] + counts[_NEWLINE]) / n_bytes,
            non_space / n_words if n_words else 0.0,
            float(counts[_QMARK]),
            float(text.count("```")),
            float(sum(text.count(mark) for mark in _CODE_MARKS)),
            # The regex scans are skipped when a substring every match needs is
            # absent (a plain substring search is ~10x cheaper than the scan); the
            # counts are the same.
            float(counts[_MATH] + (0 if counts[_NONASCII] == 0
                                   else len(_MATH_UNICODE.findall(text)))),
            float(len(_LATEX.findall(text)) if "\\" in text or "$" in text else 0),
            float(len(_URL.findall(text)) if "http" in text or "www." in text else 0),
            float(len(_LIST_ITEM.findall(text))),
            float(len(options)),
            1.0 if {"A", "B", "C"} <= options else 0.0,
            float(numbers),
        ]

    def _keywords(self, tokens: list[str], text: str,
                  chars: np.ndarray | None) -> list[float]:
        counts = [0.0] * len(KEYWORD_GROUPS)
        words = self._kw_words
        bag = Counter(tokens)
        for token in bag.keys() & words.keys():
            for g in words[token]:
                counts[g] += bag[token]
        for phrase, g in self._kw_phrases:
            counts[g] += text.count(phrase)
        if chars is not None:  # CJK phrases need no-space characters
            counts = (np.asarray(counts) + self._kw_cjk.counts(text, chars)).tolist()
        return counts


def _mix(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """One bigram hash from its two unigram hashes (int64, non-negative)."""
    pair = left * 1_000_003 + right
    pair ^= pair >> 29
    return pair


def _sparse_row(row: tuple[np.ndarray, np.ndarray, float],
                idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos, tf, norm = row
    if len(pos) == 0 or norm == 0.0:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    return pos, tf * idf[pos] / np.float32(norm)


def _as_conversations(values: Iterable[Any]) -> list[Conversation]:
    if isinstance(values, str | Conversation):
        raise DataError("expected a list of conversations, got a single "
                        f"{type(values).__name__}",
                        hint="wrap it in a list: transform([conversation])")
    return [v if isinstance(v, Conversation) else parse_conversation(v, where=f"item {i}")
            for i, v in enumerate(values)]
