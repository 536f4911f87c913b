"""Packed training batches train exactly as padded ones: same loss, same gradients, per family.

Tolerances: the loss to 1e-5 relative, each gradient to 1e-4 relative plus 1e-6 of the largest
gradient in the model (float32 on the CPU; the two layouts only change the order of sums). Some
gradients are mathematically zero (the QA head's bias and the attention key biases: a softmax
does not move when all its inputs shift together) and read as rounding noise in both layouts,
hence the absolute part scaled to the model's gradients.
"""

from __future__ import annotations

import pytest
import torch

from qa_lib.batching import Padding, QACollator, feature_lengths
from qa_lib.config import PipelineConfig
from qa_lib.errors import ConfigError
from qa_lib.features import build_train_features
from qa_lib.loss import span_loss
from qa_lib.modeling import load_qa_model, load_tokenizer
from qa_lib.packing import block_mask, first_fit, model_inputs, packed_collator, packing_problem, plan_batches
from qa_lib.preflight import check_run
from qa_lib.varlen_attention import NAME as VARLEN
from qa_lib.varlen_attention import register as register_varlen
from tests.conftest import SQUAD
from tests.families import build_family

PACKABLE = ("bert-wordpiece", "roberta-bpe", "xlm-roberta-unigram", "albert-unigram", "modernbert-bpe")
NOT_PACKABLE = ("deberta-v2-unigram", "xlnet-left")


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    return {name: build_family(name, tmp_path_factory.mktemp(name), SQUAD) for name in (*PACKABLE, *NOT_PACKABLE)}


@pytest.fixture(scope="module")
def windows(train_examples):
    """Per family, training windows of the first 40 questions (128 / 48: many lengths)."""
    cache = {}

    def get(folder):
        if folder not in cache:
            cache[folder] = build_train_features(train_examples.select(range(40)), load_tokenizer(str(folder)), 128, 48)
        return cache[folder]

    return get


def _loss(model, batch):
    out = model(**model_inputs(batch, model))
    return span_loss(out.start_logits, out.end_logits, batch["segment_ids"], batch["start_positions"],
                     batch["end_positions"])


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = _loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name, attention", [("bert-wordpiece", "sdpa"), ("bert-wordpiece", "eager"),
                                             ("roberta-bpe", "sdpa"), ("bert-wordpiece", VARLEN),
                                             ("roberta-bpe", VARLEN), ("xlm-roberta-unigram", "sdpa"),
                                             ("xlm-roberta-unigram", VARLEN), ("albert-unigram", "sdpa"),
                                             ("albert-unigram", VARLEN), ("modernbert-bpe", "sdpa"),
                                             ("modernbert-bpe", "eager"), ("modernbert-bpe", VARLEN)])
def test_a_packed_batch_gives_the_loss_and_gradients_of_the_padded_batch(name, attention, families, windows):
    """Packed with a block mask (sdpa, eager) or with varlen attention (its exact per-feature path,
    which is what runs on the CPU), against the same features padded (with sdpa for varlen)."""
    folder = families[name]
    feats = windows(folder)
    # Twelve windows spread over the lengths (a finer vocabulary fills most windows to the brim).
    by_length = sorted(range(len(feats)), key=lambda i: (len(feats[i]["input_ids"]), i))
    rows = [feats[i] for i in by_length[:: max(1, len(by_length) // 12)][:12]]
    lengths = [len(r["input_ids"]) for r in rows]
    assert len(set(lengths)) > 3  # real padding in the padded batch, rows holding several features packed
    model = load_qa_model(str(folder), 0.0, 0.0).train()
    register_varlen()
    model.set_attn_implementation("sdpa" if attention == VARLEN else attention)
    padding = Padding.of(load_tokenizer(str(folder)))
    placed = first_fit(lengths, 6, 256)
    assert placed is not None and max(len(r) for r in placed) > 1
    packed = packed_collator(model, padding, 6, 256)([[[rows[i] for i in row] for row in placed]])
    padded_loss, padded_grads = _loss_and_grads(model, QACollator(padding)(rows))
    model.set_attn_implementation(attention)
    assert model.config._attn_implementation == attention
    packed_loss, packed_grads = _loss_and_grads(model, packed)
    torch.testing.assert_close(packed_loss, padded_loss, rtol=1e-5, atol=0)
    scale = max(float(g.abs().max()) for g in padded_grads.values())
    assert padded_grads.keys() == packed_grads.keys()
    for param, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[param], grad, rtol=1e-4, atol=1e-6 * scale, msg=param)


@pytest.mark.parametrize("name, takes_scale", [("bert-wordpiece", True), ("bert-wordpiece", False),
                                               ("modernbert-bpe", True)])
def test_varlen_attention_calls_the_kernel_as_torch_defines_it(name, takes_scale, families, windows, monkeypatch):
    """The CUDA kernel cannot run here, so a stand-in with `torch.nn.attention.varlen.varlen_attn`'s
    contract takes its place: tokens x heads x head dim, int32 bounds, a maximum length at least
    each feature's, `scale` where that torch has it, and flash attention's `window_size=(left, right)`
    (a query at i sees keys i - left to i + right) for ModernBERT's sliding-window layers. Through
    it, packed still gives padded's loss and gradients."""
    import qa_lib.varlen_attention as varlen

    calls, windows_asked = [], set()

    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, window_size=(-1, -1), **scale):
        assert q.dim() == 3 and q.shape == k.shape == v.shape and cu_q.dtype == torch.int32
        assert torch.equal(cu_q, cu_k) and int(torch.diff(cu_q).max()) <= max_q == max_k
        assert ("scale" in scale) == takes_scale
        calls.append(len(cu_q) - 1)
        windows_asked.add(tuple(window_size))
        out = torch.empty_like(q)
        bounds = cu_q.tolist()
        for lo, hi in zip(bounds, bounds[1:]):
            at = torch.arange(hi - lo)
            gap = at[None, :] - at[:, None]  # key minus query
            left, right = window_size
            seen = ((gap >= -left) | (left < 0)) & ((gap <= right) | (right < 0))
            out[lo:hi] = torch.nn.functional.scaled_dot_product_attention(
                *(t[lo:hi].transpose(0, 1) for t in (q, k, v)), attn_mask=seen,
                scale=scale.get("scale")).transpose(0, 1)
        return out

    monkeypatch.setattr(varlen, "_KERNEL", kernel)
    monkeypatch.setattr(varlen, "_KERNEL_TAKES_SCALE", takes_scale)
    monkeypatch.setattr(varlen, "_KERNEL_TAKES_WINDOW", True)
    monkeypatch.setattr(varlen, "_kernel_applies", lambda q, scaling, reach=None: True)
    folder = families[name]
    feats = windows(folder)
    by_length = sorted(range(len(feats)), key=lambda i: (len(feats[i]["input_ids"]), i))
    rows = [feats[i] for i in by_length[-12:]]  # the longest: ModernBERT's window must matter
    model = load_qa_model(str(folder), 0.0, 0.0).train()
    padding = Padding.of(load_tokenizer(str(folder)))
    placed = first_fit([len(r["input_ids"]) for r in rows], 6, 256)
    assert placed is not None and max(len(r) for r in placed) > 1
    packed = packed_collator(model, padding, 6, 256)([[[rows[i] for i in row] for row in placed]])
    padded_loss, padded_grads = _loss_and_grads(model, QACollator(padding)(rows))
    register_varlen()
    model.set_attn_implementation(VARLEN)
    packed_loss, packed_grads = _loss_and_grads(model, packed)
    assert calls and set(calls) == {int(len(packed["cu_seq_lens"])) - 1}  # every layer, every feature
    if name == "modernbert-bpe":
        reach = model.config.sliding_window
        assert max(len(r["input_ids"]) for r in rows) > reach + 1
        assert windows_asked == {(-1, -1), (reach, reach)}
    else:
        assert windows_asked == {(-1, -1)}
    torch.testing.assert_close(packed_loss, padded_loss, rtol=1e-5, atol=0)
    scale = max(float(g.abs().max()) for g in padded_grads.values())
    for param, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[param], grad, rtol=1e-4, atol=1e-6 * scale, msg=param)


@pytest.mark.parametrize("name", PACKABLE)
def test_packed_labels_point_at_the_answer_tokens(name, families, windows):
    folder = families[name]
    feats = windows(folder)
    rows = [feats[i] for i in range(10)]
    placed = first_fit([len(r["input_ids"]) for r in rows], 6, 256)
    model = load_qa_model(str(folder))
    batch = packed_collator(model, Padding.of(load_tokenizer(str(folder))), 6, 256)(
        [[[rows[i] for i in row] for row in placed]])
    ids, segments = batch["input_ids"].reshape(-1), batch["segment_ids"].reshape(-1)
    order = [i for row in placed for i in row]
    for k, i in enumerate(order):
        for label in ("start_positions", "end_positions"):
            at = int(batch[label][k])
            assert int(segments[at]) == k
            assert int(ids[at]) == rows[i]["input_ids"][rows[i][label]]
    # Varlen bounds: each feature, then each row's padded tail, cut where the segments change.
    bounds = batch["cu_seq_lens"].tolist()
    tails = sum(1 for row in placed if sum(len(rows[i]["input_ids"]) for i in row) < 256)
    assert bounds[0] == 0 and bounds[-1] == 6 * 256 and len(bounds) == len(order) + tails + 1
    for lo, hi in zip(bounds, bounds[1:]):
        assert lo < hi and lo // 256 == (hi - 1) // 256  # never across rows
        assert len(set(segments[lo:hi].tolist())) == 1
        assert hi == 6 * 256 or hi % 256 == 0 or segments[hi] != segments[hi - 1]
    mask = block_mask(batch["segment_ids"], model)
    if name == "modernbert-bpe":  # sliding-window layers get their own mask: the block mask, within the window
        assert mask.keys() == {"full_attention", "sliding_attention"}
        sliding, mask = mask["sliding_attention"], mask["full_attention"]
        assert sliding[0, 0, 0, :65].equal(mask[0, 0, 0, :65]) and not sliding[0, 0, 0, 65:].any()
    assert mask.shape == (6, 1, 256, 256) and mask.dtype == torch.bool
    # A token sees exactly the tokens of its own feature; a row's padding sees only that padding.
    first = placed[0]
    n0 = len(rows[first[0]]["input_ids"])
    assert mask[0, 0, 0, :n0].all() and not mask[0, 0, 0, n0:].any()


def test_a_features_padded_loss_does_not_depend_on_its_neighbours(families, windows):
    """Padding is left out of the softmax: a batch of a short and a long feature loses the mean of
    what each loses alone (the model's own QA loss counted the short one's pad positions)."""
    folder = families["bert-wordpiece"]
    feats = windows(folder)
    by_length = sorted((feats[i] for i in range(20)), key=lambda f: len(f["input_ids"]))
    short, long = by_length[0], by_length[-1]
    assert len(long["input_ids"]) - len(short["input_ids"]) > 20
    model = load_qa_model(str(folder), 0.0, 0.0).eval()
    collate = QACollator(Padding.of(load_tokenizer(str(folder))))

    def loss(features):
        with torch.no_grad():
            return _loss(model, collate(features))

    torch.testing.assert_close(loss([short, long]), (loss([short]) + loss([long])) / 2, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", NOT_PACKABLE)
def test_families_that_cannot_take_packed_rows_are_found_and_trained_padded(name, families, windows, tmp_path):
    """DeBERTa-v2 and XLNet build their own masks from a 2D one, outside transformers'
    AttentionInterface: the check refuses them by that, without running them, `auto` falls back
    to padded batches, and asking for `packed` is a config error."""
    from qa_lib.train import choose_batching

    folder = families[name]
    feats = windows(folder)
    model = load_qa_model(str(folder))
    padding = Padding.of(load_tokenizer(str(folder)))
    runs = []
    hook = model.register_forward_pre_hook(lambda *_: runs.append(1))
    assert "AttentionInterface" in packing_problem(model, padding, [feats[0], feats[1]], 256)
    assert not runs  # refused by what it is, without running it (XLNet took 21.5 GB and 100 s)
    hook.remove()
    auto = PipelineConfig(model=str(folder), max_length=128, doc_stride=48, batching="auto")
    batching, note = choose_batching(auto, model, padding, feats, feature_lengths(feats), on_gpu=True)
    assert batching == "padded" and note.startswith(f"{model.config.model_type} models cannot be packed")
    with pytest.raises(ConfigError, match="batching: packed does not work with .* models"):
        choose_batching(auto.model_copy(update={"batching": "packed"}), model, padding, feats, feature_lengths(feats),
                        on_gpu=True)
    # Asked for by the config, it is refused by preflight, before any data is read or feature built.
    with pytest.raises(ConfigError, match=f"^batching: packed does not work with {model.config.model_type} models "
                                          r"\(its attention is not built on transformers' AttentionInterface"):
        check_run(_packed_run(folder, tmp_path), training=True, store=str(tmp_path / "store"))


def _packed_run(folder, tmp_path) -> PipelineConfig:
    return PipelineConfig(model=str(folder), max_length=128, doc_stride=48, batching="packed",
                          output_dir=str(tmp_path / "out"), train_data={"path": str(SQUAD / "train-v1.1.sample.json")})


@pytest.mark.parametrize("name", PACKABLE)
def test_packable_families_pass_the_check(name, families, windows, tmp_path):
    from qa_lib.train import choose_batching

    check_run(_packed_run(families[name], tmp_path), training=True, store=str(tmp_path / "store"))  # preflight too

    folder = families[name]
    feats = windows(folder)
    model = load_qa_model(str(folder))
    padding = Padding.of(load_tokenizer(str(folder)))
    config = PipelineConfig(model=str(folder), max_length=128, doc_stride=48)
    lengths = feature_lengths(feats)
    assert lengths == [len(ids) for ids in feats["input_ids"]]
    assert choose_batching(config, model, padding, feats, lengths, on_gpu=True) == ("packed", None)
    assert choose_batching(config, model, padding, feats, lengths, on_gpu=False) == ("padded", None)  # auto, CPU


@pytest.mark.parametrize("name", PACKABLE)
def test_varlen_attention_passes_the_check_and_is_refused_with_attention_dropout(name, families, windows):
    """`packed_attention: varlen` switches the model's attention before the check, so the check runs
    it; a model that keeps attention dropout cannot take it (the kernel has none): `packed` is then a
    config error and `auto` trains padded with the model's own attention and says why."""
    from qa_lib.train import choose_batching

    folder = families[name]
    feats = windows(folder)
    padding = Padding.of(load_tokenizer(str(folder)))
    config = PipelineConfig(model=str(folder), max_length=128, doc_stride=48, packed_attention="varlen")
    model = load_qa_model(str(folder), 0.0, 0.0)
    assert choose_batching(config, model, padding, feats, feature_lengths(feats), on_gpu=True) == ("packed", None)
    assert model.config._attn_implementation == VARLEN

    dropping = load_qa_model(str(folder), 0.0, 0.1)
    own = dropping.config._attn_implementation
    batching, note = choose_batching(config, dropping, padding, feats, feature_lengths(feats), on_gpu=True)
    assert batching == "padded" and "attention dropout is 0.1" in note and "varlen" in note
    assert dropping.config._attn_implementation == own
    with pytest.raises(ConfigError, match="batching: packed with packed_attention: varlen does not work .*"
                                          "set attention_dropout: 0.*use packed_attention: mask"):
        choose_batching(config.model_copy(update={"batching": "packed"}), dropping, padding, feats,
                        feature_lengths(feats), on_gpu=True)


def test_varlen_attention_keeps_sliding_window_layers_within_their_window(families, windows, monkeypatch):
    """ModernBERT's sliding-window layers attend within 64 tokens each side, and its 128-token
    windows hold tokens farther apart: varlen attention gives the padded logits only because it
    keeps that window (`auto` then packs it); with the window forgotten the check sees the
    difference and `auto` trains padded."""
    import qa_lib.varlen_attention as varlen
    from qa_lib.train import choose_batching

    folder = families["modernbert-bpe"]
    feats = windows(folder)
    lengths = feature_lengths(feats)
    padding = Padding.of(load_tokenizer(str(folder)))
    config = PipelineConfig(model=str(folder), max_length=128, doc_stride=48, packed_attention="varlen")
    model = load_qa_model(str(folder), 0.0, 0.0)
    assert "sliding_attention" in model.config.layer_types and max(lengths) > model.config.sliding_window + 1
    assert choose_batching(config, model, padding, feats, lengths, on_gpu=True) == ("packed", None)
    monkeypatch.setattr(varlen, "_reach", lambda window: None)  # the window forgotten
    batching, note = choose_batching(config, load_qa_model(str(folder), 0.0, 0.0), padding, feats, lengths,
                                     on_gpu=True)
    assert batching == "padded" and "packed logits differ from padded ones" in note, note


def test_the_check_sees_a_difference_only_the_longest_feature_shows(families, windows, monkeypatch):
    """A packed row that ignores a sliding window differs from padded only for features longer than
    the window. With a window between the median and the longest feature, the check must still see
    it: it runs the longest feature too."""
    import qa_lib.packing
    from qa_lib.train import choose_batching

    folder = families["modernbert-bpe"]
    feats = windows(folder)
    by_length = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]))
    chosen = feats.select(by_length[:5] + by_length[-1:])  # the median is short, one feature is long
    lengths = feature_lengths(chosen)
    shorter = sorted(lengths)[-2]  # the median too
    assert max(lengths) - shorter > 40
    model = load_qa_model(str(folder), 0.0, 0.0)
    model.config.sliding_window = shorter + 1  # only the longest feature has tokens farther apart
    padding = Padding.of(load_tokenizer(str(folder)))
    config = PipelineConfig(model=str(folder), max_length=128, doc_stride=48)
    assert choose_batching(config, model, padding, chosen, lengths, on_gpu=True) == ("packed", None)
    monkeypatch.setattr(qa_lib.packing, "sliding_window", lambda model: None)  # the window forgotten
    batching, note = choose_batching(config, model, padding, chosen, lengths, on_gpu=True)
    assert batching == "padded" and "packed logits differ from padded ones" in note, note


def test_the_check_catches_positions_that_do_not_restart(families, windows):
    """Packed with BERT's position offset, RoBERTa's tokens sit two positions off: the check must
    see it (this is what would go wrong for a family with an offset nobody declared)."""
    from qa_lib.packing import PackedCollator

    folder = families["roberta-bpe"]
    feats = windows(folder)
    model = load_qa_model(str(folder)).eval()
    padding = Padding.of(load_tokenizer(str(folder)))
    sample = [{k: v for k, v in feats[i].items() if k not in ("start_positions", "end_positions")} for i in (0, 1)]
    right = packed_collator(model, padding, 1, 256)([[sample]])
    wrong = PackedCollator(padding, 1, 256, position_offset=0)([[sample]])
    with torch.no_grad():
        a, b = (model(**model_inputs(batch, model)).start_logits for batch in (right, wrong))
    assert not torch.allclose(a, b, atol=1e-4)
    assert packing_problem(model, padding, [feats[0], feats[1]], 256) is None


def test_plan_batches_places_every_feature_once_within_its_rows():
    import numpy as np

    rng = np.random.default_rng(0)
    lengths = rng.integers(30, 193, size=500).tolist()
    plan = plan_batches(lengths, rows=6, width=384, seed=1)
    placed = [i for batch in plan for row in batch for i in row]
    assert sorted(placed) == list(range(500))
    for batch in plan:
        assert len(batch) == 6
        assert all(sum(lengths[i] for i in row) <= 384 for row in batch)
    # Length-grouped first fit wastes little: within 20 % of the perfect packing's batch count.
    assert len(plan) <= 1.2 * sum(lengths) / (6 * 384) + 1
    assert plan == plan_batches(lengths, rows=6, width=384, seed=1)
    assert plan != plan_batches(lengths, rows=6, width=384, seed=2)
    with pytest.raises(ValueError, match="does not fit"):
        plan_batches([400], rows=2, width=384, seed=0)


def test_a_packed_training_run_trains_and_reports_it(tiny_model, train_examples, tmp_path):
    from qa_lib.train import fine_tune

    feats = build_train_features(train_examples.select(range(60)), load_tokenizer(str(tiny_model)), 128, 48)
    config = PipelineConfig(model=str(tiny_model), max_length=128, doc_stride=48, batching="packed", max_steps=6,
                            logging_steps=2, save_steps=4, tokens_per_batch=1000)
    result = fine_tune(config, feats, tmp_path / "run")
    assert result.batching == "packed" and not result.compiled
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 3 and all(loss == loss for loss in losses)  # logged, and not NaN
    assert (tmp_path / "run/model/config.json").is_file()
    assert (tmp_path / "run/checkpoints/checkpoint-4").is_dir()
    # Resuming a packed run takes the same plan and carries on from the checkpoint.
    again = fine_tune(config.model_copy(update={"max_steps": 8}), feats, tmp_path / "run")
    assert again.resumed_from.endswith("checkpoint-4")


def test_a_compiled_packed_run_compiles_once_and_trains_as_eager(tiny_model, train_examples, tmp_path):
    """`compile: auto` turns torch.compile on for packed batches on a GPU, on the grounds that
    their shape never changes. Checked here on the CPU (inductor): a recompile is an error, and
    the compiled steps give the eager steps' losses."""
    import torch._dynamo

    from qa_lib.train import fine_tune

    feats = build_train_features(train_examples.select(range(60)), load_tokenizer(str(tiny_model)), 128, 48)
    losses = {}
    for compile in ("off", "on"):
        config = PipelineConfig(model=str(tiny_model), max_length=128, doc_stride=48, batching="packed",
                                max_steps=12, logging_steps=1, tokens_per_batch=1000, compile=compile)
        torch._dynamo.reset()
        with torch._dynamo.config.patch(error_on_recompile=True):
            result = fine_tune(config, feats, tmp_path / compile)
        assert result.compiled == (compile == "on")
        losses[compile] = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses["on"]) == 12
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-5)
    torch._dynamo.reset()


def test_a_packed_run_with_varlen_attention_trains_and_saves_a_plain_model(tiny_model, train_examples, tmp_path):
    """Trained with varlen attention, the saved model loads anywhere with its family's own attention:
    the attention choice is a training detail, not part of the model."""
    import json

    from qa_lib.train import fine_tune

    feats = build_train_features(train_examples.select(range(40)), load_tokenizer(str(tiny_model)), 128, 48)
    config = PipelineConfig(model=str(tiny_model), max_length=128, doc_stride=48, batching="packed", max_steps=3,
                            logging_steps=1, tokens_per_batch=1000, packed_attention="varlen")
    result = fine_tune(config, feats, tmp_path / "run")
    assert result.batching == "packed" and result.attention == VARLEN
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 3 and all(loss == loss for loss in losses)
    assert VARLEN not in (tmp_path / "run/model/config.json").read_text()
    reloaded = load_qa_model(result.model_dir)
    assert reloaded.config._attn_implementation != VARLEN
    assert json.loads((tmp_path / "run/model/config.json").read_text())["model_type"] == "bert"


def test_packed_steps_weigh_every_feature_alike():
    """`per` divides by the plan's mean feature count: a crowded batch's features weigh what a
    sparse batch's do, as in padded batches of a fixed size."""
    torch.manual_seed(0)
    logits = torch.randn(2, 8)
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, -1, -1], [2, 2, 2, 2, 3, 3, 3, 3]])
    start, end = torch.tensor([0, 4, 9, 13]), torch.tensor([2, 5, 11, 15])
    mean = span_loss(logits, logits, segments, start, end)
    torch.testing.assert_close(span_loss(logits, logits, segments, start, end, per=8.0), mean / 2)
    # Each feature's own cross-entropy, by hand: the softmax over its tokens only.
    by_hand = []
    for k, (s, e) in enumerate(zip(start.tolist(), end.tolist())):
        flat, mask = logits.reshape(-1), segments.reshape(-1) == k
        lse = torch.logsumexp(flat[mask], 0)
        by_hand.append(((lse - flat[s]) + (lse - flat[e])) / 2)
    torch.testing.assert_close(mean, torch.stack(by_hand).mean())


def test_a_torch_whose_kernel_takes_no_window_is_named_for_sliding_window_models(families, monkeypatch):
    """torch 2.9's varlen kernel has no `window_size`: a sliding-window model then attends each
    feature alone (exact, slow), and training says so instead of passing a window the kernel drops."""
    import qa_lib.varlen_attention as varlen

    modernbert = load_qa_model(str(families["modernbert-bpe"]))
    bert = load_qa_model(str(families["bert-wordpiece"]))
    monkeypatch.setattr(varlen, "_KERNEL", lambda *a, **k: None)
    monkeypatch.setattr(varlen, "_KERNEL_TAKES_WINDOW", False)
    assert "takes no sliding window" in varlen.kernel_problem("bf16", modernbert)
    assert varlen.kernel_problem("bf16", bert) is None
    monkeypatch.setattr(varlen, "_KERNEL_TAKES_WINDOW", True)
    assert varlen.kernel_problem("bf16", modernbert) is None
