"""Manifest, model card, Hub push (up to the network call) and the champion gate of `retrain`."""

from __future__ import annotations

import json
import socket

import pytest

from qa_lib.errors import QAPipelineError
from qa_lib.publish.hub import check_card, push_model
from qa_lib.publish.local import FolderTarget
from qa_lib.publish.run import publish_run
from qa_lib.store import sha256_file


def test_folder_publish_manifest_and_card(tiny_model, tmp_path):
    target = FolderTarget(tmp_path / "pub")
    loc = publish_run(target, str(tiny_model), {"exact_match": 41.5, "f1": 52.25},
                      {"model": "m", "aws_secret_access_key": "XYZ", "nested": {"hub_token": "hf_x"}},
                      {"train_data": "k1"}, "r1", "dev-v1.1.json", False)
    manifest = json.loads((tmp_path / "pub/runs/r1/manifest.json").read_text())
    for rel, meta in manifest["files"].items():
        assert sha256_file(tmp_path / "pub/runs/r1" / rel) == meta["sha256"]
    assert "XYZ" not in json.dumps(manifest) and "hf_x" not in json.dumps(manifest)
    assert manifest["metrics"]["f1"] == 52.25 and manifest["code_version"]
    card = check_card(f"{loc}/model")
    assert card["exact_match"] == 41.5 and card["f1"] == 52.25 and card["dataset"] == "squad"


def test_push_to_hub_stops_at_the_network_with_a_clear_error(tiny_model, tmp_path, monkeypatch):
    target = FolderTarget(tmp_path / "pub")
    loc = publish_run(target, str(tiny_model), {"f1": 1.0, "exact_match": 0.5}, {}, {}, "r1", "d", False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once released: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(QAPipelineError, match="no Hugging Face token"):
        push_model(f"{loc}/model", "org/qa-model", token=None)
    with pytest.raises(QAPipelineError) as info:
        push_model(f"{loc}/model", "org/qa-model", token="hf_secret_token_value")
    assert "push to the Hub (org/qa-model) failed" in str(info.value)
    assert "hf_secret_token_value" not in str(info.value)


def test_retrain_gate(prefect_server, tiny_model, tmp_path):
    from flows.retrain import retrain
    from tests.flow_helpers import artifacts, tiny_config

    pub = tmp_path / "pub"
    cfg = tiny_config(tiny_model, tmp_path / "out", publish_target=str(pub))
    first = retrain(config=cfg, store_root=str(tmp_path / "store"))
    assert first["promoted"] is True
    pointer = json.loads((pub / "champion.json").read_text())
    assert (pub / "runs" / pointer["run_id"] / "manifest.json").exists()
    # Same model again but a margin to beat: not promoted, both figures recorded.
    state = retrain(config=cfg.model_copy(update={"promote_margin": 1.0}), store_root=str(tmp_path / "store"),
                    return_state=True)
    second = state.result()
    assert second["promoted"] is False and second["challenger"] == second["champion"]
    art = artifacts(state.state_details.flow_run_id)["promotion-decision"].data
    assert "Not promoted" in art and f"{second['champion']:.4f}" in art
    assert json.loads((pub / "champion.json").read_text()) == pointer


def test_retrain_checks_the_target_before_training(prefect_server, tiny_model, tmp_path):
    from flows.retrain import retrain
    from qa_lib.s3 import StorageError
    from tests.flow_helpers import task_states, tiny_config

    cfg = tiny_config(tiny_model, tmp_path / "out", publish_target="s3://Not_A_Bucket/x")
    state = retrain(config=cfg, store_root=str(tmp_path / "store"), return_state=True)
    assert state.is_failed()
    with pytest.raises(StorageError, match="malformed S3 URI"):
        state.result()
    assert "fine-tune" not in task_states(state.state_details.flow_run_id)
