"""Routing quality on the real data in ../shared/data, with the baselines of the same run.

    python bench/quality.py            # full run (5-fold CV everywhere)
    python bench/quality.py --quick    # smaller run (MMLU subsampled, 3 folds)
    python bench/quality.py --json     # one JSON object instead of tables

What it measures (definitions in training/metrics.py, DESIGN.md "Metrics"):

* routellm_mmlu, routellm_gsm8k (Mixtral-8x7B weak, GPT-4-1106 strong): k-fold
  cross-validation by prompt, a fresh `QualityModel` (features included) fitted
  inside each fold; pooled out-of-fold predictions give APGR, CPT(50%), CPT(80%)
  for our router, the kNN router (same folds, on the fold's own embeddings), the
  random router and the oracle, beside the published RouteLLM figures;
* out of domain: trained on all of MMLU, tested on GSM8K, and the reverse;
* a learning curve: 10%, 30%, 100% of each training fold;
* arena_bench_v1 (15 models, priced with prices.csv): AIQ, Zero-router AIQ, their
  difference, kNN and random AIQ, cost to reach the best single model's quality
  (fraction of its cost), and in-process decision latency (predict + policy for
  one request, p50/p99) with the policy alone as the baseline.

The shipped quality model blends the LightGBM booster with a per-model logistic
regression on TF-IDF (`QualityModel(linear_weight=0.5)`). Each fold's model is
fitted once and also scored with the head's weight set to 0 (booster only) and 1
(logistic regression only): the booster and the head are fitted independently,
so this equals fitting three models. A length-only router (score = input
tokens, longer prompts go to the strong model) is the trivial baseline. The
first table is issue 3's target table; the second lists every baseline.

Skips with a message (exit 0) when ../shared/data (or $ROUTER_SHARED_DATA) is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ROUTER_SHARED_DATA", REPO.parent / "shared" / "data"))

# RouteLLM paper (best router, Mixtral weak / GPT-4 strong) and its perfect router,
# as quoted in ../shared/data/README.md.
PUBLISHED = {
    "routellm_mmlu": {"router_cpt50": 0.35, "oracle_cpt50": 0.06},
    "routellm_gsm8k": {"router_cpt50": 0.34, "oracle_cpt50": 0.11},
}


THREADS = {"num_threads": 1}
# Head weight of each variant scored from one fitted model (see the docstring).
VARIANTS = {"blend": 0.5, "booster": 0.0, "linear": 1.0}


def _fit(table: pd.DataFrame, catalog: Any, seed: int) -> Any:
    from router.predictor import QualityModel

    # Explicit threads: LightGBM's default (all cores) slows down 10x when the
    # machine is shared, which would make the timings meaningless.
    return QualityModel(params=THREADS).fit(table, catalog=catalog, holdout_frac=0.0,
                                            seed=seed)


def _matrices(table: pd.DataFrame, models: list[str]) -> tuple[list[str], list[Any], np.ndarray,
                                                               np.ndarray]:
    """Unique prompts with an outcome for every model: ids, conversations, quality, cost."""
    from training.data import conversations
    from training.evaluate import outcome_matrices

    ids, convs = conversations(table)
    quality, cost = outcome_matrices(table, models, ids)
    ok = np.isfinite(quality).all(axis=1) & np.isfinite(cost).all(axis=1)
    return ([i for i, g in zip(ids, ok, strict=True) if g],
            [c for c, g in zip(convs, ok, strict=True) if g], quality[ok], cost[ok])


def _variant(model: Any, weight: float) -> Any:
    """The fitted model with its linear-head weight set to `weight` (a shallow copy)."""
    clone = object.__new__(type(model))
    clone.__dict__.update(model.__dict__)
    clone.linear_weight = weight
    return clone


def _predict(model: Any, convs: list[Any], models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    pred = model.predict(convs)
    names = [str(m) for m in pred.models]
    cols = [names.index(m) for m in models]
    return (np.asarray(pred.quality, dtype=np.float64)[:, cols],
            np.asarray(pred.cost_usd, dtype=np.float64)[:, cols])


def _knn(model: Any, train_convs: list[Any], train_q: np.ndarray, train_c: np.ndarray,
         test_convs: list[Any], k: int) -> tuple[np.ndarray, np.ndarray]:
    from training.evaluate import knn_quality

    emb = model.features_.embed
    pq = knn_quality(np.asarray(emb(train_convs)), train_q, np.asarray(emb(test_convs)), k)
    return pq, np.broadcast_to(train_c.mean(axis=0), pq.shape).copy()


def cross_validate(table: pd.DataFrame, catalog: Any, *, folds: int, seed: int,
                   fractions: tuple[float, ...] = (1.0,), knn_k: int = 20,
                   progress: bool = False) -> dict[float, Any]:
    """Pooled out-of-fold EvalReports of the shipped model, one per training fraction."""
    return cross_validate_variants(table, catalog, folds=folds, seed=seed,
                                   fractions=fractions, knn_k=knn_k, progress=progress)[0]


def cross_validate_variants(table: pd.DataFrame, catalog: Any, *, folds: int, seed: int,
                            fractions: tuple[float, ...] = (1.0,), knn_k: int = 20,
                            progress: bool = False) -> tuple[dict[float, Any], dict[str, Any]]:
    """Pooled out-of-fold EvalReports: (shipped model per training fraction,
    variant name -> report at the full fraction, `VARIANTS`).

    Folds are by prompt; for each fold and fraction a fresh model is fitted on that
    fraction of the other folds' prompts (all of their rows), then predicts the fold.
    The kNN router uses the same training prompts and the fold model's embeddings.
    """
    from tqdm import tqdm

    from training.evaluate import KnnPrediction, report_from_predictions

    models = sorted(table["model"].astype(str).unique())
    ids, convs, quality, cost = _matrices(table, models)
    n = len(ids)
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(n) % folds
    pid = table["prompt_id"].astype(str)
    out_pq = {f: np.empty_like(quality) for f in fractions}
    out_pc = {f: np.empty_like(quality) for f in fractions}
    out_kq = {f: np.empty_like(quality) for f in fractions}
    out_kc = {f: np.empty_like(quality) for f in fractions}
    var_pq = {v: np.empty_like(quality) for v in VARIANTS if v != "blend"}
    bar = tqdm(total=folds * len(fractions), desc="cv fits", disable=not progress)
    for fold in range(folds):
        test = np.flatnonzero(fold_of == fold)
        train_all = np.flatnonzero(fold_of != fold)
        test_convs = [convs[i] for i in test]
        for frac in fractions:
            size = max(10, int(round(frac * len(train_all))))
            train = np.sort(rng.choice(train_all, size=min(size, len(train_all)),
                                       replace=False))
            train_ids = {ids[i] for i in train}
            model = _fit(table[pid.isin(train_ids)], catalog, seed + fold)
            out_pq[frac][test], out_pc[frac][test] = _predict(model, test_convs, models)
            if frac == 1.0:
                for v in var_pq:
                    var_pq[v][test] = _predict(_variant(model, VARIANTS[v]), test_convs,
                                               models)[0]
            out_kq[frac][test], out_kc[frac][test] = _knn(
                model, [convs[i] for i in train], quality[train], cost[train], test_convs, knn_k)
            bar.update()
    bar.close()
    reports = {frac: report_from_predictions(
        models, quality, cost, out_pq[frac], out_pc[frac],
        knn=KnnPrediction(out_kq[frac], out_kc[frac], knn_k, f"{folds}-fold out-of-fold"))
        for frac in fractions}
    variants = {v: report_from_predictions(models, quality, cost, pq, out_pc[1.0])
                for v, pq in var_pq.items()} if 1.0 in fractions else {}
    if 1.0 in fractions:
        variants["blend"] = reports[1.0]
        variants["input_tokens"] = np.array([c.input_tokens for c in convs], dtype=np.float64)
    return reports, variants


def length_only(report: Any, quality: np.ndarray, models: list[str],
                input_tokens: np.ndarray) -> dict[str, Any]:
    """Two-model APGR/CPT of routing by length: longer prompts go to the strong model."""
    from training import metrics

    tm = report.two_model
    strong, weak = models.index(tm["strong"]), models.index(tm["weak"])
    shares, quals = metrics.two_model_curve(input_tokens, quality[:, weak], quality[:, strong])
    q_w, q_s = tm["q_weak"], tm["q_strong"]
    return {"apgr": metrics.apgr(shares, quals, q_w, q_s),
            "cpt50": metrics.cpt(shares, quals, q_w, q_s, 0.5),
            "cpt80": metrics.cpt(shares, quals, q_w, q_s, 0.8)}


def out_of_domain(source: pd.DataFrame, target: pd.DataFrame, catalog: Any, *, seed: int,
                  knn_k: int = 20) -> Any:
    """Fit on all of `source`, score on all of `target` (router and kNN)."""
    from training.evaluate import KnnPrediction, report_from_predictions

    models = sorted(source["model"].astype(str).unique())
    model = _fit(source, catalog, seed)
    _, s_convs, s_q, s_c = _matrices(source, models)
    _, t_convs, t_q, t_c = _matrices(target, models)
    pq, pc = _predict(model, t_convs, models)
    kq, kc = _knn(model, s_convs, s_q, s_c, t_convs, knn_k)
    return report_from_predictions(models, t_q, t_c, pq, pc,
                                   knn=KnnPrediction(kq, kc, knn_k, "source domain"))


def decision_latency(model: Any, convs: list[Any], models: list[str],
                     n: int = 300) -> dict[str, float]:
    """p50/p99 ms of predict + policy for one request, and of the policy alone."""
    from router.policy import decide

    full, policy = [], []
    for conv in (convs * (n // max(1, len(convs)) + 1))[:n]:
        t0 = time.perf_counter()
        pred = model.predict([conv])
        t1 = time.perf_counter()
        decide(list(pred.models), pred.quality[0], pred.cost_usd[0], bar=0.7)
        t2 = time.perf_counter()
        full.append(t2 - t0)
        policy.append(t2 - t1)
    full_ms, policy_ms = np.array(full[10:]) * 1e3, np.array(policy[10:]) * 1e3  # skip warm-up
    return {"p50_ms": float(np.percentile(full_ms, 50)),
            "p99_ms": float(np.percentile(full_ms, 99)),
            "policy_p50_ms": float(np.percentile(policy_ms, 50)),
            "policy_p99_ms": float(np.percentile(policy_ms, 99))}


def _two(report: Any) -> dict[str, Any]:
    tm = report.two_model
    out = {name: {k: tm[name][k] for k in ("apgr", "cpt50", "cpt80")}
           for name in ("router", "knn", "random", "oracle") if name in tm}
    out["q_weak"], out["q_strong"] = tm["q_weak"], tm["q_strong"]
    return out


def _subsample(table: pd.DataFrame, n_prompts: int, seed: int) -> pd.DataFrame:
    ids = table["prompt_id"].astype(str).unique()
    if len(ids) <= n_prompts:
        return table
    keep = set(np.random.default_rng(seed).choice(ids, size=n_prompts, replace=False))
    return table[table["prompt_id"].astype(str).isin(keep)].reset_index(drop=True)


def run(quick: bool, seed: int, progress: bool) -> dict[str, Any]:
    from router.catalog import load_catalog, load_prices_csv
    from training.data import load_outcomes

    catalog = load_catalog().with_prices(load_prices_csv(DATA / "prices.csv"))
    folds = 3 if quick else 5
    fractions = (0.3, 1.0) if quick else (0.1, 0.3, 1.0)
    results: dict[str, Any] = {"quick": quick, "folds": folds, "seed": seed}
    tables = {}
    for name in ("routellm_mmlu", "routellm_gsm8k"):
        table = load_outcomes(DATA / f"{name}.csv.gz", catalog=catalog)
        if quick and name == "routellm_mmlu":
            table = _subsample(table, 3000, seed)
        tables[name] = table
        t0 = time.perf_counter()
        reports, variants = cross_validate_variants(table, catalog, folds=folds, seed=seed,
                                           fractions=fractions, progress=progress)
        full = reports[1.0]
        models = sorted(table["model"].astype(str).unique())
        _, _, quality, _ = _matrices(table, models)
        results[name] = {
            "n_prompts": full.n_prompts,
            **_two(full),
            "published": PUBLISHED[name],
            "booster": _two(variants["booster"])["router"],
            "linear": _two(variants["linear"])["router"],
            "length": length_only(full, quality, models, variants["input_tokens"]),
            "learning_curve": [{"fraction": f, **{k: r.two_model["router"][k]
                                                  for k in ("apgr", "cpt50", "cpt80")},
                                "knn_apgr": r.two_model["knn"]["apgr"]}
                               for f, r in sorted(reports.items())],
            "seconds": time.perf_counter() - t0,
        }
    for src, dst in (("routellm_mmlu", "routellm_gsm8k"), ("routellm_gsm8k", "routellm_mmlu")):
        report = out_of_domain(tables[src], tables[dst], catalog, seed=seed)
        results[f"ood_{src}_to_{dst}"] = _two(report)

    arena = load_outcomes(DATA / "arena_bench_v1.csv.gz", catalog=catalog)
    t0 = time.perf_counter()
    reports, variants = cross_validate_variants(arena, catalog, folds=folds, seed=seed,
                                       progress=progress)
    report = reports[1.0]
    models = sorted(arena["model"].astype(str).unique())
    model = _fit(arena, catalog, seed)
    _, convs, _, _ = _matrices(arena, models)
    results["arena_bench_v1"] = {
        "n_prompts": report.n_prompts, "n_models": len(report.models),
        "aiq": report.aiq, "zero_router_aiq": report.zero_router_aiq,
        "aiq_minus_zero": report.aiq - report.zero_router_aiq,
        "knn_aiq": report.knn["aiq"], "random_aiq": report.random["aiq"],
        "best_single_model": report.best_single_model,
        "best_single": next(s for s in report.single_models
                            if s["model"] == report.best_single_model),
        "oracle": report.oracle,
        "cost_at_best_single_quality": report.cost_at_best_single_quality,
        "quality_at_10pct_cost": report.quality_at_10pct_cost,
        "variants": {v: {"aiq_minus_zero": variants[v].aiq - variants[v].zero_router_aiq,
                         "cost_at_best_single_quality":
                             variants[v].cost_at_best_single_quality}
                     for v in ("booster", "linear")},
        "latency": decision_latency(model, convs, models),
        "latency_booster_only": decision_latency(_variant(model, 0.0), convs, models),
        "seconds": time.perf_counter() - t0,
    }
    return results


def _pct(v: float | None) -> str:
    return "  never" if v is None else f"{100 * v:6.1f}%"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def target_table(r: dict[str, Any]) -> list[str]:
    """Issue 3's target table: our value (shipped blend), target, reference, met."""
    rows = []
    refs = {"routellm_mmlu": "RouteLLM ~35%; TF-IDF+LR ~36%; oracle 6%",
            "routellm_gsm8k": "RouteLLM ~34%; oracle 11%"}
    for name in ("routellm_mmlu", "routellm_gsm8k"):
        d = r[name]["router"]
        orc = r[name]["oracle"]
        rows.append((f"{name} APGR", f"{d['apgr']:.3f}", ">= 0.70",
                     f"oracle here {orc['apgr']:.3f}", _met(d["apgr"] >= 0.70)))
        rows.append((f"{name} CPT(50%)", _pct(d["cpt50"]).strip(), "<= 25%",
                     f"{refs[name]} (oracle here {_pct(orc['cpt50']).strip()})",
                     _met(d["cpt50"] is not None and d["cpt50"] <= 0.25)))
    a = r["arena_bench_v1"]
    rows.append(("arena AIQ - Zero AIQ", f"{a['aiq_minus_zero']:+.4f}", ">= +0.03",
                 f"kNN {a['knn_aiq'] - a['zero_router_aiq']:+.4f}, random "
                 f"{a['random_aiq'] - a['zero_router_aiq']:+.4f}",
                 _met(a["aiq_minus_zero"] >= 0.03)))
    c = a["cost_at_best_single_quality"]
    rows.append(("arena cost at best single quality",
                 "never" if c is None else f"{100 * c:.1f}%", "<= 50%",
                 f"best single: {a['best_single_model']}",
                 _met(c is not None and c <= 0.5)))
    lat = a["latency"]
    rows.append(("decision latency p99", f"{lat['p99_ms']:.2f} ms", "<= 1 ms",
                 f"booster only {a['latency_booster_only']['p99_ms']:.2f} ms; policy alone "
                 f"{lat['policy_p99_ms']:.3f} ms", _met(lat["p99_ms"] <= 1.0)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    head = ("metric", "ours", "target", "reference", "")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    w0, w1, w2, w3 = widths[:4]
    return [f"  {c0:<{w0}}  {c1:>{w1}}  {c2:<{w2}}  {c3:<{w3}}  {c4}"
            for c0, c1, c2, c3, c4 in (head, *rows)]


def baseline_table(r: dict[str, Any]) -> list[str]:
    """Every method of the run: MMLU / GSM8K APGR and CPT(50%), arena AIQ - Zero, cost."""
    a = r["arena_bench_v1"]
    zero = a["zero_router_aiq"]
    lines = [f"  {'method':<30} {'MMLU APGR':>9} {'CPT50':>7} {'GSM8K APGR':>10} {'CPT50':>7} "
             f"{'arena AIQ-Zero':>14} {'cost@best':>9}"]

    def arena_cost(v: float | None) -> str:
        return "never" if v is None else f"{100 * v:.1f}%"

    methods = (
        ("random", "random", f"{a['random_aiq'] - zero:+.4f}", "-"),
        ("kNN router (k=20)", "knn", f"{a['knn_aiq'] - zero:+.4f}", "-"),
        ("length only (input tokens)", "length", "-", "-"),
        ("booster only (weight 0)", "booster",
         f"{a['variants']['booster']['aiq_minus_zero']:+.4f}",
         arena_cost(a["variants"]["booster"]["cost_at_best_single_quality"])),
        ("TF-IDF LR only (weight 1)", "linear",
         f"{a['variants']['linear']['aiq_minus_zero']:+.4f}",
         arena_cost(a["variants"]["linear"]["cost_at_best_single_quality"])),
        ("blend 0.5 (shipped default)", "router", f"{a['aiq_minus_zero']:+.4f}",
         arena_cost(a["cost_at_best_single_quality"])),
        ("oracle", "oracle", "-", "-"),
    )
    for label, key, aiq, cost in methods:
        mm, gg = r["routellm_mmlu"][key], r["routellm_gsm8k"][key]
        lines.append(f"  {label:<30} {mm['apgr']:>9.3f} {_pct(mm['cpt50']):>7} "
                     f"{gg['apgr']:>10.3f} {_pct(gg['cpt50']):>7} {aiq:>14} {cost:>9}")
    return lines


def format_results(r: dict[str, Any]) -> str:
    lines = [f"bench/quality.py: {r['folds']}-fold CV by prompt, seed {r['seed']}"
             f"{' (--quick: MMLU subsampled to 3000 prompts)' if r['quick'] else ''}", "",
             "issue 3 targets (ours = shipped default, booster + TF-IDF LR blend 0.5):",
             *target_table(r), "",
             "baselines, same folds, same run:", *baseline_table(r), ""]
    for name in ("routellm_mmlu", "routellm_gsm8k"):
        d = r[name]
        lines.append(f"{name}: {d['n_prompts']} prompts, weak quality {d['q_weak']:.3f}, "
                     f"strong {d['q_strong']:.3f} ({d['seconds']:.0f} s)")
        lines.append(f"  {'method':<26} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9}")
        for method in ("router", "knn", "random", "oracle"):
            m = d[method]
            label = {"router": "our router (blend)", "knn": "kNN router",
                     "random": "random", "oracle": "oracle"}[method]
            lines.append(f"  {label:<26} {m['apgr']:>6.3f} {_pct(m['cpt50']):>9} "
                         f"{_pct(m['cpt80']):>9}")
        pub = d["published"]
        lines.append(f"  {'RouteLLM published (best)':<26} {'':>6} "
                     f"{_pct(pub['router_cpt50']):>9}")
        lines.append(f"  {'oracle published':<26} {'':>6} {_pct(pub['oracle_cpt50']):>9}")
        lines.append("  learning curve (share of each training fold -> router APGR, CPT(50%); "
                     "kNN APGR):")
        for p in d["learning_curve"]:
            lines.append(f"    {100 * p['fraction']:5.0f}%  APGR {p['apgr']:.3f}  CPT(50%) "
                         f"{_pct(p['cpt50'])}  kNN APGR {p['knn_apgr']:.3f}")
        lines.append("")
    lines.append("out of domain (fit on all of one, test on all of the other):")
    lines.append(f"  {'':<30} {'router APGR':>11} {'CPT(50%)':>9} {'kNN APGR':>9}")
    for key, label in (("ood_routellm_mmlu_to_routellm_gsm8k", "MMLU -> GSM8K"),
                       ("ood_routellm_gsm8k_to_routellm_mmlu", "GSM8K -> MMLU")):
        d = r[key]
        lines.append(f"  {label:<30} {d['router']['apgr']:>11.3f} {_pct(d['router']['cpt50']):>9} "
                     f"{d['knn']['apgr']:>9.3f}")
    a = r["arena_bench_v1"]
    lines += ["", f"arena_bench_v1: {a['n_prompts']} prompts x {a['n_models']} models, priced with "
                  f"prices.csv ({a['seconds']:.0f} s)",
              f"  AIQ router {a['aiq']:.4f}   Zero router {a['zero_router_aiq']:.4f}   "
              f"router - Zero {a['aiq_minus_zero']:+.4f}",
              f"  AIQ kNN    {a['knn_aiq']:.4f}   random      {a['random_aiq']:.4f}",
              f"  best single {a['best_single_model']}: quality {a['best_single']['quality']:.3f} "
              f"at ${a['best_single']['cost_usd']:.5f}/request; oracle "
              f"{a['oracle']['quality']:.3f} at ${a['oracle']['cost_usd']:.5f}",
              "  cost to reach the best single model's quality: "
              + ("not reached (the router's hull stays below it)"
                 if a["cost_at_best_single_quality"] is None
                 else f"{100 * a['cost_at_best_single_quality']:.1f}% of its cost"),
              "  quality at 10% of its cost: " + ("not reachable" if a['quality_at_10pct_cost']
                                                  is None else f"{a['quality_at_10pct_cost']:.3f}"),
              f"  decision latency (predict + policy, one request, in-process): p50 "
              f"{a['latency']['p50_ms']:.2f} ms, p99 {a['latency']['p99_ms']:.2f} ms "
              f"(policy alone: p50 {a['latency']['policy_p50_ms']:.3f} ms)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller, faster run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="LightGBM threads per fit (default 1)")
    args = parser.parse_args(argv)
    THREADS["num_threads"] = args.threads
    if not (DATA / "prices.csv").is_file():
        print(f"skipped: shared data not found at {DATA} (set ROUTER_SHARED_DATA or put "
              f"../shared/data beside the repository)")
        return 0
    results = run(args.quick, args.seed, progress=sys.stderr.isatty())
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
