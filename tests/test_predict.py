import numpy as np

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


def test_ragged_rows_match_the_dataset_rows_under_a_row_selection(tiny_model, dev_v1_examples):
    from qa_lib.batching import Padding
    from qa_lib.ragged import Ragged

    tok = load_tokenizer(str(tiny_model))
    feats = build_eval_features(dev_v1_examples.select(range(30)), tok, 96, 32).shuffle(seed=3)
    assert feats._indices is not None  # a row selection over the table, which must be honoured
    padding = Padding.of(tok)
    rows = np.array([5, 0, 17, 5, len(feats) - 1])
    for column in ("input_ids", "attention_mask"):
        want = padding.pad(column, [feats[int(r)][column] for r in rows], 100)
        np.testing.assert_array_equal(Ragged.of(feats, column).padded(rows, 100, padding.value(column)), want)
    offsets = Ragged.of(feats, "offset_mapping")
    for r in rows:
        pairs = offsets.values[offsets.starts[r] : offsets.starts[r] + offsets.lengths[r]]
        want = [tuple(p) for p in feats[int(r)]["offset_mapping"]]
        assert [tuple(p) for p in pairs.tolist()] == want


def test_logits_copied_back_in_several_rounds_and_from_a_selection_are_the_same(tiny_model, dev_v1_examples,
                                                                               monkeypatch):
    import qa_lib.predict as predict

    tok = load_tokenizer(str(tiny_model))
    model = load_qa_model(str(tiny_model))
    feats = build_eval_features(dev_v1_examples.select(range(30)), tok, 96, 32)
    start, end = predict_logits(model, feats, batch_size=8, progress=False)
    perm = np.random.default_rng(0).permutation(len(feats))
    monkeypatch.setattr(predict, "DEVICE_LOGITS_HELD", 3 * 2 * 8 * 96)  # copied back every few batches
    start_p, end_p = predict_logits(model, feats.select(perm), batch_size=8, progress=False)
    np.testing.assert_allclose(start_p, start[perm], atol=1e-4)
    np.testing.assert_allclose(end_p, end[perm], atol=1e-4)
