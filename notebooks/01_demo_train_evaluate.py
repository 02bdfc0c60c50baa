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
# # 01 · Train and evaluate a router on demo data
#
# What `router quickstart` does, through the Python API: generate synthetic outcomes
# (every prompt answered by every catalog model, with a quality in [0, 1] and a cost),
# train the LightGBM quality model, and score it as a router on prompts it never saw.
#
# How to read the figure: each dot is a single model (mean cost per request, mean quality);
# the router's curve has one point per quality bar, its thick hull is the best mix of bars.
# **AIQ** is the area under a hull up to the most expensive model's cost, divided by that
# cost. The **Zero router** is the hull of the single models alone (random mixing, no
# prediction): a router earns its keep only above it. The star is the **oracle**, the
# cheapest best model per prompt: the ceiling.

# %%
import tempfile
from pathlib import Path

from router.catalog import load_catalog
from training.data import load_outcomes
from training.demo_data import generate_demo
from training.evaluate import evaluate
from training.plots import plot_report
from training.train import train

TRAIN_PROMPTS, TEST_PROMPTS, SEED = 1000, 250, 0
workdir = Path(tempfile.mkdtemp(prefix="router-nb01-"))
catalog = load_catalog()

# Written and read back exactly as `router demo-data` and `router train` do.
generate_demo(TRAIN_PROMPTS, seed=SEED, catalog=catalog).to_csv(workdir / "train.csv", index=False)
generate_demo(TEST_PROMPTS, seed=SEED + 1, catalog=catalog).to_csv(workdir / "test.csv",
                                                                   index=False)
train_table = load_outcomes(workdir / "train.csv", catalog=catalog)
test_table = load_outcomes(workdir / "test.csv", catalog=catalog)
print(f"train: {train_table['prompt_id'].nunique()} prompts x "
      f"{train_table['model'].nunique()} models; test: {test_table['prompt_id'].nunique()} prompts")

# %% [markdown]
# ## Train
# 10% of the prompts are held out for the metrics and the default bar stored in the artifact.

# %%
model = train(train_table, workdir / "model", catalog=catalog, seed=SEED, progress=False)
meta = model.metadata
print("version", meta.get("version_id"), "default bar", meta.get("default_bar"))

# %% [markdown]
# ## Evaluate on the fresh prompts

# %%
report = evaluate(model, test_table, train_table=train_table, seed=SEED)
print(f"{'model':<20} {'cost/request':>13} {'quality':>8}")


def usd(value: float) -> str:
    return f"${value:.6f}"


for single in sorted(report.single_models, key=lambda s: s["cost_usd"]):
    print(f"{single['model']:<20} {usd(single['cost_usd']):>13} {single['quality']:>8.4f}")
print(f"{'oracle':<20} {usd(report.oracle['cost_usd']):>13} {report.oracle['quality']:>8.4f}")
print()
print(f"AIQ router {report.aiq:.4f}")
print(f"AIQ Zero router {report.zero_router_aiq:.4f}")
print(f"AIQ kNN {report.knn['aiq']:.4f}")
print(f"AIQ random {report.random['aiq']:.4f}")
print(f"oracle quality {report.oracle['quality']:.4f}")
print(f"best single model {report.best_single_model}")

# %% [markdown]
# ## The cost-quality plot

# %%
from IPython.display import Image, display  # noqa: E402

png = plot_report(report, workdir / "eval.png", title="demo data: prompts the router never saw")
display(Image(filename=str(png)))
print(f"plot {png} ({png.stat().st_size} bytes)")

# %% [markdown]
# The router's AIQ minus the Zero router's is the value of prediction on this data; the gap to
# the oracle's quality at its cost is what better predictions could still win.

# %%
print(f"router minus Zero router {report.aiq - report.zero_router_aiq:+.4f}")
