"""Routing quality of the default rule on real data and the demo, with every baseline in one run.

    python bench/quality.py                                # full run (5-fold CV everywhere)
    python bench/quality.py --quick                        # 3 folds, MMLU subsampled
    python bench/quality.py --datasets arena_bench_v1,demo # some datasets only
    python bench/quality.py --json                         # one JSON object instead of tables

Datasets (read from ../shared/data, or $ROUTER_SHARED_DATA; never copied):

* arena_bench_v1: 300 prompts x 15 models, GPT-4-judged, priced with prices.csv;
* routellm_mmlu, routellm_gsm8k, routellm_mt_bench: Mixtral-8x7B (weak) and
  GPT-4-1106 (strong), priced with prices.csv;
* demo: `router quickstart`'s synthetic outcomes (`training.demo_data.generate_demo`,
  2000 prompts x the catalog's 8 models, seed 0), loaded back as `router train` reads it.

Protocol: per dataset, k-fold cross-validation by prompt (5; 3 with --quick). In
each fold a fresh `QualityModel` is fitted on the other folds' rows as `router
train` fits it by default (10% of its prompts held out; they calibrate the bar,
b -> lambda(b)); it predicts the fold, and the predictions are pooled out of fold
and scored once by `training.evaluate.report_from_predictions`, each row's
default-rule decisions taking its own fold model's lambda(b)
(`training.sweep.RowCalibrations`). Only prompts answered by every model are
scored. Nothing is tuned on the evaluation folds.

Rows of each table (definitions in training/metrics.py, DESIGN.md "Metrics"):

* default rule: b is the target mean quality; each request takes argmax
  q - lambda(b) * c; b swept over `training.sweep.DEFAULT_SWEEP_BARS`;
* hard floor (min_quality swept) and utility rule (explicit lambda swept), each alone;
* Zero router (the single models and their random mixes);
* kNN router (RouterBench's baseline: mean quality of the k=20 nearest prompts of
  the fold's training prompts on the fold model's embeddings; hull of its floor
  and utility sweeps);
* random router (the cheapest model or the best single model at random);
* oracle: per prompt argmax realised q - lambda * c, lambda swept (lambda = 0 is
  DESIGN.md's oracle: the best realised quality, cheapest among ties);

with AIQ, AIQ minus the Zero router's, cost@best (the least mean cost at which the
hull reaches the best single model's quality, as a fraction of that model's cost)
and, on the two-model sets, APGR and CPT(50%) (RouteLLM's protocol: thresholds on
the predicted quality gap q_strong - q_weak; kNN on its own gap).

Leave one dataset out: the three RouteLLM sets share their two models; for each,
a model is fitted on the other two sets (same recipe, its bar calibrated on their
held-out prompts) and scored on all of the third, none of which it saw.

Decision latency: predict + the default rule for one request, in process, p50/p99,
with the last fold model of the first dataset run.

Targets (issue 11), checked in the final summary:

* default-rule AIQ >= Zero router AIQ on every dataset;
* default-rule AIQ >= kNN AIQ on arena_bench_v1 and demo;
* arena_bench_v1: default-rule AIQ >= Zero router AIQ + 0.03;
* routellm_mmlu: APGR >= 0.70 and CPT(50%) <= 25%;
* routellm_gsm8k: CPT(50%) <= 30%;
* demo: the default rule reaches the best single model's quality at <= 35% of its cost.

Skips with a message (exit 0) when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ROUTER_SHARED_DATA", REPO.parent / "shared" / "data"))

ROUTELLM = ("routellm_mmlu", "routellm_gsm8k", "routellm_mt_bench")
DATASETS = ("arena_bench_v1", *ROUTELLM, "demo")
# `router quickstart`'s demo-data call: --prompts 2000 --seed 0.
DEMO_PROMPTS, DEMO_SEED = 2000, 0
# `router train --holdout-frac` default: the held-out prompts calibrate the bar.
HOLDOUT_FRAC = 0.1
KNN_K = 20
QUICK_MMLU_PROMPTS = 3000
THREADS = {"num_threads": 1}
METHODS = {"default": "default rule (bar)", "floor": "hard floor (min_quality)",
           "utility": "utility (explicit lambda)", "zero": "Zero router",
           "knn": f"kNN router (k={KNN_K})", "random": "random", "oracle": "oracle"}


# -- data ----------------------------------------------------------------------------

def load_dataset(name: str) -> tuple[pd.DataFrame, Any]:
    """(outcome table, catalog pricing its models), loaded as `router train` loads it."""
    from router.catalog import load_catalog, load_prices_csv
    from training.data import load_priced_outcomes, write_outcomes
    from training.demo_data import generate_demo

    catalog = load_catalog()
    if name == "demo":
        with tempfile.TemporaryDirectory() as tmp:
            path = write_outcomes(generate_demo(DEMO_PROMPTS, DEMO_SEED, catalog),
                                  Path(tmp) / "outcomes.csv.gz")
            priced = load_priced_outcomes(path, catalog=catalog)
    else:
        priced = load_priced_outcomes(DATA / f"{name}.csv.gz", catalog=catalog,
                                      prices=load_prices_csv(DATA / "prices.csv"))
    return priced.table, priced.catalog


def _subsample(table: pd.DataFrame, n_prompts: int, seed: int) -> pd.DataFrame:
    ids = table["prompt_id"].astype(str).unique()
    if len(ids) <= n_prompts:
        return table
    keep = set(np.random.default_rng(seed).choice(ids, size=n_prompts, replace=False))
    return table[table["prompt_id"].astype(str).isin(keep)].reset_index(drop=True)


def _matrices(table: pd.DataFrame, models: list[str]) -> tuple[list[str], list[Any], np.ndarray,
                                                               np.ndarray]:
    """Prompts with an outcome for every model: ids, conversations, quality, cost."""
    from training.data import conversations, outcome_matrices

    ids, convs = conversations(table)
    quality, cost = outcome_matrices(table, models, ids)
    ok = np.isfinite(quality).all(axis=1) & np.isfinite(cost).all(axis=1)
    return ([i for i, g in zip(ids, ok, strict=True) if g],
            [c for c, g in zip(convs, ok, strict=True) if g], quality[ok], cost[ok])


# -- fitting and predicting ----------------------------------------------------------

def _fit(table: pd.DataFrame, catalog: Any, seed: int) -> Any:
    """A `QualityModel` fitted as `router train` fits it by default (threads pinned)."""
    from router.predictor import QualityModel

    # Explicit threads: LightGBM's default (all cores) slows down 10x when the
    # machine is shared, which would make the timings meaningless.
    return QualityModel(params=THREADS).fit(table, catalog=catalog, holdout_frac=HOLDOUT_FRAC,
                                            seed=seed)


def _predict(model: Any, convs: list[Any], models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    pred = model.predict(convs)
    names = [str(m) for m in pred.models]
    cols = [names.index(m) for m in models]
    return (np.asarray(pred.quality, dtype=np.float64)[:, cols],
            np.asarray(pred.cost_usd, dtype=np.float64)[:, cols])


def _knn(model: Any, train_convs: list[Any], train_q: np.ndarray, train_c: np.ndarray,
         test_convs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """kNN predictions for `test_convs` from the training prompts, on the model's embeddings."""
    from training.knn import knn_quality

    emb = model.features_.embed
    pq = knn_quality(np.asarray(emb(train_convs)), train_q, np.asarray(emb(test_convs)), KNN_K)
    return pq, np.broadcast_to(train_c.mean(axis=0), pq.shape).copy()


def cross_validate(table: pd.DataFrame, catalog: Any, *, folds: int, seed: int,
                   desc: str, progress: bool) -> tuple[Any, Any]:
    """(pooled out-of-fold EvalReport, the last fold's model) for one dataset.

    Folds are by prompt. A fold's model trains on every row of the other folds'
    prompts (prompts lacking some model's outcome included: they are never
    scored) and calibrates its bar on its own held-out share of them.
    """
    from tqdm import tqdm

    from router.policy import BarCalibration
    from training.evaluate import report_from_predictions
    from training.knn import KnnPrediction
    from training.sweep import RowCalibrations

    models = sorted(table["model"].astype(str).unique())
    ids, convs, quality, cost = _matrices(table, models)
    fold_of = np.random.default_rng(seed).permutation(len(ids)) % folds
    pid = table["prompt_id"].astype(str)
    pq, pc = np.empty_like(quality), np.empty_like(quality)
    kq, kc = np.empty_like(quality), np.empty_like(quality)
    calibrations = []
    model = None
    for fold in tqdm(range(folds), desc=desc, unit="fold", disable=not progress):
        test = np.flatnonzero(fold_of == fold)
        train = np.flatnonzero(fold_of != fold)
        test_ids = {ids[i] for i in test}
        model = _fit(table[~pid.isin(test_ids)], catalog, seed + fold)
        calibration = BarCalibration.from_metadata(model.metadata)
        if calibration is None:
            raise RuntimeError("a fitted QualityModel stores no bar calibration")
        calibrations.append(calibration)
        test_convs = [convs[i] for i in test]
        pq[test], pc[test] = _predict(model, test_convs, models)
        kq[test], kc[test] = _knn(model, [convs[i] for i in train], quality[train],
                                  cost[train], test_convs)
    report = report_from_predictions(
        models, quality, cost, pq, pc,
        calibration=RowCalibrations(tuple(calibrations), fold_of),
        knn=KnnPrediction(kq, kc, KNN_K, f"{folds}-fold out-of-fold"))
    return report, model


def leave_one_out(tables: dict[str, pd.DataFrame], catalogs: dict[str, Any], *, seed: int,
                  progress: bool) -> dict[str, Any]:
    """Each RouteLLM set scored by a model fitted on the other two (see the docstring)."""
    from tqdm import tqdm

    from training.evaluate import report_from_predictions
    from training.knn import KnnPrediction

    out = {}
    for name in tqdm(ROUTELLM, desc="leave one dataset out", unit="set", disable=not progress):
        sources = [s for s in ROUTELLM if s != name]
        train = pd.concat([tables[s] for s in sources], ignore_index=True)
        models = sorted(tables[name]["model"].astype(str).unique())
        model = _fit(train, catalogs[sources[0]], seed)
        _, s_convs, s_q, s_c = _matrices(train, models)
        _, t_convs, t_q, t_c = _matrices(tables[name], models)
        pq, pc = _predict(model, t_convs, models)
        kq, kc = _knn(model, s_convs, s_q, s_c, t_convs)
        report = report_from_predictions(models, t_q, t_c, pq, pc, model=model,
                                         knn=KnnPrediction(kq, kc, KNN_K, " + ".join(sources)))
        out[name] = {"trained_on": sources, **summarise(report)}
    return out


# -- figures -------------------------------------------------------------------------

def _cost_at_best(curve: list[dict[str, float]], report: Any) -> float | None:
    from training import metrics

    best = next(s for s in report.single_models if s["model"] == report.best_single_model)
    if not best["cost_usd"] > 0 or not curve:
        return None
    xy = np.array([[p["cost_usd"], p["quality"]] for p in curve])
    return metrics.cost_at_quality(xy, best["quality"], reference_cost=best["cost_usd"])


def _oracle_curve(quality: np.ndarray, cost: np.ndarray) -> list[dict[str, float]]:
    """The oracle at every budget: the utility rule swept on the realised outcomes."""
    from training.sweep import sweep_lambdas, utility_lambdas

    pts = sweep_lambdas(quality, cost, quality, cost, utility_lambdas(cost))
    return [{"cost_usd": float(c), "quality": float(q)} for _, c, q in pts]


def summarise(report: Any, quality: np.ndarray | None = None,
              cost: np.ndarray | None = None) -> dict[str, Any]:
    """The figures the tables print, from one EvalReport (and, for the oracle's
    AIQ and cost@best, the realised matrices it was computed from)."""
    from training import metrics

    best = next(s for s in report.single_models if s["model"] == report.best_single_model)
    methods: dict[str, dict[str, Any]] = {
        "default": {"aiq": report.aiq, "cost_at_best": report.cost_at_best_single_quality},
        "floor": {"aiq": report.aiq_floor,
                  "cost_at_best": _cost_at_best(report.floor_curve, report)},
        "utility": {"aiq": report.aiq_utility,
                    "cost_at_best": _cost_at_best(report.utility_curve, report)},
        "zero": {"aiq": report.zero_router_aiq, "cost_at_best": 1.0},
        "knn": {"aiq": None if report.knn is None else report.knn["aiq"]},
        "random": {"aiq": report.random["aiq"], "cost_at_best": 1.0},
        "oracle": {"aiq": None},
    }
    if quality is not None and cost is not None:
        curve = _oracle_curve(quality, cost)
        xy = np.array([[p["cost_usd"], p["quality"]] for p in curve])
        methods["oracle"] = {"aiq": metrics.aiq(xy[:, 0], xy[:, 1], report.c_max),
                             "cost_at_best": _cost_at_best(curve, report)}
    tm = report.two_model
    if tm is not None:
        for key, src in (("default", "router"), ("knn", "knn"), ("random", "random"),
                         ("oracle", "oracle")):
            if src in tm:
                methods[key].update(apgr=tm[src]["apgr"], cpt50=tm[src]["cpt50"])
    return {
        "n_prompts": report.n_prompts, "n_models": len(report.models),
        "best_single": best, "oracle_point": report.oracle, "c_max": report.c_max,
        "two_model": None if tm is None else {k: tm[k] for k in
                                              ("weak", "strong", "q_weak", "q_strong")},
        "methods": methods, "notes": report.notes,
    }


def decision_latency(model: Any, convs: list[Any], n: int = 300) -> dict[str, float]:
    """p50/p99 ms of predict + the default rule (at the model's default bar) for one
    request, and of the rule alone."""
    from router.policy import BarCalibration, decide

    calibration = BarCalibration.from_metadata(model.metadata)
    bar = float(model.metadata["default_bar"])
    full, policy = [], []
    for conv in (convs * (n // max(1, len(convs)) + 1))[:n]:
        t0 = time.perf_counter()
        pred = model.predict([conv])
        t1 = time.perf_counter()
        decide(list(pred.models), pred.quality[0], pred.cost_usd[0], bar=bar,
               calibration=calibration)
        t2 = time.perf_counter()
        full.append(t2 - t0)
        policy.append(t2 - t1)
    full_ms, policy_ms = np.array(full[10:]) * 1e3, np.array(policy[10:]) * 1e3  # warm-up
    return {"p50_ms": float(np.percentile(full_ms, 50)),
            "p99_ms": float(np.percentile(full_ms, 99)),
            "policy_p50_ms": float(np.percentile(policy_ms, 50)),
            "policy_p99_ms": float(np.percentile(policy_ms, 99))}


def run(datasets: list[str], *, quick: bool, seed: int, progress: bool) -> dict[str, Any]:
    start = time.perf_counter()
    folds = 3 if quick else 5
    results: dict[str, Any] = {"quick": quick, "folds": folds, "seed": seed,
                               "holdout_frac": HOLDOUT_FRAC, "datasets": {}}
    tables, catalogs = {}, {}
    for name in datasets:
        table, catalog = load_dataset(name)
        if quick and name == "routellm_mmlu":
            table = _subsample(table, QUICK_MMLU_PROMPTS, seed)
        tables[name], catalogs[name] = table, catalog
    for name in datasets:
        t0 = time.perf_counter()
        table = tables[name]
        report, model = cross_validate(table, catalogs[name], folds=folds, seed=seed,
                                       desc=name, progress=progress)
        models = sorted(table["model"].astype(str).unique())
        _, convs, quality, cost = _matrices(table, models)
        results["datasets"][name] = {
            **summarise(report, quality, cost),
            "n_prompts_total": int(table["prompt_id"].nunique()),
            "seconds": time.perf_counter() - t0,
        }
        if "latency" not in results:
            results["latency"] = {"dataset": name, **decision_latency(model, convs)}
    if set(ROUTELLM) <= set(datasets):
        results["leave_one_out"] = leave_one_out(tables, catalogs, seed=seed,
                                                 progress=progress)
    results["targets"] = targets(results)
    results["seconds"] = time.perf_counter() - start
    return results


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 11's targets on the datasets of this run: dataset, target, value, pass."""
    rows = []
    d = r["datasets"]

    def add(name: str, target: str, value: str, ok: bool) -> None:
        rows.append({"dataset": name, "target": target, "value": value, "pass": bool(ok)})

    for name, res in d.items():
        m = res["methods"]
        dflt, zero = m["default"]["aiq"], m["zero"]["aiq"]
        add(name, "default AIQ >= Zero AIQ", f"{dflt:.4f} vs {zero:.4f}", dflt >= zero)
        if name in ("arena_bench_v1", "demo") and m["knn"]["aiq"] is not None:
            knn = m["knn"]["aiq"]
            add(name, "default AIQ >= kNN AIQ", f"{dflt:.4f} vs {knn:.4f}", dflt >= knn)
        if name == "arena_bench_v1":
            add(name, "default AIQ >= Zero AIQ + 0.03", f"{dflt - zero:+.4f}",
                dflt - zero >= 0.03)
        if name == "routellm_mmlu":
            apgr, cpt = m["default"].get("apgr"), m["default"].get("cpt50")
            add(name, "APGR >= 0.70", _num(apgr, 3), apgr is not None and apgr >= 0.70)
            add(name, "CPT(50%) <= 25%", _pct(cpt), cpt is not None and cpt <= 0.25)
        if name == "routellm_gsm8k":
            cpt = m["default"].get("cpt50")
            add(name, "CPT(50%) <= 30%", _pct(cpt), cpt is not None and cpt <= 0.30)
        if name == "demo":
            c = m["default"]["cost_at_best"]
            add(name, "cost@best <= 35%", _pct(c), c is not None and c <= 0.35)
    return rows


# -- printing ------------------------------------------------------------------------

def _pct(v: float | None) -> str:
    return "never" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int = 4, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]], left: int = 1) -> list[str]:
    """The first `left` columns left-aligned, the others right-aligned, indented."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    return ["  " + "  ".join(f"{c:<{w}}" if i < left else f"{c:>{w}}"
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in (head, *rows)]


def dataset_table(name: str, res: dict[str, Any]) -> list[str]:
    best, tm = res["best_single"], res["two_model"]
    lines = [f"{name}: {res['n_prompts']} of {res['n_prompts_total']} prompts scored "
             f"(every model answered) x {res['n_models']} models, {res['seconds']:.0f} s; "
             f"best single {best['model']}: quality {best['quality']:.3f} at "
             f"${best['cost_usd']:.6f}/request"]
    if tm is not None:
        lines.append(f"  weak {tm['weak']} ({tm['q_weak']:.3f}), strong {tm['strong']} "
                     f"({tm['q_strong']:.3f}); APGR/CPT: thresholds on the predicted gap")
    zero = res["methods"]["zero"]["aiq"]
    head = ("method", "AIQ", "- Zero", "cost@best") + (("APGR", "CPT(50%)") if tm else ())
    rows = []
    for key, label in METHODS.items():
        m = res["methods"][key]
        aiq = m.get("aiq")
        row = (label, _num(aiq), "-" if aiq is None or key == "zero" else _num(aiq - zero,
                                                                               sign=True),
               _pct(m["cost_at_best"]) if "cost_at_best" in m else "-")
        if tm:
            row += (_num(m.get("apgr"), 3), _pct(m["cpt50"]) if "cpt50" in m else "-")
        rows.append(row)
    return lines + _table(head, rows)


def leave_one_out_table(loo: dict[str, Any]) -> list[str]:
    head = ("test set (all unseen)", "default AIQ", "- Zero", "floor", "utility", "kNN",
            "APGR", "CPT(50%)", "kNN APGR", "kNN CPT(50%)")
    rows = []
    for name, res in loo.items():
        m = res["methods"]
        zero = m["zero"]["aiq"]
        rows.append((name, _num(m["default"]["aiq"]), _num(m["default"]["aiq"] - zero, sign=True),
                     _num(m["floor"]["aiq"]), _num(m["utility"]["aiq"]), _num(m["knn"]["aiq"]),
                     _num(m["default"].get("apgr"), 3), _pct(m["default"].get("cpt50")),
                     _num(m["knn"].get("apgr"), 3), _pct(m["knn"].get("cpt50"))))
    return ["leave one dataset out (fit on the other two RouteLLM sets, score all of this one):",
            *_table(head, rows)]


def format_results(r: dict[str, Any]) -> str:
    lines = [f"bench/quality.py: {r['folds']}-fold CV by prompt, seed {r['seed']}, fold models "
             f"fitted as `router train` (--holdout-frac {r['holdout_frac']}: bar calibrated on "
             f"the fold's held-out prompts)"
             + (f"; --quick: routellm_mmlu subsampled to {QUICK_MMLU_PROMPTS} prompts"
                if r["quick"] else ""), ""]
    for name, res in r["datasets"].items():
        lines += [*dataset_table(name, res), ""]
    if "leave_one_out" in r:
        lines += [*leave_one_out_table(r["leave_one_out"]), ""]
    if "latency" in r:
        lat = r["latency"]
        lines += [f"decision latency ({lat['dataset']} fold model, predict + default rule, one "
                  f"request, in process): p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms "
                  f"(rule alone: p50 {lat['policy_p50_ms']:.3f} ms, p99 "
                  f"{lat['policy_p99_ms']:.3f} ms)", ""]
    rows = [(t["dataset"], t["target"], t["value"], "pass" if t["pass"] else "FAIL")
            for t in r["targets"]]
    lines += ["targets (issue 11):",
              *_table(("dataset", "target", "value", "result"), rows, left=2),
              "", f"total {r['seconds']:.0f} s"]
    return "\n".join(lines)


def _datasets(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown dataset(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(DATASETS)}")
    return [d for d in DATASETS if d in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"3 folds, routellm_mmlu subsampled to {QUICK_MMLU_PROMPTS} prompts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--datasets", type=_datasets, default=list(DATASETS),
                        metavar="A,B", help=f"datasets to run (default all: {','.join(DATASETS)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="LightGBM threads per fit (default 1)")
    args = parser.parse_args(argv)
    THREADS["num_threads"] = args.threads
    if any(d != "demo" for d in args.datasets) and not (DATA / "prices.csv").is_file():
        print(f"skipped: shared data not found at {DATA} (set ROUTER_SHARED_DATA or put "
            f"../shared/data beside the repository)")
        return 0
    results = run(args.datasets, quick=args.quick, seed=args.seed,
                  progress=sys.stderr.isatty())
    print(json.dumps(results, indent=2, default=float) if args.json else format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
