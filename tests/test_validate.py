import json

import pytest

from qa_lib.data import load_examples
from qa_lib.errors import DataError, ModelError
from qa_lib.validate import check_model_source, find_problems, validate_examples
from tests.conftest import DEV_V1, TRAIN_V1


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
    assert (f"{qas[0]['id']}: answer 1 (26 characters) not found at answer_start 518; the context has it at 515"
            in msg)
    assert "Saint Bernadette" not in msg  # the data's text is not quoted
    assert f"{qas[2]['id']}: duplicate id" in msg
    assert f"{qas[3]['id']}: empty question" in msg
    assert "empty context" in msg
    assert msg.startswith("m.json: ")


def test_an_id_is_named_on_one_clean_line_however_it_is_written(tmp_path):
    """An id is the data's own text: one holding a newline or a terminal's escape codes cut the one error
    line short or rewrote it, and a 10,000-character one filled the screen. Each is named escaped and cut."""
    long_id = "q" * 10_000

    def mutate(doc, qas):
        qas[0]["id"] = qas[1]["id"] = "a\nTraceback \x1b[2Jb"
        qas[2]["id"] = qas[3]["id"] = long_id
        qas[4]["answers"][0]["answer_start"] += 1
        qas[4]["id"] = "\u76ee\u6807-7"  # printable text of any script is named as it is
    ds, _ = _mutated(tmp_path, mutate)
    with pytest.raises(DataError) as info:
        validate_examples(ds, False, "m.json")
    problems = str(info.value).splitlines()[1:]
    assert problems[0] == "  a\\nTraceback \\x1b[2Jb: duplicate id"
    assert problems[1] == f"  {'q' * 48}... (10,000 characters): duplicate id"
    assert problems[2].startswith("  \u76ee\u6807-7: answer 1 (")
    assert "\x1b" not in str(info.value) and long_id not in str(info.value)


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


def test_a_file_given_for_the_model_folder_is_named_as_one(tiny_model):
    from qa_lib.answer import QuestionAnswerer

    # Before, preflight called it "not found" and `answer` built a 33-token tokenizer from it.
    file = str(tiny_model / "config.json")
    expected = f"{file}: a file, not a model folder (give the folder that holds config.json)"
    for load in (check_model_source, QuestionAnswerer):
        with pytest.raises(ModelError) as info:
            load(file)
        assert str(info.value) == expected


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


def test_unreadable_weights_are_refused_before_any_work(tmp_path, tiny_model):
    """An interrupted copy or download: named by file in preflight, not found after the features."""
    import shutil
    import zipfile

    import torch
    from safetensors.torch import load_file

    def copy(name):
        folder = tmp_path / name
        shutil.copytree(tiny_model, folder)
        return folder

    truncated = copy("truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(ModelError, match=f"{truncated / 'model.safetensors'}: cannot read these weights .*truncated or corrupt"):
        check_model_source(str(truncated))

    empty = copy("no-weights")
    (empty / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=f"{empty}: no weights in the folder"):
        check_model_source(str(empty))

    state = load_file(tiny_model / "model.safetensors")
    torch.save(state, empty / "pytorch_model.bin")
    assert zipfile.is_zipfile(empty / "pytorch_model.bin")
    check_model_source(str(empty))  # a whole .bin passes
    data = (empty / "pytorch_model.bin").read_bytes()
    (empty / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="pytorch_model.bin: cannot read these weights"):
        check_model_source(str(empty))

    sharded = copy("sharded")
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="model.safetensors.index.json: 1 of its 2 shards are missing, the first: "
                                         "model-00002-of-00002.safetensors"):
        check_model_source(str(sharded))


def test_answer_refuses_a_tokenizer_without_its_vocabulary(tmp_path, tiny_model):
    """`answer` loads no preflight: the check lives in the loader, so it answered with 5 tokens before."""
    import shutil

    from qa_lib.answer import QuestionAnswerer

    folder = tmp_path / "no-vocab"
    shutil.copytree(tiny_model, folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="the tokenizer has only 5 tokens; its vocabulary files are missing"):
        QuestionAnswerer(str(folder))


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
    # A check leaves nothing behind: the folders it made to test writing are gone again...
    check_output_dir(str(tmp_path / "new" / "run"))
    assert not (tmp_path / "new").exists()
    # ...and a folder that was there, with what it holds, stays as it was.
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    check_output_dir(str(tmp_path / "kept"))
    check_output_dir(str(tmp_path / "kept" / "deeper" / "run"))
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]


def test_architecture_without_a_qa_head_is_refused_by_name(tmp_path, tiny_model):
    import shutil

    from transformers import ViTConfig, ViTModel

    folder = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, folder / name)
    with pytest.raises(ModelError, match=f"{folder}: a 'vit' model has no question-answering head"):
        check_model_source(str(folder))


@pytest.mark.parametrize("family, expected", [
    ("roberta-bpe", "RobertaTokenizer expects tokenizer.json, or vocab.json \\+ merges.txt"),
    ("xlnet-left", "XLNetTokenizer expects tokenizer.json, or spiece.model"),
])
def test_tokenizer_files_missing_names_what_the_class_needs(tmp_path, family, expected):
    """The message names this tokenizer class's files, not BERT's."""
    from tests.conftest import SQUAD
    from tests.families import build_family

    folder = build_family(family, tmp_path / family, SQUAD)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=f"vocabulary files are missing \\({expected}\\)"):
        check_model_source(str(folder))


def test_model_is_checked_before_any_data_is_read(prefect_server, tmp_path, tiny_model, capsys):
    """Preflight refuses the model before any data is loaded (the files exist: a missing one is named
    first, as its check costs nothing and the model's loads the model)."""
    import shutil

    import yaml
    from transformers import ViTConfig, ViTModel

    from cli.main import main

    folder = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    shutil.copy(tiny_model / "tokenizer.json", folder / "tokenizer.json")
    config = tmp_path / "vit.yaml"
    config.write_text(yaml.safe_dump({"model": str(folder), "output_dir": str(tmp_path / "out"),
                                      "train_data": {"path": str(TRAIN_V1)}, "eval_data": {"path": str(DEV_V1)}}))
    assert main(["train", str(config), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert "a 'vit' model has no question-answering head" in err
    assert not list((tmp_path / "store").glob("data/*")), "data was loaded before the model was checked"


def test_weights_that_miss_the_encoder_are_refused_and_a_few_missing_are_warned(tiny_model, tmp_path, caplog):
    """transformers fills weights it does not find with random values and only logs it."""
    import json
    import logging
    import shutil

    from safetensors.torch import load_file, save_file

    from qa_lib.answer import QuestionAnswerer
    from qa_lib.modeling import load_qa_model

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg.update(model_type="electra", architectures=["ElectraForQuestionAnswering"], embedding_size=cfg["hidden_size"])
    (other / "config.json").write_text(json.dumps(cfg))
    message = (rf"^{other}: 37 of the 37 electra encoder weights are not in its weight files \(the first: "
               r"electra\.embeddings\.LayerNorm\.bias\): they do not match config\.json's architecture")
    for load in (check_model_source, QuestionAnswerer, lambda m: load_qa_model(m, new_head_expected=True)):
        with pytest.raises(ModelError, match=message):
            load(str(other))

    # One weight lost (a hand-edited file, say): trained anyway, with a warning naming it.
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model, partial)
    weights = load_file(partial / "model.safetensors")
    del weights["bert.encoder.layer.1.output.dense.bias"]
    save_file(weights, partial / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="qa_lib.modeling"):
        check_model_source(str(partial))
    assert (f"{partial}: 1 of the 37 bert encoder weights are not in its weight files (the first: "
            "bert.encoder.layer.1.output.dense.bias); they start from random values") in caplog.text


def test_models_load_with_their_own_layers_not_hub_kernels(tmp_path):
    """transformers 5.25 turned Hub kernels on by default: from_pretrained swaps layers (ModernBERT's
    rotary embedding) for kernels downloaded at load time, and refuses the meta device that the
    weight check builds on, so every run failed in preflight."""
    from qa_lib.answer import QuestionAnswerer
    from qa_lib.modeling import load_qa_model
    from tests.conftest import SQUAD
    from tests.families import build_family

    folder = str(build_family("modernbert-bpe", tmp_path / "modernbert", SQUAD))
    check_model_source(folder)
    assert load_qa_model(folder, new_head_expected=True).use_kernels is False
    assert QuestionAnswerer(folder).model.use_kernels is False


def test_output_dir_and_store_must_not_overlap(tmp_path):
    from qa_lib.errors import ConfigError
    from qa_lib.validate import check_output_apart_from_store

    for out, store in [("o", "o"), ("o/inside", "o"), ("o", "o/model"), ("o", "o/predictions/x"), ("o", "o/evaluation")]:
        with pytest.raises(ConfigError, match=f"output_dir {tmp_path / out} and the store {tmp_path / store} overlap"):
            check_output_apart_from_store(str(tmp_path / out), tmp_path / store)
    for out, store in [("o", "o/.qa-store"), ("o", "s"), ("o", "o/models-store")]:  # the usual layouts
        check_output_apart_from_store(str(tmp_path / out), tmp_path / store)


def test_a_run_folder_or_store_entry_given_as_the_model_means_its_model_folder(tiny_model, tmp_path):
    """`answer --model runs/x` (an output_dir) or a store's `model/<key>` entry: the model is in their
    `model/` folder. answer ended in transformers' ValueError ("Unrecognized model ... model_type"),
    exit 1; any other folder without config.json is now one ModelError."""
    import shutil

    from qa_lib.answer import QuestionAnswerer
    from qa_lib.modeling import resolve_model

    shutil.copytree(tiny_model, tmp_path / "run" / "model")
    assert resolve_model(str(tmp_path / "run")) == str(tmp_path / "run" / "model")
    check_model_source(str(tmp_path / "run"))
    got = QuestionAnswerer(str(tmp_path / "run"))("Who won?", "The Broncos won.")
    assert "The Broncos won."[got.start:got.end] == got.answer
    (tmp_path / "data").mkdir()
    for load in (check_model_source, QuestionAnswerer):
        with pytest.raises(ModelError, match=rf"^{tmp_path / 'data'}: not a model folder \(no config.json\)$"):
            load(str(tmp_path / "data"))


def test_a_folder_publish_target_given_as_the_model_means_its_champion(tiny_model, tmp_path):
    """retrain's `runs/registry` (a folder target) or `<target>/champion`, as an s3:// target is
    named: the champion's model. It was "not a model folder (no config.json)"."""
    import shutil

    from qa_lib.modeling import resolve_model
    from qa_lib.publish.local import FolderTarget

    target = FolderTarget(tmp_path / "registry")
    shutil.copytree(tiny_model, tmp_path / "registry" / "runs" / "r1" / "model")
    target.put_pointer({"location": target.run_location("r1")}, None)
    champion = str(tmp_path / "registry" / "runs" / "r1" / "model")
    for name in ("registry", "registry/champion", "registry/"):
        assert resolve_model(str(tmp_path / name)) == champion
        check_model_source(str(tmp_path / name))
    shutil.rmtree(tmp_path / "registry" / "runs" / "r1")
    with pytest.raises(ModelError, match=r"champion.json points at .*r1, which holds no model/config.json$"):
        resolve_model(str(tmp_path / "registry"))
    (tmp_path / "registry" / "champion.json").write_text("[]")
    with pytest.raises(ModelError, match=r"registry: champion.json is not a champion pointer \(no location\)$"):
        resolve_model(str(tmp_path / "registry"))
    with pytest.raises(ModelError, match=r"model folder not found: .*elsewhere/champion$"):
        resolve_model(str(tmp_path / "elsewhere" / "champion"))


@pytest.mark.parametrize("model_type,extra", [
    ("bert", {}),
    ("roberta", {"pad_token_id": 1}),
    ("xlm-roberta", {"pad_token_id": 7}),  # positions count from pad_token_id + 1
    ("camembert", {"pad_token_id": 1}),
    ("mpnet", {"pad_token_id": 30}),  # MPNet counts from a padding_idx of 1 whatever its pad_token_id
    ("deberta-v2", {"position_biased_input": True}),
])
def test_the_longest_window_is_exactly_what_the_model_takes(tmp_path, model_type, extra):
    """`max_window` against the model itself: that many tokens run through, one more does not."""
    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    from qa_lib.validate import max_window

    config = AutoConfig.for_model(model_type, vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=40, **extra)
    AutoModelForQuestionAnswering.from_config(config).save_pretrained(tmp_path)
    model = AutoModelForQuestionAnswering.from_pretrained(tmp_path).eval()
    limit = max_window(str(tmp_path))
    ids = torch.full((1, limit + 1), 10)
    with torch.no_grad():
        model(input_ids=ids[:, :limit])
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=ids)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_hub_id_without_the_hub_is_its_cached_copy_or_one_error(tiny_model, tmp_path, monkeypatch, caplog):
    """A Hub id where the Hub cannot be reached: transformers retried each file for about 25 s and
    ended in an OSError. One request now decides: the Hugging Face cache's copy, or a ModelError
    naming the model and why; so does a Hub that answers but fails to give the model
    (`tests/test_hub_models.py` has the Hub that gives it)."""
    import http.server
    import shutil
    import threading

    from huggingface_hub import constants

    from qa_lib import hub_reach, modeling
    from qa_lib.answer import QuestionAnswerer

    port = _closed_port()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # `make test` sets HF_HUB_OFFLINE=1
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_reach, "_checked", {})
    for load in (modeling.resolve_model, check_model_source, QuestionAnswerer):
        with pytest.raises(ModelError, match=rf"^model 'org/tiny': no such folder, not in the Hugging Face cache, "
                                             rf"and the Hub at http://127.0.0.1:{port} cannot be reached \("):
            load("org/tiny")

    # The cache's layout, as a download leaves it: the snapshot of the commit refs/main names.
    repo = tmp_path / "hub" / "models--org--tiny"
    shutil.copytree(tiny_model, repo / "snapshots" / ("c" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    assert modeling.resolve_model("org/tiny") == str(repo / "snapshots" / ("c" * 40))
    check_model_source("org/tiny")
    got = QuestionAnswerer("org/tiny")("Who won?", "The Broncos won.")
    assert "The Broncos won."[got.start:got.end] == got.answer
    # Said once, though the model was resolved at each of those steps.
    assert sum("using the Hugging Face cache's copy" in r.getMessage() for r in caplog.records) == 1

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert modeling.resolve_model("org/tiny") == str(repo / "snapshots" / ("c" * 40))
    with pytest.raises(ModelError, match=r"^model 'org/other': no such folder, not in the Hugging Face cache, and "
                                         r"HF_HUB_OFFLINE is set; "):
        modeling.resolve_model("org/other")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    class Hub(http.server.BaseHTTPRequestHandler):  # there, but answers the model's requests with 501
        def do_HEAD(self):  # noqa: N802 - any answer, even 404, means the Hub is there
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setattr(hub_reach, "_checked", {})
        caplog.clear()
        modeling._say_cached_copy.cache_clear()
        assert modeling.resolve_model("org/tiny") == str(repo / "snapshots" / ("c" * 40))
        assert "the Hub failed to give it (Server error '501" in caplog.text
    finally:
        server.shutdown()
        server.server_close()


def test_a_hub_id_without_the_hub_is_one_line_on_the_command_line(tmp_path):
    """`answer --model bert-base-uncased` offline printed twelve retry warnings over 25 s, then
    `error: OSError: ...` (exit 2 by luck of the catch-all)."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HUB_OFFLINE": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "cli", "answer", "--model", "org/absent", "--question", "Who won?",
                           "--context", "The Broncos won."], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model 'org/absent': no such folder, not in the Hugging "
                                                   "Face cache, and the Hub at http://127.0.0.1:"), proc.stderr[-2000:]


def test_a_base_model_with_pickled_weights_is_refused_like_one_with_safetensors(tmp_path, tiny_model):
    """Older checkpoints keep their weights in `pytorch_model.bin` (or its shards): the trained-head
    check skipped them, so evaluating or answering with such a base model scored a random head,
    with only a warning. Its names are read without loading a tensor; a Trainer folder's
    `training_args.bin` is not taken for weights."""
    import shutil
    from types import SimpleNamespace

    import torch
    from transformers import AutoModel, AutoModelForQuestionAnswering

    from qa_lib.validate import check_trained_head

    def pickled(model, folder):
        model.save_pretrained(folder)
        (folder / "model.safetensors").unlink()
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        torch.save(SimpleNamespace(learning_rate=1e-4), folder / "training_args.bin")  # weights_only refuses it
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny_model / name, folder / name)
        return folder

    base = pickled(AutoModel.from_pretrained(tiny_model), tmp_path / "base")
    with pytest.raises(ModelError, match=f"^{base}: its weights hold no question-answering head \\(qa_outputs"):
        check_trained_head(str(base))
    trained = pickled(AutoModelForQuestionAnswering.from_pretrained(tiny_model), tmp_path / "trained")
    check_trained_head(str(trained))
