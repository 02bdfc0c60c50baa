"""Pairs of prompts for the semantic cache: (cached, asked, kind), from templates.

`adversarial_pairs()`: the asked prompt means something else (an antonym, one word
swapped in a long prompt, a number, a negation, a product or a name, a language,
the order of an instruction); the cache must never answer it. `benign_pairs()`:
the asked prompt is the cached one with its case, punctuation, whitespace or
greeting changed, or one typo; the cache should answer most of them.

Shared by `tests/router/cache/test_semantic.py` (which asserts the rates) and
`bench/semantic_cache.py` (which prints them with lookup latencies).
"""

from __future__ import annotations

import random

__all__ = ["adversarial_pairs", "benign_pairs"]

# -- adversarial ------------------------------------------------------------------------------

# Verbs that reverse each other, in long (19+ word) prompts where they are the only change.
_ANTONYM_VERBS = [
    ("enable", "disable"), ("subscribe", "unsubscribe"), ("activate", "deactivate"),
    ("approve", "reject"), ("increase", "decrease"), ("allow", "block"),
    ("include", "exclude"), ("import", "export"), ("encrypt", "decrypt"),
    ("upload", "download"), ("accept", "decline"), ("open", "close"), ("add", "remove"),
    ("lock", "unlock"), ("upgrade", "downgrade"), ("start", "stop"), ("show", "hide"),
    ("expand", "collapse"), ("archive", "restore"), ("follow", "unfollow"),
    ("install", "uninstall"), ("connect", "disconnect"), ("merge", "split"),
]
_VERB_TEMPLATES = [
    "Please write a short and friendly note for our customer support team explaining step "
    "by step how to {w} the weekly newsletter for every account in the company workspace",
    "I manage about forty user accounts in the admin console and I need clear instructions "
    "on how to {w} the feature for all of them at once without breaking anything",
    "Draft a polite reply to the customer who asked us yesterday afternoon whether they can "
    "{w} the premium plan themselves from the billing page of the mobile app",
    "Our security review found a problem, so tell me which settings I should change in the "
    "dashboard to {w} access for the contractors group before the audit next week",
]
# Adjectives and adverbs that reverse an order, a rank or a sense.
_ANTONYM_WORDS = [
    ("ascending", "descending"), ("most", "least"), ("highest", "lowest"),
    ("oldest", "newest"), ("cheapest", "dearest"), ("positive", "negative"),
    ("urgent", "helpful"), ("public", "private"), ("internal", "external"),
    ("formal", "informal"), ("shorter", "longer"), ("first", "last"),
    ("minimum", "maximum"), ("valid", "invalid"), ("earliest", "latest"),
    ("largest", "smallest"),
]
_WORD_TEMPLATES = [
    "Sort the support tickets below by priority in {w} order and then give me a short "
    "summary of the three that our team should look at today before the meeting",
    "From the list of customer reviews pasted below pick the {w} ones and explain in two "
    "sentences each why you chose them for the product team report",
    "Rank these twenty suppliers from our procurement spreadsheet by the {w} delivery time "
    "and mention any supplier that is missing data in a separate short list",
]
# One content word swapped in a long prompt, including words one letter apart that are
# both English words (never a typo): casual/causal, desert/dessert...
_SWAPS = [
    ("email", "letter"), ("customer", "manager"), ("Monday", "Friday"),
    ("invoice", "receipt"), ("casual", "causal"), ("desert", "dessert"),
    ("prescribe", "proscribe"), ("complement", "compliment"), ("marital", "martial"),
    ("later", "latter"), ("adapt", "adopt"), ("lightning", "lightening"),
    ("stationary", "stationery"), ("affect", "effect"), ("addition", "edition"),
    ("expand", "expend"), ("device", "devise"), ("advice", "advise"), ("statue", "statute"),
    ("angel", "angle"), ("quiet", "quite"), ("collage", "college"), ("sever", "severe"),
    ("medal", "metal"), ("diary", "dairy"), ("moral", "morale"), ("horse", "house"),
    ("light", "night"), ("summary", "summery"), ("cheap", "cheat"),
]
_SWAP_TEMPLATES = [
    "Could you help me write a clear paragraph for the internal wiki page that explains the "
    "word {w} to new colleagues who joined the company this month",
    "In the context of the training material we are preparing for next quarter please explain "
    "what {w} means and give two short examples that a beginner would understand",
]
_NUMBERS = [
    ("List the top {n} rivers in Europe by length", ("5", "3")),
    ("Summarise this article in {n} sentences", ("3", "4")),
    ("What is {n} divided by 7?", ("84", "48")),
    ("Convert {n} miles to kilometres", ("3.5", "35")),
    ("Schedule the meeting for {n} pm on Thursday", ("3", "4")),
    ("Write a {n} word product description for our new headphones", ("50", "500")),
    ("Give me {n} ideas for a team building event", ("10", "100")),
    ("What was the population of France in {n}?", ("2010", "2020")),
    ("Set the thermostat to {n} degrees", ("21", "-21")),
    ("Is {n} a prime number?", ("91", "97")),
    ("Apply a {n}% discount to the order total", ("10", "15")),
    ("Call the customer back at 555-{n}", ("0100", "0199")),
    ("Round {n} to the nearest integer", ("2.5", "2.4")),
    ("Refund {n} dollars to the customer", ("1,000", "1,500")),
    ("Explain chapter {n} of the employee handbook", ("2", "12")),
    ("Translate the first {n} lines of the poem", ("4", "40")),
]
_NEGATIONS = [
    ("Write a short poem about cats", "Don't write a short poem about cats"),
    ("Is a tomato a fruit?", "Is a tomato not a fruit?"),
    ("Write a poem with rhymes", "Write a poem without rhymes"),
    ("The customer can cancel the order online", "The customer cannot cancel the order "
     "online"),
    ("Always include the order number in the reply", "Never include the order number in "
     "the reply"),
    ("List the orders that shipped on time", "List the orders that never shipped on time"),
    ("Explain why the test passes", "Explain why the test does not pass"),
    ("Should I reply to this email?", "Should I not reply to this email?"),
    ("Summarise the reviews that mention the battery",
     "Summarise the reviews that don't mention the battery"),
    ("Describe a city where it rains", "Describe a city where it never rains"),
    ("Keep the header in the exported file", "Keep no header in the exported file"),
    ("Tell me which invoices are paid", "Tell me which invoices are unpaid"),
    ("Tell me which invoices are paid", "Tell me which invoices aren't paid"),
    ("Find users who have logged in this week", "Find users who haven't logged in this "
     "week"),
    ("Sort the list, including duplicates", "Sort the list, excluding duplicates"),
    ("The meeting is mandatory for everyone", "The meeting is optional for everyone"),
]
_PRODUCTS = [
    ("Kindle", "Kobo"), ("iPhone", "Pixel"), ("AWS", "GCP"), ("PostgreSQL", "MySQL"),
    ("Python", "Java"), ("React", "Vue"), ("Windows", "macOS"), ("Visa", "Mastercard"),
    ("Netflix", "Hulu"), ("Slack", "Teams"), ("gpt-4o", "gpt-4o-mini"), ("Zambia", "Gambia"),
    ("Colombia", "Columbia"), ("Austria", "Australia"), ("scipy", "scapy"),
    ("Johnson", "Jonson"), ("Tesla", "Toyota"), ("Alice", "Alicia"), ("Figma", "Sigma"),
    ("figma", "sigma"), ("Tumblr", "Tumbler"), ("Shopify", "Spotify"),
]
_PRODUCT_TEMPLATES = [
    "How do I reset my {w} account password if I no longer have access to my email?",
    "{w} keeps crashing when I open large files, what should I check first?",
    "Write a short comparison of {w} for a customer who asked about pricing",
]
_LANGUAGES = [
    ("Translate 'good morning' into {w}", ("French", "German")),
    ("Translate this sentence into {w}: the train leaves at noon", ("Spanish", "Italian")),
    ("Answer in {w} only: what is the capital of Japan?", ("English", "Spanish")),
    ("Write a function that reverses a linked list in {w}", ("Python", "Rust")),
    ("Explain this error message in plain {w}", ("English", "French")),
    ("Reply to the customer in {w} and keep it short", ("Portuguese", "Dutch")),
    ("Donne-moi une recette avec du {w}", ("poisson", "poison")),
    ("Traduis en anglais : le {w} est sur la table", ("chat", "chien")),
]
_ORDER = [
    ("Summarise this email from Alice to Bob", "Summarise this email from Bob to Alice"),
    ("dog bites man", "man bites dog"),
    ("Convert 30 degrees Celsius to Fahrenheit", "Convert 30 degrees Fahrenheit to Celsius"),
    ("Subtract 3 from 10", "Subtract 10 from 3"),
    ("First summarise the text, then translate it", "First translate the text, then "
     "summarise it"),
    ("Sort by date, then by name", "Sort by name, then by date"),
    ("Is x > y?", "Is x < y?"),
    ("Compute a - b", "Compute a + b"),
    ("Move the files from staging to production", "Move the files from production to "
     "staging"),
    ("Transfer 100 dollars from savings to checking", "Transfer 100 dollars from checking "
     "to savings"),
    ("Rename report.txt to summary.txt", "Rename summary.txt to report.txt"),
    ("The buyer pays the seller", "The seller pays the buyer"),
    ("Replace commas with semicolons", "Replace semicolons with commas"),
    ("Explain why cats chase mice", "Explain why mice chase cats"),
    ("Copy column A into column B", "Copy column B into column A"),
    ("Give me the pros and then the cons", "Give me the cons and then the pros"),
]


def _both_ways(pairs: list[tuple[str, str]], kind: str) -> list[tuple[str, str, str]]:
    return [(a, b, kind) for a, b in pairs] + [(b, a, kind) for a, b in pairs]


def adversarial_pairs() -> list[tuple[str, str, str]]:
    """(cached, asked, kind): the asked prompt is a different question. Both directions."""
    out: list[tuple[str, str, str]] = []
    out += _both_ways([(t.format(w=a), t.format(w=b)) for a, b in _ANTONYM_VERBS
                       for t in _VERB_TEMPLATES], "antonym")
    out += _both_ways([(t.format(w=a), t.format(w=b)) for a, b in _ANTONYM_WORDS
                       for t in _WORD_TEMPLATES], "antonym")
    out += _both_ways([(t.format(w=a), t.format(w=b)) for a, b in _SWAPS
                       for t in _SWAP_TEMPLATES], "one-word swap")
    out += _both_ways([(t.format(n=a), t.format(n=b)) for t, (a, b) in _NUMBERS], "number")
    out += _both_ways(_NEGATIONS, "negation")
    out += _both_ways([(t.format(w=a), t.format(w=b)) for a, b in _PRODUCTS
                       for t in _PRODUCT_TEMPLATES], "product or name")
    out += _both_ways([(t.format(w=a), t.format(w=b)) for t, (a, b) in _LANGUAGES], "language")
    out += _both_ways(_ORDER, "order")
    return out


# -- benign -----------------------------------------------------------------------------------

_BASES = [
    "What is the capital of France?",
    "Summarise the following customer complaint in two sentences.",
    "Write a polite reply to a customer asking for a refund on a damaged blender.",
    "Explain the difference between a list and a tuple in Python.",
    "Classify the sentiment of this review: the delivery was late but the product works.",
    "Translate 'where is the train station' into Spanish.",
    "Give me three ideas for a birthday party for a ten year old.",
    "How do I reset my password on the company portal?",
    "Rank these support tickets by urgency and explain your ranking.",
    "Extract the invoice number and the total amount from the text below.",
    "Write a haiku about autumn leaves.",
    "What are the main causes of inflation?",
    "Draft a short announcement about the office closing early on Friday.",
    "Which of these two headlines is more engaging for a newsletter?",
    "List the steps to change a flat tyre safely.",
    "Suggest a name for a coffee shop near the university campus.",
    "Explain recursion to a beginner with a simple example.",
    "Summarise the meeting notes and list the action items with owners.",
    "Is it better to rent or buy a house in a large city?",
    "Write a product description for noise cancelling headphones.",
    "Check this paragraph for grammar mistakes and correct them.",
    "Describe the water cycle for a school presentation.",
    "Compare electric cars and hybrid cars for a family of four.",
    "Generate a SQL query that counts orders per customer.",
    "What should I pack for a weekend hiking trip in the mountains?",
]
_GREETINGS = ["Hi, ", "Hello! ", "Hey there, ", "Good morning. ", "Hi team,\n", "Please ",
              "Hello, please "]
_CLOSINGS = [" Thanks!", " Thank you.", " Thanks in advance.", " Please."]


def _typo(text: str, rng: random.Random) -> str:
    """One slip in one lower-case word of 5+ letters: a dropped, doubled or swapped letter."""
    words = text.split(" ")
    choices = [i for i, w in enumerate(words) if w.isalpha() and w.islower() and len(w) >= 5]
    i = rng.choice(choices)
    word = words[i]
    j = rng.randrange(1, len(word) - 2)
    slip = rng.choice(("drop", "double", "swap"))
    if slip == "drop":
        word = word[:j] + word[j + 1:]
    elif slip == "double":
        word = word[:j] + word[j] + word[j:]
    else:
        word = word[:j] + word[j + 1] + word[j] + word[j + 2:]
    words[i] = word
    return " ".join(words)


def benign_pairs(seed: int = 16) -> list[tuple[str, str, str]]:
    """(cached, asked, kind): the same question; kinds case, punctuation, whitespace,
    greeting and typo, one of each per base prompt."""
    rng = random.Random(seed)
    out: list[tuple[str, str, str]] = []
    for base in _BASES:
        out.append((base, rng.choice([v for v in (base.lower(), base.upper(), base.title())
                                      if v != base]), "case"))
        out.append((base, base.rstrip(".?!") if base[-1] in ".?!" else base + ".",
                    "punctuation"))
        out.append((base, "  " + base.replace(" ", rng.choice(["  ", "\n", " \t "]), 2)
                    + "\n", "whitespace"))
        greeted = rng.choice(_GREETINGS) + base[0].lower() + base[1:]
        out.append((base, greeted + rng.choice(["", *_CLOSINGS]) if rng.random() < 0.5
                    else greeted, "greeting"))
        out.append((base, _typo(base, rng), "typo"))
    return out
