"""The demo data's prompts: task types, difficulty levels and the text of each.

`make_prompt` draws one prompt (task, difficulty, latent level, messages) from a
random generator; `training.demo_data` draws the outcomes. The text keeps the
structure visible that makes a cost-aware router worth having: harder prompts
are longer, carry more constraints, numbers, code and domain vocabulary; about
a fifth are chats with a system prompt and an earlier exchange. The draws are
made in a fixed order, so a seed gives the same prompts byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DIFFICULTIES", "TASKS", "DemoPrompt", "make_prompt"]

TASKS = ("classification", "extraction", "summarisation", "factual_qa", "math",
         "coding", "reasoning", "creative_writing", "translation")
DIFFICULTIES = ("easy", "medium", "hard")
_LEVEL = {"easy": 0.15, "medium": 0.5, "hard": 0.85}
_LEVEL_P = (0.45, 0.35, 0.20)
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
class DemoPrompt:
    """One drawn prompt: its task, difficulty, latent level in [0, 1] and messages."""

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


@dataclass(frozen=True)
class _Parts:
    """What every prompt text draws first, in this order (the draws fix the table)."""

    rng: np.random.Generator
    topic: str
    name: str
    item: str
    a: int
    b: int
    c: int
    hard: bool
    easy: bool
    ctx: str
    cons: str

    def pick(self, xs: list[str]) -> str:
        return xs[int(self.rng.integers(len(xs)))]


def _text(task: str, difficulty: str, rng: np.random.Generator) -> str:
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    topic, name, item = pick(_TOPICS), pick(_NAMES), pick(_ITEMS)
    a, b, c = (int(x) for x in rng.integers(2, 90, size=3))
    hard, easy = difficulty == "hard", difficulty == "easy"
    ctx, cons = _context(rng, difficulty), _constraints(rng, difficulty)
    parts = _Parts(rng, topic, name, item, a, b, c, hard, easy, ctx, cons)
    return _TEXTS[task](parts, difficulty)


def _classification_text(p: _Parts, difficulty: str) -> str:
    topic, hard, easy, ctx, cons = p.topic, p.hard, p.easy, p.ctx, p.cons
    if easy:
        return (f"Classify the sentiment of this review as positive or negative: "
                f"\"I love {topic}, it works great.\"")
    labels = ["billing", "bug", "feature request", "complaint", "praise", "security",
              "cancellation", "other"][: 4 if not hard else 8]
    return (f"Classify the following support ticket about {topic} into one of: "
            f"{', '.join(labels)}. If several apply, rank them and give a confidence "
            f"for each.\n\nTicket: {ctx}{cons}")


def _extraction_text(p: _Parts, difficulty: str) -> str:
    name, a, b, c, hard, easy, ctx, cons = p.name, p.a, p.b, p.c, p.hard, p.easy, p.ctx, p.cons
    if easy:
        return (f"Extract the email address from: \"Contact {name} at "
                f"{name.lower()}@example.com\".")
    fields = "parties, dates, amounts, obligations and termination conditions" if hard \
        else "names, dates and amounts"
    return (f"Extract all {fields} from the text below into a JSON object with one key "
            f"per field.\n\n{ctx} {name} owes ${a * 1000 + b} by {c % 28 + 1} March."
            f"{cons}")


def _summarisation_text(p: _Parts, difficulty: str) -> str:
    rng, topic, hard, easy, ctx, cons = p.rng, p.topic, p.hard, p.easy, p.ctx, p.cons
    if easy:
        return f"Summarise in one sentence: {ctx}"
    return (f"Summarise the following {'report' if hard else 'note'} about {topic} for "
            f"the board, keeping every number.\n\n{ctx}\n\n{_context(rng, difficulty)}{cons}")


def _factual_qa_text(p: _Parts, difficulty: str) -> str:
    pick, hard, easy, cons = p.pick, p.hard, p.easy, p.cons
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


def _math_text(p: _Parts, difficulty: str) -> str:
    name, item, a, b, c, hard, easy, cons = p.name, p.item, p.a, p.b, p.c, p.hard, p.easy, p.cons
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


def _coding_text(p: _Parts, difficulty: str) -> str:
    hard, easy, cons = p.hard, p.easy, p.cons
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


def _reasoning_text(p: _Parts, difficulty: str) -> str:
    name, item, hard, easy, cons = p.name, p.item, p.hard, p.easy, p.cons
    if easy:
        return (f"All {item} in the box are red. {name} took one {item[:-1]} from the box. "
                f"What colour is it?")
    people = _NAMES[: 5 if hard else 3]
    return (f"{', '.join(people)} sit in a row. {people[0]} is not at either end. "
            f"{people[1]} sits left of {people[2]}. "
            + (f"{people[3]} sits next to {people[4]} but not next to {people[0]}. "
               if hard else "")
            + f"Determine every possible seating order and justify each step.{cons}")


def _creative_writing_text(p: _Parts, difficulty: str) -> str:
    pick, topic, name, hard, easy, cons = p.pick, p.topic, p.name, p.hard, p.easy, p.cons
    if easy:
        return f"Write a haiku about {pick(['autumn', 'the sea', 'coffee', 'snow'])}."
    words = 1200 if hard else 300
    return (f"Write a {words}-word short story about {topic} told from the perspective "
            f"of {name}, with a twist ending"
            + (", alternating between two timelines and ending every paragraph with a "
               "question" if hard else "") + f".{cons}")


def _translation_text(p: _Parts, difficulty: str) -> str:
    pick, hard, easy, ctx, cons = p.pick, p.hard, p.easy, p.ctx, p.cons
    lang = pick(_LANGS)
    if easy:
        return f"Translate to {lang}: \"Good morning, how are you?\""
    return (f"Translate the following {'contract clause' if hard else 'paragraph'} into "
            f"{lang}, preserving legal terminology and formatting:\n\n{ctx}{cons}")



_TEXTS = {
    "classification": _classification_text,
    "extraction": _extraction_text,
    "summarisation": _summarisation_text,
    "factual_qa": _factual_qa_text,
    "math": _math_text,
    "coding": _coding_text,
    "reasoning": _reasoning_text,
    "creative_writing": _creative_writing_text,
    "translation": _translation_text,
}


def make_prompt(rng: np.random.Generator) -> DemoPrompt:
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
    return DemoPrompt(task, difficulty, level, messages)
