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
# # 03 · The closed loop: cost and quality per round
#
# `router simulate` runs the loop end to end over real sockets: a fake provider answers from an
# outcome table (so every answer carries the table's quality), chat traffic flows through a
# real `router serve`, feedback is posted from the table, and `router retrain` runs after each
# round, promoting the challenger only if the gate passes. The first router is trained on 10%
# of the traffic prompts; each round's `aiq` scores the version that served it on a fixed
# held-out part of the table, next to `full_data_aiq`, a router trained on all of it.
#
# The notebook uses the command's JSON contract,
# `{"rounds": [{"round", "model_version", "promoted", "requests", "quality", "cost_usd",
# "aiq"}], "full_data_aiq"}`, so it shows what a user of the CLI sees. Small sizes keep it
# under a minute; for the real thing:
#
#     router simulate --data ../shared/data/arena_bench_v1.csv.gz \
#         --prices ../shared/data/prices.csv --rounds 5

# %%
import json
import os
import subprocess
import tempfile
from pathlib import Path

PROMPTS, ROUNDS, REQUESTS_PER_ROUND, SEED = 600, 3, 120, 0
workdir = Path(tempfile.mkdtemp(prefix="router-nb03-"))
data = workdir / "outcomes.csv.gz"
env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
subprocess.run(["router", "demo-data", "--out", str(data), "--prompts", str(PROMPTS),
                "--seed", str(SEED)], check=True, env=env, capture_output=True)
done = subprocess.run(
    ["router", "simulate", "--data", str(data), "--rounds", str(ROUNDS),
     "--requests-per-round", str(REQUESTS_PER_ROUND), "--seed", str(SEED), "--json",
     "--plot", str(workdir / "loop.png")],
    env=env, capture_output=True, text=True)
if done.returncode != 0:
    raise RuntimeError(f"router simulate failed:\n{done.stderr[-2000:]}")
result = json.loads(done.stdout.strip().splitlines()[-1])
rounds = result["rounds"]

# %%
print(f"{'round':>5} {'version':<28} {'promoted':>8} {'requests':>8} {'quality':>8} "
      f"{'cost/request':>13} {'AIQ':>7}")
for r in rounds:
    print(f"{r['round']:>5} {r['model_version']:<28} {str(r['promoted']):>8} {r['requests']:>8} "
          f"{r['quality']:>8.4f} {'$' + format(r['cost_usd'], '.6f'):>13} {r['aiq']:>7.4f}")
print(f"full-data AIQ {result['full_data_aiq']:.4f}")
for r in rounds:
    print(f"ROUND {r['round']} quality={r['quality']:.4f} cost_usd={r['cost_usd']:.6f} "
          f"aiq={r['aiq']:.4f} promoted={r['promoted']}")
print(f"FULL_DATA_AIQ {result['full_data_aiq']:.4f}")

# %% [markdown]
# ## Per round
#
# Left: the served traffic's mean quality and mean cost per request. Right: each round's AIQ
# on the held-out prompts, approaching the full-data router's.

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from IPython.display import Image, display  # noqa: E402

xs = [r["round"] for r in rounds]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.plot(xs, [r["quality"] for r in rounds], "o-", color="tab:blue", label="mean quality")
left.set(xlabel="round", ylabel="mean quality of served traffic")
cost_axis = left.twinx()
cost_axis.plot(xs, [r["cost_usd"] for r in rounds], "s--", color="tab:orange",
               label="cost per request")
cost_axis.set_ylabel("mean cost per request (USD)")
left.legend(loc="upper left", fontsize=8)
cost_axis.legend(loc="lower right", fontsize=8)
right.plot(xs, [r["aiq"] for r in rounds], "o-", label="serving version's AIQ")
right.axhline(result["full_data_aiq"], ls=":", color="grey", label="full-data router")
right.set(xlabel="round", ylabel="AIQ on held-out prompts")
right.legend(fontsize=8)
for ax in (left, right):
    ax.set_xticks(xs)
fig.tight_layout()
fig.savefig(workdir / "per_round.png", dpi=100)
plt.close(fig)
display(Image(filename=str(workdir / "per_round.png")))
