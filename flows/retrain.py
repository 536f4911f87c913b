"""retrain: train → evaluate → compare with the champion on the same eval set → promote if better → Hub."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.evaluate_qa import evaluate_qa
from flows.train_qa import train_qa
from qa_lib.config import PipelineConfig
from qa_lib.errors import ConfigError
from tasks.publish_remote import (check_hub, check_target, promote, publish, push_to_hub, read_champion,
                                  record_not_promoted)


@flow(name="retrain")
def retrain(config: PipelineConfig = PipelineConfig(), store_root: str | None = None) -> dict:
    logger = get_run_logger()
    if not config.publish_target or config.eval_data is None:
        raise ConfigError("retrain needs publish_target and eval_data (the fixed eval set of the gate)")
    check_target(config.publish_target)  # fail before training on a bad bucket or path
    if config.hub_repo_id:
        check_hub(config.hub_repo_id)  # and on a missing, rejected or read-only Hub token

    trained = train_qa(config=config, store_root=store_root)
    metric = config.promote_metric
    challenger = trained["metrics"][metric]
    current = read_champion(config.publish_target)
    champion = current["pointer"]
    if champion is not None:
        if champion.get("eval_data_key") == trained["eval_data_key"]:
            champion_score = champion["metrics"][metric]
        else:  # scored on another eval set: re-evaluate it on ours
            from qa_lib.publish.run import open_target

            model = open_target(config.publish_target).local_model(champion)
            champion_score = evaluate_qa(config=config, model=model, store_root=store_root)["metrics"][metric]
        if challenger < champion_score + config.promote_margin:
            record_not_promoted(metric, challenger, champion_score, config.promote_margin)
            logger.info("not promoted: %s %.3f vs champion %.3f", metric, challenger, champion_score)
            return {"promoted": False, "challenger": challenger, "champion": champion_score, **trained}

    run_id = str(flow_run.get_id() or "local")
    fingerprints = {"train_data": trained["train_data_key"], "eval_data": trained["eval_data_key"],
                    "model": trained["model_key"]}
    location = publish(config.publish_target, trained["model_dir"], trained["metrics"], config.model_dump(),
                       fingerprints, run_id, config.eval_data.path, config.version_2_with_negative)
    pointer = {"run_id": run_id, "location": location, "metrics": trained["metrics"],
               "eval_data_key": trained["eval_data_key"], "model_key": trained["model_key"]}
    promote(config.publish_target, pointer, current["raw"])
    create_markdown_artifact(f"# Promoted\n\nrun `{run_id}` at `{location}`: {metric} = {challenger:.4f}",
                             key="promotion-decision")
    logger.info("promoted run %s (%s %.3f)", run_id, metric, challenger)
    hub_commit = (push_to_hub(config.publish_target, pointer, config.hub_repo_id, config.hub_private)
                  if config.hub_repo_id else None)
    return {"promoted": True, "location": location, "hub_commit": hub_commit, **trained}
