"""The evaluation half of the pipeline, shared by train_qa and evaluate_qa."""

from __future__ import annotations

import time

from qa_lib.config import PipelineConfig
from qa_lib.plan import data_key, eval_keys
from qa_lib.store import Store
from tasks.data import load_dataset
from tasks.evaluate import compute_metrics, post_process, predict
from tasks.features import build_features
from tasks.policy import cached


def load_eval_data(config: PipelineConfig, store: Store, timings: dict[str, float]) -> dict:
    """Load and validate the eval data; flows call it before any expensive stage."""
    key = data_key(config.eval_data, config.version_2_with_negative)
    t = time.perf_counter()
    data = cached(load_dataset, store, "data", key)(
        config.eval_data, config.version_2_with_negative, "validation", str(store.root), "data", key)
    timings["load eval data"] = time.perf_counter() - t
    return data


def evaluate_stages(config: PipelineConfig, data: dict, model_dir: str, model_identity: str,
                    tokenizer_identity: str, store: Store, timings: dict[str, float]) -> tuple[dict, dict]:
    """`data`: the eval examples from `load_eval_data`."""
    root = str(store.root)
    keys = eval_keys(config, model_identity, tokenizer_identity)

    t = time.perf_counter()
    features = cached(build_features, store, "features", keys.features)(
        "eval", data, model_dir, *config.eval_window, config.num_proc, root, "features", keys.features)
    timings["eval features"] = time.perf_counter() - t

    t = time.perf_counter()
    logits = cached(predict, store, "logits", keys.logits)(
        model_dir, features, config.per_device_eval_batch_size, config.precision, root, "logits", keys.logits)
    timings["predict"] = time.perf_counter() - t

    t = time.perf_counter()
    predictions = cached(post_process, store, "predictions", keys.predictions)(
        config, data, features, logits, root, "predictions", keys.predictions)
    timings["post-process"] = time.perf_counter() - t

    t = time.perf_counter()
    metrics = cached(compute_metrics, store, "metrics", keys.metrics)(
        data, predictions, config.version_2_with_negative, root, "metrics", keys.metrics)
    timings["metrics"] = time.perf_counter() - t
    return metrics, {"predictions": predictions, "eval_data_key": keys.data}
