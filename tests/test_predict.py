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


def _out_of_memory_above(rows_that_fit: int, seen: list[int]):
    """A forward pre-hook that raises torch's own OutOfMemoryError for a batch of more rows than fit:
    there is no GPU here to run out of, and this is what a device that holds `rows_that_fit` does."""
    import torch

    def hook(module, args, kwargs):
        rows = kwargs["input_ids"].shape[0]
        seen.append(rows)
        if rows > rows_that_fit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows * 96} MiB.")

    return hook


def test_a_batch_out_of_memory_goes_on_in_halves_and_gives_the_same_logits(tiny_model, dev_v1_examples, caplog):
    import logging

    import pytest

    from qa_lib.errors import OutOfMemory

    tok = load_tokenizer(str(tiny_model))
    model = load_qa_model(str(tiny_model))
    feats = build_eval_features(dev_v1_examples.select(range(30)), tok, 96, 32)
    want_start, want_end = predict_logits(model, feats, batch_size=4, progress=False)
    seen: list[int] = []
    handle = model.register_forward_pre_hook(_out_of_memory_above(4, seen), with_kwargs=True)
    try:
        with caplog.at_level(logging.WARNING, logger="qa_lib.predict"):
            start, end = predict_logits(model, feats, batch_size=16, progress=False)
        # Halved at the first batch, then every batch at the size that fits: none lost, none twice.
        assert seen[:3] == [16, 8, 4] and set(seen[3:]) <= {4, len(feats) % 4 or 4}
        assert sum(seen[2:]) == len(feats)
        np.testing.assert_array_equal(start, want_start)
        np.testing.assert_array_equal(end, want_end)
        assert [r.getMessage() for r in caplog.records] == [
            "predict: out of memory at 16 windows a batch; going on with 8 (a window's logits do not depend on its "
            "batch)",
            "predict: out of memory at 8 windows a batch; going on with 4 (a window's logits do not depend on its "
            "batch)"]
    finally:
        handle.remove()
    # A single window that does not fit is the config's to change, named as such.
    handle = model.register_forward_pre_hook(_out_of_memory_above(0, []), with_kwargs=True)
    try:
        with pytest.raises(OutOfMemory, match=r"^predict: out of memory with a single window of \d+ tokens: use a "
                                              r"shorter eval_max_length, a lower precision"):
            predict_logits(model, feats, batch_size=2, progress=False)
    finally:
        handle.remove()


def test_a_model_too_big_for_the_device_is_named_with_its_size(tiny_model, dev_v1_examples, monkeypatch):
    """No batch size helps weights that do not fit at all: said as such, not as torch's raw error."""
    import pytest
    import torch

    from qa_lib.errors import OutOfMemory

    model = load_qa_model(str(tiny_model))
    feats = build_eval_features(dev_v1_examples.select(range(3)), load_tokenizer(str(tiny_model)), 96, 32)

    def too_big(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB.")

    monkeypatch.setattr(model, "to", too_big)
    count = sum(p.numel() for p in model.parameters())
    with pytest.raises(OutOfMemory, match=rf"^predict: the model does not fit in memory: {count / 1e6:,.1f}M "
                                          r"parameters, \d+\.\d\d GiB of weights; use a device with more memory"):
        predict_logits(model, feats, batch_size=4, progress=False)


def test_a_batch_that_raises_still_ends_the_progress_bar(tiny_model, dev_v1_examples):
    """An open bar stays in tqdm's list of bars after its function raised (the traceback holds it):
    every later bar of the process, a retry's included, was drawn one line lower."""
    import pytest
    from tqdm.auto import tqdm

    tok = load_tokenizer(str(tiny_model))
    model = load_qa_model(str(tiny_model))
    feats = build_eval_features(dev_v1_examples.select(range(12)), tok, 96, 32)
    calls = []

    def second_batch_fails(module, args, kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device lost")

    handle = model.register_forward_pre_hook(second_batch_fails, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="device lost") as info:
            predict_logits(model, feats, batch_size=4, progress=True)
    finally:
        handle.remove()
    assert info.traceback  # the frames, the bar's with them, are still held here
    assert not [bar for bar in getattr(tqdm, "_instances", ()) if bar.desc == "predict"]
