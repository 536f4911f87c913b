"""evaluate_qa: model + eval data → features → predict → post-process → metrics (no training)."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows._evaluation import evaluate_stages, load_eval_data
from qa_lib.config import PipelineConfig
from qa_lib.progress import configure_progress
from qa_lib.modeling import resolve_model
from qa_lib.store import Store, model_fingerprint, tokenizer_fingerprint
from tasks.policy import store_root as default_store_root
from tasks.preflight import preflight
from tasks.report import report


# Parameters are validated in the flow (PipelineConfig.coerce), so that a cross-field mistake made in
# the UI form fails the run with the config's own one-line message, not Prefect's wrapped one.
@flow(name="evaluate_qa", validate_parameters=False)
def evaluate_qa(config: PipelineConfig = PipelineConfig(), model: str | None = None,
                store_root: str | None = None) -> dict:
    """Evaluate a trained model on the config's eval set: features, logits, answers, official scores.

    Args:
        config: The pipeline configuration; eval_data, the windows and post-processing settings apply.
        model: Model folder or s3:// champion to evaluate (default: config.model).
        store_root: Content-addressed store (default: $QA_PIPELINE_STORE, else .qa-store).
    """
    config = PipelineConfig.coerce(config)
    configure_progress()
    timings: dict[str, float] = {}
    store = Store(default_store_root(store_root))
    model = model or config.model
    t = time.perf_counter()
    preflight(config, training=False, model=model)
    model_dir = resolve_model(model)
    timings["preflight"] = time.perf_counter() - t
    data = load_eval_data(config, store, timings)
    metrics, evaluation = evaluate_stages(config, data, model_dir, model_fingerprint(model_dir),
                                          tokenizer_fingerprint(model_dir), store, timings)
    summary = {"model": model, "predictions_dir": evaluation["predictions"]["dir"],
               "eval_data": config.eval_data.path, "eval_data_key": evaluation["eval_data_key"],
               "store": str(store.root), "timings_s": timings}
    out = Path(config.output_dir).resolve() / "evaluation"
    report("evaluate_qa", metrics, None, summary, str(out))
    get_run_logger().info("metrics: %s", metrics)
    return {"metrics": metrics, **summary, "artifacts_dir": str(out)}


def run_evaluate(config: PipelineConfig, model: str | None = None, store_root: str | None = None) -> dict:
    return evaluate_qa(config=config, model=model, store_root=store_root)
