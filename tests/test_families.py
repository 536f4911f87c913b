"""Every tokenizer family on the real shared data: labels, offsets, answers, and a CLI run each.

The families (see `tests/families.py`): the bundled WordPiece, byte-level BPE with and without
`add_prefix_space`, Unigram with a Metaspace pre-tokenizer, and a left-padding tokenizer that puts
the context first and CLS last. Each is a real `tokenizers` vocabulary trained on the SQuAD
samples, saved with a tiny random model of its architecture, built once per session.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from qa_lib.features import _tokenize, build_eval_features, build_train_features
from qa_lib.modeling import load_tokenizer
from qa_lib.postprocess import postprocess
from tests.conftest import DEV_V1, SQUAD, TRAIN_V1
from tests.families import FAMILIES, build_family

# Labels that cover more than the answer because the tokenizer's pieces do ("▁(19" for "1917",
# "s." for "s"): at most this share of in-window labels, per family. Measured on the first 600
# training questions at 128/48 windows: WordPiece 3 of 804, byte-level BPE 3 of 862 and 4 of 856,
# Unigram 51 of 848 (its vocabulary, trained on little text, merges punctuation into pieces).
GRANULARITY_LIMIT = 0.08


@pytest.fixture(scope="session", params=FAMILIES)
def family(request, tmp_path_factory):
    folder = build_family(request.param, tmp_path_factory.mktemp(request.param), SQUAD)
    return request.param, folder


@pytest.fixture(scope="session")
def train_600():
    from qa_lib.data import load_examples

    return load_examples(str(TRAIN_V1)).select(range(600))


def _windows(examples, tokenizer, max_length=128, stride=48):
    train = build_train_features(examples, tokenizer, max_length, stride)
    evalf = build_eval_features(examples, tokenizer, max_length, stride)
    assert len(train) == len(evalf)  # one window list for both, so eval offsets describe train labels
    return train, evalf


def test_every_label_decodes_to_the_gold_answer(family, train_600):
    name, folder = family
    tok = load_tokenizer(str(folder))
    train, evalf = _windows(train_600, tok)
    gold = {e["id"]: (e["context"], e["answers"]["text"][0]) for e in train_600}
    inside = exact = 0
    for s, e, eid, offsets, cls in zip(train["start_positions"], train["end_positions"], evalf["example_id"],
                                       evalf["offset_mapping"], evalf["cls_index"]):
        if s == e == cls:
            continue
        inside += 1
        context, text = gold[eid]
        (a, _), (_, b) = offsets[s], offsets[e]
        assert a >= 0 and b >= 0, f"{name}: label on a non-context token"
        span = context[a:b]
        assert text in span and span == span.strip(), (name, text, span)
        exact += span == text
    coarse = inside - exact
    print(f"{name}: {inside} in-window labels, {coarse} wider than the answer (tokenizer granularity)")
    assert inside > len(train_600) and coarse <= GRANULARITY_LIMIT * inside


def test_logits_peaking_at_the_gold_tokens_give_the_gold_text(family, train_600):
    name, folder = family
    tok = load_tokenizer(str(folder))
    train, evalf = _windows(train_600, tok)
    width = max(len(x) for x in evalf["input_ids"])
    start = np.full((len(evalf), width), -10.0, dtype=np.float32)
    end = start.copy()
    for i, (s, e, cls) in enumerate(zip(train["start_positions"], train["end_positions"], evalf["cls_index"])):
        if not s == e == cls:
            start[i, s], end[i, e] = 10.0, 10.0
    answers = postprocess(train_600, evalf, start, end).answers
    exact = 0
    for ex in train_600:
        text, got = ex["answers"]["text"][0], answers[ex["id"]]
        assert text in got and got == got.strip(), (name, text, got)
        exact += got == text
    assert exact >= (1 - GRANULARITY_LIMIT) * len(train_600)


def test_no_answer_or_nbest_entry_is_empty_or_padded_with_whitespace(family, dev_v1_examples):
    """Random logits, peaking at the tokens whose offsets cover no character (byte-level BPE's
    zero-width and space-only tokens, SentencePiece's lone "▁"): no such token ends an answer."""
    name, folder = family
    tok = load_tokenizer(str(folder))
    evalf = build_eval_features(dev_v1_examples, tok, 128, 48)
    width = max(len(x) for x in evalf["input_ids"])
    rng = np.random.default_rng(0)
    start = rng.normal(size=(len(evalf), width)).astype(np.float32)
    end = rng.normal(size=(len(evalf), width)).astype(np.float32)
    for i, offsets in enumerate(evalf["offset_mapping"]):
        start[i, len(offsets):] = end[i, len(offsets):] = -np.inf  # as prediction leaves them
        first = next(j for j, o in enumerate(offsets) if o[0] >= 0)
        start[i, first] += 4.0  # so that every window has a valid span among its top ones
        end[i, first] += 4.0
    # Higher peaks at the context tokens whose raw offsets hold no text (zero-width or only spaces).
    raw = _tokenize(tok, dev_v1_examples[:], 128, 48)
    context_id = 0 if tok.padding_side == "left" else 1
    contexts = dev_v1_examples["context"]
    n_blank = 0
    for i, offsets in enumerate(raw["offset_mapping"]):
        context = contexts[raw["overflow_to_sample_mapping"][i]]
        blank = [j for j, ((a, b), seq) in enumerate(zip(offsets, raw.sequence_ids(i)))
                 if seq == context_id and not context[a:b].strip()]
        start[i, blank] += 8.0
        end[i, blank] += 8.0
        n_blank += len(blank)
    print(f"{name}: {n_blank} context tokens without text of their own")
    preds = postprocess(dev_v1_examples, evalf, start, end, n_best_size=10)
    assert all(a and a == a.strip() for a in preds.answers.values()), name
    for entries in preds.nbest.values():
        for entry in entries:
            assert entry["text"] and entry["text"] == entry["text"].strip(), (name, entry)


def test_answer_spans_index_into_the_context(family, dev_v1_examples):
    from qa_lib.answer import QuestionAnswerer

    name, folder = family
    qa = QuestionAnswerer(str(folder), max_length=128, doc_stride=48)
    examples = dev_v1_examples.select(range(0, 60, 6))
    results = qa(examples["question"], examples["context"], top_k=3)
    for context, answers in zip(examples["context"], results):
        assert len(answers) == 3
        for a in answers:
            assert a.answer and a.answer == a.answer.strip(), (name, a)
            assert context[a.start : a.end] == a.answer, (name, a)


def test_train_batches_keep_labels_on_their_tokens(family, train_600, tmp_path):
    """The collator pads every family on the right, so a label still points at its token; the
    tokenizer's own side (left for XLNet) used to shift the tokens and leave the labels behind."""
    from qa_lib.config import PipelineConfig
    from qa_lib.train import build_trainer

    name, folder = family
    tok = load_tokenizer(str(folder))
    train = build_train_features(train_600.select(range(80)), tok, 384, 128)
    by_length = {len(ids): i for i, ids in enumerate(train["input_ids"])}
    rows = [train[i] for i in list(by_length.values())[:16]]
    assert len(rows) == 16  # rows of many lengths: real padding
    cfg = PipelineConfig(model=str(folder), output_dir=str(tmp_path))
    trainer = build_trainer(cfg, train, str(tmp_path / "checkpoints"), "fp32")
    batch = trainer.data_collator(rows)
    width = batch["input_ids"].shape[1]
    for r, row in enumerate(rows):
        for label in ("start_positions", "end_positions"):
            at = int(batch[label][r])  # an index into the flattened batch, for the span loss
            assert at // width == r, (name, label)
            assert int(batch["input_ids"][r, at % width]) == row["input_ids"][row[label]], (name, label)
            assert int(batch["attention_mask"][r, at % width]) == 1
        n = len(row["input_ids"])
        assert batch["input_ids"][r, :n].tolist() == row["input_ids"]


def test_prediction_does_not_depend_on_the_batch(family, dev_v1_examples):
    from qa_lib.batching import Padding
    from qa_lib.modeling import load_qa_model
    from qa_lib.predict import predict_logits

    name, folder = family
    tok = load_tokenizer(str(folder))
    model = load_qa_model(str(folder))
    feats = build_eval_features(dev_v1_examples.select(range(24)), tok, 96, 32)
    pad = Padding.of(tok)
    assert pad.for_model(model, 96) == pad  # their logits ignore padding: each batch padded to its longest row
    s7, e7 = predict_logits(model, feats, batch_size=7, progress=False, padding=pad)
    s1, e1 = predict_logits(model, feats, batch_size=1, progress=False, padding=pad)
    np.testing.assert_allclose(s7, s1, atol=1e-4)
    np.testing.assert_allclose(e7, e1, atol=1e-4)


def test_train_and_answer_from_the_command_line(family, prefect_server, tmp_path, capsys):
    from cli.main import main

    name, folder = family
    config = tmp_path / "family.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(folder), "output_dir": str(tmp_path / "out"),
        "train_data": {"path": str(TRAIN_V1), "limit": 48}, "eval_data": {"path": str(DEV_V1), "limit": 24},
        "max_length": 128, "doc_stride": 48, "eval_max_length": 128, "eval_doc_stride": 48,
        "per_device_train_batch_size": 8, "max_steps": 3, "save_steps": 100, "logging_steps": 1,
    }))
    assert main(["train", str(config), "--store", str(tmp_path / "store")]) == 0, name
    out = capsys.readouterr().out
    assert "metrics: exact_match=" in out and " f1=" in out, out[-2000:]
    model_dir = tmp_path / "out" / "model"
    assert (model_dir / "tokenizer.json").exists()
    context = "The Denver Broncos defeated the Carolina Panthers 24–10 to earn their third Super Bowl title."
    assert main(["answer", "--model", str(model_dir), "--question", "Who won?", "--context", context,
                 "--top-k", "2"]) == 0, name
    out = capsys.readouterr().out
    answers = json.loads(out)
    answers = answers if isinstance(answers, list) else [answers]
    for a in answers:
        assert context[a["start"] : a["end"]] == a["answer"] and a["answer"] == a["answer"].strip(), (name, a)


def test_a_model_with_segment_embeddings_is_told_the_question_from_the_context(family, train_600):
    """Features carry the type ids wherever the tokenizer tells the question from the context and the
    model takes them. transformers 5 dropped them from ALBERT's and XLNet's tokenizers (its issue
    #48128): every token was segment 0, and XLNet's segment weights got no gradient at all."""
    import inspect

    from qa_lib.batching import Padding, QACollator
    from qa_lib.modeling import load_qa_model
    from qa_lib.train import unused_parameters

    name, folder = family
    tok = load_tokenizer(str(folder))
    model = load_qa_model(str(folder))
    pair_types = tok("Who?", "The one.", return_token_type_ids=True)["token_type_ids"]
    takes_types = "token_type_ids" in inspect.signature(type(model).forward).parameters
    feature = build_train_features(train_600.select(range(1)), tok, 128, 48)[0]
    if takes_types and len(set(pair_types)) > 1:
        assert len(set(feature["token_type_ids"])) > 1, name
    else:
        assert set(feature.get("token_type_ids") or [0]) == {0}, name
    # What data-parallel training must look for at every step: only XLNet's pretraining-only mask_emb.
    unused = unused_parameters(model, QACollator(Padding.of(tok)), feature)
    assert unused == (["transformer.mask_emb"] if name == "xlnet-left" else []), (name, unused)


@pytest.mark.parametrize("name", ["longformer-bpe", "longformer-wordpiece"])
def test_longformer_attends_globally_to_the_question_with_either_tokenizer_layout(name, train_600, dev_v1_examples,
                                                                                  tmp_path):
    """Longformer's QA forward found the question by counting RoBERTa's three separators, and failed
    an assertion on a WordPiece pair's two; the loaded model is now given the mask: the CLS and
    question tokens (sequence 0), the model's own choice where it could find them."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    from qa_lib.answer import QuestionAnswerer
    from qa_lib.config import PipelineConfig
    from qa_lib.modeling import load_qa_model
    from qa_lib.train import fine_tune

    folder = build_family(name, tmp_path / name, SQUAD)
    tok = load_tokenizer(str(folder))
    rows = dev_v1_examples.select(range(6))
    enc = tok(list(rows["question"]), list(rows["context"]), truncation="only_second", max_length=96, padding=True,
              return_tensors="pt")
    question_ends = [max(j for j, s in enumerate(enc.sequence_ids(i)) if s == 0) for i in range(len(rows))]
    question = torch.arange(enc["input_ids"].shape[1])[None, :] <= torch.tensor(question_ends)[:, None]
    plain = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    loaded = load_qa_model(str(folder)).eval()
    with torch.no_grad():
        given = plain(**enc, global_attention_mask=question.long())
        found = loaded(**enc)
        if name == "longformer-bpe":  # RoBERTa's layout: the same mask the model computes itself
            assert torch.equal(plain(**enc).start_logits, given.start_logits)
    assert torch.equal(found.start_logits, given.start_logits) and torch.equal(found.end_logits, given.end_logits)
    # Both ends of the path that failed: a few training steps and an answer.
    features = build_train_features(train_600.select(range(40)), tok, 96, 32)
    config = PipelineConfig(model=str(folder), max_steps=3, per_device_train_batch_size=8, save_steps=1000)
    model_dir = fine_tune(config, features, tmp_path / "run").model_dir
    ex = dev_v1_examples[0]
    got = QuestionAnswerer(str(model_dir), max_length=96, doc_stride=32)(ex["question"], ex["context"])
    assert got.answer and ex["context"][got.start:got.end] == got.answer


@pytest.mark.parametrize("name", ["funnel-wordpiece", "fnet-wordpiece"])
def test_a_model_whose_logits_change_with_padding_is_padded_to_its_window(name, train_600, dev_v1_examples, tmp_path):
    """Funnel pools and FNet mixes a whole row, padding included: padded to each batch's longest row,
    a feature's logits depended on the batch it fell in, and training saw widths prediction did not."""
    from qa_lib.batching import Padding, QACollator
    from qa_lib.modeling import load_qa_model
    from qa_lib.predict import predict_logits

    folder = build_family(name, tmp_path / name, SQUAD)
    tok = load_tokenizer(str(folder))
    model = load_qa_model(str(folder))
    feats = build_eval_features(dev_v1_examples.select(range(24)), tok, 96, 32)
    assert len(set(map(len, feats["input_ids"]))) > 1  # rows of several widths
    pad = Padding.of(tok)
    fixed = pad.for_model(model, 96)
    assert fixed.window == 96 and fixed.width(40) == 96
    logits = {(p, b): predict_logits(model, feats, batch_size=b, progress=False, padding=p)
              for p in (pad, fixed) for b in (1, 7)}
    for i in (0, 1):
        np.testing.assert_allclose(logits[fixed, 7][i], logits[fixed, 1][i], atol=1e-4)
        finite = np.isfinite(logits[pad, 1][i])
        assert np.abs(logits[pad, 7][i][finite] - logits[pad, 1][i][finite]).max() > 1e-3  # what it was
    train = build_train_features(train_600.select(range(20)), tok, 96, 32)
    batch = QACollator(fixed)([train[i] for i in range(4)])
    assert min(map(len, train["input_ids"][:4])) < 96 and batch["input_ids"].shape == (4, 96)
    from qa_lib.config import PipelineConfig
    from qa_lib.train import fine_tune

    config = PipelineConfig(model=str(folder), max_length=96, doc_stride=32, max_steps=2, per_device_train_batch_size=4,
                            save_steps=1000)
    assert "each to the 96-token window" in fine_tune(config, train, tmp_path / "run").batching_note
