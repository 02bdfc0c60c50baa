"""Serving latency of feature extraction and of one routing prediction.

Prints p50/p99 of:
* `FeatureExtractor.transform` of ONE ~1,000-token conversation (target < 1 ms),
  next to a baseline measured in the same run: the plain sklearn pipeline
  (HashingVectorizer -> TfidfTransformer -> TruncatedSVD) transforming the same text;
* `QualityModel.predict` for one conversation x 8 models (features, both
  boosters, costs), the per-request part of a routing decision.

Run: python bench/features.py [--repeats N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from router.catalog import load_catalog
from router.conversation import Conversation
from router.features import FeatureExtractor


def _percentiles(fn, repeats: int) -> tuple[float, float]:
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    p50, p99 = np.percentile(times, [50, 99]) * 1e3
    return float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--train-prompts", type=int, default=3000)
    args = parser.parse_args()

    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.pipeline import make_pipeline

    from training.data import conversations, load_outcomes, write_outcomes
    from training.demo_data import generate_demo

    catalog = load_catalog()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = write_outcomes(generate_demo(args.train_prompts, 0, catalog),
                              Path(tmp) / "demo.csv")
        table = load_outcomes(path, catalog=catalog)
    _, convs = conversations(table)
    texts = ["\n".join(c.user_messages) for c in convs]

    # A ~1,000-token request (about 4,000 characters) built from real demo prompts.
    long_text = ""
    i = 0
    while len(long_text) < 4000:
        long_text += texts[i % len(texts)] + "\n"
        i += 1
    long_text = long_text[:4000]
    request = Conversation.from_prompt(long_text)
    print(f"request: {len(long_text)} chars, {request.input_tokens} tokens; "
          f"fitted on {len(convs)} demo prompts")

    fe = FeatureExtractor().fit(convs)
    ours = _percentiles(lambda: fe.transform([request]), args.repeats)
    embed = _percentiles(lambda: fe.embed([request]), args.repeats)
    pipe = make_pipeline(
        HashingVectorizer(n_features=2**18, alternate_sign=False, norm=None,
                          ngram_range=(1, 2)),
        TfidfTransformer(), TruncatedSVD(64, random_state=0))
    pipe.fit(texts)
    base = _percentiles(lambda: pipe.transform([long_text]), args.repeats)

    from router.predictor import QualityModel

    model = QualityModel().fit(table, catalog=catalog)
    m = len(model.models_)
    pred = _percentiles(lambda: model.predict([request]), args.repeats)
    short = Conversation.from_prompt(texts[0])
    pred_short = _percentiles(lambda: model.predict([short]), args.repeats)

    print(f"{'measurement':58s} {'p50 ms':>8s} {'p99 ms':>8s}")
    rows = [
        ("FeatureExtractor.transform, 1 conversation (ours)", ours),
        ("FeatureExtractor.embed, 1 conversation", embed),
        ("baseline: sklearn Hashing->Tfidf->SVD pipeline.transform", base),
        (f"QualityModel.predict, 1 x {m} models, ~1k-token prompt", pred),
        (f"QualityModel.predict, 1 x {m} models, {len(texts[0])}-char prompt", pred_short),
    ]
    for name, (p50, p99) in rows:
        print(f"{name:58s} {p50:8.3f} {p99:8.3f}")


if __name__ == "__main__":
    main()
