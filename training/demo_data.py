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
  `cost_usd` = tokens x catalog prices.

Deterministic: the same `(n_prompts, seed, catalog, world)` gives the same table,
byte for byte once written. The seed draws prompts and outcomes; the world (the
models' skills) is fixed unless asked for, so tables drawn with different seeds
are fresh prompts from the same traffic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from router.catalog import Catalog, load_catalog
from router.conversation import parse_conversation
from router.errors import ConfigError

__all__ = ["TASKS", "DIFFICULTIES", "generate_demo"]

TASKS = ("classification", "extraction", "summarisation", "factual_qa", "math",
         "coding", "reasoning", "creative_writing", "translation")
DIFFICULTIES = ("easy", "medium", "hard")
_LEVEL = {"easy": 0.15, "medium": 0.5, "hard": 0.85}
_LEVEL_P = (0.45, 0.35, 0.20)
_GRADED = {"summarisation", "creative_writing", "translation"}
# Typical answer length per task (tokens) before difficulty and verbosity.
_OUT_TOKENS = {"classification": 8, "extraction": 60, "summarisation": 140,
               "factual_qa": 45, "math": 180, "coding": 320, "reasoning": 260,
               "creative_writing": 420, "translation": 90}
_SLOPE = 8.0

_TOPICS = ["the new billing dashboard", "a delayed parcel", "the quarterly sales report",
           "a hotel stay in Lisbon", "the mobile banking app", "a broken coffee machine",
           "the onboarding process", "an electric scooter", "the customer loyalty program",
           "a cloud storage outage", "the office relocation", "a vegan cookbook"]
_NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jonas"]
_ITEMS = ["apples", "notebooks", "tickets", "bolts", "cupcakes", "licenses", "tiles", "seeds"]
_LANGS = ["Spanish", "French", "German", "Japanese", "Portuguese", "Italian"]
_FILLER = [
    "The team reviewed the figures twice before the meeting on Tuesday.",
    "Several customers mentioned that the previous version was easier to use.",
    "Revenue in the northern region grew 12% while costs rose 4%.",
    "The contract renews automatically unless either party objects within 30 days.",
    "Support tickets doubled after the release and response times slipped to 9 hours.",
    "Management asked for a clear recommendation rather than a list of options.",
    "The pilot ran for six weeks across three warehouses with 41 staff.",
    "Two suppliers missed their delivery windows, which delayed assembly by a week.",
    "Legal flagged clause 7.2 as ambiguous regarding liability for indirect damages.",
    "The survey had 1,250 respondents and a margin of error of 2.8 percentage points.",
]
_CONSTRAINTS = [
    "Answer in valid JSON.", "Use at most 80 words.", "Cite the figures you rely on.",
    "Use bullet points.", "Explain your reasoning step by step.",
    "Do not mention competitors.", "Write for a non-technical executive audience.",
    "Include a one-line summary at the end.", "Keep the original formatting.",
    "Flag any assumption you make explicitly.", "Use British spelling.",
]
_SYSTEMS = ["You are a helpful assistant for ACME Corp's customer support team.",
            "You are a meticulous analyst. Be precise and concise.",
            "You are a senior software engineer reviewing code for a fintech company.",
            "You are a friendly tutor for high-school students."]


@dataclass(frozen=True)
class _Prompt:
    task: str
    difficulty: str
    level: float
    messages: tuple[tuple[str, str], ...]


def _constraints(rng: np.random.Generator, difficulty: str) -> str:
    count = {"easy": 0, "medium": int(rng.integers(1, 3)), "hard": int(rng.integers(3, 6))}
    chosen = rng.choice(_CONSTRAINTS, size=count[difficulty], replace=False)
    return (" " + " ".join(chosen)) if len(chosen) else ""


def _context(rng: np.random.Generator, difficulty: str) -> str:
    count = {"easy": 1, "medium": 3, "hard": 7}[difficulty]
    return " ".join(rng.choice(_FILLER, size=count, replace=count > len(_FILLER)))


def _text(task: str, difficulty: str, rng: np.random.Generator) -> str:
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    topic, name, item = pick(_TOPICS), pick(_NAMES), pick(_ITEMS)
    a, b, c = (int(x) for x in rng.integers(2, 90, size=3))
    hard, easy = difficulty == "hard", difficulty == "easy"
    ctx, cons = _context(rng, difficulty), _constraints(rng, difficulty)
    if task == "classification":
        if easy:
            return (f"Classify the sentiment of this review as positive or negative: "
                    f"\"I love {topic}, it works great.\"")
        labels = ["billing", "bug", "feature request", "complaint", "praise", "security",
                  "cancellation", "other"][: 4 if not hard else 8]
        return (f"Classify the following support ticket about {topic} into one of: "
                f"{', '.join(labels)}. If several apply, rank them and give a confidence "
                f"for each.\n\nTicket: {ctx}{cons}")
    if task == "extraction":
        if easy:
            return (f"Extract the email address from: \"Contact {name} at "
                    f"{name.lower()}@example.com\".")
        fields = "parties, dates, amounts, obligations and termination conditions" if hard \
            else "names, dates and amounts"
        return (f"Extract all {fields} from the text below into a JSON object with one key "
                f"per field.\n\n{ctx} {name} owes ${a * 1000 + b} by {c % 28 + 1} March."
                f"{cons}")
    if task == "summarisation":
        if easy:
            return f"Summarise in one sentence: {ctx}"
        return (f"Summarise the following {'report' if hard else 'note'} about {topic} for "
                f"the board, keeping every number.\n\n{ctx}\n\n{_context(rng, difficulty)}{cons}")
    if task == "factual_qa":
        if easy:
            return pick(["What is the capital of France?", "How many days are in a leap year?",
                         "Who wrote Romeo and Juliet?", "What is the boiling point of water "
                         "in Celsius?", "What is the largest planet in the solar system?"])
        if hard:
            return (f"Compare the causes and long-term economic consequences of the 1973 oil "
                    f"crisis and the 2008 financial crisis, with specific dates and figures, "
                    f"and explain which policy responses were most effective.{cons}")
        return (f"Explain how vaccines train the immune system and why booster doses are "
                f"sometimes needed.{cons}")
    if task == "math":
        if easy:
            return f"What is {a} + {b}?"
        if hard:
            return (f"{name} invests ${a * 100} at {b % 9 + 2}% interest compounded monthly, "
                    f"withdraws ${c * 10} after {b % 5 + 2} years, and reinvests the rest at "
                    f"{c % 7 + 1}% for {a % 6 + 3} more years. Then {name} splits the total "
                    f"among {c % 4 + 2} people after a {a % 20 + 5}% tax. How much does each "
                    f"person receive? Prove each step.{cons}")
        return (f"{name} buys {a} {item} at ${b} each and sells {c % a + 1} of them at twice "
                f"the price. How much money does {name} have left over after spending?{cons}")
    if task == "coding":
        if easy:
            return "Write a Python function that returns the sum of a list of numbers."
        if hard:
            return ("Find the race condition in this code and rewrite it as a thread-safe LRU "
                    "cache with per-entry TTL, O(1) operations and unit tests:\n\n```python\n"
                    "class Cache:\n    def __init__(self, size):\n        self.data = {}\n"
                    "        self.size = size\n    def get(self, key):\n"
                    "        return self.data.get(key)\n    def put(self, key, value):\n"
                    "        if len(self.data) >= self.size:\n"
                    "            self.data.pop(next(iter(self.data)))\n"
                    f"        self.data[key] = value\n```{cons}")
        return (f"Write a function that parses a CSV line with quoted fields and returns a list "
                f"of values. Handle escaped quotes.{cons}")
    if task == "reasoning":
        if easy:
            return (f"All {item} in the box are red. {name} took one {item[:-1]} from the box. "
                    f"What colour is it?")
        people = _NAMES[: 5 if hard else 3]
        return (f"{', '.join(people)} sit in a row. {people[0]} is not at either end. "
                f"{people[1]} sits left of {people[2]}. "
                + (f"{people[3]} sits next to {people[4]} but not next to {people[0]}. "
                   if hard else "")
                + f"Determine every possible seating order and justify each step.{cons}")
    if task == "creative_writing":
        if easy:
            return f"Write a haiku about {pick(['autumn', 'the sea', 'coffee', 'snow'])}."
        words = 1200 if hard else 300
        return (f"Write a {words}-word short story about {topic} told from the perspective "
                f"of {name}, with a twist ending"
                + (", alternating between two timelines and ending every paragraph with a "
                   "question" if hard else "") + f".{cons}")
    # translation
    lang = pick(_LANGS)
    if easy:
        return f"Translate to {lang}: \"Good morning, how are you?\""
    return (f"Translate the following {'contract clause' if hard else 'paragraph'} into "
            f"{lang}, preserving legal terminology and formatting:\n\n{ctx}{cons}")


def _make_prompt(rng: np.random.Generator) -> _Prompt:
    task = TASKS[int(rng.integers(len(TASKS)))]
    difficulty = DIFFICULTIES[int(rng.choice(3, p=_LEVEL_P))]
    level = float(np.clip(_LEVEL[difficulty] + rng.uniform(-0.1, 0.1), 0.0, 1.0))
    user = _text(task, difficulty, rng)
    messages: tuple[tuple[str, str], ...] = (("user", user),)
    if rng.random() < 0.2:
        system = _SYSTEMS[int(rng.integers(len(_SYSTEMS)))]
        messages = (("system", system),
                    ("user", "Hi, I have a question about our account."),
                    ("assistant", "Of course, what would you like to know?"),
                    ("user", user))
    return _Prompt(task, difficulty, level, messages)


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
    output_tokens, cost_usd, task, difficulty (easy / medium / hard).
    `with_expected=True` adds `expected_quality`, the latent probability of a
    good answer, for tests and benchmarks (never train on it).
    """
    if n_prompts < 1:
        raise ConfigError(f"n_prompts must be at least 1, got {n_prompts}")
    catalog = catalog if catalog is not None else load_catalog()
    names = list(catalog.names)
    rng = np.random.default_rng(seed)
    prompts = [_make_prompt(rng) for _ in range(n_prompts)]
    skills, verbosity = _skills(catalog, world)
    task_idx = np.array([TASKS.index(p.task) for p in prompts])
    level = np.array([p.level for p in prompts])
    # (prompts, models): chance of a good answer.
    expected = 1.0 / (1.0 + np.exp(-_SLOPE * (skills[:, task_idx].T - level[:, None])))
    graded = np.array([p.task in _GRADED for p in prompts])
    draws = rng.random(expected.shape)
    scores = np.clip(expected + rng.normal(0.0, 0.08, size=expected.shape), 0.0, 1.0)
    quality = np.where(graded[:, None], np.round(scores, 3), (draws < expected).astype(float))
    base_out = np.array([_OUT_TOKENS[p.task] for p in prompts], dtype="float64")
    out_tokens = np.round(base_out[:, None] * (0.6 + 1.2 * level[:, None]) * verbosity[None, :]
                          * np.exp(rng.normal(0.0, 0.3, size=expected.shape)))
    out_tokens = np.maximum(out_tokens, 1.0)

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
    if with_expected:
        table["expected_quality"] = expected.ravel()
    return table
