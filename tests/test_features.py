import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_lib.features import build_eval_features, build_train_features




def _check_labels(examples, features, tokenizer):
    ex_by_id = {e["id"]: e for e in examples}
    n_inside = n_cls = 0
    exact = 0
    # Recompute offsets for the train features by re-tokenizing with the same call.
    for f in features:
        ex = ex_by_id[f["_id"]]
        s, e = f["start_positions"], f["end_positions"]
        cls = f["input_ids"].index(tokenizer.cls_token_id)
        if (s, e) == (cls, cls):
            n_cls += 1
            continue
        n_inside += 1
        start_char = ex["answers"]["answer_start"][0]
        text = ex["answers"]["text"][0]
        offsets = f["_offsets"]
        span = ex["context"][offsets[s][0] : offsets[e][1]]
        assert s <= e
        assert offsets[s][0] <= start_char and offsets[e][1] >= start_char + len(text), (span, text)
        assert text in span
        # Minimal: no tighter token span covers the answer.
        if e > s:
            assert offsets[s + 1][0] > start_char and offsets[e - 1][1] < start_char + len(text)
        exact += span == text
    return n_inside, n_cls, exact


def _with_debug_columns(examples, tokenizer, max_length, stride):
    feats = build_train_features(examples, tokenizer, max_length, stride)
    ev = build_eval_features(examples, tokenizer, max_length, stride)
    assert len(ev) == len(feats)  # the same windows for training and evaluation
    # Eval offsets are context-only; train and eval windows share their input_ids.
    full_offsets = tokenizer(
        [q.lstrip() for q in examples["question"]], list(examples["context"]), truncation="only_second",
        max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
    )["offset_mapping"]
    feats = feats.add_column("_id", ev["example_id"]).add_column("_offsets", [list(map(list, o)) for o in full_offsets])
    return feats


def test_every_in_window_label_decodes_to_the_answer(train_examples, tokenizer):
    examples = train_examples.select(range(600))
    feats = _with_debug_columns(examples, tokenizer, 128, 48)
    n_inside, n_cls, exact = _check_labels(examples, feats, tokenizer)
    assert len(feats) > len(examples)  # long contexts were split
    assert n_cls > 0 and n_inside >= len(examples)  # answers outside a window are labelled CLS
    assert exact / n_inside > 0.98  # word-piece boundaries almost always match answer boundaries


@settings(max_examples=8, deadline=None)
@given(max_length=st.integers(min_value=96, max_value=384), stride_frac=st.floats(min_value=0.0, max_value=0.6),
       offset=st.integers(min_value=0, max_value=3700))
def test_labels_property(train_examples, tokenizer, max_length, stride_frac, offset):
    examples = train_examples.select(range(offset, offset + 40))
    stride = int((max_length - 40) * stride_frac)
    feats = _with_debug_columns(examples, tokenizer, max_length, stride)
    n_inside, _, _ = _check_labels(examples, feats, tokenizer)
    # Each answer fits inside at least one window when windows are larger than answer + question.
    covered = {f["_id"] for f in feats if f["start_positions"] != 0}
    assert n_inside >= 1 and len(covered) >= len(examples) * 0.9
    assert all(len(ids) <= max_length for ids in feats["input_ids"])


def test_no_padding_at_feature_time(train_examples, tokenizer):
    feats = build_train_features(train_examples.select(range(200)), tokenizer, 384, 128)
    lengths = {len(x) for x in feats["input_ids"]}
    assert len(lengths) > 20 and tokenizer.pad_token_id not in feats[0]["input_ids"]


def test_eval_features_keep_ids_and_context_only_offsets(dev_v1_examples, tokenizer):
    examples = dev_v1_examples.select(range(50))
    feats = build_eval_features(examples, tokenizer, 128, 32)
    assert set(feats["example_id"]) == set(examples["id"])
    ctx = {e["id"]: e["context"] for e in examples}
    for f in feats.select(range(30)):
        seq = np.array(f["offset_mapping"])
        sep = f["input_ids"].index(tokenizer.sep_token_id)
        assert (seq[: sep + 1] == -1).all()  # CLS, question and first SEP are masked
        assert (seq[-1] == -1).all()  # last SEP
        inside = seq[seq[:, 0] >= 0]
        assert len(inside) > 0 and inside[:, 1].max() <= len(ctx[f["example_id"]])
        assert f["cls_index"] == 0


def test_left_padding_tokenizer_puts_context_first(tiny_model, dev_v1_examples, tmp_path):
    from tests.conftest import build_tiny_model

    from qa_lib.modeling import load_tokenizer

    left = load_tokenizer(str(build_tiny_model(tmp_path / "left", padding_side="left")))
    assert left.padding_side == "left"
    examples = dev_v1_examples.select(range(20))
    feats = build_train_features(examples, left, 96, 32)
    ev = build_eval_features(examples, left, 96, 32)
    for f, e in zip(feats, ev):
        ex = examples[examples["id"].index(e["example_id"])]
        first_sep = f["input_ids"].index(left.sep_token_id)
        offs = np.array(e["offset_mapping"])
        assert (offs[1:first_sep, 0] >= 0).all()  # the context comes first
        assert (offs[first_sep:, 0] == -1).all()
        if f["start_positions"] != 0:
            text = ex["answers"]["text"][0]
            span = ex["context"][offs[f["start_positions"]][0] : offs[f["end_positions"]][1]]
            assert text in span


def test_drop_answerless_windows_keeps_exactly_the_labelled_ones(train_examples, tokenizer):
    examples = train_examples.select(range(300))
    full = build_train_features(examples, tokenizer, 128, 48)
    kept = build_train_features(examples, tokenizer, 128, 48, drop_answerless=True)
    labelled = [(s, e) for s, e in zip(full["start_positions"], full["end_positions"]) if (s, e) != (0, 0)]
    assert len(kept) == len(labelled) < len(full)
    assert list(zip(kept["start_positions"], kept["end_positions"])) == labelled


def _pair_call(tokenizer, examples, max_length, stride):
    """The tokenizer's own pair path, as the tutorial calls it (the specification for `_tokenize`)."""
    ctx_first = tokenizer.padding_side == "left"
    questions = [q.lstrip() for q in examples["question"]]
    first, second = (examples["context"], questions) if ctx_first else (questions, examples["context"])
    return tokenizer(first, second, truncation="only_first" if ctx_first else "only_second", max_length=max_length,
                     stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)


def _same_windows(tokenizer, examples, max_length, stride):
    from qa_lib.features import _tokenize

    backend = tokenizer.backend_tokenizer
    before = (backend.truncation, backend.padding, backend.post_processor.__getstate__())
    ours = _tokenize(tokenizer, examples, max_length, stride)
    assert (backend.truncation, backend.padding, backend.post_processor.__getstate__()) == before  # put back
    theirs = _pair_call(tokenizer, examples, max_length, stride)
    assert set(ours.keys()) == set(theirs.keys())
    for key in theirs.keys():
        a, b = ours[key], theirs[key]
        if key == "offset_mapping":
            a, b = [list(map(tuple, r)) for r in a], [list(map(tuple, r)) for r in b]
        assert a == b, key
    assert all(ours.sequence_ids(i) == theirs.sequence_ids(i) for i in range(len(theirs["input_ids"])))
    return len(theirs["input_ids"])


@pytest.mark.parametrize("max_length, stride", [(384, 128), (96, 32)])
def test_each_context_tokenized_once_gives_the_pair_windows(train_examples, dev_v2_examples, tokenizer,
                                                            max_length, stride):
    """Contexts are tokenized once and joined to each question: windows identical to the pair call."""
    n = _same_windows(tokenizer, train_examples[:600], max_length, stride)
    assert n > 600  # long contexts were split into several windows
    _same_windows(tokenizer, dev_v2_examples[:300], max_length, stride)


def test_context_first_and_byte_level_tokenizers_give_the_pair_windows(tiny_model, train_examples, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from qa_lib.modeling import load_tokenizer
    from tests.conftest import build_tiny_model

    left = load_tokenizer(str(build_tiny_model(tmp_path / "left", padding_side="left")))
    _same_windows(left, train_examples[:200], 96, 32)
    # A RoBERTa-style byte-level BPE tokenizer: other special tokens, no type ids.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    bpe.train_from_iterator(train_examples[:300]["context"],
                            trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", pad_token="<pad>", unk_token="<unk>",
                                   model_input_names=["input_ids", "attention_mask"])
    assert _same_windows(fast, train_examples[:200], 128, 48) > 200


def test_question_longer_than_the_window_is_a_clear_error(tokenizer):
    from qa_lib.errors import DataError
    from qa_lib.features import _tokenize

    batch = {"id": ["q-long"], "question": ["what " * 100], "context": ["A short context. " * 20]}
    with pytest.raises(DataError, match="example q-long: the question is 100 tokens"):
        _tokenize(tokenizer, batch, 64, 16)


def test_a_tokenizer_that_is_not_fast_is_refused_by_name(train_examples):
    """ByT5's tokenizer is pure Python: it has no offsets, so it cannot place an answer in a window."""
    from transformers import ByT5Tokenizer

    from qa_lib.errors import ModelError

    with pytest.raises(ModelError, match="ByT5Tokenizer is not a fast tokenizer"):
        build_train_features(train_examples.select(range(5)), ByT5Tokenizer(), 128, 32)


def test_num_proc_gives_the_same_features(train_examples, dev_v2_examples, tokenizer):
    """`num_proc` splits the map over worker processes (the tokenizer is pickled into each)."""
    train = train_examples.select(range(300))
    one = build_train_features(train, tokenizer, 160, 48, None, True)
    two = build_train_features(train, tokenizer, 160, 48, 2, True)
    assert len(one) > len(train) * 0.9 and one[:] == two[:]
    dev = dev_v2_examples.select(range(200))
    assert build_eval_features(dev, tokenizer, 128, 32)[:] == build_eval_features(dev, tokenizer, 128, 32, 2)[:]


def test_context_without_tokens_gives_a_window_without_context(tokenizer):
    """A context of characters the tokenizer drops (zero-width spaces) passes validation; its window
    has no context token to answer from, instead of failing the whole batch."""
    import datasets

    from qa_lib.postprocess import postprocess

    ex = datasets.Dataset.from_dict({"id": ["zw", "ok"], "question": ["Who?", "Who won?"],
                                     "context": ["\u200b\u200b", "The Broncos won."], "title": ["", ""],
                                     "answers": [{"text": [], "answer_start": []}] * 2})
    feats = build_eval_features(ex, tokenizer, 64, 16)
    assert all(o == [-1, -1] for o in feats[0]["offset_mapping"])
    assert any(o[0] >= 0 for o in feats[1]["offset_mapping"])
    width = max(len(x) for x in feats["input_ids"])
    zeros = np.zeros((2, width), dtype=np.float32)
    answers = postprocess(ex, feats, zeros, zeros).answers
    assert answers["zw"] == "" and answers["ok"] in "The Broncos won." and answers["ok"]


def test_a_question_leaving_less_than_the_stride_narrows_only_its_own_windows(train_examples, tokenizer, caplog):
    """With a question this long, fewer than doc_stride tokens of the window are left for the context,
    and the tokenizer panics (a Rust panic: the whole run died). That example's windows now overlap by
    half of what is left; every other example's windows are unchanged, and its label still decodes."""
    import logging

    examples = train_examples.select(range(30))
    target = 3
    long_question = examples[target]["question"] + " and more" * 40
    longer = examples.map(lambda ex, i: {"question": long_question if i == target else ex["question"]},
                          with_indices=True)
    n_question = len(tokenizer(long_question.lstrip(), add_special_tokens=False)["input_ids"])
    room = 128 - n_question - 3  # [CLS] question [SEP] context [SEP]
    n_context = len(tokenizer(longer[target]["context"], add_special_tokens=False)["input_ids"])
    assert 0 < room <= 48 < n_context  # the case itself: room below the stride, a context that needs windows

    with caplog.at_level(logging.WARNING, logger="qa_lib.features"):
        train = build_train_features(longer, tokenizer, 128, 48)
        ev = build_eval_features(longer, tokenizer, 128, 48)
    assert any(longer[target]["id"] in r.getMessage() and "doc_stride (48)" in r.getMessage() for r in caplog.records)
    assert len(train) == len(ev)
    mine = [i for i, eid in enumerate(ev["example_id"]) if eid == longer[target]["id"]]

    # Every other example: the same windows as without the long question.
    rest = build_eval_features(examples.select([i for i in range(len(examples)) if i != target]), tokenizer, 128, 48)
    others = [i for i in range(len(ev)) if i not in mine]
    assert ev.select(others)[:] == rest[:]

    # Its own windows: within the window, covering the whole context, overlapping by room // 2 tokens.
    spans = []
    for i in mine:
        assert len(ev[i]["input_ids"]) <= 128
        ctx = [tuple(o) for o in ev[i]["offset_mapping"] if o[0] >= 0]
        assert len(ctx) <= room
        spans.append(ctx)
    assert len(mine) > 1 and spans[0][0][0] <= 1
    assert spans[-1][-1][1] == len(longer[target]["context"].rstrip())
    for a, b in zip(spans, spans[1:]):
        assert a[-(room // 2):] == b[: room // 2]

    # Its label: the window holding the answer points at it.
    answer = longer[target]["answers"]
    start_char, text = answer["answer_start"][0], answer["text"][0]
    found = 0
    for i in mine:
        s, e = train[i]["start_positions"], train[i]["end_positions"]
        if s != e or s != 0:
            offsets = ev[i]["offset_mapping"]
            found += 1
            assert offsets[s][0] <= start_char and offsets[e][1] >= start_char + len(text)
            assert text in longer[target]["context"][offsets[s][0]:offsets[e][1]]
    assert found >= 1


def test_no_window_holding_an_answer_is_a_clear_error(train_examples, tokenizer):
    """Every answer longer than its window and answerless windows dropped: no features at all. The
    empty dataset used to be stored, and loading it back for training raised an IndexError (retried)."""
    from qa_lib.errors import DataError

    examples = train_examples.select(range(5))
    long_answers = examples.map(lambda ex: {"answers": {"text": [ex["context"][:400]], "answer_start": [0]}})
    with pytest.raises(DataError, match="no training windows: in none of the 5 examples does a 40-token window"):
        build_train_features(long_answers, tokenizer, 40, 8, drop_answerless=True)
    assert len(build_train_features(long_answers, tokenizer, 40, 8, drop_answerless=False)) > 5  # CLS-labelled windows


def test_building_features_writes_nothing_beside_the_examples(train_examples, tokenizer, tmp_path):
    """The examples come from a store entry (load_from_disk): datasets wrote each map's result as a
    cache file into that entry, one more copy of the features per window setting."""
    import datasets

    train_examples.select(range(200)).save_to_disk(str(tmp_path / "examples"))
    before = sorted(p.name for p in (tmp_path / "examples").iterdir())
    examples = datasets.load_from_disk(str(tmp_path / "examples"))
    assert len(build_train_features(examples, tokenizer, 128, 48, drop_answerless=True)) > 0
    assert len(build_eval_features(examples, tokenizer, 128, 48)) >= 200
    assert sorted(p.name for p in (tmp_path / "examples").iterdir()) == before
