import json

import pytest

from qa_lib.data import load_examples
from qa_lib.errors import DataError, ModelError
from qa_lib.validate import check_model_source, find_problems, validate_examples
from tests.conftest import DEV_V2, TRAIN_V1


def test_real_samples_are_clean(train_examples, dev_v1_examples, dev_v2_examples):
    assert find_problems(train_examples, False) == []
    assert find_problems(dev_v1_examples, False) == []
    assert find_problems(dev_v2_examples, True) == []


def _mutated(tmp_path, mutate, src=TRAIN_V1):
    doc = json.loads(src.read_text())
    qas = doc["data"][0]["paragraphs"][0]["qas"]
    mutate(doc, qas)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    return load_examples(str(path)), qas


def test_each_problem_names_the_example(tmp_path):
    def mutate(doc, qas):
        qas[0]["answers"][0]["answer_start"] += 3
        qas[1]["id"] = qas[2]["id"]
        qas[3]["question"] = "   "
        doc["data"][0]["paragraphs"][1]["context"] = ""
    ds, qas = _mutated(tmp_path, mutate)
    with pytest.raises(DataError) as info:
        validate_examples(ds, False, "m.json")
    msg = str(info.value)
    assert f"{qas[0]['id']}: answer 'Saint Bernadette Soubirous' not found at answer_start 518" in msg
    assert f"{qas[2]['id']}: duplicate id" in msg
    assert f"{qas[3]['id']}: empty question" in msg
    assert "empty context" in msg
    assert msg.startswith("m.json: ")


def test_unanswerable_rows_in_v1_mode(dev_v2_examples):
    problems = find_problems(dev_v2_examples, False)
    assert len(problems) == 541
    assert all("version_2_with_negative is false" in p for p in problems)


def test_no_examples():
    import datasets

    from qa_lib.data import FEATURES

    with pytest.raises(DataError, match="no examples"):
        validate_examples(datasets.Dataset.from_dict({k: [] for k in FEATURES}, features=FEATURES), False, "x")


def test_model_folder_missing(tmp_path):
    from qa_lib.answer import QuestionAnswerer

    with pytest.raises(ModelError, match="model folder not found"):
        check_model_source(str(tmp_path / "no-model"))
    # Not a Hub id either (those are name or namespace/name): the folder is named, not the Hub's id rules.
    for missing in (str(tmp_path / "no-model"), "runs/never-trained/model"):
        with pytest.raises(ModelError, match=f"model folder not found: {missing}$"):
            QuestionAnswerer(missing)


def test_model_without_tokenizer_vocabulary(tmp_path, tiny_model):
    import shutil

    folder = tmp_path / "slow"
    shutil.copytree(tiny_model, folder)
    (folder / "tokenizer.json").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "BertTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    (folder / "vocab.txt").unlink(missing_ok=True)
    with pytest.raises(ModelError, match="vocabulary files"):
        check_model_source(str(folder))


def test_unknown_hub_model():
    with pytest.raises(ModelError, match="no-such-org/no-such-model"):
        check_model_source("no-such-org/no-such-model")


def test_output_dir_that_cannot_be_written(tmp_path):
    from qa_lib.errors import ConfigError
    from qa_lib.validate import check_output_dir

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=f"output_dir: cannot write to {blocker}/run"):
        check_output_dir(str(blocker / "run"))
    check_output_dir(str(tmp_path / "new" / "run"))
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())
