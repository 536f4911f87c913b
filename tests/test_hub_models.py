"""A Hub model id, against a loopback stand-in for the Hub's download API (`tests/hub_stand_in.py`).

The id used to be handed to transformers as it was and keyed as `hub:<id>`, so a new commit to the
repo (new weights, a fixed tokenizer) reused every stage built from the old one: the cache key did
not cover what the stage was computed from. Now the id resolves to the snapshot folder of the
revision the Hub names, and the key is those files' content.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qa_lib.errors import ModelError


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from qa_lib import hub_reach, modeling
    from tests.hub_stand_in import HubStandIn

    with HubStandIn("hf_not_used") as server:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # `make test` sets HF_HUB_OFFLINE=1
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        # Derived from HF_ENDPOINT when huggingface_hub is imported, as a user's HF_ENDPOINT would be.
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setattr(hub_reach, "_checked", {})
        monkeypatch.setattr(modeling, "_snapshots", {}, raising=False)
        yield server


def _next_revision(tiny_model, tmp_path):
    """The same model with other weights: what a push of a further-trained model commits."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    folder = tmp_path / "pushed-again"
    shutil.copytree(tiny_model, folder)
    model = AutoModelForQuestionAnswering.from_pretrained(folder)
    with torch.no_grad():
        model.qa_outputs.bias.add_(1.0)
    model.save_pretrained(folder)
    return folder


def test_a_hub_model_is_keyed_by_its_revisions_files(hub, tiny_model, tmp_path, monkeypatch, caplog):
    import logging

    from huggingface_hub import constants

    from qa_lib import modeling
    from qa_lib.answer import QuestionAnswerer
    from qa_lib.plan import model_fingerprint, tokenizer_fingerprint

    repo = tmp_path / "repo"
    shutil.copytree(tiny_model, repo)
    # What Hub repos hold beside the PyTorch weights: transformers reads none of it.
    (repo / "pytorch_model.bin").write_bytes(b"the same weights again, pickled")
    (repo / "tf_model.h5").write_bytes(b"TensorFlow weights")
    (repo / "onnx").mkdir()
    (repo / "onnx" / "model.onnx").write_bytes(b"an ONNX export")
    first = hub.put_model("org/tiny", repo)

    with caplog.at_level(logging.INFO, logger="qa_lib.modeling"):
        resolved = modeling.resolve_model("org/tiny")
    assert resolved.endswith(first) and resolved.startswith(constants.HF_HUB_CACHE)
    # Said before the download starts, which on a worker draws no bar.
    said = [r.getMessage() for r in caplog.records if r.name == "qa_lib.modeling"]
    assert said == [f"downloading model org/tiny (commit {first[:12]}) from the Hub into {constants.HF_HUB_CACHE}: "
                    f"{len(list(tiny_model.iterdir()))} files"]
    fetched = sorted(p.name for p in Path(resolved).iterdir())
    assert fetched == sorted(p.name for p in tiny_model.iterdir())
    assert not any("tf_model.h5" in r or "pytorch_model.bin" in r or "onnx" in r for r in hub.requests)
    # The key is the files' content: the same as the same files in a folder.
    assert model_fingerprint(resolved) == model_fingerprint(str(tiny_model))
    assert tokenizer_fingerprint(resolved) == tokenizer_fingerprint(str(tiny_model))
    got = QuestionAnswerer("org/tiny")("Who won?", "The Broncos won.")
    assert "The Broncos won."[got.start:got.end] == got.answer

    # Resolved again later: one question to the Hub, which names the revision already fetched.
    modeling._snapshots.clear()
    asked = len(hub.requests)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qa_lib.modeling"):
        assert modeling.resolve_model("org/tiny") == resolved
    assert hub.requests[asked:] == ["GET /api/models/org/tiny"]
    assert not [r for r in caplog.records if r.name == "qa_lib.modeling"]  # nothing downloaded, nothing said

    second = hub.put_model("org/tiny", _next_revision(tiny_model, tmp_path))
    # Asked again at most once a minute, so one run does not see two revisions in quick succession...
    assert modeling.resolve_model("org/tiny") == resolved
    modeling._snapshots.clear()  # ...a minute later:
    newer = modeling.resolve_model("org/tiny")
    assert newer.endswith(second)
    assert model_fingerprint(newer) != model_fingerprint(resolved)
    assert tokenizer_fingerprint(newer) == tokenizer_fingerprint(resolved)  # the tokenizer did not change

    # Offline, the cache's copy of the same revision: the same folder, so the same stages.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert modeling.resolve_model("org/tiny") == newer


def test_a_hub_model_pinned_to_a_revision(hub, tiny_model, tmp_path, monkeypatch):
    """`namespace/name@revision` (a tag, branch or commit id) keeps a nightly retrain on the base model
    it was validated with while the repo moves on, online and offline alike."""
    from huggingface_hub import constants

    from qa_lib import modeling
    from qa_lib.plan import model_fingerprint

    first = hub.put_model("org/tiny", tiny_model)
    hub.tag("org/tiny", "v1", first)
    second = hub.put_model("org/tiny", _next_revision(tiny_model, tmp_path))
    latest, pinned = modeling.resolve_model("org/tiny"), modeling.resolve_model(f"org/tiny@{first}")
    assert latest.endswith(second) and pinned.endswith(first)
    assert modeling.resolve_model("org/tiny@v1") == pinned
    assert model_fingerprint(pinned) == model_fingerprint(str(tiny_model)) != model_fingerprint(latest)
    with pytest.raises(ModelError, match=r"^model 'org/tiny@v9': the Hub has no revision 'v9' of org/tiny "):
        modeling.resolve_model("org/tiny@v9")
    for malformed in ("org/tiny@", "@v1", "org/tiny@v1@v2"):
        with pytest.raises(ModelError, match=f"^model folder not found: {malformed}$"):
            modeling.resolve_model(malformed)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # each name finds its own copy in the cache
    assert [modeling.resolve_model(m) for m in ("org/tiny", "org/tiny@v1", f"org/tiny@{first}")] == [
        latest, pinned, pinned]


def test_a_hub_model_the_hub_cannot_give_is_one_error_or_the_cached_copy(hub, tiny_model, tmp_path, caplog):
    from qa_lib import modeling
    from qa_lib.validate import check_model_source

    with pytest.raises(ModelError, match=r"^model 'org/absent': no such folder, and the Hub has no such model "):
        check_model_source("org/absent")

    no_config = tmp_path / "gguf-only"
    no_config.mkdir()
    (no_config / "model.gguf").write_bytes(b"llama.cpp weights")
    hub.put_model("org/gguf", no_config)
    with pytest.raises(ModelError, match=r"^model 'org/gguf': the Hub repo has no config.json at its top level"):
        modeling.resolve_model("org/gguf")

    from huggingface_hub import constants

    sha = hub.put_model("org/tiny", tiny_model)
    # A cache it cannot write into (read-only in hardened pods, full, or as here not a folder).
    writable = constants.HF_HUB_CACHE
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    constants.HF_HUB_CACHE = str(blocker / "hub")
    try:
        with pytest.raises(ModelError, match=rf"^model 'org/tiny': cannot download it into the Hugging Face cache "
                                             rf"{blocker / 'hub'} \(Not a directory\); set HF_HOME or HF_HUB_CACHE"):
            modeling.resolve_model("org/tiny")
    finally:
        constants.HF_HUB_CACHE = writable
    cached = modeling.resolve_model("org/tiny")
    modeling._snapshots.clear()
    hub.fail_next = [503]  # the Hub is there but failing: the copy in the cache serves
    assert modeling.resolve_model("org/tiny") == cached and cached.endswith(sha)
    assert any("the Hub failed to give it" in r.getMessage() and "using the Hugging Face cache's copy" in r.getMessage()
               for r in caplog.records)


def test_a_run_on_a_hub_model_plans_the_same_stages_as_on_its_files(hub, tiny_model, tmp_path):
    """`train --dry-run` names the stages a run would compute by key: the Hub id and a folder of the
    same files plan the same ones, so a model downloaded by hand reuses what the id computed."""
    from qa_lib.config import PipelineConfig
    from qa_lib.preflight import planned_stages
    from tests.conftest import DEV_V1, TRAIN_V1

    hub.put_model("org/tiny", tiny_model)
    config = PipelineConfig(model="org/tiny", train_data={"path": str(TRAIN_V1), "limit": 8},
                            eval_data={"path": str(DEV_V1), "limit": 8},
                            output_dir=str(tmp_path / "out"))
    from_hub = planned_stages(config, training=True, store=str(tmp_path / "store"))
    from_folder = planned_stages(config.model_copy(update={"model": str(tiny_model)}), training=True,
                                 store=str(tmp_path / "store"))
    assert from_hub == from_folder


def _squad_rows(n: int) -> str:
    """The first `n` Super_Bowl_50 questions as JSON lines, the flat records a Hub dataset holds."""
    import json

    from tests.conftest import DEV_V1

    rows = []
    for para in json.loads(DEV_V1.read_text())["data"][0]["paragraphs"]:
        for qa in para["qas"]:
            rows.append({"id": qa["id"], "title": "Super_Bowl_50", "context": para["context"], "question": qa["question"],
                         "answers": {"text": [a["text"] for a in qa["answers"]],
                                     "answer_start": [a["answer_start"] for a in qa["answers"]]}})
    return "\n".join(json.dumps(r) for r in rows[:n]) + "\n"


def test_a_hub_dataset_is_keyed_by_its_commit_and_loaded_at_it(hub, tmp_path, monkeypatch, capsys):
    """A Hub dataset was keyed `hub:<name>:main`: data updated on the Hub kept the old stages."""
    import datasets

    from qa_lib import data
    from qa_lib.config import DataSource
    from qa_lib.errors import DataError
    from qa_lib.plan import source_fingerprint

    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(data, "_revisions", {}, raising=False)
    repo = tmp_path / "dataset-repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "validation.jsonl").write_text(_squad_rows(5))
    first = hub.put_dataset("org/squad-like", repo)
    source = DataSource(path="org/squad-like", split="validation")

    before = source_fingerprint(source)
    data.check_source_exists(source)
    assert len(data.load_examples(source)) == 5
    assert f"GET /api/datasets/org/squad-like/revision/{first}" in hub.requests

    (repo / "data" / "validation.jsonl").write_text(_squad_rows(7))
    second = hub.put_dataset("org/squad-like", repo)
    data._revisions.clear()  # a minute later
    after = source_fingerprint(source)
    assert after != before
    assert len(data.load_examples(source)) == 7
    assert f"GET /api/datasets/org/squad-like/revision/{second}" in hub.requests
    assert source_fingerprint(source) == after  # asked again within the minute: the same commit

    # Pinned: `name@revision` keeps the first commit's rows while the repo moves on.
    hub.tag("datasets/org/squad-like", "v1", first)
    pinned = DataSource(path="org/squad-like@v1", split="validation")
    assert len(data.load_examples(pinned)) == 5
    assert source_fingerprint(pinned) == before  # the same commit, named by its tag
    with pytest.raises(DataError, match=r"^org/squad-like@v9: cannot load Hub dataset .*v9"):
        data.load_examples(DataSource(path="org/squad-like@v9", split="validation"))

    # `score` reads a Hub dataset as the pipeline does (it said "file not found"): the first
    # commit's 5 questions, 2 of them answered right.
    import json

    from cli.main import main

    rows = [json.loads(line) for line in _squad_rows(5).splitlines()]
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({r["id"]: r["answers"]["text"][0] if i < 2 else "" for i, r in enumerate(rows)}))
    assert main(["score", "org/squad-like@v1", str(preds)]) == 0
    assert json.loads(capsys.readouterr().out) == {"exact_match": 40.0, "f1": 40.0}


_SUBSETS_CARD = """---
configs:
- config_name: first
  data_files:
  - split: validation
    path: first/validation.jsonl
- config_name: second
  data_files:
  - split: validation
    path: second/validation.jsonl
---
"""


def _dataset_with_subsets(folder):
    (folder / "first").mkdir(parents=True)
    (folder / "second").mkdir()
    (folder / "first" / "validation.jsonl").write_text(_squad_rows(3))
    (folder / "second" / "validation.jsonl").write_text(_squad_rows(6))
    (folder / "README.md").write_text(_SUBSETS_CARD)
    return folder


def test_a_dataset_with_subsets_loads_the_one_named(hub, tmp_path, monkeypatch):
    """Datasets such as google/xquad hold one subset per language; without `subset` there was no
    way to name one, and datasets' "Config name is missing" did not say which key would."""
    import datasets

    from qa_lib import data
    from qa_lib.config import DataSource
    from qa_lib.errors import DataError
    from qa_lib.plan import source_fingerprint

    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(data, "_revisions", {}, raising=False)
    folder = _dataset_with_subsets(tmp_path / "xquad-like")
    hub.put_dataset("org/xquad-like", folder)

    for path in ("org/xquad-like", str(folder)):  # the Hub's copy, and the same files as a data folder
        first = DataSource(path=path, subset="first", split="validation")
        second = DataSource(path=path, subset="second", split="validation")
        assert len(data.load_examples(first)) == 3 and len(data.load_examples(second)) == 6
        assert source_fingerprint(first) != source_fingerprint(second)
        with pytest.raises(DataError, match=r"Config name is missing.*\(name one with the source's `subset`\)"):
            data.load_examples(DataSource(path=path, split="validation"))


def test_training_starts_from_the_revision_its_key_was_computed_from(hub, prefect_server, tiny_model, tmp_path,
                                                                        monkeypatch):
    """A revision pushed while the run loads its data (after preflight computed the model key from the
    revision before it) must not be what fine-tune starts from: the model would not be what its key says."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    import tasks.data
    from flows.train_qa import train_qa
    from qa_lib import modeling
    from tests.flow_helpers import read_logs, tiny_config

    hub.put_model("org/tiny", tiny_model)
    wider = tmp_path / "wider"
    shutil.copytree(tiny_model, wider)
    config = BertConfig.from_pretrained(wider)
    config.intermediate_size = 96  # a new revision whose architecture shows in the trained model
    torch.manual_seed(1)
    BertForQuestionAnswering(config).save_pretrained(wider)
    real = tasks.data.load_examples

    def push_then_load(*args, **kwargs):
        if len(hub.repos["org/tiny"]["commits"]) == 1:
            hub.put_model("org/tiny", wider)
            modeling._snapshots.clear()  # as if a minute had passed
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks.data, "load_examples", push_then_load)
    store = tmp_path / "store"
    state = train_qa(config=tiny_config("org/tiny", tmp_path / "out", eval_data=None), store_root=str(store),
                     return_state=True)
    result = state.result()
    assert len(hub.repos["org/tiny"]["commits"]) == 2
    # The download, said in the run's own log (where a worker's run page shows it).
    first = hub.repos["org/tiny"]["commits"][0]
    said = f"downloading model org/tiny (commit {first['oid'][:12]}) from the Hub"
    assert said in read_logs(state.state_details.flow_run_id, until=said)
    assert result["base_model"] == "org/tiny"
    assert BertConfig.from_pretrained(result["model_dir"]).intermediate_size == 64


def test_the_files_fetched_are_the_ones_transformers_reads():
    from qa_lib.modeling import _files_to_fetch

    both = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "vocab.txt",
            "tokenizer.json", "onnx/model.onnx", "openvino/openvino_model.bin", "1_Pooling/config.json", "README.md"]
    assert _files_to_fetch(both) == ["config.json", "model.safetensors", "vocab.txt", "tokenizer.json"]
    sharded = ["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
               "pytorch_model.bin.index.json", "spm.model", "tf_model.h5"]
    assert _files_to_fetch(sharded) == sharded[:-1]
