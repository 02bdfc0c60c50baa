"""Training time and peak memory at 100k, 300k and 1M rows (target: 1M in < 5 min, < 6 GB).

Each size is generated in one child process (`training.demo_data.generate_demo`,
one row per prompt x catalog model, written to Parquet) and then loaded with
`load_outcomes` and fitted in a fresh child, as `router train` does; that child's
peak RSS is from `resource.getrusage` `ru_maxrss` (tracemalloc misses numpy and
LightGBM buffers). Printed per size: rows, prompts, seconds to generate (not counted), load, fit
(features + boosters + held-out evaluation, holdout 10%), total, peak RSS, and
the peak already reached once the table is loaded (before fitting). The baseline
in the same run is bare LightGBM on a random matrix of the same shape for the
same number of rounds: what the pipeline costs over gradient boosting alone.

Run: python bench/train_scale.py [--sizes 100000,300000,1000000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(rows: int, path: str) -> dict[str, float]:
    """Write the synthetic table (own process, so its memory is not counted)."""
    from router.catalog import load_catalog
    from training.data import write_outcomes
    from training.demo_data import generate_demo

    catalog = load_catalog()
    t0 = time.perf_counter()
    write_outcomes(generate_demo(max(1, rows // len(catalog)), 0, catalog), path)
    return {"generate_s": time.perf_counter() - t0}


def child(path: str, threads: int) -> dict[str, float]:
    """Load and fit as `router train` does, in a fresh process: its peak RSS is ours."""
    import numpy as np

    from router.catalog import load_catalog
    from router.predictor import QualityModel
    from training.data import load_outcomes

    catalog = load_catalog()
    t2 = time.perf_counter()
    table = load_outcomes(path, catalog=catalog)
    t3 = time.perf_counter()
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    model = QualityModel(n_jobs=threads).fit(table, catalog=catalog, holdout_frac=0.1)
    t4 = time.perf_counter()
    rss_fitted = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    # Baseline: bare LightGBM on a matrix of the same shape, same rounds.
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    width = len(model.feature_names_)
    x = rng.random((len(table), width), dtype=np.float32)
    y = table["quality"].to_numpy()
    t5 = time.perf_counter()
    lgb.train({"objective": "cross_entropy", "verbosity": -1, "num_threads": threads,
               "force_row_wise": True}, lgb.Dataset(x, y),
              num_boost_round=model.metadata["best_iteration"])
    t6 = time.perf_counter()
    return {"rows": len(table), "prompts": model.metadata["n_prompts"],
            "load_s": t3 - t2, "fit_s": t4 - t3,
            "rounds": model.metadata["best_iteration"], "bare_lgbm_s": t6 - t5,
            "log_loss": model.metadata["metrics"]["log_loss"], "rss_loaded_gb": rss_loaded,
            "peak_rss_gb": rss_fitted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate is not None:
        print(json.dumps(generate(args.generate, args.child)))
        return
    if args.child is not None:
        print(json.dumps(child(args.child, args.threads)))
        return
    print(f"{'rows':>9s} {'prompts':>8s} {'gen s':>7s} {'load s':>7s} {'fit s':>7s} "
          f"{'rounds':>6s} {'bare lgbm s':>11s} {'train s':>8s} {'peak GB':>8s} "
          f"{'(loaded)':>8s} {'logloss':>8s}")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "demo.parquet")
            gen = subprocess.run([sys.executable, __file__, "--generate", str(size),
                                  "--child", path], capture_output=True, text=True, check=True)
            proc = subprocess.run([sys.executable, __file__, "--child", path,
                                   "--threads", str(args.threads)],
                                  capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{size:>9d} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r.update(json.loads(gen.stdout.strip().splitlines()[-1]))
        print(f"{r['rows']:>9d} {r['prompts']:>8d} {r['generate_s']:7.1f} {r['load_s']:7.1f} "
              f"{r['fit_s']:7.1f} {r['rounds']:>6d} {r['bare_lgbm_s']:11.1f} "
              f"{r['load_s'] + r['fit_s']:8.1f} {r['peak_rss_gb']:8.2f} {r['rss_loaded_gb']:8.2f} "
              f"{r['log_loss']:8.4f}",
              flush=True)


if __name__ == "__main__":
    main()
