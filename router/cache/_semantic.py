"""The semantic cache (off by default): answer a request whose last user message differs
from a cached one only in ways that cannot change its meaning.

Why not embeddings
------------------
A cache that returns another question's answer is worse than no cache. The earlier
design (cosine over the router's text embedding, then a word-overlap guard) answered
"disable ..." with the cached answer to "enable ...", "descending" with "ascending" and
"kobo" with "kindle" in long prompts, and words the embedding never saw in training
left it unchanged. So the decision is made on the two messages' own tokens, all of
them, compared as strings: no fitted vocabulary, no similarity threshold.

The rule (`same_intent`; the cache's index below implements exactly it)
---------------------------------------------------------------------
Each last user message becomes a token sequence:

- Unicode NFKC, case-folded. Whitespace and prose punctuation (``. , ! ? ; :`` and
  quotes) are dropped; every other symbol (``+ - * / = < > % $ # ( ) [ ]``...) is a
  token. Numbers stay whole ("3.5", "1,000"), and so do words with inner apostrophes,
  dots, hyphens or slashes ("don't", "os.path", "gpt-4o").
- A leading greeting followed by punctuation ("Hi,", "Hello there!", "Good morning.")
  is dropped, then a leading "please" or "kindly", and a closing "thanks", "thank you"
  or "please" that follows punctuation, as long as something is left.

A hit requires the two sequences to be equal, or equal but for ONE word that is a
typo of the other:

- both words of 5 to 40 letters (letters only: never a number), neither capitalised
  (a name, a product, an acronym) unless it is an English word opening a sentence;
- one typing slip apart: a letter dropped or added, two neighbouring letters swapped,
  or a letter replaced by a neighbouring key (QWERTY) or the same letter with or
  without an accent;
- **exactly one** of the two an English word (pyspellchecker's list), in messages
  that are mostly (3 in 4) English words.

"recieve" is a typo of "receive" and "sumnary" of "summary"; "casual" and "causal",
"desert" and "dessert", "prescribe" and "proscribe" are two words and miss; two
unknown words (product names such as "scipy" and "scapy") miss; "figma" is not a
typo of "sigma" (f and s are not neighbouring keys); a French "poisson" is not taken
for a typo of "poison".

So a differing content word, number, negation, name, symbol or word order always
misses. Synonyms and rewordings miss too: that is the price of never answering a
different question.

Scope: everything except the last user message (the model asked for, every parameter,
all earlier messages) must be identical; it is hashed like the exact key, and only
requests the exact cache would take (`router.cache._exact.cache_key`) are considered.

Storage and cost
----------------
A lookup costs the same with 10 or 10,000 cached entries: `store` writes small index
entries through the backend (`CacheBackend.index_set`) and `lookup` reads the ones
it needs in one call (`index_get`):

- ``n<hash(scope, tokens)>`` -> the exact key of the cached request;
- for each of the first 24 typo-eligible words, ``t<hash(scope, tokens with that word
  masked)>`` -> the exact key, whether the word is English, and 8-byte hashes of the
  word and of its one-deletion variants (with the letter deleted and where), from
  which the typo rule is checked against the asked word.

Index values hold hashes, never prompt text. They expire with the cache TTL; when two
cached requests write the same index entry the later one wins, and the earlier is
then only found by its exact key. A typo beyond the 24th eligible word is not
tolerated.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from router.cache._exact import CacheBackend, CachedResponse, CacheHit, _digest, cache_key
from router.conversation import parse_conversation
from router.errors import DataError

__all__ = ["SemanticCache", "same_intent", "MIN_TYPO_LETTERS", "MAX_TYPO_WORDS"]

logger = logging.getLogger(__name__)

#: Shorter words are never taken for typos: "form"/"from", "lose"/"lost".
MIN_TYPO_LETTERS = 5
_MAX_TYPO_LETTERS = 40  # positions are stored in one byte
#: Typo-eligible words indexed per message (each costs one index entry).
MAX_TYPO_WORDS = 24
# Share of a message's words that must be English before a typo is tolerated in it.
_MIN_ENGLISH_SHARE = 0.75

# -- normalisation ---------------------------------------------------------------------------

_TOKEN = re.compile(r"\d+(?:[.,]\d+)+(?!\w)|\w+(?:['’./@-]\w+)*|[^\w\s]")
_PROSE_PUNCTUATION = frozenset(".,!?;:\"'`«»“”‘’„¿¡")
_SENTENCE_END = frozenset(".!?:")
_GREETING = re.compile(
    r"^\s*(?:(?:hi|hello|hey|hiya|howdy|greetings)(?:\s+(?:there|all|everyone|team|folks))?"
    r"|good\s+(?:morning|afternoon|evening|day))\s*[,!.:;\n]+\s*", re.IGNORECASE)
_COURTESY = re.compile(r"^\s*(?:please|kindly)[\s,]+", re.IGNORECASE)
_THANKS = re.compile(
    r"(?<=[.!?,;\n])\s*(?:(?:many\s+)?thanks(?:\s+(?:a\s+lot|so\s+much|in\s+advance))?"
    r"|thank\s+you(?:\s+(?:so\s+much|very\s+much|in\s+advance))?|thx|cheers|please)"
    r"\s*[.!]*\s*$", re.IGNORECASE)
_HAS_WORD = re.compile(r"\w")
_MASK = b"\xff\xff\xff\xff"  # never a token's length prefix
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, frozenset[str]]:
    at = {ch: (i + (0.0, 0.25, 0.75)[row], row)
          for row, keys in enumerate(_KEYBOARD_ROWS) for i, ch in enumerate(keys)}
    return {a: frozenset(b for b, (xb, yb) in at.items()
                         if (yb == ya and abs(xb - xa) == 1)
                         or (abs(yb - ya) == 1 and abs(xb - xa) <= 0.75))
            for a, (xa, ya) in at.items()}


_NEIGHBOURS = _keyboard_neighbours()


@functools.cache
def _english() -> Any:
    """pyspellchecker's English word list (~160,000 words, loaded once, ~0.1 s)."""
    from spellchecker import SpellChecker

    return SpellChecker(language="en", distance=1).word_frequency


def _strip_courtesy(text: str) -> str:
    """`text` without a leading greeting or please and a closing thanks, if words remain."""
    for pattern in (_GREETING, _COURTESY, _THANKS):
        stripped = pattern.sub("", text, count=1)
        if _HAS_WORD.search(stripped):
            text = stripped
    return text


def _tokens(text: str) -> tuple[list[str], list[int]]:
    """The message's tokens and the positions of the words a typo may change."""
    text = _strip_courtesy(unicodedata.normalize("NFKC", text))
    tokens: list[str] = []
    eligible: list[int] = []
    sentence_start, end = True, 0
    for match in _TOKEN.finditer(text):
        raw = match.group(0)
        if "\n" in text[end:match.start()]:
            sentence_start = True
        end = match.end()
        if raw in _PROSE_PUNCTUATION:
            sentence_start = sentence_start or raw in _SENTENCE_END
            continue
        token = raw.casefold().replace("’", "'")
        if (MIN_TYPO_LETTERS <= len(token) <= _MAX_TYPO_LETTERS and token.isalpha()
                and (raw.islower() or (sentence_start and raw[1:].islower()
                                       and token in _english()))):
            eligible.append(len(tokens))
        tokens.append(token)
        sentence_start = False
    return tokens, eligible


_Variants = dict[bytes, list[tuple[int, str]]]


def _hash8(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _variants(word: str) -> _Variants:
    """8-byte hashes of `word` (-> [(255, "")]) and of each string made by deleting one
    of its letters (-> [(position, letter)], several for a doubled letter): two words
    one slip apart share one."""
    out: _Variants = {_hash8(word): [(255, "")]}
    for i, letter in enumerate(word):
        out.setdefault(_hash8(word[:i] + word[i + 1:]), []).append((i, letter))
    return out


def _same_key_or_accent(a: str, b: str) -> bool:
    base = unicodedata.normalize("NFD", a)[0], unicodedata.normalize("NFD", b)[0]
    return base[0] == base[1] or base[1] in _NEIGHBOURS.get(base[0], ())


def _slip(a: _Variants, b: _Variants) -> bool:
    """Are the two (different) words one typing slip apart? See the module docstring."""
    for digest, deletions_a in a.items():
        for pos_b, letter_b in b.get(digest, ()):
            for pos_a, letter_a in deletions_a:
                if 255 in (pos_a, pos_b):
                    return True  # one is the other with a letter dropped
                if pos_a == pos_b and _same_key_or_accent(letter_a, letter_b):
                    return True  # a neighbouring key, or an accent
                if letter_a == letter_b and abs(pos_a - pos_b) == 1:
                    return True  # two neighbouring letters swapped
    return False


def _framed(token: str) -> bytes:
    data = token.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(4, "big") + data


@dataclass(frozen=True, slots=True)
class _Signature:
    """What a lookup needs of one message: index keys and, per typo slot, the word's
    English-ness and variant hashes."""

    norm: str
    typos: dict[str, tuple[bool, _Variants]]


def _signature(text: str, scope: str = "") -> _Signature:
    tokens, eligible = _tokens(text)
    english = _english()
    words = [t for t in tokens if t.isalpha()]
    known = {t for t in words if t in english}
    prose = bool(words) and sum(t in known for t in words) >= _MIN_ENGLISH_SHARE * len(words)
    slots = eligible[:MAX_TYPO_WORDS] if prose else []

    framed = [_framed(t) for t in tokens]
    suffix: dict[int, bytes] = {}  # hash of the tokens after each slot (read backwards)
    wanted = set(slots)
    backwards = hashlib.blake2b(digest_size=16)
    for i in range(len(framed) - 1, -1, -1):
        if i in wanted:
            suffix[i] = backwards.digest()
        backwards.update(framed[i])
    forwards = hashlib.blake2b(scope.encode("ascii"), digest_size=16)
    typos: dict[str, tuple[bool, _Variants]] = {}
    for i, data in enumerate(framed):
        if i in wanted:
            masked = forwards.copy()
            masked.update(_MASK + suffix[i])
            typos["t" + masked.hexdigest()] = (tokens[i] in known, _variants(tokens[i]))
        forwards.update(data)
    return _Signature("n" + forwards.hexdigest(), typos)


def _one_typo(a: tuple[bool, _Variants], b: tuple[bool, _Variants]) -> bool:
    """Same masked sequence: is the differing word a typo? Exactly one is English,
    and they are one slip apart."""
    return a[0] != b[0] and _slip(a[1], b[1])


def same_intent(a: str, b: str) -> bool:
    """True when the semantic cache may answer message `b` with the answer to `a`.

    The module docstring gives the rule; `SemanticCache` applies the same one.
    """
    sa, sb = _signature(a), _signature(b)
    return sa.norm == sb.norm or any(
        key in sb.typos and _one_typo(slot, sb.typos[key]) for key, slot in sa.typos.items())


# -- the cache -------------------------------------------------------------------------------

_KEY_LENGTH = 64  # a sha256 hex digest (`cache_key`)
_VARIANT_LENGTH = 13  # 8-byte hash, 1-byte position, the letter as UTF-32


def _typo_entry(key: str, slot: tuple[bool, _Variants]) -> bytes:
    parts = [key.encode("ascii"), b"1" if slot[0] else b"0"]
    for digest, deletions in slot[1].items():
        for position, letter in deletions:
            parts += [digest, bytes([position]),
                      (letter or "\0").encode("utf-32-be", "surrogatepass")]
    return b"".join(parts)


def _read_typo_entry(value: bytes) -> tuple[str, tuple[bool, _Variants]] | None:
    body = value[_KEY_LENGTH + 1:]
    if len(value) <= _KEY_LENGTH + 1 or len(body) % _VARIANT_LENGTH:
        return None
    variants: _Variants = {}
    for i in range(0, len(body), _VARIANT_LENGTH):
        letter = body[i + 9:i + 13].decode("utf-32-be", "surrogatepass")
        variants.setdefault(body[i:i + 8], []).append(
            (body[i + 8], "" if letter == "\0" else letter))
    return (value[:_KEY_LENGTH].decode("ascii"),
            (value[_KEY_LENGTH:_KEY_LENGTH + 1] == b"1", variants))


class SemanticCache:
    """The exact cache plus the near-duplicate rule of the module docstring.

    `lookup(body)` tries the exact key, then the index; it returns a `CacheHit` whose
    `kind` is "exact" or "semantic", or None. `store(body, response)` writes the
    exact entry and the index. Counters: `exact_hits`, `semantic_hits`, `misses`.
    Building one loads the English word list (~0.1 s), so do it at start-up.
    """

    def __init__(self, backend: CacheBackend, *, namespace: str = "") -> None:
        self.backend = backend
        self.namespace = namespace
        self.exact_hits = 0
        self.semantic_hits = 0
        self.misses = 0
        _english()

    def _signature(self, body: Mapping[str, Any]) -> _Signature | None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        last = messages[-1]
        if not isinstance(last, Mapping) or last.get("role") != "user":
            return None
        try:
            conversation = parse_conversation(messages, where="cached request")
        except DataError:
            return None
        scope_fields = dict(body)
        scope_fields["messages"] = messages[:-1]
        return _signature(conversation.last_user,
                          _digest(scope_fields, "semantic:" + self.namespace))

    async def lookup(self, body: Mapping[str, Any]) -> CacheHit | None:
        """The cached response for `body`, exact or a near duplicate, or None."""
        key = cache_key(body, namespace=self.namespace)
        if key is None:
            return None
        found = await self.backend.get(key)
        if found is not None:
            self.exact_hits += 1
            return CacheHit(found, "exact")
        signature = self._signature(body)
        if signature is not None:
            names = [signature.norm, *signature.typos]
            values = await self.backend.index_get(names)
            for other in self._matches(signature, names, values, key):
                found = await self.backend.get(other)
                if found is not None:
                    self.semantic_hits += 1
                    return CacheHit(found, "semantic")
        self.misses += 1
        return None

    @staticmethod
    def _matches(signature: _Signature, names: list[str], values: list[bytes | None],
                 key: str) -> Iterator[str]:
        """Exact keys of cached requests this one may be answered with, best first."""
        seen = {key}
        norm = values[0]
        if norm is not None and (other := norm.decode("ascii", "replace")) not in seen:
            seen.add(other)
            yield other
        for name, value in zip(names[1:], values[1:], strict=True):
            entry = _read_typo_entry(value) if value is not None else None
            if entry is not None and entry[0] not in seen and _one_typo(
                    signature.typos[name], entry[1]):
                seen.add(entry[0])
                yield entry[0]

    async def store(self, body: Mapping[str, Any], response: CachedResponse) -> None:
        """Cache `response` for `body` (no-op when the body is not cacheable)."""
        key = cache_key(body, namespace=self.namespace)
        if key is None:
            return
        await self.backend.set(key, response)
        signature = self._signature(body)
        if signature is None:
            return
        entries = {signature.norm: key.encode("ascii")}
        entries.update((name, _typo_entry(key, slot)) for name, slot in signature.typos.items())
        await self.backend.index_set(entries)
