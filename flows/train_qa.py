"""train_qa: config → data → features → fine-tune → predict → post-process → metrics → publish."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows._evaluation import evaluate_stages
from qa_lib.config import PipelineConfig
from qa_lib.modeling import resolve_model
from qa_lib.plan import run_keys
from qa_lib.preflight import unpublished_settings
from qa_lib.progress import configure_progress
from qa_lib.publish.manifest import code_version
from tasks.data import load_dataset
from tasks.features import build_features
from tasks.library_logs import send_library_logs
from tasks.preflight import preflight
from tasks.publish import publish_local
from tasks.report import report
from tasks.stage import pipeline_run
from tasks.train import fine_tune


# Parameters are validated in the flow (PipelineConfig.coerce), so that a cross-field mistake made in
# the UI form fails the run with the config's own one-line message, not Prefect's wrapped one.
@flow(name="train_qa", validate_parameters=False)
def train_qa(config: PipelineConfig = PipelineConfig(), store_root: str | None = None) -> dict:
    """Fine-tune `config.model` on the training data, then evaluate it on the eval set.

    Args:
        config: The pipeline configuration: model, data, windows, training and post-processing settings.
        store_root: Where stages are kept: a folder or s3://bucket/prefix shared by a pool's workers
            (default: $QA_PIPELINE_STORE, else .qa-store).
    """
    config = PipelineConfig.coerce(config)
    configure_progress()
    send_library_logs()
    if _top_level() and (note := unpublished_settings(config)):  # as retrain's subflow, retrain publishes
        get_run_logger().warning(note)
    with pipeline_run(store_root) as run:
        with run.timed("preflight"):
            preflight(config, training=True, store=run.store.location)
            base = resolve_model(config.model)
            run.keys.update(run_keys(config, base, training=True))

        train_data = load_dataset(config, "train")
        # Eval data is loaded and validated now, not after training: a bad eval file fails in seconds.
        eval_data = load_dataset(config, "eval") if config.eval_data is not None else None
        features = build_features(train_data, config, base)
        # Eval windows before training, too: one that cannot be built fails in seconds, not after it.
        eval_features = build_features(eval_data, config, base) if eval_data else None
        # From the folder the keys were computed from: a Hub id resolved again could name a newer
        # revision (one pushed since preflight) than the model key says.
        trained = fine_tune(features, config.model_copy(update={"model": base}))
        metrics, predictions = evaluate_stages(config, eval_data, eval_features, trained) if eval_data else ({}, None)

        if run.store.remote:
            # On a shared store the model and answers stay there (their URIs below): copying them
            # here would download them onto every worker that reruns a cached config.
            published = {"model_dir": trained["model_dir"],
                         "predictions_dir": run.store.uri("predictions", predictions["key"]) if predictions else None}
        else:
            with run.timed("publish"):
                published = publish_local(run.store.location, trained, predictions, config.output_dir)

    summary = {
        "model_dir": published["model_dir"],
        "predictions_dir": published["predictions_dir"],
        "model_key": run.keys["model"],
        "train_data_key": run.keys["train_data"],
        "eval_data_key": run.keys.get("eval_data"),
        "store": run.store.location,
        "train_data": config.train_data.path,
        "eval_data": config.eval_data.path if config.eval_data else None,
        "base_model": config.model,
        "code_version": code_version(),
        "timings_s": run.timings,
    }
    artifacts_dir = str(Path(config.output_dir).resolve() / "artifacts")  # absolute: read from elsewhere than the worker
    report("train_qa", metrics, trained.get("log_history"), summary, artifacts_dir)
    get_run_logger().info("metrics: %s", metrics)
    get_run_logger().info("model: %s (code %s)", published["model_dir"], summary["code_version"])
    return {"metrics": metrics, **summary, "artifacts_dir": artifacts_dir}


def _top_level() -> bool:
    """Run by itself (the CLI, a deployment), not as a step of another flow such as retrain."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context is None or context.flow_run.parent_task_run_id is None


def run_train(config: PipelineConfig, store_root: str | None = None) -> dict:
    return train_qa(config=config, store_root=store_root)
