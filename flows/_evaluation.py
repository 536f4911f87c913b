"""The evaluation half of the pipeline, shared by train_qa and evaluate_qa."""

from __future__ import annotations

from qa_lib.config import PipelineConfig
from tasks.evaluate import compute_metrics, post_process, predict
from tasks.features import build_features


def evaluate_stages(config: PipelineConfig, eval_data: dict, model: dict | str, tokenizer: str) -> tuple[dict, dict]:
    """eval data → features → logits → answers → scores, under the current pipeline run's keys."""
    features = build_features(eval_data, config, tokenizer)
    logits = predict(model, features, config)
    predictions = post_process(eval_data, features, logits, config)
    metrics = compute_metrics(eval_data, predictions, config)
    return metrics, predictions
