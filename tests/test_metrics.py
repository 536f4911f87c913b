import json

import pytest

from qa_lib.metrics import score, squad_v1, squad_v2


def _data(*qas):
    return [{"title": "t", "paragraphs": [{"context": "", "qas": list(qas)}]}]


def _qa(qid, *answers):
    return {"id": qid, "answers": [{"text": a, "answer_start": 0} for a in answers]}


def test_v1_hand_checked():
    data = _data(_qa("a", "Denver Broncos", "the Denver Broncos"), _qa("b", "Santa Clara, California"), _qa("c", "1,600"))
    preds = {"a": "The Denver Broncos!", "b": "Santa Clara", "c": "over 1,600"}
    out = squad_v1(data, preds)
    # a: exact after normalization. b: P=2/2, R=2/3 -> F1=0.8. c: P=1/2 ("over","1600"), R=1 -> 2/3.
    assert out["exact_match"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 0.8 + 2 / 3) / 3)


def test_v1_missing_prediction_scores_zero(capsys):
    out = squad_v1(_data(_qa("a", "x"), _qa("b", "y")), {"a": "x"})
    assert out == {"exact_match": 50.0, "f1": 50.0}
    assert "Unanswered question b" in capsys.readouterr().err


def test_v2_hand_checked():
    data = _data(_qa("h1", "Normandy"), _qa("h2", "10th century"), _qa("n1"), _qa("n2"))
    preds = {"h1": "Normandy", "h2": "the 10th", "n1": "", "n2": "France"}
    na = {"h1": 0.1, "h2": 0.6, "n1": 0.9, "n2": 0.3}
    out = squad_v2(data, preds, na)
    f1_h2 = 2 * (1 / 1) * (1 / 2) / (1 + 1 / 2)  # pred {10th}, gold {10th, century}
    assert out["exact"] == pytest.approx(100 * (1 + 0 + 1 + 0) / 4)
    assert out["f1"] == pytest.approx(100 * (1 + f1_h2 + 1 + 0) / 4)
    assert (out["HasAns_total"], out["NoAns_total"]) == (2, 2)
    assert out["HasAns_exact"] == 50.0 and out["NoAns_exact"] == 50.0
    # Thresholds: sorted by na prob h1(.1) n2(.3) h2(.6) n1(.9); start from 2 (all no-answer correct)
    # h1 +1 -> 3 (best, thresh .1); n2 -1 -> 2; h2 +0 -> 2; n1 +0 -> 2.
    assert out["best_exact"] == 75.0 and out["best_exact_thresh"] == 0.1
    # F1: h1 +1 -> 3; n2 -1 -> 2; h2 + 2/3 -> 2.667; n1 -> 2.667: best stays 3 at .1
    assert out["best_f1"] == 75.0 and out["best_f1_thresh"] == 0.1
    assert list(out)[:3] == ["exact", "f1", "total"]


def test_v2_threshold_turns_answers_into_no_answer():
    data = _data(_qa("h1", "x"), _qa("n1"))
    out = squad_v2(data, {"h1": "x", "n1": "y"}, {"h1": 0.2, "n1": 0.99}, na_prob_thresh=0.5)
    assert out["exact"] == 100.0


def test_examples_api_and_evaluate_module(dev_v2_examples):
    import evaluate

    from qa_lib.evaluate_squad import MODULE_PATH

    examples = dev_v2_examples.select(range(60))
    preds = {e["id"]: (e["answers"]["text"][0][:-1] if e["answers"]["text"] else "") for e in examples}
    null = {k: (0.0 if v else 1.0) for k, v in preds.items()}
    direct = score(examples, preds, null, version_2_with_negative=True)
    module = evaluate.load(MODULE_PATH, "v2")
    via = module.compute(
        predictions=[{"id": k, "prediction_text": v, "no_answer_probability": null[k]} for k, v in preds.items()],
        references=[{"id": e["id"], "answers": e["answers"]} for e in examples],
    )
    assert via == pytest.approx(direct)
    v1 = evaluate.load(MODULE_PATH)
    got = v1.compute(predictions=[{"id": "1", "prediction_text": "the cat"}],
                     references=[{"id": "1", "answers": {"text": ["cat"], "answer_start": [0]}}])
    assert got == {"exact_match": 100.0, "f1": 100.0}


def test_score_cli_matches_library(tmp_path, capsys):
    from cli.main import main
    from tests.conftest import DEV_V1, DEV_V2

    doc = json.loads(DEV_V1.read_text())
    preds = {qa["id"]: qa["answers"][i % len(qa["answers"])]["text"].split()[0]
             for i, qa in enumerate(q for a in doc["data"] for p in a["paragraphs"] for q in p["qas"])}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    assert main(["score", str(DEV_V1), str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == json.dumps(squad_v1(doc["data"], preds))

    doc2 = json.loads(DEV_V2.read_text())
    ids = [q["id"] for a in doc2["data"] for p in a["paragraphs"] for q in p["qas"]]
    preds2 = {k: ("" if i % 3 else "Normans") for i, k in enumerate(ids)}
    na = {k: (i % 7) / 7 for i, k in enumerate(ids)}
    (tmp_path / "p2.json").write_text(json.dumps(preds2))
    (tmp_path / "na.json").write_text(json.dumps(na))
    assert main(["score", str(DEV_V2), str(tmp_path / "p2.json"), "--na-prob-file", str(tmp_path / "na.json")]) == 0
    assert capsys.readouterr().out.strip() == json.dumps(squad_v2(doc2["data"], preds2, na), indent=2)
    # The official v2.0 script's short options, and its --out-file (one line of JSON, nothing printed).
    out = tmp_path / "eval.json"
    assert main(["score", str(DEV_V2), str(tmp_path / "p2.json"), "-n", str(tmp_path / "na.json"), "-t", "0.5",
                 "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert out.read_text() == json.dumps(squad_v2(doc2["data"], preds2, na, na_prob_thresh=0.5))
    assert json.loads(out.read_text())["exact"] != squad_v2(doc2["data"], preds2, na)["exact"]  # -t took effect


def test_score_reads_the_predictions_evaluate_metrics_take(tmp_path, capsys):
    """A JSON list of {"id", "prediction_text"} records (the tutorial's `formatted_predictions`, as
    `evaluate`'s squad metrics take them) scores as the same answers in the official {id: text}
    file, and squad_v2's "no_answer_probability" as the null-odds file."""
    from cli.main import main
    from tests.conftest import DEV_V2

    doc = json.loads(DEV_V2.read_text())
    ids = [q["id"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]
    preds = {k: ("" if i % 3 else "Normans") for i, k in enumerate(ids)}
    na = {k: (i % 7) / 7 for i, k in enumerate(ids)}
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"id": k, "prediction_text": v, "no_answer_probability": na[k]}
                                   for k, v in preds.items()]))
    assert main(["score", str(DEV_V2), str(records)]) == 0
    assert json.loads(capsys.readouterr().out) == squad_v2(doc["data"], preds, na)
    # Without the probabilities: the answers alone, as an {id: text} file without -n scores.
    records.write_text(json.dumps([{"id": k, "prediction_text": v} for k, v in preds.items()]))
    assert main(["score", str(DEV_V2), str(records)]) == 0
    assert json.loads(capsys.readouterr().out) == squad_v2(doc["data"], preds, None)
    records.write_text(json.dumps([{"id": ids[0], "prediction_text": ""}] * 2))
    assert main(["score", str(DEV_V2), str(records)]) == 2
    assert f"{records}: id {ids[0]!r} has more than one record" in capsys.readouterr().err


def test_score_reads_any_data_file_the_pipeline_reads(tmp_path, capsys):
    """A dev set kept as JSONL or CSV (`answer --questions` reads those, and its answers are the
    predictions `score` takes): the official scripts' numbers, as for the same questions in
    official JSON. It was "not valid JSON at line 2"."""
    import csv

    from cli.main import main
    from tests.conftest import DEV_V1, DEV_V2

    def questions(doc):
        return [(p["context"], q) for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]

    for official in (DEV_V1, DEV_V2):
        doc = json.loads(official.read_text())
        preds = {q["id"]: ("" if i % 4 == 0 else q["question"].split()[-1] if i % 4 == 1 else
                           (q["answers"] or [{"text": "x"}])[0]["text"]) for i, (_, q) in enumerate(questions(doc))}
        (tmp_path / "p.json").write_text(json.dumps(preds))
        assert main(["score", str(official), str(tmp_path / "p.json")]) == 0
        expected = capsys.readouterr().out
        assert ("HasAns_total" in expected) == (official == DEV_V2)
        with open(tmp_path / "dev.jsonl", "w") as f:
            for context, q in questions(doc):
                answers = {"text": [a["text"] for a in q["answers"]], "answer_start": [a["answer_start"] for a in q["answers"]]}
                f.write(json.dumps({"id": q["id"], "context": context, "question": q["question"], "answers": answers}) + "\n")
        assert main(["score", str(tmp_path / "dev.jsonl"), str(tmp_path / "p.json")]) == 0
        assert capsys.readouterr().out == expected

    # One answer per row, the file's own id column: the same as official JSON holding those answers.
    for _, q in questions(doc):
        q["answers"] = q["answers"][:1]
    (tmp_path / "one.json").write_text(json.dumps(doc))
    with open(tmp_path / "dev.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["qid", "context", "question", "answer_text", "answer_start"])
        for context, q in questions(doc):
            first = q["answers"][0] if q["answers"] else {"text": "", "answer_start": ""}
            rows.writerow([q["id"], context, q["question"], first["text"], first["answer_start"]])
    assert main(["score", str(tmp_path / "one.json"), str(tmp_path / "p.json")]) == 0
    expected = capsys.readouterr().out
    assert main(["score", str(tmp_path / "dev.csv"), str(tmp_path / "p.json"), "--column", "id=qid"]) == 0
    assert capsys.readouterr().out == expected
    assert main(["score", str(tmp_path / "dev.csv"), str(tmp_path / "p.json")]) == 2
    assert "--column id=<column> on the command line" in capsys.readouterr().err


def test_score_cli_names_the_bad_file(tmp_path, capsys):
    """A partial v2 file, missing null odds or a file of the wrong shape: one line naming the file (a
    partial v2 file was first a line per missing id, as the official script prints before it fails)."""
    from cli.main import main
    from tests.conftest import DEV_V2

    ids = [q["id"] for a in json.loads(DEV_V2.read_text())["data"] for p in a["paragraphs"] for q in p["qas"]]
    partial, full, na = tmp_path / "partial.json", tmp_path / "full.json", tmp_path / "na.json"
    partial.write_text(json.dumps({k: "" for k in ids[:-2]}))
    full.write_text(json.dumps({k: "" for k in ids}))
    na.write_text(json.dumps({k: 0.5 for k in ids[1:]}))
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([[k, ""] for k in ids]))  # pairs, not records
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": SECRET-VALUE}')
    cases = [
        (["score", str(DEV_V2), str(partial)], f"{partial}: no prediction for 2 of {len(ids)} question(s), e.g. {ids[-2]}"),
        (["score", str(DEV_V2), str(full), "--na-prob-file", str(na)], f"{na}: null odds missing for 1 question(s), e.g. {ids[0]}"),
        (["score", str(DEV_V2), str(na)], f"{na}: predictions must be a JSON object of question id -> answer text; "
                                          f"the value for {ids[1]!r} is a JSON number"),
        (["score", str(DEV_V2), str(listed)], f"{listed}: predictions must be a JSON object of question id -> answer "
                                              "text; it holds a JSON list"),
        (["score", str(DEV_V2), str(full), "-n", str(full)], f"{full}: null odds must be a JSON object of question id "
                                                             f"-> number; the value for {ids[0]!r} is a JSON string"),
        (["score", str(full), str(full)], f"{full}: not an official SQuAD file"),
        (["score", str(DEV_V2), str(full), "-n", str(tmp_path / "none.json")], f"{tmp_path / 'none.json'}: file not found"),
        (["score", str(DEV_V2), str(broken)], f"{broken}: not valid JSON at line 1, column 7: Expecting value"),
        (["score", str(DEV_V2), str(full), "--split", "validation"],
         f"score: --split is for other data files and folders; {DEV_V2} is official SQuAD JSON"),
        # It was a FileNotFoundError, exit 1; now it is named before the files are read.
        (["score", str(DEV_V2), str(tmp_path / "none.json"), "-o", str(full / "out.json")],
         f"{full / 'out.json'}: cannot write here (File exists)"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "SECRET" not in err, err[:500]


def test_score_refuses_a_file_of_no_readable_type_before_datasets_is_imported(tmp_path):
    """`score README.md preds.json` imported datasets (seconds) before it said the type was not one
    it reads, and an s3:// .txt object was asked of S3 first: both are said by name at once now."""
    import os
    import subprocess
    import sys

    from tests.conftest import DEV_V1, ROOT
    from tests.test_cli import CHECK_IMPORTS

    preds = tmp_path / "p.json"
    preds.write_text("{}")
    (tmp_path / "Makefile").write_text("all:\n")
    cases = {str(ROOT / "README.md"): "unsupported file type '.md'",
             "s3://bucket/notes.txt": "unsupported file type '.txt'",
             str(tmp_path / "Makefile"): "no file type in the name"}
    # Nothing listens there: were S3 asked, the error would be that it cannot be reached.
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s", "QA_PIPELINE_CACHE": str(tmp_path / "cache")}
    for data, message in cases.items():
        proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, "score", data, str(preds)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.stdout == "2\n", (data, proc.stdout, proc.stderr[-2000:])
        assert proc.stderr == f"error: {data}: {message} (use SQuAD .json, .jsonl, .csv or .parquet, each also as " \
                              ".gz, .bz2 or .xz)\n", proc.stderr
    # The check can fail: a file of a type it reads goes on to the loaders.
    doc = json.loads(DEV_V1.read_text())
    rows = tmp_path / "dev.jsonl"
    rows.write_text("".join(json.dumps({"id": q["id"], "context": p["context"], "question": q["question"],
                                        "answers": {"text": [a["text"] for a in q["answers"]],
                                                    "answer_start": [a["answer_start"] for a in q["answers"]]}}) + "\n"
                            for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]))
    preds.write_text(json.dumps({q["id"]: "" for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]}))
    proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, "score", str(rows), str(preds)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.splitlines()[-1].split() == ["0", "datasets"], (proc.stdout, proc.stderr[-2000:])


def test_score_reads_compressed_files_as_the_file_inside(tmp_path, capsys):
    """The official dev file as it is often kept (dev-v2.0.json.gz): the same numbers as the plain
    file; a corrupt or missing one is one message naming it."""
    import bz2
    import gzip

    from cli.main import main
    from tests.conftest import DEV_V2

    doc = json.loads(DEV_V2.read_text())
    ids = [q["id"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]
    preds = {k: ("" if i % 3 else "Normans") for i, k in enumerate(ids)}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    (tmp_path / "dev.json.gz").write_bytes(gzip.compress(DEV_V2.read_bytes()))
    (tmp_path / "p.json.bz2").write_bytes(bz2.compress(json.dumps(preds).encode()))
    assert main(["score", str(tmp_path / "dev.json.gz"), str(tmp_path / "p.json.bz2")]) == 0
    assert capsys.readouterr().out.strip() == json.dumps(squad_v2(doc["data"], preds), indent=2)

    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(DEV_V2.read_bytes())[:3000])
    inside = tmp_path / "inside.json.gz"
    inside.write_bytes(gzip.compress(b'{"a": SECRET-VALUE}'))
    for argv, message in [
            (["score", str(cut), str(tmp_path / "p.json")], f"{cut}: corrupt or truncated gz file (EOFError)"),
            (["score", str(DEV_V2), str(inside)], f"{inside}: not valid JSON at line 1, column 7"),
            (["score", str(tmp_path / "none.json.gz"), str(tmp_path / "p.json")],
             f"{tmp_path / 'none.json.gz'}: file not found")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "SECRET" not in err and "qa-unpack-" not in err, err
