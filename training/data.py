"""Load, validate and price the canonical outcome table (the training input).

One row per (prompt, model): which model answered which prompt, how good the
answer was, what it cost. Every trainer, evaluator and importer goes through
`load_outcomes`, so bad input is caught in one place and reported once: a
`DataError` naming the file, the 1-based *data* row (the header is not counted;
a CSV row may span several lines when a prompt has newlines) and the fix.

Files are read and written, and each file's rows checked, by
`router.outcome_tables` (`read_table` and `write_outcomes` re-exported here), so
the fake provider reads exactly the tables training reads: `.csv`, `.csv.gz`,
`.parquet`/`.pq`, `.jsonl`, `.jsonl.gz`/`.ndjson`; a directory stands for every
such file inside it. This module prices the rows and combines the files.

Pricing rules (why: a table without a cost column must still be routable by cost):

* `cost_usd` from the file where present and non-null;
* otherwise `input_tokens x input price + output_tokens x output price` from the
  catalog (`catalog.with_prices(prices)` when prices are given);
* a model the catalog lacks is priced with the prices learned from the
  cost_usd of its rows in every file read (`training.pricing`); only a model
  with neither a price nor any cost_usd is an error. `load_priced_outcomes`
  returns those prices as catalog entries, for training;
* a row without `output_tokens` is priced with the median output tokens of the
  same model *in the same file* (same benchmark, so the same kind of answer);
  when that model has no output tokens at all in that file, only the input is
  priced (the answer length is unknown; for multiple-choice benchmarks such as
  MMLU the answer is a letter, so this is nearly exact). `output_tokens` itself
  stays NaN: the imputation is used for cost only, never presented as data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog, load_catalog
from router.conversation import Conversation, parse_conversation
from router.errors import DataError
from router.outcome_tables import (
    LATENCY_COLUMNS,
    SUPPORTED_SUFFIXES,
    PathsLike,
    expand_paths,
    read_outcome_rows,
    read_table,
    write_outcomes,
)
from training.pricing import LearnedPrice, learn_prices

__all__ = [
    "CANONICAL_COLUMNS",
    "SUPPORTED_SUFFIXES",
    "load_outcomes",
    "load_priced_outcomes",
    "PricedOutcomes",
    "read_table",
    "write_outcomes",
    "conversations",
    "outcome_matrices",
    "table_fingerprint",
]

log = logging.getLogger(__name__)

CANONICAL_COLUMNS = ("prompt_id", "messages", "model", "quality", "input_tokens",
                     "output_tokens", "cost_usd", "weight")
_SUM_COLUMNS = ("quality", "input_tokens", "output_tokens", "cost_usd")
# Internal bookkeeping so errors found after concatenation still name file and row.
_SRC, _ROW = "__source", "__row"

def _load_one(path: Path, get_catalog: Any) -> pd.DataFrame:
    df = read_outcome_rows(path)
    cost = df["cost_usd"].to_numpy(dtype="float64")
    need = np.isnan(cost)
    if need.any():
        df["cost_usd"] = _price(df, cost, need, path, get_catalog())
    df[_SRC] = str(path)
    df[_ROW] = df.index.to_numpy() + 1
    return df


def _price(df: pd.DataFrame, cost: np.ndarray, need: np.ndarray, path: Path,
           catalog: Catalog) -> np.ndarray:
    """`cost` with the `need` rows priced from `catalog`; rows of models it lacks stay NaN.

    Those are priced later, once every file is read, with prices learned from the
    cost_usd of the model's other rows (`_learn_and_fill`).
    """
    models = df["model"].to_numpy(dtype=object)
    need = need & np.isin(models, [m for m in pd.unique(models[need]) if m in catalog])
    if not need.any():
        return cost
    out_tokens = df["output_tokens"].to_numpy(dtype="float64")
    filled = out_tokens.copy()
    missing_out = np.isnan(out_tokens) & need
    if missing_out.any():
        medians = pd.Series(out_tokens).groupby(models).median()
        fill = pd.Series(models).map(medians).to_numpy(dtype="float64")
        filled = np.where(np.isnan(out_tokens), np.nan_to_num(fill, nan=0.0), out_tokens)
    price_in = pd.Series(models).map(
        {m: catalog[m].input_usd_per_mtok for m in pd.unique(models[need])}).to_numpy(
        dtype="float64")
    price_out = pd.Series(models).map(
        {m: catalog[m].output_usd_per_mtok for m in pd.unique(models[need])}).to_numpy(
        dtype="float64")
    computed = (df["input_tokens"].to_numpy() * price_in + filled * price_out) / 1e6
    return np.where(need, computed, cost)


def _merge_duplicates(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    dup = table.duplicated(["prompt_id", "model"], keep=False).to_numpy()
    if not dup.any():
        return table
    if mode == "error":
        first = table[dup].iloc[0]
        same = table[dup & (table["prompt_id"] == first["prompt_id"]).to_numpy()
                     & (table["model"] == first["model"]).to_numpy()]
        where = "; ".join(f"{s}, row {r}" for s, r in zip(same[_SRC], same[_ROW], strict=True))
        raise DataError(
            f"duplicate outcome for prompt_id {first['prompt_id']!r} and model "
            f"{first['model']!r}: {where}",
            hint="keep one row per (prompt_id, model), or load with duplicates='mean' to "
                 "average them")
    if mode != "mean":
        raise ValueError(f"duplicates must be 'mean' or 'error', got {mode!r}")
    keys = ["prompt_id", "model"]
    grouped = table.groupby(keys, sort=False)
    first = grouped.first()
    timed = [c for c in LATENCY_COLUMNS if c in table.columns]
    means = grouped[list(_SUM_COLUMNS) + ["weight", *timed]].mean()
    first[list(means.columns)] = means
    merged = first.reset_index()
    log.warning("merged %d duplicate (prompt_id, model) rows into %d by averaging quality, "
                "tokens, cost and latency", int(dup.sum()),
                int(table[dup].drop_duplicates(keys).shape[0]))
    return merged[table.columns]


def _check_prompt_ids(table: pd.DataFrame) -> None:
    """One prompt_id must mean one conversation, or features would silently mix prompts."""
    pairs = table[["prompt_id", "messages"]].drop_duplicates()
    clash = pairs["prompt_id"].duplicated(keep=False).to_numpy()
    if clash.any():
        pid = pairs["prompt_id"].to_numpy()[int(np.argmax(clash))]
        rows = table[table["prompt_id"] == pid]
        where = "; ".join(f"{s}, row {r}" for s, r in
                          list(zip(rows[_SRC], rows[_ROW], strict=True))[:4])
        raise DataError(f"prompt_id {pid!r} has different prompt text in different rows: "
                        f"{where}",
                        hint="a prompt_id must identify one prompt; give the other prompt a "
                             "new id (e.g. a hash of its text)")


def _learn_and_fill(frames: list[pd.DataFrame], get_catalog: Callable[[], Catalog],
                    learn_all: bool) -> dict[str, LearnedPrice]:
    """Learn prices of catalog-less models from their rows' cost_usd; price their other rows.

    Every model still without a cost on some row (not in the catalog) must have a
    cost_usd on at least one row, in any file; otherwise a DataError names the
    first such row. With `learn_all`, models whose rows all carry a cost are
    learned too (the trainer needs their prices; a reader of costs does not).
    """
    if not (learn_all or any(df["cost_usd"].isna().any() for df in frames)):
        return {}
    catalog = get_catalog()
    raw = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    pending = raw["cost_usd"].isna().to_numpy()
    wanted = None if learn_all else pd.unique(raw["model"].to_numpy()[pending])
    learned = learn_prices(raw, catalog, wanted)
    unpriced = [m for m in pd.unique(raw["model"].to_numpy()[pending]) if m not in learned]
    if unpriced:
        first = unpriced[0]
        row = raw[(raw["model"] == first).to_numpy() & pending].iloc[0]
        also = (f" (also unpriced: {', '.join(map(repr, unpriced[1:4]))}"
                f"{', ...' if len(unpriced) > 4 else ''})" if len(unpriced) > 1 else "")
        raise DataError(
            f"{row[_SRC]}, row {int(row[_ROW])}: model {first!r} has no price: it is not in "
            f"the catalog and none of its rows has a cost_usd{also}",
            hint=f"add a cost_usd column (its prices are then learned from those rows), pass "
            f"--prices FILE (columns model,input_usd_per_mtok,output_usd_per_mtok), or add "
            f"[models.\"{first}\"] to models/catalog.toml")
    if pending.any():
        priced = catalog.with_prices({m: p.as_price() for m, p in learned.items()})
        for df in frames:
            cost = df["cost_usd"].to_numpy(dtype="float64")
            need = np.isnan(cost)
            if need.any():
                df["cost_usd"] = _price(df, cost, need, Path(df[_SRC].iloc[0]), priced)
    for name, price in learned.items():
        log.info("learned prices of %s from %d row(s) with cost_usd: $%.4g input, $%.4g output "
                 "per 1M tokens (%s)", name, price.rows, price.input_usd_per_mtok,
                 price.output_usd_per_mtok, price.method)
    return learned


def _load(paths: PathsLike, get_catalog: Callable[[], Catalog], duplicates: str,
          learn_all: bool) -> tuple[pd.DataFrame, dict[str, LearnedPrice]]:
    if duplicates not in ("mean", "error"):
        raise DataError(f"duplicates must be 'mean' or 'error', got {duplicates!r}")
    frames = [_load_one(path, get_catalog) for path in expand_paths(paths)]
    learned = _learn_and_fill(frames, get_catalog, learn_all)
    table = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    extras = [c for c in table.columns if c not in CANONICAL_COLUMNS]
    table = table[list(CANONICAL_COLUMNS) + extras]
    _check_prompt_ids(table)
    table = _merge_duplicates(table, duplicates)
    table = table.drop(columns=[_SRC, _ROW]).reset_index(drop=True)
    for column in ("prompt_id", "messages", "model"):
        table[column] = table[column].astype(str)
    for column in ("quality", "input_tokens", "output_tokens", "cost_usd", "weight",
                   *(c for c in LATENCY_COLUMNS if c in table.columns)):
        table[column] = table[column].astype("float64")
    return table, learned


def _catalog_getter(catalog: Catalog | None,
                    prices: Mapping[str, tuple[float, float, int | None]] | None
                    ) -> Callable[[], Catalog]:
    """The catalog, with `prices` added, read on first use only."""
    resolved: list[Catalog] = []

    def get_catalog() -> Catalog:
        if not resolved:
            base = catalog if catalog is not None else load_catalog()
            resolved.append(base.with_prices(prices) if prices else base)
        return resolved[0]

    return get_catalog


def load_outcomes(
    paths: PathsLike,
    *,
    catalog: Catalog | None = None,
    prices: Mapping[str, tuple[float, float, int | None]] | None = None,
    duplicates: str = "mean",
) -> pd.DataFrame:
    """Read, validate and price outcome files into one canonical table.

    Columns (in this order, then any extra columns of the files, kept as they
    are): `prompt_id` (str), `messages` (JSON text of OpenAI chat messages; a
    bare `prompt` becomes one user message and the `prompt` column is dropped),
    `model` (str), `quality` (float in [0, 1]), `input_tokens` (from the file,
    else estimated from the conversation), `output_tokens` (NaN where unknown),
    `cost_usd` (see the module docstring), `weight` (1/propensity with the
    propensity clipped to >= `router.outcome_tables.MIN_PROPENSITY`, 0.01, so a
    rarely-chosen model cannot dominate; 1.0 without a propensity).

    `catalog` defaults to the repository catalog (read only when some row needs
    pricing); `prices` (model -> (input, output, context), as from
    `router.catalog.load_prices_csv`) override or add to it. Duplicate
    (prompt_id, model) rows are averaged (`duplicates="mean"`, with a logged
    warning) or refused (`duplicates="error"`). Any problem raises one
    `DataError` naming the file, the 1-based data row and the fix.

    To train, use `load_priced_outcomes`: it also returns the prices learned for
    models the catalog lacks, as a catalog.
    """
    return _load(paths, _catalog_getter(catalog, prices), duplicates, learn_all=False)[0]


@dataclass(frozen=True)
class PricedOutcomes:
    """An outcome table and the prices to train on it with.

    `catalog` is the catalog (plus `prices`) with an entry for every model of
    the table: the ones it lacked carry the prices in `learned`, learned from
    their rows' cost_usd (`training.pricing`).
    """

    table: pd.DataFrame
    catalog: Catalog
    learned: dict[str, LearnedPrice]


def load_priced_outcomes(
    paths: PathsLike,
    *,
    catalog: Catalog | None = None,
    prices: Mapping[str, tuple[float, float, int | None]] | None = None,
    duplicates: str = "mean",
) -> PricedOutcomes:
    """`load_outcomes`, plus a catalog that prices every model of the table.

    A model neither in `catalog` nor in `prices` gets the prices learned from
    the cost_usd of its rows (before duplicates are merged); a model with
    neither a price nor any cost_usd is a DataError naming its first row.
    """
    get_catalog = _catalog_getter(catalog, prices)
    table, learned = _load(paths, get_catalog, duplicates, learn_all=True)
    priced = get_catalog().with_prices({m: p.as_price() for m, p in learned.items()})
    return PricedOutcomes(table, priced, learned)


def conversations(table: pd.DataFrame) -> tuple[list[str], list[Conversation]]:
    """The unique prompts of a loaded table, in first-seen order, parsed once each."""
    firsts = table.drop_duplicates("prompt_id")
    ids = [str(p) for p in firsts["prompt_id"]]
    convs = [parse_conversation(json.loads(m), where=f"prompt_id {pid!r}")
             for pid, m in zip(ids, firsts["messages"], strict=True)]
    return ids, convs


def outcome_matrices(table: pd.DataFrame, models: Sequence[str], prompt_ids: Sequence[str],
                     columns: Sequence[str] = ("quality", "cost_usd")
                     ) -> tuple[np.ndarray, ...]:
    """One (prompts, models) float64 matrix per column (default: realised quality and
    cost_usd), rows in `prompt_ids` order, columns `models`.

    A (prompt, model) pair absent from the table is NaN; duplicates are averaged.
    """
    for column in ("prompt_id", "model", *columns):
        if column not in table.columns:
            raise DataError(f"outcome table has no {column!r} column",
                            hint="load it with training.data.load_outcomes, which prices rows")
    keyed = table[["prompt_id", "model", *columns]].astype({"prompt_id": str, "model": str})
    keyed = keyed.groupby(["prompt_id", "model"], sort=False).mean()
    out = []
    for column in columns:
        wide = keyed[column].unstack("model")
        wide = wide.reindex(index=list(prompt_ids), columns=list(models))
        out.append(wide.to_numpy(dtype=np.float64))
    return tuple(out)


def table_fingerprint(table: pd.DataFrame) -> str:
    """sha256 of the canonical columns, independent of row order and extra columns.

    Stored in artifacts as the training data hash: the same outcomes give the
    same hash whatever file format or order they came in.
    """
    columns = [c for c in CANONICAL_COLUMNS if c in table.columns]
    canon = table[columns].sort_values(["prompt_id", "model"], kind="stable")
    digest = hashlib.sha256()
    digest.update(("\x1f".join(columns) + "\n").encode())
    for column in columns:
        series = canon[column]
        if column in ("prompt_id", "messages", "model"):
            text = "\x1e".join(series.astype(str).tolist())
        else:
            # repr of float64 is exact and stable across platforms; NaN spelled once.
            text = "\x1e".join("nan" if v != v else repr(float(v))
                               for v in series.to_numpy(dtype="float64"))
        digest.update(text.encode("utf-8"))
        digest.update(b"\x1d")
    return digest.hexdigest()
