"""The pipeline as data: every stage's cache key, computed up front from the config.

A key covers exactly what decides that stage's output, so changing `doc_stride` changes the
features, model, logits and later keys but not the data keys, and changing `n_best_size`
changes only the predictions and metrics keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from qa_lib.config import PipelineConfig
from qa_lib.store import model_fingerprint, source_fingerprint, stage_key, tokenizer_fingerprint

TRAIN_PARAMS = (
    "learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "warmup_ratio", "weight_decay", "lr_scheduler_type", "seed", "precision", "max_steps",
    "hidden_dropout", "attention_dropout", "freeze_word_embeddings",
)


@dataclass(frozen=True)
class EvalKeys:
    data: str
    features: str
    logits: str
    predictions: str
    metrics: str


@dataclass(frozen=True)
class TrainKeys:
    data: str
    features: str
    model: str


def data_key(source, version_2_with_negative: bool) -> str:
    return stage_key("data", source=source_fingerprint(source), v2=version_2_with_negative)


def _window(config: PipelineConfig) -> dict:
    return {"max_length": config.max_length, "doc_stride": config.doc_stride}


def train_keys(config: PipelineConfig) -> TrainKeys:
    data = data_key(config.train_data, config.version_2_with_negative)
    features = stage_key("features", data=data, kind="train", tokenizer=tokenizer_fingerprint(config.model),
                         drop_answerless=config.drop_answerless, **_window(config))
    model = stage_key("model", features=features, model=model_fingerprint(config.model),
                      **{p: getattr(config, p) for p in TRAIN_PARAMS})
    return TrainKeys(data=data, features=features, model=model)


def eval_keys(config: PipelineConfig, model_identity: str, tokenizer_identity: str) -> EvalKeys:
    """Keys for evaluating a model whose identity (a model key or a folder fingerprint) is given."""
    data = data_key(config.eval_data, config.version_2_with_negative)
    max_length, doc_stride = config.eval_window
    features = stage_key("features", data=data, kind="eval", tokenizer=tokenizer_identity,
                         max_length=max_length, doc_stride=doc_stride)
    logits = stage_key("logits", features=features, model=model_identity, precision=config.precision)
    predictions = stage_key("predictions", logits=logits, n_best_size=config.n_best_size,
                            max_answer_length=config.max_answer_length, v2=config.version_2_with_negative,
                            null_score_diff_threshold=config.null_score_diff_threshold)
    metrics = stage_key("metrics", predictions=predictions, data=data)
    return EvalKeys(data=data, features=features, logits=logits, predictions=predictions, metrics=metrics)
