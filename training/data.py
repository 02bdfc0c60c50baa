"""Load, validate and price the canonical outcome table (the training input).

One row per (prompt, model): which model answered which prompt, how good the
answer was, what it cost. Every trainer, evaluator and importer goes through
`load_outcomes`, so bad input is caught in one place and reported once: a
`DataError` naming the file, the 1-based *data* row (the header is not counted;
a CSV row may span several lines when a prompt has newlines) and the fix.

Files are read and written by `training.table_io` (re-exported here): `.csv`,
`.csv.gz`, `.parquet`/`.pq`, `.jsonl`, `.jsonl.gz`/`.ndjson`; a directory stands
for every such file inside it.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog, load_catalog
from router.conversation import Conversation, parse_conversation
from router.errors import DataError
from training.pricing import LearnedPrice, learn_prices
from training.table_io import (
    SUPPORTED_SUFFIXES,
    PathsLike,
    expand_paths,
    read_table,
    write_outcomes,
)

__all__ = [
    "CANONICAL_COLUMNS",
    "SUPPORTED_SUFFIXES",
    "load_outcomes",
    "load_priced_outcomes",
    "PricedOutcomes",
    "read_table",
    "write_outcomes",
    "conversations",
    "table_fingerprint",
]

log = logging.getLogger(__name__)

CANONICAL_COLUMNS = ("prompt_id", "messages", "model", "quality", "input_tokens",
                     "output_tokens", "cost_usd", "weight")
MIN_PROPENSITY = 0.01
_SUM_COLUMNS = ("quality", "input_tokens", "output_tokens", "cost_usd")
# Internal bookkeeping so errors found after concatenation still name file and row.
_SRC, _ROW = "__source", "__row"

def _show(value: Any) -> str:
    """repr of a cell as the user wrote it (numpy scalars shown as plain numbers)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _row(df: pd.DataFrame, i: int) -> int:
    """The 1-based data row in the file of `df`'s i-th row (rows may have been skipped)."""
    return int(df.index[i]) + 1


def _fail(path: Path, row: int, message: str, hint: str) -> DataError:
    return DataError(f"{path}, row {row}: {message}", hint=hint)


def _numeric(df: pd.DataFrame, column: str, path: Path, *, hint: str) -> np.ndarray:
    """Column as float64; a non-number (but not an empty cell) stops with its row."""
    raw = df[column]
    if raw.dtype == bool:
        return raw.to_numpy(dtype="float64")
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64")
    bad = np.isnan(values) & raw.notna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(path, _row(df, i), f"{column} must be a number, got {_show(raw.iloc[i])}", hint)
    return values


_MESSAGES_HINT = ('messages must be a JSON list of {"role": ..., "content": ...} objects, '
                  'or use a plain `prompt` column')


def _parse_messages(value: Any, where: str) -> Conversation:
    if isinstance(value, str):
        # In a messages column text must be JSON; parse_conversation would quietly
        # take broken JSON for a plain prompt.
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} is not valid JSON ({exc.msg} at char {exc.pos})",
                            hint=_MESSAGES_HINT) from None
    try:
        return parse_conversation(value, where=where)
    except DataError as exc:
        raise DataError(exc.message, hint=_MESSAGES_HINT) from None


def _messages_column(df: pd.DataFrame, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(messages JSON per row, estimated input tokens per row); parses each value once."""
    n = len(df)
    has_messages = "messages" in df.columns
    prompts = df["prompt"] if "prompt" in df.columns else None
    out = np.empty(n, dtype=object)
    tokens = np.empty(n, dtype="float64")
    cache: dict[Any, tuple[str, int]] = {}
    messages = df["messages"].to_numpy(dtype=object) if has_messages else None
    prompt_values = prompts.to_numpy(dtype=object) if prompts is not None else None
    for i in range(n):
        value = messages[i] if messages is not None else None
        if value is None or (isinstance(value, float) and np.isnan(value)):
            value = None
        if value is not None:
            if isinstance(value, np.ndarray):
                value = value.tolist()
            key = value if isinstance(value, str) else json.dumps(value, default=str)
            hit = cache.get(("m", key))
            if hit is None:
                conv = _parse_messages(value, f"{path}, row {_row(df, i)}: messages")
                hit = (json.dumps(conv.to_messages(), ensure_ascii=False), conv.input_tokens)
                cache[("m", key)] = hit
        else:
            prompt = prompt_values[i] if prompt_values is not None else None
            if prompt is None or (isinstance(prompt, float) and np.isnan(prompt)):
                raise _fail(path, _row(df, i), "prompt is empty" + (" and so is messages"
                                                             if has_messages else ""),
                            "every row needs the prompt text (or a messages list); "
                            "drop rows without one")
            prompt = str(prompt)
            hit = cache.get(("p", prompt))
            if hit is None:
                # A plain prompt is never parsed as JSON: "[1, 2]" is a valid question.
                conv = Conversation.from_prompt(prompt)
                hit = (json.dumps(conv.to_messages(), ensure_ascii=False), conv.input_tokens)
                cache[("p", prompt)] = hit
        out[i], tokens[i] = hit
    return out, tokens


def _drop_unanswered(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Skip rows that `router collect` recorded without an outcome, saying how many.

    Its output keeps failed calls (`status` "error") and answers the grader could not
    score (`grade_error` set, quality empty) so a rerun can retry them; they carry no
    quality to learn from. Any other row without a quality is still an error.
    """
    skip = np.zeros(len(raw), dtype=bool)
    if "status" in raw.columns:
        failed = (raw["status"].astype(str) == "error").to_numpy()
        if failed.any():
            log.warning("%s: skipped %d row(s) whose call failed (status=error); rerun "
                        "`router collect --retry-errors` to fill them", path, failed.sum())
        skip |= failed
    if "grade_error" in raw.columns:
        ungraded = (raw["grade_error"].notna() & raw["quality"].isna()).to_numpy() & ~skip
        if ungraded.any():
            log.warning("%s: skipped %d row(s) the grader could not score (grade_error)",
                        path, ungraded.sum())
        skip |= ungraded
    if skip.all():
        raise DataError(f"{path}: no row has an outcome ({len(raw)} failed or ungraded)",
                        hint="check the upstream and the grader, then rerun `router collect`")
    # The index keeps each row's place in the file, for error messages (`_row`).
    return raw[~skip] if skip.any() else raw


def _load_one(path: Path, get_catalog: Any) -> pd.DataFrame:
    raw = read_table(path)
    if len(raw) == 0:
        raise DataError(f"{path}: file has a header but no rows",
                        hint="the table needs at least one (prompt, model) outcome row")
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in ("prompt_id", "model", "quality") if c not in raw.columns]
    if "prompt" not in raw.columns and "messages" not in raw.columns:
        missing.append("prompt (or messages)")
    if missing:
        raise DataError(
            f"{path}: missing required column(s) {', '.join(missing)}; the file has "
            f"{', '.join(map(str, raw.columns)) or 'no columns'}",
            hint="required: prompt_id, prompt or messages, model, quality; rename the "
                 "columns, or convert a benchmark with `router import FORMAT SRC --out FILE`")
    raw = _drop_unanswered(raw.reset_index(drop=True), path)
    n = len(raw)
    df = raw.copy()
    for column in ("prompt_id", "model"):
        isna = df[column].isna().to_numpy()
        values = df[column].astype(str).str.strip()
        empty = isna | (values == "").to_numpy()
        if empty.any():
            i = int(np.argmax(empty))
            raise _fail(path, _row(df, i), f"{column} is empty",
                        f"every row needs a {column}")
        df[column] = values.astype(object)

    quality = _numeric(df, "quality", path,
                       hint="quality must be a number in [0, 1] (0/1 correctness or a "
                            "rescaled score)")
    bad = ~((quality >= 0) & (quality <= 1))
    if bad.any():
        i = int(np.argmax(bad))
        shown = df["quality"].iloc[i]
        what = "missing" if pd.isna(shown) else f"{_show(shown)}, outside [0, 1]"
        raise _fail(path, _row(df, i), f"quality is {what}",
                    "quality must be a number in [0, 1]: rescale scores (e.g. (s-1)/9 for "
                    "1-10) and drop rows without an outcome")
    df["quality"] = quality

    messages, estimated = _messages_column(df, path)
    df["messages"] = messages
    df = df.drop(columns=[c for c in ("prompt",) if c in df.columns])

    tok_hint = "token counts must be non-negative numbers (or empty)"
    for column in ("input_tokens", "output_tokens"):
        values = (_numeric(df, column, path, hint=tok_hint) if column in df.columns
                  else np.full(n, np.nan))
        if (values < 0).any():
            i = int(np.argmax(values < 0))
            raise _fail(path, _row(df, i), f"{column} is negative ({_show(values[i])})", tok_hint)
        df[column] = values
    df["input_tokens"] = np.where(np.isnan(df["input_tokens"].to_numpy()), estimated,
                                  df["input_tokens"].to_numpy())

    cost = (_numeric(df, "cost_usd", path, hint="cost_usd must be a non-negative number")
            if "cost_usd" in df.columns else np.full(n, np.nan))
    if (cost < 0).any():
        i = int(np.argmax(cost < 0))
        raise _fail(path, _row(df, i), f"cost_usd is negative ({_show(cost[i])})",
                    "cost_usd must be a non-negative number")
    need = np.isnan(cost)
    if need.any():
        cost = _price(df, cost, need, path, get_catalog())
    df["cost_usd"] = cost

    if "propensity" in df.columns:
        prop = _numeric(df, "propensity", path, hint="propensity must be a probability")
        bad = (prop < 0) | (prop > 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise _fail(path, _row(df, i), f"propensity is {_show(prop[i])}, outside [0, 1]",
                        "propensity is the probability the logging policy chose this "
                        "model; it must be in [0, 1]")
        # Rows without a propensity (e.g. offline evals mixed into logs) weigh 1.
        df["weight"] = np.where(np.isnan(prop), 1.0,
                                1.0 / np.clip(prop, MIN_PROPENSITY, None))
    else:
        df["weight"] = 1.0
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
    means = grouped[list(_SUM_COLUMNS) + ["weight"]].mean()
    first[list(means.columns)] = means
    merged = first.reset_index()
    log.warning("merged %d duplicate (prompt_id, model) rows into %d by averaging quality, "
                "tokens and cost", int(dup.sum()),
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
        raise _fail(
            Path(row[_SRC]), int(row[_ROW]),
            f"model {first!r} has no price: it is not in the catalog and none of its rows "
            f"has a cost_usd{also}",
            f"add a cost_usd column (its prices are then learned from those rows), pass "
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
    for column in ("quality", "input_tokens", "output_tokens", "cost_usd", "weight"):
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
    propensity clipped to >= 0.01, so a rarely-chosen model cannot dominate;
    1.0 without a propensity).

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
