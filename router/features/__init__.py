"""Request features, one implementation for training and serving.

`FeatureExtractor` turns a `Conversation` into a fixed-width float32 vector:

* conversation shape: messages, user turns, system prompt present and its length,
  user / assistant text length, input tokens;
* fast statistics of the last user message (what the model must answer): length in
  characters, words, lines and tokens; digit / uppercase / punctuation / non-ASCII /
  whitespace ratios; mean word length; question marks; code fences and code-like
  tokens; math symbols and LaTeX; URLs; list items; multiple-choice options
  ("A. ... B. ... C. ...") and numbers;
* lexical signals over the system prompt and all user text: counts of keyword
  groups (coding, math, reasoning/proof, writing/creative, summarise, translate,
  extract/classify) and of constraint words ("must", "exactly", "at least", ...);
* a learned text representation: hashed word 1-2-grams, and character 1-2-grams
  of scripts written without spaces (below) -> TF-IDF (idf fitted) -> truncated SVD
  with `n_components` dimensions. `embed` returns it alone,
  L2-normalised (the kNN baseline uses it);
  `transform_with_tfidf` also returns each prompt's sparse TF-IDF row (the SVD's
  input, training-seen buckets only), which the linear quality head reads.

Why the hashing is done here rather than by sklearn's `HashingVectorizer`: serving
transforms one conversation per request and the sklearn pipeline costs about
0.4 ms of per-call overhead before any work (see `bench/features.py`). Words are
tokenised as sklearn does (lower case, `\\b\\w\\w+\\b`), each word is hashed with
murmurhash3 (as sklearn hashes, `alternate_sign=False`, so counts stay
non-negative) through a bounded per-process memo, and a bigram's bucket is mixed
from its two word hashes, so a request costs one dict lookup per word. The same
per-conversation code runs at fit time and at serve time, so the two can never
disagree: row i of `transform(batch)` equals `transform([batch[i]])` bit for bit.

Text in any language. `\\w\\w+` finds words where words are separated by spaces;
Chinese and Japanese have no spaces, so a whole sentence would be one "word" and
prompts of different kinds would share nothing. Characters of the scripts in
`_NO_SPACE_RANGES` (Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer, Myanmar)
are therefore taken one by one: each is a unigram and each two neighbours inside
one run of such characters a bigram (the CJK bigram scheme of search engines),
hashed into the same buckets as words. Words are then the `\\w\\w+` runs of the
other characters, so text without those scripts (English, French, Russian, ...)
tokenises exactly as before; ASCII text skips the check. The characters are
hashed vectorised (murmurhash3 of the code point): a 4,000-character Chinese
conversation costs ~0.45 ms against ~0.38 ms for an English one of the same length
(`bench/features_cjk.py`). The keyword groups also carry Chinese, Japanese and
Korean phrases (so the keyword counts a model learned from English traffic also
fire on those requests), matched vectorised (`CjkPhrases`) and only when such
characters are present.

The SVD projection only touches the columns a request actually has
(`components[:, idx] @ values`, float32, idf folded in), and only the hash
buckets seen in training are stored: the SVD components are exactly zero for
buckets no training prompt used, so the artifact stays small.

Bump `FEATURE_SCHEMA_VERSION` whenever the vector for the same conversation
changes; artifacts and logged outcomes record it and loading refuses a mismatch.
"""

from router.features._extractor import FEATURE_SCHEMA_VERSION, FeatureExtractor
from router.features._keywords import KEYWORD_GROUPS

# Pickled extractors (an artifact's features.joblib) name the public path, so an
# artifact keeps loading however the modules inside this package move.
FeatureExtractor.__module__ = __name__

__all__ = ["FEATURE_SCHEMA_VERSION", "FeatureExtractor", "KEYWORD_GROUPS"]
