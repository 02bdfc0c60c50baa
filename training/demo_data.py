"""Synthetic outcome data for the quickstart: realistic enough that routing pays.

`generate_demo` writes one row per (prompt, model) over every catalog model. The
world it simulates has the structure that makes a cost-aware router worth
having, and keeps it visible in the prompt text so a text model can learn it:

* nine task types (classification, extraction, summarisation, factual QA, math
  word problems, coding, multi-step reasoning, creative writing, translation),
  each with easy / medium / hard prompts. Harder prompts are longer, carry more
  constraints ("answer in JSON", "at most 80 words", ...), more numbers, code
  blocks and domain vocabulary; about a fifth are chats with a system prompt and
  an earlier exchange;
* every model has a latent skill per task: a base that grows with the log of its
  price (so expensive models are better on average) plus a per-task offset (so
  no model is best at everything). The chance of a good answer is
  `sigmoid(8 * (skill - difficulty))`: on easy prompts every model is nearly
  perfect, on hard prompts only strong models are. Cheap models are therefore
  good enough for most traffic and a router that spends only on hard prompts
  reaches the best single model's quality at a fraction of its cost;
* quality is 0/1 correctness for classification, extraction, QA, math, coding
  and reasoning, and a noisy graded score in [0, 1] for summarisation, creative
  writing and translation (judge-style);
* output tokens depend on the task, the difficulty and the model's verbosity;
  `cost_usd` = tokens x catalog prices;
* latency: a per-model time to first token plus output tokens at a per-model
  rate, with a heavy tail (`latency_profile`); one cheap model is slow.

Deterministic: the same `(n_prompts, seed, catalog, world)` gives the same table,
byte for byte once written. The seed draws prompts and outcomes; the world (the
models' skills) is fixed unless asked for, so tables drawn with different seeds
are fresh prompts from the same traffic.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from router.catalog import Catalog, load_catalog
from router.conversation import parse_conversation
from router.errors import ConfigError
from training.demo_prompts import DIFFICULTIES, TASKS, DemoPrompt, make_prompt

__all__ = ["TASKS", "DIFFICULTIES", "generate_demo", "latency_profile"]

_GRADED = {"summarisation", "creative_writing", "translation"}
# Typical answer length per task (tokens) before difficulty and verbosity.
_OUT_TOKENS = {"classification": 8, "extraction": 60, "summarisation": 140,
               "factual_qa": 45, "math": 180, "coding": 320, "reasoning": 260,
               "creative_writing": 420, "translation": 90}
_SLOPE = 8.0

def _model_rng(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _skills(catalog: Catalog, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(skill per model and task, verbosity per model); depends on names, not order."""
    names = list(catalog.names)
    price = np.array([catalog[n].cost_usd(1000, 1000) for n in names], dtype="float64")
    logp = np.log(np.maximum(price, 1e-9))
    span = logp.max() - logp.min()
    x = (logp - logp.min()) / span if span > 0 else np.ones_like(logp)
    # Diminishing returns: the last 5x in price buys a few points, not a new tier,
    # which is what makes the most expensive model a poor default.
    base = 0.55 + 0.45 * (1.0 - np.exp(-4.0 * x)) / (1.0 - np.exp(-4.0))
    skills = np.empty((len(names), len(TASKS)))
    verbosity = np.empty(len(names))
    for i, name in enumerate(names):
        rng = _model_rng(seed, name)
        skills[i] = base[i] + rng.normal(0.0, 0.07, size=len(TASKS))
        verbosity[i] = float(np.exp(rng.normal(0.0, 0.25)))
    return skills, verbosity


def generate_demo(n_prompts: int = 2000, seed: int = 0, catalog: Catalog | None = None,
                  *, world: int = 0, with_expected: bool = False) -> pd.DataFrame:
    """A synthetic outcome table over every catalog model (see the module docstring).

    `seed` draws the prompts and their outcomes; `world` draws the models' skills.
    Two tables with different seeds and the same world are fresh prompts of the same
    traffic to the same models: what a router trained on one is tested on with the
    other. A different world is different models (a drift).

    Columns: prompt_id, prompt (the last user message), messages (JSON, only for
    chats with a system prompt, empty otherwise), model, quality, input_tokens,
    output_tokens, cost_usd, task, difficulty (easy / medium / hard), latency_ms
    and ttft_ms (`latency_profile`; their own random stream, so the other columns
    are the same as a table without them).
    `with_expected=True` adds `expected_quality`, the latent probability of a
    good answer, for tests and benchmarks (never train on it).
    """
    if n_prompts < 1:
        raise ConfigError(f"n_prompts must be at least 1, got {n_prompts}")
    catalog = catalog if catalog is not None else load_catalog()
    names = list(catalog.names)
    rng = np.random.default_rng(seed)
    prompts = [make_prompt(rng) for _ in range(n_prompts)]
    expected, quality, out_tokens = _outcomes(prompts, catalog, world, rng)
    convs = [parse_conversation([{"role": r, "content": c} for r, c in p.messages])
             for p in prompts]
    in_tokens = np.array([c.input_tokens for c in convs], dtype="float64")
    price_in = np.array([catalog[n].input_usd_per_mtok for n in names])
    price_out = np.array([catalog[n].output_usd_per_mtok for n in names])
    cost = (in_tokens[:, None] * price_in[None, :] + out_tokens * price_out[None, :]) / 1e6

    width = len(str(n_prompts - 1))
    ids = [f"demo-{seed}-{i:0{width}d}" for i in range(n_prompts)]
    chats = [json.dumps(c.to_messages(), ensure_ascii=False) if len(p.messages) > 1 else None
             for p, c in zip(prompts, convs, strict=True)]
    n_models = len(names)
    table = pd.DataFrame({
        "prompt_id": np.repeat(ids, n_models),
        "prompt": np.repeat([c.last_user for c in convs], n_models),
        "messages": np.repeat(np.array(chats, dtype=object), n_models),
        "model": np.tile(names, n_prompts),
        "quality": quality.ravel(),
        "input_tokens": np.repeat(in_tokens, n_models),
        "output_tokens": out_tokens.ravel(),
        "cost_usd": cost.ravel(),
        "task": np.repeat([p.task for p in prompts], n_models),
        "difficulty": np.repeat([p.difficulty for p in prompts], n_models),
    })
    ttft, latency = _latencies(catalog, world, seed, in_tokens, out_tokens)
    table["latency_ms"] = latency.ravel()
    table["ttft_ms"] = ttft.ravel()
    if with_expected:
        table["expected_quality"] = expected.ravel()
    return table


def _outcomes(prompts: list[DemoPrompt], catalog: Catalog, world: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chance of a good answer, quality, output tokens), each (prompts, models)."""
    skills, verbosity = _skills(catalog, world)
    task_idx = np.array([TASKS.index(p.task) for p in prompts])
    level = np.array([p.level for p in prompts])
    expected = 1.0 / (1.0 + np.exp(-_SLOPE * (skills[:, task_idx].T - level[:, None])))
    graded = np.array([p.task in _GRADED for p in prompts])
    draws = rng.random(expected.shape)
    scores = np.clip(expected + rng.normal(0.0, 0.08, size=expected.shape), 0.0, 1.0)
    quality = np.where(graded[:, None], np.round(scores, 3), (draws < expected).astype(float))
    base_out = np.array([_OUT_TOKENS[p.task] for p in prompts], dtype="float64")
    out_tokens = np.round(base_out[:, None] * (0.6 + 1.2 * level[:, None]) * verbosity[None, :]
                          * np.exp(rng.normal(0.0, 0.3, size=expected.shape)))
    return expected, quality, np.maximum(out_tokens, 1.0)


def latency_profile(catalog: Catalog, world: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(median time to first token in ms, output tokens per second) per catalog model.

    Pricier models are slower (bigger): the first token from about 250 ms to
    750 ms, 150 down to 30 tokens per second, with a per-model spread. The
    second-cheapest model is cheap but slow (a busy provider: 3x the first
    token, a quarter of the rate), so a latency limit changes what the cheap
    end of the router picks. Depends on names and `world`, not order.
    """
    names = list(catalog.names)
    price = np.array([catalog[n].cost_usd(1000, 1000) for n in names], dtype="float64")
    logp = np.log(np.maximum(price, 1e-9))
    span = logp.max() - logp.min()
    x = (logp - logp.min()) / span if span > 0 else np.zeros_like(logp)
    ttft = 250.0 * (1.0 + 2.0 * x)
    rate = 150.0 / (1.0 + 4.0 * x)
    for i, name in enumerate(names):
        rng = _model_rng(world, f"latency:{name}")
        ttft[i] *= float(np.exp(rng.normal(0.0, 0.15)))
        rate[i] *= float(np.exp(rng.normal(0.0, 0.15)))
    if len(names) >= 2:
        slow = int(np.argsort(price, kind="stable")[1])
        ttft[slow] *= 3.0
        rate[slow] /= 4.0
    return ttft, rate


def _latencies(catalog: Catalog, world: int, seed: int, in_tokens: np.ndarray,
               out_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ttft_ms, latency_ms), each (prompts, models), whole milliseconds.

    Time to first token: the model's median, plus prefill at 8,000 input tokens
    per second, with lognormal noise; the answer then streams at the model's
    rate with its own noise. A heavy tail: 2% of calls are 3-8x slower (a
    queue, a retry inside the provider). Drawn from their own random stream,
    so every other column is the same as without them.
    """
    ttft_base, rate = latency_profile(catalog, world)
    rng = _model_rng(seed, "latency draws")
    shape = out_tokens.shape
    ttft = (ttft_base[None, :] + in_tokens[:, None] / 8.0) * np.exp(
        rng.normal(0.0, 0.3, size=shape))
    stream = out_tokens / rate[None, :] * 1e3 * np.exp(rng.normal(0.0, 0.2, size=shape))
    slow = rng.random(shape) < 0.02
    tail = np.where(slow, rng.uniform(3.0, 8.0, size=shape), 1.0)
    ttft = ttft * tail
    return np.round(ttft), np.round(ttft + stream * tail)
