"""Serving latency of feature extraction and of one routing prediction.

Prints p50/p99 of:
* `FeatureExtractor.transform` of ONE ~1,000-token conversation (target < 1 ms),
  next to a baseline measured in the same run: the plain sklearn pipeline
  (HashingVectorizer -> TfidfTransformer -> TruncatedSVD) transforming the same text;
* `QualityModel.predict` for one conversation x 8 models (features, both
  boosters, linear head, costs), the per-request part of a routing decision, next
  to a baseline measured in the same run: the same numbers through lightgbm's
  public `Booster.predict` and generic numpy glue (what `predict` did before its
  serving plan), and the features alone (the floor the model adds to).

Run: python bench/features.py [--repeats N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from router.catalog import load_catalog
from router.conversation import Conversation
from router.features import FeatureExtractor


def percentiles(fn, repeats: int) -> tuple[float, float]:
    """(p50, p99) milliseconds of `fn()` over `repeats` calls, after 20 warm-up calls."""
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
    ours = percentiles(lambda: fe.transform([request]), args.repeats)
    embed = percentiles(lambda: fe.embed([request]), args.repeats)
    pipe = make_pipeline(
        HashingVectorizer(n_features=2**18, alternate_sign=False, norm=None,
                          ngram_range=(1, 2)),
        TfidfTransformer(), TruncatedSVD(64, random_state=0))
    pipe.fit(texts)
    base = percentiles(lambda: pipe.transform([long_text]), args.repeats)

    from router.predictor import QualityModel

    model = QualityModel().fit(table, catalog=catalog)
    m = len(model.models_)
    pred = percentiles(lambda: model.predict([request]), args.repeats)
    short = Conversation.from_prompt(texts[0])
    pred_short = percentiles(lambda: model.predict([short]), args.repeats)
    generic = percentiles(lambda: _generic_predict(model, [request]), args.repeats)
    generic_short = percentiles(lambda: _generic_predict(model, [short]), args.repeats)
    feats = percentiles(lambda: model.features_.transform_with_tfidf([request]),
                         args.repeats)
    feats_short = percentiles(lambda: model.features_.transform_with_tfidf([short]),
                               args.repeats)
    same = np.allclose(_generic_predict(model, [request]), model.predict([request]).quality,
                       rtol=0, atol=1e-6)

    print(f"{'measurement':58s} {'p50 ms':>8s} {'p99 ms':>8s}")
    rows = [
        ("FeatureExtractor.transform, 1 conversation (ours)", ours),
        ("FeatureExtractor.embed, 1 conversation", embed),
        ("baseline: sklearn Hashing->Tfidf->SVD pipeline.transform", base),
        (f"QualityModel.predict, 1 x {m} models, ~1k-token prompt", pred),
        (f"QualityModel.predict, 1 x {m} models, {len(texts[0])}-char prompt", pred_short),
        ("baseline: Booster.predict + generic glue, ~1k-token", generic),
        (f"baseline: Booster.predict + generic glue, {len(texts[0])}-char", generic_short),
        ("features alone (transform_with_tfidf), ~1k-token", feats),
        (f"features alone (transform_with_tfidf), {len(texts[0])}-char", feats_short),
    ]
    for name, (p50, p99) in rows:
        print(f"{name:58s} {p50:8.3f} {p99:8.3f}")
    print(f"predict quality equals the baseline's to 1e-6: {same}")


def _generic_predict(model, convs) -> np.ndarray:
    """Quality, output tokens and cost of `convs` x all models the generic way:
    `design_rows`, `Booster.predict` (a new _InnerPredictor per call), per-call arrays."""
    from router.predictor import design_rows

    codes = np.arange(len(model.models_))
    n, m = len(convs), len(codes)
    prompt_x, tfidf = model.features_.transform_with_tfidf(convs)
    model_codes = np.tile(codes, n)
    x = design_rows(prompt_x, np.repeat(np.arange(n), m), model_codes, model.descriptors_)
    quality = model.quality_.predict(x, num_threads=1)
    if model.linear_coef_ is not None and model.linear_weight > 0:
        logits = np.empty((n, m))
        logits[:] = model.linear_intercept_
        for i, (pos, vals) in enumerate(tfidf):
            if len(pos):
                logits[i] += vals @ model.linear_coef_[pos]
        w = model.linear_weight
        quality = (1 - w) * quality + w / (1 + np.exp(-logits.ravel()))
    quality = np.clip(quality, 0.0, 1.0)
    fallback = np.array([model.default_output_tokens if v is None else v
                         for v in (model.output_medians_[mm] for mm in model.models_)])
    tokens = fallback[model_codes].astype(np.float64)
    if model.output_tokens_ is not None:
        learned = np.array([model.output_medians_[mm] is not None for mm in model.models_])
        use = learned[model_codes]
        tokens[use] = np.maximum(np.expm1(model.output_tokens_.predict(x[use], num_threads=1)),
                                 0.0)
    price_in = np.array([model.catalog_[mm].input_usd_per_mtok for mm in model.models_])
    price_out = np.array([model.catalog_[mm].output_usd_per_mtok for mm in model.models_])
    input_tokens = np.array([c.input_tokens for c in convs], dtype=np.float64)
    _ = (input_tokens[:, None] * price_in + tokens.reshape(n, m) * price_out) / 1e6
    return quality.reshape(n, m)


if __name__ == "__main__":
    main()
