"""The table's parts in `router simulate`: the seeded split, and the held-out scorer.

Step 1 and 2 of the loop described in `training.simulate` need the table split
once by prompt (so a prompt's outcomes for every model stay in one part) into the
held-out part, the traffic pool and, first of the pool, the initial router's
prompts. `HeldOut` holds the held-out part as matrices and scores any model on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from router.errors import ConfigError, DataError
from training.data import conversations, outcome_matrices
from training.evaluate import report_from_predictions
from training.sweep import calibration_of

__all__ = ["MIN_PROMPTS", "TableSplit", "split_table", "HeldOut"]

MIN_PROMPTS = 10


@dataclass
class TableSplit:
    """The parts of one table. `table` is the input with one prompt id per text.

    `pool_ids` are the traffic prompts in their shuffled order, `initial_ids` the
    first of them; `messages` maps each pool prompt to the chat messages to send.
    """

    table: pd.DataFrame
    eval_table: pd.DataFrame
    pool_table: pd.DataFrame
    initial_table: pd.DataFrame
    pool_ids: list[str]
    initial_ids: list[str]
    n_eval: int
    messages: dict[str, Any]


def split_table(table: pd.DataFrame, *, eval_frac: float, initial_frac: float, seed: int,
                echo: Callable[[str], None]) -> TableSplit:
    """Split `table` (from `load_outcomes`) into held-out, pool and initial prompts."""
    for column in ("prompt_id", "messages", "model", "quality", "cost_usd"):
        if column not in table:
            raise DataError(f"outcome table: missing column {column!r}",
                            hint="load it with training.data.load_outcomes")
    table = _one_id_per_text(table, echo)
    ids = table["prompt_id"].astype(str).drop_duplicates().to_numpy()
    if len(ids) < MIN_PROMPTS:
        raise DataError(f"the table has {len(ids)} prompts; the simulation needs at least "
                        f"{MIN_PROMPTS} (held-out part, initial set, traffic)",
                        hint="use a larger table, e.g. `router demo-data --prompts 300`")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_eval = max(2, int(round(eval_frac * len(ids))))
    eval_ids = ids[order[:n_eval]]
    pool_ids = [str(p) for p in ids[order[n_eval:]]]
    n_init = max(2, int(round(initial_frac * len(pool_ids))))
    if n_init >= len(pool_ids):
        raise ConfigError(f"--initial-frac {initial_frac} leaves no traffic prompt "
                          "that the initial router has not seen",
                          hint="use a smaller share, e.g. 0.1")
    initial_ids = pool_ids[:n_init]
    key = table["prompt_id"].astype(str)
    pool_table = table[key.isin(set(pool_ids))].reset_index(drop=True)
    firsts = pool_table.drop_duplicates("prompt_id")
    return TableSplit(
        table=table,
        eval_table=table[key.isin(set(eval_ids))].reset_index(drop=True),
        pool_table=pool_table,
        initial_table=table[key.isin(set(initial_ids))].reset_index(drop=True),
        pool_ids=pool_ids, initial_ids=initial_ids, n_eval=n_eval,
        messages={str(p): json.loads(m)
                  for p, m in zip(firsts["prompt_id"], firsts["messages"], strict=True)})


def _one_id_per_text(table: pd.DataFrame, echo: Callable[[str], None]) -> pd.DataFrame:
    """Drop prompts whose conversation repeats an earlier prompt's.

    The provider answers by conversation, so two ids with one text would share
    one recorded outcome, and the same text could sit both in the held-out part
    and in the traffic: the first id per text is kept.
    """
    from router.conversation import parse_conversation

    firsts = table.drop_duplicates("prompt_id")
    seen: set[str] = set()
    keep: set[str] = set()
    for pid, messages in zip(firsts["prompt_id"].astype(str), firsts["messages"],
                             strict=True):
        digest = parse_conversation(json.loads(messages), where=f"prompt_id {pid!r}").digest
        if digest not in seen:
            seen.add(digest)
            keep.add(pid)
    dropped = len(firsts) - len(keep)
    if not dropped:
        return table
    echo(f"dropped {dropped} prompts whose text repeats an earlier prompt's "
         "(the simulated provider answers by text)")
    return table[table["prompt_id"].astype(str).isin(keep)].reset_index(drop=True)


class HeldOut:
    """The held-out part as matrices, ready to score any model's AIQ on it."""

    def __init__(self, table: pd.DataFrame) -> None:
        ids, convs = conversations(table)
        self.models = sorted(table["model"].astype(str).unique())
        quality, cost = outcome_matrices(table, self.models, ids)
        complete = np.isfinite(quality).all(axis=1) & np.isfinite(cost).all(axis=1)
        if complete.sum() < 2:
            raise DataError(f"only {int(complete.sum())} held-out prompts have every model's "
                            "outcome; AIQ needs full information",
                            hint="use a table where each prompt is answered by every model, "
                                 "or raise --eval-frac")
        self.convs = [c for c, ok in zip(convs, complete, strict=True) if ok]
        self.quality, self.cost = quality[complete], cost[complete]

    def at_bar(self, model: Any, bar: float | None) -> tuple[float, float]:
        """Mean realised (quality, cost) of `model`'s decisions at `bar` (None: its default)."""
        from router.policy import choose

        meta = getattr(model, "metadata", None) or {}
        if bar is None:
            bar = float(meta["default_bar"])
        pred = model.predict(self.convs)
        names = [str(m) for m in pred.models]
        use = [m for m in self.models if m in names]
        data_cols = [self.models.index(m) for m in use]
        pred_cols = [names.index(m) for m in use]
        pq = np.asarray(pred.quality, dtype=np.float64)[:, pred_cols]
        pc = np.asarray(pred.cost_usd, dtype=np.float64)[:, pred_cols]
        pick = choose(pq, pc, bar=bar, calibration=calibration_of(model, pq, pc))
        rows = np.arange(len(self.convs))
        return (float(self.quality[:, data_cols][rows, pick].mean()),
                float(self.cost[:, data_cols][rows, pick].mean()))

    def report(self, model: Any) -> Any:
        pred = model.predict(self.convs)
        names = [str(m) for m in pred.models]
        use = [m for m in self.models if m in names]
        if not use:
            raise DataError("the model predicts none of the held-out part's models")
        data_cols = [self.models.index(m) for m in use]
        pred_cols = [names.index(m) for m in use]
        return report_from_predictions(
            use, self.quality[:, data_cols], self.cost[:, data_cols],
            np.asarray(pred.quality, dtype=np.float64)[:, pred_cols],
            np.asarray(pred.cost_usd, dtype=np.float64)[:, pred_cols],
            model=model)
