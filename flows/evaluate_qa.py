"""evaluate_qa: model + eval data → features → predict → post-process → metrics (no training)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows._evaluation import evaluate_stages
from qa_lib.config import PipelineConfig
from qa_lib.modeling import resolve_model
from qa_lib.plan import run_keys
from qa_lib.progress import configure_progress
from qa_lib.publish.manifest import code_version
from tasks.data import load_dataset
from tasks.features import build_features
from tasks.library_logs import send_library_logs
from tasks.preflight import preflight
from tasks.publish import publish_local
from tasks.report import report
from tasks.stage import pipeline_run


# Parameters are validated in the flow (PipelineConfig.coerce), so that a cross-field mistake made in
# the UI form fails the run with the config's own one-line message, not Prefect's wrapped one.
@flow(name="evaluate_qa", validate_parameters=False)
def evaluate_qa(config: PipelineConfig = PipelineConfig(), model: str | None = None,
                store_root: str | None = None) -> dict:
    """Evaluate a trained model on the config's eval set: features, logits, answers, official scores.

    Args:
        config: The pipeline configuration; eval_data, the windows and post-processing settings apply.
        model: Model folder, a publish target's champion (its folder, or s3://bucket/prefix/champion)
            or s3:// store model to evaluate (default: config.model).
        store_root: Where stages are kept: a folder or s3://bucket/prefix shared by a pool's workers
            (default: $QA_PIPELINE_STORE, else .qa-store).
    """
    config = PipelineConfig.coerce(config)
    configure_progress()
    send_library_logs()
    model = model or config.model
    with pipeline_run(store_root) as run:
        with run.timed("preflight"):
            preflight(config, training=False, model=model, store=run.store.location)
            model_dir = resolve_model(model)
            run.keys.update(run_keys(config, model_dir, training=False))
        eval_data = load_dataset(config, "eval")
        features = build_features(eval_data, config, model_dir)
        metrics, predictions = evaluate_stages(config, eval_data, features, model_dir)
        out = Path(config.output_dir).resolve() / "evaluation"
        if run.store.remote:  # as in train_qa: on a shared store the answers stay there
            predictions_dir = run.store.uri("predictions", predictions["key"])
        else:
            with run.timed("publish"):
                predictions_dir = publish_local(run.store.location, None, predictions, str(out))["predictions_dir"]
    summary = {"model": model, "predictions_dir": predictions_dir,
               "eval_data": config.eval_data.path, "eval_data_key": run.keys["eval_data"],
               "store": run.store.location, "code_version": code_version(), "timings_s": run.timings}
    report("evaluate_qa", metrics, None, summary, str(out))
    get_run_logger().info("metrics: %s", metrics)
    return {"metrics": metrics, **summary, "artifacts_dir": str(out)}


def run_evaluate(config: PipelineConfig, model: str | None = None, store_root: str | None = None) -> dict:
    return evaluate_qa(config=config, model=model, store_root=store_root)
