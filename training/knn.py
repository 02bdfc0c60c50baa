"""RouterBench's kNN baseline router, fitted on training prompts or cross-fitted.

Each model's quality for a prompt is the mean realised quality of its k nearest
training prompts (cosine on `model.features_.embed`), its cost the model's mean
training cost. `training.evaluate` sweeps its predictions like the router's;
benchmarks pool out-of-fold kNN predictions the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training.data import conversations, outcome_matrices

__all__ = ["DEFAULT_KNN_K", "KnnPrediction", "knn_baseline", "knn_quality"]

DEFAULT_KNN_K = 20
_CROSS_FIT_FOLDS = 5


@dataclass(frozen=True)
class KnnPrediction:
    """The kNN baseline's predictions for the evaluated prompts (n, m)."""

    quality: np.ndarray
    cost_usd: np.ndarray
    k: int
    fitted_on: str


def knn_quality(train_vectors: np.ndarray, train_quality: np.ndarray,
                query_vectors: np.ndarray, k: int, *, chunk: int = 2048) -> np.ndarray:
    """Mean quality of the k most cosine-similar training prompts, per query and model.

    Vectors must be L2-normalised (as `embed` returns them), so the dot product is
    the cosine. Computed in chunks so 10^4 x 10^4 prompts fit in memory.
    """
    k = max(1, min(k, train_vectors.shape[0]))
    train_t = np.ascontiguousarray(train_vectors.T, dtype=np.float32)
    out = np.empty((query_vectors.shape[0], train_quality.shape[1]))
    for start in range(0, query_vectors.shape[0], chunk):
        sims = np.asarray(query_vectors[start:start + chunk], dtype=np.float32) @ train_t
        if k < sims.shape[1]:
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            nearest = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        out[start:start + chunk] = train_quality[nearest].mean(axis=1)
    return out


def knn_baseline(model: Any, ids: list[str], convs: list[Any], quality: np.ndarray,
                 cost: np.ndarray, models: list[str], train_table: pd.DataFrame | None,
                 k: int, seed: int, notes: list[str]) -> KnnPrediction | None:
    """The kNN predictions for the evaluated prompts (`ids`, `convs`): fitted on
    `train_table` minus those prompts when given, else cross-fitted over 5 folds of
    them; None (with a note) when the model has no embedding or too few prompts."""
    features = getattr(model, "features_", None)
    if features is None or not hasattr(features, "embed"):
        notes.append("kNN baseline skipped: the model has no features_.embed")
        return None
    query = np.asarray(features.embed(convs), dtype=np.float32)
    if train_table is not None:
        evaluated = set(ids)
        train = train_table[~train_table["prompt_id"].astype(str).isin(evaluated)]
        if len(train):
            t_ids, t_convs = conversations(train)
            t_quality, t_cost = outcome_matrices(train, models, t_ids)
            ok = np.isfinite(t_quality).all(axis=1) & np.isfinite(t_cost).all(axis=1)
            if ok.sum() >= 1:
                t_vec = np.asarray(features.embed([c for c, g in zip(t_convs, ok, strict=True)
                                                   if g]), dtype=np.float32)
                pq = knn_quality(t_vec, t_quality[ok], query, k)
                mean_cost = np.broadcast_to(t_cost[ok].mean(axis=0), pq.shape)
                return KnnPrediction(pq, mean_cost, min(k, int(ok.sum())), "train_table")
        notes.append("kNN: the training table has no usable prompt outside the evaluated "
                     "ones; cross-fitted on the evaluated prompts instead")
    n = len(ids)
    if n < 2:
        notes.append("kNN baseline skipped: fewer than 2 prompts")
        return None
    folds = np.random.default_rng(seed).permutation(n) % min(_CROSS_FIT_FOLDS, n)
    pq = np.empty_like(quality)
    pc = np.empty_like(cost)
    for f in np.unique(folds):
        test, train = folds == f, folds != f
        pq[test] = knn_quality(query[train], quality[train], query[test], k)
        pc[test] = cost[train].mean(axis=0)
    n_train = n - int(np.bincount(folds).max())
    return KnnPrediction(pq, pc, min(k, n_train), "cross-fit")
