# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Real data: RouteLLM MMLU and GSM8K, against the published figures
#
# RouteLLM's evaluation outcomes, one row per (prompt, model) for Mixtral-8x7B (weak) and
# GPT-4-1106 (strong), correct 0/1, read from `../shared/data` (or `$ROUTER_SHARED_DATA`).
#
# With two models the RouteLLM metrics apply: the x axis is the share of calls sent to the
# strong model; **PGR** = (q − q_weak) / (q_strong − q_weak) is the share of the quality gap
# recovered; **APGR** is its average over 10 shares; **CPT(50%)** is the least strong-call
# share that recovers half the gap. Published (RouteLLM paper, best router): CPT(50%) ≈ 35% on
# MMLU and ≈ 34% on GSM8K; a perfect per-prompt router (oracle) needs 6% and 11%.
#
# Our router is scored out of fold: k-fold cross-validation by prompt, a fresh quality model
# per fold (`bench/quality.py`'s `cross_validate`, same definitions as `router eval`). To stay
# under a minute this notebook uses 3 folds and a 2,000-prompt MMLU subsample; run
# `python bench/quality.py` for the full 5-fold figures.

# %%
import importlib.util
import os
from pathlib import Path


def repo_root() -> Path:
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "pyproject.toml").is_file() and (folder / "router").is_dir():
            return folder
    raise RuntimeError("run this notebook from inside the cost-aware-router repository")


REPO = repo_root()
DATA = Path(os.environ.get("ROUTER_SHARED_DATA", REPO.parent / "shared" / "data"))
if not (DATA / "prices.csv").is_file():
    raise FileNotFoundError(f"RouteLLM data not found at {DATA}: put ../shared/data beside the "
                            "repository or set ROUTER_SHARED_DATA")

spec = importlib.util.spec_from_file_location("bench_quality", REPO / "bench" / "quality.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

FOLDS, MMLU_PROMPTS, SEED = 3, 2000, 0

# %%
from router.catalog import load_catalog, load_prices_csv  # noqa: E402
from training.data import load_outcomes  # noqa: E402

catalog = load_catalog().with_prices(load_prices_csv(DATA / "prices.csv"))
tables = {
    "MMLU": bench._subsample(load_outcomes(DATA / "routellm_mmlu.csv.gz", catalog=catalog),
                             MMLU_PROMPTS, SEED),
    "GSM8K": load_outcomes(DATA / "routellm_gsm8k.csv.gz", catalog=catalog),
}
for name, table in tables.items():
    print(f"{name}: {table['prompt_id'].nunique()} prompts, models "
          f"{sorted(table['model'].unique())}")

# %%
PUBLISHED = {"MMLU": (0.35, 0.06), "GSM8K": (0.34, 0.11)}  # router CPT(50%), oracle CPT(50%)
reports = {}
for name, table in tables.items():
    reports[name], _ = bench.cross_validate(table, catalog, folds=FOLDS, seed=SEED,
                                            desc=name, progress=False)


def pct(value):
    return "never" if value is None else f"{100 * value:.1f}%"


for name, report in reports.items():
    tm = report.two_model
    published_router, published_oracle = PUBLISHED[name]
    print(f"\n{name}: {report.n_prompts} prompts, weak quality {tm['q_weak']:.3f}, "
          f"strong {tm['q_strong']:.3f}")
    print(f"  {'method':<28} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9}")
    for method in ("router", "knn", "random", "oracle"):
        m = tm[method]
        print(f"  {method:<28} {m['apgr']:>6.3f} {pct(m['cpt50']):>9} {pct(m['cpt80']):>9}")
    print(f"  {'RouteLLM published (best)':<28} {'':>6} {pct(published_router):>9}")
    print(f"  {'oracle published':<28} {'':>6} {pct(published_oracle):>9}")
    print(f"RESULT {name} router_apgr={tm['router']['apgr']:.4f} "
          f"router_cpt50={tm['router']['cpt50'] if tm['router']['cpt50'] is not None else 1.0:.4f} "
          f"random_apgr={tm['random']['apgr']:.4f} oracle_cpt50={tm['oracle']['cpt50']:.4f}")

# %% [markdown]
# ## PGR against the strong-call share
#
# The diagonal is the random router; above it, the router recovers more of the gap than its
# share of strong calls. The dotted lines mark the published CPT(50%).

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from IPython.display import Image, display  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
for ax, (name, report) in zip(axes, reports.items(), strict=True):
    tm = report.two_model
    for method, style in (("router", "-"), ("knn", "--")):
        curve = tm[method].get("curve")
        if curve:
            xs = [p["strong_share"] for p in curve]
            ys = [(p["quality"] - tm["q_weak"]) / (tm["q_strong"] - tm["q_weak"]) for p in curve]
            ax.plot(xs, ys, style, label=f"{method} (APGR {tm[method]['apgr']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label=f"random (APGR {tm['random']['apgr']:.3f})")
    ax.axhline(0.5, color="lightgrey", lw=0.8)
    ax.axvline(PUBLISHED[name][0], color="tab:red", ls=":", lw=1, label="RouteLLM CPT(50%)")
    ax.axvline(PUBLISHED[name][1], color="tab:green", ls=":", lw=1, label="oracle CPT(50%)")
    ax.set(title=f"{name} ({FOLDS}-fold out of fold)", xlabel="share of calls to GPT-4",
           ylabel="PGR", xlim=(0, 1), ylim=(-0.1, 1.1))
    ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
out = Path(os.environ.get("TMPDIR", "/tmp")) / "routellm_pgr.png"
fig.savefig(out, dpi=100)
plt.close(fig)
display(Image(filename=str(out)))
