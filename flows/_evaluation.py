"""The evaluation half of the pipeline, shared by train_qa and evaluate_qa."""

from __future__ import annotations

from qa_lib.config import PipelineConfig
from tasks.evaluate import compute_metrics, post_process, predict


def evaluate_stages(config: PipelineConfig, eval_data: dict, features: dict, model: dict | str) -> tuple[dict, dict]:
    """eval features → logits → answers → scores, under the current pipeline run's keys.

    The features are built by the caller: train_qa builds them before training, so an eval set
    whose windows cannot be built fails in seconds, not after the training."""
    logits = predict(model, features, config)
    predictions = post_process(eval_data, features, logits, config)
    metrics = compute_metrics(eval_data, predictions, config)
    return metrics, predictions
