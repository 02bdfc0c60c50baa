"""`FeatureExtractor`: fit idf and the SVD, transform conversations, one row each.

The vector's layout and the reasons behind it are in the `router.features`
docstring.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from router.conversation import Conversation, parse_conversation
from router.errors import DataError, NotFittedError
from router.features._keywords import KW_NAMES, KeywordIndex
from router.features._stats import (
    CONV_NAMES,
    STAT_NAMES,
    byte_classes,
    conversation_shape,
    last_message_stats,
)
from router.features._tokens import hash_counts, no_space_table, tokenize

__all__ = ["FEATURE_SCHEMA_VERSION", "FeatureExtractor"]

# 2: characters of no-space scripts are 1-2-grams (not one word per run), and the
# keyword groups count CJK phrases.
FEATURE_SCHEMA_VERSION = 2


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
        for key in ("_memo", "_bucket_pos", "_classes", "_keywords", "_no_space"):
            state.pop(key, None)
        return state

    def _runtime(self) -> None:
        if "_classes" not in self.__dict__:
            self._memo: dict[str, int] = {}
            self._classes = byte_classes()
            self._no_space = no_space_table()
            self._keywords = KeywordIndex()

    # -- public API ----------------------------------------------------------------
    @property
    def feature_names_(self) -> list[str]:
        self._check_fitted()
        return [*CONV_NAMES, *STAT_NAMES, *KW_NAMES,
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
        convs = as_conversations(conversations)
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
        convs = as_conversations(conversations)
        width = len(CONV_NAMES) + len(STAT_NAMES) + len(KW_NAMES) + self.n_components
        out = np.empty((len(convs), width), dtype=np.float32)
        for i, conv in enumerate(convs):
            out[i] = self._one(conv, rows)
        return out

    def fit_transform(self, conversations: Iterable[Any]) -> np.ndarray:
        convs = as_conversations(conversations)
        return self.fit(convs).transform(convs)

    def embed(self, conversations: Iterable[Any]) -> np.ndarray:
        """float32 (n, n_components), the L2-normalised text representation alone."""
        self._check_fitted()
        self._runtime()
        convs = as_conversations(conversations)
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
        return tokenize(text, self._no_space)

    def _hash_counts(self, tokens: list[str], chars: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        return hash_counts(self._memo, tokens, chars, self.n_hash_features)

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
        head = conversation_shape(conv)
        stats = last_message_stats(conv.last_user, self._classes)
        keywords = self._keywords.counts(tokens, text, chars)
        row = self._tfidf_row(tokens, chars)
        if rows is not None:
            rows.append(sparse_row(row, self.idf_))
        z = self._project(row)
        return np.concatenate((np.asarray(head + stats + keywords, dtype=np.float32), z))


def sparse_row(row: tuple[np.ndarray, np.ndarray, float],
                idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos, tf, norm = row
    if len(pos) == 0 or norm == 0.0:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    return pos, tf * idf[pos] / np.float32(norm)


def as_conversations(values: Iterable[Any]) -> list[Conversation]:
    if isinstance(values, str | Conversation):
        raise DataError("expected a list of conversations, got a single "
                        f"{type(values).__name__}",
                        hint="wrap it in a list: transform([conversation])")
    return [v if isinstance(v, Conversation) else parse_conversation(v, where=f"item {i}")
            for i, v in enumerate(values)]
