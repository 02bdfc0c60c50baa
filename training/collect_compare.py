"""The per-model comparison `router collect` prints: quality, cost, latency, tokens, errors.

Pure functions of the output table (`read_results`), so the comparison of any
earlier run can be printed again without calling a model. Timing is P50/P99 of
the whole call (`latency_ms`, retries included) and of the first byte
(`ttfb_ms`; collect's calls are not streamed, so it comes with the whole answer),
computed as `router report` computes them (`training.report.timing_figures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from training.report import timing_figures

__all__ = ["comparison_table", "format_comparison"]


def comparison_table(table: pd.DataFrame, models: Sequence[str] | None = None
                     ) -> list[dict[str, Any]]:
    """Per model: mean quality, cost per request, P50/P99 latency and time to first
    byte, tokens, error rate.

    Quality is the mean over graded rows; cost, latency and tokens over rows whose
    call succeeded; `error_rate` is failed calls / pairs; `grade_errors` counts
    answers that could not be graded.
    """
    names = list(models) if models is not None else list(dict.fromkeys(table["model"]))
    rows: list[dict[str, Any]] = []
    for model in names:
        part = table[table["model"] == model]
        ok = part[part["status"] == "ok"]
        graded = part["quality"].dropna()

        def mean(values: pd.Series) -> float | None:
            values = values.dropna()
            return float(values.mean()) if len(values) else None

        rows.append({
            "model": model,
            "pairs": int(len(part)),
            "graded": int(len(graded)),
            "mean_quality": float(graded.mean()) if len(graded) else None,
            "cost_per_request_usd": mean(ok["cost_usd"]),
            "total_cost_usd": float(part["cost_usd"].fillna(0).sum()),
            **timing_figures(ok["latency_ms"], ok.get("ttfb_ms", pd.Series(dtype="float64"))),
            "mean_input_tokens": mean(ok["input_tokens"]),
            "mean_output_tokens": mean(ok["output_tokens"]),
            "error_rate": float((part["status"] == "error").mean()) if len(part) else None,
            "grade_errors": int(part["grade_error"].notna().sum())
            if "grade_error" in part.columns else 0,
        })
    return rows


def format_comparison(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as an aligned text table (blank where there is no value)."""
    header = ("model", "pairs", "quality", "cost/req $", "p50 ms", "p99 ms", "ttfb p50",
              "ttfb p99", "tok in", "tok out", "errors", "ungraded")

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [header]
    for r in rows:
        lines.append((
            r["model"], str(r["pairs"]), fmt(r["mean_quality"], ".3f"),
            fmt(r["cost_per_request_usd"], ".6f"), fmt(r["p50_latency_ms"], ".0f"),
            fmt(r["p99_latency_ms"], ".0f"), fmt(r["p50_ttft_ms"], ".0f"),
            fmt(r["p99_ttft_ms"], ".0f"), fmt(r["mean_input_tokens"], ".0f"),
            fmt(r["mean_output_tokens"], ".0f"),
            "-" if r["error_rate"] is None else f"{100 * r['error_rate']:.1f}%",
            str(r["grade_errors"]),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
        for line in lines)
