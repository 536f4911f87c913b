import json
import logging
import re

import datasets
import pytest

from qa_lib.config import DataSource
from qa_lib.data import load_examples, load_questions
from qa_lib.errors import DataError
from qa_lib.validate import validate_examples
from tests.conftest import DEV_V1, DEV_V2, TRAIN_V1


def test_squad_json_counts(train_examples, dev_v1_examples, dev_v2_examples):
    assert len(train_examples) == 3807
    assert len(dev_v1_examples) == 810
    assert len(dev_v2_examples) == 1124
    assert sum(1 for a in dev_v2_examples["answers"] if not a["text"]) == 541
    ex = train_examples[0]
    assert ex["id"] == "5733be284776f41900661182"
    assert ex["answers"] == {"text": ["Saint Bernadette Soubirous"], "answer_start": [515]}
    assert ex["title"] == "University_of_Notre_Dame"
    assert all(len(a["text"]) >= 1 for a in dev_v1_examples["answers"])


def _flat_rows(examples, n=50):
    rows = []
    for ex in examples.select(range(n)):
        rows.append({"qid": ex["id"], "passage": ex["context"], "q": ex["question"],
                     "ans": ex["answers"]["text"][0], "start": ex["answers"]["answer_start"][0]})
    return rows


MAPPING = {"id": "qid", "context": "passage", "question": "q", "answer_text": "ans", "answer_start": "start"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_flat_formats_with_column_mapping(tmp_path, train_examples, fmt):
    import pandas as pd

    df = pd.DataFrame(_flat_rows(train_examples))
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path)
    ds = load_examples(DataSource(path=str(path), columns=MAPPING))
    assert ds.column_names == ["id", "title", "context", "question", "answers"]
    assert ds["id"] == train_examples["id"][:50]
    assert ds["answers"] == train_examples["answers"][:50]


def test_a_csv_of_numeric_answers_with_unanswerable_rows_keeps_the_answers_text(tmp_path, dev_v2_examples):
    """pandas' type inference read a column of answers that are all numbers (years) as floats once a
    v2 row left its cell empty: "1990" came back as "1990.0", not in its context, and the file was
    refused. Written as pandas writes it: with its index column, and answer_start as 18.0."""
    import pandas as pd

    numeric = [ex for ex in dev_v2_examples if ex["answers"]["text"] and ex["answers"]["text"][0].isdigit()][:15]
    empty = [ex for ex in dev_v2_examples if not ex["answers"]["text"]][:15]
    assert len(numeric) == 15 and len(empty) == 15
    rows = [{"qid": ex["id"], "passage": ex["context"], "q": ex["question"],
             "ans": ex["answers"]["text"][0] if ex["answers"]["text"] else None,
             "start": ex["answers"]["answer_start"][0] if ex["answers"]["text"] else None} for ex in numeric + empty]
    path = tmp_path / "v2.csv"
    pd.DataFrame(rows).to_csv(path)  # index=True: an unnamed first column
    assert re.search(r",\d+\.0$", path.read_text(), re.M)  # the starts written as floats
    ds = load_examples(DataSource(path=str(path), columns=MAPPING))
    assert ds["answers"] == [{k: v[:1] for k, v in ex["answers"].items()} for ex in numeric + empty]  # the first

    from qa_lib.validate import validate_examples

    validate_examples(ds, True, str(path))  # every answer where its context has it

    # A start that is not a whole number is refused, not truncated to one.
    rows[0]["start"] = rows[0]["start"] + 0.5
    pd.DataFrame(rows).to_csv(path)
    with pytest.raises(DataError, match=f"{numeric[0]['id']}: answer_start is not an integer"):
        load_examples(DataSource(path=str(path), columns=MAPPING))


def test_jsonl_with_squad_answers_column(tmp_path, dev_v1_examples):
    path = tmp_path / "dev.jsonl"
    with path.open("w") as f:
        for ex in dev_v1_examples.select(range(20)):
            f.write(json.dumps(ex) + "\n")
    ds = load_examples(str(path))
    assert ds["answers"] == dev_v1_examples["answers"][:20]


def test_local_dataset_folders(tmp_path, dev_v2_examples):
    # A folder written by save_to_disk, and a data folder loaded through datasets.load_dataset:
    # the same call a Hub name ("squad_v2") takes, which cannot download here.
    saved = tmp_path / "saved"
    datasets.DatasetDict({"validation": dev_v2_examples}).save_to_disk(str(saved))
    assert load_examples(DataSource(path=str(saved), split="validation"))["id"] == dev_v2_examples["id"]
    folder = tmp_path / "hub_like"
    folder.mkdir()
    dev_v2_examples.to_parquet(str(folder / "validation.parquet"))
    loaded = load_examples(DataSource(path=str(folder), split="validation"))
    assert loaded["answers"] == dev_v2_examples["answers"]
    with pytest.raises(DataError, match="validation"):
        load_examples(DataSource(path=str(folder), split="train"))


def test_a_split_given_for_a_single_file_is_refused(tmp_path):
    """A file is one split: `split: validation` on it was ignored, so the run used the whole file
    while its config said otherwise. Refused by preflight's cheap check and by the loader."""
    import gzip
    import shutil

    from qa_lib.sources import check_source_exists

    packed = tmp_path / "dev.json.gz"
    with DEV_V1.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    for path in (DEV_V1, packed):
        source = DataSource(path=str(path), split="validation")
        for check in (check_source_exists, load_examples):
            with pytest.raises(DataError, match=r"split 'validation' given for a single file, which has no splits"):
                check(source)
        with pytest.raises(DataError, match=r"subset 'en' given for a single file, which has no subsets"):
            check_source_exists(DataSource(path=str(path), subset="en"))
        check_source_exists(DataSource(path=str(path)))


def test_a_file_of_a_type_no_loader_reads_is_refused_by_preflight_s_cheap_check(tmp_path):
    """It was found only by the loader, once the run had started (and, on the CLI without a server,
    after Prefect's temporary server had started and logged around the error)."""
    from qa_lib.sources import check_source_exists

    for name, problem in (("notes.txt", "unsupported file type '.txt'"), ("README", "no file type in the name"),
                          ("notes.txt.gz", "unsupported file type '.txt.gz'"),
                          ("dev.json.gz.gz", "unsupported file type '.gz.gz'")):
        (tmp_path / name).write_bytes(b"not data")
        for check in (check_source_exists, load_examples):
            with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / name))}: {re.escape(problem)} \(use SQuAD "
                                                r"\.json, "):
                check(DataSource(path=str(tmp_path / name)))
    # An object's name says as much: refused before S3 is asked (no endpoint here to ask).
    with pytest.raises(DataError, match=r"^s3://bucket/notes\.txt: unsupported file type '\.txt'"):
        check_source_exists(DataSource(path="s3://bucket/notes.txt"))
    for good in ("dev.JSON", "train.jsonl.xz", "q.csv", "q.parquet.bz2"):
        (tmp_path / good).write_bytes(b"")
        check_source_exists(DataSource(path=str(tmp_path / good)))


def test_limit(dev_v1_examples):
    assert len(load_examples(DataSource(path=str(DEV_V1), limit=7))) == 7


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"id": "a", "context": "c"}) + "\n")
    with pytest.raises(DataError) as info:
        load_examples(str(path))
    assert "question" in str(info.value) and "answers" in str(info.value) and str(path) in str(info.value)
    assert "columns.question=<column> in a config, --column question=<column>" in str(info.value)  # and how to map the file's own names


@pytest.mark.parametrize("row, problem", [
    ({"answers": "SECRET-VALUE {"}, "r2: answers is not valid JSON"),
    ({"answers": {"text": ["c"], "answer_start": ["SECRET-VALUE"]}}, "r2: answers must be {text: [...], answer_start"),
    ({"answer_text": "c", "answer_start": "SECRET-VALUE"}, "r2: answer_start is not an integer"),
])
def test_unreadable_answers_name_the_row_not_the_value(tmp_path, row, problem):
    base = {"context": "SECRET-VALUE c", "question": "q"}
    good = {k: v for k, v in {"answers": {"text": ["c"], "answer_start": [13]}, "answer_text": "c",
                              "answer_start": 13}.items() if k in row}
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, **base, **r}) for i, r in (("r1", good), ("r2", row))) + "\n")
    with pytest.raises(DataError) as info:
        load_examples(str(path))
    assert problem in str(info.value) and str(path) in str(info.value)
    assert "SECRET" not in str(info.value)


def test_reader_errors_do_not_quote_the_data(tmp_path):
    records = [{"id": "a", "context": "c", "question": "q", "answer_text": "c", "answer_start": 0},
               {"id": "b", "context": "c", "question": "q", "answer_text": "c", "answer_start": "SECRET-VALUE"}]
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"version": "1", "data": records}))
    with pytest.raises(DataError) as info:
        load_examples(str(mixed))
    assert "cannot read the records under 'data'" in str(info.value) and "SECRET" not in str(info.value)
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text('id,context,question,answer_text,answer_start\na,c,q,c,0\nb,c,q,c,"SECRET-VALUE\n')
    with pytest.raises(DataError, match=r"unclosed.csv: line 3: malformed CSV \(unexpected end of data\)"):
        load_examples(str(unclosed))


def test_a_csv_separated_by_semicolons_or_tabs_is_named_as_such(tmp_path):
    for sep, name in ((";", "semicolons"), ("\t", "tabs")):
        path = tmp_path / f"export-{name}.csv"
        path.write_text(sep.join(["id", "context", "question", "answer_text", "answer_start"]) + "\n"
                        + sep.join(["a", "The sky, blue.", "What?", "blue", "9"]) + "\n")
        with pytest.raises(DataError, match=rf"export-{name}.csv: line 2: 2 fields, but the header has 1 "
                                            rf"\(it is separated by {name}; CSV files are read comma-separated\)"):
            load_examples(str(path))


def test_mapping_to_absent_column(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"id": "a", "context": "c", "question": "q", "answers": []}) + "\n")
    with pytest.raises(DataError, match="passage"):
        load_examples(DataSource(path=str(path), columns={"context": "passage"}))


def test_truncated_json(tmp_path):
    path = tmp_path / "trunc.json"
    path.write_bytes(TRAIN_V1.read_bytes()[:5000])
    with pytest.raises(DataError, match="corrupt or truncated JSON"):
        load_examples(str(path))


def test_corrupt_parquet(tmp_path, caplog):
    """One error, the DataError: datasets' reader logged one of its own first ("Failed to read schema
    from ..."), a second line on the CLI where one is promised."""
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read .parquet"):
        load_examples(str(path))
    assert not [r for r in caplog.records if r.name.startswith("datasets")], caplog.text
    assert logging.getLogger("datasets").level != logging.CRITICAL  # as it was, after the read


def test_missing_file_and_unknown_hub_name(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_examples(str(tmp_path / "none.json"))
    with pytest.raises(DataError, match="cannot load Hub dataset"):
        load_examples("no-such-dataset-anywhere-xyz")


def test_a_hub_dataset_without_the_hub_is_one_error_at_once(tmp_path, monkeypatch):
    """With the Hub unreachable and offline mode unset, datasets retried each file for about 25 s
    (a warning per try) before "Couldn't reach 'squad'"; preflight now asks once and names it."""
    import socket

    from huggingface_hub import constants

    from qa_lib import hub_reach
    from qa_lib.sources import check_source_exists

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # `make test` sets both offline flags
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hub_reach, "_checked", {})
    expected = (rf"^squad_v2: not a local file or folder, and the Hub at {endpoint} cannot be reached \(.*\): "
                r"give a local path \(or set HF_DATASETS_OFFLINE=1 to read the Hugging Face cache's copy\)$")
    for check in (lambda: check_source_exists(DataSource(path="squad_v2")), lambda: load_examples("squad_v2")):
        with pytest.raises(DataError, match=expected):
            check()
    with pytest.raises(DataError, match="file or folder not found"):  # a path is still a missing path
        check_source_exists(DataSource(path=str(tmp_path / "dev.json")))


def test_a_home_relative_path_is_read_and_fingerprinted_from_home(tmp_path, monkeypatch):
    from qa_lib.plan import source_fingerprint

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dev.json").write_bytes(DEV_V1.read_bytes())
    source = DataSource(path="~/data/dev.json", limit=5)
    assert load_examples(source)["id"] == load_examples(DataSource(path=str(DEV_V1), limit=5))["id"]
    # Keyed by the file's bytes like any local file, not as a Hub name.
    assert source_fingerprint(source) == source_fingerprint(DataSource(path=str(tmp_path / "data/dev.json"),
                                                                       limit=5))


def test_a_missing_relative_path_names_the_folder_it_was_read_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        load_examples("data/squad/dev.json")
    assert str(info.value) == f"data/squad/dev.json: file or folder not found (relative to {tmp_path})"
    with pytest.raises(DataError) as info:
        load_examples(str(tmp_path / "none.json"))
    assert str(info.value) == f"{tmp_path / 'none.json'}: file or folder not found"


def test_squad_json_with_bad_answer_record(tmp_path):
    doc = json.loads(DEV_V2.read_text())
    del doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"]
    qid = doc["data"][0]["paragraphs"][0]["qas"][0]["id"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=qid):
        load_examples(str(path))


def test_squad_json_answer_texts_that_are_not_text(tmp_path):
    """A null answer text was read as the string "None" and reported as a 4-character answer the
    context lacks; it is a malformed record. A whole number written without quotes is its digits."""
    doc = json.loads(DEV_V1.read_text())
    qas = doc["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["text"] = None
    path = tmp_path / "null.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=f"{qas[0]['id']}: each answer needs a 'text' string and an integer"):
        load_examples(str(path))
    para = doc["data"][0]["paragraphs"][0]
    para["context"] += " It drew 1990 fans."
    qas[0]["answers"] = [{"text": 1990, "answer_start": para["context"].index("1990")}]
    path.write_text(json.dumps(doc))
    assert load_examples(str(path))[0]["answers"]["text"] == ["1990"]


def test_a_question_flagged_impossible_that_has_answers_is_read_as_the_official_script_scores_it(tmp_path, caplog):
    """The official v2.0 script ignores `is_impossible` and decides by `answers`; the reader dropped
    the answers of a flagged question, so the pipeline's metrics and `score` on the same file differed."""
    from qa_lib.metrics import score, squad_v2

    doc = json.loads(DEV_V2.read_text())
    flagged = [qa for p in doc["data"][0]["paragraphs"] for qa in p["qas"] if qa.get("is_impossible")][:3]
    for qa in flagged:  # a malformed export: the plausible answers written as the answers
        qa["answers"] = qa["plausible_answers"]
    path = tmp_path / "flagged.json"
    path.write_text(json.dumps(doc))
    examples = load_examples(str(path))
    by_id = dict(zip(examples["id"], examples["answers"]))
    assert [by_id[qa["id"]]["text"] for qa in flagged] == [[a["text"] for a in qa["answers"]] for qa in flagged]
    assert f"3 question(s) marked is_impossible have answers (the first: {flagged[0]['id']})" in caplog.text
    predictions = {eid: (answers["text"][0] if i % 2 and answers["text"] else "") for i, (eid, answers)
                   in enumerate(by_id.items())}
    assert score(examples, predictions, version_2_with_negative=True) == squad_v2(doc["data"], predictions)


def test_flat_records_under_data(tmp_path, dev_v1_examples):
    """`{"data": [records]}`: flat records in one JSON document, not SQuAD's nested articles."""
    path = tmp_path / "records.json"
    rows = [dict(ex) for ex in dev_v1_examples.select(range(15))]
    path.write_text(json.dumps({"version": "1.1", "data": rows}))
    ds = load_examples(str(path))
    assert ds["id"] == dev_v1_examples["id"][:15]
    assert ds["answers"] == dev_v1_examples["answers"][:15]


def test_a_json_list_of_records(tmp_path, dev_v1_examples):
    """`json.dump(rows)` or pandas' `to_json(orient="records")`: one JSON array of records, read as
    JSON lines holding them would be (it was "line 1: a JSON list, not an object"). A 'data' that is
    not a list was called "official SQuAD JSON ... read from a file, not a folder" of a file."""
    rows = [dict(ex) for ex in dev_v1_examples.select(range(15))]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    ds = load_examples(str(path))
    assert ds["id"] == dev_v1_examples["id"][:15] and ds["answers"] == dev_v1_examples["answers"][:15]
    cases = [("[]", "empty file: an empty list of records"),
             (json.dumps([rows[0], "SECRET-VALUE"]), "record 1: a JSON string, not an object"),
             (json.dumps({"version": "1.1", "data": {"SECRET-VALUE": rows}}),
              "'data' holds a JSON object; official SQuAD JSON has a list of articles there"),
             (json.dumps({"data": None}), "'data' holds a JSON null")]
    for text, problem in cases:
        path.write_text(text)
        with pytest.raises(DataError) as info:
            load_examples(str(path))
        assert str(info.value).startswith(f"{path}: {problem}") and "SECRET" not in str(info.value), str(info.value)


def test_ids_questions_and_offsets_of_the_wrong_type_are_malformed_not_converted(tmp_path):
    """str() made a null id the id "None" (and two of them a 'duplicate id'), a question written as a
    number passed as text, and int(True) made a true flag the offset 1."""
    doc = json.loads(DEV_V1.read_text())
    qas = doc["data"][0]["paragraphs"][0]["qas"]
    qas[0]["id"], qas[1]["question"] = None, 42
    qas[2]["answers"][0]["answer_start"] = True
    path = tmp_path / "types.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as info:
        load_examples(str(path))
    assert info.value.problems == [
        "data[0].paragraphs[0].qas[0]: 'id' must be a string or an integer and 'question' a string",
        "data[0].paragraphs[0].qas[1]: 'id' must be a string or an integer and 'question' a string",
        f"{qas[2]['id']}: each answer needs a 'text' string and an integer 'answer_start'"]

    row = {"context": "Bob went home.", "question": "Who went home?", "answers": {"text": ["Bob"], "answer_start": [0]}}
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps({"id": i, **row}) + "\n" for i in (None, "b", True)))
    with pytest.raises(DataError) as info:
        validate_examples(load_examples(str(flat)), False, str(flat))
    assert info.value.problems == [f"example {n} (from 0) has no id (an id is a string or an integer)" for n in (0, 2)]


def test_a_flat_file_s_context_or_question_that_is_not_text_is_malformed_not_converted(tmp_path):
    """As official JSON's: a question column of numbers (a mapping that named the wrong column) was
    cast to text and trained on "7"; JSON lines mixing text and numbers name the first such row."""
    import pandas as pd

    row = {"id": "a", "context": "Bob went home.", "question": "Who went home?",
           "answers": {"text": ["Bob"], "answer_start": [0]}}
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text(json.dumps({**row, "question": 7}) + "\n")
    table = tmp_path / "table.parquet"
    pd.DataFrame([{"id": "a", "context": 12, "question": "Who?", "answer_text": "1", "answer_start": 0}]).to_parquet(table)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in (row, {**row, "id": "b", "context": ["Bob", "went"]})))
    cases = {numbers: "column 'question' holds int64 values, not text (name the source's own text column: "
                      "columns.question=<column>",
             table: "column 'context' holds int64 values, not text",
             mixed: "b: context is a JSON list, not text"}
    for path, problem in cases.items():
        for load in (load_examples, load_questions):
            with pytest.raises(DataError) as info:
                load(str(path))
            assert info.value.problems[0].startswith(problem), (path, info.value.problems)
    # The check can pass: numbers as text, and text columns, are read.
    numbers.write_text(json.dumps({**row, "question": "7"}) + "\n")
    assert load_examples(str(numbers))["question"] == ["7"]


def test_squad_json_structure_problems_are_located(tmp_path):
    """A malformed article, paragraph or question is reported where it is, never silently skipped."""
    doc = json.loads(DEV_V1.read_text())
    paragraphs = doc["data"][0]["paragraphs"]
    del paragraphs[1]["context"]
    paragraphs[2]["qas"][0] = "not a question"
    doc["data"].append({"title": "no paragraphs"})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as info:
        load_examples(str(path))
    msg = str(info.value)
    assert "data[0].paragraphs[1]: needs a 'context' string and a 'qas' list" in msg
    assert "data[0].paragraphs[2].qas[0]: not an object" in msg
    assert "data[1]: an article needs a 'paragraphs' list" in msg


def test_loading_a_saved_dataset_folder_writes_nothing_into_it(tmp_path):
    """datasets wrote its map and cast cache files beside a save_to_disk folder's own files: into the
    user's data folder (read-only mounts fail), and the folder's fingerprint, hence every stage key,
    changed after the first run."""
    import datasets

    from qa_lib.data import load_examples
    from qa_lib.plan import source_fingerprint

    doc = json.loads(TRAIN_V1.read_text())
    flat = {"id": [], "context": [], "question": [], "answer_text": [], "answer_start": []}
    for para in doc["data"][0]["paragraphs"]:
        for qa in para["qas"]:
            flat["id"].append(qa["id"]), flat["context"].append(para["context"]), flat["question"].append(qa["question"])
            flat["answer_text"].append(qa["answers"][0]["text"]), flat["answer_start"].append(qa["answers"][0]["answer_start"])
    folder = tmp_path / "flat"
    datasets.Dataset.from_dict(flat).save_to_disk(str(folder))
    before = sorted(p.name for p in folder.iterdir())
    source = DataSource(path=str(folder))
    key = source_fingerprint(source)
    examples = load_examples(source)
    assert len(examples) == len(flat["id"]) and examples[0]["answers"]["text"] == [flat["answer_text"][0]]
    assert sorted(p.name for p in folder.iterdir()) == before
    assert source_fingerprint(source) == key


def test_flat_files_and_data_folders_leave_nothing_in_the_hf_cache(tmp_path, train_examples, monkeypatch):
    """load_dataset copied every flat file into HF_HOME: a long-lived worker's disk filled with old
    data, and a read-only HF_HOME (usual in hardened containers) failed the run with "cannot read
    .jsonl file: Read-only file system", blaming the data file."""
    import pandas as pd

    hf_cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_cache)
    df = pd.DataFrame(_flat_rows(train_examples))
    df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    df.to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "folder").mkdir()
    df.to_parquet(tmp_path / "folder" / "train.parquet")
    loaded = [load_examples(DataSource(path=str(tmp_path / name), columns=MAPPING))
              for name in ("d.jsonl", "d.csv", "folder")]
    assert all(ds["answers"] == train_examples["answers"][:50] for ds in loaded)
    assert not hf_cache.exists() or not any(hf_cache.rglob("*")), sorted(hf_cache.rglob("*"))[:5]
    # And the loaded datasets need no files: nothing they read from is left to be deleted under them.
    assert all(ds.cache_files == [] for ds in loaded)


def test_a_folder_of_official_squad_files_says_to_name_the_file(tmp_path):
    import shutil

    shutil.copy(DEV_V1, tmp_path / "dev-v1.1.json")
    with pytest.raises(DataError) as info:
        load_examples(DataSource(path=str(tmp_path), split="validation"))
    assert str(info.value) == (f"{tmp_path}: holds official SQuAD JSON (a 'data' list of articles), which is read "
                               "from a file, not a folder: point the path at the .json file itself")
    assert len(load_examples(str(tmp_path / "dev-v1.1.json"))) == 810


def test_compressed_files_read_as_the_file_inside(tmp_path, dev_v2_examples):
    """`.gz`, `.bz2` and `.xz` of official SQuAD JSON, JSONL and CSV give what the plain file gives;
    a damaged archive, a damaged file inside one and an unknown inner type are each one problem
    naming the compressed file (never the temporary file it was unpacked to)."""
    import bz2
    import gzip
    import lzma

    import pandas as pd

    rows = dev_v2_examples.select(range(40))  # answerable and unanswerable questions
    flat = pd.DataFrame({"id": rows["id"], "context": rows["context"], "question": rows["question"],
                         "answer_text": [a["text"][0] if a["text"] else "" for a in rows["answers"]],
                         "answer_start": [a["answer_start"][0] if a["text"] else None for a in rows["answers"]]})
    plain = {"squad.json": DEV_V2.read_bytes(), "flat.jsonl": flat.to_json(orient="records", lines=True).encode(),
             "flat.csv": flat.to_csv(index=False).encode()}
    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
    for name, data in plain.items():
        (tmp_path / name).write_bytes(data)
        expected = load_examples(str(tmp_path / name)).to_list()
        for suffix, pack in compress.items():
            packed = tmp_path / f"{name}{suffix}"
            packed.write_bytes(pack(data))
            assert load_examples(str(packed)).to_list() == expected, packed.name
    assert len(load_examples(str(tmp_path / "squad.json.gz"))) == len(dev_v2_examples)

    scrambled = bytearray(gzip.compress(plain["squad.json"]))
    scrambled[500:520] = bytes(20)
    broken = {"cut.json.gz": gzip.compress(plain["squad.json"])[:2000], "scrambled.json.gz": bytes(scrambled),
              "cut-inside.json.gz": gzip.compress(plain["squad.json"][:2000]),
              "latin1.jsonl.xz": lzma.compress("{\"id\": \"caf\xe9\"}\n".encode("latin-1")),
              "notes.txt.bz2": bz2.compress(b"some notes")}
    expected_problem = {"cut.json.gz": "corrupt or truncated gz file (EOFError)",
                        "scrambled.json.gz": "corrupt or truncated gz file (zlib.error)",
                        "cut-inside.json.gz": "corrupt or truncated JSON at line 1",
                        "latin1.jsonl.xz": "not UTF-8: undecodable byte at offset 11",
                        "notes.txt.bz2": "unsupported file type '.txt.bz2'"}
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError) as err:
            load_examples(str(tmp_path / name))
        assert err.value.source == str(tmp_path / name) and len(err.value.problems) == 1, name
        assert err.value.problems[0].startswith(expected_problem[name]), err.value.problems
        assert "qa-unpack-" not in str(err.value)
    with pytest.raises(DataError, match="file or folder not found"):
        load_examples(str(tmp_path / "absent.jsonl.gz"))


def test_loading_and_storing_examples_draw_no_bars_of_their_own(tmp_path, capfd, tokenizer):
    """On a terminal, a run's bars are the work worth watching (features, training, prediction): the
    cast of a loaded file and the store's copy of each stage were three more bars per stage, and a
    flat file's read was "Generating train split", for an eval file too."""
    from qa_lib.features import build_eval_features
    from qa_lib.data import save_dataset

    datasets.enable_progress_bars()
    try:
        examples = load_examples(str(DEV_V1), default_split="validation")
        save_dataset(examples, tmp_path / "examples")
        (tmp_path / "dev.jsonl").write_text("".join(json.dumps(row) + "\n" for row in examples.to_list()))
        assert load_examples(str(tmp_path / "dev.jsonl"))["id"] == examples["id"]
        build_eval_features(examples.select(range(30)), tokenizer, 128, 48)
        err = capfd.readouterr().err
    finally:
        datasets.disable_progress_bars()
    assert "eval features" in err  # bars were on
    assert "Casting" not in err and "Saving the dataset" not in err and "Generating" not in err, err
    assert datasets.load_from_disk(str(tmp_path / "examples"))["id"] == examples["id"]
