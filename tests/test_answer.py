import json

import pytest

from qa_lib.answer import QuestionAnswerer
from qa_lib.config import PipelineConfig
from qa_lib.features import build_train_features
from qa_lib.modeling import load_tokenizer
from qa_lib.train import fine_tune


@pytest.fixture(scope="module")
def trained_tiny(tiny_model, train_examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(150)), tok, 128, 48)
    cfg = PipelineConfig(model=str(tiny_model), output_dir=str(out), per_device_train_batch_size=16,
                         num_train_epochs=1, learning_rate=1e-3, save_steps=1000)
    return fine_tune(cfg, feats, out).model_dir


def test_answer_api_single_and_batch(trained_tiny, dev_v1_examples):
    qa = QuestionAnswerer(trained_tiny, max_length=96, doc_stride=32)
    ex = dev_v1_examples[0]
    a = qa(ex["question"], ex["context"], max_answer_len=10)
    assert ex["context"][a.start : a.end] == a.answer and a.answer
    assert 0 < a.score <= 1
    top = qa(ex["question"], ex["context"], top_k=5, max_answer_len=10)
    assert [t.score for t in top] == sorted((t.score for t in top), reverse=True)
    assert len({(t.start, t.end) for t in top}) == 5 and top[0] == a
    batch = qa([e["question"] for e in dev_v1_examples.select(range(4))],
               [e["context"] for e in dev_v1_examples.select(range(4))], max_answer_len=10)
    assert len(batch) == 4 and batch[0] == a
    assert all(len(x.answer.split()) <= 10 for x in batch)


def test_handle_impossible_answer(trained_tiny, dev_v1_examples):
    qa = QuestionAnswerer(trained_tiny, max_length=96, doc_stride=32)
    ex = dev_v1_examples[3]
    answers = qa(ex["question"], ex["context"], top_k=30, handle_impossible_answer=True)
    null = [x for x in answers if x.answer == ""]
    assert len(null) == 1 and null[0].start == 0 and null[0].end == 0


def test_answer_cli(trained_tiny, capsys):
    from qa_lib.cli import main

    ctx = "The Eiffel Tower was completed in 1889 in Paris."
    assert main(["answer", "--model", trained_tiny, "--question", "When was it completed?", "--context", ctx]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"answer", "score", "start", "end"}
    assert ctx[out["start"] : out["end"]] == out["answer"]


def test_empty_inputs(trained_tiny):
    from qa_lib.errors import DataError

    qa = QuestionAnswerer(trained_tiny, max_length=96, doc_stride=32)
    with pytest.raises(DataError, match="question 0 is empty"):
        qa("  ", "The Broncos won.")
    with pytest.raises(DataError, match="context 1 is empty"):
        qa(["Who won?", "Who lost?"], ["The Broncos won.", ""])
    with pytest.raises(DataError, match="2 questions but 1 contexts"):
        qa(["Who won?", "Who lost?"], ["The Broncos won."])
    assert qa([], []) == []
    from qa_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="top_k"):
        qa("Who won?", "The Broncos won.", top_k=0)
