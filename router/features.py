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
* a learned text representation: hashed word 1-2-grams -> TF-IDF (idf fitted) ->
  truncated SVD with `n_components` dimensions. `embed` returns it alone,
  L2-normalised (the kNN baseline and the semantic cache use it);
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

FEATURE_SCHEMA_VERSION = 1

# Same tokens as sklearn's default `\b\w\w+\b` (greedy \w+ makes the \b redundant,
# and dropping them halves the time).
_TOKEN = re.compile(r"\w\w+")
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
# prove" asks for more than one proof.
KEYWORD_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "coding": (
        ("code", "python", "function", "javascript", "java", "typescript", "sql", "bug",
         "debug", "compile", "compiler", "exception", "stacktrace", "script", "program",
         "programming", "implement", "implementation", "algorithm", "regex", "api", "json",
         "html", "css", "rust", "golang", "bash", "shell", "refactor", "unittest", "class",
         "method", "variable", "loop", "recursion", "database", "query", "library", "snippet"),
        ("c++", "unit test", "time complexity"),
    ),
    "math": (
        ("calculate", "compute", "solve", "equation", "integral", "derivative", "probability",
         "sum", "product", "percent", "percentage", "average", "mean", "total", "matrix",
         "theorem", "prime", "fraction", "ratio", "geometry", "algebra", "arithmetic",
         "polynomial", "function", "triangle", "circle", "area", "volume", "dollar", "cost",
         "price", "interest", "divide", "multiply", "remainder", "integer", "digit"),
        ("how many", "how much", "what is the value"),
    ),
    "reasoning": (
        ("prove", "proof", "why", "explain", "reason", "reasoning", "logic", "logical",
         "deduce", "infer", "argue", "argument", "justify", "analyze", "analyse", "analysis",
         "compare", "evaluate", "implication", "therefore", "hypothesis", "contradiction",
         "assume", "assumption", "puzzle", "riddle", "tradeoff", "pros", "cons"),
        ("step by step", "show that", "think carefully", "trade-off"),
    ),
    "writing": (
        ("write", "story", "poem", "essay", "creative", "letter", "email", "blog", "article",
         "draft", "compose", "rewrite", "tone", "style", "character", "narrative", "lyric",
         "song", "joke", "slogan", "script", "dialogue", "haiku", "limerick", "fiction",
         "speech", "paragraph", "headline", "tweet"),
        ("in the style of", "cover letter"),
    ),
    "summarise": (
        ("summarize", "summarise", "summary", "tldr", "condense", "shorten", "brief",
         "overview", "gist", "recap", "abstract"),
        ("key points", "main points", "tl;dr"),
    ),
    "translate": (
        ("translate", "translation", "french", "spanish", "german", "chinese", "japanese",
         "english", "italian", "portuguese", "russian", "korean", "arabic", "language"),
        ("into english",),
    ),
    "extract_classify": (
        ("extract", "classify", "classification", "categorize", "categorise", "label",
         "sentiment", "tag", "identify", "detect", "entity", "entities", "parse", "category",
         "choose", "select", "option", "answer", "correct", "true", "false"),
        ("which of the following", "list all", "find all", "yes or no"),
    ),
    "constraints": (
        ("must", "exactly", "only", "never", "always", "without", "should", "required",
         "require", "format", "limit", "maximum", "minimum", "strictly", "avoid",
         "include", "exclude", "words", "sentences", "bullet"),
        ("at least", "at most", "no more than", "do not", "don't", "less than", "more than"),
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


def _keyword_index() -> tuple[dict[str, list[int]], list[tuple[str, int]]]:
    words: dict[str, list[int]] = {}
    phrases: list[tuple[str, int]] = []
    for group_no, (forms, group_phrases) in enumerate(KEYWORD_GROUPS.values()):
        for form in forms:
            for variant in (form, form + "s"):
                if group_no not in words.setdefault(variant, []):
                    words[variant].append(group_no)
        phrases.extend((p, group_no) for p in group_phrases)
    return words, phrases


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
        for key in ("_memo", "_bucket_pos", "_classes", "_kw_words", "_kw_phrases"):
            state.pop(key, None)
        return state

    def _runtime(self) -> None:
        if "_classes" not in self.__dict__:
            self._memo: dict[str, int] = {}
            self._classes = _byte_classes()
            self._kw_words, self._kw_phrases = _keyword_index()

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
        buckets = [self._hash_counts(_TOKEN.findall(self._rep_text(c))) for c in convs]
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
            z = self._project(self._tfidf_row(_TOKEN.findall(self._rep_text(conv))))
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

    def _hash_counts(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Hash buckets and counts of the word 1-2-grams of `tokens`."""
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
        if not hashes:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        uni = np.array(hashes, dtype=np.int64)
        pair = uni[:-1] * 1_000_003 + uni[1:]
        pair ^= pair >> 29
        allh = np.concatenate((uni, pair)) % self.n_hash_features
        idx, counts = np.unique(allh, return_counts=True)
        return idx, counts

    def _tfidf_row(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
        """(positions among `buckets_`, tf of those buckets, norm) of one prompt.

        The TF-IDF row is `tf * idf_[pos] / norm`; unseen buckets carry the largest
        idf and count in the norm, as in sklearn's TfidfTransformer, so a prompt of
        mostly new words has small weights. norm 0 means an all-zero row.
        """
        idx, counts = self._hash_counts(tokens)
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
        tokens = _TOKEN.findall(text)
        system = conv.system
        user_chars = sum(len(u) for u in conv.user_messages)
        assistant_chars = sum(len(m.content) for m in conv.messages if m.role == "assistant")
        head = [len(conv.messages), conv.n_turns, 1.0 if system else 0.0, len(system),
                user_chars, assistant_chars, conv.input_tokens]
        stats = self._stats(conv.last_user)
        keywords = self._keywords(tokens, text)
        row = self._tfidf_row(tokens)
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

    def _keywords(self, tokens: list[str], text: str) -> list[float]:
        counts = [0.0] * len(KEYWORD_GROUPS)
        words = self._kw_words
        bag = Counter(tokens)
        for token in bag.keys() & words.keys():
            for g in words[token]:
                counts[g] += bag[token]
        for phrase, g in self._kw_phrases:
            counts[g] += text.count(phrase)
        return counts


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
