import json

import numpy as np
import pytest

from qa_lib.features import build_eval_features
from qa_lib.postprocess import postprocess, reference_postprocess


@pytest.fixture(scope="module")
def v2_setup(dev_v2_examples, tokenizer):
    examples = dev_v2_examples.select(range(150))
    return examples, build_eval_features(examples, tokenizer, 128, 48)


def _random_logits(features, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    lengths = [len(x) for x in features["input_ids"]]
    width = max(lengths)
    start = np.full((len(features), width), -np.inf, dtype=np.float32)
    end = np.full((len(features), width), -np.inf, dtype=np.float32)
    for i, n in enumerate(lengths):
        start[i, :n] = rng.normal(0, scale, n)
        end[i, :n] = rng.normal(0, scale, n)
    # Lift CLS (index 0) in some windows so that the null answer wins sometimes.
    start[:, 0] += rng.normal(scale * 2, scale, len(lengths))
    end[:, 0] += rng.normal(scale * 2, scale, len(lengths))
    return start, end


@pytest.mark.parametrize("seed, n_best, max_len, v2, thresh", [
    (0, 20, 30, False, 0.0), (1, 5, 4, False, 0.0), (2, 20, 30, True, 0.0),
    (3, 10, 8, True, -1.5), (4, 1, 30, True, 2.0), (5, 40, 60, False, 0.0),
])
def test_vectorized_matches_reference_loop(v2_setup, seed, n_best, max_len, v2, thresh):
    examples, features = v2_setup
    start, end = _random_logits(features, seed)
    fast = postprocess(examples, features, start, end, n_best, max_len, v2, thresh)
    slow = reference_postprocess(examples, features, start, end, n_best, max_len, v2, thresh)
    assert fast.answers == slow
    if v2:
        assert any(a == "" for a in fast.answers.values()) and any(a for a in fast.answers.values())


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("n_best", [1000, 5])
def test_ties_resolve_in_loop_order(v2_setup, v2, n_best):
    """Integer logits make many spans score alike: the first in (window, start rank, end rank) order
    wins, as in the plain loop. With n_best 5 the top-k cut-off itself falls among equal logits,
    and the k kept are the first k of a stable sort, as the loop takes them. With n_best 1000 every
    pair of a window is a candidate: the loop over 16,000 pairs a window took 18 s a case on all 150
    questions, so that case takes the first 50 (still hundreds of ties)."""
    examples, features = v2_setup
    if n_best > 100:
        examples = examples.select(range(50))
        kept = set(examples["id"])
        features = features.filter(lambda f: f in kept, input_columns="example_id")
    start, end = _random_logits(features, 21, scale=1.5)
    start, end = np.round(start), np.round(end)
    fast = postprocess(examples, features, start, end, n_best, 30, v2, 0.0)
    slow = reference_postprocess(examples, features, start, end, n_best, 30, v2, 0.0)
    assert fast.answers == slow
    assert fast.answers == postprocess(examples, features, start, end, n_best, 30, v2, 0.0).answers


def test_nan_logits_are_skipped_as_in_the_loop(v2_setup):
    examples, features = v2_setup
    start, end = _random_logits(features, 33)
    rng = np.random.default_rng(33)
    rows = rng.choice(len(features), 40, replace=False)
    start[rows, rng.integers(1, 30, 40)] = np.nan
    end[rows[:20], rng.integers(1, 30, 20)] = np.nan
    fast = postprocess(examples, features, start, end, 5, 30)
    assert fast.answers == reference_postprocess(examples, features, start, end, 5, 30)


def test_nbest_and_null_odds(v2_setup, tmp_path):
    examples, features = v2_setup
    start, end = _random_logits(features, 7)
    preds = postprocess(examples, features, start, end, 20, 30, True, 0.0)
    for eid, entries in preds.nbest.items():
        scores = [e["score"] for e in entries]
        assert scores == sorted(scores, reverse=True) and len(entries) <= 20
        assert abs(sum(e["probability"] for e in entries) - 1) < 1e-6
        best_span = max(e["score"] for e in entries if e["start_logit"] is not None)
        null = next((e["score"] for e in entries if e["start_logit"] is None), None)
        if null is None:  # ranked below the n best spans, so below the best span too
            assert preds.null_odds[eid] < 0
        else:
            assert preds.null_odds[eid] == pytest.approx(null - best_span, abs=1e-5)
        assert (preds.answers[eid] == "") == (preds.null_odds[eid] > 0)
    paths = preds.write(tmp_path)
    assert set(paths) == {"predictions", "nbest", "null_odds"}
    assert json.loads((tmp_path / "predictions.json").read_text()) == preds.answers


def test_null_score_is_minimum_over_windows(dev_v2_examples, tokenizer):
    # One example split into windows: the CLS score of the lowest window decides.
    long_ex = max(range(200), key=lambda i: len(dev_v2_examples[i]["context"]))
    examples = dev_v2_examples.select([long_ex])
    features = build_eval_features(examples, tokenizer, 64, 16)
    assert len(features) >= 3
    start, end = _random_logits(features, 3, scale=0.1)
    start[:, 0] = 5.0
    end[:, 0] = 5.0
    start[1, 0] = -5.0  # window 1 has the lowest null score: -5 + 5 = 0
    preds = postprocess(examples, features, start, end, 20, 30, True, 0.0)
    eid = examples[0]["id"]
    best = max(e["score"] for e in preds.nbest[eid] if e["start_logit"] is not None)
    assert preds.null_odds[eid] == pytest.approx(0.0 - best, abs=1e-5)


def test_row_order_and_selection_do_not_matter(v2_setup):
    """Shuffled features (an index mapping over the Arrow table) with their logits shuffled alike."""
    examples, features = v2_setup
    start, end = _random_logits(features, 11)
    plain = postprocess(examples, features, start, end, 20, 30, True, 0.0)
    perm = np.random.default_rng(0).permutation(len(features))
    shuffled = postprocess(examples, features.select(perm), start[perm], end[perm], 20, 30, True, 0.0)
    assert shuffled.answers == plain.answers and shuffled.null_odds == plain.null_odds


def test_first_nbest_entry_is_the_answer(v2_setup):
    examples, features = v2_setup
    start, end = _random_logits(features, 12)
    preds = postprocess(examples, features, start, end, 20, 30, False, 0.0)
    for eid, entries in preds.nbest.items():
        assert preds.answers[eid] == (entries[0]["text"] if entries else "")


def test_features_of_unknown_examples_are_refused(v2_setup):
    examples, features = v2_setup
    start, end = _random_logits(features, 13)
    with pytest.raises(ValueError, match=repr(features[0]["example_id"])):
        postprocess(examples.select(range(1, len(examples))), features, start, end)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_top_k_is_a_stable_descending_sort_cut_at_k(dtype):
    """`_top_k` against the stable sort it stands for, on rows made to break a fast path: ties
    inside the top k and at its cut-off, NaN, -inf padding, +-0.0, rows shorter than k."""
    from qa_lib.postprocess import _top_k

    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, (300, 64)).astype(dtype)
    logits[:60] = np.round(logits[:60])                 # many ties, cut-off among equals
    logits[60:80, 10:] = -np.inf                        # fewer than k finite values
    logits[80:100, rng.integers(0, 64, 20)] = np.nan    # NaN sorts last
    logits[100:110, :5] = 0.0
    logits[100:110, 5:10] = -0.0                        # equal to 0.0
    logits[110:120] = logits[110:120, :1]               # a constant row
    for k in (1, 5, 20, 63, 64, 100):
        top, values = _top_k(logits, k)
        expected = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(top, expected)
        np.testing.assert_array_equal(values, np.take_along_axis(logits, expected, axis=1))


def test_the_best_threshold_the_v2_scores_report_gives_the_best_score(v2_setup):
    """`best_f1_thresh` / `best_exact_thresh` (the official script's search over the null odds) are
    in `null_score_diff_threshold`'s own units: post-processing again at one makes its best score
    the plain score, digit for digit. Gold spans are lifted in every other answerable question's
    windows, so that answering pays for some and the best threshold lies among the odds."""
    from qa_lib.metrics import score

    examples, features = v2_setup
    start, end = _random_logits(features, 5)
    lifted = {ex["id"]: ex["answers"] for ex in examples.select(range(0, len(examples), 2)) if ex["answers"]["text"]}
    for row, (eid, offsets) in enumerate(zip(features["example_id"], features["offset_mapping"])):
        if eid not in lifted:
            continue
        first = lifted[eid]["answer_start"][0]
        last = first + len(lifted[eid]["text"][0])
        s = next((i for i, o in enumerate(offsets) if o[0] == first and o[1] > o[0]), None)
        e = next((i for i, o in enumerate(offsets) if o[1] == last and o[1] > o[0]), None)
        if s is not None and e is not None and s <= e:
            start[row, s] += 15.0
            end[row, e] += 15.0
    plain = postprocess(examples, features, start, end, 20, 30, True, 0.0)
    metrics = score(examples, plain.answers, plain.null_odds, version_2_with_negative=True)
    for name in ("exact", "f1"):
        thresh = metrics[f"best_{name}_thresh"]
        assert thresh < 0 and metrics[f"best_{name}"] > metrics[name]  # a real search, not the start value
        again = postprocess(examples, features, start, end, 20, 30, True, thresh)
        assert score(examples, again.answers, version_2_with_negative=True)[name] == metrics[f"best_{name}"]
