"""The whole job as plain function calls, no Prefect: the baseline the flows are measured against
and the shortest readable path from a config to metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from qa_lib.batching import Padding
from qa_lib.config import PipelineConfig
from qa_lib.data import load_examples
from qa_lib.features import build_eval_features, build_train_features
from qa_lib.metrics import score
from qa_lib.modeling import load_qa_model, load_tokenizer
from qa_lib.postprocess import postprocess
from qa_lib.predict import predict_logits, resolve_precision
from qa_lib.train import fine_tune
from qa_lib.validate import check_model_source, check_output_dir, validate_examples


def evaluate_model(config: PipelineConfig, model_dir: str, out_dir: str | Path, eval_examples=None) -> dict[str, Any]:
    if eval_examples is None:
        eval_examples = load_examples(config.eval_data, default_split="validation")
        validate_examples(eval_examples, config.version_2_with_negative, config.eval_data.path)
    tokenizer = load_tokenizer(model_dir)
    features = build_eval_features(eval_examples, tokenizer, *config.eval_window, config.num_proc)
    model = load_qa_model(model_dir)
    start, end = predict_logits(model, features, config.per_device_eval_batch_size, resolve_precision(config.precision),
                                padding=Padding.of(tokenizer).for_model(model, config.eval_window[0]))
    preds = postprocess(eval_examples, features, start, end, config.n_best_size, config.max_answer_length,
                        config.version_2_with_negative, config.null_score_diff_threshold)
    preds.write(out_dir)
    metrics = score(eval_examples, preds.answers, preds.null_odds, config.version_2_with_negative)
    Path(out_dir, "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def train_and_evaluate(config: PipelineConfig) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    check_model_source(config.model)
    check_output_dir(config.output_dir)
    train = load_examples(config.train_data, default_split="train")
    validate_examples(train, config.version_2_with_negative, config.train_data.path)
    eval_examples = None
    if config.eval_data is not None:
        eval_examples = load_examples(config.eval_data, default_split="validation")
        validate_examples(eval_examples, config.version_2_with_negative, config.eval_data.path)
    timings["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    tokenizer = load_tokenizer(config.model)
    features = build_train_features(train, tokenizer, config.max_length, config.doc_stride, config.num_proc,
                                    config.drop_answerless)
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    result = fine_tune(config, features, config.output_dir)
    timings["train"] = time.perf_counter() - t

    metrics: dict[str, Any] = {}
    if eval_examples is not None:
        t = time.perf_counter()
        metrics = evaluate_model(config, result.model_dir, Path(config.output_dir) / "eval", eval_examples)
        timings["evaluate"] = time.perf_counter() - t
    return {"metrics": metrics, "model_dir": result.model_dir, "timings": timings}
