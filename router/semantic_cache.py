"""The semantic near-duplicate cache (off by default), over `router.cache`'s backends.

`SemanticCache(backend, embed, threshold=0.97)` also answers a request whose
**last user message** is a near duplicate of a cached one, when everything else
(model asked for, parameters, and all earlier messages) is identical: those form
the *scope*, hashed exactly like the key. `embed` is the router's fitted
`FeatureExtractor.embed` (passed in; this module does not import it): a callable
taking a list of `Conversation` and returning an (n, k) array.

Cosine similarity alone is not enough: "Translate 'good morning' into French" and
"... into German" embed almost identically and must not share an answer. So a
candidate with cosine >= `threshold` is accepted only if the intent guard
(`same_intent`) also passes, on case-folded word tokens of the two last user
messages:

1. the numbers are the same (as a multiset): "top 5" is not "top 3";
2. the negations are the same (not, no, never, without, except, n't, ...);
3. content words (stop words removed) have Jaccard similarity >= `min_jaccard`
   (default 0.9), and the words they share come in the same order
   ("dog bites man" is not "man bites dog");
4. no content word that differs is a capitalised name (capitalised anywhere but
   at the start of a sentence) or contains a digit.

What passes in practice: case, whitespace, punctuation, stop-word and small
wording differences in long prompts. Prompts differing in a name, number,
negation or a key word of a short prompt miss. Storage: each scope keeps its
most recent `max_vectors_per_scope` (default 1000) vectors with the guard's
signature (hashed words, not prompt text); a lookup scores them all with numpy
(memory: a bounded deque per scope; Redis: one list per scope, trimmed on
write, expiring with the TTL). Scopes with more entries than that forget the
oldest for semantic lookups; exact hits are unaffected.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.cache import CacheBackend, CachedResponse, Embed, _digest, cache_key
from router.conversation import parse_conversation
from router.errors import ConfigError, DataError
from router.throttle import Throttle

__all__ = ["SemanticCache", "same_intent"]

logger = logging.getLogger(__name__)


# -- the intent guard ----------------------------------------------------------------------

def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS = _wordset("""
a an the this that these those is are was were be been being am do does did of to in on at
by for with from into onto about as and or but if then so than too very can could would
should will shall may might must i me my we our you your he she it its they them their
what which who whom whose please hi hello hey just kindly tell give let s
""")
_NEGATIONS = _wordset("""
not no never none nor nothing nobody nowhere neither without except cannot cant dont doesnt
didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt
""")
_WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
_SENTENCE_END = re.compile(r"[.!?:\n]\s*$")


def _h(token: str) -> str:
    return hashlib.blake2b(token.encode("utf-8"), digest_size=6).hexdigest()


def _signature(text: str) -> dict[str, list[str]]:
    """What the guard compares, with words hashed so no prompt text is stored."""
    text = unicodedata.normalize("NFKC", text)
    words, numbers, negations, names = [], [], [], []
    for match in _WORD_RE.finditer(text):
        raw = match.group(0)
        token = raw.casefold().replace("’", "'")
        bare = token.replace("'", "")
        if (bare.endswith("nt") and "'" in token) or bare in _NEGATIONS:
            negations.append(bare)
            continue
        if any(ch.isdigit() for ch in token):
            numbers.append(token)
            words.append(token)
            continue
        if bare in _STOPWORDS or token.split("'")[0] in _STOPWORDS:
            continue
        words.append(token)
        start = match.start()
        sentence_start = start == 0 or bool(_SENTENCE_END.search(text[:start]))
        if raw[:1].isupper() and not sentence_start:
            names.append(token)
    return {"w": [_h(w) for w in words], "n": sorted(_h(x) for x in numbers),
            "x": sorted(negations), "e": sorted({_h(x) for x in names})}


def _guard(a: Mapping[str, list[str]], b: Mapping[str, list[str]], min_jaccard: float) -> bool:
    if a["n"] != b["n"] or a["x"] != b["x"]:
        return False
    wa, wb = set(a["w"]), set(b["w"])
    union = wa | wb
    if union and len(wa & wb) / len(union) < min_jaccard:
        return False
    differing = wa ^ wb
    if differing & (set(a["e"]) | set(b["e"])) or differing & (set(a["n"]) | set(b["n"])):
        return False
    shared = wa & wb
    order_a = list(dict.fromkeys(w for w in a["w"] if w in shared))
    order_b = list(dict.fromkeys(w for w in b["w"] if w in shared))
    return order_a == order_b


def same_intent(a: str, b: str, *, min_jaccard: float = 0.9) -> bool:
    """The semantic cache's guard beyond cosine; see the module docstring for the rules."""
    return _guard(_signature(a), _signature(b), min_jaccard)


# -- the semantic cache ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Probe:
    key: str
    scope: str
    signature: dict[str, list[str]]
    vector: np.ndarray


class SemanticCache:
    """Exact cache plus conservative near-duplicate lookup; see the module docstring.

    `lookup(body)` tries the exact key first, then near duplicates in the same
    scope. `store(body, response)` writes the exact entry and the vector. Counters:
    `exact_hits`, `semantic_hits`, `misses`, `embed_errors` (an `embed` that raises,
    e.g. before a model is loaded, is logged and the request falls back to the
    exact cache: it never fails the request). Embedding runs inline on the event
    loop (it is a small CPU call for the router's extractor); pass a faster or
    thread-offloaded `embed` if yours is heavy.
    """

    def __init__(self, backend: CacheBackend, embed: Embed, *, threshold: float = 0.97,
                 min_jaccard: float = 0.9, namespace: str = "") -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"semantic cache threshold {threshold} must be in (0, 1]",
                              hint="e.g. 0.97; lower values risk wrong answers")
        if not 0.0 <= min_jaccard <= 1.0:
            raise ConfigError(f"semantic cache min_jaccard {min_jaccard} must be in [0, 1]",
                              hint="e.g. 0.9")
        self.backend = backend
        self.embed = embed
        self.threshold = threshold
        self.min_jaccard = min_jaccard
        self.namespace = namespace
        self.exact_hits = 0
        self.semantic_hits = 0
        self.misses = 0
        self.embed_errors = 0
        self._warnings = Throttle()

    def _probe(self, body: Mapping[str, Any]) -> _Probe | None:
        key = cache_key(body, namespace=self.namespace)
        messages = body.get("messages")
        if key is None or not isinstance(messages, list) or not messages:
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
        scope = _digest(scope_fields, "semantic:" + self.namespace)
        try:
            vector = np.asarray(self.embed([conversation]), dtype=np.float32).reshape(-1)
        except Exception as exc:  # noqa: BLE001 - a failing embedder degrades to exact-only
            self.embed_errors += 1
            if self._warnings.ready():
                logger.warning("semantic cache: embedding failed (%s); exact matches only "
                               "(%d failures so far)", str(exc) or type(exc).__name__,
                               self.embed_errors)
            return None
        norm = float(np.linalg.norm(vector))
        if not norm or not math.isfinite(norm):
            return None
        return _Probe(key, scope, _signature(conversation.last_user), vector / norm)

    async def lookup(self, body: Mapping[str, Any]) -> CachedResponse | None:
        """The cached response for `body` (exact, else a guarded near duplicate) or None."""
        key = cache_key(body, namespace=self.namespace)
        if key is None:
            return None
        found = await self.backend.get(key)
        if found is not None:
            self.exact_hits += 1
            return found
        probe = self._probe(body)
        if probe is not None:
            for other_key in self._candidates(probe, await self.backend.vectors(probe.scope)):
                found = await self.backend.get(other_key)
                if found is not None:
                    self.semantic_hits += 1
                    return found
        self.misses += 1
        return None

    def _candidates(self, probe: _Probe, items: list[bytes]) -> list[str]:
        """Keys of entries over the threshold that pass the guard, most similar first."""
        decoded, vectors = [], []
        for raw in items:
            try:
                item = json.loads(raw)
                vec = np.frombuffer(base64.b64decode(item["v"]), dtype=np.float32)
            except (ValueError, KeyError, TypeError):
                continue
            if vec.shape != probe.vector.shape:
                continue  # written by another embedding (a retrained extractor)
            decoded.append(item)
            vectors.append(vec)
        if not vectors:
            return []
        scores = np.stack(vectors) @ probe.vector
        keys = []
        for index in np.argsort(-scores, kind="stable"):
            if scores[index] < self.threshold:
                break
            item = decoded[index]
            if item["k"] != probe.key and _guard(probe.signature, item["g"], self.min_jaccard):
                keys.append(item["k"])
        return list(dict.fromkeys(keys))[:3]

    async def store(self, body: Mapping[str, Any], response: CachedResponse) -> None:
        """Cache `response` for `body` (no-op when the body is not cacheable)."""
        key = cache_key(body, namespace=self.namespace)
        if key is None:
            return
        await self.backend.set(key, response)
        probe = self._probe(body)
        if probe is None:
            return
        item = json.dumps({"k": probe.key, "g": probe.signature,
                           "v": base64.b64encode(probe.vector.tobytes()).decode("ascii")},
                          separators=(",", ":"))
        await self.backend.add_vector(probe.scope, item.encode("utf-8"))

