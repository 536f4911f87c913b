"""Publish a run to a target (folder or S3), promote it past the champion gate, mirror it to the Hub."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from qa_lib.hashing import hash_json
from qa_lib.modeling import resolve_model
from qa_lib.publish import hub
from qa_lib.publish.run import open_target, publish_run
from qa_lib.store import open_store
from tasks.policy import RETRY, retry_unless_deterministic
from tasks.secrets import hub_token


@task(name="check-publish-target", retry_condition_fn=retry_unless_deterministic, retries=2, retry_delay_seconds=2)
def check_target(uri: str) -> None:
    open_target(uri).check()


@task(name="check-hub-access", retry_condition_fn=retry_unless_deterministic, retries=2, retry_delay_seconds=2)
def check_hub(repo_id: str) -> None:
    hub.check_access(repo_id, token=hub_token())


@task(name="read-champion", retry_condition_fn=retry_unless_deterministic, **RETRY)
def read_champion(uri: str) -> dict:
    pointer, raw = open_target(uri).read_pointer()
    return {"pointer": pointer, "raw": raw}


@task(name="publish-run", retry_condition_fn=retry_unless_deterministic, **RETRY)
def publish(uri: str, model_dir: str, metrics: dict, config: dict, fingerprints: dict, run_id: str,
            eval_name: str, v2: bool) -> str:
    """`model_dir`: a folder, or the model's URI in a shared store (downloaded here)."""
    return publish_run(open_target(uri), resolve_model(model_dir), metrics, config, fingerprints, run_id, eval_name, v2)


@task(name="promote", retry_condition_fn=retry_unless_deterministic, **RETRY)
def promote(uri: str, pointer: dict, expected_raw: str | None) -> dict:
    open_target(uri).put_pointer(pointer, expected_raw)
    return pointer


@task(name="pin-champion", retry_condition_fn=retry_unless_deterministic, **RETRY)
def pin_champion(store: str | None, target: str, model_key: str) -> None:
    """Record in the store that this target's champion is `model_key`, so `store gc` keeps it."""
    open_store(store).pin("champion-" + hash_json(target)[:16], [("model", model_key)])


@task(name="record-not-promoted")
def record_not_promoted(metric: str, challenger: float, champion: float, margin: float) -> None:
    create_markdown_artifact(
        f"# Not promoted\n\n| | {metric} |\n| --- | --- |\n| challenger | {challenger:.4f} |\n"
        f"| champion | {champion:.4f} |\n| required margin | {margin} |\n",
        key="promotion-decision", description="challenger did not beat the champion")


@task(name="push-to-hub", retry_condition_fn=retry_unless_deterministic, **RETRY)
def push_to_hub(uri: str, pointer: dict, repo_id: str, private: bool) -> str:
    """Mirror the champion to the Hub: the model folder the target holds (for S3, downloaded and verified
    against its manifest), card included."""
    model_dir = open_target(uri).local_model(pointer)
    url = hub.push_model(model_dir, repo_id, private=private, token=hub_token(),
                         commit_message=f"qa-pipeline: champion run {pointer['run_id']}")
    create_link_artifact(url, link_text=f"{repo_id} (run {pointer['run_id']})", key="hub-push",
                         description="the promoted model on the Hugging Face Hub")
    return url
