"""RouteLLM's two-model figures of an evaluation: APGR and CPT(50%) / CPT(80%).

With exactly two models the score is the predicted quality gap q_strong - q_weak,
thresholded at RouteLLM's 10 quantile bins (the protocol of the published
figures); `training.evaluate` adds them to its report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training import metrics

__all__ = ["add_two_model", "two_model_metrics"]


def two_model_metrics(shares: np.ndarray, quals: np.ndarray, q_weak: float,
                      q_strong: float) -> dict[str, Any]:
    """APGR, CPT(50%), CPT(80%) and the curve of one strong-call share curve."""
    return {
        "apgr": metrics.apgr(shares, quals, q_weak, q_strong),
        "cpt50": metrics.cpt(shares, quals, q_weak, q_strong, 0.5),
        "cpt80": metrics.cpt(shares, quals, q_weak, q_strong, 0.8),
        "curve": [{"strong_share": float(s), "quality": float(q)}
                  for s, q in zip(shares, quals, strict=True)],
    }


def add_two_model(report: Any, pq: np.ndarray, knn_pq: np.ndarray | None,
                  quality: np.ndarray, models: list[str], single_quality: np.ndarray) -> None:
    """Fill `report.two_model`, `.apgr`, `.cpt50`, `.cpt80` (an `EvalReport` of two
    models): the strong-call share curve of the router, kNN, random and the oracle."""
    strong = int(np.argmax(single_quality))
    weak = 1 - strong
    q_weak, q_strong = float(single_quality[weak]), float(single_quality[strong])
    if abs(q_strong - q_weak) < 1e-12:
        report.notes.append("APGR/CPT skipped: both models have the same mean quality")
        return
    qw, qs = quality[:, weak], quality[:, strong]
    shares, quals = metrics.two_model_curve(pq[:, strong] - pq[:, weak], qw, qs)
    router = two_model_metrics(shares, quals, q_weak, q_strong)
    p = np.linspace(0.0, 1.0, 11)
    section: dict[str, Any] = {
        "weak": models[weak], "strong": models[strong],
        "q_weak": q_weak, "q_strong": q_strong,
        "router": router,
        "random": two_model_metrics(p, q_weak + p * (q_strong - q_weak), q_weak, q_strong),
        "oracle": two_model_metrics(*metrics.oracle_two_model_curve(qw, qs), q_weak, q_strong),
    }
    section["oracle"].pop("curve")  # one point per prompt: too long to print
    if knn_pq is not None:
        kshares, kquals = metrics.two_model_curve(knn_pq[:, strong] - knn_pq[:, weak], qw, qs)
        section["knn"] = two_model_metrics(kshares, kquals, q_weak, q_strong)
    report.two_model = section
    report.apgr, report.cpt50, report.cpt80 = router["apgr"], router["cpt50"], router["cpt80"]
