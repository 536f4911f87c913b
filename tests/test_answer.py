import json
import os
from pathlib import Path

import pytest
import torch

from qa_lib.answer import QuestionAnswerer, answer
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


def test_answers_do_not_depend_on_the_batch_and_precision_is_the_pipeline_s(trained_tiny, dev_v1_examples):
    """Batches of 1 and of the default size give the same answers (each window's logits land in its
    own row; the scores differ in the last float32 digits, as padding changes the matmul's sums);
    `auto` is the evaluation's precision (fp32 on the CPU), and bf16 (CPU autocast here) runs and
    gives spans of the context."""
    import torch

    from qa_lib.errors import ConfigError

    rows = dev_v1_examples.select(range(6))
    questions, contexts = rows["question"], rows["context"]
    default = QuestionAnswerer(trained_tiny, max_length=96, doc_stride=32)
    one = QuestionAnswerer(trained_tiny, max_length=96, doc_stride=32, batch_size=1)
    ones, defaults = one(questions, contexts, top_k=3), default(questions, contexts, top_k=3)
    assert [[(a.answer, a.start, a.end) for a in x] for x in ones] == [[(a.answer, a.start, a.end) for a in x]
                                                                      for x in defaults]
    assert [a.score for x in ones for a in x] == pytest.approx([a.score for x in defaults for a in x], rel=1e-4)
    if not torch.cuda.is_available():
        assert default.precision == "fp32"
    bf16 = QuestionAnswerer(trained_tiny, max_length=96, doc_stride=32, precision="bf16")
    for a, ctx in zip(bf16(questions, contexts), contexts):
        assert ctx[a.start:a.end] == a.answer and a.answer
    with pytest.raises(ConfigError, match=r"precision: 'fp8' is not one of auto, bf16, fp16, fp32"):
        QuestionAnswerer(trained_tiny, precision="fp8")


def test_handle_impossible_answer(trained_tiny, dev_v1_examples):
    qa = QuestionAnswerer(trained_tiny, max_length=96, doc_stride=32)
    ex = dev_v1_examples[3]
    answers = qa(ex["question"], ex["context"], top_k=30, handle_impossible_answer=True)
    null = [x for x in answers if x.answer == ""]
    assert len(null) == 1 and null[0].start == 0 and null[0].end == 0


def test_answer_cli(trained_tiny, capsys, monkeypatch):
    from transformers.utils import logging as hf_logging

    from cli.main import main

    # As on a terminal: bars on (the tests turn them off), yet the JSON comes without a loading bar.
    monkeypatch.delenv("QA_PIPELINE_NO_PROGRESS")
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    ctx = "The Eiffel Tower was completed in 1889 in Paris."
    try:
        assert main(["answer", "--model", trained_tiny, "--question", "When was it completed?", "--context", ctx]) == 0
        assert hf_logging.is_progress_bar_enabled()  # the CLI's own switch-off does not outlive the call
    finally:
        if not was_enabled:
            hf_logging.disable_progress_bar()
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert set(out) == {"answer", "score", "start", "end"}
    assert ctx[out["start"] : out["end"]] == out["answer"]
    assert "Loading weights" not in captured.err


def test_answer_cli_reads_the_context_from_a_file_or_stdin(trained_tiny, tmp_path, capsys, monkeypatch):
    import io

    from cli.main import main

    ctx = "Le château fut achevé en 1889 à Paris. " * 40  # longer than one window
    (tmp_path / "ctx.txt").write_text(ctx, encoding="utf-8")
    argv = ["answer", "--model", trained_tiny, "--question", "Quand ?"]
    assert main([*argv, "--context", ctx]) == 0
    inline = json.loads(capsys.readouterr().out)
    assert main([*argv, "--context-file", str(tmp_path / "ctx.txt")]) == 0
    assert json.loads(capsys.readouterr().out) == inline
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(ctx.encode())))
    assert main([*argv, "--context-file", "-"]) == 0
    piped = capsys.readouterr()
    assert json.loads(piped.out) == inline and piped.err == ""

    class Typed(io.TextIOWrapper):  # a terminal: the text is typed, and the command says what it waits for
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Typed(io.BytesIO(ctx.encode())))
    assert main([*argv, "--context-file", "-"]) == 0
    typed = capsys.readouterr()
    assert json.loads(typed.out) == inline
    assert typed.err == "answer: reading the context from the terminal; end it with Ctrl-D on a line of its own\n"
    (tmp_path / "latin1.txt").write_bytes(ctx.encode("latin-1"))
    assert main([*argv, "--context-file", str(tmp_path / "latin1.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'latin1.txt'}: not UTF-8") and "teau" not in err  # no text echoed
    assert main([*argv, "--context-file", str(tmp_path / "none.txt")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'none.txt'}: file not found\n"
    assert main([*argv, "--context-file", str(tmp_path)]) == 2  # it said "file not found" of a folder
    assert capsys.readouterr().err == f"error: {tmp_path}: a folder; give the text file that holds the context\n"


def test_a_long_context_shows_the_prediction_s_progress(trained_tiny, capsys, monkeypatch):
    """A book-length --context-file was a minute of silence on a CPU; a short one stays bar-free
    (the JSON alone), and QA_PIPELINE_NO_PROGRESS=1 keeps even the long one quiet."""
    from cli.main import main
    from tests.conftest import TRAIN_V1

    doc = json.loads(TRAIN_V1.read_text())
    long_ctx = " ".join(p["context"] for a in doc["data"] for p in a["paragraphs"])[:60_000]
    argv = ["answer", "--model", trained_tiny, "--question", "Who?", "--batch-size", "4"]
    monkeypatch.delenv("QA_PIPELINE_NO_PROGRESS")  # the suite runs without bars, as a worker does
    assert main([*argv, "--context", long_ctx]) == 0
    out, err = capsys.readouterr()
    assert "predict:" in err and "feature" in err, err[-500:]
    assert json.loads(out)["answer"] == long_ctx[json.loads(out)["start"]:json.loads(out)["end"]]
    assert main([*argv, "--context", long_ctx[:2_000]]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("QA_PIPELINE_NO_PROGRESS", "1")
    assert main([*argv, "--context", long_ctx]) == 0
    assert "predict:" not in capsys.readouterr().err


def test_answers_reach_a_stdout_that_is_not_utf8(trained_tiny, tmp_path, monkeypatch, capsys):
    """With PYTHONIOENCODING=ascii (or a Latin-1 terminal) the answers were computed and then lost to a
    UnicodeEncodeError, exit 1; they are now printed with JSON's escapes, the same data."""
    import io
    import sys

    from cli.main import main

    ctx = "Le château fut achevé en 1889 à Paris, près de l'église Sainte-Clotilde et du musée."
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "é1", "question": "Où ?", "context": ctx}) + "\n")
    for argv in (["--question", "Quand le château fut-il achevé ?", "--context", ctx, "--top-k", "5"],
                 ["--questions", str(tmp_path / "q.jsonl"), "--top-k", "5"]):
        argv = ["answer", "--model", trained_tiny, *argv]
        assert main(argv) == 0
        utf8 = json.loads(capsys.readouterr().out)
        assert not json.dumps(utf8, ensure_ascii=False).isascii()  # something to escape
        raw = io.BytesIO()
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii", write_through=True))
            assert main(argv) == 0
            printed = raw.getvalue().decode("ascii")
        assert json.loads(printed) == utf8


def test_empty_input_is_refused_before_the_model_is_loaded(tmp_path, capsys):
    from cli.main import main
    from qa_lib.errors import DataError

    missing = str(tmp_path / "no-model")
    with pytest.raises(DataError, match="question is empty"):
        answer(missing, " ", "The Broncos won.")
    assert main(["answer", "--model", missing, "--question", "Who won?", "--context", ""]) == 2
    assert capsys.readouterr().err.strip() == "error: answer: the context is empty"


def test_empty_inputs(trained_tiny):
    from qa_lib.errors import DataError

    qa = QuestionAnswerer(trained_tiny, max_length=96, doc_stride=32)
    with pytest.raises(DataError, match="^answer: the question is empty$"):  # one question: no position
        qa("  ", "The Broncos won.")
    with pytest.raises(DataError, match="context 1 is empty"):
        qa(["Who won?", "Who lost?"], ["The Broncos won.", ""])
    with pytest.raises(DataError, match="question 0 is empty"):  # a list's question, with a shared context
        qa(["", "Who lost?"], "The Broncos won.")
    with pytest.raises(DataError, match="2 questions but 1 contexts"):
        qa(["Who won?", "Who lost?"], ["The Broncos won."])
    assert qa([], []) == []
    from qa_lib.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^top_k \(0\) must be at least 1$"):
        qa("Who won?", "The Broncos won.", top_k=0)
    with pytest.raises(ConfigError, match=r"^max_answer_len \(-1\) must be at least 1$"):
        qa("Who won?", "The Broncos won.", max_answer_len=-1)


def test_a_question_too_long_for_the_window_is_named_before_the_weights_load(trained_tiny, tmp_path, capsys):
    """It was "features: example 0: ..." after the model had loaded: now the file and the question's
    id, found with the tokenizer alone (the weights here are damaged and never read)."""
    import shutil

    from cli.main import main

    model = tmp_path / "model"
    shutil.copytree(trained_tiny, model)
    (model / "model.safetensors").write_bytes(b"not weights")
    rows = [{"id": "short", "question": "Who won?", "context": "The Broncos won."},
            {"id": "rambling", "question": " ".join(["why"] * 120) + "?", "context": "The Broncos won."}]
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["answer", "--model", str(model), "--questions", str(questions), "--max-length", "96",
                 "--doc-stride", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {questions}: example rambling: the question is 121 tokens, which leaves no room "
                          "for the context in a 96-token window"), err
    assert err.count("\n") == 1


def test_answer_dry_run_checks_everything_and_answers_nothing(trained_tiny, tmp_path, capsys):
    """`--dry-run` with --questions: the file, the output's place and the model (weights readable, a
    trained QA head, the window) are checked; nothing is answered or written, no folder is made."""
    from cli.main import main

    rows = [{"id": "a", "question": "Who won?", "context": "The Broncos won."},
            {"id": "b", "question": "Who lost?", "context": "The Panthers lost."}]
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "new" / "answers.json"
    argv = ["answer", "--questions", str(questions), "-o", str(out), "--dry-run"]
    assert main([*argv, "--model", trained_tiny]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("dry run: every check passed; nothing was answered.")
    assert f"{questions} (2, valid)" in printed and trained_tiny in printed and str(out) in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]
    # The same checks a real run makes, each one line: a model without a trained QA head (a file of
    # answers from a random head would be noise; the real run refuses it too), a window past its positions.
    base = tmp_path / "base"
    from transformers import AutoModel

    AutoModel.from_pretrained(trained_tiny).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (base / name).write_bytes((Path(trained_tiny) / name).read_bytes())
    real = [a for a in argv if a != "--dry-run"]
    for run, message in [([*argv, "--model", str(base)], "its weights hold no question-answering head"),
                         ([*real, "--model", str(base)], "its weights hold no question-answering head"),
                         ([*argv, "--model", trained_tiny, "--max-length", "4096", "--doc-stride", "128"],
                          "max_length (4096) is longer than model")]:
        assert main(run) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["answer", "--model", trained_tiny, "--question", "Who won?", "--context", "x", "--dry-run"]) == 2
    assert "--dry-run goes with --questions" in capsys.readouterr().err
    # One question too: a base model's answer would look like one and mean nothing.
    assert main(["answer", "--model", str(base), "--question", "Who won?", "--context", "The Broncos won."]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {base}: its weights hold no question-answering head") and err.count("\n") == 1


def test_window_settings_are_checked_and_the_cli_takes_them(trained_tiny, tmp_path, capsys):
    from cli.main import main
    from qa_lib.errors import ConfigError

    # Before, these reached the tokenizer or the model: a ValueError, an OverflowError, or a
    # tensor-size RuntimeError from the position embeddings.
    missing = str(tmp_path / "no-model")  # refused before the model is looked for
    for kw, message in [({"max_length": 0}, r"max_length \(0\) must be at least 1"),
                        ({"doc_stride": 400}, r"doc_stride \(400\) must be at least 0 and smaller than max_length \(384\)"),
                        ({"doc_stride": -1}, r"doc_stride \(-1\) must be"),
                        ({"max_length": 20}, r"doc_stride \(128\) must be at least 0 and smaller than max_length \(20\)")]:
        with pytest.raises(ConfigError, match=message):
            answer(missing, "Who won?", "The Broncos won.", **kw)
    with pytest.raises(ConfigError, match=r"max_length \(600\) is longer than model .* \(512 positions\)"):
        QuestionAnswerer(trained_tiny, max_length=600)

    # A question too long for the default window: the error's advice is an option the CLI has.
    question = " ".join(["what"] * 400) + "?"
    argv = ["answer", "--model", trained_tiny, "--question", question, "--context", "The Broncos won in 2016."]
    assert main(argv) == 2
    assert "leaves no room for the context in a 384-token window" in capsys.readouterr().err
    assert main([*argv, "--max-length", "512", "--doc-stride", "64"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "The Broncos won in 2016."[out["start"]:out["end"]] == out["answer"] != ""


def test_answer_cli_answers_every_question_of_a_file_in_any_format(trained_tiny, dev_v1_examples, tmp_path, capsys):
    """`--questions`: a file without answers (JSONL, CSV) or an official SQuAD file with them gives
    one answer per id, the same as the API's, in the predictions format `score` reads."""
    import pandas as pd

    from cli.main import main

    rows = dev_v1_examples.select(range(12))
    qa = QuestionAnswerer(trained_tiny, max_length=96, doc_stride=32)
    expected = {e["id"]: a.answer for e, a in zip(rows, qa(rows["question"], rows["context"]))}
    assert any(expected.values())
    bare = pd.DataFrame({"id": rows["id"], "question": rows["question"], "context": rows["context"]})
    bare.to_json(tmp_path / "q.jsonl", orient="records", lines=True, force_ascii=False)
    bare.to_csv(tmp_path / "q.csv", index=False)
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": e["context"], "qas": [{"id": e["id"], "question": e["question"],
                                            "answers": [{"text": t, "answer_start": s} for t, s in
                                                        zip(e["answers"]["text"], e["answers"]["answer_start"])]}]}
        for e in rows]}]}
    (tmp_path / "q.json").write_text(json.dumps(squad))
    window = ["--max-length", "96", "--doc-stride", "32"]
    for name in ("q.jsonl", "q.csv", "q.json"):
        assert main(["answer", "--model", trained_tiny, "--questions", str(tmp_path / name), *window]) == 0, name
        assert json.loads(capsys.readouterr().out) == expected, name
    # A file with its own column names, mapped with --column.
    bare.rename(columns={"id": "qid", "question": "query"}).to_json(tmp_path / "own.jsonl", orient="records",
                                                                    lines=True, force_ascii=False)
    assert main(["answer", "--model", trained_tiny, "--questions", str(tmp_path / "own.jsonl"), "--column", "id=qid",
                 "--column", "question = query", *window]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    # A data folder with a subset per half of the questions: --subset and --split name one.
    folder = tmp_path / "subsets"
    card = "---\nconfigs:\n"
    for name, part in (("first", bare.iloc[:5]), ("second", bare.iloc[5:])):
        (folder / name).mkdir(parents=True)
        part.to_json(folder / name / "test.jsonl", orient="records", lines=True, force_ascii=False)
        card += f"- config_name: {name}\n  data_files:\n  - split: test\n    path: {name}/test.jsonl\n"
    (folder / "README.md").write_text(card + "---\n")
    assert main(["answer", "--model", trained_tiny, "--questions", str(folder), "--subset", "second", "--split", "test",
                 *window]) == 0
    assert json.loads(capsys.readouterr().out) == {i: expected[i] for i in bare["id"][5:]}
    assert main(["answer", "--model", trained_tiny, "--questions", str(tmp_path / "q.jsonl"), "--split", "test"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'q.jsonl'}: split 'test' given for a single file")
    # A sheet without ids: keyed by row number, from 0, in the file's order. Training data still
    # needs its ids (they are what scores are matched on).
    bare.drop(columns="id").to_csv(tmp_path / "noid.csv", index=False)
    assert main(["answer", "--model", trained_tiny, "--questions", str(tmp_path / "noid.csv"), *window]) == 0
    assert json.loads(capsys.readouterr().out) == {str(i): expected[e] for i, e in enumerate(rows["id"])}
    from qa_lib.data import load_examples
    from qa_lib.errors import DataError

    with pytest.raises(DataError, match=r"missing column\(s\): id, answers"):
        load_examples(str(tmp_path / "noid.csv"))
    out = tmp_path / "out" / "predictions.json"
    (tmp_path / "out").mkdir()
    assert main(["answer", "--model", trained_tiny, "--questions", str(tmp_path / "q.json"), "-o", str(out),
                 *window]) == 0
    assert json.loads(out.read_text()) == expected and [p.name for p in out.parent.iterdir()] == [out.name]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain write would make it, not owner-only
    assert main(["score", str(tmp_path / "q.json"), str(out)]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"exact_match", "f1"}
    assert main(["answer", "--model", trained_tiny, "--questions", str(tmp_path / "q.jsonl"), "--top-k", "3",
                 *window]) == 0
    top = json.loads(capsys.readouterr().out)
    assert set(top) == set(expected)
    for e in rows:
        assert len(top[e["id"]]) == 3 and top[e["id"]][0]["answer"] == expected[e["id"]]
        assert all(e["context"][a["start"]:a["end"]] == a["answer"] for a in top[e["id"]])


def test_a_bad_questions_file_is_one_line_before_the_model_loads(tmp_path, capsys):
    from cli.main import main

    # A model folder that could never load (no weights, no tokenizer): every refusal below comes
    # before anything of it is read; only a missing folder is named before the questions are read.
    (tmp_path / "unloadable").mkdir()
    (tmp_path / "unloadable" / "config.json").write_text("{}")
    missing_model = str(tmp_path / "unloadable")
    rows = [{"id": "a", "question": "Who won?", "context": "The Broncos won."},
            {"id": "a", "question": "Who lost?", "context": "The Panthers lost."}]
    (tmp_path / "dup.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "noq.jsonl").write_text(json.dumps({"id": "a", "context": "The Broncos won."}))
    (tmp_path / "ok.jsonl").write_text(json.dumps(rows[0]))
    (tmp_path / "blocker").write_text("a file, not a folder")
    (tmp_path / "empty.json").write_text(json.dumps({"version": "1.1", "data": []}))
    cases = [(["--questions", str(tmp_path / "dup.jsonl")], f"error: {tmp_path / 'dup.jsonl'}: a: duplicate id"),
             (["--questions", str(tmp_path / "noq.jsonl")], f"error: {tmp_path / 'noq.jsonl'}: missing column(s): "
                                                            "question;"),
             (["--questions", str(tmp_path / "none.jsonl")], f"error: {tmp_path / 'none.jsonl'}: file or folder "
                                                             "not found"),
             (["--questions", str(tmp_path / "ok.jsonl"), "-o", str(tmp_path / "blocker" / "p.json")],
              f"error: {tmp_path / 'blocker' / 'p.json'}: cannot write here"),
             # It was an IsADirectoryError once every answer was ready: exit 1, a traceback.
             (["--questions", str(tmp_path / "ok.jsonl"), "-o", str(tmp_path)],
              f"error: {tmp_path}: a folder; give the answers file's name (e.g. {tmp_path / 'answers.json'})"),
             (["--questions", str(tmp_path / "ok.jsonl"), "--question", "Who?"],
              "error: answer: --questions answers a file; it takes no --question"),
             (["--question", "Who won?", "--context", "The Broncos won.", "-o", str(tmp_path / "p.json")],
              "error: answer: --output goes with --questions"),
             (["--question", "Who won?"], "error: answer: give --question and --context (or --context-file), "
                                          "or --questions FILE"),
             (["--questions", str(tmp_path / "empty.json")], f"error: {tmp_path / 'empty.json'}: no questions"),
             (["--questions", str(tmp_path / "ok.jsonl"), "--top-k", "0"], "error: --top-k (0) must be at least 1"),
             (["--questions", str(tmp_path / "ok.jsonl"), "--column", "question"],
              "error: answer: --column 'question' is not of the form ours=theirs"),
             (["--questions", str(tmp_path / "ok.jsonl"), "--column", "query=question"],
              "error: answer: --column 'query=question': 'query' is not one of our columns (id, title, context, "
              "question, answers, answer_text, answer_start)"),
             (["--questions", str(tmp_path / "ok.jsonl"), "--column", "qestion=query"],
              "error: answer: --column 'qestion=query': 'qestion' is not one of our columns (id, title, context, "
              "question, answers, answer_text, answer_start); did you mean question?"),
             (["--question", "Who won?", "--context", "The Broncos won.", "--column", "id=qid"],
              "error: answer: --column goes with --questions"),
             (["--question", "Who won?", "--context", "The Broncos won.", "--subset", "en"],
              "error: answer: --subset goes with --questions"),
             (["--questions", str(tmp_path / "none.jsonl"), "--batch-size", "0"], "error: --batch-size (0) must be"),
             (["--question", "Who won?", "--context", "The Broncos won.", "--batch-size", "0"],
              "error: --batch-size (0) must be"),
             # Named as the options typed, not as the library's arguments.
             (["--question", "Who won?", "--context", "The Broncos won.", "--doc-stride", "400"],
              "error: --doc-stride (400) must be at least 0 and smaller than --max-length (384)"),
             (["--questions", str(tmp_path / "none.jsonl"), "--max-length", "64"],
              "error: --doc-stride (128) must be at least 0 and smaller than --max-length (64)"),
             (["--question", "Who won?", "--context", "The Broncos won.", "--max-answer-len", "0"],
              "error: --max-answer-len (0) must be at least 1")]
    if not torch.cuda.is_available():  # refused before the file is read or the model looked for
        cases += [(["--questions", str(tmp_path / "none.jsonl"), "--precision", "fp16"],
                   "error: --precision: fp16 needs a CUDA GPU"),
                  (["--question", "Who won?", "--context", "The Broncos won.", "--precision", "fp16"],
                   "error: --precision: fp16 needs a CUDA GPU")]
    for argv, message in cases:
        assert main(["answer", "--model", missing_model, *argv]) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith(message) and captured.err.count("\n") == 1 and not captured.out, captured.err
    assert not (tmp_path / "p.json").exists()
