"""retrain: train → evaluate → compare with the champion on the same eval set → promote if better → Hub."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from flows.evaluate_qa import evaluate_qa
from flows.train_qa import train_qa
from qa_lib.config import PipelineConfig
from qa_lib.plan import eval_protocol
from qa_lib.preflight import check_retrain_config
from qa_lib.progress import configure_progress
from qa_lib.publish.local import PointerChanged
from qa_lib.publish.run import champion_reference, open_target
from tasks.library_logs import send_library_logs
from tasks.publish_remote import (check_hub, check_target, pin_champion, promote, publish, push_to_hub, read_champion,
                                  record_not_promoted)


# Parameters are validated in the flow (PipelineConfig.coerce), so that a cross-field mistake made in
# the UI form fails the run with the config's own one-line message, not Prefect's wrapped one.
@flow(name="retrain", validate_parameters=False)
def retrain(config: PipelineConfig = PipelineConfig(), store_root: str | None = None) -> dict:
    """Train a challenger, gate it against the champion on the same eval set, promote the better.

    Args:
        config: The pipeline configuration; needs publish_target and eval_data.
        store_root: Where stages are kept: a folder or s3://bucket/prefix shared by a pool's workers
            (default: $QA_PIPELINE_STORE, else .qa-store).
    """
    config = PipelineConfig.coerce(config)
    configure_progress()
    send_library_logs()
    logger = get_run_logger()
    check_retrain_config(config)
    check_target(config.publish_target)  # fail before training on a bad bucket or path
    if config.hub_repo_id:
        check_hub(config.hub_repo_id)  # and on a missing, rejected or read-only Hub token

    trained = train_qa(config=config, store_root=store_root)
    metric = config.promote_key
    challenger = trained["metrics"][metric]
    protocol = eval_protocol(config, trained["eval_data_key"])
    run_id = str(flow_run.get_id() or "local")
    location = None
    # Another retrain may promote between our read of the champion and our conditional write:
    # the write then fails, and this challenger is gated again, against the new champion.
    for _ in range(GATE_ROUNDS):
        current = read_champion(config.publish_target)
        champion_score = _champion_score(config, current["pointer"], protocol, store_root)
        if champion_score is not None and challenger < champion_score + config.promote_margin:
            record_not_promoted(metric, challenger, champion_score, config.promote_margin)
            logger.info("not promoted: %s %.3f vs champion %.3f", metric, challenger, champion_score)
            return {"promoted": False, "challenger": challenger, "champion": champion_score, **trained}
        if location is None:
            fingerprints = {"train_data": trained["train_data_key"], "eval_data": trained["eval_data_key"],
                            "model": trained["model_key"]}
            location = publish(config.publish_target, trained["model_dir"], trained["metrics"], config.model_dump(),
                               fingerprints, run_id, config.eval_data.path, config.version_2_with_negative)
        pointer = {"run_id": run_id, "location": location, "metrics": trained["metrics"],
                   "eval_data_key": trained["eval_data_key"], "eval_protocol": protocol, "model_key": trained["model_key"]}
        try:
            promote(config.publish_target, pointer, current["raw"])
            break
        except PointerChanged:
            logger.info("the champion changed while this run was promoting; gating again against the new one")
    else:
        raise PointerChanged(f"champion.json changed {GATE_ROUNDS} times while this run was promoting; not promoting")
    pin_champion(store_root, config.publish_target, trained["model_key"])  # `store gc` keeps the champion's model
    # For the pipelines that follow a champion (serve it, answer a fixed question set with it): a
    # deployment trigger on this event starts them; the payload says where the model is.
    emit_event(event=CHAMPION_PROMOTED_EVENT,
               resource={"prefect.resource.id": f"qa-pipeline.champion.{config.publish_target}"},
               payload={"run_id": run_id, "location": location,
                        "model": champion_reference(config.publish_target),
                        "metric": metric, "value": challenger, "model_key": trained["model_key"]})
    create_markdown_artifact(f"# Promoted\n\nrun `{run_id}` at `{location}`: {metric} = {challenger:.4f}",
                             key="promotion-decision")
    logger.info("promoted run %s (%s %.3f)", run_id, metric, challenger)
    hub_commit = (push_to_hub(config.publish_target, pointer, config.hub_repo_id, config.hub_private)
                  if config.hub_repo_id else None)
    return {"promoted": True, "location": location, "hub_commit": hub_commit, **trained}


GATE_ROUNDS = 5
CHAMPION_PROMOTED_EVENT = "qa-pipeline.champion.promoted"


def _champion_score(config: PipelineConfig, champion: dict | None, protocol: str, store_root: str | None):
    """The champion's score on this run's eval set, under this run's evaluation settings and code
    (None: no champion yet)."""
    if champion is None:
        return None
    if champion.get("eval_protocol") == protocol:
        return champion["metrics"][config.promote_key]
    # Scored on another eval set, with other windows or post-processing, or by other code (a
    # max_answer_length or a null threshold changed moves F1 by points): evaluate it as we were.
    model = open_target(config.publish_target).local_model(champion)
    return evaluate_qa(config=config, model=model, store_root=store_root)["metrics"][config.promote_key]
