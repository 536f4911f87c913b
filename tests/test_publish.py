"""Manifest, model card, Hub push (up to the network call) and the champion gate of `retrain`."""

from __future__ import annotations

import json
import socket
import time

import pytest

from qa_lib.errors import QAPipelineError
from qa_lib.publish.hub import check_card, push_model
from qa_lib.publish.local import FolderTarget
from qa_lib.publish.run import publish_run
from qa_lib.hashing import sha256_file


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


TOKEN = "hf_secret_token_value"


@pytest.fixture
def hub(monkeypatch):
    """The Hub stand-in on loopback, with HF_ENDPOINT and HF_TOKEN pointing at it and offline mode off."""
    import huggingface_hub.constants

    from tests.hub_stand_in import HubStandIn

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # `make test` sets HF_HUB_OFFLINE=1
    with HubStandIn(TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _pushed(repo) -> dict[str, bytes]:
    """A Hub repo's files but the `.gitattributes` the Hub itself writes."""
    return {k: v for k, v in repo["files"].items() if k != ".gitattributes"}


def test_push_to_hub_uploads_the_model_folder_as_one_commit(hub, tiny_model, tmp_path):
    from tests.hub_stand_in import GITATTRIBUTES

    loc = publish_run(FolderTarget(tmp_path / "pub"), str(tiny_model), {"f1": 61.0, "exact_match": 52.5}, {}, {},
                      "r1", "dev-v1.1.json", False)
    url = push_model(f"{loc}/model", "org/qa-model")
    repo = hub.repos["org/qa-model"]
    assert url == f"{hub.url}/org/qa-model/commit/{repo['commits'][0]['oid']}"
    assert repo["private"] is True and len(repo["commits"]) == 1
    assert _pushed(repo) == _files(tmp_path / "pub/runs/r1/model")  # byte for byte, card included
    assert b"value: 61.0000" in repo["files"]["README.md"]
    push_model(f"{loc}/model", "org/qa-model")  # an existing repo is reused, not an error
    assert len(repo["commits"]) == 2 and repo["commits"][1]["deleted"] == []

    # A later champion whose folder lacks a file of the earlier one: the repo becomes that folder, in
    # one commit (the stale file would otherwise be downloaded and loaded with the new model).
    stale = tmp_path / "pub/runs/r1/model/pytorch_model.bin"
    stale.write_bytes(b"an older champion's weights")
    push_model(f"{loc}/model", "org/qa-model")
    assert repo["files"]["pytorch_model.bin"] == b"an older champion's weights"
    stale.unlink()
    push_model(f"{loc}/model", "org/qa-model")
    assert repo["commits"][-1]["deleted"] == ["pytorch_model.bin"] and len(repo["commits"]) == 4
    assert _pushed(repo) == _files(tmp_path / "pub/runs/r1/model")
    assert repo["files"][".gitattributes"] == GITATTRIBUTES  # the Hub's own file stays


def test_hub_token_from_a_prefect_secret_block(prefect_server, hub, monkeypatch):
    from prefect.blocks.system import Secret

    from qa_lib.publish.hub import check_access
    from tasks.secrets import hub_token

    monkeypatch.delenv("HF_TOKEN")
    Secret(value=TOKEN).save("hf-token", overwrite=True)
    try:
        assert check_access("org/qa-model", token=hub_token()) == "qa-bot"  # the stand-in accepts only TOKEN
    finally:
        Secret.delete("hf-token")


def test_hub_errors_are_clear_and_never_show_the_token(prefect_server, hub, tiny_model, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from qa_lib.publish.hub import check_access

    loc = publish_run(FolderTarget(tmp_path / "pub"), str(tiny_model), {"f1": 1.0, "exact_match": 0.5}, {}, {},
                      "r1", "d", False)
    assert check_access("org/qa-model") == "qa-bot"
    failures = []
    with pytest.raises(QAPipelineError, match="the token was rejected") as info:
        push_model(f"{loc}/model", "org/qa-model", token="hf_wrong_token_value")
    failures.append(info.value)
    hub.role = "read"
    with pytest.raises(QAPipelineError, match="read-only") as info:
        check_access("org/qa-model")
    failures.append(info.value)
    hub.fail_next = [429]  # rate limited: transient, so retryable
    with pytest.raises(ConnectionError, match="HTTP 429"):
        check_access("org/qa-model")
    with pytest.raises(QAPipelineError, match="not a valid Hub repo id"):
        push_model(f"{loc}/model", "org/bad name")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(QAPipelineError, match="no Hugging Face token"):
        check_access("org/qa-model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once released: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    # Unreachable is transient: a ConnectionError, which the Prefect task retries.
    with pytest.raises(ConnectionError, match=r"push to the Hub \(org/qa-model\) failed: Hub unreachable") as info:
        push_model(f"{loc}/model", "org/qa-model", token=TOKEN)
    failures.append(info.value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(QAPipelineError, match="HF_HUB_OFFLINE is set") as info:
        check_access("org/qa-model", token=TOKEN)
    failures.append(info.value)
    assert not any(TOKEN in str(f) or "hf_wrong_token_value" in str(f) for f in failures)
    assert "org/qa-model" not in hub.repos  # nothing was half-pushed by the failures


def _promotions(target: str, expect: int, wait_s: float = 30) -> list:
    """The champion-promoted events of `target` the server has recorded, once there are `expect` of
    them or `wait_s` has passed (events are written after the flow that emits them goes on)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from flows.retrain import CHAMPION_PROMOTED_EVENT

    events_filter = EventFilter(event=EventNameFilter(name=[CHAMPION_PROMOTED_EVENT]),
                                resource=EventResourceFilter(id=[f"qa-pipeline.champion.{target}"]))
    deadline = time.monotonic() + wait_s
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=events_filter, limit=50).events  # the server refuses the default 100
        if len(events) >= expect or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_retrain_gate(prefect_server, tiny_model, tmp_path):
    from flows.retrain import retrain
    from tests.flow_helpers import artifacts, read_logs, subflow_runs, tiny_config

    pub = tmp_path / "pub"
    cfg = tiny_config(tiny_model, tmp_path / "out", publish_target=str(pub))
    first = retrain(config=cfg, store_root=str(tmp_path / "store"))
    assert first["promoted"] is True
    pointer = json.loads((pub / "champion.json").read_text())
    assert (pub / "runs" / pointer["run_id"] / "manifest.json").exists()
    from qa_lib.store import LocalStore, collect_garbage

    store = LocalStore(tmp_path / "store")
    assert ("model", first["model_key"]) in store.pinned()  # so that `store gc` keeps the champion's model
    assert ("model", first["model_key"]) not in {(e.stage, e.key) for e in collect_garbage(store, 0, dry_run=True)}
    # The promotion is announced, for the pipelines that follow the champion (a deployment trigger).
    announced = _promotions(str(pub), 1)
    assert [e.payload["run_id"] for e in announced] == [pointer["run_id"]]
    assert announced[0].payload["model"] == f"{pub}/champion"
    assert announced[0].payload["value"] == first["metrics"]["f1"]
    # Same model again but a margin to beat: not promoted, both figures recorded.
    state = retrain(config=cfg.model_copy(update={"promote_margin": 1.0}), store_root=str(tmp_path / "store"),
                    return_state=True)
    second = state.result()
    assert second["promoted"] is False and second["challenger"] == second["champion"]
    art = artifacts(state.state_details.flow_run_id)["promotion-decision"].data
    assert "Not promoted" in art and f"{second['champion']:.4f}" in art
    assert json.loads((pub / "champion.json").read_text()) == pointer
    assert len(_promotions(str(pub), 2, wait_s=3)) == 1  # not promoted: nothing announced
    # Its train_qa subflow does not say it "publishes nowhere": retrain publishes (a train run says it).
    subflow_logs = "\n".join(read_logs(r.id, until="\nmodel: ") for r in subflow_runs(state.state_details.flow_run_id))
    assert "\nmodel: " in subflow_logs and "publishes nowhere" not in subflow_logs
    # Other post-processing: the champion's recorded score (max_answer_length 30) is not comparable,
    # so it is scored again under the new settings; the same model then ties with itself.
    shorter = cfg.model_copy(update={"promote_margin": 1.0, "max_answer_length": 1})
    third = retrain(config=shorter, store_root=str(tmp_path / "store"))
    assert third["promoted"] is False and third["challenger"] == third["champion"]
    assert third["challenger"] != second["challenger"]  # the setting did move the score


def test_promote_metric_names_either_version_s_exact_score(prefect_server, tiny_model, tmp_path):
    """v1.1 scores name it exact_match and v2.0 exact: a v1 retrain with promote_metric exact (or a v2
    one with exact_match, or best_f1 on v1) failed after training with a KeyError, exit 1."""
    from flows.retrain import retrain
    from qa_lib.config import PipelineConfig
    from qa_lib.errors import ConfigError
    from tests.conftest import DEV_V1
    from tests.flow_helpers import tiny_config

    v1 = dict(eval_data={"path": str(DEV_V1), "limit": 40}, version_2_with_negative=False)
    assert tiny_config(tiny_model, tmp_path, promote_metric="exact", **v1).promote_key == "exact_match"
    assert tiny_config(tiny_model, tmp_path, promote_metric="exact_match").promote_key == "exact"
    assert tiny_config(tiny_model, tmp_path, promote_metric="best_f1").promote_key == "best_f1"
    with pytest.raises(ConfigError, match="promote_metric best_f1 is a SQuAD v2 score"):
        PipelineConfig.parse({**tiny_config(tiny_model, tmp_path, **v1).model_dump(), "promote_metric": "best_f1"})
    cfg = tiny_config(tiny_model, tmp_path / "out", publish_target=str(tmp_path / "pub"), promote_metric="exact", **v1)
    first = retrain(config=cfg, store_root=str(tmp_path / "store"))
    assert first["promoted"] is True
    again = retrain(config=cfg.model_copy(update={"promote_margin": 1.0}), store_root=str(tmp_path / "store"))
    assert again["promoted"] is False and again["challenger"] == again["champion"] == first["metrics"]["exact_match"]


@pytest.mark.parametrize("rival_f1, promoted", [(-1.0, True), (101.0, False)])
def test_retrain_that_loses_the_race_is_gated_again(prefect_server, tiny_model, tmp_path, monkeypatch, rival_f1,
                                                    promoted):
    """Another retrain promotes right after this one read the champion: the conditional write
    fails, and this challenger is gated against the rival (it used to exit as if the user erred)."""
    from flows.retrain import retrain
    from qa_lib.plan import data_key, eval_protocol
    from tests.flow_helpers import tiny_config

    pub = tmp_path / "pub"
    cfg = tiny_config(tiny_model, tmp_path / "out", publish_target=str(pub))
    eval_data_key = data_key(cfg.eval_data, cfg.version_2_with_negative)
    rival = {"run_id": "rival", "location": str(pub / "runs" / "rival"), "metrics": {"f1": rival_f1},
             "eval_data_key": eval_data_key, "eval_protocol": eval_protocol(cfg, eval_data_key)}
    read = FolderTarget.read_pointer
    reads = []

    def racing(self):
        result = read(self)
        reads.append(result[0])
        if len(reads) == 1:  # the rival's promotion lands between our first read and our write
            monkeypatch.setattr(FolderTarget, "read_pointer", read)  # put_pointer reads it too
            self.put_pointer(rival, result[1])
            monkeypatch.setattr(FolderTarget, "read_pointer", racing)
        return result

    monkeypatch.setattr(FolderTarget, "read_pointer", racing)
    result = retrain(config=cfg, store_root=str(tmp_path / "store"))
    assert reads[0] is None and reads[1]["run_id"] == "rival"  # gated twice: nothing, then the rival
    assert result["promoted"] is promoted
    champion = json.loads((pub / "champion.json").read_text())
    assert (champion["run_id"] != "rival") is promoted


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


def test_retrain_pushes_the_promoted_champion_to_the_hub(prefect_server, hub, tiny_model, tmp_path):
    from flows.retrain import retrain
    from tests.flow_helpers import artifacts, task_runs, tiny_config

    pub = tmp_path / "pub"
    cfg = tiny_config(tiny_model, tmp_path / "out", publish_target=str(pub), hub_repo_id="org/qa-champion")
    hub.fail_next = [503]  # the Hub is busy at the first token check: the task retries
    state = retrain(config=cfg, store_root=str(tmp_path / "store"), return_state=True)
    result = state.result()
    check = [r for r in task_runs(state.state_details.flow_run_id) if r.name.startswith("check-hub-access")]
    assert [(r.state.name, r.run_count) for r in check] == [("Completed", 2)]
    pointer = json.loads((pub / "champion.json").read_text())
    repo = hub.repos["org/qa-champion"]
    assert result["promoted"] is True and result["hub_commit"].endswith(repo["commits"][0]["oid"])
    assert _pushed(repo) == _files(pub / "runs" / pointer["run_id"] / "model")
    assert pointer["run_id"] in repo["commits"][0]["summary"]
    assert result["hub_commit"] in artifacts(state.state_details.flow_run_id)["hub-push"].data
    # Not promoted: nothing pushed.
    again = retrain(config=cfg.model_copy(update={"promote_margin": 1.0}), store_root=str(tmp_path / "store"))
    assert again["promoted"] is False and len(repo["commits"]) == 1


def test_retrain_checks_the_hub_token_before_training(prefect_server, hub, tiny_model, tmp_path, monkeypatch):
    from flows.retrain import retrain
    from tests.flow_helpers import task_states, tiny_config

    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_value")
    cfg = tiny_config(tiny_model, tmp_path / "out", publish_target=str(tmp_path / "pub"), hub_repo_id="org/qa")
    state = retrain(config=cfg, store_root=str(tmp_path / "store"), return_state=True)
    assert state.is_failed()
    with pytest.raises(QAPipelineError, match="the token was rejected"):
        state.result()
    states = task_states(state.state_details.flow_run_id)
    assert states["check-hub-access"] == ["Failed"]  # deterministic: not retried
    assert "fine-tune" not in states and "hf_wrong_token_value" not in state.message
