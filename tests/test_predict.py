import numpy as np
import pytest

from qa_lib.features import build_eval_features
from qa_lib.modeling import load_qa_model, load_tokenizer
from qa_lib.predict import predict_logits


def test_logits_come_back_in_feature_order(tiny_model, dev_v1_examples):
    tok = load_tokenizer(str(tiny_model))
    model = load_qa_model(str(tiny_model))
    feats = build_eval_features(dev_v1_examples.select(range(40)), tok, 96, 32)
    lengths = [len(x) for x in feats["input_ids"]]
    assert len(set(lengths)) > 5  # batching by length really reorders rows
    start_b, end_b = predict_logits(model, feats, batch_size=7, progress=False)
    # One feature at a time cannot be mixed up: the reference.
    start_1, end_1 = predict_logits(model, feats, batch_size=1, progress=False)
    np.testing.assert_allclose(start_b, start_1, atol=1e-4)
    np.testing.assert_allclose(end_b, end_1, atol=1e-4)
    for i, n in enumerate(lengths):
        assert np.isfinite(start_b[i, :n]).all() and np.isinf(start_b[i, n:]).all()
    # The same check fails when rows are out of order.
    perm = np.roll(np.arange(len(feats)), 1)
    assert not np.allclose(np.nan_to_num(start_b[perm], neginf=0), np.nan_to_num(start_1, neginf=0), atol=1e-4)
